package redisstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backoff of a tail connection that cannot reach Redis.
const (
	tailBackoffMin = 50 * time.Millisecond
	tailBackoffMax = 2 * time.Second
)

// tailer follows up to StreamsPerConn topics over one dedicated connection:
// one XREAD BLOCK names all of them. When its set of topics changes while
// it is blocked, CLIENT UNBLOCK (sent from the main pool) makes it ask
// again with the new set.
//
// On Cluster one XREAD can only name keys of one hash slot (even two slots
// of the same master are refused with CROSSSLOT), so a tailer follows the
// topics of one slot, over a connection to the master that owns the slot.
// When that master fails or the slot moves (MOVED, ASK, a dial error), the
// tailer drops the connection, has the cluster client reload its slot map
// and connects to the slot's master anew. Its place is each topic's window
// end, so nothing is skipped or read twice.
type tailer struct {
	s        *Store
	slot     int          // on Cluster; -1 otherwise
	clientID atomic.Int64 // of the connection, for CLIENT UNBLOCK

	clientMu sync.Mutex
	client   *redis.Client // nil on Cluster until connected
	node     *redis.Client // Cluster: the cluster client's pool of that master

	mu     sync.Mutex
	topics map[*topic]struct{}
	gen    atomic.Uint64 // changes of topics; written under mu

	seen   atomic.Uint64 // gen the current XREAD was built from
	inRead atomic.Bool

	idle     chan struct{} // wakes a tailer with no topics
	poke     chan struct{} // wakes the unblocker
	stop     chan struct{}
	stopOnce sync.Once
	stopped  atomic.Bool
}

// follow assigns t to a tail connection. Callers hold a reference to t.
func (s *Store) follow(t *topic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || t.tailer != nil {
		return
	}
	slot := -1
	if s.cluster != nil {
		slot = slotOf(t.keys.log)
	}
	var tl *tailer
	for _, x := range s.tailers {
		if !x.stopped.Load() && x.slot == slot && x.size() < s.opts.StreamsPerConn {
			tl = x
			break
		}
	}
	if tl == nil {
		tl = s.newTailer(slot)
		s.tailers = append(s.tailers, tl)
	}
	t.tailer = tl
	tl.add(t)
}

func (s *Store) newTailer(slot int) *tailer {
	tl := &tailer{
		s:      s,
		slot:   slot,
		topics: make(map[*topic]struct{}),
		idle:   make(chan struct{}, 1),
		poke:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	switch {
	case s.opts.Redis != nil:
		ro := *s.opts.Redis
		tl.dedicate(&ro.PoolSize, &ro.MinIdleConns, &ro.MaxIdleConns, &ro.MaxActiveConns)
		ro.OnConnect = tl.onConnect(ro.OnConnect, false)
		tl.client = redis.NewClient(&ro)
	case s.opts.Sentinel != nil:
		fo := *s.opts.Sentinel
		tl.dedicate(&fo.PoolSize, &fo.MinIdleConns, &fo.MaxIdleConns, &fo.MaxActiveConns)
		fo.PipelinePoolSize = -1
		// The failover client runs OnConnect on its connections to the
		// sentinels too: only the master's id is the one to unblock.
		fo.OnConnect = tl.onConnect(fo.OnConnect, true)
		tl.client = redis.NewFailoverClient(&fo)
	}
	s.wg.Add(2)
	go tl.run()
	go tl.unblocker()
	return tl
}

// dedicate sizes a pool to the one connection a tailer blocks on.
func (tl *tailer) dedicate(size, minIdle, maxIdle, maxActive *int) {
	*size, *minIdle, *maxIdle, *maxActive = 1, 0, 1, 1
}

// onConnect learns the id of the tail connection, for CLIENT UNBLOCK.
func (tl *tailer) onConnect(next func(context.Context, *redis.Conn) error, skipSentinels bool) func(context.Context, *redis.Conn) error {
	return func(ctx context.Context, cn *redis.Conn) error {
		if next != nil {
			if err := next(ctx, cn); err != nil {
				return err
			}
		}
		if skipSentinels {
			// An ACL without ROLE: take the id; at worst a sentinel's
			// id is unblocked in vain and a new topic waits for Block.
			role, err := cn.Do(ctx, "ROLE").Slice()
			if err == nil && len(role) > 0 && role[0] == "sentinel" {
				return nil
			}
		}
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		tl.clientID.Store(id)
		return nil
	}
}

// conn returns the tail connection's client, on Cluster connecting to the
// master that owns the tailer's slot first.
func (tl *tailer) conn(ctx context.Context, key string) (*redis.Client, error) {
	tl.clientMu.Lock()
	defer tl.clientMu.Unlock()
	if tl.client != nil || tl.s.cluster == nil {
		return tl.client, nil
	}
	node, err := tl.s.cluster.MasterForKey(ctx, key)
	if err != nil {
		return nil, err
	}
	ro := *node.Options()
	tl.dedicate(&ro.PoolSize, &ro.MinIdleConns, &ro.MaxIdleConns, &ro.MaxActiveConns)
	ro.PipelinePoolSize = -1
	ro.OnConnect = tl.onConnect(ro.OnConnect, false)
	tl.clientID.Store(0)
	tl.client, tl.node = redis.NewClient(&ro), node
	if tl.stopped.Load() {
		_ = tl.client.Close()
	}
	return tl.client, nil
}

// disconnect drops a Cluster tail connection after an error: the next
// read asks the (reloaded) slot map for the slot's master again.
func (tl *tailer) disconnect() {
	if tl.s.cluster == nil {
		return
	}
	tl.s.cluster.ReloadState(context.Background())
	tl.clientMu.Lock()
	c := tl.client
	tl.client, tl.node = nil, nil
	tl.clientID.Store(0)
	tl.clientMu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// unblockVia is where CLIENT UNBLOCK goes: the master the tail connection
// is on.
func (tl *tailer) unblockVia() redis.Cmdable {
	if tl.s.cluster == nil {
		return tl.s.client
	}
	tl.clientMu.Lock()
	defer tl.clientMu.Unlock()
	if tl.node == nil {
		return nil
	}
	return tl.node
}

func (tl *tailer) size() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.topics)
}

func (tl *tailer) add(t *topic) {
	tl.mu.Lock()
	tl.topics[t] = struct{}{}
	tl.gen.Add(1)
	tl.mu.Unlock()
	tl.changed()
}

// remove stops following t; a tailer left with nothing stops.
func (tl *tailer) remove(t *topic) {
	tl.mu.Lock()
	delete(tl.topics, t)
	tl.gen.Add(1)
	empty := len(tl.topics) == 0
	tl.mu.Unlock()
	if empty {
		tl.shutdown()
		return
	}
	tl.changed()
}

func (tl *tailer) changed() {
	for _, ch := range []chan struct{}{tl.idle, tl.poke} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// shutdown stops the tailer; closing its client interrupts a blocked XREAD.
func (tl *tailer) shutdown() {
	tl.stopOnce.Do(func() {
		tl.stopped.Store(true)
		close(tl.stop)
		tl.clientMu.Lock()
		c := tl.client
		tl.clientMu.Unlock()
		if c != nil {
			_ = c.Close()
		}
	})
}

func (tl *tailer) run() {
	defer tl.s.wg.Done()
	s := tl.s
	var backoff time.Duration
	var streams []string
	byKey := make(map[string]*topic)
	for {
		select {
		case <-tl.stop:
			return
		default:
		}
		tl.mu.Lock()
		gen := tl.gen.Load()
		clear(byKey)
		for t := range tl.topics {
			byKey[t.keys.log] = t
		}
		tl.mu.Unlock()
		tl.seen.Store(gen)
		if len(byKey) == 0 {
			select {
			case <-tl.stop:
				return
			case <-tl.idle:
			}
			continue
		}
		streams = streams[:0]
		ids := make([]string, 0, len(byKey))
		for key, t := range byKey {
			t.mu.Lock()
			end := t.end
			t.mu.Unlock()
			streams = append(streams, key)
			ids = append(ids, end.String())
		}
		streams = append(streams, ids...)

		c, err := tl.conn(context.Background(), streams[0])
		var res []redis.XStream
		if err == nil {
			tl.inRead.Store(true)
			res, err = c.XRead(context.Background(), &redis.XReadArgs{Streams: streams, Count: 512, Block: s.opts.Block}).Result()
			tl.inRead.Store(false)
		}
		if tl.stopped.Load() {
			return
		}
		if errors.Is(err, redis.Nil) {
			backoff = 0
			continue
		}
		if err != nil && strings.HasPrefix(err.Error(), "UNBLOCKED") {
			continue // CLIENT UNBLOCK ... ERROR, or a slot migrating away
		}
		if err != nil {
			// The janitor's probe and the requests judge (and log) the
			// outage; a tail just waits and asks again (on Cluster, of
			// the slot's master as the cluster now says).
			tl.disconnect()
			backoff = min(max(2*backoff, tailBackoffMin), tailBackoffMax)
			timer := time.NewTimer(backoff)
			select {
			case <-tl.stop:
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		backoff = 0
		for _, xs := range res {
			t := byKey[xs.Stream]
			if t == nil {
				continue
			}
			entries := make([]rawEntry, 0, len(xs.Messages))
			for _, m := range xs.Messages {
				if e, ok := parseEntry(m); ok {
					entries = append(entries, e)
				}
			}
			t.syncMu.Lock()
			if t.isLoaded() {
				if lost, at := t.ingest(entries); lost {
					// A failed reload leaves the window as it was; the
					// next entry, Subscribe or the janitor tries again.
					ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
					_, _ = t.reload(ctx, at)
					cancel()
				}
			}
			t.syncMu.Unlock()
		}
	}
}

// unblocker interrupts the tailer's XREAD when its topics changed, so it
// asks again with the new set.
func (tl *tailer) unblocker() {
	defer tl.s.wg.Done()
	timer := time.NewTimer(0)
	<-timer.C
	for {
		select {
		case <-tl.stop:
			return
		case <-tl.poke:
		}
		delay := time.Millisecond
		for tl.seen.Load() < tl.gen.Load() {
			if tl.inRead.Load() {
				if id, via := tl.clientID.Load(), tl.unblockVia(); id != 0 && via != nil {
					ctx, cancel := context.WithTimeout(context.Background(), tl.s.opts.OpTimeout)
					n, err := via.ClientUnblock(ctx, id).Result()
					cancel()
					if err == nil && n == 1 {
						break
					}
				}
			}
			timer.Reset(delay)
			select {
			case <-tl.stop:
				timer.Stop()
				return
			case <-timer.C:
			}
			delay = min(2*delay, 50*time.Millisecond)
		}
	}
}
