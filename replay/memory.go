package replay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
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
	timeline // live cursors start at the last seq assigned

	cfg atomic.Pointer[Config]

	mu     sync.Mutex
	topics map[string]*topicLog
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
	m := newMemory(time.Now)
	m.Configure(cfg)
	go m.janitor()
	return m
}

// newMemory returns an unconfigured memory store on the clock now, its
// janitor not started.
func newMemory(now func() time.Time) *Memory {
	m := &Memory{
		topics:      make(map[string]*topicLog),
		stopJanitor: make(chan struct{}),
		janitorDone: make(chan struct{}),
	}
	m.epoch = newEpoch()
	m.now = now
	m.live = &m.seq
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

// withTopic runs fn on the named topic, locked, creating the topic if needed
// (fn claims its slot of MaxTopics when it needs one).
func (m *Memory) withTopic(name string, fn func(t *topicLog, cfg *Config) error) error {
	for {
		if m.closed.Load() {
			return ErrStoreClosed
		}
		m.mu.Lock()
		t, ok := m.topics[name]
		if !ok {
			t = new(topicLog)
			t.init(&m.timeline, m.forgotten)
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
	err := m.withTopic(topic, func(t *topicLog, cfg *Config) error {
		if cfg.Framer == nil {
			return fmt.Errorf("replay: memory store has no Framer")
		}
		if t.closed {
			return ErrTopicClosed
		}
		now := m.now()
		if b.Key != "" {
			if e, ok := t.dedupLookup(b.Key, now, cfg); ok {
				res = Appended{IDs: e.ids, Duplicate: true}
				return nil
			}
		}
		events := make([]*Event, len(b.Events))
		total, err := m.newEvents(cfg, events, b.Events, now)
		if err != nil {
			return err
		}
		if err := t.claimSlot(cfg); err != nil {
			m.settleEvents(events)
			return err
		}
		res.IDs = eventIDs(events)
		t.push(events, total)
		m.settleEvents(events)
		t.active = now
		if b.Key != "" {
			t.dedupRemember(b.Key, &dedupEntry{ids: res.IDs, at: now}, cfg)
		}
		t.prune(cfg, now)
		t.wakeAll()
		return nil
	})
	return res, err
}

// Subscribe implements Store.
func (m *Memory) Subscribe(_ context.Context, topic, from string, onGap GapPolicy) (Cursor, error) {
	var c *logCursor
	err := m.withTopic(topic, func(t *topicLog, cfg *Config) error {
		lc, err := t.subscribe(cfg, from, onGap)
		c = &lc
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CloseTopic implements Store.
func (m *Memory) CloseTopic(_ context.Context, topic string) error {
	return m.withTopic(topic, func(t *topicLog, cfg *Config) error {
		if t.closed {
			return ErrTopicClosed
		}
		if err := t.claimSlot(cfg); err != nil {
			return err
		}
		t.closed = true
		t.active = m.now()
		t.wakeAll()
		return nil
	})
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
		if len(t.events) == 0 && t.idle(cfg, now) {
			t.forgotten = true
			t.releaseSlot()
			m.forgotten = max(m.forgotten, t.pruned)
			delete(m.topics, name)
		}
		t.mu.Unlock()
	}
}

// prune drops the events and dedup keys past the bounds, oldest first, from
// a Memory topic (whose events are the whole log). Callers hold t.mu.
func (t *topicLog) prune(cfg *Config, now time.Time) {
	if n, last := t.dropOldest(func(e *Event, held int, bytes int64) bool {
		return cfg.Exceeds(held, bytes, e.Time, now)
	}); n > 0 {
		t.pruned = last
	}
	t.dedupTrim(now, cfg, true)
}

// Interface guards
var (
	_ Store  = (*Memory)(nil)
	_ Cursor = (*logCursor)(nil)
)
