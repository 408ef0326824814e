package stream

import (
	"crypto/tls"
	"net"
	"syscall"
	"time"
)

// ParkableListener wraps a listener whose connections will carry TLS (it
// goes before the TLS layer) so that a detached event stream over TLS can
// park like a plain one.
//
// A tls.Conn write cannot be attempted without blocking: it encrypts a
// record and writes all of it to the connection beneath. Over a parkConn
// that write never blocks while the stream is parked: what the socket does
// not take at once is kept (already encrypted) and the stream leaves its
// lot for its own goroutine, which writes the rest with the write timeout,
// exactly as a plain parked stream does. So the topic's lot can encrypt and
// write each event to every parked TLS stream, and an idle TLS subscriber
// needs no goroutine. Until a stream parks, and for every other request and
// protocol (HTTP/2 included), the connection behaves as the one it wraps.
//
// On platforms without non-blocking socket writes (see canWriteNow) the
// connections are returned unwrapped, and TLS streams are served detached
// by a goroutine each, as without the wrapper.
func ParkableListener(ln net.Listener) net.Listener {
	return parkableListener{ln}
}

type parkableListener struct{ net.Listener }

func (l parkableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, isTLS := c.(*tls.Conn); isTLS {
		return c, nil // placed after tls: nothing to do
	}
	return wrapParkable(c), nil
}

// parkConn is a connection accepted by a ParkableListener. Its writes
// block as usual until a stream sets nonblocking (park), which only the
// goroutine that owns the stream does.
type parkConn struct {
	net.Conn
	w           rawWriter
	nonblocking bool
}

func (c *parkConn) Write(b []byte) (int, error) {
	if !c.nonblocking {
		return c.Conn.Write(b)
	}
	if err := c.w.writeNow(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// flush makes writes blocking again and writes what a parked write left,
// by deadline.
func (c *parkConn) flush(deadline time.Time) error {
	c.nonblocking = false
	return flushPending(c.Conn, &c.w, deadline)
}

// flushPending writes w's pending bytes to conn, the socket itself, by
// deadline.
func flushPending(conn net.Conn, w *rawWriter, deadline time.Time) error {
	if len(w.pending) == 0 {
		return nil
	}
	_ = conn.SetWriteDeadline(deadline)
	_, err := conn.Write(w.pending)
	w.pending = nil
	return err
}

// SyscallConn is the socket's, for the hang-up watch.
func (c *parkConn) SyscallConn() (syscall.RawConn, error) { return c.w.raw, nil }

// SetNonblocking, HasPending and FlushPending let the sse_h2 listener's
// HTTP/2 server (h2serve.NonblockingConn), which owns this connection's
// writes, let a topic's lot write an event to a parked HTTP/2 stream
// without waiting for the socket. Its connection's write lock orders them.
func (c *parkConn) SetNonblocking(on bool) { c.nonblocking = on }

// HasPending reports bytes a non-blocking write left.
func (c *parkConn) HasPending() bool { return len(c.w.pending) > 0 }

// FlushPending writes them by deadline, and makes writes blocking again.
func (c *parkConn) FlushPending(deadline time.Time) error { return c.flush(deadline) }
