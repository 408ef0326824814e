package caddysse

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// Paging of GET /sse/topics.
const (
	defaultTopicPage = 100
	maxTopicPage     = 1000
)

// registry knows every sse handler provisioned in this process and not yet
// cleaned up, across configs: during a reload both the old handlers (still
// draining their streams) and the new ones are in it.
var registry struct {
	mu       sync.Mutex
	seq      uint64
	handlers map[*Handler]registered
}

type registered struct {
	seq   uint64 // order of provisioning: the newest handler of a store publishes
	store string // the store's label
}

// register adds h to the registry; Provision calls it once h is ready.
func (h *Handler) register() {
	registry.mu.Lock()
	if registry.handlers == nil {
		registry.handlers = make(map[*Handler]registered)
	}
	registry.seq++
	registry.handlers[h] = registered{seq: registry.seq, store: storeLabel(h)}
	registry.mu.Unlock()
	if _, ok := h.store.(presenceStore); ok {
		startPresence()
	}
}

// unregister removes h from the registry; Cleanup calls it.
func (h *Handler) unregister() {
	registry.mu.Lock()
	delete(registry.handlers, h)
	registry.mu.Unlock()
	stopPresenceIfIdle()
}

// storeLabels maps each open store (a replay.Store) to its name in the
// admin API, the key it is shared under: memory:<name> or file:<path>.
var storeLabels sync.Map

// storeLabel names h's store for the admin API: the key a memory or file
// store is shared under, or for a store on a server (Redis) its kind and key
// prefix only, since its key may hold credentials.
func storeLabel(h *Handler) string {
	// "*redisstore.Store" is "redis".
	kind := strings.TrimPrefix(fmt.Sprintf("%T", h.store), "*")
	kind, _, _ = strings.Cut(kind, ".")
	kind = strings.TrimSuffix(kind, "store")
	if ps, ok := h.store.(presenceStore); ok {
		return kind + ":" + ps.Prefix()
	}
	if v, ok := storeLabels.Load(h.store); ok {
		if key := v.(string); strings.HasPrefix(key, "memory:") || strings.HasPrefix(key, "file:") {
			return key
		}
	}
	return kind
}

// storeView is one store of the running configs and the handlers using it.
type storeView struct {
	label    string
	store    replay.Store
	handlers []*Handler // newest first

	// The other nodes' subscribers (see admin_presence.go), once loaded.
	others    map[string][]nodeCounts
	othersErr error
}

// loadOthers reads the other nodes' presence, when the store keeps it.
func (sv *storeView) loadOthers(r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	sv.others, sv.othersErr = sv.remote(ctx)
}

// known reports whether topic has subscribers here or on another node.
func (sv *storeView) known(topic string) bool {
	return sv.presence(topic).Total() > 0 || len(sv.others[topic]) > 0
}

// inspector returns the store's Inspector, nil when it has none.
func (sv *storeView) inspector() replay.Inspector {
	i, _ := sv.store.(replay.Inspector)
	return i
}

// presence sums the streams of topic across the store's handlers.
func (sv *storeView) presence(topic string) stream.Presence {
	var p stream.Presence
	for _, h := range sv.handlers {
		p = p.Add(h.streams.Presence(topic))
	}
	return p
}

// publisher is the handler that publishes into the store for the admin
// API: the newest, whose config is the one in force.
func (sv *storeView) publisher() *Handler { return sv.handlers[0] }

// views groups the registered handlers by store, ordered by label.
func views() []*storeView {
	registry.mu.Lock()
	type entry struct {
		h *Handler
		registered
	}
	entries := make([]entry, 0, len(registry.handlers))
	for h, reg := range registry.handlers {
		entries = append(entries, entry{h, reg})
	}
	registry.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].seq > entries[j].seq })
	byStore := make(map[replay.Store]*storeView)
	var out []*storeView
	for _, e := range entries {
		sv := byStore[e.h.store]
		if sv == nil {
			sv = &storeView{label: e.store, store: e.h.store}
			byStore[e.h.store] = sv
			out = append(out, sv)
		}
		sv.handlers = append(sv.handlers, e.h)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].label < out[j].label })
	return out
}

// AdminAPI serves the sse admin API and the inspector page on Caddy's admin
// endpoint, under /sse/. The admin endpoint is trusted (local-only by
// default): publishing and closing through it need no credentials.
type AdminAPI struct {
	ctx     caddy.Context
	logger  *zap.Logger
	streams *stream.Server // the inspector's tails of topics
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sse",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision readies the API; its tails end when the config stops.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.streams = stream.NewServer(ctx, false)
	return nil
}

// Routes implements caddy.AdminRouter.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/sse/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// topicJSON describes one topic of one store.
type topicJSON struct {
	Topic string `json:"topic"`
	Store string `json:"store"`
	// Href is the topic's admin URL, its name path-encoded.
	Href        string `json:"href"`
	Subscribers int    `json:"subscribers"`
	// What the store retains; absent when the store cannot be inspected.
	Events    *int       `json:"events,omitempty"`
	Bytes     *int64     `json:"bytes,omitempty"`
	FirstID   string     `json:"first_id,omitempty"`
	LastID    string     `json:"last_id,omitempty"`
	LastEvent *time.Time `json:"last_event,omitempty"`
	Closed    bool       `json:"closed"`
	// Note says what is not known, e.g. that the store cannot be inspected.
	Note string `json:"note,omitempty"`

	// One topic only (GET /sse/topics/<topic>).
	Transports *transportsJSON `json:"transports,omitempty"`
	Nodes      []nodeJSON      `json:"nodes,omitempty"`
}

// transportsJSON splits a topic's subscribers by how they are served.
type transportsJSON struct {
	HTTP1Parked    int `json:"http1_parked"`
	HTTP1Detached  int `json:"http1_detached"`
	HTTP1InRequest int `json:"http1_in_request"`
	HTTP2          int `json:"http2"`
	HTTP3          int `json:"http3"`
}

type nodeJSON struct {
	Node        string         `json:"node"`
	Subscribers int            `json:"subscribers"`
	Transports  transportsJSON `json:"transports"`
}

func transports(p stream.Presence) transportsJSON {
	return transportsJSON{HTTP1Parked: p.Parked, HTTP1Detached: p.Detached, HTTP1InRequest: p.HTTP1, HTTP2: p.HTTP2, HTTP3: p.HTTP3}
}

const (
	notInspectable   = "this store cannot be inspected: retained events are not known"
	othersUnreadable = "the other nodes' subscribers could not be read: "
)

// describeTopic describes one topic of sv: what the store knows (info, nil
// when it cannot say), subscribers on every node.
func describeTopic(sv *storeView, info *replay.TopicInfo, name string) topicJSON {
	p := sv.presence(name)
	t := topicJSON{Topic: name, Store: sv.label, Href: "/sse/topics/" + url.PathEscape(name), Subscribers: p.Total()}
	for _, o := range sv.others[name] {
		t.Subscribers += o.t.total()
	}
	if sv.othersErr != nil {
		t.Note = othersUnreadable + sv.othersErr.Error()
	}
	if info == nil {
		t.Note = strings.TrimPrefix(t.Note+"; "+notInspectable, "; ")
		return t
	}
	t.Events, t.Bytes = &info.Events, &info.Bytes
	t.FirstID, t.LastID, t.Closed = info.FirstID, info.LastID, info.Closed
	if !info.LastEvent.IsZero() {
		at := info.LastEvent.UTC()
		t.LastEvent = &at
	}
	return t
}

// serve routes every request under /sse/.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/sse/")
	if !ok {
		return writeError(w, http.StatusNotFound, "not found")
	}
	if r.Method == http.MethodOptions {
		// A CORS preflight from an origin the admin config allows: Caddy
		// has set the Access-Control headers already.
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	switch {
	case rest == "":
		return a.page(w, r)
	case rest == "topics" || rest == "topics/":
		if r.Method != http.MethodGet {
			return notAllowed(w, r, "GET")
		}
		return a.list(w, r)
	}
	escaped, ok := strings.CutPrefix(rest, "topics/")
	if !ok {
		return writeError(w, http.StatusNotFound, "no such sse admin route: /sse/"+rest+"; see /sse/topics")
	}
	sub := ""
	for _, suffix := range []string{"/subscribers", "/events"} {
		if t, ok := strings.CutSuffix(escaped, suffix); ok && t != "" {
			escaped, sub = t, suffix
			break
		}
	}
	topic, err := url.PathUnescape(escaped)
	if err != nil || topic == "" {
		return writeError(w, http.StatusBadRequest, "topic: not a path-encoded topic name: "+escaped)
	}
	switch sub {
	case "/subscribers":
		if r.Method != http.MethodDelete {
			return notAllowed(w, r, "DELETE")
		}
		return a.disconnect(w, r, topic)
	case "/events":
		if r.Method != http.MethodGet {
			return notAllowed(w, r, "GET")
		}
		return a.tail(w, r, topic)
	}
	switch r.Method {
	case http.MethodGet:
		return a.getTopic(w, r, topic)
	case http.MethodPost:
		return a.publish(w, r, topic)
	case http.MethodDelete:
		return a.closeTopic(w, r, topic)
	}
	return notAllowed(w, r, "GET, POST, DELETE")
}

func notAllowed(w http.ResponseWriter, r *http.Request, allow string) error {
	w.Header().Set("Allow", allow)
	return writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// topicList is the answer of GET /sse/topics.
type topicList struct {
	Topics []topicJSON `json:"topics"`
	// Next, when present, is the after of the next page.
	Next string `json:"next,omitempty"`
}

// list answers GET /sse/topics?prefix=&after=&limit=: a page of topics in
// name order (a topic in several stores once per store, its entries never
// split between pages).
func (a *AdminAPI) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	prefix, after := q.Get("prefix"), q.Get("after")
	limit := defaultTopicPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a positive number", s))
		}
		limit = min(n, maxTopicPage)
	}
	var all []topicJSON
	more := false
	for _, sv := range views() {
		sv.loadOthers(r)
		if ins := sv.inspector(); ins != nil {
			infos, err := ins.Topics(prefix, after, limit)
			if err != nil {
				return a.storeFailed(w, sv, err)
			}
			more = more || len(infos) == limit
			for i := range infos {
				all = append(all, describeTopic(sv, &infos[i], infos[i].Name))
			}
			continue
		}
		// Without an Inspector, the topics with subscribers here or on
		// another node.
		seen := map[string]bool{}
		var names []string
		add := func(name string) {
			if !seen[name] && strings.HasPrefix(name, prefix) && name > after {
				seen[name] = true
				names = append(names, name)
			}
		}
		for _, h := range sv.handlers {
			for _, name := range h.streams.Topics() {
				add(name)
			}
		}
		for name := range sv.others {
			add(name)
		}
		sort.Strings(names)
		if len(names) > limit {
			names, more = names[:limit], true
		}
		for _, name := range names {
			all = append(all, describeTopic(sv, nil, name))
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Topic != all[j].Topic {
			return all[i].Topic < all[j].Topic
		}
		return all[i].Store < all[j].Store
	})
	if len(all) > limit {
		cut := limit
		for cut < len(all) && all[cut].Topic == all[limit-1].Topic {
			cut++
		}
		all, more = all[:cut], true
	}
	res := topicList{Topics: all}
	if res.Topics == nil {
		res.Topics = []topicJSON{}
	}
	if more && len(all) > 0 {
		res.Next = all[len(all)-1].Topic
	}
	return writeJSON(w, http.StatusOK, res)
}

func (a *AdminAPI) storeFailed(w http.ResponseWriter, sv *storeView, err error) error {
	a.logger.Error("inspecting sse store", zap.String("store", sv.label), zap.Error(err))
	return writeRetryLater(w, fmt.Sprintf("store %s: %v", sv.label, err))
}

// find returns the stores that know topic (by their Inspector, or by
// subscribers here), with what they know, limited to the store named by the
// store query parameter when there is one.
func (a *AdminAPI) find(r *http.Request, topic string) (found []*storeView, infos []*replay.TopicInfo, all []*storeView, err error) {
	want := r.URL.Query().Get("store")
	for _, sv := range views() {
		if want != "" && sv.label != want {
			continue
		}
		all = append(all, sv)
		sv.loadOthers(r)
		if ins := sv.inspector(); ins != nil {
			info, ok, err := ins.Topic(topic)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("store %s: %w", sv.label, err)
			}
			if ok {
				found, infos = append(found, sv), append(infos, &info)
			}
			continue
		}
		if sv.known(topic) {
			found, infos = append(found, sv), append(infos, nil)
		}
	}
	return found, infos, all, nil
}

// target picks the store a write to topic goes to: the one named by the
// store parameter, else the one that knows the topic, else the only one.
// It answers the request itself when there is none to pick.
func (a *AdminAPI) target(w http.ResponseWriter, r *http.Request, topic string, mustExist bool) (*storeView, bool) {
	found, _, all, err := a.find(r, topic)
	switch {
	case err != nil:
		writeRetryLater(w, err.Error())
		return nil, false
	case len(all) == 0 && r.URL.Query().Get("store") != "":
		writeError(w, http.StatusNotFound, fmt.Sprintf("no sse handler uses store %q", r.URL.Query().Get("store")))
		return nil, false
	case len(all) == 0:
		writeError(w, http.StatusNotFound, "no sse handler in the running config")
		return nil, false
	case len(found) == 1:
		return found[0], true
	case len(found) > 1:
		writeError(w, http.StatusConflict, fmt.Sprintf("topic %q is in several stores (%s); say which with ?store=", topic, labels(found)))
		return nil, false
	}
	// Nobody knows the topic.
	if mustExist {
		if len(all) == 1 && all[0].inspector() == nil {
			// The store may hold it without being able to say so.
			return all[0], true
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown topic %q", topic))
		return nil, false
	}
	if len(all) > 1 {
		writeError(w, http.StatusConflict, fmt.Sprintf("several stores (%s) could take topic %q; say which with ?store=", labels(all), topic))
		return nil, false
	}
	return all[0], true
}

func labels(svs []*storeView) string {
	names := make([]string, len(svs))
	for i, sv := range svs {
		names[i] = sv.label
	}
	return strings.Join(names, ", ")
}

// getTopic answers GET /sse/topics/<topic>.
func (a *AdminAPI) getTopic(w http.ResponseWriter, r *http.Request, topic string) error {
	found, infos, _, err := a.find(r, topic)
	if err != nil {
		return writeRetryLater(w, err.Error())
	}
	if len(found) == 0 {
		return writeError(w, http.StatusNotFound, fmt.Sprintf("unknown topic %q", topic))
	}
	// In several stores: the first by label (?store= picks another).
	sv := found[0]
	t := describeTopic(sv, infos[0], topic)
	here := transports(sv.presence(topic))
	sum := here
	t.Nodes = []nodeJSON{{Node: node, Subscribers: here.total(), Transports: here}}
	for _, o := range sv.others[topic] {
		sum = addTransports(sum, o.t)
		t.Nodes = append(t.Nodes, nodeJSON{Node: o.node, Subscribers: o.t.total(), Transports: o.t})
	}
	t.Transports = &sum
	return writeJSON(w, http.StatusOK, t)
}

// publish answers POST /sse/topics/<topic> as the handler's publish
// endpoint would, without credentials. The event type is the event
// parameter, else the handler's publish event when it has no placeholder,
// else message.
func (a *AdminAPI) publish(w http.ResponseWriter, r *http.Request, topic string) error {
	sv, ok := a.target(w, r, topic, false)
	if !ok {
		return nil
	}
	h := sv.publisher()
	if err := h.validateTopic(topic); err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	maxBody := int64(DefaultMaxBody)
	eventType := DefaultPublishEvent
	if p := h.Publish; p != nil {
		maxBody = p.MaxBody
		if !strings.Contains(p.Event, "{") {
			eventType = p.Event
		}
	}
	if e := r.URL.Query().Get("event"); e != "" {
		eventType = wire.SanitizeName(e)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds max_body of %d bytes", maxBody))
	case err != nil:
		return writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
	}
	return h.appendBody(w, r, topic, body, eventType)
}

// closeTopic answers DELETE /sse/topics/<topic>: the topic is ended, its
// subscribers get the close event, and later subscribers 204.
func (a *AdminAPI) closeTopic(w http.ResponseWriter, r *http.Request, topic string) error {
	sv, ok := a.target(w, r, topic, true)
	if !ok {
		return nil
	}
	return sv.publisher().endTopic(w, r, topic)
}

// disconnectResult is the answer of DELETE /sse/topics/<topic>/subscribers.
type disconnectResult struct {
	Topic        string `json:"topic"`
	Disconnected int    `json:"disconnected"`
	// Node is this node, whose subscribers Disconnected counts.
	Node string `json:"node"`
	// OtherNodes counts the topic's subscribers on the other nodes of a
	// shared store (Redis), as they last reported them: they were asked,
	// through Redis, to disconnect them too.
	OtherNodes int `json:"other_nodes_subscribers,omitempty"`
}

// disconnect answers DELETE /sse/topics/<topic>/subscribers: the topic's
// streams end now with a retry hint, after the reason (the reason
// parameter, or a JSON body {"reason": ...}) as a comment: on this node,
// and through Redis on the others sharing its store.
func (a *AdminAPI) disconnect(w http.ResponseWriter, r *http.Request, topic string) error {
	reason := r.URL.Query().Get("reason")
	if reason == "" && r.Body != nil {
		var body struct {
			Reason string `json:"reason"`
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if len(strings.TrimSpace(string(b))) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				return writeError(w, http.StatusBadRequest, "body: expected {\"reason\": \"...\"}: "+err.Error())
			}
			reason = body.Reason
		}
	}
	sv, ok := a.target(w, r, topic, true)
	if !ok {
		return nil
	}
	n := 0
	for _, h := range sv.handlers {
		n += h.streams.Disconnect(topic, reason)
	}
	a.logger.Info("sse subscribers disconnected", zap.String("topic", topic), zap.Int("count", n), zap.String("reason", reason))
	res := disconnectResult{Topic: topic, Disconnected: n, Node: node}
	for _, o := range sv.others[topic] {
		res.OtherNodes += o.t.total()
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := sv.askOthersToDisconnect(ctx, topic, reason); err != nil {
		return writeRetryLater(w, fmt.Sprintf("%d subscribers disconnected here, but the other nodes could not be asked: %v", n, err))
	}
	return writeJSON(w, http.StatusOK, res)
}

// tail answers GET /sse/topics/<topic>/events with an event stream of the
// topic for the inspector, read through the store like any subscriber's
// (Last-Event-ID and lastEventId work): each event comes as a message
// whose data is a tailEvent, then reset and close as subscribers get them.
// Tails are not counted as subscribers, and end (with a retry hint) when
// the admin endpoint's config stops.
func (a *AdminAPI) tail(w http.ResponseWriter, r *http.Request, topic string) error {
	sv, ok := a.target(w, r, topic, true)
	if !ok {
		return nil
	}
	h := sv.publisher()
	from := cursorFrom(r)
	cur, err := h.store.Subscribe(r.Context(), topic, from, replay.GapReplay)
	switch {
	case errors.Is(err, replay.ErrTopicClosed):
		w.WriteHeader(http.StatusNoContent)
		return nil
	case err != nil:
		return writeRetryLater(w, "subscribing failed: "+err.Error())
	}
	if err := stream.WriteHead(w, nil); err != nil {
		cur.Close()
		return nil
	}
	opts := h.streamOptions(nil)
	opts.Stop, opts.Drain = a.ctx, nil
	if from == "" {
		opts.Position = cur.Position()
	}
	opts.ResetEvent, opts.CloseEvent = DefaultResetEvent, DefaultCloseEvent
	a.streams.Serve(w, r, topic, envelopes{cur}, opts, func(stream.Stats, error) { cur.Close() })
	return nil
}

// tailEvent is the data of a tail's message: the topic's event, whatever
// its type, with the time the store accepted it. (EventSource hands a page
// only the event types it listens for by name, so a tail carries every
// event as a message.)
type tailEvent struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data string    `json:"data"`
}

// envelopes reads a cursor and wraps each event as a tailEvent message of
// the same id.
type envelopes struct{ replay.Cursor }

func (c envelopes) Next(max int) (replay.Page, error) {
	p, err := c.Cursor.Next(max)
	if err != nil || len(p.Events) == 0 {
		return p, err
	}
	out := make([]*replay.Event, len(p.Events))
	for i, e := range p.Events {
		data, _ := json.Marshal(tailEvent{Type: e.Type, Time: e.Time.UTC(), Data: string(e.Data)})
		out[i] = &replay.Event{ID: e.ID, Type: DefaultPublishEvent, Data: data, Time: e.Time, Frame: wire.EncodeEvent(e.ID, DefaultPublishEvent, data)}
	}
	p.Events = out
	return p, nil
}

//go:embed admin_inspector.html
var inspectorPage []byte

// page serves the inspector, a single page that calls the API above.
func (a *AdminAPI) page(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, r, "GET")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(inspectorPage)
	}
	return nil
}

// Interface guards
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
