// Package replaytest is the conformance suite of replay.Store: every store
// (memory, file, clustered) runs the same specifications, so nothing above the
// replay package can tell which one is in use.
//
// A store's test calls Run with a constructor:
//
//	func TestConformance(t *testing.T) {
//		replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
//			s := NewMyStore(cfg)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Every subtest gets a fresh, empty store from newStore and runs in parallel
// with the others, so the stores newStore returns must not share topics (a
// store backed by a shared server should use a unique key prefix per call).
// cfg always carries a Framer; the store must use it.
//
// Ids are opaque to the suite, with one exception: to build an id "ahead of
// the log" it increments the decimal number an id ends with (as in
// "<epoch>-<seq>" or Redis's "<ms>-<seq>"); for ids that do not end in digits
// that check is skipped.
package replaytest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// Framer is the Framer the suite configures: "<id>|<type>|<data>".
func Framer(id, eventType string, data []byte) []byte {
	return []byte(id + "|" + eventType + "|" + string(data))
}

// NewStore makes a fresh, empty store bounded by cfg; it must release the
// store when t ends (t.Cleanup).
type NewStore func(t *testing.T, cfg replay.Config) replay.Store

// patience bounds every wait for something that must happen "eventually".
const patience = 10 * time.Second

// Run runs the conformance suite against the stores newStore makes.
func Run(t *testing.T, newStore func(t *testing.T, cfg replay.Config) replay.Store) {
	specs := []struct {
		name string
		fn   func(t *testing.T, newStore NewStore)
	}{
		{"appended events are read back in order with ids, types, data and frames", testReadBack},
		{"a live cursor sees only events appended after it", testLiveCursor},
		{"an earliest cursor sees everything retained", testEarliestCursor},
		{"resuming after any id in the log returns exactly the events after it", testResumeEveryID},
		{"replay then live is one read: concurrent appends are delivered exactly once, in order", testConcurrentReplayThenLive},
		{"a reader blocked on Wait is woken by an append", testWaitWokenByAppend},
		{"a reader blocked on Wait is woken by CloseTopic", testWaitWokenByCloseTopic},
		{"an expired id gives an expired gap, then the oldest retained events under GapReplay", testExpiredReplay},
		{"an expired id gives an expired gap, then only new events under GapLive", testExpiredLive},
		{"an unknown id gives an unknown gap", testUnknownIDs},
		{"a gap found at subscribe keeps its reason when pruning moves the cursor before its first read", testPendingGapKeepsReason},
		{"a slow cursor that falls behind pruning gets an expired gap, then the retained events", testSlowCursor},
		{"a slow cursor under GapLive skips to new events", testSlowCursorLive},
		{"MaxEvents prunes oldest first", testMaxEvents},
		{"MaxBytes prunes oldest first", testMaxBytes},
		{"MaxAge prunes oldest first", testMaxAge},
		{"a batch is appended atomically and in order", testBatchAtomic},
		{"a batch larger than the bounds fails with ErrBatchTooLarge and appends nothing", testBatchTooLarge},
		{"a repeated batch key appends nothing and returns the original ids", testDedup},
		{"batch keys are per topic", testDedupPerTopic},
		{"MaxDedupKeys forgets the oldest keys first", testMaxDedupKeys},
		{"a closed topic delivers its remaining events, then Closed", testCloseTopicDrains},
		{"a closed topic refuses Append, CloseTopic and a Subscribe without a cursor", testCloseTopicRefuses},
		{"MaxTopics refuses new topics with ErrTooManyTopics", testMaxTopics},
		{"topics that only have subscribers do not count against MaxTopics", testMaxTopicsIgnoresSubscribedOnly},
		{"MaxSubscribersPerTopic refuses with ErrTooManySubscribers until a cursor closes", testMaxSubscribers},
		{"Configure with smaller bounds prunes existing history, keeping what still fits", testConfigureShrinks},
	}
	for _, s := range specs {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.fn(t, func(t *testing.T, cfg replay.Config) replay.Store {
				t.Helper()
				cfg.Framer = Framer
				return newStore(t, cfg)
			})
		})
	}
	// The specs of what must survive a restart hold within one life too.
	runLives(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
		s := newStore(t, cfg)
		return s, func() replay.Store { return s }
	})
}

// ---- helpers ----

func ctx(t *testing.T) context.Context { return t.Context() }

func draft(typ, data string) replay.Draft { return replay.Draft{Type: typ, Data: []byte(data)} }

// appendOne appends one event and returns its id.
func appendOne(t *testing.T, s replay.Store, topic, typ, data string) string {
	t.Helper()
	res, err := s.Append(ctx(t), topic, replay.Batch{Events: []replay.Draft{draft(typ, data)}})
	if err != nil {
		t.Fatalf("Append(%q): %v", topic, err)
	}
	if len(res.IDs) != 1 || res.Duplicate {
		t.Fatalf("Append(%q) = %+v, want one new id", topic, res)
	}
	return res.IDs[0]
}

// appendN appends n single events with data prefix0..prefix<n-1> and returns
// their ids.
func appendN(t *testing.T, s replay.Store, topic, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = appendOne(t, s, topic, "msg", fmt.Sprintf("%s%d", prefix, i))
	}
	return ids
}

func subscribe(t *testing.T, s replay.Store, topic, from string, onGap replay.GapPolicy) replay.Cursor {
	t.Helper()
	c, err := s.Subscribe(ctx(t), topic, from, onGap)
	if err != nil {
		t.Fatalf("Subscribe(%q, %q): %v", topic, from, err)
	}
	if c == nil {
		t.Fatalf("Subscribe(%q, %q) returned a nil cursor", topic, from)
	}
	t.Cleanup(c.Close)
	return c
}

// reading is what a cursor delivered over several reads.
type reading struct {
	events []*replay.Event
	gaps   []*replay.Gap
	// gapAt[i] is how many events had been delivered when gaps[i] came.
	gapAt  []int
	closed bool
}

func (r *reading) ids() []string { return eventIDs(r.events) }

func eventIDs(es []*replay.Event) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

// absorb adds a page to r, checking the page's own invariants.
func (r *reading) absorb(t *testing.T, p replay.Page, max int) {
	t.Helper()
	if len(p.Events) > max {
		t.Fatalf("Next(%d) returned %d events", max, len(p.Events))
	}
	if r.closed {
		if len(p.Events) > 0 || p.Gap != nil {
			t.Fatalf("a read after Closed delivered %d events, gap %+v", len(p.Events), p.Gap)
		}
		return
	}
	if p.Gap != nil {
		r.gaps = append(r.gaps, p.Gap)
		r.gapAt = append(r.gapAt, len(r.events))
	}
	for _, e := range p.Events {
		if e == nil {
			t.Fatal("Next returned a nil event")
		}
	}
	r.events = append(r.events, p.Events...)
	r.closed = p.Closed
	if len(p.Events) == 0 && !p.Closed && p.Wait == nil {
		t.Fatal("a page with no events that is not Closed has no Wait channel")
	}
}

// drain reads c without blocking until it has nothing more to deliver.
func drain(t *testing.T, c replay.Cursor) *reading {
	t.Helper()
	r := &reading{}
	for i := 0; ; i++ {
		if i > 1_000_000 {
			t.Fatal("drain: the cursor never ran dry")
		}
		const max = 7
		p, err := c.Next(max)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		r.absorb(t, p, max)
		if len(p.Events) == 0 || p.Closed {
			return r
		}
	}
}

// await reads c, blocking on Wait, until it has delivered n events or is
// closed; it fails the test if that does not happen within patience.
func await(t *testing.T, c replay.Cursor, n int) *reading {
	t.Helper()
	r := &reading{}
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for len(r.events) < n && !r.closed {
		const max = 5
		p, err := c.Next(max)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		r.absorb(t, p, max)
		if len(p.Events) == 0 && !p.Closed {
			select {
			case <-p.Wait:
			case <-deadline.C:
				t.Fatalf("waited %v for %d events, got %d", patience, n, len(r.events))
			}
		}
	}
	return r
}

// readRetained returns the ids of the events topic retains, read through a
// fresh Earliest cursor.
func readRetained(t *testing.T, s replay.Store, topic string) []string {
	t.Helper()
	c := subscribe(t, s, topic, replay.Earliest, replay.GapReplay)
	defer c.Close()
	r := drain(t, c)
	if len(r.gaps) > 0 {
		t.Fatalf("an Earliest cursor reported a gap: %+v", r.gaps[0])
	}
	return r.ids()
}

// readRetainedWhilePruning is readRetained for a log that age pruning may
// shrink between the cursor's start and its first read: the store then
// rightly reports that the cursor's start expired, and continues.
func readRetainedWhilePruning(t *testing.T, s replay.Store, topic string) []string {
	t.Helper()
	c := subscribe(t, s, topic, replay.Earliest, replay.GapReplay)
	defer c.Close()
	r := drain(t, c)
	for _, g := range r.gaps {
		if g.Reason != replay.GapExpired {
			t.Fatalf("an Earliest cursor reported a gap other than pruning: %+v", g)
		}
	}
	return r.ids()
}

func equalIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got ids %q, want %q", what, got, want)
	}
}

func checkEvent(t *testing.T, e *replay.Event, id, typ, data string) {
	t.Helper()
	if e.ID != id || e.Type != typ || string(e.Data) != data {
		t.Fatalf("event = {%q %q %q}, want {%q %q %q}", e.ID, e.Type, e.Data, id, typ, data)
	}
	if want := Framer(id, typ, []byte(data)); string(e.Frame) != string(want) {
		t.Fatalf("event %s: Frame = %q, want the Framer's %q", id, e.Frame, want)
	}
	if e.Time.IsZero() {
		t.Fatalf("event %s has no Time", id)
	}
}

func checkGap(t *testing.T, g *replay.Gap, reason, requested string) {
	t.Helper()
	if g == nil {
		t.Fatalf("no gap, want a %s gap for %q", reason, requested)
	}
	if g.Reason != reason || g.Requested != requested {
		t.Fatalf("gap = %+v, want reason %q, requested %q", *g, reason, requested)
	}
	if g.ResumeAfter == "" {
		t.Fatalf("gap %+v has no ResumeAfter", *g)
	}
}

func noGap(t *testing.T, r *reading) {
	t.Helper()
	if len(r.gaps) > 0 {
		t.Fatalf("unexpected gap %+v", *r.gaps[0])
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

var trailingDigits = regexp.MustCompile(`^(.*?)([0-9]+)$`)

// aheadOf returns an id shaped like id but past anything the log has issued.
func aheadOf(id string) (string, bool) {
	m := trailingDigits.FindStringSubmatch(id)
	if m == nil {
		return "", false
	}
	n, err := strconv.ParseUint(m[2], 10, 63)
	if err != nil {
		return "", false
	}
	return m[1] + strconv.FormatUint(n+1<<30, 10), true
}

// ---- specifications ----

func testReadBack(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	c := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	type ev struct{ typ, data string }
	want := []ev{{"a", "one"}, {"b", "two\nlines"}, {"", ""}, {"msg", "{\"x\":1}"}}
	var ids []string
	for _, w := range want {
		ids = append(ids, appendOne(t, s, "t", w.typ, w.data))
	}
	if sorted := slices.Sorted(slices.Values(ids)); len(slices.Compact(sorted)) != len(ids) {
		t.Fatalf("ids are not distinct: %q", ids)
	}
	r := drain(t, c)
	noGap(t, r)
	if len(r.events) != len(want) {
		t.Fatalf("read %d events, want %d", len(r.events), len(want))
	}
	for i, w := range want {
		checkEvent(t, r.events[i], ids[i], w.typ, w.data)
	}
	if got := c.Position(); got != ids[len(ids)-1] {
		t.Fatalf("Position() = %q after reading everything, want the last id %q", got, ids[len(ids)-1])
	}
	if r.closed {
		t.Fatal("an open topic reported Closed")
	}
	// Nothing more to read: the page carries a Wait channel.
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 0 || p.Gap != nil || p.Closed || p.Wait == nil {
		t.Fatalf("read at the end of the log = %+v, want an empty page with Wait", p)
	}
	// A read of max events takes exactly that many.
	c2 := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	p, err = c2.Next(3)
	if err != nil {
		t.Fatal(err)
	}
	equalIDs(t, "Next(3)", eventIDs(p.Events), ids[:3])
	if got := c2.Position(); got != ids[2] {
		t.Fatalf("Position() = %q, want %q", got, ids[2])
	}
	p, err = c2.Next(3)
	if err != nil {
		t.Fatal(err)
	}
	equalIDs(t, "second Next(3)", eventIDs(p.Events), ids[3:])
}

func testLiveCursor(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	appendN(t, s, "t", "old", 3)
	c := subscribe(t, s, "t", "", replay.GapReplay)
	r := drain(t, c)
	noGap(t, r)
	if len(r.events) != 0 {
		t.Fatalf("a live cursor read %q, appended before it opened", r.ids())
	}
	ids := appendN(t, s, "t", "new", 2)
	r = drain(t, c)
	noGap(t, r)
	equalIDs(t, "live cursor", r.ids(), ids)

	// On a topic that does not exist yet, too.
	c2 := subscribe(t, s, "fresh", "", replay.GapLive)
	if r := drain(t, c2); len(r.events) != 0 || len(r.gaps) != 0 {
		t.Fatalf("a live cursor on a new topic read %q, gaps %v", r.ids(), r.gaps)
	}
	id := appendOne(t, s, "fresh", "x", "y")
	equalIDs(t, "live cursor on a new topic", drain(t, c2).ids(), []string{id})
}

func testEarliestCursor(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 5})
	// On an empty topic: nothing, then what is appended.
	c := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	if r := drain(t, c); len(r.events) != 0 || len(r.gaps) != 0 {
		t.Fatalf("an earliest cursor on an empty topic read %q, gaps %v", r.ids(), r.gaps)
	}
	ids := appendN(t, s, "t", "e", 8)
	// A new Earliest cursor sees everything retained, with no gap.
	equalIDs(t, "earliest", readRetained(t, s, "t"), ids[3:])
}

func testResumeEveryID(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	ids := appendN(t, s, "t", "e", 20)
	appendN(t, s, "other", "o", 5) // interleave another topic's ids
	ids = append(ids, appendN(t, s, "t", "f", 5)...)
	for i, id := range ids {
		for _, pol := range []replay.GapPolicy{replay.GapReplay, replay.GapLive} {
			c := subscribe(t, s, "t", id, pol)
			r := drain(t, c)
			noGap(t, r)
			equalIDs(t, fmt.Sprintf("resume after %s (index %d)", id, i), r.ids(), ids[i+1:])
			if got := c.Position(); got != ids[len(ids)-1] {
				t.Fatalf("Position() = %q after resuming and reading all, want %q", got, ids[len(ids)-1])
			}
			c.Close()
		}
	}
	// Resuming after a position a cursor reports is exact too.
	c := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	if _, err := c.Next(4); err != nil {
		t.Fatal(err)
	}
	pos := c.Position()
	c2 := subscribe(t, s, "t", pos, replay.GapReplay)
	r := drain(t, c2)
	noGap(t, r)
	equalIDs(t, "resume after Position()", r.ids(), ids[4:])
}

func testConcurrentReplayThenLive(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 1 << 20, MaxBytes: 1 << 30})
	const (
		topic     = "race"
		appenders = 8
		batches   = 60 // per appender, of 1..3 events
	)

	var (
		mu      sync.Mutex
		issued  []string                // ids in the order Append returned them
		batchOf = map[string][]string{} // first id of a batch -> its ids
		data    = map[string]string{}   // id -> data
	)
	waitProgress := func(n int) string {
		deadline := time.Now().Add(patience)
		for {
			mu.Lock()
			if len(issued) >= n {
				id := issued[n-1]
				mu.Unlock()
				return id
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Errorf("appenders never reached %d events", n)
				return ""
			}
			time.Sleep(50 * time.Microsecond)
		}
	}

	type readerResult struct {
		name   string
		from   string // "", Earliest, or the id resumed after
		r      *reading
		err    error
		opened bool
	}
	var (
		readers    []*readerResult
		readerWG   sync.WaitGroup
		subscribed sync.WaitGroup
	)
	read := func(res *readerResult, c replay.Cursor, seed uint64) {
		defer readerWG.Done()
		defer c.Close()
		rng := rand.New(rand.NewPCG(seed, 1))
		r := &reading{}
		res.r = r
		deadline := time.NewTimer(patience)
		defer deadline.Stop()
		for !r.closed {
			max := 1 + rng.IntN(16)
			p, err := c.Next(max)
			if err != nil {
				res.err = err
				return
			}
			if len(p.Events) > max {
				res.err = fmt.Errorf("Next(%d) returned %d events", max, len(p.Events))
				return
			}
			if p.Gap != nil {
				r.gaps = append(r.gaps, p.Gap)
			}
			r.events = append(r.events, p.Events...)
			r.closed = p.Closed
			if len(p.Events) == 0 && !p.Closed {
				if p.Wait == nil {
					res.err = errors.New("an empty page has no Wait")
					return
				}
				select {
				case <-p.Wait:
				case <-deadline.C:
					res.err = fmt.Errorf("no Closed within %v (read %d events)", patience, len(r.events))
					return
				}
			}
		}
	}
	// start opens a reader when the appenders have appended after events
	// (0: before they start).
	start := func(name, from string, after int, seed uint64) {
		res := &readerResult{name: name, from: from}
		readers = append(readers, res)
		readerWG.Add(1)
		subscribed.Add(1)
		go func() {
			if after > 0 {
				id := waitProgress(after)
				if from != replay.Earliest && from != "" {
					from, res.from = id, id
				}
			}
			c, err := s.Subscribe(context.Background(), topic, from, replay.GapReplay)
			subscribed.Done()
			if err != nil {
				res.err = err
				readerWG.Done()
				return
			}
			res.opened = true
			read(res, c, seed)
		}()
	}

	// The canonical reader opens before anything is appended.
	canonical := &readerResult{name: "canonical", from: replay.Earliest}
	readers = append(readers, canonical)
	c0, err := s.Subscribe(ctx(t), topic, replay.Earliest, replay.GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	canonical.opened = true
	readerWG.Add(1)
	go read(canonical, c0, 0)

	seed := uint64(1)
	for i, after := range []int{0, 0, 10, 100, 300, 500} {
		start(fmt.Sprintf("earliest-%d", i), replay.Earliest, after, seed)
		seed++
	}
	for i, after := range []int{0, 1, 20, 150, 400, 600} {
		start(fmt.Sprintf("live-%d", i), "", after, seed)
		seed++
	}
	for i, after := range []int{1, 5, 50, 200, 350, 650} {
		start(fmt.Sprintf("resume-%d", i), "resume", after, seed)
		seed++
	}

	var appendWG sync.WaitGroup
	perAppender := make([][]string, appenders) // first ids of its batches, in order
	for a := range appenders {
		appendWG.Add(1)
		go func() {
			defer appendWG.Done()
			for b := range batches {
				n := 1 + (a+b)%3
				drafts := make([]replay.Draft, n)
				for k := range drafts {
					drafts[k] = draft(fmt.Sprintf("a%d", a), fmt.Sprintf("a%d-b%d-e%d", a, b, k))
				}
				res, err := s.Append(context.Background(), topic, replay.Batch{Events: drafts})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if len(res.IDs) != n || res.Duplicate {
					t.Errorf("Append of %d events = %+v", n, res)
					return
				}
				mu.Lock()
				issued = append(issued, res.IDs...)
				batchOf[res.IDs[0]] = res.IDs
				for k, id := range res.IDs {
					data[id] = string(drafts[k].Data)
				}
				perAppender[a] = append(perAppender[a], res.IDs[0])
				mu.Unlock()
			}
		}()
	}
	appendWG.Wait()
	subscribed.Wait()
	if err := s.CloseTopic(ctx(t), topic); err != nil {
		t.Fatalf("CloseTopic: %v", err)
	}
	readerWG.Wait()
	if t.Failed() {
		return
	}

	for _, res := range readers {
		if res.err != nil {
			t.Fatalf("reader %s (from %q): %v", res.name, res.from, res.err)
		}
		if len(res.r.gaps) > 0 {
			t.Fatalf("reader %s (from %q): unexpected gap %+v", res.name, res.from, *res.r.gaps[0])
		}
	}

	// The canonical reader saw every appended event exactly once.
	log := canonical.r.ids()
	if len(log) != len(issued) {
		t.Fatalf("canonical reader read %d events, %d were appended", len(log), len(issued))
	}
	pos := make(map[string]int, len(log))
	for i, id := range log {
		if _, dup := pos[id]; dup {
			t.Fatalf("canonical reader read %s twice", id)
		}
		pos[id] = i
	}
	for _, e := range canonical.r.events {
		d, ok := data[e.ID]
		if !ok {
			t.Fatalf("canonical reader read %s, which no Append returned", e.ID)
		}
		checkEvent(t, e, e.ID, d[:strings.IndexByte(d, '-')], d)
	}
	// Batches are contiguous and in order; each appender's batches are in
	// its order.
	for first, ids := range batchOf {
		p := pos[first]
		equalIDs(t, "batch "+first+" in the log", log[p:p+len(ids)], ids)
	}
	for a, firsts := range perAppender {
		for i := 1; i < len(firsts); i++ {
			if pos[firsts[i-1]] >= pos[firsts[i]] {
				t.Fatalf("appender %d: batch %d precedes batch %d in the log", a, i, i-1)
			}
		}
	}

	// Every other reader read exactly a suffix of the log.
	for _, res := range readers[1:] {
		got := res.r.ids()
		switch res.from {
		case replay.Earliest:
			equalIDs(t, res.name, got, log)
		case "":
			if len(got) == 0 {
				continue
			}
			p, ok := pos[got[0]]
			if !ok {
				t.Fatalf("%s read %s, not in the log", res.name, got[0])
			}
			equalIDs(t, res.name, got, log[p:])
		default:
			p, ok := pos[res.from]
			if !ok {
				t.Fatalf("%s resumed after %s, not in the log", res.name, res.from)
			}
			equalIDs(t, res.name, got, log[p+1:])
		}
	}
}

func testWaitWokenByAppend(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	c := subscribe(t, s, "t", "", replay.GapReplay)
	for round := range 2 {
		p, err := c.Next(10)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != 0 || p.Closed || p.Wait == nil {
			t.Fatalf("read at the end of the log = %+v, want an empty page with Wait", p)
		}
		woken := make(chan struct{})
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-p.Wait:
				close(woken)
			case <-stop:
			}
		}()
		id := appendOne(t, s, "t", "x", strconv.Itoa(round))
		select {
		case <-woken:
		case <-time.After(patience):
			t.Fatalf("round %d: the reader blocked on Wait was not woken by an append", round)
		}
		equalIDs(t, "after the wake", drain(t, c).ids(), []string{id})
	}
}

func testWaitWokenByCloseTopic(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	id := appendOne(t, s, "t", "x", "before")
	c := subscribe(t, s, "t", id, replay.GapReplay)
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 0 || p.Closed || p.Wait == nil {
		t.Fatalf("read at the end of the log = %+v, want an empty page with Wait", p)
	}
	woken := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-p.Wait:
			close(woken)
		case <-stop:
		}
	}()
	if err := s.CloseTopic(ctx(t), "t"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(patience):
		t.Fatal("the reader blocked on Wait was not woken by CloseTopic")
	}
	p, err = c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Closed || len(p.Events) != 0 || p.Gap != nil {
		t.Fatalf("read after the wake = %+v, want Closed and no events", p)
	}
}

// expiredSetup appends 6 events to a topic keeping 3 and returns their ids.
func expiredSetup(t *testing.T, newStore NewStore) (replay.Store, []string) {
	s := newStore(t, replay.Config{MaxEvents: 3})
	ids := appendN(t, s, "t", "e", 6)
	equalIDs(t, "retained", readRetained(t, s, "t"), ids[3:])
	return s, ids
}

func testExpiredReplay(t *testing.T, newStore NewStore) {
	s, ids := expiredSetup(t, newStore)
	for _, old := range ids[:2] {
		c := subscribe(t, s, "t", old, replay.GapReplay)
		p, err := c.Next(100)
		if err != nil {
			t.Fatal(err)
		}
		checkGap(t, p.Gap, replay.GapExpired, old)
		equalIDs(t, "after the gap", eventIDs(p.Events), ids[3:])
		// The gap is reported once.
		r := drain(t, c)
		noGap(t, r)
		// ResumeAfter is a valid id to resume after: it gives the same events.
		c2 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
		r = drain(t, c2)
		noGap(t, r)
		equalIDs(t, "resume after ResumeAfter", r.ids(), ids[3:])
	}
}

func testExpiredLive(t *testing.T, newStore NewStore) {
	s, ids := expiredSetup(t, newStore)
	c := subscribe(t, s, "t", ids[0], replay.GapLive)
	p, err := c.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	checkGap(t, p.Gap, replay.GapExpired, ids[0])
	if len(p.Events) != 0 {
		t.Fatalf("GapLive delivered retained events %q", eventIDs(p.Events))
	}
	if p.Wait == nil {
		t.Fatal("a gap page with no events has no Wait")
	}
	c2 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
	r2 := drain(t, c2)
	noGap(t, r2)
	if len(r2.events) != 0 {
		t.Fatalf("resuming after a GapLive ResumeAfter read %q, want nothing old", r2.ids())
	}
	id := appendOne(t, s, "t", "x", "new")
	r := drain(t, c)
	noGap(t, r)
	equalIDs(t, "after the gap", r.ids(), []string{id})
	equalIDs(t, "resume after ResumeAfter", drain(t, c2).ids(), []string{id})
}

func testUnknownIDs(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 3})
	ids := appendN(t, s, "t", "e", 5)
	last := ids[len(ids)-1]
	unknown := []string{"garbage", "zzzz-5", "-1", "0", last + "x", "x" + last, " " + last}
	if ahead, ok := aheadOf(last); ok {
		unknown = append(unknown, ahead)
	} else {
		t.Logf("ids like %q do not end in digits: skipping the id ahead of the log", last)
	}
	for _, id := range unknown {
		if slices.Contains(ids, id) {
			continue
		}
		t.Run(id, func(t *testing.T) {
			c := subscribe(t, s, "t", id, replay.GapReplay)
			p, err := c.Next(100)
			if err != nil {
				t.Fatal(err)
			}
			checkGap(t, p.Gap, replay.GapUnknown, id)
			equalIDs(t, "GapReplay after an unknown id", eventIDs(p.Events), ids[2:])
			c2 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
			r := drain(t, c2)
			noGap(t, r)
			equalIDs(t, "resume after ResumeAfter", r.ids(), ids[2:])

			c3 := subscribe(t, s, "t", id, replay.GapLive)
			p, err = c3.Next(100)
			if err != nil {
				t.Fatal(err)
			}
			checkGap(t, p.Gap, replay.GapUnknown, id)
			if len(p.Events) != 0 {
				t.Fatalf("GapLive after an unknown id delivered %q", eventIDs(p.Events))
			}
			c4 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
			r = drain(t, c4)
			noGap(t, r)
			if len(r.events) != 0 {
				t.Fatalf("resuming after a GapLive ResumeAfter read %q", r.ids())
			}
		})
	}
	// An unknown id on a topic that has no events yet.
	c := subscribe(t, s, "empty", "garbage", replay.GapReplay)
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	checkGap(t, p.Gap, replay.GapUnknown, "garbage")
	id := appendOne(t, s, "empty", "x", "y")
	r := drain(t, c)
	noGap(t, r)
	equalIDs(t, "after the gap", r.ids(), []string{id})
}

func testPendingGapKeepsReason(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 2})
	appendN(t, s, "t", "e", 2)
	c := subscribe(t, s, "t", "garbage", replay.GapReplay)
	ids := appendN(t, s, "t", "f", 3) // prunes what the gap would resume at
	p, err := c.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	checkGap(t, p.Gap, replay.GapUnknown, "garbage")
	equalIDs(t, "after the gap", eventIDs(p.Events), ids[1:])
	if r := drain(t, c); len(r.gaps) > 0 {
		t.Fatalf("second gap %+v", *r.gaps[0])
	}
	c2 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
	r := drain(t, c2)
	noGap(t, r)
	equalIDs(t, "resume after ResumeAfter", r.ids(), ids[1:])
}

func testSlowCursor(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 3})
	first := appendOne(t, s, "t", "x", "first")
	c := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	r := drain(t, c)
	noGap(t, r)
	equalIDs(t, "first read", r.ids(), []string{first})
	ids := appendN(t, s, "t", "e", 6)
	p, err := c.Next(2)
	if err != nil {
		t.Fatal(err)
	}
	checkGap(t, p.Gap, replay.GapExpired, first)
	equalIDs(t, "after the gap", eventIDs(p.Events), ids[3:5])
	r = drain(t, c)
	noGap(t, r)
	equalIDs(t, "the rest", r.ids(), ids[5:])
	// ResumeAfter is a valid id to resume after.
	c2 := subscribe(t, s, "t", p.Gap.ResumeAfter, replay.GapReplay)
	r = drain(t, c2)
	noGap(t, r)
	equalIDs(t, "resume after ResumeAfter", r.ids(), ids[3:])
}

func testSlowCursorLive(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 3})
	first := appendOne(t, s, "t", "x", "first")
	c := subscribe(t, s, "t", replay.Earliest, replay.GapLive)
	equalIDs(t, "first read", drain(t, c).ids(), []string{first})
	appendN(t, s, "t", "e", 6)
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	checkGap(t, p.Gap, replay.GapExpired, first)
	if len(p.Events) != 0 {
		t.Fatalf("GapLive delivered retained events %q", eventIDs(p.Events))
	}
	id := appendOne(t, s, "t", "x", "new")
	r := drain(t, c)
	noGap(t, r)
	equalIDs(t, "after the gap", r.ids(), []string{id})
}

func testMaxEvents(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 4})
	var ids []string
	for i := range 10 {
		ids = append(ids, appendOne(t, s, "t", "x", strconv.Itoa(i)))
		equalIDs(t, fmt.Sprintf("after %d appends", i+1), readRetained(t, s, "t"), ids[max(0, len(ids)-4):])
	}
	// Topics are bounded separately.
	other := appendN(t, s, "u", "u", 2)
	equalIDs(t, "other topic", readRetained(t, s, "u"), other)
	equalIDs(t, "first topic", readRetained(t, s, "t"), ids[6:])
}

func testMaxBytes(t *testing.T, newStore NewStore) {
	const maxBytes = 8 << 10
	s := newStore(t, replay.Config{MaxBytes: maxBytes})
	payload := strings.Repeat("x", 1<<10)
	var ids []string
	for i := range 20 {
		ids = append(ids, appendOne(t, s, "t", "x", fmt.Sprintf("%02d%s", i, payload)))
		got := readRetained(t, s, "t")
		// A non-empty suffix of what was appended...
		if len(got) == 0 || !slices.Equal(got, ids[len(ids)-len(got):]) {
			t.Fatalf("after %d appends retained %q, want a non-empty suffix of %q", i+1, got, ids)
		}
		// ...whose data and frames (over 2 KiB per event) fit the bound.
		if len(got) > maxBytes/(2<<10) {
			t.Fatalf("after %d appends of 1 KiB events, %d retained under MaxBytes %d", i+1, len(got), maxBytes)
		}
	}
}

func testMaxAge(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxAge: 500 * time.Millisecond})
	older := appendOne(t, s, "t", "x", "older")
	time.Sleep(100 * time.Millisecond)
	newer := appendOne(t, s, "t", "x", "newer")
	all := []string{older, newer}
	deadline := time.Now().Add(patience)
	for {
		got := readRetainedWhilePruning(t, s, "t")
		if !slices.Equal(got, all[len(all)-len(got):]) {
			t.Fatalf("retained %q, want a suffix of %q (oldest pruned first)", got, all)
		}
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events older than MaxAge still retained after %v: %q", patience, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The topic still works.
	id := appendOne(t, s, "t", "x", "later")
	if got := readRetained(t, s, "t"); len(got) > 1 || (len(got) == 1 && got[0] != id) {
		t.Fatalf("retained %q, want at most %q", got, id)
	}
}

func testBatchAtomic(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	before := appendOne(t, s, "t", "x", "before")
	c := subscribe(t, s, "t", before, replay.GapReplay)
	res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{
		draft("a", "1"), draft("b", "2"), draft("c", "3"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IDs) != 3 || res.Duplicate {
		t.Fatalf("Append = %+v, want 3 new ids", res)
	}
	after := appendOne(t, s, "t", "x", "after")
	r := drain(t, c)
	noGap(t, r)
	equalIDs(t, "log", r.ids(), append(slices.Clone(res.IDs), after))
	checkEvent(t, r.events[0], res.IDs[0], "a", "1")
	checkEvent(t, r.events[1], res.IDs[1], "b", "2")
	checkEvent(t, r.events[2], res.IDs[2], "c", "3")
	// A reader never sees part of a batch: a live reader reading one event
	// at a time gets all of it once it gets any of it.
	live := subscribe(t, s, "t", "", replay.GapReplay)
	res, err = s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("a", "4"), draft("b", "5")}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := live.Next(1)
	if err != nil {
		t.Fatal(err)
	}
	equalIDs(t, "first of batch", eventIDs(p.Events), res.IDs[:1])
	p, err = live.Next(1)
	if err != nil {
		t.Fatal(err)
	}
	equalIDs(t, "second of batch", eventIDs(p.Events), res.IDs[1:])
}

func testBatchTooLarge(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxEvents: 4, MaxBytes: 4 << 10})
	ids := appendN(t, s, "t", "e", 2)
	c := subscribe(t, s, "t", ids[1], replay.GapReplay)
	tooMany := make([]replay.Draft, 5)
	for i := range tooMany {
		tooMany[i] = draft("x", "small")
	}
	big := strings.Repeat("y", 1<<10)
	tooBig := []replay.Draft{draft("x", big), draft("x", big), draft("x", big), draft("x", big+big)}
	oneTooBig := []replay.Draft{draft("x", strings.Repeat("z", 5<<10))}
	for name, b := range map[string][]replay.Draft{"MaxEvents": tooMany, "MaxBytes": tooBig, "one event over MaxBytes": oneTooBig} {
		res, err := s.Append(ctx(t), "t", replay.Batch{Events: b, Key: "k-" + name})
		wantErr(t, "batch over "+name, err, replay.ErrBatchTooLarge)
		if len(res.IDs) != 0 {
			t.Fatalf("a failed append returned ids %q", res.IDs)
		}
		equalIDs(t, "retained after a failed batch over "+name, readRetained(t, s, "t"), ids)
		if r := drain(t, c); len(r.events) != 0 || len(r.gaps) != 0 {
			t.Fatalf("a failed batch delivered %q, gaps %v", r.ids(), r.gaps)
		}
	}
	// The key of a failed batch was not remembered.
	res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("x", "ok")}, Key: "k-MaxEvents"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || len(res.IDs) != 1 {
		t.Fatalf("append with the key of a failed batch = %+v, want one new id", res)
	}
	equalIDs(t, "after", drain(t, c).ids(), res.IDs)
	// A batch that exactly fits MaxEvents is fine.
	exact := make([]replay.Draft, 4)
	for i := range exact {
		exact[i] = draft("x", strconv.Itoa(i))
	}
	res, err = s.Append(ctx(t), "t", replay.Batch{Events: exact})
	if err != nil {
		t.Fatalf("a batch of MaxEvents events: %v", err)
	}
	equalIDs(t, "retained", readRetained(t, s, "t"), res.IDs)
}

func testDedup(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	b := replay.Batch{Events: []replay.Draft{draft("a", "1"), draft("b", "2")}, Key: "key-1"}
	first, err := s.Append(ctx(t), "t", b)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || len(first.IDs) != 2 {
		t.Fatalf("first append = %+v", first)
	}
	c := subscribe(t, s, "t", first.IDs[1], replay.GapReplay)
	// The same key again, even with different content, appends nothing.
	for _, again := range []replay.Batch{b, {Events: []replay.Draft{draft("c", "3")}, Key: "key-1"}} {
		res, err := s.Append(ctx(t), "t", again)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Duplicate {
			t.Fatalf("repeated key: Duplicate = false, ids %q", res.IDs)
		}
		equalIDs(t, "repeated key", res.IDs, first.IDs)
	}
	equalIDs(t, "retained", readRetained(t, s, "t"), first.IDs)
	if r := drain(t, c); len(r.events) != 0 {
		t.Fatalf("a duplicate delivered %q", r.ids())
	}
	// Another key, or no key, appends.
	res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("a", "1")}, Key: "key-2"})
	if err != nil || res.Duplicate || len(res.IDs) != 1 {
		t.Fatalf("append with a new key = %+v, %v", res, err)
	}
	for range 2 {
		res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("a", "1")}})
		if err != nil || res.Duplicate || len(res.IDs) != 1 {
			t.Fatalf("append with no key = %+v, %v", res, err)
		}
	}
}

func testDedupPerTopic(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	b := replay.Batch{Events: []replay.Draft{draft("a", "1")}, Key: "shared"}
	r1, err := s.Append(ctx(t), "t1", b)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Append(ctx(t), "t2", b)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Duplicate || r2.Duplicate {
		t.Fatalf("the same key on two topics was a duplicate: %+v %+v", r1, r2)
	}
	if r1.IDs[0] == r2.IDs[0] {
		t.Fatalf("two topics got the same id %q", r1.IDs[0])
	}
	equalIDs(t, "t2", readRetained(t, s, "t2"), r2.IDs)
	r3, err := s.Append(ctx(t), "t2", b)
	if err != nil || !r3.Duplicate {
		t.Fatalf("repeat on t2 = %+v, %v", r3, err)
	}
	equalIDs(t, "repeat on t2", r3.IDs, r2.IDs)
}

func testMaxDedupKeys(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxDedupKeys: 2})
	keyed := func(key string) replay.Appended {
		t.Helper()
		res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("x", key)}, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := keyed("a"), keyed("b"), keyed("c")
	for _, x := range []struct {
		key  string
		orig replay.Appended
	}{{"b", b}, {"c", c}} {
		if res := keyed(x.key); !res.Duplicate || !slices.Equal(res.IDs, x.orig.IDs) {
			t.Fatalf("key %q, among the newest 2: %+v, want a duplicate of %q", x.key, res, x.orig.IDs)
		}
	}
	res := keyed("a")
	if res.Duplicate {
		t.Fatalf("key %q, the oldest of 3 with MaxDedupKeys 2, is still remembered", "a")
	}
	if slices.Equal(res.IDs, a.IDs) {
		t.Fatalf("re-appending forgotten key a reissued ids %q", a.IDs)
	}
}

func testCloseTopicDrains(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	live := subscribe(t, s, "t", "", replay.GapReplay)
	ids := appendN(t, s, "t", "e", 5)
	behind := subscribe(t, s, "t", ids[1], replay.GapReplay)
	done := subscribe(t, s, "t", ids[4], replay.GapReplay)
	if err := s.CloseTopic(ctx(t), "t"); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		name string
		c    replay.Cursor
		want []string
	}{{"live", live, ids}, {"behind", behind, ids[2:]}, {"at the end", done, nil}} {
		// Read one at a time: Closed comes with (or after) the last event,
		// never before it.
		var got []string
		for i := 0; ; i++ {
			if i > 100 {
				t.Fatalf("%s: no Closed", x.name)
			}
			p, err := x.c.Next(1)
			if err != nil {
				t.Fatalf("%s: %v", x.name, err)
			}
			if p.Gap != nil {
				t.Fatalf("%s: gap %+v", x.name, *p.Gap)
			}
			got = append(got, eventIDs(p.Events)...)
			if p.Closed {
				break
			}
			if len(p.Events) == 0 {
				t.Fatalf("%s: an empty page without Closed after CloseTopic (read %q)", x.name, got)
			}
		}
		equalIDs(t, x.name, got, x.want)
	}
}

func testCloseTopicRefuses(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	appendN(t, s, "t", "e", 2)
	if err := s.CloseTopic(ctx(t), "t"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Subscribe(ctx(t), "t", "", replay.GapReplay)
	wantErr(t, "Subscribe live", err, replay.ErrTopicClosed)
	_, err = s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("x", "y")}})
	wantErr(t, "Append", err, replay.ErrTopicClosed)
	_, err = s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("x", "y")}, Key: "k"})
	wantErr(t, "Append with a key", err, replay.ErrTopicClosed)
	wantErr(t, "CloseTopic twice", s.CloseTopic(ctx(t), "t"), replay.ErrTopicClosed)
	// Other topics are unaffected.
	id := appendOne(t, s, "u", "x", "y")
	equalIDs(t, "other topic", readRetained(t, s, "u"), []string{id})
}

func testMaxTopics(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxTopics: 2})
	appendOne(t, s, "a", "x", "1")
	appendOne(t, s, "b", "x", "1")
	_, err := s.Append(ctx(t), "c", replay.Batch{Events: []replay.Draft{draft("x", "1")}})
	wantErr(t, "Append to a third topic", err, replay.ErrTooManyTopics)
	wantErr(t, "CloseTopic of a third topic", s.CloseTopic(ctx(t), "c"), replay.ErrTooManyTopics)
	// Existing topics keep working.
	appendOne(t, s, "a", "x", "2")
	subscribe(t, s, "b", replay.Earliest, replay.GapReplay)
}

// Subscribers to topics nobody writes must not lock publishers out.
func testMaxTopicsIgnoresSubscribedOnly(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxTopics: 2})
	var waiting []replay.Cursor
	for i := range 10 {
		waiting = append(waiting, subscribe(t, s, fmt.Sprintf("made-up-%d", i), "", replay.GapReplay))
	}
	for _, topic := range []string{"first", "second"} {
		id := appendOne(t, s, topic, "x", topic)
		equalIDs(t, "retained by "+topic, readRetained(t, s, topic), []string{id})
	}
	for _, topic := range []string{"third", "fourth", "made-up-0"} {
		_, err := s.Append(ctx(t), topic, replay.Batch{Events: []replay.Draft{draft("x", "y")}})
		wantErr(t, "Append to "+topic+" past the limit", err, replay.ErrTooManyTopics)
	}
	// Subscribing to more made-up topics still works; their subscribers
	// got nothing from the refused appends.
	c := subscribe(t, s, "made-up-10", "", replay.GapReplay)
	for _, c := range append(waiting, c) {
		if r := drain(t, c); len(r.events) != 0 || len(r.gaps) != 0 {
			t.Fatalf("a subscriber of a made-up topic read %q, gaps %v", r.ids(), r.gaps)
		}
	}
}

func testMaxSubscribers(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxSubscribersPerTopic: 2})
	c1 := subscribe(t, s, "t", "", replay.GapReplay)
	subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	_, err := s.Subscribe(ctx(t), "t", "", replay.GapReplay)
	wantErr(t, "third subscriber", err, replay.ErrTooManySubscribers)
	// Per topic: another topic has its own slots.
	subscribe(t, s, "u", "", replay.GapReplay)
	// Closing a cursor frees its slot, once.
	c1.Close()
	c1.Close()
	subscribe(t, s, "t", "", replay.GapReplay)
	_, err = s.Subscribe(ctx(t), "t", "", replay.GapReplay)
	wantErr(t, "subscriber after a double Close", err, replay.ErrTooManySubscribers)
}

func testConfigureShrinks(t *testing.T, newStore NewStore) {
	cfg := replay.Config{Framer: Framer, MaxEvents: 100}
	s := newStore(t, cfg)
	c := subscribe(t, s, "t", replay.Earliest, replay.GapReplay)
	payload := strings.Repeat("x", 1<<10)
	var ids []string
	for i := range 10 {
		ids = append(ids, appendOne(t, s, "t", "x", fmt.Sprintf("%02d%s", i, payload)))
	}
	equalIDs(t, "before", readRetained(t, s, "t"), ids)

	cfg.MaxEvents = 6
	s.Configure(cfg)
	equalIDs(t, "after MaxEvents 6", readRetained(t, s, "t"), ids[4:])

	cfg.MaxBytes = 8 << 10
	s.Configure(cfg)
	got := readRetained(t, s, "t")
	if len(got) == 0 || len(got) > 4 || !slices.Equal(got, ids[len(ids)-len(got):]) {
		t.Fatalf("after MaxBytes 8 KiB retained %q, want a non-empty suffix of at most 4 of %q", got, ids)
	}

	// The cursor that had read nothing missed the pruned events.
	p, err := c.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gap == nil || p.Gap.Reason != replay.GapExpired {
		t.Fatalf("cursor behind the new bounds: gap %+v, want expired", p.Gap)
	}
	equalIDs(t, "cursor after the gap", eventIDs(p.Events), got)

	// Larger bounds again keep what is there and let the log grow.
	cfg.MaxEvents, cfg.MaxBytes = 100, 0
	s.Configure(cfg)
	more := appendN(t, s, "t", "m", 3)
	equalIDs(t, "after growing", readRetained(t, s, "t"), append(slices.Clone(got), more...))
}
