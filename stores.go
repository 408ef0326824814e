package caddysse

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssegate/caddy-sse/replay"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
}

// StoreProvider is implemented by modules in the http.handlers.sse.stores
// namespace: each gives the handler the replay.Store its topics live in.
type StoreProvider interface {
	Store() replay.Store
}

// stores keeps topic logs alive across config reloads: a reload provisions
// the new handler (taking a reference) before cleaning up the old one, so
// the count never drops to zero and history survives.
var stores = caddy.NewUsagePool()

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
	v, _, err := stores.LoadOrNew(m.key, func() (caddy.Destructor, error) {
		// The handler configures the real bounds right after; until then
		// the defaults hold, and nothing is appended before that.
		return replay.NewMemory(replay.Config{}), nil
	})
	if err != nil {
		return fmt.Errorf("opening memory store %q: %w", m.Name, err)
	}
	m.store = v.(*replay.Memory)
	return nil
}

// Cleanup drops the reference; the last one closes the store.
func (m *MemoryStore) Cleanup() error {
	if m.key == "" {
		return nil
	}
	_, err := stores.Delete(m.key)
	return err
}

// Store implements StoreProvider.
func (m *MemoryStore) Store() replay.Store { return m.store }

// Interface guards
var (
	_ caddy.Provisioner  = (*MemoryStore)(nil)
	_ caddy.CleanerUpper = (*MemoryStore)(nil)
	_ StoreProvider      = (*MemoryStore)(nil)
)
