package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func corsOf(t *testing.T, c CORS) *CORS {
	t.Helper()
	if err := c.Provision(testContext(t)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return &c
}

func TestCORS(t *testing.T) {
	listed := corsOf(t, CORS{Origins: []string{"https://app.example", "http://localhost:3000"}})
	listedCred := corsOf(t, CORS{Origins: []string{"https://app.example"}, Credentials: true})
	star := corsOf(t, CORS{Origins: []string{"*"}})
	starCred := corsOf(t, CORS{Origins: []string{"*"}, Credentials: true})
	withNull := corsOf(t, CORS{Origins: []string{"null"}})

	type want struct {
		answered    bool
		status      int // of a preflight
		allowOrigin string
		credentials bool
		methods     bool
	}
	preflight := func(origin string) *http.Request {
		r := httptest.NewRequest(http.MethodOptions, "/events/a", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		return r
	}
	get := func(origin string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/events/a", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		c    *CORS
		r    *http.Request
		want want
	}{
		{"listed GET", listed, get("https://app.example"), want{allowOrigin: "https://app.example"}},
		{"listed, case-insensitive", listed, get("HTTPS://APP.EXAMPLE"), want{allowOrigin: "HTTPS://APP.EXAMPLE"}},
		{"second origin", listed, get("http://localhost:3000"), want{allowOrigin: "http://localhost:3000"}},
		{"no match", listed, get("https://evil.example"), want{}},
		{"port matters", listed, get("http://localhost:3001"), want{}},
		{"no Origin", listed, get(""), want{}},
		{"listed preflight", listed, preflight("https://app.example"), want{answered: true, status: 204, allowOrigin: "https://app.example", methods: true}},
		{"preflight, no match", listed, preflight("https://evil.example"), want{answered: true, status: 204}},
		{"credentials", listedCred, get("https://app.example"), want{allowOrigin: "https://app.example", credentials: true}},
		{"credentials preflight", listedCred, preflight("https://app.example"), want{answered: true, status: 204, allowOrigin: "https://app.example", credentials: true, methods: true}},
		{"credentials, no match", listedCred, get("https://evil.example"), want{}},
		{"*", star, get("https://any.example"), want{allowOrigin: "*"}},
		{"* preflight", star, preflight("https://any.example"), want{answered: true, status: 204, allowOrigin: "*", methods: true}},
		{"* with credentials echoes", starCred, get("https://any.example"), want{allowOrigin: "https://any.example", credentials: true}},
		{"* never allows null with credentials", starCred, get("null"), want{}},
		{"null when listed", withNull, get("null"), want{allowOrigin: "null"}},
		{"OPTIONS without a request method is no preflight", listed, func() *http.Request {
			r := get("https://app.example")
			r.Method = http.MethodOptions
			return r
		}(), want{allowOrigin: "https://app.example"}},
	} {
		w := httptest.NewRecorder()
		answered := tc.c.Apply(w, tc.r)
		h := w.Result().Header
		if answered != tc.want.answered {
			t.Errorf("%s: answered = %v", tc.name, answered)
		}
		if answered && w.Code != tc.want.status {
			t.Errorf("%s: status %d, want %d", tc.name, w.Code, tc.want.status)
		}
		if got := h.Get("Access-Control-Allow-Origin"); got != tc.want.allowOrigin {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", tc.name, got, tc.want.allowOrigin)
		}
		if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != tc.want.credentials {
			t.Errorf("%s: Access-Control-Allow-Credentials %v", tc.name, got)
		}
		if h.Get("Access-Control-Allow-Credentials") != "" && h.Get("Access-Control-Allow-Origin") == "*" {
			t.Errorf("%s: * with credentials", tc.name)
		}
		if got := h.Values("Vary"); len(got) != 1 || got[0] != "Origin" {
			t.Errorf("%s: Vary %q, want Origin once", tc.name, got)
		}
		if got := h.Get("Access-Control-Allow-Methods") != ""; got != tc.want.methods {
			t.Errorf("%s: Access-Control-Allow-Methods present = %v", tc.name, got)
		}
		if tc.want.methods {
			if got := h.Get("Access-Control-Allow-Methods"); got != "GET, POST, DELETE, OPTIONS" {
				t.Errorf("%s: methods %q", tc.name, got)
			}
			allowHeaders := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
			for _, name := range []string{"authorization", "content-type", "last-event-id", "idempotency-key", "x-hub-signature-256", "webhook-signature", "webhook-id", "webhook-timestamp"} {
				if !strings.Contains(allowHeaders, name) {
					t.Errorf("%s: Access-Control-Allow-Headers %q lacks %s", tc.name, allowHeaders, name)
				}
			}
			if h.Get("Access-Control-Max-Age") != "600" {
				t.Errorf("%s: max-age %q", tc.name, h.Get("Access-Control-Max-Age"))
			}
		}
		if !answered && tc.want.allowOrigin != "" && !strings.Contains(h.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
			t.Errorf("%s: WWW-Authenticate is not exposed", tc.name)
		}
	}
}

func TestCORSVaryKept(t *testing.T) {
	c := corsOf(t, CORS{Origins: []string{"*"}})
	w := httptest.NewRecorder()
	w.Header().Add("Vary", "Accept-Encoding")
	c.Apply(w, httptest.NewRequest(http.MethodGet, "/", nil))
	c.Apply(w, httptest.NewRequest(http.MethodGet, "/", nil)) // twice: still one Origin
	if got := w.Header().Values("Vary"); len(got) != 2 || got[0] != "Accept-Encoding" || got[1] != "Origin" {
		t.Errorf("Vary = %q", got)
	}
}

func TestCORSAllowHeader(t *testing.T) {
	c := corsOf(t, CORS{Origins: []string{"*"}})
	c.AllowHeader("X-Signature", "authorization")
	r := httptest.NewRequest(http.MethodOptions, "/", nil)
	r.Header.Set("Origin", "https://a.example")
	r.Header.Set("Access-Control-Request-Method", "POST")
	w := httptest.NewRecorder()
	c.Apply(w, r)
	got := w.Header().Get("Access-Control-Allow-Headers")
	if !strings.HasSuffix(got, ", X-Signature") || strings.Count(strings.ToLower(got), "authorization") != 1 {
		t.Errorf("Access-Control-Allow-Headers = %q", got)
	}
}

func TestCORSValidate(t *testing.T) {
	for _, tc := range []struct {
		origins []string
		ok      bool
	}{
		{[]string{"https://a.example"}, true},
		{[]string{"http://localhost:8080", "https://b.example"}, true},
		{[]string{"*"}, true},
		{[]string{"null"}, true},
		{nil, false},
		{[]string{"https://a.example/"}, false},
		{[]string{"https://a.example/path"}, false},
		{[]string{"a.example"}, false},
		{[]string{"ftp://a.example"}, false},
		{[]string{"https://user@a.example"}, false},
	} {
		err := (&CORS{Origins: tc.origins}).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("origins %q: %v", tc.origins, err)
		}
	}
}
