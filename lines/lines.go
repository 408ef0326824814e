// Package lines cuts byte streams into lines, the way NDJSON (and JSON
// Lines) and the WHATWG event stream each define them, holding at most one
// line of a bounded length in memory. It is the one rule for what a line
// and a blank line are, shared by the publish endpoint and the sources.
package lines

import (
	"bytes"
	"io"
)

// Line is one line of an upstream stream, without its line end.
type Line struct {
	// N is the line's number in its stream, from 1, counting every line
	// (blank and skipped ones included), so a log can point at it.
	N int
	// Text is the line's content. It is valid until the next call to Next.
	// For a TooLong line it is only a sample of the line's first bytes.
	Text []byte
	// TooLong reports a line longer than the splitter's maximum: it was
	// read through to its end without being held, and must be skipped.
	TooLong bool
	// Len is the length of the whole line in bytes, line end excluded.
	Len int64
}

// SampleLen is how much of a skipped line is kept for the log.
const SampleLen = 96

// minBuffer is the splitter's first buffer; it grows up to the maximum
// line length plus room for the line end, never beyond.
const minBuffer = 4096

var bom = []byte("\xEF\xBB\xBF")

// Splitter cuts a byte stream into lines, holding at most one line of the
// maximum length (plus its line end) in memory: a longer line is read
// through to the next line end and reported as TooLong, never buffered
// whole.
//
// In NDJSON mode (the ndjson and JSON Lines specs) a line ends with LF, a
// CR before the LF is dropped, and blank lines (nothing but spaces, tabs or
// CRs) are skipped. In SSE mode (the WHATWG event stream) a line ends with
// CRLF, LF or a lone CR, and blank lines are returned, since they dispatch
// events. In both a leading byte order mark is dropped and, at a clean end
// of the stream (io.EOF), a last line without a line end is returned; after
// any other read error a partial last line is dropped, since its rest may
// come again after a reconnection.
type Splitter struct {
	r   io.Reader
	max int
	sse bool

	buf               []byte
	start, scan, end  int // buf[start:end] is pending; no line end in buf[start:scan]
	n                 int // lines seen
	bomDone, skipLF   bool
	err               error // sticky read error
	sample            [SampleLen]byte
	partial           bool // the stream ended inside a line (read error)
	zeroReads, maxCap int
}

// NewSplitter returns a splitter reading lines of at most maxLine bytes
// from r; sse selects SSE line ends and keeps blank lines.
func NewSplitter(r io.Reader, maxLine int, sse bool) *Splitter {
	maxLine = max(maxLine, 1)
	s := &Splitter{r: r, max: maxLine, sse: sse, maxCap: maxLine + 2}
	s.buf = make([]byte, min(minBuffer, s.maxCap))
	return s
}

// Buffered returns the size of the splitter's buffer: never more than the
// maximum line length plus two bytes.
func (s *Splitter) Buffered() int { return len(s.buf) }

// Partial reports whether the stream ended, with an error, inside a line
// that was then dropped.
func (s *Splitter) Partial() bool { return s.partial }

// Next returns the next line. At the end of the stream it returns the
// reader's error: io.EOF for a clean end.
func (s *Splitter) Next() (Line, error) {
	for {
		if !s.bomDone {
			if s.end-s.start < len(bom) && s.err == nil {
				s.fill()
				continue
			}
			if bytes.HasPrefix(s.buf[s.start:s.end], bom) {
				s.start += len(bom)
				s.scan = s.start
			}
			s.bomDone = true
		}
		if s.skipLF {
			if s.start == s.end && s.err == nil {
				s.fill()
				continue
			}
			s.skipLF = false
			if s.start < s.end && s.buf[s.start] == '\n' {
				s.start++
				s.scan = max(s.scan, s.start)
			}
		}
		if i := s.indexEnd(s.buf[s.scan:s.end]); i >= 0 {
			pos := s.scan + i
			line := s.buf[s.start:pos]
			s.start = s.afterEnd(pos, s.end)
			s.scan = s.start
			if l, ok := s.emit(line); ok {
				return l, nil
			}
			continue
		}
		s.scan = s.end
		pending := s.end - s.start
		// Without a line end in sight, pending bytes longer than the
		// maximum plus a CR can only be part of a line too long.
		if pending > s.max+1 || (s.sse && pending > s.max) {
			return s.discard()
		}
		if s.err != nil {
			if pending == 0 {
				return Line{}, s.err
			}
			line := s.buf[s.start:s.end]
			s.start, s.scan = s.end, s.end
			if s.err != io.EOF {
				s.partial = true
				return Line{}, s.err
			}
			if l, ok := s.emit(line); ok {
				return l, nil
			}
			continue
		}
		s.fill()
	}
}

// indexEnd finds the first line end in b.
func (s *Splitter) indexEnd(b []byte) int {
	if s.sse {
		return bytes.IndexAny(b, "\r\n")
	}
	return bytes.IndexByte(b, '\n')
}

// afterEnd returns where the line after the line end at pos starts, given
// that the buffer holds data up to end; in SSE mode a CR at the very end of
// the data may be the first half of a CRLF.
func (s *Splitter) afterEnd(pos, end int) int {
	next := pos + 1
	if s.sse && s.buf[pos] == '\r' {
		switch {
		case next == end:
			s.skipLF = true
		case s.buf[next] == '\n':
			next++
		}
	}
	return next
}

// emit numbers a complete line and says whether to return it.
func (s *Splitter) emit(line []byte) (Line, bool) {
	s.n++
	if !s.sse {
		line = bytes.TrimSuffix(line, []byte{'\r'})
	}
	if len(line) > s.max {
		k := copy(s.sample[:], line)
		return Line{N: s.n, Text: s.sample[:k], TooLong: true, Len: int64(len(line))}, true
	}
	if !s.sse && blank(line) {
		return Line{}, false
	}
	return Line{N: s.n, Text: line, Len: int64(len(line))}, true
}

// blank reports a line of JSON white space only (LF cannot occur in it).
func blank(line []byte) bool {
	for _, c := range line {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// discard reads through the rest of a line too long to hold, keeping a
// sample of its start.
func (s *Splitter) discard() (Line, error) {
	s.n++
	k := copy(s.sample[:], s.buf[s.start:s.end])
	total := int64(s.end - s.start)
	s.start, s.scan, s.end = 0, 0, 0
	for {
		if i := s.indexEnd(s.buf[s.start:s.end]); i >= 0 {
			pos := s.start + i
			total += int64(i)
			s.start = s.afterEnd(pos, s.end)
			s.scan = s.start
			return Line{N: s.n, Text: s.sample[:k], TooLong: true, Len: total}, nil
		}
		total += int64(s.end - s.start)
		s.start, s.scan, s.end = 0, 0, 0
		if s.err != nil {
			// The stream ended inside the long line: it is skipped all
			// the same.
			return Line{N: s.n, Text: s.sample[:k], TooLong: true, Len: total}, nil
		}
		s.fill()
	}
}

// fill reads more into the buffer, first moving pending bytes to its front
// or growing it (up to maxCap) when it is full.
func (s *Splitter) fill() {
	if s.end == len(s.buf) {
		if s.start > 0 {
			n := copy(s.buf, s.buf[s.start:s.end])
			s.scan -= s.start
			s.start, s.end = 0, n
		}
		if s.end == len(s.buf) && len(s.buf) < s.maxCap {
			nb := make([]byte, min(max(2*len(s.buf), minBuffer), s.maxCap))
			copy(nb, s.buf[:s.end])
			s.buf = nb
		}
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	switch {
	case err != nil:
		s.err = err
	case n == 0:
		s.zeroReads++
		if s.zeroReads > 100 {
			s.err = io.ErrNoProgress
		}
	default:
		s.zeroReads = 0
	}
}
