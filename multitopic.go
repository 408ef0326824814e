package caddysse

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/topic"
	"github.com/ssegate/caddy-sse/wire"
)

// Several topics on one connection: a GET with one or more `topic` query
// parameters (?topic=/a&topic=/b) subscribes to exactly those topics, in one
// stream with one cursor (see replay.SubscribeMany). The request's own
// topic is not added.

// Defaults of the multi-topic options.
const (
	DefaultMultiTopicParam = "topic"
	DefaultTopicsPerStream = 64
	// maxMultiCursorLength bounds the Last-Event-ID of a multi-topic
	// stream. On Memory and File its cursor is one plain id; on Redis it
	// is a composite of every topic's stream id (replay.Compose), which
	// for the default 64 topics takes at most 955 characters: hence more
	// than maxCursorLength. Browsers send it back as it came.
	maxMultiCursorLength = 1024
)

// MultiTopicOptions shape streams of several topics (see multitopic.go).
type MultiTopicOptions struct {
	// The query parameter that lists the topics of a multi-topic stream,
	// once per topic, or `off` to serve only one topic per stream.
	// Default: `topic`.
	MultiTopicParam string `json:"multi_topic_param,omitempty"`

	// How a multi-topic stream tells which topic each event belongs to.
	// `type` (default): it does not; events go out byte for byte as
	// published (the publisher may put the topic in the data). `topic`:
	// every event's name (the `event:` field, what EventSource's
	// addEventListener listens for) is its topic instead of its own type.
	// Data stays byte-identical either way.
	MultiTopicEventName string `json:"multi_topic_event_name,omitempty"`
}

// multiTopicParam is the query parameter naming topics, "" when off.
func (h *Handler) multiTopicParam() string {
	switch h.MultiTopicParam {
	case "":
		return DefaultMultiTopicParam
	case "off":
		return ""
	}
	return h.MultiTopicParam
}

func (h *Handler) topicsPerStream() int {
	if h.Limits == nil || h.Limits.TopicsPerStream == 0 {
		return DefaultTopicsPerStream
	}
	return h.Limits.TopicsPerStream
}

// validateMultiTopic is part of Validate.
func (h *Handler) validateMultiTopic() error {
	if p := h.MultiTopicParam; p != "" && (strings.ContainsAny(p, "&=#?% ") || wire.SanitizeName(p) != p) {
		return fmt.Errorf("multi_topic_param: %q is not a plain query parameter name", p)
	}
	switch h.MultiTopicEventName {
	case "", "type", "topic":
	default:
		return fmt.Errorf("multi_topic_event_name: %q is neither type nor topic", h.MultiTopicEventName)
	}
	if h.Limits != nil && h.Limits.TopicsPerStream < 0 {
		return fmt.Errorf("limits: topics_per_stream must not be negative")
	}
	return nil
}

// multiTopics returns the topics a request lists (ok false when it lists
// none, for the one-topic path), validated like every topic name, without
// repeats, in the order given.
func (h *Handler) multiTopics(r *http.Request) (topics []string, ok bool, err error) {
	param := h.multiTopicParam()
	if param == "" {
		return nil, false, nil
	}
	names, ok := r.URL.Query()[param]
	if !ok {
		return nil, false, nil
	}
	limit := h.topicsPerStream()
	for _, name := range names {
		if err := topic.Validate(name, h.Limits.TopicLength); err != nil {
			return nil, true, fmt.Errorf("%s %q: %w", param, name, err)
		}
		if slices.Contains(topics, name) {
			continue
		}
		if len(topics) == limit {
			return nil, true, fmt.Errorf("%s: more than the limit of %d topics per stream", param, limit)
		}
		topics = append(topics, name)
	}
	return topics, true, nil
}

// serveMultiTopic serves a GET that lists topics; handled is false when it
// lists none.
func (h *Handler) serveMultiTopic(w http.ResponseWriter, r *http.Request) (handled bool, err error) {
	topics, ok, err := h.multiTopics(r)
	if !ok {
		return false, nil
	}
	if err != nil {
		return true, writeError(w, http.StatusBadRequest, err.Error())
	}
	return true, h.subscribeMulti(w, r, topics)
}

// subscribeMulti is subscribe for several topics: one stream, one
// subscriber against the limits (and one against each topic's), one
// cursor.
func (h *Handler) subscribeMulti(w http.ResponseWriter, r *http.Request, topics []string) error {
	// With a subscribe block, every topic listed must be granted.
	grant, ok := h.authorize(w, r, topics)
	if !ok {
		return nil
	}
	// What logs name the stream by: short, since a parked stream keeps it.
	label := topics[0]
	if len(topics) > 1 {
		label = fmt.Sprintf("%s and %d more topics", topics[0], len(topics)-1)
	}
	if n := subscribers.Add(1); n > int64(h.Limits.Subscribers) {
		subscribers.Add(-1)
		return h.turnAway(w, rejectSubscribers, fmt.Sprintf("subscriber limit of %d reached", h.Limits.Subscribers))
	}
	from := cursorFromLimit(r, maxMultiCursorLength)
	cur, err := replay.SubscribeMany(r.Context(), h.store, topics, from, h.gapPolicy())
	if err != nil {
		subscribers.Add(-1)
		return h.notSubscribed(w, err, topics...)
	}
	release := noRelease
	if len(h.Sources) > 0 {
		releases := make([]func(), len(topics))
		for i, t := range topics {
			releases[i] = h.sourceDemand(t)
		}
		release = func() {
			for _, rel := range releases {
				rel()
			}
		}
	}
	sub := &subscription{h: h, cur: cur, release: release, topic: label, from: from, started: time.Now()}
	enc, ok := h.startStream(w, r, sub)
	if !ok {
		return nil
	}
	opts := h.streamOptions(enc)
	opts.TopicEvents = h.MultiTopicEventName == "topic"
	opts.Expires = grant.Expires
	opts.Topics = topics
	if c, ok := cur.(interface{ Topics() []string }); ok {
		// The same names, held once for every stream of the set.
		opts.Topics = c.Topics()
	}
	if from == "" {
		opts.Position = cur.Position()
	}
	key := strings.Join(topics, "\x00")
	if k, ok := cur.(replay.WaitKey); ok {
		// Parked streams wait together only when their cursors share
		// what they wait on.
		key = k.WaitKey()
	}
	h.streams.Serve(w, r, key, cur, opts, sub.ended)
	return nil
}
