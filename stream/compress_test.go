package stream_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

func TestNegotiatePicksHighestQualityThenServerPreference(t *testing.T) {
	both := []*stream.Encoding{stream.Gzip, stream.Zstd}
	zstdFirst := []*stream.Encoding{stream.Zstd, stream.Gzip}
	tests := []struct {
		accept  string
		offered []*stream.Encoding
		want    string // "" is identity
	}{
		{"", both, ""},
		{"gzip", both, "gzip"},
		{"zstd", both, "zstd"},
		{"gzip, zstd", both, "gzip"},
		{"gzip, zstd", zstdFirst, "zstd"},
		{"gzip;q=0.5, zstd", both, "zstd"},
		{"gzip;q=0, zstd;q=0", both, ""},
		{"br", both, ""},
		{"*", both, "gzip"},
		{"*;q=0.1, gzip;q=0", both, "zstd"},
		{"GZIP;Q=1", both, "gzip"},
		{"gzip;q=bogus, zstd;q=0.2", both, "zstd"},
		{"deflate, gzip;q=1.0, *;q=0.5", zstdFirst, "gzip"},
		{"gzip", nil, ""},
	}
	for _, tt := range tests {
		got := stream.Negotiate(tt.accept, tt.offered)
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != tt.want {
			t.Errorf("Negotiate(%q) = %q, want %q", tt.accept, name, tt.want)
		}
	}
}

// serveCursor runs one subscriber until the topic closes and returns the
// body bytes it was sent.
func serveCursor(t testing.TB, cur replay.Cursor, enc *stream.Encoding) []byte {
	t.Helper()
	defer cur.Close()
	rec := httptest.NewRecorder()
	if err := stream.WriteHead(rec, enc); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Serve(context.Background(), rec, cur, stream.Options{Retry: time.Second, Encoding: enc, ResetEvent: "reset", CloseEvent: "close"}); err != stream.ErrTopicClosed {
		t.Fatalf("Serve ended with %v, want the topic closed", err)
	}
	if got := rec.Header().Get("Content-Encoding"); got != enc.Name {
		t.Fatalf("Content-Encoding %q, want %q", got, enc.Name)
	}
	return rec.Body.Bytes()
}

// decode reads a whole compressed body, failing on any truncation or
// checksum error: the stream must end cleanly.
func decode(t testing.TB, enc *stream.Encoding, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case stream.Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		r = zr
	case stream.Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	plain, err := io.ReadAll(r) // gzip checks its CRC-32 and length here
	if err != nil {
		t.Fatalf("%s stream does not decode cleanly: %v", enc.Name, err)
	}
	return plain
}

// roundTrip publishes events to a fresh topic with three subscribers: one
// from the start, one that joined live after `join` events, and one that
// resumed after the id of event `join` with Last-Event-ID. Each must decode
// to exactly its events, then the close event, then a clean end.
func roundTrip(t *testing.T, enc *stream.Encoding, events []string, join int) {
	store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, Encodings: 2, MaxBytes: 1 << 30, MaxEvents: 10000})
	defer store.Close()
	ctx := context.Background()
	fromStart, err := store.Subscribe(ctx, "t", "", replay.GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	var joined, resumed replay.Cursor
	var joinID string
	for i, data := range events {
		if i == join {
			if joined, err = store.Subscribe(ctx, "t", "", replay.GapReplay); err != nil {
				t.Fatal(err)
			}
			if resumed, err = store.Subscribe(ctx, "t", joinID, replay.GapReplay); err != nil {
				t.Fatal(err)
			}
		}
		res, err := store.Append(ctx, "t", replay.Batch{Events: []replay.Draft{{Type: "message", Data: wire.NormalizeLineBreaks([]byte(data))}}})
		if err != nil {
			t.Fatal(err)
		}
		joinID = res.IDs[0]
	}
	if joined == nil { // join at the end: nothing after it
		joined, _ = store.Subscribe(ctx, "t", "", replay.GapReplay)
		resumed, _ = store.Subscribe(ctx, "t", joinID, replay.GapReplay)
		join = len(events)
	}
	if err := store.CloseTopic(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []struct {
		name string
		cur  replay.Cursor
		want []string
	}{
		{"from the start", fromStart, events},
		{"joined mid-stream", joined, events[join:]},
		{"resumed with Last-Event-ID", resumed, events[join:]},
	} {
		got, p := ssetest.ParseAll(decode(t, enc, serveCursor(t, sub.cur, enc)))
		if p.Ignored != 0 {
			t.Errorf("%s: %d unknown or malformed fields", sub.name, p.Ignored)
		}
		if len(got) != len(sub.want)+1 || got[len(got)-1].Type != "close" {
			t.Fatalf("%s: %d events, want %d and a close event", sub.name, len(got), len(sub.want))
		}
		for i, w := range sub.want {
			if want := string(wire.NormalizeLineBreaks([]byte(w))); got[i].Data != want {
				t.Fatalf("%s: event %d data %q, want %q", sub.name, i, got[i].Data, want)
			}
		}
	}
}

func TestSharedSegmentsDecodeForEveryJoinPoint(t *testing.T) {
	events := []string{"first", "multi\nline\r\ndata", "", `{"json":true}`, strings.Repeat("long ", 2000), "last"}
	for _, enc := range []*stream.Encoding{stream.Gzip, stream.Zstd} {
		t.Run(enc.Name, func(t *testing.T) {
			for join := range len(events) + 1 {
				roundTrip(t, enc, events, join)
			}
		})
	}
}

// Any sequence of events round-trips through the shared segments and the
// trailer, whatever the join point.
func FuzzSharedCompressionRoundTrip(f *testing.F) {
	f.Add("hello\x00world", uint8(1))
	f.Add("line one\nline two\r\nthree\x00\x00{\"json\":true}", uint8(0))
	f.Add(strings.Repeat("abc", 1000)+"\x00x", uint8(2))
	f.Fuzz(func(t *testing.T, script string, join uint8) {
		if !utf8.ValidString(script) {
			t.Skip("publishing rejects invalid UTF-8")
		}
		events := strings.Split(script, "\x00")
		if len(events) > 64 {
			events = events[:64]
		}
		for _, enc := range []*stream.Encoding{stream.Gzip, stream.Zstd} {
			roundTrip(t, enc, events, int(join)%(len(events)+1))
		}
	})
}

// The compressed segment of an event is computed once and the same bytes
// serve every subscriber.
func TestSegmentIsComputedOnceAndShared(t *testing.T) {
	ev := &replay.Event{Frame: wire.EncodeEvent("e-1", "message", []byte("shared"))}
	calls := 0
	compress := func(b []byte) []byte { calls++; return append([]byte("z"), b...) }
	a, b := ev.Encoded(0, compress), ev.Encoded(0, compress)
	if calls != 1 || &a[0] != &b[0] {
		t.Errorf("compressed %d times, shared=%v; want once and shared", calls, &a[0] == &b[0])
	}
}
