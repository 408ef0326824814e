package redisstore

import (
	"context"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// A topic counts against MaxTopics once it is appended to (even if the
// append then fails) or closed: that is when it holds keys in Redis. A
// topic that only has subscribers costs Redis nothing and takes no slot, so
// anonymous subscribers to made-up names cannot lock publishers out of new
// topics; the subscriber limits bound them instead.

// register counts the topic against MaxTopics for ttl from now. The limit
// is cluster-wide and checked when a node first writes a topic (and again
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
