package caddysse_test

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// Private topics through a real Caddy (issue 14). Tokens and signed URLs
// are minted here as an application would, from the README's description,
// not with the module's own helpers.

const (
	privSecret  = "private-topics-test-secret-0123456789"
	privSecret2 = "a-second-secret-for-key-rotation-987654"
	urlSecret   = "signed-url-secret-0123456789abcdef"
	urlSecret2  = "signed-url-secret-rotated-fedcba9876"
)

// mintHS signs claims with HS256 and secret.
func mintHS(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// subscribeClaims grants topic patterns in sse.subscribe, expiring at exp
// (zero: no exp).
func subscribeClaims(exp time.Time, patterns ...string) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "sse": map[string]any{"subscribe": patterns}}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	return c
}

// signURL returns the query of a signed link to topic, valid until exp:
// expires=<unix seconds>&sig=<hex HMAC-SHA256(secret, topic + "\n" + expires)>.
func signURL(secret, topic string, exp time.Time) string {
	expires := strconv.FormatInt(exp.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(topic + "\n" + expires))
	return "expires=" + expires + "&sig=" + hex.EncodeToString(mac.Sum(nil))
}

// refusal is the JSON body of a 401 or 403.
type refusal struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
	Topic  string `json:"topic"`
}

func (r reply) refusal(t *testing.T) refusal {
	t.Helper()
	var rf refusal
	if err := json.Unmarshal([]byte(r.body), &rf); err != nil {
		t.Fatalf("refusal body %q is not JSON: %v", r.body, err)
	}
	return rf
}

// startPrivateSite is startSite with global options (an admin endpoint, a
// debug log) in place of `admin off`.
func startPrivateSite(t *testing.T, global, directives string) *site {
	t.Helper()
	s := &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))}
	s.url = "http://" + s.addr
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	testcaddy.Load(t, testcaddy.Format(fmt.Sprintf("{\n%s\n}\n\nhttp://%s {\n%s\n}\n", global, s.addr, directives)))
	t.Cleanup(tr.CloseIdleConnections)
	return s
}

const privateJWTSite = `
	sse /p/* {
		subscribe {
			jwt {
				key ` + privSecret + `
				key ` + privSecret2 + `
			}
			public /p/news-*
		}` + openPublish + `
	}`

// A token is accepted from the Authorization header, the sse_token cookie
// or the token query parameter; either of two keys verifies it (rotation);
// when several are sent, the first source in that order that carries one
// is the one judged.
func TestPrivateTokenSources(t *testing.T) {
	s := startSite(t, privateJWTSite)
	path := topic(t, "/p/", "inbox")
	good := mintHS(t, privSecret, subscribeClaims(time.Now().Add(time.Hour), path))
	rotated := mintHS(t, privSecret2, subscribeClaims(time.Now().Add(time.Hour), "/p/**"))
	other := mintHS(t, privSecret, subscribeClaims(time.Now().Add(time.Hour), "/p/elsewhere"))
	cases := []struct {
		name    string
		query   string
		headers []string
	}{
		{"header", "", []string{"Authorization: Bearer " + good}},
		{"cookie", "", []string{"Cookie: theme=dark; sse_token=" + good}},
		{"query", "?token=" + good, nil},
		{"second key", "", []string{"Authorization: Bearer " + rotated}},
		// The header is judged first: a stale cookie does not matter.
		{"header over cookie", "", []string{"Authorization: Bearer " + good, "Cookie: sse_token=garbage"}},
		// Basic credentials in the header are no token: the cookie is.
		{"basic header, cookie", "", []string{"Authorization: Basic YWxpY2U6cGFzcw==", "Cookie: sse_token=" + good}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := s.subscribe(path+c.query, c.headers...)
			st.await("the position", func() bool { return st.parser.LastEventID != "" })
			id := s.publishID(path, c.name)
			if e := st.next(); e.ID != id || e.Data != c.name {
				t.Errorf("got %+v, want the event %s", e, id)
			}
		})
	}
	// The first source that carries a token is judged, even when it fails.
	r := s.do(http.MethodGet, path, "", "Authorization: Bearer "+other, "Cookie: sse_token="+good)
	if rf := r.refusal(t); r.status != http.StatusForbidden || rf.Topic != path {
		t.Errorf("a header token not granting the topic beside a good cookie: %d %+v, want 403 naming %s", r.status, rf, path)
	}
}

// Every way a credential fails: 401 saying why (with a Bearer challenge)
// or 403 naming the topic; counted by reason in
// caddy_sse_subscribe_rejects_total, logged at debug with the reason and
// never with the token.
func TestPrivateRejections(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "ed25519.pem")
	if err := os.WriteFile(pemPath, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "caddy.log")
	adminPort := testcaddy.FreePort(t)
	s := startPrivateSite(t, fmt.Sprintf("admin 127.0.0.1:%d\nlog {\noutput file %s {\nroll_disabled\n}\nlevel DEBUG\n}", adminPort, logPath), `
	sse /p/* {
		subscribe {
			jwt {
				key `+privSecret+`
				key file `+pemPath+`
				issuer https://issuer.test/
			}
		}
	}`)
	path := topic(t, "/p/", "secret")
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := subscribeClaims(now.Add(time.Hour), path)
		c["iss"] = "https://issuer.test/"
		if mod != nil {
			mod(c)
		}
		return c
	}
	edToken, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims(nil)).SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	noneToken, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name   string
		token  string
		status int
		reason string
	}{
		{"no credential", "", 401, "missing"},
		{"expired", mintHS(t, privSecret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), 401, "expired"},
		{"not yet valid", mintHS(t, privSecret, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), 401, "not_yet_valid"},
		{"bad signature", mintHS(t, "some-other-secret-entirely-0123456789", claims(nil)), 401, "bad_signature"},
		{"wrong issuer", mintHS(t, privSecret, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.test/" })), 401, "bad_issuer"},
		{"alg none", noneToken, 401, "alg_mismatch"},
		// HS/RS confusion: the public key's PEM used as an HMAC secret.
		{"public key as HMAC secret", mintHS(t, string(pemBytes), claims(nil)), 401, "bad_signature"},
		{"malformed", "not.a.jwt", 401, "malformed"},
		{"topic not granted", mintHS(t, privSecret, claims(func(c jwt.MapClaims) { c["sse"] = map[string]any{"subscribe": []string{"/p/other", "/q/**"}} })), 403, "forbidden"},
		{"no claim", mintHS(t, privSecret, claims(func(c jwt.MapClaims) { delete(c, "sse") })), 403, "forbidden"},
	}
	before := sitetest.Scrape(t, adminPort)
	wantCounts := map[string]float64{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var headers []string
			if c.token != "" {
				headers = append(headers, "Authorization: Bearer "+c.token)
			}
			r := s.do(http.MethodGet, path, "", headers...)
			rf := r.refusal(t)
			if r.status != c.status || rf.Reason != c.reason || rf.Error == "" {
				t.Fatalf("answered %d %s, want %d with reason %s", r.status, r.body, c.status, c.reason)
			}
			wantCounts[c.reason]++
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			challenge := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, `Bearer realm="sse"`) {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge", challenge)
			}
			switch {
			case c.status == 403 && (rf.Topic != path || !strings.Contains(challenge, "insufficient_scope")):
				t.Errorf("403 %+v, challenge %q: want the topic named and insufficient_scope", rf, challenge)
			case c.status == 401 && c.reason != "missing" && !strings.Contains(challenge, "invalid_token"):
				t.Errorf("challenge %q, want invalid_token", challenge)
			}
			if c.token != "" && strings.Contains(r.body+challenge, c.token) {
				t.Errorf("the answer repeats the token")
			}
		})
	}
	// The key file's algorithm verifies.
	st := s.subscribe(path, "Authorization: Bearer "+edToken)
	st.close()

	after := sitetest.Scrape(t, adminPort)
	for reason, n := range wantCounts {
		name := `caddy_sse_subscribe_rejects_total{reason="` + reason + `"}`
		if got := after[name] - before[name]; got != n {
			t.Errorf("%s grew by %v, want %v", name, got, n)
		}
	}
	// Every reason is a series before it is first counted.
	for _, reason := range []string{"unknown_key", "missing_exp", "bad_audience"} {
		if _, ok := after[`caddy_sse_subscribe_rejects_total{reason="`+reason+`"}`]; !ok {
			t.Errorf("no series for reason %s", reason)
		}
	}

	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, line := range strings.Split(string(logged), "\n") {
		if strings.Contains(line, "subscriber refused") {
			refused++
			if !strings.Contains(line, `"reason":`) || !strings.Contains(line, path) {
				t.Errorf("debug line without reason or topic: %s", line)
			}
		}
	}
	if refused != len(cases) {
		t.Errorf("%d debug lines say a subscriber was refused, want %d", refused, len(cases))
	}
	for _, c := range cases {
		if c.token != "" && strings.Contains(string(logged), c.token) {
			t.Errorf("%s: the log contains the token", c.name)
		}
	}
}

// A signed URL grants its one topic until its expires (checked in constant
// time, either secret of a rotation verifies), and the stream it opened
// ends then with the expired event.
func TestPrivateSignedURL(t *testing.T) {
	s := startSite(t, `
	sse /p/* {
		subscribe {
			signed_url `+urlSecret+`
			signed_url `+urlSecret2+`
		}`+openPublish+`
	}`)
	path := topic(t, "/p/", "link")
	soon := time.Unix(time.Now().Unix()+3, 0) // 2 to 3 s from now
	later := time.Now().Add(time.Hour)
	cases := []struct {
		name   string
		query  string
		status int
		reason string
	}{
		{"expired", signURL(urlSecret, path, time.Now().Add(-time.Second)), 401, "expired"},
		{"another topic's link", signURL(urlSecret, path+"-other", later), 401, "bad_signature"},
		{"unknown secret", signURL("not-the-secret", path, later), 401, "bad_signature"},
		{"expires changed", strings.Replace(signURL(urlSecret, path, later), "expires=", "expires=1", 1), 401, "bad_signature"},
		{"no sig", "expires=" + strconv.FormatInt(later.Unix(), 10), 401, "malformed"},
		{"sig not hex", "expires=" + strconv.FormatInt(later.Unix(), 10) + "&sig=xyz", 401, "malformed"},
		{"nothing", "", 401, "missing"},
	}
	for _, c := range cases {
		r := s.do(http.MethodGet, path+"?"+c.query, "")
		if rf := r.refusal(t); r.status != c.status || rf.Reason != c.reason {
			t.Errorf("%s: answered %d %s, want %d %s", c.name, r.status, r.body, c.status, c.reason)
		}
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "SignedURL") {
			t.Errorf("%s: WWW-Authenticate %q", c.name, ch)
		}
	}
	// The rotated secret verifies too.
	s.subscribe(path + "?" + signURL(urlSecret2, path, later)).close()

	st := s.subscribe(path + "?" + signURL(urlSecret, path, soon))
	st.await("the position", func() bool { return st.parser.LastEventID != "" })
	id := s.publishID(path, "while valid")
	if e := st.next(); e.ID != id {
		t.Fatalf("got %+v, want %s", e, id)
	}
	if e := st.next(); e.Type != "expired" || e.Data != `{"reason":"credential expired"}` {
		t.Fatalf("got %+v, want the expired event", e)
	}
	if err := st.awaitEnd(); err != io.EOF {
		t.Errorf("the stream ended with %v, want a clean end", err)
	}
	if early := soon.Sub(time.Now()); early > 0 {
		t.Errorf("the stream ended %v before the link expired", early)
	}
}

// Topics matched by public need no credential, and a stale credential sent
// to one breaks nothing; the others still do.
func TestPrivatePublicTopics(t *testing.T) {
	s := startSite(t, privateJWTSite)
	news := topic(t, "/p/news-", "today")
	st := s.subscribe(news, "Cookie: sse_token=stale.garbage.token")
	st.await("the position", func() bool { return st.parser.LastEventID != "" })
	id := s.publishID(news, "headline")
	if e := st.next(); e.ID != id {
		t.Errorf("got %+v, want %s", e, id)
	}
	// `*` stays within a segment.
	if r := s.do(http.MethodGet, "/p/news-a/b", ""); r.status != http.StatusUnauthorized {
		t.Errorf("/p/news-a/b answered %d, want 401", r.status)
	}
	if r := s.do(http.MethodGet, topic(t, "/p/", "private"), ""); r.status != http.StatusUnauthorized {
		t.Errorf("a private topic answered %d, want 401", r.status)
	}
}

// A stream ends when its token expires: the expired event, a clean end.
// The old token is then refused (401, expired); with a refreshed one and
// its last id, the client gets exactly what was published meanwhile.
// Detached (parked, the default) and in the request; package stream tests
// every mode with shared compression too.
func TestPrivateExpiryThenRefreshResumes(t *testing.T) {
	for _, mode := range []struct{ name, options string }{
		{"detached", ""},
		{"in request", "detach off"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			s := startSite(t, `
	sse /p/* {
		`+mode.options+`
		expired_event session_over
		subscribe {
			jwt {
				key `+privSecret+`
			}
		}`+openPublish+`
	}`)
			path := topic(t, "/p/", "feed")
			exp := time.Unix(time.Now().Unix()+3, 0) // 2 to 3 s from now
			old := mintHS(t, privSecret, subscribeClaims(exp, path))
			st := s.subscribe(path, "Cookie: sse_token="+old)
			st.await("the position", func() bool { return st.parser.LastEventID != "" })
			var ids []string
			for i := range 3 {
				ids = append(ids, s.publishID(path, fmt.Sprint("before ", i)))
			}
			got := st.nextN(3)
			sameEvents(t, "before expiry", got, ids, []string{"before 0", "before 1", "before 2"})
			last := got[2].ID

			end := st.next()
			if end.Type != "session_over" || end.Data != `{"reason":"credential expired"}` || end.ID != last {
				t.Fatalf("got %+v, want the session_over event keeping last id %s", end, last)
			}
			if err := st.awaitEnd(); err != io.EOF {
				t.Errorf("the stream ended with %v, want a clean end", err)
			}
			if early := exp.Sub(time.Now()); early > 0 {
				t.Errorf("the stream ended %v before the token expired", early)
			}

			var missed []string
			for i := range 2 {
				missed = append(missed, s.publishID(path, fmt.Sprint("missed ", i)))
			}
			r := s.do(http.MethodGet, path, "", "Cookie: sse_token="+old, "Last-Event-ID: "+last)
			if rf := r.refusal(t); r.status != http.StatusUnauthorized || rf.Reason != "expired" {
				t.Errorf("the expired token answered %d %s, want 401 expired", r.status, r.body)
			}

			fresh := mintHS(t, privSecret, subscribeClaims(time.Now().Add(time.Hour), path))
			st = s.subscribe(path, "Cookie: sse_token="+fresh, "Last-Event-ID: "+last)
			sameEvents(t, "after refresh", st.nextN(2), missed, []string{"missed 0", "missed 1"})
			st.listen(200 * time.Millisecond)
			if len(st.queue) != 0 {
				t.Errorf("more events after the missed ones: %+v", st.queue)
			}
		})
	}
}

// Publishers may present a JWT whose sse.publish grants the topic, in the
// Authorization header; beside a bearer token, either passes. A valid
// token that does not grant the topic is a 403; DELETE takes the same.
func TestPrivatePublishJWT(t *testing.T) {
	adminPort := testcaddy.FreePort(t)
	s := startPrivateSite(t, fmt.Sprintf("admin 127.0.0.1:%d", adminPort), `
	sse /p/* {
		publish {
			bearer static-publisher-token
			jwt {
				key `+privSecret+`
			}
		}
	}`)
	path := topic(t, "/p/", "jobs")
	publisher := mintHS(t, privSecret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": map[string]any{"publish": []string{"/p/**"}}})
	narrow := mintHS(t, privSecret, jwt.MapClaims{"sse": map[string]any{"publish": []string{"/p/other"}}})
	subscriberOnly := mintHS(t, privSecret, subscribeClaims(time.Time{}, "/p/**"))
	before := sitetest.Scrape(t, adminPort)

	st := s.subscribe(path + "?lastEventId=earliest")
	id := s.publishID(path, "by jwt", "Authorization: Bearer "+publisher)
	id2 := s.publishID(path, "by bearer", "Authorization: Bearer static-publisher-token")
	sameEvents(t, "published", st.nextN(2), []string{id, id2}, []string{"by jwt", "by bearer"})

	for _, c := range []struct {
		name    string
		headers []string
		status  int
		reason  string
	}{
		{"token for another topic", []string{"Authorization: Bearer " + narrow}, 403, "forbidden"},
		{"subscriber's token", []string{"Authorization: Bearer " + subscriberOnly}, 403, "forbidden"},
		{"bad token", []string{"Authorization: Bearer " + mintHS(t, "wrong-secret-wrong-secret-wrong-1234", jwt.MapClaims{})}, 401, ""},
		{"nothing", nil, 401, ""},
		// A cookie would let any page the user visits publish: not read.
		{"cookie", []string{"Cookie: sse_token=" + publisher}, 401, ""},
	} {
		r := s.do(http.MethodPost, path, "refused", c.headers...)
		if r.status != c.status {
			t.Errorf("%s: answered %d %s, want %d", c.name, r.status, r.body, c.status)
			continue
		}
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", c.name, ch)
		}
		if c.status == 403 {
			if rf := r.refusal(t); rf.Reason != c.reason || rf.Topic != path {
				t.Errorf("%s: %+v, want reason %s naming %s", c.name, rf, c.reason, path)
			}
		} else if msg := r.errorMessage(); !strings.Contains(msg, "jwt:") || !strings.Contains(msg, "bearer:") {
			t.Errorf("%s: 401 says %q, want each scheme's reason", c.name, msg)
		}
	}
	if r := s.do(http.MethodDelete, path, "", "Authorization: Bearer "+narrow); r.status != http.StatusForbidden {
		t.Errorf("DELETE with a token for another topic answered %d", r.status)
	}
	if r := s.do(http.MethodDelete, path, "", "Authorization: Bearer "+publisher); r.status != http.StatusNoContent {
		t.Errorf("DELETE with the publisher's token answered %d %s", r.status, r.body)
	}
	if e := st.next(); e.Type != "close" {
		t.Errorf("got %+v, want the close event", e)
	}
	after := sitetest.Scrape(t, adminPort)
	for name, want := range map[string]float64{
		`caddy_sse_publish_rejects_total{reason="forbidden"}`: 3,
		`caddy_sse_publish_rejects_total{reason="auth"}`:      3,
	} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s grew by %v, want %v", name, got, want)
		}
	}
}

// Tokens minted for a Mercure hub work as they are with claim
// mercure.subscribe / mercure.publish, from Mercure's cookie: no exp
// needed, "*" grants every topic, a selector grants the topic of that exact
// name, and URI templates are not expanded.
func TestPrivateMercureTokens(t *testing.T) {
	s := startSite(t, `
	sse /.well-known/mercure/* {
		subscribe {
			jwt {
				key `+privSecret+`
				token header
				token cookie mercureAuthorization
				token query authorization
				claim mercure.subscribe
			}
		}
		publish {
			jwt {
				key `+privSecret+`
				claim mercure.publish
			}
		}
	}
	sse /.well-known/mercure {
		topic {query.topic}
		subscribe {
			jwt {
				key `+privSecret+`
				token cookie mercureAuthorization
				claim mercure.subscribe
			}
		}
		publish {
			jwt {
				key `+privSecret+`
				claim mercure.publish
			}
		}
	}`)
	books := "/.well-known/mercure/books/1"
	mercure := func(sub, pub []string) string {
		return mintHS(t, privSecret, jwt.MapClaims{"mercure": map[string]any{"subscribe": sub, "publish": pub}})
	}
	reader := mercure([]string{books, "https://example.com/books/1", "https://example.com/books/{id}"}, nil)
	all := mercure([]string{"*"}, nil)
	publisher := mercure(nil, []string{"*"})

	st := s.subscribe(books, "Cookie: mercureAuthorization="+reader)
	st2 := s.subscribe("/.well-known/mercure/anything?authorization=" + all)
	st.await("the position", func() bool { return st.parser.LastEventID != "" })
	st2.await("the position", func() bool { return st2.parser.LastEventID != "" })
	id := s.publishID(books, `{"title":"Dune"}`, "Authorization: Bearer "+publisher)
	if e := st.next(); e.ID != id {
		t.Errorf("got %+v, want %s", e, id)
	}
	id = s.publishID("/.well-known/mercure/anything", "x", "Authorization: Bearer "+publisher)
	if e := st2.next(); e.ID != id {
		t.Errorf("the * token got %+v, want %s", e, id)
	}
	for _, p := range []string{"/.well-known/mercure/books/2", "/.well-known/mercure/books/{id}"} {
		if r := s.do(http.MethodGet, p, "", "Cookie: mercureAuthorization="+reader); r.status != http.StatusForbidden {
			t.Errorf("%s answered %d, want 403", p, r.status)
		}
	}
	if r := s.do(http.MethodPost, books, "x", "Authorization: Bearer "+reader); r.status != http.StatusForbidden {
		t.Errorf("a subscriber's Mercure token published: %d", r.status)
	}

	// Mercure's own URLs: the topic is the IRI in ?topic=, named as the
	// token's selector names it.
	iri := "/.well-known/mercure?topic=" + url.QueryEscape("https://example.com/books/1")
	st3 := s.subscribe(iri, "Cookie: mercureAuthorization="+reader)
	st3.await("the position", func() bool { return st3.parser.LastEventID != "" })
	id = s.publishID(iri, "by IRI", "Authorization: Bearer "+publisher)
	if e := st3.next(); e.ID != id || e.Data != "by IRI" {
		t.Errorf("got %+v, want %s", e, id)
	}
	other := "/.well-known/mercure?topic=" + url.QueryEscape("https://example.com/books/2")
	if r := s.do(http.MethodGet, other, "", "Cookie: mercureAuthorization="+reader); r.status != http.StatusForbidden {
		t.Errorf("%s answered %d, want 403 (templates are not expanded)", other, r.status)
	}
}

// With cors, preflights are answered (204, methods, headers, max age) for
// an allowed origin and allow nothing for another; every answer to an
// allowed origin, refusals included, carries Access-Control-Allow-Origin
// (echoed with credentials), Allow-Credentials, Vary: Origin and the
// exposed WWW-Authenticate. Without cors, no answer carries any of it.
func TestCORSPreflightAndRefusals(t *testing.T) {
	const app = "http://app.test:3000"
	s := startSite(t, `
	sse /c/* {
		subscribe {
			signed_url `+urlSecret+`
			public /c/public-*
		}
		publish {
			bearer cors-token
			hmac_sha256 cors-hmac-secret X-Signature
		}
		cors {
			origins `+app+` https://other.test
			credentials
		}
	}
	sse /open/* {
		cors {
			origins *
		}
	}
	sse /none/* {`+openPublish+`
	}`)
	path := topic(t, "/c/", "x")

	pre := s.do(http.MethodOptions, path, "", "Origin: "+app, "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: authorization, content-type")
	if pre.status != http.StatusNoContent {
		t.Fatalf("preflight answered %d %s", pre.status, pre.body)
	}
	for name, want := range map[string]string{
		"Access-Control-Allow-Origin":      app,
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Max-Age":           "600",
		"Vary":                             "Origin",
	} {
		if got := pre.header.Get(name); got != want {
			t.Errorf("preflight %s: %q, want %q", name, got, want)
		}
	}
	if m := pre.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") || !strings.Contains(m, "GET") {
		t.Errorf("Allow-Methods %q", m)
	}
	allowed := strings.ToLower(pre.header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"authorization", "content-type", "last-event-id", "x-signature"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("Allow-Headers %q lacks %s", allowed, h)
		}
	}
	evil := s.do(http.MethodOptions, path, "", "Origin: https://evil.test", "Access-Control-Request-Method: POST")
	if evil.status != http.StatusNoContent || evil.header.Get("Access-Control-Allow-Origin") != "" || evil.header.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight from another origin: %d %v", evil.status, evil.header)
	}

	checkCORS := func(what string, r reply, status int) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s: answered %d %s, want %d", what, r.status, r.body, status)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != app {
			t.Errorf("%s: Allow-Origin %q, want %q", what, got, app)
		}
		if r.header.Get("Access-Control-Allow-Credentials") != "true" || !slices.Contains(r.header.Values("Vary"), "Origin") {
			t.Errorf("%s: headers %v", what, r.header)
		}
		if exp := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "WWW-Authenticate") {
			t.Errorf("%s: Expose-Headers %q", what, exp)
		}
	}
	checkCORS("refused subscribe", s.do(http.MethodGet, path, "", "Origin: "+app), 401)
	checkCORS("refused publish", s.do(http.MethodPost, path, "x", "Origin: "+app), 401)
	checkCORS("bad method", s.do(http.MethodPut, path, "x", "Origin: "+app), 405)
	checkCORS("publish", s.do(http.MethodPost, path, "x", "Origin: "+app, "Authorization: Bearer cors-token"), 200)
	st := s.subscribe(path+"?"+signURL(urlSecret, path, time.Now().Add(time.Hour)), "Origin: "+app)
	if got := st.resp.Header.Get("Access-Control-Allow-Origin"); got != app {
		t.Errorf("stream: Allow-Origin %q", got)
	}
	st.close()
	if r := s.do(http.MethodGet, path, "", "Origin: https://evil.test"); r.header.Get("Access-Control-Allow-Origin") != "" || r.status != 401 {
		t.Errorf("another origin: %d %v", r.status, r.header)
	}

	open := s.do(http.MethodOptions, "/open/x", "", "Origin: https://anyone.test", "Access-Control-Request-Method: GET")
	if open.status != 204 || open.header.Get("Access-Control-Allow-Origin") != "*" || open.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("origins * without credentials: %d %v", open.status, open.header)
	}

	for _, r := range []reply{
		s.do(http.MethodOptions, "/none/x", "", "Origin: "+app, "Access-Control-Request-Method: POST"),
		s.do(http.MethodPost, "/none/x", "x", "Origin: "+app),
	} {
		for name := range r.header {
			if strings.HasPrefix(name, "Access-Control-") {
				t.Errorf("without cors, an answer (%d) carries %s", r.status, name)
			}
		}
	}
}

// forwardAuthRecipe is the README's forward_auth recipe, with BACKEND for
// the address of the application that decides.
const forwardAuthRecipe = `
	@subscribe method GET
	forward_auth @subscribe BACKEND {
		uri /sse-auth
	}
	sse /events/* {
		publish {
			bearer {env.SSE_TOKEN}
		}
	}`

// The README's forward_auth recipe: a backend that knows the session
// cookie decides per topic from X-Forwarded-Uri; publishing (POST) is not
// sent to it.
func TestPrivateForwardAuthRecipe(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("X-Forwarded-Method")+" "+r.Header.Get("X-Forwarded-Uri"))
		mu.Unlock()
		c, err := r.Cookie("session")
		if err != nil || c.Value != "alice-session" {
			http.Error(w, `{"error":"log in first"}`, http.StatusUnauthorized)
			return
		}
		u, err := url.Parse(r.Header.Get("X-Forwarded-Uri"))
		if err != nil || !strings.HasPrefix(u.Path, "/events/users/alice/") {
			http.Error(w, `{"error":"not yours"}`, http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(backend.Close)
	t.Setenv("SSE_TOKEN", "recipe-token")
	s := startSite(t, strings.Replace(forwardAuthRecipe, "BACKEND", backend.Listener.Addr().String(), 1))

	mine := "/events/users/alice/" + strings.ReplaceAll(t.Name(), "/", "-")
	st := s.subscribe(mine+"?lastEventId=earliest", "Cookie: session=alice-session")
	id := s.publishID(mine, "for alice", "Authorization: Bearer recipe-token")
	if e := st.next(); e.ID != id {
		t.Errorf("got %+v, want %s", e, id)
	}
	if r := s.do(http.MethodGet, mine, ""); r.status != http.StatusUnauthorized {
		t.Errorf("no session: %d", r.status)
	}
	if r := s.do(http.MethodGet, "/events/users/bob/inbox", "", "Cookie: session=alice-session"); r.status != http.StatusForbidden {
		t.Errorf("another user's topic: %d", r.status)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range asked {
		if !strings.HasPrefix(a, "GET /events/") {
			t.Errorf("the backend was asked %q; only subscriptions go to it", a)
		}
	}
	if len(asked) != 3 {
		t.Errorf("the backend was asked %d times (%q), want 3", len(asked), asked)
	}
	if !strings.Contains(asked[0], "lastEventId=earliest") {
		t.Errorf("X-Forwarded-Uri %q lacks the query", asked[0])
	}
}

// Mistakes in the new blocks name the directive and the line; configs that
// could not work fail to provision, saying why.
func TestPrivateCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name  string
		block string // the sse directive is on line 2
		line  int
		says  string
	}{
		{"unknown subscribe option", "sse {\n\tsubscribe {\n\t\tbogus 1\n\t}\n}", 4, `subscribe: unrecognized option "bogus"`},
		{"unknown jwt option", "sse {\n\tsubscribe {\n\t\tjwt {\n\t\t\tsecret x\n\t\t}\n\t}\n}", 5, `jwt: unrecognized option "secret"`},
		{"bad token source", "sse {\n\tsubscribe {\n\t\tjwt {\n\t\t\ttoken body\n\t\t}\n\t}\n}", 5, "jwt: token takes header, cookie <name> or query <name>"},
		{"public without pattern", "sse {\n\tsubscribe {\n\t\tpublic\n\t}\n}", 4, "subscribe: public: missing pattern"},
		{"subscribe twice", "sse {\n\tsubscribe {\n\t\tpublic /a\n\t}\n\tsubscribe {\n\t\tpublic /b\n\t}\n}", 6, `sse: option "subscribe" given twice`},
		{"publish jwt twice", "sse {\n\tpublish {\n\t\tjwt {\n\t\t\tkey a\n\t\t}\n\t\tjwt {\n\t\t\tkey b\n\t\t}\n\t}\n}", 7, `publish: option "jwt" given twice`},
		{"cors without origin", "sse {\n\tcors {\n\t\torigins\n\t}\n}", 4, "cors: origins: missing origin"},
		{"unknown cors option", "sse {\n\tcors {\n\t\torigins *\n\t\tmethods GET\n\t}\n}", 5, `cors: unrecognized option "methods"`},
		{"expired_event without name", "sse {\n\texpired_event\n}", 3, "expired_event: missing value"},
		{"publish jwt option", "sse {\n\tpublish {\n\t\tjwt {\n\t\t\tkey file\n\t\t}\n\t}\n}", 5, "jwt: key takes <secret> or file <pem>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := "http://localhost:8080 {\n\t" + strings.ReplaceAll(c.block, "\n", "\n\t") + "\n}\n"
			_, err := adapt(text)
			if err == nil {
				t.Fatalf("adapted without error:\n%s", text)
			}
			msg := err.Error()
			for _, want := range []string{"parsing caddyfile tokens for 'sse'", c.says} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if at := ", at Caddyfile:" + strconv.Itoa(c.line); !strings.HasSuffix(msg, at) {
				t.Errorf("error %q does not end %q", msg, at)
			}
		})
	}

	provisioning := []struct {
		name, block, says string
	}{
		{"empty subscribe", "subscribe {\n}", "configure jwt, signed_url or public"},
		{"jwt without key", "subscribe {\njwt {\nclaim a.b\n}\n}", "jwt: configure at least one key"},
		{"origin with a path", "cors {\norigins https://app.test/\n}", "is not of the form scheme://host[:port]"},
		{"missing key file", "subscribe {\njwt {\nkey file /nonexistent/key.pem\n}\n}", "/nonexistent/key.pem"},
		{"publish jwt and allow_unauthenticated", "publish {\nallow_unauthenticated\njwt {\nkey k\n}\n}", "allow_unauthenticated contradicts"},
		{"expired_event not a name", "expired_event " + strings.Repeat("x", 65), "expired_event"},
	}
	for _, c := range provisioning {
		t.Run(c.name, func(t *testing.T) {
			err := testcaddy.ValidateCaddyfile("http://localhost:8080 {\nsse {\n" + c.block + "\n}\n}\n")
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("provisioning said %v, want it to say %q", err, c.says)
			}
		})
	}
	// A publish block whose only scheme is jwt provisions.
	if err := testcaddy.ValidateCaddyfile("http://localhost:8080 {\nsse {\npublish {\njwt {\nkey k\n}\n}\n}\n}\n"); err != nil {
		t.Errorf("publish with only jwt: %v", err)
	}
}

// logFilterRecipe is the README's access log recipe that keeps credentials
// sent in the query out of the log (Caddy already redacts the Cookie and
// Authorization headers); LOGFILE is where it writes.
const logFilterRecipe = `
	log {
		output file LOGFILE {
			roll_disabled
		}
		format filter {
			request>uri query {
				replace token REDACTED
				replace sig REDACTED
				replace authorization REDACTED
			}
		}
	}`

// With the recipe, no credential reaches the access log: not a token in
// the query or a cookie, not a signed URL's sig.
func TestPrivateLogFilterRecipe(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	s := startSite(t, strings.Replace(logFilterRecipe, "LOGFILE", logPath, 1)+`
	sse /p/* {
		subscribe {
			jwt {
				key `+privSecret+`
			}
			signed_url `+urlSecret+`
		}
	}`)
	path := topic(t, "/p/", "logged")
	inQuery := mintHS(t, privSecret, subscribeClaims(time.Now().Add(time.Hour), path, "/p/x"))
	inCookie := mintHS(t, privSecret, subscribeClaims(time.Now().Add(time.Hour), path))
	signed := signURL(urlSecret, path, time.Now().Add(time.Hour))
	sig := signed[strings.Index(signed, "sig=")+4:]
	s.subscribe(path + "?token=" + inQuery + "&lastEventId=earliest").close()
	s.subscribe(path, "Cookie: sse_token="+inCookie).close()
	s.subscribe(path + "?" + signed).close()
	s.do(http.MethodGet, path+"?token=bad."+inQuery, "")

	var logged []byte
	deadline := time.Now().Add(waitLimit)
	for strings.Count(string(logged), `"uri":`) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the access log has %d requests:\n%s", strings.Count(string(logged), `"uri":`), logged)
		}
		time.Sleep(20 * time.Millisecond)
		logged, _ = os.ReadFile(logPath)
	}
	for name, secret := range map[string]string{"query token": inQuery, "cookie token": inCookie, "sig": sig} {
		if strings.Contains(string(logged), secret) {
			t.Errorf("the access log contains the %s:\n%s", name, logged)
		}
	}
	if !strings.Contains(string(logged), "token=REDACTED") || !strings.Contains(string(logged), "sig=REDACTED") ||
		!strings.Contains(string(logged), "lastEventId=earliest") {
		t.Errorf("the access log does not show the redacted query:\n%s", logged)
	}
}
