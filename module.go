// Package caddysse is a Caddy HTTP handler that serves Server-Sent Events:
// every topic is an ordered log of events with ids, browsers subscribe with
// EventSource and resume with Last-Event-ID, and webhooks POSTed to the same
// URL publish into the topic.
package caddysse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/auth"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/topic"
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
	// cursor; caught-up plain-TCP streams, and TLS ones when the server's
	// listener has the sse wrapper before tls, wait parked, without a
	// goroutine, served by one goroutine per topic) instead of the ~38 KiB
	// of a request in flight. Streams over HTTP/2 and HTTP/3, and streams that encode
	// compresses, are never detached. A detached stream is logged by
	// Caddy's access log when it starts (with that duration), and notices
	// a client that left by a failed write or at the next heartbeat.
	// Default: true.
	Detach *bool `json:"detach,omitempty"`

	// Enables publishing (POST) and ending topics (DELETE) on the same URL.
	// Without it both answer 405.
	Publish *Publish `json:"publish,omitempty"`

	// Makes topics private: a subscription to a topic that is not public
	// needs a JWT or a signed URL granting it (see auth.Subscribe). A
	// refusal is a 401 or 403 with a JSON error and WWW-Authenticate, and a
	// stream ends when its credential expires. Default: none, every topic
	// is public.
	Subscribe *auth.Subscribe `json:"subscribe,omitempty"`

	// Lets pages on other origins subscribe and publish: preflights are
	// answered, and every answer (refusals included) carries the CORS
	// headers for an allowed origin (see auth.CORS). Default: none, no CORS
	// headers.
	CORS *auth.CORS `json:"cors,omitempty"`

	// The name of the last event of a stream whose credential expired (a
	// token's exp, a signed URL's expires). Its data is
	// `{"reason":"credential expired"}`; the client refreshes its
	// credential and reconnects with its last id. Default: `expired`.
	ExpiredEvent string `json:"expired_event,omitempty"`

	// Bounds on what clients can make the handler hold.
	Limits *Limits `json:"limits,omitempty"`

	// Where topic logs live. Default: `{"module": "memory"}`.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.sse.stores inline_key=module"`

	// Upstreams pulled into topics: NDJSON or event-stream backends, each
	// read by one connection however many clients listen. See
	// SourceConfig.
	Sources []*SourceConfig `json:"sources,omitempty"`

	// Several topics on one connection (see MultiTopicOptions).
	MultiTopicOptions

	store     replay.Store
	storeRef  string // the handler's own reference to its store (see holdStore)
	storeMod  pooled
	encodings []*stream.Encoding
	verifier  webhook.Any
	logger    *zap.Logger

	// stop is done when the config this handler belongs to stops (a
	// reload or the process exiting), ending every open stream.
	stop   context.Context
	endAll context.CancelFunc

	// streams serves every subscriber's stream in the leanest mode its
	// connection allows (see package stream).
	streams *stream.Server
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
	// Most topics one multi-topic stream may list. Default: 64.
	TopicsPerStream int `json:"topics_per_stream,omitempty"`
}

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
	h.streams = stream.NewServer(h.stop, h.Detach == nil || *h.Detach)
	h.setDefaults()
	repl := caddy.NewReplacer()

	for _, name := range h.Compress {
		enc := stream.EncodingByName(name)
		if enc == nil {
			return fmt.Errorf("compress: unknown encoding %q; offered: %s", name, strings.Join(stream.EncodingNames(), ", "))
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
	if err := h.provisionPrivate(ctx); err != nil {
		return err
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
	if err := h.holdStore(mod); err != nil {
		return err
	}
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
	h.register() // for the admin API (admin.go)
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
	if err := h.validateMultiTopic(); err != nil {
		return err
	}
	cfg := h.storeConfig()
	if h.Limits.EventSize*2 > cfg.MaxBytes {
		return fmt.Errorf("limits: event_size %d does not fit twice in history size %d (an event is counted with its encoding)", h.Limits.EventSize, cfg.MaxBytes)
	}
	if err := h.validatePrivate(); err != nil {
		return err
	}
	if p := h.Publish; p != nil {
		authenticated := len(h.verifier) > 0 || p.JWT != nil
		if !authenticated && !p.AllowUnauthenticated {
			return fmt.Errorf("publish: no authentication configured; add bearer, hmac_sha256, standard_webhooks or jwt, or say allow_unauthenticated to accept anyone's events")
		}
		if authenticated && p.AllowUnauthenticated {
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
	h.unregister()
	h.endStreams()
	if h.streams != nil && (caddy.Exiting() || h.DrainWindow < 0) {
		h.streams.Wait(detachedExitWait)
	}
	err := h.cleanupSources()
	h.releaseStore()
	return err
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
	// CORS first, so that every answer carries it; a preflight ends here.
	if h.CORS != nil && h.CORS.Apply(w, r) {
		return nil
	}
	closeAfterChunkedBody(w, r)
	if r.Method == http.MethodGet {
		if handled, err := h.serveMultiTopic(w, r); handled {
			return err
		}
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	topic := repl.ReplaceAll(h.Topic, "")
	if err := h.validateTopic(topic); err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	switch r.Method {
	case http.MethodGet:
		return h.subscribe(w, r, topic)
	case http.MethodHead:
		return h.head(w, r, topic)
	case http.MethodPost:
		if h.Publish != nil {
			return h.publish(w, r, repl, topic)
		}
	case http.MethodDelete:
		if h.Publish != nil {
			return h.closeTopic(w, r, topic)
		}
	}
	return h.notAllowed(w, r)
}

// closeAfterChunkedBody makes the connection end after the answer to an
// HTTP/1.x request whose body came chunked. Go's server reads a request that
// carries both Content-Length and Transfer-Encoding as chunked and removes
// Content-Length before any handler runs, so the handler cannot refuse it;
// a front proxy that framed the same bytes by Content-Length would then see
// one request where Caddy reads two. Closing after such a body means nothing
// behind it on the connection is read (the `sse` listener wrapper refuses
// the request itself, with a 400, on plain HTTP). A legitimate chunked
// publisher only opens a new connection for its next request.
func closeAfterChunkedBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && slices.Contains(r.TransferEncoding, "chunked") {
		w.Header().Set("Connection", "close")
	}
}

// validateTopic checks a topic name with the one rule every part of the
// module uses (package topic).
func (h *Handler) validateTopic(name string) error {
	return topic.Validate(name, h.Limits.TopicLength)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyevents.Handler         = stoppingListener{}
)
