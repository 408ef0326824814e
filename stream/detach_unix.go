//go:build unix

package stream

import (
	"net"
	"syscall"
)

// canWriteNow: this platform can write to a socket without waiting (see
// rawWriter), so plain TCP streams, and TLS streams over a ParkableListener,
// park.
const canWriteNow = true

// rawWriter writes to a socket without ever waiting for it: what the socket
// does not take at once is kept in pending, for the stream's own goroutine
// to write (flush) with a deadline. Its state lives here so that a write
// allocates nothing.
type rawWriter struct {
	raw     syscall.RawConn
	pending []byte

	fn  func(fd uintptr) bool // writeRaw, bound once
	buf []byte
	n   int
	err error
}

// writeNow writes buf without waiting.
func (w *rawWriter) writeNow(buf []byte) error {
	if len(w.pending) > 0 {
		w.pending = append(w.pending, buf...)
		return nil
	}
	if w.fn == nil {
		// Bound once per stream: a closure made per write would cost an
		// allocation per delivery.
		w.fn = w.writeRaw
	}
	w.buf = buf
	err := w.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.buf, w.err = nil, nil
	switch {
	case err != nil:
		return err
	case werr == syscall.EAGAIN:
		n = 0
	case werr != nil:
		return werr
	}
	if n < len(buf) {
		w.pending = append([]byte(nil), buf[n:]...)
	}
	return nil
}

// writeRaw is the RawConn callback of writeNow: one write of buf that never
// waits for the socket to become writable.
func (w *rawWriter) writeRaw(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.buf)
		if w.err != syscall.EINTR {
			return true
		}
	}
}

// wrapParkable makes c a parkConn when it is a socket (see
// ParkableListener).
func wrapParkable(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &parkConn{Conn: c, w: rawWriter{raw: raw}}
}
