package replay_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// openFile opens a store file, closed when t ends.
func openFile(t testing.TB, path string, cfg replay.Config, opts *replay.FileOptions) *replay.File {
	t.Helper()
	if cfg.Framer == nil {
		cfg.Framer = replaytest.Framer
	}
	f, err := replay.OpenFile(path, cfg, opts)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

func TestFileConformance(t *testing.T) {
	replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return openFile(t, filepath.Join(t.TempDir(), "sse.db"), cfg, nil)
	})
}

// With a cache of two events, nearly every read of history goes to the file.
func TestFileConformanceSmallCache(t *testing.T) {
	replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return openFile(t, filepath.Join(t.TempDir(), "sse.db"), cfg, &replay.FileOptions{CacheEvents: 2, CacheBytes: 1})
	})
}

// Closing the file and opening it again is a restart: what a resuming
// client relies on survives it.
func TestFileDurableConformance(t *testing.T) {
	for _, x := range []struct {
		name string
		opts *replay.FileOptions
	}{{"default cache", nil}, {"cache of two events", &replay.FileOptions{CacheEvents: 2, CacheBytes: 1}}} {
		t.Run(x.name, func(t *testing.T) {
			replaytest.RunDurable(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
				path := filepath.Join(t.TempDir(), "sse.db")
				f := openFile(t, path, cfg, x.opts)
				return f, func() replay.Store {
					t.Helper()
					if err := f.Close(); err != nil {
						t.Fatalf("Close before reopening: %v", err)
					}
					f = openFile(t, path, cfg, x.opts)
					return f
				}
			})
		})
	}
}

func appendKeyed(t *testing.T, s replay.Store, topic, key string, data ...string) replay.Appended {
	t.Helper()
	var b replay.Batch
	b.Key = key
	for _, d := range data {
		b.Events = append(b.Events, replay.Draft{Type: "msg", Data: []byte(d)})
	}
	res, err := s.Append(t.Context(), topic, b)
	if err != nil {
		t.Fatalf("Append(%q): %v", topic, err)
	}
	return res
}

// readAfter reads everything topic delivers after from, without blocking.
func readAfter(t *testing.T, s replay.Store, topic, from string) ([]string, []*replay.Gap, bool) {
	t.Helper()
	c, err := s.Subscribe(t.Context(), topic, from, replay.GapReplay)
	if err != nil {
		t.Fatalf("Subscribe(%q, %q): %v", topic, from, err)
	}
	defer c.Close()
	var (
		ids    []string
		gaps   []*replay.Gap
		closed bool
	)
	for {
		p, err := c.Next(3)
		if err != nil {
			t.Fatal(err)
		}
		if p.Gap != nil {
			gaps = append(gaps, p.Gap)
		}
		for _, e := range p.Events {
			ids = append(ids, e.ID)
			if want := replaytest.Framer(e.ID, e.Type, e.Data); string(e.Frame) != string(want) {
				t.Fatalf("event %s: frame %q, want %q", e.ID, e.Frame, want)
			}
		}
		if p.Closed {
			closed = true
		}
		if len(p.Events) == 0 || p.Closed {
			return ids, gaps, closed
		}
	}
}

// Close and open again: same epoch; resuming after any id from before gives
// exactly the events after it, on every topic; dedup keys and closed topics
// survive; new ids continue the sequence.
func TestFileRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	cfg := replay.Config{Framer: replaytest.Framer, MaxEvents: 8}
	f, err := replay.OpenFile(path, cfg, &replay.FileOptions{CacheEvents: 3})
	if err != nil {
		t.Fatal(err)
	}
	epoch := f.Epoch()
	logs := map[string][]string{}
	var firstKeyed replay.Appended
	for i := range 30 {
		topic := []string{"a", "b", "c"}[i%3]
		res := appendKeyed(t, f, topic, fmt.Sprintf("k%d", i), fmt.Sprintf("%s-%d", topic, i), "second")
		if i == 27 {
			firstKeyed = res
		}
		logs[topic] = append(logs[topic], res.IDs...)
	}
	appendKeyed(t, f, "d", "", "last words")
	if err := f.CloseTopic(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	// What each topic retains (MaxEvents 8) before the restart.
	retained := map[string][]string{}
	for topic := range logs {
		retained[topic], _, _ = readAfter(t, f, topic, replay.Earliest)
		if want := logs[topic][len(logs[topic])-8:]; !slices.Equal(retained[topic], want) {
			t.Fatalf("%s retains %q, want %q", topic, retained[topic], want)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	g := openFile(t, path, cfg, &replay.FileOptions{CacheEvents: 3})
	if g.Epoch() != epoch {
		t.Fatalf("epoch after reopening = %q, want %q", g.Epoch(), epoch)
	}
	for topic, log := range logs {
		keep := retained[topic]
		for i, id := range log {
			got, gaps, _ := readAfter(t, g, topic, id)
			if i < len(log)-len(keep)-1 {
				// Pruned before the restart: an expired gap, then the
				// retained events.
				if len(gaps) != 1 || gaps[0].Reason != replay.GapExpired {
					t.Fatalf("%s after pruned %s: gaps %+v, want one expired", topic, id, gaps)
				}
				if !slices.Equal(got, keep) {
					t.Fatalf("%s after pruned %s: %q, want %q", topic, id, got, keep)
				}
				continue
			}
			if len(gaps) != 0 {
				t.Fatalf("%s after %s: gap %+v", topic, id, *gaps[0])
			}
			if want := log[i+1:]; !slices.Equal(got, want) {
				t.Fatalf("%s after %s: %q, want %q", topic, id, got, want)
			}
		}
	}
	// Dedup keys survive.
	res := appendKeyed(t, g, "a", "k27", "again")
	if !res.Duplicate || !slices.Equal(res.IDs, firstKeyed.IDs) {
		t.Fatalf("repeated key after restart = %+v, want a duplicate of %q", res, firstKeyed.IDs)
	}
	// The closed topic stays closed.
	if _, err := g.Append(t.Context(), "d", replay.Batch{Events: []replay.Draft{{Data: []byte("x")}}}); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("append to a topic closed before the restart: %v", err)
	}
	if _, err := g.Subscribe(t.Context(), "d", "", replay.GapReplay); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("live subscribe to a topic closed before the restart: %v", err)
	}
	if got, _, closed := readAfter(t, g, "d", replay.Earliest); len(got) != 1 || !closed {
		t.Fatalf("earliest on a topic closed before the restart: %q, closed %v; want its last event, then Closed", got, closed)
	}
	// New ids continue after the old ones, and a resume after the last old
	// id gets exactly the new event.
	last := logs["b"][len(logs["b"])-1]
	res = appendKeyed(t, g, "b", "", "new")
	got, gaps, _ := readAfter(t, g, "b", last)
	if len(gaps) != 0 || !slices.Equal(got, res.IDs) {
		t.Fatalf("after %s: %q (gaps %v), want %q", last, got, gaps, res.IDs)
	}
	// An id from another store's life is unknown.
	other := openFile(t, filepath.Join(t.TempDir(), "other.db"), cfg, nil)
	foreign := appendKeyed(t, other, "b", "", "x").IDs[0]
	if _, gaps, _ := readAfter(t, g, "b", foreign); len(gaps) != 1 || gaps[0].Reason != replay.GapUnknown {
		t.Fatalf("an id of another file: gaps %+v, want unknown", gaps)
	}
}

// A live cursor's position is durable: resuming with it after a restart
// is exact, even when the last seqs issued were never written (a batch too
// large burns its seqs).
func TestFileLivePositionSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	cfg := replay.Config{Framer: replaytest.Framer, MaxEvents: 2}
	f, err := replay.OpenFile(path, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendKeyed(t, f, "t", "", "1")
	if _, err := f.Append(t.Context(), "t", replay.Batch{Events: make([]replay.Draft, 3)}); !errors.Is(err, replay.ErrBatchTooLarge) {
		t.Fatal(err)
	}
	c, err := f.Subscribe(t.Context(), "u", "", replay.GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	pos := c.Position()
	c.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := openFile(t, path, cfg, nil)
	res := appendKeyed(t, g, "u", "", "after")
	got, gaps, _ := readAfter(t, g, "u", pos)
	if len(gaps) != 0 || !slices.Equal(got, res.IDs) {
		t.Fatalf("after the live position %s: %q (gaps %+v), want %q", pos, got, gaps, res.IDs)
	}
}

// Concurrent appends with one key: one appends, the others are duplicates
// with its ids, even while the first is not yet durable.
func TestFileConcurrentDedup(t *testing.T) {
	f := openFile(t, filepath.Join(t.TempDir(), "sse.db"), replay.Config{}, nil)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []replay.Appended
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.Append(t.Context(), "t", replay.Batch{Key: "same", Events: []replay.Draft{{Data: []byte("x")}}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fresh := 0
	for _, r := range results {
		if !r.Duplicate {
			fresh++
		}
		if !slices.Equal(r.IDs, results[0].IDs) {
			t.Fatalf("ids differ: %q and %q", r.IDs, results[0].IDs)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d appends were not duplicates, want 1", fresh)
	}
	if got, _, _ := readAfter(t, f, "t", replay.Earliest); len(got) != 1 {
		t.Fatalf("retained %q, want one event", got)
	}
}

// Publishing far more than the bounds keeps the file within a bound: bbolt
// reuses the pages pruning frees.
func TestFileSizeBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	const (
		topics     = 4
		publishers = 16
		batches    = 250 // per publisher
		perBatch   = 10
		maxBytes   = 64 << 10
	)
	f := openFile(t, path, replay.Config{MaxEvents: 100, MaxBytes: maxBytes}, nil)
	payload := strings.Repeat("x", 1000)
	publish := func(rounds int) {
		var wg sync.WaitGroup
		for p := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range rounds {
					b := replay.Batch{Events: make([]replay.Draft, perBatch)}
					for k := range b.Events {
						b.Events[k] = replay.Draft{Type: "msg", Data: []byte(payload)}
					}
					if _, err := f.Append(t.Context(), fmt.Sprintf("t%d", (p+i)%topics), b); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	size := func() int64 {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Size()
	}
	publish(batches / 10)
	early := size()
	publish(batches)
	final := size()
	written := int64(publishers * (batches + batches/10) * perBatch * len(payload))
	// Retained: 4 topics of at most 64 KiB of cost (payload + frame each),
	// about 128 KiB of records. bbolt needs room for the copy-on-write
	// pages of a commit and the freelist besides.
	const bound = 4 << 20
	t.Logf("wrote %d KiB of payload; file %d KiB after the first tenth, %d KiB at the end (bound %d KiB)", written>>10, early>>10, final>>10, bound>>10)
	if final > bound {
		t.Fatalf("file is %d bytes after writing %d bytes of payload, want at most %d", final, written, bound)
	}
	for i := range topics {
		got, _, _ := readAfter(t, f, fmt.Sprintf("t%d", i), replay.Earliest)
		if len(got) == 0 || len(got) > maxBytes/2000 {
			t.Fatalf("topic t%d retains %d events", i, len(got))
		}
	}
}

// Pruning by age deletes from the file too: after a restart the expired
// events are gone.
func TestFileAgePrunesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	cfg := replay.Config{Framer: replaytest.Framer, MaxAge: 300 * time.Millisecond}
	f, err := replay.OpenFile(path, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendKeyed(t, f, "t", "", "old").IDs
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _, _ := readAfter(t, f, "t", replay.Earliest)
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still retained after 5s: %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if tb := tx.Bucket([]byte("topics")).Bucket([]byte("t")); tb != nil {
			if eb := tb.Bucket([]byte("events")); eb != nil && eb.Stats().KeyN > 0 {
				t.Errorf("the file still holds %d events of topic t (%q expired)", eb.Stats().KeyN, ids)
			}
		}
		return nil
	})
}

func wantOpenError(t *testing.T, path string, opts *replay.FileOptions, cause string) {
	t.Helper()
	f, err := replay.OpenFile(path, replay.Config{Framer: replaytest.Framer}, opts)
	if err == nil {
		f.Close()
		t.Fatalf("OpenFile(%s) succeeded, want an error", path)
	}
	msg := err.Error()
	if !strings.Contains(msg, path) || !strings.Contains(msg, cause) {
		t.Fatalf("error %q, want it to name %s and say %q", msg, path, cause)
	}
	t.Logf("%s", msg)
}

func TestFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	t.Run("garbage", func(t *testing.T) {
		path := filepath.Join(dir, "garbage.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
		wantOpenError(t, path, nil, "corrupt")
	})
	t.Run("meta pages overwritten", func(t *testing.T) {
		path := filepath.Join(dir, "meta.db")
		f, err := replay.OpenFile(path, replay.Config{Framer: replaytest.Framer}, nil)
		if err != nil {
			t.Fatal(err)
		}
		appendOne(t, f, "t")
		f.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 16; i < 8192 && i < len(b); i++ {
			b[i] ^= 0x5a
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantOpenError(t, path, nil, "corrupt")
	})
	t.Run("data pages overwritten", func(t *testing.T) {
		path := filepath.Join(dir, "data.db")
		f, err := replay.OpenFile(path, replay.Config{Framer: replaytest.Framer}, nil)
		if err != nil {
			t.Fatal(err)
		}
		appendOne(t, f, "t")
		f.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 8192; i < len(b); i++ {
			b[i] = 0xff
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantOpenError(t, path, nil, "corrupt")
		// The failed open released the file: a second try fails the same
		// way, not on the lock.
		wantOpenError(t, path, &replay.FileOptions{LockTimeout: 100 * time.Millisecond}, "corrupt")
	})
	t.Run("another program's bbolt file", func(t *testing.T) {
		path := filepath.Join(dir, "other.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("certificates")); return err }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		wantOpenError(t, path, nil, "not a caddy-sse store file")
	})
}

func TestFileUnreadable(t *testing.T) {
	dir := t.TempDir()
	t.Run("a directory", func(t *testing.T) {
		wantOpenError(t, dir, nil, "is a directory")
	})
	t.Run("in a missing directory", func(t *testing.T) {
		wantOpenError(t, filepath.Join(dir, "missing", "sse.db"), nil, "no such file or directory")
	})
	t.Run("no permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		path := filepath.Join(dir, "noperm.db")
		if err := os.WriteFile(path, nil, 0o000); err != nil {
			t.Fatal(err)
		}
		wantOpenError(t, path, nil, "permission denied")
	})
}

func TestFileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	openFile(t, path, replay.Config{}, nil)
	start := time.Now()
	wantOpenError(t, path, &replay.FileOptions{LockTimeout: 200 * time.Millisecond}, "locked by another process")
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("a locked file took %v to fail", waited)
	}
}

// Topics in the file take their slots of MaxTopics again after a restart;
// topics that only had subscribers left nothing in the file to count.
func TestFileTopicSlotsAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	cfg := replay.Config{Framer: replaytest.Framer, MaxTopics: 2}
	f, err := replay.OpenFile(path, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c, err := f.Subscribe(t.Context(), fmt.Sprintf("watched-%d", i), "", replay.GapReplay)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	appendKeyed(t, f, "written", "", "x")
	if err := f.CloseTopic(t.Context(), "closed"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := openFile(t, path, cfg, nil)
	if _, err := g.Append(t.Context(), "third", replay.Batch{Events: []replay.Draft{{Data: []byte("x")}}}); !errors.Is(err, replay.ErrTooManyTopics) {
		t.Fatalf("Append to a third topic after the restart: %v, want ErrTooManyTopics", err)
	}
	c, err := g.Subscribe(t.Context(), "watched-9", "", replay.GapReplay)
	if err != nil {
		t.Fatalf("Subscribe to a new topic with every slot taken: %v", err)
	}
	c.Close()
	appendKeyed(t, g, "written", "", "y")
}
