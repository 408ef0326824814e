package replay_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// FuzzMultiCursor: whatever a client sends as Last-Event-ID, a multi-topic
// cursor (Memory's own, and Compose's over it) resumes cleanly or says
// where it cannot with a gap, and never panics. What it delivers of each
// topic is a run of that topic's retained events ending with the last one,
// in order.
func FuzzMultiCursor(f *testing.F) {
	m := replay.NewMemory(replay.Config{Framer: replaytest.Framer, MaxEvents: 6})
	f.Cleanup(func() { m.Close() })
	ctx := context.Background()
	topics := []string{"a", "b", "c"}
	logs := map[string][]string{}
	var all []string
	for i := range 20 {
		tp := topics[i%2] // c stays empty
		res, err := m.Append(ctx, tp, replay.Batch{Events: []replay.Draft{{Type: "t", Data: []byte(fmt.Sprint(i))}}})
		if err != nil {
			f.Fatal(err)
		}
		logs[tp] = append(logs[tp], res.IDs[0])
		all = append(all, res.IDs[0])
	}
	for _, s := range []replay.Store{m, plainStore{m}} {
		c, err := replay.SubscribeMany(ctx, s, topics, replay.Earliest, replay.GapReplay)
		if err != nil {
			f.Fatal(err)
		}
		for {
			p, _ := c.Next(3)
			for i := range p.Events {
				if p.IDs != nil {
					f.Add(p.IDs[i])
				} else {
					f.Add(p.Events[i].ID)
				}
			}
			if len(p.Events) == 0 && p.Gap == nil {
				break
			}
		}
		f.Add(c.Position())
		c.Close()
	}
	for _, seed := range []string{"", "earliest", "garbage", all[0], all[19] + "0", replay.CompositePrefix, replay.CompositePrefix + "AAAAAAAAAAAA", replay.CompositePrefix + "____", "1-1", "0-0"} {
		f.Add(seed)
	}
	retained := map[string][]string{"a": logs["a"][4:], "b": logs["b"][4:]}
	f.Fuzz(func(t *testing.T, from string) {
		for _, s := range []replay.Store{m, plainStore{m}} {
			for _, onGap := range []replay.GapPolicy{replay.GapReplay, replay.GapLive} {
				c, err := replay.SubscribeMany(ctx, s, topics, from, onGap)
				if err != nil {
					t.Fatalf("SubscribeMany(%q): %v", from, err)
				}
				got := map[string][]string{}
				gaps := 0
				for range 100 {
					p, err := c.Next(4)
					if err != nil {
						t.Fatal(err)
					}
					if g := p.Gap; g != nil {
						gaps++
						switch g.Reason {
						case replay.GapExpired, replay.GapUnknown:
						default:
							t.Fatalf("gap %+v", g)
						}
						if g.Topic != "" && !slices.Contains(topics, g.Topic) {
							t.Fatalf("gap of topic %q", g.Topic)
						}
					}
					for i, e := range p.Events {
						got[p.Topics[i]] = append(got[p.Topics[i]], e.ID)
					}
					if len(p.Events) == 0 && p.Gap == nil {
						break
					}
				}
				c.Close()
				for tp, ids := range got {
					want := retained[tp]
					if len(ids) > len(want) || !slices.Equal(ids, want[len(want)-len(ids):]) {
						t.Fatalf("from %q: topic %s delivered %q, not a tail of %q", from, tp, ids, want)
					}
				}
			}
		}
	})
}
