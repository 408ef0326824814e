package replay_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
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

// writeStore makes a real store file at path: topic "t" gets events whose
// data is payload(i), and pruning (MaxEvents) leaves freed pages in bbolt's
// freelist. It returns the ids of the events "t" retains.
func writeStore(t *testing.T, path string, n int) []string {
	t.Helper()
	f, err := replay.OpenFile(path, replay.Config{Framer: replaytest.Framer, MaxEvents: n}, nil)
	if err != nil {
		t.Fatal(err)
	}
	filler := strings.Repeat("f", 3000)
	for range 3 * n {
		if _, err := f.Append(t.Context(), "filler", replay.Batch{Events: []replay.Draft{{Data: []byte(filler)}}}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := range n {
		res, err := f.Append(t.Context(), "t", replay.Batch{Events: []replay.Draft{{Type: "msg", Data: []byte(payload(i))}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.IDs...)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func payload(i int) string { return fmt.Sprintf("payload-%03d-%s", i, strings.Repeat("p", 40)) }

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// boltMeta is what the damage needs of bbolt's newest meta page (layout of
// go.etcd.io/bbolt/internal/common: a 16-byte page header, then magic,
// version, page size, flags, the root bucket, freelist, pgid, txid).
type boltMeta struct {
	pageSize       int
	root, freelist uint64
}

func newestMeta(t *testing.T, b []byte) boltMeta {
	t.Helper()
	le := binary.LittleEndian
	pageSize := int(le.Uint32(b[16+8:]))
	var best boltMeta
	var bestTx uint64
	for _, off := range []int{0, pageSize} {
		m := b[off+16:]
		if tx := le.Uint64(m[48:]); tx >= bestTx {
			bestTx = tx
			best = boltMeta{pageSize: pageSize, root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:])}
		}
	}
	return best
}

// branchPage returns the offset of a branch page in the file (page flags
// 0x01, with elements), failing the test if there is none.
func branchPage(t *testing.T, b []byte, m boltMeta) int {
	t.Helper()
	le := binary.LittleEndian
	for off := 2 * m.pageSize; off+m.pageSize <= len(b); off += m.pageSize {
		if int(le.Uint64(b[off:]))*m.pageSize == off && le.Uint16(b[off+8:]) == 0x01 && le.Uint16(b[off+10:]) > 0 {
			return off
		}
	}
	t.Fatal("the store file has no branch page")
	return 0
}

// A damaged file fails to open with an error naming it, within a bound,
// and is left byte for byte as it was: opening never writes before the
// file has been checked.
func TestFileDamagedFileIsLeftUntouched(t *testing.T) {
	le := binary.LittleEndian
	dir := t.TempDir()
	original := filepath.Join(dir, "original.db")
	writeStore(t, original, 400) // big enough for branch pages
	clean, err := os.ReadFile(original)
	if err != nil {
		t.Fatal(err)
	}
	damages := []struct {
		name   string
		damage func(b []byte, m boltMeta)
	}{
		{"the freelist lists a live page", func(b []byte, m boltMeta) {
			page := b[int(m.freelist)*m.pageSize:]
			le.PutUint16(page[10:], 1) // count
			le.PutUint64(page[16:], m.root)
		}},
		{"the root page's type flags are flipped", func(b []byte, m boltMeta) {
			page := b[int(m.root)*m.pageSize:]
			page[8] ^= 0x17
		}},
		{"the root page claims more elements than it has", func(b []byte, m boltMeta) {
			page := b[int(m.root)*m.pageSize:]
			le.PutUint16(page[10:], 0xfff0)
		}},
		{"a page's id is overwritten", func(b []byte, m boltMeta) {
			page := b[int(m.root)*m.pageSize:]
			le.PutUint64(page[0:], 1<<40)
		}},
		{"a branch page is its own child", func(b []byte, m boltMeta) {
			page := b[branchPage(t, b, m):]
			le.PutUint64(page[16+8:], le.Uint64(page)) // the first element's pgid
		}},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(d.name, " ", "-")+".db")
			b := bytes.Clone(clean)
			d.damage(b, newestMeta(t, b))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			before := fileSum(t, path)
			done := make(chan error, 1)
			go func() {
				f, err := replay.OpenFile(path, replay.Config{Framer: replaytest.Framer}, nil)
				if err == nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("OpenFile of a damaged file did not return within 20s")
			}
			if err == nil {
				t.Fatal("OpenFile of a damaged file succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "corrupt") {
				t.Fatalf("error %q, want it to name %s and say corrupt", msg, path)
			}
			t.Logf("%v", err)
			if fileSum(t, path) != before {
				t.Fatal("opening the damaged file changed it")
			}
			// The failed open released the file's lock: it can be
			// repaired in place.
			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("the file is still locked after the failed open: %v", err)
			}
			db.Close()
		})
	}
}

// flipIn damages the record holding marker in the store file at path, and
// every stale copy of it in pages bbolt has freed.
func flipIn(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for i := bytes.Index(b, []byte(marker)); i >= 0; i = bytes.Index(b, []byte(marker)) {
		b[i+len(marker)-1] ^= 0x01
		found++
	}
	if found == 0 {
		t.Fatalf("%q is not in the file", marker)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func subscribe(t *testing.T, s replay.Store, topic, from string) replay.Cursor {
	t.Helper()
	c, err := s.Subscribe(t.Context(), topic, from, replay.GapReplay)
	if err != nil {
		t.Fatalf("Subscribe(%q, %q): %v", topic, from, err)
	}
	t.Cleanup(c.Close)
	return c
}

type unreadableCall struct {
	topic, id string
	err       error
}

// A damaged event record is not served, and does not end the stream:
// readers get the events before it, a GapUnreadable gap, and the events
// after it; the hook hears of each damaged record once.
func TestFileDamagedRecord(t *testing.T) {
	const n = 10
	cases := []struct {
		name    string
		damaged []int
	}{
		{"one record in the middle", []int{5}},
		{"two records in a row", []int{5, 6}},
		{"the oldest record", []int{0}},
		{"the newest record", []int{n - 1}},
	}
	for _, x := range cases {
		t.Run(x.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sse.db")
			ids := writeStore(t, path, n)
			for _, i := range x.damaged {
				flipIn(t, path, payload(i))
			}
			var (
				mu    sync.Mutex
				calls []unreadableCall
			)
			cfg := replay.Config{MaxEvents: n, OnUnreadable: func(topic, id string, err error) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, unreadableCall{topic, id, err})
			}}
			f := openFile(t, path, cfg, nil)
			first, last := x.damaged[0], x.damaged[len(x.damaged)-1]
			wantBefore, wantAfter := ids[:first], ids[last+1:]
			for _, max := range []int{1, 3, 100} {
				c, err := f.Subscribe(t.Context(), "t", replay.Earliest, replay.GapReplay)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				var gaps []*replay.Gap
				gapAt := -1
				for range 3 * n {
					p, err := c.Next(max)
					if err != nil {
						t.Fatalf("Next(%d): %v (a damaged record must not end the stream)", max, err)
					}
					if p.Gap != nil {
						gaps = append(gaps, p.Gap)
						gapAt = len(got)
					}
					got = append(got, eventIDsOf(p.Events)...)
					if len(p.Events) == 0 && p.Gap == nil {
						break
					}
				}
				c.Close()
				if len(gaps) != 1 || gaps[0].Reason != replay.GapUnreadable {
					t.Fatalf("Next(%d): gaps %+v, want one unreadable", max, gaps)
				}
				if gapAt != len(wantBefore) || !slices.Equal(got, append(slices.Clone(wantBefore), wantAfter...)) {
					t.Fatalf("Next(%d): read %q with the gap after %d, want %q, the gap, %q", max, got, gapAt, wantBefore, wantAfter)
				}
				if gaps[0].ResumeAfter != ids[last] {
					t.Fatalf("Next(%d): gap %+v, want it to resume after the last damaged event %s", max, *gaps[0], ids[last])
				}
				if first > 0 && gaps[0].Requested != ids[first-1] {
					t.Fatalf("Next(%d): gap %+v, want it requested after %s", max, *gaps[0], ids[first-1])
				}
			}
			if first == 0 {
				// A gap found by Subscribe is reported on its own page, not
				// merged: that page tells its reader to read again at once.
				c := subscribe(t, f, "t", "garbage")
				p, err := c.Next(100)
				if err != nil {
					t.Fatal(err)
				}
				if p.Gap == nil || p.Gap.Reason != replay.GapUnknown || len(p.Events) != 0 {
					t.Fatalf("first page after an unknown id = %+v, want only the unknown gap", p)
				}
				select {
				case <-p.Wait:
				default:
					t.Fatal("the page that stopped at the damage would make its reader wait")
				}
				p, err = c.Next(100)
				if err != nil {
					t.Fatal(err)
				}
				if p.Gap == nil || p.Gap.Reason != replay.GapUnreadable || !slices.Equal(eventIDsOf(p.Events), wantAfter) {
					t.Fatalf("second page = gap %+v, events %q; want the unreadable gap, then %q", p.Gap, eventIDsOf(p.Events), wantAfter)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(calls) != len(x.damaged) {
				t.Fatalf("OnUnreadable called %d times by three readers, want once per damaged record: %+v", len(calls), calls)
			}
			for k, call := range calls {
				if call.topic != "t" || call.id != ids[x.damaged[k]] || call.err == nil || !strings.Contains(call.err.Error(), path) {
					t.Fatalf("OnUnreadable(%q, %q, %v), want topic t, id %s and an error naming %s", call.topic, call.id, call.err, ids[x.damaged[k]], path)
				}
			}
			// The topic still takes appends and serves them.
			res := appendKeyed(t, f, "t", "", "after the damage")
			got, gaps, _ := readAfter(t, f, "t", ids[n-1])
			if len(gaps) != 0 || !slices.Equal(got, res.IDs) {
				t.Fatalf("after the damage: %q (gaps %v), want %q", got, gaps, res.IDs)
			}
		})
	}
}

func eventIDsOf(es []*replay.Event) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	return ids
}

// A file written by format 1 (records without checksums) is upgraded in
// place: its records stay readable, new ones get checksums, and it reads
// the same after another restart.
func TestFileFormat1IsUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	old := writeStore(t, path, 5)
	// Rewrite the file as format 1 wrote it.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		if err := meta.Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		if err := meta.Delete([]byte("checksummed-after")); err != nil {
			return err
		}
		topics := tx.Bucket([]byte("topics"))
		return topics.ForEachBucket(func(name []byte) error {
			eb := topics.Bucket(name).Bucket([]byte("events"))
			strip := map[string][]byte{}
			if err := eb.ForEach(func(k, v []byte) error {
				strip[string(k)] = bytes.Clone(v[4:])
				return nil
			}); err != nil {
				return err
			}
			for k, v := range strip {
				if err := eb.Put([]byte(k), v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := replay.Config{Framer: replaytest.Framer, MaxEvents: 10}
	f, err := replay.OpenFile(path, cfg, nil)
	if err != nil {
		t.Fatalf("opening a format 1 file: %v", err)
	}
	all := append(slices.Clone(old), appendKeyed(t, f, "t", "", "new").IDs...)
	for life := range 2 {
		got, gaps, _ := readAfter(t, f, "t", replay.Earliest)
		if len(gaps) != 0 || !slices.Equal(got, all) {
			t.Fatalf("life %d: read %q (gaps %+v), want %q", life, got, gaps, all)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if life == 0 {
			f, err = replay.OpenFile(path, cfg, nil)
			if err != nil {
				t.Fatalf("reopening the upgraded file: %v", err)
			}
		}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket([]byte("meta")).Get([]byte("version"))); v != "2" {
			t.Errorf("format after the upgrade = %q, want 2", v)
		}
		return nil
	})
}
