package replay_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
)

// Both stores describe their topics alike: pages in name order, counts,
// the ends of the log, closed topics and subscribers; File also after a
// restart, when nothing is cached.
func TestInspector(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inspect.db")
	stores := map[string]func() replay.Store{
		"memory": func() replay.Store { return newMemory(t, replay.Config{}) },
		"file":   func() replay.Store { return openFile(t, path, replay.Config{}, nil) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open()
			ctx := context.Background()
			var ids []string
			for i := range 5 {
				res, err := s.Append(ctx, fmt.Sprintf("t/%d", i), replay.Batch{Events: []replay.Draft{{Data: []byte("a")}, {Data: []byte("b")}}})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, res.IDs...)
			}
			if err := s.CloseTopic(ctx, "t/4"); err != nil {
				t.Fatal(err)
			}
			cur, err := s.Subscribe(ctx, "u", "", replay.GapReplay)
			if err != nil {
				t.Fatal(err)
			}
			defer cur.Close()
			check := func(ins replay.Inspector, reopened bool) {
				t.Helper()
				page, err := ins.Topics("t/", "t/1", 2)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) != 2 || page[0].Name != "t/2" || page[1].Name != "t/3" {
					t.Fatalf("page after t/1: %+v", page)
				}
				p := page[0]
				if p.Events != 2 || p.Bytes <= 0 || p.FirstID != ids[4] || p.LastID != ids[5] || p.LastEvent.IsZero() || p.Closed {
					t.Errorf("t/2 described as %+v (ids %v)", p, ids[4:6])
				}
				last, ok, err := ins.Topic("t/4")
				if err != nil || !ok || !last.Closed {
					t.Errorf("t/4: %+v %v %v", last, ok, err)
				}
				if _, ok, _ := ins.Topic("nope"); ok {
					t.Error("an unknown topic is known")
				}
				if !reopened {
					u, ok, _ := ins.Topic("u")
					if !ok || u.Subscribers != 1 || u.Events != 0 || u.LastID != "" {
						t.Errorf("u: %+v", u)
					}
				}
				all, _ := ins.Topics("", "", 0)
				if len(all) < 5 {
					t.Errorf("all topics: %+v", all)
				}
			}
			check(s.(replay.Inspector), false)
			if f, ok := s.(*replay.File); ok {
				cur.Close()
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				check(openFile(t, path, replay.Config{}, nil), true)
			}
		})
	}
}
