package redisstore

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

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
	pctx, pcancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	s.probe(pctx)
	pcancel()
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
	ttl := tailRegistration
	var due []*topic
	// Topics without history hold no keys and take no slot (see register).
	live = slices.DeleteFunc(live, func(t *topic) bool { return t.windowEnd() == (streamID{}) })
	s.regMu.Lock()
	for name, until := range s.reg {
		if until.Before(now) {
			delete(s.reg, name)
		}
	}
	for _, t := range live {
		// The keys last MaxAge from their last write; a topic read here
		// must not expire under its readers (they would take the stream
		// starting over for lost data), so short ages are renewed often.
		until, ok := s.reg[t.name]
		if !ok || until.Sub(now) <= ttl/2 || now.Sub(t.keysRenewed) >= cfg.MaxAge/3 {
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
		t.keysRenewed = now
		if u := now.Add(ttl); u.After(s.reg[t.name]) {
			s.reg[t.name] = u
		}
	}
	s.regMu.Unlock()
}
