package caddysse_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
)

// An HTTP/1.1 stream carries the same bytes whether or not it is detached
// from net/http: each event flushed before the next is sitetest.Published, and a
// closed topic ends the chunked body properly, so a strict client sees a
// clean end rather than a truncated response.
func TestDetachedStreamEndsItsChunkedBodyCleanly(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		t.Run("detach "+detach, func(t *testing.T) {
			s := startSite(t, `
	sse /d/* {
		detach `+detach+`
		retry 2s`+openPublish+`
	}`)
			path := topic(t, "/d/", "x")
			conn, br := rawGet(t, s.addr, "HTTP/1.1", path)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the response head: %v", err)
			}
			if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
				t.Fatalf("got %d with transfer encoding %q, want 200 chunked", resp.StatusCode, resp.TransferEncoding)
			}
			events := ssetest.NewReader(resp.Body)
			var ids []string
			for i := 1; i <= 3; i++ {
				ids = append(ids, s.publishID(path, fmt.Sprintf("event %d", i)))
				_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
				ev, err := events.Next()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if ev.ID != ids[i-1] || ev.Data != fmt.Sprintf("event %d", i) {
					t.Fatalf("event %d: got id %q data %q", i, ev.ID, ev.Data)
				}
			}
			if r := s.do(http.MethodDelete, path, ""); r.status != http.StatusNoContent {
				t.Fatalf("DELETE answered %d", r.status)
			}
			ev, err := events.Next()
			if err != nil || ev.Type != "close" {
				t.Fatalf("after DELETE: got %+v, %v; want the close event", ev, err)
			}
			if _, err := events.Next(); err != io.EOF {
				t.Fatalf("after the close event: %v, want a clean end of the body (io.EOF)", err)
			}
			if events.Retry() != 2000 {
				t.Errorf("retry %d, want 2000", events.Retry())
			}
			// Nothing follows the body: the server closes the connection.
			_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
			if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("after the body: read %d bytes, %v; want the connection closed", n, err)
			}
		})
	}
}

// HTTP/1.0 has no chunked encoding: the body is the stream itself and ends
// with the connection.
func TestHTTP10StreamEndsWithTheConnection(t *testing.T) {
	s := startSite(t, `
	sse /d/* {`+openPublish+`
	}`)
	path := topic(t, "/d/", "old")
	conn, br := rawGet(t, s.addr, "HTTP/1.0", path)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response head: %v", err)
	}
	if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) != 0 {
		t.Fatalf("got %d with transfer encoding %q, want 200 without one", resp.StatusCode, resp.TransferEncoding)
	}
	id := s.publishID(path, "hello")
	s.do(http.MethodDelete, path, "")
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	want := "id: " + id + "\ndata: hello\n\n"
	if !strings.Contains(string(body), want) || !strings.Contains(string(body), "event: close\n") {
		t.Fatalf("body %q lacks %q or the close event", body, want)
	}
}

// A client that leaves a quiet topic gives its subscriber slot back at
// once, even with heartbeats off: nothing is written that could fail, so
// the hang-up itself must be noticed.
func TestLeavingAQuietTopicFreesTheSlot(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		t.Run("detach "+detach, func(t *testing.T) {
			s := startSite(t, `
	sse /q/* {
		detach `+detach+`
		heartbeat off
		limits {
			subscribers_per_topic 1
		}
	}`)
			path := topic(t, "/q/", "quiet")
			for round := range 3 {
				conn, br := rawGet(t, s.addr, "HTTP/1.1", path)
				deadline := time.Now().Add(waitLimit)
				for {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
					if resp.StatusCode == http.StatusOK {
						break
					}
					conn.Close()
					if time.Now().After(deadline) {
						t.Fatalf("round %d: still %d after the previous subscriber left", round, resp.StatusCode)
					}
					time.Sleep(10 * time.Millisecond)
					conn, br = rawGet(t, s.addr, "HTTP/1.1", path)
				}
				conn.Close()
			}
		})
	}
}

// rawGet sends a GET over a fresh TCP connection, closed when the test
// ends.
func rawGet(t *testing.T, addr, proto, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s %s\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, proto, addr); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	return conn, bufio.NewReader(conn)
}
