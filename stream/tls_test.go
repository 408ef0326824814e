package stream_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/tlsbuf"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

// tlsSite serves one topic's event streams over HTTP/1.1 over TLS, through
// a ParkableListener or not.
type tlsSite struct {
	store  *replay.Memory
	server *stream.Server
	stop   context.CancelFunc
	srv    *httptest.Server
	mu     sync.Mutex
	ended  []error // why each stream ended, in order
	done   chan error
}

func startTLSSite(t *testing.T, parkable bool, opts stream.Options) *tlsSite {
	t.Helper()
	s := &tlsSite{done: make(chan error, 16)}
	s.store = replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, MaxEvents: 1000, MaxBytes: 1 << 30})
	stopping, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.server = stream.NewServer(stopping, true)
	opts.Stop = stopping
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur, err := s.store.Subscribe(r.Context(), "t", "", replay.GapReplay)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := stream.WriteHead(w, nil); err != nil {
			cur.Close()
			return
		}
		s.server.Serve(w, r, "t", cur, opts, func(_ stream.Stats, err error) {
			cur.Close()
			s.mu.Lock()
			s.ended = append(s.ended, err)
			s.mu.Unlock()
			s.done <- err
		})
	}))
	if parkable {
		s.srv.Listener = stream.ParkableListener(s.srv.Listener)
	}
	s.srv.StartTLS() // HTTP/1.1 only: httptest enables HTTP/2 only when asked
	t.Cleanup(func() {
		stop()
		s.server.Wait(5 * time.Second)
		s.srv.Close()
		s.store.Close()
	})
	return s
}

func (s *tlsSite) publish(t *testing.T, data string) {
	t.Helper()
	if _, err := s.store.Append(context.Background(), "t", replay.Batch{Events: []replay.Draft{{Type: "message", Data: []byte(data)}}}); err != nil {
		t.Fatal(err)
	}
}

// subscribe opens a stream over TLS and returns its connection and its
// events once the response head is read.
func (s *tlsSite) subscribe(t *testing.T) (*tls.Conn, *ssetest.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", s.srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return c, ssetest.NewReader(resp.Body)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A detached stream over TLS parks when its connection comes from a
// ParkableListener, and then gets its events, heartbeats and the drain's
// clean end from the topic's lot exactly as a plain parked stream does.
// Without the wrapper it is served detached, by a goroutine of its own.
func TestTLSStreamsParkOverAParkableListener(t *testing.T) {
	for _, parkable := range []bool{true, false} {
		t.Run(fmt.Sprintf("parkable=%v", parkable), func(t *testing.T) {
			s := startTLSSite(t, parkable, stream.Options{WriteTimeout: 5 * time.Second, Heartbeat: 100 * time.Millisecond, Retry: time.Second})
			c, events := s.subscribe(t)
			want, other := stream.Parked, stream.Detached
			if !parkable {
				want, other = other, want
			}
			waitUntil(t, "the stream to be "+want.String(), func() bool { return s.server.Streams(want) == 1 })
			if n := s.server.Streams(other); n != 0 {
				t.Fatalf("%d streams %s", n, other)
			}
			for i := range 3 {
				s.publish(t, fmt.Sprintf("event %d", i))
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				ev, err := events.Next()
				if err != nil || ev.Data != fmt.Sprintf("event %d", i) {
					t.Fatalf("event %d: got %+v, %v", i, ev, err)
				}
			}
			// Heartbeats come while the topic is quiet (the reader counts
			// comments as it reads towards the next event).
			time.Sleep(400 * time.Millisecond)
			s.publish(t, "after the silence")
			if ev, err := events.Next(); err != nil || ev.Data != "after the silence" {
				t.Fatalf("got %+v, %v", ev, err)
			}
			if events.Comments() < 2 {
				t.Errorf("%d heartbeats in 400 ms at one per 100 ms", events.Comments())
			}
			if parkable && s.server.Streams(stream.Parked) != 1 {
				t.Errorf("the stream left the lot")
			}
			// The server stops: the stream ends with its retry hint and a
			// complete chunked body, then TLS's close.
			s.stop()
			if _, err := events.Next(); err != io.EOF {
				t.Fatalf("after the stop: %v, want the body's clean end", err)
			}
			if err := <-s.done; !errors.Is(err, stream.ErrStopped) {
				t.Fatalf("the stream ended with %v, want ErrStopped", err)
			}
		})
	}
}

// A parked TLS subscriber that stops reading is cut off after the write
// timeout, and meanwhile the lot goes on delivering to the others: a
// parked write never waits for a socket.
func TestParkedTLSStreamThatStopsReadingTimesOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := startTLSSite(t, true, stream.Options{WriteTimeout: timeout})
	slow, _ := s.subscribe(t)
	fast, events := s.subscribe(t)
	waitUntil(t, "both streams to park", func() bool { return s.server.Streams(stream.Parked) == 2 })
	_ = slow // never read again
	big := strings.Repeat("x", 32<<10)
	var start time.Time
	for i := 0; ; i++ {
		s.publish(t, fmt.Sprintf("%d %s", i, big))
		_ = fast.SetReadDeadline(time.Now().Add(10 * time.Second))
		ev, err := events.Next()
		if err != nil || !strings.HasPrefix(ev.Data, fmt.Sprintf("%d ", i)) {
			t.Fatalf("the reading subscriber, event %d: %v", i, err)
		}
		if start.IsZero() && s.server.Streams(stream.Parked) < 2 {
			start = time.Now() // the slow one left the lot: its socket is full
		}
		select {
		case err := <-s.done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the slow stream ended with %v, want a write timeout", err)
			}
			if took := time.Since(start); start.IsZero() || took > 3*timeout {
				t.Errorf("cut off %v after it left the lot, want about %v", took, timeout)
			}
			return
		default:
		}
		if i > 2000 {
			t.Fatal("the slow subscriber was never cut off")
		}
	}
}

// Parked TLS streams hold no goroutine each.
func TestParkedTLSStreamsHoldNoGoroutine(t *testing.T) {
	s := startTLSSite(t, true, stream.Options{WriteTimeout: 5 * time.Second})
	const n = 20
	for range n {
		s.subscribe(t)
	}
	waitUntil(t, "every stream to park", func() bool { return s.server.Streams(stream.Parked) == n })
	before := runtime.NumGoroutine()
	if before > n/2 {
		t.Fatalf("%d goroutines for %d parked streams", before, n)
	}
	// Deliveries go through the lot and the streams stay parked.
	s.publish(t, "to all")
	time.Sleep(50 * time.Millisecond)
	if p := s.server.Streams(stream.Parked); p != n {
		t.Fatalf("%d parked after a delivery, want %d", p, n)
	}
}

// The tls.Conn read buffers a detached stream releases are found in this
// Go release: a release that renames them fails here rather than silently
// costing 3.5 KiB per TLS subscriber.
func TestTLSReadBuffersAreFound(t *testing.T) {
	if !tlsbuf.Supported() {
		t.Fatal("crypto/tls.Conn has no rawInput, hand and input buffers of the expected types")
	}
}
