// Package wire is the Server-Sent Events wire format: events, comments and
// retry hints encoded as the WHATWG parser reads them, and the sanitising of
// the fields that come from input (event names, ids), so that nothing a
// publisher or an upstream sends can end a line early and forge a field.
// It is a leaf: the store frames events with it, ingest sanitises with it,
// and the stream engine writes what it produced.
package wire

import (
	"bytes"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Field limits. They bound what one client must hold per event and keep a
// hostile placeholder or header from inflating every frame of a topic.
const (
	MaxNameLen = 64
	MaxIDLen   = 256
)

// defaultName is the type a parser gives an event that names none, so
// writing it would only cost bytes.
const defaultName = "message"

// EncodeEvent returns the complete wire bytes of one event, ending in the
// blank line that dispatches it.
//
// The lines are "id: <id>" (left out when the sanitized id is empty, since
// an empty id field would reset the client's last event ID rather than keep
// it), "event: <name>" (left out when the sanitized name is "message", the
// type a parser assumes), then one "data: <line>" per line of data, then an
// empty line. Data is split on CRLF, lone CR and lone LF, because a WHATWG
// parser ends a line on each of them: the client reads back
// NormalizeLineBreaks(data). Empty data gives a single "data: " line, which
// a parser dispatches as an event whose data is "" (only a block with no
// data field at all is dropped), so every call yields exactly one event.
//
// id and name go through SanitizeID and SanitizeName, so no input can end
// a line early and forge a field. The value is written after ": " so that
// data, ids or names starting with a space or a colon survive: a parser
// strips exactly one space after the colon.
//
// EncodeEvent allocates once when id and name are already clean (the
// normal case: names are sanitized at publish and ids are generated).
func EncodeEvent(id, name string, data []byte) []byte {
	id, name = SanitizeID(id), SanitizeName(name)
	return appendEvent(make([]byte, 0, encodedSize(id, name, data)), id, name, data)
}

const (
	idPrefix    = "id: "
	eventPrefix = "event: "
	dataPrefix  = "data: "
)

// encodedSize takes an already sanitized id and name.
func encodedSize(id, name string, data []byte) int {
	n := 0
	if id != "" {
		n += len(idPrefix) + len(id) + 1
	}
	if name != defaultName {
		n += len(eventPrefix) + len(name) + 1
	}
	// Every break byte is dropped and every line costs a prefix and an LF;
	// a CRLF is one break made of two bytes.
	lf, cr := bytes.Count(data, []byte{'\n'}), bytes.Count(data, []byte{'\r'})
	breaks := lf + cr
	if cr > 0 {
		breaks -= bytes.Count(data, []byte("\r\n"))
	}
	lines := breaks + 1
	n += len(data) - lf - cr + lines*(len(dataPrefix)+1)
	return n + 1
}

// appendEvent takes an already sanitized id and name.
func appendEvent(dst []byte, id, name string, data []byte) []byte {
	if id != "" {
		dst = append(dst, idPrefix...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if name != defaultName {
		dst = append(dst, eventPrefix...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		i, w := lineBreak(data)
		dst = append(dst, dataPrefix...)
		if i < 0 {
			dst = append(dst, data...)
			dst = append(dst, '\n')
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		data = data[i+w:]
	}
	return append(dst, '\n')
}

// lineBreak finds the first line end in b: its index and width (2 for
// CRLF), or -1, 0. The CR search stops at the next LF so that scanning a
// whole payload stays linear however many lines it has.
func lineBreak(b []byte) (int, int) {
	lf := bytes.IndexByte(b, '\n')
	limit := lf
	if lf < 0 {
		limit = len(b)
	}
	cr := bytes.IndexByte(b[:limit], '\r')
	switch {
	case cr >= 0 && cr+1 < len(b) && b[cr+1] == '\n':
		return cr, 2
	case cr >= 0:
		return cr, 1
	case lf >= 0:
		return lf, 1
	}
	return -1, 0
}

// NormalizeLineBreaks returns data with every CRLF and lone CR turned into
// LF: exactly what a client reads back once EncodeEvent has split the data
// into lines. Data without a CR is returned as is, not copied.
func NormalizeLineBreaks(data []byte) []byte {
	if bytes.IndexByte(data, '\r') < 0 {
		return data
	}
	out := make([]byte, 0, len(data))
	for {
		i, w := lineBreak(data)
		if i < 0 {
			return append(out, data...)
		}
		out = append(out, data[:i]...)
		out = append(out, '\n')
		data = data[i+w:]
	}
}

// EncodeComment returns ": <text>\n\n", with CR, LF and NUL removed from
// text so that it cannot end the comment and start a field. Empty text gives
// ":\n\n", the three-byte heartbeat: parsers ignore it, but it crosses
// proxies and shows that the connection is alive. The trailing blank line
// dispatches nothing, because events are always written whole.
func EncodeComment(text string) []byte {
	if text == "" {
		return []byte(":\n\n")
	}
	b := make([]byte, 0, len(text)+4)
	b = append(b, ": "...)
	for i := 0; i < len(text); i++ {
		if c := text[i]; c != '\r' && c != '\n' && c != 0 {
			b = append(b, c)
		}
	}
	return append(b, '\n', '\n')
}

// EncodePosition returns an id field ended by a blank line: a block
// without data, which a WHATWG parser dispatches as no event at all while
// still setting the client's last event ID to id. An empty id after
// sanitising gives nothing, since an empty id field would reset the
// client's last event ID instead.
func EncodePosition(id string) []byte {
	id = SanitizeID(id)
	if id == "" {
		return nil
	}
	return append(append([]byte("id: "), id...), '\n', '\n')
}

// EncodeRetry returns "retry: <milliseconds>\n\n", which sets the client's
// reconnection delay. Parsers ignore a retry value with anything but ASCII
// digits, so a negative d is written as 0 rather than as "-5". Sub-millisecond
// parts are truncated.
func EncodeRetry(d time.Duration) []byte {
	ms := max(d.Milliseconds(), 0)
	b := make([]byte, 0, len("retry: \n\n")+20)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, '\n', '\n')
}

// isControl reports the ASCII bytes dropped from names and ids: the C0
// controls, which include the line ends CR and LF and the NUL that makes a
// parser ignore an id, and DEL, which no one means to put in a header-like
// value. Forbidden is the same rule for every rune.
func isControl(c byte) bool { return c < 0x20 || c == 0x7F }

// Forbidden reports the runes no event name, id or topic name may hold:
// every Unicode control character (C0, DEL and C1, among them U+0085 NEXT
// LINE, which some parsers and log viewers take as a line end, and U+009B,
// a terminal's control sequence introducer) and the line and paragraph
// separators U+2028 and U+2029, which JavaScript and many viewers treat as
// line ends. It is the one rule shared by names, ids and topic names.
func Forbidden(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// SanitizeName makes an event type safe to write: it drops every Forbidden
// rune (so CR, LF, NUL, NEL and the separators can never appear), replaces invalid UTF-8
// with U+FFFD, trims surrounding white space, and truncates to MaxNameLen
// bytes on a rune boundary. It returns "message", the type a parser
// assumes, when nothing is left. It is idempotent, so a name that equals its
// own sanitized form is known to be safe.
func SanitizeName(s string) string {
	if cleanName(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), MaxNameLen+utf8.UTFMax))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !isControl(c) {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if !Forbidden(r) {
			b.WriteRune(r) // RuneError for an invalid byte: U+FFFD
		}
		i += w
	}
	// Trimming before truncation keeps leading spaces from eating the
	// budget; trimming after drops a space that truncation left at the end.
	out := strings.TrimFunc(b.String(), unicode.IsSpace)
	out = strings.TrimRightFunc(truncate(out, MaxNameLen), unicode.IsSpace)
	if out == "" {
		return defaultName
	}
	return out
}

// cleanName is SanitizeName's fast path: true when s is its own sanitized
// form, so the common case costs no allocation.
func cleanName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || isControl(c) || c == ' ' {
			return cleanNameSlow(s)
		}
	}
	return true
}

func cleanNameSlow(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if Forbidden(r) {
			return false
		}
	}
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	return !unicode.IsSpace(first) && !unicode.IsSpace(last)
}

// SanitizeID makes an event id safe to write: it drops every Forbidden rune
// (so CR, LF, NUL, NEL and the separators can never appear) and every byte
// of invalid UTF-8,
// and truncates to MaxIDLen bytes on a rune boundary. Spaces are kept: the
// encoder writes "id: " before the value, so a leading space survives the
// one a parser strips. It is idempotent.
func SanitizeID(s string) string {
	if cleanID(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), MaxIDLen))
	for i := 0; i < len(s) && b.Len() < MaxIDLen; {
		c := s[i]
		if c < utf8.RuneSelf {
			if !isControl(c) {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && w == 1) || Forbidden(r) {
			i += w
			continue
		}
		if b.Len()+w > MaxIDLen {
			break
		}
		b.WriteString(s[i : i+w])
		i += w
	}
	return b.String()
}

func cleanID(s string) bool {
	if len(s) > MaxIDLen {
		return false
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isControl(c) {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if ascii {
		return true
	}
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if Forbidden(r) {
			return false
		}
	}
	return true
}

// truncate cuts valid UTF-8 s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
