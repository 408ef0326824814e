package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/lines"
)

func TestMapping(t *testing.T) {
	m := Mapping{TopicField: "meta.channel", IDField: "seq", EventField: "kind", DataField: "payload", MaxTopicLength: 20}
	cases := []struct {
		line string
		want Record
		skip string
	}{
		{`{"meta":{"channel":"/a"},"seq":7,"kind":"job.log","payload":"hello"}`,
			Record{Topic: "/a", ID: "7", Event: "job.log", Data: []byte("hello")}, ""},
		{`{"meta":{"channel":"/b"},"seq":"x-1","kind":"k","payload":{"z": 1, "a" : [1, 2.50, "s"]}}`,
			Record{Topic: "/b", ID: "x-1", Event: "k", Data: []byte(`{"z":1,"a":[1,2.50,"s"]}`)}, ""},
		{`{"meta":{"channel":"/b"},"seq":1,"kind":"bad\nname\u0000","payload":"l1\r\nl2\rl3"}`,
			Record{Topic: "/b", ID: "1", Event: "badname", Data: []byte("l1\nl2\nl3")}, ""},
		{`{"meta":{"channel":"/b"},"seq":1,"kind":"k","payload":true}`,
			Record{Topic: "/b", ID: "1", Event: "k", Data: []byte("true")}, ""},
		{`{"meta":{"channel":"/b"},"seq":1,"kind":"k"}`, Record{}, "no field payload"},
		{`{"meta":{"channel":"/b"},"seq":null,"kind":"k","payload":1}`, Record{}, "no field seq"},
		{`{"meta":"/b","seq":1,"kind":"k","payload":1}`, Record{}, "no field meta.channel"},
		{`{"meta":{"channel":""},"seq":1,"kind":"k","payload":1}`, Record{}, "topic: empty topic name"},
		{`{"meta":{"channel":"/a/very/long/topic/name"},"seq":1,"kind":"k","payload":1}`, Record{}, "topic: name is 23 bytes, longer than the limit of 20"},
		{`{"meta":{"channel":"/a\u0007"},"seq":1,"kind":"k","payload":1}`, Record{}, "topic: name contains control character U+0007"},
		{`{"meta":{"channel":"/b"}`, Record{}, "not valid JSON"},
		{`[1,2]`, Record{}, "not a JSON object"},
		{"{\"meta\":{\"channel\":\"/b\xff\"}}", Record{}, "not valid UTF-8"},
	}
	for _, c := range cases {
		got, err := m.Map([]byte(c.line))
		if c.skip != "" {
			var s *Skip
			if !errors.As(err, &s) || s.Reason != c.skip {
				t.Errorf("%s: err %v, want skip %q", c.line, err, c.skip)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.line, err)
			continue
		}
		if got.Topic != c.want.Topic || got.ID != c.want.ID || got.Event != c.want.Event || !bytes.Equal(got.Data, c.want.Data) || got.Close {
			t.Errorf("%s:\ngot  %+v %q\nwant %+v %q", c.line, got, got.Data, c.want, c.want.Data)
		}
	}
}

func TestMappingArrayIndexAndWholeLine(t *testing.T) {
	m := Mapping{Topic: "/t", IDField: "items.1.id"}
	line := `{"items":[{"id":"a"},{"id":"b"}]}`
	got, err := m.Map([]byte(line))
	if err != nil || got.ID != "b" || string(got.Data) != line || got.Event != "message" {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := m.Map([]byte(`{"items":[{"id":"a"}]}`)); err == nil {
		t.Fatal("index out of range mapped")
	}
}

func TestMappingVerbatim(t *testing.T) {
	m := Mapping{Topic: "/t", MaxEvent: 8}
	got, err := m.Map([]byte("not json"))
	if err != nil || string(got.Data) != "not json" {
		t.Fatalf("%q %v", got.Data, err)
	}
	if _, err := m.Map([]byte("too long data")); err == nil {
		t.Fatal("over event_size mapped")
	}
	if _, err := m.Map([]byte("\xff")); err == nil {
		t.Fatal("invalid UTF-8 mapped")
	}
}

func TestMappingCloseWhen(t *testing.T) {
	m := Mapping{Topic: "/t", CloseField: "status", CloseValue: "done"}
	for line, want := range map[string]bool{
		`{"status":"done"}`:    true,
		`{"status":"running"}`: false,
		`{"other":1}`:          false,
	} {
		got, err := m.Map([]byte(line))
		if err != nil || got.Close != want {
			t.Errorf("%s: close %v, %v", line, got.Close, err)
		}
	}
	if _, err := m.Map([]byte(`{"status":`)); err == nil {
		t.Error("invalid JSON mapped with close_when")
	}
}

func TestSSEParser(t *testing.T) {
	in := "\xEF\xBB\xBF: comment\n" +
		"retry: 2500\n" +
		"id: 1\nevent: job.started\ndata: line one\ndata:line two\ndata\n\n" +
		"data: inherits id\n\n" +
		"id\n\n" + // resets the last event id, dispatches nothing
		"id: 3\x00\nevent: \x01bad\rdata: nul id ignored\n\n" +
		"event: x\nid: 4\n\n" + // no data: nothing
		"data: " + strings.Repeat("z", 40) + "\nid: 5\n\n" +
		"data: after\n\n" +
		"data: unterminated\n"
	sp := lines.NewSplitter(strings.NewReader(in), 30, true)
	p := newSSEParser(100)
	var evs []sseEvent
	var skips []string
	for {
		l, err := sp.Next()
		if err != nil {
			break
		}
		ev, skip := p.Line(l)
		if skip != nil {
			skips = append(skips, skip.Reason)
		}
		if ev != nil {
			evs = append(evs, *ev)
		}
	}
	want := []sseEvent{
		{ID: "1", OwnID: true, Type: "job.started", Data: []byte("line one\nline two\n")},
		{ID: "1", Type: "message", Data: []byte("inherits id")},
		{ID: "", Type: "message", Data: []byte("nul id ignored")},
		{ID: "5", Type: "message", Data: []byte("after")},
	}
	// "event: \x01bad\r" ends at the CR: the name is "\x01bad", sanitised.
	want[2].Type = "bad"
	if len(evs) != len(want) {
		t.Fatalf("got %d events: %+v", len(evs), evs)
	}
	for i := range want {
		g, w := evs[i], want[i]
		if g.ID != w.ID || g.OwnID != w.OwnID || g.Type != w.Type || string(g.Data) != string(w.Data) {
			t.Errorf("event %d: got %+v %q, want %+v %q", i, g, g.Data, w, w.Data)
		}
	}
	if len(skips) != 1 || p.Retry != 2500*time.Millisecond {
		t.Errorf("skips %q, retry %v", skips, p.Retry)
	}
}

func TestSSEParserEventSize(t *testing.T) {
	p := newSSEParser(10)
	for _, l := range []string{"data: 12345", "data: 67890", ""} {
		ev, skip := p.Line(lines.Line{Text: []byte(l)})
		if l == "" && (ev != nil || skip == nil) {
			t.Fatalf("oversized event not skipped: %v %q", ev, skip)
		}
	}
	ev, _ := p.Line(lines.Line{Text: []byte("data: ok")})
	if ev != nil {
		t.Fatal("dispatched without blank line")
	}
	if ev, _ = p.Line(lines.Line{}); ev == nil || string(ev.Data) != "ok" {
		t.Fatalf("block after a skipped one: %+v", ev)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 1*time.Second
	for n := 0; n < 20; n++ {
		for i := 0; i < 50; i++ {
			d := backoff(lo, hi, n)
			window := min(lo<<min(n, 10), hi)
			if d < lo || d > window {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, lo, window)
			}
		}
	}
	if backoff(lo, lo, 5) != lo {
		t.Fatal("min == max must give min")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h := func(v string) map[string][]string { return map[string][]string{"Retry-After": {v}} }
	for v, want := range map[string]time.Duration{
		"3":                             3 * time.Second,
		" 0 ":                           0,
		"-4":                            0,
		"junk":                          0,
		"99999999":                      time.Hour,
		"Fri, 02 Jan 2026 03:04:15 GMT": 10 * time.Second,
		"Fri, 02 Jan 2026 03:04:00 GMT": 0,
	} {
		if got := retryAfter(h(v), now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

// FuzzSplitMap feeds arbitrary bytes, in arbitrary chunks, through the
// NDJSON splitter and the mapper: nothing panics, no line longer than
// max_line is held or returned, and every valid line of the input comes
// out exactly once, in order.
func FuzzSplitMap(f *testing.F) {
	f.Add([]byte("{\"id\":\"1\"}\n{\"id\":2}\r\n\n{\"id\":\"3\"}"), []byte{3, 7}, uint16(16))
	f.Add([]byte("\xEF\xBB\xBF{\"id\":\"a\"}\nnot json\n{\"x\":1}\n"), []byte{0}, uint16(8))
	f.Add([]byte(strings.Repeat("x", 300)+"\n{\"id\":\"b\"}\n"), []byte{63}, uint16(20))
	f.Add([]byte("{\"id\":\"\xff\"}\n{\"id\":null}\n{\"id\":{\"n\":[1, 2]}}\n"), []byte{1, 2, 3}, uint16(64))
	f.Fuzz(func(t *testing.T, input, sizes []byte, maxLine uint16) {
		max := int(maxLine%512) + 1
		m := Mapping{Topic: "/t", IDField: "id"}
		sp := lines.NewSplitter(&ssetest.ChunkReader{Data: input, Sizes: sizes}, max, false)
		var got []string
		for {
			l, err := sp.Next()
			if sp.Buffered() > max+2 {
				t.Fatalf("splitter holds %d bytes with max_line %d", sp.Buffered(), max)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.TooLong {
				if l.Len <= int64(max) || len(l.Text) > lines.SampleLen {
					t.Fatalf("skipped line of %d bytes, sample %d", l.Len, len(l.Text))
				}
				continue
			}
			if len(l.Text) > max {
				t.Fatalf("returned a line of %d bytes, max_line %d", len(l.Text), max)
			}
			rec, err := m.Map(l.Text)
			if err != nil {
				continue
			}
			if !utf8.Valid(rec.Data) {
				t.Fatalf("invalid UTF-8 data %q", rec.Data)
			}
			got = append(got, string(rec.Data))
		}

		// The model: lines as the specs define them, those that fit,
		// are JSON objects with a non-null id.
		var want []string
		in := bytes.TrimPrefix(input, []byte("\xEF\xBB\xBF"))
		parts := bytes.Split(in, []byte{'\n'})
		for i, p := range parts {
			if i == len(parts)-1 && len(p) == 0 {
				break
			}
			p = bytes.TrimSuffix(p, []byte{'\r'})
			if len(p) > max || len(bytes.Trim(p, " \t\r")) == 0 {
				continue
			}
			var obj map[string]json.RawMessage
			if !utf8.Valid(p) || json.Unmarshal(p, &obj) != nil || obj == nil {
				continue
			}
			if id, ok := obj["id"]; !ok || string(id) == "null" {
				continue
			}
			want = append(want, string(bytes.Trim(p, " \t\r")))
		}
		if len(got) != len(want) {
			t.Fatalf("got %d lines, want %d:\n%q\n%q", len(got), len(want), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("line %d: got %q, want %q", i, got[i], want[i])
			}
		}
	})
}

// FuzzSSE feeds arbitrary bytes through the SSE splitter and parser:
// nothing panics, events are valid UTF-8 within the event size.
func FuzzSSE(f *testing.F) {
	f.Add([]byte("id: 1\nevent: a\ndata: x\ndata: y\n\n: c\r\ndata: z\r\r"), []byte{2}, uint16(10))
	f.Fuzz(func(t *testing.T, input, sizes []byte, maxLine uint16) {
		max := int(maxLine%256) + 1
		sp := lines.NewSplitter(&ssetest.ChunkReader{Data: input, Sizes: sizes}, max, true)
		p := newSSEParser(64)
		for {
			l, err := sp.Next()
			if err != nil {
				return
			}
			if ev, _ := p.Line(l); ev != nil {
				if !utf8.Valid(ev.Data) || len(ev.Data) > 64 || !utf8.ValidString(ev.ID) {
					t.Fatalf("bad event %+v", ev)
				}
			}
		}
	})
}
