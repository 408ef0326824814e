package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssegate/caddy-sse/lines"
	"github.com/ssegate/caddy-sse/replay"
)

var (
	errIdle          = errors.New("upstream sent nothing for idle_timeout")
	errHeaderTimeout = errors.New("upstream sent no response head in time")
	errLeaseLost     = errors.New("another node took over the source (lease lost)")
)

func newRunContext() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// outcome is how one connection ended.
type outcome struct {
	reason     error
	status     int
	progress   bool // lines were read: the next failure starts backoff afresh
	retryAfter time.Duration
	ended      bool // the topic ended: stop for good
	stop       bool // the store is gone: stop for good
	// stalled: the store could not take a line, so reading stopped; the
	// line comes again when the upstream is resumed.
	stalled bool
	// idle is the connection's idle watchdog, if any: a line waiting for
	// the store is no silence of the upstream's.
	idle *idleReader
	// run is the context of the run, which outlives the connection.
	run context.Context

	lines, appended, skipped, duplicates int64
}

// run connects, reads and reconnects until ctx ends or the source ends.
// On a store shared by several nodes it first waits to hold the source's
// lease, resumes from the cursor the last holder recorded, and goes back to
// waiting when the lease is lost.
func (s *Source) run(ctx context.Context) {
	defer s.skips.flush(s)
	shared, _ := s.store.(replay.Shared)
	defer func() {
		if s.lease != nil {
			s.lease.Release()
			s.lease = nil
		}
	}()
	for {
		if shared != nil && !s.holdsLease() {
			if !s.acquireLease(ctx, shared) {
				return
			}
		}
		out := s.connect(ctx)
		if ctx.Err() != nil {
			s.log().Info("upstream closed", zap.Int64("lines", out.lines), zap.Int64("appended", out.appended),
				zap.Int64("skipped", out.skipped), zap.Int64("duplicates", out.duplicates))
			return
		}
		if out.ended || out.stop {
			s.ended.Store(true)
			return
		}
		if errors.Is(out.reason, errLeaseLost) {
			s.log().Warn("lease lost: another node pulls the upstream now")
			continue
		}
		// Reading lines is progress unless each of them waited for a store
		// that is still down: then backoff must grow as for a dead upstream.
		if out.progress && (!out.stalled || out.appended+out.duplicates+out.skipped > 0) {
			s.attempt = 0
		}
		delay := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, s.attempt)
		s.attempt++
		if out.retryAfter > delay {
			delay = out.retryAfter
		}
		s.skips.flush(s)
		level := zapcore.WarnLevel
		if out.status/100 == 2 && (errors.Is(out.reason, io.EOF) || errors.Is(out.reason, errIdle)) {
			level = zapcore.InfoLevel
		}
		msg := "upstream disconnected"
		switch {
		case out.stalled:
			msg = "store unavailable: upstream disconnected, resuming after the last appended line"
			level = zapcore.WarnLevel
		case out.status/100 != 2:
			msg = "upstream unavailable"
		}
		if c := s.log().Check(level, msg); c != nil {
			fields := []zap.Field{
				zap.String("reason", reasonText(out.reason)),
				zap.Duration("reconnect_in", delay),
				zap.Int("attempt", s.attempt),
			}
			if out.status != 0 {
				fields = append(fields, zap.Int("status", out.status))
			}
			if out.status/100 == 2 {
				fields = append(fields, zap.Int64("lines", out.lines), zap.Int64("appended", out.appended),
					zap.Int64("skipped", out.skipped), zap.Int64("duplicates", out.duplicates))
			}
			c.Write(fields...)
		}
		if !sleep(ctx, delay) {
			return
		}
	}
}

// sleep waits for d; it returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func reasonText(err error) string {
	switch {
	case err == nil:
		return "unknown"
	case errors.Is(err, io.EOF):
		return "upstream ended the stream (EOF)"
	}
	return err.Error()
}

// holdsLease reports whether the source still holds its lease.
func (s *Source) holdsLease() bool {
	if s.lease == nil {
		return false
	}
	select {
	case <-s.lease.Lost():
		s.lease.Release()
		s.lease = nil
		return false
	default:
		return true
	}
}

// acquireLease waits until this node holds the source's lease, then takes
// the upstream cursor its last holder recorded. It returns false when ctx
// ends first.
func (s *Source) acquireLease(ctx context.Context, shared replay.Shared) bool {
	for attempt := 0; ; attempt++ {
		lease, err := shared.Lease(ctx, s.leaseName())
		if err == nil {
			s.lease = lease
			if c := lease.Cursor(); c != "" {
				s.lin.mu.Lock()
				s.lin.cursor = c
				s.lin.mu.Unlock()
			}
			s.log().Info("holding the source's lease: this node pulls the upstream", zap.String("cursor", lease.Cursor()))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		delay := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, attempt)
		s.log().Warn("cannot take the source's lease", zap.Error(err), zap.Duration("retry_in", delay))
		if !sleep(ctx, delay) {
			return false
		}
	}
}

// leaseName names the lease of a source on a shared store: the same on
// every node whose source reads the same upstream into the same topics.
func (s *Source) leaseName() string {
	m := s.cfg.Mapping
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s", s.cfg.URL, s.cfg.Format, m.Topic, m.TopicField, m.IDField))
	return "source:" + hex.EncodeToString(sum[:16])
}

// request builds the upstream request, with the resume cursor.
func (s *Source) request(ctx context.Context) (req *http.Request, cursor string) {
	u := *s.url
	cursor = s.lin.position()
	if cursor != "" && s.cfg.ResumeQuery != "" {
		q := u.Query()
		q.Set(s.cfg.ResumeQuery, cursor)
		u.RawQuery = q.Encode()
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	for name, values := range s.cfg.Header {
		req.Header[http.CanonicalHeaderKey(name)] = append([]string(nil), values...)
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
		req.Header.Del("Host")
	}
	if req.Header.Get("Accept") == "" {
		if s.cfg.Format == FormatSSE {
			req.Header.Set("Accept", "text/event-stream")
		} else {
			req.Header.Set("Accept", "application/x-ndjson, application/jsonl;q=0.9, */*;q=0.1")
		}
	}
	if req.Header.Get("Cache-Control") == "" {
		req.Header.Set("Cache-Control", "no-cache")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "caddy-sse")
	}
	if cursor != "" && s.cfg.ResumeHeader != "" {
		req.Header.Set(s.cfg.ResumeHeader, cursor)
	}
	return req, cursor
}

// connect makes one request and reads its stream to the end.
func (s *Source) connect(parent context.Context) (out outcome) {
	out.run = parent
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	wait, timeoutErr := s.cfg.IdleTimeout, errIdle
	if wait <= 0 {
		wait, timeoutErr = headerTimeout, errHeaderTimeout
	}
	watchdog := time.AfterFunc(wait, func() { cancel(timeoutErr) })
	defer watchdog.Stop()
	cause := func(err error) error {
		if c := context.Cause(ctx); c != nil && parent.Err() == nil {
			return c
		}
		return err
	}
	if lease := s.lease; lease != nil {
		// A paused node must stop reading as soon as it learns it lost the
		// lease; its appends would be refused anyway (fenced).
		go func() {
			select {
			case <-lease.Lost():
				cancel(errLeaseLost)
			case <-ctx.Done():
			}
		}()
	}

	req, cursor := s.request(ctx)
	s.requests.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		out.reason = cause(err)
		return out
	}
	defer func() {
		cancel(nil)
		resp.Body.Close()
	}()
	out.status = resp.StatusCode
	switch {
	case resp.StatusCode == http.StatusNoContent:
		s.log().Info("upstream answered 204: ending its topics")
		s.closeAll(parent)
		out.ended = true
		return out
	case resp.StatusCode/100 != 2:
		out.reason = fmt.Errorf("upstream answered %s", resp.Status)
		out.retryAfter = retryAfter(resp.Header, time.Now())
		return out
	}
	s.connects.Add(1)
	s.log().Info("upstream connected", zap.Int("status", resp.StatusCode), zap.String("cursor", cursor))
	body := io.Reader(resp.Body)
	if s.cfg.IdleTimeout > 0 {
		out.idle = &idleReader{r: resp.Body, t: watchdog, d: s.cfg.IdleTimeout}
		body = out.idle
	} else {
		watchdog.Stop()
	}
	var err2 error
	if s.cfg.Format == FormatSSE {
		err2 = s.readSSE(ctx, body, &out)
	} else {
		err2 = s.readNDJSON(ctx, body, &out)
	}
	if err2 != nil {
		out.reason = cause(err2)
	}
	if out.retryAfter > 0 {
		out.retryAfter = min(out.retryAfter, s.cfg.BackoffMax)
	}
	return out
}

// idleReader re-arms the idle watchdog whenever the upstream sends bytes.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}

// readNDJSON appends the lines of one connection. It returns the error
// that ended the stream, or nil when the source must stop.
func (s *Source) readNDJSON(ctx context.Context, body io.Reader, out *outcome) error {
	sp := lines.NewSplitter(body, s.cfg.MaxLine, false)
	for {
		l, err := sp.Next()
		if err != nil {
			return err
		}
		out.progress = true
		out.lines++
		s.lines.Add(1)
		if l.TooLong {
			s.skip(out, l, skipLineTooLong)
			continue
		}
		rec, err := s.cfg.Mapping.Map(l.Text)
		if err != nil {
			var sk *Skip
			if !errors.As(err, &sk) {
				sk = &Skip{Kind: SkipMalformed, Reason: err.Error()}
			}
			s.skip(out, l, sk)
			continue
		}
		if s.deliver(ctx, l, rec, rec.ID != "", out) {
			return nil
		}
	}
}

// readSSE relays the events of one connection.
func (s *Source) readSSE(ctx context.Context, body io.Reader, out *outcome) error {
	sp := lines.NewSplitter(body, s.cfg.MaxLine, true)
	p := newSSEParser(s.cfg.Mapping.MaxEvent)
	defer func() {
		if p.Retry >= 0 {
			out.retryAfter = p.Retry
		}
	}()
	for {
		l, err := sp.Next()
		if err != nil {
			return err
		}
		out.progress = true
		ev, skip := p.Line(l)
		if skip != nil {
			out.lines++
			s.lines.Add(1)
			s.skip(out, l, skip)
			continue
		}
		if ev == nil {
			continue
		}
		out.lines++
		s.lines.Add(1)
		rec := Record{Topic: s.cfg.Mapping.Topic, ID: ev.ID, Event: ev.Type, Data: ev.Data}
		if s.deliver(ctx, lines.Line{N: l.N, Text: ev.Data[:min(len(ev.Data), lines.SampleLen)]}, rec, ev.OwnID, out) {
			return nil
		}
	}
}

// deliver appends one record unless its upstream id was appended already.
// It returns true when the source must stop reading this connection.
//
// A store that cannot take the record now never costs the line. When the
// upstream can send it again (the line has an id that is sent back on
// reconnection), reading stops and the source reconnects after backoff,
// resuming after the last line appended: the cursor only moves past a line
// once it is in the store. Otherwise the line is held and its append
// retried with backoff while the connection stays open but unread, so the
// upstream is held back by TCP flow control and only this one line waits
// in memory.
func (s *Source) deliver(ctx context.Context, l lines.Line, rec Record, dedup bool, out *outcome) bool {
	lin := s.lin
	lin.mu.Lock()
	defer lin.mu.Unlock()
	b := replay.Batch{Events: []replay.Draft{{Type: rec.Event, Data: rec.Data}}}
	if s.lease != nil {
		// Shared store: the append is fenced by the lease and records the
		// cursor for the next holder. An append that timed out may still
		// have happened; its idempotency key makes sending it again safe,
		// and also drops the overlap a new holder reads after resuming.
		b.Lease, b.Cursor = s.lease, rec.ID
		if dedup {
			b.Key = "source:" + rec.ID
		} else {
			b.Key = s.lineKey()
		}
	}
	paused := false
	for attempt := 0; ; attempt++ {
		if dedup && lin.has(rec.ID) {
			out.duplicates++
			s.duplicates.Add(1)
			return false
		}
		res, err := s.store.Append(ctx, rec.Topic, b)
		if err == nil {
			return s.took(lin, rec, dedup, res, out)
		}
		fault, kind := classify(err)
		switch {
		case fault == faultLine || fault == faultTopicClosed && s.cfg.Mapping.TopicField != "":
			s.skip(out, l, &Skip{Kind: kind, Reason: "store: " + err.Error()})
			return false
		case fault == faultTopicClosed:
			s.log().Info("topic was closed: source stops", zap.String("topic", rec.Topic))
			out.ended = true
			return true
		case fault == faultStoreClosed:
			out.stop = true
			out.reason = err
			return true
		case ctx.Err() != nil:
			// The run is ending, the lease was lost or the upstream went
			// idle: the connection's own cause says which.
			out.reason = context.Cause(ctx)
			return true
		case errors.Is(err, replay.ErrLeaseLost):
			out.reason = errLeaseLost
			return true
		case dedup && rec.ID != "" && (s.cfg.ResumeHeader != "" || s.cfg.ResumeQuery != ""):
			out.stalled = true
			out.reason = fmt.Errorf("appending upstream line %d (id %s) to %s: %w", l.N, rec.ID, rec.Topic, err)
			return true
		}
		delay := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, attempt)
		s.log().Warn("store unavailable: holding an upstream line that cannot be resumed, reading paused",
			zap.Int("line", l.N), zap.String("topic", rec.Topic), zap.Error(err),
			zap.Duration("retry_in", delay), zap.Int("attempt", attempt+1))
		if out.idle != nil && !paused {
			out.idle.t.Stop()
			paused = true
			defer out.idle.t.Reset(out.idle.d)
		}
		// The sibling source of a reload may append meanwhile; it must
		// not wait for this store to come back.
		lin.mu.Unlock()
		ok := sleep(ctx, delay)
		lin.mu.Lock()
		if !ok {
			s.log().Warn("dropping an upstream line held for the store: the connection ended",
				zap.Int("line", l.N), zap.String("topic", rec.Topic), zap.NamedError("reason", context.Cause(ctx)))
			out.reason = context.Cause(ctx)
			return true
		}
	}
}

// took records a record the store took (or already had). It returns
// true when the source must stop.
func (s *Source) took(lin *lineage, rec Record, dedup bool, res replay.Appended, out *outcome) bool {
	if res.Duplicate {
		out.duplicates++
		s.duplicates.Add(1)
		lin.add(rec.ID)
		lin.cursor = rec.ID
		return false
	}
	out.appended++
	s.appended.Add(1)
	if rec.ID != "" {
		if dedup {
			lin.add(rec.ID)
		}
		lin.cursor = rec.ID
	}
	if len(s.topics) < maxTracked {
		s.topics[rec.Topic] = struct{}{}
	}
	if rec.Close {
		// The sibling source of a reload must not wait for the store.
		lin.mu.Unlock()
		s.closeTopic(out.run, rec.Topic, "close_when")
		lin.mu.Lock()
		if s.cfg.Mapping.TopicField == "" {
			out.ended = true
			return true
		}
	}
	return false
}

// lineKey is the idempotency key of a line without an id, unique to this
// source's life: a retried append of the line cannot add it twice.
func (s *Source) lineKey() string {
	return "source:~" + s.nonce + ":" + strconv.FormatInt(s.keys.Add(1), 36)
}

// maxTracked bounds the topics a topic_field source remembers, to end
// them when the upstream answers 204.
const maxTracked = 10000

// closeTopic ends a topic the upstream ended. What said so (a close_when
// line, now appended, or a 204) does not come again, so a store that cannot
// take the close now is asked again until it does or the run ends. ctx is
// the run's: the connection's watchdogs and a lost lease must not cut this
// short (closing twice is harmless).
func (s *Source) closeTopic(ctx context.Context, topic, why string) {
	for attempt := 0; ; attempt++ {
		err := s.store.CloseTopic(ctx, topic)
		if err == nil || errors.Is(err, replay.ErrTopicClosed) {
			delete(s.topics, topic)
			s.log().Info("topic ended by upstream", zap.String("topic", topic), zap.String("by", why))
			return
		}
		if fault, _ := classify(err); fault != faultTransient || ctx.Err() != nil {
			s.log().Error("ending topic", zap.String("topic", topic), zap.Error(err))
			return
		}
		delay := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, attempt)
		s.log().Warn("store unavailable: ending the topic later", zap.String("topic", topic),
			zap.Error(err), zap.Duration("retry_in", delay))
		if !sleep(ctx, delay) {
			s.log().Error("topic not ended: the source stopped first", zap.String("topic", topic))
			return
		}
	}
}

// closeAll ends the source's topic, or every topic it routed lines to.
func (s *Source) closeAll(ctx context.Context) {
	if t := s.cfg.Mapping.Topic; t != "" {
		s.closeTopic(ctx, t, "204")
		return
	}
	for t := range s.topics {
		s.closeTopic(ctx, t, "204")
	}
}

// skipLog rate-limits the logs of skipped lines: the first skip is logged
// at once, later ones at most once per skipLogEvery as a summary, and what
// is pending when a connection ends.
type skipLog struct {
	last    time.Time
	pending int64
	line    int
	reason  string
	sample  []byte
	length  int64
}

const skipLogEvery = 10 * time.Second

func (s *Source) skip(out *outcome, l lines.Line, why *Skip) {
	out.skipped++
	s.skipped[skipIndex(why.Kind)].Add(1)
	sl := &s.skips
	sl.pending++
	sl.line, sl.reason, sl.length = l.N, why.Reason, l.Len
	sl.sample = append(sl.sample[:0], l.Text[:min(len(l.Text), lines.SampleLen)]...)
	if now := time.Now(); now.Sub(sl.last) >= skipLogEvery {
		sl.last = now
		sl.flush(s)
	}
}

func (sl *skipLog) flush(s *Source) {
	if sl.pending == 0 {
		return
	}
	s.log().Warn("skipped upstream lines",
		zap.Int64("skipped", sl.pending),
		zap.Int("last_line", sl.line),
		zap.String("last_reason", sl.reason),
		zap.Int64("last_length", sl.length),
		zap.String("last_sample", string(bytes.ToValidUTF8(sl.sample, []byte("\uFFFD")))))
	sl.pending = 0
}
