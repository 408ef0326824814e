package integration_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// Two nodes on one Redis: each node's admin API counts the subscribers of
// both (each node reports its own to Redis), says which node has them, and
// stops counting a node that went away; publishing, disconnecting and
// closing through either node's admin API act on the shared topic.
func TestAdminAcrossNodesOnRedis(t *testing.T) {
	testAdminAcrossNodes(t, redistest.Start(t).URL(), "")
}

// The same on a Redis Cluster of three masters: presence keys share one
// slot, the disconnect request crosses the cluster's Pub/Sub.
func TestAdminAcrossNodesOnRedisCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 0)
	var urls []string
	for _, a := range c.Addrs() {
		urls = append(urls, "redis://"+a)
	}
	testAdminAcrossNodes(t, strings.Join(urls, " "), "mode cluster")
}

func testAdminAcrossNodes(t *testing.T, urls, mode string) {
	start := func() (*testcaddy.Process, string) {
		port := testcaddy.FreePort(t)
		p := testcaddy.Start(t, fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /events/* {
		store redis %s {
			prefix admin-cluster:
			%s
		}
	}
}
`, port, urls, mode))
		return p, fmt.Sprintf("127.0.0.1:%d", port)
	}
	a, _ := start()
	b, siteB := start()
	adminA, adminB := "http://"+a.Admin, "http://"+b.Admin
	room := topicURL(adminA, "/events/room")

	sub := sitetest.DialStream(t, siteB, "/events/room")
	var one clusterTopic
	last := ""
	defer func() {
		if t.Failed() {
			t.Logf("last answer of node a: %s", last)
		}
	}()
	waitFor(t, "node a to count node b's subscriber", func() bool {
		status, body := adminDo(t, http.MethodGet, room, "")
		last = fmt.Sprint(status, " ", body)
		if status != http.StatusOK {
			return false
		}
		adminJSONBody(t, body, &one)
		return one.Subscribers == 1
	})
	if one.Store != "redis:admin-cluster:" || one.Transports == nil || one.Transports.HTTP1Parked != 1 || len(one.Nodes) != 2 ||
		one.Nodes[0].Subscribers != 0 || one.Nodes[1].Subscribers != 1 || one.Nodes[0].Node == one.Nodes[1].Node || !strings.Contains(one.Note, "cannot be inspected") {
		t.Errorf("node a describes /events/room as %+v", one)
	}
	var list struct{ Topics []clusterTopic }
	adminJSON(t, adminA+"/sse/topics", &list)
	if len(list.Topics) != 1 || list.Topics[0].Topic != "/events/room" || list.Topics[0].Subscribers != 1 || list.Topics[0].Events != nil {
		t.Errorf("node a lists %+v", list.Topics)
	}

	// Published through node a's admin API, delivered by node b.
	if status, body := adminDo(t, http.MethodPost, room, "hello"); status != http.StatusOK {
		t.Fatalf("publish through node a: %d %s", status, body)
	}
	if ev := nextEvent(t, sub, 10*time.Second); ev.Data != "hello" {
		t.Errorf("subscriber on node b got %+v", ev)
	}
	// Disconnecting through node a reaches node b's subscriber, through
	// Redis; it comes back and resumes.
	status, body := adminDo(t, http.MethodDelete, room+"/subscribers?reason=moving", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":0`) || !strings.Contains(body, `"other_nodes_subscribers":1`) {
		t.Errorf("disconnect on node a: %d %s", status, body)
	}
	if got, ended := sub.ReadToEnd(10 * time.Second); !ended || !strings.Contains(string(got), ": moving\n\nretry: ") {
		t.Errorf("subscriber on node b got %q (ended %v)", got, ended)
	}
	// Node b disconnects its own.
	sitetest.DialStream(t, siteB, "/events/room")
	status, body = adminDo(t, http.MethodDelete, topicURL(adminB, "/events/room")+"/subscribers", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Errorf("disconnect on node b: %d %s", status, body)
	}

	// A node that goes away stops being counted.
	sitetest.DialStream(t, siteB, "/events/room")
	waitFor(t, "node a to count the new subscriber", func() bool {
		status, body := adminDo(t, http.MethodGet, room, "")
		adminJSONBody(t, body, &one)
		return status == http.StatusOK && one.Subscribers == 1
	})
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node b's count to expire", func() bool {
		status, _ := adminDo(t, http.MethodGet, room, "")
		return status == http.StatusNotFound
	})

	// Closing through the admin API closes the shared topic.
	if status, body := adminDo(t, http.MethodDelete, room, ""); status != http.StatusNoContent {
		t.Errorf("close through node a: %d %s", status, body)
	}
}

// clusterTopic is what GET /sse/topics/<topic> answers (the fields this
// test reads), and an entry of GET /sse/topics.
type clusterTopic struct {
	Topic       string `json:"topic"`
	Store       string `json:"store"`
	Subscribers int    `json:"subscribers"`
	Events      *int   `json:"events"`
	Note        string `json:"note"`
	Transports  *struct {
		HTTP1Parked int `json:"http1_parked"`
	} `json:"transports"`
	Nodes []struct {
		Node        string `json:"node"`
		Subscribers int    `json:"subscribers"`
	} `json:"nodes"`
}

func topicURL(admin, topic string) string { return sitetest.AdminTopicURL(admin, topic) }

func adminDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	return sitetest.Do(t, method, url, body)
}

func adminJSONBody(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
}

func adminJSON(t *testing.T, url string, v any) {
	t.Helper()
	status, body := adminDo(t, http.MethodGet, url, "")
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	adminJSONBody(t, body, v)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	sitetest.WaitFor(t, what, 20*time.Second, cond)
}

func nextEvent(t *testing.T, s *ssetest.Stream, wait time.Duration) ssetest.Event {
	t.Helper()
	return sitetest.NextEvent(t, s, wait)
}
