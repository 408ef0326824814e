package integration_test

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// multiPath is the URL of a multi-topic stream on topics.
func multiPath(base string, topics ...string) string {
	q := url.Values{"topic": topics}
	return base + "?" + q.Encode()
}

type published1 struct{ topic, id, data string }

// checkMulti checks events against what was published, in order, ids
// included.
func checkMulti(t *testing.T, got []ssetest.Event, want []published1) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(got), got, len(want))
	}
	for i, e := range got {
		w := want[i]
		if e.ID != w.id || e.Data != w.data || e.Type != "message" {
			t.Fatalf("event %d: %+v, want id %s data %s", i, e, w.id, w.data)
		}
	}
}

// File store: one id resumes every topic after a restart.
func TestMultiTopicFileRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	client := &http.Client{Timeout: 10 * time.Second}
	topics := []string{"/f/a", "/f/b", "/f/c"}
	port := testcaddy.FreePort(t)
	p := testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var want []published1
	for i := range 9 {
		tp := topics[i%3]
		data := fmt.Sprint("d", i)
		id, err := filePublish(client, addr, tp, data)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, published1{tp, id, data})
	}
	st := sitetest.DialStream(t, addr, multiPath("/f/x", topics...), "Last-Event-ID: earliest")
	var got []ssetest.Event
	for range 5 {
		got = append(got, redisNext(t, st))
	}
	checkMulti(t, got, want[:5])
	st.Close()
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	port = testcaddy.FreePort(t)
	testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	r := sitetest.DialStream(t, addr, multiPath("/f/x", topics...), "Last-Event-ID: "+got[4].ID)
	got = nil
	for range 4 {
		got = append(got, redisNext(t, r))
	}
	checkMulti(t, got, want[5:])
	id, err := filePublish(client, addr, "/f/b", "after")
	if err != nil {
		t.Fatal(err)
	}
	checkMulti(t, []ssetest.Event{redisNext(t, r)}, []published1{{"/f/b", id, "after"}})
}

// Redis: the composite cursor resumes on another node, exactly.
func TestMultiTopicRedisOtherNode(t *testing.T) {
	srv := redistest.Start(t)
	portA, portB := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Start(t, redisCaddyfile(portA, srv.URL(), "multi_topic_event_name topic"))
	testcaddy.Start(t, redisCaddyfile(portB, srv.URL(), "multi_topic_event_name topic"))
	a, b := fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB)
	client := &http.Client{Timeout: 10 * time.Second}
	topics := []string{"/r/m1", "/r/m2", "/r/m3", "/r/m4"}
	onA := sitetest.DialStream(t, a, multiPath("/r/x", topics...))
	byTopic := map[string][]string{}
	for i := range 12 {
		tp := topics[i%len(topics)]
		data := fmt.Sprint("e", i)
		redisPublish(t, client, b, tp, data)
		byTopic[tp] = append(byTopic[tp], data)
	}
	got := map[string][]string{}
	var last string
	for range 7 {
		e := redisNext(t, onA)
		if !strings.HasPrefix(e.ID, "m1.") {
			t.Fatalf("event %+v: id is not a composite cursor", e)
		}
		got[e.Type] = append(got[e.Type], e.Data)
		last = e.ID
	}
	onA.Close()
	for i := 12; i < 16; i++ {
		tp := topics[i%len(topics)]
		data := fmt.Sprint("e", i)
		redisPublish(t, client, a, tp, data)
		byTopic[tp] = append(byTopic[tp], data)
	}
	if len(last) > 1024 {
		t.Fatalf("cursor of %d bytes", len(last))
	}
	onB := sitetest.DialStream(t, b, multiPath("/r/x", topics...), "Last-Event-ID: "+last)
	for range 16 - 7 {
		e := redisNext(t, onB)
		if e.Type == "reset" {
			t.Fatalf("resumed with a reset: %+v", e)
		}
		got[e.Type] = append(got[e.Type], e.Data)
	}
	for _, tp := range topics {
		if !slices.Equal(got[tp], byTopic[tp]) {
			t.Fatalf("topic %s: got %v, want %v", tp, got[tp], byTopic[tp])
		}
	}
}
