package h1guard

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// A case is a byte stream a client sends on one connection. '|' marks
// where the blank line of the head that must be refused begins (it is not
// part of the stream); without it nothing is refused.
type parserCase struct {
	name   string
	stream string
	aside  bool // the parser must step aside (net/http closes, or not HTTP/1)
	sw     bool // a head that may switch protocols was seen
}

var parserCases = []parserCase{
	{name: "keep-alive GETs", stream: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "Content-Length then Transfer-Encoding",
		stream: "POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n|\r\n0\r\n\r\n"},
	{name: "Transfer-Encoding then Content-Length",
		stream: "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\nContent-Length: 4\r\n|\r\n"},
	{name: "names in other cases",
		stream: "POST /t HTTP/1.1\r\ncontent-length: 4\r\nTRANSFER-ENCODING: chunked\r\n|\r\n"},
	{name: "Transfer-Encoding with a list and blanks",
		stream: "POST /t HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding:  gzip , chunked \r\n|\r\n"},
	{name: "Transfer-Encoding empty",
		stream: "POST /t HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n|\r\n"},
	{name: "Transfer-Encoding folded (obs-fold)",
		stream: "POST /t HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n|\r\n"},
	{name: "Transfer-Encoding repeated",
		stream: "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n|\r\n"},
	{name: "HTTP/1.0 (net/http would ignore Transfer-Encoding and use Content-Length)",
		stream: "POST /t HTTP/1.0\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "bare LF line ends",
		stream: "POST /t HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n|\n"},
	{name: "a Content-Length body that looks like a bad head, then a bad head",
		stream: "POST /a HTTP/1.1\r\nHost: x\r\n" +
			clBody("POST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") +
			"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n|\r\n0\r\n\r\n"},
	{name: "a chunked body with extensions and trailers, then a bad head",
		stream: "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;ext=1\r\nhello\r\n" + chunk("POST / HTTP/1.1\r\nA: b\r\n\r\n", " ") + "0\r\nTrailer: x\r\nOther: y\r\n\r\n" +
			"GET /c HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "a chunked body whose data looks like a bad head",
		stream: "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			chunk("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n", "") + "0\r\n\r\n" +
			"GET /b HTTP/1.1\r\n\r\n"},
	{name: "repeated equal Content-Length frames the body",
		stream: "POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length:  3 \r\n\r\nabc" +
			"POST /b HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "a folded Content-Length",
		stream: "POST /a HTTP/1.1\r\nContent-Length:\r\n 3\r\n\r\nabc" +
			"POST /b HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "names that only contain the names",
		stream: "POST /a HTTP/1.1\r\nX-Content-Length: 5\r\nContent-Lengthy: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
			"GET /b HTTP/1.1\r\nTransfer-Encodings: chunked\r\nContent-Length: 0\r\n\r\n"},
	{name: "HTTP/1.0 ignores Transfer-Encoding alone: no body",
		stream: "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"POST /b HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "a GET with a body", stream: "GET /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n\r\n" +
		"GET /b HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n|\r\n"},
	{name: "TLS", stream: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", aside: true},
	{name: "HTTP/2 preface (h2c)", stream: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", aside: true},
	{name: "a blank line before the request line", stream: "\r\nGET / HTTP/1.1\r\n\r\n", aside: true},
	{name: "Content-Length not a number", stream: "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", aside: true},
	{name: "Content-Length empty", stream: "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", aside: true},
	{name: "Content-Length too large", stream: "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", aside: true},
	{name: "differing Content-Length", stream: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", aside: true},
	{name: "chunk size too long", stream: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\n", aside: true},
	{name: "chunk data not followed by CRLF", stream: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", aside: true},
	{name: "a line without a colon", stream: "GET / HTTP/1.1\r\nnocolon\r\n\r\n", aside: true},
	{name: "Upgrade", stream: "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", sw: true},
	{name: "CONNECT", stream: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", sw: true},
	{name: "a long head", stream: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 1<<16) + "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n|\r\n"},
}

// clBody is a Content-Length field for body, the head's end and body.
func clBody(body string) string {
	return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
}

// chunk is data as one chunk, its size in upper-case hex followed by
// afterSize.
func chunk(data, afterSize string) string {
	return fmt.Sprintf("%X%s\r\n%s\r\n", len(data), afterSize, data)
}

// feed runs stream through a parser in the given pieces and returns the
// refusal's offset in the whole stream (-1: none).
func feed(p *Parser, pieces ...string) int {
	off := 0
	for _, piece := range pieces {
		if at := p.Feed([]byte(piece)); at >= 0 {
			return off + at
		}
		off += len(piece)
	}
	return -1
}

func TestParser(t *testing.T) {
	for _, c := range parserCases {
		t.Run(c.name, func(t *testing.T) {
			want := strings.IndexByte(c.stream, '|')
			stream := strings.Replace(c.stream, "|", "", 1)
			check := func(how string, p *Parser, got int) {
				t.Helper()
				if got != want {
					t.Fatalf("%s: refused at %d, want %d", how, got, want)
				}
				if p.Aside() != c.aside {
					t.Fatalf("%s: aside %v, want %v", how, p.Aside(), c.aside)
				}
				if p.Refused() != (want >= 0) {
					t.Fatalf("%s: Refused() %v", how, p.Refused())
				}
				if want < 0 && !c.aside && p.st != sStart && !c.sw {
					t.Fatalf("%s: ended in state %d, not at the start of a head", how, p.st)
				}
			}
			var p Parser
			check("in one piece", &p, feed(&p, stream))
			if sw, _ := p.TakeSwitch(); sw != c.sw {
				t.Fatalf("TakeSwitch %v, want %v", sw, c.sw)
			}
			// Byte by byte.
			p = Parser{}
			got := -1
			for i := range len(stream) {
				if at := p.Feed([]byte{stream[i]}); at >= 0 {
					got = i + at
					break
				}
			}
			check("byte by byte", &p, got)
			// Split at every position.
			if len(stream) < 2000 {
				for k := range len(stream) + 1 {
					p = Parser{}
					check("split at "+strconv.Itoa(k), &p, feed(&p, stream[:k], stream[k:]))
				}
			}
		})
	}
}

// Feeding costs no allocation.
func TestParserDoesNotAllocate(t *testing.T) {
	stream := []byte("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
	var p Parser
	if n := testing.AllocsPerRun(100, func() { p = Parser{}; p.Feed(stream) }); n != 0 {
		t.Fatalf("%v allocations per stream", n)
	}
}

func BenchmarkParser(b *testing.B) {
	head := "POST /t/topic HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nAuthorization: Bearer abcdefghijklmnop\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n"
	stream := []byte(head + strings.Repeat("x", 64))
	b.SetBytes(int64(len(stream)))
	var p Parser
	for b.Loop() {
		p.Feed(stream)
	}
}
