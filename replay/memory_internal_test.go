package replay

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

func testFramer(id, typ string, data []byte) []byte {
	return []byte(id + "|" + typ + "|" + string(data))
}

// clock is a time source the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// newManualMemory is NewMemory on a hand-moved clock and with no janitor
// goroutine: the test calls sweep itself.
func newManualMemory(t *testing.T, cfg Config) (*Memory, *clock) {
	t.Helper()
	if cfg.Framer == nil {
		cfg.Framer = testFramer
	}
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newMemory(clk.Now)
	close(m.janitorDone) // no janitor: Close need not wait for one
	m.Configure(cfg)
	t.Cleanup(func() { m.Close() })
	return m, clk
}

func mustAppend(t *testing.T, m *Memory, topic string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		res, err := m.Append(t.Context(), topic, Batch{Events: []Draft{{Type: "x", Data: []byte(strconv.Itoa(i))}}})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		ids = append(ids, res.IDs...)
	}
	return ids
}

func topicCount(m *Memory) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.topics)
}

func firstPage(t *testing.T, m *Memory, topic, from string) Page {
	t.Helper()
	c, err := m.Subscribe(t.Context(), topic, from, GapReplay)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", from, err)
	}
	defer c.Close()
	p, err := c.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pageIDs(p Page) []string {
	var ids []string
	for _, e := range p.Events {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestMemoryIDsAreNeverReissuedAfterATopicIsForgotten(t *testing.T) {
	m, clk := newManualMemory(t, Config{MaxAge: time.Minute})
	mustAppend(t, m, "other", 1) // forgotten too; its seq comes first
	first := mustAppend(t, m, "t", 2)

	clk.Advance(2 * time.Minute)
	m.sweep()
	if n := topicCount(m); n != 0 {
		t.Fatalf("%d topics remembered after their events aged out, want 0", n)
	}

	again := mustAppend(t, m, "t", 2)
	seen := map[string]bool{}
	for _, id := range append(append([]string(nil), first...), again...) {
		if seen[id] {
			t.Fatalf("id %s issued twice (first life %q, second %q)", id, first, again)
		}
		seen[id] = true
	}
	a, _ := m.parseID(first[1])
	b, _ := m.parseID(again[0])
	if b <= a {
		t.Fatalf("seq %d in the topic's second life is not after %d", b, a)
	}

	// The client that read the whole first life missed nothing...
	p := firstPage(t, m, "t", first[1])
	if p.Gap != nil {
		t.Fatalf("resume after the last event of a forgotten life: gap %+v", *p.Gap)
	}
	if got := pageIDs(p); len(got) != 2 || got[0] != again[0] || got[1] != again[1] {
		t.Fatalf("resume after %s: %q, want %q", first[1], got, again)
	}
	// ...the one that stopped before the end did.
	p = firstPage(t, m, "t", first[0])
	if p.Gap == nil || p.Gap.Reason != GapExpired {
		t.Fatalf("resume after an event of a forgotten life with a later one: gap %+v, want expired", p.Gap)
	}
}

func TestMemoryForgetsOnlyIdleTopics(t *testing.T) {
	m, clk := newManualMemory(t, Config{MaxAge: time.Minute, DedupWindow: 5 * time.Minute})

	// Retained events, a subscriber or a remembered key keep a topic.
	mustAppend(t, m, "events", 1)
	c, err := m.Subscribe(t.Context(), "subscribed", "", GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Append(t.Context(), "keyed", Batch{Events: []Draft{{Data: []byte("x")}}, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	// A topic holding nothing goes at the next sweep.
	gone, err := m.Subscribe(t.Context(), "empty", "", GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	m.sweep()
	if n := topicCount(m); n != 3 {
		t.Fatalf("%d topics after the first sweep, want 3", n)
	}

	clk.Advance(2 * time.Minute) // events aged out; key still in its window
	m.sweep()
	if _, ok := m.topics["events"]; ok {
		t.Fatal("a topic whose events aged out is still remembered")
	}
	if _, ok := m.topics["subscribed"]; !ok {
		t.Fatal("a topic with a subscriber was forgotten")
	}
	if _, ok := m.topics["keyed"]; !ok {
		t.Fatal("a topic with a remembered key was forgotten")
	}
	res, err := m.Append(t.Context(), "keyed", Batch{Events: []Draft{{Data: []byte("x")}}, Key: "k"})
	if err != nil || !res.Duplicate {
		t.Fatalf("key within its window: %+v, %v; want a duplicate", res, err)
	}

	clk.Advance(4 * time.Minute) // past the dedup window
	c.Close()
	m.sweep()
	if n := topicCount(m); n != 0 {
		t.Fatalf("%d topics remembered, want 0", n)
	}
	res, err = m.Append(t.Context(), "keyed", Batch{Events: []Draft{{Data: []byte("x")}}, Key: "k"})
	if err != nil || res.Duplicate {
		t.Fatalf("key past its window: %+v, %v; want a new append", res, err)
	}
}

func TestMemoryClosedTopicIsRememberedForMaxAge(t *testing.T) {
	m, clk := newManualMemory(t, Config{MaxAge: time.Minute, MaxTopics: 1})
	if err := m.CloseTopic(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second)
	m.sweep()
	if _, err := m.Subscribe(t.Context(), "t", "", GapReplay); !errors.Is(err, ErrTopicClosed) {
		t.Fatalf("Subscribe to a closed topic within MaxAge: %v, want ErrTopicClosed", err)
	}
	// It counts against MaxTopics while remembered.
	if _, err := m.Append(t.Context(), "u", Batch{}); !errors.Is(err, ErrTooManyTopics) {
		t.Fatalf("Append to a second topic: %v, want ErrTooManyTopics", err)
	}
	clk.Advance(31 * time.Second)
	m.sweep()
	if n := topicCount(m); n != 0 {
		t.Fatalf("%d topics after MaxAge, want 0", n)
	}
	if _, err := m.Subscribe(t.Context(), "t", "", GapReplay); err != nil {
		t.Fatalf("Subscribe after the closed topic was forgotten: %v", err)
	}
}

func TestMemoryAgePruneWithoutWrites(t *testing.T) {
	m, clk := newManualMemory(t, Config{MaxAge: time.Minute})
	old := mustAppend(t, m, "t", 2)
	clk.Advance(40 * time.Second)
	young := mustAppend(t, m, "t", 1)
	c, err := m.Subscribe(t.Context(), "t", old[0], GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clk.Advance(30 * time.Second) // old ones are 70s old, young 30s
	m.sweep()
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gap == nil || p.Gap.Reason != GapExpired || p.Gap.Requested != old[0] {
		t.Fatalf("gap %+v, want expired for %s", p.Gap, old[0])
	}
	if got := pageIDs(p); len(got) != 1 || got[0] != young[0] {
		t.Fatalf("after the gap: %q, want %q", got, young)
	}
	// Exactly the age bound stays; past it goes.
	clk.Advance(30 * time.Second)
	m.sweep()
	if p := firstPage(t, m, "t", Earliest); len(p.Events) != 1 {
		t.Fatalf("an event exactly MaxAge old was pruned")
	}
	clk.Advance(time.Nanosecond)
	m.sweep()
	if p := firstPage(t, m, "t", Earliest); len(p.Events) != 0 {
		t.Fatalf("an event older than MaxAge is retained")
	}
}

func TestMemoryResumeAfterNewestPrunedIsExact(t *testing.T) {
	m, _ := newManualMemory(t, Config{MaxEvents: 2})
	ids := mustAppend(t, m, "t", 5)
	p := firstPage(t, m, "t", ids[2])
	if p.Gap != nil {
		t.Fatalf("resume after the newest pruned event: gap %+v", *p.Gap)
	}
	if got := pageIDs(p); len(got) != 2 || got[0] != ids[3] {
		t.Fatalf("got %q, want %q", got, ids[3:])
	}
	if p := firstPage(t, m, "t", ids[1]); p.Gap == nil || p.Gap.Reason != GapExpired {
		t.Fatalf("resume after an older pruned event: gap %+v, want expired", p.Gap)
	}
}

func TestMemoryNextZeroReadsOne(t *testing.T) {
	m, _ := newManualMemory(t, Config{})
	c, err := m.Subscribe(t.Context(), "t", Earliest, GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ids := mustAppend(t, m, "t", 2)
	for i, max := range []int{0, -1} {
		p, err := c.Next(max)
		if err != nil {
			t.Fatal(err)
		}
		if got := pageIDs(p); len(got) != 1 || got[0] != ids[i] {
			t.Fatalf("Next(%d) = %q, want [%s]", max, got, ids[i])
		}
	}
}

// A topic's slot of MaxTopics is freed when the topic is forgotten, and a
// topic whose subscribers leave never took one.
func TestMemoryForgettingFreesTheTopicSlot(t *testing.T) {
	m, clk := newManualMemory(t, Config{MaxAge: time.Minute, MaxTopics: 1})
	mustAppend(t, m, "a", 1)
	if _, err := m.Append(t.Context(), "b", Batch{Events: []Draft{{Data: []byte("x")}}}); !errors.Is(err, ErrTooManyTopics) {
		t.Fatalf("Append to a second topic: %v, want ErrTooManyTopics", err)
	}
	c, err := m.Subscribe(t.Context(), "watched", "", GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	clk.Advance(2 * time.Minute)
	m.sweep()
	if n := topicCount(m); n != 0 {
		t.Fatalf("%d topics remembered, want 0", n)
	}
	if n := m.counted.Load(); n != 0 {
		t.Fatalf("%d topics counted against MaxTopics after all were forgotten", n)
	}
	mustAppend(t, m, "b", 1)
}
