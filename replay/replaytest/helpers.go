package replaytest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

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
