package replaytest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

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
