package replaytest

import (
	"testing"

	"github.com/ssegate/caddy-sse/replay"
)

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
