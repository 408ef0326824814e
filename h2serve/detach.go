package h2serve

import (
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Detached is a response stream taken from its handler (see Detach): the
// handler's goroutine returns, and whoever holds the Detached writes the
// rest of the body and ends it. The connection counts it as an open
// stream (GOAWAY waits for it) until Close.
//
// Its methods are for one goroutine at a time (the stream's owner), except
// Gone, which any goroutine may call.
type Detached struct {
	st *stream
	// pending: body bytes TryWrite could not send yet (the client's
	// window, or another writer holding the connection).
	pending []byte
	gone    atomic.Bool
	onGone  atomic.Pointer[func()]
	closed  bool
}

// ErrNotDetachable is returned by Detach for a writer that is not one of
// this package's, or one whose response head is not sent yet.
var ErrNotDetachable = errors.New("h2serve: response cannot be detached")

// Detach takes the response stream of w (one of this package's writers,
// under any wrappers that Unwrap to it) from its handler, once the
// response head has been flushed. The handler must return without writing
// to w again.
func Detach(w http.ResponseWriter) (*Detached, error) {
	for {
		if rw, ok := w.(*responseWriter); ok {
			if !rw.headSent || rw.done || len(rw.buf) > 0 || rw.req.Method == http.MethodHead {
				return nil, ErrNotDetachable
			}
			st := rw.st
			if st.closedW.Load() {
				return nil, ErrNotDetachable
			}
			rw.done = true // finish leaves the stream to its new owner
			d := &Detached{st: st}
			c := st.c
			c.mu.Lock()
			st.detached = d
			gone := c.closed || c.streams[st.id] != st
			c.mu.Unlock()
			if gone {
				d.gone.Store(true)
			}
			return d, nil
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, ErrNotDetachable
		}
		w = u.Unwrap()
	}
}

// markGone is called when the client resets the stream or the connection
// ends.
func (d *Detached) markGone() {
	if d.gone.Swap(true) {
		return
	}
	if f := d.onGone.Load(); f != nil {
		(*f)()
	}
}

// OnGone registers f, called once (from the connection's goroutine) when
// the client resets the stream or the connection ends; at once if that
// happened already.
func (d *Detached) OnGone(f func()) {
	d.onGone.Store(&f)
	if d.gone.Load() {
		d.onGone.Store(nil)
		f()
	}
}

// Gone reports that the client reset the stream or the connection ended.
func (d *Detached) Gone() bool { return d.gone.Load() }

// CanTryWrite reports whether TryWrite can write without blocking: the
// connection beneath TLS can make its writes non-blocking (see
// NonblockingConn). Without it, only Write is of use.
func (d *Detached) CanTryWrite() bool { return d.st.c.nb != nil }

// Write writes b as DATA, waiting for the client's window and the
// connection until deadline (zero: the connection's write timeout). What
// TryWrite left goes first.
func (d *Detached) Write(b []byte, deadline time.Time) error {
	if err := d.Flush(deadline); err != nil {
		return err
	}
	return d.st.writeData(b, false, deadline)
}

// Flush writes what TryWrite left, by deadline.
func (d *Detached) Flush(deadline time.Time) error {
	c := d.st.c
	if c.nb != nil {
		c.wmu.Lock()
		err := c.flushNonblockingLocked(deadline)
		c.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	if len(d.pending) == 0 {
		return nil
	}
	p := d.pending
	d.pending = nil
	return d.st.writeData(p, false, deadline)
}

// HasPending reports bytes TryWrite left for Flush: body bytes, or
// encrypted ones the socket did not take.
func (d *Detached) HasPending() bool {
	c := d.st.c
	return len(d.pending) > 0 || (c.nb != nil && c.nbPending.Load())
}

// TryWrite writes b as DATA without waiting: what the client's window or
// the socket does not take at once, or all of b when another writer holds
// the connection, is kept for Flush (HasPending then reports it). It needs
// CanTryWrite.
func (d *Detached) TryWrite(b []byte) error {
	if len(d.pending) > 0 {
		d.pending = append(d.pending, b...)
		return nil
	}
	st := d.st
	c := st.c
	if !c.wmu.TryLock() {
		d.pending = append(d.pending, b...)
		return nil
	}
	defer c.wmu.Unlock()
	if st.closedW.Load() {
		return errStreamClosed
	}
	if c.werr != nil {
		return c.werr
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errConnClosed
	}
	n := min(int64(len(b)), st.sendWindow, c.sendWindow)
	if n < 0 {
		n = 0
	}
	st.sendWindow -= n
	c.sendWindow -= n
	c.mu.Unlock()
	if n < int64(len(b)) {
		d.pending = append(d.pending, b[n:]...)
	}
	if n == 0 {
		return nil
	}
	c.wbuf = c.appendData(c.wbuf[:0], st.id, b[:n], false)
	return c.writeNonblockingLocked()
}

// Close ends the stream: clean, with END_STREAM after what is pending
// (waiting up to a second for it), or else with RST_STREAM(CANCEL).
func (d *Detached) Close(clean bool) {
	if d.closed {
		return
	}
	d.closed = true
	st := d.st
	c := st.c
	if clean && !d.gone.Load() {
		deadline := time.Now().Add(time.Second)
		if err := d.Flush(deadline); err == nil {
			_ = st.writeData(nil, true, deadline)
		} else {
			clean = false
		}
	}
	if !clean {
		c.mu.Lock()
		open := c.streams[st.id] == st
		c.mu.Unlock()
		if open {
			c.resetStream(st.id, http2.ErrCodeCancel)
		}
	}
	st.cancel(errStreamClosed)
	c.handlerDone(st)
}

// NonblockingConn is a connection beneath TLS whose writes can be made
// non-blocking: then what the socket does not take at once is kept
// (encrypted) instead of waited for, and FlushPending writes it. The sse
// listener wrapper's connections are (caddy.listeners.sse, before tls).
type NonblockingConn interface {
	SetNonblocking(on bool)
	HasPending() bool
	FlushPending(deadline time.Time) error
}

// writeNonblockingLocked writes wbuf without waiting for the socket; wmu
// is held.
func (c *conn) writeNonblockingLocked() error {
	// A non-blocking write still fails once the socket's write deadline
	// has passed, after TLS has sealed the record: the connection would be
	// lost for nothing. A deadline left by an earlier write is cleared
	// unless it is comfortably ahead.
	if !c.wdeadline.IsZero() && time.Until(c.wdeadline) < time.Second {
		_ = c.tc.SetWriteDeadline(time.Time{})
		c.wdeadline = time.Time{}
	}
	c.nb.SetNonblocking(true)
	_, err := c.tc.Write(c.wbuf)
	c.nb.SetNonblocking(false)
	if c.nb.HasPending() {
		c.nbPending.Store(true)
	}
	if err != nil {
		c.writeFailed(err)
	}
	return err
}

// flushNonblockingLocked writes what non-blocking writes left, by
// deadline; wmu is held. Every write on the connection does this first, so
// that bytes go out in order.
func (c *conn) flushNonblockingLocked(deadline time.Time) error {
	if !c.nbPending.Load() {
		return nil
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(orDefault(c.srv.WriteTimeout, defaultWriteTimeout))
	}
	err := c.nb.FlushPending(deadline)
	c.wdeadline = deadline // the socket's deadline is now this
	c.nbPending.Store(false)
	if err != nil {
		c.writeFailed(err)
	}
	return err
}

// appendData appends DATA frames carrying p (split by the client's frame
// size) to b.
func (c *conn) appendData(b []byte, id uint32, p []byte, end bool) []byte {
	max := int(c.peerMaxFrame.Load())
	for first := true; first || len(p) > 0; first = false {
		n := min(len(p), max)
		var flags http2.Flags
		if end && n == len(p) {
			flags = http2.FlagDataEndStream
		}
		b = appendFrameHeader(b, n, http2.FrameData, flags, id)
		b = append(b, p[:n]...)
		p = p[n:]
	}
	return b
}
