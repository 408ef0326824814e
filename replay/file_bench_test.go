package replay

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// appendStore is what the benchmark needs of a store.
type appendStore interface {
	Store
	Close() error
}

// runPublishers appends n single-event batches to store from publishers
// goroutines (spread over 8 topics) and returns how long it took.
func runPublishers(tb testing.TB, s Store, publishers, n int) time.Duration {
	tb.Helper()
	batch := Batch{Events: []Draft{{Type: "msg", Data: []byte(`{"hello":"world","n":12345}`)}}}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("bench-%d", p%8)
			for next.Add(1) <= int64(n) {
				if _, err := s.Append(tb.Context(), topic, batch); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkFileAppend measures durable appends (one event per Append, each
// returning once fsync'd) with 1, 16 and 64 concurrent publishers, and the
// memory store under the same load for comparison. events/s is the figure
// to read; appends/commit shows the group commit at work.
//
//	go test -run '^$' -bench FileAppend -benchtime 2s ./replay/
func BenchmarkFileAppend(b *testing.B) {
	for _, store := range []string{"file", "memory"} {
		for _, publishers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/publishers=%d", store, publishers), func(b *testing.B) {
				cfg := Config{Framer: testFramer}
				var (
					s appendStore
					f *File
				)
				if store == "file" {
					var err error
					f, err = OpenFile(filepath.Join(b.TempDir(), "bench.db"), cfg, nil)
					if err != nil {
						b.Fatal(err)
					}
					s = f
				} else {
					s = NewMemory(cfg)
				}
				defer s.Close()
				b.ResetTimer()
				elapsed := runPublishers(b, s, publishers, b.N)
				b.StopTimer()
				eps := float64(b.N) / elapsed.Seconds()
				b.ReportMetric(eps, "events/s")
				if f != nil {
					perCommit := float64(b.N) / float64(max(f.commits.Load(), 1))
					b.ReportMetric(perCommit, "appends/commit")
					b.Logf("%s, %d publishers: %.0f events/s, %.1f appends per commit (n=%d)", store, publishers, eps, perCommit, b.N)
				} else {
					b.Logf("%s, %d publishers: %.0f events/s (n=%d)", store, publishers, eps, b.N)
				}
			})
		}
	}
}

// Concurrent appends share commits: 64 publishers need far fewer commits
// than appends, and each Append has returned only after its commit.
func TestFileGroupCommit(t *testing.T) {
	f, err := OpenFile(filepath.Join(t.TempDir(), "sse.db"), Config{Framer: testFramer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 2000
	before := f.commits.Load()
	elapsed := runPublishers(t, f, 64, n)
	commits := f.commits.Load() - before
	t.Logf("%d appends from 64 publishers in %d commits (%.1f per commit), %v: %.0f events/s", n, commits, float64(n)/float64(commits), elapsed, n/elapsed.Seconds())
	if commits > n/4 {
		t.Fatalf("%d appends took %d commits: no grouping", n, commits)
	}
	if d := f.durable.Load(); d < uint64(n) {
		t.Fatalf("durable seq %d after %d acknowledged appends", d, n)
	}
}
