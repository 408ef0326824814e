package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/wire"
)

// Options shape one subscriber's stream.
type Options struct {
	// Retry is sent first as the client's reconnection delay; 0 sends none.
	Retry time.Duration
	// Position, when set, is sent right after Retry as an id field ending
	// a block without data: a WHATWG parser takes it as the last event ID
	// and dispatches nothing, so a client that connected without a cursor
	// has one before the first event.
	Position string
	// Heartbeat is the silence after which a comment is written; 0 turns
	// heartbeats off.
	Heartbeat time.Duration
	// WriteTimeout bounds every write and flush, so a client that stops
	// reading is cut off instead of holding its connection forever. A write
	// is given between half and all of it (see subscriber.write).
	WriteTimeout time.Duration
	// MaxBatch is how many pending events go out in one write and one flush.
	MaxBatch int
	// ResetEvent names the event sent when the cursor cannot continue
	// exactly (see replay.Gap); CloseEvent the one sent when the topic ends.
	ResetEvent string
	CloseEvent string
	// StopRetry gives the retry hint written when the stream ends because
	// of Stop, so that clients come back spread out, not all at once.
	StopRetry func() time.Duration
	// Stop ends the stream with a retry hint when it is done (after Drain).
	Stop context.Context
	// Encoding, when set, compresses the stream with shared per-event
	// segments (see Encoding); WriteHead must have been given the same.
	Encoding *Encoding
	// Drain, when set, tells how long the stream goes on delivering after
	// Stop is closed: on a reload, streams end spread over a window instead
	// of all reconnecting to the new config at once.
	Drain func() time.Duration
	// TopicEvents names every event of a multi-topic cursor (one whose
	// pages carry Topics) after its topic instead of its own type.
	TopicEvents bool
	// Expires, when set, is when the credential that opened the stream
	// expires: then the stream writes an ExpiredEvent and ends cleanly
	// (ErrExpired), so that its reader comes back with a fresh credential
	// and resumes from its last id. The zero time means never.
	Expires time.Time
	// ExpiredEvent names that event; default "expired". Its data is
	// {"reason":"credential expired"}.
	ExpiredEvent string
	// Topics are the topics the stream is counted under (Server.Presence)
	// and ended by (Server.Disconnect): a multi-topic stream is a
	// subscriber of each. Default: the key Serve is given.
	Topics []string
}

// DefaultExpiredEvent is the name of the event that ends a stream whose
// credential expired, when Options.ExpiredEvent is empty.
const DefaultExpiredEvent = "expired"

// expiredData is the data of the expired event.
var expiredData = []byte(`{"reason":"credential expired"}`)

// expiredAt reports whether the stream's credential has expired at now.
func (o *Options) expiredAt(now time.Time) bool {
	return !o.Expires.IsZero() && !now.Before(o.Expires)
}

// drainDelay is how long a stream goes on after Stop (see Drain).
func (o *Options) drainDelay() time.Duration {
	if o.Drain == nil {
		return 0
	}
	return o.Drain()
}

// How a stream ended.
var (
	// ErrTopicClosed: the topic ended and the stream delivered its last
	// events and the close event. The store's own error, so a topic closed
	// is one condition whichever layer reports it.
	ErrTopicClosed = replay.ErrTopicClosed
	ErrStopped     = errors.New("server stopping")
	// ErrClientGone: a detached stream found its client had closed the
	// connection.
	ErrClientGone = errors.New("client closed the connection")
	// ErrExpired: the credential that opened the stream expired (see
	// Options.Expires); the client was sent the expired event, and the
	// stream ended cleanly.
	ErrExpired = errors.New("credential expired")
	// ErrStoreRead: reading the topic failed under the stream; the client
	// was sent back with a retry hint as on a stop (the error wraps
	// ErrStopped too), and the store's error says why.
	ErrStoreRead = errors.New("reading the topic failed")
)

// Stats count what one stream delivered.
type Stats struct {
	Events int
	Resets int
	Bytes  int64
}

// Heartbeat is the comment written after a silence.
var heartbeat = wire.EncodeComment("")

// WriteHead sends the response head of an event stream and flushes it, so
// the client sees the stream open before the first event. Calling
// WriteHeader explicitly is also what makes Caddy's encode handler compress
// an event stream from the first byte (since Caddy 2.11.5).
//
// With an encoding, Content-Encoding is set here, which is also what makes
// Caddy's encode leave the response alone.
func WriteHead(w http.ResponseWriter, enc *Encoding) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	if enc != nil {
		h.Set("Content-Encoding", enc.Name)
	}
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush()
}

// serveInRequest writes the events read from cur to w until the topic closes, the
// client goes away (ctx), a write times out, or opts.Stop is done. The
// response head must have been written (WriteHead). It returns what it
// delivered and why it ended: ErrTopicClosed, ErrStopped, the context's
// error, or the write error.
func serveInRequest(ctx context.Context, w http.ResponseWriter, cur replay.Cursor, opts Options) (Stats, error) {
	out := &responseSink{w: w, rc: http.NewResponseController(w)}
	// Clear our deadline on the way out: the connection may serve further
	// requests.
	defer out.rc.SetWriteDeadline(time.Time{}) //nolint:errcheck
	return serve(ctx, out, cur, opts)
}

func serve(ctx context.Context, out sink, cur replay.Cursor, opts Options) (Stats, error) {
	s := newSubscriber(out, opts)
	if err := s.open(); err != nil {
		return s.stats, err
	}

	// One channel tells the loop to end, whatever the reason: the client
	// left, or the server stopped and the drain delay passed. The loop
	// then selects on three channels, only one of them (the log's) shared
	// with other subscribers.
	ctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	if opts.Stop != nil {
		var drain atomic.Pointer[time.Timer]
		unregister := context.AfterFunc(opts.Stop, func() {
			delay := opts.drainDelay()
			if delay <= 0 {
				end(ErrStopped)
				return
			}
			drain.Store(time.AfterFunc(delay, func() { end(ErrStopped) }))
		})
		defer func() {
			if !unregister() {
				// The stop came: its drain timer, if it is set yet, has
				// nothing left to end. (One set after this only ends a
				// context already ended.)
				if t := drain.Load(); t != nil {
					t.Stop()
				}
			}
		}()
	}

	// The heartbeat timer is not reset by every write, which would cost a
	// timer update per delivery: when it fires, it writes a comment only
	// if the stream has been silent for the whole period.
	var idle <-chan time.Time
	if opts.Heartbeat > 0 {
		timer := time.NewTimer(opts.Heartbeat)
		defer timer.Stop()
		idle = timer.C
		s.heartbeat = timer
	}

	// The expiry is checked after each delivery too (against the time of
	// the write, which costs nothing), so that a stream kept busy by a
	// steady flow of events does not outlive its credential.
	var expiry <-chan time.Time
	if !opts.Expires.IsZero() {
		timer := time.NewTimer(time.Until(opts.Expires))
		defer timer.Stop()
		expiry = timer.C
	}

	for {
		page, err := cur.Next(s.opts.MaxBatch)
		if err != nil {
			// The store went away under the stream (e.g. cleaned up while
			// the server stops): send the client back like a stop does.
			return s.stats, s.storeFailed(err)
		}
		if deliverable(&page) {
			if err := s.deliver(page); err != nil {
				return s.stats, err
			}
			if page.Closed {
				return s.stats, ErrTopicClosed
			}
			if opts.expiredAt(s.lastWrite) {
				return s.stats, s.expire()
			}
			continue
		}
		select {
		case <-page.Wait:
		case <-expiry:
			return s.stats, s.expire()
		case now := <-idle:
			if silent := now.Sub(s.lastWrite); silent < opts.Heartbeat {
				s.heartbeat.Reset(opts.Heartbeat - silent)
				continue
			}
			if s.out.gone() {
				return s.stats, ErrClientGone
			}
			if err := s.writeHeartbeat(); err != nil {
				return s.stats, err
			}
			s.heartbeat.Reset(opts.Heartbeat)
		case <-ctx.Done():
			if reason, ok := disconnectReason(context.Cause(ctx)); ok {
				return s.stats, s.disconnect(reason)
			}
			if err := context.Cause(ctx); err != ErrStopped {
				return s.stats, err
			}
			return s.stats, s.end()
		}
	}
}

// deliverable reports a page with something to write.
func deliverable(p *replay.Page) bool {
	return p.Gap != nil || len(p.Events) > 0 || p.Closed || len(p.ClosedTopics) > 0
}

func newSubscriber(out sink, opts Options) *subscriber {
	s := &subscriber{out: out, opts: opts}
	if opts.MaxBatch <= 0 {
		s.opts.MaxBatch = 64
	}
	if opts.Encoding != nil {
		s.enc = &encodedWriter{enc: opts.Encoding}
	}
	return s
}

// open writes what a stream starts with: the encoding's header, the
// reconnection delay and the client's position.
func (s *subscriber) open() error {
	var first []byte
	if s.enc != nil {
		first = s.enc.start(first)
	}
	if s.opts.Retry > 0 {
		first = s.plain(first, wire.EncodeRetry(s.opts.Retry))
	}
	if s.opts.Position != "" {
		first = s.plain(first, wire.EncodePosition(s.opts.Position))
	}
	if len(first) == 0 {
		return nil
	}
	return s.write(first)
}

// writeHeartbeat writes the comment that keeps an idle stream open.
func (s *subscriber) writeHeartbeat() error {
	hb := heartbeat
	if s.enc != nil {
		hb = s.enc.heartbeat(nil)
	}
	return s.write(hb)
}

// storeFailed ends a stream whose store failed under it like a stop does,
// with a retry hint so the client comes back and resumes, and returns the
// store's error so that the failure is reported, not taken for a stop.
func (s *subscriber) storeFailed(err error) error {
	if endErr := s.end(); !errors.Is(endErr, ErrStopped) {
		return endErr
	}
	return fmt.Errorf("%w: %w: %w", ErrStopped, ErrStoreRead, err)
}

// end writes the retry hint that sends the client back after a stop.
func (s *subscriber) end() error {
	retry := s.opts.Retry
	if s.opts.StopRetry != nil {
		retry = s.opts.StopRetry()
	}
	b := s.plain(nil, wire.EncodeRetry(retry))
	if s.enc != nil {
		b = s.enc.trailer(b)
	}
	if err := s.write(b); err != nil {
		return err
	}
	return ErrStopped
}

// expire writes the expired event that ends a stream whose credential
// expired, ends the encoding, and returns ErrExpired.
func (s *subscriber) expire() error {
	name := s.opts.ExpiredEvent
	if name == "" {
		name = DefaultExpiredEvent
	}
	b := s.plain(nil, wire.EncodeEvent("", name, expiredData))
	if s.enc != nil {
		b = s.enc.trailer(b)
	}
	if err := s.write(b); err != nil {
		return err
	}
	return ErrExpired
}

type subscriber struct {
	out       sink
	opts      Options
	heartbeat *time.Timer // nil without heartbeats
	lastWrite time.Time
	deadline  time.Time      // of the connection, as last set
	enc       *encodedWriter // nil for identity
	stats     Stats
}

// plain appends bytes of this subscriber's own (not a shared event frame).
func (s *subscriber) plain(dst, b []byte) []byte {
	if s.enc != nil {
		return s.enc.own(dst, b)
	}
	return append(dst, b...)
}

// frame appends a shared event frame.
func (s *subscriber) frame(dst []byte, e *replay.Event) []byte {
	if s.enc != nil {
		return s.enc.event(dst, e)
	}
	return append(dst, e.Frame...)
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// deliver writes a page in one write and one flush: a reader that is behind
// catches up with one syscall per batch rather than one per event.
func (s *subscriber) deliver(p replay.Page) error {
	own := s.ownFrames(&p)
	if p.Gap == nil && !p.Closed && len(p.Events) == 1 && !own && len(p.ClosedTopics) == 0 {
		// The live path: the shared bytes go out as they are, uncopied.
		s.stats.Events++
		if s.enc != nil {
			return s.write(s.enc.shared(p.Events[0]))
		}
		return s.write(p.Events[0].Frame)
	}
	bp := batchPool.Get().(*[]byte)
	buf := (*bp)[:0]
	if p.Gap != nil {
		data, err := json.Marshal(p.Gap)
		if err != nil {
			return fmt.Errorf("encoding reset event: %w", err)
		}
		buf = s.plain(buf, wire.EncodeEvent(p.Gap.ResumeAfter, s.opts.ResetEvent, data))
		s.stats.Resets++
	}
	for i, e := range p.Events {
		if own {
			buf = s.ownFrame(buf, &p, i)
		} else {
			buf = s.frame(buf, e)
		}
	}
	s.stats.Events += len(p.Events)
	for _, topic := range p.ClosedTopics {
		data, err := json.Marshal(topicClosed{Reason: "topic closed", Topic: topic})
		if err != nil {
			return fmt.Errorf("encoding close event: %w", err)
		}
		buf = s.plain(buf, wire.EncodeEvent("", s.opts.CloseEvent, data))
	}
	if p.Closed {
		if len(p.ClosedTopics) == 0 {
			buf = s.plain(buf, wire.EncodeEvent("", s.opts.CloseEvent, []byte(`{"reason":"topic closed"}`)))
		}
		if s.enc != nil {
			buf = s.enc.trailer(buf)
		}
	}
	err := s.write(buf)
	if cap(buf) <= 1<<20 {
		*bp = buf
		batchPool.Put(bp)
	}
	return err
}

// topicClosed is the data of a multi-topic stream's close event: which of
// its topics ended.
type topicClosed struct {
	Reason string `json:"reason"`
	Topic  string `json:"topic"`
}

// ownFrames reports whether p's events need frames of this stream's own:
// named after their topic (Options.TopicEvents), or with the cursor's id
// instead of their own (Page.IDs).
func (s *subscriber) ownFrames(p *replay.Page) bool {
	return p.IDs != nil || (s.opts.TopicEvents && p.Topics != nil)
}

// ownFrame appends event i of p with this stream's fields: the shared frame
// without its final blank line, then an event field (the topic) and an id
// field (the cursor's), which win over the frame's own since a parser
// keeps the last of each, then the blank line. The data is not encoded
// again. Compressed streams compress these bytes on their own.
func (s *subscriber) ownFrame(dst []byte, p *replay.Page, i int) []byte {
	frame := p.Events[i].Frame
	if n := len(frame); n < 2 || frame[n-1] != '\n' || frame[n-2] != '\n' {
		return s.frame(dst, p.Events[i]) // not an SSE frame: as it is
	}
	start := len(dst)
	dst = append(dst, frame[:len(frame)-1]...)
	if s.opts.TopicEvents && p.Topics != nil {
		dst = append(dst, "event: "...)
		dst = append(dst, p.Topics[i]...)
		dst = append(dst, '\n')
	}
	if p.IDs != nil {
		dst = append(dst, "id: "...)
		dst = append(dst, p.IDs[i]...)
		dst = append(dst, '\n')
	}
	dst = append(dst, '\n')
	if s.enc == nil {
		return dst
	}
	plain := append([]byte(nil), dst[start:]...)
	return s.enc.own(dst[:start], plain)
}

// write sends b and flushes it through every layer (encode's compressor
// included), bounded by the write timeout.
//
// The deadline is moved forward only once half of the timeout has passed
// since it was set, sparing a timer update on most deliveries: every write
// still has between half and all of the write timeout to complete.
func (s *subscriber) write(b []byte) error {
	now := time.Now()
	s.lastWrite = now
	var deadline time.Time
	if t := s.opts.WriteTimeout; t > 0 {
		if s.deadline.Sub(now) < t/2 {
			s.deadline = now.Add(t)
			deadline = s.deadline
		}
	}
	n, err := s.out.send(b, deadline)
	s.stats.Bytes += int64(n)
	return err
}

// sink is where a subscriber's bytes go: a response writer, or a connection
// taken over from net/http (detached).
type sink interface {
	// send writes b and pushes it all the way to the client by deadline
	// (zero: none).
	send(b []byte, deadline time.Time) (int, error)
	// gone reports a client known to have closed its side; checked when
	// the stream is idle.
	gone() bool
}

type responseSink struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (r *responseSink) send(b []byte, deadline time.Time) (int, error) {
	if !deadline.IsZero() {
		// HTTP/1.1, HTTP/2 and HTTP/3 (quic-go's response writer, reached
		// through Caddy's wrappers by Unwrap) all take it; ErrNotSupported
		// from some other writer leaves the stream without a deadline, and
		// the server's own timeouts still apply there.
		_ = r.rc.SetWriteDeadline(deadline)
	}
	n, err := r.w.Write(b)
	if err != nil {
		return n, fmt.Errorf("writing to subscriber: %w", err)
	}
	if err := r.rc.Flush(); err != nil {
		return n, fmt.Errorf("flushing to subscriber: %w", err)
	}
	return n, nil
}

// gone: the request context already tells when the client leaves.
func (*responseSink) gone() bool { return false }
