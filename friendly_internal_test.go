package caddysse

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssegate/caddy-sse/webhook"
)

// A refused publish is logged at debug level with the schemes tried and
// why each failed; the token itself is not.
func TestAuthFailureLoggedAtDebug(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	bearer, err := webhook.NewBearer("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{logger: zap.New(core), Publish: &Publish{Bearer: []string{"s3cret"}, MaxBody: 1 << 10}, verifier: webhook.Any{bearer}}
	req := httptest.NewRequest(http.MethodPost, "/t", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer wrong-token")
	w := httptest.NewRecorder()
	if _, ok := h.readAuthenticated(w, req, "/t"); ok || w.Code != http.StatusUnauthorized {
		t.Fatalf("admitted: %d", w.Code)
	}
	entries := logs.FilterMessage("publish authentication failed").All()
	if len(entries) != 1 || entries[0].Level != zap.DebugLevel {
		t.Fatalf("logged %+v", logs.All())
	}
	fields := entries[0].ContextMap()
	if schemes, _ := fields["schemes"].([]any); len(schemes) != 1 || schemes[0] != "bearer" {
		t.Errorf("schemes %v", fields["schemes"])
	}
	if reason, _ := fields["reason"].(string); !strings.HasPrefix(reason, "bearer: ") {
		t.Errorf("reason %q", fields["reason"])
	}
	for k, v := range fields {
		if s, ok := v.(string); ok && strings.Contains(s, "wrong-token") {
			t.Errorf("field %s logs the token: %q", k, s)
		}
	}
}

func TestClosestOption(t *testing.T) {
	for in, want := range map[string]string{"hearbeat": "heartbeat", "heartbeats": "heartbeat", "Retry": "retry", "write-timeout": "write_timeout", "histroy": "history", "zzz": "", "compression": "compress"} {
		if got := closest(in, sseOptions); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every option the suggestion lists is one the parser knows.
func TestSuggestedOptionsExist(t *testing.T) {
	for block, opts := range map[string][]string{"sse": sseOptions, "history": historyOptions, "limits": limitsOptions, "publish": publishOptions} {
		for _, opt := range opts {
			text := "sse {\n" + opt + "\n}"
			switch block {
			case "history", "limits", "publish":
				text = "sse {\n" + block + " {\n" + opt + "\n}\n}"
			}
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(text))
			if err != nil && strings.Contains(err.Error(), "unrecognized") {
				t.Errorf("%s option %q: %v", block, opt, err)
			}
		}
	}
}
