package wire

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssegate/caddy-sse/internal/ssetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

type eventCase struct {
	spec     string // what the case shows, as the subtest's name
	golden   string // testdata/<golden>.golden
	id, name string
	data     []byte
	digest   bool // the golden file holds the sha256 and length, not the bytes
}

// largeData is 1 MiB of data built deterministically, mixing all three line
// ends, empty lines, leading spaces and colons, and multi-byte runes.
func largeData() []byte {
	const size = 1 << 20
	breaks := []string{"\n", "\r\n", "\r", "\n\n", "\r\r\n"}
	var b bytes.Buffer
	b.Grow(size + 128)
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%s%06d: héllo wörld ✓ 🙂 %s%s",
			[]string{"", " ", ":", "  "}[i%4], i, strings.Repeat("x", i%97), breaks[i%len(breaks)])
	}
	// Cut back to a rune boundary at or below 1 MiB, then pad with ASCII.
	data := b.Bytes()[:size]
	for !utf8.Valid(data) {
		data = data[:len(data)-1]
	}
	return append(data, bytes.Repeat([]byte("z"), size-len(data))...)
}

var eventCases = []eventCase{
	{spec: "single-line data is one data field", golden: "plain",
		data: []byte("hello")},
	{spec: "id and event name come before the data", golden: "id_and_name",
		id: "42", name: "update", data: []byte(`{"n":1}`)},
	{spec: "multi-line data becomes one data field per line", golden: "multiline",
		data: []byte("one\ntwo\nthree")},
	{spec: "LF CR and CRLF in data each end one line", golden: "mixed_line_ends",
		data: []byte("lf\ncr\rcrlf\r\nend")},
	{spec: "CR LF across lines is one break but LF CR is two", golden: "lf_cr",
		data: []byte("a\n\rb\r\nc")},
	{spec: "consecutive breaks keep their empty lines", golden: "empty_lines",
		data: []byte("a\n\n\r\r\r\n\r\nb")},
	{spec: "trailing newline in data is kept as an empty last line", golden: "trailing_newline",
		data: []byte("line\n")},
	{spec: "data that is only a newline is two empty lines", golden: "only_newline",
		data: []byte("\r\n")},
	{spec: "data starting with a space keeps the space", golden: "leading_space",
		data: []byte("  indented\n leading")},
	{spec: "data starting with a colon is not a comment", golden: "leading_colon",
		data: []byte(":not a comment\n: nor this")},
	{spec: "data that looks like fields stays data", golden: "data_looks_like_fields",
		data: []byte("id: 666\nevent: forged\nretry: 1\n\ndata: x")},
	{spec: "empty data gives one empty data field and still one event", golden: "empty_data",
		id: "9", data: nil},
	{spec: "id with CR LF NUL is sanitized and cannot forge a field", golden: "id_injection",
		id: "1\r\nevent: forged\x00\n\ndata: x", data: []byte("real")},
	{spec: "event name with CR LF NUL is sanitized and cannot forge a field", golden: "name_injection",
		name: "ok\r\ndata: forged\n\nid: 0\x00", data: []byte("real")},
	{spec: "event name message is left out", golden: "name_message",
		name: "message", data: []byte("x")},
	{spec: "event name of only controls and spaces becomes message and is left out", golden: "name_empty_after_sanitizing",
		name: " \r\n\x00\t ", data: []byte("x")},
	{spec: "id of only controls is left out", golden: "id_empty_after_sanitizing",
		id: "\r\n\x00", data: []byte("x")},
	{spec: "id with leading spaces keeps them", golden: "id_leading_space",
		id: "  7", data: []byte("x")},
	{spec: "over-long id and name are truncated on a rune boundary", golden: "truncated",
		id: strings.Repeat("é", 200), name: strings.Repeat("ü", 40), data: []byte("x")},
	{spec: "invalid UTF-8 is dropped from ids and replaced in names", golden: "invalid_utf8_fields",
		id: "a\xffb", name: "c\xffd", data: []byte("x")},
	{spec: "unicode passes through untouched", golden: "unicode",
		id: "ид-1", name: "événement", data: []byte("日本語\n🙂 emoji\n\u2028 not a line end\u2029\u0085")},
	{spec: "NUL in data is data", golden: "nul_in_data",
		data: []byte("a\x00b")},
	{spec: "a 1 MiB event is encoded whole", golden: "large_1mib", digest: true,
		id: "1048576", name: "big", data: largeData()},
}

func goldenPath(name string) string { return filepath.Join("testdata", name+".golden") }

func checkGolden(t *testing.T, name string, got []byte, digest bool) {
	t.Helper()
	if digest {
		got = fmt.Appendf(nil, "sha256 %x\nlen %d\n", sha256.Sum256(got), len(got))
	}
	path := goldenPath(name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./stream -run Golden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n got %q\nwant %q", path, got, want)
	}
}

func TestEncodeEventMatchesGolden(t *testing.T) {
	for _, c := range eventCases {
		t.Run(c.spec, func(t *testing.T) {
			got := EncodeEvent(c.id, c.name, c.data)
			checkGolden(t, c.golden, got, c.digest)
			if n := EncodedSize(c.id, c.name, c.data); n != len(got) {
				t.Errorf("EncodedSize = %d, len(EncodeEvent) = %d", n, len(got))
			}
			if cap(got) != len(got) {
				t.Errorf("cap %d != len %d: the size was not computed exactly", cap(got), len(got))
			}
			prefix := []byte("earlier bytes")
			if app := AppendEvent(prefix, c.id, c.name, c.data); !bytes.Equal(app, append(prefix, got...)) {
				t.Errorf("AppendEvent differs from EncodeEvent")
			}
		})
	}
}

func TestControlFramesMatchGolden(t *testing.T) {
	for _, c := range []struct {
		spec, golden string
		frame        []byte
		comments     int
		retry        int
	}{
		{"heartbeat is an empty comment", "heartbeat", EncodeComment(""), 1, -1},
		{"comment text keeps its leading space and colon", "comment", EncodeComment(" : note"), 1, -1},
		{"comment text loses CR LF NUL so it cannot start a field", "comment_injection",
			EncodeComment("a\r\ndata: forged\n\nb\x00c"), 1, -1},
		{"retry is whole milliseconds", "retry", EncodeRetry(3*time.Second + 1500*time.Microsecond), 0, 3001},
		{"retry zero is written", "retry_zero", EncodeRetry(0), 0, 0},
		{"negative retry clamps to zero", "retry_negative", EncodeRetry(-time.Second), 0, 0},
	} {
		t.Run(c.spec, func(t *testing.T) {
			checkGolden(t, c.golden, c.frame, false)
			// Followed by an event, the frame must change nothing but the
			// parser's comment count or retry.
			stream := append(bytes.Clone(c.frame), EncodeEvent("1", "", []byte("after"))...)
			events, p := ssetest.ParseAll(stream)
			if len(events) != 1 || events[0].Data != "after" || events[0].Type != "message" {
				t.Fatalf("events = %+v", events)
			}
			if p.Comments != c.comments || p.Retry != c.retry || p.Ignored != 0 {
				t.Fatalf("comments %d retry %d ignored %d; want %d %d 0", p.Comments, p.Retry, p.Ignored, c.comments, c.retry)
			}
		})
	}
}

// checkRoundTrip asserts that a WHATWG parser reads back exactly one event
// carrying the sanitized id and name and the data with its line breaks
// normalized, and sees no other field.
func checkRoundTrip(t *testing.T, id, name string, data []byte) {
	t.Helper()
	frame := EncodeEvent(id, name, data)
	want := ssetest.Event{
		ID:    SanitizeID(id),
		Type:  SanitizeName(name),
		Data:  ssetest.DecodeUTF8(NormalizeLineBreaks(data)),
		Retry: -1,
	}
	for _, cut := range []int{-1, len(frame) / 2, len(frame) - 1} {
		p := ssetest.NewParser()
		var events []ssetest.Event
		if cut < 0 {
			events = p.Feed(frame)
		} else {
			events = append(p.Feed(frame[:cut]), p.Feed(frame[cut:])...)
		}
		if len(events) != 1 {
			t.Fatalf("%d events from %q, want 1", len(events), frame)
		}
		if events[0] != want {
			t.Fatalf("read back %+v\nwant %+v\nframe %q", events[0], want, frame)
		}
		if p.LastEventID != want.ID || p.Retry != -1 || p.Comments != 0 || p.Ignored != 0 {
			t.Fatalf("stray fields: LastEventID %q Retry %d Comments %d Ignored %d; frame %q",
				p.LastEventID, p.Retry, p.Comments, p.Ignored, frame)
		}
	}
}

func TestEncodeEventRoundTripsThroughAWHATWGParser(t *testing.T) {
	for _, c := range eventCases {
		t.Run(c.spec, func(t *testing.T) {
			checkRoundTrip(t, c.id, c.name, c.data)
		})
	}
}

// Frames are written back to back on one connection; each must parse the
// same after any other.
func TestEventsConcatenateIntoOneStream(t *testing.T) {
	var stream []byte
	var want []ssetest.Event
	lastID := ""
	for _, c := range eventCases {
		stream = AppendEvent(stream, c.id, c.name, c.data)
		if id := SanitizeID(c.id); id != "" {
			lastID = id
		}
		want = append(want, ssetest.Event{ID: lastID, Type: SanitizeName(c.name),
			Data: string(NormalizeLineBreaks(c.data)), Retry: -1})
		stream = append(stream, EncodeComment("")...)
	}
	got, p := ssetest.ParseAll(stream)
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d (%s): got %+.80v want %+.80v", i, eventCases[i].spec, got[i], want[i])
		}
	}
	if p.Comments != len(eventCases) || p.Ignored != 0 {
		t.Errorf("comments %d ignored %d", p.Comments, p.Ignored)
	}
}

func TestSanitizeName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"update", "update"},
		{"", "message"},
		{"message", "message"},
		{"  spaced  ", "spaced"},
		{"a b", "a b"},
		{"\u00a0nbsp\u3000", "nbsp"},
		{"new\r\nline", "newline"},
		{"nul\x00del\x7f", "nuldel"},
		{"tab\there", "tabhere"},
		{"\x00 x", "x"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{strings.Repeat("a", 70), strings.Repeat("a", 64)},
		{strings.Repeat("é", 40), strings.Repeat("é", 32)},
		{"a" + strings.Repeat("é", 40), "a" + strings.Repeat("é", 31)},
		{strings.Repeat("a", 63) + " b", strings.Repeat("a", 63)},
		{"   " + strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{"\r\n", "message"},
		{"c1\u0085nel\u009bcsi", "c1nelcsi"},
		{"line\u2028sep\u2029para", "lineseppara"},
		{"\u0080\u009f", "message"},
	} {
		got := SanitizeName(c.in)
		if got != c.want {
			t.Errorf("SanitizeName(%q) = %q, want %q", c.in, got, c.want)
		}
		if again := SanitizeName(got); again != got {
			t.Errorf("SanitizeName not idempotent on %q: %q", got, again)
		}
	}
}

func TestSanitizeID(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"123", "123"},
		{" 1 ", " 1 "},
		{"1\r\n2\x003\t4\x7f", "1234"},
		{"a\xffb\xe2\x82c", "abc"},
		{"ид", "ид"},
		{strings.Repeat("a", 300), strings.Repeat("a", 256)},
		{"a" + strings.Repeat("é", 200), "a" + strings.Repeat("é", 127)},
		{strings.Repeat("\n", 300) + "x", "x"},
		{"1\u00852\u009b3", "123"},
		{"a\u2028b\u2029c", "abc"},
	} {
		got := SanitizeID(c.in)
		if got != c.want {
			t.Errorf("SanitizeID(%q) = %q, want %q", c.in, got, c.want)
		}
		if again := SanitizeID(got); again != got {
			t.Errorf("SanitizeID not idempotent on %q: %q", got, again)
		}
	}
}

func TestNormalizeLineBreaks(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"a\nb", "a\nb"},
		{"a\r\nb\rc\n\rd\r", "a\nb\nc\n\nd\n"},
		{"\r\r\n\n", "\n\n\n"},
	} {
		if got := NormalizeLineBreaks([]byte(c.in)); string(got) != c.want {
			t.Errorf("NormalizeLineBreaks(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	in := []byte("no carriage return\n")
	if out := NormalizeLineBreaks(in); &out[0] != &in[0] {
		t.Errorf("data without CR was copied")
	}
}

func TestEncodeEventAllocatesOnceForCleanFields(t *testing.T) {
	data := bytes.Repeat([]byte("line of data\n"), 100)
	if n := testing.AllocsPerRun(100, func() { EncodeEvent("12345", "update", data) }); n != 1 {
		t.Errorf("EncodeEvent: %v allocations, want 1", n)
	}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEvent(buf[:0], "12345", "update", data) }); n != 0 {
		t.Errorf("AppendEvent into a big enough buffer: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { EncodedSize("12345", "update", data) }); n != 0 {
		t.Errorf("EncodedSize: %v allocations, want 0", n)
	}
}

func FuzzEncodeEventRoundTrip(f *testing.F) {
	for _, c := range eventCases {
		if !c.digest {
			f.Add(c.id, c.name, c.data)
		}
	}
	f.Add("\xEF\xBB\xBF", "\xEF\xBB\xBF", []byte("\xEF\xBB\xBF"))
	f.Add("", "", []byte("\r"))
	f.Add("\u0085", "\u2028", []byte("\xe2\x82\r\n\xff"))
	f.Fuzz(func(t *testing.T, id, name string, data []byte) {
		// The module rejects data that is not valid UTF-8 at publish, so only
		// valid data ever reaches EncodeEvent. Invalid data is still checked:
		// a browser decodes the stream as UTF-8 with replacement, and since
		// every line end is ASCII and ends any broken sequence, what it
		// reads back is DecodeUTF8(NormalizeLineBreaks(data)) (which for
		// valid data is the normalized data itself).
		checkRoundTrip(t, id, name, data)

		frame := EncodeEvent(id, name, data)
		if n := EncodedSize(id, name, data); n != len(frame) {
			t.Fatalf("EncodedSize = %d, len = %d", n, len(frame))
		}
		sid, sname := SanitizeID(id), SanitizeName(name)
		if SanitizeID(sid) != sid || SanitizeName(sname) != sname {
			t.Fatalf("sanitizers not idempotent: %q %q", sid, sname)
		}
		if len(sid) > MaxIDLen || len(sname) > MaxNameLen || !utf8.ValidString(sid) || !utf8.ValidString(sname) {
			t.Fatalf("sanitized out of bounds: %q %q", sid, sname)
		}
		if !strings.HasPrefix(id, sid) && strings.IndexFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }) < 0 {
			t.Fatalf("clean id %q was changed to %q", id, sid)
		}
		if utf8.Valid(data) && !bytes.Equal(NormalizeLineBreaks(data), []byte(ssetest.DecodeUTF8(NormalizeLineBreaks(data)))) {
			t.Fatalf("valid data changed by decoding")
		}
	})
}

func BenchmarkEncodeEvent(b *testing.B) {
	for _, bc := range []struct {
		name string
		data []byte
	}{
		{"small", []byte(`{"price":101.25,"symbol":"ACME"}`)},
		{"4KiB", bytes.Repeat([]byte(`{"k":"0123456789abcdef0123456789abcdef0123456789abcdef0123456"}`+"\n"), 64)}, // 64 lines of 64 bytes
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				EncodeEvent("1234567", "price", bc.data)
			}
		})
	}
}

// A position block sets the client's last event ID and dispatches nothing;
// an id that sanitises to nothing gives no block, since an empty id field
// would reset the client's last event ID.
func TestEncodePosition(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"abc-12", "id: abc-12\n\n"},
		{"a\nb", "id: ab\n\n"},
		{"\r\n", ""},
		{"", ""},
	} {
		if got := string(EncodePosition(c.in)); got != c.want {
			t.Errorf("EncodePosition(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
