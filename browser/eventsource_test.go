// Package browser_test proves the product's promises with a real browser:
// Chromium's EventSource, driven over the DevTools protocol, against a real
// Caddy running this module.
package browser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

const chromiumPath = "/usr/bin/chromium"

// waitLimit bounds every wait for something the page should see: the tests
// assert what arrives, never how fast.
const waitLimit = 20 * time.Second

// seen is one entry of window.seen.
type seen struct {
	Name, Kind string
	Data, ID   *string
	State      int
}

// browser is a headless Chromium with one tab, and the network traffic
// the DevTools protocol reported for it.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu        sync.Mutex
	requests  []*network.EventRequestWillBeSent
	responses []*network.EventResponseReceived
	// extra has the headers as sent on the wire, which include those the
	// network stack adds (Last-Event-ID on an EventSource reconnection).
	extra []*network.EventRequestWillBeSentExtraInfo
	// paused receives the requests the Fetch domain holds (only when a
	// test enables it, see holdRequests).
	paused chan *fetch.EventRequestPaused
}

// newBrowser starts Chromium, or skips (fails in CI) when it is missing.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Chromium is required in CI: %v (apt-get install -y chromium)", err)
		}
		t.Skipf("Chromium not found at %s; install it with: apt-get install -y chromium", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("ignore-certificate-errors", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, paused: make(chan *fetch.EventRequestPaused, 16)}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, e)
		case *network.EventResponseReceived:
			b.responses = append(b.responses, e)
		case *network.EventRequestWillBeSentExtraInfo:
			b.extra = append(b.extra, e)
		case *fetch.EventRequestPaused:
			select {
			case b.paused <- e:
			default:
			}
		}
	}))
	b.ctx = ctx
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	// chromedp enables the network domain on its own; enabling it here says
	// that the tests depend on its events.
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("enabling network events: %v", err)
	}
	return b
}

// holdRequests makes the browser hold every later request whose URL
// matches pattern until the test releases it (fetch.ContinueRequest).
func (b *browser) holdRequests(pattern string) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
		b.t.Fatalf("enabling request interception: %v", err)
	}
}

// nextHeld waits for the next request held by holdRequests.
func (b *browser) nextHeld() *fetch.EventRequestPaused {
	b.t.Helper()
	select {
	case e := <-b.paused:
		return e
	case <-time.After(waitLimit):
		b.t.Fatalf("no request held within %s", waitLimit)
		return nil
	}
}

func (b *browser) release(e *fetch.EventRequestPaused) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID}); err != nil {
		b.t.Fatalf("releasing %s: %v", e.Request.URL, err)
	}
	if _, err := chromedp.Call(b.ctx, fetch.Disable, cdp.Empty{}); err != nil {
		b.t.Fatalf("ending request interception: %v", err)
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("opening %s: %v", url, err)
	}
}

// do runs a statement in the page.
func (b *browser) do(js string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("("+js+", true)")); err != nil {
		b.t.Fatalf("running %s: %v", js, err)
	}
}

func (b *browser) evalString(js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) evalInt(js string) int {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) seen() []seen {
	b.t.Helper()
	raw := b.evalString(`JSON.stringify(window.seen)`)
	var out []seen
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		b.t.Fatal(err)
	}
	return out
}

// messages returns the data of the message events name received.
func (b *browser) messages(name string) []string {
	b.t.Helper()
	return messages(b.seen(), name)
}

// messages returns the data of the message events name received in events.
func messages(events []seen, name string) []string {
	var data []string
	for _, s := range events {
		if s.Name == name && s.Kind == "message" && s.Data != nil {
			data = append(data, *s.Data)
		}
	}
	return data
}

// waitFor polls the page until ok holds.
func (b *browser) waitFor(what string, ok func([]seen) bool) []seen {
	b.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s := b.seen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the page never saw %s; it saw %s", what, describe(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForOpen waits until the page's EventSources have opened n times in
// all.
func (b *browser) waitForOpen(n int) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%d streams open", n), func(events []seen) bool {
		open := 0
		for _, e := range events {
			if e.Kind == "open" {
				open++
			}
		}
		return open == n
	})
}

func (b *browser) waitForMessages(name string, want []string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%s receive %v", name, want), func(events []seen) bool {
		return slices.Equal(messages(events, name), want)
	})
}

// responsesFor returns the responses to requests whose URL contains part.
func (b *browser) responsesFor(part string) []*network.EventResponseReceived {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*network.EventResponseReceived
	for _, r := range b.responses {
		if strings.Contains(r.Response.URL, part) {
			out = append(out, r)
		}
	}
	return out
}

func (b *browser) requestsFor(part string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, r := range b.requests {
		if strings.Contains(r.Request.URL, part) {
			n++
		}
	}
	return n
}

// header returns the value of the header name, in any case, or "".
func header(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

func describe(s []seen) string {
	var parts []string
	for _, e := range s {
		d := ""
		if e.Data != nil {
			d = *e.Data
		}
		parts = append(parts, fmt.Sprintf("%s:%s(%q)", e.Name, e.Kind, d))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// server is a Caddy in this process serving the test page
// (testdata/index.html) and the sse handler for /t/*.
type server struct {
	t      *testing.T
	origin string // scheme://host:port
	root   string
	port   int
	client *http.Client
	global string // extra global options
}

// caddyfile renders a site serving the page from root and sse for /t/*
// with the given options.
func (s *server) caddyfile(scheme, site, sseOptions string) string {
	return testcaddy.Format(fmt.Sprintf(`{
	admin off
	skip_install_trust
	local_certs
	default_sni 127.0.0.1
%s}

%s://127.0.0.1:%d {
	%s
	sse /t/* {
		publish {
			bearer browser-token
		}
		%s
	}
	root * %s
	file_server
}
`, s.global, scheme, s.port, site, sseOptions, s.root))
}

func startServer(t *testing.T, scheme, site, sseOptions string) *server {
	t.Helper()
	return startServerWith(t, "", scheme, site, sseOptions)
}

// startServerWith is startServer with extra global options.
func startServerWith(t *testing.T, global, scheme, site, sseOptions string) *server {
	t.Helper()
	root, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, root: root, port: testcaddy.FreePort(t), global: global}
	s.origin = fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
	// A connection per publish: a kept-alive connection to a server that a
	// reload is shutting down can be reset under a POST, which net/http
	// does not retry.
	tr := testcaddy.InsecureTransport()
	tr.DisableKeepAlives = true
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	testcaddy.Load(t, s.caddyfile(scheme, site, sseOptions))
	if scheme == "https" {
		// Caddy issues the internal certificate in the background: wait
		// until a handshake succeeds before the browser tries.
		deadline := time.Now().Add(waitLimit)
		for {
			resp, err := s.client.Get(s.origin + "/")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("https site not ready: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return s
}

// publish appends one event and returns its id.
func (s *server) publish(topic, data string) string {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.origin+topic, strings.NewReader(data))
	req.Header.Set("Authorization", "Bearer browser-token")
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("publishing: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("publishing answered %s: %s", resp.Status, body)
	}
	var res struct{ IDs []string }
	if err := json.Unmarshal(body, &res); err != nil || len(res.IDs) != 1 {
		s.t.Fatalf("publish answer %s: %v", body, err)
	}
	return res.IDs[0]
}

func (s *server) closeTopic(topic string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, s.origin+topic, nil)
	req.Header.Set("Authorization", "Bearer browser-token")
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		s.t.Fatalf("DELETE answered %s", resp.Status)
	}
}

// Scenario 1: through compression, each event reaches the page before the
// next is published: Caddy's encode (a compressor per stream) and the
// module's shared compression (each event compressed once).
func TestCompressedStreamDeliversEachEventAtOnce(t *testing.T) {
	cases := []struct {
		name, site, sse, wantEncoding string
	}{
		{"encode zstd gzip", "encode zstd gzip", "", "zstd"},
		{"encode gzip", "encode gzip", "", "gzip"},
		{"compress gzip", "encode zstd gzip", "compress gzip", "gzip"},
		{"compress zstd", "encode zstd gzip", "compress zstd gzip", "zstd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t)
			s := startServer(t, "http", tc.site, tc.sse)
			b.open(s.origin + "/")
			b.do(`subscribe("a", "/t/compressed")`)
			b.waitFor("the stream open", func(events []seen) bool {
				return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "open" })
			})
			var want []string
			for i := range 5 {
				want = append(want, fmt.Sprintf(`{"n":%d,"padding":"%s"}`, i, strings.Repeat("x", 100)))
				s.publish("/t/compressed", want[i])
				b.waitForMessages("a", want)
			}
			resps := b.responsesFor("/t/compressed")
			if len(resps) == 0 {
				t.Fatal("no response for the stream seen over CDP")
			}
			if got := header(resps[0].Response.Headers, "Content-Encoding"); got != tc.wantEncoding {
				t.Errorf("Content-Encoding %q, want %q", got, tc.wantEncoding)
			}
		})
	}
}

// Scenario 2: over HTTP/2, eight EventSources (more than the six HTTP/1.1
// connections a browser allows per host) all receive their events over one
// connection.
func TestHTTP2MultiplexesEightStreams(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "https", "tls internal", "")
	b.open(s.origin + "/")
	const n = 8
	for i := range n {
		b.do(fmt.Sprintf(`subscribe("s%d", "/t/h2-%d")`, i, i))
	}
	b.waitForOpen(n)
	for i := range n {
		s.publish(fmt.Sprintf("/t/h2-%d", i), fmt.Sprintf("event for %d", i))
	}
	for i := range n {
		b.waitForMessages(fmt.Sprintf("s%d", i), []string{fmt.Sprintf("event for %d", i)})
	}
	conns := map[float64]bool{}
	for i := range n {
		resps := b.responsesFor(fmt.Sprintf("/t/h2-%d", i))
		if len(resps) == 0 {
			t.Fatalf("no response seen for stream %d", i)
		}
		r := resps[0].Response
		if r.Protocol != "h2" {
			t.Errorf("stream %d: protocol %q, want h2", i, r.Protocol)
		}
		conns[r.ConnectionID] = true
	}
	if len(conns) != 1 {
		t.Errorf("the eight streams used %d connections, want one", len(conns))
	}
}

// Over HTTPS limited to HTTP/1.1, with the sse listener wrapper before tls
// (the lean path: streams parked), the browser gets every event in order,
// and after a reload resumes with Last-Event-ID exactly where it was.
func TestHTTPSOverTheListenerWrapper(t *testing.T) {
	b := newBrowser(t)
	s := startServerWith(t, "\tauto_https disable_redirects\n\tservers {\n\t\tprotocols h1\n\t\tlistener_wrappers {\n\t\t\tsse\n\t\t\ttls\n\t\t}\n\t}\n",
		"https", "tls internal", "retry 300ms\ndrain_window 0")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/tls")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprintf("event %d", i))
		s.publish("/t/tls", want[i-1])
	}
	b.waitForMessages("a", want)
	resps := b.responsesFor("/t/tls")
	if len(resps) == 0 || resps[0].Response.Protocol != "http/1.1" {
		t.Fatalf("the stream's protocol: %+v, want http/1.1 over TLS", resps)
	}
	// A reload ends the stream; the browser comes back by itself and
	// resumes.
	testcaddy.Reload(t, s.caddyfile("https", "tls internal", "retry 300ms\ndrain_window 0\nheartbeat 10s"))
	for i := 6; i <= 8; i++ {
		want = append(want, fmt.Sprintf("event %d", i))
		s.publish("/t/tls", want[i-1])
	}
	b.waitForMessages("a", want)
}

// Scenario 3: the server drops the stream (a config reload ends it with a
// retry hint); events published while the browser is away arrive after it
// reconnects by itself with Last-Event-ID: exactly 1–10, in order, once.
//
// "Away" is made certain, not left to the retry delay: once the stream is
// up, the Fetch domain holds the browser's next request for the stream (its
// own reconnection) until events 6–10 are published.
func TestBrowserResumesAfterReload(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "retry 500ms\ndrain_window 0")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/resume")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })
	var want []string
	var fiveID string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprint(i))
		fiveID = s.publish("/t/resume", want[i-1])
		b.waitForMessages("a", want)
	}

	b.holdRequests("*/t/resume*")
	before := b.requestsFor("/t/resume")
	testcaddy.Reload(t, s.caddyfile("http", "", "retry 500ms\ndrain_window 0\nheartbeat 20s"))
	b.waitFor("the stream dropped (error, readyState CONNECTING)", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "error" && e.State == 0 })
	})
	held := b.nextHeld()
	for i := 6; i <= 10; i++ {
		want = append(want, fmt.Sprint(i))
		s.publish("/t/resume", want[i-1])
	}
	if got := b.messages("a"); len(got) != 5 {
		t.Fatalf("the page got %v while its reconnection was held", got)
	}
	b.release(held)
	b.waitForMessages("a", want)
	if after := b.requestsFor("/t/resume"); after != before+1 {
		t.Errorf("%d requests for the stream after the reload, want one reconnection", after-before)
	}
	var ids []string
	for _, e := range b.seen() {
		if e.Kind == "message" && e.ID != nil {
			ids = append(ids, *e.ID)
		}
	}
	if len(ids) != 10 || ids[4] != fiveID || len(slices.Compact(slices.Clone(ids))) != 10 {
		t.Errorf("message ids %v: want ten distinct ids, the fifth %s", ids, fiveID)
	}
	// Chromium's network stack adds Last-Event-ID, so only the headers as
	// sent on the wire (the extra-info event) show it.
	var resumedWith []string
	b.mu.Lock()
	for _, r := range b.extra {
		if v := header(r.Headers, "Last-Event-ID"); v != "" {
			resumedWith = append(resumedWith, v)
		}
	}
	b.mu.Unlock()
	if !slices.Equal(resumedWith, []string{fiveID}) {
		t.Errorf("requests carried Last-Event-ID %q, want one reconnection with the id of event 5, %q", resumedWith, fiveID)
	}
	for _, r := range b.responsesFor("/t/resume") {
		if r.Response.Status != http.StatusOK {
			t.Errorf("a stream request answered %d", r.Response.Status)
		}
	}
}

// Scenario 4: when the topic is closed the page gets the close event, the
// browser's reconnection is answered 204, readyState becomes CLOSED, and no
// further request for the stream follows for 10 seconds.
func TestNoContentStopsReconnection(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "retry 500ms")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/closing")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })
	s.closeTopic("/t/closing")
	b.waitFor("the close event", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "close" })
	})
	deadline := time.Now().Add(waitLimit)
	for {
		st := b.evalInt(`state("a")`)
		if st == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyState %d, want 2 (CLOSED) after the 204", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	saw204 := false
	for _, r := range b.responsesFor("/t/closing") {
		if r.Response.Status == http.StatusNoContent {
			saw204 = true
		}
	}
	if !saw204 {
		t.Error("no 204 response seen for the reconnection")
	}
	requests := b.requestsFor("/t/closing")
	time.Sleep(10 * time.Second) // the one deliberate wait: nothing may happen
	if after := b.requestsFor("/t/closing"); after != requests {
		t.Errorf("%d more requests for the closed topic within 10s; EventSource must stop", after-requests)
	}
}

// Scenario 5: a page opening with a lastEventId older than the retained
// history gets the reset event, then the retained events.
func TestResetForIDOlderThanHistory(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "history {\nevents 3\n}")
	var ids []string
	for i := 1; i <= 10; i++ {
		ids = append(ids, s.publish("/t/reset", fmt.Sprint(i)))
	}
	b.open(s.origin + "/")
	b.do(fmt.Sprintf(`subscribe("a", "/t/reset?lastEventId=%s")`, ids[0]))
	got := b.waitFor("the reset then events 8-10", func(events []seen) bool {
		return slices.Equal(messages(events, "a"), []string{"8", "9", "10"})
	})
	var kinds []string
	for _, e := range got {
		if e.Kind == "reset" || e.Kind == "message" {
			kinds = append(kinds, e.Kind)
		}
	}
	if !slices.Equal(kinds, []string{"reset", "message", "message", "message"}) {
		t.Errorf("the page saw %v, want the reset first, then three messages", kinds)
	}
	for _, e := range got {
		if e.Kind != "reset" {
			continue
		}
		var reset struct {
			Reason      string `json:"reason"`
			Requested   string `json:"requested"`
			ResumeAfter string `json:"resume_after"`
		}
		if e.Data == nil || json.Unmarshal([]byte(*e.Data), &reset) != nil {
			t.Fatalf("reset data %v is not the JSON of the README", e.Data)
		}
		if reset.Reason != "expired" || reset.Requested != ids[0] {
			t.Errorf("reset %s, want reason expired for %s", *e.Data, ids[0])
		}
		// The reset's id is where delivery resumes: the page's lastEventId
		// is valid again, and the next event follows it.
		if e.ID == nil || *e.ID != reset.ResumeAfter || reset.ResumeAfter != ids[6] {
			t.Errorf("reset %s with lastEventId %v: want lastEventId and resume_after the id of event 7, %s", *e.Data, e.ID, ids[6])
		}
	}
}

// Scenario 6: one EventSource follows ten topics over HTTP/1.1, beside five
// single-topic ones: six connections, the most a browser opens to one
// origin (a seventh EventSource stays CONNECTING). Each event reaches the
// page named after its topic; after a reload, the browser's own
// reconnection with Last-Event-ID resumes all ten topics exactly.
func TestOneEventSourceOnTenTopics(t *testing.T) {
	b := newBrowser(t)
	opts := "retry 500ms\ndrain_window 0\nmulti_topic_event_name topic"
	s := startServer(t, "http", "", opts)
	b.open(s.origin + "/")
	for i := range 5 {
		b.do(fmt.Sprintf(`subscribe("s%d", "/t/single-%d")`, i, i))
	}
	var topics []string
	q := url.Values{}
	for i := range 10 {
		topics = append(topics, fmt.Sprintf("/t/m%d", i))
		q.Add("topic", topics[i])
	}
	list, _ := json.Marshal(topics)
	b.do(fmt.Sprintf(`subscribe("multi", "/t/all?%s")`, q.Encode()))
	b.do(fmt.Sprintf(`listen("multi", %s)`, list))
	b.waitForOpen(6)
	b.do(`subscribe("seventh", "/t/seventh")`)

	// got returns the multi stream's events as "topic data" in order.
	got := func(events []seen) []string {
		var out []string
		for _, e := range events {
			if e.Name == "multi" && strings.HasPrefix(e.Kind, "topic ") && e.Data != nil {
				out = append(out, strings.TrimPrefix(e.Kind, "topic ")+" "+*e.Data)
			}
		}
		return out
	}
	var want []string
	publishRound := func(from, to int) {
		for k := from; k < to; k++ {
			tp := topics[(k*7)%10]
			data := fmt.Sprint("e", k)
			s.publish(tp, data)
			want = append(want, tp+" "+data)
		}
	}
	publishRound(0, 20)
	for i := range 5 {
		s.publish(fmt.Sprintf("/t/single-%d", i), "single")
	}
	b.waitFor("twenty events over ten topics, named after them", func(events []seen) bool {
		return slices.Equal(got(events), want)
	})
	for i := range 5 {
		b.waitForMessages(fmt.Sprintf("s%d", i), []string{"single"})
	}
	if st := b.evalInt(`state("seventh")`); st != 0 {
		t.Errorf("the seventh EventSource on the origin has readyState %d, want 0 (CONNECTING): the browser's limit did not apply", st)
	}
	if n := len(messages(b.seen(), "multi")); n != 0 {
		t.Errorf("%d events of the multi-topic stream reached onmessage; named events should not", n)
	}
	b.do(`window.sources["seventh"].close()`)

	b.holdRequests("*/t/all*")
	testcaddy.Reload(t, s.caddyfile("http", "", opts+"\nheartbeat 20s"))
	b.waitFor("the multi-topic stream dropped", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Name == "multi" && e.Kind == "error" && e.State == 0 })
	})
	held := b.nextHeld()
	publishRound(20, 40)
	b.release(held)
	b.waitFor("every event once, in order, after the reconnection", func(events []seen) bool {
		return slices.Equal(got(events), want)
	})
	var resumed bool
	b.mu.Lock()
	for _, r := range b.extra {
		if header(r.Headers, "Last-Event-ID") != "" {
			resumed = true
		}
	}
	b.mu.Unlock()
	if !resumed {
		t.Error("no reconnection carried Last-Event-ID")
	}
}

// lastEventIDsSent lists the Last-Event-ID headers of the requests as sent
// on the wire, in order.
func (b *browser) lastEventIDsSent() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, r := range b.extra {
		if v := header(r.Headers, "Last-Event-ID"); v != "" {
			ids = append(ids, v)
		}
	}
	return ids
}

// A subscriber that connected without a cursor and has received nothing
// yet still resumes exactly: the stream gave it its position at once (an
// id without data, which sets lastEventId and dispatches no message), so
// events published while it reconnects after a reload all reach it, once,
// in order.
func TestFreshSubscriberResumesAfterReloadBeforeAnyEvent(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "retry 500ms\ndrain_window 0")
	s.publish("/t/other", "moves the store's sequence on")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/fresh")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })

	b.holdRequests("*/t/fresh*")
	testcaddy.Reload(t, s.caddyfile("http", "", "retry 500ms\ndrain_window 0\nheartbeat 20s"))
	b.waitFor("the stream dropped", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "error" })
	})
	held := b.nextHeld()
	want := []string{"1", "2", "3"}
	for _, d := range want {
		s.publish("/t/fresh", d)
	}
	if got := b.messages("a"); len(got) != 0 {
		t.Fatalf("the page got messages %v before any was published to its topic", got)
	}
	b.release(held)
	b.waitForMessages("a", want)
	if sent := b.lastEventIDsSent(); len(sent) != 1 {
		t.Errorf("reconnections carried Last-Event-ID %q, want exactly one: the position the stream opened with", sent)
	}
	time.Sleep(500 * time.Millisecond)
	if got := b.messages("a"); !slices.Equal(got, want) {
		t.Errorf("the page got %v, want %v once each", got, want)
	}
}

// A client that dropped just before its topic was closed gets, on
// reconnecting, the events it missed, then close; the reconnection after
// that (its cursor now at the close) is answered 204 and EventSource stops.
func TestResumingClientGetsWhatItMissedBeforeTheClose(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "retry 500ms\ndrain_window 0")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/job")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })
	s.publish("/t/job", "started")
	b.waitForMessages("a", []string{"started"})

	b.holdRequests("*/t/job*")
	testcaddy.Reload(t, s.caddyfile("http", "", "retry 500ms\ndrain_window 0\nheartbeat 20s"))
	b.waitFor("the stream dropped", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "error" })
	})
	held := b.nextHeld()
	s.publish("/t/job", "50%")
	s.publish("/t/job", "exit 0")
	s.closeTopic("/t/job")
	b.release(held)

	b.waitFor("the missed events, then close", func(events []seen) bool {
		return slices.ContainsFunc(events, func(e seen) bool { return e.Kind == "close" })
	})
	if got, want := b.messages("a"), []string{"started", "50%", "exit 0"}; !slices.Equal(got, want) {
		t.Errorf("the page got %v, want %v", got, want)
	}
	deadline := time.Now().Add(waitLimit)
	for b.evalInt(`state("a")`) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("readyState %d, want 2 (CLOSED): the reconnection after close must be answered 204", b.evalInt(`state("a")`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Over HTTPS with the sse_h2 listener wrapper (and sse before tls: the
// lean HTTP/2 path, streams parked), Chromium loads the page and opens
// eight EventSources over one HTTP/2 connection; each gets its events in
// order; one closed by the page leaves the others alone; and after a
// reload (GOAWAY, streams drained with a retry hint) the browser resumes
// every stream with Last-Event-ID exactly where it was.
func TestHTTP2OverTheLeanServer(t *testing.T) {
	b := newBrowser(t)
	s := startServerWith(t, "\tauto_https disable_redirects\n\tservers {\n\t\tlistener_wrappers {\n\t\t\tsse\n\t\t\ttls\n\t\t\tsse_h2\n\t\t}\n\t}\n",
		"https", "tls internal", "retry 300ms\ndrain_window 0")
	b.open(s.origin + "/")
	const n = 8
	for i := range n {
		b.do(fmt.Sprintf(`subscribe("s%d", "/t/lean-%d")`, i, i))
	}
	b.waitForOpen(n)
	want := make([][]string, n)
	publish := func(from, to int) {
		for i := range n {
			for k := from; k <= to; k++ {
				want[i] = append(want[i], fmt.Sprintf("%d: event %d", i, k))
				s.publish(fmt.Sprintf("/t/lean-%d", i), want[i][len(want[i])-1])
			}
		}
	}
	publish(1, 3)
	for i := range n {
		b.waitForMessages(fmt.Sprintf("s%d", i), want[i])
	}
	conns := map[float64]bool{}
	for i := range n {
		resps := b.responsesFor(fmt.Sprintf("/t/lean-%d", i))
		if len(resps) == 0 {
			t.Fatalf("no response seen for stream %d", i)
		}
		if r := resps[0].Response; r.Protocol != "h2" {
			t.Errorf("stream %d: protocol %q, want h2", i, r.Protocol)
		} else {
			conns[r.ConnectionID] = true
		}
	}
	if len(conns) != 1 {
		t.Errorf("the eight streams used %d connections, want one", len(conns))
	}

	// The page closes one EventSource (RST_STREAM); the others go on.
	b.do(`window.sources["s0"].close()`)
	testcaddy.Reload(t, s.caddyfile("https", "tls internal", "retry 300ms\ndrain_window 0\nheartbeat 10s"))
	publish(4, 6)
	for i := 1; i < n; i++ {
		b.waitForMessages(fmt.Sprintf("s%d", i), want[i])
	}
}
