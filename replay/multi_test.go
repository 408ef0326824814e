package replay_test

import (
	"path/filepath"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

func TestMemoryMulti(t *testing.T) {
	replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
		m := replay.NewMemory(cfg)
		t.Cleanup(func() { m.Close() })
		return m
	}, true)
}

func TestFileMulti(t *testing.T) {
	replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return openFile(t, filepath.Join(t.TempDir(), "sse.db"), cfg, &replay.FileOptions{CacheEvents: 4, CacheBytes: 1 << 20})
	}, true)
}

// Compose works over any store: here over Memory, hiding its Multi.
func TestComposeMulti(t *testing.T) {
	replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
		m := replay.NewMemory(cfg)
		t.Cleanup(func() { m.Close() })
		return plainStore{m}
	}, false)
}

// plainStore is a store that is not a replay.Multi.
type plainStore struct{ replay.Store }
