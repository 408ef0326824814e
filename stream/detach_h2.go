package stream

import (
	"fmt"
	"net/http"
	"time"

	"github.com/ssegate/caddy-sse/h2serve"
)

// h2Taken is an HTTP/2 event stream taken from its handler on a
// connection of the sse_h2 listener's server (h2serve): the request's
// goroutine and Caddy's per-request state are released, as for a detached
// HTTP/1.x stream, while the connection goes on serving its other
// streams. Its frames go through the connection's own writer: DATA within
// the flow-control windows, END_STREAM after a clean end, RST_STREAM
// otherwise. It parks when the connection beneath TLS is the sse
// listener's (its writes can be made non-blocking): the topic's lot then
// writes each event as one DATA frame, and a stream whose client's window
// or socket is full leaves the lot for its own goroutine, like any parked
// stream whose socket is full.
type h2Taken struct {
	d           *h2serve.Detached
	nonblocking bool
}

// detachH2 takes the HTTP/2 stream of w from its handler, when w is
// served by h2serve; its head must have been flushed.
func detachH2(w http.ResponseWriter) (*h2Taken, error) {
	d, err := h2serve.Detach(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDetachable, err)
	}
	return &h2Taken{d: d}, nil
}

func (h *h2Taken) canPark() bool { return h.d.CanTryWrite() }

func (h *h2Taken) send(b []byte, deadline time.Time) (int, error) {
	var err error
	if h.nonblocking {
		err = h.d.TryWrite(b)
	} else {
		err = h.d.Write(b, deadline)
	}
	if err != nil {
		return 0, fmt.Errorf("writing to subscriber: %w", err)
	}
	return len(b), nil
}

// gone: the connection's reader sees a reset stream or a closed
// connection at once.
func (h *h2Taken) gone() bool { return h.d.Gone() }

func (h *h2Taken) watch(onHangup func()) { h.d.OnGone(onHangup) }

func (h *h2Taken) park() { h.nonblocking = true }

func (h *h2Taken) unpark(deadline time.Time) error {
	h.nonblocking = false
	if err := h.d.Flush(deadline); err != nil {
		return fmt.Errorf("writing to subscriber: %w", err)
	}
	return nil
}

func (h *h2Taken) hasPending() bool { return h.d.HasPending() }

func (h *h2Taken) close(err error) {
	if h.nonblocking {
		h.nonblocking = false
	}
	h.d.Close(cleanEnd(err))
}
