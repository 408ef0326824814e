package caddysse

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/stream"
)

// Presence across nodes. A store that several nodes share and that hands
// out its Redis client (the Redis store) gets each node's subscriber counts
// recorded next to its topics: every presenceInterval, a node replaces its
// hash <prefix>presence:<node> (topic -> counts by transport) and refreshes
// its score in the sorted set <prefix>presence:nodes. Both expire after
// presenceTTL, so a node that died stops being counted within it. The admin
// API adds the other nodes' last reports to this node's live counts.
const (
	presenceInterval = 2 * time.Second
	presenceTTL      = 10 * time.Second
)

// presenceStore is a store whose presence the admin API records in Redis.
type presenceStore interface {
	Client() redis.UniversalClient
	Prefix() string
}

// The Redis store is one (a compile-time check: a mismatch would turn
// presence off silently, as the store is only asserted to be one).
var _ presenceStore = (*redisstore.Store)(nil)

// node names this process among the nodes sharing a store: its host name
// and process id.
var node = func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}()

var presenceReporter struct {
	mu   sync.Mutex
	stop chan struct{} // nil when not running
}

// startPresence runs the reporter while a handler on a shared store is
// registered.
func startPresence() {
	presenceReporter.mu.Lock()
	defer presenceReporter.mu.Unlock()
	if presenceReporter.stop == nil {
		presenceReporter.stop = make(chan struct{})
		go reportPresence(presenceReporter.stop)
	}
}

// stopPresenceIfIdle stops the reporter once no registered handler uses a
// shared store.
func stopPresenceIfIdle() {
	presenceReporter.mu.Lock()
	defer presenceReporter.mu.Unlock()
	if presenceReporter.stop == nil || len(sharedViews()) > 0 {
		return
	}
	close(presenceReporter.stop)
	presenceReporter.stop = nil
}

func sharedViews() []*storeView {
	var shared []*storeView
	for _, sv := range views() {
		if _, ok := sv.store.(presenceStore); ok {
			shared = append(shared, sv)
		}
	}
	return shared
}

// reportPresence reports this node's presence for every shared store, and
// listens on each for the disconnects other nodes ask for, until stop.
func reportPresence(stop <-chan struct{}) {
	tick := time.NewTicker(presenceInterval)
	defer tick.Stop()
	listeners := map[replay.Store]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range listeners {
			cancel()
		}
		wg.Wait()
	}()
	for {
		seen := map[replay.Store]bool{}
		for _, sv := range sharedViews() {
			seen[sv.store] = true
			if listeners[sv.store] == nil {
				ctx, cancel := context.WithCancel(context.Background())
				listeners[sv.store] = cancel
				wg.Add(1)
				go func(store replay.Store) {
					defer wg.Done()
					listenDisconnects(ctx, store)
				}(sv.store)
			}
			_ = sv.report() // best effort: a Redis that is down is reported by the store
		}
		for store, cancel := range listeners {
			if !seen[store] {
				cancel()
				delete(listeners, store)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// disconnectMsg asks every node sharing a store to disconnect a topic's
// subscribers (DELETE /sse/topics/<topic>/subscribers on one of them).
type disconnectMsg struct {
	Node   string `json:"node"`
	Topic  string `json:"topic"`
	Reason string `json:"reason,omitempty"`
}

func disconnectChannel(ps presenceStore) string { return ps.Prefix() + "{presence}:disconnect" }

// askOthersToDisconnect publishes a disconnect for the other nodes.
func (sv *storeView) askOthersToDisconnect(ctx context.Context, topic, reason string) error {
	ps, ok := sv.store.(presenceStore)
	if !ok {
		return nil
	}
	b, _ := json.Marshal(disconnectMsg{Node: node, Topic: topic, Reason: reason})
	return ps.Client().Publish(ctx, disconnectChannel(ps), b).Err()
}

// listenDisconnects carries out, on this node, the disconnects other nodes
// publish for store, until ctx ends.
func listenDisconnects(ctx context.Context, store replay.Store) {
	ps := store.(presenceStore)
	sub := ps.Client().Subscribe(ctx, disconnectChannel(ps))
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			var msg disconnectMsg
			if json.Unmarshal([]byte(m.Payload), &msg) != nil || msg.Node == node {
				continue
			}
			for _, sv := range views() {
				if sv.store == store {
					for _, h := range sv.handlers {
						h.streams.Disconnect(msg.Topic, msg.Reason)
					}
				}
			}
		}
	}
}

// The keys share the hash tag {presence}: on Redis Cluster they are in one
// slot, so the report's transaction runs there.
func presenceKeys(ps presenceStore, n string) (hash, nodes string) {
	return ps.Prefix() + "{presence}:" + n, ps.Prefix() + "{presence}:nodes"
}

// report writes this node's counts for the store's topics.
func (sv *storeView) report() error {
	ps := sv.store.(presenceStore)
	counts := map[string]stream.Presence{}
	for _, h := range sv.handlers {
		for _, topic := range h.streams.Topics() {
			counts[topic] = counts[topic].Add(h.streams.Presence(topic))
		}
	}
	hash, nodes := presenceKeys(ps, node)
	ctx, cancel := context.WithTimeout(context.Background(), presenceInterval)
	defer cancel()
	now := time.Now()
	pipe := ps.Client().TxPipeline()
	pipe.Del(ctx, hash)
	if len(counts) > 0 {
		fields := make([]any, 0, 2*len(counts))
		for topic, p := range counts {
			b, _ := json.Marshal(transports(p))
			fields = append(fields, topic, string(b))
		}
		pipe.HSet(ctx, hash, fields...)
		pipe.PExpire(ctx, hash, presenceTTL)
	}
	pipe.ZAdd(ctx, nodes, redis.Z{Score: float64(now.UnixMilli()), Member: node})
	pipe.ZRemRangeByScore(ctx, nodes, "-inf", strconv.FormatInt(now.Add(-presenceTTL).UnixMilli(), 10))
	pipe.PExpire(ctx, nodes, 3*presenceTTL)
	_, err := pipe.Exec(ctx)
	return err
}

// nodeCounts are one node's counts for one topic.
type nodeCounts struct {
	node string
	t    transportsJSON
}

func (t transportsJSON) total() int {
	return t.HTTP1Parked + t.HTTP1Detached + t.HTTP1InRequest + t.HTTP2 + t.HTTP3
}

// remote reads the other nodes' last reports for the store: topic -> the
// counts of each node that has subscribers to it. A store that keeps no
// presence has none.
func (sv *storeView) remote(ctx context.Context) (map[string][]nodeCounts, error) {
	ps, ok := sv.store.(presenceStore)
	if !ok {
		return nil, nil
	}
	_, nodesKey := presenceKeys(ps, node)
	c := ps.Client()
	alive, err := c.ZRangeByScore(ctx, nodesKey, &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().Add(-presenceTTL).UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("reading presence: %w", err)
	}
	sort.Strings(alive)
	pipe := c.Pipeline()
	cmds := map[string]*redis.MapStringStringCmd{}
	for _, n := range alive {
		if n != node {
			hash, _ := presenceKeys(ps, n)
			cmds[n] = pipe.HGetAll(ctx, hash)
		}
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("reading presence: %w", err)
	}
	out := map[string][]nodeCounts{}
	for _, n := range alive {
		cmd := cmds[n]
		if cmd == nil {
			continue
		}
		for topic, v := range cmd.Val() {
			var t transportsJSON
			if json.Unmarshal([]byte(v), &t) == nil && t.total() > 0 {
				out[topic] = append(out[topic], nodeCounts{n, t})
			}
		}
	}
	return out, nil
}

func addTransports(a, b transportsJSON) transportsJSON {
	return transportsJSON{a.HTTP1Parked + b.HTTP1Parked, a.HTTP1Detached + b.HTTP1Detached, a.HTTP1InRequest + b.HTTP1InRequest, a.HTTP2 + b.HTTP2, a.HTTP3 + b.HTTP3}
}
