package redisstore_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
)

// A cursor opened without an id has a position before it read anything,
// on a topic that does not exist yet, one that only has subscribers, and
// one with history; given back on any node, it resumes with exactly the
// events appended since, without a gap.
func TestFreshPositionResumesOnAnyNode(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := replay.Config{MaxEvents: 3}
	a, b := twoNodes(t, srv, cfg)
	fresh := newStore(t, srv, cfg, prefixOf(a))
	appendData(t, b, "/busy", "b0", "b1", "b2")
	subscribe(t, b, "/empty", replay.Earliest) // held, never written

	positions := map[string]string{}
	for _, topic := range []string{"/not-yet", "/empty", "/busy"} {
		pos := subscribe(t, a, topic, "").Position()
		if pos == "" {
			t.Fatalf("a fresh live cursor on %s has no position", topic)
		}
		positions[topic] = pos
	}
	want := map[string][]string{}
	for round := range 2 {
		for topic := range positions {
			want[topic] = append(want[topic], appendData(t, b, topic, fmt.Sprintf("%s-%d", topic, round))...)
		}
	}
	for name, s := range map[string]replay.Store{"the same node": a, "the appending node": b, "a fresh node": fresh} {
		for topic, pos := range positions {
			for _, pol := range []replay.GapPolicy{replay.GapReplay, replay.GapLive} {
				c, err := s.Subscribe(t.Context(), topic, pos, pol)
				if err != nil {
					t.Fatalf("%s: Subscribe(%s, %q): %v", name, topic, pos, err)
				}
				got, gap := read(t, c, len(want[topic]))
				c.Close()
				var ids []string
				for _, e := range got {
					id, _, _ := strings.Cut(e, " ")
					ids = append(ids, id)
				}
				if gap != nil || !slices.Equal(ids, want[topic]) {
					t.Fatalf("%s: %s after its fresh position %q (policy %d) read %q (gap %+v), want %q", name, topic, pos, pol, got, gap, want[topic])
				}
			}
		}
	}
}
