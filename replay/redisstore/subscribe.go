package redisstore

import (
	"context"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// Subscribe implements replay.Store.
//
// On a closed topic a client that was before the close still gets what it
// missed, then Closed: a resume from an id before the last event, from
// Earliest, or from an id Redis does not know (with its gap). With no
// cursor, or one at or after the last event, there is nothing left to
// read, so the answer is ErrTopicClosed.
func (s *Store) Subscribe(ctx context.Context, name, from string, onGap replay.GapPolicy) (replay.Cursor, error) {
	if s.closed.Load() {
		return nil, replay.ErrStoreClosed
	}
	cfg := s.cfg.Load()
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
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
	if st.closed && !t.closed {
		// Not expected: state reads the window up to the close marker.
		// Without it the window cannot tell what is left to replay.
		return nil, replay.ErrTopicClosed
	}
	if t.closed && from == "" {
		return nil, replay.ErrTopicClosed
	}
	if t.prune(cfg, time.Now()) {
		t.wakeAll()
	}
	last := maxID(st.last, t.end)
	c := &cursor{t: t, onGap: onGap, epoch: t.epoch}
	switch from {
	case "":
		c.after = last
	case replay.Earliest:
		c.after = t.floor
	default:
		id, valid := parseID(from)
		start, fromStart := t.lifeStart()
		switch {
		case !valid || last.less(id) || (fromStart && id != (streamID{}) && id.less(start)):
			// Never issued by the stream as Redis holds it now: made up,
			// ahead of it, or from a history Redis lost.
			c.after = t.gapTarget(onGap, last)
			c.gap = &replay.Gap{Reason: replay.GapUnknown, Requested: from, ResumeAfter: c.after.String()}
		case id.less(t.floor):
			c.after = t.gapTarget(onGap, last)
			c.gap = &replay.Gap{Reason: replay.GapExpired, Requested: from, ResumeAfter: c.after.String()}
		case t.closed && t.lastEvent.less(id) && id != t.end:
			// Between the last event and the close marker: never issued.
			c.after = t.gapTarget(onGap, last)
			c.gap = &replay.Gap{Reason: replay.GapUnknown, Requested: from, ResumeAfter: c.after.String()}
		case t.closed && !id.less(t.lastEvent):
			// The last event or the marker (where a GapLive cursor on a
			// closed topic resumes): nothing was missed.
			return nil, replay.ErrTopicClosed
		default:
			c.after = id
		}
	}
	if cfg.MaxSubscribersPerTopic > 0 && t.subscribers >= cfg.MaxSubscribersPerTopic {
		return nil, replay.ErrTooManySubscribers
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
