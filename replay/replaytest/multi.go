package replaytest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// RunMulti runs the specifications of multi-topic cursors
// (replay.SubscribeMany) against the stores newStore makes. ordered says
// the store orders events across topics (a Multi store): then a cursor
// delivers them in append order, not only in each topic's.
func RunMulti(t *testing.T, newStore NewStore, ordered bool) {
	specs := []struct {
		name string
		fn   func(t *testing.T, s func(cfg replay.Config) replay.Store, ordered bool)
	}{
		{"events of every topic come once, each topic in order, with its topic", testMultiInterleave},
		{"one position resumes every topic exactly after what was delivered", testMultiResumeEverywhere},
		{"a topic whose part of the position expired gets its own gap; the others continue exactly", testMultiTopicGap},
		{"a position of no cursor of this set gives one gap for the set", testMultiUnknown},
		{"a topic that closes is reported once and the others go on; the last one closes the cursor", testMultiClose},
		{"a reader waiting on a multi-topic cursor is woken by any of its topics", testMultiWake},
		{"concurrent appends to several topics are delivered exactly once, resumable at every event", testMultiConcurrent},
		{"a multi-topic cursor counts against every topic's subscriber limit", testMultiSubscriberLimit},
	}
	for _, sp := range specs {
		t.Run(sp.name, func(t *testing.T) {
			t.Parallel()
			sp.fn(t, func(cfg replay.Config) replay.Store {
				t.Helper()
				cfg.Framer = Framer
				return newStore(t, cfg)
			}, ordered)
		})
	}
}

// multiEvent is one delivered event with its topic and the cursor's id
// after it.
type multiEvent struct {
	topic, id, data string
}

// multiReading is what a multi-topic cursor delivered.
type multiReading struct {
	events []multiEvent
	gaps   []replay.Gap
	closed []string
	ended  bool
}

func (r *multiReading) absorb(t *testing.T, p replay.Page, max int) {
	t.Helper()
	if len(p.Events) > max {
		t.Fatalf("Next(%d) returned %d events", max, len(p.Events))
	}
	if len(p.Events) > 0 && len(p.Topics) != len(p.Events) {
		t.Fatalf("a page of %d events names %d topics", len(p.Events), len(p.Topics))
	}
	if p.IDs != nil && len(p.IDs) != len(p.Events) {
		t.Fatalf("a page of %d events has %d ids", len(p.Events), len(p.IDs))
	}
	if p.Gap != nil {
		r.gaps = append(r.gaps, *p.Gap)
	}
	for i, e := range p.Events {
		id := e.ID
		if p.IDs != nil {
			id = p.IDs[i]
		}
		r.events = append(r.events, multiEvent{p.Topics[i], id, string(e.Data)})
	}
	r.closed = append(r.closed, p.ClosedTopics...)
	if p.Closed {
		r.ended = true
	}
	if len(p.Events) == 0 && p.Gap == nil && !p.Closed && len(p.ClosedTopics) == 0 && p.Wait == nil {
		t.Fatal("an empty page has no Wait channel")
	}
}

// mread reads c until it has n events (or ends, or, with n < 0, until it
// has nothing more), blocking on Wait.
func mread(t *testing.T, c replay.Cursor, n int) *multiReading {
	t.Helper()
	r := &multiReading{}
	deadline := time.Now().Add(patience)
	for (n < 0 || len(r.events) < n) && !r.ended {
		const max = 3
		p, err := c.Next(max)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		r.absorb(t, p, max)
		if len(p.Events) > 0 || p.Gap != nil || len(p.ClosedTopics) > 0 || p.Closed {
			continue
		}
		if n < 0 {
			select {
			case <-p.Wait:
				continue
			default:
				return r
			}
		}
		select {
		case <-p.Wait:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("waited %v for %d events, got %d", patience, n, len(r.events))
		}
	}
	return r
}

func subscribeMany(t *testing.T, s replay.Store, topics []string, from string, onGap replay.GapPolicy) replay.Cursor {
	t.Helper()
	c, err := replay.SubscribeMany(ctx(t), s, topics, from, onGap)
	if err != nil {
		t.Fatalf("SubscribeMany(%q, %q): %v", topics, from, err)
	}
	t.Cleanup(c.Close)
	return c
}

// appendRound appends, to each topic in turn, events data<k> for k in
// [from, to), and returns the data in append order with their topics.
func appendRound(t *testing.T, s replay.Store, topics []string, from, to int) []multiEvent {
	t.Helper()
	var out []multiEvent
	for k := from; k < to; k++ {
		topic := topics[k%len(topics)]
		data := fmt.Sprintf("%s#%d", topic, k)
		appendOne(t, s, topic, "msg", data)
		out = append(out, multiEvent{topic: topic, data: data})
	}
	return out
}

// checkDelivery checks that got holds exactly want's events, each topic's
// in order, and, when ordered, all in want's order.
func checkDelivery(t *testing.T, got []multiEvent, want []multiEvent, ordered bool) {
	t.Helper()
	strip := func(es []multiEvent) []multiEvent {
		out := make([]multiEvent, len(es))
		for i, e := range es {
			out[i] = multiEvent{topic: e.topic, data: e.data}
		}
		return out
	}
	g, w := strip(got), strip(want)
	if ordered {
		if !slices.Equal(g, w) {
			t.Fatalf("delivered %v, want %v", g, w)
		}
		return
	}
	byTopic := func(es []multiEvent) map[string][]string {
		m := map[string][]string{}
		for _, e := range es {
			m[e.topic] = append(m[e.topic], e.data)
		}
		return m
	}
	gm, wm := byTopic(g), byTopic(w)
	if len(gm) != len(wm) {
		t.Fatalf("delivered topics %v, want %v", gm, wm)
	}
	for topic, want := range wm {
		if !slices.Equal(gm[topic], want) {
			t.Fatalf("topic %s: delivered %v, want %v", topic, gm[topic], want)
		}
	}
}

func testMultiInterleave(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{})
	topics := []string{"a", "b", "c"}
	live := subscribeMany(t, s, topics, "", replay.GapReplay)
	appendOne(t, s, "other", "msg", "not listed")
	want := appendRound(t, s, topics, 0, 20)
	got := mread(t, live, len(want))
	checkDelivery(t, got.events, want, ordered)
	if len(got.gaps) > 0 {
		t.Fatalf("unexpected gap %+v", got.gaps[0])
	}
	earliest := subscribeMany(t, s, topics, replay.Earliest, replay.GapReplay)
	checkDelivery(t, mread(t, earliest, len(want)).events, want, ordered)
}

func testMultiResumeEverywhere(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{})
	topics := []string{"x", "y", "z", "empty"}
	c := subscribeMany(t, s, topics, "", replay.GapReplay)
	start := c.Position()
	want := appendRound(t, s, topics[:3], 0, 15)
	got := mread(t, c, len(want)).events
	checkDelivery(t, got, want, ordered)
	positions := append([]string{start}, nil...)
	for _, e := range got {
		positions = append(positions, e.id)
	}
	for k, pos := range positions {
		r := subscribeMany(t, s, topics, pos, replay.GapReplay)
		rest := mread(t, r, len(got)-k)
		if len(rest.gaps) > 0 {
			t.Fatalf("resuming after %q (event %d): gap %+v", pos, k, rest.gaps[0])
		}
		checkDelivery(t, rest.events, got[k:], ordered)
		if more := mread(t, r, -1); len(more.events) > 0 {
			t.Fatalf("resuming after %q: %d events more than expected", pos, len(more.events))
		}
		r.Close()
	}
}

func testMultiTopicGap(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{MaxEvents: 3})
	topics := []string{"keep", "lose"}
	c := subscribeMany(t, s, topics, "", replay.GapReplay)
	appendRound(t, s, topics, 0, 2)
	first := mread(t, c, 2).events
	pos := first[len(first)-1].id
	c.Close()
	// "lose" gets more than its history holds; "keep" one event.
	for i := range 5 {
		appendOne(t, s, "lose", "msg", fmt.Sprintf("lose#late%d", i))
	}
	appendOne(t, s, "keep", "msg", "keep#late")
	r := subscribeMany(t, s, topics, pos, replay.GapReplay)
	got := mread(t, r, 4)
	if len(got.gaps) != 1 {
		t.Fatalf("gaps %+v, want one, for topic lose", got.gaps)
	}
	g := got.gaps[0]
	if g.Topic != "lose" || g.Reason != replay.GapExpired || g.Requested != pos || g.ResumeAfter == "" {
		t.Fatalf("gap %+v, want an expired gap of topic lose requested at %q", g, pos)
	}
	want := []multiEvent{{topic: "keep", data: "keep#late"}}
	for i := 2; i < 5; i++ {
		want = append(want, multiEvent{topic: "lose", data: fmt.Sprintf("lose#late%d", i)})
	}
	checkDelivery(t, got.events, want, false)
}

func testMultiUnknown(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{})
	topics := []string{"p", "q"}
	want := appendRound(t, s, topics, 0, 4)
	for _, bad := range []string{"garbage", "0-0", replay.CompositePrefix + "AAAA", "zz-1"} {
		c := subscribeMany(t, s, topics, bad, replay.GapReplay)
		got := mread(t, c, len(want))
		if len(got.gaps) != 1 || got.gaps[0].Topic != "" || got.gaps[0].Reason != replay.GapUnknown || got.gaps[0].Requested != bad {
			t.Fatalf("from %q: gaps %+v, want one unknown gap for the set", bad, got.gaps)
		}
		checkDelivery(t, got.events, want, ordered)
		c.Close()
	}
	// Another set's position is not this set's.
	c := subscribeMany(t, s, []string{"p", "r"}, "", replay.GapReplay)
	pos := c.Position()
	c.Close()
	if !ordered {
		r := subscribeMany(t, s, topics, pos, replay.GapLive)
		if got := mread(t, r, -1); len(got.gaps) != 1 || got.gaps[0].Reason != replay.GapUnknown || len(got.events) != 0 {
			t.Fatalf("another set's position: gaps %+v, %d events; want one unknown gap, then live", got.gaps, len(got.events))
		}
	}
}

func testMultiClose(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{})
	topics := []string{"one", "two", "three"}
	c := subscribeMany(t, s, topics, "", replay.GapReplay)
	start := c.Position()
	appendOne(t, s, "two", "msg", "two#last")
	if err := s.CloseTopic(ctx(t), "two"); err != nil {
		t.Fatal(err)
	}
	appendOne(t, s, "one", "msg", "one#after")
	got := mread(t, c, 2)
	if !slices.Equal(got.closed, []string{"two"}) || got.ended {
		got2 := mread(t, c, -1)
		got.closed = append(got.closed, got2.closed...)
		if !slices.Equal(got.closed, []string{"two"}) || got2.ended {
			t.Fatalf("closed %v (ended %v), want two only", got.closed, got.ended || got2.ended)
		}
	}
	checkDelivery(t, got.events, []multiEvent{{topic: "two", data: "two#last"}, {topic: "one", data: "one#after"}}, ordered)
	pos := got.events[len(got.events)-1].id
	for _, name := range []string{"one", "three"} {
		if err := s.CloseTopic(ctx(t), name); err != nil {
			t.Fatal(err)
		}
	}
	end := mread(t, c, -1)
	for !end.ended {
		more := mread(t, c, 1)
		end.closed = append(end.closed, more.closed...)
		end.ended = more.ended
	}
	slices.Sort(end.closed)
	if !slices.Equal(end.closed, []string{"one", "three"}) {
		t.Fatalf("closed at the end %v, want one and three", end.closed)
	}
	// With everything, a client is told at once; one that missed events
	// still gets them, then the closes.
	if _, err := replay.SubscribeMany(ctx(t), s, topics, pos, replay.GapReplay); err != replay.ErrTopicClosed {
		t.Fatalf("SubscribeMany after the end: %v, want ErrTopicClosed", err)
	}
	r, err := replay.SubscribeMany(ctx(t), s, topics, start, replay.GapReplay)
	if err != nil {
		t.Fatalf("SubscribeMany from before the closes: %v", err)
	}
	defer r.Close()
	again := mread(t, r, 2)
	for !again.ended {
		more := mread(t, r, 1)
		again.closed = append(again.closed, more.closed...)
		again.ended = more.ended
	}
	checkDelivery(t, again.events, got.events, ordered)
	slices.Sort(again.closed)
	if !slices.Equal(again.closed, []string{"one", "three", "two"}) {
		t.Fatalf("a resumed cursor reported closed %v, want all three", again.closed)
	}
}

func testMultiWake(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{})
	topics := []string{"w1", "w2", "w3"}
	c := subscribeMany(t, s, topics, "", replay.GapReplay)
	for _, topic := range []string{"w3", "w1", "w2"} {
		p, err := c.Next(10)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > 0 || p.Wait == nil {
			t.Fatalf("page %+v, want nothing to read yet", p)
		}
		appended := make(chan error, 1)
		time.AfterFunc(10*time.Millisecond, func() {
			_, err := s.Append(ctx(t), topic, replay.Batch{Events: []replay.Draft{draft("msg", topic)}})
			appended <- err
		})
		select {
		case <-p.Wait:
		case <-time.After(patience):
			t.Fatalf("an append to %s did not wake the cursor", topic)
		}
		if err := <-appended; err != nil {
			t.Fatal(err)
		}
		got := mread(t, c, 1)
		if len(got.events) != 1 || got.events[0].topic != topic {
			t.Fatalf("read %+v, want the event of %s", got.events, topic)
		}
	}
}

func testMultiConcurrent(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{MaxEvents: 10000})
	topics := []string{"c0", "c1", "c2", "c3"}
	c := subscribeMany(t, s, topics, "", replay.GapReplay)
	start := c.Position()
	const per = 100
	var wg sync.WaitGroup
	for _, topic := range topics {
		wg.Go(func() {
			for k := range per {
				if _, err := s.Append(ctx(t), topic, replay.Batch{Events: []replay.Draft{draft("msg", fmt.Sprintf("%s#%d", topic, k))}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	got := mread(t, c, per*len(topics))
	wg.Wait()
	seen := map[string]bool{}
	next := map[string]int{}
	for _, e := range got.events {
		if seen[e.data] {
			t.Fatalf("%s delivered twice", e.data)
		}
		seen[e.data] = true
		if want := fmt.Sprintf("%s#%d", e.topic, next[e.topic]); e.data != want {
			t.Fatalf("topic %s: got %s, want %s", e.topic, e.data, want)
		}
		next[e.topic]++
	}
	// Any position the cursor gave resumes exactly.
	positions := []string{start}
	for _, e := range got.events {
		positions = append(positions, e.id)
	}
	for _, k := range []int{0, 1, 57, 200, 333, len(positions) - 1} {
		r := subscribeMany(t, s, topics, positions[k], replay.GapReplay)
		rest := mread(t, r, len(got.events)-k)
		if len(rest.gaps) > 0 {
			t.Fatalf("resuming after event %d: gap %+v", k, rest.gaps[0])
		}
		checkDelivery(t, rest.events, got.events[k:], ordered)
		r.Close()
	}
}

func testMultiSubscriberLimit(t *testing.T, newStore func(replay.Config) replay.Store, ordered bool) {
	s := newStore(replay.Config{MaxSubscribersPerTopic: 1})
	single := subscribe(t, s, "busy", "", replay.GapReplay)
	if _, err := replay.SubscribeMany(ctx(t), s, []string{"free", "busy"}, "", replay.GapReplay); err != replay.ErrTooManySubscribers {
		t.Fatalf("SubscribeMany on a full topic: %v, want ErrTooManySubscribers", err)
	}
	// The refused cursor released what it took: "free" has room.
	other := subscribe(t, s, "free", "", replay.GapReplay)
	other.Close()
	single.Close()
	c := subscribeMany(t, s, []string{"free", "busy"}, "", replay.GapReplay)
	if _, err := s.Subscribe(ctx(t), "busy", "", replay.GapReplay); err != replay.ErrTooManySubscribers {
		t.Fatalf("Subscribe beside a multi-topic cursor: %v, want ErrTooManySubscribers", err)
	}
	c.Close()
	subscribe(t, s, "busy", "", replay.GapReplay)
}
