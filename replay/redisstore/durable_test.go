package redisstore_test

import (
	"testing"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// What a client resumes with outlives a node: each reopen is the node
// restarting, its store closed and a new one opened on the same keys, with
// no window of anything.
func TestConformanceAcrossRestarts(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	replaytest.RunDurable(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
		cur := newStore(t, srv, cfg)
		return cur, func() replay.Store {
			old := cur
			old.Close()
			cur = newStore(t, srv, cfg, prefixOf(old))
			return cur
		}
	})
}
