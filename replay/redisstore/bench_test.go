package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// Run with:
//
//	go test -run '^$' -bench . -benchtime 20000x ./replay/redisstore/
//
// The Redis benchmarks start their own redis-server (appendonly, fsync
// always: every acknowledged publish is on disk, as in the tests).

var benchEvent = replay.Draft{Type: "msg", Data: []byte(`{"hello":"world","n":12345}`)}

// BenchmarkRedisAppend: publishes of one event each to one topic, from 16
// publishers per CPU at once (a busy node). publish/s is the throughput.
// With fsync=always every acknowledged publish is on disk; with
// fsync=everysec Redis syncs once a second.
func BenchmarkRedisAppend(b *testing.B) {
	for _, fsync := range []string{"always", "everysec"} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			srv := redistest.Start(b, "--appendfsync", fsync)
			s := newStore(b, srv, replay.Config{})
			benchAppend(b, s)
		})
	}
}

// BenchmarkMemoryAppend is the same against the memory store.
func BenchmarkMemoryAppend(b *testing.B) {
	m := replay.NewMemory(replay.Config{Framer: replaytest.Framer})
	b.Cleanup(func() { m.Close() })
	benchAppend(b, m)
}

func benchAppend(b *testing.B, s replay.Store) {
	ctx := context.Background()
	batch := replay.Batch{Events: []replay.Draft{benchEvent}}
	b.SetParallelism(16)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(ctx, "bench", batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publish/s")
}

// BenchmarkRedisFanout: node A publishes (8 publishers), node B has 1000
// subscribers of the topic reading through its tail. An op is one event
// published; deliveries/s counts events read by B's subscribers.
func BenchmarkRedisFanout(b *testing.B) {
	for _, fsync := range []string{"always", "everysec"} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			srv := redistest.Start(b, "--appendfsync", fsync)
			cfg := fanoutConfig(b)
			a := newStore(b, srv, cfg)
			node := newStore(b, srv, cfg, func(o *redisstore.Options) { o.Prefix = a.Prefix() })
			benchFanout(b, a, node)
		})
	}
}

// fanoutConfig keeps every event of the run, so that no subscriber falls
// behind the history and skips events.
func fanoutConfig(b *testing.B) replay.Config {
	return replay.Config{MaxEvents: b.N + 1, MaxBytes: 1 << 40, Framer: replaytest.Framer}
}

// BenchmarkMemoryFanout is the same on one memory store.
func BenchmarkMemoryFanout(b *testing.B) {
	m := replay.NewMemory(fanoutConfig(b))
	b.Cleanup(func() { m.Close() })
	benchFanout(b, m, m)
}

func benchFanout(b *testing.B, pub, sub replay.Store) {
	const subscribers = 1000
	const publishers = 8
	ctx := context.Background()
	topic := fmt.Sprintf("fan-%d", b.N)
	var delivered atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range subscribers {
		c, err := sub.Subscribe(ctx, topic, "", replay.GapReplay)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			n := 0
			for n < b.N {
				p, err := c.Next(64)
				if err != nil {
					b.Error(err)
					return
				}
				if p.Gap != nil {
					b.Errorf("a subscriber hit a gap: %+v", *p.Gap)
					return
				}
				n += len(p.Events)
				delivered.Add(int64(len(p.Events)))
				if len(p.Events) == 0 {
					select {
					case <-p.Wait:
					case <-stop:
						return
					}
				}
			}
		}()
	}
	batch := replay.Batch{Events: []replay.Draft{benchEvent}}
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var pwg sync.WaitGroup
	for range publishers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := pub.Append(ctx, topic, batch); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	published := time.Since(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		close(stop)
		<-done
		b.Fatalf("subscribers got %d of %d deliveries", delivered.Load(), int64(b.N)*subscribers)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/published.Seconds(), "publish/s")
	b.ReportMetric(float64(delivered.Load())/elapsed.Seconds(), "deliveries/s")
}
