package caddysse

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/wire"
)

// StoreProvider is implemented by modules in the http.handlers.sse.stores
// namespace: each gives the handler the replay.Store its topics live in.
type StoreProvider interface {
	Store() replay.Store
}

// stores keeps topic logs alive across config reloads: a reload provisions
// the new handler (taking a reference) before cleaning up the old one, so
// the count never drops to zero and history survives.
var stores = caddy.NewUsagePool()

// acquireStore takes a reference to the store called key, opening it with
// open when no config holds it yet; loaded reports that one did. Every
// store module provisions through it and cleans up with releaseStore.
func acquireStore[T caddy.Destructor](key string, open func() (T, error)) (store T, loaded bool, err error) {
	v, loaded, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		return open()
	})
	if err != nil {
		return store, false, err
	}
	storeLabels.Store(v, key) // the admin API's name for it
	return v.(T), loaded, nil
}

// releaseStore drops a reference taken by acquireStore, and reports whether
// it was the last, which closed the store. An empty key (never acquired)
// is a no-op, so that Cleanup after a failed Provision is safe.
func releaseStore(key string) (closed bool, err error) {
	if key == "" {
		return false, nil
	}
	closed, err = stores.Delete(key)
	if closed {
		storeLabels.Range(func(store, k any) bool {
			if k == key {
				storeLabels.Delete(store)
			}
			return true
		})
	}
	return closed, err
}

// History bounds a topic's log. The oldest events are pruned first when any
// bound is exceeded.
type History struct {
	// Most events retained per topic. Default: 1000.
	Events int `json:"events,omitempty"`
	// Most bytes retained per topic (payload and its encoding). Default:
	// 16MiB.
	Size int64 `json:"size,omitempty"`
	// Events older than this are pruned; a closed topic is remembered (and
	// answers 204) this long. Default: 1h.
	Age caddy.Duration `json:"age,omitempty"`
}

func (h *Handler) storeConfig() replay.Config {
	cfg := replay.Config{
		MaxEvents:              h.History.Events,
		MaxBytes:               h.History.Size,
		MaxAge:                 time.Duration(h.History.Age),
		MaxTopics:              h.Limits.Topics,
		MaxSubscribersPerTopic: h.Limits.SubscribersPerTopic,
		Framer:                 wire.EncodeEvent,
		Encodings:              len(h.Compress),
	}
	logger := h.logger
	cfg.OnUnreadable = func(topic, id string, err error) {
		// Once per damaged record: its readers get a reset (reason
		// unreadable) and continue after it.
		metrics.unreadable.Inc()
		logger.Error("stored event cannot be read; subscribers skip it with a reset", zap.String("topic", topic), zap.String("id", id), zap.Error(err))
	}
	if h.Publish != nil {
		cfg.DedupWindow = time.Duration(h.Publish.DedupWindow)
	}
	return cfg.WithDefaults()
}

// pooled is implemented by the store modules, which share their store
// under a key (see acquireStore) and say so in the log when it closes.
type pooled interface {
	poolKey() string
	logClosed()
}

// holdStore takes the handler's own reference to the store mod shares.
// Caddy cleans up a config's modules in the order they were provisioned,
// so the store module (provisioned inside the handler's Provision) lets go
// of the store before the handler stops its sources and streams; without
// a reference of its own the handler's sources would find the store
// closed under them at every unload (a source's lease "lost", appends
// refused). releaseStore, at the end of Cleanup, drops it.
func (h *Handler) holdStore(mod any) error {
	p, ok := mod.(pooled)
	if !ok || p.poolKey() == "" {
		return nil
	}
	key := p.poolKey()
	if _, _, err := acquireStore(key, func() (caddy.Destructor, error) {
		return nil, fmt.Errorf("sse store %s is not open", storeLabel(h))
	}); err != nil {
		return err
	}
	h.storeRef, h.storeMod = key, p
	return nil
}

// releaseStore drops the handler's reference to its store, closing it if
// it was the last.
func (h *Handler) releaseStore() {
	if h.storeRef == "" {
		return
	}
	label := storeLabel(h) // before the last release forgets it
	closed, err := releaseStore(h.storeRef)
	h.storeRef = ""
	if err != nil && h.logger != nil {
		h.logger.Error("closing sse store", zap.String("store", label), zap.Error(err))
	}
	if closed {
		h.storeMod.logClosed()
	}
}
