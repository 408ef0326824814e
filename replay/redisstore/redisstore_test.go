package redisstore_test

import (
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

var prefixes atomic.Int64

// newStore opens a store on srv under a key prefix no other store of this
// test process uses, closed when t ends.
func newStore(t testing.TB, srv *redistest.Server, cfg replay.Config, tweak ...func(*redisstore.Options)) *redisstore.Store {
	t.Helper()
	ropts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	return openStore(t, func(o *redisstore.Options) { o.Redis = ropts }, cfg, tweak...)
}

// prefixOf makes a store share s's keys: another node of the same cluster.
func prefixOf(s *redisstore.Store) func(*redisstore.Options) {
	return func(o *redisstore.Options) { o.Prefix = s.Prefix() }
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return newStore(t, srv, cfg)
	})
}
