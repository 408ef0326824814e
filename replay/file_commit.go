package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

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
				f.settleEvents(events)
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
				f.settleEvents(events)
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
			f.complete(op, err)
		}
		return
	}
	if err == nil {
		f.durable.Store(max(f.durable.Load(), seq))
	}
	for _, op := range group {
		f.complete(op, err)
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
			if err := op.persist(topics, meta, cfg, now, f.checksummedAfter); err != nil {
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

// persist writes the op into the open write transaction.
func (op *fileOp) persist(topics, meta *bolt.Bucket, cfg *Config, now time.Time, checksummedAfter uint64) error {
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

// complete applies a committed op to memory (or undoes what queuing it did,
// when it failed) and reports the outcome.
func (f *File) complete(op *fileOp, err error) {
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
		f.settleEvents(op.events)
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
