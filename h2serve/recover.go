package h2serve

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
)

// errPanic ends a connection whose goroutine panicked.
var errPanic = errors.New("h2serve: panic serving the connection")

// recoverConn is deferred in every goroutine that handles a connection's
// frames or tears it down. Unlike net/http, the process has nothing else
// between a panic there and its end: one bad frame path (or a callback of
// ours, such as a Detached's OnGone, run from the frame reader) would take
// every connection of the server down with it. A panic is logged with its
// stack and ends only this connection, as net/http's "http: panic
// serving" does.
func (c *conn) recoverConn(where string) {
	p := recover()
	if p == nil {
		return
	}
	c.srv.logPanic(where, c.remote, p)
	c.forceClose(errPanic)
}

// logPanic logs a recovered panic with the stack of the goroutine that
// panicked (debug.Stack, called from the deferred function, still shows
// the frames that panicked).
func (s *Server) logPanic(where, remote string, p any) {
	if p == http.ErrAbortHandler {
		return // net/http's way to abort a response without a log line
	}
	s.logf("h2serve: panic "+where, fmt.Errorf("panic serving %s: %v\n%s", remote, p, debug.Stack()))
}

// forceClose ends the connection after a panic: nothing of its state is
// trusted, so no TLS close alert is written (it could wait on the write
// lock a panicking writer held); the socket beneath is closed.
func (c *conn) forceClose(err error) {
	c.brokenW.Store(true)
	c.close(err)
	_ = c.tc.NetConn().Close()
}

// abortSafe aborts st for close: a panic in a callback that abort runs
// (OnGone) must not keep the other streams from ending.
func (c *conn) abortSafe(st *stream, why error) {
	defer func() {
		if p := recover(); p != nil {
			c.srv.logPanic("ending a stream", c.remote, p)
		}
	}()
	st.abort(why)
}
