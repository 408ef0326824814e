// Package ssetest is the Go SSE client of this module's tests: a parser
// that follows the WHATWG HTML "interpret an event stream" algorithm to the
// letter, so that a test asserting on its output asserts on what a browser's
// EventSource would see.
//
// Following the spec, the byte stream is decoded as UTF-8 with the WHATWG
// decoder (a leading BOM is stripped, every maximal invalid subpart becomes
// one U+FFFD), and the last incomplete block at end of stream is discarded.
package ssetest

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Event is one dispatched event.
type Event struct {
	// ID is the last event ID at dispatch: it carries over from earlier
	// events when this one sets none, as EventSource's lastEventId does.
	ID string
	// Type is "message" unless the block set an event field.
	Type string
	// Data has the block's data lines joined by LF.
	Data string
	// Retry is the value of a valid retry field in the event's own block,
	// or -1 if it had none; Parser.Retry holds the stream's current value.
	Retry int
}

// Parser implements "interpret an event stream" incrementally. A zero
// Parser is ready to use; NewParser also starts Retry at -1 before the
// first Feed.
type Parser struct {
	// LastEventID is the event source's last event ID string: it moves on
	// every blank line, even one that dispatches no event.
	LastEventID string
	// Retry is the reconnection time in milliseconds set by the latest
	// valid retry field, or -1 if none has been seen.
	Retry int
	// Comments counts comment lines (starting with ':').
	Comments int
	// Ignored counts lines the spec tells a parser to ignore: unknown field
	// names, ids containing NUL and retry values that are not all digits.
	// An encoder that only writes meaningful fields keeps it at 0.
	Ignored int

	started   bool
	firstLine bool // the next line is the stream's first, where a BOM may sit
	skipLF    bool // the last chunk ended in CR: a leading LF ends no line
	line      []byte
	data      strings.Builder
	eventType string
	idBuf     string
	retry     int // set in the current block, -1 if none
}

// NewParser returns a Parser with Retry at -1.
func NewParser() *Parser {
	p := &Parser{}
	p.init()
	return p
}

func (p *Parser) init() {
	if p.started {
		return
	}
	p.started = true
	p.firstLine = true
	p.Retry = -1
	p.retry = -1
}

// Feed parses the next chunk of the stream and returns the events it
// completed. Chunks may split the stream anywhere, inside a UTF-8 sequence
// or between the CR and LF of one line end: feeding a stream in any split
// yields the same events.
func (p *Parser) Feed(chunk []byte) []Event {
	p.init()
	var events []Event
	if p.skipLF && len(chunk) > 0 {
		p.skipLF = false
		if chunk[0] == '\n' {
			chunk = chunk[1:]
		}
	}
	for len(chunk) > 0 {
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			p.line = append(p.line, chunk...)
			break
		}
		p.line = append(p.line, chunk[:i]...)
		rest := chunk[i+1:]
		if chunk[i] == '\r' {
			switch {
			case len(rest) == 0:
				p.skipLF = true
			case rest[0] == '\n':
				rest = rest[1:]
			}
		}
		chunk = rest
		if e, ok := p.processLine(p.line); ok {
			events = append(events, e)
		}
		p.line = p.line[:0]
	}
	return events
}

func (p *Parser) processLine(raw []byte) (Event, bool) {
	if p.firstLine {
		p.firstLine = false
		raw = bytes.TrimPrefix(raw, []byte("\xEF\xBB\xBF"))
	}
	if len(raw) == 0 {
		return p.dispatch()
	}
	line := DecodeUTF8(raw)
	if line[0] == ':' {
		p.Comments++
		return Event{}, false
	}
	field, value, found := strings.Cut(line, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch field {
	case "event":
		p.eventType = value
	case "data":
		p.data.WriteString(value)
		p.data.WriteByte('\n')
	case "id":
		if strings.IndexByte(value, 0) >= 0 {
			p.Ignored++
			break
		}
		p.idBuf = value
	case "retry":
		n, ok := parseDigits(value)
		if !ok {
			p.Ignored++
			break
		}
		p.Retry, p.retry = n, n
	default:
		p.Ignored++
	}
	return Event{}, false
}

// parseDigits accepts only ASCII digits, as the spec requires (no sign, no
// space). An empty value or one too large for an int is ignored, as
// browsers do.
func parseDigits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func (p *Parser) dispatch() (Event, bool) {
	p.LastEventID = p.idBuf
	retry := p.retry
	p.retry = -1
	if p.data.Len() == 0 {
		p.eventType = ""
		return Event{}, false
	}
	data := strings.TrimSuffix(p.data.String(), "\n")
	typ := p.eventType
	if typ == "" {
		typ = "message"
	}
	p.data.Reset()
	p.eventType = ""
	return Event{ID: p.LastEventID, Type: typ, Data: data, Retry: retry}, true
}

// ParseAll parses a whole stream at once.
func ParseAll(stream []byte) ([]Event, *Parser) {
	p := NewParser()
	return p.Feed(stream), p
}

// DecodeUTF8 decodes b with the WHATWG UTF-8 decoder in replacement mode:
// each maximal subpart of an invalid sequence becomes one U+FFFD. (Go's
// range loop and strings.ToValidUTF8 group errors differently.) Line ends
// are ASCII and end any sequence in progress, so decoding line by line
// gives what decoding the whole stream would.
func DecodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	var (
		needed, seen int
		cp           rune
		lower, upper byte = 0x80, 0xBF
	)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if needed == 0 {
			switch {
			case c <= 0x7F:
				sb.WriteByte(c)
			case c >= 0xC2 && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case c >= 0xE0 && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				}
				if c == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(c&0x0F)
			case c >= 0xF0 && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				}
				if c == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(c&0x07)
			default:
				sb.WriteRune(utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			needed, seen, cp = 0, 0, 0
			lower, upper = 0x80, 0xBF
			sb.WriteRune(utf8.RuneError)
			i-- // the byte starts afresh
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		seen++
		if seen == needed {
			sb.WriteRune(cp)
			needed, seen, cp = 0, 0, 0
		}
	}
	if needed != 0 {
		sb.WriteRune(utf8.RuneError)
	}
	return sb.String()
}

// Reader reads events from a stream such as an HTTP response body.
type Reader struct {
	r       io.Reader
	p       *Parser
	buf     []byte
	pending []Event
	err     error
}

// NewReader returns a Reader that parses r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, p: NewParser(), buf: make([]byte, 32<<10)}
}

// Next blocks until a whole event has been parsed and returns it. At the
// end of the stream it returns io.EOF (an unfinished last block is
// discarded, as the spec says), or the read error that ended it.
func (r *Reader) Next() (Event, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			return Event{}, r.err
		}
		n, err := r.r.Read(r.buf)
		r.pending = r.p.Feed(r.buf[:n])
		r.err = err
	}
	e := r.pending[0]
	r.pending = r.pending[1:]
	return e, nil
}

// Comments returns how many comment lines (heartbeats included) have been
// read so far.
func (r *Reader) Comments() int { return r.p.Comments }

// Retry returns the latest valid retry value, or -1 if none has been read.
func (r *Reader) Retry() int { return r.p.Retry }

// LastEventID returns the last event ID string, which a reconnecting client
// sends back in the Last-Event-ID header.
func (r *Reader) LastEventID() string { return r.p.LastEventID }

// Parser gives access to the underlying parser's counters.
func (r *Reader) Parser() *Parser { return r.p }
