package caddysse

// Private streams (issue 14): the handler's side of package auth.
// Subscribers are authorized before they take a slot, and their stream
// ends when their credential expires; publishers may present a JWT; CORS
// headers go on every answer, refusals included.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/auth"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

// DefaultExpiredEvent is the name of the event that ends a stream whose
// credential expired.
const DefaultExpiredEvent = stream.DefaultExpiredEvent

// rejectForbidden labels, in publish_rejects_total, a publish whose JWT is
// valid but does not grant the topic (403); other failures are rejectAuth.
const rejectForbidden = "forbidden"

func init() {
	// Every authorization reason is a series from the start, so that a
	// rate of refusals can be computed before the first one.
	for _, reason := range auth.Reasons() {
		metrics.subscribeRejects.WithLabelValues(reason)
	}
}

// provisionPrivate sets the defaults of the private-stream options and
// provisions subscribe, cors and publish's jwt.
func (h *Handler) provisionPrivate(ctx caddy.Context) error {
	if h.ExpiredEvent == "" {
		h.ExpiredEvent = DefaultExpiredEvent
	}
	if h.Subscribe != nil {
		if err := h.Subscribe.Provision(ctx); err != nil {
			return err
		}
	}
	if h.Publish != nil && h.Publish.JWT != nil {
		if err := h.Publish.JWT.Provision(ctx); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	if h.CORS != nil {
		if err := h.CORS.Provision(ctx); err != nil {
			return err
		}
		if h.Publish != nil {
			// A page on another origin signing its POST with a custom
			// header must be allowed to send it.
			for _, s := range h.Publish.HMACSHA256 {
				if s.Header != "" {
					h.CORS.AllowHeader(s.Header)
				}
			}
		}
	}
	return nil
}

// validatePrivate checks the private-stream options Provision does not.
func (h *Handler) validatePrivate() error {
	if h.ExpiredEvent != "" && wire.SanitizeName(h.ExpiredEvent) != h.ExpiredEvent {
		return fmt.Errorf("expired_event: %q is not a plain event name", h.ExpiredEvent)
	}
	return nil
}

// authorize decides whether the request may read topics. When it may not,
// authorize answers (401 or 403, a JSON error and WWW-Authenticate),
// counts and logs the refusal, and returns false. Without a subscribe
// block every topic is public and the grant never expires.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, topics []string) (auth.Grant, bool) {
	grant, rej := h.Subscribe.Authorize(r, topics, time.Now())
	if rej == nil {
		return grant, true
	}
	metrics.subscribeRejects.WithLabelValues(rej.Reason).Inc()
	// The reason and message, never the credential.
	if c := h.logger.Check(zap.DebugLevel, "subscriber refused"); c != nil {
		c.Write(zap.Strings("topics", topics), zap.Int("status", rej.Status),
			zap.String("reason", rej.Reason), zap.String("message", rej.Message),
			zap.String("remote_addr", r.RemoteAddr))
	}
	writeRejection(w, rej)
	return grant, false
}

// writeRejection answers a refused request: the status, WWW-Authenticate,
// and a JSON body with the message, the reason (a fixed set, see
// auth.Reasons) and, for a 403, the topic not granted.
func writeRejection(w http.ResponseWriter, rej *auth.Rejection) {
	h := w.Header()
	if rej.WWWAuthenticate != "" {
		h.Set("WWW-Authenticate", rej.WWWAuthenticate)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(rej.Status)
	body, _ := json.Marshal(struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
		Topic  string `json:"topic,omitempty"`
	}{rej.Message, rej.Reason, rej.Topic})
	_, _ = w.Write(append(body, '\n'))
}

// publishAllowed checks a publish (or close) of topic against the
// configured schemes: one passing admits it. A JWT that is valid but does
// not grant the topic is a 403 when no other scheme passed; every other
// failure a 401 giving each scheme's reason. It answers refusals itself.
func (h *Handler) publishAllowed(w http.ResponseWriter, r *http.Request, topic string, body []byte) bool {
	p := h.Publish
	if len(h.verifier) == 0 && p.JWT == nil {
		return true // allow_unauthenticated
	}
	now := time.Now()
	var reasons []string
	if len(h.verifier) > 0 {
		err := h.verifier.Verify(r.Header, body, now)
		if err == nil {
			return true
		}
		reasons = append(reasons, err.Error())
	}
	var rej *auth.Rejection
	if p.JWT != nil {
		if rej = p.JWT.Check(r, topic, now); rej == nil {
			return true
		}
		if rej.Status == http.StatusForbidden {
			metrics.rejects.WithLabelValues(rejectForbidden).Inc()
			writeRejection(w, rej)
			return false
		}
		reasons = append(reasons, auth.SchemeJWT+": "+rej.Message)
	}
	metrics.rejects.WithLabelValues(rejectAuth).Inc()
	h.logAuthFailure(r, strings.Join(reasons, "; "))
	switch {
	case rej != nil:
		w.Header().Set("WWW-Authenticate", rej.WWWAuthenticate)
	case h.hasBearer():
		w.Header().Set("WWW-Authenticate", `Bearer realm="sse"`)
	}
	_ = writeError(w, http.StatusUnauthorized, "authentication failed: "+strings.Join(reasons, "; "))
	return false
}
