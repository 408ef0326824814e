package caddysse

import (
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
)

// subscribers counts open streams in the process; it outlives handler
// instances so that a reload does not reset the limit.
var subscribers atomic.Int64

// cursorFrom reads where the client wants to resume: the Last-Event-ID
// header its EventSource sends on reconnection, or a query parameter for a
// first connection and for polyfills. The header wins.
func cursorFrom(r *http.Request) string { return cursorFromLimit(r, maxCursorLength) }

// cursorFromLimit is cursorFrom with a length limit of its own (a
// multi-topic cursor may be longer).
func cursorFromLimit(r *http.Request, limit int) string {
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		q := r.URL.Query()
		from = q.Get("lastEventId")
		if from == "" {
			from = q.Get("last_event_id")
		}
	}
	if len(from) > limit {
		// Never matches an id; the client gets a reset.
		from = from[:limit]
	}
	return from
}

func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request, topic string) error {
	grant, ok := h.authorize(w, r, []string{topic})
	if !ok {
		return nil
	}
	if n := subscribers.Add(1); n > int64(h.Limits.Subscribers) {
		subscribers.Add(-1)
		return h.turnAway(w, rejectSubscribers, fmt.Sprintf("subscriber limit of %d reached", h.Limits.Subscribers))
	}

	from := cursorFrom(r)
	cur, err := h.store.Subscribe(r.Context(), topic, from, h.gapPolicy())
	if err != nil {
		subscribers.Add(-1)
		return h.notSubscribed(w, err, topic)
	}
	sub := &subscription{h: h, cur: cur, release: h.sourceDemand(topic), topic: topic, from: from, started: time.Now()}
	enc, ok := h.startStream(w, r, sub)
	if !ok {
		return nil // the client is gone already
	}
	opts := h.streamOptions(enc)
	opts.Expires = grant.Expires
	if from == "" {
		// A client that connected without a cursor gets one at once, so
		// that a drop before the first event (a reload's drain, a proxy's
		// idle cut) resumes exactly instead of missing what came between.
		opts.Position = cur.Position()
	}
	if opts.WriteTimeout > 0 {
		w = pastIdleWriter(w, r)
	}
	h.streams.Serve(w, r, topic, cur, opts, sub.ended)
	return nil
}

// pastIdleWriter returns the writer beneath Caddy's write idle timeout when
// that is the writer the stream was given. The stream bounds its own
// writes (write_timeout), and Caddy's idle writer moves the write deadline
// before and clears it after every write and every flush: on HTTP/2 each
// of those is a message to the connection's goroutine and a timer, a
// quarter of the CPU of a delivery. Any other writer above it (an access
// log's recorder, encode) keeps the whole chain as it is.
func pastIdleWriter(w http.ResponseWriter, r *http.Request) http.ResponseWriter {
	_, idle := caddyhttp.IdleTimeoutsFromContext(r.Context())
	if iw, ok := w.(*caddyhttp.IdleTimeoutWriter); !ok || iw != idle || iw.ResponseWriterWrapper == nil {
		return w
	}
	return idle.ResponseWriter
}

func (h *Handler) streamOptions(enc *stream.Encoding) stream.Options {
	heartbeat := time.Duration(h.Heartbeat)
	if heartbeat < 0 {
		heartbeat = 0
	}
	retry := time.Duration(h.Retry)
	return stream.Options{
		Retry:        retry,
		Heartbeat:    heartbeat,
		WriteTimeout: time.Duration(h.WriteTimeout),
		ResetEvent:   h.ResetEvent,
		CloseEvent:   h.CloseEvent,
		Stop:         h.stop,
		StopRetry: func() time.Duration {
			return retry + mathrand.N(stopJitter)
		},
		Drain:        h.drainDelay,
		Encoding:     enc,
		ExpiredEvent: h.ExpiredEvent,
	}
}

// subscription is what one stream holds until it ends, in the request's
// goroutine or, once detached, in its own.
type subscription struct {
	h       *Handler
	cur     replay.Cursor
	release func()
	topic   string
	from    string
	started time.Time
}

// ended releases the stream's cursor, demand and subscriber slot, and
// accounts for what it delivered.
func (s *subscription) ended(stats stream.Stats, err error) {
	h := s.h
	s.cur.Close()
	s.release()
	subscribers.Add(-1)
	metrics.delivered.Add(float64(stats.Events))
	metrics.resets.Add(float64(stats.Resets))
	metrics.bytesWritten.Add(float64(stats.Bytes))
	if errors.Is(err, stream.ErrStoreRead) {
		h.logger.Warn("reading topic failed; subscriber sent back to reconnect", zap.String("topic", s.topic), zap.Error(err))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		metrics.slowDisconnects.Inc()
		h.logger.Debug("subscriber too slow, disconnected", zap.String("topic", s.topic), zap.Duration("write_timeout", time.Duration(h.WriteTimeout)))
	}
	if c := h.logger.Check(zap.DebugLevel, "stream ended"); c != nil {
		c.Write(zap.String("topic", s.topic), zap.String("from", s.from),
			zap.Int("events", stats.Events), zap.Int("resets", stats.Resets),
			zap.Int64("bytes", stats.Bytes), zap.Duration("duration", time.Since(s.started)),
			zap.NamedError("reason", err))
	}
}

// drainDelay picks when a stream of a stopping config ends: at once when
// the process exits, at a random moment of the drain window on a reload.
func (h *Handler) drainDelay() time.Duration {
	if caddy.Exiting() || h.DrainWindow <= 0 {
		return 0
	}
	return mathrand.N(time.Duration(h.DrainWindow))
}

// startStream counts a subscription whose cursor is open, negotiates its
// encoding and sends the response head. It reports false, having ended
// the subscription, when the client is gone already.
func (h *Handler) startStream(w http.ResponseWriter, r *http.Request, sub *subscription) (*stream.Encoding, bool) {
	metrics.subscriptions.Inc()
	if sub.from != "" {
		metrics.replays.Inc()
	}
	var enc *stream.Encoding
	if len(h.encodings) > 0 {
		enc = stream.Negotiate(r.Header.Get("Accept-Encoding"), h.encodings)
		w.Header().Add("Vary", "Accept-Encoding")
		// Whatever was negotiated, encode must not compress again.
		w.Header().Set("Cache-Control", "no-cache, no-transform")
	}
	if err := stream.WriteHead(w, enc); err != nil {
		sub.ended(stream.Stats{}, err)
		return nil, false
	}
	return enc, true
}

// gapPolicy is where a cursor continues when it cannot continue exactly.
func (h *Handler) gapPolicy() replay.GapPolicy {
	if h.OnGap == "live" {
		return replay.GapLive
	}
	return replay.GapReplay
}

// notSubscribed answers a subscriber the store did not open a cursor for,
// on one topic or several.
func (h *Handler) notSubscribed(w http.ResponseWriter, err error, topics ...string) error {
	switch {
	case errors.Is(err, replay.ErrTopicClosed):
		// 204 is the one answer that makes EventSource stop reconnecting:
		// the store says so only to a client with nothing left to get (no
		// cursor, or one at the close of every topic).
		w.WriteHeader(http.StatusNoContent)
		return nil
	case errors.Is(err, replay.ErrTooManyTopics):
		return h.turnAway(w, rejectTopics, err.Error())
	case errors.Is(err, replay.ErrTooManySubscribers):
		return h.turnAway(w, rejectSubscribersPerTopic, err.Error())
	case errors.Is(err, replay.ErrUnavailable):
		return h.turnAway(w, rejectUnavailable, "store unavailable")
	}
	h.logger.Error("subscribing", zap.Strings("topics", topics), zap.Error(err))
	return h.turnAway(w, rejectUnavailable, "subscribing failed")
}
