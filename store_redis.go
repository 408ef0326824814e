package caddysse

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
)

func init() {
	caddy.RegisterModule(RedisStore{})
}

// RedisStore keeps topic logs in Redis Streams, shared by every Caddy node
// configured with the same Redis and prefix: publish on any node, subscribe
// on any node, and resume on any node with an id any node gave. History
// lives in Redis, so it survives restarts of the nodes (and of Redis, as
// far as Redis persists its data); idempotency keys and ended topics are
// shared too. See package replay/redisstore for the key layout.
//
// While Redis cannot be reached, publishes and new subscriptions are
// answered 503 with Retry-After; open streams stay open (heartbeats go on)
// and continue where they were once Redis is back. The outage is logged
// once when it starts and once when it ends, and the metric
// caddy_sse_redis_up shows it.
//
// Caddyfile:
//
//	store redis <url> [<url>...] {
//		mode          standalone | sentinel | cluster  # default standalone
//		master        <name>         # sentinel: the monitored master's name
//		sentinel_username <user>     # sentinel: if the sentinels require it
//		sentinel_password <password> # sentinel: if the sentinels require it
//		min_replicas_ack <n> [<timeout>] # default 0; timeout default 1s
//		prefix        <key prefix>   # default sse:
//		pool_size     <n>            # default 10 per CPU
//		dial_timeout  <duration>     # default 1s
//		read_timeout  <duration>     # default 2s
//		write_timeout <duration>     # default 2s
//		lease_ttl     <duration>     # default 10s
//	}
//
// A URL is redis://[[user]:password@]host[:port][/db] or rediss:// for
// TLS, and may hold placeholders such as {env.REDIS_PASSWORD}, expanded when
// the config loads. In standalone mode there is one URL, the server's. In
// sentinel mode the URLs are the sentinels' addresses, and the user,
// password, TLS and db of the first URL are those of the master (and its
// replicas); sentinels that require a password of their own take
// sentinel_username and sentinel_password. In cluster mode the URLs are
// seed nodes, and the first one's user, password and TLS apply to every
// node.
type RedisStore struct {
	// URL of the Redis server (redis:// or rediss://): in sentinel mode
	// of a sentinel, in cluster mode of a seed node. Required.
	URL string `json:"url,omitempty"`
	// URLs are more sentinels, or more cluster seed nodes. Their
	// addresses are used; credentials and TLS come from URL.
	URLs []string `json:"urls,omitempty"`
	// Mode is standalone (one server; the default), sentinel (a master
	// that Redis Sentinel fails over; Master names it) or cluster (Redis
	// Cluster).
	Mode string `json:"mode,omitempty"`
	// Master is the name of the master the sentinels monitor (sentinel
	// mode; required there).
	Master string `json:"master,omitempty"`
	// SentinelUsername and SentinelPassword authenticate to the
	// sentinels, when they require it (sentinel mode).
	SentinelUsername string `json:"sentinel_username,omitempty"`
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// MinReplicasAck, when positive, acknowledges a publish (or a
	// close) only once Redis's WAIT reports that this many replicas hold
	// it; otherwise the publisher gets 503 with Retry-After, and the
	// event may still appear. Default 0: acknowledged once the master has
	// it (replication is asynchronous: a failover may lose it).
	MinReplicasAck int `json:"min_replicas_ack,omitempty"`
	// ReplicaAckTimeout bounds that wait. Default 1s; it must be shorter
	// than ReadTimeout.
	ReplicaAckTimeout caddy.Duration `json:"replica_ack_timeout,omitempty"`
	// Prefix of every key the store writes. Nodes share topics when they
	// use the same Redis and prefix. Default `sse:`.
	Prefix string `json:"prefix,omitempty"`
	// PoolSize is the number of connections for publishing and
	// subscribing (tailing uses a few more). Default 10 per CPU.
	PoolSize int `json:"pool_size,omitempty"`
	// DialTimeout bounds connecting to Redis. Default 1s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// ReadTimeout bounds waiting for an answer. Default 2s.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`
	// WriteTimeout bounds sending a command. Default 2s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// LeaseTTL is how long a node's hold on a source lasts without
	// renewal: how soon another node takes over a source whose node
	// died. Default 10s.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`

	store  *redisstore.Store
	key    string
	addr   string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision opens the store, asking Redis once within the dial timeout, or
// takes a reference to the store a previous config (a reload) opened with
// the same settings. A Redis that does not answer is logged as down, and
// provisioning still succeeds: failing it would keep Caddy, with every
// other site it serves, from starting during a Redis outage, while the
// store answers 503 to publishers and a retry hint to new subscribers
// until Redis is back, and then serves on its own.
func (s *RedisStore) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	routeRedisLogs()
	opts, err := s.options()
	if err != nil {
		return err
	}
	s.addr = s.describe()
	// Every setting is in the key: a reload that changes one opens a new
	// store (history is in Redis, so nothing is lost).
	key := fmt.Sprintf("redis:%s|%q|%s|%s|%s|%s|%s|%d|%d|%d|%d|%d|%d|%d", expand(s.URL), s.expandedURLs(), s.mode(),
		expand(s.Master), expand(s.SentinelUsername), expand(s.SentinelPassword), opts.Prefix, s.PoolSize,
		s.DialTimeout, s.ReadTimeout, s.WriteTimeout, s.LeaseTTL, s.MinReplicasAck, s.ReplicaAckTimeout)
	store, loaded, err := acquireStore(key, func() (*redisstore.Store, error) {
		opts.Logger = s.logger
		// The handler configures the real bounds right after.
		return redisstore.New(ctx, opts, replay.Config{})
	})
	if err != nil {
		return fmt.Errorf("redis store %s: %w", s.addr, err)
	}
	s.key = key
	s.store = store
	if !loaded {
		fields := []zap.Field{zap.String("addr", s.addr), zap.String("prefix", opts.Prefix), zap.Bool("up", s.store.Up())}
		if s.store.Up() {
			s.logger.Info("opened sse redis store", fields...)
		} else {
			s.logger.Warn("opened sse redis store, but redis does not answer: publishes answer 503 and subscribers are asked to retry until it does", fields...)
		}
	}
	if err := registerRedisMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering redis store metrics: %w", err)
	}
	return nil
}

// expand replaces placeholders known when the config loads ({env.*}).
func expand(v string) string {
	return caddy.NewReplacer().ReplaceKnown(v, "")
}

func (s *RedisStore) expandedURLs() []string {
	out := make([]string, len(s.URLs))
	for i, u := range s.URLs {
		out[i] = expand(u)
	}
	return out
}

// Redis store modes.
const (
	redisStandalone = "standalone"
	redisSentinel   = "sentinel"
	redisCluster    = "cluster"
)

func (s *RedisStore) mode() string {
	if s.Mode == "" {
		return redisStandalone
	}
	return s.Mode
}

// describe names the Redis for logs, without credentials.
func (s *RedisStore) describe() string {
	var addrs []string
	for _, u := range append([]string{s.URL}, s.URLs...) {
		if ro, err := redis.ParseURL(expand(u)); err == nil {
			addrs = append(addrs, ro.Addr)
		}
	}
	switch s.mode() {
	case redisSentinel:
		return "sentinel " + expand(s.Master) + "@" + strings.Join(addrs, ",")
	case redisCluster:
		return "cluster " + strings.Join(addrs, ",")
	}
	return strings.Join(addrs, ",")
}

// options turns the configuration into the store's.
func (s *RedisStore) options() (redisstore.Options, error) {
	if err := s.Validate(); err != nil {
		return redisstore.Options{}, err
	}
	var all []*redis.Options
	for i, u := range append([]string{s.URL}, s.URLs...) {
		ro, err := redis.ParseURL(expand(u))
		if err != nil {
			// The URL may hold a password: name only what is wrong.
			return redisstore.Options{}, fmt.Errorf("redis store: url %d: %v", i+1, redactedError(err, expand(u)))
		}
		all = append(all, ro)
	}
	ro := all[0]
	if s.PoolSize > 0 {
		ro.PoolSize = s.PoolSize
	}
	if s.DialTimeout > 0 {
		ro.DialTimeout = time.Duration(s.DialTimeout)
	}
	if s.ReadTimeout > 0 {
		ro.ReadTimeout = time.Duration(s.ReadTimeout)
	}
	if s.WriteTimeout > 0 {
		ro.WriteTimeout = time.Duration(s.WriteTimeout)
	}
	prefix := expand(s.Prefix)
	if strings.ContainsAny(prefix, "{}") {
		return redisstore.Options{}, fmt.Errorf("redis store: prefix %q must not contain braces", prefix)
	}
	opts := redisstore.Options{
		Prefix:            prefix,
		LeaseTTL:          time.Duration(s.LeaseTTL),
		MinReplicasAck:    s.MinReplicasAck,
		ReplicaAckTimeout: time.Duration(s.ReplicaAckTimeout),
	}
	addrs := make([]string, len(all))
	for i, o := range all {
		addrs[i] = o.Addr
	}
	switch s.mode() {
	case redisStandalone:
		opts.Redis = ro
	case redisSentinel:
		opts.Sentinel = &redis.FailoverOptions{
			MasterName:       expand(s.Master),
			SentinelAddrs:    addrs,
			SentinelUsername: expand(s.SentinelUsername),
			SentinelPassword: expand(s.SentinelPassword),
			Username:         ro.Username,
			Password:         ro.Password,
			DB:               ro.DB,
			TLSConfig:        ro.TLSConfig,
			PoolSize:         ro.PoolSize,
			DialTimeout:      ro.DialTimeout,
			ReadTimeout:      ro.ReadTimeout,
			WriteTimeout:     ro.WriteTimeout,
		}
	case redisCluster:
		if ro.DB != 0 {
			return redisstore.Options{}, errors.New("redis store: cluster mode has no databases: leave the db out of the URL")
		}
		opts.Cluster = &redis.ClusterOptions{
			Addrs:        addrs,
			Username:     ro.Username,
			Password:     ro.Password,
			TLSConfig:    ro.TLSConfig,
			PoolSize:     ro.PoolSize,
			DialTimeout:  ro.DialTimeout,
			ReadTimeout:  ro.ReadTimeout,
			WriteTimeout: ro.WriteTimeout,
		}
	}
	return opts, nil
}

// Validate checks the configuration.
func (s *RedisStore) Validate() error {
	if s.URL == "" {
		return errors.New("redis store: url is required")
	}
	if s.PoolSize < 0 {
		return errors.New("redis store: pool_size must not be negative")
	}
	if s.MinReplicasAck < 0 {
		return errors.New("redis store: min_replicas_ack must not be negative")
	}
	switch s.mode() {
	case redisStandalone:
		if len(s.URLs) > 0 {
			return errors.New("redis store: several URLs need mode sentinel or cluster")
		}
	case redisSentinel:
		if s.Master == "" {
			return errors.New("redis store: mode sentinel needs master <name>")
		}
	case redisCluster:
	default:
		return fmt.Errorf("redis store: mode %q is not standalone, sentinel or cluster", s.Mode)
	}
	if s.mode() != redisSentinel && (s.Master != "" || s.SentinelUsername != "" || s.SentinelPassword != "") {
		return errors.New("redis store: master, sentinel_username and sentinel_password are for mode sentinel")
	}
	read := time.Duration(s.ReadTimeout)
	if read == 0 {
		read = 2 * time.Second
	}
	ack := time.Duration(s.ReplicaAckTimeout)
	if ack == 0 {
		ack = redisstore.DefaultReplicaAck
	}
	if s.MinReplicasAck > 0 && ack >= read {
		return fmt.Errorf("redis store: the min_replicas_ack timeout (%v) must be shorter than read_timeout (%v)", ack, read)
	}
	return nil
}

// Cleanup drops the reference; the last one stops tailing and closes the
// connections (the data stays in Redis).
func (s *RedisStore) Cleanup() error {
	closed, err := releaseStore(s.key)
	s.key = ""
	if err != nil {
		return fmt.Errorf("closing sse redis store %s: %w", s.addr, err)
	}
	if closed {
		s.logClosed()
	}
	return nil
}

func (s *RedisStore) logClosed() {
	s.logger.Info("closed sse redis store", zap.String("addr", s.addr))
}

// Store implements StoreProvider.
func (s *RedisStore) Store() replay.Store { return s.store }

// UnmarshalCaddyfile sets up the Redis store. Syntax:
//
//	store redis <url> [<url>...] {
//		mode          standalone | sentinel | cluster
//		master        <name>
//		sentinel_username <user>
//		sentinel_password <password>
//		min_replicas_ack <n> [<timeout>]
//		prefix        <key prefix>
//		pool_size     <n>
//		dial_timeout  <duration>
//		read_timeout  <duration>
//		write_timeout <duration>
//		lease_ttl     <duration>
//	}
func (s *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if !d.NextArg() {
		return d.Errf("store redis: missing the URL of the Redis server")
	}
	s.URL = d.Val()
	for d.NextArg() {
		s.URLs = append(s.URLs, d.Val())
	}
	seen := optionsSeen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.once(d, "store redis"); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "mode":
			err = oneArg(d, &s.Mode)
			if err == nil && s.Mode != redisStandalone && s.Mode != redisSentinel && s.Mode != redisCluster {
				err = d.Errf("mode: %q is not standalone, sentinel or cluster", s.Mode)
			}
		case "master":
			err = oneArg(d, &s.Master)
		case "sentinel_username":
			err = oneArg(d, &s.SentinelUsername)
		case "sentinel_password":
			err = oneArg(d, &s.SentinelPassword)
		case "min_replicas_ack":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("min_replicas_ack: want <n> [<timeout>]")
			}
			n, perr := strconv.Atoi(args[0])
			if perr != nil || n < 0 {
				return d.Errf("min_replicas_ack: %q is not a non-negative integer", args[0])
			}
			s.MinReplicasAck = n
			if len(args) == 2 {
				dur, perr := caddy.ParseDuration(args[1])
				if perr != nil || dur <= 0 {
					return d.Errf("min_replicas_ack: timeout %q is not a positive duration", args[1])
				}
				s.ReplicaAckTimeout = caddy.Duration(dur)
			}
		case "prefix":
			err = oneArg(d, &s.Prefix)
		case "pool_size":
			err = intArg(d, &s.PoolSize)
		case "dial_timeout":
			err = durationArg(d, &s.DialTimeout)
		case "read_timeout":
			err = durationArg(d, &s.ReadTimeout)
		case "write_timeout":
			err = durationArg(d, &s.WriteTimeout)
		case "lease_ttl":
			err = durationArg(d, &s.LeaseTTL)
		default:
			err = d.Errf("unrecognized redis store option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var routeRedisLogsOnce sync.Once

// routeRedisLogs sends the Redis client's own messages (one per failed
// dial during an outage) to Caddy's log at debug level; the store logs the
// outage itself once.
func routeRedisLogs() {
	routeRedisLogsOnce.Do(func() { redis.SetLogger(redisLogger{}) })
}

// redisLogger asks for Caddy's logger at each message, so it follows the
// logging config of whichever config is running.
type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l := caddy.Log().Named("redis"); l.Core().Enabled(zap.DebugLevel) {
		l.Debug(fmt.Sprintf(format, v...))
	}
}

// poolKey is the key the store is shared under (see Handler.holdStore).
func (s *RedisStore) poolKey() string { return s.key }

// Interface guards
var (
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddy.CleanerUpper    = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
	_ StoreProvider         = (*RedisStore)(nil)
)
