// Package redisstore is a replay.Store kept in Redis Streams, shared by every
// Caddy node that points at the same Redis and key prefix: a topic is one
// stream, an event id is the stream entry id Redis assigned (<ms>-<seq>), so
// a client can resume on any node with an id any node gave it.
//
// # Key layout
//
// Every key of one topic carries the topic as a hash tag, so on Redis
// Cluster a topic lives in one slot and each script below touches one slot.
// A topic that is empty, contains a brace or starts with "~" is written in
// the tag as "~" and its hex encoding. With the default prefix "sse:":
//
//	sse:{<topic>}:log          stream: the events. Fields t (type), d (data),
//	                           p (id of the entry before it), c (bytes it is
//	                           charged against the history size bound);
//	                           the close marker entry has x and p instead.
//	sse:{<topic>}:meta         hash: last (id of the newest entry), floor
//	                           (newest id trimmed away), bytes (sum of c
//	                           retained), closed (id of the close marker).
//	sse:{<topic>}:dedup        hash: idempotency key -> "<ms> <id> <id>…",
//	                           the ids of the batch first appended with it.
//	sse:{<topic>}:dedup:order  sorted set: the same keys, oldest first.
//	sse:topics                 sorted set: topic -> until when it counts
//	                           against the topic limit (ms).
//	sse:lease:{<name>}         string: the token of the lease's holder.
//	sse:lease:{<name>}:cursor  string: the upstream position recorded by the
//	                           last fenced append.
//
// The log and meta of a topic expire when nothing has been appended for the
// history age (nodes with subscribers keep them alive); the dedup keys when
// no keyed batch came for the dedup window.
//
// # Appending
//
// A batch is one Lua script: it refuses a closed topic, answers a repeated
// idempotency key with the first ids, XADDs the events, trims, and records
// the key; the publisher is answered only after Redis ran it. Trimming
// happens there, on append: oldest entries first, exactly to the bounds
// (events, age from the id's time, and bytes) — not with the approximate
// MAXLEN ~, because a topic's history must be the same whichever node reads
// it, so XLEN never exceeds the event bound. The byte bound is approximate
// in one way: it counts, per event, what the event costs in a node's memory
// (data, frame, reserved compressed copies) as the appending node computes
// it with its Framer before Redis has assigned the id (an id of typical
// length stands in), and that number is stored in the entry (c) so every
// node and Redis agree on it. Configure changes the bounds at once for what
// this node reads; Redis is trimmed to them on each topic's next append.
//
// # Reading
//
// A node tails only the topics it has subscribers for. It loads a topic's
// retained history once (one XREVRANGE), then follows it with XREAD BLOCK:
// a few dedicated connections, each following up to StreamsPerConn topics
// in one XREAD. What arrives is framed once into a window per topic that all
// local cursors share, so Next never touches the network. The window holds
// the topic's whole retained history (as the memory store would: the
// history bounds are its size), so a cursor before its start has missed
// events and gets an expired gap; a resume anywhere in the history is read
// from memory. Every entry names
// the entry before it, so a window notices entries trimmed before it read
// them (a slow or disconnected node) and its cursors get an expired gap
// instead of a silent hole. The node's own appends enter its window before
// Append returns. A topic without local subscribers is dropped after
// Options.Linger.
//
// # Outages
//
// When Redis cannot be reached, Append, CloseTopic and Subscribe fail at
// once with an error wrapping replay.ErrUnavailable, and nothing is
// acknowledged that Redis did not store (a timed-out append may still have
// been stored: the publisher's retry with the same idempotency key is then a
// duplicate). Open cursors stay open, and continue from their position when
// the tail connections are back (they reconnect with capped backoff). The
// first failure and the recovery are logged once each; Up and Outages report
// the state.
//
// # Leases
//
// Shared.Lease takes "SET NX PX" on the lease key, renews it every third of
// its time with a compare-and-PEXPIRE script and declares it lost when a
// renewal finds another holder or renewals failed for a whole lease time. A
// fenced append checks the token in the same script that appends and records
// the batch's cursor. The lease keys are in another hash slot than the
// topic's, so fenced appends need standalone Redis or Sentinel; on Redis
// Cluster they would fail with CROSSSLOT. (The store itself takes one
// server's client options: Sentinel and Cluster clients are not wired up
// yet. The rest of the key layout is Cluster-ready, though one XREAD can
// only name streams of one slot there.)
package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
)

// Options configure a Store.
type Options struct {
	// Redis is the client configuration, typically from redis.ParseURL.
	// Required. Unset timeouts get short defaults (dial 1s, read and write
	// 2s) so that an unreachable Redis fails requests fast; retries are
	// turned off, since retrying an append could store it twice.
	Redis *redis.Options
	// Prefix of every key. Default "sse:". It must not contain braces.
	Prefix string
	// Logger for outages and failures. Default: none.
	Logger *zap.Logger
	// StreamsPerConn is how many topics one tail connection follows.
	// Default 256.
	StreamsPerConn int
	// Block is how long one XREAD waits for news. Default 5s.
	Block time.Duration
	// Linger is how long a topic is still tailed after its last local
	// subscriber left. Default 5s.
	Linger time.Duration
	// LeaseTTL is how long a lease lasts without renewal. Default 10s.
	LeaseTTL time.Duration
	// OpTimeout bounds each Append, CloseTopic and Subscribe. Default 3s.
	OpTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultPrefix         = "sse:"
	DefaultStreamsPerConn = 256
	DefaultBlock          = 5 * time.Second
	DefaultLinger         = 5 * time.Second
	DefaultLeaseTTL       = 10 * time.Second
	DefaultOpTimeout      = 3 * time.Second
)

// subscribeRegistration is how long a topic that was only subscribed to
// counts against the topic limit; nodes tailing it renew that.
const subscribeRegistration = time.Minute

// Store is a replay.Store and replay.Shared kept in Redis.
type Store struct {
	opts     Options
	client   *redis.Client
	log      *zap.Logger
	registry string

	cfg    atomic.Pointer[replay.Config]
	closed atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	topics  map[string]*topic
	tailers []*tailer
	leases  map[*lease]struct{}

	regMu sync.Mutex
	reg   map[string]time.Time // topics registered by this node, until when

	health health
}

// New returns a store on the Redis opts.Redis names. It does not wait for
// Redis: a store made while Redis is down answers ErrUnavailable until it
// is back. ctx bounds the first PING, whose result is only logged.
func New(ctx context.Context, opts Options, cfg replay.Config) (*Store, error) {
	if opts.Redis == nil {
		return nil, errors.New("redisstore: no Redis options")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains a brace, which would change the hash slot of every key", opts.Prefix)
	}
	if opts.StreamsPerConn <= 0 {
		opts.StreamsPerConn = DefaultStreamsPerConn
	}
	if opts.Block <= 0 {
		opts.Block = DefaultBlock
	}
	if opts.Linger <= 0 {
		opts.Linger = DefaultLinger
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	ro := *opts.Redis
	clientDefaults(&ro)
	opts.Redis = &ro

	s := &Store{
		opts:     opts,
		client:   redis.NewClient(&ro),
		log:      opts.Logger,
		registry: opts.Prefix + "topics",
		done:     make(chan struct{}),
		topics:   make(map[string]*topic),
		leases:   make(map[*lease]struct{}),
		reg:      make(map[string]time.Time),
	}
	s.health.init(opts.Logger, ro.Addr)
	s.Configure(cfg)

	pctx, cancel := context.WithTimeout(ctx, ro.DialTimeout+ro.ReadTimeout)
	err := s.client.Ping(pctx).Err()
	cancel()
	if err != nil {
		_ = s.fail(pctx, err)
	} else {
		s.health.ok()
	}

	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// clientDefaults makes an unreachable Redis fail fast and never retries
// (a retried append could be stored twice).
func clientDefaults(o *redis.Options) {
	if o.DialTimeout <= 0 {
		o.DialTimeout = time.Second
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 2 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 2 * time.Second
	}
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.ContextTimeoutEnabled = true
	if o.MaintNotificationsConfig == nil {
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
}

// Up reports whether the last exchange with Redis succeeded.
func (s *Store) Up() bool { return s.health.up.Load() }

// Outages counts the times Redis became unreachable.
func (s *Store) Outages() uint64 { return s.health.outages.Load() }

// Client is the store's Redis client (for tests and diagnostics).
func (s *Store) Client() *redis.Client { return s.client }

// Prefix is the key prefix in use.
func (s *Store) Prefix() string { return s.opts.Prefix }

// Configure implements replay.Store: the bounds apply at once to the windows
// of this node; Redis is trimmed to them on each topic's next append.
func (s *Store) Configure(cfg replay.Config) {
	cfg = cfg.WithDefaults()
	s.cfg.Store(&cfg)
	now := time.Now()
	for _, t := range s.loadedTopics() {
		t.mu.Lock()
		if t.prune(&cfg, now) {
			t.wakeAll()
		}
		t.mu.Unlock()
	}
}

// Close stops every goroutine of the store, releases its leases, wakes
// every reader (which then sees ErrStoreClosed) and closes the clients.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.mu.Lock()
	leases := make([]*lease, 0, len(s.leases))
	for l := range s.leases {
		leases = append(leases, l)
	}
	s.mu.Unlock()
	for _, l := range leases {
		l.Release()
	}
	close(s.done)
	s.mu.Lock()
	tailers := s.tailers
	s.tailers = nil
	topics := make([]*topic, 0, len(s.topics))
	for _, t := range s.topics {
		topics = append(topics, t)
	}
	s.mu.Unlock()
	for _, tl := range tailers {
		tl.shutdown()
	}
	s.wg.Wait()
	for _, t := range topics {
		t.mu.Lock()
		t.wakeAll()
		t.mu.Unlock()
	}
	return s.client.Close()
}

// Destruct lets a Store live in a caddy.UsagePool.
func (s *Store) Destruct() error { return s.Close() }

// opCtx bounds one store operation.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// fail turns a Redis client error into the store's: ErrUnavailable when
// Redis could not be reached or answered that it cannot serve now.
func (s *Store) fail(ctx context.Context, err error) error {
	if s.closed.Load() || errors.Is(err, redis.ErrClosed) {
		return replay.ErrStoreClosed
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !transient(rerr.Error()) {
		s.health.ok() // Redis answered, with an error of ours
		return fmt.Errorf("redisstore: %w", err)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err() // the caller gave up; says nothing about Redis
	}
	s.health.fail(err)
	return fmt.Errorf("%w: redis at %s: %v", replay.ErrUnavailable, s.opts.Redis.Addr, err)
}

// transient: Redis answered but cannot serve right now.
func transient(msg string) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// ---- keys ----

type topicKeys struct {
	log, meta, dedup, dedupOrder string
}

func (s *Store) topicKeys(name string) topicKeys {
	base := s.opts.Prefix + "{" + hashTag(name) + "}:"
	return topicKeys{log: base + "log", meta: base + "meta", dedup: base + "dedup", dedupOrder: base + "dedup:order"}
}

// hashTag is the topic (or lease name) as it appears between the braces.
func hashTag(name string) string {
	if name == "" || strings.ContainsAny(name, "{}") || name[0] == '~' {
		return "~" + hex.EncodeToString([]byte(name))
	}
	return name
}

// ---- topic registry (MaxTopics) ----

// register counts the topic against MaxTopics for ttl from now. The limit
// is cluster-wide and checked when a node first touches a topic (and again
// when its registration is half over), so nodes creating topics at the same
// moment can pass it by a few.
func (s *Store) register(ctx context.Context, name string, ttl time.Duration) error {
	now := time.Now()
	s.regMu.Lock()
	until, ok := s.reg[name]
	s.regMu.Unlock()
	if ok && until.Sub(now) > ttl/2 {
		return nil
	}
	cfg := s.cfg.Load()
	n, err := registerScript.Run(ctx, s.client, []string{s.registry}, name, ttl.Milliseconds(), cfg.MaxTopics).Int()
	if err != nil {
		return s.fail(ctx, err)
	}
	s.health.ok()
	if n == 0 {
		return replay.ErrTooManyTopics
	}
	s.regMu.Lock()
	if u := now.Add(ttl); u.After(s.reg[name]) {
		s.reg[name] = u
	}
	s.regMu.Unlock()
	return nil
}

// ---- Append ----

// placeholderID stands for the id when an event's cost is computed before
// Redis assigned one: as long as a typical id, so the cost is close.
const placeholderID = "1700000000000-0000"

// Append implements replay.Store.
func (s *Store) Append(ctx context.Context, name string, b replay.Batch) (replay.Appended, error) {
	if s.closed.Load() {
		return replay.Appended{}, replay.ErrStoreClosed
	}
	cfg := s.cfg.Load()
	if cfg.Framer == nil {
		return replay.Appended{}, errors.New("redisstore: no Framer configured")
	}
	var l *lease
	if b.Lease != nil {
		var ok bool
		l, ok = b.Lease.(*lease)
		if !ok || l.s != s {
			return replay.Appended{}, fmt.Errorf("redisstore: a fenced append with a lease of another store (%T)", b.Lease)
		}
		if l.isLost() {
			return replay.Appended{}, replay.ErrLeaseLost
		}
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.register(ctx, name, cfg.MaxAge); err != nil {
		return replay.Appended{}, err
	}

	costs := make([]int64, len(b.Events))
	var total int64
	for i, d := range b.Events {
		costs[i] = cfg.NewEvent(placeholderID, d, time.Time{}).Size()
		total += costs[i]
	}
	tooLarge := len(b.Events) > cfg.MaxEvents || total > cfg.MaxBytes

	k := s.topicKeys(name)
	keys := []string{k.log, k.meta, k.dedup, k.dedupOrder}
	token, cursor := "", ""
	if l != nil {
		keys = append(keys, l.key, l.cursorKey)
		token, cursor = l.token, b.Cursor
	}
	args := make([]any, 0, 11+3*len(b.Events))
	args = append(args, cfg.MaxEvents, cfg.MaxBytes, cfg.MaxAge.Milliseconds(), cfg.DedupWindow.Milliseconds(),
		cfg.MaxDedupKeys, boolArg(tooLarge), b.Key, token, cursor, cfg.MaxAge.Milliseconds(), len(b.Events))
	for i, d := range b.Events {
		args = append(args, d.Type, d.Data, costs[i])
	}
	res, err := appendScript.Run(ctx, s.client, keys, args...).StringSlice()
	if err != nil {
		return replay.Appended{}, s.fail(ctx, err)
	}
	s.health.ok()
	if len(res) == 0 {
		return replay.Appended{}, errors.New("redisstore: empty answer to append")
	}
	switch res[0] {
	case "closed":
		return replay.Appended{}, replay.ErrTopicClosed
	case "leaselost":
		l.markLost()
		return replay.Appended{}, replay.ErrLeaseLost
	case "toolarge":
		return replay.Appended{}, replay.ErrBatchTooLarge
	case "dup":
		if len(res) < 2 {
			return replay.Appended{}, errors.New("redisstore: malformed duplicate answer")
		}
		ids := strings.Fields(res[1])
		if len(ids) > 0 {
			ids = ids[1:] // the time it was recorded
		}
		return replay.Appended{IDs: ids, Duplicate: true}, nil
	case "ok":
	default:
		return replay.Appended{}, fmt.Errorf("redisstore: unexpected answer %q to append", res[0])
	}
	if len(res) != 2+len(b.Events) {
		return replay.Appended{}, fmt.Errorf("redisstore: append answered %d ids for %d events", len(res)-2, len(b.Events))
	}
	ids := res[2:]
	if l != nil {
		l.setCursor(b.Cursor)
	}
	if len(ids) > 0 {
		entries := make([]rawEntry, len(ids))
		prev := mustID(res[1])
		for i, id := range ids {
			sid := mustID(id)
			entries[i] = rawEntry{id: sid, prev: prev, typ: b.Events[i].Type, data: b.Events[i].Data, cost: costs[i]}
			prev = sid
		}
		s.localSync(name, entries)
	}
	return replay.Appended{IDs: ids}, nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// CloseTopic implements replay.Store.
func (s *Store) CloseTopic(ctx context.Context, name string) error {
	if s.closed.Load() {
		return replay.ErrStoreClosed
	}
	cfg := s.cfg.Load()
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.register(ctx, name, cfg.MaxAge); err != nil {
		return err
	}
	k := s.topicKeys(name)
	res, err := closeScript.Run(ctx, s.client, []string{k.log, k.meta}, cfg.MaxAge.Milliseconds()).StringSlice()
	if err != nil {
		return s.fail(ctx, err)
	}
	s.health.ok()
	switch {
	case len(res) == 1 && res[0] == "closed":
		return replay.ErrTopicClosed
	case len(res) == 3 && res[0] == "ok":
	default:
		return fmt.Errorf("redisstore: unexpected answer %q to close", res)
	}
	s.localSync(name, []rawEntry{{id: mustID(res[2]), prev: mustID(res[1]), marker: true}})
	return nil
}

// localSync puts what this node just wrote into the topic's window, if the
// node tails the topic, so its readers see it before the write returns.
func (s *Store) localSync(name string, entries []rawEntry) {
	s.mu.Lock()
	t := s.topics[name]
	s.mu.Unlock()
	if t == nil {
		return
	}
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	t.mu.Lock()
	loaded, end := t.loaded, t.end
	t.mu.Unlock()
	last := entries[len(entries)-1].id
	if !loaded || !end.less(last) {
		return // the load or the tail has it already
	}
	if entries[0].prev == end {
		t.ingest(entries)
		return
	}
	// Others appended in between: read them, then ours, from Redis. If
	// that fails the tail brings them later.
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	from := end
	for from.less(last) {
		msgs, err := s.client.XRangeN(ctx, t.keys.log, "("+from.String(), last.String(), 512).Result()
		if err != nil {
			_ = s.fail(ctx, err)
			return
		}
		if len(msgs) == 0 {
			return
		}
		batch := make([]rawEntry, 0, len(msgs))
		for _, m := range msgs {
			if e, ok := parseEntry(m); ok {
				batch = append(batch, e)
			}
		}
		t.ingest(batch)
		from = mustID(msgs[len(msgs)-1].ID)
	}
}

// ---- Subscribe ----

// Subscribe implements replay.Store.
func (s *Store) Subscribe(ctx context.Context, name, from string, onGap replay.GapPolicy) (replay.Cursor, error) {
	if s.closed.Load() {
		return nil, replay.ErrStoreClosed
	}
	cfg := s.cfg.Load()
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.register(ctx, name, subscribeRegistration); err != nil {
		return nil, err
	}
	t := s.acquire(name)
	ok := false
	defer func() {
		if !ok {
			s.release(t)
		}
	}()
	st, err := t.state(ctx)
	if err != nil {
		return nil, err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if st.closed || t.closed {
		return nil, replay.ErrTopicClosed
	}
	if cfg.MaxSubscribersPerTopic > 0 && t.subscribers >= cfg.MaxSubscribersPerTopic {
		return nil, replay.ErrTooManySubscribers
	}
	if t.prune(cfg, time.Now()) {
		t.wakeAll()
	}
	last := maxID(st.last, t.end)
	c := &cursor{t: t, onGap: onGap}
	switch from {
	case "":
		c.after = last
	case replay.Earliest:
		c.after = t.floor
	default:
		id, valid := parseID(from)
		switch {
		case valid && !id.less(t.floor) && !last.less(id):
			c.after = id
		case valid && id.less(t.floor):
			c.after = t.gapTarget(onGap, last)
			c.gap = &replay.Gap{Reason: replay.GapExpired, Requested: from, ResumeAfter: c.after.String()}
		default:
			c.after = t.gapTarget(onGap, last)
			c.gap = &replay.Gap{Reason: replay.GapUnknown, Requested: from, ResumeAfter: c.after.String()}
		}
	}
	t.subscribers++
	ok = true
	return c, nil
}

// acquire returns the named topic's local state, taking a reference that
// keeps it tailed until release.
func (s *Store) acquire(name string) *topic {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[name]
	if t == nil {
		t = &topic{s: s, name: name, keys: s.topicKeys(name), wake: make(chan struct{})}
		s.topics[name] = t
	}
	t.refs++
	return t
}

func (s *Store) release(t *topic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.refs--
	if t.refs == 0 {
		t.idleSince = time.Now()
	}
}

func (s *Store) loadedTopics() []*topic {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := make([]*topic, 0, len(s.topics))
	for _, t := range s.topics {
		ts = append(ts, t)
	}
	return ts
}

// ---- janitor ----

// janitor prunes windows by age, stops tailing topics nobody here reads,
// and keeps the topics this node tails registered and their keys alive.
func (s *Store) janitor() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		s.sweep()
	}
}

func (s *Store) sweep() {
	now := time.Now()
	cfg := s.cfg.Load()
	// Without requests, a PING notices an outage (and the return).
	if now.Sub(time.Unix(0, s.health.lastOK.Load())) >= time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
		if err := s.client.Ping(ctx).Err(); err != nil {
			_ = s.fail(ctx, err)
		} else {
			s.health.ok()
		}
		cancel()
	}
	var live []*topic
	s.mu.Lock()
	for name, t := range s.topics {
		if t.refs == 0 && now.Sub(t.idleSince) >= s.opts.Linger {
			delete(s.topics, name)
			if t.tailer != nil {
				t.tailer.remove(t)
				t.tailer = nil
			}
			continue
		}
		live = append(live, t)
	}
	s.tailers = slices.DeleteFunc(s.tailers, func(tl *tailer) bool { return tl.stopped.Load() })
	s.mu.Unlock()

	for _, t := range live {
		t.mu.Lock()
		if t.prune(cfg, now) {
			t.wakeAll()
		}
		t.mu.Unlock()
	}

	// Keep the tailed topics registered and their keys from expiring.
	ttl := subscribeRegistration
	var due []*topic
	s.regMu.Lock()
	for name, until := range s.reg {
		if until.Before(now) {
			delete(s.reg, name)
		}
	}
	for _, t := range live {
		if until, ok := s.reg[t.name]; !ok || until.Sub(now) <= ttl/2 {
			due = append(due, t)
		}
	}
	s.regMu.Unlock()
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	for _, t := range due {
		// Eval, not EvalSha: a pipeline cannot fall back when Redis
		// lost its script cache (a restart).
		registerScript.Eval(ctx, pipe, []string{s.registry}, t.name, ttl.Milliseconds(), cfg.MaxTopics)
		pipe.PExpire(ctx, t.keys.log, cfg.MaxAge)
		pipe.PExpire(ctx, t.keys.meta, cfg.MaxAge)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		_ = s.fail(ctx, err)
		return
	}
	s.health.ok()
	s.regMu.Lock()
	for _, t := range due {
		if u := now.Add(ttl); u.After(s.reg[t.name]) {
			s.reg[t.name] = u
		}
	}
	s.regMu.Unlock()
}

// ---- topics and their windows ----

// topic is this node's view of one topic it tails: a window of the log,
// complete from floor to end.
type topic struct {
	s    *Store
	name string
	keys topicKeys

	// Guarded by s.mu.
	refs      int
	idleSince time.Time
	tailer    *tailer

	// syncMu serialises what extends the window: the load, the tail, and
	// this node's own appends.
	syncMu sync.Mutex

	mu     sync.Mutex
	loaded bool
	events []*replay.Event
	meta   []entryMeta // parallel to events
	bytes  int64
	// floor: every entry with an id <= floor is gone; a cursor before it
	// missed events.
	floor streamID
	// end: the newest entry in the window (events or the close marker).
	end         streamID
	closed      bool
	subscribers int
	wake        chan struct{}
}

type entryMeta struct {
	id   streamID
	cost int64
}

// topicState is what Subscribe learns from Redis.
type topicState struct {
	last   streamID
	closed bool
}

// state loads the window the first time (and starts tailing the topic), or
// asks Redis where the topic is now.
func (t *topic) state(ctx context.Context) (topicState, error) {
	if t.isLoaded() {
		return t.metaState(ctx)
	}
	t.syncMu.Lock()
	if t.isLoaded() {
		t.syncMu.Unlock()
		return t.metaState(ctx)
	}
	st, err := t.load(ctx)
	t.syncMu.Unlock()
	if err != nil {
		return topicState{}, err
	}
	t.s.follow(t)
	return st, nil
}

func (t *topic) isLoaded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loaded
}

func (t *topic) metaState(ctx context.Context) (topicState, error) {
	vals, err := t.s.client.HMGet(ctx, t.keys.meta, "last", "closed").Result()
	if err != nil {
		return topicState{}, t.s.fail(ctx, err)
	}
	t.s.health.ok()
	return metaState(vals), nil
}

// load reads the topic's retained history into the window. Callers hold
// syncMu.
func (t *topic) load(ctx context.Context) (topicState, error) {
	s := t.s
	cfg := s.cfg.Load()
	pipe := s.client.TxPipeline()
	hm := pipe.HMGet(ctx, t.keys.meta, "last", "closed")
	xr := pipe.XRevRangeN(ctx, t.keys.log, "+", "-", int64(cfg.MaxEvents)+1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return topicState{}, s.fail(ctx, err)
	}
	s.health.ok()
	st := metaState(hm.Val())
	msgs := xr.Val()
	entries := make([]rawEntry, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		if e, ok := parseEntry(msgs[i]); ok {
			entries = append(entries, e)
		}
	}
	// Keep the newest entries the bounds allow, as pruning would.
	now := time.Now()
	keep := len(entries)
	var n int
	var bytes int64
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if !e.marker {
			if cfg.Exceeds(n+1, bytes+e.cost, e.id.time(), now) {
				break
			}
			n++
			bytes += e.cost
		}
		keep = i
	}
	entries = entries[keep:]
	for i := range entries {
		if !entries[i].marker {
			entries[i].ev = cfg.NewEvent(entries[i].id.String(), replay.Draft{Type: entries[i].typ, Data: entries[i].data}, entries[i].id.time())
		}
	}

	t.mu.Lock()
	t.events, t.meta, t.bytes = nil, nil, 0
	t.end = st.last
	t.floor = st.last
	if len(entries) > 0 {
		t.floor = entries[0].prev
		t.end = maxID(t.end, entries[len(entries)-1].id)
	}
	for _, e := range entries {
		if e.marker {
			t.closed = true
			continue
		}
		t.events = append(t.events, e.ev)
		t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
		t.bytes += e.cost
	}
	t.closed = t.closed || st.closed
	t.loaded = true
	t.wakeAll()
	t.mu.Unlock()
	return st, nil
}

func metaState(vals []any) topicState {
	var st topicState
	if len(vals) > 0 {
		if v, ok := vals[0].(string); ok {
			st.last = mustID(v)
		}
	}
	if len(vals) > 1 && vals[1] != nil {
		st.closed = true
	}
	return st
}

// rawEntry is a log entry as read from Redis (or just written).
type rawEntry struct {
	id, prev streamID
	typ      string
	data     []byte
	cost     int64
	marker   bool
	ev       *replay.Event
}

func parseEntry(m redis.XMessage) (rawEntry, bool) {
	id, ok := parseID(m.ID)
	if !ok {
		return rawEntry{}, false
	}
	e := rawEntry{id: id}
	str := func(k string) string {
		v, _ := m.Values[k].(string)
		return v
	}
	e.prev = mustID(str("p"))
	if _, ok := m.Values["x"]; ok {
		e.marker = true
		return e, true
	}
	e.typ = str("t")
	e.data = []byte(str("d"))
	e.cost, _ = strconv.ParseInt(str("c"), 10, 64)
	return e, true
}

// ingest adds entries newer than the window's end, in order. Callers hold
// syncMu, so the end does not move meanwhile.
func (t *topic) ingest(entries []rawEntry) {
	cfg := t.s.cfg.Load()
	t.mu.Lock()
	end := t.end
	t.mu.Unlock()
	fresh := entries[:0:0]
	for _, e := range entries {
		if !end.less(e.id) {
			continue
		}
		if !e.marker && e.ev == nil {
			e.ev = cfg.NewEvent(e.id.String(), replay.Draft{Type: e.typ, Data: e.data}, e.id.time())
		}
		fresh = append(fresh, e)
		end = e.id
	}
	if len(fresh) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range fresh {
		if e.prev != t.end && e.prev != (streamID{}) {
			// Entries between were trimmed before this node read them:
			// cursors before e.prev missed them.
			t.floor = maxID(t.floor, e.prev)
			t.events, t.meta, t.bytes = nil, nil, 0
		}
		if e.marker {
			t.closed = true
		} else {
			t.events = append(t.events, e.ev)
			t.meta = append(t.meta, entryMeta{id: e.id, cost: e.cost})
			t.bytes += e.cost
		}
		t.end = e.id
	}
	t.prune(cfg, time.Now())
	t.wakeAll()
}

// wakeAll releases every reader waiting on the window. Callers hold t.mu.
func (t *topic) wakeAll() {
	close(t.wake)
	t.wake = make(chan struct{})
}

// prune drops events past the bounds, oldest first, and reports whether it
// dropped any. Callers hold t.mu.
func (t *topic) prune(cfg *replay.Config, now time.Time) bool {
	drop := 0
	bytes := t.bytes
	for drop < len(t.events) {
		m := t.meta[drop]
		if !cfg.Exceeds(len(t.events)-drop, bytes, m.id.time(), now) {
			break
		}
		bytes -= m.cost
		drop++
	}
	if drop == 0 {
		return false
	}
	t.floor = maxID(t.floor, t.meta[drop-1].id)
	// Readers may hold sub-slices of the old arrays, so dropped slots are
	// left alone; a copy releases them once most of the array is dead.
	t.events, t.meta = t.events[drop:], t.meta[drop:]
	t.bytes = bytes
	if len(t.events) == 0 {
		t.events, t.meta = nil, nil
	} else if cap(t.events) > 64 && len(t.events) < cap(t.events)/4 {
		t.events = append([]*replay.Event(nil), t.events...)
		t.meta = append([]entryMeta(nil), t.meta...)
	}
	return true
}

// gapTarget is where a cursor continues after a gap. Callers hold t.mu.
func (t *topic) gapTarget(onGap replay.GapPolicy, last streamID) streamID {
	if onGap == replay.GapLive {
		return maxID(last, t.end)
	}
	return t.floor
}

// cursor is one local subscriber's position: the id after which it reads.
type cursor struct {
	t      *topic
	onGap  replay.GapPolicy
	after  streamID
	gap    *replay.Gap
	closed bool
}

// Next implements replay.Cursor. It reads the window only: it never waits
// for Redis.
func (c *cursor) Next(max int) (replay.Page, error) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed || t.s.closed.Load() {
		return replay.Page{}, replay.ErrStoreClosed
	}
	if max < 1 {
		max = 1
	}
	p := replay.Page{Gap: c.gap}
	c.gap = nil
	if c.after.less(t.floor) {
		requested := c.after.String()
		c.after = t.gapTarget(c.onGap, t.end)
		p.FellBehind(requested, c.after.String())
	}
	i := sort.Search(len(t.meta), func(i int) bool { return c.after.less(t.meta[i].id) })
	if i < len(t.events) {
		j := min(i+max, len(t.events))
		p.Events = t.events[i:j:j]
		c.after = t.meta[j-1].id
	}
	if i+len(p.Events) == len(t.events) {
		p.Closed = t.closed
	}
	if len(p.Events) == 0 && !p.Closed {
		p.Wait = t.wake
	}
	return p, nil
}

// Position implements replay.Cursor.
func (c *cursor) Position() string {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.after.String()
}

// Close implements replay.Cursor.
func (c *cursor) Close() {
	t := c.t
	t.mu.Lock()
	if c.closed {
		t.mu.Unlock()
		return
	}
	c.closed = true
	t.subscribers--
	t.mu.Unlock()
	t.s.release(t)
}

// Interface guards
var (
	_ replay.Store  = (*Store)(nil)
	_ replay.Shared = (*Store)(nil)
	_ replay.Cursor = (*cursor)(nil)
)
