package redisstore

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// health follows whether Redis answers, logging each transition once.
type health struct {
	log  *zap.Logger
	addr string

	up      atomic.Bool
	outages atomic.Uint64

	mu    sync.Mutex
	down  bool
	since time.Time
}

func (h *health) init(log *zap.Logger, addr string) {
	h.log, h.addr = log, addr
	h.up.Store(true)
}

// ok records an answer from Redis.
func (h *health) ok() {
	if h.up.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		return
	}
	h.down = false
	h.up.Store(true)
	h.log.Info("redis reachable again", zap.String("addr", h.addr), zap.Duration("outage", time.Since(h.since).Round(time.Millisecond)))
}

// fail records that Redis could not be reached.
func (h *health) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return
	}
	h.down = true
	h.since = time.Now()
	h.up.Store(false)
	h.outages.Add(1)
	h.log.Warn("redis unreachable: publishing answers 503, subscribers wait", zap.String("addr", h.addr), zap.Error(err))
}
