package replay_test

import (
	"testing"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// BenchmarkAppend appends one event per op to one topic (pruning at
// MaxEvents included once the log is full).
func BenchmarkAppend(b *testing.B) {
	m := newMemory(b, replay.Config{Framer: replaytest.Framer})
	batch := replay.Batch{Events: []replay.Draft{{Type: "msg", Data: []byte(`{"hello":"world"}`)}}}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Append(ctx, "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCursorNext: 1000 subscribers of a topic each read the one new
// event. An op is one read; the append that feeds each round of 1000 reads is
// outside the timer.
func BenchmarkCursorNext(b *testing.B) {
	const subscribers = 1000
	m := newMemory(b, replay.Config{Framer: replaytest.Framer})
	ctx := b.Context()
	cursors := make([]replay.Cursor, subscribers)
	for i := range cursors {
		c, err := m.Subscribe(ctx, "bench", "", replay.GapReplay)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cursors[i] = c
	}
	batch := replay.Batch{Events: []replay.Draft{{Type: "msg", Data: []byte(`{"hello":"world"}`)}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := cursors[i%subscribers]
		if i%subscribers == 0 {
			b.StopTimer()
			if _, err := m.Append(ctx, "bench", batch); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		p, err := c.Next(64)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Events) != 1 {
			b.Fatalf("read %d events, want 1", len(p.Events))
		}
	}
}
