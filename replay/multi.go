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
	key   string
	names []string // the set's topics, sorted
	refs  int      // guarded by fans.mu

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
func (fs *fans) acquire(key string, names []string, logs []*topicLog) *fan {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f := fs.all[key]
	if f == nil {
		if fs.all == nil {
			fs.all = make(map[string]*fan)
		}
		f = &fan{key: key, names: names, logs: make(map[*topicLog]int), ch: make(chan struct{})}
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

// setKey names a set of sorted topics.
func setKey(sorted []string) string {
	// Topic names hold no control character, so a NUL cannot be in one.
	return strings.Join(sorted, "\x00")
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
	c := &multiCursor{tl: tl, fans: fs, onGap: onGap, subs: make([]multiSub, len(topics))}
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

	logs := make([]*topicLog, 0, len(topics))
	closed := 0
	for i, name := range topics {
		s := &c.subs[i]
		s.seen = ^uint64(0) // never read yet
		lc, ft, err := open(name, start, onGap)
		switch {
		case errors.Is(err, ErrTopicClosed):
			s.closed = true
			closed++
			continue
		case err != nil:
			c.unsubscribe()
			return nil, err
		}
		s.log, s.file, s.floor = lc.log, ft, lc.after
		if lc.gap != nil && !live {
			// A live start before a topic's pruned mark (a prune that
			// overtook the settled mark) has missed nothing the client
			// asked for.
			g := *lc.gap
			g.Topic = name
			c.gaps = append(c.gaps, &g)
		}
		logs = append(logs, lc.log)
	}
	if closed == len(topics) {
		c.unsubscribe()
		return nil, ErrTopicClosed
	}
	c.fan = fs.acquire(setKey(topics), topics, logs)
	return c, nil
}

// multiCursor merges the topics of one timeline by seq. Its position
// (after) is a seq of the timeline: every retained event of its topics up
// to it has been delivered, and none after it. So it keeps no cursor per
// topic: each read of a topic starts after the position (or after the
// topic's floor, where a gap moved it further), and events read past what
// a page takes are read again next time.
type multiCursor struct {
	tl    *timeline
	fans  *fans
	fan   *fan // its names are the topics, in subs' order
	onGap GapPolicy
	subs  []multiSub

	after  atomic.Uint64
	gaps   []*Gap // found, to report one per page
	closed bool

	// Reused while events flow; dropped when the cursor waits.
	read   [][]*Event // each topic's events read by this Next
	events []*Event
	topics []string
	ended  []string
}

// multiSub is one topic of a multiCursor: its subscription (counted in
// log.subscribers until Close) and where it stands.
type multiSub struct {
	log  *topicLog  // nil for a topic closed when subscribed
	file *fileTopic // File's topic of log; nil in Memory
	// floor: the topic's events up to it are not to be delivered (a gap
	// moved it past the cursor's position).
	floor uint64
	// seen is log.changes when a read last found nothing more: until it
	// moves the topic need not be read again.
	seen uint64
	// more: the last read left events undelivered (or was cut short).
	more bool
	// closed: the topic ended; reported once its events are delivered.
	closed, reported bool
}

// readSub reads topic i after the cursor's position: up to max events, a
// gap, whether it ended, whether a read was cut short.
func (c *multiCursor) readSub(i, max int) (Page, error) {
	s := &c.subs[i]
	lc := logCursor{log: s.log, onGap: c.onGap, after: c.after.Load()}
	if s.floor > lc.after {
		lc.after = s.floor
	}
	var p Page
	var err error
	if s.file != nil {
		fc := fileCursor{logCursor: lc, topic: s.file}
		p, err = fc.Next(max)
	} else {
		p, err = lc.Next(max)
	}
	if err == nil && p.Gap != nil {
		if seq, ok := c.tl.parseID(p.Gap.ResumeAfter); ok {
			s.floor = max64(s.floor, seq)
		}
	}
	return p, err
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

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
	if c.read == nil {
		c.read = make([][]*Event, len(c.subs))
	}
	short := false
	for i := range c.subs {
		s := &c.subs[i]
		c.read[i] = nil
		if s.log == nil || (s.closed && !s.more) {
			continue
		}
		changes := s.log.changes.Load()
		if changes == s.seen && !s.more {
			continue
		}
		p, err := c.readSub(i, max)
		if err != nil {
			return Page{}, err
		}
		if p.Gap != nil {
			g := *p.Gap
			g.Topic = c.fan.names[i]
			g.ResumeAfter = c.tl.id(c.after.Load())
			c.gaps = append(c.gaps, &g)
		}
		c.read[i] = p.Events
		s.closed = p.Closed
		s.more = !p.Closed && (len(p.Events) == max || (len(p.Events) == 0 && p.Wait == readAgain))
		if s.more && len(p.Events) == 0 {
			short = true
		}
		if !s.more {
			s.seen = changes
		}
	}
	if len(c.gaps) > 0 {
		// Report the gaps first; what was read is read again after.
		for i := range c.subs {
			if len(c.read[i]) > 0 {
				c.subs[i].more = true
			}
		}
		return c.Next(max)
	}

	events, topics := c.events[:0], c.topics[:0]
	held := false
merge:
	for len(events) < max {
		best := -1
		for i := range c.subs {
			if len(c.read[i]) == 0 {
				if c.subs[i].more {
					// Its next events are unread: nothing can go
					// past them.
					break merge
				}
				continue
			}
			if best < 0 || c.read[i][0].seq < c.read[best][0].seq {
				best = i
			}
		}
		if best < 0 {
			break
		}
		e := c.read[best][0]
		if e.seq > settled {
			held = true
			break
		}
		events = append(events, e)
		topics = append(topics, c.fan.names[best])
		c.read[best] = c.read[best][1:]
		c.after.Store(e.seq)
	}
	ended := c.ended[:0]
	open := 0
	for i := range c.subs {
		s := &c.subs[i]
		if len(c.read[i]) > 0 {
			// Read, not delivered: read again next time.
			s.more = true
			c.read[i] = nil
		}
		if s.reported {
			continue
		}
		if s.closed && !s.more {
			s.reported = true
			ended = append(ended, c.fan.names[i])
			continue
		}
		open++
	}
	c.events, c.topics, c.ended = events, topics, ended
	if len(events) > 0 {
		page.Events, page.Topics = events, topics
	}
	if len(ended) > 0 {
		page.ClosedTopics = ended
	}
	if open == 0 {
		page.Closed = true
		return page, nil
	}
	if len(events) == 0 && len(ended) == 0 {
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
		c.read, c.events, c.topics, c.ended = nil, nil, nil, nil
	}
	return page, nil
}

// Position implements Cursor.
func (c *multiCursor) Position() string { return c.tl.id(c.after.Load()) }

// WaitKey implements WaitKey: cursors of the same set share their fan.
func (c *multiCursor) WaitKey() string { return "multi\x00" + c.fan.key }

// Close implements Cursor.
func (c *multiCursor) Close() {
	if c.closed {
		return
	}
	c.closed = true
	if c.fan != nil {
		var logs []*topicLog
		for i := range c.subs {
			if c.subs[i].log != nil {
				logs = append(logs, c.subs[i].log)
			}
		}
		c.fans.release(c.fan, logs)
	}
	c.unsubscribe()
}

// unsubscribe ends the subscription of every topic.
func (c *multiCursor) unsubscribe() {
	for i := range c.subs {
		if t := c.subs[i].log; t != nil {
			(&logCursor{log: t}).Close()
			c.subs[i].log = nil
		}
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
	_ Multi   = (*Memory)(nil)
	_ Multi   = (*File)(nil)
	_ Cursor  = (*multiCursor)(nil)
	_ WaitKey = (*multiCursor)(nil)
)
