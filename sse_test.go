package caddysse_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// waitLimit is how long a test waits for something it expects on a stream:
// generous, since a test asserts what arrives, never how fast.
const waitLimit = 10 * time.Second

// TestMain runs the tests, then checks that they left no goroutine behind:
// every stream, cursor and store janitor of every config must have ended
// once the configs stopped and the clients closed their connections.
func TestMain(m *testing.M) {
	before := goleak.IgnoreCurrent()
	code := m.Run()
	if code == 0 {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := goleak.Find(before,
			// Caddy's storage cleaning takes a lock file in its data
			// directory, and certmagic refreshes it every 5s until the
			// refresher wakes to find it released: it may outlive the
			// config by up to 5s, holding nothing of ours.
			goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind by the tests:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

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
	if err := addHeaders(h, headers); err != nil {
		t.Fatal(err)
	}
}

// publish POSTs data and requires 200 with the JSON result.
func (s *site) publish(path, data string, headers ...string) publishResult {
	s.t.Helper()
	r, err := sendPublish(s.client, http.MethodPost, s.url+path, data, headers...)
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	if r.status != http.StatusOK {
		s.t.Fatalf("POST %s answered %d: %s", path, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		s.t.Errorf("POST %s: Content-Type %q, want application/json", path, ct)
	}
	return r.publishResult
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

// A subscriber gets an event stream that starts with the reconnection
// delay, then every published event with its id, in order; a publish
// answers with the ids it assigned.
func TestSubscribeAndPublish(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		publish {
			allow_unauthenticated
			event {http.request.header.X-GitHub-Event}
		}
	}`)
	path := topic(t, "/s/", "news")
	st := s.subscribe(path)

	h := st.resp.Header
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// The stream opens with the reconnection delay and, since the client
	// came without a cursor, its position: an id in a block without data,
	// which sets the client's last event ID and dispatches nothing.
	opening := regexp.MustCompile(`^retry: 3000\n\nid: ([0-9a-z]+-[0-9]+)\n\n$`)
	st.await("retry and position", func() bool { return opening.Match(st.wire) })
	position := opening.FindStringSubmatch(string(st.wire))[1]
	if len(st.queue) != 0 || st.parser.LastEventID != position {
		t.Fatalf("the opening dispatched %d events and set last event ID %q; want none and a position", len(st.queue), st.parser.LastEventID)
	}

	first := s.publish(path, "hello")
	if first.Topic != path || len(first.IDs) != 1 || first.Duplicate {
		t.Fatalf("publish answered %+v, want topic %q and one id", first, path)
	}
	e := st.next()
	if e.ID != first.IDs[0] || e.Type != "message" || e.Data != "hello" {
		t.Errorf("first event %+v, want id %s, type message, data hello", e, first.IDs[0])
	}

	push := s.publishID(path, `{"ref":"main"}`, "X-GitHub-Event: push")
	e = st.next()
	if e.ID != push || e.Type != "push" || e.Data != `{"ref":"main"}` {
		t.Errorf("second event %+v, want id %s, type push (from the header)", e, push)
	}

	// CRLF, lone CR and LF all end a line; the client reads LF-joined lines.
	multi := s.publishID(path, "line one\r\nline two\rline three\nline four")
	e = st.next()
	if want := "line one\nline two\nline three\nline four"; e.ID != multi || e.Data != want {
		t.Errorf("multi-line event %+v, want id %s and data %q", e, multi, want)
	}

	wantWire := "retry: 3000\n\n" + "id: " + position + "\n\n" +
		"id: " + first.IDs[0] + "\ndata: hello\n\n" +
		"id: " + push + "\nevent: push\ndata: {\"ref\":\"main\"}\n\n" +
		"id: " + multi + "\ndata: line one\ndata: line two\ndata: line three\ndata: line four\n\n"
	if string(st.wire) != wantWire {
		t.Errorf("on the wire:\n%q\nwant:\n%q", st.wire, wantWire)
	}
	if ignored := st.parser.Ignored; ignored != 0 {
		t.Errorf("the parser ignored %d lines", ignored)
	}
	if ids := []string{first.IDs[0], push, multi}; ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Errorf("ids %q are not distinct", ids)
	}
}

// An NDJSON body publishes one event per non-empty line, atomically: a bad
// line rejects the whole batch, saying which line, and appends nothing.
func TestPublishNDJSON(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	path := topic(t, "/s/", "batch")
	st := s.subscribe(path)
	st.await("retry field", func() bool { return st.parser.Retry >= 0 })

	ndjson := "Content-Type: application/x-ndjson"
	res := s.publish(path, "{\"n\":1}\n\n{\"n\":2}\r\n   \n{\"n\":3}\n", ndjson)
	if len(res.IDs) != 3 {
		t.Fatalf("ids %q, want 3", res.IDs)
	}
	sameEvents(t, "NDJSON batch", st.nextN(3), res.IDs, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`})

	bad := s.do(http.MethodPost, path, "{\"n\":4}\n{\"n\":5\n{\"n\":6}\n", ndjson)
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.errorMessage(), "line 2") {
		t.Errorf("batch with a bad second line answered %d %q, want 400 naming line 2", bad.status, bad.body)
	}
	// Nothing of the rejected batch was appended: the next event the
	// subscriber gets is the one published after it, and history agrees.
	after := s.publishID(path, `{"n":7}`, ndjson)
	sameEvents(t, "after the rejected batch", st.nextN(1), []string{after}, []string{`{"n":7}`})
	replayed := s.subscribe(path + "?lastEventId=earliest")
	sameEvents(t, "history", replayed.nextN(4), append(res.IDs, after), []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":7}`})
}

// A client resumes with Last-Event-ID (the header EventSource sends) or the
// lastEventId / last_event_id query parameter, and gets exactly the events
// after that id, then live ones: none twice, none missing.
func TestResume(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	cases := []struct {
		name    string
		query   func(ids []string) string
		headers func(ids []string) []string
		after   int // index of the last event the client should not get again; -1 for all
	}{
		{"header", nil, func(ids []string) []string { return []string{"Last-Event-ID: " + ids[1]} }, 1},
		{"lastEventId", func(ids []string) string { return "?lastEventId=" + ids[1] }, nil, 1},
		{"last_event_id", func(ids []string) string { return "?last_event_id=" + ids[1] }, nil, 1},
		{"header wins over query", func(ids []string) string { return "?lastEventId=" + ids[0] },
			func(ids []string) []string { return []string{"Last-Event-ID: " + ids[2]} }, 2},
		{"earliest", func([]string) string { return "?lastEventId=earliest" }, nil, -1},
		{"last event", func(ids []string) string { return "?lastEventId=" + ids[4] }, nil, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := topic(t, "/s/", "log")
			var ids, data []string
			for i := range 5 {
				data = append(data, fmt.Sprint("event ", i))
				ids = append(ids, s.publishID(path, data[i]))
			}
			url := path
			if c.query != nil {
				url += c.query(ids)
			}
			var headers []string
			if c.headers != nil {
				headers = c.headers(ids)
			}
			st := openStream(t, s.url+url, nil, headers...)
			if st.resp.StatusCode != http.StatusOK {
				t.Fatalf("resume answered %d", st.resp.StatusCode)
			}
			sameEvents(t, "replayed", st.nextN(4-c.after), ids[c.after+1:], data[c.after+1:])
			live := s.publishID(path, "live")
			sameEvents(t, "then live", st.nextN(1), []string{live}, []string{"live"})
		})
	}
}

// resetData is the JSON of a reset event.
type resetData struct {
	Reason      string `json:"reason"`
	Requested   string `json:"requested"`
	ResumeAfter string `json:"resume_after"`
}

// expectReset reads the reset event and checks what it says.
func expectReset(t *testing.T, st *stream, reason, requested, resumeAfter string) resetData {
	t.Helper()
	e := st.next()
	if e.Type != "reset" {
		t.Fatalf("first event %+v, want a reset event", e)
	}
	var d resetData
	if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
		t.Fatalf("reset data %q is not JSON: %v", e.Data, err)
	}
	if d.Reason != reason || d.Requested != requested || (resumeAfter != "" && d.ResumeAfter != resumeAfter) {
		t.Errorf("reset data %+v, want reason %q, requested %q, resume_after %q", d, reason, requested, resumeAfter)
	}
	if d.ResumeAfter == "" || e.ID != d.ResumeAfter {
		t.Errorf("reset event id %q, want its resume_after %q", e.ID, d.ResumeAfter)
	}
	return d
}

// A client whose id cannot be continued exactly (never issued, from an
// earlier life of the store, or pruned from history) is told so with a
// reset event, whose id is where delivery resumes, then gets what is
// retained; with on_gap live, only what is published next.
func TestResetWhenIDCannotBeResumed(t *testing.T) {
	s := startSite(t, `
	sse /replay/* {
		history {
			events 3
		}`+openPublish+`
	}
	sse /live/* {
		on_gap live
		history {
			events 3
		}`+openPublish+`
	}`)
	publishN := func(path string, n int) (ids, data []string) {
		for i := range n {
			data = append(data, fmt.Sprint(i+1))
			ids = append(ids, s.publishID(path, data[i]))
		}
		return ids, data
	}

	t.Run("unknown id", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 2)
		st := s.subscribe(path, "Last-Event-ID: garbage")
		d := expectReset(t, st, "unknown", "garbage", "")
		sameEvents(t, "after the reset", st.nextN(2), ids, data)
		// The reset's id is a real position: resuming from it is exact.
		again := s.subscribe(path, "Last-Event-ID: "+d.ResumeAfter)
		sameEvents(t, "resumed from resume_after", again.nextN(2), ids, data)
	})

	t.Run("id of an earlier epoch", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 2)
		epoch, seq, ok := strings.Cut(ids[0], "-")
		if !ok {
			t.Fatalf("id %q is not <epoch>-<seq>", ids[0])
		}
		other := "z" + epoch[1:]
		if other == epoch {
			other = "y" + epoch[1:]
		}
		old := other + "-" + seq
		st := s.subscribe(path + "?lastEventId=" + old)
		expectReset(t, st, "unknown", old, "")
		sameEvents(t, "after the reset", st.nextN(2), ids, data)
	})

	t.Run("expired id", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 10)
		st := s.subscribe(path, "Last-Event-ID: "+ids[0])
		// History keeps the last 3: delivery resumes after the 7th.
		expectReset(t, st, "expired", ids[0], ids[6])
		sameEvents(t, "retained", st.nextN(3), ids[7:], data[7:])
		live := s.publishID(path, "11")
		sameEvents(t, "then live", st.nextN(1), []string{live}, []string{"11"})
	})

	t.Run("on_gap live", func(t *testing.T) {
		path := topic(t, "/live/", "t")
		ids, _ := publishN(path, 10)
		st := s.subscribe(path, "Last-Event-ID: "+ids[0])
		expectReset(t, st, "expired", ids[0], ids[9])
		live := s.publishID(path, "11")
		sameEvents(t, "only new events", st.nextN(1), []string{live}, []string{"11"})

		st = s.subscribe(path, "Last-Event-ID: garbage")
		expectReset(t, st, "unknown", "garbage", live)
		next := s.publishID(path, "12")
		sameEvents(t, "only new events", st.nextN(1), []string{next}, []string{"12"})
	})
}

// A quiet stream carries a comment line after each heartbeat interval, so
// proxies keep it open; with heartbeat off it carries nothing.
func TestHeartbeat(t *testing.T) {
	s := startSite(t, `
	sse /beat/* {
		heartbeat 200ms
	}
	sse /quiet/* {
		heartbeat off
	}`)
	st := s.subscribe(topic(t, "/beat/", "t"))
	st.await("heartbeat comment", func() bool { return st.parser.Comments > 0 })
	if want := regexp.MustCompile(`^retry: 3000\n\nid: [^\n]+\n\n:\n\n`); !want.Match(st.wire) {
		t.Errorf("stream %q, want it to start with retry, position and a heartbeat comment", st.wire)
	}

	quiet := s.subscribe(topic(t, "/quiet/", "t"))
	quiet.listen(time.Second)
	if want := regexp.MustCompile(`^retry: 3000\n\nid: [^\n]+\n\n$`); !want.Match(quiet.wire) || quiet.parser.Comments != 0 {
		t.Errorf("with heartbeat off, the stream carried %q in a second; want only retry and position", quiet.wire)
	}
}

// DELETE ends a topic: its subscribers get the close event and their
// streams end; afterwards a subscribe answers 204 (which stops EventSource
// reconnecting) and a publish 410.
func TestDeleteClosesTopic(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		publish {
			bearer secret-token
		}
	}`)
	auth := "Authorization: Bearer secret-token"
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	id := s.publishID(path, "last words", auth)
	sameEvents(t, "before closing", st.nextN(1), []string{id}, []string{"last words"})

	if r := s.do(http.MethodDelete, path, "", "Authorization: Bearer wrong"); r.status != http.StatusUnauthorized {
		t.Errorf("DELETE with a wrong token answered %d, want 401", r.status)
	}
	if r := s.do(http.MethodDelete, path, "", auth); r.status != http.StatusNoContent {
		t.Fatalf("DELETE answered %d %s, want 204", r.status, r.body)
	}
	e := st.next()
	if e.Type != "close" || !strings.Contains(e.Data, "closed") {
		t.Errorf("last event %+v, want a close event", e)
	}
	if err := st.awaitEnd(); err != io.EOF {
		t.Errorf("after the close event the stream ended with %v, want EOF", err)
	}
	if len(st.queue) != 0 {
		t.Errorf("events after close: %+v", st.queue)
	}

	if r := s.do(http.MethodGet, path, "", "Last-Event-ID: "+id); r.status != http.StatusNoContent || r.body != "" {
		t.Errorf("GET of a closed topic answered %d %q, want 204", r.status, r.body)
	}
	r := s.do(http.MethodPost, path, "more", auth)
	if r.status != http.StatusGone || !strings.Contains(r.errorMessage(), "closed") {
		t.Errorf("POST to a closed topic answered %d %q, want 410 saying it is closed", r.status, r.body)
	}
	if r := s.do(http.MethodDelete, path, "", auth); r.status != http.StatusGone {
		t.Errorf("second DELETE answered %d, want 410", r.status)
	}
}

// Without a publish block the URL is subscribe-only.
func TestWithoutPublishOnlyGET(t *testing.T) {
	s := startSite(t, `sse /s/*`)
	path := topic(t, "/s/", "t")
	for _, method := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
		r := s.do(method, path, "data")
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s answered %d with Allow %q, want 405 with Allow: GET, HEAD", method, r.status, r.header.Get("Allow"))
		}
		if !strings.Contains(r.errorMessage(), method) {
			t.Errorf("%s: error %q does not name the method", method, r.body)
		}
		if method != http.MethodPut && !strings.Contains(r.errorMessage(), "add a publish block") {
			t.Errorf("%s: error %q does not say how to publish here", method, r.body)
		}
	}
	s.subscribe(path)
}

const (
	authBearer = "bearer-token-1"
	authGitHub = "github-secret"
	// whsec_ + base64 of the key bytes "standard webhooks test key!!".
	authKey = "standard webhooks test key!!"
)

func githubSignature(body string) string {
	mac := hmac.New(sha256.New, []byte(authGitHub))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func standardSignature(id string, ts int64, body string) string {
	mac := hmac.New(sha256.New, []byte(authKey))
	fmt.Fprintf(mac, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// With several schemes configured, a request passing any one is accepted;
// any other gets 401 saying what is wrong, and appends nothing.
func TestPublishAuthentication(t *testing.T) {
	s := startSite(t, fmt.Sprintf(`
	sse /s/* {
		publish {
			bearer %s
			hmac_sha256 %s
			standard_webhooks whsec_%s
		}
	}`, authBearer, authGitHub, base64.StdEncoding.EncodeToString([]byte(authKey))))
	path := topic(t, "/s/", "t")
	now := time.Now().Unix()
	stale := time.Now().Add(-10 * time.Minute).Unix()
	sw := func(id string, ts int64, body string) []string {
		return []string{"webhook-id: " + id, "webhook-timestamp: " + strconv.FormatInt(ts, 10), "webhook-signature: " + standardSignature(id, ts, body)}
	}
	cases := []struct {
		name    string
		body    string
		headers []string
		status  int
		says    string // in the 401 error
	}{
		{"bearer", "by bearer", []string{"Authorization: Bearer " + authBearer}, 200, ""},
		{"github hmac", "by github", []string{"X-Hub-Signature-256: " + githubSignature("by github")}, 200, ""},
		{"standard webhooks", "by standard", sw("msg_ok", now, "by standard"), 200, ""},

		{"wrong bearer", "x1", []string{"Authorization: Bearer nope"}, 401, "bearer: token mismatch"},
		{"wrong hmac", "x2", []string{"X-Hub-Signature-256: " + githubSignature("other body")}, 401, "hmac_sha256: signature mismatch"},
		{"hmac not hex", "x3", []string{"X-Hub-Signature-256: sha256=zz"}, 401, "not a hex"},
		{"wrong standard signature", "x4", sw("msg_bad", now, "other body"), 401, "standard_webhooks: signature mismatch"},
		{"stale timestamp", "x5", sw("msg_stale", stale, "x5"), 401, "old, beyond the tolerance"},
		{"no credentials", "x6", nil, 401, "missing Authorization header"},
		{"missing signature header", "x7", []string{"webhook-id: msg_x7", "webhook-timestamp: " + strconv.FormatInt(now, 10)}, 401, "missing webhook-signature header"},
	}
	var accepted, acceptedIDs []string
	for _, c := range cases {
		r := s.do(http.MethodPost, path, c.body, c.headers...)
		if r.status != c.status {
			t.Errorf("%s: answered %d %s, want %d", c.name, r.status, r.body, c.status)
			continue
		}
		if c.status == http.StatusOK {
			var res publishResult
			_ = json.Unmarshal([]byte(r.body), &res)
			accepted = append(accepted, c.body)
			acceptedIDs = append(acceptedIDs, res.IDs...)
			continue
		}
		if msg := r.errorMessage(); !strings.Contains(msg, c.says) || !strings.HasPrefix(msg, "authentication failed") {
			t.Errorf("%s: 401 says %q, want it to mention %q", c.name, msg, c.says)
		}
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want the Bearer challenge", c.name, got)
		}
		if strings.Contains(r.body, authGitHub) || strings.Contains(r.body, authBearer) {
			t.Errorf("%s: the error reveals a secret: %s", c.name, r.body)
		}
	}
	// Only the accepted requests were appended.
	st := s.subscribe(path + "?lastEventId=earliest")
	sameEvents(t, "history", st.nextN(len(accepted)), acceptedIDs, accepted)
	last := s.publishID(path, "end", "Authorization: Bearer "+authBearer)
	sameEvents(t, "next", st.nextN(1), []string{last}, []string{"end"})
}

// A publish block must say how publishers authenticate; leaving the
// endpoint open takes an explicit allow_unauthenticated.
func TestPublishWithoutAuthNeedsAllowUnauthenticated(t *testing.T) {
	port := testcaddy.FreePort(t)
	open := func(extra string) string {
		return testcaddy.Format(fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\tsse /s/* {\n\t\tpublish {\n\t\t\tevent update\n\t\t\t%s\n\t\t}\n\t}\n}\n", port, extra))
	}
	err := testcaddy.ValidateCaddyfile(open(""))
	if err == nil || !strings.Contains(err.Error(), "allow_unauthenticated") {
		t.Fatalf("a publish block without authentication provisioned with error %v, want one mentioning allow_unauthenticated", err)
	}
	if err := testcaddy.ValidateCaddyfile(open("allow_unauthenticated")); err != nil {
		t.Fatalf("with allow_unauthenticated: %v", err)
	}
	testcaddy.Load(t, open("allow_unauthenticated"))
	s := &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), client: &http.Client{Timeout: 5 * time.Second}}
	s.url = "http://" + s.addr
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	id := s.publishID(path, "anyone")
	e := st.next()
	if e.ID != id || e.Type != "update" || e.Data != "anyone" {
		t.Errorf("event %+v, want id %s, type update, data anyone", e, id)
	}
}

// A delivery repeated with the same id (a sender retrying) appends nothing
// and answers the ids of the first delivery.
func TestPublishDeduplicates(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	st.await("retry field", func() bool { return st.parser.Retry >= 0 })
	var ids, data []string
	for _, h := range []string{"Idempotency-Key: order-17", "webhook-id: msg_2Lh9", "X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958"} {
		name, _, _ := strings.Cut(h, ":")
		first := s.publish(path, "via "+name, h)
		r := s.do(http.MethodPost, path, "via "+name, h)
		var again publishResult
		_ = json.Unmarshal([]byte(r.body), &again)
		if r.status != http.StatusOK || !slices.Equal(again.IDs, first.IDs) || !again.Duplicate || !strings.Contains(r.body, `"duplicate":true`) {
			t.Errorf("%s repeated: %d %s, want 200 with ids %q and duplicate true", name, r.status, r.body, first.IDs)
		}
		if first.Duplicate {
			t.Errorf("%s: the first delivery is marked duplicate", name)
		}
		ids = append(ids, first.IDs...)
		data = append(data, "via "+name)
	}
	ids = append(ids, s.publishID(path, "end"))
	data = append(data, "end")
	sameEvents(t, "each delivery once", st.nextN(4), ids, data)
}

// What cannot be an event, or a topic, is refused with a status and a
// message saying why, and nothing is appended.
func TestBadInputRejected(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		limits {
			topic_length 40
		}
		publish {
			allow_unauthenticated
			max_body 1KiB
		}
	}`)
	path := "/s/bad-input"
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		says   string
	}{
		{"body over max_body", path, strings.Repeat("x", 1025), 413, "max_body of 1024 bytes"},
		{"invalid UTF-8", path, "caf\xe9", 400, "UTF-8"},
		{"empty body", path, "", 400, "empty body"},
		{"control character in topic", "/s/a%01b", "x", 400, "control character U+0001"},
		{"topic too long", "/s/" + strings.Repeat("t", 38), "x", 400, "longer than the limit of 40"},
	}
	for _, c := range cases {
		r := s.do(http.MethodPost, c.path, c.body)
		if r.status != c.status || !strings.Contains(r.errorMessage(), c.says) {
			t.Errorf("%s: answered %d %q, want %d saying %q", c.name, r.status, r.body, c.status, c.says)
		}
	}
	if r := s.do(http.MethodGet, "/s/a%01b", ""); r.status != 400 || !strings.Contains(r.errorMessage(), "control character") {
		t.Errorf("subscribing to a topic with a control character answered %d %q, want 400", r.status, r.body)
	}
	// 1024 bytes is within max_body.
	st := s.subscribe(path + "?lastEventId=earliest")
	big := strings.Repeat("y", 1024)
	id := s.publishID(path, big)
	sameEvents(t, "history after the rejections", st.nextN(1), []string{id}, []string{big})
}

// Past a limit, a publisher is told to come back later (503 with
// Retry-After) and a subscriber is turned away with a 200 stream that names
// the limit, carries a retry hint and ends, since EventSource takes any
// other status as final. Subscribing to a topic that has no events takes no
// topic slot, so anonymous subscribers cannot lock publishers out.
func TestLimits(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		limits {
			topics 3
			subscribers_per_topic 1
		}`+openPublish+`
	}`)
	// Subscribers on made-up topics first: they must not fill the slots.
	for i := range 5 {
		s.subscribe(topic(t, "/s/idle-", strconv.Itoa(i)))
	}
	for i := 1; i <= 3; i++ {
		s.publishID(topic(t, "/s/", strconv.Itoa(i)), "x")
	}
	if r := s.do(http.MethodPost, topic(t, "/s/", "4"), "x"); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.errorMessage() == "" {
		t.Errorf("publishing to a 4th topic answered %d (Retry-After %q) %q, want 503 with Retry-After and a message", r.status, r.header.Get("Retry-After"), r.body)
	}
	turnedAway := func(what string, st *stream, limit string) {
		t.Helper()
		st.awaitEnd()
		if st.resp.StatusCode != http.StatusOK || !regexp.MustCompile(`^: `+limit+`\n\nretry: [0-9]+\n\n$`).Match(st.wire) {
			t.Errorf("%s answered %d %q, want 200 with a comment %q, a retry hint and the end", what, st.resp.StatusCode, st.wire, limit)
		}
	}

	path := topic(t, "/s/", "1")
	first := s.subscribe(path)
	turnedAway("a second subscriber", s.open(path), "subscriber limit of the topic reached")

	// When the first leaves, its place is free again.
	first.close()
	deadline := time.Now().Add(waitLimit)
	for {
		st := s.open(path)
		st.listen(300 * time.Millisecond)
		if !st.ended {
			break
		}
		st.close()
		if time.Now().After(deadline) {
			t.Fatalf("still turned away (%q) after the first subscriber left", st.wire)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A subscriber that never reads does not slow down publishing, nor the
// other subscribers: its writes time out and it is cut off.
func TestStalledReaderDoesNotSlowPublisher(t *testing.T) {
	const n = 3000
	s := startSite(t, `
	sse /s/* {
		write_timeout 1s
		history {
			events 5000
			size 128MiB
		}
		limits {
			event_size 16KiB
		}`+openPublish+`
	}`)
	payload := strings.Repeat("z", 8<<10)

	// run publishes n events of 8 KiB while a reading subscriber checks it
	// gets each one, in order; it returns the publish rate.
	run := func(path string) float64 {
		st := s.subscribe(path)
		done := make(chan error, 1)
		go func() {
			r := ssetest.NewReader(st.resp.Body)
			for i := range n {
				e, err := r.Next()
				if err != nil {
					done <- fmt.Errorf("after %d events: %w", i, err)
					return
				}
				if seq, _, _ := strings.Cut(e.Data, " "); seq != strconv.Itoa(i) {
					done <- fmt.Errorf("event %d has data %.20q", i, e.Data)
					return
				}
			}
			done <- nil
		}()
		start := time.Now()
		for i := range n {
			r := s.do(http.MethodPost, path, strconv.Itoa(i)+" "+payload)
			if r.status != http.StatusOK {
				t.Fatalf("publish %d answered %d %s", i, r.status, r.body)
			}
		}
		rate := float64(n) / time.Since(start).Seconds()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("reading subscriber: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("reading subscriber did not get all %d events", n)
		}
		return rate
	}

	baseline := run(topic(t, "/s/", "baseline"))

	path := topic(t, "/s/", "stalled")
	stalled, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, s.addr)
	// Make sure it is subscribed before publishing: wait for the head.
	head := make([]byte, 12)
	_ = stalled.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(stalled, head); err != nil || string(head) != "HTTP/1.1 200" {
		t.Fatalf("stalled subscriber: head %q, %v", head, err)
	}
	rate := run(path)
	t.Logf("publishing %d events of 8 KiB: %.0f events/s with a reading subscriber, %.0f events/s with a stalled one besides (ratio %.2f)",
		n, baseline, rate, rate/baseline)

	// 24 MiB were published, more than the socket buffers hold: its write
	// blocked, timed out, and the server closed the connection. (Reading
	// before the timeout passed would unblock that write.)
	time.Sleep(2 * time.Second)
	_ = stalled.SetReadDeadline(time.Now().Add(waitLimit))
	_, err = io.Copy(io.Discard, stalled)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Errorf("the stalled subscriber's connection is still open %v after the last publish", waitLimit)
	}
}

var retryField = regexp.MustCompile(`retry: (\d+)\n\n$`)

// A reload keeps history: a client resumes with an id from before it and
// gets exactly what followed. A stream open during the reload ends with a
// retry field, and the client resumes on the new config without loss.
func TestResumeAcrossReload(t *testing.T) {
	config := func(heartbeat string) string {
		return `
	sse /s/* {
		heartbeat ` + heartbeat + `
		drain_window 300ms` + openPublish + `
	}`
	}
	s := startSite(t, config("15s"))
	path := topic(t, "/s/", "t")
	var ids, data []string
	add := func(d string) {
		ids = append(ids, s.publishID(path, d))
		data = append(data, d)
	}
	for _, d := range []string{"e1", "e2", "e3"} {
		add(d)
	}
	open := s.subscribe(path, "Last-Event-ID: "+ids[0])
	got := open.nextN(2)

	s.reload(config("20s"))
	add("e4")
	if err := open.awaitEnd(); err != io.EOF {
		t.Errorf("the stream open during the reload ended with %v, want EOF", err)
	}
	m := retryField.FindSubmatch(open.wire)
	if m == nil {
		t.Fatalf("the stream open during the reload did not end with a retry field:\n%q", open.wire)
	}
	if ms, _ := strconv.Atoi(string(m[1])); ms < 3000 {
		t.Errorf("it ended with retry %d, want at least the configured 3000", ms)
	}
	got = append(got, open.queue...) // e4, if it came before the stream ended

	// Like EventSource: reconnect with the last id received.
	resumed := s.subscribe(path, "Last-Event-ID: "+open.parser.LastEventID)
	add("e5")
	got = append(got, resumed.nextN(len(ids)-1-len(got))...)
	sameEvents(t, "across the reload", got, ids[1:], data[1:])

	fromBefore := s.subscribe(path, "Last-Event-ID: "+ids[0])
	sameEvents(t, "resumed with a pre-reload id", fromBefore.nextN(4), ids[1:], data[1:])
}
