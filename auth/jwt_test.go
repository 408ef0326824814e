package auth

import (
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func checkRejection(t *testing.T, name string, g Grant, rej *Rejection, status int, reason string) {
	t.Helper()
	if status == 0 {
		if rej != nil {
			t.Errorf("%s: rejected %d %s (%s), want a grant", name, rej.Status, rej.Reason, rej.Message)
		}
		return
	}
	if rej == nil {
		t.Errorf("%s: granted %+v, want %d %s", name, g, status, reason)
		return
	}
	if rej.Status != status || rej.Reason != reason {
		t.Errorf("%s: rejected %d %s (%s), want %d %s", name, rej.Status, rej.Reason, rej.Message, status, reason)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(rej.WWWAuthenticate, "Bearer realm=\"sse\"") && !strings.HasPrefix(rej.WWWAuthenticate, "SignedURL realm=\"sse\"") {
		t.Errorf("%s: WWW-Authenticate %q", name, rej.WWWAuthenticate)
	}
	if !contains(Reasons(), rej.Reason) {
		t.Errorf("%s: reason %q is not in Reasons()", name, rej.Reason)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// TestJWTReasons sends one token per case to a subscribe configuration with
// an HMAC secret, an RSA key file, an issuer and an audience, and checks the
// answer and its reason.
func TestJWTReasons(t *testing.T) {
	testKeys(t)
	rsaPath, rsaPEM := pemFile(t, rsaKey)
	s := provisioned(t, &Subscribe{JWT: &JWT{
		Keys: []string{secret}, KeyFiles: []string{rsaPath}, Issuer: "https://id.example", Audience: "sse",
	}})
	const topic = "/events/a"
	good := func(kv ...any) jwt.MapClaims {
		return with(with(grant("/events/*"), "iss", "https://id.example", "aud", "sse"), kv...)
	}
	hs := func(c jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(secret), c) }
	tamper := func(tok string) string {
		parts := strings.Split(tok, ".")
		parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sse":{"subscribe":["**"]},"iss":"https://id.example","aud":"sse"}`))
		return strings.Join(parts, ".")
	}
	for _, tc := range []struct {
		name   string
		token  string
		status int
		reason string
	}{
		{"HS256", hs(good()), 0, ""},
		{"HS384", mint(t, jwt.SigningMethodHS384, []byte(secret), good()), 0, ""},
		{"HS512", mint(t, jwt.SigningMethodHS512, []byte(secret), good()), 0, ""},
		{"RS256", mint(t, jwt.SigningMethodRS256, rsaKey, good()), 0, ""},
		{"PS512", mint(t, jwt.SigningMethodPS512, rsaKey, good()), 0, ""},
		{"audience in a list", hs(good("aud", []any{"other", "sse"})), 0, ""},
		{"exp to come", hs(good("exp", t0.Add(time.Minute).Unix())), 0, ""},
		{"nbf passed", hs(good("nbf", t0.Unix())), 0, ""},

		{"expired", hs(good("exp", t0.Add(-time.Second).Unix())), 401, ReasonExpired},
		{"expiring now", hs(good("exp", t0.Unix())), 401, ReasonExpired},
		{"not yet valid", hs(good("nbf", t0.Add(time.Minute).Unix())), 401, ReasonNotYetValid},
		{"wrong issuer", hs(good("iss", "https://evil.example")), 401, ReasonBadIssuer},
		{"no issuer", hs(with(grant("/events/*"), "aud", "sse")), 401, ReasonBadIssuer},
		{"wrong audience", hs(good("aud", "other")), 401, ReasonBadAudience},
		{"no audience", hs(with(grant("/events/*"), "iss", "https://id.example")), 401, ReasonBadAudience},
		{"other secret", mint(t, jwt.SigningMethodHS256, []byte("another secret of enough length!"), good()), 401, ReasonBadSignature},
		{"tampered payload", tamper(hs(good())), 401, ReasonBadSignature},
		{"forged and expired", mint(t, jwt.SigningMethodHS256, []byte("x"), good("exp", 1)), 401, ReasonBadSignature},
		{"other RSA key", mint(t, jwt.SigningMethodRS256, rsaKey2, good()), 401, ReasonBadSignature},
		{"HS256 keyed with the RSA public key", mint(t, jwt.SigningMethodHS256, rsaPEM, good()), 401, ReasonBadSignature},
		{"ES256 with no EC key", mint(t, jwt.SigningMethodES256, ecKey, good()), 401, ReasonAlgMismatch},
		{"EdDSA with no Ed25519 key", mint(t, jwt.SigningMethodEdDSA, edKey, good()), 401, ReasonAlgMismatch},
		{"alg none", rawUnsigned(mustJSON(good())), 401, ReasonAlgMismatch},
		{"unknown alg", rawHS256(`{"alg":"HS999"}`, mustJSON(good()), []byte(secret)), 401, ReasonAlgMismatch},
		{"no alg", rawHS256(`{"typ":"JWT"}`, mustJSON(good()), []byte(secret)), 401, ReasonMalformed},
		{"not a JWT", "hello", 401, ReasonMalformed},
		{"two segments", "a.b", 401, ReasonMalformed},
		{"bad base64", "!!!.???.***", 401, ReasonMalformed},
		{"exp of the wrong type", hs(good("exp", "tomorrow")), 401, ReasonMalformed},
		{"claim of the wrong type", hs(with(good(), "sse", map[string]any{"subscribe": 42})), 401, ReasonMalformed},
		{"claim with a non-string", hs(with(good(), "sse", map[string]any{"subscribe": []any{"/events/a", 1}})), 401, ReasonMalformed},
		{"claim with a bad pattern", hs(with(good(), "sse", map[string]any{"subscribe": []any{"/events/***"}})), 401, ReasonMalformed},
		{"oversized", hs(good("pad", strings.Repeat("x", maxTokenLength))), 401, ReasonMalformed},

		{"no claim", hs(with(jwt.MapClaims{}, "iss", "https://id.example", "aud", "sse")), 403, ReasonForbidden},
		{"other topic", hs(good("sse", map[string]any{"subscribe": []any{"/events/b", "/other/**"}})), 403, ReasonForbidden},
		{"one string claim", hs(good("sse", map[string]any{"subscribe": "/events/a"})), 0, ""},
	} {
		g, rej := s.Authorize(request("/events/a", bearer(tc.token)...), []string{topic}, t0)
		checkRejection(t, tc.name, g, rej, tc.status, tc.reason)
		if rej != nil && strings.Contains(rej.Message+rej.WWWAuthenticate, tc.token) {
			t.Errorf("%s: the rejection repeats the token", tc.name)
		}
		if rej != nil && rej.Status == 403 && (rej.Topic != topic || !strings.Contains(rej.Message, topic)) {
			t.Errorf("%s: 403 names topic %q (%s), want %q", tc.name, rej.Topic, rej.Message, topic)
		}
		if rej == nil && g.Scheme != SchemeJWT {
			t.Errorf("%s: scheme %q", tc.name, g.Scheme)
		}
	}
}

// TestAlgConfusion: with only an RSA public key configured, a token signed
// HS256 with that key's PEM bytes as the HMAC secret, the classic
// confusion attack, is refused as an algorithm the key is not pinned to.
func TestAlgConfusion(t *testing.T) {
	testKeys(t)
	path, pemBytes := pemFile(t, rsaKey)
	// Confused verifiers use the PEM text or the DER bytes as the secret.
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	s := provisioned(t, &Subscribe{JWT: &JWT{KeyFiles: []string{path}}})
	for name, key := range map[string][]byte{"PEM": pemBytes, "DER": der} {
		tok := mint(t, jwt.SigningMethodHS256, key, grant("**"))
		g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0)
		checkRejection(t, "HS256 keyed with the RSA key's "+name, g, rej, 401, ReasonAlgMismatch)
	}
	tok := rawUnsigned(mustJSON(grant("**")))
	g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0)
	checkRejection(t, "alg none", g, rej, 401, ReasonAlgMismatch)
	if !strings.Contains(rej.Message, "none") {
		t.Errorf("alg none: message %q does not say which algorithm", rej.Message)
	}
}

func TestKeyTypes(t *testing.T) {
	testKeys(t)
	ecPath, _ := pemFile(t, ecKey)
	edPath, _ := pemFile(t, edKey)
	s := provisioned(t, &Subscribe{JWT: &JWT{KeyFiles: []string{ecPath, edPath}}})
	for _, tc := range []struct {
		name   string
		token  string
		reason string
	}{
		{"ES256", mint(t, jwt.SigningMethodES256, ecKey, grant("**")), ""},
		{"EdDSA", mint(t, jwt.SigningMethodEdDSA, edKey, grant("**")), ""},
		{"ES384 with a P-256 key", mint(t, jwt.SigningMethodES384, mustEC384(t), grant("**")), ReasonAlgMismatch},
		{"RS256 with no RSA key", func() string { testKeys(t); return mint(t, jwt.SigningMethodRS256, rsaKey, grant("**")) }(), ReasonAlgMismatch},
		{"HS256 with no secret", mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**")), ReasonAlgMismatch},
	} {
		g, rej := s.Authorize(request("/t", bearer(tc.token)...), []string{"/t"}, t0)
		status := 0
		if tc.reason != "" {
			status = 401
		}
		checkRejection(t, tc.name, g, rej, status, tc.reason)
	}
}

// TestKeyRotation: two secrets and two RSA keys, any verifies.
func TestKeyRotation(t *testing.T) {
	testKeys(t)
	p1, _ := pemFile(t, rsaKey)
	p2, _ := pemFile(t, rsaKey2)
	const old, cur = "the old secret, still accepted..", "the new secret, now minting....."
	s := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{cur, old}, KeyFiles: []string{p1, p2}}})
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"old secret", mint(t, jwt.SigningMethodHS256, []byte(old), grant("**")), true},
		{"new secret", mint(t, jwt.SigningMethodHS256, []byte(cur), grant("**")), true},
		{"retired secret", mint(t, jwt.SigningMethodHS256, []byte("a retired secret, no longer ok.."), grant("**")), false},
		{"first RSA key", mint(t, jwt.SigningMethodRS256, rsaKey, grant("**")), true},
		{"second RSA key", mint(t, jwt.SigningMethodRS256, rsaKey2, grant("**")), true},
		{"new secret with a kid", mint(t, jwt.SigningMethodHS256, []byte(cur), grant("**"), "kid", "2026"), true},
	} {
		g, rej := s.Authorize(request("/t", bearer(tc.tok)...), []string{"/t"}, t0)
		if tc.ok {
			checkRejection(t, tc.name, g, rej, 0, "")
		} else {
			checkRejection(t, tc.name, g, rej, 401, ReasonBadSignature)
		}
	}
}

// TestMercureToken: a token exactly as Mercure's docs mint them (HS256,
// header without typ, no exp, claim mercure.subscribe) is accepted with
// claim mercure.subscribe; * grants everything, other selectors only the
// topic of that exact name.
func TestMercureToken(t *testing.T) {
	const mercureKey = "!ChangeThisMercureHubJWTSecretKey!"
	s := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{mercureKey}, Claim: "mercure.subscribe"}})
	all := rawHS256(`{"alg":"HS256"}`, `{"mercure":{"subscribe":["*"],"publish":["*"]}}`, []byte(mercureKey))
	some := rawHS256(`{"alg":"HS256","typ":"JWT"}`,
		`{"mercure":{"subscribe":["https://example.com/books/1","https://example.com/users/{id}","/a/*"],"payload":{"user":"x"}}}`, []byte(mercureKey))
	sseShaped := mint(t, jwt.SigningMethodHS256, []byte(mercureKey), grant("**"))
	for _, tc := range []struct {
		name, tok, topic string
		ok               bool
	}{
		{"* grants a path", all, "/events/a/b", true},
		{"* grants a URL", all, "https://example.com/books/1", true},
		{"literal selector", some, "https://example.com/books/1", true},
		{"literal selector, other topic", some, "https://example.com/books/2", false},
		{"URI template is literal", some, "https://example.com/users/42", false},
		{"URI template named literally", some, "https://example.com/users/{id}", true},
		{"stars in a selector are literal", some, "/a/b", false},
		{"an sse token has no mercure claim", sseShaped, "/a", false},
	} {
		g, rej := s.Authorize(request("/x", bearer(tc.tok)...), []string{tc.topic}, t0)
		if tc.ok {
			checkRejection(t, tc.name, g, rej, 0, "")
			if !g.Expires.IsZero() {
				t.Errorf("%s: expiry %v for a token without exp", tc.name, g.Expires)
			}
		} else {
			checkRejection(t, tc.name, g, rej, 403, ReasonForbidden)
		}
	}
}

func TestRequireExp(t *testing.T) {
	s := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{secret}, RequireExp: true}})
	noExp := mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**"))
	g, rej := s.Authorize(request("/t", bearer(noExp)...), []string{"/t"}, t0)
	checkRejection(t, "no exp", g, rej, 401, ReasonMissingExp)
	exp := t0.Add(time.Hour)
	withExp := mint(t, jwt.SigningMethodHS256, []byte(secret), with(grant("**"), "exp", exp.Unix()))
	g, rej = s.Authorize(request("/t", bearer(withExp)...), []string{"/t"}, t0)
	checkRejection(t, "exp", g, rej, 0, "")
	if !g.Expires.Equal(exp) {
		t.Errorf("Expires = %v, want %v", g.Expires, exp)
	}
}

// TestTokenSources: the first source, in order, that carries a token is the
// one verified.
func TestTokenSources(t *testing.T) {
	good := mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**"))
	bad := mint(t, jwt.SigningMethodHS256, []byte("not the secret, but long enough."), grant("**"))
	cookie := func(name, v string) []string { return []string{"Cookie", name + "=" + v} }
	def := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{secret}}})
	custom := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{secret}, Token: []TokenSource{
		{From: "query", Name: "access_token"}, {From: "cookie", Name: "session"},
	}}})
	for _, tc := range []struct {
		name   string
		s      *Subscribe
		r      *http.Request
		status int
		reason string
	}{
		{"header", def, request("/t", bearer(good)...), 0, ""},
		{"lowercase bearer", def, request("/t", "Authorization", "bearer "+good), 0, ""},
		{"cookie", def, request("/t", cookie("sse_token", good)...), 0, ""},
		{"query", def, request("/t?token=" + good), 0, ""},
		{"header wins over cookie", def, request("/t", append(bearer(good), cookie("sse_token", bad)...)...), 0, ""},
		{"a bad header is final", def, request("/t", append(bearer(bad), cookie("sse_token", good)...)...), 401, ReasonBadSignature},
		{"cookie wins over query", def, request("/t?token="+bad, cookie("sse_token", good)...), 0, ""},
		{"a bad cookie is final", def, request("/t?token="+good, cookie("sse_token", bad)...), 401, ReasonBadSignature},
		{"Basic carries no token", def, request("/t", "Authorization", "Basic dXNlcjpwYXNz", "Cookie", "sse_token="+good), 0, ""},
		{"Bearer without a token", def, request("/t?token="+good, "Authorization", "Bearer "), 0, ""},
		{"other cookie", def, request("/t", cookie("session", good)...), 401, ReasonMissing},
		{"nothing", def, request("/t"), 401, ReasonMissing},
		{"custom: query first", custom, request("/t?access_token="+good, cookie("session", bad)...), 0, ""},
		{"custom: cookie", custom, request("/t", cookie("session", good)...), 0, ""},
		{"custom: header not looked at", custom, request("/t", bearer(good)...), 401, ReasonMissing},
		{"custom: default query not looked at", custom, request("/t?token=" + good), 401, ReasonMissing},
	} {
		g, rej := tc.s.Authorize(tc.r, []string{"/t"}, t0)
		checkRejection(t, tc.name, g, rej, tc.status, tc.reason)
	}
	_, rej := def.Authorize(request("/t"), []string{"/t"}, t0)
	if rej.WWWAuthenticate != `Bearer realm="sse"` {
		t.Errorf("missing: WWW-Authenticate %q, want a bare challenge", rej.WWWAuthenticate)
	}
	for _, want := range []string{"Authorization: Bearer", "cookie sse_token", "query token"} {
		if !strings.Contains(rej.Message, want) {
			t.Errorf("missing: message %q does not mention %s", rej.Message, want)
		}
	}
}

// TestIssuerPlaceholder: issuer and audience expand placeholders.
func TestIssuerPlaceholder(t *testing.T) {
	t.Setenv("SSE_TEST_ISSUER", "https://id.example")
	s := provisioned(t, &Subscribe{JWT: &JWT{Keys: []string{secret}, Issuer: "{env.SSE_TEST_ISSUER}"}})
	tok := mint(t, jwt.SigningMethodHS256, []byte(secret), with(grant("**"), "iss", "https://id.example"))
	g, rej := s.Authorize(request("/t", bearer(tok)...), []string{"/t"}, t0)
	checkRejection(t, "expanded issuer", g, rej, 0, "")
}

// FuzzAuthorize: whatever a client sends as a token, the answer is a 401
// with a known reason (the fuzzer cannot forge a signature), never a panic
// and never the token repeated.
func FuzzAuthorize(f *testing.F) {
	for _, seed := range []string{"a.b.c", "eyJhbGciOiJub25lIn0.e30.", "..", rawUnsigned(`{"sse":{"subscribe":["**"]}}`),
		rawHS256(`{"alg":"HS256","kid":7}`, `{"exp":"x"}`, []byte("k")), rawHS256(`{"alg":"RS256"}`, `{}`, []byte("k"))} {
		f.Add(seed)
	}
	testKeys(f)
	path, _ := pemFile(f, rsaKey)
	s := provisioned(f, &Subscribe{JWT: &JWT{Keys: []string{secret}, KeyFiles: []string{path}, Issuer: "i", Audience: "a"}})
	f.Fuzz(func(t *testing.T, tok string) {
		r := request("/t")
		r.Header.Set("Authorization", "Bearer "+tok)
		g, rej := s.Authorize(r, []string{"/t"}, t0)
		if strings.TrimSpace(tok) == "" {
			return
		}
		if rej == nil {
			t.Fatalf("granted %+v to %q", g, tok)
		}
		if rej.Status != 401 || !contains(Reasons(), rej.Reason) {
			t.Fatalf("%q: %d %s", tok, rej.Status, rej.Reason)
		}
		// Fixed texts hold no run of 40 characters without a space.
		if len(tok) >= 40 && !strings.ContainsAny(tok, " \t") && strings.Contains(rej.Message+rej.WWWAuthenticate, tok) {
			t.Fatalf("%q: the rejection repeats the token", tok)
		}
	})
}
