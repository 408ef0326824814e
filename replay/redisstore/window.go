package redisstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

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

	// keysRenewed is when the janitor last extended the topic's keys;
	// only the janitor uses it.
	keysRenewed time.Time

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
	end    streamID
	closed bool
	// lastEvent is the id of the topic's last event once it is closed:
	// a client at or after it has nothing left to resume.
	lastEvent streamID
	// epoch counts the times the window was thrown away because Redis
	// no longer had what it held; a cursor from an older epoch points
	// into a history that is gone.
	epoch       uint64
	subscribers int
	wake        chan struct{}
	// woken are called, once, when wake closes (see cursor.Notify): the
	// lots of streams that wait without a goroutine of their own.
	woken map[any]func()
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
// asks Redis where the topic is now. Either way the window it leaves
// agrees with Redis up to the returned state, so Subscribe decides on the
// same history whichever node it runs on: a window the tail has not
// caught up yet is read up to Redis's last entry, and a window holding
// more than Redis has (Redis lost its data) is loaded again.
func (t *topic) state(ctx context.Context) (topicState, error) {
	if !t.isLoaded() {
		t.syncMu.Lock()
		if !t.isLoaded() {
			st, err := t.load(ctx)
			t.syncMu.Unlock()
			if err != nil {
				return topicState{}, err
			}
			t.s.follow(t)
			return st, nil
		}
		t.syncMu.Unlock()
	}
	st, err := t.metaState(ctx)
	if err != nil {
		return topicState{}, err
	}
	if st.last == t.windowEnd() {
		return st, nil
	}
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	return t.settle(ctx)
}

// settle brings the window in line with Redis: it reads what the tail has
// not brought yet, or, when Redis's last entry is before the window's end
// (Redis restarted without its data, or the topic expired there), replaces
// the window with what Redis holds. Callers hold syncMu, so the window does
// not move meanwhile and an end past Redis's last can only mean Redis
// forgot it.
func (t *topic) settle(ctx context.Context) (topicState, error) {
	st, err := t.metaState(ctx)
	if err != nil {
		return topicState{}, err
	}
	end := t.windowEnd()
	switch {
	case st.last.less(end):
		return t.reload(ctx, st.last)
	case end.less(st.last):
		if err := t.readUpTo(ctx, end, st.last); err != nil {
			return topicState{}, err
		}
	}
	return st, nil
}

// readUpTo reads the entries after from up to last from Redis into the
// window. Callers hold syncMu.
func (t *topic) readUpTo(ctx context.Context, from, last streamID) error {
	for from.less(last) {
		msgs, err := t.s.client.XRangeN(ctx, t.keys.log, "("+from.String(), last.String(), 512).Result()
		if err != nil {
			return t.s.fail(ctx, err)
		}
		t.s.health.ok()
		if len(msgs) == 0 {
			return nil
		}
		batch := make([]rawEntry, 0, len(msgs))
		for _, m := range msgs {
			if e, ok := parseEntry(m); ok {
				batch = append(batch, e)
			}
		}
		if err := t.apply(ctx, batch); err != nil {
			return err
		}
		from = mustID(msgs[len(msgs)-1].ID)
	}
	return nil
}

// apply ingests entries read from Redis, reloading the window when they
// show that Redis lost what it holds. Callers hold syncMu.
func (t *topic) apply(ctx context.Context, entries []rawEntry) error {
	if lost, at := t.ingest(entries); lost {
		_, err := t.reload(ctx, at)
		return err
	}
	return nil
}

// reload replaces a window that holds entries Redis no longer has (Redis
// restarted without its data, was flushed or replaced, or the topic's keys
// expired): what Redis says now is the truth every node serves, and this
// node's cursors, positioned in the lost history, get a reset. Callers
// hold syncMu.
func (t *topic) reload(ctx context.Context, redisAt streamID) (topicState, error) {
	t.s.log.Warn("redis no longer holds what this node read of a topic: reloading it, its readers get a reset",
		zap.String("topic", t.name), zap.Stringer("node_end", t.windowEnd()), zap.Stringer("redis_at", redisAt))
	return t.load(ctx)
}

func (t *topic) isLoaded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loaded
}

func (t *topic) windowEnd() streamID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.end
}

func (t *topic) metaState(ctx context.Context) (topicState, error) {
	vals, err := t.s.client.HMGet(ctx, t.keys.meta, "last", "closed").Result()
	if err != nil {
		return topicState{}, t.s.fail(ctx, err)
	}
	t.s.health.ok()
	return metaState(vals), nil
}

// load reads the topic's retained history into the window, replacing
// whatever it held (a reload starts a new epoch). Callers hold syncMu.
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
	if t.loaded {
		t.epoch++
	}
	t.events, t.meta, t.bytes = nil, nil, 0
	t.closed, t.lastEvent = false, streamID{}
	t.end = st.last
	t.floor = st.last
	if len(entries) > 0 {
		t.floor = entries[0].prev
		t.end = maxID(t.end, entries[len(entries)-1].id)
	}
	for _, e := range entries {
		if e.marker {
			t.closed, t.lastEvent = true, e.prev
			continue
		}
		t.events = append(t.events, e.ev)
		t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
		t.bytes += e.cost
	}
	if st.closed && !t.closed {
		// Never expected (the marker is the newest entry, read in the
		// same transaction): nothing after the window's events is left.
		t.closed, t.lastEvent = true, t.end
		if n := len(t.meta); n > 0 {
			t.lastEvent = t.meta[n-1].id
		}
	}
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
// syncMu, so the end does not move meanwhile. It reports lost, changing
// nothing, when an entry follows one before the window's end: the stream
// went back (Redis lost data, or the topic expired and started over), so
// the window must be reloaded; at is the id Redis continued after.
func (t *topic) ingest(entries []rawEntry) (lost bool, at streamID) {
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
		return false, streamID{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := fresh[0].prev; p.less(t.end) {
		return true, p
	}
	for _, e := range fresh {
		if e.prev != t.end {
			// Entries between were trimmed before this node read them:
			// cursors before e.prev missed them.
			t.floor = maxID(t.floor, e.prev)
			t.events, t.meta, t.bytes = nil, nil, 0
		}
		if e.marker {
			t.closed, t.lastEvent = true, e.prev
		} else {
			t.events = append(t.events, e.ev)
			t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
			t.bytes += e.cost
		}
		t.end = e.id
	}
	t.prune(cfg, time.Now())
	t.wakeAll()
	return false, streamID{}
}

// wakeAll releases every reader waiting on the window. Callers hold t.mu.
func (t *topic) wakeAll() {
	close(t.wake)
	t.wake = make(chan struct{})
	for key, fn := range t.woken {
		delete(t.woken, key)
		fn()
	}
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

// lifeStart is the first entry of the window when the window holds the
// stream from its very first entry (floor 0-0); ok is false otherwise.
// An id before it, other than 0-0, was never issued by this life of the
// stream: it comes from a history Redis no longer has. Callers hold t.mu.
func (t *topic) lifeStart() (first streamID, ok bool) {
	if t.floor != (streamID{}) {
		return streamID{}, false
	}
	switch {
	case len(t.meta) > 0:
		return t.meta[0].id, true
	case t.end != (streamID{}):
		return t.end, true // only the close marker
	}
	return streamID{}, false
}

// gapTarget is where a cursor continues after a gap. Callers hold t.mu.
func (t *topic) gapTarget(onGap replay.GapPolicy, last streamID) streamID {
	if onGap == replay.GapLive {
		return maxID(last, t.end)
	}
	return t.floor
}
