package redisstore

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// health follows whether Redis answers the main client (what publishing and
// subscribing use), logging each transition once. The tail connections do
// not count: each reconnects on its own schedule after an outage, and
// letting them vote would make the state flap while they catch up.
type health struct {
	log  *zap.Logger
	addr string

	up      atomic.Bool
	outages atomic.Uint64
	lastOK  atomic.Int64 // unix nanoseconds of the last answer

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
	h.lastOK.Store(time.Now().UnixNano())
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

// failGrace is how long after an answer from Redis a failure is not taken
// for an outage. Requests that began before the answer report their
// failure after it, and once every connection of go-redis's pool failed to
// dial, the pool answers with that last dial error, without dialing, until
// its own redial (once a second) succeeds; neither means Redis went away
// again. A real outage still fails the callers at once, and the janitor's
// probe, a second later, records it.
const failGrace = time.Second

// fail records that Redis could not be reached.
func (h *health) fail(err error) {
	if time.Since(time.Unix(0, h.lastOK.Load())) < failGrace {
		return
	}
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
