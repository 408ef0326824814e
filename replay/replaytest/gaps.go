package replaytest

import (
	"slices"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
)

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
