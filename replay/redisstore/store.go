package redisstore

import (
	"context"
	"errors"
	"fmt"
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
	// Redis is the client configuration of one Redis server, typically
	// from redis.ParseURL. Exactly one of Redis, Sentinel and Cluster is
	// required. Unset timeouts get short defaults (dial 1s, read and write
	// 2s) so that an unreachable Redis fails requests fast; retries are
	// turned off, since retrying an append could store it twice.
	Redis *redis.Options
	// Sentinel names a master monitored by Redis Sentinel: the store
	// follows it through failovers (go-redis's failover client).
	Sentinel *redis.FailoverOptions
	// Cluster names seed nodes of a Redis Cluster (go-redis's cluster
	// client). Every key of a topic is in one hash slot; see the package
	// doc for leases and tails.
	Cluster *redis.ClusterOptions
	// MinReplicasAck, when positive, acknowledges an append or a close
	// only once WAIT reports that many replicas hold it; otherwise the
	// call fails with ErrUnavailable (the write may still survive).
	MinReplicasAck int
	// ReplicaAckTimeout bounds that WAIT. Default 1s.
	ReplicaAckTimeout time.Duration
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
	DefaultReplicaAck     = time.Second
)

// tailRegistration is how long the janitor registers a topic this node
// tails (one that has history) against the topic limit; it renews that.
const tailRegistration = time.Minute

// Store is a replay.Store and replay.Shared kept in Redis.
type Store struct {
	opts   Options
	client redis.UniversalClient
	// cluster is the client when the store runs on Redis Cluster.
	cluster  *redis.ClusterClient
	addr     string // what logs and errors name: the address(es) in use
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
	// serverID is the run_id Redis last reported; infoDenied is set when
	// its ACL refuses INFO (see probe).
	serverID   atomic.Pointer[string]
	infoDenied atomic.Bool
	// replicas: master address ("" off Cluster) -> replicas connected to
	// it, as the janitor last read (MinReplicasAck only).
	replicas sync.Map
}

// New returns a store on the Redis opts.Redis names. It does not wait for
// Redis: a store made while Redis is down answers ErrUnavailable until it
// is back. New asks Redis once, within the dial timeout (and ctx): Up
// reports the answer, and a failure is logged as a warning.
func New(ctx context.Context, opts Options, cfg replay.Config) (*Store, error) {
	n := 0
	for _, set := range []bool{opts.Redis != nil, opts.Sentinel != nil, opts.Cluster != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("redisstore: exactly one of Redis, Sentinel and Cluster options is required")
	}
	if opts.MinReplicasAck < 0 {
		return nil, errors.New("redisstore: MinReplicasAck must not be negative")
	}
	if opts.ReplicaAckTimeout <= 0 {
		opts.ReplicaAckTimeout = DefaultReplicaAck
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
	s := &Store{
		log:      opts.Logger,
		registry: opts.Prefix + "topics",
		done:     make(chan struct{}),
		topics:   make(map[string]*topic),
		leases:   make(map[*lease]struct{}),
		reg:      make(map[string]time.Time),
	}
	var dial time.Duration
	switch {
	case opts.Redis != nil:
		ro := *opts.Redis
		clientDefaults(&ro)
		opts.Redis = &ro
		s.client = redis.NewClient(&ro)
		s.addr, dial = ro.Addr, ro.DialTimeout
	case opts.Sentinel != nil:
		fo := *opts.Sentinel
		failoverDefaults(&fo)
		opts.Sentinel = &fo
		s.client = redis.NewFailoverClient(&fo)
		s.addr, dial = "sentinel "+fo.MasterName+"@"+strings.Join(fo.SentinelAddrs, ","), fo.DialTimeout
	default:
		co := *opts.Cluster
		clusterDefaults(&co)
		opts.Cluster = &co
		s.cluster = redis.NewClusterClient(&co)
		s.client = s.cluster
		s.addr, dial = "cluster "+strings.Join(co.Addrs, ","), co.DialTimeout
	}
	s.opts = opts
	s.health.init(opts.Logger, s.addr)
	s.Configure(cfg)

	// Bounded by the dial timeout: a Redis that is down at start delays
	// the start by no more than that, and is reported (Up, and a warning)
	// rather than taken for up until the janitor's first probe.
	pctx, cancel := context.WithTimeout(ctx, dial)
	s.probe(pctx)
	cancel()

	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// failFast is the policy every client of the store follows, whatever its
// kind (go-redis gives each its own options type): an unreachable Redis
// fails fast, and nothing is retried (a retried append could be stored
// twice).
func failFast(dial, read, write *time.Duration, maxRetries, dialerRetries *int, contextTimeout *bool) {
	if *dial <= 0 {
		*dial = time.Second
	}
	if *read == 0 {
		*read = 2 * time.Second
	}
	if *write == 0 {
		*write = 2 * time.Second
	}
	*maxRetries = -1
	*dialerRetries = 1
	*contextTimeout = true
}

// clientDefaults applies failFast to a standalone client.
func clientDefaults(o *redis.Options) {
	failFast(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
	if o.MaintNotificationsConfig == nil {
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
}

// failoverDefaults is clientDefaults for Sentinel: the failover client
// asks the sentinels for the master again whenever a dial fails.
func failoverDefaults(o *redis.FailoverOptions) {
	if o.Protocol == 0 {
		o.Protocol = 2 // no push notifications to wait for
	}
	failFast(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
}

// clusterDefaults is clientDefaults for Cluster. The cluster client still
// follows MOVED and ASK for reads; writes that must not run twice go to
// the slot's master without its retries (see Store.write).
func clusterDefaults(o *redis.ClusterOptions) {
	if o.Protocol == 0 {
		o.Protocol = 2 // no push notifications to wait for
	}
	failFast(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled)
	if o.MaintNotificationsConfig == nil {
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
}

// Up reports whether the last exchange with Redis succeeded.
func (s *Store) Up() bool { return s.health.up.Load() }

// Outages counts the times Redis became unreachable.
func (s *Store) Outages() uint64 { return s.health.outages.Load() }

// Client is the store's Redis client (for tests and diagnostics): a
// *redis.Client for one server or Sentinel, a *redis.ClusterClient for
// Cluster.
func (s *Store) Client() redis.UniversalClient { return s.client }

// Addr names the Redis the store uses, for logs and metrics: host:port,
// "sentinel <master>@<sentinels>" or "cluster <seeds>".
func (s *Store) Addr() string { return s.addr }

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
	return fmt.Errorf("%w: redis at %s: %v", replay.ErrUnavailable, s.addr, err)
}

// transient: Redis answered but cannot serve right now.
func transient(msg string) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "MOVED", "ASK", "UNBLOCKED"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
