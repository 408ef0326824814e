package redisstore

import (
	"context"
	"errors"
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
type tailer struct {
	s        *Store
	client   *redis.Client
	clientID atomic.Int64 // of the connection, for CLIENT UNBLOCK

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
	var tl *tailer
	for _, x := range s.tailers {
		if !x.stopped.Load() && x.size() < s.opts.StreamsPerConn {
			tl = x
			break
		}
	}
	if tl == nil {
		tl = s.newTailer()
		s.tailers = append(s.tailers, tl)
	}
	t.tailer = tl
	tl.add(t)
}

func (s *Store) newTailer() *tailer {
	tl := &tailer{
		s:      s,
		topics: make(map[*topic]struct{}),
		idle:   make(chan struct{}, 1),
		poke:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	ro := *s.opts.Redis
	ro.PoolSize = 1
	ro.MinIdleConns = 0
	ro.MaxIdleConns = 1
	ro.MaxActiveConns = 1
	onConnect := ro.OnConnect
	ro.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if onConnect != nil {
			if err := onConnect(ctx, cn); err != nil {
				return err
			}
		}
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		tl.clientID.Store(id)
		return nil
	}
	tl.client = redis.NewClient(&ro)
	s.wg.Add(2)
	go tl.run()
	go tl.unblocker()
	return tl
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
		_ = tl.client.Close()
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

		tl.inRead.Store(true)
		res, err := tl.client.XRead(context.Background(), &redis.XReadArgs{Streams: streams, Count: 512, Block: s.opts.Block}).Result()
		tl.inRead.Store(false)
		if tl.stopped.Load() {
			return
		}
		if errors.Is(err, redis.Nil) {
			backoff = 0
			continue
		}
		if err != nil {
			// The janitor's probe and the requests judge (and log) the
			// outage; a tail just waits and asks again.
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
				if id := tl.clientID.Load(); id != 0 {
					ctx, cancel := context.WithTimeout(context.Background(), tl.s.opts.OpTimeout)
					n, err := tl.s.client.ClientUnblock(ctx, id).Result()
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
