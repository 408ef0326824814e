package replay

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Multi is implemented by stores whose ids are points of one store-wide
// timeline (Memory and File): there one id is a position in every topic at
// once, so a cursor over several topics needs no more than the id of the
// last event it delivered.
type Multi interface {
	// SubscribeMany opens one cursor on several topics (distinct names),
	// as Subscribe does on one (see SubscribeMany, the function, for what
	// it delivers).
	SubscribeMany(ctx context.Context, topics []string, from string, onGap GapPolicy) (Cursor, error)
}

// SubscribeMany opens one cursor on several distinct topics of s. Its pages
// carry the topic of each event (Page.Topics), a gap confined to one topic
// names it (Gap.Topic) and the others continue exactly, and a topic that
// ends is listed in Page.ClosedTopics while the others go on; Page.Closed
// comes with the last of them. Its position is one id for the whole set:
// resuming after it gives every topic exactly what followed, with neither
// gap nor duplicate.
//
//   - On a Multi store (Memory, File) events come in the store-wide order
//     and the cursor's id is the id of the event it last delivered.
//   - On any other store (Redis) it is a composite cursor (see Compose):
//     each topic's own order, interleaved as read.
//
// A from that is not an id of this cursor (another set of topics, another
// store, garbage) gives one gap for the whole set (Topic empty), then what
// onGap says for every topic. Subscribing fails with ErrTopicClosed only
// when every topic is closed with nothing after from; a topic that is
// closed with nothing after from is reported at once in ClosedTopics.
func SubscribeMany(ctx context.Context, s Store, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	if len(topics) == 0 {
		return nil, errors.New("replay: SubscribeMany needs a topic")
	}
	if m, ok := s.(Multi); ok {
		return m.SubscribeMany(ctx, topics, from, onGap)
	}
	return Compose(ctx, s, topics, from, onGap)
}

// Notifier is implemented by cursors whose Page.Wait can also be waited
// for without a goroutine blocked on it: Notify arranges for fn to be
// called once wait is closed (from the goroutine that closes it, which
// may hold locks of the store: fn must only hand the wake-up over), and
// reports false when it cannot, wait not being what the cursor notifies
// of or being closed already: then the caller waits on wait itself.
// Registering the same key again before wait closes replaces its fn.
type Notifier interface {
	Notify(wait <-chan struct{}, key any, fn func()) bool
}

// WaitKey is implemented by multi-topic cursors: streams whose cursors
// have the same key share what their pages' Wait is made of, so that they
// can wait together (one key per set of topics on Memory and File).
type WaitKey interface {
	WaitKey() string
}

// fan wakes the multi-topic cursors of one set of topics when any of the
// set's logs changes: each log calls fire from wakeAll, so no goroutine
// watches on their behalf. Cursors on the same set share one fan, and so
// one Wait channel, which is what lets their streams park together.
type fan struct {
	key   string
	names []string // the set's topics, sorted
	refs  int      // guarded by fans.mu

	// slots are the set's subscriptions by topic (names' order), shared
	// by the cursors of the set: every cursor subscribed to a topic holds
	// the same log, so they need not each keep a pointer per topic. A slot
	// is filled by the first cursor subscribed to its topic and emptied
	// when the last one leaves; fire is registered with its log meanwhile.
	// Written under fans.mu, read by a cursor only at the topics it is
	// subscribed to (and so not while they are written).
	slots []setSlot
	// extra counts the subscriptions of cursors whose log of a topic is
	// not its slot's: nil, unless a topic's log were replaced while a
	// cursor holds the old one, which stores do not do (a log with
	// subscribers is never forgotten); kept so that such a cursor would
	// still be served. Guarded by fans.mu.
	extra map[*topicLog]int

	mu    sync.Mutex
	ch    chan struct{}
	armed bool // a reader took ch: fire must close it
	// waiters are called when ch is closed (see Notify): one lot, the
	// set's, in practice.
	waiters []waiter
}

type waiter struct {
	key any
	fn  func()
}

// arm returns the channel the next change of any log of the set closes.
func (f *fan) arm() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = true
	return f.ch
}

// fire is called by a log of the set when it changes (under its lock).
func (f *fan) fire() {
	f.mu.Lock()
	var waiters []waiter
	if f.armed {
		close(f.ch)
		f.ch = make(chan struct{})
		f.armed = false
		waiters, f.waiters = f.waiters, nil
	}
	f.mu.Unlock()
	// Outside the fan's lock: a waiter may take locks of its own that it
	// holds while calling notify.
	for _, w := range waiters {
		w.fn()
	}
}

// notify calls fn once wait, a channel arm returned, is closed, and
// reports false instead when it cannot: wait is not the fan's current
// channel (it is closed already, or another one). A key registered again
// before the channel closes replaces its function.
func (f *fan) notify(wait <-chan struct{}, key any, fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed || wait != f.ch {
		return false
	}
	for i := range f.waiters {
		if f.waiters[i].key == key {
			f.waiters[i].fn = fn
			return true
		}
	}
	f.waiters = append(f.waiters, waiter{key, fn})
	return true
}

// fans holds a timeline's fans by set.
type fans struct {
	mu  sync.Mutex
	all map[string]*fan
}

// setSlot is one topic's subscription in a set: its log, and in File its
// topic (nil in Memory), and how many cursors of the set hold it. A zero
// slot: no cursor of the set is subscribed.
type setSlot struct {
	log  *topicLog
	file *fileTopic
	refs int
}

// acquire returns the fan of the set key, registered with the logs of
// own (the cursor's subscriptions by topic; a zero slot for a topic it is
// not subscribed to), and the slots the cursor is to read: the set's,
// shared, or own itself should they disagree (see fan.extra).
func (fs *fans) acquire(key string, names []string, own []setSlot) (*fan, []setSlot) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f := fs.all[key]
	if f == nil {
		if fs.all == nil {
			fs.all = make(map[string]*fan)
		}
		f = &fan{key: key, names: names, ch: make(chan struct{}), slots: make([]setSlot, len(names))}
		fs.all[key] = f
	}
	f.refs++
	slots := f.slots
	for i, o := range own {
		t := o.log
		if t == nil {
			continue
		}
		s := &f.slots[i]
		switch {
		case s.log == t:
			s.refs++
		case s.log == nil:
			// The first of the set on this log, unless cursors that
			// could not share the slot hold it already: their count
			// moves here, and fire is registered with it once.
			*s = setSlot{log: t, file: o.file, refs: 1}
			if n := f.extra[t]; n > 0 {
				s.refs += n
				delete(f.extra, t)
			} else {
				f.register(t)
			}
		default:
			slots = own
			if f.extra == nil {
				f.extra = make(map[*topicLog]int)
			}
			if f.extra[t]++; f.extra[t] == 1 {
				f.register(t)
			}
		}
	}
	return f, slots
}

// register makes t fire f when it changes.
func (f *fan) register(t *topicLog) {
	t.mu.Lock()
	t.fans = append(t.fans, f)
	t.mu.Unlock()
}

// unregister undoes register.
func (f *fan) unregister(t *topicLog) {
	t.mu.Lock()
	if i := slices.Index(t.fans, f); i >= 0 {
		t.fans = slices.Delete(t.fans, i, i+1)
	}
	if len(t.fans) == 0 {
		t.fans = nil
	}
	t.mu.Unlock()
}

// release undoes acquire for a cursor subscribed to the logs of slots.
func (fs *fans) release(f *fan, slots []setSlot, subscribed func(i int) bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, o := range slots {
		t := o.log
		if t == nil || !subscribed(i) {
			continue
		}
		if s := &f.slots[i]; s.log == t {
			if s.refs--; s.refs == 0 {
				*s = setSlot{}
				f.unregister(t)
			}
			continue
		}
		if f.extra[t]--; f.extra[t] == 0 {
			delete(f.extra, t)
			f.unregister(t)
		}
	}
	if len(f.extra) == 0 {
		f.extra = nil
	}
	if f.refs--; f.refs == 0 {
		delete(fs.all, f.key)
	}
}

// setKey names a set of sorted topics; it is also the set's WaitKey
// (held once by the set's fan and the lot of its streams).
func setKey(sorted []string) string {
	// Topic names hold no control character, so a NUL cannot be in one.
	return "multi\x00" + strings.Join(sorted, "\x00")
}

// subscribeOne subscribes to one topic for a multi-topic cursor and
// returns its log cursor (the subscription, with where it starts and any
// gap found) and, in File, its topic.
type subscribeOne func(topic, from string, onGap GapPolicy) (logCursor, *fileTopic, error)

// subscribeMany is SubscribeMany for a timeline store.
func (tl *timeline) subscribeMany(topics []string, from string, onGap GapPolicy, fs *fans, open subscribeOne) (Cursor, error) {
	// The topics in one order for every cursor of the set, so that the
	// set's fan holds their names once for all of them.
	topics = slices.Clone(topics)
	slices.Sort(topics)
	c := &multiCursor{tl: tl, fans: fs, onGap: onGap, subs: make([]subState, len(topics))}
	own := make([]setSlot, len(topics))
	c.slots = own // until the set's are known
	// Where each topic starts. A live start is the settled mark, the same
	// for every topic, so that the merge starts from one point.
	start, live := from, false
	switch seq, ok := tl.parseID(from); {
	case from == "":
		live = true
	case from == Earliest:
	case ok && seq <= tl.seq.Load():
		c.after.Store(seq)
	default:
		c.gaps = append(c.gaps, &Gap{Reason: GapUnknown, Requested: from})
		if onGap == GapLive {
			live = true
		} else {
			start = Earliest
		}
	}
	if live {
		mark := tl.settled.Load()
		c.after.Store(mark)
		start = tl.id(mark)
	}

	closed := 0
	for i, name := range topics {
		lc, ft, err := open(name, start, onGap)
		switch {
		case errors.Is(err, ErrTopicClosed):
			c.subs[i] = subClosed
			closed++
			continue
		case err != nil:
			c.unsubscribe()
			return nil, err
		}
		// Read once at least: whether the topic has anything for the
		// cursor is known only from then on (see Next).
		c.subs[i] = subOpen | subFresh
		own[i] = setSlot{log: lc.log, file: ft}
		if lc.after > c.after.Load() {
			c.setFloor(i, lc.after)
		}
		if lc.gap != nil && !live {
			// A gap found here is the topic's own. (On a live start one
			// only means a prune overtook the settled mark: the client
			// asked for nothing before it.)
			g := *lc.gap
			g.Topic = name
			c.gaps = append(c.gaps, &g)
		}
	}
	if closed == len(topics) {
		c.unsubscribe()
		return nil, ErrTopicClosed
	}
	c.fan, c.slots = fs.acquire(setKey(topics), topics, own)
	return c, nil
}

// multiCursor merges the topics of one timeline by seq. Its position
// (after) is a seq of the timeline: every retained event of its topics up
// to it has been delivered, and none after it. So it keeps no cursor per
// topic: each read of a topic starts after the position (or after the
// topic's floor, where a gap moved it further), and events read past what
// a page takes are read again next time. What it holds per topic is one
// byte of state; the logs are the set's (fan.slots), shared by every
// cursor of the set, and floors exist only once a gap made one.
type multiCursor struct {
	tl    *timeline
	fans  *fans
	fan   *fan // its names are the topics, in subs' order
	onGap GapPolicy
	slots []setSlot  // by topic: the set's (fan.slots), or the cursor's own
	subs  []subState // by topic
	// floors: a topic's events up to its floor are not to be delivered
	// (a gap moved it past the cursor's position); nil until one does.
	floors []uint64

	after  atomic.Uint64
	gaps   []*Gap // found, to report one per page
	closed bool

	// Reused while events flow; dropped when the cursor waits.
	buf *pageBuf
}

// pageBuf holds the slices a multiCursor's pages of several events are
// built in.
type pageBuf struct {
	events []*Event
	topics []string
	ended  []string
}

// subState is where one topic of a multiCursor stands.
type subState uint8

const (
	// subOpen: the cursor is subscribed to the topic (counted in
	// log.subscribers until Close); not set for a topic closed when
	// subscribed.
	subOpen subState = 1 << iota
	// subFresh: never read yet.
	subFresh
	// subMore: the last read left events undelivered (or was cut short).
	subMore
	// subClosed: the topic ended; reported once its events are delivered.
	subClosed
	// subReported: its end was reported (Page.ClosedTopics).
	subReported
)

func (s *subState) set(f subState, on bool) {
	if on {
		*s |= f
	} else {
		*s &^= f
	}
}

// floor is topic i's floor (see multiCursor.floors).
func (c *multiCursor) floor(i int) uint64 {
	if c.floors == nil {
		return 0
	}
	return c.floors[i]
}

// readsAfter is where topic i is read from, at position after.
func (c *multiCursor) readsAfter(i int, after uint64) uint64 {
	return max(after, c.floor(i))
}

func (c *multiCursor) setFloor(i int, seq uint64) {
	if c.floors == nil {
		c.floors = make([]uint64, len(c.subs))
	}
	c.floors[i] = max(c.floors[i], seq)
}

// readSub reads topic i after the cursor's position: up to max events, a
// gap, whether it ended, whether a read was cut short.
func (c *multiCursor) readSub(i, max int) (Page, error) {
	// Field by field: other cursors of the set count in refs meanwhile.
	log, file := c.slots[i].log, c.slots[i].file
	lc := logCursor{log: log, onGap: c.onGap, after: c.readsAfter(i, c.after.Load())}
	var p Page
	var err error
	if file != nil {
		fc := fileCursor{logCursor: lc, topic: file}
		p, err = fc.Next(max)
	} else {
		p, err = lc.Next(max)
	}
	if err == nil && p.Gap != nil {
		if seq, ok := c.tl.parseID(p.Gap.ResumeAfter); ok {
			c.setFloor(i, seq)
		}
	}
	return p, err
}

// readPool holds the per-topic read slices of multiCursor.Next, so that a
// waiting cursor holds none and a delivery allocates none.
var readPool = sync.Pool{New: func() any { return new([][]*Event) }}

// Next implements Cursor.
func (c *multiCursor) Next(max int) (Page, error) {
	if c.closed || c.tl.closed.Load() {
		return Page{}, ErrStoreClosed
	}
	max = atLeastOne(max)
	var page Page
	if len(c.gaps) > 0 {
		// One gap a page, before anything of its topic that follows.
		page.Gap = c.gaps[0]
		page.Gap.ResumeAfter = c.tl.id(c.after.Load())
		c.gaps[0] = nil
		c.gaps = c.gaps[1:]
		if len(c.gaps) == 0 {
			c.gaps = nil
		}
		return page, nil
	}
	// The order matters: a change after the fan is armed closes its
	// channel, and every event at or below the settled mark loaded
	// before the reads is in its log when the reads look.
	wait := c.fan.arm()
	settled := c.tl.settled.Load()
	rp := readPool.Get().(*[][]*Event)
	read := slices.Grow((*rp)[:0], len(c.subs))[:len(c.subs)]
	defer func() {
		clear(read)
		*rp = read[:0]
		readPool.Put(rp)
	}()
	short := false
	after := c.after.Load()
	for i := range c.subs {
		s := &c.subs[i]
		read[i] = nil
		if *s&subOpen == 0 || *s&(subClosed|subMore) == subClosed {
			continue
		}
		if *s&(subFresh|subMore) == 0 {
			// Read before, with nothing left: it has something new only
			// if an event past the position was added since, or it was
			// closed. (Both are stored before the fan fires, which was
			// armed above.) A prune alone cannot make a gap here: it
			// drops nothing past the log's last event.
			t := c.slots[i].log
			if t.lastSeen.Load() <= c.readsAfter(i, after) && (*s&subClosed != 0 || !t.closedSeen.Load()) {
				continue
			}
		}
		p, err := c.readSub(i, max)
		if err != nil {
			return Page{}, err
		}
		if p.Gap != nil {
			g := *p.Gap
			g.Topic = c.fan.names[i]
			g.ResumeAfter = c.tl.id(after)
			c.gaps = append(c.gaps, &g)
		}
		read[i] = p.Events
		more := !p.Closed && (len(p.Events) == max || (len(p.Events) == 0 && p.Wait == readAgain))
		s.set(subClosed, p.Closed)
		s.set(subMore, more)
		s.set(subFresh, false)
		if more && len(p.Events) == 0 {
			short = true
		}
	}
	if len(c.gaps) > 0 {
		// Report the gaps first; what was read is read again after.
		for i := range c.subs {
			if len(read[i]) > 0 {
				c.subs[i].set(subMore, true)
			}
		}
		return c.Next(max)
	}

	// The page buffers, once a page needed them; a page of one event does
	// not, so a live delivery after a wait allocates none.
	var events []*Event
	var topics, ended []string
	if c.buf != nil {
		events, topics, ended = c.buf.events[:0], c.buf.topics[:0], c.buf.ended[:0]
	}
	// A page of one event (the live case) takes its slices from the
	// topic's log and the set's names: nothing is allocated.
	n, first := 0, -1
	var firstEvents []*Event
	held := false
merge:
	for n < max {
		best := -1
		for i := range c.subs {
			if len(read[i]) == 0 {
				if c.subs[i]&subMore != 0 {
					// Its next events are unread: nothing can go
					// past them.
					break merge
				}
				continue
			}
			if best < 0 || read[i][0].seq < read[best][0].seq {
				best = i
			}
		}
		if best < 0 {
			break
		}
		e := read[best][0]
		if e.seq > settled {
			held = true
			break
		}
		switch n {
		case 0:
			first, firstEvents = best, read[best]
		case 1:
			events = append(events, firstEvents[0])
			topics = append(topics, c.fan.names[first])
			fallthrough
		default:
			events = append(events, e)
			topics = append(topics, c.fan.names[best])
		}
		n++
		read[best] = read[best][1:]
		c.after.Store(e.seq)
	}
	open := 0
	for i := range c.subs {
		s := &c.subs[i]
		if len(read[i]) > 0 {
			// Read, not delivered: read again next time.
			s.set(subMore, true)
			read[i] = nil
		}
		if *s&subReported != 0 {
			continue
		}
		if *s&(subClosed|subMore) == subClosed {
			*s |= subReported
			ended = append(ended, c.fan.names[i])
			continue
		}
		open++
	}
	if cap(events) > 0 || cap(topics) > 0 || cap(ended) > 0 {
		if c.buf == nil {
			c.buf = new(pageBuf)
		}
		c.buf.events, c.buf.topics, c.buf.ended = events, topics, ended
	}
	switch {
	case n == 1:
		page.Events, page.Topics = firstEvents[:1:1], c.fan.names[first:first+1:first+1]
	case n > 1:
		page.Events, page.Topics = events, topics
	}
	if len(ended) > 0 {
		page.ClosedTopics = ended
	}
	if open == 0 {
		page.Closed = true
		return page, nil
	}
	if n == 0 && len(ended) == 0 {
		switch {
		case held:
			// An append to another topic took an earlier seq and is
			// not in its log yet: it will be in a moment.
			page.Wait = c.tl.settledAfter(settled)
		case short:
			page.Wait = readAgain
		default:
			page.Wait = wait
		}
		// A waiting cursor keeps no page buffers.
		c.buf = nil
	}
	return page, nil
}

// Notify implements Notifier: the set's fan calls fn when any of its
// logs changes after wait was armed.
func (c *multiCursor) Notify(wait <-chan struct{}, key any, fn func()) bool {
	return c.fan.notify(wait, key, fn)
}

// Topics returns the cursor's topics, sorted; the slice is shared by every
// cursor of the set and must not be changed.
func (c *multiCursor) Topics() []string { return c.fan.names }

// Position implements Cursor.
func (c *multiCursor) Position() string { return c.tl.id(c.after.Load()) }

// WaitKey implements WaitKey: cursors of the same set share their fan.
func (c *multiCursor) WaitKey() string { return c.fan.key }

// Close implements Cursor.
func (c *multiCursor) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.unsubscribe()
}

// unsubscribe ends the subscription of every topic, and the cursor's
// share of its set's fan.
func (c *multiCursor) unsubscribe() {
	for i := range c.subs {
		if c.subs[i]&subOpen != 0 {
			(&logCursor{log: c.slots[i].log}).Close()
		}
	}
	if c.fan != nil {
		c.fans.release(c.fan, c.slots, func(i int) bool { return c.subs[i]&subOpen != 0 })
	}
	for i := range c.subs {
		c.subs[i] &^= subOpen
	}
}

// SubscribeMany implements Multi.
func (m *Memory) SubscribeMany(ctx context.Context, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	return m.timeline.subscribeMany(topics, from, onGap, &m.fans, func(topic, from string, onGap GapPolicy) (logCursor, *fileTopic, error) {
		c, err := m.Subscribe(ctx, topic, from, onGap)
		if err != nil {
			return logCursor{}, nil, err
		}
		return *c.(*logCursor), nil, nil
	})
}

// SubscribeMany implements Multi.
func (f *File) SubscribeMany(ctx context.Context, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	return f.timeline.subscribeMany(topics, from, onGap, &f.fans, func(topic, from string, onGap GapPolicy) (logCursor, *fileTopic, error) {
		c, err := f.Subscribe(ctx, topic, from, onGap)
		if err != nil {
			return logCursor{}, nil, err
		}
		fc := c.(*fileCursor)
		return fc.logCursor, fc.topic, nil
	})
}

// Interface guards
var (
	_ Multi    = (*Memory)(nil)
	_ Multi    = (*File)(nil)
	_ Cursor   = (*multiCursor)(nil)
	_ WaitKey  = (*multiCursor)(nil)
	_ Notifier = (*multiCursor)(nil)
)
