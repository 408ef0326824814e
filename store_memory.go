package caddysse

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ssegate/caddy-sse/replay"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
}

// MemoryStore keeps topic logs in this process's memory: the default, with
// no setup. History survives config reloads but not a restart; after a
// restart, ids from before are answered with a reset event.
type MemoryStore struct {
	// Handlers whose store has the same name share topics. Give each site
	// its own name to keep same-named topics apart. The history bounds of
	// the handler provisioned last apply to the whole store. Default:
	// `default`.
	Name string `json:"name,omitempty"`

	store *replay.Memory
	key   string
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// Provision takes a reference to the named store, creating it the first
// time.
func (m *MemoryStore) Provision(caddy.Context) error {
	if m.Name == "" {
		m.Name = "default"
	}
	m.key = "memory:" + m.Name
	store, _, err := acquireStore(m.key, func() (*replay.Memory, error) {
		// The handler configures the real bounds right after; until then
		// the defaults hold, and nothing is appended before that.
		return replay.NewMemory(replay.Config{}), nil
	})
	if err != nil {
		return fmt.Errorf("opening memory store %q: %w", m.Name, err)
	}
	m.store = store
	return nil
}

// Cleanup drops the reference; the last one closes the store.
func (m *MemoryStore) Cleanup() error {
	_, err := releaseStore(m.key)
	m.key = ""
	return err
}

// Store implements StoreProvider.
func (m *MemoryStore) Store() replay.Store { return m.store }

// UnmarshalCaddyfile sets up the memory store. Syntax:
//
//	store memory [<name>]
func (m *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if d.NextArg() {
		m.Name = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// logClosed says nothing: a memory store's end is its config's.
func (m *MemoryStore) logClosed() {}

// poolKey is the key the store is shared under (see Handler.holdStore).
func (m *MemoryStore) poolKey() string { return m.key }

// Interface guards
// Interface guards
var (
	_ caddy.Provisioner     = (*MemoryStore)(nil)
	_ caddy.CleanerUpper    = (*MemoryStore)(nil)
	_ StoreProvider         = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
)
