// Package caddysse is a Caddy HTTP handler that serves Server-Sent Events:
// every topic is an ordered log of events with ids, browsers subscribe with
// EventSource and resume with Last-Event-ID, and webhooks POSTed to the same
// URL publish into the topic.
package caddysse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/webhook"
	"github.com/ssegate/caddy-sse/wire"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultTopic        = "{http.request.uri.path}"
	DefaultRetry        = 3 * time.Second
	DefaultHeartbeat    = 15 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultDrainWindow  = 5 * time.Second
	DefaultResetEvent   = "reset"
	DefaultCloseEvent   = "close"
	DefaultEventSize    = 1 << 20
	DefaultTopicLength  = 256
	DefaultSubscribers  = 10000
	DefaultMaxBody      = 1 << 20
	DefaultPublishEvent = "message"

	// stopJitter spreads the reconnections of clients cut off by a shutdown
	// or reload over this much time beyond their retry.
	stopJitter = 5 * time.Second
	// maxCursorLength bounds the Last-Event-ID a client may send; longer
	// values are treated as unknown ids.
	maxCursorLength = 512
	// detachedExitWait bounds how long an exiting process waits for its
	// detached streams to end.
	detachedExitWait = 5 * time.Second
)

// Handler serves Server-Sent Events. A GET subscribes to the topic the
// request names; with a publish block, a POST appends events to it and a
// DELETE ends it.
type Handler struct {
	// The topic a request addresses. Placeholders are expanded per request.
	// Default: `{http.request.uri.path}`.
	Topic string `json:"topic,omitempty"`

	// The reconnection delay sent to clients in the `retry:` field when
	// their stream opens. Default: 3s.
	Retry caddy.Duration `json:"retry,omitempty"`

	// After this much silence a comment line is written, so that proxies
	// and load balancers keep the idle stream open. Parked streams (see
	// detach) get theirs in bulk, after between 7/8 and all of this much
	// silence. Default: 15s; a negative value turns heartbeats off.
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`

	// Every write to a subscriber must complete within this time; a client
	// that stops reading is disconnected rather than holding resources.
	// Default: 30s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// When a config reload replaces this handler, its open streams keep
	// delivering and end one by one at random moments within this window,
	// each with a retry hint, so that clients reconnect to the new config
	// (and resume with Last-Event-ID) spread out rather than all at once.
	// When the process exits, streams end at once. Default: 5s; a negative
	// value ends them at once on reloads too.
	DrainWindow caddy.Duration `json:"drain_window,omitempty"`

	// How much history each topic retains for resumption.
	History *History `json:"history,omitempty"`

	// What a client resuming from an id that is no longer in history gets
	// after the reset event: `replay` (default) sends everything retained,
	// `live` only new events.
	OnGap string `json:"on_gap,omitempty"`

	// The name of the event sent when a stream cannot resume exactly after
	// the client's id. Its data is JSON: `{"reason": "expired"|"unknown",
	// "requested": <id>, "resume_after": <id>}`, and its id is where delivery
	// resumes. Default: `reset`.
	ResetEvent string `json:"reset_event,omitempty"`

	// The name of the last event of a stream whose topic was ended.
	// Default: `close`.
	CloseEvent string `json:"close_event,omitempty"`

	// Compress event streams here, each event compressed once and the bytes
	// shared by every subscriber, with these encodings in order of
	// preference: `gzip`, `zstd`. The encoding is negotiated from
	// Accept-Encoding (q-values honoured; identity when nothing matches).
	// Responses then carry Content-Encoding themselves, so Caddy's encode
	// leaves them alone. Default: empty, off: Caddy's encode, if
	// configured, compresses each stream with a compressor of its own.
	Compress []string `json:"compress,omitempty"`

	// Take plain HTTP/1.x streams over from net/http once their head is
	// sent, so that an idle subscriber holds a few KiB (its connection and
	// cursor; caught-up plain-TCP streams wait parked, without a goroutine,
	// served by one goroutine per topic) instead of the ~38 KiB of a
	// request in flight. Streams over HTTP/2 and HTTP/3, and streams that encode
	// compresses, are never detached. A detached stream is logged by
	// Caddy's access log when it starts (with that duration), and notices
	// a client that left by a failed write or at the next heartbeat.
	// Default: true.
	Detach *bool `json:"detach,omitempty"`

	// Enables publishing (POST) and ending topics (DELETE) on the same URL.
	// Without it both answer 405.
	Publish *Publish `json:"publish,omitempty"`

	// Bounds on what clients can make the handler hold.
	Limits *Limits `json:"limits,omitempty"`

	// Where topic logs live. Default: `{"module": "memory"}`.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.sse.stores inline_key=module"`

	// Upstreams pulled into topics: NDJSON or event-stream backends, each
	// read by one connection however many clients listen. See
	// SourceConfig.
	Sources []*SourceConfig `json:"sources,omitempty"`

	store     replay.Store
	encodings []*stream.Encoding
	verifier  webhook.Any
	logger    *zap.Logger

	// stop is done when the config this handler belongs to stops (a
	// reload or the process exiting), ending every open stream.
	stop   context.Context
	endAll context.CancelFunc

	detach bool
	// detached counts the streams running outside a request, which Caddy's
	// own shutdown no longer waits for.
	detached *sync.WaitGroup
	// lots park the detached streams that have nothing to send, per topic.
	lots *stream.Lots
}

// History bounds a topic's log. The oldest events are pruned first when any
// bound is exceeded.
type History struct {
	// Most events retained per topic. Default: 1000.
	Events int `json:"events,omitempty"`
	// Most bytes retained per topic (payload and its encoding). Default:
	// 16MiB.
	Size int64 `json:"size,omitempty"`
	// Events older than this are pruned; a closed topic is remembered (and
	// answers 204) this long. Default: 1h.
	Age caddy.Duration `json:"age,omitempty"`
}

// Limits bound what clients can make the handler hold. Past a limit a
// subscriber gets 503 with Retry-After, a publisher 413 or 503; nothing
// already accepted is dropped.
type Limits struct {
	// Most topics alive at once, closed ones still remembered included.
	// Default: 10000.
	Topics int `json:"topics,omitempty"`
	// Most open streams in this process, across every sse handler.
	// Default: 10000.
	Subscribers int `json:"subscribers,omitempty"`
	// Most open streams per topic on this node. Default: 0 (no limit but
	// the global one).
	SubscribersPerTopic int `json:"subscribers_per_topic,omitempty"`
	// Largest event payload in bytes. Default: 1MiB.
	EventSize int64 `json:"event_size,omitempty"`
	// Longest topic name in bytes. Default: 256.
	TopicLength int `json:"topic_length,omitempty"`
}

// Publish configures the webhook side: POST appends events, DELETE ends the
// topic. At least one authentication scheme is required, unless
// allow_unauthenticated says otherwise; when several are configured, any one
// passing admits the request.
type Publish struct {
	// Accepted bearer tokens (`Authorization: Bearer <token>`).
	Bearer []string `json:"bearer,omitempty"`
	// GitHub-style HMAC signatures of the raw body.
	HMACSHA256 []HMACSecret `json:"hmac_sha256,omitempty"`
	// Standard Webhooks (v1) signing secrets, `whsec_` followed by base64.
	// Several may be listed during key rotation.
	StandardWebhooks []string `json:"standard_webhooks,omitempty"`
	// Admit publishes without authentication. Required to provision a
	// publish block with no scheme, so that an open endpoint is a choice.
	AllowUnauthenticated bool `json:"allow_unauthenticated,omitempty"`
	// The event type of published events. Placeholders are expanded per
	// request, e.g. `{http.request.header.X-GitHub-Event}`. Default:
	// `message`.
	Event string `json:"event,omitempty"`
	// Largest request body in bytes. Default: 1MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// How long a delivery id (`webhook-id`, `X-GitHub-Delivery` or
	// `Idempotency-Key`) is remembered: a repeat within this window appends
	// nothing and answers with the original ids. Default: 1h.
	DedupWindow caddy.Duration `json:"dedup_window,omitempty"`
}

// HMACSecret is a secret for GitHub-style signatures.
type HMACSecret struct {
	// The shared secret. Placeholders such as `{env.GITHUB_SECRET}` work.
	Secret string `json:"secret"`
	// The header carrying `sha256=<hex>`. Default: `X-Hub-Signature-256`.
	Header string `json:"header,omitempty"`
}

// subscribers counts open streams in the process; it outlives handler
// instances so that a reload does not reset the limit.
var subscribers atomic.Int64

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, opens the store and listens for the config
// stopping.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.stop, h.endAll = context.WithCancel(context.Background())
	h.detach = h.Detach == nil || *h.Detach
	h.lots = stream.NewLots(h.stop)
	h.detached = new(sync.WaitGroup)
	h.setDefaults()
	repl := caddy.NewReplacer()

	for _, name := range h.Compress {
		enc := stream.EncodingByName(name)
		if enc == nil {
			return fmt.Errorf("compress: unknown encoding %q; offered: gzip, zstd", name)
		}
		h.encodings = append(h.encodings, enc)
	}

	if h.Publish != nil {
		v, err := h.Publish.verifiers(repl)
		if err != nil {
			return err
		}
		h.verifier = v
	}

	if h.StoreRaw == nil {
		h.StoreRaw = json.RawMessage(`{"module": "memory"}`)
	}
	mod, err := ctx.LoadModule(h, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading sse store: %w", err)
	}
	provider, ok := mod.(StoreProvider)
	if !ok {
		return fmt.Errorf("sse store module %T does not provide a store", mod)
	}
	h.store = provider.Store()
	h.store.Configure(h.storeConfig())
	if err := h.provisionSources(ctx); err != nil {
		return err
	}

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering sse metrics: %w", err)
	}

	// Streams never end by themselves, so a stopping server would wait for
	// them forever (caddy stop) or leave them on the old config (reload):
	// end them when the config stops.
	events, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	if err := events.(*caddyevents.App).On("stopping", stoppingListener{h}); err != nil {
		return fmt.Errorf("subscribing to stopping event: %w", err)
	}
	return nil
}

func (h *Handler) setDefaults() {
	if h.Topic == "" {
		h.Topic = DefaultTopic
	}
	if h.Retry == 0 {
		h.Retry = caddy.Duration(DefaultRetry)
	}
	if h.Heartbeat == 0 {
		h.Heartbeat = caddy.Duration(DefaultHeartbeat)
	}
	if h.WriteTimeout == 0 {
		h.WriteTimeout = caddy.Duration(DefaultWriteTimeout)
	}
	if h.DrainWindow == 0 {
		h.DrainWindow = caddy.Duration(DefaultDrainWindow)
	}
	if h.ResetEvent == "" {
		h.ResetEvent = DefaultResetEvent
	}
	if h.CloseEvent == "" {
		h.CloseEvent = DefaultCloseEvent
	}
	if h.History == nil {
		h.History = new(History)
	}
	if h.Limits == nil {
		h.Limits = new(Limits)
	}
	if h.Limits.Subscribers == 0 {
		h.Limits.Subscribers = DefaultSubscribers
	}
	if h.Limits.EventSize == 0 {
		h.Limits.EventSize = DefaultEventSize
	}
	if h.Limits.TopicLength == 0 {
		h.Limits.TopicLength = DefaultTopicLength
	}
	if p := h.Publish; p != nil {
		if p.Event == "" {
			p.Event = DefaultPublishEvent
		}
		if p.MaxBody == 0 {
			p.MaxBody = DefaultMaxBody
		}
	}
}

func (h *Handler) storeConfig() replay.Config {
	cfg := replay.Config{
		MaxEvents:              h.History.Events,
		MaxBytes:               h.History.Size,
		MaxAge:                 time.Duration(h.History.Age),
		MaxTopics:              h.Limits.Topics,
		MaxSubscribersPerTopic: h.Limits.SubscribersPerTopic,
		Framer:                 wire.EncodeEvent,
		Encodings:              len(h.Compress),
	}
	if h.Publish != nil {
		cfg.DedupWindow = time.Duration(h.Publish.DedupWindow)
	}
	return cfg.WithDefaults()
}

func (p *Publish) verifiers(repl *caddy.Replacer) (webhook.Any, error) {
	var any webhook.Any
	for i, token := range p.Bearer {
		v, err := webhook.NewBearer(repl.ReplaceKnown(token, ""))
		if err != nil {
			return nil, fmt.Errorf("publish: bearer token %d: %w", i, err)
		}
		any = append(any, v)
	}
	for i, s := range p.HMACSHA256 {
		v, err := webhook.NewHMACSHA256(repl.ReplaceKnown(s.Secret, ""), s.Header)
		if err != nil {
			return nil, fmt.Errorf("publish: hmac_sha256 secret %d: %w", i, err)
		}
		any = append(any, v)
	}
	for i, s := range p.StandardWebhooks {
		v, err := webhook.NewStandardWebhooks(repl.ReplaceKnown(s, ""), 0)
		if err != nil {
			return nil, fmt.Errorf("publish: standard_webhooks secret %d: %w", i, err)
		}
		any = append(any, v)
	}
	return any, nil
}

// Validate rejects configs that would be unsafe or could not work.
func (h *Handler) Validate() error {
	if h.OnGap != "" && h.OnGap != "replay" && h.OnGap != "live" {
		return fmt.Errorf("on_gap: %q is neither replay nor live", h.OnGap)
	}
	if h.Retry < 0 {
		return fmt.Errorf("retry: must not be negative")
	}
	if h.WriteTimeout < 0 {
		return fmt.Errorf("write_timeout: must not be negative")
	}
	if wire.SanitizeName(h.ResetEvent) != h.ResetEvent || wire.SanitizeName(h.CloseEvent) != h.CloseEvent {
		return fmt.Errorf("reset_event and close_event must be plain event names")
	}
	cfg := h.storeConfig()
	if h.Limits.EventSize*2 > cfg.MaxBytes {
		return fmt.Errorf("limits: event_size %d does not fit twice in history size %d (an event is counted with its encoding)", h.Limits.EventSize, cfg.MaxBytes)
	}
	if p := h.Publish; p != nil {
		if len(h.verifier) == 0 && !p.AllowUnauthenticated {
			return fmt.Errorf("publish: no authentication configured; add bearer, hmac_sha256 or standard_webhooks, or say allow_unauthenticated to accept anyone's events")
		}
		if len(h.verifier) > 0 && p.AllowUnauthenticated {
			return fmt.Errorf("publish: allow_unauthenticated contradicts the authentication configured")
		}
		if p.MaxBody < 0 {
			return fmt.Errorf("publish: max_body must not be negative")
		}
	}
	return nil
}

// Cleanup ends the streams still open on this handler. When the process
// exits it waits (briefly) for detached streams to write their retry hint
// and end their response, as Caddy waits for streams in a request.
func (h *Handler) Cleanup() error {
	h.endStreams()
	if h.detached != nil && (caddy.Exiting() || h.DrainWindow < 0) {
		done := make(chan struct{})
		go func() {
			h.detached.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(detachedExitWait):
		}
	}
	return h.cleanupSources()
}

func (h *Handler) endStreams() {
	// A cancel function may be called any number of times.
	if h.endAll != nil {
		h.endAll()
	}
}

// stoppingListener ends every stream when Caddy stops this config. It must
// not block: the event is emitted synchronously before the servers stop.
type stoppingListener struct{ h *Handler }

func (l stoppingListener) Handle(context.Context, caddy.Event) error {
	l.h.endStreams()
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The handler answers
// every request it is given; next is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	topic := repl.ReplaceAll(h.Topic, "")
	if err := h.validateTopic(topic); err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	switch r.Method {
	case http.MethodGet:
		return h.subscribe(w, r, topic)
	case http.MethodPost:
		if h.Publish != nil {
			return h.publish(w, r, repl, topic)
		}
	case http.MethodDelete:
		if h.Publish != nil {
			return h.closeTopic(w, r, topic)
		}
	}
	allow := "GET"
	if h.Publish != nil {
		allow = "GET, POST, DELETE"
	}
	w.Header().Set("Allow", allow)
	return writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allow))
}

func (h *Handler) validateTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("topic: empty topic name")
	case len(topic) > h.Limits.TopicLength:
		return fmt.Errorf("topic: name is %d bytes, longer than the limit of %d", len(topic), h.Limits.TopicLength)
	case !utf8.ValidString(topic):
		return errors.New("topic: name is not valid UTF-8")
	}
	for _, r := range topic {
		if unicode.IsControl(r) {
			return fmt.Errorf("topic: name contains control character %U", r)
		}
	}
	return nil
}

// cursorFrom reads where the client wants to resume: the Last-Event-ID
// header its EventSource sends on reconnection, or a query parameter for a
// first connection and for polyfills. The header wins.
func cursorFrom(r *http.Request) string {
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		q := r.URL.Query()
		from = q.Get("lastEventId")
		if from == "" {
			from = q.Get("last_event_id")
		}
	}
	if len(from) > maxCursorLength {
		// Never matches an id; the client gets a reset.
		from = from[:maxCursorLength]
	}
	return from
}

func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request, topic string) error {
	if n := subscribers.Add(1); n > int64(h.Limits.Subscribers) {
		subscribers.Add(-1)
		return writeRetryLater(w, fmt.Sprintf("subscriber limit of %d reached", h.Limits.Subscribers))
	}

	onGap := replay.GapReplay
	if h.OnGap == "live" {
		onGap = replay.GapLive
	}
	from := cursorFrom(r)
	cur, err := h.store.Subscribe(r.Context(), topic, from, onGap)
	if err != nil {
		subscribers.Add(-1)
	}
	switch {
	case errors.Is(err, replay.ErrTopicClosed):
		// 204 is the one answer that makes EventSource stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return nil
	case errors.Is(err, replay.ErrTooManyTopics), errors.Is(err, replay.ErrTooManySubscribers):
		return writeRetryLater(w, err.Error())
	case errors.Is(err, replay.ErrUnavailable):
		// 503 would make EventSource give up for good: an empty stream
		// with a retry hint makes it come back, with its Last-Event-ID,
		// once the store may be reachable again.
		return h.comeBackLater(w, "store unavailable")
	case err != nil:
		h.logger.Error("subscribing", zap.String("topic", topic), zap.Error(err))
		return writeRetryLater(w, "subscribing failed")
	}
	release := h.sourceDemand(topic)
	metrics.subscriptions.Inc()
	if from != "" {
		metrics.replays.Inc()
	}

	var enc *stream.Encoding
	if len(h.encodings) > 0 {
		enc = stream.Negotiate(r.Header.Get("Accept-Encoding"), h.encodings)
		w.Header().Add("Vary", "Accept-Encoding")
		// Whatever was negotiated, encode must not compress again.
		w.Header().Set("Cache-Control", "no-cache, no-transform")
	}
	sub := &subscription{h: h, cur: cur, release: release, topic: topic, from: from, started: time.Now()}
	if err := stream.WriteHead(w, enc); err != nil {
		sub.finish(stream.Stats{}, err)
		return nil // the client is gone already
	}
	opts := h.streamOptions(enc)
	// A stream that encode (or anything but us) compresses must keep its
	// writer chain, so only an untransformed one is detached.
	if h.detach && (enc != nil || w.Header().Get("Content-Encoding") == "") {
		if d, err := stream.Detach(w, r); err == nil {
			h.detached.Add(1)
			if d.CanPark() {
				h.lots.ServeParked(topic, d, cur, opts, func(stats stream.Stats, err error) {
					sub.finish(stats, err)
					h.detached.Done()
				})
				return nil
			}
			go func() {
				defer h.detached.Done()
				sub.finish(stream.ServeDetached(d, cur, opts))
			}()
			return nil
		}
	}
	sub.finish(stream.Serve(r.Context(), w, cur, opts))
	return nil
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
		Drain:    h.drainDelay,
		Encoding: enc,
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

// finish releases the stream's cursor, demand and subscriber slot, and
// accounts for what it delivered.
func (s *subscription) finish(stats stream.Stats, err error) {
	h := s.h
	s.cur.Close()
	s.release()
	subscribers.Add(-1)
	metrics.delivered.Add(float64(stats.Events))
	metrics.resets.Add(float64(stats.Resets))
	metrics.bytesWritten.Add(float64(stats.Bytes))
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

// writeError answers with a JSON body saying what is wrong, since Caddy's
// own error path would send the status with an empty body.
func writeError(w http.ResponseWriter, status int, msg string) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	body, _ := json.Marshal(map[string]string{"error": msg})
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// comeBackLater answers a subscriber with an event stream that ends at once
// with a reconnection delay (retry plus jitter) and a comment saying why.
func (h *Handler) comeBackLater(w http.ResponseWriter, why string) error {
	if err := stream.WriteHead(w, nil); err != nil {
		return nil
	}
	b := wire.EncodeComment(why)
	b = append(b, wire.EncodeRetry(time.Duration(h.Retry)+mathrand.N(stopJitter))...)
	_, _ = w.Write(b)
	return nil
}

// writeRetryLater answers 503 with Retry-After: a limit or a restart that
// the client can simply wait out.
func writeRetryLater(w http.ResponseWriter, msg string) error {
	w.Header().Set("Retry-After", strconv.Itoa(int(DefaultRetry/time.Second)))
	return writeError(w, http.StatusServiceUnavailable, msg)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyevents.Handler         = stoppingListener{}
)
