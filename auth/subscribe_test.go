package auth

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signed returns the query of a signed URL for topic.
func signed(secret, topic string, expires time.Time) string {
	exp, sig := SignURL(secret, topic, expires)
	return "expires=" + exp + "&sig=" + sig
}

// TestSignURL pins the signature format down to bytes, so that a backend in
// any language can produce the same: hex HMAC-SHA256 of topic, LF, expires.
func TestSignURL(t *testing.T) {
	exp, sig := SignURL("key", "/events/a", time.Unix(1700000000, 0))
	// printf '/events/a\n1700000000' | openssl dgst -sha256 -hmac key
	const want = "c7e046843b76db70555765c87e7cb2eae03796a9c18b3926e041bc67883cea05"
	if exp != "1700000000" {
		t.Errorf("expires = %q", exp)
	}
	if sig != want {
		t.Errorf("sig = %s, want %s", sig, want)
	}
	if got := hexHMAC("key", "/events/a\n1700000000"); got != sig {
		t.Errorf("sig = %s, an independent HMAC says %s", sig, got)
	}
}

func TestSignedURL(t *testing.T) {
	const old, cur = "the old signing secret...........", "the current signing secret......."
	s := provisioned(t, &Subscribe{SignedURL: []string{cur, old}})
	later := t0.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		query  string
		topics []string
		status int
		reason string
	}{
		{"valid", signed(cur, "/a", later), []string{"/a"}, 0, ""},
		{"rotated secret", signed(old, "/a", later), []string{"/a"}, 0, ""},
		{"retired secret", signed("a secret no longer configured....", "/a", later), []string{"/a"}, 401, ReasonBadSignature},
		{"wrong topic", signed(cur, "/b", later), []string{"/a"}, 401, ReasonBadSignature},
		{"expired", signed(cur, "/a", t0.Add(-time.Second)), []string{"/a"}, 401, ReasonExpired},
		{"expiring now", signed(cur, "/a", t0), []string{"/a"}, 401, ReasonExpired},
		{"forged and expired", "expires=1&sig=" + strings.Repeat("00", 32), []string{"/a"}, 401, ReasonBadSignature},
		{"expires moved", strings.Replace(signed(cur, "/a", later), "expires=", "expires=1", 1), []string{"/a"}, 401, ReasonBadSignature},
		{"parameter names are case-sensitive", strings.ToUpper(signed(cur, "/a", later)), []string{"/a"}, 401, ReasonMissing},
		{"sig only", "sig=" + strings.Repeat("ab", 32), []string{"/a"}, 401, ReasonMalformed},
		{"expires only", "expires=2000000000", []string{"/a"}, 401, ReasonMalformed},
		{"expires not a number", "expires=soon&sig=" + strings.Repeat("ab", 32), []string{"/a"}, 401, ReasonMalformed},
		{"expires signed", "expires=+2000000000&sig=" + strings.Repeat("ab", 32), []string{"/a"}, 401, ReasonMalformed},
		{"sig not hex", "expires=2000000000&sig=xyz", []string{"/a"}, 401, ReasonMalformed},
		{"sig too short", "expires=2000000000&sig=abcd", []string{"/a"}, 401, ReasonMalformed},
		{"one of two topics", signed(cur, "/b", later), []string{"/a", "/b"}, 403, ReasonForbidden},
		{"nothing", "", []string{"/a"}, 401, ReasonMissing},
	} {
		g, rej := s.Authorize(request("/a?"+tc.query), tc.topics, t0)
		checkRejection(t, tc.name, g, rej, tc.status, tc.reason)
		if rej == nil && (g.Scheme != SchemeSignedURL || !g.Expires.Equal(later)) {
			t.Errorf("%s: grant %+v, want signed_url until %v", tc.name, g, later)
		}
		if rej != nil && rej.Status == 401 && !strings.HasPrefix(rej.WWWAuthenticate, `SignedURL realm="sse"`) {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, rej.WWWAuthenticate)
		}
		if tc.name == "one of two topics" && rej != nil && rej.Topic != "/a" {
			t.Errorf("%s: 403 names %q, want /a", tc.name, rej.Topic)
		}
	}
	// Uppercase hex in sig is accepted: only the bytes count.
	exp, sig := SignURL(cur, "/a", later)
	if _, rej := s.Authorize(request("/a?expires="+exp+"&sig="+strings.ToUpper(sig)), []string{"/a"}, t0); rej != nil {
		t.Errorf("uppercase sig: %v", rej)
	}
	// A topic name with reserved characters, escaped in the query as usual.
	name := "https://example.com/books/1?x=y&z"
	exp, sig = SignURL(cur, name, later)
	q := url.Values{"expires": {exp}, "sig": {sig}}.Encode()
	if _, rej := s.Authorize(request("/x?"+q), []string{name}, t0); rej != nil {
		t.Errorf("URL-like topic: %v", rej)
	}
}

// TestPrecedence pins down which credential is judged when several are
// sent, and what public topics need.
func TestPrecedence(t *testing.T) {
	s := provisioned(t, &Subscribe{
		JWT:       &JWT{Keys: []string{secret}},
		SignedURL: []string{"the signing secret of the links.."},
		Public:    []string{"/news/**", "/status"},
	})
	exp := t0.Add(time.Minute)
	tokA := mint(t, jwt.SigningMethodHS256, []byte(secret), with(grant("/a"), "exp", exp.Unix()))
	expired := mint(t, jwt.SigningMethodHS256, []byte(secret), with(grant("**"), "exp", t0.Add(-time.Hour).Unix()))
	linkB := signed("the signing secret of the links..", "/b", t0.Add(time.Hour))
	for _, tc := range []struct {
		name   string
		r      *http.Request
		topics []string
		status int
		reason string
		scheme string
	}{
		{"public needs nothing", request("/news/1"), []string{"/news/1"}, 0, "", SchemePublic},
		{"public ignores a bad token", request("/status", bearer("garbage")...), []string{"/status"}, 0, "", SchemePublic},
		{"public ignores an expired token", request("/status", bearer(expired)...), []string{"/status", "/news/x/y"}, 0, "", SchemePublic},
		{"public is not a prefix", request("/news"), []string{"/news"}, 401, ReasonMissing, ""},
		{"token", request("/a", bearer(tokA)...), []string{"/a"}, 0, "", SchemeJWT},
		{"token plus public", request("/a", bearer(tokA)...), []string{"/status", "/a"}, 0, "", SchemeJWT},
		{"token lacking one", request("/a", bearer(tokA)...), []string{"/a", "/c", "/d"}, 403, ReasonForbidden, ""},
		{"signed URL", request("/b?" + linkB), []string{"/b"}, 0, "", SchemeSignedURL},
		{"signed URL wins over a token", request("/b?"+linkB, bearer(tokA)...), []string{"/b"}, 0, "", SchemeSignedURL},
		{"signed URL wins over an expired cookie", request("/b?"+linkB, "Cookie", "sse_token="+expired), []string{"/b"}, 0, "", SchemeSignedURL},
		{"a signed URL decides alone", request("/a?"+linkB, bearer(tokA)...), []string{"/a"}, 401, ReasonBadSignature, ""},
		{"signed URL plus public", request("/b?" + linkB), []string{"/b", "/news/x"}, 0, "", SchemeSignedURL},
		{"expired token", request("/a", bearer(expired)...), []string{"/a"}, 401, ReasonExpired, ""},
		{"nothing", request("/a"), []string{"/a"}, 401, ReasonMissing, ""},
	} {
		g, rej := s.Authorize(tc.r, tc.topics, t0)
		checkRejection(t, tc.name, g, rej, tc.status, tc.reason)
		if rej == nil && g.Scheme != tc.scheme {
			t.Errorf("%s: scheme %q, want %q", tc.name, g.Scheme, tc.scheme)
		}
		if tc.name == "token" && !g.Expires.Equal(exp) {
			t.Errorf("token: Expires %v, want %v", g.Expires, exp)
		}
		if tc.name == "token lacking one" && (rej == nil || rej.Topic != "/c" || !strings.Contains(rej.Message, `"/c"`)) {
			t.Errorf("token lacking one: %+v, want the first topic not granted, /c", rej)
		}
	}
	_, rej := s.Authorize(request("/a"), []string{"/a"}, t0)
	if !strings.Contains(rej.Message, "token") || !strings.Contains(rej.Message, "signed URL") {
		t.Errorf("missing: message %q does not say what to send", rej.Message)
	}
	// Without signed_url, sig and expires are nobody's business.
	onlyJWT := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{secret}}})
	if _, rej := onlyJWT.Authorize(request("/a?"+linkB, bearer(tokA)...), []string{"/a"}, t0); rej != nil {
		t.Errorf("sig without signed_url configured: %v", rej)
	}
	// Without a subscribe block, everything is public.
	var none *Subscribe
	if g, rej := none.Authorize(request("/a"), []string{"/a"}, t0); rej != nil || g.Scheme != SchemePublic {
		t.Errorf("nil Subscribe: %+v %v", g, rej)
	}
}

func TestProvisionErrors(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("SSE_TEST_SECRET", "from the environment, long enough")
	t.Setenv("SSE_TEST_EMPTY", "")
	small, _ := pemFile(t, mustRSA(t, 1024))
	ed, _ := pemFile(t, edKey)
	for _, tc := range []struct {
		name string
		s    Subscribe
		want string // "" for no error
	}{
		{"env secret", Subscribe{JWT: &JWT{Keys: []string{"{env.SSE_TEST_SECRET}"}}, SignedURL: []string{"{env.SSE_TEST_SECRET}"}}, ""},
		{"empty block", Subscribe{}, "configure jwt, signed_url or public"},
		{"public only", Subscribe{Public: []string{"/news/**"}}, ""},
		{"empty env key", Subscribe{JWT: &JWT{Keys: []string{"{env.SSE_TEST_EMPTY}"}}}, "jwt: key 1: {env.SSE_TEST_EMPTY} expands to an empty string"},
		{"unset env secret", Subscribe{SignedURL: []string{"x", "{env.SSE_TEST_UNSET}"}}, "signed_url secret 2: {env.SSE_TEST_UNSET} expands to an empty string"},
		{"empty literal", Subscribe{SignedURL: []string{""}}, "signed_url secret 1 is empty"},
		{"no keys", Subscribe{JWT: &JWT{}}, "at least one key, key file or jwks"},
		{"bad pattern", Subscribe{Public: []string{"/a/***"}}, "public pattern 1"},
		{"bad claim", Subscribe{JWT: &JWT{Keys: []string{"k"}, Claim: "sse..subscribe"}}, "claim"},
		{"bad source", Subscribe{JWT: &JWT{Keys: []string{"k"}, Token: []TokenSource{{From: "body"}}}}, `token source "body"`},
		{"cookie without name", Subscribe{JWT: &JWT{Keys: []string{"k"}, Token: []TokenSource{{From: "cookie"}}}}, "needs a name"},
		{"source twice", Subscribe{JWT: &JWT{Keys: []string{"k"}, Token: []TokenSource{{From: "header"}, {From: "header"}}}}, "listed twice"},
		{"bad jwks", Subscribe{JWT: &JWT{JWKS: "ftp://x"}}, "not an http(s) URL"},
		{"missing key file", Subscribe{JWT: &JWT{KeyFiles: []string{filepath.Join(dir, "nope.pem")}}}, "no such file"},
		{"private key file", Subscribe{JWT: &JWT{KeyFiles: []string{write("priv.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}}}, "private key"},
		{"not PEM", Subscribe{JWT: &JWT{KeyFiles: []string{write("x.pem", "hello")}}}, "no PEM public key"},
		{"small RSA key", Subscribe{JWT: &JWT{KeyFiles: []string{small}}}, "at least 2048"},
		{"Ed25519 key file", Subscribe{JWT: &JWT{KeyFiles: []string{ed}}}, ""},
	} {
		s := tc.s
		err := s.Provision(testContext(t))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "from the environment") {
			t.Errorf("%s: the error repeats a secret: %v", tc.name, err)
		}
	}
	// The expanded secret is the one used.
	s := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{"{env.SSE_TEST_SECRET}"}}})
	tok := mint(t, jwt.SigningMethodHS256, []byte("from the environment, long enough"), grant("**"))
	if _, rej := s.Authorize(request("/a", bearer(tok)...), []string{"/a"}, t0); rej != nil {
		t.Errorf("env secret: %v", rej)
	}
}

// A subscribe block with only public patterns refuses other topics with a
// message that does not ask for a credential it has no way to accept.
func TestSubscribePublicOnlyRefusalSaysWhy(t *testing.T) {
	s := provisioned(t, &Subscribe{Public: []string{"/news/**"}})
	_, rej := s.Authorize(request("/private"), []string{"/private"}, t0)
	if rej == nil || rej.Status != http.StatusUnauthorized || rej.Reason != ReasonMissing ||
		rej.Message != "topic is not public, and no credential is accepted here" {
		t.Errorf("got %+v", rej)
	}
}
