package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait is the generous bound of every wait in these tests: they wait for
// things to happen, never assert how fast.
const wait = 20 * time.Second

func newStore(t *testing.T) *replay.Memory {
	s := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent})
	t.Cleanup(func() { s.Close() })
	return s
}

// events waits until topic holds at least n events and returns the data
// of all of them. It fails the test after wait.
func events(t *testing.T, store replay.Store, topic string, n int) []string {
	t.Helper()
	cur, err := store.Subscribe(context.Background(), topic, replay.Earliest, replay.GapReplay)
	if err != nil && !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("topic %s closed", topic)
	}
	defer cur.Close()
	var got []string
	deadline := time.After(wait)
	for len(got) < n {
		page, err := cur.Next(1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			got = append(got, string(e.Data))
		}
		if len(got) >= n || page.Closed {
			break
		}
		if len(page.Events) == 0 {
			select {
			case <-page.Wait:
			case <-deadline:
				t.Fatalf("topic %s: %d events after %s, want %d: %q", topic, len(got), wait, n, got)
			}
		}
	}
	return got
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newSource(t *testing.T, cfg Config, store replay.Store) *Source {
	t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, 20*time.Millisecond
	}
	s, err := New(cfg, store, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Destruct() })
	return s
}

// script is an upstream whose successive connections are served by
// successive handlers; the last one serves every later connection.
type script struct {
	mu       sync.Mutex
	handlers []http.HandlerFunc
	requests []*http.Request
	open     atomic.Int64
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.open.Add(1)
	defer s.open.Add(-1)
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, r.Clone(context.Background()))
	h := s.handlers[min(n, len(s.handlers)-1)]
	s.mu.Unlock()
	h(w, r)
}

func (s *script) request(i int) *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.requests) {
		return s.requests[i]
	}
	return nil
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func serve(t *testing.T, handlers ...http.HandlerFunc) (*script, string) {
	sc := &script{handlers: handlers}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	return sc, srv.URL
}

// writeLines writes NDJSON lines and flushes.
func writeLines(w http.ResponseWriter, ls ...string) {
	for _, l := range ls {
		fmt.Fprintln(w, l)
	}
	w.(http.Flusher).Flush()
}

func idLines(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf(`{"id":%d,"msg":"line %d"}`, i, i))
	}
	return out
}

// hold keeps a stream open until the client goes.
func hold(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func TestResumeDropsOverlap(t *testing.T) {
	sc, url := serve(t,
		func(w http.ResponseWriter, r *http.Request) {
			writeLines(w, idLines(1, 5)...)
			fmt.Fprint(w, `{"id":6,"msg":"li`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-line
		},
		func(w http.ResponseWriter, r *http.Request) {
			writeLines(w, idLines(3, 10)...) // overlapping tail
			hold(w, r)
		})
	store := newStore(t)
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t", IDField: "id", DataField: "msg"}, ResumeQuery: "after"}, store)
	got := events(t, store, "/t", 10)
	want := make([]string, 10)
	for i := range want {
		want[i] = fmt.Sprintf("line %d", i+1)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %q", got)
	}
	if c := sc.request(1).URL.Query().Get("after"); c != "5" {
		t.Fatalf("resumed with after=%q, want 5", c)
	}
	// The last append reaches the store a moment before the source counts
	// it: wait for the count, then check both.
	eventually(t, "the source to count its appends", func() bool { return src.Stats().Appended >= 10 })
	if st := src.Stats(); st.Duplicates != 3 || st.Appended != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStatusesAnd204(t *testing.T) {
	fail := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) }
	sc, url := serve(t, fail, fail,
		func(w http.ResponseWriter, r *http.Request) { writeLines(w, "a", "b") }, // then EOF: reconnect
		func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	store := newStore(t)
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t"}}, store)
	if got := events(t, store, "/t", 2); strings.Join(got, ",") != "a,b" {
		t.Fatalf("got %q", got)
	}
	eventually(t, "204 ends the source", src.Ended)
	if _, err := store.Subscribe(context.Background(), "/t", "", replay.GapReplay); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("subscribe after 204: %v", err)
	}
	n := sc.count()
	time.Sleep(50 * time.Millisecond)
	if sc.count() != n || n != 4 {
		t.Fatalf("%d requests, want 4 and no more after 204", sc.count())
	}
}

func TestIdleTimeoutReconnects(t *testing.T) {
	sc, url := serve(t,
		func(w http.ResponseWriter, r *http.Request) { writeLines(w, idLines(1, 2)...); hold(w, r) },
		func(w http.ResponseWriter, r *http.Request) { writeLines(w, idLines(3, 4)...); hold(w, r) })
	store := newStore(t)
	newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t", IDField: "id", DataField: "id"},
		ResumeHeader: "X-After", IdleTimeout: 100 * time.Millisecond}, store)
	if got := events(t, store, "/t", 4); strings.Join(got, ",") != "1,2,3,4" {
		t.Fatalf("got %q", got)
	}
	if c := sc.request(1).Header.Get("X-After"); c != "2" {
		t.Fatalf("X-After %q", c)
	}
}

func TestCloseWhenRouted(t *testing.T) {
	_, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeLines(w, `{"ch":"/a","s":"run"}`, `{"ch":"/b","s":"run"}`, `{"ch":"/a","s":"done"}`, `{"ch":"/b","s":"run2"}`)
		hold(w, r)
	})
	store := newStore(t)
	newSource(t, Config{URL: url, Mapping: Mapping{TopicField: "ch", DataField: "s", CloseField: "s", CloseValue: "done"}}, store)
	if got := events(t, store, "/b", 2); strings.Join(got, ",") != "run,run2" {
		t.Fatalf("/b got %q", got)
	}
	if _, err := store.Subscribe(context.Background(), "/a", "", replay.GapReplay); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("/a not closed: %v", err)
	}
}

func TestOnDemand(t *testing.T) {
	sc, url := serve(t, func(w http.ResponseWriter, r *http.Request) { writeLines(w, "x"); hold(w, r) })
	store := newStore(t)
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t"}, OnDemand: true, Linger: 30 * time.Millisecond}, store)
	time.Sleep(50 * time.Millisecond)
	if sc.count() != 0 {
		t.Fatal("on_demand source connected without demand")
	}
	r1 := src.Acquire()
	r2 := src.Acquire()
	eventually(t, "connected", func() bool { return sc.open.Load() == 1 })
	r1()
	r1() // twice is once
	time.Sleep(60 * time.Millisecond)
	if sc.open.Load() != 1 {
		t.Fatal("closed while a consumer remains")
	}
	r2()
	eventually(t, "closed after linger", func() bool { return sc.open.Load() == 0 })
	r3 := src.Acquire()
	eventually(t, "reconnected", func() bool { return sc.open.Load() == 1 && sc.count() == 2 })
	r3()
}

// Two sources of the same lineage (a reload's old and new config) running
// at once append every line once, and the newer one resumes from the
// older one's cursor.
func TestLineageHandover(t *testing.T) {
	var next atomic.Int64
	sc, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		after := 0
		fmt.Sscan(r.URL.Query().Get("after"), &after)
		// Every connection replays two lines before the cursor.
		from := max(after-1, 1)
		for i := from; ; i++ {
			if i > int(next.Load()) {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(2 * time.Millisecond):
					i--
					continue
				}
			}
			writeLines(w, idLines(i, i)...)
		}
	})
	store := newStore(t)
	cfg := Config{URL: url, Mapping: Mapping{Topic: "/t", IDField: "id", DataField: "id"}, ResumeQuery: "after"}
	old := newSource(t, cfg, store)
	next.Store(5)
	events(t, store, "/t", 5)
	cfg.IdleTimeout = time.Minute // a changed config of the same source
	newer := newSource(t, cfg, store)
	eventually(t, "second connection", func() bool { return sc.count() == 2 })
	if c := sc.request(1).URL.Query().Get("after"); c != "5" {
		t.Fatalf("newer source resumed after %q", c)
	}
	next.Store(12)
	time.Sleep(20 * time.Millisecond)
	old.Destruct()
	next.Store(20)
	got := events(t, store, "/t", 20)
	for i, d := range got {
		if d != fmt.Sprint(i+1) {
			t.Fatalf("events %q", got)
		}
	}
	if n := len(events(t, store, "/t", 20)); n != 20 {
		t.Fatalf("%d events", n)
	}
	_ = newer
}

func TestDestructWhileBackingOff(t *testing.T) {
	_, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	store := newStore(t)
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t"}}, store)
	eventually(t, "a request", func() bool { return src.Stats().Requests == 1 })
	done := make(chan struct{})
	go func() { src.Destruct(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Destruct blocked by Retry-After")
	}
}

func TestSkipsAreCounted(t *testing.T) {
	_, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("\xEF\xBB\xBF{\"id\":1}\r\nnot json\r\n\r\n" + strings.Repeat("y", 300) + "\n{\"x\":1}\n{\"id\":2}"))
	})
	store := newStore(t)
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t", IDField: "id"}, MaxLine: 100}, store)
	if got := events(t, store, "/t", 2); strings.Join(got, ",") != `{"id":1},{"id":2}` {
		t.Fatalf("got %q", got)
	}
	eventually(t, "skips counted", func() bool { return src.Stats().Skipped >= 3 })
}

func TestFormatSSE(t *testing.T) {
	sc, url := serve(t,
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "retry: 1\n\nid: 1\nevent: a\ndata: x\ndata: y\n\nid: 2\ndata: z\n\n")
		},
		func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "id: 2\ndata: z\n\nid: 3\nevent: b\ndata: w\n\n")
			w.(http.Flusher).Flush()
			hold(w, r)
		})
	store := newStore(t)
	newSource(t, Config{URL: url, Format: FormatSSE, Mapping: Mapping{Topic: "/t"}}, store)
	got := events(t, store, "/t", 3)
	if strings.Join(got, "|") != "x\ny|z|w" {
		t.Fatalf("got %q", got)
	}
	if c := sc.request(1).Header.Get("Last-Event-ID"); c != "2" {
		t.Fatalf("Last-Event-ID %q", c)
	}
	cur, _ := store.Subscribe(context.Background(), "/t", replay.Earliest, replay.GapReplay)
	defer cur.Close()
	page, _ := cur.Next(10)
	if page.Events[0].Type != "a" || page.Events[1].Type != "message" || page.Events[2].Type != "b" {
		t.Fatalf("types %q %q %q", page.Events[0].Type, page.Events[1].Type, page.Events[2].Type)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "http://x", Mapping: Mapping{Topic: "/t"}}
	for name, mut := range map[string]func(*Config){
		"no url":          func(c *Config) { c.URL = "" },
		"ftp":             func(c *Config) { c.URL = "ftp://x" },
		"both topics":     func(c *Config) { c.Mapping.TopicField = "a" },
		"no topic":        func(c *Config) { c.Mapping.Topic = "" },
		"resume no id":    func(c *Config) { c.ResumeQuery = "after" },
		"sse topic_field": func(c *Config) { c.Format = FormatSSE; c.Mapping.IDField = "x" },
		"bad format":      func(c *Config) { c.Format = "csv" },
		"bad path":        func(c *Config) { c.Mapping.IDField = "a..b" },
		"bad backoff":     func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond },
		"bad topic":       func(c *Config) { c.Mapping.Topic = "a\nb" },
	} {
		c := ok
		mut(&c)
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := ok.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

// A flood of bad lines is counted one by one but logged at most once per
// interval (plus what is pending when the connection ends), never per line.
func TestSkipLogIsRateLimited(t *testing.T) {
	_, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(w, "bad line %d\n", i)
		}
		writeLines(w, `{"id":"ok"}`)
		hold(w, r)
	})
	store := newStore(t)
	core, logs := observer.New(zap.InfoLevel)
	src, err := New(Config{URL: url, Mapping: Mapping{Topic: "/t", IDField: "id"}}, store, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	events(t, store, "/t", 1)
	src.Destruct()
	if st := src.Stats(); st.Skipped != 2000 {
		t.Fatalf("skipped %d, want 2000", st.Skipped)
	}
	skipLogs := logs.FilterMessage("skipped upstream lines").All()
	if len(skipLogs) == 0 || len(skipLogs) > 2 {
		t.Fatalf("%d skip logs for 2000 bad lines", len(skipLogs))
	}
	var total int64
	for _, e := range skipLogs {
		total += e.ContextMap()["skipped"].(int64)
	}
	if total != 2000 {
		t.Fatalf("skip logs account for %d lines, want 2000", total)
	}
	if first := skipLogs[0].ContextMap(); first["last_line"] != int64(1) || first["last_sample"] != "bad line 0" {
		t.Fatalf("first skip log %v", first)
	}
}
