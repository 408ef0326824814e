package replay

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// checkFile validates an existing store file before anything writes to it:
// a write transaction on a damaged file can make it worse (a freelist that
// lists a live page hands that page to the commit, which overwrites live
// data). The file is opened read-only, bbolt checks every page and the
// freelist, and the layout is read as loading would; only a file that
// passes is opened for writing. A new or empty file has nothing to check.
// The check reads the whole file, which the history bounds keep small.
func checkFile(path string, lockTimeout time.Duration) error {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("file store %s: cannot open: %w", path, err)
	case info.IsDir():
		return fmt.Errorf("file store %s: is a directory, not a store file", path)
	case info.Size() == 0:
		return nil
	}
	db, file, err := openBolt(path, lockTimeout, true)
	if err != nil {
		return err
	}
	damage, abandoned, err := checkPages(db)
	if abandoned {
		// The check still holds the file's mapping: keep it open, but
		// let the file be opened again once it is repaired.
		unlockFile(file)
	} else {
		defer db.Close()
	}
	if err != nil {
		return fmt.Errorf("file store %s: checking the file: %w", path, err)
	}
	if len(damage) > 0 {
		return fmt.Errorf("file store %s: corrupt file (bbolt check: %s); the file was left as it is: restore it from a backup, or move it away to start empty", path, strings.Join(damage, "; "))
	}
	scratch := &File{path: path, db: db, topics: make(map[string]*fileTopic)}
	scratch.live = &scratch.durable
	scratch.now = time.Now
	return scratch.view(func(tx *bolt.Tx) error {
		_, err := scratch.read(tx)
		return err
	})
}

// Reports of bbolt's check that checkPages keeps, and that it reads at most.
const (
	maxCheckReports = 5
	maxCheckRead    = 1000
)

// checkPages runs bbolt's check of every page and the freelist, returning
// the first reports of damage.
//
// The check follows a cycle in the page tree (a damaged branch page that
// leads back to itself) forever, reporting each revisit while its stack
// grows, each report quoting the path so far: opening such a file ran for
// minutes at full CPU. So reports are read only up to maxCheckRead, more
// than a finite check of a history-bounded file usually makes; past it the
// check is abandoned (abandoned): its goroutine stays blocked on its next
// report for the process's life, and its transaction and db must be left
// open, since it still reads them. The open fails either way; abandoning
// costs a goroutine and a mapping of the damaged file.
func checkPages(db *bolt.DB) (damage []string, abandoned bool, err error) {
	tx, err := db.Begin(false)
	if err != nil {
		return nil, false, err
	}
	read := 0
	for report := range tx.Check() {
		if len(damage) < maxCheckReports {
			msg := report.Error()
			if len(msg) > 200 {
				msg = msg[:200] + "…"
			}
			damage = append(damage, msg)
		}
		if read++; read == maxCheckRead {
			return damage, true, nil
		}
	}
	return damage, false, tx.Rollback()
}

// openBolt opens the bbolt file, turning its failures (and panics: bbolt
// panics on some corrupt pages) into errors that name the file and say what
// to do.
// It also returns the file bbolt opened, to release its lock by hand.
func openBolt(path string, lockTimeout time.Duration, readOnly bool) (db *bolt.DB, file *os.File, err error) {
	if info, statErr := os.Stat(path); statErr == nil && info.IsDir() {
		return nil, nil, fmt.Errorf("file store %s: is a directory, not a store file", path)
	}
	defer func() {
		if r := recover(); r != nil {
			// Release the descriptor (and its lock), so that the file can
			// be opened again once repaired or replaced.
			if file != nil {
				unlockFile(file)
				_ = file.Close()
			}
			db, file, err = nil, nil, fmt.Errorf("file store %s: corrupt file: %v", path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  lockTimeout,
		ReadOnly: readOnly,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
	switch {
	case err == nil:
		return db, file, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, nil, fmt.Errorf("file store %s: locked by another process (still locked after %s): %w", path, lockTimeout, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, nil, fmt.Errorf("file store %s: corrupt or not a store file: %w", path, err)
	default:
		return nil, nil, fmt.Errorf("file store %s: cannot open: %w", path, err)
	}
}

// load reads the meta and every topic's state into memory, then, once
// everything read is valid, creates the layout in a new file or upgrades an
// older format. Nothing is written before the read succeeds.
func (f *File) load() error {
	var state fileState
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		state, err = f.read(tx)
		return err
	})
	if err != nil || state == fileCurrent {
		return err
	}
	return f.update(func(tx *bolt.Tx) error {
		if state == fileNew {
			return f.create(tx)
		}
		return f.upgrade(tx)
	})
}

// fileState is what read found.
type fileState int

const (
	fileCurrent fileState = iota
	fileNew               // no layout yet
	fileFormat1           // events without checksums
)

// read loads the meta and every topic's state from tx, failing on anything
// it cannot make sense of.
func (f *File) read(tx *bolt.Tx) (state fileState, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt file: %v", r)
		}
	}()
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// A new file, or someone else's bbolt file.
		var other []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			other = append(other, strconv.Quote(string(name)))
			return nil
		})
		if len(other) > 0 {
			return 0, fmt.Errorf("not a caddy-sse store file (a bbolt file with buckets %s)", strings.Join(other, ", "))
		}
		return fileNew, nil
	}
	state = fileCurrent
	switch v := string(meta.Get(keyVersion)); v {
	case fileFormat:
		after, ok := readU64(meta.Get(keyChecksummedAfter))
		if !ok {
			return 0, errors.New("corrupt store meta (checksummed-after missing)")
		}
		f.checksummedAfter = after
	case "1":
		state = fileFormat1
	default:
		return 0, fmt.Errorf("unsupported store file format %q (this build reads %q and \"1\")", v, fileFormat)
	}
	f.epoch = string(meta.Get(keyEpoch))
	seq, ok1 := readU64(meta.Get(keySeq))
	forgotten, ok2 := readU64(meta.Get(keyForgotten))
	if f.epoch == "" || !ok1 || !ok2 {
		return 0, errors.New("corrupt store meta (epoch, seq or forgotten missing)")
	}
	if state == fileFormat1 {
		// Every record written so far has no checksum.
		f.checksummedAfter = seq
	}
	f.resetSeq(seq)
	f.durable.Store(seq)
	f.forgotten = forgotten
	topics := tx.Bucket(bucketTopics)
	if topics == nil {
		return 0, errors.New("corrupt store: the topics bucket is missing")
	}
	return state, topics.ForEachBucket(func(name []byte) error {
		t, err := f.loadTopic(string(name), topics.Bucket(name), seq)
		if err != nil {
			return fmt.Errorf("topic %q: %w", name, err)
		}
		f.topics[t.name] = t
		return nil
	})
}

// create writes the layout of a new file.
func (f *File) create(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	f.epoch = newEpoch()
	for _, kv := range []struct{ k, v []byte }{
		{keyVersion, []byte(fileFormat)},
		{keyEpoch, []byte(f.epoch)},
		{keySeq, u64(0)},
		{keyForgotten, u64(0)},
		{keyChecksummedAfter, u64(0)},
	} {
		if err := meta.Put(kv.k, kv.v); err != nil {
			return err
		}
	}
	_, err = tx.CreateBucket(bucketTopics)
	return err
}

// upgrade turns a format 1 file into the current format: the records it
// holds keep having no checksum, and checksummed-after says which those are,
// so that no record is ever read both ways.
func (f *File) upgrade(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(keyChecksummedAfter, u64(f.checksummedAfter)); err != nil {
		return err
	}
	return meta.Put(keyVersion, []byte(fileFormat))
}

func (f *File) loadTopic(name string, tb *bolt.Bucket, storeSeq uint64) (*fileTopic, error) {
	m, err := readTopicMeta(tb)
	if err != nil {
		return nil, err
	}
	t := &fileTopic{store: f, name: name, count: m.count, bytes: m.bytes}
	t.init(&f.timeline, m.pruned)
	// Only appends and closes write a topic to the file: it counts,
	// whatever the limit in force now.
	t.counted = true
	f.counted.Add(1)
	if m.closedAt != 0 {
		t.closed = true
		t.active = time.Unix(0, m.closedAt)
	}
	if eb := tb.Bucket(bucketEvents); eb != nil {
		c := eb.Cursor()
		if k, v := c.First(); k != nil {
			// A damaged oldest record leaves oldest zero: the janitor's
			// first sweep prunes it, since it cannot be served anyway.
			if h, err := decodeHead(f.headOf(seqOf(k), v)); err == nil {
				t.oldest = h.at
			}
		}
		if k, _ := c.Last(); k != nil {
			t.last = seqOf(k)
		}
	}
	if t.last > storeSeq {
		return nil, fmt.Errorf("corrupt store: event seq %d beyond the store's seq %d", t.last, storeSeq)
	}
	// Nothing is cached after a restart: every retained event is on disk.
	t.cacheFrom = t.last
	if db := tb.Bucket(bucketDedup); db != nil {
		err := db.ForEach(func(k, v []byte) error {
			at, seqs, err := decodeDedup(v)
			if err != nil {
				return err
			}
			ids := make([]string, len(seqs))
			for i, s := range seqs {
				ids[i] = f.id(s)
			}
			if t.dedup == nil {
				t.dedup = make(map[string]*dedupEntry)
			}
			t.dedup[string(k)] = &dedupEntry{ids: ids, at: at}
			t.dedupOrder = append(t.dedupOrder, dedupRef{key: string(k), at: at})
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.SliceStable(t.dedupOrder, func(i, j int) bool { return t.dedupOrder[i].at.Before(t.dedupOrder[j].at) })
	}
	return t, nil
}
