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
	key  string
	refs int // guarded by timeline.fanMu

	// logs are the logs fire is registered with, and how many cursors
	// registered it there; guarded by timeline.fanMu.
	logs map[*topicLog]int

	mu    sync.Mutex
	ch    chan struct{}
	armed bool // a reader took ch: fire must close it
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
	if f.armed {
		close(f.ch)
		f.ch = make(chan struct{})
		f.armed = false
	}
	f.mu.Unlock()
}

// fans holds a timeline's fans by set.
type fans struct {
	mu  sync.Mutex
	all map[string]*fan
}

// acquire returns the fan of the set key, registered with logs.
func (fs *fans) acquire(key string, logs []*topicLog) *fan {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f := fs.all[key]
	if f == nil {
		if fs.all == nil {
			fs.all = make(map[string]*fan)
		}
		f = &fan{key: key, logs: make(map[*topicLog]int), ch: make(chan struct{})}
		fs.all[key] = f
	}
	f.refs++
	for _, t := range logs {
		if f.logs[t]++; f.logs[t] == 1 {
			t.mu.Lock()
			t.fans = append(t.fans, f)
			t.mu.Unlock()
		}
	}
	return f
}

// release undoes acquire.
func (fs *fans) release(f *fan, logs []*topicLog) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, t := range logs {
		if f.logs[t]--; f.logs[t] == 0 {
			delete(f.logs, t)
			t.mu.Lock()
			if i := slices.Index(t.fans, f); i >= 0 {
				t.fans = slices.Delete(t.fans, i, i+1)
			}
			if len(t.fans) == 0 {
				t.fans = nil
			}
			t.mu.Unlock()
		}
	}
	if f.refs--; f.refs == 0 {
		delete(fs.all, f.key)
	}
}

// setKey names a set of topics whatever their order.
func setKey(topics []string) string {
	sorted := slices.Clone(topics)
	slices.Sort(sorted)
	// Topic names hold no control character, so a NUL cannot be in one.
	return strings.Join(sorted, "\x00")
}

// subscribeOne opens one topic's cursor for a multi-topic cursor and says
// which log it reads.
type subscribeOne func(topic, from string, onGap GapPolicy) (Cursor, *topicLog, error)

// subscribeMany is SubscribeMany for a timeline store.
func (tl *timeline) subscribeMany(topics []string, from string, onGap GapPolicy, fs *fans, open subscribeOne) (Cursor, error) {
	c := &multiCursor{tl: tl, fans: fs, key: setKey(topics), subs: make([]multiSub, len(topics))}
	// Where each topic starts. A live start is the settled mark, the same
	// for every topic, so that the merge starts from one point.
	start, live := from, false
	var setGap *Gap
	switch seq, ok := tl.parseID(from); {
	case from == "":
		live = true
	case from == Earliest:
	case ok && seq <= tl.seq.Load():
		c.after.Store(seq)
	default:
		setGap = &Gap{Reason: GapUnknown, Requested: from}
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
	if setGap != nil {
		setGap.ResumeAfter = tl.id(c.after.Load())
		c.gaps = append(c.gaps, setGap)
	}

	var logs []*topicLog
	closed := 0
	for i, name := range topics {
		s := &c.subs[i]
		s.name = name
		s.seen = ^uint64(0) // never read yet
		cur, log, err := open(name, start, onGap)
		switch {
		case errors.Is(err, ErrTopicClosed):
			s.closed = true
			closed++
			continue
		case err != nil:
			c.closeSubs()
			return nil, err
		}
		if live {
			if lc := logCursorOf(cur); lc != nil && lc.gap != nil {
				// A live start before a topic's pruned mark (a prune
				// that overtook the settled mark) has missed nothing
				// the client asked for.
				lc.gap = nil
			}
		}
		s.cur, s.log = cur, log
		logs = append(logs, log)
	}
	if closed == len(topics) {
		c.closeSubs()
		return nil, ErrTopicClosed
	}
	c.logs = logs
	c.fan = fs.acquire(c.key, logs)
	return c, nil
}

// logCursorOf returns the log cursor under a Memory or File cursor.
func logCursorOf(c Cursor) *logCursor {
	switch c := c.(type) {
	case *logCursor:
		return c
	case *fileCursor:
		return &c.logCursor
	}
	return nil
}

// multiCursor merges the cursors of several topics of one timeline by
// seq. Its position (after) is a seq of the timeline: every retained
// event of its topics up to it has been delivered, and none after it.
// Reading a topic's cursor may take events past the merge (the page bound,
// the settled mark): they wait in the topic's buf, and a resume from the
// position reads them again from the log.
type multiCursor struct {
	tl   *timeline
	fans *fans
	fan  *fan
	key  string
	logs []*topicLog
	subs []multiSub

	after  atomic.Uint64
	gaps   []*Gap // found, to report one per page
	ended  bool
	closed bool

	// The last page's slices, reused.
	events []*Event
	topics []string
	ended2 []string
}

type multiSub struct {
	name string
	cur  Cursor // nil for a topic closed when subscribed
	log  *topicLog
	// seen is log.changes when a read of cur last found nothing more:
	// until it moves the topic need not be read again.
	seen uint64
	buf  []*Event // read from cur, not delivered yet
	more bool     // cur may have more past buf (its read was cut short)
	// closed: the topic ended; once buf is delivered it is reported
	// (reported) and read no more.
	closed, reported bool
}

// Next implements Cursor.
func (c *multiCursor) Next(max int) (Page, error) {
	if c.closed || c.tl.closed.Load() {
		return Page{}, ErrStoreClosed
	}
	max = atLeastOne(max)
	// The order matters: a change after the fan is armed closes its
	// channel, and every event at or below the settled mark loaded
	// before the reads is in its log when the reads look.
	wait := c.fan.arm()
	settled := c.tl.settled.Load()
	for i := range c.subs {
		s := &c.subs[i]
		if s.cur == nil || s.closed || len(s.buf) > 0 {
			continue
		}
		changes := s.log.changes.Load()
		if changes == s.seen && !s.more {
			continue
		}
		p, err := s.cur.Next(max)
		if err != nil {
			return Page{}, err
		}
		if p.Gap != nil {
			g := *p.Gap
			g.Topic = s.name
			c.gaps = append(c.gaps, &g)
		}
		s.buf = p.Events
		s.closed = p.Closed
		s.more = !p.Closed && (len(p.Events) == max || (len(p.Events) == 0 && p.Wait == readAgain))
		if !s.more {
			s.seen = changes
		}
	}
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

	events, topics := c.events[:0], c.topics[:0]
	held, short := false, false
merge:
	for len(events) < max {
		best := -1
		for i := range c.subs {
			s := &c.subs[i]
			if len(s.buf) == 0 {
				if s.more {
					// Its next events are unread: nothing can go
					// past them.
					short = true
					break merge
				}
				continue
			}
			if best < 0 || s.buf[0].seq < c.subs[best].buf[0].seq {
				best = i
			}
		}
		if best < 0 {
			break
		}
		s := &c.subs[best]
		e := s.buf[0]
		if e.seq > settled {
			held = true
			break
		}
		events = append(events, e)
		topics = append(topics, s.name)
		s.buf = s.buf[1:]
		if len(s.buf) == 0 {
			s.buf = nil
		}
		c.after.Store(e.seq)
	}
	ended := c.ended2[:0]
	open := 0
	for i := range c.subs {
		s := &c.subs[i]
		if s.reported {
			continue
		}
		if s.closed && len(s.buf) == 0 {
			s.reported = true
			ended = append(ended, s.name)
			continue
		}
		open++
	}
	c.events, c.topics, c.ended2 = events, topics, ended
	if len(events) > 0 {
		page.Events, page.Topics = events, topics
	}
	if len(ended) > 0 {
		page.ClosedTopics = ended
	}
	if open == 0 {
		page.Closed = true
		c.ended = true
		return page, nil
	}
	if len(events) == 0 && len(ended) == 0 {
		switch {
		case short:
			page.Wait = readAgain
		case held:
			// An append to another topic took an earlier seq and is
			// not in its log yet: it will be in a moment.
			page.Wait = c.tl.settledAfter(settled)
		default:
			page.Wait = wait
		}
		// An idle cursor keeps no page buffers.
		c.events, c.topics, c.ended2 = nil, nil, nil
	}
	return page, nil
}

// Position implements Cursor.
func (c *multiCursor) Position() string { return c.tl.id(c.after.Load()) }

// WaitKey implements WaitKey: cursors of the same set share their fan.
func (c *multiCursor) WaitKey() string { return "multi\x00" + c.key }

// Close implements Cursor.
func (c *multiCursor) Close() {
	if c.closed {
		return
	}
	c.closed = true
	if c.fan != nil {
		c.fans.release(c.fan, c.logs)
	}
	c.closeSubs()
}

func (c *multiCursor) closeSubs() {
	for i := range c.subs {
		if cur := c.subs[i].cur; cur != nil {
			cur.Close()
		}
		c.subs[i].buf = nil
	}
}

// SubscribeMany implements Multi.
func (m *Memory) SubscribeMany(ctx context.Context, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	return m.timeline.subscribeMany(topics, from, onGap, &m.fans, func(topic, from string, onGap GapPolicy) (Cursor, *topicLog, error) {
		c, err := m.Subscribe(ctx, topic, from, onGap)
		if err != nil {
			return nil, nil, err
		}
		return c, c.(*logCursor).log, nil
	})
}

// SubscribeMany implements Multi.
func (f *File) SubscribeMany(ctx context.Context, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	return f.timeline.subscribeMany(topics, from, onGap, &f.fans, func(topic, from string, onGap GapPolicy) (Cursor, *topicLog, error) {
		c, err := f.Subscribe(ctx, topic, from, onGap)
		if err != nil {
			return nil, nil, err
		}
		return c, &c.(*fileCursor).topic.topicLog, nil
	})
}

// Interface guards
var (
	_ Multi   = (*Memory)(nil)
	_ Multi   = (*File)(nil)
	_ Cursor  = (*multiCursor)(nil)
	_ WaitKey = (*multiCursor)(nil)
)
