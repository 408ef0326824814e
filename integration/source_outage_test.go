package integration_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// feedUpstream is an upstream with a history, as a real change feed has:
// it produces line k (`{"id":k}`) interval×k after it starts, whether or
// not anyone is connected, until finish. A connection with ?after=k gets
// every line after k produced so far, then the new ones as they come.
type feedUpstream struct {
	start    time.Time
	interval time.Duration

	mu      sync.Mutex
	last    int // 0 while producing; the last line once finished
	cursors []string
}

func newFeedUpstream(t *testing.T, interval time.Duration) (*feedUpstream, string) {
	u := &feedUpstream{start: time.Now(), interval: interval}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return u, srv.URL
}

// produced is the last line that exists now.
func (u *feedUpstream) produced() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last > 0 {
		return u.last
	}
	return int(time.Since(u.start) / u.interval)
}

// finish stops producing and returns the last line.
func (u *feedUpstream) finish() int {
	n := u.produced()
	u.mu.Lock()
	u.last = n
	u.mu.Unlock()
	return n
}

// resumedFrom returns the cursor of every request after the first.
func (u *feedUpstream) resumedFrom() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.cursors[min(1, len(u.cursors)):]...)
}

func (u *feedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	u.mu.Lock()
	u.cursors = append(u.cursors, r.URL.Query().Get("after"))
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(u.interval)
	defer tick.Stop()
	for next := after + 1; ; {
		for n := u.produced(); next <= n; next++ {
			if _, err := fmt.Fprintf(w, "{\"id\":%d}\n", next); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// feedReader subscribes to a topic as EventSource does: from the start of
// what the topic retains, and after a dropped connection again with the
// last id it got. It records every event it receives.
type feedReader struct {
	addr, path string

	mu       sync.Mutex
	events   []ssetest.Event
	stream   *ssetest.Stream
	stopping bool
	done     chan struct{}
}

func startFeedReader(t *testing.T, addr, path string) *feedReader {
	r := &feedReader{addr: addr, path: path, done: make(chan struct{})}
	go r.run()
	t.Cleanup(r.stop)
	return r
}

func (r *feedReader) run() {
	defer close(r.done)
	last := ""
	for {
		headers := []string{}
		path := r.path + "?lastEventId=earliest"
		if last != "" {
			path, headers = r.path, []string{"Last-Event-ID: " + last}
		}
		s, err := ssetest.Dial(r.addr, path, headers...)
		r.mu.Lock()
		if r.stopping {
			r.mu.Unlock()
			if err == nil {
				s.Close()
			}
			return
		}
		if err == nil {
			r.stream = s
		}
		r.mu.Unlock()
		if err == nil {
			for {
				ev, err := s.Next()
				if err != nil {
					break
				}
				r.mu.Lock()
				r.events = append(r.events, ev)
				r.mu.Unlock()
				last = ev.ID
			}
			s.Close()
		}
		time.Sleep(100 * time.Millisecond) // EventSource's retry, shortened
	}
}

func (r *feedReader) stop() {
	r.mu.Lock()
	r.stopping = true
	if r.stream != nil {
		r.stream.Close()
	}
	r.mu.Unlock()
	<-r.done
}

// highest is the largest line number received so far.
func (r *feedReader) highest() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	top := 0
	for _, ev := range r.events {
		if n, ok := lineNumber(ev.Data); ok && n > top {
			top = n
		}
	}
	return top
}

func (r *feedReader) received() []ssetest.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ssetest.Event(nil), r.events...)
}

func lineNumber(data string) (int, bool) {
	s, ok := strings.CutPrefix(data, `{"id":`)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(s, "}"))
	return n, err == nil
}

// checkOnceInOrder fails the test unless events are exactly lines 1..last,
// in order: nothing lost, nothing repeated, nothing but lines.
func checkOnceInOrder(t *testing.T, what string, events []ssetest.Event, last int) {
	t.Helper()
	want := 1
	for _, ev := range events {
		n, ok := lineNumber(ev.Data)
		switch {
		case !ok:
			t.Fatalf("%s: after line %d got a %q event %q, not a line", what, want-1, ev.Type, ev.Data)
		case n < want:
			t.Fatalf("%s: line %d again after line %d (a duplicate)", what, n, want-1)
		case n > want:
			t.Fatalf("%s: line %d after line %d: lines %d..%d were lost", what, n, want-1, want, n-1)
		}
		want++
	}
	if want-1 != last {
		t.Fatalf("%s: got lines 1..%d, want 1..%d", what, want-1, last)
	}
}

// A source appends an upstream to a topic on Redis while Redis freezes
// (SIGSTOP for 3s, as in a stalled VM or a long fork) and then dies
// (SIGKILL) and comes back on the same port with its data (append-only
// file, fsync always). The upstream streams throughout. A subscriber gets
// every upstream line exactly once, in order, and so does a client that
// replays the topic from the start afterwards: an unavailable store stops
// the source, which resumes the upstream from the last line it appended,
// rather than skipping lines.
//
// With a short lease the source also loses its lease during the freeze and
// takes it back from the cursor recorded in Redis.
func TestSourceSurvivesStoreOutage(t *testing.T) {
	for _, c := range []struct{ name, leaseTTL string }{
		{"lease kept", "10s"},
		{"lease expired in the freeze", "1s"},
	} {
		t.Run(c.name, func(t *testing.T) { testSourceStoreOutage(t, c.leaseTTL) })
	}
}

func testSourceStoreOutage(t *testing.T, leaseTTL string) {
	redis := redistest.Start(t)
	up, upstreamURL := newFeedUpstream(t, 10*time.Millisecond)
	port, adminPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	sse /e/* {
		heartbeat 200ms
		history {
			events 100000
		}
		store redis %s {
			prefix outage:
			lease_ttl %s
		}
		source %s/feed {
			topic /e/feed
			id_field id
			resume query after
			backoff 50ms 500ms
		}
	}
}
`, adminPort, port, redis.URL(), leaseTTL, upstreamURL))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	reader := startFeedReader(t, addr, "/e/feed")

	waitFor := func(what string, line int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for reader.highest() < line {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the subscriber has lines up to %d after 30s, want %d", what, reader.highest(), line)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("before the outage", 50)

	redis.Freeze()
	time.Sleep(3 * time.Second)
	redis.Thaw()
	waitFor("after the freeze", up.produced()+20)

	redis.Crash()
	redis.Restart()
	waitFor("after the restart", up.produced()+20)

	last := up.finish()
	waitFor("the end of the feed", last)
	time.Sleep(500 * time.Millisecond) // room for a late duplicate to show
	checkOnceInOrder(t, "the live subscriber", reader.received(), last)

	replay := sitetest.DialStream(t, addr, "/e/feed?lastEventId=earliest")
	_ = replay.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all []ssetest.Event
	for len(all) < last {
		ev, err := replay.Next()
		if err != nil {
			t.Fatalf("replaying the topic after %d events: %v", len(all), err)
		}
		all = append(all, ev)
	}
	_ = replay.Conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if ev, err := replay.Next(); err == nil {
		all = append(all, ev)
	}
	checkOnceInOrder(t, "a replay of the topic", all, last)

	// Waiting for the store is not skipping.
	for _, line := range strings.Split(sitetest.AdminMetrics(t, adminPort), "\n") {
		if strings.HasPrefix(line, "caddy_sse_source_lines_skipped_total{") && !strings.HasSuffix(line, " 0") {
			t.Errorf("lines counted as skipped: %s", line)
		}
	}
	t.Logf("%d lines, each delivered once; the source resumed the upstream after %q", last, up.resumedFrom())
}

// Lines bad in themselves are skipped and counted by a reason from a fixed
// set, never by the error's text, so the metric stays bounded whatever the
// upstream sends; every reason is reported, at zero too.
func TestSourceSkipsCountedByReason(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"id\":1,\"msg\":\"ok\"}\nnot json\n{\"msg\":\"no id\"}\n{\"id\":2,\"msg\":\"%s\"}\n{\"id\":3,\"msg\":\"ok\"}\n",
			strings.Repeat("x", 300))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(upstream.Close)
	port, adminPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	sse /e/* {
		source %s/feed {
			topic /e/skips
			id_field id
			data_field msg
			max_line 200
		}
	}
}
`, adminPort, port, upstream.URL))
	s := sitetest.DialStream(t, fmt.Sprintf("127.0.0.1:%d", port), "/e/skips?lastEventId=earliest")
	_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{"ok", "ok"} {
		ev, err := s.Next()
		if err != nil || ev.Data != want {
			t.Fatalf("got %+v, %v; want the good lines only", ev, err)
		}
	}
	series := map[string]string{}
	for _, line := range strings.Split(sitetest.AdminMetrics(t, adminPort), "\n") {
		if rest, ok := strings.CutPrefix(line, `caddy_sse_source_lines_skipped_total{reason="`); ok {
			reason, _, _ := strings.Cut(rest, `"`)
			series[reason] = line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	want := map[string]string{
		"too_long": "1", "malformed": "1", "missing_field": "1",
		"bad_topic": "0", "too_large": "0", "topic_closed": "0", "topic_limit": "0",
	}
	if fmt.Sprint(series) != fmt.Sprint(want) {
		t.Fatalf("caddy_sse_source_lines_skipped_total by reason: %v, want %v", series, want)
	}
}
