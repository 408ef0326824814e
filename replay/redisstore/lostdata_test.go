package redisstore_test

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
)

// observed tees a store's log into logs, so a test can wait for what the
// store noticed.
func observed(t *testing.T, logs **observer.ObservedLogs) func(*redisstore.Options) {
	core, obs := observer.New(zapcore.InfoLevel)
	*logs = obs
	return func(o *redisstore.Options) {
		o.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	}
}

func waitLog(t *testing.T, logs *observer.ObservedLogs, msg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); logs.FilterMessageSnippet(msg).Len() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within 10s", msg)
		}
	}
}

func mustSubscribe(t *testing.T, s replay.Store, topic, from string, pol replay.GapPolicy) replay.Cursor {
	t.Helper()
	c, err := s.Subscribe(t.Context(), topic, from, pol)
	if err != nil {
		t.Fatalf("Subscribe(%s, %q): %v", topic, from, err)
	}
	t.Cleanup(c.Close)
	return c
}

// firstPage reads c until it delivers something (a gap or events).
func firstPage(t *testing.T, c replay.Cursor) replay.Page {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		p, err := c.Next(100)
		if err != nil {
			t.Fatal(err)
		}
		if p.Gap != nil || len(p.Events) > 0 || p.Closed {
			return p
		}
		select {
		case <-p.Wait:
		case <-deadline.C:
			t.Fatal("nothing within 10s")
		}
	}
}

// Redis restarts without its data while two nodes hold windows of a topic:
// neither keeps serving the old events. Their open cursors get an unknown
// gap (the nodes notice the restart on their own), a client resuming with
// an old id gets the same gap on every node, and what is appended after the
// restart reaches everyone exactly once.
func TestRedisLostItsData(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--appendonly", "no") // and --save "": nothing survives
	a, b := twoNodes(t, srv, replay.Config{})
	ids := appendData(t, a, "/t", "e0", "e1", "e2", "e3")
	open := map[string]replay.Cursor{}
	for name, s := range map[string]replay.Store{"A": a, "B": b} {
		c := mustSubscribe(t, s, "/t", ids[0], replay.GapReplay)
		if got, _ := read(t, c, 3); len(got) != 3 {
			t.Fatalf("%s read %q", name, got)
		}
		open[name] = c
	}

	srv.Restart()
	for name, c := range open {
		p := firstPage(t, c)
		if p.Gap == nil || p.Gap.Reason != replay.GapUnknown || p.Gap.Requested != ids[3] || len(p.Events) != 0 {
			t.Fatalf("%s's open cursor after Redis lost its data: %+v (gap %+v)", name, p, p.Gap)
		}
	}
	var gaps []replay.Gap
	for _, s := range []replay.Store{a, b, newStore(t, srv, replay.Config{}, prefixOf(a))} {
		for _, pol := range []replay.GapPolicy{replay.GapReplay, replay.GapLive} {
			p := firstPage(t, mustSubscribe(t, s, "/t", ids[1], pol))
			if p.Gap == nil || len(p.Events) != 0 {
				t.Fatalf("resuming after %s once Redis lost it: %+v, want a gap and no old event", ids[1], p)
			}
			gaps = append(gaps, *p.Gap)
		}
	}
	for _, g := range gaps {
		if g != gaps[0] || g.Reason != replay.GapUnknown {
			t.Fatalf("the nodes disagree on an id Redis lost: %+v", gaps)
		}
	}

	fresh := appendData(t, b, "/t", "n0", "n1")
	for name, c := range open {
		got, gap := read(t, c, 2)
		if gap != nil || !slices.Equal(got, pairs(fresh, "n0", "n1")) {
			t.Fatalf("%s's open cursor read %q (gap %+v) after the restart", name, got, gap)
		}
	}
	for name, s := range map[string]replay.Store{"A": a, "B": b} {
		got, gap := read(t, mustSubscribe(t, s, "/t", gaps[0].ResumeAfter, replay.GapReplay), 2)
		if gap != nil || !slices.Equal(got, pairs(fresh, "n0", "n1")) {
			t.Fatalf("%s after the gap's ResumeAfter: %q (gap %+v)", name, got, gap)
		}
	}
}

// A flush (or another, empty Redis at the same address) keeps the run_id,
// so it is noticed per topic: by the tail when the stream starts over, and
// by Subscribe. An id from before is unknown on every node even once the
// topic has new events.
func TestRedisFlushed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{})
	ids := appendData(t, a, "/t", "e0", "e1", "e2")
	held := subscribe(t, b, "/t", ids[0])
	if got, _ := read(t, held, 2); len(got) != 2 {
		t.Fatalf("read %q", got)
	}
	if reply, err := srv.Do("FLUSHALL"); err != nil || reply != "+OK" {
		t.Fatalf("FLUSHALL: %q, %v", reply, err)
	}
	fresh := appendData(t, a, "/t", "n0")
	p := firstPage(t, held)
	if p.Gap == nil || p.Gap.Reason != replay.GapUnknown || p.Gap.Requested != ids[2] {
		t.Fatalf("the open cursor after the flush: gap %+v, want an unknown gap for %s", p.Gap, ids[2])
	}
	got := pageIDs(p)
	if len(got) == 0 {
		got = pageIDs(firstPage(t, held))
	}
	if !slices.Equal(got, fresh) {
		t.Fatalf("the open cursor read %q after the flush, want %q", got, fresh)
	}
	for name, s := range map[string]replay.Store{"A": a, "B": b} {
		c := mustSubscribe(t, s, "/t", ids[1], replay.GapReplay)
		p := firstPage(t, c)
		if p.Gap == nil || p.Gap.Reason != replay.GapUnknown || !slices.Equal(pageIDs(p), fresh) {
			t.Fatalf("%s: resuming after %s once Redis was flushed: %q (gap %+v), want an unknown gap, then %q", name, ids[1], pageIDs(p), p.Gap, fresh)
		}
	}
}

func pageIDs(p replay.Page) []string {
	var ids []string
	for _, e := range p.Events {
		ids = append(ids, e.ID)
	}
	return ids
}

// Redis restarts with its data (AOF): the nodes notice the restart but keep
// their windows, and their cursors go on without a gap.
func TestRedisRestartedWithData(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var logs *observer.ObservedLogs
	a := newStore(t, srv, replay.Config{}, observed(t, &logs))
	b := newStore(t, srv, replay.Config{}, prefixOf(a))
	ids := appendData(t, a, "/t", "e0", "e1", "e2")
	onA := subscribe(t, a, "/t", ids[0])
	onB := subscribe(t, b, "/t", ids[0])
	srv.Restart()
	waitLog(t, logs, "redis restarted")
	if n := logs.FilterMessageSnippet("no longer holds").Len(); n != 0 {
		t.Fatalf("a window was reloaded after a restart that kept the data (%d times)", n)
	}
	for name, c := range map[string]replay.Cursor{"A": onA, "B": onB} {
		if got, gap := read(t, c, 2); gap != nil || !slices.Equal(got, pairs(ids[1:], "e1", "e2")) {
			t.Fatalf("%s read %q (gap %+v) across the restart", name, got, gap)
		}
	}
	c := subscribe(t, b, "/t", ids[1])
	if got, gap := read(t, c, 1); gap != nil || !slices.Equal(got, pairs(ids[2:], "e2")) {
		t.Fatalf("resuming after %s across the restart: %q (gap %+v)", ids[1], got, gap)
	}
}

// A topic that nothing is appended to for longer than the history age
// still exists while a node has readers of it (the janitor keeps its keys),
// so the next event reaches them without a gap: the stream did not start
// over.
func TestReadTopicOutlivesItsAge(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{MaxAge: 3 * time.Second})
	first := appendData(t, a, "/quiet", "e0")
	c := subscribe(t, b, "/quiet", first[0])
	time.Sleep(4 * time.Second)
	if n, err := a.Client().Exists(t.Context(), a.Prefix()+"{/quiet}:meta").Result(); err != nil || n != 1 {
		t.Fatalf("the topic's keys expired under its reader (%d, %v)", n, err)
	}
	next := appendData(t, a, "/quiet", "e1")
	if got, gap := read(t, c, 1); gap != nil || !slices.Equal(got, pairs(next, "e1")) {
		t.Fatalf("after a quiet spell longer than the age the reader got %q (gap %+v)", got, gap)
	}
}
