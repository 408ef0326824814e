package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// redisCaddyfile is a node on the Redis at redisURL, keeping 20 events per
// topic.
func redisCaddyfile(port int, redisURL, extra string) string {
	return nodeCaddyfile(port, 20, "store redis "+redisURL+" {\n\t\t\tprefix node-test:\n\t\t}", extra)
}

// redisPost sends a publish with the site's token and headers given as
// "Name: value".
func redisPost(t *testing.T, client *http.Client, method, addr, topic, data string, headers ...string) sitetest.Published {
	t.Helper()
	res, err := sitetest.Publish(client, method, "http://"+addr+topic, data, append([]string{"Authorization: Bearer redis-token"}, headers...)...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, topic, err)
	}
	return res
}

func redisPublish(t *testing.T, client *http.Client, addr, topic, data string, headers ...string) sitetest.Published {
	t.Helper()
	res := redisPost(t, client, http.MethodPost, addr, topic, data, headers...)
	if res.Status != http.StatusOK || len(res.IDs) != 1 {
		t.Fatalf("publishing %q to %s%s: status %d, ids %q", data, addr, topic, res.Status, res.IDs)
	}
	return res
}

// redisNext reads the next event within 10s.
func redisNext(t *testing.T, s *ssetest.Stream) ssetest.Event {
	t.Helper()
	_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	e, err := s.Next()
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return e
}

func redisXLen(t *testing.T, srv *redistest.Server, key string) string {
	t.Helper()
	reply, err := srv.Do("XLEN", key)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// Two Caddy processes on one Redis: what is sitetest.Published on one is delivered
// by the other, a subscriber moves between them with Last-Event-ID without
// gap or duplicate, a delivery id is deduplicated across them, a close on
// one ends the other's streams, and the history bound holds in Redis.
func TestRedisStoreTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	portA, portB := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Start(t, redisCaddyfile(portA, srv.URL(), ""))
	testcaddy.Start(t, redisCaddyfile(portB, srv.URL(), ""))
	a, b := fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB)
	client := &http.Client{Timeout: 10 * time.Second}

	t.Run("publish on A, subscribe on B, resume on A", func(t *testing.T) {
		onB := sitetest.DialStream(t, b, "/r/room")
		var ids []string
		for i := range 10 {
			ids = append(ids, redisPublish(t, client, a, "/r/room", fmt.Sprintf("m%d", i)).IDs[0])
		}
		for i := range 6 {
			e := redisNext(t, onB)
			if e.ID != ids[i] || e.Data != fmt.Sprintf("m%d", i) || e.Type != "message" {
				t.Fatalf("B delivered %+v, want id %s data m%d", e, ids[i], i)
			}
		}
		onB.Close() // the client drops after the 6th event...
		for i := 10; i < 15; i++ {
			ids = append(ids, redisPublish(t, client, b, "/r/room", fmt.Sprintf("m%d", i)).IDs[0])
		}
		// ...and its EventSource reconnects, landing on A.
		onA := sitetest.DialStream(t, a, "/r/room", "Last-Event-ID: "+ids[5])
		for i := 6; i < 15; i++ {
			e := redisNext(t, onA)
			if e.ID != ids[i] || e.Data != fmt.Sprintf("m%d", i) || e.Type != "message" {
				t.Fatalf("resumed on A after %s: got %+v, want id %s data m%d", ids[5], e, ids[i], i)
			}
		}
		// Nothing more (no duplicate): the next event is the next publish.
		last := redisPublish(t, client, a, "/r/room", "after").IDs[0]
		if e := redisNext(t, onA); e.ID != last || e.Data != "after" {
			t.Fatalf("after the replay A delivered %+v, want %s", e, last)
		}
	})

	t.Run("a delivery id is appended once across nodes", func(t *testing.T) {
		first := redisPublish(t, client, a, "/r/hook", "payload", "Idempotency-Key: delivery-42")
		again := redisPublish(t, client, b, "/r/hook", "payload", "Idempotency-Key: delivery-42")
		if first.Duplicate || !again.Duplicate || !slices.Equal(first.IDs, again.IDs) {
			t.Fatalf("first %+v, retry on the other node %+v", first, again)
		}
		if n := redisXLen(t, srv, "node-test:{/r/hook}:log"); n != ":1" {
			t.Fatalf("XLEN = %s, want 1", n)
		}
	})

	t.Run("history bound in Redis and reset for a trimmed id", func(t *testing.T) {
		var ids []string
		for i := range 50 {
			ids = append(ids, redisPublish(t, client, a, "/r/trim", fmt.Sprint(i)).IDs[0])
		}
		if n := redisXLen(t, srv, "node-test:{/r/trim}:log"); n != ":20" {
			t.Fatalf("XLEN = %s with history events 20", n)
		}
		s := sitetest.DialStream(t, b, "/r/trim", "Last-Event-ID: "+ids[3])
		reset := redisNext(t, s)
		if reset.Type != "reset" || !strings.Contains(reset.Data, `"reason":"expired"`) || !strings.Contains(reset.Data, ids[3]) {
			t.Fatalf("resuming after a trimmed id: first event %+v, want a reset (expired)", reset)
		}
		for i := 30; i < 50; i++ {
			if e := redisNext(t, s); e.ID != ids[i] {
				t.Fatalf("after the reset got %+v, want %s", e, ids[i])
			}
		}
	})

	t.Run("closing on A ends B's streams and later GETs", func(t *testing.T) {
		onB := sitetest.DialStream(t, b, "/r/end")
		id := redisPublish(t, client, a, "/r/end", "last words").IDs[0]
		if e := redisNext(t, onB); e.ID != id {
			t.Fatalf("B delivered %+v", e)
		}
		if res := redisPost(t, client, http.MethodDelete, a, "/r/end", ""); res.Status != http.StatusNoContent {
			t.Fatalf("DELETE answered %d", res.Status)
		}
		if e := redisNext(t, onB); e.Type != "close" {
			t.Fatalf("after the close B delivered %+v, want a close event", e)
		}
		s, err := ssetest.Dial(b, "/r/end")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s.Response.StatusCode != http.StatusNoContent {
			t.Fatalf("GET on B after the close: %s, want 204", s.Response.Status)
		}
		if res := redisPost(t, client, http.MethodPost, b, "/r/end", "late"); res.Status != http.StatusGone {
			t.Fatalf("publish on B after the close: %d, want 410", res.Status)
		}
	})

	t.Run("a client that dropped before the close gets what it missed on any node", func(t *testing.T) {
		ids := []string{
			redisPublish(t, client, a, "/r/job", "step").IDs[0],
			redisPublish(t, client, a, "/r/job", "exit 0").IDs[0],
		}
		if res := redisPost(t, client, http.MethodDelete, a, "/r/job", ""); res.Status != http.StatusNoContent {
			t.Fatalf("DELETE answered %d", res.Status)
		}
		for _, node := range []string{a, b} {
			for _, x := range []struct {
				path, header string
				want         []string
			}{
				{"/r/job", "Last-Event-ID: " + ids[0], ids[1:]},
				{"/r/job?lastEventId=earliest", "", ids},
			} {
				var headers []string
				if x.header != "" {
					headers = append(headers, x.header)
				}
				s := sitetest.DialStream(t, node, x.path, headers...)
				for _, id := range x.want {
					if e := redisNext(t, s); e.ID != id {
						t.Fatalf("%s%s (%s): got %+v, want %s", node, x.path, x.header, e, id)
					}
				}
				if e := redisNext(t, s); e.Type != "close" {
					t.Fatalf("%s%s (%s): after the missed events got %+v, want close", node, x.path, x.header, e)
				}
				_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				if e, err := s.Next(); err != io.EOF {
					t.Fatalf("%s%s (%s): after close got %+v, %v; want the end of the stream", node, x.path, x.header, e, err)
				}
			}
			s, err := ssetest.Dial(node, "/r/job", "Last-Event-ID: "+ids[1])
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if s.Response.StatusCode != http.StatusNoContent {
				t.Fatalf("GET on %s after the last event of a closed topic: %s, want 204", node, s.Response.Status)
			}
		}
	})
}

// Redis restarts (keeping its data) under a running Caddy: subscribers stay
// connected on heartbeats and get what is sitetest.Published after the restart;
// publishes meanwhile get 503 with Retry-After; every publish answered 200
// is delivered, once, in order.
//
// The Redis has a password, which the URL takes from the environment.
func TestRedisStoreRestart(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "s3cret")
	t.Setenv("SSE_TEST_REDIS_PASSWORD", "s3cret")
	port, adminPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	url := "redis://:{env.SSE_TEST_REDIS_PASSWORD}@" + srv.Addr
	testcaddy.Load(t, strings.Replace(redisCaddyfile(port, url, ""), "admin ADMIN", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	metric := func(name string) string {
		t.Helper()
		prefix := name + `{addr="` + srv.Addr + `"} `
		for _, line := range strings.Split(sitetest.AdminMetrics(t, adminPort), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				return v
			}
		}
		t.Fatalf("no %s on the admin endpoint", prefix)
		return ""
	}
	if up := metric("caddy_sse_redis_up"); up != "1" {
		t.Fatalf("caddy_sse_redis_up = %s before the outage", up)
	}
	client := &http.Client{Timeout: 10 * time.Second}

	const subscribers = 3
	streams := make([]*ssetest.Stream, subscribers)
	for i := range streams {
		streams[i] = sitetest.DialStream(t, addr, "/r/live")
	}

	var (
		mu        sync.Mutex
		acked     []string // "id data", in publish order (one publisher)
		refused   int
		noRetry   int
		attempted = map[string]bool{}
	)
	publish := func(data string) bool {
		res := redisPost(t, client, http.MethodPost, addr, "/r/live", data)
		mu.Lock()
		defer mu.Unlock()
		attempted[data] = true
		switch res.Status {
		case http.StatusOK:
			acked = append(acked, res.IDs[0]+" "+data)
			return true
		case http.StatusServiceUnavailable:
			refused++
			if res.Header.Get("Retry-After") == "" {
				noRetry++
			}
		default:
			t.Errorf("publish answered %d", res.Status)
		}
		return false
	}
	n := 0
	next := func() string { n++; return fmt.Sprintf("e%d", n) }
	for range 20 {
		if !publish(next()) {
			t.Fatal("publish refused before the outage")
		}
	}

	srv.Stop()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		publish(next())
		time.Sleep(20 * time.Millisecond)
	}
	if up := metric("caddy_sse_redis_up"); up != "0" {
		t.Fatalf("caddy_sse_redis_up = %s during the outage", up)
	}
	// A new subscriber is not refused with a status EventSource would take
	// as final: it gets an event stream that ends at once with a retry
	// hint, so the browser comes back.
	late, err := ssetest.Dial(addr, "/r/live")
	if err != nil {
		t.Fatal(err)
	}
	if late.Response.StatusCode != http.StatusOK || late.Response.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("subscribing during the outage: %s %q, want 200 text/event-stream", late.Response.Status, late.Response.Header.Get("Content-Type"))
	}
	_ = late.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if ev, err := late.Next(); err != io.EOF {
		t.Fatalf("subscribing during the outage: got %+v, %v; want the stream to end at once", ev, err)
	}
	if late.Retry() < 1000 {
		t.Fatalf("subscribing during the outage: retry %d, want a reconnection delay", late.Retry())
	}
	late.Close()
	srv.Restart()
	for ok, deadline := 0, time.Now().Add(15*time.Second); ok < 20; {
		if publish(next()) {
			ok++
		} else if time.Now().After(deadline) {
			t.Fatal("publishes still refused 15s after Redis returned")
		}
		time.Sleep(10 * time.Millisecond)
	}
	publish("marker")
	if up, n := metric("caddy_sse_redis_up"), metric("caddy_sse_redis_outages_total"); up != "1" || n != "1" {
		t.Fatalf("after the outage caddy_sse_redis_up = %s, caddy_sse_redis_outages_total = %s", up, n)
	}

	mu.Lock()
	defer mu.Unlock()
	if refused == 0 || noRetry > 0 {
		t.Fatalf("%d publishes refused during the outage, %d without Retry-After", refused, noRetry)
	}
	if !strings.HasSuffix(acked[len(acked)-1], " marker") {
		t.Fatal("the marker was not acknowledged")
	}
	for i, s := range streams {
		var got []string
		for {
			e := redisNext(t, s)
			got = append(got, e.ID+" "+e.Data)
			if e.Data == "marker" {
				break
			}
		}
		// Every acknowledged publish, in order; anything else delivered
		// can only be a publish whose answer was lost in the outage.
		var delivered []string
		for _, g := range got {
			if slices.Contains(acked, g) {
				delivered = append(delivered, g)
			} else if !attempted[g[strings.IndexByte(g, ' ')+1:]] {
				t.Fatalf("subscriber %d got %q, which nobody published", i, g)
			}
		}
		if !slices.Equal(delivered, acked) {
			t.Fatalf("subscriber %d delivered %d acknowledged events, %d were acknowledged:\n got %q\nwant %q", i, len(delivered), len(acked), delivered, acked)
		}
		if s.Comments() < 5 {
			t.Fatalf("subscriber %d saw %d heartbeats over the outage", i, s.Comments())
		}
	}
}

// A Redis that does not answer at start is reported as down, not as up, and
// Caddy starts all the same: the store serves once Redis is there.
func TestRedisStoreDownAtStart(t *testing.T) {
	dead := testcaddy.FreePort(t) // nothing listens there
	port := testcaddy.FreePort(t)
	p := testcaddy.Start(t, redisCaddyfile(port, fmt.Sprintf("redis://127.0.0.1:%d", dead), ""))
	var opened string
	for line := range strings.Lines(p.Log()) {
		if strings.Contains(line, "opened sse redis store") {
			opened = line
		}
	}
	if !strings.Contains(opened, `"up":false`) || !strings.Contains(opened, `"level":"warn"`) {
		t.Fatalf("the store's opening was logged as %q, want a warning with \"up\":false\n%s", opened, p.Log())
	}
	res := redisPost(t, &http.Client{Timeout: 10 * time.Second}, http.MethodPost, fmt.Sprintf("127.0.0.1:%d", port), "/r/x", "d")
	if res.Status != http.StatusServiceUnavailable {
		t.Fatalf("publishing with Redis down answered %d, want 503", res.Status)
	}
}

// Redis restarts without its data under two Caddy nodes that both hold the
// topic's events: neither serves them any more. A client resuming with an
// old id gets the same reset on both, then what is sitetest.Published afterwards.
func TestRedisStoreLostData(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "no") // and no RDB: nothing survives
	portA, portB := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Start(t, redisCaddyfile(portA, srv.URL(), ""))
	testcaddy.Start(t, redisCaddyfile(portB, srv.URL(), ""))
	a, b := fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB)
	client := &http.Client{Timeout: 10 * time.Second}
	var ids []string
	for i := range 3 {
		ids = append(ids, redisPublish(t, client, a, "/r/lost", fmt.Sprintf("old%d", i)).IDs[0])
	}
	for _, node := range []string{a, b} { // both nodes read the topic
		s := sitetest.DialStream(t, node, "/r/lost", "Last-Event-ID: "+ids[0])
		for _, id := range ids[1:] {
			if e := redisNext(t, s); e.ID != id {
				t.Fatalf("%s delivered %+v, want %s", node, e, id)
			}
		}
	}

	srv.Restart()
	var resets []string
	var streams []*ssetest.Stream
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	for _, node := range []string{a, b} {
		var s *ssetest.Stream
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			// Until the node reaches Redis again it turns subscribers away
			// with a retry hint.
			var err error
			s, err = ssetest.Dial(node, "/r/lost", "Last-Event-ID: "+ids[1])
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			e, err := s.Next()
			if err == nil {
				if e.Type != "reset" {
					t.Fatalf("%s resumed after %s once Redis lost it with %+v, want a reset", node, ids[1], e)
				}
				resets = append(resets, e.Data)
				break
			}
			s.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s: no reset within 10s of the restart: %v", node, err)
			}
		}
		streams = append(streams, s)
	}
	if resets[0] != resets[1] || !strings.Contains(resets[0], `"reason":"unknown"`) {
		t.Fatalf("the nodes answer an id Redis lost differently: %q", resets)
	}
	fresh := redisPublish(t, client, b, "/r/lost", "new").IDs[0]
	for i, s := range streams {
		if e := redisNext(t, s); e.ID != fresh || e.Data != "new" {
			t.Fatalf("stream %d after its reset got %+v, want %s", i, e, fresh)
		}
	}
}
