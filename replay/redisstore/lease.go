package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// lease is this node's hold on a named lease.
type lease struct {
	s              *Store
	name           string
	key, cursorKey string
	fenceKey       string
	token          string
	// fence is the fencing token Redis handed out with this hold: higher
	// than any earlier holder's.
	fence int64
	ttl   time.Duration
	// validUntil (unix ns) is the lease's expiry as of the last answer
	// from Redis that confirmed it, reckoned from when it was asked.
	validUntil       atomic.Int64
	lost, stop, done chan struct{}
	lostOnce         sync.Once
	releaseOnce      sync.Once

	mu     sync.Mutex
	cursor string
}

func (s *Store) leaseKeys(name string) (key, cursorKey, fenceKey string) {
	key = s.opts.Prefix + "lease:{" + hashTag(name) + "}"
	return key, key + ":cursor", key + ":fence"
}

// Lease implements replay.Shared: it polls every fifth of the lease time
// until the lease is free, or ctx ends.
func (s *Store) Lease(ctx context.Context, name string) (replay.Lease, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	l := &lease{
		s:     s,
		name:  name,
		token: hex.EncodeToString(b[:]),
		ttl:   s.opts.LeaseTTL,
		lost:  make(chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.key, l.cursorKey, l.fenceKey = s.leaseKeys(name)
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, replay.ErrStoreClosed
		case <-poll.C:
		}
		if s.closed.Load() {
			return nil, replay.ErrStoreClosed
		}
		sent := time.Now()
		octx, cancel := s.opCtx(ctx)
		res, err := acquireScript.Run(octx, s.client, []string{l.key, l.cursorKey, l.fenceKey}, l.token, l.ttl.Milliseconds()).Slice()
		if err != nil {
			_ = s.fail(octx, err)
		}
		cancel()
		if err == nil {
			s.health.ok()
			if n, _ := res[0].(int64); n == 1 {
				if len(res) > 2 {
					l.cursor, _ = res[1].(string)
					l.fence, _ = res[2].(int64)
				}
				l.confirmed(sent)
				s.mu.Lock()
				if s.closed.Load() {
					s.mu.Unlock()
					l.markLost()
					close(l.done)
					l.releaseInRedis()
					return nil, replay.ErrStoreClosed
				}
				s.leases[l] = struct{}{}
				s.wg.Add(1)
				s.mu.Unlock()
				go l.renew(sent)
				return l, nil
			}
		}
		poll.Reset(l.ttl / 5)
	}
}

// renew extends the lease every third of its time until it is released or
// lost.
func (l *lease) renew(lastOK time.Time) {
	defer l.s.wg.Done()
	defer close(l.done)
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.lost:
			return
		case <-l.s.done:
			return
		case <-tick.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), min(l.ttl/3, l.s.opts.OpTimeout))
		n, err := renewScript.Run(ctx, l.s.client, []string{l.key}, l.token, l.ttl.Milliseconds()).Int()
		if err != nil {
			_ = l.s.fail(ctx, err)
		}
		cancel()
		switch {
		case err == nil && n == 1:
			l.s.health.ok()
			lastOK = sent
			l.confirmed(sent)
		case err == nil:
			l.s.health.ok()
			l.markLost() // expired, and maybe someone else holds it
			return
		case time.Since(lastOK) >= l.ttl:
			l.markLost() // it has expired in Redis by now
			return
		}
	}
}

// confirmed records that Redis confirmed the hold, asked at sent.
func (l *lease) confirmed(sent time.Time) {
	l.validUntil.Store(sent.Add(l.ttl).UnixNano())
}

// valid reports whether the lease cannot have expired in Redis yet.
func (l *lease) valid() bool {
	return time.Now().UnixNano() < l.validUntil.Load()
}

// fenceArg is the fencing token as a script argument.
func (l *lease) fenceArg() string { return strconv.FormatInt(l.fence, 10) }

// recordCursor stores the upstream position reached by a fenced append,
// for the next holder, unless another holder has the lease by now.
func (l *lease) recordCursor(ctx context.Context, cursor string) {
	n, err := cursorScript.Run(ctx, l.s.client, []string{l.key, l.cursorKey}, l.token, cursor).Int()
	if err != nil {
		// The append went in; a later one records its cursor, and a
		// new holder resuming from an older one finds the lines it
		// reads again already appended (their idempotency keys).
		_ = l.s.fail(ctx, err)
		return
	}
	if n == 0 {
		l.markLost()
	}
}

func (l *lease) markLost() {
	l.lostOnce.Do(func() { close(l.lost) })
}

func (l *lease) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// Lost implements replay.Lease.
func (l *lease) Lost() <-chan struct{} { return l.lost }

// Cursor implements replay.Lease.
func (l *lease) Cursor() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cursor
}

func (l *lease) setCursor(c string) {
	l.mu.Lock()
	l.cursor = c
	l.mu.Unlock()
}

// Release implements replay.Lease.
func (l *lease) Release() {
	l.releaseOnce.Do(func() {
		close(l.stop)
		<-l.done
		wasLost := l.isLost()
		l.markLost()
		if !wasLost {
			l.releaseInRedis()
		}
		l.s.mu.Lock()
		delete(l.s.leases, l)
		l.s.mu.Unlock()
	})
}

func (l *lease) releaseInRedis() {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.OpTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, l.s.client, []string{l.key}, l.token).Err(); err != nil {
		_ = l.s.fail(ctx, err)
	}
}

var _ replay.Lease = (*lease)(nil)
