package replaytest

import (
	"fmt"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
)

// NewDurableStore makes a fresh, empty store bounded by cfg, like NewStore,
// and returns with it reopen: reopen closes the store and opens its storage
// again (a restart, or another node of a shared store), returning the store
// of the new life. It may be called several times; every store it returns
// must be released when t ends.
type NewDurableStore func(t *testing.T, cfg replay.Config) (s replay.Store, reopen func() replay.Store)

// RunDurable runs the specifications that a client resuming across a
// restart relies on: positions handed out and closed topics' histories
// outlive the store's process. Run runs the same specifications within one
// life, so a store that calls RunDurable also calls Run.
func RunDurable(t *testing.T, newStore NewDurableStore) {
	runLives(t, newStore)
}

func runLives(t *testing.T, newStore NewDurableStore) {
	specs := []struct {
		name string
		fn   func(t *testing.T, newStore NewDurableStore)
	}{
		{"a closed topic answers ErrTopicClosed to a client that missed nothing", testClosedNothingMissed},
		{"a closed topic delivers what a cursor before its last event missed, then Closed", testClosedDeliversMissed},
		{"an earliest cursor on a closed topic replays what is retained, then Closed", testClosedEarliest},
		{"an unknown or expired id on a closed topic gives its gap, then what the policy resumes at, then Closed", testClosedGap},
		{"a fresh live cursor has a position that resumes exactly", testLivePosition},
	}
	for _, s := range specs {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.fn(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
				t.Helper()
				cfg.Framer = Framer
				return newStore(t, cfg)
			})
		})
	}
}

var policies = []struct {
	name string
	pol  replay.GapPolicy
}{{"GapReplay", replay.GapReplay}, {"GapLive", replay.GapLive}}

func closeTopic(t *testing.T, s replay.Store, topic string) {
	t.Helper()
	if err := s.CloseTopic(ctx(t), topic); err != nil {
		t.Fatalf("CloseTopic(%q): %v", topic, err)
	}
}

// readToClose reads c without blocking and fails unless it ends with
// Closed.
func readToClose(t *testing.T, what string, c replay.Cursor) *reading {
	t.Helper()
	r := drain(t, c)
	if !r.closed {
		t.Fatalf("%s: read %q, then an empty page without Closed", what, r.ids())
	}
	return r
}

func testClosedNothingMissed(t *testing.T, newStore NewDurableStore) {
	s, reopen := newStore(t, replay.Config{})
	ids := appendN(t, s, "t", "e", 3)
	appendN(t, s, "other", "o", 2) // the store moves on past t's last event
	// A live cursor opened after t's last event, and one that read it.
	opened := subscribe(t, s, "t", "", replay.GapReplay)
	read := subscribe(t, s, "t", ids[1], replay.GapReplay)
	if r := drain(t, read); len(r.events) != 1 {
		t.Fatalf("resuming before the last event read %q", r.ids())
	}
	positions := []string{opened.Position(), read.Position()}
	opened.Close()
	read.Close()
	closeTopic(t, s, "t")
	s = reopen()
	for _, from := range []struct{ name, id string }{
		{"no cursor", ""},
		{"the last id", ids[2]},
		{"the position of a live cursor opened after the last event", positions[0]},
		{"the position of a cursor that read the last event", positions[1]},
	} {
		for _, p := range policies {
			c, err := s.Subscribe(ctx(t), "t", from.id, p.pol)
			if err == nil {
				r := drain(t, c)
				c.Close()
				t.Fatalf("%s (%q), %s: a cursor that read %q (closed %v, gaps %v), want ErrTopicClosed", from.name, from.id, p.name, r.ids(), r.closed, r.gaps)
			}
			wantErr(t, from.name+", "+p.name, err, replay.ErrTopicClosed)
		}
	}
}

func testClosedDeliversMissed(t *testing.T, newStore NewDurableStore) {
	s, reopen := newStore(t, replay.Config{})
	live := subscribe(t, s, "t", "", replay.GapReplay)
	before := live.Position()
	live.Close()
	ids := appendN(t, s, "t", "e", 3)
	appendN(t, s, "other", "o", 2)
	ids = append(ids, appendN(t, s, "t", "f", 3)...)
	closeTopic(t, s, "t")
	s = reopen()
	cases := []struct{ name, from string }{{"the position of a live cursor opened before any event", before}}
	for i, id := range ids[:len(ids)-1] {
		cases = append(cases, struct{ name, from string }{fmt.Sprintf("the id at index %d", i), id})
	}
	for i, x := range cases {
		want := ids[i:] // the case at index i resumes before ids[i]
		for _, p := range policies {
			what := fmt.Sprintf("after %s (%q), %s", x.name, x.from, p.name)
			c := subscribe(t, s, "t", x.from, p.pol)
			r := readToClose(t, what, c)
			noGap(t, r)
			equalIDs(t, what, r.ids(), want)
			c.Close()
		}
	}
	// One event at a time: Closed comes with the last event or after it.
	c := subscribe(t, s, "t", ids[2], replay.GapReplay)
	var got []string
	for range len(ids) + 2 {
		p, err := c.Next(1)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, eventIDs(p.Events)...)
		if p.Closed {
			equalIDs(t, "one at a time", got, ids[3:])
			return
		}
		if len(p.Events) == 0 {
			t.Fatalf("an empty page without Closed after reading %q", got)
		}
	}
	t.Fatalf("no Closed after reading %q", got)
}

func testClosedEarliest(t *testing.T, newStore NewDurableStore) {
	s, reopen := newStore(t, replay.Config{MaxEvents: 3})
	ids := appendN(t, s, "t", "e", 5)
	closeTopic(t, s, "t")
	closeTopic(t, s, "never-written")
	s = reopen()
	for _, p := range policies {
		r := readToClose(t, "earliest, "+p.name, subscribe(t, s, "t", replay.Earliest, p.pol))
		noGap(t, r)
		equalIDs(t, "earliest, "+p.name, r.ids(), ids[2:])

		// Nothing retained: the first page says Closed.
		c := subscribe(t, s, "never-written", replay.Earliest, p.pol)
		page, err := c.Next(10)
		if err != nil {
			t.Fatal(err)
		}
		if !page.Closed || len(page.Events) != 0 || page.Gap != nil {
			t.Fatalf("earliest on a closed topic that retains nothing, %s: first page %+v, want Closed", p.name, page)
		}
	}
	_, err := s.Subscribe(ctx(t), "never-written", "", replay.GapReplay)
	wantErr(t, "live on a closed topic that retains nothing", err, replay.ErrTopicClosed)
}

func testClosedGap(t *testing.T, newStore NewDurableStore) {
	s, reopen := newStore(t, replay.Config{MaxEvents: 3})
	ids := appendN(t, s, "t", "e", 6)
	closeTopic(t, s, "t")
	s = reopen()
	type idCase struct{ reason, from string }
	cases := []idCase{{replay.GapExpired, ids[0]}, {replay.GapExpired, ids[1]}, {replay.GapUnknown, "garbage"}}
	if ahead, ok := aheadOf(ids[5]); ok {
		cases = append(cases, idCase{replay.GapUnknown, ahead})
	}
	for _, x := range cases {
		for _, p := range policies {
			what := fmt.Sprintf("%s id %q, %s", x.reason, x.from, p.name)
			c := subscribe(t, s, "t", x.from, p.pol)
			r := readToClose(t, what, c)
			if len(r.gaps) != 1 || r.gapAt[0] != 0 {
				t.Fatalf("%s: gaps %+v at %v, want one before any event", what, r.gaps, r.gapAt)
			}
			checkGap(t, r.gaps[0], x.reason, x.from)
			want := ids[3:]
			if p.pol == replay.GapLive {
				want = nil
			}
			equalIDs(t, what, r.ids(), want)
			c.Close()

			// ResumeAfter, given back, leads to the same events, or to
			// ErrTopicClosed when there are none.
			again, err := s.Subscribe(ctx(t), "t", r.gaps[0].ResumeAfter, replay.GapReplay)
			if want == nil {
				if err == nil {
					again.Close()
				}
				wantErr(t, what+": resuming after ResumeAfter", err, replay.ErrTopicClosed)
				continue
			}
			if err != nil {
				t.Fatalf("%s: resuming after ResumeAfter %q: %v", what, r.gaps[0].ResumeAfter, err)
			}
			r = readToClose(t, what+": resuming after ResumeAfter", again)
			noGap(t, r)
			equalIDs(t, what+": resuming after ResumeAfter", r.ids(), want)
			again.Close()
		}
	}
}

// A client that connects without a cursor is handed its position at once,
// so a reconnect before its first event misses nothing.
func testLivePosition(t *testing.T, newStore NewDurableStore) {
	s, reopen := newStore(t, replay.Config{MaxEvents: 3})
	appendN(t, s, "busy", "b", 5)
	appendN(t, s, "before", "x", 2)
	// "empty" exists, held by a subscriber, and has no event.
	subscribe(t, s, "empty", replay.Earliest, replay.GapReplay)
	type started struct {
		topic string
		c     replay.Cursor
		pos   string
	}
	var cursors []started
	for _, topic := range []string{"not-yet", "empty", "busy"} {
		c := subscribe(t, s, topic, "", replay.GapReplay)
		pos := c.Position()
		if pos == "" {
			t.Fatalf("a fresh live cursor on %q has no position", topic)
		}
		cursors = append(cursors, started{topic, c, pos})
	}
	// Other topics move the store on, before and between the appends.
	appendN(t, s, "before", "y", 3)
	want := map[string][]string{}
	for round := range 2 {
		for _, x := range cursors {
			want[x.topic] = append(want[x.topic], appendOne(t, s, x.topic, "msg", fmt.Sprintf("%s-%d", x.topic, round)))
			appendOne(t, s, "between", "msg", "z")
		}
	}
	for _, x := range cursors {
		r := drain(t, x.c)
		noGap(t, r)
		equalIDs(t, "live cursor on "+x.topic, r.ids(), want[x.topic])
		x.c.Close()
	}
	s = reopen()
	for _, x := range cursors {
		for _, p := range policies {
			what := fmt.Sprintf("resuming %q after its fresh position %q, %s", x.topic, x.pos, p.name)
			c := subscribe(t, s, x.topic, x.pos, p.pol)
			r := drain(t, c)
			noGap(t, r)
			equalIDs(t, what, r.ids(), want[x.topic])
			c.Close()
		}
	}
}
