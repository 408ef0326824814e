package replay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is the embedded default store: every topic is a slice of events in
// this process.
//
// Ids are "<epoch>-<seq>". The epoch is drawn when the store is created, so
// after a restart an id from before is recognised as unknown instead of being
// matched to a different event. seq comes from one counter for the whole
// store, so an id is a point in the store's timeline: it is never reissued,
// even for a topic that was forgotten and created again, and it orders events
// across topics (what a later multi-topic cursor needs).
type Memory struct {
	epoch string
	now   func() time.Time

	cfg    atomic.Pointer[Config]
	seq    atomic.Uint64 // last seq assigned
	closed atomic.Bool

	mu     sync.Mutex
	topics map[string]*memTopic
	// forgotten is the highest seq pruned from any topic the janitor has
	// forgotten: a topic created again treats older ids as expired, since
	// it cannot tell whether they missed anything.
	forgotten uint64

	stopJanitor chan struct{}
	janitorDone chan struct{}
}

// NewMemory returns a memory store bounded by cfg. Its janitor, which prunes
// by age and forgets idle topics, runs until Close.
func NewMemory(cfg Config) *Memory {
	m := &Memory{
		epoch:       newEpoch(),
		now:         time.Now,
		topics:      make(map[string]*memTopic),
		stopJanitor: make(chan struct{}),
		janitorDone: make(chan struct{}),
	}
	m.Configure(cfg)
	go m.janitor()
	return m
}

// newEpoch draws 40 random bits, written in base 36 (at most 8 characters).
func newEpoch() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("replay: reading random epoch: %v", err))
	}
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>24, 36)
}

// Epoch returns the id prefix of this store's life.
func (m *Memory) Epoch() string { return m.epoch }

// Configure applies new bounds to every topic at once.
func (m *Memory) Configure(cfg Config) {
	cfg = cfg.WithDefaults()
	m.cfg.Store(&cfg)
	m.sweep()
}

// Close stops the janitor and wakes every reader, which then sees
// ErrStoreClosed.
func (m *Memory) Close() error {
	if !m.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(m.stopJanitor)
	<-m.janitorDone
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.topics {
		t.mu.Lock()
		t.wakeAll()
		t.mu.Unlock()
	}
	return nil
}

// Destruct lets a Memory live in a caddy.UsagePool.
func (m *Memory) Destruct() error { return m.Close() }

// withTopic runs fn on the named topic, locked, creating the topic if needed.
func (m *Memory) withTopic(name string, fn func(t *memTopic, cfg *Config) error) error {
	for {
		if m.closed.Load() {
			return ErrStoreClosed
		}
		m.mu.Lock()
		t, ok := m.topics[name]
		if !ok {
			cfg := m.cfg.Load()
			if len(m.topics) >= cfg.MaxTopics {
				m.mu.Unlock()
				return ErrTooManyTopics
			}
			t = &memTopic{store: m, pruned: m.forgotten, wake: make(chan struct{}), active: m.now()}
			m.topics[name] = t
		}
		m.mu.Unlock()

		t.mu.Lock()
		if t.forgotten {
			// The janitor dropped it between the map lookup and the lock.
			t.mu.Unlock()
			continue
		}
		err := fn(t, m.cfg.Load())
		t.mu.Unlock()
		return err
	}
}

// Append implements Store.
func (m *Memory) Append(_ context.Context, topic string, b Batch) (Appended, error) {
	var res Appended
	err := m.withTopic(topic, func(t *memTopic, cfg *Config) error {
		if cfg.Framer == nil {
			return fmt.Errorf("replay: memory store has no Framer")
		}
		if t.closed {
			return ErrTopicClosed
		}
		now := m.now()
		if b.Key != "" {
			if ids, ok := t.dedupLookup(b.Key, now, cfg); ok {
				res = Appended{IDs: ids, Duplicate: true}
				return nil
			}
		}
		if len(b.Events) > cfg.MaxEvents {
			return ErrBatchTooLarge
		}
		// Seqs are taken under the topic lock, so within a topic they rise
		// in append order.
		base := m.seq.Add(uint64(len(b.Events))) - uint64(len(b.Events))
		events := make([]*Event, len(b.Events))
		var total int64
		for i, d := range b.Events {
			seq := base + uint64(i) + 1
			id := m.id(seq)
			events[i] = cfg.newEvent(seq, id, d, now)
			total += events[i].size()
		}
		if total > cfg.MaxBytes {
			// The seqs taken are simply never used: ids need not be dense.
			return ErrBatchTooLarge
		}
		res.IDs = make([]string, len(events))
		for i, e := range events {
			res.IDs[i] = e.ID
		}
		t.events = append(t.events, events...)
		t.bytes += total
		t.active = now
		if b.Key != "" {
			t.dedupRemember(b.Key, res.IDs, now, cfg)
		}
		t.prune(cfg, now)
		t.wakeAll()
		return nil
	})
	return res, err
}

// Subscribe implements Store.
func (m *Memory) Subscribe(_ context.Context, topic, from string, onGap GapPolicy) (Cursor, error) {
	var c *memCursor
	err := m.withTopic(topic, func(t *memTopic, cfg *Config) error {
		if t.closed {
			return ErrTopicClosed
		}
		if cfg.MaxSubscribersPerTopic > 0 && t.subscribers >= cfg.MaxSubscribersPerTopic {
			return ErrTooManySubscribers
		}
		t.subscribers++
		t.active = m.now()
		c = &memCursor{topic: t, onGap: onGap}
		switch from {
		case "":
			c.after = m.seq.Load()
		case Earliest:
			c.after = t.pruned
		default:
			c.after, c.gap = t.seek(from, onGap)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CloseTopic implements Store.
func (m *Memory) CloseTopic(_ context.Context, topic string) error {
	return m.withTopic(topic, func(t *memTopic, _ *Config) error {
		if t.closed {
			return ErrTopicClosed
		}
		t.closed = true
		t.active = m.now()
		t.wakeAll()
		return nil
	})
}

func (m *Memory) id(seq uint64) string {
	return m.epoch + "-" + strconv.FormatUint(seq, 10)
}

// parseID accepts only ids of this epoch: "<epoch>-<decimal seq>".
func (m *Memory) parseID(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, m.epoch)
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutPrefix(rest, "-")
	if !ok || digits == "" || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

// janitor prunes by age even on topics nobody writes to, and forgets topics
// that hold nothing worth remembering, so idle topics do not count against
// MaxTopics forever.
func (m *Memory) janitor() {
	defer close(m.janitorDone)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stopJanitor:
			return
		case <-tick.C:
			m.sweep()
		}
	}
}

func (m *Memory) sweep() {
	cfg := m.cfg.Load()
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, t := range m.topics {
		t.mu.Lock()
		t.prune(cfg, now)
		if t.forgettable(cfg, now) {
			t.forgotten = true
			m.forgotten = max(m.forgotten, t.pruned)
			delete(m.topics, name)
		}
		t.mu.Unlock()
	}
}

// memTopic is one topic's log.
type memTopic struct {
	store *Memory

	mu     sync.Mutex
	events []*Event // ascending seq
	// pruned: every event of this topic with seq <= pruned is gone, so a
	// cursor before it has missed events.
	pruned      uint64
	bytes       int64
	closed      bool
	forgotten   bool
	subscribers int
	active      time.Time // last append, subscribe, unsubscribe or close
	wake        chan struct{}

	dedup      map[string]dedupEntry
	dedupOrder []dedupRef
}

type dedupEntry struct {
	ids []string
	at  time.Time
}

type dedupRef struct {
	key string
	at  time.Time
}

// wakeAll releases every reader waiting on the log. Callers hold t.mu.
func (t *memTopic) wakeAll() {
	close(t.wake)
	t.wake = make(chan struct{})
}

// prune drops events past the bounds, oldest first. Callers hold t.mu.
func (t *memTopic) prune(cfg *Config, now time.Time) {
	drop := 0
	bytes := t.bytes
	for drop < len(t.events) {
		e := t.events[drop]
		over := len(t.events)-drop > cfg.MaxEvents || bytes > cfg.MaxBytes || now.Sub(e.Time) > cfg.MaxAge
		if !over {
			break
		}
		bytes -= e.size()
		drop++
	}
	if drop > 0 {
		t.pruned = t.events[drop-1].seq
		// Readers may still hold sub-slices of the old array, so pruned
		// slots are left alone; the copy releases them once most of the
		// array is dead.
		t.events = t.events[drop:]
		t.bytes = bytes
		if len(t.events) == 0 {
			t.events = nil
		} else if cap(t.events) > 64 && len(t.events) < cap(t.events)/4 {
			t.events = append([]*Event(nil), t.events...)
		}
	}
	for len(t.dedupOrder) > 0 {
		ref := t.dedupOrder[0]
		if now.Sub(ref.at) <= cfg.DedupWindow && len(t.dedupOrder) <= cfg.MaxDedupKeys {
			break
		}
		if e, ok := t.dedup[ref.key]; ok && e.at.Equal(ref.at) {
			delete(t.dedup, ref.key)
		}
		t.dedupOrder = t.dedupOrder[1:]
	}
}

// forgettable: nothing retained and nobody reading; a closed topic is kept
// for the history age so that reconnecting clients keep getting 204.
func (t *memTopic) forgettable(cfg *Config, now time.Time) bool {
	if t.subscribers > 0 || len(t.events) > 0 || len(t.dedup) > 0 {
		return false
	}
	return !t.closed || now.Sub(t.active) > cfg.MaxAge
}

func (t *memTopic) dedupLookup(key string, now time.Time, cfg *Config) ([]string, bool) {
	e, ok := t.dedup[key]
	if !ok || now.Sub(e.at) > cfg.DedupWindow {
		return nil, false
	}
	return e.ids, true
}

func (t *memTopic) dedupRemember(key string, ids []string, now time.Time, cfg *Config) {
	if t.dedup == nil {
		t.dedup = make(map[string]dedupEntry)
	}
	t.dedup[key] = dedupEntry{ids: ids, at: now}
	t.dedupOrder = append(t.dedupOrder, dedupRef{key: key, at: now})
	for len(t.dedupOrder) > cfg.MaxDedupKeys {
		ref := t.dedupOrder[0]
		if e, ok := t.dedup[ref.key]; ok && e.at.Equal(ref.at) {
			delete(t.dedup, ref.key)
		}
		t.dedupOrder = t.dedupOrder[1:]
	}
}

// seek finds where a cursor resumes after id. Callers hold t.mu.
func (t *memTopic) seek(id string, onGap GapPolicy) (uint64, *Gap) {
	seq, ok := t.store.parseID(id)
	switch {
	case ok && seq >= t.pruned && seq <= t.store.seq.Load():
		return seq, nil
	case ok && seq < t.pruned:
		after := t.gapTarget(onGap)
		return after, &Gap{Reason: GapExpired, Requested: id, ResumeAfter: t.store.id(after)}
	default:
		after := t.gapTarget(onGap)
		return after, &Gap{Reason: GapUnknown, Requested: id, ResumeAfter: t.store.id(after)}
	}
}

func (t *memTopic) gapTarget(onGap GapPolicy) uint64 {
	if onGap == GapLive {
		return t.store.seq.Load()
	}
	return t.pruned
}

// memCursor is a subscriber's position: the seq after which it reads.
type memCursor struct {
	topic  *memTopic
	onGap  GapPolicy
	after  uint64
	gap    *Gap // found by Subscribe, reported by the first Next
	closed bool
}

// Next implements Cursor.
func (c *memCursor) Next(max int) (Page, error) {
	t := c.topic
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed || t.store.closed.Load() {
		return Page{}, ErrStoreClosed
	}
	if max < 1 {
		// A read takes at least one event: an empty page would carry a
		// Wait that no write is coming to close.
		max = 1
	}
	p := Page{Gap: c.gap}
	c.gap = nil
	if c.after < t.pruned {
		// Fell behind the retained history (a slow reader): say so once and
		// continue from what is still there.
		requested := t.store.id(c.after)
		c.after = t.gapTarget(c.onGap)
		if p.Gap != nil {
			// The gap Subscribe found is not reported yet: it keeps its
			// reason and the client's id; only the resume point moved.
			p.Gap.ResumeAfter = t.store.id(c.after)
		} else {
			p.Gap = &Gap{Reason: GapExpired, Requested: requested, ResumeAfter: t.store.id(c.after)}
		}
	}
	i := sort.Search(len(t.events), func(i int) bool { return t.events[i].seq > c.after })
	if i < len(t.events) {
		j := min(i+max, len(t.events))
		p.Events = t.events[i:j:j]
		c.after = t.events[j-1].seq
	}
	if i+len(p.Events) == len(t.events) {
		p.Closed = t.closed
	}
	if len(p.Events) == 0 && !p.Closed {
		p.Wait = t.wake
	}
	return p, nil
}

// Position implements Cursor.
func (c *memCursor) Position() string {
	c.topic.mu.Lock()
	defer c.topic.mu.Unlock()
	return c.topic.store.id(c.after)
}

// Close implements Cursor.
func (c *memCursor) Close() {
	t := c.topic
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	t.subscribers--
	t.active = t.store.now()
}

// Interface guards
var (
	_ Store  = (*Memory)(nil)
	_ Cursor = (*memCursor)(nil)
)
