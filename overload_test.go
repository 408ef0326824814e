package caddysse_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

func overloadCaddyfile(adminPort, port int) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	sse /o/* {
		write_timeout 2s
		history {
			events 1000
		}
		publish {
			bearer reload-token
		}
	}
}
`, adminPort, port)
}

// publishBurst publishes n events of about 1 KiB one by one and returns
// events/s. Each event's data starts with its index.
func publishBurst(t *testing.T, url string, n int) float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	pad := strings.Repeat("p", 1<<10)
	start := time.Now()
	for i := range n {
		postEvent(t, client, url, strconv.Itoa(i)+" "+pad)
	}
	return float64(n) / time.Since(start).Seconds()
}

// A subscriber that reads one byte a second while 10,000 events are
// sitetest.Published never holds the publisher back, nor the other subscribers: its
// writes time out and it is cut off, and memory for it is only its cursor.
func TestSlowConsumerSlowsNobody(t *testing.T) {
	const n = 10000
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, overloadCaddyfile(adminPort, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	before := sitetest.Scrape(t, adminPort)
	baseline := publishBurst(t, "http://"+addr+"/o/slow-baseline", n/4)

	// The slow reader: a raw connection read one byte a second.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /o/slow HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	slowDone := make(chan int)
	go func() {
		r := bufio.NewReaderSize(conn, 16) // small buffer: each Read takes little
		read := 0
		for {
			if _, err := r.ReadByte(); err != nil {
				slowDone <- read
				return
			}
			read++
			time.Sleep(time.Second)
		}
	}()

	// A normal subscriber on the same topic.
	fast, err := ssetest.Dial(addr, "/o/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	_ = fast.Conn.SetReadDeadline(time.Now().Add(120 * time.Second))
	received := make(chan int)
	go func() {
		count := 0
		for count < n {
			ev, err := fast.Next()
			if err != nil {
				break
			}
			if strings.Fields(ev.Data)[0] != strconv.Itoa(count) {
				t.Errorf("fast subscriber: event %d has data %q", count, ev.Data)
				break
			}
			count++
		}
		received <- count
	}()

	// 10 MiB in all: far more than the slow reader's socket buffers hold.
	rate := publishBurst(t, "http://"+addr+"/o/slow", n)
	if got := <-received; got != n {
		t.Errorf("fast subscriber received %d of %d events", got, n)
	}
	t.Logf("publish rate: %.0f events/s without a slow subscriber, %.0f events/s with one reading 1 byte/s (ratio %.2f)", baseline, rate, rate/baseline)

	// Its blocked write times out (write_timeout 2s) and it is cut off.
	deadline := time.Now().Add(30 * time.Second)
	for sitetest.Scrape(t, adminPort)["caddy_sse_slow_consumer_disconnects_total"]-before["caddy_sse_slow_consumer_disconnects_total"] < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow subscriber was not disconnected within 30s of a 2s write_timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.Close()
	<-slowDone
}

// A subscriber whose cursor falls behind the retained history (it stops
// reading while more than the history is sitetest.Published) gets a reset event and
// continues with what is retained, ids still increasing.
func TestSubscriberBehindHistoryGetsReset(t *testing.T) {
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	// A write timeout far longer than the publishing takes, even on a
	// loaded machine: this subscriber must fall behind, not be cut off.
	cfg := strings.Replace(overloadCaddyfile(adminPort, port), "events 1000", "events 50", 1)
	testcaddy.Load(t, strings.Replace(cfg, "write_timeout 2s", "write_timeout 60s", 1))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s, err := ssetest.Dial(addr, "/o/behind")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// 8 KiB events: a few hundred fill the loopback socket buffers, so the
	// server's writer blocks while history moves on past its cursor.
	big := strings.Repeat("x", 8<<10)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 2000 {
		postEvent(t, client, "http://"+addr+"/o/behind", fmt.Sprintf("%d %s", i, big))
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	var resets, events int
	lastSeq := -1
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("after %d events: %v", events, err)
		}
		if ev.Type == "reset" {
			var gap struct{ Reason, Requested, ResumeAfter string }
			_ = json.Unmarshal([]byte(ev.Data), &gap)
			if !strings.Contains(ev.Data, `"reason":"expired"`) {
				t.Errorf("reset data %s, want reason expired", ev.Data)
			}
			resets++
			continue
		}
		seq, _ := strconv.Atoi(strings.Fields(ev.Data)[0])
		if seq <= lastSeq {
			t.Fatalf("event %d after %d: not increasing", seq, lastSeq)
		}
		lastSeq = seq
		events++
		if seq == 1999 {
			break
		}
	}
	if resets == 0 {
		t.Errorf("received %d events and no reset, but history holds only 50 of 2000", events)
	}
	t.Logf("behind subscriber: %d events, %d resets", events, resets)
}

// The module's metrics appear on the admin endpoint with the values a
// scripted run produced.
func TestMetricsOnAdminEndpoint(t *testing.T) {
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, overloadCaddyfile(adminPort, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The counters are process-wide: streams of earlier tests' configs may
	// still be draining (drain_window), and each adds what it delivered
	// when it ends. Start once they are all gone.
	before := sitetest.Scrape(t, adminPort)
	for quiet := time.Now().Add(15 * time.Second); before["caddy_sse_subscribers"] != 0 && time.Now().Before(quiet); {
		time.Sleep(50 * time.Millisecond)
		before = sitetest.Scrape(t, adminPort)
	}

	s, err := ssetest.Dial(addr, "/o/metrics")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 3 {
		postEvent(t, client, "http://"+addr+"/o/metrics", strconv.Itoa(i))
	}
	for range 3 {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// Rejected: no credentials.
	resp, err := client.Post("http://"+addr+"/o/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	during := sitetest.Scrape(t, adminPort)
	s.Close()

	var wg sync.WaitGroup
	wg.Wait()
	checks := []struct {
		name string
		want float64
	}{
		{"caddy_sse_subscriptions_total", 1},
		{"caddy_sse_events_published_total", 3},
		{`caddy_sse_publish_rejects_total{reason="auth"}`, 1},
		{"caddy_sse_subscribers", 1},
	}
	for _, c := range checks {
		if got := during[c.name] - before[c.name]; got != c.want {
			t.Errorf("%s grew by %v, want %v", c.name, got, c.want)
		}
	}
	// Deliveries are counted when a stream ends.
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := sitetest.Scrape(t, adminPort)
		if after["caddy_sse_events_delivered_total"]-before["caddy_sse_events_delivered_total"] == 3 &&
			after["caddy_sse_subscribers"] == before["caddy_sse_subscribers"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stream closed: delivered grew by %v (want 3), subscribers %v (want %v)",
				after["caddy_sse_events_delivered_total"]-before["caddy_sse_events_delivered_total"],
				after["caddy_sse_subscribers"], before["caddy_sse_subscribers"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Past the process-wide subscriber limit a subscriber is turned away with a
// 200 stream that says which limit, gives a retry hint and ends (a 503
// would stop EventSource for good), and a slot freed by a leaving
// subscriber is available again.
func TestGlobalSubscriberLimit(t *testing.T) {
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, strings.Replace(overloadCaddyfile(adminPort, port), "write_timeout 2s", "write_timeout 2s\n\t\tlimits {\n\t\t\tsubscribers 3\n\t\t}", 1))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// Streams of earlier tests may still be ending, so open until refused
	// rather than assuming the count starts at zero.
	var open []*ssetest.Stream
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	var refused []byte
	for i := 0; i < 10 && refused == nil; i++ {
		s, err := ssetest.Dial(addr, fmt.Sprintf("/o/global-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if s.Response.StatusCode != http.StatusOK {
			t.Fatalf("subscriber %d answered %s; a status other than 200 makes EventSource give up for good", i, s.Response.Status)
		}
		if body, ended := s.ReadToEnd(500 * time.Millisecond); ended {
			refused = body
			s.Close()
			continue
		}
		open = append(open, s)
	}
	if refused == nil || len(open) > 3 {
		t.Fatalf("%d streams open and none turned away; the limit is 3", len(open))
	}
	// Turned away: a comment naming the limit, a retry hint, the end.
	if !regexp.MustCompile(`^: subscriber limit of 3 reached\n\nretry: [0-9]+\n\n$`).Match(refused) {
		t.Errorf("past the limit the stream carried %q, want a comment naming the limit and a retry hint", refused)
	}
	if got := sitetest.Scrape(t, adminPort)[`caddy_sse_subscribe_rejects_total{reason="subscribers"}`]; got < 1 {
		t.Errorf("subscribe_rejects_total{reason=subscribers} = %v, want at least 1", got)
	}
	if len(open) == 0 {
		t.Skip("earlier streams still held every slot")
	}
	open[0].Close()
	open = open[1:]
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := ssetest.Dial(addr, "/o/global-again")
		if err != nil {
			t.Fatal(err)
		}
		if _, ended := s.ReadToEnd(300 * time.Millisecond); !ended {
			open = append(open, s)
			break
		}
		s.Close()
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed stream never came back")
		}
		time.Sleep(50 * time.Millisecond)
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

	// 24 MiB were sitetest.Published, more than the socket buffers hold: its write
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
