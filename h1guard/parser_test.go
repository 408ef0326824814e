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
	{name: "Upgrade, then another request", stream: "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n"},
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
			if sw, _ := p.Switch(); sw != c.sw {
				t.Fatalf("Switch %v, want %v", sw, c.sw)
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

// FuzzParser checks that the parser never panics, that how the bytes are
// split across reads never changes what it decides, that a refusal is
// always at the start of a blank line, and that a well-formed stream of
// requests built from the same bytes is never refused nor left.
func FuzzParser(f *testing.F) {
	for _, c := range parserCases {
		if len(c.stream) > 4096 {
			continue // slow to mutate and minimize
		}
		f.Add([]byte(strings.Replace(c.stream, "|", "", 1)), uint16(len(c.stream)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		var whole, parts Parser
		at := whole.Feed(data)
		k := int(split) % (len(data) + 1)
		if got := feed(&parts, string(data[:k]), string(data[k:])); got != at || parts.st != whole.st {
			t.Fatalf("split at %d: refused at %d in state %d; whole: %d in state %d", k, got, parts.st, at, whole.st)
		}
		if at >= 0 && data[at] != '\r' && data[at] != '\n' {
			t.Fatalf("refused at %d, byte %q: not a blank line", at, data[at])
		}
		stream := wellFormed(data)
		var p Parser
		if at := p.Feed(stream); at >= 0 || p.Aside() || p.st != sStart {
			t.Fatalf("well-formed stream %q: refused at %d, aside %v, state %d", stream, at, p.Aside(), p.st)
		}
	})
}

// wellFormed builds from data a stream of requests net/http serves: heads
// with various fields (never both Content-Length and Transfer-Encoding),
// and bodies of arbitrary bytes framed by Content-Length or chunked with
// extensions and trailers.
func wellFormed(data []byte) []byte {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	take := func(n int) []byte {
		n = min(n, len(data))
		b := data[:n]
		data = data[n:]
		return b
	}
	// A field value: visible bytes only.
	value := func() string {
		v := take(int(next() % 16))
		out := make([]byte, len(v))
		for i, c := range v {
			out[i] = '!' + c%94
		}
		return string(out)
	}
	names := []string{"Host", "X-Content-Length", "Accept", "content-type", "Trailer", "Transfer-Encodings"}
	var out []byte
	for len(data) > 0 {
		kind := next() % 4
		minor := '1'
		if kind == 3 {
			minor = '0'
		}
		out = fmt.Appendf(out, "POST /%s HTTP/1.%c\r\n", strings.ReplaceAll(value(), " ", ""), minor)
		for range next() % 4 {
			out = fmt.Appendf(out, "%s: %s\r\n", names[int(next())%len(names)], value())
			if next()%5 == 0 {
				out = fmt.Appendf(out, " %s\r\n", value()) // obs-fold
			}
		}
		switch kind {
		case 1, 3: // Content-Length
			body := take(int(next()))
			out = fmt.Appendf(out, "Content-Length: %d\r\n\r\n%s", len(body), body)
		case 2: // chunked
			out = append(out, "Transfer-Encoding: chunked\r\n\r\n"...)
			for range next() % 4 {
				c := take(1 + int(next()))
				if len(c) == 0 {
					break // a chunk of 0 bytes would be the last
				}
				out = fmt.Appendf(out, "%x;%s\r\n%s\r\n", len(c), value(), c)
			}
			out = append(out, "0\r\n"...)
			for range next() % 3 {
				out = fmt.Appendf(out, "T: %s\r\n", value())
			}
			out = append(out, "\r\n"...)
		default:
			out = append(out, "\r\n"...)
		}
	}
	return out
}
