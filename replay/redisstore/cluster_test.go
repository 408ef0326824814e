package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
)

// twoNodes opens two stores on one Redis with the same prefix: two Caddy
// nodes sharing topics.
func twoNodes(t *testing.T, srv *redistest.Server, cfg replay.Config, tweak ...func(*redisstore.Options)) (a, b *redisstore.Store) {
	t.Helper()
	a = newStore(t, srv, cfg, tweak...)
	b = newStore(t, srv, cfg, append(tweak, prefixOf(a))...)
	return a, b
}

func appendData(t *testing.T, s replay.Store, topic string, data ...string) []string {
	t.Helper()
	drafts := make([]replay.Draft, len(data))
	for i, d := range data {
		drafts[i] = replay.Draft{Type: "msg", Data: []byte(d)}
	}
	res, err := s.Append(t.Context(), topic, replay.Batch{Events: drafts})
	if err != nil {
		t.Fatalf("Append(%q): %v", topic, err)
	}
	return res.IDs
}

func subscribe(t *testing.T, s replay.Store, topic, from string) replay.Cursor {
	t.Helper()
	c, err := s.Subscribe(t.Context(), topic, from, replay.GapReplay)
	if err != nil {
		t.Fatalf("Subscribe(%q, %q): %v", topic, from, err)
	}
	t.Cleanup(c.Close)
	return c
}

// read blocks on c until it delivered n events (or fails after 10s),
// returning "id data" pairs and any gap.
func read(t *testing.T, c replay.Cursor, n int) ([]string, *replay.Gap) {
	t.Helper()
	var got []string
	var gap *replay.Gap
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for len(got) < n {
		p, err := c.Next(100)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if p.Gap != nil && gap == nil {
			gap = p.Gap
		}
		for _, e := range p.Events {
			got = append(got, e.ID+" "+string(e.Data))
		}
		if p.Closed {
			break
		}
		if len(p.Events) == 0 {
			select {
			case <-p.Wait:
			case <-deadline.C:
				t.Fatalf("waited 10s for %d events, got %d: %q", n, len(got), got)
			}
		}
	}
	return got, gap
}

func pairs(ids []string, data ...string) []string {
	out := make([]string, len(ids))
	for i := range ids {
		out[i] = ids[i] + " " + data[i]
	}
	return out
}

// What one node appends, another node's subscribers get (through its tail,
// not its own appends), and a cursor moves between nodes with its id.
func TestTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{})

	onB := subscribe(t, b, "/room", "")
	var ids, data []string
	for i := range 10 {
		d := []string{fmt.Sprintf("e%d-0", i), fmt.Sprintf("e%d-1", i)}
		ids = append(ids, appendData(t, a, "/room", d...)...)
		data = append(data, d...)
	}
	got, gap := read(t, onB, 20)
	if gap != nil || !slices.Equal(got, pairs(ids, data...)) {
		t.Fatalf("B read %q (gap %+v), want %q", got, gap, pairs(ids, data...))
	}
	// The subscriber leaves B after the 7th event and resumes on A.
	onA := subscribe(t, a, "/room", ids[6])
	got, gap = read(t, onA, 13)
	if gap != nil || !slices.Equal(got, pairs(ids[7:], data[7:]...)) {
		t.Fatalf("resumed on A after %s: %q (gap %+v)", ids[6], got, gap)
	}
	// And back on B with the position A's cursor reports, after more
	// appends on B.
	pos := onA.Position()
	more := appendData(t, b, "/room", "x", "y")
	onB2 := subscribe(t, b, "/room", pos)
	got, gap = read(t, onB2, 2)
	if gap != nil || !slices.Equal(got, pairs(more, "x", "y")) {
		t.Fatalf("resumed on B after %s: %q (gap %+v)", pos, got, gap)
	}
	got, _ = read(t, onA, 2)
	if !slices.Equal(got, pairs(more, "x", "y")) {
		t.Fatalf("A's cursor read %q of B's appends", got)
	}

	// Closing on A ends B's readers and refuses B's later calls.
	if err := a.CloseTopic(t.Context(), "/room"); err != nil {
		t.Fatal(err)
	}
	got, _ = read(t, onB, 3)
	if !slices.Equal(got, pairs(more, "x", "y")) {
		t.Fatalf("B's first cursor read %q before Closed", got)
	}
	if _, err := b.Subscribe(t.Context(), "/room", "", replay.GapReplay); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("Subscribe on B after the close on A: %v", err)
	}
	if _, err := b.Append(t.Context(), "/room", replay.Batch{Events: []replay.Draft{{Data: []byte("z")}}}); !errors.Is(err, replay.ErrTopicClosed) {
		t.Fatalf("Append on B after the close on A: %v", err)
	}
}

// An idempotency key seen by one node is a duplicate on the other.
func TestDedupAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{})
	batch := replay.Batch{Events: []replay.Draft{{Data: []byte("1")}, {Data: []byte("2")}}, Key: "delivery-7"}
	first, err := a.Append(t.Context(), "/hook", batch)
	if err != nil || first.Duplicate {
		t.Fatalf("first append: %+v, %v", first, err)
	}
	again, err := b.Append(t.Context(), "/hook", batch)
	if err != nil || !again.Duplicate || !slices.Equal(again.IDs, first.IDs) {
		t.Fatalf("retry on the other node: %+v, %v; want a duplicate of %q", again, err, first.IDs)
	}
	if n := b.Client().XLen(t.Context(), a.Prefix()+"{/hook}:log").Val(); n != 2 {
		t.Fatalf("the stream holds %d entries, want 2", n)
	}
}

// Bounds hold in Redis itself, and an id older than the trim gets a gap.
func TestTrimInRedis(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv, replay.Config{MaxEvents: 10})
	var ids []string
	for i := range 50 {
		ids = append(ids, appendData(t, s, "/t", fmt.Sprint(i))...)
	}
	log := s.Prefix() + "{/t}:log"
	if n := s.Client().XLen(t.Context(), log).Val(); n != 10 {
		t.Fatalf("XLEN = %d with events 10", n)
	}
	c := subscribe(t, s, "/t", ids[5])
	got, gap := read(t, c, 10)
	if gap == nil || gap.Reason != replay.GapExpired || gap.ResumeAfter != ids[39] {
		t.Fatalf("resuming after a trimmed id: gap %+v, want expired resuming after %s", gap, ids[39])
	}
	if want := ids[40:]; len(got) != 10 || !strings.HasPrefix(got[0], want[0]+" ") {
		t.Fatalf("after the gap read %q", got)
	}

	// The byte bound: 1 KiB events under 8 KiB.
	s2 := newStore(t, srv, replay.Config{MaxBytes: 8 << 10})
	for i := range 30 {
		appendData(t, s2, "/big", fmt.Sprintf("%02d%s", i, strings.Repeat("x", 1<<10)))
	}
	n := s2.Client().XLen(t.Context(), s2.Prefix()+"{/big}:log").Val()
	bytes, _ := s2.Client().HGet(t.Context(), s2.Prefix()+"{/big}:meta", "bytes").Int64()
	if n < 1 || n > 4 || bytes > 8<<10 {
		t.Fatalf("under MaxBytes 8 KiB Redis holds %d events of 1 KiB charged %d bytes", n, bytes)
	}

	// Age: events older than the bound go on the next append.
	s3 := newStore(t, srv, replay.Config{MaxAge: 300 * time.Millisecond})
	appendData(t, s3, "/old", "a", "b", "c")
	time.Sleep(400 * time.Millisecond)
	appendData(t, s3, "/old", "d")
	if n := s3.Client().XLen(t.Context(), s3.Prefix()+"{/old}:log").Val(); n != 1 {
		t.Fatalf("after MaxAge, XLEN = %d, want 1", n)
	}
}

// A node follows many topics over a few connections.
func TestManyTopicsFewConnections(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{}, func(o *redisstore.Options) { o.StreamsPerConn = 8 })
	const topics = 50
	cursors := make([]replay.Cursor, topics)
	for i := range cursors {
		cursors[i] = subscribe(t, b, fmt.Sprintf("/t/%d", i), "")
	}
	ids := make([][]string, topics)
	for i := range topics {
		ids[i] = appendData(t, a, fmt.Sprintf("/t/%d", i), fmt.Sprint(i))
	}
	for i, c := range cursors {
		got, _ := read(t, c, 1)
		if !slices.Equal(got, pairs(ids[i], fmt.Sprint(i))) {
			t.Fatalf("topic %d: read %q", i, got)
		}
	}
	list, err := a.Client().ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(list, "cmd=xread"); n < 1 || n > (topics+7)/8 {
		t.Fatalf("%d connections blocked in XREAD for %d topics at 8 per connection:\n%s", n, topics, list)
	}
	// When the subscribers leave, the node stops tailing (after the
	// linger) and closes the tail connections.
	for _, c := range cursors {
		c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		list := a.Client().ClientList(t.Context()).Val()
		if strings.Count(list, "cmd=xread") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tail connections still open 5s after the last subscriber left:\n%s", list)
		}
	}
}

// Redis goes away and comes back with its data: writes fail fast with
// ErrUnavailable meanwhile (and the store does not pile up goroutines),
// open cursors stay open and get what is appended after the return.
func TestOutage(t *testing.T) {
	before := goleak.IgnoreCurrent()
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{})
	onB := subscribe(t, b, "/t", "")
	first := appendData(t, a, "/t", "1", "2", "3")
	if got, _ := read(t, onB, 3); len(got) != 3 {
		t.Fatalf("read %q", got)
	}
	last := appendData(t, a, "/t", "4") // maybe not read before the outage
	baseline := runtime.NumGoroutine()

	srv.Stop()
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		start := time.Now()
		_, err := a.Append(t.Context(), "/t", replay.Batch{Events: []replay.Draft{{Data: []byte("lost")}}})
		if !errors.Is(err, replay.ErrUnavailable) {
			t.Fatalf("Append during the outage: %v", err)
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Fatalf("Append took %v to fail", took)
		}
		if i%10 == 0 {
			if _, err := b.Subscribe(t.Context(), "/t", "", replay.GapReplay); !errors.Is(err, replay.ErrUnavailable) {
				t.Fatalf("Subscribe during the outage: %v", err)
			}
			if err := a.CloseTopic(t.Context(), "/t"); !errors.Is(err, replay.ErrUnavailable) {
				t.Fatalf("CloseTopic during the outage: %v", err)
			}
			if n := runtime.NumGoroutine(); n > baseline+20 {
				t.Fatalf("%d goroutines during the outage, %d before it", n, baseline)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a.Up() || b.Up() {
		t.Fatal("Up() during the outage")
	}
	// The open cursor is still open: it reads what it has, then waits.
	p, err := onB.Next(10)
	if err != nil || p.Closed {
		t.Fatalf("Next during the outage: %+v, %v", p, err)
	}
	seen := len(p.Events)

	srv.Restart()
	var after []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		res, err := a.Append(t.Context(), "/t", replay.Batch{Events: []replay.Draft{{Data: []byte("5")}}})
		if err == nil {
			after = res.IDs
			break
		}
		if !errors.Is(err, replay.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Append after Redis returned: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after = append(after, appendData(t, a, "/t", "6")...)
	got, gap := read(t, onB, 3-seen)
	want := pairs(append(slices.Clone(last), after...), "4", "5", "6")[seen:]
	if gap != nil || !slices.Equal(got, want) {
		t.Fatalf("after the outage B read %q (gap %+v), want %q", got, gap, want)
	}
	if !a.Up() || a.Outages() != 1 {
		t.Fatalf("after the outage: Up %v, Outages %d", a.Up(), a.Outages())
	}
	_ = first

	// Everything stops with the stores.
	onB.Close()
	a.Close()
	b.Close()
	var leak error
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		// The redis-server process (restarted, so newer than before)
		// is the test's, not the store's.
		if leak = goleak.Find(before,
			goleak.IgnoreAnyFunction("github.com/ssegate/caddy-sse/internal/redistest.(*Server).start.func1"),
			goleak.IgnoreAnyFunction("os/exec.(*Cmd).writerDescriptor.func1"),
		); leak == nil {
			break
		}
	}
	if leak != nil {
		t.Fatalf("goroutines left after Close: %v", leak)
	}
}

// One holder at a time; a released lease passes on with its cursor;
// a former holder's fenced appends are refused.
func TestLease(t *testing.T) {
	srv := redistest.Start(t)
	ttl := 600 * time.Millisecond
	a, b := twoNodes(t, srv, replay.Config{}, func(o *redisstore.Options) { o.LeaseTTL = ttl })

	la, err := a.Lease(t.Context(), "source-1")
	if err != nil {
		t.Fatal(err)
	}
	if la.Cursor() != "" {
		t.Fatalf("a new lease has cursor %q", la.Cursor())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*ttl)
	_, err = b.Lease(ctx, "source-1")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lease while held: %v", err)
	}
	// Renewals keep it past its ttl.
	fenced := func(s replay.Store, l replay.Lease, cursor, data string) error {
		_, err := s.Append(t.Context(), "/src", replay.Batch{Events: []replay.Draft{{Data: []byte(data)}}, Lease: l, Cursor: cursor})
		return err
	}
	if err := fenced(a, la, "c1", "one"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Lost():
		t.Fatal("lease lost while renewed")
	case <-time.After(3 * ttl):
	}
	if err := fenced(a, la, "c2", "two"); err != nil {
		t.Fatal(err)
	}

	got := make(chan replay.Lease, 1)
	go func() {
		l, err := b.Lease(t.Context(), "source-1")
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(ttl / 2)
	start := time.Now()
	la.Release()
	lb := <-got
	if lb == nil {
		return
	}
	if took := time.Since(start); took > ttl {
		t.Fatalf("the waiting node took %v to get a released lease", took)
	}
	if lb.Cursor() != "c2" {
		t.Fatalf("new holder's cursor %q, want c2", lb.Cursor())
	}
	if err := fenced(a, la, "c3", "stale"); !errors.Is(err, replay.ErrLeaseLost) {
		t.Fatalf("fenced append with a released lease: %v", err)
	}
	if err := fenced(b, lb, "c3", "three"); err != nil {
		t.Fatal(err)
	}

	// Someone else takes the key (as after an expiry): the holder learns
	// within a renewal and its fenced appends are refused in Redis.
	key := b.Prefix() + "lease:{source-1}"
	if err := b.Client().Set(t.Context(), key, "intruder", 0).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Lost():
	case <-time.After(2 * ttl):
		t.Fatal("Lost not closed after another holder took the key")
	}
	if err := fenced(b, lb, "c4", "stale"); !errors.Is(err, replay.ErrLeaseLost) {
		t.Fatalf("fenced append after losing the lease: %v", err)
	}
	c := subscribe(t, a, "/src", replay.Earliest)
	events, _ := read(t, c, 3)
	var data []string
	for _, e := range events {
		data = append(data, e[strings.IndexByte(e, ' ')+1:])
	}
	if !slices.Equal(data, []string{"one", "two", "three"}) {
		t.Fatalf("the log holds %q", data)
	}
	if v := a.Client().Get(t.Context(), a.Prefix()+"lease:{source-1}:cursor").Val(); v != "c3" {
		t.Fatalf("recorded cursor %q, want c3", v)
	}
}
