package integration_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// nodeCaddyfile is one node of a shared store: a site serving /r/* with
// history of events per topic, the store block given whole, and extra lines
// in the sse block.
func nodeCaddyfile(port, events int, store, extra string) string {
	return fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /r/* {
		heartbeat 200ms
		history {
			events %d
		}
		%s
		publish {
			bearer redis-token
		}
		%s
	}
}
`, port, events, store, extra)
}

// haCaddyfile is a node whose store block is given whole, keeping 500
// events per topic.
func haCaddyfile(port int, store, extra string) string {
	return nodeCaddyfile(port, 500, store, extra)
}

func startNodes(t *testing.T, n int, store, extra string) []string {
	t.Helper()
	var addrs []string
	for range n {
		port := testcaddy.FreePort(t)
		testcaddy.Start(t, haCaddyfile(port, store, extra))
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	return addrs
}

// haPublisher publishes events "e<i>" with idempotency keys, alternating
// between nodes and retrying a refused publish (503 with Retry-After)
// until it is acknowledged.
type haPublisher struct {
	t       *testing.T
	client  *http.Client
	nodes   []string
	topic   string
	acked   []string // "id data"
	refused int
}

func (p *haPublisher) publish(i int) {
	p.t.Helper()
	data := fmt.Sprintf("e%d", i)
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		node := p.nodes[(i+attempt)%len(p.nodes)]
		res, err := sitetest.Publish(p.client, http.MethodPost, "http://"+node+p.topic, data,
			"Authorization: Bearer redis-token", "Idempotency-Key: "+data)
		switch {
		case err == nil && res.Status == http.StatusOK && len(res.IDs) == 1:
			p.acked = append(p.acked, res.IDs[0]+" "+data)
			return
		case err == nil && res.Status == http.StatusServiceUnavailable:
			if res.Header.Get("Retry-After") == "" {
				p.t.Errorf("503 without Retry-After")
			}
			p.refused++
		default:
			p.t.Fatalf("publishing %s on %s: %v (status %d)", data, node, err, res.Status)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not acknowledged within 30s (%d refusals)", data, p.refused)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectStream reads len(want) events from s and compares "id data".
func expectStream(t *testing.T, name string, s *ssetest.Stream, want []string) {
	t.Helper()
	_ = s.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i, w := range want {
		e, err := s.Next()
		if err != nil {
			t.Fatalf("%s: reading event %d of %d: %v", name, i+1, len(want), err)
		}
		if got := e.ID + " " + e.Data; got != w || e.Type != "message" {
			t.Fatalf("%s: event %d is %+v, want %q (lost, repeated or reordered)", name, i+1, e, w)
		}
	}
}

// Two Caddy processes on a master with one replica and three sentinels,
// with min_replicas_ack 1 and a password taken from the environment. The
// master is killed (-9) mid-stream and stays dead: publishes are answered
// 503 with Retry-After until Sentinel promotes the replica, then succeed
// (the new master has no replica left, so it acknowledges on its own). Subscribers on both nodes stay
// connected and get every acknowledged event exactly once, in order; a
// client resuming on either node gets the rest.
func TestRedisSentinelFailover(t *testing.T) {
	const pw = "s3cret"
	auth := []string{"--requirepass", pw, "--masterauth", pw}
	master := redistest.Start(t, auth...)
	replica := redistest.StartReplica(t, master, auth...)
	ss := redistest.StartSentinels(t, master, "sse", 3, 1, "sentinel auth-pass sse "+pw)
	t.Setenv("SSE_TEST_HA_PASSWORD", pw)
	var urls []string
	for _, a := range ss.Addrs() {
		urls = append(urls, "redis://:{env.SSE_TEST_HA_PASSWORD}@"+a)
	}
	store := fmt.Sprintf(`store redis %s {
			mode sentinel
			master sse
			min_replicas_ack 1 500ms
			prefix ha:
		}`, strings.Join(urls, " "))
	nodes := startNodes(t, 2, store, "")
	client := &http.Client{Timeout: 10 * time.Second}
	streams := map[string]*ssetest.Stream{}
	for i, n := range nodes {
		streams[fmt.Sprint("node ", i)] = sitetest.DialStream(t, n, "/r/live")
	}
	p := &haPublisher{t: t, client: client, nodes: nodes, topic: "/r/live"}
	const total = 60
	for i := range total {
		if i == 20 {
			if p.refused != 0 {
				t.Fatalf("%d publishes refused before the failover", p.refused)
			}
			master.Crash() // and it stays dead
		}
		p.publish(i)
		time.Sleep(20 * time.Millisecond)
	}
	if p.refused == 0 {
		t.Error("no publish was refused while the master was down")
	}
	if got := ss.MasterAddr(); got != replica.Addr {
		t.Errorf("the sentinels name %s as master, want the promoted replica %s", got, replica.Addr)
	}
	for name, s := range streams {
		expectStream(t, name, s, p.acked)
	}
	for _, n := range nodes {
		id := p.acked[10][:strings.IndexByte(p.acked[10], ' ')]
		expectStream(t, "resumed on "+n, sitetest.DialStream(t, n, "/r/live", "Last-Event-ID: "+id), p.acked[11:])
	}
	t.Logf("%d publishes refused (503) during the failover", p.refused)
}

// routingUpstream streams NDJSON lines {"t": topic, "n": k} for k after
// the resume cursor, cycling through topics, one every interval.
type routingUpstream struct {
	topics   []string
	interval time.Duration
	mu       sync.Mutex
	asked    []string
}

func (u *routingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	u.mu.Lock()
	u.asked = append(u.asked, r.Header.Get("X-Node")+"@"+r.URL.Query().Get("after"))
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	for k := max(after, 1); ; k++ {
		if _, err := fmt.Fprintf(w, "{\"t\":%q,\"n\":%d}\n", u.topics[k%len(u.topics)], k); err != nil {
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

// Two Caddy processes on a Redis Cluster of three masters, each with a
// replica. One source, under a lease, routes upstream lines by a field to
// topics on every master (fenced in each topic's own slot). Subscribers
// on both nodes, and one multi-topic stream over the three topics, get
// each topic's lines exactly once, in order, across the failover of one
// master; publishes through the HTTP endpoint go on, and a client resumes
// on the other node.
func TestRedisClusterNodes(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 1)
	const prefix = "hc:"
	var topics []string
	masters := map[*redistest.Server]bool{}
	for i := 0; len(topics) < 3 && i < 100; i++ {
		name := fmt.Sprintf("/r/t%d", i)
		if m := c.MasterOf(prefix + "{" + name + "}:log"); m != nil && !masters[m] {
			masters[m] = true
			topics = append(topics, name)
		}
	}
	if len(topics) < 3 {
		t.Fatalf("found topics on %d masters only", len(topics))
	}
	up := &routingUpstream{topics: topics, interval: 15 * time.Millisecond}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	var urls []string
	for _, a := range c.Addrs() {
		urls = append(urls, "redis://"+a)
	}
	store := fmt.Sprintf(`store redis %s {
			mode cluster
			prefix %s
			lease_ttl 2s
			min_replicas_ack 1 500ms
		}`, strings.Join(urls, " "), prefix)
	source := fmt.Sprintf(`source %s/feed {
			topic_field t
			id_field n
			resume query after
			backoff 50ms 200ms
		}`, upstream.URL)
	nodes := startNodes(t, 2, store, source)
	type sub struct {
		name  string
		s     *ssetest.Stream
		topic int
		next  int // the next line k expected
	}
	var subs []*sub
	for i, topic := range topics {
		for j, n := range nodes {
			subs = append(subs, &sub{name: fmt.Sprintf("%s on node %d", topic, j), s: sitetest.DialStream(t, n, topic+"?lastEventId=earliest"), topic: i})
		}
	}
	// readLines checks that sub gets lines of its topic in order, each
	// once, up to line until.
	readLines := func(x *sub, until int) string {
		t.Helper()
		_ = x.s.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		var lastID string
		for {
			if x.next == 0 {
				x.next = 1
			}
			for x.next%len(topics) != x.topic {
				x.next++
			}
			if x.next > until {
				return lastID
			}
			e, err := x.s.Next()
			if err != nil {
				t.Fatalf("%s: waiting for line %d: %v", x.name, x.next, err)
			}
			if want := fmt.Sprintf(`{"t":%q,"n":%d}`, topics[x.topic], x.next); e.Data != want {
				t.Fatalf("%s: got %s, want %s (a line lost, repeated or reordered)", x.name, e.Data, want)
			}
			lastID = e.ID
			x.next++
		}
	}
	// One stream over the three topics (three slots, three masters).
	q := url.Values{"topic": topics, "lastEventId": {"earliest"}}
	multi := sitetest.DialStream(t, nodes[0], "/r/all?"+q.Encode())
	multiNext := map[string]int{}
	readMulti := func(until int) {
		t.Helper()
		_ = multi.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		done := func() bool {
			all := true
			for i, topic := range topics {
				k := max(multiNext[topic], 1)
				for k%len(topics) != i {
					k++
				}
				multiNext[topic] = k
				all = all && k > until
			}
			return all
		}
		for !done() {
			e, err := multi.Next()
			if err != nil {
				t.Fatalf("multi-topic stream: %v", err)
			}
			if e.Type == "reset" {
				t.Fatalf("multi-topic stream: reset %s", e.Data)
			}
			var line struct {
				T string
				N int
			}
			if json.Unmarshal([]byte(e.Data), &line) != nil || line.T == "" {
				continue
			}
			if line.N != multiNext[line.T] {
				t.Fatalf("multi-topic stream: %s line %d, want %d (lost, repeated or reordered)", line.T, line.N, multiNext[line.T])
			}
			multiNext[line.T]++
			done() // the topic's next line
		}
	}
	for _, x := range subs {
		readLines(x, 30)
	}
	readMulti(30)
	key0 := prefix + "{" + topics[0] + "}:log"
	victim := c.MasterOf(key0)
	victim.Crash()
	// Its replica takes over; the old master comes back (a supervisor)
	// as the new master's replica, so acknowledgements resume.
	deadline := time.Now().Add(20 * time.Second)
	for m := c.MasterOf(key0); m == nil || m == victim; m = c.MasterOf(key0) {
		if time.Now().After(deadline) {
			t.Fatalf("no replica took over %s", topics[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	victim.Restart()
	for _, x := range subs {
		readLines(x, 150)
	}
	readMulti(150)
	// A client that read topics[1] up to some id on node 0 resumes on
	// node 1.
	x := subs[2]
	id := readLines(x, 160)
	resumed := &sub{name: "resumed on node 1", s: sitetest.DialStream(t, nodes[1], topics[1], "Last-Event-ID: "+id), topic: 1, next: x.next}
	readLines(resumed, 200)
	// Plain publishes go to every master too.
	client := &http.Client{Timeout: 10 * time.Second}
	for i, topic := range topics {
		p := &haPublisher{t: t, client: client, nodes: nodes, topic: topic}
		p.publish(1000 + i)
	}
	t.Logf("upstream asked: %q", up.asked)
}
