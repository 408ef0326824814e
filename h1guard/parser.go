// Package h1guard refuses HTTP/1.x requests that could be framed two ways
// (request smuggling) before net/http reads them.
//
// A request with both Content-Length and Transfer-Encoding is read by Go's
// server as chunked, and net/http drops the Content-Length header before
// any handler runs, so no handler can refuse it. A front proxy that frames
// the same bytes by Content-Length would then see one request where Go
// sees two. RFC 9112 §6.3 lets a server reject such a message and requires
// it to close the connection after responding: Conn does that at the
// connection, where the header is still visible.
package h1guard

import "bytes"

// Parser follows the framing of HTTP/1.x requests as they pass, byte by
// byte: the request line, the header fields up to the blank line, then the
// body (Content-Length bytes, or chunks and trailers), so that it knows
// where each request head on a keep-alive connection begins. It buffers
// nothing: a head of any size costs a few fields, and it never allocates.
//
// It frames as net/http does. Where it cannot follow (not HTTP/1.x: TLS
// records, the HTTP/2 preface, a request net/http answers with an error
// and a close) it steps aside for good: Aside reports true and Feed
// ignores what follows. Where net/http would refuse the bytes anyway, the
// parser may be more lenient; what matters is that it never loses the
// framing of a request net/http serves.
type Parser struct {
	st    state
	flags flags
	// minor is the request's HTTP/1 minor version.
	minor byte
	// Request line: the method compared with "CONNECT" (i counts its
	// bytes), the protocol collected into proto.
	i     uint32
	proto [8]byte
	nprot uint8
	// Header field being read: candidates still matching its name (bits
	// of names), then the field whose value follows (field).
	cand  uint8
	field uint8
	// Content-Length: the value being read (val, in clState) and the
	// first value seen (cl).
	clState uint8
	val, cl uint64
	// sw: the last head passed may switch protocols (see Switch), until
	// the next head begins.
	sw, swConnect bool
	// n counts the bytes left in a Content-Length body or a chunk, or
	// the hex digits of a chunk size.
	n uint64
}

type state uint8

const (
	sStart      state = iota // where a request head begins
	sMethod                  // in the method
	sTarget                  // in the request target
	sProto                   // in the protocol version
	sLineStart               // at the start of a header line
	sName                    // in a field name
	sValue                   // in a field value
	sEndCR                   // after the CR of a line that starts with CR
	sBody                    // in a Content-Length body
	sChunkSize               // in a chunk-size
	sChunkExt                // after the chunk-size, up to its line's end
	sChunkData               // in a chunk's data
	sChunkCR                 // expecting the CR after a chunk's data
	sChunkLF                 // expecting the LF after a chunk's data
	sTrailStart              // at the start of a trailer line
	sTrailLine               // in a trailer line
	sTrailCR                 // after a CR at the start of a trailer line
	sAside                   // stepped aside: not inspecting any more
	sRefused                 // a head was refused
)

type flags uint8

const (
	fConnect flags = 1 << iota // the method is CONNECT
	fCL                        // a Content-Length field
	fTE                        // a Transfer-Encoding field
	fCLBad                     // a Content-Length net/http refuses
	fUpgrade                   // an Upgrade field
)

// Names of the fields the parser looks for, lower case, by field number
// (a bit of Parser.cand).
var names = [...]string{"content-length", "transfer-encoding", "upgrade"}

const (
	fieldCL = iota
	fieldTE
	fieldUpgrade
	fieldOther = 0xff
)

// Aside reports whether the parser has stepped aside: the rest of the
// connection is not HTTP/1.x as it understands it, or net/http closes it.
func (p *Parser) Aside() bool { return p.st == sAside }

// StepAside stops the inspection for good (the connection switched
// protocols).
func (p *Parser) StepAside() { p.st = sAside }

// Refused reports whether Feed refused a head.
func (p *Parser) Refused() bool { return p.st == sRefused }

// Switch reports whether the last head passed may switch the connection
// to another protocol (Upgrade, CONNECT), and whether it was a CONNECT:
// the bytes after its response are not HTTP/1 if the server agrees (101,
// or 2xx to CONNECT). It reports false again once the next head begins:
// a client that sends another request was not switched, and an answer
// written after that belongs to a later request.
func (p *Parser) Switch() (may, connect bool) { return p.sw, p.swConnect }

// Feed follows b, the next bytes the client sent. It returns -1, or the
// offset in b where the blank line ending a refused head begins: that
// head has both Content-Length and Transfer-Encoding, and net/http must
// not see it end. After a refusal Feed returns -1 and reads nothing.
func (p *Parser) Feed(b []byte) int {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch p.st {
		case sAside, sRefused:
			return -1
		case sBody, sChunkData:
			// Skip a body, or a chunk's data, in one step; then the next
			// head, or the chunk's CRLF.
			after := sStart
			if p.st == sChunkData {
				after = sChunkCR
			}
			left := uint64(len(b) - i)
			if p.n >= left {
				p.n -= left
				if p.n == 0 {
					p.st = after
				}
				return -1
			}
			i += int(p.n) - 1
			p.n = 0
			p.st = after
		case sStart:
			// net/http reads the request line first and skips no blank
			// line before it; a byte that cannot start a method (a TLS
			// record's 0x16, a blank line) gets its 400 or is not HTTP.
			if !isTchar(c) {
				p.st = sAside
				return -1
			}
			p.flags, p.minor, p.nprot, p.clState, p.cl = 0, 0, 0, 0, 0
			p.sw, p.swConnect = false, false
			p.i = 1
			if c != "CONNECT"[0] {
				p.i = 0xffff
			}
			p.st = sMethod
		case sMethod:
			switch {
			case c == ' ':
				if p.i == uint32(len("CONNECT")) {
					p.flags |= fConnect
				}
				p.st = sTarget
			case !isTchar(c):
				p.st = sAside
				return -1
			case p.i < uint32(len("CONNECT")) && c == "CONNECT"[p.i]:
				p.i++
			default:
				p.i = 0xffff
			}
		case sTarget:
			switch c {
			case ' ':
				p.st = sProto
			case '\n':
				p.st = sAside
				return -1
			}
		case sProto:
			if c != '\n' {
				if p.nprot >= uint8(len(p.proto)) {
					if c == '\r' && p.nprot == uint8(len(p.proto)) {
						p.nprot++ // a CR just before the LF is stripped
						continue
					}
					p.st = sAside // not HTTP/1.x: net/http refuses it
					return -1
				}
				p.proto[p.nprot] = c
				p.nprot++
				continue
			}
			if (p.nprot != 8 && p.nprot != 9) || string(p.proto[:7]) != "HTTP/1." || !isDigit(p.proto[7]) {
				p.st = sAside // HTTP/2's preface, HTTP/0.9, garbage
				return -1
			}
			p.minor = p.proto[7] - '0'
			p.field = fieldOther
			p.st = sLineStart
			p.i = 0 // header lines so far
		case sLineStart:
			switch c {
			case ' ', '\t':
				// obs-fold: this line continues the previous field's
				// value (net/http joins them with a space).
				if p.i == 0 {
					p.st = sAside // net/http refuses a head that starts so
					return -1
				}
				if p.field == fieldCL && p.clState == 1 {
					p.clState = 2
				}
				p.st = sValue
				continue
			}
			p.endField()
			if c == '\r' || c == '\n' {
				// The blank line: the head is complete.
				if p.flags&fCL != 0 && p.flags&fTE != 0 {
					p.st = sRefused
					return i
				}
				if c == '\r' {
					p.st = sEndCR
					continue
				}
				p.endHead()
				continue
			}
			p.i++
			p.cand = 1<<len(names) - 1
			p.n = 0 // bytes of the name
			p.st = sName
			p.matchName(c)
		case sEndCR:
			if c != '\n' {
				p.st = sAside // net/http refuses it
				return -1
			}
			p.endHead()
		case sName:
			switch c {
			case ':':
				p.field = fieldOther
				for f, name := range names {
					if p.cand&(1<<f) != 0 && uint64(len(name)) == p.n {
						p.field = uint8(f)
					}
				}
				switch p.field {
				case fieldCL:
					p.clState, p.val = 0, 0
				case fieldTE:
					p.flags |= fTE
				case fieldUpgrade:
					p.flags |= fUpgrade
				}
				p.st = sValue
			case '\n':
				p.st = sAside // a line without a colon: net/http refuses it
				return -1
			default:
				p.matchName(c)
			}
		case sValue:
			if p.field != fieldCL {
				// Only the line's end matters: jump to it.
				j := bytes.IndexByte(b[i:], '\n')
				if j < 0 {
					return -1
				}
				i += j
				p.st = sLineStart
				continue
			}
			if c == '\n' {
				p.st = sLineStart
				continue
			}
			p.clByte(c)
		case sChunkSize:
			if d, ok := hexDigit(c); ok {
				if p.n == 16 { // net/http: "http chunk length too large"
					p.st = sAside
					return -1
				}
				p.val = p.val<<4 | uint64(d)
				p.n++
				continue
			}
			if p.n == 0 { // no size: net/http refuses it
				p.st = sAside
				return -1
			}
			p.st = sChunkExt
			i-- // the same byte ends the size line or starts an extension
		case sChunkExt:
			if c != '\n' {
				continue // extensions, whitespace, the CR
			}
			if p.val == 0 {
				p.st = sTrailStart
				continue
			}
			p.n = p.val
			p.st = sChunkData
		case sChunkCR, sChunkLF:
			// net/http wants exactly CRLF after a chunk's data.
			if (p.st == sChunkCR && c != '\r') || (p.st == sChunkLF && c != '\n') {
				p.st = sAside
				return -1
			}
			if p.st == sChunkCR {
				p.st = sChunkLF
				continue
			}
			p.startChunk()
		case sTrailStart:
			switch c {
			case '\r':
				p.st = sTrailCR
			case '\n':
				p.st = sStart
			default:
				p.st = sTrailLine
			}
		case sTrailLine:
			if c == '\n' {
				p.st = sTrailStart
			}
		case sTrailCR:
			if c != '\n' {
				p.st = sAside
				return -1
			}
			p.st = sStart
		}
	}
	return -1
}

// matchName narrows the candidate names by c, the next byte of a field
// name (compared as net/http does, ignoring case).
func (p *Parser) matchName(c byte) {
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	for f, name := range names {
		if p.cand&(1<<f) != 0 && (p.n >= uint64(len(name)) || name[p.n] != c) {
			p.cand &^= 1 << f
		}
	}
	p.n++
}

// clByte follows a byte of a Content-Length value: optional blanks,
// digits, optional blanks, as net/http's parse after trimming; anything
// else is a value net/http refuses (400).
func (p *Parser) clByte(c byte) {
	switch {
	case c == ' ' || c == '\t' || c == '\r':
		if p.clState == 1 {
			p.clState = 2
		}
	case isDigit(c) && p.clState < 2:
		p.clState = 1
		if p.val > (1<<63-1)/10 { // beyond net/http's 63 bits
			p.flags |= fCLBad
		}
		p.val = p.val*10 + uint64(c-'0')
	default:
		p.flags |= fCLBad
	}
}

// endField closes the field whose value just ended.
func (p *Parser) endField() {
	if p.field != fieldCL {
		p.field = fieldOther
		return
	}
	p.field = fieldOther
	switch {
	case p.clState == 0: // empty: net/http refuses it
		p.flags |= fCLBad
	case p.flags&fCL == 0:
		p.flags |= fCL
		p.cl = p.val
	case p.cl != p.val: // differing values: net/http refuses them
		p.flags |= fCLBad
	}
}

// endHead sets up the body of a head net/http will serve: chunked when it
// has Transfer-Encoding (HTTP/1.1 and later; net/http ignores it in
// HTTP/1.0 and answers 501 to anything but chunked, closing the
// connection), else Content-Length bytes, else none.
func (p *Parser) endHead() {
	if p.flags&(fUpgrade|fConnect) != 0 {
		p.sw, p.swConnect = true, p.flags&fConnect != 0
	}
	switch {
	case p.flags&fTE != 0 && p.minor >= 1:
		p.startChunk()
	case p.flags&fCLBad != 0:
		p.st = sAside // net/http answers 400 and closes
	case p.flags&fCL != 0 && p.cl > 0:
		p.n = p.cl
		p.st = sBody
	default:
		p.st = sStart
	}
}

func (p *Parser) startChunk() {
	p.val, p.n = 0, 0
	p.st = sChunkSize
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2), as a
// method must be.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
