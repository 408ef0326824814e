package caddysse_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// Two nodes on one Redis: each node's admin API counts the subscribers of
// both (each node reports its own to Redis), says which node has them, and
// stops counting a node that went away; publishing, disconnecting and
// closing through either node's admin API act on the shared topic.
func TestAdminAcrossNodesOnRedis(t *testing.T) {
	redis := redistest.Start(t)
	start := func() (*testcaddy.Process, string) {
		port := testcaddy.FreePort(t)
		p := testcaddy.Start(t, fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /events/* {
		store redis %s {
			prefix admin-cluster:
		}
	}
}
`, port, redis.URL()))
		return p, fmt.Sprintf("127.0.0.1:%d", port)
	}
	a, _ := start()
	b, siteB := start()
	adminA, adminB := "http://"+a.Admin, "http://"+b.Admin
	room := topicURL(adminA, "/events/room")

	sub := dialStream(t, siteB, "/events/room")
	var one adminTopic
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
	var list adminList
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
	// Node a disconnects its own subscribers only, and says who has others.
	status, body := adminDo(t, http.MethodDelete, room+"/subscribers", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":0`) || !strings.Contains(body, `"other_nodes_subscribers":1`) {
		t.Errorf("disconnect on node a: %d %s", status, body)
	}
	status, body = adminDo(t, http.MethodDelete, topicURL(adminB, "/events/room")+"/subscribers?reason=moving", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Errorf("disconnect on node b: %d %s", status, body)
	}
	if got, ended := sub.ReadToEnd(10 * time.Second); !ended || !strings.Contains(string(got), ": moving\n") {
		t.Errorf("kicked subscriber got %q", got)
	}

	// A node that goes away stops being counted.
	dialStream(t, siteB, "/events/room")
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
