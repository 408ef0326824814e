package caddysse_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// httpsCaddyfile is an https:// site with an internal certificate, the sse
// listener wrapper before tls, and the given sse options.
func httpsCaddyfile(addr, sseOptions string) string {
	return testcaddy.Format(fmt.Sprintf(`{
	admin off
	skip_install_trust
	local_certs
	default_sni 127.0.0.1
	auto_https disable_redirects
	servers {
		listener_wrappers {
			sse
			tls
		}
	}
}

https://%s {
	tls internal
	sse /t/* {
		%s
		publish {
			allow_unauthenticated
		}
	}
}
`, addr, sseOptions))
}

// startHTTPSSite loads httpsCaddyfile and waits for its certificate.
func startHTTPSSite(t *testing.T, sseOptions string) *site {
	t.Helper()
	s := &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))}
	s.url = "https://" + s.addr
	tr := testcaddy.InsecureTransport()
	tr.DisableKeepAlives = true
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	testcaddy.Load(t, httpsCaddyfile(s.addr, sseOptions))
	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := s.client.Get(s.url + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("https site not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// dialTLSStream opens an HTTP/1.1-over-TLS event stream.
func dialTLSStream(t *testing.T, addr, path string) (*tls.Conn, *ssetest.Reader) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr)
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return c, ssetest.NewReader(resp.Body)
}

// Through the sse listener wrapper an HTTP/1.1-over-TLS stream (parked)
// gets every event, heartbeats while the topic is quiet, and on a reload
// its retry hint and a complete body.
func TestHTTPSStreamThroughTheListenerWrapper(t *testing.T) {
	s := startHTTPSSite(t, "heartbeat 200ms\n\t\tdrain_window 0\n\t\tretry 1s")
	path := topic(t, "/t/", "x")
	c, events := dialTLSStream(t, s.addr, path)
	for i := range 3 {
		id := s.publishID(path, fmt.Sprintf("event %d", i))
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		ev, err := events.Next()
		if err != nil || ev.ID != id || ev.Data != fmt.Sprintf("event %d", i) {
			t.Fatalf("event %d: got %+v, %v", i, ev, err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	s.publishID(path, "after the silence")
	if ev, err := events.Next(); err != nil || ev.Data != "after the silence" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	if events.Comments() < 2 {
		t.Errorf("%d heartbeats in 700 ms at one per 200 ms", events.Comments())
	}
	testcaddy.Reload(t, httpsCaddyfile(s.addr, "heartbeat 200ms\n\t\tdrain_window 0\n\t\tretry 2s"))
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	for {
		_, err := events.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after the reload: %v, want the body's clean end", err)
		}
	}
	if events.Retry() <= 0 {
		t.Errorf("no retry hint before the end")
	}
}

// A subscriber over TLS that stops reading is cut off after write_timeout
// while one that reads gets every event.
func TestHTTPSSlowSubscriberThroughTheListenerWrapperIsCutOff(t *testing.T) {
	s := startHTTPSSite(t, "write_timeout 500ms")
	path := topic(t, "/t/", "slow")
	slow, _ := dialTLSStream(t, s.addr, path)
	fast, events := dialTLSStream(t, s.addr, path)
	const n = 120 // about 7 MiB: more than any socket buffers hold
	done := readNumbered(events, n, func() { _ = fast.SetReadDeadline(time.Now().Add(waitLimit)) })
	publishNumbered(s, path, n)
	if err := <-done; err != nil {
		t.Fatalf("the reading subscriber: %v", err)
	}
	// The slow one reads now: what the server had sent, then the end.
	time.Sleep(time.Second)
	_ = slow.SetReadDeadline(time.Now().Add(waitLimit))
	got, err := io.Copy(io.Discard, slow)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the slow stream is still open after %d bytes", got)
	}
	if got >= n*numberedSize {
		t.Fatalf("the slow subscriber got %d bytes, everything: it was never cut off", got)
	}
}

// The wrapper leaves HTTP/2 alone: a stream over h2 behind it works as
// without it.
func TestHTTP2StreamBehindTheListenerWrapper(t *testing.T) {
	s := startHTTPSSite(t, "")
	path := topic(t, "/t/", "h2")
	tr := testcaddy.InsecureTransport()
	tr.ForceAttemptHTTP2 = true
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	resp, err := client.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("got %s %s, want HTTP/2 200", resp.Proto, resp.Status)
	}
	events := ssetest.NewReader(resp.Body)
	id := s.publishID(path, "over h2")
	if ev, err := events.Next(); err != nil || ev.ID != id || ev.Data != "over h2" {
		t.Fatalf("got %+v, %v", ev, err)
	}
}

// The sse listener wrapper takes no arguments and no options.
func TestListenerWrapperCaddyfile(t *testing.T) {
	for _, c := range []struct {
		wrapper string
		ok      bool
	}{
		{"sse", true},
		{"sse extra", false},
		{"sse {\n\t\t\t\tbuffer 4k\n\t\t\t}", false},
	} {
		cf := fmt.Sprintf("{\n\tservers {\n\t\tlistener_wrappers {\n\t\t\t%s\n\t\t\ttls\n\t\t}\n\t}\n}\n\nhttps://127.0.0.1:1 {\n\ttls internal\n\trespond ok\n}\n", c.wrapper)
		err := testcaddy.ValidateCaddyfile(cf)
		if (err == nil) != c.ok {
			t.Errorf("%q: error %v, want ok=%v", c.wrapper, err, c.ok)
		}
	}
}

// Over HTTP/2 the stream writes beneath Caddy's write idle timeout (see
// pastIdleWriter) and bounds its writes itself: a subscriber that stops
// reading is cut off after write_timeout, and one that reads gets every
// event.
func TestHTTP2SlowSubscriberIsCutOffByWriteTimeout(t *testing.T) {
	s := startHTTPSSite(t, "write_timeout 500ms")
	path := topic(t, "/t/", "slow-h2")
	open := func() (*http.Response, *http.Transport) {
		tr := testcaddy.InsecureTransport()
		tr.ForceAttemptHTTP2 = true
		resp, err := (&http.Client{Transport: tr}).Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("got %s, want HTTP/2", resp.Proto)
		}
		t.Cleanup(func() { resp.Body.Close(); tr.CloseIdleConnections() })
		return resp, tr
	}
	slow, _ := open()
	fast, _ := open()
	events := ssetest.NewReader(fast.Body)
	const n = 160 // about 9.4 MiB: past the client's flow-control windows
	done := readNumbered(events, n, func() {})
	publishNumbered(s, path, n)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the reading subscriber: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the reading subscriber did not get every event")
	}
	time.Sleep(time.Second)
	got, err := io.Copy(io.Discard, slow.Body)
	if err == nil {
		t.Fatalf("the slow stream ended cleanly after %d bytes, want it reset", got)
	}
	if got >= n*numberedSize {
		t.Fatalf("the slow subscriber got %d bytes, everything: it was never cut off", got)
	}
}

// The sse_h2 listener wrapper's Caddyfile: alone, after tls, and with
// its options; bad values and unknown options are refused.
func TestH2ListenerWrapperCaddyfile(t *testing.T) {
	for _, c := range []struct {
		wrappers string
		ok       bool
	}{
		{"sse_h2", true},
		{"sse\n\t\t\ttls\n\t\t\tsse_h2", true},
		{"sse_h2 {\n\t\t\t\tmax_concurrent_streams 100\n\t\t\t\tdrain_timeout 5s\n\t\t\t\tidle_timeout 1m\n\t\t\t}", true},
		{"sse_h2 extra", false},
		{"sse_h2 {\n\t\t\t\tmax_concurrent_streams 0\n\t\t\t}", false},
		{"sse_h2 {\n\t\t\t\tdrain_timeout soon\n\t\t\t}", false},
		{"sse_h2 {\n\t\t\t\tpush on\n\t\t\t}", false},
	} {
		cf := fmt.Sprintf("{\n\tservers {\n\t\tlistener_wrappers {\n\t\t\t%s\n\t\t}\n\t}\n}\n\nhttps://127.0.0.1:1 {\n\ttls internal\n\trespond ok\n}\n", c.wrappers)
		err := testcaddy.ValidateCaddyfile(cf)
		if (err == nil) != c.ok {
			t.Errorf("%q: error %v, want ok=%v", c.wrappers, err, c.ok)
		}
	}
}

// numberedSize is about the size of an event publishNumbered makes.
const numberedSize = 60 << 10

// publishNumbered publishes n events of numberedSize to path, each data
// starting with its number.
func publishNumbered(s *site, path string, n int) {
	big := strings.Repeat("x", numberedSize)
	for i := range n {
		s.publishID(path, fmt.Sprintf("%d %s", i, big))
	}
}

// readNumbered reads n events numbered as publishNumbered makes them, in
// order, calling before ahead of each read; the channel gets nil when all
// came, or the first that did not.
func readNumbered(events *ssetest.Reader, n int, before func()) <-chan error {
	done := make(chan error, 1)
	go func() {
		for i := range n {
			before()
			ev, err := events.Next()
			if err != nil || !strings.HasPrefix(ev.Data, fmt.Sprintf("%d ", i)) {
				done <- fmt.Errorf("event %d: %v", i, err)
				return
			}
		}
		done <- nil
	}()
	return done
}
