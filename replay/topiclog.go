package replay

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// timeline is what the topic logs of one store (Memory or File) share: ids
// are "<epoch>-<seq>", and seq comes from one counter for the whole store,
// so an id is a point in the store's timeline, never reissued.
type timeline struct {
	epoch  string
	now    func() time.Time
	seq    atomic.Uint64 // last seq assigned
	closed atomic.Bool
	// counted is how many topics take a slot of Config.MaxTopics.
	counted atomic.Int64
	// live is where a live cursor starts and where GapLive resumes: seq
	// itself in Memory, the highest seq made durable in File.
	live *atomic.Uint64

	// settled is the store-wide mark multi-topic cursors merge up to:
	// every event with a seq at or below it is in its topic's log (or
	// never will be, its append having failed). Appends to different
	// topics take their seqs under different locks and reach their logs
	// in any order, so seq alone does not say that a smaller seq cannot
	// still appear; settled does (see take and settle).
	settled  atomic.Uint64
	settleMu sync.Mutex
	inflight []uint64      // first seq of each batch taken, not yet settled; ascending
	settleCh chan struct{} // closed when settled moves; nil when nobody waits

	// fans wake multi-topic cursors (see SubscribeMany).
	fans fans
}

// take reserves n seqs for a batch and returns the one before the first.
// The batch must be settled (settle) once its events are in the log, or
// once its append failed.
func (tl *timeline) take(n int) uint64 {
	tl.settleMu.Lock()
	defer tl.settleMu.Unlock()
	base := tl.seq.Load()
	tl.seq.Store(base + uint64(n))
	if n > 0 {
		tl.inflight = append(tl.inflight, base+1)
	}
	return base
}

// settle marks the batch whose first seq is first as in its log (or
// abandoned), moving settled as far as no earlier batch is pending.
func (tl *timeline) settle(first uint64) {
	tl.settleMu.Lock()
	defer tl.settleMu.Unlock()
	for i, s := range tl.inflight {
		if s == first {
			tl.inflight = append(tl.inflight[:i], tl.inflight[i+1:]...)
			break
		}
	}
	mark := tl.seq.Load()
	if len(tl.inflight) > 0 {
		mark = tl.inflight[0] - 1
	}
	if mark > tl.settled.Load() {
		tl.settled.Store(mark)
		if tl.settleCh != nil {
			close(tl.settleCh)
			tl.settleCh = nil
		}
	}
}

// settleEvents settles the batch of events (see settle); an empty batch
// took no seqs, so there is nothing to settle.
func (tl *timeline) settleEvents(events []*Event) {
	if len(events) > 0 {
		tl.settle(events[0].seq)
	}
}

// settledAfter returns a channel closed once settled passes mark (at once
// if it has).
func (tl *timeline) settledAfter(mark uint64) <-chan struct{} {
	tl.settleMu.Lock()
	defer tl.settleMu.Unlock()
	if tl.settled.Load() > mark {
		return readAgain
	}
	if tl.settleCh == nil {
		tl.settleCh = make(chan struct{})
	}
	return tl.settleCh
}

// resetSeq sets the timeline's seq when a store is loaded: nothing is in
// flight, so everything up to it is settled.
func (tl *timeline) resetSeq(seq uint64) {
	tl.seq.Store(seq)
	tl.settled.Store(seq)
}

func (tl *timeline) id(seq uint64) string {
	return tl.epoch + "-" + strconv.FormatUint(seq, 10)
}

// parseID accepts only ids of this epoch: "<epoch>-<decimal seq>".
func (tl *timeline) parseID(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, tl.epoch)
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

// newEvents takes seqs for a batch and builds its events into events (as
// long as drafts; the caller's, so that Memory's can stay on the stack),
// returning their total cost. A batch that alone exceeds the topic's bounds
// fails with ErrBatchTooLarge; the seqs it took are simply never used (ids
// need not be dense), and settled. A batch that succeeds here must be
// settled by the caller (see timeline.take). Callers hold the topic's lock, so within a topic seqs
// rise in append order.
func (tl *timeline) newEvents(cfg *Config, events []*Event, drafts []Draft, now time.Time) (int64, error) {
	if len(drafts) > cfg.MaxEvents {
		return 0, ErrBatchTooLarge
	}
	base := tl.take(len(drafts))
	var total int64
	for i, d := range drafts {
		seq := base + uint64(i) + 1
		events[i] = cfg.newEvent(seq, tl.id(seq), d, now)
		total += events[i].size()
	}
	if total > cfg.MaxBytes {
		tl.settle(base + 1)
		return 0, ErrBatchTooLarge
	}
	return total, nil
}

// eventIDs lists the ids of events.
func eventIDs(events []*Event) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

// topicLog is the in-memory part of one topic's log, shared by Memory (where
// events is the whole log) and File (where events is a cache of the newest
// events, older ones being read from the file).
type topicLog struct {
	tl *timeline

	mu sync.Mutex
	// events are the newest retained events, ascending seq; eventBytes is
	// their cost.
	events     []*Event
	eventBytes int64
	// pruned: every event of this topic with seq <= pruned is gone, so a
	// cursor before it has missed events.
	pruned uint64
	// last is the seq of the newest event (pruned when there is none): a
	// cursor at last has read everything.
	last        uint64
	closed      bool
	counted     bool // takes a slot of MaxTopics (see claimSlot)
	forgotten   bool // dropped from the store's table: look it up again
	subscribers int
	active      time.Time // last append, subscribe, unsubscribe or close
	wake        chan struct{}
	// lastSeen and closedSeen are last and closed as of the latest
	// wakeAll, readable without the lock: a multi-topic cursor that has
	// read a topic once skips it while nothing past its position is there
	// (see multiCursor.Next), which costs it no state per topic.
	lastSeen   atomic.Uint64
	closedSeen atomic.Bool
	// fans are the multi-topic wait groups following this topic.
	fans []*fan

	dedup      map[string]*dedupEntry
	dedupOrder []dedupRef
}

// init readies a new topic whose events up to pruned are gone.
func (t *topicLog) init(tl *timeline, pruned uint64) {
	t.tl = tl
	t.pruned = pruned
	t.last = pruned
	t.wake = make(chan struct{})
	t.active = tl.now()
}

// claimSlot makes t count against cfg.MaxTopics, failing with
// ErrTooManyTopics when every slot is taken. Appends and closes claim one;
// subscribers do not (see Config.MaxTopics). Callers hold t.mu.
func (t *topicLog) claimSlot(cfg *Config) error {
	if t.counted {
		return nil
	}
	for {
		n := t.tl.counted.Load()
		if n >= int64(cfg.MaxTopics) {
			return ErrTooManyTopics
		}
		if t.tl.counted.CompareAndSwap(n, n+1) {
			t.counted = true
			return nil
		}
	}
}

// releaseSlot gives t's slot back when the store forgets it. Callers hold
// t.mu.
func (t *topicLog) releaseSlot() {
	if t.counted {
		t.counted = false
		t.tl.counted.Add(-1)
	}
}

type dedupEntry struct {
	ids []string
	at  time.Time
	// op is set (File only) while the append that remembered the key is
	// uncommitted.
	op *fileOp
}

type dedupRef struct {
	key string
	at  time.Time
}

// wakeAll releases every reader waiting on the log. Callers hold t.mu.
func (t *topicLog) wakeAll() {
	close(t.wake)
	t.wake = make(chan struct{})
	t.lastSeen.Store(t.last)
	t.closedSeen.Store(t.closed)
	for _, f := range t.fans {
		f.fire()
	}
}

// push appends events after the newest. Callers hold t.mu.
func (t *topicLog) push(events []*Event, cost int64) {
	t.events = append(t.events, events...)
	t.eventBytes += cost
	t.last = events[len(events)-1].seq
}

// dropOldest drops events, oldest first, while over says the log is past
// its bounds: held events cost bytes, e the oldest of them. It returns how
// many it dropped and the seq of the last one. Callers hold t.mu.
func (t *topicLog) dropOldest(over func(e *Event, held int, bytes int64) bool) (int, uint64) {
	drop := 0
	bytes := t.eventBytes
	for drop < len(t.events) {
		e := t.events[drop]
		if !over(e, len(t.events)-drop, bytes) {
			break
		}
		bytes -= e.size()
		drop++
	}
	if drop == 0 {
		return 0, 0
	}
	last := t.events[drop-1].seq
	// Readers may still hold sub-slices of the old array, so dropped slots
	// are left alone; the copy releases them once most of the array is dead.
	t.events = t.events[drop:]
	t.eventBytes = bytes
	if len(t.events) == 0 {
		t.events = nil
	} else if cap(t.events) > 64 && len(t.events) < cap(t.events)/4 {
		t.events = append([]*Event(nil), t.events...)
	}
	return drop, last
}

// idle: nobody reading and no dedup key to keep; a closed topic is kept for
// the history age so that reconnecting clients keep getting 204. Callers
// hold t.mu and check that no event is retained.
func (t *topicLog) idle(cfg *Config, now time.Time) bool {
	if t.subscribers > 0 || len(t.dedup) > 0 {
		return false
	}
	return !t.closed || now.Sub(t.active) > cfg.MaxAge
}

func (t *topicLog) dedupLookup(key string, now time.Time, cfg *Config) (*dedupEntry, bool) {
	e, ok := t.dedup[key]
	if !ok || now.Sub(e.at) > cfg.DedupWindow {
		return nil, false
	}
	return e, true
}

// dedupRemember records key and returns the keys it evicted.
func (t *topicLog) dedupRemember(key string, e *dedupEntry, cfg *Config) []string {
	if t.dedup == nil {
		t.dedup = make(map[string]*dedupEntry)
	}
	t.dedup[key] = e
	t.dedupOrder = append(t.dedupOrder, dedupRef{key: key, at: e.at})
	return t.dedupTrim(e.at, cfg, false)
}

// dedupTrim forgets keys past MaxDedupKeys and, when byAge, past the window;
// it returns the keys it forgot.
func (t *topicLog) dedupTrim(now time.Time, cfg *Config, byAge bool) []string {
	var dropped []string
	for len(t.dedupOrder) > 0 {
		ref := t.dedupOrder[0]
		if len(t.dedupOrder) <= cfg.MaxDedupKeys && (!byAge || now.Sub(ref.at) <= cfg.DedupWindow) {
			break
		}
		if e, ok := t.dedup[ref.key]; ok && e.at.Equal(ref.at) {
			delete(t.dedup, ref.key)
			dropped = append(dropped, ref.key)
		}
		t.dedupOrder = t.dedupOrder[1:]
	}
	if len(t.dedupOrder) == 0 {
		t.dedupOrder = nil
	}
	return dropped
}

// subscribe opens a cursor after from (see Store.Subscribe). Callers hold
// t.mu.
func (t *topicLog) subscribe(cfg *Config, from string, onGap GapPolicy) (logCursor, error) {
	if t.closed && t.nothingAfter(from) {
		return logCursor{}, ErrTopicClosed
	}
	if cfg.MaxSubscribersPerTopic > 0 && t.subscribers >= cfg.MaxSubscribersPerTopic {
		return logCursor{}, ErrTooManySubscribers
	}
	t.subscribers++
	t.active = t.tl.now()
	c := logCursor{log: t, onGap: onGap}
	switch from {
	case "":
		c.after = t.tl.live.Load()
	case Earliest:
		c.after = t.pruned
	default:
		c.after, c.gap = t.seek(from, onGap)
	}
	return c, nil
}

// nothingAfter reports whether a reader of a closed topic starting after
// from would get nothing but the end: a client with no cursor, or one that
// already has the last event, is told at once that the topic is over, while
// one that missed events (or cannot tell, its id being unknown or expired)
// gets a cursor that delivers them and then Closed. Callers hold t.mu.
func (t *topicLog) nothingAfter(from string) bool {
	switch from {
	case "":
		return true
	case Earliest:
		return false
	}
	seq, ok := t.tl.parseID(from)
	return ok && seq >= t.last && seq <= t.tl.seq.Load()
}

// seek finds where a cursor resumes after id. Callers hold t.mu.
func (t *topicLog) seek(id string, onGap GapPolicy) (uint64, *Gap) {
	seq, ok := t.tl.parseID(id)
	switch {
	case ok && seq >= t.pruned && seq <= t.tl.seq.Load():
		return seq, nil
	case ok && seq < t.pruned:
		after := t.gapTarget(onGap, t.pruned)
		return after, &Gap{Reason: GapExpired, Requested: id, ResumeAfter: t.tl.id(after)}
	default:
		after := t.gapTarget(onGap, t.pruned)
		return after, &Gap{Reason: GapUnknown, Requested: id, ResumeAfter: t.tl.id(after)}
	}
}

// gapTarget is where a cursor continues after a gap, given the pruned mark.
func (t *topicLog) gapTarget(onGap GapPolicy, pruned uint64) uint64 {
	if onGap == GapLive {
		return max(t.tl.live.Load(), pruned)
	}
	return pruned
}

// readAgain is a Page.Wait that is already closed: the reader is to read
// again at once (a page ended early, see File.readFile).
var readAgain = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// logCursor is a subscriber's position: the seq after which it reads.
type logCursor struct {
	log    *topicLog
	onGap  GapPolicy
	after  uint64
	gap    *Gap // found by Subscribe, reported by the first Next
	closed bool
}

// Next implements Cursor. A read is start, then (File only) the events
// older than the log's in memory, then read: each store's cursor is these
// shared steps, so gaps, falling behind and waiting work alike in all.
func (c *logCursor) Next(max int) (Page, error) {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	var p Page
	if err := c.start(&p); err != nil {
		return Page{}, err
	}
	c.read(&p, atLeastOne(max))
	return p, nil
}

// stopEarly ends a page before read, at a point only the store knows of (a
// gap must go before the events it precedes, see File.readFile): an empty
// page gets a Wait that is already closed, so that its reader reads again
// at once.
func (p *Page) stopEarly() {
	if len(p.Events) == 0 {
		p.Wait = readAgain
	}
}

// atLeastOne is how many events a read of max takes: at least one, since
// an empty page would carry a Wait that no write is coming to close.
func atLeastOne(max int) int {
	if max < 1 {
		return 1
	}
	return max
}

// start begins a read: it fails once the cursor or the store is closed,
// and puts in p first the gap Subscribe found or the one the cursor fell
// into. Callers hold the log's lock.
func (c *logCursor) start(p *Page) error {
	if c.closed || c.log.tl.closed.Load() {
		return ErrStoreClosed
	}
	p.Gap = c.gap
	c.gap = nil
	if c.after < c.log.pruned {
		c.behind(p, c.log.pruned)
	}
	return nil
}

// read ends a read: it adds to p the log's events after the cursor, up to
// max in all, then says whether the topic is closed or, when there is
// nothing to read, what to wait on. Callers hold the log's lock.
func (c *logCursor) read(p *Page, max int) {
	t := c.log
	if room := max - len(p.Events); room > 0 {
		i := sort.Search(len(t.events), func(i int) bool { return t.events[i].seq > c.after })
		if i < len(t.events) {
			j := min(i+room, len(t.events))
			if len(p.Events) == 0 {
				p.Events = t.events[i:j:j]
			} else {
				p.Events = append(p.Events, t.events[i:j]...)
			}
			c.after = t.events[j-1].seq
		}
	}
	if c.after >= t.last {
		p.Closed = t.closed
	}
	if len(p.Events) == 0 && !p.Closed {
		p.Wait = t.wake
	}
}

// behind moves a cursor that fell behind pruned (a slow reader) to where
// delivery continues, reporting the gap once. Callers hold t.mu.
func (c *logCursor) behind(p *Page, pruned uint64) {
	if c.after >= pruned {
		return
	}
	requested := c.log.tl.id(c.after)
	c.after = c.log.gapTarget(c.onGap, pruned)
	p.FellBehind(requested, c.log.tl.id(c.after))
}

// Position implements Cursor.
func (c *logCursor) Position() string {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	return c.log.tl.id(c.after)
}

// Close implements Cursor.
func (c *logCursor) Close() {
	t := c.log
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	t.subscribers--
	t.active = t.tl.now()
}

var _ Cursor = (*logCursor)(nil)
