package redisstore

import (
	"context"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

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
