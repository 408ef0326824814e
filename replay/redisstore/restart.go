package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A Redis that restarts may come back with its data (RDB, AOF) or without
// it (no persistence, or another server behind the same address); a flush
// loses it without a restart. Nodes hold windows of what Redis had; one
// that kept serving them while another node, reading Redis, answered reset
// would split the cluster. So the janitor asks Redis every second for its
// run_id (INFO server), which changes on every start, and on a change
// checks each window against Redis: only windows that hold entries Redis
// no longer has are reloaded (their cursors get a reset), so a restart that
// kept the data costs one round trip. Whatever the cause, Subscribe and the
// tail notice the same per topic (see topic.settle and topic.ingest).

// probe checks that Redis answers, and notices a restart.
func (s *Store) probe(ctx context.Context) {
	if s.infoDenied.Load() {
		if err := s.client.Ping(ctx).Err(); err != nil {
			_ = s.fail(ctx, err)
			return
		}
		s.health.ok()
		return
	}
	id, err := s.runID(ctx)
	var rerr redis.Error
	if errors.As(err, &rerr) && !transient(rerr.Error()) {
		// An ACL without INFO: restarts are still noticed per topic.
		s.infoDenied.Store(true)
		s.log.Warn("redis refuses INFO: a restart that lost data is noticed per topic only", zap.Error(err))
		s.probe(ctx)
		return
	}
	if err != nil {
		_ = s.fail(ctx, err)
		return
	}
	s.health.ok()
	prev := s.serverID.Swap(&id)
	if prev != nil && *prev != id {
		s.log.Info("redis restarted: checking this node's windows against it",
			zap.String("addr", s.addr), zap.String("run_id", id))
		if err := s.recheck(ctx); err != nil {
			// Not all windows could be checked: check again next time.
			s.serverID.CompareAndSwap(&id, prev)
		}
	}
}

// runID is the run_id of the master (on Sentinel, the current one: a
// failover changes it, and windows holding writes the new master never
// got are reloaded like after a restart), or on Cluster the run_ids of
// all masters, sorted.
func (s *Store) runID(ctx context.Context) (string, error) {
	if s.cluster == nil {
		return s.runIDOf(ctx, s.client, "")
	}
	var mu sync.Mutex
	var ids []string
	err := s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		id, err := s.runIDOf(ctx, c, c.Options().Addr)
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return err
	})
	if err != nil {
		return "", err
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), nil
}

// runIDOf reads the run_id of one master and, when MinReplicasAck is set,
// how many replicas it has connected (see ackTarget); addr names the
// master on Cluster ("" otherwise).
func (s *Store) runIDOf(ctx context.Context, c redis.Cmdable, addr string) (string, error) {
	sections := []string{"server"}
	if s.opts.MinReplicasAck > 0 {
		sections = append(sections, "replication")
	}
	info, err := c.Info(ctx, sections...).Result()
	if err != nil {
		return "", err
	}
	id := ""
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			id = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "connected_slaves:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				s.replicas.Store(addr, n)
			}
		}
	}
	if id == "" {
		return "", errors.New("redisstore: INFO server has no run_id")
	}
	return id, nil
}

// recheck compares every window with Redis after a restart and reloads
// those that hold more than Redis has.
func (s *Store) recheck(ctx context.Context) error {
	// Registrations are counted again on the next write: the registry may
	// be gone with the rest, and re-registering is cheap.
	s.regMu.Lock()
	clear(s.reg)
	s.regMu.Unlock()

	topics := s.loadedTopics()
	if len(topics) == 0 {
		return nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(topics))
	for i, t := range topics {
		cmds[i] = pipe.HMGet(ctx, t.keys.meta, "last", "closed")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return s.fail(ctx, err)
	}
	var errs []error
	for i, t := range topics {
		if !t.isLoaded() || !metaState(cmds[i].Val()).last.less(t.windowEnd()) {
			continue
		}
		t.syncMu.Lock()
		_, err := t.settle(ctx)
		t.syncMu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("topic %q: %w", t.name, err))
		}
	}
	return errors.Join(errs...)
}
