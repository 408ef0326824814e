package replay

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// CompositePrefix starts every composite cursor (see Compose).
const CompositePrefix = "m1."

// Compose opens a cursor on several distinct topics of any store, made of
// one cursor per topic: the multi-topic cursor of stores whose ids are
// per topic (Redis stream ids), where no one id says where every topic
// is. See SubscribeMany for what it delivers. Each topic's events come in
// the topic's order; topics are interleaved as they are read.
//
// Its position is a composite id: "m1." and, in unpadded base64url, a
// 32-bit FNV-1a hash of the topic names in order, then every topic's own
// position in that order. A position "<ms>-<seq>" (Redis) takes the
// varints of ms's distance below the largest ms (written once) and of seq,
// so that a topic costs 2 to 11 bytes, 3 to 5 for topics written in the
// same day; any other position is written as its length and bytes.
// Sixty-four Redis topics take at most 955 characters. A composite id
// names its set of topics: sent with another set, it is unknown.
//
// Every event has an id of its own, the composite after it (Page.IDs),
// so that a stream cut anywhere resumes after the last event the client
// got.
func Compose(ctx context.Context, s Store, topics []string, from string, onGap GapPolicy) (Cursor, error) {
	c := &composite{topics: topics, subs: make([]Cursor, len(topics)), pos: make([]string, len(topics)), closed: make([]bool, len(topics)), hash: setHash(topics)}
	c.quit = make(chan struct{})
	starts := make([]string, len(topics))
	switch from {
	case "", Earliest:
		for i := range starts {
			starts[i] = from
		}
	default:
		if pos, ok := decodeComposite(from, c.hash, len(topics)); ok {
			starts = pos
			c.from, c.starts = from, pos
			break
		}
		start := Earliest
		if onGap == GapLive {
			start = ""
		}
		for i := range starts {
			starts[i] = start
		}
		c.setGap = &Gap{Reason: GapUnknown, Requested: from}
	}
	closed := 0
	for i, name := range topics {
		cur, err := s.Subscribe(ctx, name, starts[i], onGap)
		switch {
		case errors.Is(err, ErrTopicClosed):
			c.closed[i] = true
			c.pos[i] = starts[i]
			closed++
			continue
		case err != nil:
			c.closeSubs()
			return nil, err
		}
		c.subs[i] = cur
		c.pos[i] = starts[i]
		if starts[i] == "" || starts[i] == Earliest {
			c.pos[i] = cur.Position()
		}
	}
	if closed == len(topics) {
		c.closeSubs()
		return nil, ErrTopicClosed
	}
	if c.setGap != nil {
		c.setGap.ResumeAfter = c.Position()
	}
	return c, nil
}

// composite is the cursor Compose makes.
type composite struct {
	topics []string
	hash   uint32
	subs   []Cursor // nil for a topic closed when subscribed
	pos    []string // each topic's position: after what was delivered
	// closed: the topic ended (reported is when the client was told).
	closed, reported []bool
	held             *heldRead // a topic's read to deliver next (see Next)
	// from and starts: the client's composite id and its parts, to name
	// it in the gaps found when subscribing.
	from   string
	starts []string
	setGap *Gap
	next   int // the topic the next read starts at (fairness)
	ended  bool

	// Reused page slices.
	events []*Event
	names  []string
	ids    []string
	done   []string

	// What a waiting read's Wait is made of (see wait).
	watchMu sync.Mutex
	watch   *watch
	quit    chan struct{}
	stopped bool
}

// watch is a composite's Wait: closed when any of its topics changes,
// either by the topics' cursors calling fire (Notifier: no goroutine) or
// by a goroutine that waits on every topic's Wait.
type watch struct {
	ch     chan struct{}
	mu     sync.Mutex
	closed bool
	fns    map[any]func()
}

// fire closes the watch and calls whoever asked to be told (Notify). It
// may run under a store's locks: the callbacks only hand the wake-up over.
func (w *watch) fire() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.ch)
	fns := w.fns
	w.fns = nil
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// notify registers fn to be called when w fires; false if it has.
func (w *watch) notify(key any, fn func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if w.fns == nil {
		w.fns = make(map[any]func(), 1)
	}
	w.fns[key] = fn
	return true
}

// heldRead is a topic's read put off to the next page.
type heldRead struct {
	i int
	p Page
}

// Next implements Cursor.
func (c *composite) Next(max int) (Page, error) {
	if c.stopped {
		return Page{}, ErrStoreClosed
	}
	max = atLeastOne(max)
	var page Page
	if c.setGap != nil {
		page.Gap, c.setGap = c.setGap, nil
		return page, nil
	}
	if c.reported == nil {
		c.reported = make([]bool, len(c.topics))
	}
	events, names, ids, done := c.events[:0], c.names[:0], c.ids[:0], c.done[:0]
	waits := make([]<-chan struct{}, 0, len(c.subs))
	waiting := make([]Cursor, 0, len(c.subs))
	n := len(c.subs)
	take := func(i int, p Page) {
		if p.Gap != nil {
			g := *p.Gap
			g.Topic = c.topics[i]
			g.Requested = c.Position()
			if c.starts != nil && p.Gap.Requested == c.starts[i] {
				// Found when subscribing: the client's own id.
				g.Requested = c.from
			}
			c.pos[i] = p.Gap.ResumeAfter
			g.ResumeAfter = c.Position()
			page.Gap = &g
		}
		for _, e := range p.Events {
			c.pos[i] = e.ID
			events = append(events, e)
			names = append(names, c.topics[i])
			ids = append(ids, c.Position())
		}
		if p.Closed {
			c.closed[i] = true
		}
	}
	if h := c.held; h != nil {
		c.held = nil
		take(h.i, h.p)
	}
	for k := 0; k < n && page.Gap == nil; k++ {
		i := (c.next + k) % n
		cur := c.subs[i]
		if cur == nil || c.closed[i] {
			continue
		}
		room := max - len(events)
		if room <= 0 {
			break
		}
		p, err := cur.Next(room)
		if err != nil {
			return Page{}, err
		}
		if p.Gap != nil && len(events) > 0 {
			// A reset goes before the events of this page (its id is the
			// position before them): this topic's read waits for the
			// next page.
			c.held = &heldRead{i, p}
			break
		}
		take(i, p)
		if len(p.Events) == 0 && !p.Closed && p.Gap == nil {
			waits = append(waits, p.Wait)
			waiting = append(waiting, cur)
		}
	}
	c.next = (c.next + 1) % n
	open := 0
	for i := range c.topics {
		if c.reported[i] {
			continue
		}
		if c.closed[i] {
			c.reported[i] = true
			done = append(done, c.topics[i])
			continue
		}
		open++
	}
	c.events, c.names, c.ids, c.done = events, names, ids, done
	if len(events) > 0 {
		page.Events, page.Topics, page.IDs = events, names, ids
	}
	if len(done) > 0 {
		page.ClosedTopics = done
	}
	if open == 0 {
		page.Closed = true
		c.ended = true
		return page, nil
	}
	if page.Gap == nil && len(events) == 0 && len(done) == 0 {
		if len(waits) < open || c.held != nil {
			page.Wait = readAgain // a topic's read was cut short
		} else {
			page.Wait = c.wait(waits, waiting)
		}
		c.events, c.names, c.ids, c.done = nil, nil, nil, nil
	}
	return page, nil
}

// wait returns a channel closed when any of waits is (cursors[i] gave
// waits[i]). While it is open, every read that finds nothing gets the
// same channel, as a lot needs (the topics' channels cannot have changed
// without closing it). When every topic's cursor can call back
// (Notifier, as Redis cursors do) no goroutine waits; otherwise one
// goroutine per waiting composite watches them, ending when one fires or
// the cursor closes.
func (c *composite) wait(waits []<-chan struct{}, cursors []Cursor) <-chan struct{} {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if w := c.watch; w != nil {
		select {
		case <-w.ch:
		default:
			return w.ch
		}
	}
	for _, w := range waits {
		select {
		case <-w:
			return readAgain
		default:
		}
	}
	w := &watch{ch: make(chan struct{})}
	c.watch = w
	if c.notifyOn(w, waits, cursors) {
		return w.ch
	}
	cases := make([]reflect.SelectCase, 0, len(waits)+1)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.quit)})
	for _, wait := range waits {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(wait)})
	}
	go func() {
		reflect.Select(cases)
		w.fire()
	}()
	return w.ch
}

// notifyOn asks every waiting topic's cursor to fire w when its topic
// changes. It reports false, having registered nothing that matters, when
// a cursor cannot (no Notifier): the caller then watches with a goroutine.
// A topic that changed meanwhile fires w at once.
func (c *composite) notifyOn(w *watch, waits []<-chan struct{}, cursors []Cursor) bool {
	nfs := make([]Notifier, len(cursors))
	for i, cur := range cursors {
		nf, ok := cur.(Notifier)
		if !ok {
			return false
		}
		nfs[i] = nf
	}
	for i, nf := range nfs {
		// Keyed by the topic's cursor: it removes its registration when
		// it closes, and a later wait replaces it.
		if !nf.Notify(waits[i], cursors[i], w.fire) {
			w.fire()
			break
		}
	}
	return true
}

// Notify implements Notifier for the Wait of the composite's last page.
func (c *composite) Notify(wait <-chan struct{}, key any, fn func()) bool {
	c.watchMu.Lock()
	w := c.watch
	c.watchMu.Unlock()
	if w == nil || (<-chan struct{})(w.ch) != wait {
		return false
	}
	return w.notify(key, fn)
}

// Position implements Cursor.
func (c *composite) Position() string { return encodeComposite(c.hash, c.pos) }

// WaitKey implements WaitKey: every composite waits on its own.
func (c *composite) WaitKey() string {
	return "composite\x00" + strconv.FormatUint(uint64(reflect.ValueOf(c).Pointer()), 16)
}

// Close implements Cursor.
func (c *composite) Close() {
	if c.stopped {
		return
	}
	c.stopped = true
	close(c.quit)
	c.closeSubs()
}

func (c *composite) closeSubs() {
	for _, cur := range c.subs {
		if cur != nil {
			cur.Close()
		}
	}
}

func setHash(topics []string) uint32 {
	h := fnv.New32a()
	for _, t := range topics {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	return h.Sum32()
}

// A topic's position in a composite starts with a varint tag: 0, a raw
// position (varint length and bytes); 1, "0-0"; n >= 2, "<base-(n-2)>-<seq>"
// with seq the next varint.
const (
	tagRaw  = 0
	tagZero = 1
	tagNum  = 2
)

// SplitStreamID parses an id in the form Redis issues, "<ms>-<seq>": two
// decimal numbers without sign, leading zeros or spaces, joined by a dash.
// Anything else (including the shorthand "<ms>" Redis itself would accept)
// is not such an id. The composite cursor packs these compactly, and the
// Redis store orders and compares them, so both read them by this one rule.
func SplitStreamID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, ok1 := plainDecimal(a)
	seq, ok2 := plainDecimal(b)
	return ms, seq, ok1 && ok2
}

func plainDecimal(s string) (uint64, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func encodeComposite(hash uint32, pos []string) string {
	var base uint64
	for _, p := range pos {
		if ms, _, ok := SplitStreamID(p); ok && ms > base {
			base = ms
		}
	}
	b := make([]byte, 0, 16+6*len(pos))
	b = binary.BigEndian.AppendUint32(b, hash)
	b = binary.AppendUvarint(b, base)
	for _, p := range pos {
		ms, seq, ok := SplitStreamID(p)
		switch {
		case ok && ms == 0 && seq == 0:
			b = binary.AppendUvarint(b, tagZero)
		case ok && base-ms <= math.MaxUint64-tagNum:
			b = binary.AppendUvarint(b, base-ms+tagNum)
			b = binary.AppendUvarint(b, seq)
		default:
			b = binary.AppendUvarint(b, tagRaw)
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		}
	}
	return CompositePrefix + base64.RawURLEncoding.EncodeToString(b)
}

// decodeComposite reads a composite id of the set whose hash is hash and
// which has n topics; ok is false for anything else.
func decodeComposite(id string, hash uint32, n int) (pos []string, ok bool) {
	rest, found := strings.CutPrefix(id, CompositePrefix)
	if !found {
		return nil, false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) < 4 || binary.BigEndian.Uint32(b) != hash {
		return nil, false
	}
	b = b[4:]
	uvarint := func() (uint64, bool) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, false
		}
		b = b[k:]
		return v, true
	}
	base, ok := uvarint()
	if !ok {
		return nil, false
	}
	pos = make([]string, n)
	for i := range pos {
		tag, ok := uvarint()
		if !ok {
			return nil, false
		}
		switch {
		case tag == tagRaw:
			l, ok := uvarint()
			if !ok || l > uint64(len(b)) {
				return nil, false
			}
			pos[i] = string(b[:l])
			b = b[l:]
		case tag == tagZero:
			pos[i] = "0-0"
		default:
			d := tag - tagNum
			if d > base {
				return nil, false
			}
			seq, ok := uvarint()
			if !ok {
				return nil, false
			}
			pos[i] = strconv.FormatUint(base-d, 10) + "-" + strconv.FormatUint(seq, 10)
		}
	}
	if len(b) != 0 {
		return nil, false
	}
	return pos, true
}

// Interface guards
var (
	_ Cursor   = (*composite)(nil)
	_ Notifier = (*composite)(nil)
	_ WaitKey  = (*composite)(nil)
)
