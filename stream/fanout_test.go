package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
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
			store := replay.NewMemory(replay.Config{Framer: stream.EncodeEvent, MaxEvents: 100000, MaxBytes: 1 << 30})
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
			data := bytes.Repeat([]byte("x"), 200)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for i := range b.N {
				if _, err := store.Append(ctx, "bench", replay.Batch{Events: []replay.Draft{{Type: "message", Data: data}}}); err != nil {
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
			cancel()
			wg.Wait()
		})
	}
}
