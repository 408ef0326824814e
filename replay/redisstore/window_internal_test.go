package redisstore

import (
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// A window that finds entries missing before an arriving one (trimmed before
// this node read them) gives its cursors an expired gap, not a silent hole.
// An entry that follows one before the window's end (the stream started
// over, or went back: Redis lost data) is not taken in: ingest reports it,
// so the caller reloads the window from Redis.
func TestWindowHole(t *testing.T) {
	s := &Store{}
	cfg := replay.Config{Framer: replaytest.Framer}.WithDefaults()
	s.cfg.Store(&cfg)
	tp := &topic{s: s, loaded: true, wake: make(chan struct{})}
	s.topics = map[string]*topic{}
	base := uint64(time.Now().UnixMilli()) // ids carry their time; keep them young
	id := func(ms uint64) streamID { return streamID{base + ms, 0} }
	entry := func(i, prev streamID, data string) rawEntry {
		return rawEntry{id: i, prev: prev, typ: "msg", data: []byte(data), cost: 100}
	}
	ingest := func(e rawEntry) {
		t.Helper()
		if lost, _ := tp.ingest([]rawEntry{e}); lost {
			t.Fatalf("ingest(%v after %v) reported a lost history", e.id, e.prev)
		}
	}
	ingest(entry(id(1), streamID{}, "a"))
	tp.refs++
	c := &cursor{t: tp, after: id(1)}
	tp.subscribers++

	ingest(entry(id(5), id(4), "e"))
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gap == nil || p.Gap.Reason != replay.GapExpired || p.Gap.Requested != id(1).String() || p.Gap.ResumeAfter != id(4).String() {
		t.Fatalf("gap %+v, want expired after %s resuming after %s", p.Gap, id(1), id(4))
	}
	if len(p.Events) != 1 || p.Events[0].ID != id(5).String() {
		t.Fatalf("events %+v", p.Events)
	}

	for _, e := range []rawEntry{entry(id(9), streamID{}, "new life"), entry(id(9), id(3), "went back")} {
		lost, at := tp.ingest([]rawEntry{e})
		if !lost || at != e.prev {
			t.Fatalf("ingest(%v after %v) = %v, %v; want lost after %v", e.id, e.prev, lost, at, e.prev)
		}
		if p, _ := c.Next(10); len(p.Events) != 0 || p.Gap != nil || tp.end != id(5) {
			t.Fatalf("a lost history changed the window: %+v, end %v", p, tp.end)
		}
	}
	// Entries already in the window are ignored.
	ingest(entry(id(5), id(4), "e"))
	if p, _ := c.Next(10); len(p.Events) != 0 || p.Gap != nil {
		t.Fatalf("a repeated entry was delivered again: %+v", p)
	}
	c.Close()
}

func TestParseID(t *testing.T) {
	for _, ok := range []string{"0-0", "1-0", "1700000000000-12", "18446744073709551615-18446744073709551615"} {
		if id, valid := parseID(ok); !valid || id.String() != ok {
			t.Errorf("parseID(%q) = %v, %v", ok, id, valid)
		}
	}
	for _, bad := range []string{"", "0", "-", "1-", "-1", "01-0", "1-01", " 1-0", "1-0 ", "1-0x", "a-b", "1-2-3", "18446744073709551616-0", "+1-0"} {
		if _, valid := parseID(bad); valid {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
}

func TestHashTag(t *testing.T) {
	for name, want := range map[string]string{
		"/chat/room1": "/chat/room1",
		"":            "~",
		"a}b":         "~617d62",
		"{x":          "~7b78",
		"~raw":        "~7e726177",
	} {
		if got := hashTag(name); got != want {
			t.Errorf("hashTag(%q) = %q, want %q", name, got, want)
		}
	}
}
