package caddysse_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	caddysse "github.com/ssegate/caddy-sse"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// These tests put a real HTTP upstream (an httptest server streaming NDJSON
// or SSE with scripted faults) behind a real Caddy, and read what a browser
// would with the WHATWG parser. They never assert how fast anything
// happens: they wait, with a generous bound, for it to happen.

const srcWait = 20 * time.Second

// srcUpstream serves successive connections with successive handlers; the
// last handler serves every later connection.
type srcUpstream struct {
	URL      string
	mu       sync.Mutex
	handlers []http.HandlerFunc
	reqs     []*http.Request
	times    []time.Time
	open     atomic.Int64
}

func newSrcUpstream(t *testing.T, handlers ...http.HandlerFunc) *srcUpstream {
	u := &srcUpstream{handlers: handlers}
	srv := httptest.NewServer(u)
	u.URL = srv.URL
	t.Cleanup(srv.Close)
	return u
}

func (u *srcUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.open.Add(1)
	defer u.open.Add(-1)
	u.mu.Lock()
	n := len(u.reqs)
	u.reqs = append(u.reqs, r.Clone(context.Background()))
	u.times = append(u.times, time.Now())
	h := u.handlers[min(n, len(u.handlers)-1)]
	u.mu.Unlock()
	h(w, r)
}

func (u *srcUpstream) requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *srcUpstream) request(i int) (*http.Request, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reqs[i], u.times[i]
}

// srcLines writes NDJSON lines and flushes them.
func srcLines(w http.ResponseWriter, lines ...string) {
	for _, l := range lines {
		io.WriteString(w, l+"\n")
	}
	w.(http.Flusher).Flush()
}

// srcHold keeps the upstream stream open, sending nothing, until the
// source goes away.
func srcHold(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func srcMsgs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf(`{"id":%d,"msg":"line %d"}`, i, i))
	}
	return out
}

func srcCaddyfile(port int, sources string) string {
	return testcaddy.Format(fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	sse /e/* {
		heartbeat off
%s
	}
}
`, port, sources))
}

// srcLoad runs Caddy with the given source blocks and returns its address.
func srcLoad(t *testing.T, sources string) string {
	t.Helper()
	port := testcaddy.FreePort(t)
	testcaddy.Load(t, srcCaddyfile(port, sources))
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// srcDial subscribes to path and fails the test unless it gets a stream.
func srcDial(t *testing.T, addr, path string, headers ...string) *ssetest.Stream {
	t.Helper()
	s := sitetest.DialStream(t, addr, path, headers...)
	_ = s.Conn.SetReadDeadline(time.Now().Add(srcWait))
	return s
}

// srcRead reads n events.
func srcRead(t *testing.T, s *ssetest.Stream, n int) []ssetest.Event {
	t.Helper()
	var evs []ssetest.Event
	for len(evs) < n {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("after %d of %d events (%q): %v", len(evs), n, srcData(evs), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func srcData(evs []ssetest.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Data
	}
	return out
}

// srcExpect subscribes to everything path retains and checks that the
// first events are want, in order.
func srcExpect(t *testing.T, addr, path string, want ...string) {
	t.Helper()
	s := srcDial(t, addr, path+"?lastEventId=earliest")
	got := srcData(srcRead(t, s, len(want)))
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("%s: got %q, want %q", path, got, want)
	}
	s.Close()
}

func srcEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(srcWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, srcWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func srcGetStatus(t *testing.T, addr, path string) int {
	t.Helper()
	s, err := ssetest.Dial(addr, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return s.Response.StatusCode
}

// Faults an NDJSON upstream can throw at a source, each with its own
// upstream and topic behind one Caddy.
func TestSourceNDJSONFaults(t *testing.T) {
	fail500 := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", http.StatusInternalServerError) }

	drop := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			srcLines(w, `{"msg":"1"}`, `{"msg":"2"}`)
			io.WriteString(w, `{"msg":"3`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection breaks mid-line
		},
		func(w http.ResponseWriter, r *http.Request) {
			srcLines(w, `{"msg":"3"}`, `{"msg":"4"}`)
			srcHold(w, r)
		})
	errors500 := newSrcUpstream(t, fail500, fail500, fail500,
		func(w http.ResponseWriter, r *http.Request) { srcLines(w, `{"msg":"up"}`); srcHold(w, r) })
	retryAfter := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		},
		func(w http.ResponseWriter, r *http.Request) { srcLines(w, `{"msg":"after"}`); srcHold(w, r) })
	stall := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) { srcLines(w, `{"msg":"before stall"}`); srcHold(w, r) },
		func(w http.ResponseWriter, r *http.Request) { srcLines(w, `{"msg":"after stall"}`); srcHold(w, r) })
	huge := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			srcLines(w, `{"msg":"good 1"}`)
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			io.WriteString(w, `{"msg":"`)
			for range (5 << 20) / len(chunk) {
				w.Write(chunk)
			}
			srcLines(w, `"}`, `{"msg":"good 2"}`)
			srcHold(w, r)
		})
	invalid := newSrcUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		srcLines(w, `{"msg":"ok 1"}`, `{"msg": oops}`, `not json at all`, `{"other":"no msg field"}`, "{\"msg\":\"bad \xff utf8\"}", `[1,2,3]`, `{"msg":"ok 2"}`)
		srcHold(w, r)
	})
	// BOM, CRLF, a blank line and a last line without newline, then a
	// clean end of stream; later connections send nothing.
	framing := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "\xEF\xBB\xBF{\"msg\":\"a\"}\r\n\r\n{\"msg\":\"b\"}\r\n{\"msg\":\"c\"}")
		},
		srcHold)

	block := func(u *srcUpstream, topic, extra string) string {
		return fmt.Sprintf("\t\tsource %s {\n\t\t\ttopic /e/%s\n\t\t\tdata_field msg\n\t\t\tbackoff 10ms 50ms\n%s\t\t}\n", u.URL, topic, extra)
	}
	addr := srcLoad(t, block(drop, "drop", "")+
		block(errors500, "errors", "")+
		block(retryAfter, "retry-after", "")+
		block(stall, "stall", "\t\t\tidle_timeout 300ms\n")+
		block(huge, "huge", "")+
		block(invalid, "invalid", "")+
		block(framing, "framing", ""))

	t.Run("drop in the middle of a line", func(t *testing.T) {
		srcExpect(t, addr, "/e/drop", "1", "2", "3", "4")
	})
	t.Run("three 500s then success", func(t *testing.T) {
		srcExpect(t, addr, "/e/errors", "up")
		if n := errors500.requests(); n != 4 {
			t.Fatalf("%d upstream requests, want 4", n)
		}
	})
	t.Run("Retry-After", func(t *testing.T) {
		srcExpect(t, addr, "/e/retry-after", "after")
		_, first := retryAfter.request(0)
		_, second := retryAfter.request(1)
		// backoff is at most 50ms: only Retry-After explains a second.
		if gap := second.Sub(first); gap < 900*time.Millisecond {
			t.Fatalf("reconnected %s after a Retry-After of 1s", gap)
		}
	})
	t.Run("stalled upstream hits idle timeout", func(t *testing.T) {
		srcExpect(t, addr, "/e/stall", "before stall", "after stall")
	})
	t.Run("5 MiB line between good lines", func(t *testing.T) {
		srcExpect(t, addr, "/e/huge", "good 1", "good 2")
	})
	t.Run("invalid lines are skipped", func(t *testing.T) {
		srcExpect(t, addr, "/e/invalid", "ok 1", "ok 2")
	})
	t.Run("BOM CRLF and a final line without newline", func(t *testing.T) {
		srcExpect(t, addr, "/e/framing", "a", "b", "c")
	})
}

// After a drop the upstream is asked with the right cursor, sends an
// overlapping tail, and the subscriber (connected throughout) receives
// every upstream line exactly once, in order; by header and by query.
func TestSourceResumeExactlyOnce(t *testing.T) {
	script := func() []http.HandlerFunc {
		return []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) {
				srcLines(w, srcMsgs(1, 5)...)
				io.WriteString(w, `{"id":6,"msg":"li`)
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			},
			func(w http.ResponseWriter, r *http.Request) {
				srcLines(w, srcMsgs(3, 12)...) // 3, 4, 5 again
				srcHold(w, r)
			},
		}
	}
	byHeader := newSrcUpstream(t, script()...)
	byQuery := newSrcUpstream(t, script()...)
	addr := srcLoad(t, fmt.Sprintf(`		source %s {
			topic /e/resume-header
			id_field id
			data_field msg
			resume header X-Cursor
			backoff 10ms 50ms
		}
		source %s?since=0&other=x {
			topic /e/resume-query
			id_field id
			data_field msg
			resume query since
			backoff 10ms 50ms
		}
`, byHeader.URL, byQuery.URL))

	var want []string
	for i := 1; i <= 12; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	for _, topic := range []string{"/e/resume-header", "/e/resume-query"} {
		s := srcDial(t, addr, topic+"?lastEventId=earliest")
		got := srcData(srcRead(t, s, 12))
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: got %q", topic, got)
		}
		// Nothing more: a duplicate would come next.
		_ = s.Conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if ev, err := s.Next(); err == nil {
			t.Fatalf("%s: extra event %q", topic, ev.Data)
		}
	}
	r, _ := byHeader.request(1)
	if c := r.Header.Get("X-Cursor"); c != "5" {
		t.Fatalf("resumed with X-Cursor %q, want 5", c)
	}
	if r, _ := byHeader.request(0); r.Header.Get("X-Cursor") != "" {
		t.Fatalf("first connection sent a cursor")
	}
	r, _ = byQuery.request(1)
	if q := r.URL.Query(); q.Get("since") != "5" || q.Get("other") != "x" {
		t.Fatalf("resumed with query %q", r.URL.RawQuery)
	}
}

func TestSourceTopicFieldRoutes(t *testing.T) {
	up := newSrcUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		srcLines(w,
			`{"meta":{"channel":"/e/jobs/1"},"type":"log","text":"one"}`,
			`{"meta":{"channel":"/e/jobs/2"},"type":"log","text":"two"}`,
			`{"meta":{"channel":"/e/jobs/1"},"type":"exit","text":{"code":0}}`,
			`{"meta":{},"type":"log","text":"no channel: skipped"}`,
			`{"meta":{"channel":"/e/jobs/2"},"type":"log","text":"three"}`)
		srcHold(w, r)
	})
	addr := srcLoad(t, fmt.Sprintf(`		source %s {
			topic_field meta.channel
			event_field type
			data_field  text
		}
`, up.URL))
	s1 := srcDial(t, addr, "/e/jobs/1?lastEventId=earliest")
	evs := srcRead(t, s1, 2)
	if evs[0].Type != "log" || evs[0].Data != "one" || evs[1].Type != "exit" || evs[1].Data != `{"code":0}` {
		t.Fatalf("/e/jobs/1: %+v", evs)
	}
	srcExpect(t, addr, "/e/jobs/2", "two", "three")
}

// close_when and an upstream 204 end the topic: the connected subscriber
// gets the last line, then close; later GETs answer 204.
func TestSourceEndsTopic(t *testing.T) {
	finish := make(chan struct{})
	closeWhen := newSrcUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		srcLines(w, `{"status":"running","n":1}`, `{"status":"running","n":2}`)
		select {
		case <-finish:
		case <-r.Context().Done():
			return
		}
		srcLines(w, `{"status":"done","n":3}`, `{"status":"never","n":4}`)
		srcHold(w, r)
	})
	finish204 := make(chan struct{})
	with204 := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			srcLines(w, `{"n":1}`)
			select {
			case <-finish204:
			case <-r.Context().Done():
			}
			// A clean end of stream: a reconnection, answered 204.
		},
		func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	addr := srcLoad(t, fmt.Sprintf(`		source %s {
			topic /e/closewhen
			data_field n
			close_when status done
			backoff 10ms 50ms
		}
		source %s {
			topic /e/204
			data_field n
			backoff 10ms 50ms
		}
`, closeWhen.URL, with204.URL))

	for _, c := range []struct {
		topic  string
		finish chan struct{}
		want   []string
	}{
		{"/e/closewhen", finish, []string{"1", "2", "3"}},
		{"/e/204", finish204, []string{"1"}},
	} {
		s := srcDial(t, addr, c.topic+"?lastEventId=earliest")
		got := srcData(srcRead(t, s, len(c.want)-1))
		close(c.finish)
		got = append(got, srcData(srcRead(t, s, len(c.want)-len(got)))...)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Fatalf("%s: got %q, want %q", c.topic, got, c.want)
		}
		if ev := srcRead(t, s, 1)[0]; ev.Type != "close" {
			t.Fatalf("%s: got %s event %q, want close", c.topic, ev.Type, ev.Data)
		}
		if _, err := s.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: stream did not end: %v", c.topic, err)
		}
		if st := srcGetStatus(t, addr, c.topic); st != http.StatusNoContent {
			t.Fatalf("%s: GET after the end answered %d", c.topic, st)
		}
	}
	if n := with204.requests(); n != 2 {
		t.Fatalf("upstream answering 204 was asked %d times, want 2", n)
	}
}

// on_demand opens the upstream with the first subscriber and closes it
// linger after the last one left.
func TestSourceOnDemand(t *testing.T) {
	var seq atomic.Int64
	up := newSrcUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		srcLines(w, fmt.Sprintf(`{"msg":"connection %d"}`, seq.Add(1)))
		srcHold(w, r)
	})
	const linger = 400 * time.Millisecond
	addr := srcLoad(t, fmt.Sprintf(`		source %s {
			topic /e/lazy
			data_field msg
			mode on_demand %s
		}
`, up.URL, linger))
	time.Sleep(100 * time.Millisecond)
	if n := up.requests(); n != 0 {
		t.Fatalf("%d upstream requests before any subscriber", n)
	}
	a := srcDial(t, addr, "/e/lazy")
	b := srcDial(t, addr, "/e/lazy?lastEventId=earliest") // it may come after the line
	for _, s := range []*ssetest.Stream{a, b} {
		if ev := srcRead(t, s, 1)[0]; ev.Data != "connection 1" {
			t.Fatalf("got %q", ev.Data)
		}
	}
	a.Close()
	b.Close()
	left := time.Now()
	srcEventually(t, "upstream closed after the last subscriber left", func() bool { return up.open.Load() == 0 })
	if d := time.Since(left); d < linger*9/10 {
		t.Fatalf("upstream closed %s after the last subscriber left, linger is %s", d, linger)
	}
	if n := up.requests(); n != 1 {
		t.Fatalf("%d upstream requests for one demand period", n)
	}
	// History is kept; a new subscriber opens the upstream again.
	c := srcDial(t, addr, "/e/lazy?lastEventId=earliest")
	if got := srcData(srcRead(t, c, 2)); got[0] != "connection 1" || got[1] != "connection 2" {
		t.Fatalf("got %q", got)
	}
}

// format sse relays an upstream event stream (multi-line data, custom event
// types, ids, resumption with Last-Event-ID) to many subscribers.
func TestSourceFormatSSE(t *testing.T) {
	start := make(chan struct{})
	up := newSrcUpstream(t,
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			select {
			case <-start:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, ": upstream comment\nretry: 10\n\n"+
				"id: u1\nevent: job.started\ndata: {\"job\":7}\n\n"+
				"id: u2\nevent: job.log\ndata: first line\ndata: second line\r\n\r\n"+
				"id: u3\ndata: plain\n\nid: u4\nevent: job.log\ndata: half")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		},
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: u3\ndata: plain\n\nid: u4\nevent: job.log\ndata: whole\n\nid: u5\nevent: job.done\ndata:\n\n")
			w.(http.Flusher).Flush()
			srcHold(w, r)
		})
	addr := srcLoad(t, fmt.Sprintf(`		source %s {
			format sse
			topic /e/relay
			backoff 10ms 50ms
		}
`, up.URL))
	const subscribers = 25
	streams := make([]*ssetest.Stream, subscribers)
	for i := range streams {
		streams[i] = srcDial(t, addr, "/e/relay")
	}
	close(start)
	want := []ssetest.Event{
		{Type: "job.started", Data: `{"job":7}`},
		{Type: "job.log", Data: "first line\nsecond line"},
		{Type: "message", Data: "plain"},
		{Type: "job.log", Data: "whole"},
		{Type: "job.done", Data: ""},
	}
	for i, s := range streams {
		got := srcRead(t, s, len(want))
		for j := range want {
			if got[j].Type != want[j].Type || got[j].Data != want[j].Data || got[j].ID == "" {
				t.Fatalf("subscriber %d event %d: got %+v, want %+v", i, j, got[j], want[j])
			}
		}
	}
	if r, _ := up.request(1); r.Header.Get("Last-Event-ID") != "u3" || r.Header.Get("Accept") != "text/event-stream" {
		t.Fatalf("reconnected with Last-Event-ID %q, Accept %q", r.Header.Get("Last-Event-ID"), r.Header.Get("Accept"))
	}
}

// sourceGoroutines returns the stacks of goroutines running code of the
// source package.
func sourceGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/ssegate/caddy-sse/source.") {
			out = append(out, g)
		}
	}
	return out
}

// A reload keeps an unchanged source's upstream connection, replaces a
// changed one, and neither a reload nor a stop leaves a goroutine of a
// source behind.
func TestSourceReloadAndStopLeaveNothing(t *testing.T) {
	if g := sourceGoroutines(); len(g) > 0 {
		t.Fatalf("source goroutines before the test:\n%s", strings.Join(g, "\n\n"))
	}
	var seq atomic.Int64
	hold := func(w http.ResponseWriter, r *http.Request) {
		srcLines(w, fmt.Sprintf(`{"msg":"%d"}`, seq.Add(1)))
		srcHold(w, r)
	}
	kept := newSrcUpstream(t, hold)
	changed := newSrcUpstream(t, hold)
	lazy := newSrcUpstream(t, hold)
	cfg := func(changedExtra string) string {
		return fmt.Sprintf(`		source %s {
			topic /e/kept
			data_field msg
			header Authorization "Bearer {env.SOURCE_TEST_TOKEN}"
		}
		source %s {
			topic /e/changed
			data_field msg
%s		}
		source %s {
			topic /e/lazy
			data_field msg
			mode on_demand 1h
		}
`, kept.URL, changed.URL, changedExtra, lazy.URL)
	}
	t.Setenv("SOURCE_TEST_TOKEN", "s3cret")
	port := testcaddy.FreePort(t)
	testcaddy.Load(t, srcCaddyfile(port, cfg("")))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sub := srcDial(t, addr, "/e/lazy")
	srcRead(t, sub, 1)
	srcEventually(t, "upstreams connected", func() bool {
		return kept.open.Load() == 1 && changed.open.Load() == 1 && lazy.open.Load() == 1
	})
	if r, _ := kept.request(0); r.Header.Get("Authorization") != "Bearer s3cret" {
		t.Fatalf("Authorization %q", r.Header.Get("Authorization"))
	}

	testcaddy.Reload(t, srcCaddyfile(port, cfg("\t\t\tidle_timeout 1h\n")))
	srcEventually(t, "changed source re-opened", func() bool { return changed.requests() == 2 && changed.open.Load() == 1 })
	if n := kept.requests(); n != 1 || kept.open.Load() != 1 {
		t.Fatalf("unchanged source: %d requests, %d open; want its one connection kept", n, kept.open.Load())
	}
	if n := lazy.requests(); n != 1 || lazy.open.Load() != 1 {
		t.Fatalf("unchanged on_demand source: %d requests, %d open", n, lazy.open.Load())
	}
	// The replaced source is gone with its goroutines: each of the three
	// left has its supervisor and its puller (reading its connection).
	srcEventually(t, "the replaced source's goroutines gone", func() bool { return len(sourceGoroutines()) == 6 })

	sub.Close()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	srcEventually(t, "upstream connections closed", func() bool {
		return kept.open.Load() == 0 && changed.open.Load() == 0 && lazy.open.Load() == 0
	})
	srcEventually(t, "no source goroutine left", func() bool { return len(sourceGoroutines()) == 0 })
}

func TestSourceCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ block, want string }{
		{"source {\n}", "missing upstream URL"},
		{"source http://x {\n\ttopic /e/a\n\tformat csv\n}", "neither ndjson nor sse"},
		{"source http://x {\n\ttopic /e/a\n\tmode sometimes\n}", "mode"},
		{"source http://x {\n\ttopic /e/a\n\tbackoff 1s 1ms\n}", "backoff"},
		{"source http://x {\n\ttopic /e/a\n\tresume cookie x\n}", "resume"},
		{"source http://x {\n\ttopic /e/a\n\tbogus 1\n}", "unrecognized source option"},
		{"source http://x {\n\ttopic /e/a\n\ttopic_field b\n}", "exactly one of topic and topic_field"},
		{"source http://x {\n\ttopic /e/a\n\tresume query after\n}", "resume needs id_field"},
		{"source http://x {\n\tformat sse\n\ttopic /e/a\n\tid_field x\n}", "ndjson only"},
		{"source ftp://x {\n\ttopic /e/a\n}", "scheme"},
	} {
		err := testcaddy.ValidateCaddyfile(srcCaddyfile(testcaddy.FreePort(t), c.block))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.block, err, c.want)
		}
	}
}

func TestSourceCaddyfileAdapts(t *testing.T) {
	cfg := string(testcaddy.Adapt(t, srcCaddyfile(8080, `		source http://127.0.0.1:9000/feed?x=1 {
			format ndjson
			topic_field meta.channel
			id_field id
			event_field type
			data_field data
			resume header X-Cursor
			header Authorization "Bearer {env.FEED_TOKEN}"
			header X-Tag a
			header X-Tag b
			mode on_demand 0
			backoff 100ms 5s
			idle_timeout 1m
			max_line 64KiB
			close_when status done
		}
		source http://127.0.0.1:9001/events {
			format sse
			topic /e/relay
			mode on_demand 2m
		}
`)))
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Handle []struct {
									Sources []caddysse.SourceConfig `json:"sources"`
								} `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	got := doc.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0].Routes[0].Handle[0].Sources
	want := []caddysse.SourceConfig{{
		URL: "http://127.0.0.1:9000/feed?x=1", Format: "ndjson", TopicField: "meta.channel", IDField: "id",
		EventField: "type", DataField: "data", Resume: &caddysse.SourceResume{Header: "X-Cursor"},
		Headers: http.Header{"Authorization": {"Bearer {env.FEED_TOKEN}"}, "X-Tag": {"a", "b"}},
		Mode:    "on_demand", Linger: -1, BackoffMin: caddy.Duration(100 * time.Millisecond), BackoffMax: caddy.Duration(5 * time.Second),
		IdleTimeout: caddy.Duration(time.Minute), MaxLine: 64 << 10, CloseWhen: &caddysse.SourceCloseWhen{Field: "status", Value: "done"},
	}, {
		URL: "http://127.0.0.1:9001/events", Format: "sse", Topic: "/e/relay", Mode: "on_demand", Linger: caddy.Duration(2 * time.Minute),
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("adapted sources:\n%+v\nwant\n%+v\nfrom %s", got, want, cfg)
	}
}
