package integration_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/sitetest"
)

// TestHABench measures appends/s and deliveries/s through two Caddy
// processes (publishers on one node, subscribers on the other) for each
// Redis mode. It runs only with SSE_HA_BENCH set:
//
//	SSE_HA_BENCH=1 go test -run TestHABench -v ./integration/
//
// Load: 16 publishers POST single events round robin over 8 topics for
// 10 s on node A; 400 subscribers (50 per topic) read them on node B.
func TestHABench(t *testing.T) {
	if os.Getenv("SSE_HA_BENCH") == "" {
		t.Skip("set SSE_HA_BENCH=1 to run the benchmark")
	}
	setups := []struct {
		name  string
		store func(t *testing.T) string
	}{
		{"standalone", func(t *testing.T) string {
			srv := redistest.Start(t, "--appendfsync", "everysec")
			return "store redis " + srv.URL() + " {\n\t\t\tprefix bench:\n\t\t}"
		}},
		{"sentinel", func(t *testing.T) string { return sentinelStore(t, 0) }},
		{"sentinel, min_replicas_ack 1", func(t *testing.T) string { return sentinelStore(t, 1) }},
		{"cluster, 3 masters", func(t *testing.T) string {
			c := redistest.StartCluster(t, 3, 0)
			var urls []string
			for _, a := range c.Addrs() {
				urls = append(urls, "redis://"+a)
			}
			return "store redis " + strings.Join(urls, " ") + " {\n\t\t\tmode cluster\n\t\t\tprefix bench:\n\t\t}"
		}},
	}
	var rows []string
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			a, d := haBenchRun(t, s.store(t))
			rows = append(rows, fmt.Sprintf("| %s | %.0f | %.0f |", s.name, a, d))
		})
	}
	t.Logf("\n| Redis | appends/s | deliveries/s |\n|---|---|---|\n%s", strings.Join(rows, "\n"))
}

func sentinelStore(t *testing.T, ack int) string {
	master := redistest.Start(t, "--appendfsync", "everysec")
	redistest.StartReplica(t, master, "--appendfsync", "everysec")
	ss := redistest.StartSentinels(t, master, "sse", 3, 1)
	var urls []string
	for _, a := range ss.Addrs() {
		urls = append(urls, "redis://"+a)
	}
	extra := ""
	if ack > 0 {
		extra = fmt.Sprintf("\n\t\t\tmin_replicas_ack %d", ack)
	}
	return "store redis " + strings.Join(urls, " ") + " {\n\t\t\tmode sentinel\n\t\t\tmaster sse\n\t\t\tprefix bench:" + extra + "\n\t\t}"
}

func haBenchRun(t *testing.T, store string) (appends, deliveries float64) {
	nodes := startNodes(t, 2, store, "")
	const topics, perTopic, publishers = 8, 50, 16
	const d = 10 * time.Second
	var received atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range topics * perTopic {
		s := sitetest.DialStream(t, nodes[1], fmt.Sprintf("/r/b%d", i%topics))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_ = s.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				e, err := s.Next()
				if err != nil {
					select {
					case <-stop:
						return
					default:
					}
					if strings.Contains(err.Error(), "timeout") {
						continue
					}
					return
				}
				if e.Type == "message" {
					received.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	var sent atomic.Int64
	tr := &http.Transport{MaxIdleConnsPerHost: publishers}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	start := time.Now()
	var pw sync.WaitGroup
	for p := range publishers {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := 0; time.Since(start) < d; i++ {
				res, err := sitetest.Publish(client, http.MethodPost, fmt.Sprintf("http://%s/r/b%d", nodes[0], (p+i)%topics),
					"payload of a typical size, about one hundred bytes long, for the benchmark of several nodes....",
					"Authorization: Bearer redis-token")
				if err == nil && res.Status == http.StatusOK {
					sent.Add(1)
				}
			}
		}()
	}
	pw.Wait()
	elapsed := time.Since(start)
	// Deliveries still in flight count towards the same window.
	want := sent.Load() * perTopic
	for deadline := time.Now().Add(10 * time.Second); received.Load() < want && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	total := time.Since(start)
	close(stop)
	if got := received.Load(); got < want {
		t.Errorf("delivered %d of %d", got, want)
	}
	appends = float64(sent.Load()) / elapsed.Seconds()
	deliveries = float64(received.Load()) / total.Seconds()
	t.Logf("%d appends in %v (%.0f/s); %d deliveries in %v (%.0f/s)", sent.Load(), elapsed.Round(time.Millisecond), appends,
		received.Load(), total.Round(time.Millisecond), deliveries)
	return appends, deliveries
}
