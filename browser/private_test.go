package browser_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// Private topics in Chromium (issue 14): cookies for EventSource on the
// same origin, withCredentials from another origin through cors, a 401
// that EventSource takes as final, and a cross-origin fetch POST with a
// JWT that passes its preflight.

const privateKey = "browser-private-topics-secret-0123456789"

// mint signs claims with HS256, as the application's backend would.
func mint(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(privateKey))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func readToken(exp time.Time, patterns ...string) jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "exp": exp.Unix(), "sse": map[string]any{"subscribe": patterns}}
}

// privateSites runs two origins in one Caddy: app, which serves the pages,
// the private topics /t/* and /login and /refresh (each sets the sse_token
// cookie, HttpOnly, to the token given), and other, another origin (a
// second port) serving the same pages, allowed by cors with credentials.
type privateSites struct {
	*server
	other string // origin of the other site
}

func startPrivateSites(t *testing.T, loginToken, refreshToken string) *privateSites {
	t.Helper()
	root, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	appPort, otherPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	s := &privateSites{server: &server{t: t, root: root, port: appPort}}
	s.origin = fmt.Sprintf("http://127.0.0.1:%d", appPort)
	s.other = fmt.Sprintf("http://127.0.0.1:%d", otherPort)
	tr := testcaddy.InsecureTransport()
	tr.DisableKeepAlives = true
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	testcaddy.Load(t, testcaddy.Format(fmt.Sprintf(`{
	admin off
}

%[1]s {
	header /login Set-Cookie "sse_token=%[3]s; Path=/; HttpOnly; SameSite=Lax"
	respond /login 204
	header /refresh Set-Cookie "sse_token=%[4]s; Path=/; HttpOnly; SameSite=Lax"
	respond /refresh 204
	sse /t/* {
		retry 1500ms
		subscribe {
			jwt {
				key %[5]s
			}
		}
		publish {
			bearer browser-token
			jwt {
				key %[5]s
			}
		}
		cors {
			origins %[2]s
			credentials
		}
	}
	root * %[6]s
	file_server
}

%[2]s {
	root * %[6]s
	file_server
}
`, s.origin, s.other, loginToken, refreshToken, privateKey, root)))
	return s
}

// setCookie gives the browser an HttpOnly sse_token cookie for origin, as
// the application's login would.
func (b *browser) setCookie(origin, token string) {
	b.t.Helper()
	httpOnly := true
	if _, err := chromedp.Call(b.ctx, network.SetCookie, network.SetCookieParams{
		Name: "sse_token", Value: token, URL: origin + "/", Path: "/", HTTPOnly: &httpOnly,
		SameSite: network.CookieSameSiteLax,
	}); err != nil {
		b.t.Fatalf("setting the cookie: %v", err)
	}
}

func has(kind string) func([]seen) bool {
	return func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == kind })
	}
}

// Same origin: the login's HttpOnly cookie authorizes the EventSource.
// When the token expires the page gets the expired event, refreshes its
// cookie, and EventSource reconnects by itself with Last-Event-ID: the
// events published meanwhile arrive, each once, nothing missing.
func TestBrowserCookieSameOriginExpiryAndRefresh(t *testing.T) {
	b := newBrowser(t)
	exp := time.Unix(time.Now().Unix()+5, 0)
	const topic = "/t/cookie"
	s := startPrivateSites(t, mint(t, readToken(exp, topic)), mint(t, readToken(time.Now().Add(time.Hour), topic)))
	b.open(s.origin + "/private.html")
	b.do(`fetch("/login")`)
	b.do(`window.refreshURL = "/refresh"`)
	// The fetch sets the cookie; give it the time to land.
	deadline := time.Now().Add(waitLimit)
	for b.evalInt(`performance.getEntriesByName(location.origin + "/login").length`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the login never completed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.do(`subscribe("a", "` + topic + `")`)
	b.waitFor("the stream open", has("open"))
	want := []string{"1", "2"}
	var ids []string
	for _, d := range want {
		ids = append(ids, s.publish(topic, d))
	}
	b.waitForMessages("a", want)

	b.waitFor("the expired event", has("expired"))
	if time.Now().Before(exp) {
		t.Errorf("the expired event came %v before the token's exp", exp.Sub(time.Now()))
	}
	// Published while the page is away (its reconnection waits for retry).
	for _, d := range []string{"3", "4"} {
		want = append(want, d)
		ids = append(ids, s.publish(topic, d))
	}
	b.waitForMessages("a", want)
	got := b.seen()
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Kind)
	}
	if n := strings.Count(strings.Join(kinds, " "), "open"); n != 2 {
		t.Errorf("the page saw %v: want two opens (the first stream, the reconnection)", kinds)
	}
	if !slices.Contains(kinds, "refreshed") {
		t.Errorf("the page saw %v, no refresh", kinds)
	}
	var gotIDs []string
	for _, e := range got {
		if e.Kind == "message" && e.ID != nil {
			gotIDs = append(gotIDs, *e.ID)
		}
	}
	if !slices.Equal(gotIDs, ids) {
		t.Errorf("message ids %v, want %v", gotIDs, ids)
	}
	if sent := b.lastEventIDsSent(); !slices.Equal(sent, []string{ids[1]}) {
		t.Errorf("requests carried Last-Event-ID %q, want one reconnection with the id of event 2 (%s)", sent, ids[1])
	}
	for _, r := range b.responsesFor(topic) {
		if r.Response.Status != http.StatusOK {
			t.Errorf("a stream request answered %d", r.Response.Status)
		}
	}
}

// Another origin: a page there reads the private topic with
// new EventSource(url, {withCredentials: true}) and the user's cookie,
// through cors with credentials. Without withCredentials the cookie is not
// sent: 401, and the EventSource is CLOSED.
func TestBrowserCrossOriginWithCredentials(t *testing.T) {
	b := newBrowser(t)
	const topic = "/t/cross"
	s := startPrivateSites(t, "unused", "unused")
	b.setCookie(s.origin, mint(t, readToken(time.Now().Add(time.Hour), topic)))
	b.open(s.other + "/private.html")
	b.do(fmt.Sprintf(`subscribe("with", %q, {withCredentials: true})`, s.origin+topic))
	b.do(fmt.Sprintf(`subscribe("without", %q)`, s.origin+topic))
	b.waitFor("the credentialed stream open", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Name == "with" && e.Kind == "open" })
	})
	s.publish(topic, "cross-origin")
	b.waitForMessages("with", []string{"cross-origin"})
	b.waitFor("the other EventSource CLOSED", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Name == "without" && e.Kind == "error" && e.State == 2 })
	})
	if got := b.messages("without"); len(got) != 0 {
		t.Errorf("without credentials the page read %v", got)
	}
	var statuses []int64
	for _, r := range b.responsesFor(topic) {
		statuses = append(statuses, r.Response.Status)
		if r.Response.Status == http.StatusOK {
			if got := header(r.Response.Headers, "Access-Control-Allow-Origin"); got != s.other {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, s.other)
			}
			if got := header(r.Response.Headers, "Access-Control-Allow-Credentials"); got != "true" {
				t.Errorf("Access-Control-Allow-Credentials %q", got)
			}
		}
	}
	slices.Sort(statuses)
	if !slices.Equal(statuses, []int64{http.StatusOK, http.StatusUnauthorized}) {
		t.Errorf("stream responses %v, want one 200 and one 401", statuses)
	}
}

// A 401 is final for EventSource: readyState CLOSED, and no request
// follows, though the retry delay is 1.5s.
func TestBrowserUnauthorizedClosesEventSource(t *testing.T) {
	b := newBrowser(t)
	const topic = "/t/denied"
	s := startPrivateSites(t, "unused", "unused")
	b.open(s.origin + "/private.html")
	b.do(`subscribe("a", "` + topic + `")`)
	b.waitFor("the error with readyState CLOSED", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "error" && e.State == 2 })
	})
	if st := b.evalInt(`state("a")`); st != 2 {
		t.Fatalf("readyState %d, want 2 (CLOSED)", st)
	}
	resps := b.responsesFor(topic)
	if len(resps) != 1 || resps[0].Response.Status != http.StatusUnauthorized {
		t.Fatalf("responses %d, want one 401", len(resps))
	}
	if got := header(resps[0].Response.Headers, "WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("WWW-Authenticate %q", got)
	}
	requests := b.requestsFor(topic)
	time.Sleep(6 * time.Second) // four retry delays: nothing may happen
	if after := b.requestsFor(topic); after != requests {
		t.Errorf("%d more requests after the 401; EventSource must stop", after-requests)
	}
}

// A page on another origin publishes with fetch, a JWT in the
// Authorization header: the browser's preflight is answered, the POST
// appends, and the page can read the answer; with a token for another
// topic it reads the 403 and why.
func TestBrowserCrossOriginFetchPublishWithJWT(t *testing.T) {
	b := newBrowser(t)
	const topic = "/t/published-cross"
	s := startPrivateSites(t, "unused", "unused")
	b.setCookie(s.origin, mint(t, readToken(time.Now().Add(time.Hour), topic)))
	publisher := mint(t, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": map[string]any{"publish": []string{"/t/**"}}})
	narrow := mint(t, jwt.MapClaims{"sse": map[string]any{"publish": []string{"/t/other"}}})
	b.open(s.other + "/private.html")
	b.do(fmt.Sprintf(`subscribe("a", %q, {withCredentials: true})`, s.origin+topic))
	b.waitFor("the stream open", has("open"))
	b.do(fmt.Sprintf(`send(%q, "POST", {"Authorization": "Bearer %s", "Content-Type": "application/json"}, '{"from":"page"}')`, s.origin+topic, publisher))
	b.waitForMessages("a", []string{`{"from":"page"}`})
	b.do(fmt.Sprintf(`send(%q, "POST", {"Authorization": "Bearer %s"}, "refused")`, s.origin+topic, narrow))

	var answers []struct {
		Status    int
		Body      string
		Challenge *string
	}
	deadline := time.Now().Add(waitLimit)
	for len(answers) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the page read %d answers", len(answers))
		}
		time.Sleep(50 * time.Millisecond)
		if err := json.Unmarshal([]byte(b.evalString(`JSON.stringify(window.answers)`)), &answers); err != nil {
			t.Fatal(err)
		}
	}
	var ok struct {
		Topic string
		IDs   []string
	}
	if answers[0].Status != http.StatusOK || json.Unmarshal([]byte(answers[0].Body), &ok) != nil || ok.Topic != topic || len(ok.IDs) != 1 {
		t.Errorf("the page read %+v for its publish, want 200 with the ids", answers[0])
	}
	var refused struct{ Reason, Topic string }
	if answers[1].Status != http.StatusForbidden || json.Unmarshal([]byte(answers[1].Body), &refused) != nil ||
		refused.Reason != "forbidden" || refused.Topic != topic {
		t.Errorf("the page read %+v for the refused publish, want 403 naming the topic", answers[1])
	}
	if answers[1].Challenge == nil || !strings.Contains(*answers[1].Challenge, "insufficient_scope") {
		t.Errorf("the page could not read WWW-Authenticate: %v", answers[1].Challenge)
	}
	// The preflight, as the browser reported it (once: the second POST's
	// headers are covered by the cached answer, Access-Control-Max-Age).
	preflights := 0
	b.mu.Lock()
	for _, r := range b.requests {
		if r.Request.Method == http.MethodOptions && strings.Contains(r.Request.URL, topic) {
			preflights++
		}
	}
	b.mu.Unlock()
	if preflights == 0 {
		t.Error("Chromium reported no preflight (OPTIONS) for the cross-origin POST")
	}
}
