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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

const chromiumPath = "/usr/bin/chromium"

// waitLimit bounds every wait for something the page should see: the tests
// assert what arrives, never how fast.
const waitLimit = 20 * time.Second

// page records everything its EventSources report in window.seen.
const page = `<!doctype html>
<meta charset="utf-8">
<title>caddy-sse browser test</title>
<script>
window.seen = [];
window.sources = {};
function subscribe(name, url) {
	const es = new EventSource(url);
	window.sources[name] = es;
	const record = (kind) => (e) => window.seen.push({
		name, kind, data: e.data === undefined ? null : e.data,
		id: e.lastEventId === undefined ? null : e.lastEventId, state: es.readyState,
	});
	es.onopen = record("open");
	es.onerror = record("error");
	es.onmessage = record("message");
	es.addEventListener("reset", record("reset"));
	es.addEventListener("close", record("close"));
}
function state(name) { return window.sources[name].readyState; }
</script>
`

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
	b := &browser{t: t}
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
		}
	}))
	b.ctx = ctx
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil { // starts the browser; the network domain comes enabled
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
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
	var data []string
	for _, s := range b.seen() {
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

func (b *browser) waitForMessages(name string, want []string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%s receive %v", name, want), func([]seen) bool {
		return slices.Equal(b.messages(name), want)
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

// server is a Caddy in this process serving the test page and the sse
// handler for /t/*.
type server struct {
	t      *testing.T
	origin string // scheme://host:port
	root   string
	port   int
	client *http.Client
}

// caddyfile renders a site serving the page from root and sse for /t/*
// with the given options.
func (s *server) caddyfile(scheme, site, sseOptions string) string {
	return fmt.Sprintf(`{
	admin off
	skip_install_trust
	local_certs
	default_sni 127.0.0.1
}

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
`, scheme, s.port, site, sseOptions, s.root)
}

func startServer(t *testing.T, scheme, site, sseOptions string) *server {
	t.Helper()
	s := &server{t: t, root: t.TempDir(), port: testcaddy.FreePort(t)}
	if err := os.WriteFile(filepath.Join(s.root, "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	s.origin = fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: testcaddy.InsecureTransport()}
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
			got := ""
			for k, v := range resps[0].Response.Headers {
				if strings.EqualFold(k, "Content-Encoding") {
					got = fmt.Sprint(v)
				}
			}
			if got != tc.wantEncoding {
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
	b.waitFor("eight streams open", func(events []seen) bool {
		open := 0
		for _, e := range events {
			if e.Kind == "open" {
				open++
			}
		}
		return open == n
	})
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

// Scenario 3: the server drops the stream (a config reload ends it with a
// retry hint); events published while the browser is away arrive after it
// reconnects by itself with Last-Event-ID: exactly 1–10, in order, once.
func TestBrowserResumesAfterReload(t *testing.T) {
	b := newBrowser(t)
	s := startServer(t, "http", "", "retry 500ms\n\t\tdrain_window 0")
	b.open(s.origin + "/")
	b.do(`subscribe("a", "/t/resume")`)
	b.waitFor("the stream open", func(events []seen) bool { return len(events) > 0 && events[0].Kind == "open" })
	var want []string
	var fiveID string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprint(i))
		fiveID = s.publish("/t/resume", want[i-1])
	}
	b.waitForMessages("a", want)

	before := b.requestsFor("/t/resume")
	testcaddy.Reload(t, s.caddyfile("http", "", "retry 500ms\n\t\tdrain_window 0\n\t\theartbeat 20s"))
	for i := 6; i <= 10; i++ {
		want = append(want, fmt.Sprint(i))
		s.publish("/t/resume", want[i-1])
	}
	b.waitForMessages("a", want)
	if after := b.requestsFor("/t/resume"); after <= before {
		t.Errorf("the browser made no new request for the stream (%d before, %d after): it was never dropped", before, after)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var resumedWith string
	for _, r := range b.extra {
		for k, v := range r.Headers {
			if strings.EqualFold(k, "Last-Event-ID") {
				resumedWith = fmt.Sprint(v)
			}
		}
	}
	if resumedWith != fiveID {
		t.Errorf("the reconnection carried Last-Event-ID %q, want the id of event 5, %q", resumedWith, fiveID)
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
	s := startServer(t, "http", "", "history {\n\t\t\tevents 3\n\t\t}")
	var ids []string
	for i := 1; i <= 10; i++ {
		ids = append(ids, s.publish("/t/reset", fmt.Sprint(i)))
	}
	b.open(s.origin + "/")
	b.do(fmt.Sprintf(`subscribe("a", "/t/reset?lastEventId=%s")`, ids[0]))
	got := b.waitFor("the reset then events 8-10", func(events []seen) bool {
		return slices.Equal(b.messages("a"), []string{"8", "9", "10"})
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
		if e.Kind == "reset" && (e.Data == nil || !strings.Contains(*e.Data, `"reason":"expired"`)) {
			t.Errorf("reset data %v, want reason expired", e.Data)
		}
	}
}
