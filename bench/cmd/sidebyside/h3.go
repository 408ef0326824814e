package main

// HTTP/3 for the load generator (-transport h3): each subscriber is a
// request stream on a QUIC connection (one connection per subscriber by
// default, as a browser tab opening one EventSource makes; -h2-streams N
// puts N on a connection), spoken with quic-go's http3.ClientConn and RequestStream so
// the body is read with the same SSE parser as the other transports.
// quic-go is the version Caddy v2.11.9 itself serves HTTP/3 with, so both
// sides run the same stack. Connections share one UDP socket per source
// address (a quic.Transport demultiplexes them by connection ID), which keeps
// the client's file descriptors and receive goroutines few.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const transportH3 = "h3" // HTTP/3 over QUIC

// h3dialer opens subscriber streams over QUIC, streamsPerConn request
// streams to a connection (-h2-streams: a browser's EventSources to one
// origin share its connection).
type h3dialer struct {
	addr           *net.UDPAddr
	d              *dialer
	streamsPerConn int

	once    sync.Once
	err     error
	trs     []*quic.Transport
	h3      http3.Transport
	refused atomic.Int64 // connections the server refused, dialed again

	mu  sync.Mutex
	cur *h3conn // the connection with room left
}

// h3conn is one QUIC connection and the subscribers on it.
type h3conn struct {
	ready   chan struct{} // closed once dialed (err set on failure)
	err     error
	qc      *quic.Conn
	cc      *http3.ClientConn
	streams int // handed out; guarded by the dialer's mu

	mu   sync.Mutex
	subs []*sub
}

// closeAll ends the connection and every stream on it, as closing a
// browser tab would; none of them reports an error.
func (c *h3conn) closeAll() {
	c.mu.Lock()
	for _, s := range c.subs {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
	}
	c.mu.Unlock()
	if c.qc != nil {
		c.qc.CloseWithError(0, "")
	}
}

func newH3Dialer(d *dialer, port, streamsPerConn int) *h3dialer {
	return &h3dialer{d: d, addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, streamsPerConn: max(1, streamsPerConn)}
}

// init binds one UDP socket per source address.
func (h *h3dialer) init() error {
	h.once.Do(func() {
		for _, ip := range h.d.ips {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
			if err != nil {
				h.err = fmt.Errorf("binding a UDP socket on %s: %w", ip, err)
				return
			}
			h.trs = append(h.trs, &quic.Transport{Conn: pc})
		}
	})
	return h.err
}

// quicConf: the idle timeout is longer than the servers' 15 s heartbeat,
// and keep-alives cover the time before the first event.
var quicConf = &quic.Config{
	MaxIdleTimeout:  60 * time.Second,
	KeepAlivePeriod: 20 * time.Second,
}

// close ends every socket (and with them every connection still open).
func (h *h3dialer) close(server string) {
	if n := h.refused.Load(); n > 0 {
		logf("  h3: %s refused %d connections (accept queue full); each was dialed again", server, n)
	}
	for _, tr := range h.trs {
		tr.Close()
		tr.Conn.Close()
	}
}

// run subscribes on a connection with room left (dialing one when none
// has) and parses the stream; like sub.run it calls ready once with the
// outcome of the response head. A connection the server refuses is dialed
// again (at most 5 times), as a browser would retry: quic-go's server
// refuses a handshake that completes while its accept queue (32
// connections) is full, which a burst of 256 concurrent dials on a busy
// machine does reach.
func (h *h3dialer) run(s *sub, ready func(error)) error {
	if err := h.init(); err != nil {
		ready(err)
		return err
	}
	var (
		c   *h3conn
		rs  *http3.RequestStream
		err error
	)
	for attempt := 0; ; attempt++ {
		c = h.conn()
		if err = c.err; err == nil {
			rs, err = h.request(c, s)
		}
		var te *quic.TransportError
		if err == nil || !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused || attempt == 4 {
			break
		}
		h.refused.Add(1)
		h.drop(c)
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
	ready(err)
	if err != nil {
		return err
	}
	if s.head.contentEncoding != "" && s.head.contentEncoding != "identity" {
		return fmt.Errorf("h3: Content-Encoding %q is not decoded by the load generator", s.head.contentEncoding)
	}
	// QUIC's own bytes are not visible here: wire bytes are the body bytes,
	// as for HTTP/2's DATA payloads.
	err = s.parse(countingReader{countingReader{rs, &s.wireBytes}, &s.bodyBytes})
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == 0 {
		// the server closed the connection without an error (shutdown)
		return nil
	}
	return err
}

// conn returns a connection with room for one more stream.
func (h *h3dialer) conn() *h3conn {
	h.mu.Lock()
	c := h.cur
	dialIt := false
	if c == nil || c.streams >= h.streamsPerConn {
		c = &h3conn{ready: make(chan struct{})}
		h.cur = c
		dialIt = true
	}
	c.streams++
	h.mu.Unlock()
	if dialIt {
		c.qc, c.err = h.dial()
		if c.err == nil {
			c.cc = h.h3.NewClientConn(c.qc)
		}
		close(c.ready)
	}
	<-c.ready
	return c
}

// drop forgets a refused connection so that the next stream dials anew.
func (h *h3dialer) drop(c *h3conn) {
	h.mu.Lock()
	if h.cur == c {
		h.cur = nil
	}
	h.mu.Unlock()
	if c.qc != nil {
		c.qc.CloseWithError(0, "")
	}
}

func (h *h3dialer) dial() (*quic.Conn, error) {
	tr := h.trs[h.d.next.Add(1)%uint64(len(h.trs))]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	qc, err := tr.Dial(ctx, h.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}, ServerName: "127.0.0.1"}, quicConf)
	if err == nil {
		h.d.nDial.Add(1)
	}
	return qc, err
}

// request opens s's request stream on c, sends the request and reads the
// response head into s.head.
func (h *h3dialer) request(c *h3conn, s *sub) (*http3.RequestStream, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, net.ErrClosed
	}
	s.h3 = c
	s.mu.Unlock()
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rs, err := c.cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, err
	}
	req := &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{Scheme: "https", Host: "127.0.0.1", Path: s.opts.path},
		Header: http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		Host:   "127.0.0.1",
	}
	if u, err := url.ParseRequestURI(s.opts.path); err == nil {
		req.URL.Path, req.URL.RawQuery = u.Path, u.RawQuery
	}
	if s.opts.lastEventID != "" {
		req.Header.Set("Last-Event-ID", s.opts.lastEventID)
	}
	if s.opts.acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", s.opts.acceptEncoding)
	}
	fail := func(err error) (*http3.RequestStream, error) {
		rs.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		rs.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		return nil, err
	}
	if err := rs.SendRequestHeader(req); err != nil {
		return fail(err)
	}
	_ = rs.Close() // no request body
	resp, err := rs.ReadResponse()
	if err != nil {
		return fail(err)
	}
	s.head = respHead{status: resp.StatusCode, contentLength: resp.ContentLength, contentEncoding: resp.Header.Get("Content-Encoding")}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("status %d", resp.StatusCode))
	}
	return rs, nil
}
