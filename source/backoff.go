package source

import (
	mathrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter bounds how long an upstream's Retry-After can make a source
// wait.
const maxRetryAfter = time.Hour

// backoff returns the delay before reconnection attempt n (from 0): full
// jitter over an exponential window that starts at lo, doubles with every
// failed attempt and is capped at hi. The delay is uniform in [lo, window],
// so lo is a real minimum and reconnecting sources spread out.
func backoff(lo, hi time.Duration, n int) time.Duration {
	window := lo
	for i := 0; i < n && window < hi; i++ {
		window *= 2
	}
	window = min(window, hi)
	if window <= lo {
		return lo
	}
	return lo + mathrand.N(window-lo+1)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when there is none or it cannot be parsed.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
