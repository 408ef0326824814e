package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

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
	opts := redisstore.Options{
		Redis:  ropts,
		Prefix: fmt.Sprintf("t%d:", prefixes.Add(1)),
		Logger: zaptest.NewLogger(t),
		Linger: 300 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&opts)
	}
	if cfg.Framer == nil {
		cfg.Framer = replaytest.Framer
	}
	s, err := redisstore.New(context.Background(), opts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
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
