package caddysse

import (
	"context"
	"errors"
	"fmt"
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
//	store redis <url> {
//		prefix        <key prefix>   # default sse:
//		pool_size     <n>            # default 10 per CPU
//		dial_timeout  <duration>     # default 1s
//		read_timeout  <duration>     # default 2s
//		write_timeout <duration>     # default 2s
//		lease_ttl     <duration>     # default 10s
//	}
//
// The URL is redis://[[user]:password@]host[:port][/db] or rediss:// for
// TLS, and may hold placeholders such as {env.REDIS_PASSWORD}, expanded when
// the config loads.
type RedisStore struct {
	// URL of the Redis server (redis:// or rediss://). Required.
	URL string `json:"url,omitempty"`
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
	s.addr = opts.Redis.Addr
	// Every setting is in the key: a reload that changes one opens a new
	// store (history is in Redis, so nothing is lost).
	key := fmt.Sprintf("redis:%s|%s|%d|%d|%d|%d|%d", s.expandedURL(), opts.Prefix, s.PoolSize,
		s.DialTimeout, s.ReadTimeout, s.WriteTimeout, s.LeaseTTL)
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

func (s *RedisStore) expandedURL() string {
	return caddy.NewReplacer().ReplaceKnown(s.URL, "")
}

// options turns the configuration into the store's.
func (s *RedisStore) options() (redisstore.Options, error) {
	if s.URL == "" {
		return redisstore.Options{}, errors.New("redis store: url is required")
	}
	ro, err := redis.ParseURL(s.expandedURL())
	if err != nil {
		// The URL may hold a password: name only what is wrong.
		return redisstore.Options{}, fmt.Errorf("redis store: url: %v", redactedError(err, s.expandedURL()))
	}
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
	prefix := caddy.NewReplacer().ReplaceKnown(s.Prefix, "")
	if strings.ContainsAny(prefix, "{}") {
		return redisstore.Options{}, fmt.Errorf("redis store: prefix %q must not contain braces", prefix)
	}
	return redisstore.Options{
		Redis:    ro,
		Prefix:   prefix,
		LeaseTTL: time.Duration(s.LeaseTTL),
	}, nil
}

// Validate checks the configuration.
func (s *RedisStore) Validate() error {
	if s.URL == "" {
		return errors.New("redis store: url is required")
	}
	if s.PoolSize < 0 {
		return errors.New("redis store: pool_size must not be negative")
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
		s.logger.Info("closed sse redis store", zap.String("addr", s.addr))
	}
	return nil
}

// Store implements StoreProvider.
func (s *RedisStore) Store() replay.Store { return s.store }

// UnmarshalCaddyfile sets up the Redis store. Syntax:
//
//	store redis <url> {
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
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := optionsSeen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.once(d, "store redis"); err != nil {
			return err
		}
		var err error
		switch d.Val() {
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

// Interface guards
var (
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddy.CleanerUpper    = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
	_ StoreProvider         = (*RedisStore)(nil)
)
