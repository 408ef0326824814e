package caddysse

import (
	"encoding/json"
	mathrand "math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

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

// turnAway answers a subscriber that cannot be served now (a limit, the
// store unreachable) with comeBackLater and counts it by reason. A 503
// would make EventSource give up for good, even when a slot frees a second
// later: this makes it come back, with its Last-Event-ID.
func (h *Handler) turnAway(w http.ResponseWriter, reason, why string) error {
	metrics.subscribeRejects.WithLabelValues(reason).Inc()
	return h.comeBackLater(w, why)
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
