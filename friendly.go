package caddysse

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/auth"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
)

// The options each Caddyfile block knows, for the suggestion an unknown one
// gets. Keep them in step with the switch statements that parse them.
var (
	sseOptions     = []string{"topic", "retry", "heartbeat", "write_timeout", "drain_window", "compress", "detach", "on_gap", "reset_event", "close_event", "history", "limits", "store", "publish", "subscribe", "cors", "expired_event", "multi_topic_param", "multi_topic_event_name", "source"}
	historyOptions = []string{"events", "size", "age"}
	limitsOptions  = []string{"topics", "subscribers", "subscribers_per_topic", "event_size", "topic_length", "topics_per_stream"}
	publishOptions = []string{"bearer", "hmac_sha256", "standard_webhooks", "allow_unauthenticated", "event", "max_body", "dedup_window", "jwt"}
	sourceOptions  = []string{"format", "topic", "topic_field", "id_field", "event_field", "data_field", "resume", "header", "mode", "backoff", "idle_timeout", "max_line", "close_when"}
)

// unknownOption is the error for an option block does not know: it names
// the closest known one when there is a plausible one ("did you mean
// heartbeat?"), else lists them all.
func unknownOption(d *caddyfile.Dispenser, block, opt string, known []string) error {
	if best := closest(opt, known); best != "" {
		return d.Errf("unrecognized %s option %q; did you mean %s?", block, opt, best)
	}
	return d.Errf("unrecognized %s option %q; known options: %s", block, opt, strings.Join(known, ", "))
}

// closest returns the known name nearest to s, when it is near enough to be
// a typo or a near miss: within a third of its length in edits, or one of
// them containing the other.
func closest(s string, known []string) string {
	s = strings.ToLower(s)
	best, bestDist := "", -1
	for _, k := range known {
		d := editDistance(s, k)
		if bestDist < 0 || d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	if bestDist <= max(1, len(best)/3) {
		return best
	}
	for _, k := range known {
		if len(s) >= 3 && (strings.Contains(k, s) || strings.Contains(s, k)) {
			return k
		}
	}
	return ""
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment) between a and b, bytewise.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// secret expands the placeholders of a configured secret, failing when it
// comes out empty with an error that names the placeholder
// ("{env.SSE_TOKEN} is empty"), never a literal secret.
func secret(repl *caddy.Replacer, raw string) (string, error) {
	v := repl.ReplaceKnown(raw, "")
	if v != "" {
		return v, nil
	}
	if strings.Contains(raw, "{") {
		return "", fmt.Errorf("%s is empty", raw)
	}
	return "", errors.New("empty secret")
}

// notAllowed answers a method the handler does not serve, saying what to
// add when it is a publisher's method on a handler without publish.
func (h *Handler) notAllowed(w http.ResponseWriter, r *http.Request) error {
	allow := "GET, HEAD"
	if h.Publish != nil {
		allow = "GET, HEAD, POST, DELETE"
	}
	w.Header().Set("Allow", allow)
	msg := fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allow)
	if h.Publish == nil && (r.Method == http.MethodPost || r.Method == http.MethodDelete) {
		msg += "; to publish (POST) and close topics (DELETE) on this URL, add a publish block to its sse handler (see the README: publish)"
	}
	return writeError(w, http.StatusMethodNotAllowed, msg)
}

// head answers HEAD as GET would begin to: refused as GET would be, else
// the head of an event stream (204 when the topic is over for a client with
// this cursor), with no body and no subscription.
func (h *Handler) head(w http.ResponseWriter, r *http.Request, topic string) error {
	if _, ok := h.authorize(w, r, []string{topic}); !ok {
		return nil
	}
	cur, err := h.store.Subscribe(r.Context(), topic, cursorFrom(r), replay.GapReplay)
	if errors.Is(err, replay.ErrTopicClosed) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err == nil {
		cur.Close()
	}
	hdr := w.Header()
	if len(h.encodings) > 0 {
		hdr.Add("Vary", "Accept-Encoding")
		hdr.Set("Cache-Control", "no-cache, no-transform")
		if enc := stream.Negotiate(r.Header.Get("Accept-Encoding"), h.encodings); enc != nil {
			hdr.Set("Content-Encoding", enc.Name)
		}
	}
	hdr.Set("Content-Type", "text/event-stream")
	if hdr.Get("Cache-Control") == "" {
		hdr.Set("Cache-Control", "no-cache")
	}
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return nil
}

// logAuthFailure logs, at debug level, why a publish was refused: the
// schemes configured and each one's reason.
func (h *Handler) logAuthFailure(r *http.Request, reason string) {
	c := h.logger.Check(zap.DebugLevel, "publish authentication failed")
	if c == nil {
		return
	}
	schemes := make([]string, 0, len(h.verifier)+1)
	for _, v := range h.verifier {
		schemes = append(schemes, v.Scheme())
	}
	if h.Publish.JWT != nil {
		schemes = append(schemes, auth.SchemeJWT)
	}
	c.Write(zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.String("remote_addr", r.RemoteAddr),
		zap.Strings("schemes", schemes), zap.String("reason", reason))
}
