package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

// countingWriter is a subscriber's connection reduced to what the write
// loop touches: it counts the events written and discards the bytes.
type countingWriter struct {
	header http.Header
	events *atomic.Int64
}

func (w *countingWriter) Header() http.Header { return w.header }
func (w *countingWriter) WriteHeader(int)     {}
func (w *countingWriter) Flush()              {}

// SetWriteDeadline is there because every real connection has it; without
// it the write loop would measure ResponseController's error path instead.
func (w *countingWriter) SetWriteDeadline(time.Time) error { return nil }
func (w *countingWriter) Write(b []byte) (int, error) {
	w.events.Add(int64(bytes.Count(b, []byte("\nid: "))) + int64(bytes.Count(b[:min(len(b), 4)], []byte("id: "))))
	return len(b), nil
}

// BenchmarkFanOut measures one published event reaching N subscribers'
// writers through the whole path: append, wake, cursor read, write and
// flush. ns/op and allocs/op are per delivery (one event to one subscriber).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, MaxEvents: 100000, MaxBytes: 1 << 30})
			defer store.Close()
			ctx, cancel := context.WithCancel(context.Background())
			var delivered atomic.Int64
			var wg sync.WaitGroup
			for range n {
				cur, err := store.Subscribe(ctx, "bench", "", replay.GapReplay)
				if err != nil {
					b.Fatal(err)
				}
				w := &countingWriter{header: http.Header{}, events: &delivered}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer cur.Close()
					_, _ = stream.Serve(ctx, w, cur, stream.Options{WriteTimeout: time.Minute})
				}()
			}
			publishAndMeasure(b, store, n, &delivered)
			cancel()
			wg.Wait()
		})
	}
}

// publishAndMeasure appends b.N events of 200 bytes to topic "bench", each
// once n subscribers have counted the previous one in delivered, and
// reports the time and allocations per delivery.
func publishAndMeasure(b *testing.B, store replay.Store, n int, delivered *atomic.Int64) {
	data := bytes.Repeat([]byte("x"), 200)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		if _, err := store.Append(context.Background(), "bench", replay.Batch{Events: []replay.Draft{{Type: "message", Data: data}}}); err != nil {
			b.Fatal(err)
		}
		// Wait for this event everywhere before the next one, so the
		// figure is the cost of a delivery, not of coalesced batches.
		want := int64(i+1) * int64(n)
		for delivered.Load() < want {
			runtime.Gosched()
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	deliveries := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
}

// syscallWriter stands for a connection where every write and every flush
// costs a system call: it counts them and the events written.
type syscallWriter struct {
	countingWriter
	writes, flushes int
	onWrite         func()
}

func (w *syscallWriter) Write(b []byte) (int, error) {
	w.writes++
	n, err := w.countingWriter.Write(b)
	w.onWrite()
	return n, err
}

func (w *syscallWriter) Flush() { w.flushes++ }

// BenchmarkCatchUp measures a subscriber that is behind by 1,000 events
// (a resume, or a reader that stalled), with and without coalescing: with
// batch=64 up to 64 events leave in one write and one flush.
func BenchmarkCatchUp(b *testing.B) {
	const behind = 1000
	store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, MaxEvents: behind})
	defer store.Close()
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), 200)
	for range behind {
		if _, err := store.Append(ctx, "catch-up", replay.Batch{Events: []replay.Draft{{Data: data}}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var delivered atomic.Int64
			var writes, flushes int
			b.ReportAllocs()
			for range b.N {
				cur, err := store.Subscribe(ctx, "catch-up", replay.Earliest, replay.GapReplay)
				if err != nil {
					b.Fatal(err)
				}
				delivered.Store(0)
				w := &syscallWriter{countingWriter: countingWriter{header: http.Header{}, events: &delivered}}
				// Caught up: end the stream as a client going away would.
				caughtUp, done := context.WithCancel(ctx)
				w.onWrite = func() {
					if delivered.Load() >= behind {
						done()
					}
				}
				_, _ = stream.Serve(caughtUp, w, cur, stream.Options{MaxBatch: batch, WriteTimeout: time.Minute})
				done()
				cur.Close()
				writes, flushes = w.writes, w.flushes
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*behind), "ns/event")
			b.ReportMetric(float64(writes), "writes/catch-up")
			b.ReportMetric(float64(flushes), "flushes/catch-up")
		})
	}
}

// writeCounter counts writes: with one event published at a time, one
// write is one delivery whatever the encoding.
type writeCounter struct {
	header http.Header
	writes *atomic.Int64
}

func (w *writeCounter) Header() http.Header              { return w.header }
func (w *writeCounter) WriteHeader(int)                  {}
func (w *writeCounter) Flush()                           {}
func (w *writeCounter) SetWriteDeadline(time.Time) error { return nil }
func (w *writeCounter) Write(b []byte) (int, error)      { w.writes.Add(1); return len(b), nil }

// BenchmarkFanOutCompressed compares the cost of a delivery to 1,000
// subscribers without compression and with shared gzip and zstd, on a
// 200-byte JSON change event: the compression happens once per event, so
// the per-delivery cost should stay close to identity.
func BenchmarkFanOutCompressed(b *testing.B) {
	const n = 1000
	event := []byte(`{"type":"order.updated","id":"ord_8f14e45f","status":"shipped","carrier":"DHL","tracking":"JD014600003812345678","items":3,"total":{"amount":12999,"currency":"EUR"},"updated_at":"2026-11-21T18:22:40Z"}`)
	for _, enc := range []*stream.Encoding{nil, stream.Gzip, stream.Zstd} {
		name := "identity"
		if enc != nil {
			name = enc.Name
		}
		b.Run("encoding="+name, func(b *testing.B) {
			store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, Encodings: 2, MaxEvents: 100000, MaxBytes: 1 << 30})
			defer store.Close()
			ctx, cancel := context.WithCancel(context.Background())
			var writes atomic.Int64
			var wg sync.WaitGroup
			for range n {
				cur, err := store.Subscribe(ctx, "bench", "", replay.GapReplay)
				if err != nil {
					b.Fatal(err)
				}
				w := &writeCounter{header: http.Header{}, writes: &writes}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer cur.Close()
					_, _ = stream.Serve(ctx, w, cur, stream.Options{Encoding: enc, WriteTimeout: time.Minute})
				}()
			}
			// gzip streams open with their header: let those writes land.
			var base int64
			if enc == stream.Gzip {
				base = n
			}
			for writes.Load() < base {
				runtime.Gosched()
			}
			var onWire int64
			b.ResetTimer()
			for i := range b.N {
				res, err := store.Append(ctx, "bench", replay.Batch{Events: []replay.Draft{{Type: "message", Data: event}}})
				if err != nil {
					b.Fatal(err)
				}
				_ = res
				want := base + int64(i+1)*n
				for writes.Load() < want {
					runtime.Gosched()
				}
			}
			b.StopTimer()
			frame := wire.EncodeEvent("x-1", "message", event)
			onWire = int64(len(frame))
			if enc != nil {
				ev := &replay.Event{Frame: frame}
				onWire = int64(len(stream.SegmentOf(enc, ev)))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*n), "ns/delivery")
			b.ReportMetric(float64(onWire), "wire-bytes/event")
			cancel()
			wg.Wait()
		})
	}
}

// BenchmarkFanOutDetached is BenchmarkFanOut over real loopback sockets:
// every subscriber is an HTTP/1.1 stream detached from net/http, with a
// goroutine each or parked in its topic's lot, and its client reads and
// counts the events. Client and server share the cores,
// so ns/delivery includes the reading side; allocs/delivery counts both.
func BenchmarkFanOutDetached(b *testing.B) {
	for _, c := range []struct {
		n      int
		parked bool
	}{{100, false}, {1000, false}, {100, true}, {1000, true}} {
		n, parked := c.n, c.parked
		b.Run(fmt.Sprintf("subscribers=%d/parked=%v", n, parked), func(b *testing.B) {
			store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, MaxEvents: 100000, MaxBytes: 1 << 30})
			defer store.Close()
			stopping, stop := context.WithCancel(context.Background())
			server := stream.NewServer(stopping, true)
			if !parked {
				server.NoPark()
			}
			var served sync.WaitGroup
			var opened atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cur, err := store.Subscribe(r.Context(), "bench", "", replay.GapReplay)
				if err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
				if err := stream.WriteHead(w, nil); err != nil {
					cur.Close()
					return
				}
				served.Add(1)
				opened.Add(1)
				opts := stream.Options{WriteTimeout: time.Minute, Stop: stopping}
				server.Serve(w, r, "bench", cur, opts, func(stream.Stats, error) {
					cur.Close()
					served.Done()
				})
			}))
			defer srv.Close()

			var delivered atomic.Int64
			var readers sync.WaitGroup
			conns := make([]net.Conn, 0, n)
			for range n {
				c, err := net.Dial("tcp", srv.Listener.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
				readers.Add(1)
				go func() {
					defer readers.Done()
					countEventEnds(c, &delivered)
				}()
			}
			// Wait until every stream is open, then publish.
			for opened.Load() < int64(n) {
				time.Sleep(time.Millisecond)
			}
			publishAndMeasure(b, store, n, &delivered)
			stop()
			served.Wait()
			for _, c := range conns {
				c.Close()
			}
			readers.Wait()
		})
	}
}

// countEventEnds reads an event stream after its response head, counting
// the blank lines that end events (chunk framing puts CRLF, never a second
// LF, after them), until the connection ends.
func countEventEnds(c net.Conn, events *atomic.Int64) {
	buf := make([]byte, 32<<10)
	var last uint32 // the last four bytes, to find the end of the head
	head := true
	for {
		n, err := c.Read(buf)
		for _, ch := range buf[:n] {
			if head {
				last = last<<8 | uint32(ch)
				head = last != 0x0d0a0d0a
				continue
			}
			if ch == '\n' && byte(last) == '\n' {
				events.Add(1)
			}
			last = uint32(ch)
		}
		if err != nil {
			return
		}
	}
}
