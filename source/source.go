// Package source pulls upstream streams into topics: an HTTP endpoint that
// streams NDJSON (one JSON value per line) or an event stream (format sse)
// is read by one connection, each line or event is appended to a topic of a
// replay.Store, and the connection is re-opened with backoff and resumed
// from the last upstream id whenever it ends.
//
// Everything a source holds (its supervisor, its connection, its timers)
// ends with Destruct; nothing outlives it.
package source

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
)

// Formats of an upstream.
const (
	FormatNDJSON = "ndjson"
	FormatSSE    = "sse"
)

// Defaults of Config.
const (
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
	DefaultMaxLine    = 1 << 20
	DefaultLinger     = 30 * time.Second
	// DefaultSSEResumeHeader is how format sse resumes unless told
	// otherwise, as a browser would.
	DefaultSSEResumeHeader = "Last-Event-ID"
)

// headerTimeout bounds the wait for an upstream's response head when no
// idle timeout is set.
const headerTimeout = 30 * time.Second

// Config is one source.
type Config struct {
	// URL is the upstream, http or https.
	URL string
	// Format is FormatNDJSON (default) or FormatSSE.
	Format string
	// Mapping says where lines go. For format sse only Topic, MaxEvent and
	// MaxTopicLength apply: an upstream event keeps its type and data.
	Mapping Mapping
	// ResumeHeader or ResumeQuery names how the last upstream id is sent
	// back on reconnection. Format sse defaults to the Last-Event-ID
	// header.
	ResumeHeader, ResumeQuery string
	// Header is added to every upstream request.
	Header http.Header
	// OnDemand pulls only while someone holds the source (Acquire), and
	// until Linger after the last release. Otherwise the source pulls from
	// New to Destruct.
	OnDemand bool
	Linger   time.Duration
	// BackoffMin and BackoffMax bound reconnection delays.
	BackoffMin, BackoffMax time.Duration
	// IdleTimeout, when positive, reconnects when the upstream sends
	// nothing for this long.
	IdleTimeout time.Duration
	// MaxLine is the longest line held; longer ones are skipped.
	MaxLine int
	// Transport, when set, replaces the source's own HTTP transport.
	Transport http.RoundTripper
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Format == "" {
		c.Format = FormatNDJSON
	}
	if c.Format == FormatSSE && c.ResumeHeader == "" && c.ResumeQuery == "" {
		c.ResumeHeader = DefaultSSEResumeHeader
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.MaxLine <= 0 {
		c.MaxLine = DefaultMaxLine
	}
	return c
}

// Validate reports what makes c unusable. Call it on WithDefaults' result.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("no upstream URL")
	case err != nil:
		return fmt.Errorf("upstream URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("upstream URL %q: scheme must be http or https", c.URL)
	case u.Host == "":
		return fmt.Errorf("upstream URL %q has no host", c.URL)
	}
	m := c.Mapping
	switch c.Format {
	case FormatNDJSON:
		if (m.Topic == "") == (m.TopicField == "") {
			return errors.New("give exactly one of topic and topic_field")
		}
		if (c.ResumeHeader != "" || c.ResumeQuery != "") && m.IDField == "" {
			return errors.New("resume needs id_field: the upstream id is the cursor")
		}
		if (m.CloseField == "") != (m.CloseValue == "") {
			return errors.New("close_when needs a field and a value")
		}
	case FormatSSE:
		if m.Topic == "" {
			return errors.New("format sse needs a topic")
		}
		if m.TopicField != "" || m.IDField != "" || m.EventField != "" || m.DataField != "" || m.CloseField != "" {
			return errors.New("format sse relays events as they are: topic_field, id_field, event_field, data_field and close_when apply to ndjson only")
		}
	default:
		return fmt.Errorf("format %q is neither ndjson nor sse", c.Format)
	}
	if m.Topic != "" {
		if err := checkTopic(m.Topic, m.MaxTopicLength); err != nil {
			return fmt.Errorf("topic %q: %v", m.Topic, err)
		}
	}
	for _, p := range []string{m.TopicField, m.IDField, m.EventField, m.DataField, m.CloseField} {
		if p != "" && (strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..")) {
			return fmt.Errorf("field path %q has an empty segment", p)
		}
	}
	if c.ResumeHeader != "" && c.ResumeQuery != "" {
		return errors.New("resume by header or by query, not both")
	}
	switch {
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("backoff %s %s: need 0 < min <= max", c.BackoffMin, c.BackoffMax)
	case c.Linger < 0:
		return errors.New("linger must not be negative")
	case c.IdleTimeout < 0:
		return errors.New("idle_timeout must not be negative")
	case c.MaxLine <= 0 || c.MaxLine > 1<<30:
		return fmt.Errorf("max_line %d: must be between 1 byte and 1GiB", c.MaxLine)
	}
	return nil
}

// Stats are a source's counters since New.
type Stats struct {
	// Requests made to the upstream, and those answered with 2xx.
	Requests, Connects int64
	// Lines (NDJSON) or events (sse) read.
	Lines int64
	// Appended to topics.
	Appended int64
	// Skipped: too long, not UTF-8, not JSON, a mapped field missing,
	// too large, or refused by the store for good; SkippedBy counts them
	// by Skip.Kind, with every one of SkipReasons present.
	Skipped   int64
	SkippedBy map[string]int64
	// Duplicates: lines whose upstream id had already been appended (the
	// overlap after a resume), dropped.
	Duplicates int64
}

// Source pulls one upstream into a store.
type Source struct {
	cfg       Config
	url       *url.URL
	store     replay.Store
	logger    atomic.Pointer[zap.Logger]
	client    *http.Client
	transport *http.Transport // owned; nil with Config.Transport
	lin       *lineage

	demand    atomic.Int64
	kick      chan struct{}
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	ended     atomic.Bool

	// Used by the single run in progress only.
	attempt int
	lease   replay.Lease // held on a Shared store
	topics  map[string]struct{}
	skips   skipLog

	requests, connects, lines, appended, duplicates atomic.Int64
	skipped                                         [len(SkipReasons)]atomic.Int64

	// nonce and keys make the idempotency keys of lines without an id.
	nonce string
	keys  atomic.Int64
}

// New starts a source. A source that is not OnDemand connects at once.
// logger may be nil.
func New(cfg Config, store replay.Store, logger *zap.Logger) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Source{
		cfg:    cfg,
		url:    u,
		store:  store,
		kick:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		topics: make(map[string]struct{}),
		nonce:  newNonce(),
	}
	s.logger.Store(logger)
	rt := cfg.Transport
	if rt == nil {
		s.transport = &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 15 * time.Second,
			}).DialContext,
			TLSHandshakeTimeout:    10 * time.Second,
			ForceAttemptHTTP2:      true,
			MaxResponseHeaderBytes: 64 << 10,
			// A stream holds its connection for its whole life and
			// reconnections are rare: closing each connection when its
			// stream ends leaves nothing idle behind.
			DisableKeepAlives: true,
		}
		rt = s.transport
	}
	s.client = &http.Client{Transport: rt}
	s.lin = acquireLineage(s.lineageKey())
	go s.supervise()
	return s, nil
}

// lineageKey identifies the upstream position a source shares with other
// sources (an older or newer config of the same source): same store, URL,
// format, routing and id.
func (s *Source) lineageKey() string {
	m := s.cfg.Mapping
	return fmt.Sprintf("%p\x00%s\x00%s\x00%s\x00%s\x00%s", s.store, s.cfg.URL, s.cfg.Format, m.Topic, m.TopicField, m.IDField)
}

// SetLogger replaces the source's logger, e.g. with the one of the config
// that now uses it.
func (s *Source) SetLogger(l *zap.Logger) {
	if l != nil {
		s.logger.Store(l)
	}
}

func (s *Source) log() *zap.Logger { return s.logger.Load() }

// Acquire registers one consumer of an OnDemand source: the first one
// starts the upstream connection; release (safe to call more than once)
// lets it close Linger after the last consumer left. Without OnDemand it
// only counts.
func (s *Source) Acquire() (release func()) {
	s.demand.Add(1)
	s.poke()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.demand.Add(-1)
			s.poke()
		})
	}
}

func (s *Source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Ended reports whether the upstream ended the source's topic (204,
// close_when, or the topic closed under it): an ended source does not
// connect again.
func (s *Source) Ended() bool { return s.ended.Load() }

// URL returns the upstream address the source pulls.
func (s *Source) URL() string { return s.cfg.URL }

// Stats returns the source's counters.
func (s *Source) Stats() Stats {
	st := Stats{
		Requests:   s.requests.Load(),
		Connects:   s.connects.Load(),
		Lines:      s.lines.Load(),
		Appended:   s.appended.Load(),
		Duplicates: s.duplicates.Load(),
		SkippedBy:  make(map[string]int64, len(SkipReasons)),
	}
	for i, kind := range SkipReasons {
		n := s.skipped[i].Load()
		st.SkippedBy[kind] = n
		st.Skipped += n
	}
	return st
}

// newNonce returns 64 random bits as text.
func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Destruct stops the source and waits until its connection and every
// goroutine it started are gone. It lets a Source live in a
// caddy.UsagePool.
func (s *Source) Destruct() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		if s.transport != nil {
			s.transport.CloseIdleConnections()
		}
		releaseLineage(s.lin)
	})
	return nil
}

// supervise starts and stops runs of the puller: one run from the start
// when not OnDemand, otherwise one whenever there is demand, ended Linger
// after the demand went away.
func (s *Source) supervise() {
	defer close(s.done)
	var (
		stopRun  func()
		runDone  chan struct{}
		linger   *time.Timer
		lingerC  <-chan time.Time
		finished bool
	)
	start := func() {
		ctx, cancel := newRunContext()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.run(ctx)
		}()
		runDone = done
		stopRun = func() {
			cancel()
			<-done
		}
	}
	stopLinger := func() {
		if linger != nil {
			linger.Stop()
			linger, lingerC = nil, nil
		}
	}
	update := func() {
		if !s.cfg.OnDemand || s.demand.Load() > 0 {
			stopLinger()
			if stopRun == nil && !finished {
				if s.cfg.OnDemand {
					s.log().Debug("first subscriber: opening upstream")
				}
				start()
			}
			return
		}
		if stopRun != nil && linger == nil {
			linger = time.NewTimer(s.cfg.Linger)
			lingerC = linger.C
		}
	}
	update()
	for {
		select {
		case <-s.quit:
			stopLinger()
			if stopRun != nil {
				stopRun()
			}
			return
		case <-s.kick:
			update()
		case <-lingerC:
			linger, lingerC = nil, nil
			if s.demand.Load() == 0 && stopRun != nil {
				stopRun()
				stopRun, runDone = nil, nil
				s.log().Debug("no subscribers: upstream closed", zap.Duration("linger", s.cfg.Linger))
			}
		case <-runDone:
			// A run ends by itself only when the source is finished.
			stopRun()
			stopRun, runDone = nil, nil
			finished = true
			stopLinger()
		}
	}
}

// lineage is the upstream position shared by every source reading the
// same upstream into the same topics: the older and the newer config of a
// source while a reload replaces one by the other. It holds the resume
// cursor and the recently appended upstream ids, so that the newer source
// resumes where the older one is and neither appends a line the other
// already did.
type lineage struct {
	key  string
	refs int

	mu     sync.Mutex
	cursor string
	ring   []string
	next   int
	seen   map[string]struct{}
}

// recentIDs is how many upstream ids a lineage remembers for dropping
// overlapping lines: far more than an upstream resends after a resume.
const recentIDs = 4096

var lineages = struct {
	sync.Mutex
	m map[string]*lineage
}{m: make(map[string]*lineage)}

func acquireLineage(key string) *lineage {
	lineages.Lock()
	defer lineages.Unlock()
	l := lineages.m[key]
	if l == nil {
		l = &lineage{key: key, seen: make(map[string]struct{})}
		lineages.m[key] = l
	}
	l.refs++
	return l
}

func releaseLineage(l *lineage) {
	lineages.Lock()
	defer lineages.Unlock()
	if l.refs--; l.refs == 0 {
		delete(lineages.m, l.key)
	}
}

// has and add must be called with mu held.
func (l *lineage) has(id string) bool {
	_, ok := l.seen[id]
	return ok
}

func (l *lineage) add(id string) {
	if _, ok := l.seen[id]; ok {
		return
	}
	if len(l.ring) < recentIDs {
		l.ring = append(l.ring, id)
	} else {
		delete(l.seen, l.ring[l.next])
		l.ring[l.next] = id
		l.next = (l.next + 1) % recentIDs
	}
	l.seen[id] = struct{}{}
}

func (l *lineage) position() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cursor
}
