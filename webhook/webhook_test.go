package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/webhook"
)

// The published Standard Webhooks test vector, as in TestWebhookSign of
// github.com/standard-webhooks/standard-webhooks, libraries/go/webhook_test.go.
const (
	swSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	swTimestamp = "1614265330"
	swBody      = `{"test": 2432232314}`
	swSig       = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// A well-formed v1 signature that belongs to some other message.
	swOtherSig = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
)

var swTime = time.Unix(1614265330, 0)

// GitHub's documented values ("Testing the webhook payload validation" in
// docs.github.com, Validating webhook deliveries).
const (
	ghSecret = "It's a Secret to Everybody"
	ghBody   = "Hello, World!"
	ghHex    = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	ghSig    = "sha256=" + ghHex
)

// header builds an http.Header from name/value pairs, canonicalising names
// the way net/http does for incoming requests.
func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// swSigned is the vector's message sent at timestamp ts and signed properly,
// so that only the timestamp window can reject it.
func swSigned(ts string) http.Header {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(swSecret, "whsec_"))
	if err != nil {
		panic(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(swID + "." + ts + "." + swBody))
	sig := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return header("webhook-id", swID, "webhook-timestamp", ts, "webhook-signature", sig)
}

// checkVerify asserts that err is nil when want is "", and otherwise that it
// is an *Error of scheme whose message contains want and none of secrets.
func checkVerify(t *testing.T, err error, scheme, want string, secrets ...string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("rejected: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted, want error containing %q", want)
	}
	var we *webhook.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v is %T, want *webhook.Error", err, err)
	}
	if we.Scheme != scheme {
		t.Errorf("Scheme = %q, want %q", we.Scheme, scheme)
	}
	if !strings.HasPrefix(err.Error(), scheme+": ") {
		t.Errorf("error %q does not start with %q", err, scheme+": ")
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q leaks %q", err, s)
		}
	}
}

func TestStandardWebhooks(t *testing.T) {
	valid := func() http.Header {
		return header("webhook-id", swID, "webhook-timestamp", swTimestamp, "webhook-signature", swSig)
	}
	with := func(name, value string) http.Header {
		h := valid()
		h.Set(name, value)
		return h
	}
	without := func(name string) http.Header {
		h := valid()
		h.Del(name)
		return h
	}
	tests := []struct {
		name      string
		secret    string
		tolerance time.Duration
		h         http.Header
		body      string
		now       time.Time
		want      string // "" = accepted; else a substring of the error
	}{
		{name: "published vector", h: valid()},
		{name: "secret without whsec_ prefix", secret: strings.TrimPrefix(swSecret, "whsec_"), h: valid()},
		{name: "wrong signature", h: with("webhook-signature", swOtherSig), want: "signature mismatch"},
		{name: "body changed", h: valid(), body: `{"test": 2432232315}`, want: "signature mismatch"},
		{name: "webhook-id is signed", h: with("webhook-id", "msg_other"), want: "signature mismatch"},
		{name: "webhook-timestamp is signed", h: with("webhook-timestamp", "1614265331"), want: "signature mismatch"},
		{name: "signed with another secret", secret: "whsec_" + strings.Repeat("A", 32), h: valid(), want: "signature mismatch"},
		{name: "v1 signature that is not base64", h: with("webhook-signature", "v1,not*base64"), want: "signature mismatch"},

		// Rotation: the sender signs with old and new keys; one match suffices.
		{name: "second of several signatures matches", h: with("webhook-signature", swOtherSig+" "+swSig)},
		{name: "match among other versions", h: with("webhook-signature", "v1a,AAAA "+swOtherSig+" v2,AAAA "+swSig)},
		{name: "only v2 signatures", h: with("webhook-signature", "v2,"+strings.TrimPrefix(swSig, "v1,")), want: "no v1 signature"},
		{name: "only unversioned signature", h: with("webhook-signature", strings.TrimPrefix(swSig, "v1,")), want: "no v1 signature"},

		{name: "missing webhook-id", h: without("webhook-id"), want: "missing webhook-id header"},
		{name: "missing webhook-timestamp", h: without("webhook-timestamp"), want: "missing webhook-timestamp header"},
		{name: "missing webhook-signature", h: without("webhook-signature"), want: "missing webhook-signature header"},
		{name: "empty webhook-signature", h: with("webhook-signature", ""), want: "missing webhook-signature header"},

		{name: "timestamp not a number", h: with("webhook-timestamp", "yesterday"), want: `webhook-timestamp "yesterday" is not unix seconds`},
		{name: "timestamp with fraction", h: with("webhook-timestamp", "1614265330.5"), want: "is not unix seconds"},
		{name: "timestamp in RFC 3339", h: with("webhook-timestamp", "2021-02-26T15:02:10Z"), want: "is not unix seconds"},

		// Tolerance is inclusive, 5 minutes each way by default.
		{name: "exactly 5m old", h: valid(), now: swTime.Add(5 * time.Minute)},
		{name: "exactly 5m ahead", h: valid(), now: swTime.Add(-5 * time.Minute)},
		{name: "stale by 1s", h: valid(), now: swTime.Add(5*time.Minute + time.Second), want: "is 5m1s old, beyond the tolerance of 5m0s"},
		{name: "stale by a day", h: valid(), now: swTime.Add(24 * time.Hour), want: "is 24h0m0s old"},
		{name: "future by 1s", h: valid(), now: swTime.Add(-5*time.Minute - time.Second), want: "is 5m1s in the future, beyond the tolerance of 5m0s"},
		// Far beyond what a time.Duration holds (292 years): the window must
		// not overflow into accepting a validly signed message forever.
		{name: "signed, in milliseconds", h: swSigned("1614265330000"), want: "in the future"},
		{name: "signed, year 5138", h: swSigned("99999999999"), want: "in the future"},
		{name: "signed, max int64", h: swSigned("9223372036854775807"), want: "beyond the tolerance"},
		{name: "signed, epoch", h: swSigned("0"), want: "old, beyond the tolerance"},
		{name: "signed, before epoch", h: swSigned("-9223372036854775808"), want: "old, beyond the tolerance"},
		{name: "signed, 4m59s ahead", h: swSigned("1614265629")},
		{name: "timestamp overflows int64", h: with("webhook-timestamp", "9223372036854775808"), want: "is not unix seconds"},
		{name: "custom tolerance admits older", tolerance: 10 * time.Minute, h: valid(), now: swTime.Add(9 * time.Minute)},
		{name: "custom tolerance still bounds", tolerance: 10 * time.Minute, h: valid(), now: swTime.Add(11 * time.Minute), want: "is 11m0s old, beyond the tolerance of 10m0s"},
		// The window is checked before the signature, so a stale message is
		// reported as stale even though its signature is also wrong.
		{name: "stale and wrong", h: with("webhook-signature", swOtherSig), now: swTime.Add(time.Hour), want: "1h0m0s old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := tt.secret
			if secret == "" {
				secret = swSecret
			}
			body := tt.body
			if body == "" {
				body = swBody
			}
			now := tt.now
			if now.IsZero() {
				now = swTime
			}
			v, err := webhook.NewStandardWebhooks(secret, tt.tolerance)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Scheme(); got != "standard_webhooks" {
				t.Errorf("Scheme() = %q", got)
			}
			err = v.Verify(tt.h, []byte(body), now)
			checkVerify(t, err, "standard_webhooks", tt.want,
				strings.TrimPrefix(swSecret, "whsec_"), strings.TrimPrefix(swSig, "v1,"))
		})
	}
}

func TestNewStandardWebhooks(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		wantErr string
	}{
		{name: "whsec_ prefix", secret: swSecret},
		{name: "raw base64", secret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		{name: "empty", secret: "", wantErr: "empty"},
		{name: "prefix only", secret: "whsec_", wantErr: "decodes to nothing"},
		{name: "not base64", secret: "whsec_not-base64!", wantErr: "base64"},
		// Senders do not share the URL-safe alphabet; accepting it would hide
		// a secret that was mangled on the way into the config.
		{name: "url-safe base64", secret: "whsec_-_-_", wantErr: "base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := webhook.NewStandardWebhooks(tt.secret, 0)
			if tt.wantErr == "" {
				if err != nil || v == nil {
					t.Fatalf("got %v, %v", v, err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if k := strings.TrimPrefix(tt.secret, "whsec_"); k != "" && strings.Contains(err.Error(), k) {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}
}

func TestHMACSHA256(t *testing.T) {
	tests := []struct {
		name         string
		headerOption string // NewHMACSHA256's header argument
		h            http.Header
		body         string
		want         string
	}{
		{name: "documented vector", h: header("X-Hub-Signature-256", ghSig)},
		{name: "upper-case hex", h: header("X-Hub-Signature-256", "sha256="+strings.ToUpper(ghHex))},
		{name: "header name case-insensitive", h: header("x-hub-signature-256", ghSig)},
		{name: "wrong signature", h: header("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64)), want: "signature mismatch"},
		{name: "body changed", h: header("X-Hub-Signature-256", ghSig), body: "Hello, World?", want: "signature mismatch"},
		{name: "missing header", h: header("X-Hub-Signature", "sha1=01"), want: "missing X-Hub-Signature-256 header"},
		{name: "missing sha256= prefix", h: header("X-Hub-Signature-256", ghHex), want: "does not start with sha256="},
		{name: "other algorithm", h: header("X-Hub-Signature-256", "sha1="+ghHex[:40]), want: "does not start with sha256="},
		{name: "non-hex", h: header("X-Hub-Signature-256", "sha256="+strings.Repeat("zz", 32)), want: "not a hex SHA-256 signature"},
		{name: "truncated hex", h: header("X-Hub-Signature-256", ghSig[:len(ghSig)-2]), want: "not a hex SHA-256 signature"},
		{name: "odd-length hex", h: header("X-Hub-Signature-256", ghSig[:len(ghSig)-1]), want: "not a hex SHA-256 signature"},
		{name: "custom header", headerOption: "X-Signature", h: header("X-Signature", ghSig)},
		{name: "custom header ignores default", headerOption: "X-Signature", h: header("X-Hub-Signature-256", ghSig), want: "missing X-Signature header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if body == "" {
				body = ghBody
			}
			v, err := webhook.NewHMACSHA256(ghSecret, tt.headerOption)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Scheme(); got != "hmac_sha256" {
				t.Errorf("Scheme() = %q", got)
			}
			err = v.Verify(tt.h, []byte(body), time.Now())
			// A mismatch must not reveal the signature the server expected.
			checkVerify(t, err, "hmac_sha256", tt.want, ghSecret, ghHex)
		})
	}

	if _, err := webhook.NewHMACSHA256("", ""); err == nil {
		t.Error("NewHMACSHA256 accepted an empty secret")
	}
}

func TestBearer(t *testing.T) {
	const token = "s3cret-token"
	tests := []struct {
		name string
		h    http.Header
		want string
	}{
		{name: "right token", h: header("Authorization", "Bearer "+token)},
		{name: "lower-case scheme", h: header("Authorization", "bearer "+token)},
		{name: "upper-case scheme", h: header("Authorization", "BEARER "+token)},
		{name: "extra spaces", h: header("Authorization", "Bearer   "+token)},
		{name: "wrong token", h: header("Authorization", "Bearer nope"), want: "token mismatch"},
		{name: "prefix of token", h: header("Authorization", "Bearer "+token[:5]), want: "token mismatch"},
		{name: "token with suffix", h: header("Authorization", "Bearer "+token+"x"), want: "token mismatch"},
		{name: "token case matters", h: header("Authorization", "Bearer "+strings.ToUpper(token)), want: "token mismatch"},
		{name: "missing", h: header("X-Token", token), want: "missing Authorization header"},
		{name: "Basic scheme", h: header("Authorization", "Basic dXNlcjpwYXNz"), want: "not of the Bearer scheme"},
		{name: "token without scheme", h: header("Authorization", token), want: "not of the Bearer scheme"},
		{name: "scheme without token", h: header("Authorization", "Bearer"), want: "no token"},
	}
	v, err := webhook.NewBearer(token)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Scheme(); got != "bearer" {
		t.Errorf("Scheme() = %q", got)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkVerify(t, v.Verify(tt.h, nil, time.Now()), "bearer", tt.want, token)
		})
	}

	if _, err := webhook.NewBearer(""); err == nil {
		t.Error("NewBearer accepted an empty token")
	}
}

func TestAny(t *testing.T) {
	bearer, err := webhook.NewBearer("tok")
	if err != nil {
		t.Fatal(err)
	}
	bearer2, err := webhook.NewBearer("tok2")
	if err != nil {
		t.Fatal(err)
	}
	gh, err := webhook.NewHMACSHA256(ghSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := webhook.NewStandardWebhooks(swSecret, 0)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		any  webhook.Any
		h    http.Header
		body string
		want string // "" = accepted; else the whole error message
	}{
		{name: "no verifiers admits anything", any: nil, h: header()},
		{name: "bearer of several", any: webhook.Any{gh, sw, bearer}, h: header("Authorization", "Bearer tok"), body: "x"},
		{name: "second bearer token", any: webhook.Any{bearer, bearer2}, h: header("Authorization", "Bearer tok2")},
		{name: "github of several", any: webhook.Any{bearer, gh, sw}, h: header("X-Hub-Signature-256", ghSig), body: ghBody},
		{
			name: "standard webhooks of several", any: webhook.Any{bearer, gh, sw}, body: swBody,
			h: header("webhook-id", swID, "webhook-timestamp", swTimestamp, "webhook-signature", swSig),
		},
		{
			name: "all fail lists every reason in order", any: webhook.Any{bearer, gh},
			h: header("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64)), body: ghBody,
			want: "bearer: missing Authorization header; hmac_sha256: signature mismatch",
		},
		{
			name: "one failing verifier is its own reason", any: webhook.Any{bearer},
			h: header("Authorization", "Bearer nope"), want: "bearer: token mismatch",
		},
		{
			name: "identical reasons once", any: webhook.Any{bearer, bearer2, gh},
			h:    header("Authorization", "Bearer nope"),
			want: "bearer: token mismatch; hmac_sha256: missing X-Hub-Signature-256 header",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.any.Verify(tt.h, []byte(tt.body), swTime)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}

// The handler shares one Any between all requests.
func TestVerifiersAreSafeForConcurrentUse(t *testing.T) {
	bearer, _ := webhook.NewBearer("tok")
	gh, _ := webhook.NewHMACSHA256(ghSecret, "")
	sw, _ := webhook.NewStandardWebhooks(swSecret, 0)
	any := webhook.Any{bearer, gh, sw}
	requests := []struct {
		h    http.Header
		body string
		ok   bool
	}{
		{header("Authorization", "Bearer tok"), "", true},
		{header("X-Hub-Signature-256", ghSig), ghBody, true},
		{header("webhook-id", swID, "webhook-timestamp", swTimestamp, "webhook-signature", swSig), swBody, true},
		{header("Authorization", "Bearer nope"), "", false},
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				r := requests[(g+i)%len(requests)]
				if err := any.Verify(r.h, []byte(r.body), swTime); (err == nil) != r.ok {
					t.Errorf("request %d: err = %v, want ok=%v", (g+i)%len(requests), err, r.ok)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestDeliveryID(t *testing.T) {
	tests := []struct {
		name       string
		h          http.Header
		wantKey    string
		wantHeader string
		wantErr    string // substring; "" = no error
	}{
		{name: "none", h: header()},
		{name: "webhook-id", h: header("webhook-id", "msg_1"), wantKey: "msg_1", wantHeader: "webhook-id"},
		{name: "X-GitHub-Delivery", h: header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), wantKey: "72d3162e-cc78-11e3-81ab-4c9367dc0958", wantHeader: "X-GitHub-Delivery"},
		{name: "Idempotency-Key", h: header("Idempotency-Key", "k-1"), wantKey: "k-1", wantHeader: "Idempotency-Key"},
		{
			name: "webhook-id before the others",
			h:    header("Idempotency-Key", "k", "X-GitHub-Delivery", "g", "webhook-id", "w"), wantKey: "w", wantHeader: "webhook-id",
		},
		{
			name: "X-GitHub-Delivery before Idempotency-Key",
			h:    header("Idempotency-Key", "k", "X-GitHub-Delivery", "g"), wantKey: "g", wantHeader: "X-GitHub-Delivery",
		},
		{name: "header names case-insensitive", h: header("x-github-delivery", "g"), wantKey: "g", wantHeader: "X-GitHub-Delivery"},
		{name: "trimmed", h: http.Header{"Idempotency-Key": {" \tk-1 "}}, wantKey: "k-1", wantHeader: "Idempotency-Key"},
		{name: "blank counts as absent", h: header("webhook-id", " ", "Idempotency-Key", "k"), wantKey: "k", wantHeader: "Idempotency-Key"},
		{name: "inner space is printable", h: header("Idempotency-Key", "order 42"), wantKey: "order 42", wantHeader: "Idempotency-Key"},
		{name: "200 bytes", h: header("Idempotency-Key", strings.Repeat("k", 200)), wantKey: strings.Repeat("k", 200), wantHeader: "Idempotency-Key"},
		{name: "201 bytes", h: header("Idempotency-Key", strings.Repeat("k", 201)), wantHeader: "Idempotency-Key", wantErr: "Idempotency-Key header is malformed"},
		{name: "non-ASCII", h: header("X-GitHub-Delivery", "caf\u00e9"), wantHeader: "X-GitHub-Delivery", wantErr: "X-GitHub-Delivery header is malformed"},
		{name: "control character", h: header("webhook-id", "a\x01b"), wantHeader: "webhook-id", wantErr: "webhook-id header is malformed"},
		{name: "inner tab", h: header("webhook-id", "a\tb"), wantHeader: "webhook-id", wantErr: "webhook-id header is malformed"},
		// A bad key must not silently fall back to a lower-precedence one:
		// the sender would believe its retries are deduplicated by it.
		{name: "malformed hides nothing", h: header("webhook-id", "caf\u00e9", "Idempotency-Key", "k"), wantHeader: "webhook-id", wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, hdr, err := webhook.DeliveryID(tt.h)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if key != tt.wantKey || hdr != tt.wantHeader {
				t.Errorf("got (%q, %q), want (%q, %q)", key, hdr, tt.wantKey, tt.wantHeader)
			}
		})
	}
}
