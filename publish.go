package caddysse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/auth"
	"github.com/ssegate/caddy-sse/lines"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/webhook"
	"github.com/ssegate/caddy-sse/wire"
)

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
	// JWTs whose claim (default `sse.publish`; `mercure.publish` reads
	// Mercure publisher tokens) grants the topic, read from the
	// Authorization header by default (see auth.PublishJWT). A valid token
	// that does not grant the topic is a 403.
	JWT *auth.PublishJWT `json:"jwt,omitempty"`
}

// HMACSecret is a secret for GitHub-style signatures.
type HMACSecret struct {
	// The shared secret. Placeholders such as `{env.GITHUB_SECRET}` work.
	Secret string `json:"secret"`
	// The header carrying `sha256=<hex>`. Default: `X-Hub-Signature-256`.
	Header string `json:"header,omitempty"`
}

func (p *Publish) verifiers(repl *caddy.Replacer) (webhook.Any, error) {
	var schemes webhook.Any
	for i, token := range p.Bearer {
		token, err := secret(repl, token)
		if err != nil {
			return nil, fmt.Errorf("publish: bearer token %d: %w", i, err)
		}
		v, err := webhook.NewBearer(token)
		if err != nil {
			return nil, fmt.Errorf("publish: bearer token %d: %w", i, err)
		}
		schemes = append(schemes, v)
	}
	for i, s := range p.HMACSHA256 {
		key, err := secret(repl, s.Secret)
		if err != nil {
			return nil, fmt.Errorf("publish: hmac_sha256 secret %d: %w", i, err)
		}
		v, err := webhook.NewHMACSHA256(key, s.Header)
		if err != nil {
			return nil, fmt.Errorf("publish: hmac_sha256 secret %d: %w", i, err)
		}
		schemes = append(schemes, v)
	}
	for i, s := range p.StandardWebhooks {
		key, err := secret(repl, s)
		if err != nil {
			return nil, fmt.Errorf("publish: standard_webhooks secret %d: %w", i, err)
		}
		v, err := webhook.NewStandardWebhooks(key, 0)
		if err != nil {
			return nil, fmt.Errorf("publish: standard_webhooks secret %d: %w", i, err)
		}
		schemes = append(schemes, v)
	}
	return schemes, nil
}

// ndjsonTypes are the media types whose body is one event per line.
var ndjsonTypes = map[string]bool{
	"application/x-ndjson":    true,
	"application/ndjson":      true,
	"application/jsonl":       true,
	"application/x-jsonlines": true,
}

// publishResult is the response body of a publish.
type publishResult struct {
	Topic string   `json:"topic"`
	IDs   []string `json:"ids"`
	// Duplicate is true when the delivery id had been seen: nothing was
	// appended and ids are those of the first delivery.
	Duplicate bool `json:"duplicate,omitempty"`
}

// readAuthenticated reads the bounded body and checks it against the
// configured schemes. It writes the error response itself and returns
// ok=false when the request must go no further.
func (h *Handler) readAuthenticated(w http.ResponseWriter, r *http.Request, topic string) (body []byte, ok bool) {
	if r.ContentLength > h.Publish.MaxBody {
		// Refused before a byte is read, so a client that sent Expect:
		// 100-continue is never told to go on, and the connection is
		// closed rather than drained of a body nobody wants.
		metrics.rejects.WithLabelValues(rejectTooLarge).Inc()
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds max_body of %d bytes", r.ContentLength, h.Publish.MaxBody))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.Publish.MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		metrics.rejects.WithLabelValues(rejectTooLarge).Inc()
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds max_body of %d bytes", h.Publish.MaxBody))
		return nil, false
	case err != nil:
		metrics.rejects.WithLabelValues(rejectBadInput).Inc()
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	if !h.publishAllowed(w, r, topic, body) {
		return nil, false
	}
	return body, true
}

func (h *Handler) hasBearer() bool {
	return len(h.Publish.Bearer) > 0
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, topic string) error {
	body, ok := h.readAuthenticated(w, r, topic)
	if !ok {
		return nil
	}
	return h.appendBody(w, r, topic, body, wire.SanitizeName(repl.ReplaceAll(h.Publish.Event, "")))
}

// appendBody appends the events of an admitted publish body (one event, or
// one per line of NDJSON) to topic and answers with their ids.
func (h *Handler) appendBody(w http.ResponseWriter, r *http.Request, topic string, body []byte, eventType string) error {
	key, _, err := webhook.DeliveryID(r.Header)
	if err != nil {
		metrics.rejects.WithLabelValues(rejectBadInput).Inc()
		return writeError(w, http.StatusBadRequest, err.Error())
	}

	var drafts []replay.Draft
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ndjsonTypes[mediaType] {
		drafts, err = h.splitNDJSON(body, eventType)
	} else {
		var d replay.Draft
		d, err = h.draft(body, eventType)
		drafts = []replay.Draft{d}
	}
	if err != nil {
		var se *statusError
		if errors.As(err, &se) {
			metrics.rejects.WithLabelValues(rejectTooLarge).Inc()
			return writeError(w, se.status, se.msg)
		}
		metrics.rejects.WithLabelValues(rejectBadInput).Inc()
		return writeError(w, http.StatusBadRequest, err.Error())
	}

	res, err := h.store.Append(r.Context(), topic, replay.Batch{Events: drafts, Key: key})
	switch {
	case errors.Is(err, replay.ErrTopicClosed):
		metrics.rejects.WithLabelValues(rejectClosed).Inc()
		return writeError(w, http.StatusGone, "topic is closed")
	case errors.Is(err, replay.ErrBatchTooLarge):
		metrics.rejects.WithLabelValues(rejectTooLarge).Inc()
		return writeError(w, http.StatusRequestEntityTooLarge, "batch is larger than the topic's history can hold")
	case errors.Is(err, replay.ErrTooManyTopics):
		metrics.rejects.WithLabelValues(rejectLimit).Inc()
		return writeRetryLater(w, err.Error())
	case errors.Is(err, replay.ErrUnavailable):
		metrics.rejects.WithLabelValues(rejectStore).Inc()
		return writeRetryLater(w, "store unavailable")
	case err != nil:
		metrics.rejects.WithLabelValues(rejectStore).Inc()
		h.logger.Error("appending to topic", zap.String("topic", topic), zap.Error(err))
		return writeRetryLater(w, "storing events failed")
	}
	if !res.Duplicate {
		metrics.published.Add(float64(len(res.IDs)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(publishResult{Topic: topic, IDs: res.IDs, Duplicate: res.Duplicate})
}

type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// draft checks one event's payload; line breaks become LF, which is what
// every SSE client reads back anyway.
func (h *Handler) draft(data []byte, eventType string) (replay.Draft, error) {
	switch {
	case len(data) == 0:
		return replay.Draft{}, errors.New("empty body: an event needs data")
	case int64(len(data)) > h.Limits.EventSize:
		return replay.Draft{}, &statusError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("event of %d bytes exceeds event_size of %d", len(data), h.Limits.EventSize)}
	case !utf8.Valid(data):
		return replay.Draft{}, errors.New("body is not valid UTF-8")
	}
	return replay.Draft{Type: eventType, Data: wire.NormalizeLineBreaks(data)}, nil
}

// splitNDJSON turns a body of JSON values, one per line, into events. The
// batch is all or nothing: one bad line rejects it, saying which, so the
// sender can fix and resend without duplicating the good lines.
func (h *Handler) splitNDJSON(body []byte, eventType string) ([]replay.Draft, error) {
	// The same splitter as NDJSON sources: one rule for line ends, a byte
	// order mark and blank lines.
	sp := lines.NewSplitter(bytes.NewReader(body), int(h.Limits.EventSize), false)
	var drafts []replay.Draft
	for {
		l, err := sp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading NDJSON body: %w", err)
		}
		if l.TooLong {
			return nil, &statusError{http.StatusRequestEntityTooLarge,
				fmt.Sprintf("line %d: %d bytes exceeds event_size of %d", l.N, l.Len, h.Limits.EventSize)}
		}
		if !utf8.Valid(l.Text) {
			return nil, fmt.Errorf("line %d: not valid UTF-8", l.N)
		}
		if !json.Valid(l.Text) {
			return nil, fmt.Errorf("line %d: not valid JSON", l.N)
		}
		// Text is only valid until the next line: the draft keeps a copy.
		drafts = append(drafts, replay.Draft{Type: eventType, Data: bytes.Clone(l.Text)})
	}
	if len(drafts) == 0 {
		return nil, errors.New("no events: the NDJSON body has no non-empty line")
	}
	return drafts, nil
}

func (h *Handler) closeTopic(w http.ResponseWriter, r *http.Request, topic string) error {
	if _, ok := h.readAuthenticated(w, r, topic); !ok {
		return nil
	}
	return h.endTopic(w, r, topic)
}

// endTopic closes topic in the store and answers 204, or says why not.
func (h *Handler) endTopic(w http.ResponseWriter, r *http.Request, topic string) error {
	err := h.store.CloseTopic(r.Context(), topic)
	switch {
	case errors.Is(err, replay.ErrTopicClosed):
		return writeError(w, http.StatusGone, "topic is already closed")
	case errors.Is(err, replay.ErrTooManyTopics):
		return writeRetryLater(w, err.Error())
	case errors.Is(err, replay.ErrUnavailable):
		return writeRetryLater(w, "store unavailable; the topic was not closed")
	case err != nil:
		h.logger.Error("closing topic", zap.String("topic", topic), zap.Error(err))
		return writeRetryLater(w, "closing topic failed")
	}
	h.logger.Info("topic closed", zap.String("topic", topic))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
