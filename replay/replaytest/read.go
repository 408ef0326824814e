package replaytest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

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

// waitingRead reads c at the end of its log, which must give an empty page
// with Wait; woken then reports whether a reader blocked on that Wait was
// woken within patience by what the test does next.
func waitingRead(t *testing.T, c replay.Cursor) (woken func() bool) {
	t.Helper()
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 0 || p.Closed || p.Wait == nil {
		t.Fatalf("read at the end of the log = %+v, want an empty page with Wait", p)
	}
	done := make(chan struct{})
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		select {
		case <-p.Wait:
			close(done)
		case <-stop:
		}
	}()
	return func() bool {
		select {
		case <-done:
			return true
		case <-time.After(patience):
			return false
		}
	}
}

func testWaitWokenByAppend(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	c := subscribe(t, s, "t", "", replay.GapReplay)
	for round := range 2 {
		woken := waitingRead(t, c)
		id := appendOne(t, s, "t", "x", strconv.Itoa(round))
		if !woken() {
			t.Fatalf("round %d: the reader blocked on Wait was not woken by an append", round)
		}
		equalIDs(t, "after the wake", drain(t, c).ids(), []string{id})
	}
}

func testWaitWokenByCloseTopic(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	id := appendOne(t, s, "t", "x", "before")
	c := subscribe(t, s, "t", id, replay.GapReplay)
	woken := waitingRead(t, c)
	if err := s.CloseTopic(ctx(t), "t"); err != nil {
		t.Fatal(err)
	}
	if !woken() {
		t.Fatal("the reader blocked on Wait was not woken by CloseTopic")
	}
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Closed || len(p.Events) != 0 || p.Gap != nil {
		t.Fatalf("read after the wake = %+v, want Closed and no events", p)
	}
}
