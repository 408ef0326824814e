package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

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
		if !l.valid() {
			// No answer from Redis confirmed the hold for a lease time:
			// it may have expired there, and another node taken over.
			l.markLost()
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
	fence, leaseName := "", ""
	if l != nil {
		keys = append(keys, k.fences)
		fence, leaseName = l.fenceArg(), l.name
	}
	args := make([]any, 0, 11+3*len(b.Events))
	args = append(args, cfg.MaxEvents, cfg.MaxBytes, cfg.MaxAge.Milliseconds(), cfg.DedupWindow.Milliseconds(),
		cfg.MaxDedupKeys, boolArg(tooLarge), b.Key, fence, leaseName, cfg.MaxAge.Milliseconds(), len(b.Events))
	for i, d := range b.Events {
		args = append(args, d.Type, d.Data, costs[i])
	}
	w, err := s.runWrite(ctx, appendScript, keys, args...)
	if err != nil {
		return replay.Appended{}, s.fail(ctx, err)
	}
	s.health.ok()
	res := w.res
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
		if err := s.acked(w); err != nil {
			return replay.Appended{}, err
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
		l.recordCursor(ctx, b.Cursor)
		l.setCursor(b.Cursor)
	}
	ackErr := s.acked(w)
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
	if ackErr != nil {
		// Stored on the master, but not acknowledged: the publisher
		// may send it again (with its idempotency key, safely).
		return replay.Appended{}, ackErr
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
	w, err := s.runWrite(ctx, closeScript, []string{k.log, k.meta}, cfg.MaxAge.Milliseconds())
	if err != nil {
		return s.fail(ctx, err)
	}
	s.health.ok()
	res := w.res
	switch {
	case len(res) == 1 && res[0] == "closed":
		return replay.ErrTopicClosed
	case len(res) == 3 && res[0] == "ok":
	default:
		return fmt.Errorf("redisstore: unexpected answer %q to close", res)
	}
	s.localSync(name, []rawEntry{{id: mustID(res[2]), prev: mustID(res[1]), marker: true}})
	return s.acked(w)
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
		t.ingest(entries) // follows the window's end: nothing to lose
		return
	}
	// Others appended in between (or Redis lost what the window holds):
	// settle reads them, then ours, or reloads. If that fails the tail,
	// Subscribe or the janitor catches up later.
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	_, _ = t.settle(ctx)
}
