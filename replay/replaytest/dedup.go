package replaytest

import (
	"slices"
	"testing"

	"github.com/ssegate/caddy-sse/replay"
)

func testDedup(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	b := replay.Batch{Events: []replay.Draft{draft("a", "1"), draft("b", "2")}, Key: "key-1"}
	first, err := s.Append(ctx(t), "t", b)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || len(first.IDs) != 2 {
		t.Fatalf("first append = %+v", first)
	}
	c := subscribe(t, s, "t", first.IDs[1], replay.GapReplay)
	// The same key again, even with different content, appends nothing.
	for _, again := range []replay.Batch{b, {Events: []replay.Draft{draft("c", "3")}, Key: "key-1"}} {
		res, err := s.Append(ctx(t), "t", again)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Duplicate {
			t.Fatalf("repeated key: Duplicate = false, ids %q", res.IDs)
		}
		equalIDs(t, "repeated key", res.IDs, first.IDs)
	}
	equalIDs(t, "retained", readRetained(t, s, "t"), first.IDs)
	if r := drain(t, c); len(r.events) != 0 {
		t.Fatalf("a duplicate delivered %q", r.ids())
	}
	// Another key, or no key, appends.
	res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("a", "1")}, Key: "key-2"})
	if err != nil || res.Duplicate || len(res.IDs) != 1 {
		t.Fatalf("append with a new key = %+v, %v", res, err)
	}
	for range 2 {
		res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("a", "1")}})
		if err != nil || res.Duplicate || len(res.IDs) != 1 {
			t.Fatalf("append with no key = %+v, %v", res, err)
		}
	}
}

func testDedupPerTopic(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{})
	b := replay.Batch{Events: []replay.Draft{draft("a", "1")}, Key: "shared"}
	r1, err := s.Append(ctx(t), "t1", b)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Append(ctx(t), "t2", b)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Duplicate || r2.Duplicate {
		t.Fatalf("the same key on two topics was a duplicate: %+v %+v", r1, r2)
	}
	// Ids are per topic: two topics may issue the same one (Redis
	// streams on two masters of a cluster, or in the same millisecond),
	// so t2's own log tells that the key did not apply across topics.
	equalIDs(t, "t2", readRetained(t, s, "t2"), r2.IDs)
	r3, err := s.Append(ctx(t), "t2", b)
	if err != nil || !r3.Duplicate {
		t.Fatalf("repeat on t2 = %+v, %v", r3, err)
	}
	equalIDs(t, "repeat on t2", r3.IDs, r2.IDs)
}

func testMaxDedupKeys(t *testing.T, newStore NewStore) {
	s := newStore(t, replay.Config{MaxDedupKeys: 2})
	keyed := func(key string) replay.Appended {
		t.Helper()
		res, err := s.Append(ctx(t), "t", replay.Batch{Events: []replay.Draft{draft("x", key)}, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := keyed("a"), keyed("b"), keyed("c")
	for _, x := range []struct {
		key  string
		orig replay.Appended
	}{{"b", b}, {"c", c}} {
		if res := keyed(x.key); !res.Duplicate || !slices.Equal(res.IDs, x.orig.IDs) {
			t.Fatalf("key %q, among the newest 2: %+v, want a duplicate of %q", x.key, res, x.orig.IDs)
		}
	}
	res := keyed("a")
	if res.Duplicate {
		t.Fatalf("key %q, the oldest of 3 with MaxDedupKeys 2, is still remembered", "a")
	}
	if slices.Equal(res.IDs, a.IDs) {
		t.Fatalf("re-appending forgotten key a reissued ids %q", a.IDs)
	}
}
