package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/caddy-sse/webhook"
)

func publishGrant(topics ...any) jwt.MapClaims {
	return jwt.MapClaims{"sse": map[string]any{"publish": topics}}
}

func TestPublishJWT(t *testing.T) {
	p := &PublishJWT{JWT{Keys: []string{secret}}}
	if err := p.Provision(testContext(t)); err != nil {
		t.Fatal(err)
	}
	post := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, target, strings.NewReader("data"))
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	pub := mint(t, jwt.SigningMethodHS256, []byte(secret), publishGrant("/jobs/*"))
	subOnly := mint(t, jwt.SigningMethodHS256, []byte(secret), grant("**"))
	expired := mint(t, jwt.SigningMethodHS256, []byte(secret), with(publishGrant("**"), "exp", t0.Add(-time.Minute).Unix()))
	for _, tc := range []struct {
		name   string
		r      *http.Request
		status int
		reason string
	}{
		{"granted", post("/jobs/1", bearer(pub)...), 0, ""},
		{"other topic", post("/other", bearer(pub)...), 403, ReasonForbidden},
		{"a subscribe claim does not publish", post("/jobs/1", bearer(subOnly)...), 403, ReasonForbidden},
		{"expired", post("/jobs/1", bearer(expired)...), 401, ReasonExpired},
		{"no token", post("/jobs/1"), 401, ReasonMissing},
		{"a cookie is not read by default", post("/jobs/1", "Cookie", "sse_token="+pub), 401, ReasonMissing},
		{"nor the query", post("/jobs/1?token=" + pub), 401, ReasonMissing},
	} {
		topic := tc.r.URL.Path
		rej := p.Check(tc.r, topic, t0)
		checkRejection(t, tc.name, Grant{Scheme: "jwt"}, rej, tc.status, tc.reason)

		// The same through webhook.Any beside a bearer token: one passing admits.
		bearerV, err := webhook.NewBearer("a static publisher token")
		if err != nil {
			t.Fatal(err)
		}
		any := webhook.Any{bearerV, p.Verifier(tc.r, topic)}
		err = any.Verify(tc.r.Header, []byte("data"), t0)
		if (err == nil) != (tc.status == 0) {
			t.Errorf("%s: through webhook.Any: %v", tc.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "jwt: ") {
			t.Errorf("%s: webhook.Any error %q does not name the jwt scheme", tc.name, err)
		}
		if err != nil && strings.Contains(err.Error(), pub) {
			t.Errorf("%s: the error repeats the token", tc.name)
		}
	}
	if p.Scheme() != "jwt" || p.Verifier(post("/x"), "/x").Scheme() != "jwt" {
		t.Error("scheme is not jwt")
	}
	// A static bearer token still passes beside the JWT scheme.
	bearerV, _ := webhook.NewBearer("a static publisher token")
	r := post("/jobs/1", "Authorization", "Bearer a static publisher token")
	if err := (webhook.Any{p.Verifier(r, "/jobs/1"), bearerV}).Verify(r.Header, nil, t0); err != nil {
		t.Errorf("bearer beside jwt: %v", err)
	}
}

// TestPublishMercure: a Mercure publisher token, with claim mercure.publish.
func TestPublishMercure(t *testing.T) {
	const mercureKey = "!ChangeThisMercureHubJWTSecretKey!"
	p := &PublishJWT{JWT{Keys: []string{mercureKey}, Claim: "mercure.publish"}}
	if err := p.Provision(testContext(t)); err != nil {
		t.Fatal(err)
	}
	all := rawHS256(`{"alg":"HS256"}`, `{"mercure":{"publish":["*"]}}`, []byte(mercureKey))
	one := rawHS256(`{"alg":"HS256"}`, `{"mercure":{"publish":["https://example.com/books/1"],"subscribe":["*"]}}`, []byte(mercureKey))
	subscriber := rawHS256(`{"alg":"HS256"}`, `{"mercure":{"subscribe":["*"]}}`, []byte(mercureKey))
	for _, tc := range []struct {
		name, tok, topic string
		ok               bool
	}{
		{"*", all, "/any/thing", true},
		{"literal", one, "https://example.com/books/1", true},
		{"literal, other topic", one, "https://example.com/books/2", false},
		{"subscriber token", subscriber, "/any", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tc.tok)
		if rej := p.Check(r, tc.topic, t0); (rej == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, rej)
		}
	}
}

func TestPublishDefaults(t *testing.T) {
	p := &PublishJWT{JWT{Keys: []string{secret}, Token: []TokenSource{{From: "header"}, {From: "query", Name: "jwt"}}}}
	if err := p.Provision(testContext(t)); err != nil {
		t.Fatal(err)
	}
	tok := mint(t, jwt.SigningMethodHS256, []byte(secret), publishGrant("**"))
	r := httptest.NewRequest(http.MethodPost, "/t?jwt="+tok, nil)
	if rej := p.Check(r, "/t", t0); rej != nil {
		t.Errorf("query source configured explicitly: %v", rej)
	}
	if err := p.Verifier(r, "/t").Verify(r.Header, nil, t0); err != nil {
		t.Errorf("Verifier with a query source: %v", err)
	}
	if err := (&PublishJWT{}).Validate(); err == nil {
		t.Error("a publish jwt without keys validates")
	}
}
