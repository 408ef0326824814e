package integration_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// countingUpstream streams NDJSON lines {"n": k} for k after the resume
// cursor (query parameter after), one every interval, and remembers which
// node asked for what.
type countingUpstream struct {
	interval time.Duration
	mu       sync.Mutex
	requests []upstreamRequest
}

type upstreamRequest struct {
	node, after string
}

func (u *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	u.mu.Lock()
	u.requests = append(u.requests, upstreamRequest{node: r.Header.Get("X-Node"), after: r.URL.Query().Get("after")})
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// The upstream resends the line the cursor names, as many do: the
	// overlap must be dropped.
	for k := max(after, 1); ; k++ {
		if _, err := fmt.Fprintf(w, "{\"n\":%d}\n", k); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(u.interval):
		}
	}
}

func (u *countingUpstream) log() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.requests...)
}

// Two nodes on one Redis run the same source: exactly one pulls it, under
// a lease. When that node stops mid-stream, or freezes (a long pause, a
// stalled VM) and comes back after its lease expired, the other takes over
// and resumes the upstream from the last id recorded in Redis; the frozen
// one's late appends are refused (fenced). A subscriber on the other node
// sees every upstream line exactly once, in order.
func TestSourceFailoverBetweenNodes(t *testing.T) {
	for _, how := range []string{"stopped", "paused"} {
		t.Run(how, func(t *testing.T) { testSourceFailover(t, how) })
	}
}

func testSourceFailover(t *testing.T, how string) {
	redis := redistest.Start(t)
	up := &countingUpstream{interval: 20 * time.Millisecond}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)

	node := func(name string) (*testcaddy.Process, string) {
		port := testcaddy.FreePort(t)
		p := testcaddy.Start(t, fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /events/* {
		store redis %s {
			prefix failover-%s:
			lease_ttl 2s
		}
		source %s/feed {
			topic /events/feed
			id_field n
			resume query after
			header X-Node %s
			backoff 50ms 200ms
		}
	}
}
`, port, redis.URL(), how, upstream.URL, name))
		return p, fmt.Sprintf("127.0.0.1:%d", port)
	}
	a, addrA := node("a")
	b, addrB := node("b")

	// Whoever asked the upstream first holds the lease.
	var holder string
	deadline := time.Now().Add(15 * time.Second)
	for holder == "" {
		if reqs := up.log(); len(reqs) > 0 {
			holder = reqs[0].node
		}
		if time.Now().After(deadline) {
			t.Fatal("no node pulled the upstream within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped, survivorAddr := a, addrB
	if holder == "b" {
		stopped, survivorAddr = b, addrA
	}

	s, err := ssetest.Dial(survivorAddr, "/events/feed?lastEventId=earliest")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Response.StatusCode != http.StatusOK {
		t.Fatalf("subscribing on the surviving node: %s", s.Response.Status)
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(45 * time.Second))

	// want is the next line the subscriber must get.
	want := 1
	read := func(until int) {
		t.Helper()
		for want <= until {
			ev, err := s.Next()
			if err != nil {
				t.Fatalf("waiting for line %d: %v", want, err)
			}
			if ev.Data != fmt.Sprintf(`{"n":%d}`, want) {
				t.Fatalf("got %s, want line %d: a line was lost or repeated", ev.Data, want)
			}
			want++
		}
	}
	read(30)
	stoppedAt := time.Now()
	switch how {
	case "stopped":
		if err := stopped.Stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		read(want + 60)
	case "paused":
		if err := stopped.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// The lease (2s) expires, the other node takes over.
		read(want + 150)
		if err := stopped.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// The woken node still has the lines its upstream connection
		// buffered while it was frozen: none of them may reach the topic.
		read(want + 60)
	}

	var takeover *upstreamRequest
	for _, r := range up.log() {
		if r.node != holder {
			takeover = &r
			break
		}
	}
	if takeover == nil {
		t.Fatalf("the surviving node never asked the upstream: %+v", up.log())
	}
	if takeover.after == "" {
		t.Errorf("the surviving node did not resume the upstream (no cursor): %+v", up.log())
	}
	t.Logf("node %s %s; the other node resumed the upstream after line %s; the subscriber got lines 1..%d exactly once, %v after the stop",
		holder, how, takeover.after, want-1, time.Since(stoppedAt).Round(time.Millisecond))
}

// A reload and a stop end a node's source before its Redis store closes:
// the log says the upstream closed and the store closed, and never that
// the lease was lost or the store was closed under the source.
func TestSourceStopsBeforeItsStoreCloses(t *testing.T) {
	redis := redistest.Start(t)
	up := &countingUpstream{interval: 20 * time.Millisecond}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	port := testcaddy.FreePort(t)
	config := func(events int) string {
		return fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /events/* {
		history {
			events %d
		}
		store redis %s {
			prefix unload:
		}
		source %s/feed {
			topic /events/feed
			id_field n
			resume query after
			backoff 50ms 200ms
		}
	}
}
`, port, events, redis.URL(), upstream.URL)
	}
	p := testcaddy.Start(t, config(100))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s, err := ssetest.Dial(addr, "/events/feed?lastEventId=earliest")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := s.Next(); err != nil {
		t.Fatalf("no line from the source: %v", err)
	}
	s.Close()
	if err := p.Reload(config(200)); err != nil {
		t.Fatal(err)
	}
	// The source goes on under the new config.
	s, err = ssetest.Dial(addr, "/events/feed")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := s.Next(); err != nil {
		t.Fatalf("no line from the source after the reload: %v", err)
	}
	s.Close()
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	log := p.Log()
	for _, bad := range []string{"lease lost", "store is closed", "store: closed"} {
		if strings.Contains(log, bad) {
			t.Errorf("the log says %q:\n%s", bad, log)
		}
	}
	if !strings.Contains(log, `"msg":"closed sse redis store"`) {
		t.Errorf("the log does not say the store closed:\n%s", log)
	}
}
