package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// openStore opens a store with the client options mode sets, under a
// fresh prefix (tweaks may share another store's), closed when t ends.
func openStore(t testing.TB, mode func(*redisstore.Options), cfg replay.Config, tweak ...func(*redisstore.Options)) *redisstore.Store {
	t.Helper()
	opts := redisstore.Options{
		Prefix: fmt.Sprintf("t%d:", prefixes.Add(1)),
		Logger: zaptest.NewLogger(t),
		Linger: 300 * time.Millisecond,
	}
	mode(&opts)
	for _, f := range tweak {
		f(&opts)
	}
	if cfg.Framer == nil {
		cfg.Framer = replaytest.Framer
	}
	s, err := redisstore.New(context.Background(), opts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sentinelMode(ss *redistest.Sentinels) func(*redisstore.Options) {
	return func(o *redisstore.Options) {
		o.Sentinel = &redis.FailoverOptions{MasterName: ss.Master, SentinelAddrs: ss.Addrs()}
	}
}

func clusterMode(c *redistest.Cluster) func(*redisstore.Options) {
	return func(o *redisstore.Options) {
		o.Cluster = &redis.ClusterOptions{Addrs: c.Addrs()}
	}
}

func minReplicasAck(n int) func(*redisstore.Options) {
	return func(o *redisstore.Options) { o.MinReplicasAck = n }
}

// The conformance suite, through Sentinel: one master, one replica and
// three sentinels, every append acknowledged by the replica.
func TestSentinelConformance(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t)
	redistest.StartReplica(t, master)
	ss := redistest.StartSentinels(t, master, "sse", 3, 1)
	t.Run("Run", func(t *testing.T) {
		replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
			return openStore(t, sentinelMode(ss), cfg, minReplicasAck(1))
		})
	})
	t.Run("RunMulti", func(t *testing.T) {
		replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
			return openStore(t, sentinelMode(ss), cfg)
		}, false)
	})
	t.Run("RunDurable", func(t *testing.T) {
		replaytest.RunDurable(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
			cur := openStore(t, sentinelMode(ss), cfg)
			return cur, func() replay.Store {
				old := cur
				old.Close()
				cur = openStore(t, sentinelMode(ss), cfg, prefixOf(old))
				return cur
			}
		})
	})
}

// The conformance suite on a Redis Cluster of three masters: every topic
// of the suite lands on some master, and tails follow each slot.
func TestClusterConformance(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 0)
	t.Run("Run", func(t *testing.T) {
		replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
			return openStore(t, clusterMode(c), cfg)
		})
	})
	t.Run("RunDurable", func(t *testing.T) {
		replaytest.RunDurable(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
			cur := openStore(t, clusterMode(c), cfg)
			return cur, func() replay.Store {
				old := cur
				old.Close()
				cur = openStore(t, clusterMode(c), cfg, prefixOf(old))
				return cur
			}
		})
	})
	t.Run("RunMulti", func(t *testing.T) {
		replaytest.RunMulti(t, func(t *testing.T, cfg replay.Config) replay.Store {
			return openStore(t, clusterMode(c), cfg)
		}, false)
	})
	t.Run("LeaseAcrossSlots", func(t *testing.T) { testLeaseAcrossSlots(t, c) })
	t.Run("TopicsOnEveryMaster", func(t *testing.T) { testTopicsOnEveryMaster(t, c) })
}

// spreadTopics returns n topic names whose slots are served by different
// masters (as far as there are masters).
func spreadTopics(t *testing.T, c *redistest.Cluster, prefix string, n int) []string {
	t.Helper()
	seen := map[*redistest.Server]bool{}
	var out, rest []string
	for i := 0; len(out) < n && i < 200; i++ {
		name := fmt.Sprintf("/spread/%d", i)
		m := c.MasterOf(prefix + "{" + name + "}:log")
		if m == nil {
			t.Fatalf("no master serves %s", name)
		}
		if !seen[m] {
			seen[m] = true
			out = append(out, name)
		} else {
			rest = append(rest, name)
		}
	}
	for len(out) < n {
		out, rest = append(out, rest[0]), rest[1:]
	}
	return out
}

// A source holding a lease routes lines to topics on different masters
// (topic_field): each append is fenced in its own topic's slot. Once
// another node holds the lease and wrote to a topic, the old holder's
// appends there are refused; the cursor the old holder recorded is where
// the new one starts.
func testLeaseAcrossSlots(t *testing.T, c *redistest.Cluster) {
	a := openStore(t, clusterMode(c), replay.Config{}, func(o *redisstore.Options) { o.LeaseTTL = 600 * time.Millisecond })
	b := openStore(t, clusterMode(c), replay.Config{}, prefixOf(a), func(o *redisstore.Options) { o.LeaseTTL = 600 * time.Millisecond })
	topics := spreadTopics(t, c, a.Prefix(), 3)
	la, err := a.Lease(t.Context(), "router")
	if err != nil {
		t.Fatal(err)
	}
	fenced := func(s *redisstore.Store, l replay.Lease, topic, cursor, data string) error {
		_, err := s.Append(t.Context(), topic, replay.Batch{
			Events: []replay.Draft{{Type: "msg", Data: []byte(data)}},
			Key:    "source:" + cursor, Lease: l, Cursor: cursor,
		})
		return err
	}
	for i, topic := range topics {
		if err := fenced(a, la, topic, fmt.Sprint("c", i), "a"+fmt.Sprint(i)); err != nil {
			t.Fatalf("fenced append to %s: %v", topic, err)
		}
	}
	// B waits for the lease; A's hold is taken from it in Redis (as when
	// A stalls past the lease time) and B gets it.
	got := make(chan replay.Lease, 1)
	go func() {
		l, err := b.Lease(t.Context(), "router")
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	key := a.Prefix() + "lease:{router}"
	if err := a.Client().Del(t.Context(), key).Err(); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		return
	}
	if lb.Cursor() != "c2" {
		t.Fatalf("new holder starts from %q, want c2", lb.Cursor())
	}
	// The new holder reads line c2 again: its key drops it.
	res, err := b.Append(t.Context(), topics[2], replay.Batch{
		Events: []replay.Draft{{Type: "msg", Data: []byte("a2")}}, Key: "source:c2", Lease: lb, Cursor: "c2",
	})
	if err != nil || !res.Duplicate {
		t.Fatalf("new holder repeating c2: %+v, %v", res, err)
	}
	if err := fenced(b, lb, topics[0], "c3", "b3"); err != nil {
		t.Fatal(err)
	}
	// A has not noticed yet (its renewal comes later): Redis refuses it
	// on the topic B wrote, whatever its local state.
	if err := fenced(a, la, topics[0], "c3", "stale"); !errors.Is(err, replay.ErrLeaseLost) {
		t.Fatalf("old holder's append after the new holder wrote the topic: %v", err)
	}
	select {
	case <-la.Lost():
	case <-time.After(2 * time.Second):
		t.Fatal("old holder never noticed it lost the lease")
	}
	if err := fenced(a, la, topics[1], "c4", "stale"); !errors.Is(err, replay.ErrLeaseLost) {
		t.Fatalf("old holder's append after Lost: %v", err)
	}
	for i, want := range [][]string{{"a0", "b3"}, {"a1"}, {"a2"}} {
		cur := subscribe(t, b, topics[i], replay.Earliest)
		evs, _ := read(t, cur, len(want))
		var data []string
		for _, e := range evs {
			data = append(data, e[strings.IndexByte(e, ' ')+1:])
		}
		if !slices.Equal(data, want) {
			t.Fatalf("%s holds %q, want %q", topics[i], data, want)
		}
	}
	if v := a.Client().Get(t.Context(), a.Prefix()+"lease:{router}:cursor").Val(); v != "c3" {
		t.Fatalf("recorded cursor %q, want c3", v)
	}
}

// Subscribers on one node follow topics on every master at once; what the
// other node appends reaches them in order.
func testTopicsOnEveryMaster(t *testing.T, c *redistest.Cluster) {
	a := openStore(t, clusterMode(c), replay.Config{})
	b := openStore(t, clusterMode(c), replay.Config{}, prefixOf(a))
	topics := spreadTopics(t, c, a.Prefix(), 6)
	curs := make([]replay.Cursor, len(topics))
	for i, topic := range topics {
		curs[i] = subscribe(t, b, topic, "")
	}
	want := make([][]string, len(topics))
	for round := range 5 {
		for i, topic := range topics {
			d := fmt.Sprintf("%d-%d", i, round)
			want[i] = append(want[i], appendData(t, a, topic, d)[0]+" "+d)
		}
	}
	for i := range topics {
		got, gap := read(t, curs[i], 5)
		if gap != nil || !slices.Equal(got, want[i]) {
			t.Fatalf("%s: got %q (gap %+v), want %q", topics[i], got, gap, want[i])
		}
	}
}

// publishAll appends n events (data "0".."n-1", each with its own
// idempotency key) to topic through stores round robin, retrying each
// until it is acknowledged; it returns the acknowledged ids in order and
// how many attempts were refused as unavailable.
func publishAll(ctx context.Context, stores []*redisstore.Store, topic string, n int, pace time.Duration, after func(i int)) (ids []string, refused int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i := range n {
		for attempt := 0; ; attempt++ {
			s := stores[(i+attempt)%len(stores)]
			res, err := s.Append(ctx, topic, replay.Batch{
				Events: []replay.Draft{{Type: "msg", Data: []byte(fmt.Sprint(i))}},
				Key:    fmt.Sprint("k", i),
			})
			if err == nil {
				ids = append(ids, res.IDs[0])
				break
			}
			if !errors.Is(err, replay.ErrUnavailable) {
				return ids, refused, fmt.Errorf("event %d: %w", i, err)
			}
			refused++
			if ctx.Err() != nil {
				return ids, refused, ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
		}
		if after != nil {
			after(i)
		}
		time.Sleep(pace)
	}
	return ids, refused, nil
}

// readAll reads n events from c (failing on a gap), within d.
func readAll(t *testing.T, c replay.Cursor, n int, d time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for len(got) < n {
		p, err := c.Next(100)
		if err != nil {
			t.Errorf("Next: %v", err)
			return got
		}
		if p.Gap != nil {
			t.Errorf("gap %+v after %d events", p.Gap, len(got))
		}
		for _, e := range p.Events {
			got = append(got, e.ID+" "+string(e.Data))
		}
		if len(p.Events) == 0 {
			select {
			case <-p.Wait:
			case <-deadline.C:
				t.Errorf("waited %v for %d events, got %d", d, n, len(got))
				return got
			}
		}
	}
	return got
}

// Sentinel fails the master over while two nodes publish and subscribe:
// publishes are refused (ErrUnavailable, which the handler answers 503)
// until a replica is promoted, and every acknowledged event reaches every
// subscriber once, in order. With min_replicas_ack 1 the promoted replica
// has each of them; the old master, restarted, rejoins as its replica so
// that acknowledgements resume.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t)
	replica := redistest.StartReplica(t, master)
	ss := redistest.StartSentinels(t, master, "sse", 3, 1)
	mode := sentinelMode(ss)
	a := openStore(t, mode, replay.Config{MaxEvents: 1000}, minReplicasAck(1))
	b := openStore(t, mode, replay.Config{MaxEvents: 1000}, minReplicasAck(1), prefixOf(a))
	const topic, n = "/failover", 80
	curA := subscribe(t, a, topic, "")
	curB := subscribe(t, b, topic, "")

	killed := make(chan struct{})
	ids, refused, err := publishAll(t.Context(), []*redisstore.Store{a, b}, topic, n, 10*time.Millisecond, func(i int) {
		if i != 30 {
			return
		}
		master.Crash()
		close(killed)
		go func() {
			// A supervisor brings the dead master back once Sentinel has
			// promoted the replica; Sentinel makes it a replica.
			deadline := time.Now().Add(20 * time.Second)
			for ss.MasterAddr() != replica.Addr && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			master.Restart()
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-killed
	if refused == 0 {
		t.Error("no publish was refused while the master was down")
	}
	if got := ss.MasterAddr(); got != replica.Addr {
		t.Fatalf("sentinels name %s as master, want the promoted replica %s", got, replica.Addr)
	}
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("%s %d", ids[i], i)
	}
	for name, c := range map[string]replay.Cursor{"A": curA, "B": curB} {
		if got := readAll(t, c, n, 20*time.Second); !slices.Equal(got, want) {
			t.Errorf("subscriber on %s read %q,\nwant %q", name, got, want)
		}
	}
	// A client resuming on either node after the failover gets the rest.
	for _, s := range []*redisstore.Store{a, b} {
		c := subscribe(t, s, topic, ids[20])
		if got := readAll(t, c, n-21, 5*time.Second); !slices.Equal(got, want[21:]) {
			t.Errorf("resumed after %s: %q", ids[20], got)
		}
	}
	t.Logf("%d publishes refused during the failover", refused)
}

// One master of a cluster (with replicas) dies while both nodes publish to
// topics on every master and subscribe to them: the topics of the dead
// master are refused until its replica takes over; nothing acknowledged
// is lost, duplicated or reordered for any subscriber.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 1)
	a := openStore(t, clusterMode(c), replay.Config{}, minReplicasAck(1))
	b := openStore(t, clusterMode(c), replay.Config{}, minReplicasAck(1), prefixOf(a))
	topics := spreadTopics(t, c, a.Prefix(), 3)
	key0 := a.Prefix() + "{" + topics[0] + "}:log"
	victim := c.MasterOf(key0)
	const n = 40
	type sub struct {
		name string
		cur  replay.Cursor
	}
	subs := make([][]sub, len(topics))
	for i, topic := range topics {
		subs[i] = []sub{{"A", subscribe(t, a, topic, "")}, {"B", subscribe(t, b, topic, "")}}
	}
	var wg sync.WaitGroup
	ids := make([][]string, len(topics))
	refused := make([]int, len(topics))
	for i, topic := range topics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			ids[i], refused[i], err = publishAll(t.Context(), []*redisstore.Store{a, b}, topic, n, 20*time.Millisecond, func(j int) {
				if i == 0 && j == 15 {
					victim.Crash()
					go func() {
						// Its replica takes over; the old master comes back
						// (a supervisor) as the new master's replica, so
						// that acknowledgements resume.
						deadline := time.Now().Add(20 * time.Second)
						for c.MasterOf(key0) == nil || c.MasterOf(key0) == victim {
							if time.Now().After(deadline) {
								return
							}
							time.Sleep(100 * time.Millisecond)
						}
						victim.Restart()
					}()
				}
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if refused[0] == 0 {
		t.Error("no publish to the dead master's topic was refused")
	}
	for i := range topics {
		want := make([]string, n)
		for j := range n {
			want[j] = fmt.Sprintf("%s %d", ids[i][j], j)
		}
		for _, s := range subs[i] {
			if got := readAll(t, s.cur, n, 20*time.Second); !slices.Equal(got, want) {
				t.Errorf("%s on %s read %q,\nwant %q", topics[i], s.name, got, want)
			}
		}
		// Resume on the other node.
		cur := subscribe(t, b, topics[i], ids[i][9])
		if got := readAll(t, cur, n-10, 5*time.Second); !slices.Equal(got, want[10:]) {
			t.Errorf("%s resumed after %s: %q", topics[i], ids[i][9], got)
		}
	}
	t.Logf("refused during the failover: %v", refused)
}
