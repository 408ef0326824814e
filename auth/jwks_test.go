package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a JWK Set that the test can change, and counts fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	body    string
	status  int
	delay   time.Duration
}

func newJWKSServer(t *testing.T, keys ...jose.JSONWebKey) *jwksServer {
	s := &jwksServer{status: http.StatusOK}
	s.set(keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, status, delay := s.body, s.status, s.delay
		s.mu.Unlock()
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...jose.JSONWebKey) {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.body = string(b)
	s.mu.Unlock()
}

func (s *jwksServer) setRaw(status int, body string) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

func jwk(key any, kid string, kv ...string) jose.JSONWebKey {
	k := jose.JSONWebKey{Key: key, KeyID: kid}
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "use":
			k.Use = kv[i+1]
		case "alg":
			k.Algorithm = kv[i+1]
		}
	}
	return k
}

// TestJWKSRefresh: a kid the cached set lacks triggers one refresh, at most
// once per 10 seconds; keys are refreshed when 10 minutes old; a failing
// refresh keeps the keys fetched before.
func TestJWKSRefresh(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwk(&rsaKey.PublicKey, "k1"))
	s := provisioned(t, &Subscribe{JWT: &JWT{JWKS: srv.URL + "/.well-known/jwks.json"}})
	k1 := mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "k1")
	k2 := mint(t, jwt.SigningMethodRS256, rsaKey2, grant("**"), "kid", "k2")
	k3 := mint(t, jwt.SigningMethodRS256, rsaKey2, grant("**"), "kid", "k3")
	k1Forged := mint(t, jwt.SigningMethodRS256, rsaKey2, grant("**"), "kid", "k1")
	noKid := mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"))
	step := func(name, tok string, at time.Duration, reason string, fetches int64) {
		t.Helper()
		g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0.Add(at))
		status := 0
		if reason != "" {
			status = 401
		}
		checkRejection(t, name, g, rej, status, reason)
		if got := srv.fetches.Load(); got != fetches {
			t.Errorf("%s: %d fetches, want %d", name, got, fetches)
		}
	}
	step("first use fetches", k1, 0, "", 1)
	step("cached", k1, time.Second, "", 1)
	step("no kid tries every key", noKid, time.Second, "", 1)
	step("forged under a known kid", k1Forged, time.Second, ReasonBadSignature, 1)
	step("unknown kid within 10s of a fetch", k2, time.Second, ReasonUnknownKey, 1)
	srv.set(jwk(&rsaKey.PublicKey, "k1"), jwk(&rsaKey2.PublicKey, "k2"))
	step("still rate-limited", k2, 9*time.Second, ReasonUnknownKey, 1)
	step("unknown kid refreshes", k2, 11*time.Second, "", 2)
	step("new key cached", k2, 12*time.Second, "", 2)
	step("unknown kid, rate-limited", k3, 12*time.Second, ReasonUnknownKey, 2)
	step("unknown kid refreshes again", k3, 30*time.Second, ReasonUnknownKey, 3)
	step("and again is rate-limited", k3, 31*time.Second, ReasonUnknownKey, 3)
	step("old keys within 10 minutes", k1, 10*time.Minute, "", 3)
	srv.setRaw(http.StatusInternalServerError, "down")
	step("stale keys refresh; the failure keeps them", k1, 11*time.Minute, "", 4)
	step("retried after 10s", k1, 11*time.Minute+11*time.Second, "", 5)
	srv.set(jwk(&rsaKey2.PublicKey, "k2"))
	srv.setRaw(http.StatusOK, srv.body)
	step("a refresh replaces the keys", k2, 12*time.Minute, "", 6)
	step("a removed key is gone", k1, 12*time.Minute+time.Second, ReasonUnknownKey, 6)
}

// TestJWKSConcurrent: concurrent lookups of an unknown kid share one fetch.
func TestJWKSConcurrent(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwk(&rsaKey.PublicKey, "k1"))
	srv.delay = 50 * time.Millisecond
	s := provisioned(t, &Subscribe{JWT: &JWT{JWKS: srv.URL}})
	tok := mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "k1")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0); rej != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 20 concurrent requests refused", n)
	}
}

// TestJWKSKeys: which keys of a set are used, and how they are pinned.
func TestJWKSKeys(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t,
		jwk(&rsaKey.PublicKey, "rs-only", "alg", "RS256", "use", "sig"),
		jwk(&rsaKey2.PublicKey, "enc", "use", "enc"),
		jwk(&ecKey.PublicKey, "ec"),
		jwk(edKey.Public(), "ed"),
		jwk([]byte(secret), "oct"),
		jwk(&small.PublicKey, "small"),
		jwk(rsaKey, "private"),
	)
	s := provisioned(t, &Subscribe{JWT: &JWT{JWKS: srv.URL}})
	for _, tc := range []struct {
		name   string
		tok    string
		reason string
	}{
		{"RS256 as pinned", mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "rs-only"), ""},
		{"PS256 with an RS256 key", mint(t, jwt.SigningMethodPS256, rsaKey, grant("**"), "kid", "rs-only"), ReasonAlgMismatch},
		{"ES256", mint(t, jwt.SigningMethodES256, ecKey, grant("**"), "kid", "ec"), ""},
		{"EdDSA", mint(t, jwt.SigningMethodEdDSA, edKey, grant("**"), "kid", "ed"), ""},
		{"ES256 without kid", mint(t, jwt.SigningMethodES256, ecKey, grant("**")), ""},
		{"encryption key ignored", mint(t, jwt.SigningMethodRS256, rsaKey2, grant("**"), "kid", "enc"), ReasonUnknownKey},
		{"oct key ignored", mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**"), "kid", "oct"), ReasonUnknownKey},
		{"small RSA key ignored", mint(t, jwt.SigningMethodRS256, small, grant("**"), "kid", "small"), ReasonUnknownKey},
		{"private key ignored", mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "private"), ReasonUnknownKey},
		{"HS256 without kid, no secret", mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**")), ReasonAlgMismatch},
	} {
		g, rej := s.Authorize(request("/t", bearer(tc.tok)...), []string{"/t"}, t0)
		status := 0
		if tc.reason != "" {
			status = 401
		}
		checkRejection(t, tc.name, g, rej, status, tc.reason)
	}
}

// TestJWKSBadSets: a set that cannot be used leaves no keys; the size limit
// holds.
func TestJWKSBadSets(t *testing.T) {
	testKeys(t)
	tok := mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "k1")
	good, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk(&rsaKey.PublicKey, "k1")}})
	for _, tc := range []struct {
		name   string
		status int
		body   string
		ok     bool
	}{
		{"good", 200, string(good), true},
		{"padded beyond 1MiB", 200, strings.TrimSuffix(string(good), "}") + `,"pad":"` + strings.Repeat("x", jwksMaxBytes) + `"}`, false},
		{"not JSON", 200, "<html>", false},
		{"404", 404, string(good), false},
		{"no keys", 200, `{"keys":[]}`, false},
		{"unknown kty beside a good key", 200, `{"keys":[{"kty":"XYZ","kid":"x"},` + strings.TrimPrefix(string(good), `{"keys":[`), true},
	} {
		srv := newJWKSServer(t)
		srv.setRaw(tc.status, tc.body)
		s := provisioned(t, &Subscribe{JWT: &JWT{JWKS: srv.URL}})
		g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0)
		if tc.ok {
			checkRejection(t, tc.name, g, rej, 0, "")
		} else {
			checkRejection(t, tc.name, g, rej, 401, ReasonUnknownKey)
		}
	}
}

// TestJWKSTimeout: a JWKS that does not answer in time leaves no keys, and
// the request waits no longer than the timeout.
func TestJWKSTimeout(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwk(&rsaKey.PublicKey, "k1"))
	srv.delay = 500 * time.Millisecond
	s := provisioned(t, &Subscribe{JWT: &JWT{JWKS: srv.URL}})
	s.JWT.jwks.timeout = 50 * time.Millisecond
	tok := mint(t, jwt.SigningMethodRS256, rsaKey, grant("**"), "kid", "k1")
	start := time.Now()
	g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0)
	checkRejection(t, "slow JWKS", g, rej, 401, ReasonUnknownKey)
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("waited %v for a JWKS with a 50ms timeout", d)
	}
}
