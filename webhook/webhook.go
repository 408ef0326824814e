// Package webhook authenticates publish requests: bearer tokens, GitHub's
// HMAC signatures and Standard Webhooks, and reads their idempotency keys.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A Verifier checks one authentication scheme on a request. body is the raw
// request body, already read and bounded.
type Verifier interface {
	// Verify returns nil when the request passes, or an *Error saying what
	// is wrong. Messages never contain secrets.
	Verify(h http.Header, body []byte, now time.Time) error
	// Scheme names the scheme as the configuration does.
	Scheme() string
}

// Error is an authentication failure of one scheme.
type Error struct {
	Scheme string
	Msg    string
}

func (e *Error) Error() string { return e.Scheme + ": " + e.Msg }

func fail(scheme, format string, args ...any) error {
	return &Error{Scheme: scheme, Msg: fmt.Sprintf(format, args...)}
}

// Bearer accepts `Authorization: Bearer <token>`.
type Bearer struct {
	digest [sha256.Size]byte
}

// NewBearer returns a verifier for token.
func NewBearer(token string) (Verifier, error) {
	if token == "" {
		return nil, errors.New("empty bearer token")
	}
	return &Bearer{digest: sha256.Sum256([]byte(token))}, nil
}

// Scheme implements Verifier.
func (*Bearer) Scheme() string { return "bearer" }

// Verify implements Verifier. Digests of equal size are compared, so
// neither the token nor its length leaks through timing.
func (b *Bearer) Verify(h http.Header, _ []byte, _ time.Time) error {
	auth := h.Get("Authorization")
	if auth == "" {
		return fail("bearer", "missing Authorization header")
	}
	scheme, token, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return fail("bearer", "Authorization header is not of the Bearer scheme")
	}
	if strings.TrimSpace(token) == "" {
		// net/http trims "Bearer " to "Bearer"; say so rather than blame the scheme.
		return fail("bearer", "Authorization header has no token after Bearer")
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(got[:], b.digest[:]) != 1 {
		return fail("bearer", "token mismatch")
	}
	return nil
}

// DefaultHMACHeader is where GitHub puts its signature.
const DefaultHMACHeader = "X-Hub-Signature-256"

// HMACSHA256 accepts GitHub-style signatures: `sha256=<hex HMAC-SHA256 of the
// raw body>` in a header.
type HMACSHA256 struct {
	secret []byte
	header string
}

// NewHMACSHA256 returns a verifier for secret; header defaults to
// X-Hub-Signature-256.
func NewHMACSHA256(secret, header string) (Verifier, error) {
	if secret == "" {
		return nil, errors.New("empty hmac_sha256 secret")
	}
	if header == "" {
		header = DefaultHMACHeader
	}
	return &HMACSHA256{secret: []byte(secret), header: header}, nil
}

// Scheme implements Verifier.
func (*HMACSHA256) Scheme() string { return "hmac_sha256" }

// Verify implements Verifier.
func (v *HMACSHA256) Verify(h http.Header, body []byte, _ time.Time) error {
	value := h.Get(v.header)
	if value == "" {
		return fail("hmac_sha256", "missing %s header", v.header)
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(value), "sha256=")
	if !ok {
		return fail("hmac_sha256", "%s header does not start with sha256=", v.header)
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return fail("hmac_sha256", "%s header is not a hex SHA-256 signature", v.header)
	}
	mac := hmac.New(sha256.New, v.secret)
	mac.Write(body)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return fail("hmac_sha256", "signature mismatch")
	}
	return nil
}

// DefaultTolerance is how far webhook-timestamp may be from now, either way.
const DefaultTolerance = 5 * time.Minute

// StandardWebhooks accepts the Standard Webhooks v1 scheme: the signed
// content is "{webhook-id}.{webhook-timestamp}.{body}", HMAC-SHA256 keyed
// with the decoded secret, sent base64 as "v1,<sig>" in webhook-signature;
// several space-separated signatures allow key rotation.
type StandardWebhooks struct {
	key       []byte
	tolerance time.Duration
}

// NewStandardWebhooks returns a verifier for a "whsec_<base64>" secret (the
// prefix is optional). tolerance 0 means DefaultTolerance.
func NewStandardWebhooks(secret string, tolerance time.Duration) (Verifier, error) {
	if secret == "" {
		return nil, errors.New("empty standard_webhooks secret")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return nil, fmt.Errorf("standard_webhooks secret is not whsec_ followed by base64: %w", err)
	}
	if len(key) == 0 {
		return nil, errors.New("standard_webhooks secret decodes to nothing")
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	return &StandardWebhooks{key: key, tolerance: tolerance}, nil
}

// Scheme implements Verifier.
func (*StandardWebhooks) Scheme() string { return "standard_webhooks" }

// Verify implements Verifier.
func (v *StandardWebhooks) Verify(h http.Header, body []byte, now time.Time) error {
	const scheme = "standard_webhooks"
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	switch {
	case id == "":
		return fail(scheme, "missing webhook-id header")
	case ts == "":
		return fail(scheme, "missing webhook-timestamp header")
	case sigs == "":
		return fail(scheme, "missing webhook-signature header")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fail(scheme, "webhook-timestamp %q is not unix seconds", ts)
	}
	// The timestamp is signed, so a replay of a captured request is only
	// accepted within the tolerance (and deduplicated by webhook-id there).
	// Instants are compared rather than now.Sub(sent) against the tolerance:
	// Sub saturates at about 292 years, and negating the saturated minimum
	// overflows back to a negative skew, which let a far-future timestamp
	// (milliseconds, say) through the window and replay forever.
	sent := time.Unix(secs, 0)
	if sent.Before(now.Add(-v.tolerance)) {
		return fail(scheme, "webhook-timestamp is %s old, beyond the tolerance of %s", now.Sub(sent).Round(time.Second), v.tolerance)
	}
	if sent.After(now.Add(v.tolerance)) {
		return fail(scheme, "webhook-timestamp is %s in the future, beyond the tolerance of %s", sent.Sub(now).Round(time.Second), v.tolerance)
	}
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	sawV1 := false
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		sawV1 = true
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	if !sawV1 {
		return fail(scheme, "webhook-signature has no v1 signature")
	}
	return fail(scheme, "signature mismatch")
}

// Any admits a request when at least one verifier passes. With no verifiers
// it admits everything: the handler only allows that when the configuration
// says allow_unauthenticated.
type Any []Verifier

// Verify returns nil if one verifier passes, else every scheme's reason.
func (a Any) Verify(h http.Header, body []byte, now time.Time) error {
	if len(a) == 0 {
		return nil
	}
	reasons := make([]string, 0, len(a))
	for _, v := range a {
		err := v.Verify(h, body, now)
		if err == nil {
			return nil
		}
		reasons = append(reasons, err.Error())
	}
	return errors.New(strings.Join(dedupe(reasons), "; "))
}

// dedupe drops repeated reasons: two bearer tokens both say "token
// mismatch", and once is enough.
func dedupe(s []string) []string {
	out := s[:0]
	seen := make(map[string]bool, len(s))
	for _, r := range s {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// deliveryHeaders carry a sender's idempotency key, most specific first.
var deliveryHeaders = []string{"webhook-id", "X-GitHub-Delivery", "Idempotency-Key"}

// maxDeliveryID bounds what a sender can make us remember per delivery.
const maxDeliveryID = 200

// DeliveryID returns the request's idempotency key and the header it came
// from, or "" when there is none. A key that is too long or not printable
// ASCII is an error, not silently ignored, so the sender learns that its
// retries would not be deduplicated.
func DeliveryID(h http.Header) (key, header string, err error) {
	for _, name := range deliveryHeaders {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		if len(v) > maxDeliveryID {
			return "", name, fmt.Errorf("%s header is malformed: %d bytes, longer than %d", name, len(v), maxDeliveryID)
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return "", name, fmt.Errorf("%s header is malformed: byte %d is not printable ASCII", name, i)
			}
		}
		return v, name, nil
	}
	return "", "", nil
}
