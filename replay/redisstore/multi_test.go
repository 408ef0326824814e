package redisstore_test

import (
	"testing"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// Redis ids are per topic: a multi-topic cursor is a composite one.
func TestMulti(t *testing.T) {
	srv := redistest.Start(t)
	replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return newStore(t, srv, cfg)
	}, false)
}
