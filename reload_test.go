package caddysse_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// reloadCaddyfile serves topics under /r/ with a bearer-protected publish
// block; heartbeat varies so that each reload really changes the config.
func reloadCaddyfile(port int, heartbeat string, extra string) string {
	return fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	sse /r/* {
		heartbeat %s
		drain_window 2s
		publish {
			bearer reload-token
		}
		%s
	}
}
`, port, heartbeat, extra)
}

// postEvent publishes one event and returns its id. Like a webhook sender
// it retries a request whose connection broke (a keep-alive connection of
// the old config closes during a reload), and its Idempotency-Key makes the
// retry safe: a repeat appends nothing.
func postEvent(t testing.TB, client *http.Client, url, data string) string {
	t.Helper()
	key := fmt.Sprintf("%s-%d", t.Name(), postSeq.Add(1))
	var res sitetest.Published
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if res, err = sitetest.Publish(client, http.MethodPost, url, data, "Authorization: Bearer reload-token", "Idempotency-Key: "+key); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("publishing: %v", err)
		return ""
	}
	id, err := res.OneID()
	if err != nil {
		t.Errorf("publishing: %v", err)
		return ""
	}
	return id
}

var postSeq atomic.Int64

// resumingClient follows a topic the way EventSource does: when its stream
// ends it reconnects with Last-Event-ID set to the last id it received.
type resumingClient struct {
	addr, path string
	mu         sync.Mutex
	data       []string
	reconnects []time.Time
	err        error
}

func (c *resumingClient) run(stop <-chan struct{}) {
	last := ""
	dialFailures := 0
	for {
		var headers []string
		if last != "" {
			headers = append(headers, "Last-Event-ID: "+last)
		}
		s, err := ssetest.Dial(c.addr, c.path, headers...)
		if err != nil {
			// As EventSource does on a network error: try again. A
			// connection accepted by the old server just as it shuts down
			// is reset; that is Caddy's reload, not a lost event.
			if dialFailures++; dialFailures > 50 {
				c.fail(err)
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if s.Response.StatusCode != http.StatusOK {
			s.Close()
			c.fail(fmt.Errorf("subscribe answered %s", s.Response.Status))
			return
		}
		go func() { <-stop; s.Close() }()
		for {
			ev, err := s.Next()
			if err != nil {
				break
			}
			if ev.Type != "message" {
				c.fail(fmt.Errorf("unexpected %s event: %s", ev.Type, ev.Data))
			}
			last = ev.ID
			c.mu.Lock()
			c.data = append(c.data, ev.Data)
			c.mu.Unlock()
		}
		s.Close()
		select {
		case <-stop:
			return
		default:
		}
		c.mu.Lock()
		c.reconnects = append(c.reconnects, time.Now())
		c.mu.Unlock()
	}
}

func (c *resumingClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *resumingClient) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.data)
}

// A reload while 2,000 streams are open and events are being published:
// the old config's streams drain over the window, every client reconnects
// to the new config and resumes, and no client misses or repeats an event.
func TestReloadWithOpenStreamsLosesAndDuplicatesNothing(t *testing.T) {
	const clients, events = 2000, 120
	port := testcaddy.FreePort(t)
	testcaddy.Load(t, reloadCaddyfile(port, "15s", ""))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	topicURL := "http://" + addr + "/r/reload-many"
	publisher := &http.Client{Timeout: 10 * time.Second}

	// Every client starts after this first event, so each must end with
	// exactly the events sitetest.Published after it.
	first := postEvent(t, publisher, topicURL, "0")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	cs := make([]*resumingClient, clients)
	for i := range cs {
		cs[i] = &resumingClient{addr: addr, path: "/r/reload-many?lastEventId=" + first}
		wg.Add(1)
		go func() { defer wg.Done(); cs[i].run(stop) }()
	}
	defer func() { close(stop); wg.Wait() }()

	want := make([]string, events)
	reloadedAt := time.Time{}
	for i := range events {
		want[i] = fmt.Sprint(i + 1)
		if i == events/3 {
			testcaddy.Reload(t, reloadCaddyfile(port, "16s", ""))
			reloadedAt = time.Now()
		}
		postEvent(t, publisher, topicURL, want[i])
		time.Sleep(15 * time.Millisecond) // a steady stream across the drain window
	}

	deadline := time.Now().Add(60 * time.Second)
	for _, c := range cs {
		for len(c.received()) < events && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var lost, duplicated, reconnected int
	var spread []time.Duration
	for i, c := range cs {
		got := c.received()
		if c.err != nil {
			t.Errorf("client %d: %v", i, c.err)
		}
		if !slices.Equal(got, want) {
			seen := map[string]int{}
			for _, d := range got {
				seen[d]++
			}
			for _, d := range want {
				if seen[d] == 0 {
					lost++
				} else if seen[d] > 1 {
					duplicated += seen[d] - 1
				}
			}
			if i < 3 {
				t.Errorf("client %d received %d events, want %d in order", i, len(got), len(want))
			}
		}
		c.mu.Lock()
		if len(c.reconnects) > 0 {
			reconnected++
			spread = append(spread, c.reconnects[0].Sub(reloadedAt))
		}
		c.mu.Unlock()
	}
	if lost+duplicated > 0 {
		t.Errorf("across %d clients: %d events lost, %d duplicated", clients, lost, duplicated)
	}
	if reconnected != clients {
		t.Errorf("%d of %d clients reconnected after the reload; want all (the old config must end its streams)", reconnected, clients)
	}
	if len(spread) > 0 {
		slices.Sort(spread)
		q := func(p float64) time.Duration { return spread[int(p*float64(len(spread)-1))].Round(time.Millisecond) }
		t.Logf("reload with %d streams, %d events: lost %d, duplicated %d; reconnections after reload: min %v p50 %v p90 %v max %v",
			clients, events, lost, duplicated, q(0), q(0.5), q(0.9), q(1))
	}
}

// History bounds changed by a reload apply at once, keeping the newest
// events that still fit.
func TestReloadAppliesNewHistoryBounds(t *testing.T) {
	port := testcaddy.FreePort(t)
	testcaddy.Load(t, reloadCaddyfile(port, "15s", "history {\n\t\t\tevents 10\n\t\t}"))
	url := fmt.Sprintf("http://127.0.0.1:%d/r/reload-bounds", port)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 10 {
		postEvent(t, client, url, fmt.Sprint(i))
	}
	testcaddy.Reload(t, reloadCaddyfile(port, "15s", "history {\n\t\t\tevents 4\n\t\t}"))

	// Right after a reload the old server may still accept a connection
	// and then close it unanswered; a client retries, as EventSource does.
	var s *ssetest.Stream
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s, err = ssetest.Dial(fmt.Sprintf("127.0.0.1:%d", port), "/r/reload-bounds?lastEventId=earliest"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for len(got) < 4 {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, ev.Data)
	}
	if want := []string{"6", "7", "8", "9"}; !slices.Equal(got, want) {
		t.Errorf("retained after shrinking history to 4: %v, want %v", got, want)
	}
}
