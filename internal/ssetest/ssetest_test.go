package ssetest

import (
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func msg(id, data string) Event { return Event{ID: id, Type: "message", Data: data, Retry: -1} }

type parseCase struct {
	name    string
	stream  string
	want    []Event
	lastID  string
	retry   int
	comment int
	ignored int
}

// The first six cases are the examples of the WHATWG HTML spec, section
// 9.2.5 "Parsing an event stream" and 9.2.4 "Processing model".
var parseCases = []parseCase{
	{
		name:   "spec: three messages, the second on two lines",
		stream: "data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n",
		want: []Event{
			msg("", "This is the first message."),
			msg("", "This is the second message, it\nhas two lines."),
			msg("", "This is the third message."),
		},
		retry: -1,
	},
	{
		name:   "spec: event fields set the type of each block",
		stream: "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
		want: []Event{
			{Type: "add", Data: "73857293", Retry: -1},
			{Type: "remove", Data: "2153", Retry: -1},
			{Type: "add", Data: "113411", Retry: -1},
		},
		retry: -1,
	},
	{
		name:   "spec: data lines of one block are joined by LF",
		stream: "data: YHOO\ndata: +2\ndata: 10\n\n",
		want:   []Event{msg("", "YHOO\n+2\n10")},
		retry:  -1,
	},
	{
		name:   "spec: test stream with comment, id, empty id and a double space",
		stream: ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
		want: []Event{
			msg("1", "first event"),
			msg("", "second event"),
			msg("", " third event"),
		},
		retry: -1, comment: 1,
	},
	{
		name:   "spec: bare data fields give empty data and a lone LF; an unterminated block is discarded",
		stream: "data\n\ndata\ndata\n\ndata:",
		want:   []Event{msg("", ""), msg("", "\n")},
		retry:  -1,
	},
	{
		name:   "spec: the one space after the colon is optional",
		stream: "data:test\n\ndata: test\n\n",
		want:   []Event{msg("", "test"), msg("", "test")},
		retry:  -1,
	},
	{
		name:   "a leading BOM is stripped",
		stream: "\xEF\xBB\xBFdata: x\n\n",
		want:   []Event{msg("", "x")},
		retry:  -1,
	},
	{
		name:   "only one BOM is stripped; a second makes an unknown field",
		stream: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
		want:   []Event{msg("", "y")},
		retry:  -1, ignored: 1,
	},
	{
		name:   "a BOM after the start is data",
		stream: "data: \xEF\xBB\xBFx\n\n",
		want:   []Event{msg("", "\uFEFFx")},
		retry:  -1,
	},
	{
		name:   "CR, LF and CRLF all end lines",
		stream: "data: a\rdata: b\r\ndata: c\n\r\n\rdata: d\r\r",
		want:   []Event{msg("", "a\nb\nc"), msg("", "d")},
		retry:  -1,
	},
	{
		name:   "LF CR is two line ends",
		stream: "data: a\n\rdata: b\n\n",
		want:   []Event{msg("", "a"), msg("", "b")},
		retry:  -1,
	},
	{
		name:   "a block without data moves the last event id but fires nothing",
		stream: "id: 7\n\nevent: x\n\ndata: y\n\n",
		want:   []Event{msg("7", "y")},
		lastID: "7", retry: -1,
	},
	{
		name:   "the event type does not leak into the next block",
		stream: "event: x\n\ndata: y\n\nevent: z\ndata: w\n\ndata: v\n\n",
		want:   []Event{msg("", "y"), {Type: "z", Data: "w", Retry: -1}, msg("", "v")},
		retry:  -1,
	},
	{
		name:   "an id containing NUL is ignored",
		stream: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
		want:   []Event{msg("1", "a"), msg("1", "b")},
		lastID: "1", retry: -1, ignored: 1,
	},
	{
		name:   "the last event id carries over and an empty id clears it",
		stream: "id: 1\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n",
		want:   []Event{msg("1", "a"), msg("1", "b"), msg("", "c")},
		retry:  -1,
	},
	{
		name:   "retry takes only ASCII digits",
		stream: "retry: 1000\n\nretry: 10a\nretry: -1\nretry:\nretry: 2 \nretry: +3\nretry: 99999999999999999999999\ndata: x\n\nretry:250\ndata: y\n\n",
		want:   []Event{msg("", "x"), {Type: "message", Data: "y", Retry: 250}},
		retry:  250, ignored: 6,
	},
	{
		name:   "unknown fields and field names with a space are ignored",
		stream: "foo: bar\ndata : x\nDATA: y\nevent\ndata: z\n\n",
		want:   []Event{msg("", "z")},
		retry:  -1, ignored: 3,
	},
	{
		name:   "only the first colon splits a field and only one space is stripped",
		stream: "data:: a:b\ndata:   c\nevent: t:u \n\n",
		want:   []Event{{Type: "t:u ", Data: ": a:b\n  c", Retry: -1}},
		retry:  -1,
	},
	{
		name:   "comments are counted and never dispatch",
		stream: ":\n\n: hi\n:\r\n\ndata: x\n:inside\n\n",
		want:   []Event{msg("", "x")},
		retry:  -1, comment: 4,
	},
	{
		name:   "invalid UTF-8 decodes to U+FFFD per maximal subpart",
		stream: "data: a\xffb\xe2\x82c\xed\xa0\x80d\n\n",
		want:   []Event{msg("", "a\uFFFDb\uFFFDc\uFFFD\uFFFD\uFFFDd")},
		retry:  -1,
	},
	{
		name:   "an incomplete sequence at a line end is one U+FFFD",
		stream: "data: \xf0\x9f\x98\ndata: \xf0\x9f\x98\x80\n\n",
		want:   []Event{msg("", "\uFFFD\n\U0001F600")},
		retry:  -1,
	},
	{
		name:   "an empty stream yields nothing",
		stream: "",
		retry:  -1,
	},
}

func checkParse(t *testing.T, c parseCase, got []Event, p *Parser) {
	t.Helper()
	if len(got) == 0 {
		got = nil
	}
	if !reflect.DeepEqual(got, c.want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, c.want)
	}
	if p.LastEventID != c.lastID || p.Retry != c.retry || p.Comments != c.comment || p.Ignored != c.ignored {
		t.Errorf("state: LastEventID %q Retry %d Comments %d Ignored %d; want %q %d %d %d",
			p.LastEventID, p.Retry, p.Comments, p.Ignored, c.lastID, c.retry, c.comment, c.ignored)
	}
}

func feedSplit(stream []byte, cuts []int) ([]Event, *Parser) {
	p := &Parser{}
	var got []Event
	prev := 0
	for _, c := range append(cuts, len(stream)) {
		got = append(got, p.Feed(stream[prev:c])...)
		prev = c
	}
	return got, p
}

func TestParser(t *testing.T) {
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			got, p := ParseAll([]byte(c.stream))
			checkParse(t, c, got, p)
		})
	}
}

// Any split of a stream into chunks gives the same events: a CR at the end
// of one chunk and an LF at the start of the next are one line end, and a
// UTF-8 sequence may straddle chunks.
func TestParserGivesTheSameEventsForEveryChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			s := []byte(c.stream)
			for i := 0; i <= len(s); i++ {
				for j := i; j <= len(s); j++ {
					got, p := feedSplit(s, []int{i, j})
					checkParse(t, c, got, p)
					if t.Failed() {
						t.Fatalf("split at %d and %d", i, j)
					}
				}
			}
			bytewise := make([]int, len(s))
			for i := range bytewise {
				bytewise[i] = i
			}
			got, p := feedSplit(s, bytewise)
			checkParse(t, c, got, p)
			for range 200 {
				cuts := randomCuts(rng, len(s))
				got, p := feedSplit(s, cuts)
				checkParse(t, c, got, p)
				if t.Failed() {
					t.Fatalf("cuts %v", cuts)
				}
			}
		})
	}
}

func randomCuts(rng *rand.Rand, n int) []int {
	var cuts []int
	for i := 0; i < n; i++ {
		if rng.IntN(4) == 0 {
			cuts = append(cuts, i)
		}
	}
	return cuts
}

func TestNewParserReportsNoRetryBeforeAnyInput(t *testing.T) {
	if r := NewParser().Retry; r != -1 {
		t.Fatalf("Retry = %d, want -1", r)
	}
	var p Parser
	p.Feed(nil)
	if p.Retry != -1 {
		t.Fatalf("zero Parser after Feed: Retry = %d, want -1", p.Retry)
	}
}

func TestDecodeUTF8FollowsTheWHATWGDecoder(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{"\u20ac\U0001F600", "\u20ac\U0001F600"},
		{"\xff", "\uFFFD"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},           // overlong lead byte
		{"\xe2\x82", "\uFFFD"},                 // truncated: one maximal subpart
		{"\xe2\x82a", "\uFFFDa"},               // ASCII ends the sequence and is kept
		{"\xe0\x80\x80", "\uFFFD\uFFFD\uFFFD"}, // overlong three-byte form
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\xf0\x80\x80\x80", strings.Repeat("\uFFFD", 4)},
		{"\xf4\x90\x80\x80", strings.Repeat("\uFFFD", 4)}, // above U+10FFFF
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\xf0\x9f\x98\x80", "\uFFFD\U0001F600"},
		{"\x80\x80", "\uFFFD\uFFFD"},
	} {
		if got := DecodeUTF8([]byte(c.in)); got != c.want {
			t.Errorf("DecodeUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestReaderReturnsEventsOneAtATime(t *testing.T) {
	stream := "retry: 500\n\n:\n\nid: 1\ndata: a\n\n:\n\nevent: e\ndata: b\r\n\r\ndata: unfinished"
	r := NewReader(iotest.OneByteReader(strings.NewReader(stream)))
	e, err := r.Next()
	if err != nil || e != msg("1", "a") {
		t.Fatalf("first: %+v, %v", e, err)
	}
	if r.Retry() != 500 || r.Comments() != 1 || r.LastEventID() != "1" {
		t.Fatalf("after first: retry %d comments %d id %q", r.Retry(), r.Comments(), r.LastEventID())
	}
	e, err = r.Next()
	if err != nil || e != (Event{ID: "1", Type: "e", Data: "b", Retry: -1}) {
		t.Fatalf("second: %+v, %v", e, err)
	}
	if r.Comments() != 2 {
		t.Fatalf("comments = %d, want 2", r.Comments())
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF (the unfinished block is discarded)", err)
	}
}

func TestReaderDeliversEventsReadTogetherWithAnError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(iotest.DataErrReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b\n\n"), iotest.ErrReader(boom))))
	for _, want := range []string{"a", "b"} {
		e, err := r.Next()
		if err != nil || e.Data != want {
			t.Fatalf("got %+v, %v; want data %q", e, err, want)
		}
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}
