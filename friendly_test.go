package caddysse_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// HEAD is answered with the head a GET would get, and no subscription.
func TestHeadIsGETsHead(t *testing.T) {
	s := startSite(t, `sse /h/* {`+openPublish+`}`)
	path := topic(t, "/h/", "t")
	r := s.do(http.MethodHead, path, "")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/event-stream" || r.body != "" {
		t.Errorf("HEAD answered %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r := s.do(http.MethodDelete, path, ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE answered %d", r.status)
	}
	if r := s.do(http.MethodHead, path, ""); r.status != http.StatusNoContent {
		t.Errorf("HEAD of a closed topic answered %d, want 204 as GET", r.status)
	}
}

// A secret whose placeholder expands to nothing is refused at load, naming
// the placeholder.
func TestEmptySecretNamesItsPlaceholder(t *testing.T) {
	for _, scheme := range []string{"bearer", "hmac_sha256", "standard_webhooks"} {
		err := testcaddy.ValidateCaddyfile("http://127.0.0.1:9 {\n\tsse {\n\t\tpublish {\n\t\t\t" + scheme + " {env.SSE_TEST_NEVER_SET}\n\t\t}\n\t}\n}\n")
		if err == nil || !strings.Contains(err.Error(), "{env.SSE_TEST_NEVER_SET} is empty") {
			t.Errorf("%s: %v", scheme, err)
		}
	}
}

// HEAD of a private topic is refused as its GET would be.
func TestHeadOfPrivateTopicIsRefused(t *testing.T) {
	s := startPrivateSite(t, "", privateJWTSite)
	if r := s.do(http.MethodHead, topic(t, "/p/", "secret"), ""); r.status != http.StatusUnauthorized {
		t.Errorf("HEAD of a private topic without a token answered %d, want 401", r.status)
	}
	if r := s.do(http.MethodHead, topic(t, "/p/news-", "x"), ""); r.status != http.StatusOK {
		t.Errorf("HEAD of a public topic answered %d, want 200", r.status)
	}
}
