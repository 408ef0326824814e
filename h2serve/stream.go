package h2serve

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// stream is one request and its response. Fields under c.mu unless noted.
type stream struct {
	c      *conn
	id     uint32
	ctx    context.Context
	cancel context.CancelCauseFunc

	sendWindow   int64 // ours to send DATA in
	recvWindow   int64 // the client's to send DATA in
	declared     int64 // the request's Content-Length, or -1
	received     int64 // request body bytes so far
	remoteClosed bool  // the client sent END_STREAM
	localClosed  bool  // we sent END_STREAM
	body         *body // nil without a request body
	wdeadline    time.Time
	detached     *Detached // once Detach took the stream from its handler
	// queuedH, queuedR: the handler and request of a stream waiting in
	// c.queue; nil once started, or once the stream was reset.
	queuedH http.Handler
	queuedR *http.Request

	// closedW: no frame may be written on the stream any more (we ended
	// it, or it was reset either way). Set under wmu or before any write.
	closedW atomic.Bool
	// headStarted: the final response head is being sent (no 100
	// Continue after it).
	headStarted atomic.Bool
}

// abort ends st's request context with why.
func (st *stream) abort(why error) {
	st.cancel(why)
	c := st.c
	c.mu.Lock()
	if st.body != nil && st.body.err == nil {
		st.body.err = why
		st.body.cond.Broadcast()
	}
	d := st.detached
	c.mu.Unlock()
	if d != nil {
		d.markGone()
	}
}

// handleHeaders opens a stream, or takes a stream's trailers.
func (c *conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return connError{http2.ErrCodeProtocol, "even stream id from a client"}
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		defer c.mu.Unlock()
		if st.remoteClosed {
			return streamError{id, http2.ErrCodeStreamClosed}
		}
		return c.trailersLocked(st, f)
	}
	if id <= c.maxClientID {
		c.mu.Unlock()
		return connError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	}
	c.maxClientID = id
	if c.goAway || c.closed {
		c.mu.Unlock()
		return nil // after our GOAWAY: not processed (the client may retry elsewhere)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeProtocol}
	}
	if uint32(len(c.streams)) >= c.srv.maxStreams() {
		c.mu.Unlock()
		// A client that ignores our SETTINGS_MAX_CONCURRENT_STREAMS: each
		// refusal is a write of ours.
		if err := c.spend(); err != nil {
			return err
		}
		return streamError{id, http2.ErrCodeRefusedStream}
	}
	c.mu.Unlock()

	st := &stream{c: c, id: id, declared: -1, recvWindow: int64(c.srv.streamWindow())}
	req, err := c.newRequest(st, f)
	if err != nil {
		return streamError{id, http2.ErrCodeProtocol}
	}
	handler := c.srv.Handler
	if f.Truncated {
		handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		})
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.cancel(errConnClosed)
		return nil
	}
	st.sendWindow = c.peerWindow
	c.streams[id] = st
	if f.StreamEnded() {
		st.remoteClosed = true
	}
	if c.handlers >= int(c.srv.maxStreams()) {
		// The client reset streams whose handlers have not ended (rapid
		// reset, CVE-2023-44487): the new stream waits for one to end, so
		// handler goroutines stay within MaxConcurrentStreams. A client
		// that keeps opening and resetting streams meanwhile fills the
		// queue and is sent GOAWAY, as x/net/http2 does.
		if len(c.queue) >= maxQueued(c.srv.maxStreams()) {
			c.mu.Unlock()
			st.cancel(errConnClosed)
			return connError{http2.ErrCodeEnhanceYourCalm, "too many streams reset while their handlers run"}
		}
		st.queuedH, st.queuedR = handler, req
		c.queue = append(c.queue, st)
		c.mu.Unlock()
		return nil
	}
	first := c.handlers == 0
	c.handlers++
	c.mu.Unlock()
	if first {
		_ = c.tc.SetReadDeadline(time.Time{}) // busy: no idle timeout
	}
	go c.runHandler(st, handler, req)
	return nil
}

// trailersLocked takes the request trailers that end st; c.mu is held.
func (c *conn) trailersLocked(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		return streamError{st.id, http2.ErrCodeProtocol}
	}
	if len(f.PseudoFields()) > 0 {
		return streamError{st.id, http2.ErrCodeProtocol}
	}
	if st.declared >= 0 && st.received != st.declared {
		return streamError{st.id, http2.ErrCodeProtocol}
	}
	var trailer http.Header
	for _, hf := range f.RegularFields() {
		if trailer == nil {
			trailer = make(http.Header)
		}
		k := http.CanonicalHeaderKey(hf.Name)
		trailer[k] = append(trailer[k], hf.Value)
	}
	c.endRemoteLocked(st, trailer)
	return nil
}

var errBadRequest = errors.New("malformed request")

// newRequest makes the request of the header block f, on st's context.
func (c *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	var method, scheme, path, authority string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		default:
			return nil, errBadRequest // :protocol (extended CONNECT) is not offered
		}
	}
	connect := method == "CONNECT"
	if connect {
		if scheme != "" || path != "" || authority == "" {
			return nil, errBadRequest
		}
	} else if method == "" || scheme == "" || path == "" {
		return nil, errBadRequest
	}
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	for _, hf := range regular {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, errBadRequest // connection-specific: not in HTTP/2
		case "te":
			if hf.Value != "trailers" {
				return nil, errBadRequest
			}
		}
		k := http.CanonicalHeaderKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if cookies := header["Cookie"]; len(cookies) > 1 {
		// HTTP/2 may split the cookie header; HTTP/1 handlers expect one.
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = header.Get("Host")
	}
	var u *url.URL
	requestURI := path
	switch {
	case connect:
		u = &url.URL{Host: authority}
		requestURI = authority
	case method == "OPTIONS" && path == "*":
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, errBadRequest
		}
	}
	var trailer http.Header
	for _, v := range header["Trailer"] {
		for key := range strings.SplitSeq(v, ",") {
			key = http.CanonicalHeaderKey(textproto(key))
			switch key {
			case "Transfer-Encoding", "Trailer", "Content-Length":
			default:
				if trailer == nil {
					trailer = make(http.Header)
				}
				trailer[key] = nil
			}
		}
	}
	delete(header, "Trailer")

	r := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		Host:       authority,
		RemoteAddr: c.remote,
		RequestURI: requestURI,
		TLS:        c.tlsState,
		Trailer:    trailer,
		Body:       http.NoBody,
	}
	if !f.StreamEnded() {
		r.ContentLength = -1
		if cl := header["Content-Length"]; len(cl) > 0 {
			if len(cl) > 1 {
				return nil, errBadRequest
			}
			n, err := strconv.ParseUint(cl[0], 10, 63)
			if err != nil {
				return nil, errBadRequest
			}
			r.ContentLength = int64(n)
			st.declared = int64(n)
		}
		b := &body{st: st, dst: trailer, expect: strings.EqualFold(header.Get("Expect"), "100-continue")}
		b.cond.L = &c.mu
		st.body = b
		r.Body = b
	} else if cl := header.Get("Content-Length"); cl != "" && cl != "0" {
		return nil, errBadRequest // END_STREAM with a body announced
	}
	st.ctx, st.cancel = context.WithCancelCause(c.ctx)
	return r.WithContext(st.ctx), nil
}

func textproto(s string) string { return strings.TrimSpace(s) }

// runHandler serves one request in its own goroutine.
func (c *conn) runHandler(st *stream, h http.Handler, r *http.Request) {
	w := &responseWriter{st: st, req: r}
	if st.body != nil {
		c.mu.Lock()
		st.body.rw = w
		c.mu.Unlock()
	}
	defer func() {
		if p := recover(); p != nil {
			c.srv.logPanic("in a handler", c.remote+" "+r.URL.Path, p)
			c.resetStream(st.id, http2.ErrCodeInternal)
		} else if err := w.finish(); err != nil {
			// The response could not be completed (its deadline passed
			// waiting for the client's window, say): end the stream. It
			// may be out of c.streams already (its END_STREAM was about to
			// go when the write failed), so ask its context whether the
			// client or the connection ended it.
			if cause := context.Cause(st.ctx); cause != errStreamReset && cause != errConnClosed && cause != errStreamClosed {
				c.resetStream(st.id, http2.ErrCodeCancel)
			}
		}
		// A complete response whose client is still sending stays
		// half-closed until the client ends its side; what it sends is
		// credited back unread (the body is closed). Not resetting it
		// keeps its flow-control errors reportable.
		if st.body != nil {
			st.body.Close()
		}
		st.cancel(context.Canceled)
		c.mu.Lock()
		detached := st.detached != nil
		c.mu.Unlock()
		if !detached { // a detached stream is done when its owner closes it
			c.handlerDone(st)
		}
	}()
	h.ServeHTTP(w, r)
}

// body is a request body: DATA frames buffered (at most the stream's
// window) until the handler reads them. Fields under c.mu.
type body struct {
	st      *stream
	cond    sync.Cond
	buf     []byte
	err     error // io.EOF after END_STREAM
	trailer http.Header
	dst     http.Header // the request's Trailer map, nil if none declared
	closed  bool        // by the handler
	unacked uint32
	// expect: the request asked for 100 Continue, sent at the first Read
	// unless the response has started (rw, then, is its writer).
	expect bool
	rw     *responseWriter
}

// Read reads the body, crediting the stream's window back as it goes.
func (b *body) Read(p []byte) (int, error) {
	c := b.st.c
	c.mu.Lock()
	if b.expect {
		// The client waits for a 100 Continue before the body, as
		// net/http sends when the handler first reads it.
		b.expect = false
		rw := b.rw
		c.mu.Unlock()
		if rw != nil && !b.st.headStarted.Load() {
			_ = rw.writeHead(http.StatusContinue, nil, false, true)
		}
		c.mu.Lock()
	}
	for len(b.buf) == 0 && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		c.mu.Unlock()
		return 0, errors.New("h2serve: read on closed body")
	}
	if len(b.buf) == 0 {
		err := b.err
		if err == io.EOF && b.trailer != nil && b.dst != nil {
			// Trailers the request declared arrive with the end of the
			// body, as in net/http.
			for k, v := range b.trailer {
				b.dst[k] = v
			}
			b.trailer = nil
		}
		c.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	b.st.recvWindow += int64(n)
	b.unacked += uint32(n)
	var inc uint32
	if !b.st.remoteClosed && (b.unacked >= c.srv.streamWindow()/4 || len(b.buf) == 0) {
		inc, b.unacked = b.unacked, 0
	}
	c.mu.Unlock()
	if inc > 0 {
		_ = c.writeWindowUpdate(b.st.id, inc)
	}
	return n, nil
}

// Close drops what is left of the body; what the client still sends is
// credited back unread.
func (b *body) Close() error {
	c := b.st.c
	c.mu.Lock()
	b.closed = true
	n := len(b.buf)
	b.buf = nil
	b.st.recvWindow += int64(n)
	inc := b.unacked + uint32(n)
	b.unacked = 0
	open := !b.st.remoteClosed
	b.cond.Broadcast()
	c.mu.Unlock()
	if inc > 0 && open {
		_ = c.writeWindowUpdate(b.st.id, inc)
	}
	return nil
}
