package redisstore_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
)

// untilClosed reads c, waiting for news, until a page says Closed (or fails
// after 10s), and returns what it delivered.
func untilClosed(t *testing.T, c replay.Cursor) (ids []string, gaps []replay.Gap) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		p, err := c.Next(100)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if p.Gap != nil {
			gaps = append(gaps, *p.Gap)
		}
		for _, e := range p.Events {
			ids = append(ids, e.ID)
		}
		if p.Closed {
			return ids, gaps
		}
		if len(p.Events) == 0 {
			select {
			case <-p.Wait:
			case <-deadline.C:
				t.Fatalf("no Closed within 10s; read %q", ids)
			}
		}
	}
}

// A topic closed on one node still gives a client that was before the
// close what it missed, then Closed, on every node: the node that closed
// it, a node that held a window of it, and a node that never read it.
func TestClosedTopicOnEveryNode(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := replay.Config{MaxEvents: 4}
	a, b := twoNodes(t, srv, cfg)
	fresh := newStore(t, srv, cfg, prefixOf(a))

	held := subscribe(t, b, "/job", "")
	var ids []string
	for i := range 6 { // e0 and e1 are trimmed
		ids = append(ids, appendData(t, a, "/job", fmt.Sprintf("e%d", i))...)
	}
	if err := a.CloseTopic(t.Context(), "/job"); err != nil {
		t.Fatal(err)
	}
	if got, _ := untilClosed(t, held); !slices.Equal(got, ids[2:]) {
		t.Fatalf("a cursor open at the close read %q, want %q", got, ids[2:])
	}

	for name, s := range map[string]replay.Store{"closing node": a, "node with a window": b, "fresh node": fresh} {
		t.Run(name, func(t *testing.T) {
			for _, from := range []string{"", ids[5]} {
				for _, pol := range []replay.GapPolicy{replay.GapReplay, replay.GapLive} {
					if c, err := s.Subscribe(t.Context(), "/job", from, pol); !errors.Is(err, replay.ErrTopicClosed) {
						if c != nil {
							c.Close()
						}
						t.Fatalf("Subscribe after %q (policy %d): %v, want ErrTopicClosed", from, pol, err)
					}
				}
			}
			for _, x := range []struct {
				from string
				pol  replay.GapPolicy
				want []string
				gap  string
			}{
				{ids[3], replay.GapReplay, ids[4:], ""},
				{ids[2], replay.GapLive, ids[3:], ""},
				{replay.Earliest, replay.GapReplay, ids[2:], ""},
				{ids[0], replay.GapReplay, ids[2:], replay.GapExpired},
				{ids[0], replay.GapLive, nil, replay.GapExpired},
				{"garbage", replay.GapReplay, ids[2:], replay.GapUnknown},
				{"garbage", replay.GapLive, nil, replay.GapUnknown},
			} {
				what := fmt.Sprintf("after %q (policy %d)", x.from, x.pol)
				c, err := s.Subscribe(t.Context(), "/job", x.from, x.pol)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				got, gaps := untilClosed(t, c)
				c.Close()
				if !slices.Equal(got, x.want) {
					t.Fatalf("%s: read %q, want %q", what, got, x.want)
				}
				if x.gap == "" && len(gaps) != 0 || x.gap != "" && (len(gaps) != 1 || gaps[0].Reason != x.gap) {
					t.Fatalf("%s: gaps %+v, want %q", what, gaps, x.gap)
				}
			}
		})
	}

	// Closed with no event: Earliest gives Closed at once, nothing else
	// has anything to read.
	if err := b.CloseTopic(t.Context(), "/never-written"); err != nil {
		t.Fatal(err)
	}
	c := subscribe(t, a, "/never-written", replay.Earliest)
	if p, err := c.Next(10); err != nil || !p.Closed || len(p.Events) != 0 || p.Gap != nil {
		t.Fatalf("earliest on a closed topic without events: %+v, %v", p, err)
	}
	if _, err := fresh.Subscribe(t.Context(), "/never-written", "", replay.GapReplay); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("live on a closed topic without events: %v", err)
	}
}
