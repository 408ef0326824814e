// The in-process harness of the root tests: a Caddy loaded in this process
// with a site of sse handlers, a client that publishes, and streams read
// in the background through a WHATWG parser.

package caddysse_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// waitLimit is how long a test waits for something it expects on a stream:
// generous, since a test asserts what arrives, never how fast.
const waitLimit = 10 * time.Second

// TestMain runs the tests, then checks that they left no goroutine behind:
// every stream, cursor and store janitor of every config must have ended
// once the configs stopped and the clients closed their connections.
func TestMain(m *testing.M) { os.Exit(sitetest.RunChecked(m)) }

// site is a Caddy running in this process with one http:// site on a free
// loopback port; the test's Caddyfile lines go inside the site block.
type site struct {
	t      *testing.T
	addr   string // host:port
	url    string // http://host:port
	client *http.Client
}

// startSite loads a Caddyfile whose site block holds directives. The config
// stops, and every connection the test opened closes, when the test ends.
func startSite(t *testing.T, directives string) *site {
	t.Helper()
	s := &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))}
	s.url = "http://" + s.addr
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	testcaddy.Load(t, s.caddyfile(directives))
	// Cleanups run last-registered first: connections close before the
	// config stops.
	t.Cleanup(tr.CloseIdleConnections)
	return s
}

func (s *site) caddyfile(directives string) string {
	return testcaddy.Format(fmt.Sprintf("{\n\tadmin off\n}\n\nhttp://%s {\n%s\n}\n", s.addr, directives))
}

// reload replaces the running config as `caddy reload` does.
func (s *site) reload(directives string) {
	s.t.Helper()
	testcaddy.Reload(s.t, s.caddyfile(directives))
	// Idle keep-alive connections belonged to the old config's server,
	// which closes them.
	s.client.CloseIdleConnections()
}

// reply is a complete, non-streaming response.
type reply struct {
	status int
	header http.Header
	body   string
}

// errorMessage returns the "error" of a JSON error body.
func (r reply) errorMessage() string {
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(r.body), &e)
	return e.Error
}

// do sends a request with headers given as "Name: value".
func (s *site) do(method, path, body string, headers ...string) reply {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	setHeaders(s.t, req.Header, headers)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func setHeaders(t testing.TB, h http.Header, headers []string) {
	t.Helper()
	if err := sitetest.AddHeaders(h, headers); err != nil {
		t.Fatal(err)
	}
}

// publish POSTs data and requires 200 with the JSON result.
func (s *site) publish(path, data string, headers ...string) sitetest.Result {
	s.t.Helper()
	r, err := sitetest.Publish(s.client, http.MethodPost, s.url+path, data, headers...)
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	if r.Status != http.StatusOK {
		s.t.Fatalf("POST %s answered %d: %s", path, r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		s.t.Errorf("POST %s: Content-Type %q, want application/json", path, ct)
	}
	return r.Result
}

// publishID publishes one event and returns its id.
func (s *site) publishID(path, data string, headers ...string) string {
	s.t.Helper()
	res := s.publish(path, data, headers...)
	if len(res.IDs) != 1 || res.IDs[0] == "" {
		s.t.Fatalf("POST %s: ids %q, want one", path, res.IDs)
	}
	return res.IDs[0]
}

// streamClient has no overall timeout: streams are ended by cancelling
// their context. Connections are not reused, so a stream that ended never
// hands a connection of a stopped config to the next one.
var streamClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}

// stream is one subscriber: what it has read so far, as bytes on the wire
// and as the events a WHATWG parser dispatched.
type stream struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	ctx    context.Context

	chunks  chan []byte
	readErr error // why reading ended; set before chunks is closed

	parser *ssetest.Parser
	wire   []byte
	queue  []ssetest.Event
	ended  bool
	decode func(io.Reader) (io.Reader, func(), error)
}

// open sends GET path with headers and returns the response, whatever its
// status, with the body being read in the background.
func (s *site) open(path string, headers ...string) *stream {
	s.t.Helper()
	return openStream(s.t, s.url+path, nil, headers...)
}

// subscribe opens a stream and requires 200.
func (s *site) subscribe(path string, headers ...string) *stream {
	s.t.Helper()
	st := s.open(path, headers...)
	if st.resp.StatusCode != http.StatusOK {
		st.awaitEnd()
		s.t.Fatalf("GET %s answered %d: %s", path, st.resp.StatusCode, st.wire)
	}
	return st
}

// openStream GETs url; decode, when set, turns the body into what the
// parser reads (a decompressor); it runs on the reading goroutine, since
// creating a decoder may read the body.
func openStream(t *testing.T, url string, decode func(io.Reader) (io.Reader, func(), error), headers ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	setHeaders(t, req.Header, headers)
	// The head must come at once, but the client has no timeout: bound
	// the wait for it here.
	headTimer := time.AfterFunc(waitLimit, cancel)
	resp, err := streamClient.Do(req)
	stopped := headTimer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if !stopped {
		t.Fatalf("GET %s: no response head within %v", url, waitLimit)
	}
	st := &stream{t: t, resp: resp, ctx: ctx, cancel: cancel, parser: ssetest.NewParser(), decode: decode}
	t.Cleanup(st.close)
	return st
}

// start begins reading the body in the background, on the first wait: a
// test may instead read resp.Body itself.
func (st *stream) start() {
	if st.chunks == nil {
		st.chunks = make(chan []byte)
		go st.pump(st.decode)
	}
}

func (st *stream) pump(decode func(io.Reader) (io.Reader, func(), error)) {
	defer close(st.chunks)
	var r io.Reader = st.resp.Body
	if decode != nil {
		d, closeDecoder, err := decode(r)
		if err != nil {
			st.readErr = fmt.Errorf("starting decoder: %w", err)
			return
		}
		defer closeDecoder()
		r = d
	}
	for {
		buf := make([]byte, 32<<10)
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case st.chunks <- buf[:n]:
			case <-st.ctx.Done():
				st.readErr = st.ctx.Err()
				return
			}
		}
		if err != nil {
			st.readErr = err
			return
		}
	}
}

// close ends the stream from the client side.
func (st *stream) close() {
	st.cancel()
	st.resp.Body.Close()
	if st.chunks != nil {
		for range st.chunks {
		}
	}
}

func (st *stream) feed(chunk []byte) {
	st.wire = append(st.wire, chunk...)
	st.queue = append(st.queue, st.parser.Feed(chunk)...)
}

// await reads until cond holds, failing the test if the stream ends or
// waitLimit passes first.
func (st *stream) await(what string, cond func() bool) {
	st.t.Helper()
	if cond() {
		return
	}
	st.start()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for !cond() {
		if st.ended {
			st.t.Fatalf("stream ended (%v) while waiting for %s; received:\n%q", st.readErr, what, st.wire)
		}
		if !st.receive(timeout.C) {
			st.t.Fatalf("no %s within %v; received:\n%q", what, waitLimit, st.wire)
		}
	}
}

// receive takes the next chunk read (or the end of the stream) unless stop
// fires first, and reports whether it took one.
func (st *stream) receive(stop <-chan time.Time) bool {
	select {
	case c, ok := <-st.chunks:
		if ok {
			st.feed(c)
		} else {
			st.ended = true
		}
		return true
	case <-stop:
		return false
	}
}

// next returns the next event dispatched.
func (st *stream) next() ssetest.Event {
	st.t.Helper()
	st.await("event", func() bool { return len(st.queue) > 0 })
	e := st.queue[0]
	st.queue = st.queue[1:]
	return e
}

// nextN returns the next n events.
func (st *stream) nextN(n int) []ssetest.Event {
	st.t.Helper()
	evs := make([]ssetest.Event, n)
	for i := range evs {
		evs[i] = st.next()
	}
	return evs
}

// awaitEnd reads until the server ends the stream and returns why reading
// ended (io.EOF for a clean end).
func (st *stream) awaitEnd() error {
	st.t.Helper()
	st.start()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for !st.ended {
		if !st.receive(timeout.C) {
			st.t.Fatalf("stream still open after %v; received:\n%q", waitLimit, st.wire)
		}
	}
	return st.readErr
}

// listen reads whatever arrives during d; the stream stays open.
func (st *stream) listen(d time.Duration) {
	st.start()
	window := time.NewTimer(d)
	defer window.Stop()
	for !st.ended {
		if !st.receive(window.C) {
			return
		}
	}
}

// sameEvents checks got against the wanted (id, data) pairs.
func sameEvents(t *testing.T, what string, got []ssetest.Event, wantIDs, wantData []string) {
	t.Helper()
	var ids, data []string
	for _, e := range got {
		ids = append(ids, e.ID)
		data = append(data, e.Data)
		if e.Type != "message" {
			t.Errorf("%s: event %s has type %q, want message", what, e.ID, e.Type)
		}
	}
	if !slices.Equal(ids, wantIDs) || !slices.Equal(data, wantData) {
		t.Errorf("%s:\n got ids %q data %q\nwant ids %q data %q", what, ids, data, wantIDs, wantData)
	}
}

// topic returns a topic path unique to the test.
func topic(t *testing.T, prefix, name string) string {
	return prefix + strings.ReplaceAll(t.Name(), "/", "-") + "-" + name
}

const openPublish = `
	publish {
		allow_unauthenticated
	}`
