package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/caddy-sse/replay"
)

// errNotReplicated: WAIT saw fewer replicas than MinReplicasAck hold a
// write within ReplicaAckTimeout. The write is on the master and may still
// reach the replicas, or be lost with the master.
var errNotReplicated = errors.New("fewer replicas than min_replicas_ack confirmed the write")

// writer is the connection pool a write to key goes to: the store's
// client, or on Cluster the client of the master that owns key's slot, so
// that a write is sent exactly once (the cluster client would retry it
// after a timeout) and WAIT runs on the connection that wrote.
func (s *Store) writer(ctx context.Context, key string) (*redis.Client, error) {
	if s.cluster == nil {
		return s.client.(*redis.Client), nil
	}
	return s.cluster.MasterForKey(ctx, key)
}

// written is the outcome of runWrite.
type written struct {
	res []string
	// replicas is what WAIT answered (MinReplicasAck > 0 only), and
	// waitErr why it did not answer.
	replicas int64
	waitErr  error
	// target is how many replicas WAIT asked for (0: no WAIT).
	target int
}

// ackTarget is how many replicas a write to c's master must reach:
// MinReplicasAck, but no more than the replicas the master has connected,
// as the janitor read them within the last second. A master left without
// replicas (its replica was promoted away from it, or after a failover
// the new master has none yet) acknowledges on its own: there is nothing a
// failover could promote, and refusing every publish until a replica
// returns would turn one failure into an outage. Until the janitor has
// read a master, the full MinReplicasAck applies.
func (s *Store) ackTarget(c *redis.Client) int {
	n := s.opts.MinReplicasAck
	if n == 0 {
		return 0
	}
	addr := ""
	if s.cluster != nil {
		addr = c.Options().Addr
	}
	if v, ok := s.replicas.Load(addr); ok {
		n = min(n, v.(int))
	}
	return n
}

// runWrite runs a write script whose keys share one slot, on that slot's
// master. On Cluster a MOVED or ASK answer (the script did not run: the
// slot moved, or a replica was promoted) reloads the slot map and tries
// again, a few times within ctx. With MinReplicasAck set, WAIT follows the
// script on the same connection.
func (s *Store) runWrite(ctx context.Context, script *redis.Script, keys []string, args ...any) (written, error) {
	for attempt := 0; ; attempt++ {
		c, err := s.writer(ctx, keys[0])
		var w written
		if err == nil {
			if target := s.ackTarget(c); target > 0 {
				w, err = s.runAcked(ctx, c, script, keys, args, target)
				w.target = target
			} else {
				w.res, err = script.Run(ctx, c, keys, args...).StringSlice()
			}
		}
		if s.cluster == nil || attempt >= 4 || !redirected(err) {
			return w, err
		}
		s.cluster.ReloadState(ctx)
		t := time.NewTimer(time.Duration(attempt+1) * 50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return w, err
		case <-t.C:
		}
	}
}

// redirected: the cluster did not run the command where it was sent.
func redirected(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		// A master that went away: the slot map may name its successor.
		return err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && isDialError(err)
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ") || strings.HasPrefix(msg, "TRYAGAIN") || strings.HasPrefix(msg, "CLUSTERDOWN")
}

// isDialError: the connection was never made, so nothing was sent.
func isDialError(err error) bool {
	return strings.Contains(err.Error(), "dial tcp") || strings.Contains(err.Error(), "connection refused")
}

// runAcked runs the script and WAIT in one pipeline: one connection, so
// WAIT counts the replicas that hold this script's writes (and, as the
// replication stream is ordered, everything written before them).
func (s *Store) runAcked(ctx context.Context, c *redis.Client, script *redis.Script, keys []string, args []any, target int) (written, error) {
	timeout := s.opts.ReplicaAckTimeout
	for range 2 {
		pipe := c.Pipeline()
		ev := script.EvalSha(ctx, pipe, keys, args...)
		wait := pipe.Do(ctx, "WAIT", target, timeout.Milliseconds())
		_, _ = pipe.Exec(ctx)
		if err := ev.Err(); err != nil {
			if strings.HasPrefix(err.Error(), "NOSCRIPT") {
				if err := script.Load(ctx, c).Err(); err != nil {
					return written{}, err
				}
				continue
			}
			return written{}, err
		}
		res, err := ev.StringSlice()
		if err != nil {
			return written{}, err
		}
		n, err := wait.Int64()
		if err != nil {
			// The write happened; whether a replica has it is unknown.
			return written{res: res, waitErr: fmt.Errorf("%w: WAIT: %v", errNotReplicated, err)}, nil
		}
		return written{res: res, replicas: n}, nil
	}
	return written{}, errors.New("redisstore: script missing after loading it")
}

// acked checks what WAIT said about a write that Redis applied.
func (s *Store) acked(w written) error {
	if w.target == 0 {
		return nil
	}
	err := w.waitErr
	if err == nil && w.replicas >= int64(w.target) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("%w: %d of %d within %v", errNotReplicated, w.replicas, w.target, s.opts.ReplicaAckTimeout)
	}
	return fmt.Errorf("%w: redis at %s: %v (the write may still survive)", replay.ErrUnavailable, s.addr, err)
}

// slotOf is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag, or of the whole key when it has none, modulo 16384.
func slotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
