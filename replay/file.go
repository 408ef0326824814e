package replay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// File is the durable single-node store: the same logs as Memory, kept in a
// bbolt file, so that history, the id epoch and sequence and the dedup keys
// survive a restart (a clean stop or a kill -9).
//
// An Append returns only once its events are on disk (an fsync'd bbolt
// commit). Appends are not written one commit each: a single committer
// goroutine takes every append queued while the previous commit was being
// fsync'd and writes them all in one transaction (group commit), so the
// fsync cost is shared by concurrent publishers. The committer is ours rather
// than bbolt's DB.Batch because:
//
//   - an append must reach the log in the order its seqs were taken (under
//     the topic's lock). DB.Batch runs calls in the order goroutines reach
//     it, so keeping that order would mean holding the topic's lock until
//     the commit returns: one commit per append on a busy topic, no grouping
//     where it matters most. Here an append is queued under the lock and
//     waits for its commit outside it; one goroutine draining the FIFO queue
//     commits every topic's appends in seq order;
//   - DB.Batch may run a function twice (a failed batch is re-run without the
//     failing call), so the functions could not touch memory; ours do not
//     either, but we apply their results to memory once, after the commit;
//   - DB.Batch waits up to MaxBatchDelay (10ms) for a batch to fill; our
//     committer starts the next commit as soon as the previous one is done,
//     so a lone publisher pays one fsync, not one fsync plus a timer;
//   - memory state (the cache of recent events, counters, wake channels) must
//     be updated after the commit and in commit order, which the committer
//     does right after each group, before acknowledging it.
//
// If a group's transaction fails, each append of it is retried in a
// transaction of its own, so that one bad append (say, a key bbolt refuses)
// fails alone.
//
// Layout of the file:
//
//	meta/     version, epoch, seq (highest seq ever issued), forgotten,
//	          checksummed-after
//	topics/<topic>/
//	    meta     pruned seq, event count, bytes, closed-at time
//	    events/  8-byte big-endian seq -> CRC-32C, time, cost, type, data
//	             (no CRC for seqs up to checksummed-after: written by format 1)
//	    dedup/   key -> time, seqs of the batch
//
// Events' wire frames are not stored: the Framer computes them when an
// event is appended (kept in a bounded per-topic cache of recent events, so
// live fan-out never reads the disk) or read back from the file (replays of
// older events). bbolt reuses the pages that pruning frees, so the file stays
// bounded by the history bounds; it never shrinks.
type File struct {
	timeline // live cursors start at durable
	path     string
	db       *bolt.DB
	opts     FileOptions

	cfg atomic.Pointer[Config]
	// durable is the highest seq written to the file's meta: live cursors
	// start there, so no position handed out is lost by a restart.
	durable atomic.Uint64
	commits atomic.Uint64 // groups committed (tests)

	mu        sync.Mutex
	topics    map[string]*fileTopic
	forgotten uint64 // as Memory.forgotten, persisted
	// checksummedAfter: records of seqs above it start with a checksum
	// (see fileFormat). Set when the file is loaded.
	checksummedAfter uint64

	// unreadable holds the records found damaged, so that OnUnreadable
	// hears of each once, however many readers hit it.
	unreadableMu sync.Mutex
	unreadable   map[unreadableRecord]bool

	qmu     sync.Mutex
	queue   []*fileOp
	qclosed bool
	qsignal chan struct{} // capacity 1: the queue is not empty

	committerDone chan struct{}
	stopJanitor   chan struct{}
	janitorDone   chan struct{}
	closeOnce     sync.Once
	closeErr      error
}

// FileOptions tune OpenFile. Zero values take the defaults.
type FileOptions struct {
	// LockTimeout is how long OpenFile waits for another process to release
	// the file's lock before failing. Default 1s.
	LockTimeout time.Duration
	// CacheEvents and CacheBytes bound the in-memory cache of each topic's
	// most recent events, which serves live subscribers without reading the
	// file. Defaults 256 events and 1 MiB.
	CacheEvents int
	CacheBytes  int64
	// MaxGroup bounds how many appends one commit takes. Default 4096.
	MaxGroup int
}

func (o FileOptions) withDefaults() FileOptions {
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	if o.CacheEvents <= 0 {
		o.CacheEvents = 256
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 1 << 20
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 4096
	}
	return o
}

// fileFormat is the layout version written in meta/version. Format 2 added
// a checksum to event records; a format 1 file is upgraded when opened (see
// File.upgrade).
const fileFormat = "2"

var (
	bucketMeta   = []byte("meta")
	bucketTopics = []byte("topics")
	bucketEvents = []byte("events")
	bucketDedup  = []byte("dedup")
	keyVersion   = []byte("version")
	keyEpoch     = []byte("epoch")
	keySeq       = []byte("seq")
	keyForgotten = []byte("forgotten")
	// keyChecksummedAfter: events with a seq above it have a checksum.
	keyChecksummedAfter = []byte("checksummed-after")
	keyTopicMeta        = []byte("meta")
)

// OpenFile opens (creating it if needed) the store file at path. It fails,
// naming the file and the cause, when the file is locked by another process,
// cannot be read or written, is corrupt or is not a store file: it never
// starts empty over a file it cannot read, and it writes nothing to an
// existing file before checking all of it (see checkFile), so a damaged
// file is left as it was. Frames are computed with the
// Framer of the Config in force (set by Configure) when events are appended
// or read back.
func OpenFile(path string, cfg Config, opts *FileOptions) (*File, error) {
	var o FileOptions
	if opts != nil {
		o = *opts
	}
	o = o.withDefaults()
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	f := &File{
		path:          path,
		opts:          o,
		topics:        make(map[string]*fileTopic),
		qsignal:       make(chan struct{}, 1),
		committerDone: make(chan struct{}),
		stopJanitor:   make(chan struct{}),
		janitorDone:   make(chan struct{}),
	}
	f.now = time.Now
	f.live = &f.durable
	c := cfg.WithDefaults()
	f.cfg.Store(&c)

	if err := checkFile(path, o.LockTimeout); err != nil {
		return nil, err
	}
	db, err := openBolt(path, o.LockTimeout, false)
	if err != nil {
		return nil, err
	}
	f.db = db
	if err := f.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("file store %s: %w", path, err)
	}
	// No pruning here: the bounds in force are those of the first
	// Configure (a Caddy handler opens the store with defaults and
	// configures it right after), and pruning by defaults could drop what
	// the configured bounds keep.
	go f.committer()
	go f.janitor()
	return f, nil
}

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
	db, err := openBolt(path, lockTimeout, true)
	if err != nil {
		return err
	}
	defer db.Close()
	scratch := &File{path: path, db: db, topics: make(map[string]*fileTopic)}
	scratch.live = &scratch.durable
	scratch.now = time.Now
	err = scratch.view(func(tx *bolt.Tx) error {
		var damage []string
		for err := range tx.Check() {
			if len(damage) < 5 {
				msg := err.Error()
				if len(msg) > 200 {
					msg = msg[:200] + "…"
				}
				damage = append(damage, msg)
			}
		}
		if len(damage) > 0 {
			return fmt.Errorf("corrupt file (bbolt check: %s); the file was left as it is: restore it from a backup, or move it away to start empty", strings.Join(damage, "; "))
		}
		_, err := scratch.read(tx)
		return err
	})
	if err != nil {
		return err
	}
	return nil
}

// openBolt opens the bbolt file, turning its failures (and panics: bbolt
// panics on some corrupt pages) into errors that name the file and say what
// to do.
func openBolt(path string, lockTimeout time.Duration, readOnly bool) (db *bolt.DB, err error) {
	if info, statErr := os.Stat(path); statErr == nil && info.IsDir() {
		return nil, fmt.Errorf("file store %s: is a directory, not a store file", path)
	}
	var file *os.File
	defer func() {
		if r := recover(); r != nil {
			// Release the descriptor (and its lock), so that the file can
			// be opened again once repaired or replaced.
			if file != nil {
				unlockFile(file)
				_ = file.Close()
			}
			db, err = nil, fmt.Errorf("file store %s: corrupt file: %v", path, r)
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
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("file store %s: locked by another process (still locked after %s): %w", path, lockTimeout, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("file store %s: corrupt or not a store file: %w", path, err)
	default:
		return nil, fmt.Errorf("file store %s: cannot open: %w", path, err)
	}
}

// Path returns the absolute path of the store file.
func (f *File) Path() string { return f.path }

// Epoch returns the id prefix of this file's life; it survives restarts.
func (f *File) Epoch() string { return f.epoch }

// Configure applies new bounds to every topic at once; it returns when what
// no longer fits has been pruned from the file.
func (f *File) Configure(cfg Config) {
	cfg = cfg.WithDefaults()
	f.cfg.Store(&cfg)
	f.sweep(true)
}

// Close commits what is queued, closes the file and wakes every reader,
// which then sees ErrStoreClosed.
func (f *File) Close() error {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		close(f.stopJanitor)
		<-f.janitorDone
		f.qmu.Lock()
		f.qclosed = true
		f.qmu.Unlock()
		f.signal()
		<-f.committerDone
		f.closeErr = f.db.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, t := range f.topics {
			t.mu.Lock()
			t.wakeAll()
			t.mu.Unlock()
		}
	})
	return f.closeErr
}

// Destruct lets a File live in a caddy.UsagePool.
func (f *File) Destruct() error { return f.Close() }

// ---- loading ----

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
	f.seq.Store(seq)
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

// ---- topics ----

// fileTopic is one topic's state in memory: its log, whose events are a
// cache of the newest retained events, and counters mirroring the file.
type fileTopic struct {
	topicLog
	store *File
	name  string

	// Mirrors of the file, updated after each commit.
	count  uint64    // events retained
	bytes  int64     // their cost against MaxBytes
	oldest time.Time // time of the oldest retained event

	// Every retained event with seq > cacheFrom is in events.
	cacheFrom uint64

	closing     bool // CloseTopic queued: appends are refused
	pending     int  // ops queued, not yet applied
	pruneQueued bool // a janitor prune is queued
}

// withTopic runs fn on the named topic, locked, creating it if needed (fn
// claims its slot of MaxTopics when it needs one).
func (f *File) withTopic(name string, fn func(t *fileTopic, cfg *Config) error) error {
	for {
		if f.closed.Load() {
			return ErrStoreClosed
		}
		f.mu.Lock()
		t, ok := f.topics[name]
		if !ok {
			t = &fileTopic{store: f, name: name, cacheFrom: f.forgotten}
			t.init(&f.timeline, f.forgotten)
			f.topics[name] = t
		}
		f.mu.Unlock()

		t.mu.Lock()
		if t.forgotten {
			t.mu.Unlock()
			continue
		}
		err := fn(t, f.cfg.Load())
		t.mu.Unlock()
		return err
	}
}

// ---- the Store interface ----

// Append implements Store. It returns once the events are durable.
func (f *File) Append(_ context.Context, topic string, b Batch) (Appended, error) {
	for {
		var (
			res     Appended
			op      *fileOp
			waitFor *fileOp
		)
		err := f.withTopic(topic, func(t *fileTopic, cfg *Config) error {
			if cfg.Framer == nil {
				return fmt.Errorf("replay: file store has no Framer")
			}
			if t.closed || t.closing {
				return ErrTopicClosed
			}
			now := f.now()
			if b.Key != "" {
				if e, ok := t.dedupLookup(b.Key, now, cfg); ok {
					if e.op != nil {
						// The first append is not durable yet: its
						// outcome decides.
						waitFor = e.op
						return nil
					}
					res = Appended{IDs: e.ids, Duplicate: true}
					return nil
				}
			}
			events := make([]*Event, len(b.Events))
			if _, err := f.newEvents(cfg, events, b.Events, now); err != nil {
				return err
			}
			// Claimed before the commit and kept if it fails: the
			// topic is forgotten, and its slot freed, once idle.
			if err := t.claimSlot(cfg); err != nil {
				return err
			}
			op = &fileOp{topic: t, name: t.name, initPruned: t.pruned, events: events, done: make(chan error, 1)}
			op.recs = make([][]byte, len(events))
			for i, e := range events {
				op.recs[i] = encodeEvent(e, e.size())
			}
			res.IDs = eventIDs(events)
			if b.Key != "" {
				op.dedupKey = b.Key
				op.dedupVal = encodeDedup(now, op.events)
				op.dropKeys = t.dedupRemember(b.Key, &dedupEntry{ids: res.IDs, at: now, op: op}, cfg)
			}
			if err := f.enqueue(op); err != nil {
				return err
			}
			t.pending++
			return nil
		})
		if err != nil {
			return Appended{}, err
		}
		if waitFor != nil {
			<-waitFor.committed
			continue // look the key up again: durable now, or forgotten
		}
		if op == nil {
			return res, nil // a duplicate
		}
		if err := <-op.done; err != nil {
			return Appended{}, err
		}
		return res, nil
	}
}

// Subscribe implements Store.
func (f *File) Subscribe(_ context.Context, topic, from string, onGap GapPolicy) (Cursor, error) {
	var c *fileCursor
	err := f.withTopic(topic, func(t *fileTopic, cfg *Config) error {
		lc, err := t.subscribe(cfg, from, onGap)
		c = &fileCursor{logCursor: lc, topic: t}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CloseTopic implements Store. It returns once the end is durable.
func (f *File) CloseTopic(_ context.Context, topic string) error {
	var op *fileOp
	err := f.withTopic(topic, func(t *fileTopic, cfg *Config) error {
		if t.closed || t.closing {
			return ErrTopicClosed
		}
		if err := t.claimSlot(cfg); err != nil {
			return err
		}
		op = &fileOp{topic: t, name: t.name, initPruned: t.pruned, closeAt: f.now(), done: make(chan error, 1)}
		if err := f.enqueue(op); err != nil {
			return err
		}
		t.closing = true
		t.pending++
		return nil
	})
	if err != nil {
		return err
	}
	return <-op.done
}

// ---- cursors ----

// fileCursor reads a fileTopic: its log's cursor, reading events older
// than the cache from the file.
type fileCursor struct {
	logCursor
	topic *fileTopic
}

// Next implements Cursor. Recent events come from the topic's cache; older
// ones are read from the file.
func (c *fileCursor) Next(max int) (Page, error) {
	t := c.topic
	p, damaged, err := c.next(atLeastOne(max))
	// Outside the topic's lock: the hook is the caller's code.
	t.store.reportUnreadable(damaged)
	return p, err
}

func (c *fileCursor) next(max int) (Page, []damagedRecord, error) {
	t := c.topic
	t.mu.Lock()
	defer t.mu.Unlock()
	var p Page
	if err := c.start(&p); err != nil {
		return Page{}, nil, err
	}
	var damaged []damagedRecord
	if c.after < t.cacheFrom {
		var stopped bool
		var err error
		damaged, stopped, err = t.store.readFile(c, &p, max)
		if err != nil {
			return Page{}, damaged, err
		}
		if stopped {
			if len(p.Events) == 0 {
				p.Wait = readAgain
			}
			return p, damaged, nil
		}
	}
	c.read(&p, max)
	return p, damaged, nil
}

// damagedRecord is an event record readFile could not read.
type damagedRecord struct {
	unreadableRecord
	err error
}

type unreadableRecord struct {
	topic string
	seq   uint64
}

// reportUnreadable tells Config.OnUnreadable of the damaged records it has
// not been told of yet.
func (f *File) reportUnreadable(damaged []damagedRecord) {
	if len(damaged) == 0 {
		return
	}
	f.unreadableMu.Lock()
	fresh := damaged[:0]
	for _, d := range damaged {
		if !f.unreadable[d.unreadableRecord] {
			if f.unreadable == nil {
				f.unreadable = make(map[unreadableRecord]bool)
			}
			f.unreadable[d.unreadableRecord] = true
			fresh = append(fresh, d)
		}
	}
	f.unreadableMu.Unlock()
	if hook := f.cfg.Load().OnUnreadable; hook != nil {
		for _, d := range fresh {
			hook(d.topic, f.id(d.seq), d.err)
		}
	}
}

// readFile reads events older than the cache from the file. Callers hold
// t.mu. The file may be a commit ahead of memory (a prune committed, not yet
// applied): the file's pruned mark is checked too.
//
// A record that cannot be read is skipped with a GapUnreadable gap, so that
// one damaged record costs its readers that event, not the stream. A gap
// goes before the events it precedes: when p already holds events or
// another gap, readFile stops at the damage (stopped) and the next read
// reports it.
func (f *File) readFile(c *fileCursor, p *Page, max int) (damaged []damagedRecord, stopped bool, err error) {
	t := c.topic
	framer := f.cfg.Load().Framer
	if framer == nil {
		return nil, false, errors.New("replay: file store has no Framer")
	}
	err = f.view(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTopics).Bucket([]byte(t.name))
		if tb == nil {
			return nil
		}
		m, err := readTopicMeta(tb)
		if err != nil {
			return err
		}
		c.behind(p, m.pruned)
		eb := tb.Bucket(bucketEvents)
		if eb == nil || c.after >= t.cacheFrom {
			return nil
		}
		cur := eb.Cursor()
		for k, v := cur.Seek(u64(c.after + 1)); k != nil && len(p.Events) < max; k, v = cur.Next() {
			seq := seqOf(k)
			if seq > t.cacheFrom {
				break
			}
			e, err := f.decodeEvent(seq, v, framer)
			if err != nil {
				if len(p.Events) > 0 || (p.Gap != nil && p.Gap.Reason != GapUnreadable) {
					stopped = true
					return nil
				}
				if p.Gap == nil {
					p.Gap = &Gap{Reason: GapUnreadable, Requested: f.id(c.after)}
				}
				c.after = seq
				p.Gap.ResumeAfter = f.id(seq)
				damaged = append(damaged, damagedRecord{
					unreadableRecord{t.name, seq},
					fmt.Errorf("file store %s: topic %q, event %s: %w", f.path, t.name, f.id(seq), err),
				})
				continue
			}
			p.Events = append(p.Events, e)
			c.after = seq
		}
		return nil
	})
	return damaged, stopped, err
}

// ---- the committer ----

// fileOp is one change queued for the committer. Ops on a topic are queued
// under the topic's lock, so they commit in the order they were made.
type fileOp struct {
	topic      *fileTopic // nil for a forget
	name       string
	initPruned uint64 // pruned mark of the topic if the op creates it

	events   []*Event
	recs     [][]byte
	dedupKey string
	dedupVal []byte
	dropKeys []string
	closeAt  time.Time
	prune    bool // a janitor prune (no other change)

	forget    bool   // delete the topic
	forgotten uint64 // with forget: the store's new forgotten mark

	res topicMeta // the topic's state after the op, set by the transaction

	done      chan error    // the outcome, once applied to memory
	committed chan struct{} // closed with done (dedup waiters)
}

func (f *File) enqueue(op *fileOp) error {
	op.committed = make(chan struct{})
	f.qmu.Lock()
	defer f.qmu.Unlock()
	if f.qclosed {
		return ErrStoreClosed
	}
	f.queue = append(f.queue, op)
	f.signal()
	return nil
}

func (f *File) signal() {
	select {
	case f.qsignal <- struct{}{}:
	default:
	}
}

// committer commits queued ops in groups until Close, then commits what is
// left and returns.
func (f *File) committer() {
	defer close(f.committerDone)
	for {
		<-f.qsignal
		for {
			f.qmu.Lock()
			n := min(len(f.queue), f.opts.MaxGroup)
			group := f.queue[:n:n]
			f.queue = f.queue[n:]
			if len(f.queue) == 0 {
				f.queue = nil
			}
			closing := f.qclosed
			f.qmu.Unlock()
			if n == 0 {
				if closing {
					return
				}
				break
			}
			f.commit(group)
		}
	}
}

// commit writes a group in one transaction (falling back to one per op if
// it fails), then applies each op to memory, in order.
func (f *File) commit(group []*fileOp) {
	f.commits.Add(1)
	seq, err := f.write(group)
	if err != nil && len(group) > 1 {
		for _, op := range group {
			s, err := f.write([]*fileOp{op})
			if err == nil {
				f.durable.Store(max(f.durable.Load(), s))
			}
			f.finish(op, err)
		}
		return
	}
	if err == nil {
		f.durable.Store(max(f.durable.Load(), seq))
	}
	for _, op := range group {
		f.finish(op, err)
	}
}

// write runs ops in one read-write transaction; it returns the seq
// recorded in the meta.
func (f *File) write(ops []*fileOp) (seq uint64, err error) {
	cfg := f.cfg.Load()
	now := f.now()
	err = f.update(func(tx *bolt.Tx) error {
		topics := tx.Bucket(bucketTopics)
		meta := tx.Bucket(bucketMeta)
		for _, op := range ops {
			if err := op.run(topics, meta, cfg, now, f.checksummedAfter); err != nil {
				return fmt.Errorf("topic %q: %w", op.name, err)
			}
		}
		// Every seq of these ops was taken before they were queued.
		seq = f.seq.Load()
		if old, _ := readU64(meta.Get(keySeq)); old > seq {
			seq = old
		}
		return meta.Put(keySeq, u64(seq))
	})
	return seq, err
}

func (op *fileOp) run(topics, meta *bolt.Bucket, cfg *Config, now time.Time, checksummedAfter uint64) error {
	name := []byte(op.name)
	if op.forget {
		if err := topics.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		if old, _ := readU64(meta.Get(keyForgotten)); old >= op.forgotten {
			return nil
		}
		return meta.Put(keyForgotten, u64(op.forgotten))
	}
	tb := topics.Bucket(name)
	var m topicMeta
	if tb == nil {
		if op.prune && op.dedupKey == "" && len(op.dropKeys) == 0 {
			// Nothing on disk to prune.
			op.res = topicMeta{pruned: op.initPruned}
			return nil
		}
		var err error
		if tb, err = topics.CreateBucket(name); err != nil {
			return err
		}
		m.pruned = op.initPruned
	} else {
		var err error
		if m, err = readTopicMeta(tb); err != nil {
			return err
		}
	}
	eb, err := tb.CreateBucketIfNotExists(bucketEvents)
	if err != nil {
		return err
	}
	for i, e := range op.events {
		if err := eb.Put(u64(e.seq), op.recs[i]); err != nil {
			return err
		}
		m.count++
		m.bytes += e.size()
	}
	if op.dedupKey != "" || len(op.dropKeys) > 0 {
		db, err := tb.CreateBucketIfNotExists(bucketDedup)
		if err != nil {
			return err
		}
		for _, k := range op.dropKeys {
			if err := db.Delete([]byte(k)); err != nil {
				return err
			}
		}
		if op.dedupKey != "" {
			if err := db.Put([]byte(op.dedupKey), op.dedupVal); err != nil {
				return err
			}
		}
	}
	if !op.closeAt.IsZero() {
		m.closedAt = op.closeAt.UnixNano()
	}
	if err := pruneBucket(eb, &m, cfg, now, checksummedAfter); err != nil {
		return err
	}
	op.res = m
	enc := m.encode()
	if bytes.Equal(enc, tb.Get(keyTopicMeta)) {
		return nil // a prune that found nothing to do: no page to write
	}
	return tb.Put(keyTopicMeta, enc)
}

// pruneBucket deletes the oldest events past the bounds and records the
// time of the oldest kept in m.oldest. An oldest record whose head cannot
// be decoded is deleted: it could never be served, and keeping it would
// stop the topic's every later commit. Its cost being unknown, its size
// stands for it.
func pruneBucket(eb *bolt.Bucket, m *topicMeta, cfg *Config, now time.Time, checksummedAfter uint64) error {
	c := eb.Cursor()
	m.oldest = time.Time{}
	for k, v := c.First(); k != nil; k, v = c.First() {
		seq := seqOf(k)
		body, _ := recordBody(v, seq > checksummedAfter, false)
		h, err := decodeHead(body)
		if err == nil && !cfg.Exceeds(int(m.count), m.bytes, h.at, now) {
			m.oldest = h.at
			return nil
		}
		if err != nil {
			h.cost = min(int64(len(v)), m.bytes)
		}
		if err := eb.Delete(u64(seq)); err != nil {
			return err
		}
		m.count--
		m.bytes -= h.cost
		m.pruned = seq
	}
	if m.count != 0 || m.bytes != 0 {
		// The counters disagree with the events: trust the events.
		m.count, m.bytes = 0, 0
	}
	return nil
}

// finish applies a committed op to memory (or undoes what queuing it did,
// when it failed) and reports the outcome.
func (f *File) finish(op *fileOp, err error) {
	if t := op.topic; t != nil {
		t.mu.Lock()
		t.pending--
		if op.prune {
			t.pruneQueued = false
		}
		if err != nil {
			if !op.closeAt.IsZero() {
				t.closing = false
			}
			if op.dedupKey != "" {
				if e, ok := t.dedup[op.dedupKey]; ok && e.op == op {
					delete(t.dedup, op.dedupKey)
				}
			}
		} else {
			t.apply(op)
		}
		t.mu.Unlock()
	}
	if err != nil {
		err = fmt.Errorf("file store %s: %w", f.path, err)
	}
	op.done <- err
	close(op.committed)
}

// apply brings memory in line with a committed op. Callers hold t.mu.
func (t *fileTopic) apply(op *fileOp) {
	f := t.store
	m := op.res
	t.pruned, t.count, t.bytes, t.oldest = m.pruned, m.count, m.bytes, m.oldest
	woke := false
	if len(op.events) > 0 {
		var cost int64
		for _, e := range op.events {
			cost += e.size()
		}
		t.push(op.events, cost)
		t.active = f.now()
		woke = true
	}
	t.last = max(t.last, t.pruned)
	if op.dedupKey != "" {
		if e, ok := t.dedup[op.dedupKey]; ok && e.op == op {
			e.op = nil
		}
	}
	if m.closedAt != 0 && !t.closed {
		t.closed = true
		t.closing = false
		t.active = f.now()
		woke = true
	}
	t.trimCache()
	if woke {
		t.wakeAll()
	}
}

// trimCache drops pruned events and keeps the cache within its bounds.
// Callers hold t.mu.
func (t *fileTopic) trimCache() {
	o := t.store.opts
	if n, last := t.dropOldest(func(e *Event, held int, bytes int64) bool {
		return e.seq <= t.pruned || held > o.CacheEvents || bytes > o.CacheBytes
	}); n > 0 {
		t.cacheFrom = max(t.cacheFrom, last)
	}
	t.cacheFrom = max(t.cacheFrom, t.pruned)
}

// update and view run bbolt transactions, turning a panic on a corrupt page
// into an error.
func (f *File) update(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt file: %v", r)
		}
	}()
	return f.db.Update(fn)
}

func (f *File) view(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("file store %s: corrupt file: %v", f.path, r)
		}
	}()
	if err := f.db.View(fn); err != nil {
		return fmt.Errorf("file store %s: %w", f.path, err)
	}
	return nil
}

// ---- the janitor ----

// janitor prunes by age and dedup window and forgets idle topics, every
// second.
func (f *File) janitor() {
	defer close(f.janitorDone)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-f.stopJanitor:
			return
		case <-tick.C:
			if f.cfg.Load().Framer != nil { // configured for use
				f.sweep(false)
			}
		}
	}
}

// sweep queues prunes where bounds are exceeded (all topics with events when
// all), and forgets the topics that hold nothing worth remembering; with
// all, it waits for the prunes to be durable.
func (f *File) sweep(all bool) {
	cfg := f.cfg.Load()
	now := f.now()
	var ops []*fileOp
	f.mu.Lock()
	for name, t := range f.topics {
		t.mu.Lock()
		drop := t.dedupTrim(now, cfg, true)
		over := t.count > 0 && (all || cfg.Exceeds(int(t.count), t.bytes, t.oldest, now))
		if (over || len(drop) > 0) && (!t.pruneQueued || all) {
			op := &fileOp{topic: t, name: name, initPruned: t.pruned, prune: true, dropKeys: drop, done: make(chan error, 1)}
			if f.enqueue(op) == nil {
				t.pending++
				t.pruneQueued = true
				ops = append(ops, op)
			}
		} else if t.pending == 0 && t.count == 0 && t.idle(cfg, now) {
			t.forgotten = true
			t.releaseSlot()
			f.forgotten = max(f.forgotten, t.pruned)
			delete(f.topics, name)
			// Queued under f.mu: the ops of a topic created again by this
			// name come after it.
			_ = f.enqueue(&fileOp{name: name, forget: true, forgotten: f.forgotten, done: make(chan error, 1)})
		}
		t.mu.Unlock()
	}
	f.mu.Unlock()
	if all {
		for _, op := range ops {
			<-op.committed
		}
	}
}

// ---- encoding ----

type topicMeta struct {
	pruned   uint64
	count    uint64
	bytes    int64
	closedAt int64     // unix ns, 0 when open
	oldest   time.Time // not stored: the first event's time
}

func (m topicMeta) encode() []byte {
	b := make([]byte, 32)
	putU64(b[0:], m.pruned)
	putU64(b[8:], m.count)
	putU64(b[16:], uint64(m.bytes))
	putU64(b[24:], uint64(m.closedAt))
	return b
}

func readTopicMeta(tb *bolt.Bucket) (topicMeta, error) {
	b := tb.Get(keyTopicMeta)
	if len(b) != 32 {
		return topicMeta{}, fmt.Errorf("corrupt topic meta (%d bytes)", len(b))
	}
	return topicMeta{
		pruned:   getU64(b[0:]),
		count:    getU64(b[8:]),
		bytes:    int64(getU64(b[16:])),
		closedAt: int64(getU64(b[24:])),
	}, nil
}

// An event record: a CRC-32C of the rest (4 bytes), then time (unix ns, 8
// bytes), uvarints cost and type length, the type and the data. bbolt
// checks its pages' structure, not the values in them: the checksum is what
// tells a damaged record from data, so it is never served as an event.
func encodeEvent(e *Event, cost int64) []byte {
	b := make([]byte, 4+8, 4+8+2*10+len(e.Type)+len(e.Data))
	putU64(b[4:], uint64(e.Time.UnixNano()))
	b = appendUvarint(b, uint64(cost))
	b = appendUvarint(b, uint64(len(e.Type)))
	b = append(b, e.Type...)
	b = append(b, e.Data...)
	binary.BigEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	return b
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errChecksum = errors.New("event record fails its checksum")

// recordBody returns a record without its checksum (checksummed: the
// record has one, see File.checksummedAfter); with verify, it fails unless
// the checksum matches. Pruning reads only the record's head and does not
// verify: it deletes what it reads.
func recordBody(v []byte, checksummed, verify bool) ([]byte, error) {
	if !checksummed {
		return v, nil
	}
	if len(v) < 4 {
		return nil, errCorruptRecord
	}
	if verify && binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return nil, errChecksum
	}
	return v[4:], nil
}

type eventHead struct {
	at   time.Time
	cost int64
	rest []byte // type length, type, data
}

var errCorruptRecord = errors.New("corrupt event record")

func decodeHead(v []byte) (eventHead, error) {
	if len(v) < 8 {
		return eventHead{}, errCorruptRecord
	}
	at := time.Unix(0, int64(getU64(v)))
	cost, n := uvarint(v[8:])
	if n <= 0 {
		return eventHead{}, errCorruptRecord
	}
	return eventHead{at: at, cost: int64(cost), rest: v[8+n:]}, nil
}

// headOf returns the record of seq without its checksum, unverified, for
// reading its head: what loading needs of the oldest record.
func (f *File) headOf(seq uint64, v []byte) []byte {
	body, _ := recordBody(v, seq > f.checksummedAfter, false)
	return body
}

func (f *File) decodeEvent(seq uint64, v []byte, framer Framer) (*Event, error) {
	body, err := recordBody(v, seq > f.checksummedAfter, true)
	if err != nil {
		return nil, err
	}
	h, err := decodeHead(body)
	if err != nil {
		return nil, err
	}
	tl, n := uvarint(h.rest)
	if n <= 0 || uint64(len(h.rest)-n) < tl {
		return nil, errCorruptRecord
	}
	typ := string(h.rest[n : n+int(tl)])
	// v lives in the mmap only during the transaction: copy.
	data := append([]byte(nil), h.rest[n+int(tl):]...)
	id := f.id(seq)
	return &Event{ID: id, Type: typ, Data: data, Time: h.at, Frame: framer(id, typ, data), seq: seq}, nil
}

// A dedup record: time (unix ns), count, the seqs of the batch.
func encodeDedup(at time.Time, events []*Event) []byte {
	b := make([]byte, 8, 8+10*(len(events)+1))
	putU64(b, uint64(at.UnixNano()))
	b = appendUvarint(b, uint64(len(events)))
	for _, e := range events {
		b = appendUvarint(b, e.seq)
	}
	return b
}

func decodeDedup(v []byte) (time.Time, []uint64, error) {
	bad := errors.New("corrupt dedup record")
	if len(v) < 8 {
		return time.Time{}, nil, bad
	}
	at := time.Unix(0, int64(getU64(v)))
	v = v[8:]
	n, k := uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return time.Time{}, nil, bad
	}
	v = v[k:]
	seqs := make([]uint64, n)
	for i := range seqs {
		s, k := uvarint(v)
		if k <= 0 {
			return time.Time{}, nil, bad
		}
		seqs[i] = s
		v = v[k:]
	}
	return at, seqs, nil
}

func putU64(b []byte, v uint64)               { binary.BigEndian.PutUint64(b, v) }
func getU64(b []byte) uint64                  { return binary.BigEndian.Uint64(b) }
func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func uvarint(b []byte) (uint64, int)          { return binary.Uvarint(b) }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	putU64(b, v)
	return b
}

func readU64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return getU64(b), true
}

func seqOf(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return getU64(k)
}

// Interface guards
var (
	_ Store  = (*File)(nil)
	_ Cursor = (*fileCursor)(nil)
)
