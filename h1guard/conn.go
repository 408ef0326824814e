package h1guard

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Refusal is the answer to a refused request: a 400 that closes the
// connection (RFC 9112 §6.3), saying what is wrong.
const Refusal = "HTTP/1.1 400 Bad Request\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 55\r\n" +
	"\r\n" +
	"request has both Content-Length and Transfer-Encoding\r\n"

// substitute replaces the blank line of a refused head: a header line
// without a colon, which net/http refuses with its own 400 and a close.
// net/http thus answers in its turn, after the responses to the requests
// before it on the connection (it serves them one at a time), and Write
// puts Refusal in place of that answer (netHTTP400).
const substitute = "refused by h1guard\r\n\r\n"

// netHTTP400 is what net/http writes for a malformed request head.
const netHTTP400 = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"

// lingerTime bounds how long Close reads what the client still sends
// after a refusal, as net/http does before closing (its
// rstAvoidanceDelay): closing a socket with unread bytes resets the
// connection, and the client could lose the answer.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// Listener wraps ln so that each plaintext HTTP/1.x connection it accepts
// refuses requests with both Content-Length and Transfer-Encoding (see
// Conn). onRefuse, if not nil, is called once per refusal with the
// client's address. Connections that carry TLS (ln is beneath the TLS
// layer) or HTTP/2 are passed through untouched once their first bytes
// show it; a *tls.Conn (ln is above the TLS layer) is returned as it is.
func Listener(ln net.Listener, onRefuse func(remote net.Addr)) net.Listener {
	return listener{ln, onRefuse}
}

type listener struct {
	net.Listener
	onRefuse func(net.Addr)
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, isTLS := c.(*tls.Conn); isTLS {
		return c, nil
	}
	return &Conn{Conn: c, onRefuse: l.onRefuse}, nil
}

// Conn is a connection whose reads pass through a Parser. Bytes reach the
// reader as they came, undelayed, except at a refused head: there the
// reader gets a line that makes the head malformed instead of the head's
// end, then EOF, so net/http never serves the request nor reads past it.
// net/http then answers 400 and closes; Conn writes Refusal in place of
// that answer, and on Close shuts its side and drains what the client
// still sends for a moment before closing.
//
// An Upgrade or CONNECT request may switch the connection to another
// protocol: from its head's end until the client starts another request,
// Write looks at the start of each write for a 101 (a 2xx to CONNECT),
// upon which the inspection ends.
type Conn struct {
	net.Conn
	onRefuse func(net.Addr)

	// Owned by the reader (net/http reads from one goroutine at a time).
	p       Parser
	pending string // of substitute, not yet read
	sw      uint32 // the switch bits of watch the reader last set

	// watch: what Write looks for (bits below), shared with the writer.
	watch     atomic.Uint32
	switched  atomic.Bool
	refused   atomic.Bool
	answered  atomic.Bool
	lingering atomic.Bool
}

const (
	watchSwitch  = 1 << iota // a 101 (Upgrade)
	watchConnect             // a 2xx (CONNECT)
	watchAnswer              // net/http's 400 to the substitute
)

// Read reads from the connection and follows what it read.
func (c *Conn) Read(b []byte) (int, error) {
	if c.p.st == sAside {
		return c.Conn.Read(b)
	}
	if c.p.st == sRefused {
		if c.pending == "" || len(b) == 0 {
			return 0, io.EOF
		}
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		if c.pending == "" {
			c.watch.Or(watchAnswer)
		}
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if c.switched.Load() {
		c.p.StepAside()
		return n, err
	}
	at := c.p.Feed(b[:n])
	var sw uint32
	if may, connect := c.p.Switch(); may {
		sw = watchSwitch
		if connect {
			sw |= watchConnect
		}
	}
	if sw != c.sw {
		c.sw = sw
		for {
			old := c.watch.Load()
			if c.watch.CompareAndSwap(old, old&^(watchSwitch|watchConnect)|sw) {
				break
			}
		}
	}
	if at < 0 {
		return n, err
	}
	// What the client sent after the refused head (the rest of this
	// read and all later ones) is never read: the reader gets the
	// substitute, then EOF.
	c.refused.Store(true)
	if c.onRefuse != nil {
		c.onRefuse(c.RemoteAddr())
	}
	m := copy(b[at:], substitute)
	c.pending = substitute[m:]
	if c.pending == "" {
		c.watch.Or(watchAnswer)
	}
	return at + m, nil
}

// Write writes b, or Refusal in place of net/http's answer to a refused
// head.
func (c *Conn) Write(b []byte) (int, error) {
	w := c.watch.Load()
	if w == 0 {
		return c.Conn.Write(b)
	}
	if w&watchAnswer != 0 && string(b) == netHTTP400 && c.answered.CompareAndSwap(false, true) {
		if _, err := io.WriteString(c.Conn, Refusal); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if w&(watchSwitch|watchConnect) != 0 && switches(b, w&watchConnect != 0) {
		c.switched.Store(true)
		c.watch.And(^uint32(watchSwitch | watchConnect))
	}
	return c.Conn.Write(b)
}

// switches reports whether b starts a response that switches protocols:
// 101, or 2xx when a CONNECT is pending.
func switches(b []byte, connect bool) bool {
	if len(b) < len("HTTP/1.1 200") || !bytes.HasPrefix(b, []byte("HTTP/1.")) || b[8] != ' ' {
		return false
	}
	code := b[9:12]
	return string(code) == "101" || (connect && code[0] == '2')
}

// Close closes the connection. After a refusal it first shuts its own side
// (the client sees the end of the answer) and reads what the client still
// sends, for lingerTime at most, so that closing does not reset the
// connection under the answer.
func (c *Conn) Close() error {
	if c.refused.Load() && c.lingering.CompareAndSwap(false, true) {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err == nil {
				_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
				_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
			}
		}
	}
	return c.Conn.Close()
}

// CloseWrite shuts the writing side when the connection beneath can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("h1guard: the connection cannot close its writing side alone")
}

// SyscallConn is the socket's (Conn stays usable for what needs the
// socket: parking streams, watching for hang-ups).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("h1guard: the connection is not a socket")
}

// NetConn returns the connection beneath.
func (c *Conn) NetConn() net.Conn { return c.Conn }
