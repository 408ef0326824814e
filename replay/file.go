package replay

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
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

// OpenFile opens (creating it if needed) the store file at path. It fails,
// naming the file and the cause, when the file is locked by another process,
// cannot be read or written, is corrupt or is not a store file: it never
// starts empty over a file it cannot read, and it writes nothing to an
// existing file before checking all of it (see checkFile), so a damaged
// file is left as it was. Frames are computed with the Framer of the Config
// in force (set by Configure) when events are appended or read back.
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
	db, _, err := openBolt(path, o.LockTimeout, false)
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

// Interface guards
var (
	_ Store  = (*File)(nil)
	_ Cursor = (*fileCursor)(nil)
)
