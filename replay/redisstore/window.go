package redisstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/caddy-sse/replay"
)

// topic is this node's view of one topic it tails: a window of the log,
// complete from floor to end.
type topic struct {
	s    *Store
	name string
	keys topicKeys

	// Guarded by s.mu.
	refs      int
	idleSince time.Time
	tailer    *tailer

	// syncMu serialises what extends the window: the load, the tail, and
	// this node's own appends.
	syncMu sync.Mutex

	mu     sync.Mutex
	loaded bool
	events []*replay.Event
	meta   []entryMeta // parallel to events
	bytes  int64
	// floor: every entry with an id <= floor is gone; a cursor before it
	// missed events.
	floor streamID
	// end: the newest entry in the window (events or the close marker).
	end         streamID
	closed      bool
	subscribers int
	wake        chan struct{}
}

type entryMeta struct {
	id   streamID
	cost int64
}

// topicState is what Subscribe learns from Redis.
type topicState struct {
	last   streamID
	closed bool
}

// state loads the window the first time (and starts tailing the topic), or
// asks Redis where the topic is now.
func (t *topic) state(ctx context.Context) (topicState, error) {
	if t.isLoaded() {
		return t.metaState(ctx)
	}
	t.syncMu.Lock()
	if t.isLoaded() {
		t.syncMu.Unlock()
		return t.metaState(ctx)
	}
	st, err := t.load(ctx)
	t.syncMu.Unlock()
	if err != nil {
		return topicState{}, err
	}
	t.s.follow(t)
	return st, nil
}

func (t *topic) isLoaded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loaded
}

func (t *topic) metaState(ctx context.Context) (topicState, error) {
	vals, err := t.s.client.HMGet(ctx, t.keys.meta, "last", "closed").Result()
	if err != nil {
		return topicState{}, t.s.fail(ctx, err)
	}
	t.s.health.ok()
	return metaState(vals), nil
}

// load reads the topic's retained history into the window. Callers hold
// syncMu.
func (t *topic) load(ctx context.Context) (topicState, error) {
	s := t.s
	cfg := s.cfg.Load()
	pipe := s.client.TxPipeline()
	hm := pipe.HMGet(ctx, t.keys.meta, "last", "closed")
	xr := pipe.XRevRangeN(ctx, t.keys.log, "+", "-", int64(cfg.MaxEvents)+1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return topicState{}, s.fail(ctx, err)
	}
	s.health.ok()
	st := metaState(hm.Val())
	msgs := xr.Val()
	entries := make([]rawEntry, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		if e, ok := parseEntry(msgs[i]); ok {
			entries = append(entries, e)
		}
	}
	// Keep the newest entries the bounds allow, as pruning would.
	now := time.Now()
	keep := len(entries)
	var n int
	var bytes int64
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if !e.marker {
			if cfg.Exceeds(n+1, bytes+e.cost, e.id.time(), now) {
				break
			}
			n++
			bytes += e.cost
		}
		keep = i
	}
	entries = entries[keep:]
	for i := range entries {
		if !entries[i].marker {
			entries[i].ev = cfg.NewEvent(entries[i].id.String(), replay.Draft{Type: entries[i].typ, Data: entries[i].data}, entries[i].id.time())
		}
	}

	t.mu.Lock()
	t.events, t.meta, t.bytes = nil, nil, 0
	t.end = st.last
	t.floor = st.last
	if len(entries) > 0 {
		t.floor = entries[0].prev
		t.end = maxID(t.end, entries[len(entries)-1].id)
	}
	for _, e := range entries {
		if e.marker {
			t.closed = true
			continue
		}
		t.events = append(t.events, e.ev)
		t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
		t.bytes += e.cost
	}
	t.closed = t.closed || st.closed
	t.loaded = true
	t.wakeAll()
	t.mu.Unlock()
	return st, nil
}

func metaState(vals []any) topicState {
	var st topicState
	if len(vals) > 0 {
		if v, ok := vals[0].(string); ok {
			st.last = mustID(v)
		}
	}
	if len(vals) > 1 && vals[1] != nil {
		st.closed = true
	}
	return st
}

// rawEntry is a log entry as read from Redis (or just written).
type rawEntry struct {
	id, prev streamID
	typ      string
	data     []byte
	cost     int64
	marker   bool
	ev       *replay.Event
}

func parseEntry(m redis.XMessage) (rawEntry, bool) {
	id, ok := parseID(m.ID)
	if !ok {
		return rawEntry{}, false
	}
	e := rawEntry{id: id}
	str := func(k string) string {
		v, _ := m.Values[k].(string)
		return v
	}
	e.prev = mustID(str("p"))
	if _, ok := m.Values["x"]; ok {
		e.marker = true
		return e, true
	}
	e.typ = str("t")
	e.data = []byte(str("d"))
	e.cost, _ = strconv.ParseInt(str("c"), 10, 64)
	return e, true
}

// ingest adds entries newer than the window's end, in order. Callers hold
// syncMu, so the end does not move meanwhile.
func (t *topic) ingest(entries []rawEntry) {
	cfg := t.s.cfg.Load()
	t.mu.Lock()
	end := t.end
	t.mu.Unlock()
	fresh := entries[:0:0]
	for _, e := range entries {
		if !end.less(e.id) {
			continue
		}
		if !e.marker && e.ev == nil {
			e.ev = cfg.NewEvent(e.id.String(), replay.Draft{Type: e.typ, Data: e.data}, e.id.time())
		}
		fresh = append(fresh, e)
		end = e.id
	}
	if len(fresh) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range fresh {
		if e.prev != t.end && e.prev != (streamID{}) {
			// Entries between were trimmed before this node read them:
			// cursors before e.prev missed them.
			t.floor = maxID(t.floor, e.prev)
			t.events, t.meta, t.bytes = nil, nil, 0
		}
		if e.marker {
			t.closed = true
		} else {
			t.events = append(t.events, e.ev)
			t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
			t.bytes += e.cost
		}
		t.end = e.id
	}
	t.prune(cfg, time.Now())
	t.wakeAll()
}

// wakeAll releases every reader waiting on the window. Callers hold t.mu.
func (t *topic) wakeAll() {
	close(t.wake)
	t.wake = make(chan struct{})
}

// prune drops events past the bounds, oldest first, and reports whether it
// dropped any. Callers hold t.mu.
func (t *topic) prune(cfg *replay.Config, now time.Time) bool {
	drop := 0
	bytes := t.bytes
	for drop < len(t.events) {
		m := t.meta[drop]
		if !cfg.Exceeds(len(t.events)-drop, bytes, m.id.time(), now) {
			break
		}
		bytes -= m.cost
		drop++
	}
	if drop == 0 {
		return false
	}
	t.floor = maxID(t.floor, t.meta[drop-1].id)
	// Readers may hold sub-slices of the old arrays, so dropped slots are
	// left alone; a copy releases them once most of the array is dead.
	t.events, t.meta = t.events[drop:], t.meta[drop:]
	t.bytes = bytes
	if len(t.events) == 0 {
		t.events, t.meta = nil, nil
	} else if cap(t.events) > 64 && len(t.events) < cap(t.events)/4 {
		t.events = append([]*replay.Event(nil), t.events...)
		t.meta = append([]entryMeta(nil), t.meta...)
	}
	return true
}

// gapTarget is where a cursor continues after a gap. Callers hold t.mu.
func (t *topic) gapTarget(onGap replay.GapPolicy, last streamID) streamID {
	if onGap == replay.GapLive {
		return maxID(last, t.end)
	}
	return t.floor
}
