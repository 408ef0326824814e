package caddysse_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
)

// Under an access log (a site with `log`, so Caddy counts the bytes of
// every response), a detached stream is as lean as without one: it
// delivers, is seen when its client hangs up on a quiet topic (its slot is
// free at once, which needs the socket under Caddy's counting wrapper),
// and writes nothing Caddy's logger reads concurrently (-race).
func TestDetachedStreamUnderAccessLog(t *testing.T) {
	s := startSite(t, `
	log {
		output discard
	}
	sse /a/* {
		heartbeat off
		limits {
			subscribers_per_topic 1
		}`+openPublish+`
	}`)
	path := topic(t, "/a/", "logged")
	st := s.subscribe(path)
	st.await("the position", func() bool { return st.parser.LastEventID != "" })
	id := s.publishID(path, "hello")
	if e := st.next(); e.ID != id {
		t.Fatalf("got %+v, want %s", e, id)
	}
	st.close()
	deadline := time.Now().Add(waitLimit)
	for {
		next, err := ssetest.Dial(s.addr, path)
		if err != nil {
			t.Fatal(err)
		}
		ok := next.Response.StatusCode == http.StatusOK && next.Response.Header.Get("Content-Type") == "text/event-stream"
		body, _ := next.ReadToEnd(200 * time.Millisecond)
		next.Close()
		// Turned away (the slot still taken) is a stream that says so and ends.
		if ok && !strings.Contains(string(body), "subscriber limit") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a client that hung up was not freed within %v", waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
