package stream

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// parking holds one lot per topic that has parked streams.
type parking struct {
	stop context.Context
	mu   sync.Mutex
	lots map[string]*lot
}

// newParking makes the parking of a server whose streams end (after their
// Drain delay) when stop is done.
func newParking(stop context.Context) *parking {
	pk := &parking{stop: stop, lots: make(map[string]*lot)}
	context.AfterFunc(stop, func() {
		pk.mu.Lock()
		defer pk.mu.Unlock()
		for _, l := range pk.lots {
			l.poke()
		}
	})
	return pk
}

// lot parks the streams of one topic; its driver goroutine runs while any
// stream is parked, except while it sleeps (see sleep): then what it waits
// for calls it back, and it holds no goroutine.
type lot struct {
	parking *parking
	key     string
	refs    int // streams attached, parked or not; guarded by parking.mu

	mu      sync.Mutex
	parked  map[*parkedStream]struct{}
	wait    <-chan struct{} // the log change the driver waits for
	running bool            // a driver goroutine runs (not while asleep)
	wake    chan struct{}
	// alarm wakes a sleeping lot when its next heartbeat, drain or expiry
	// is due; made by its first sleep.
	alarm *time.Timer
	// batch is the driver's, kept across its sleeps so that a wake-up
	// does not allocate it again; only the running driver touches it (the
	// next one starts after the last one slept, under mu).
	batch []*parkedStream
	// wakeAt is when the sleeping driver's timer fires (zero while a round
	// runs), and expiring the earliest credential expiry among the streams
	// parked since the running round took its batch (zero: none). A stream
	// parked with an expiry before the driver would wake pokes it (see
	// park); one parked during a round has its expiry folded into the
	// driver's next wake-up.
	wakeAt   time.Time
	expiring time.Time
}

func (pk *parking) acquire(key string) *lot {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	l := pk.lots[key]
	if l == nil {
		l = &lot{parking: pk, key: key, parked: make(map[*parkedStream]struct{}), wake: make(chan struct{}, 1)}
		pk.lots[key] = l
	}
	l.refs++
	return l
}

func (pk *parking) release(l *lot) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(pk.lots, l.key)
	}
}

func (l *lot) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
	// After the token: a driver deciding to sleep sees it, or has slept
	// and is started here.
	l.resume()
}

// resume starts the driver of a sleeping lot (see sleep). A late call
// (the lot was woken otherwise, or is empty) does nothing, or costs one
// round.
func (l *lot) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running || len(l.parked) == 0 {
		return
	}
	l.running = true
	if l.alarm != nil {
		l.alarm.Stop()
	}
	go l.drive()
}

// sleep ends the driver instead of blocking it while the lot waits, when
// the streams' cursors can call it back once wait closes (replay.Notifier:
// multi-topic cursors, one lot per set of topics, where lots are as many
// as streams when no two streams share a set; and Redis cursors, whose
// topics' windows call back). The alarm wakes it at next.
// It reports false, the driver then waiting as usual, when it cannot or
// when something is to be done at once.
func (l *lot) sleep(wait <-chan struct{}, next time.Time, nf replay.Notifier) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.wake) > 0 || len(l.parked) == 0 {
		return false // poked meanwhile: the driver's select takes it
	}
	if !nf.Notify(wait, l, l.resume) {
		return false // changed meanwhile: wait is closed
	}
	if l.alarm == nil {
		l.alarm = time.AfterFunc(time.Until(next), l.resume)
	} else {
		l.alarm.Reset(time.Until(next))
	}
	l.running = false
	return true
}

// parkedStream is one detached stream served through a lot.
type parkedStream struct {
	d    takenConn
	cur  replay.Cursor
	s    *subscriber
	lot  *lot
	done func(Stats, error)

	gone atomic.Bool // the client hung up
	// kicked holds the reason given to Server.Disconnect, once it is.
	kicked  atomic.Pointer[string]
	drainAt time.Time // once the server is stopping; owned like s
}

// newStream makes a detached stream that canPark, to be served through the
// lot of topic key once started (see start); done is called once, from
// whichever goroutine ends the stream, with what it delivered and why it
// ended.
func (pk *parking) newStream(key string, d takenConn, cur replay.Cursor, opts Options, done func(Stats, error)) *parkedStream {
	ps := &parkedStream{d: d, cur: cur, lot: pk.acquire(key), done: done}
	ps.s = newSubscriber(d, opts)
	return ps
}

// start serves the stream; it returns at once.
func (ps *parkedStream) start() {
	ps.d.watch(func() {
		ps.gone.Store(true)
		ps.lot.poke()
	})
	go ps.serveOwn(true, nil)
}

// serveOwn is the stream's own goroutine: it writes what is pending (bytes, and
// a page the driver read but left to it), catches up and parks the stream,
// or ends it.
func (ps *parkedStream) serveOwn(opening bool, page *replay.Page) {
	d, s := ps.d, ps.s
	s.deadline = time.Time{} // set a real deadline on the next write
	if err := d.unpark(time.Now().Add(s.opts.WriteTimeout)); err != nil {
		ps.end(err)
		return
	}
	if opening {
		if err := s.open(); err != nil {
			ps.end(err)
			return
		}
	}
	for {
		if ps.gone.Load() {
			ps.end(ErrClientGone)
			return
		}
		if reason := ps.kicked.Load(); reason != nil {
			ps.end(s.disconnect(*reason))
			return
		}
		if ps.stopDue() {
			ps.end(s.end())
			return
		}
		if !s.opts.Expires.IsZero() && s.opts.expiredAt(time.Now()) {
			ps.end(s.expire())
			return
		}
		if page == nil {
			p, err := ps.cur.Next(s.opts.MaxBatch)
			if err != nil {
				ps.end(s.storeFailed(err))
				return
			}
			page = &p
		}
		if !deliverable(page) {
			d.park()
			ps.lot.park(ps, page.Wait)
			return
		}
		if err := s.deliver(*page); err != nil {
			ps.end(err)
			return
		}
		if page.Closed {
			ps.end(ErrTopicClosed)
			return
		}
		page = nil
	}
}

func ptr[T any](v T) *T { return &v }

// stopDue reports whether a stream that is busy in its own goroutine (never
// caught up, so never parked) must end now: the server is stopping and the
// stream's drain delay has passed.
func (ps *parkedStream) stopDue() bool {
	if ps.lot.parking.stop.Err() == nil {
		return false
	}
	if ps.drainAt.IsZero() {
		ps.drainAt = time.Now().Add(ps.s.opts.drainDelay())
	}
	return !time.Now().Before(ps.drainAt)
}

// fail ends the stream after its store failed.
func (ps *parkedStream) fail(err error) { ps.end(ps.s.storeFailed(err)) }

// end ends the stream: the connection closed (see detached.close), the
// lot released, done called.
func (ps *parkedStream) end(err error) {
	ps.d.close(err)
	ps.lot.parking.release(ps.lot)
	ps.done(ps.s.stats, err)
}

// park hands a caught-up stream to the lot. wait is what its last read
// returned: when it is not what the driver waits for, the stream may have
// missed a change, so the driver looks again at once.
func (l *lot) park(ps *parkedStream, wait <-chan struct{}) {
	l.mu.Lock()
	l.parked[ps] = struct{}{}
	// A stream parked after the stop must still be drained on time, and one
	// whose credential expires before the driver wakes must end on time.
	stale := wait != l.wait || l.parking.stop.Err() != nil
	if exp := ps.s.opts.Expires; !exp.IsZero() {
		l.expiring = earliestSet(l.expiring, exp)
		if !l.wakeAt.IsZero() && exp.Before(l.wakeAt) {
			stale = true
		}
	}
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if start {
		go l.drive()
	} else if stale {
		l.poke()
	}
}

// drive is the lot's goroutine, alive while streams are parked.
func (l *lot) drive() {
	var timer *time.Timer // made when first waited on: a lot that sleeps needs none
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	batch := l.batch
	for {
		l.mu.Lock()
		if len(l.parked) == 0 {
			l.running = false
			l.wait = nil
			l.batch = nil
			if l.alarm != nil {
				l.alarm.Stop()
			}
			l.mu.Unlock()
			return
		}
		batch = batch[:0]
		for ps := range l.parked {
			batch = append(batch, ps)
		}
		l.wakeAt, l.expiring = time.Time{}, time.Time{}
		l.mu.Unlock()

		wait, next, again := l.roundParallel(batch)
		var nf replay.Notifier
		if len(batch) > 0 {
			// Every cursor of a lot waits on the same thing (see
			// Server.Serve's key), so any of them can notify.
			nf, _ = batch[0].cur.(replay.Notifier)
		}
		clear(batch)

		l.mu.Lock()
		l.wait = wait
		empty := len(l.parked) == 0
		if !again && !empty {
			next = earliestSet(next, l.expiring)
			l.wakeAt = next
		}
		l.mu.Unlock()
		if again || empty {
			continue // an empty lot ends at the top of the loop
		}
		if nf != nil && wait != nil {
			// Handed over before sleep: once asleep, a wake-up may start
			// the next driver at once.
			l.batch = batch
			if l.sleep(wait, next, nf) {
				return
			}
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(next))
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-wait:
		case <-l.wake:
		case <-timer.C:
		}
	}
}

// shardSize is how many parked streams one goroutine serves in a round: a
// topic with more subscribers spreads each round over the cores, since a
// round is mostly one write system call per stream.
const shardSize = 512

// roundParallel is round over shards of batch, run side by side when the
// topic is large and there are cores to use.
func (l *lot) roundParallel(batch []*parkedStream) (wait <-chan struct{}, next time.Time, again bool) {
	shards := min(runtime.GOMAXPROCS(0), (len(batch)+shardSize-1)/shardSize)
	if shards <= 1 {
		return l.round(batch)
	}
	type result struct {
		wait  <-chan struct{}
		next  time.Time
		again bool
	}
	results := make([]result, shards)
	var wg sync.WaitGroup
	per := (len(batch) + shards - 1) / shards
	for i := range shards {
		part := batch[i*per : min(len(batch), (i+1)*per)]
		wg.Go(func() {
			r := &results[i]
			r.wait, r.next, r.again = l.round(part)
		})
	}
	wg.Wait()
	wait, next, again = results[0].wait, results[0].next, results[0].again
	for _, r := range results[1:] {
		next = earliest(next, r.next)
		again = again || r.again
		switch {
		case wait == nil:
			wait = r.wait
		case r.wait != nil && r.wait != wait:
			again = true // the log changed during this round
		}
	}
	return wait, next, again
}

// round serves every parked stream once: new events, heartbeats due,
// hang-ups, stops and expired credentials. It returns the log change to
// wait for, when the next heartbeat, drain or expiry is due, and whether to
// look again at once.
func (l *lot) round(batch []*parkedStream) (wait <-chan struct{}, next time.Time, again bool) {
	now := time.Now()
	next = now.Add(time.Hour)
	beat := next // the next heartbeat due, woken for in bulk
	unpark := func(ps *parkedStream) {
		l.mu.Lock()
		delete(l.parked, ps)
		l.mu.Unlock()
	}
	for _, ps := range batch {
		s := ps.s
		if ps.gone.Load() {
			unpark(ps)
			ps.end(ErrClientGone)
			continue
		}
		if ps.stopDue() || ps.kicked.Load() != nil {
			unpark(ps)
			go ps.serveOwn(false, nil)
			continue
		}
		if !ps.drainAt.IsZero() {
			next = earliest(next, ps.drainAt)
		}
		if exp := s.opts.Expires; !exp.IsZero() {
			if !now.Before(exp) {
				// The expired event and the end go through the stream's
				// own goroutine, which can wait for the socket.
				unpark(ps)
				go ps.serveOwn(false, nil)
				continue
			}
			next = earliest(next, exp)
		}
		page, err := ps.cur.Next(s.opts.MaxBatch)
		switch {
		case err != nil:
			unpark(ps)
			go ps.fail(err)
			continue
		case page.Gap != nil, page.Closed, len(page.ClosedTopics) > 0:
			// Rare and possibly long: the stream's own goroutine
			// delivers the page. (A copy, so that page itself does not
			// escape and cost an allocation per delivery.)
			unpark(ps)
			go ps.serveOwn(false, ptr(page))
			continue
		case len(page.Events) > 0:
			err = s.deliver(page)
		default:
			if wait == nil {
				wait = page.Wait
			} else if page.Wait != wait {
				again = true // the log changed during this round
			}
			if h := s.opts.Heartbeat; h > 0 {
				// Heartbeats go out in bulk: every stream silent for
				// 7/8 of the period gets one, and the driver wakes at
				// most 8 times a period for them, so that streams
				// opened at different moments do not each cost a round.
				if due := s.lastWrite.Add(h - h/8); !now.Before(due) {
					if ps.d.gone() {
						err = ErrClientGone
					} else {
						err = s.writeHeartbeat()
					}
				} else {
					beat = earliest(beat, due)
				}
			}
		}
		switch {
		case err != nil:
			unpark(ps)
			ps.end(err)
		case ps.d.hasPending():
			unpark(ps)
			go ps.serveOwn(false, nil)
		case len(page.Events) > 0:
			again = true // more may be pending beyond this batch
		}
	}
	if h := minHeartbeat(batch); h > 0 {
		beat = earliest(beat, now.Add(h))
		if floor := now.Add(h / 8); beat.Before(floor) {
			beat = floor
		}
	}
	return wait, earliest(next, beat), again
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// earliestSet is earliest where the zero time means none.
func earliestSet(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// minHeartbeat bounds the driver's sleep so that streams parked during a
// round get their heartbeat in time.
func minHeartbeat(batch []*parkedStream) time.Duration {
	var h time.Duration
	for _, ps := range batch {
		if d := ps.s.opts.Heartbeat; d > 0 && (h == 0 || d < h) {
			h = d
		}
	}
	return h
}
