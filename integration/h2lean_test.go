package integration_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// h2LeanCaddyfile is an https site with an internal certificate served
// through the sse_h2 listener wrapper, an sse handler under /t/ and a
// plain respond everywhere else. With parkable, the sse listener wrapper
// goes before tls, which lets HTTP/2 event streams park; without it,
// sse_h2 is the only wrapper (wrappers go after tls by default) and each
// stream keeps a goroutine of its own.
func h2LeanCaddyfile(port int, parkable bool, extra string) string {
	wrappers := "sse_h2 {\n\t\t\t\tdrain_timeout 10s\n\t\t\t}"
	if parkable {
		wrappers = "sse\n\t\t\ttls\n\t\t\t" + wrappers
	}
	return fmt.Sprintf(`{
	admin ADMIN
	skip_install_trust
	local_certs
	default_sni 127.0.0.1
	auto_https disable_redirects
	servers {
		listener_wrappers {
			%s
		}
	}
}

https://127.0.0.1:%d {
	tls internal
	sse /t/* {
		retry 1s
		heartbeat 1s
		%s
		publish {
			allow_unauthenticated
		}
	}
	respond "plain answer from caddy over HTTP/2, long enough to be a body"
}
`, wrappers, port, extra)
}

// startH2Lean starts Caddy with h2LeanCaddyfile and waits for its
// certificate.
func startH2Lean(t *testing.T, parkable bool) (p *testcaddy.Process, port int) {
	t.Helper()
	port = testcaddy.FreePort(t)
	p = testcaddy.Start(t, h2LeanCaddyfile(port, parkable, ""))
	tr := testcaddy.InsecureTransport()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
		if err == nil {
			resp.Body.Close()
			return p, port
		}
		if time.Now().After(deadline) {
			t.Fatalf("https site not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// buildH2Spec builds the pinned h2spec (internal/tools/h2spec). Without
// it the test is skipped, unless CI is set.
func buildH2Spec(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "internal", "tools", "h2spec")
	bin := filepath.Join(t.TempDir(), "h2spec")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/summerwind/h2spec/cmd/h2spec")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("building h2spec: %v\n%s", err, out)
		}
		t.Skipf("h2spec cannot be built here: %v\n%s", err, out)
	}
	return bin
}

// Every h2spec case (generic, http2 and hpack sections) passes against
// Caddy serving HTTP/2 through sse_h2.
func TestH2LeanPassesH2Spec(t *testing.T) {
	bin := buildH2Spec(t)
	_, port := startH2Lean(t, true)
	out, err := exec.Command(bin, "-t", "-k", "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-o", "5").CombinedOutput()
	summary := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "tests,") {
			summary = line
		}
	}
	t.Logf("h2spec: %s", summary)
	if err != nil || !strings.Contains(summary, " 0 failed") || !strings.Contains(summary, " 0 skipped") {
		t.Fatalf("h2spec failed (%v):\n%s", err, out[max(0, strings.Index(string(out), "Failures:")):])
	}
}

// h2Conn is one HTTP/2 connection to the site, as a browser's tab keeps:
// every request of the test goes over it.
func h2Conn(t *testing.T, port int) (*http.Client, *atomic.Int32) {
	t.Helper()
	var dials atomic.Int32
	tr := &http2.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback test site
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			dials.Add(1)
			d := &tls.Dialer{Config: cfg}
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, &dials
}

// h2Subscribe opens an event stream and returns its reader and a cancel
// that resets the stream (RST_STREAM), as a closed EventSource does.
func h2Subscribe(t *testing.T, client *http.Client, url string, headers ...string) (*ssetest.Reader, *http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if err := sitetest.AddHeaders(req.Header, headers); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		cancel()
		t.Fatalf("subscribe %s: %s over %s", url, resp.Status, resp.Proto)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return ssetest.NewReader(bufio.NewReader(resp.Body)), resp, cancel
}

// nextData reads events until one with data, within 10 s.
func nextData(t *testing.T, r *ssetest.Reader) ssetest.Event {
	t.Helper()
	type res struct {
		e   ssetest.Event
		err error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			e, err := r.Next()
			if err != nil || e.Data != "" {
				ch <- res{e, err}
				return
			}
		}
	}()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("reading the stream: %v", got.err)
		}
		return got.e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return ssetest.Event{}
}

// Over one HTTP/2 connection: several event streams, publishes (POST with
// a body), a plain route, exact resume with Last-Event-ID, a reset stream
// leaving the server, and a reload that drains the streams and lets the
// client resume exactly.
func TestH2LeanEventStreamsOnOneConnection(t *testing.T) {
	t.Run("parked", func(t *testing.T) { testH2LeanEventStreams(t, true) })
	t.Run("own goroutine", func(t *testing.T) { testH2LeanEventStreams(t, false) })
}

func testH2LeanEventStreams(t *testing.T, parkable bool) {
	p, port := startH2Lean(t, parkable)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	client, dials := h2Conn(t, port)
	adminPort := adminPortOf(t, p)

	const streams = 5
	readers := make([]*ssetest.Reader, streams)
	cancels := make([]context.CancelFunc, streams)
	for i := range streams {
		readers[i], _, cancels[i] = h2Subscribe(t, client, fmt.Sprintf("%s/t/room-%d", base, i%2))
	}
	publish := func(topic, data string) string {
		t.Helper()
		pub, err := sitetest.Publish(client, http.MethodPost, base+"/t/"+topic, data)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pub.OneID()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ids := map[string][]string{}
	for n := range 3 {
		for _, room := range []string{"room-0", "room-1"} {
			ids[room] = append(ids[room], publish(room, fmt.Sprintf("%s event %d", room, n)))
		}
	}
	for i, r := range readers {
		room := fmt.Sprintf("room-%d", i%2)
		for n := range 3 {
			e := nextData(t, r)
			if want := fmt.Sprintf("%s event %d", room, n); e.Data != want || e.ID != ids[room][n] {
				t.Fatalf("stream %d event %d: got %q id %q, want %q id %q", i, n, e.Data, e.ID, want, ids[room][n])
			}
		}
	}

	// A plain route on the same connection.
	resp, err := client.Get(base + "/other")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "plain answer") || resp.ProtoMajor != 2 {
		t.Fatalf("plain route: %q over %s", body, resp.Proto)
	}

	// Exact resume: from the first event, the next two.
	r, _, _ := h2Subscribe(t, client, base+"/t/room-0", "Last-Event-ID: "+ids["room-0"][0])
	for n := 1; n < 3; n++ {
		if e := nextData(t, r); e.ID != ids["room-0"][n] {
			t.Fatalf("resume: event %d has id %q, want %q", n, e.ID, ids["room-0"][n])
		}
	}
	waitSubscribers(t, adminPort, streams+1)

	// A reset stream (a tab closing its EventSource) leaves the server.
	cancels[0]()
	waitSubscribers(t, adminPort, streams)

	if n := dials.Load(); n != 1 {
		t.Fatalf("the client dialled %d connections; every request shares one", n)
	}

	// A reload: the streams are drained (each ends with a retry hint),
	// and a client resuming from its last id misses nothing.
	last := readers[1].LastEventID()
	if err := p.Reload(h2LeanCaddyfile(port, parkable, "drain_window 1s")); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := readers[1].Next(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("a drained stream ended with %v, want the end of its body", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a stream was not drained after the reload")
	}
	client2, _ := h2Conn(t, port)
	idAfter := publish("room-1", "after the reload")
	r2, _, _ := h2Subscribe(t, client2, base+"/t/room-1", "Last-Event-ID: "+last)
	if e := nextData(t, r2); e.ID != idAfter || e.Data != "after the reload" {
		t.Fatalf("resume after the reload: got %q id %q, want id %q", e.Data, e.ID, idAfter)
	}
}

// waitSubscribers waits for the caddy_sse_subscribers gauge to read n.
func waitSubscribers(t *testing.T, adminPort, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := sitetest.Scrape(t, adminPort)["caddy_sse_subscribers"]
		if int(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy_sse_subscribers is %v, want %d", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `caddy stop` with open HTTP/2 streams on sse_h2 connections: the process
// exits promptly, and every stream ends cleanly (its last DATA frame
// with END_STREAM, after the stop's retry hint) before its connection
// closes.
func TestH2LeanCaddyStopEndsStreams(t *testing.T) {
	p, port := startH2Lean(t, true)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	const conns, perConn = 4, 5
	var readers []*ssetest.Reader
	for range conns {
		client, _ := h2Conn(t, port)
		for j := range perConn {
			r, _, _ := h2Subscribe(t, client, fmt.Sprintf("%s/t/stop-%d", base, j))
			readers = append(readers, r)
		}
	}
	waitSubscribers(t, adminPortOf(t, p), conns*perConn)
	start := time.Now()
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("caddy stop with %d HTTP/2 streams took %v", len(readers), time.Since(start))
	for i, r := range readers {
		for {
			if _, err := r.Next(); err != nil {
				if err != io.EOF {
					t.Fatalf("stream %d ended with %v, want the end of its body", i, err)
				}
				break
			}
		}
	}
}
