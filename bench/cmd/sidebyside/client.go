package main

// The load generator's client side: raw TCP connections, a minimal HTTP/1.1
// request writer and response-head parser, chunked decoding, optional gzip or
// zstd decoding, and just enough of an SSE parser to count events, heartbeats
// and resets and to read the seq and send timestamp each benchmark event
// carries in its JSON data. One goroutine and two small buffers per
// subscriber; nothing from net/http.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// base is the origin of mono(): publisher and subscribers live in this
// process, so a monotonic clock shared by both gives exact latencies.
var base = time.Now()

func mono() int64 { return int64(time.Since(base)) }

// dialer spreads outgoing connections over source addresses 127.0.0.1 ..
// 127.0.0.N so that more connections than the ephemeral port range can be
// open at once (the whole of 127.0.0.0/8 is loopback on Linux).
type dialer struct {
	addr  string
	ips   []net.IP
	next  atomic.Uint64
	nDial atomic.Int64
	// tls: connections are TLS with this configuration (HTTP/1.1 by ALPN);
	// h2: subscribers are HTTP/2 streams over TLS.
	tls *tls.Config
	h2  *h2pool
	h3  *h3dialer // h3: subscribers are HTTP/3 streams over QUIC
}

func newDialer(port, sources int) *dialer {
	d := &dialer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	for i := 0; i < sources; i++ {
		d.ips = append(d.ips, net.IPv4(127, 0, byte(i/250), byte(1+i%250)))
	}
	return d
}

// dial opens a connection for HTTP/1.1: TLS when the dialer says so.
func (d *dialer) dial() (net.Conn, error) {
	if d.tls != nil {
		return d.dialTLS(d.tls)
	}
	return d.dialTCP()
}

func (d *dialer) dialTCP() (net.Conn, error) {
	i := d.next.Add(1)
	nd := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: d.ips[i%uint64(len(d.ips))]},
		Timeout:   15 * time.Second,
		KeepAlive: -1,
	}
	c, err := nd.Dial("tcp", d.addr)
	if err == nil {
		d.nDial.Add(1)
	}
	return c, err
}

// countingConn counts the bytes read from the wire.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// respHead is what the load generator needs from a response head.
type respHead struct {
	status          int
	chunked         bool
	contentLength   int64 // -1 when absent
	contentEncoding string
	close           bool
}

var errBadHead = errors.New("malformed response head")

func readHead(br *bufio.Reader) (respHead, error) {
	h := respHead{contentLength: -1}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return h, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return h, fmt.Errorf("%w: %q", errBadHead, line)
	}
	h.status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return h, fmt.Errorf("%w: %q", errBadHead, line)
	}
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return h, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return h, nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			h.chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(k, []byte("Content-Length")):
			h.contentLength, _ = strconv.ParseInt(string(v), 10, 64)
		case bytes.EqualFold(k, []byte("Content-Encoding")):
			h.contentEncoding = string(bytes.ToLower(v))
		case bytes.EqualFold(k, []byte("Connection")):
			h.close = bytes.EqualFold(v, []byte("close"))
		}
	}
}

// chunkedReader decodes a chunked body read from br.
type chunkedReader struct {
	br      *bufio.Reader
	left    int64
	started bool
	eof     bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.eof {
		return 0, io.EOF
	}
	if c.left == 0 {
		if c.started {
			// the CRLF after the previous chunk's data
			if _, err := c.br.Discard(2); err != nil {
				return 0, err
			}
		}
		c.started = true
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			c.eof = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// countingReader counts the body bytes (de-chunked, still compressed).
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// subOpts describe one subscription.
type subOpts struct {
	path           string
	lastEventID    string
	acceptEncoding string
	// decode: parse the stream (decompressing it when needed). When false a
	// compressed stream is only counted in bytes.
	decode bool
	// recordLatency keeps one latency sample per event.
	recordLatency bool
	// target is the number of events after which doneAt is set.
	target int64
	// topics > 0: the stream carries several topics, and order is checked
	// per topic, an event's topic being (seq-1) % topics (publishPaced's
	// round-robin).
	topics int
}

// sub is one subscriber connection.
type sub struct {
	opts subOpts
	conn net.Conn

	wireBytes  atomic.Int64
	bodyBytes  atomic.Int64
	events     atomic.Int64 // benchmark events (with a seq)
	others     atomic.Int64 // events without a seq (close, …)
	resets     atomic.Int64
	heartbeats atomic.Int64
	ooo        atomic.Int64 // seq not above the previous one
	doneAt     atomic.Int64 // mono() when events reached target
	closedAt   atomic.Int64 // mono() when the stream ended (0 while open)
	head       respHead
	err        error // set before closedAt

	lastSeq     int64
	lastByTopic []int64 // with opts.topics: lastSeq per topic
	lat         []int32 // µs; read only after the goroutine ended
	wg          sync.WaitGroup
	h2          *h2conn // the HTTP/2 connection the stream is on
	h3          *h3conn // the QUIC connection an HTTP/3 subscriber is on

	mu      sync.Mutex
	closing bool
}

// start dials and subscribes; ready is called once with the outcome of the
// response head (nil error: the stream is open). The reader goroutine runs
// until the connection ends.
func (s *sub) start(d *dialer, ready func(error)) {
	s.wg.Add(1)
	if d.h2 != nil {
		go d.h2.attach(s, ready)
		return
	}
	run := s.run
	if d.h3 != nil {
		run = func(_ *dialer, ready func(error)) error { return d.h3.run(s, ready) }
	}
	go func() {
		defer s.wg.Done()
		err := run(d, ready)
		s.mu.Lock()
		if s.closing {
			err = nil
		}
		s.mu.Unlock()
		s.err = err
		s.closedAt.Store(mono())
	}()
}

func (s *sub) run(d *dialer, ready func(error)) error {
	c, err := d.dial()
	if err != nil {
		ready(err)
		return err
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		ready(net.ErrClosed)
		return nil
	}
	s.conn = c
	s.mu.Unlock()
	defer c.Close()
	var req []byte
	req = append(req, "GET "...)
	req = append(req, s.opts.path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, d.addr...)
	req = append(req, "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"...)
	if s.opts.acceptEncoding != "" {
		req = append(req, "Accept-Encoding: "...)
		req = append(req, s.opts.acceptEncoding...)
		req = append(req, "\r\n"...)
	}
	if s.opts.lastEventID != "" {
		req = append(req, "Last-Event-ID: "...)
		req = append(req, s.opts.lastEventID...)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	if _, err := c.Write(req); err != nil {
		ready(err)
		return err
	}
	br := bufio.NewReaderSize(countingConn{c, &s.wireBytes}, 2048)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	h, err := readHead(br)
	c.SetReadDeadline(time.Time{})
	if err == nil && h.status != 200 {
		err = fmt.Errorf("status %d", h.status)
	}
	s.head = h
	ready(err)
	if err != nil {
		return err
	}
	var body io.Reader = br
	switch {
	case h.chunked:
		body = &chunkedReader{br: br}
	case h.contentLength >= 0:
		body = io.LimitReader(br, h.contentLength)
	}
	body = countingReader{body, &s.bodyBytes}
	switch h.contentEncoding {
	case "", "identity":
	case "gzip":
		if !s.opts.decode {
			return drain(body)
		}
		zr, err := gzip.NewReader(body)
		if err != nil {
			return err
		}
		body = zr
	case "zstd":
		if !s.opts.decode {
			return drain(body)
		}
		zr, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return err
		}
		defer zr.Close()
		body = zr
	default:
		return fmt.Errorf("unexpected Content-Encoding %q", h.contentEncoding)
	}
	return s.parse(body)
}

func drain(r io.Reader) error {
	buf := make([]byte, 2048)
	for {
		if _, err := r.Read(buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// close ends the connection from the client side; the reader goroutine
// ends without reporting an error.
func (s *sub) close() {
	s.mu.Lock()
	s.closing = true
	c := s.conn
	h2 := s.h2
	h3 := s.h3
	s.mu.Unlock()
	if h3 != nil {
		h3.closeAll()
	}
	if c != nil {
		c.Close()
	}
	if h2 != nil {
		h2.closeAll()
	}
}

var (
	prefData  = []byte("data:")
	prefEvent = []byte("event:")
	keySeq    = []byte(`"seq":`)
	keyTS     = []byte(`"ts":`)
)

// parse reads an SSE stream (LF or CRLF line ends).
func (s *sub) parse(r io.Reader) error {
	buf := make([]byte, 2048)
	start, end := 0, 0
	var (
		hasData bool
		isReset bool
		seq     int64 = -1
		ts      int64
	)
	for {
		i := bytes.IndexByte(buf[start:end], '\n')
		if i < 0 {
			if start > 0 {
				copy(buf, buf[start:end])
				end -= start
				start = 0
			}
			if end == len(buf) {
				nb := make([]byte, 2*len(buf))
				copy(nb, buf[:end])
				buf = nb
			}
			n, err := r.Read(buf[end:])
			end += n
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			continue
		}
		line := buf[start : start+i]
		start += i + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		switch {
		case len(line) == 0:
			if hasData {
				s.onEvent(seq, ts, isReset)
			}
			hasData, isReset, seq, ts = false, false, -1, 0
		case line[0] == ':':
			s.heartbeats.Add(1)
		case bytes.HasPrefix(line, prefData):
			if !hasData {
				hasData = true
				seq, ts = parseSeqTS(line[len(prefData):])
			}
		case bytes.HasPrefix(line, prefEvent):
			isReset = bytes.Equal(bytes.TrimSpace(line[len(prefEvent):]), []byte("reset"))
		}
	}
}

func parseSeqTS(v []byte) (seq, ts int64) {
	seq = -1
	if i := bytes.Index(v, keySeq); i >= 0 {
		seq = parseInt(v[i+len(keySeq):])
	}
	if i := bytes.Index(v, keyTS); i >= 0 {
		ts = parseInt(v[i+len(keyTS):])
	}
	return seq, ts
}

func parseInt(b []byte) int64 {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func (s *sub) onEvent(seq, ts int64, isReset bool) {
	if isReset {
		s.resets.Add(1)
		return
	}
	if seq < 0 {
		s.others.Add(1)
		return
	}
	last := &s.lastSeq
	if s.opts.topics > 0 && seq > 0 {
		if s.lastByTopic == nil {
			s.lastByTopic = make([]int64, s.opts.topics)
		}
		last = &s.lastByTopic[(seq-1)%int64(s.opts.topics)]
	}
	if seq <= *last {
		s.ooo.Add(1)
	}
	*last = seq
	now := mono()
	if s.opts.recordLatency && ts > 0 {
		l := (now - ts) / 1000
		if l > 1<<31-1 {
			l = 1<<31 - 1
		}
		s.lat = append(s.lat, int32(l))
	}
	if s.events.Add(1) == s.opts.target {
		s.doneAt.Store(now)
	}
}

// pubConn is a keep-alive connection for publishing.
type pubConn struct {
	c    net.Conn
	br   *bufio.Reader
	req  []byte
	host string
	d    *dialer
	body []byte
}

func newPubConn(d *dialer) *pubConn {
	return &pubConn{d: d, host: d.addr}
}

// post sends one request and reads the whole answer. The connection is
// (re)opened when needed.
func (p *pubConn) post(path, ctype, auth string, body []byte) (int, []byte, error) {
	if p.c == nil {
		c, err := p.d.dial()
		if err != nil {
			return 0, nil, err
		}
		p.c = c
		p.br = bufio.NewReaderSize(c, 4096)
	}
	r := p.req[:0]
	r = append(r, "POST "...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, p.host...)
	r = append(r, "\r\nContent-Type: "...)
	r = append(r, ctype...)
	if auth != "" {
		r = append(r, "\r\nAuthorization: "...)
		r = append(r, auth...)
	}
	r = append(r, "\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, body...)
	p.req = r
	if _, err := p.c.Write(r); err != nil {
		p.reset()
		return 0, nil, err
	}
	h, err := readHead(p.br)
	if err != nil {
		p.reset()
		return 0, nil, err
	}
	p.body = p.body[:0]
	switch {
	case h.chunked:
		cr := &chunkedReader{br: p.br}
		var tmp [512]byte
		for {
			n, err := cr.Read(tmp[:])
			p.body = append(p.body, tmp[:n]...)
			if err == io.EOF {
				// trailer section: an empty line
				if _, err := p.br.ReadSlice('\n'); err != nil {
					p.reset()
					return 0, nil, err
				}
				break
			}
			if err != nil {
				p.reset()
				return 0, nil, err
			}
		}
	case h.contentLength > 0:
		if cap(p.body) < int(h.contentLength) {
			p.body = make([]byte, h.contentLength)
		}
		p.body = p.body[:h.contentLength]
		if _, err := io.ReadFull(p.br, p.body); err != nil {
			p.reset()
			return 0, nil, err
		}
	}
	if h.close {
		p.reset()
	}
	return h.status, p.body, nil
}

func (p *pubConn) reset() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

func (p *pubConn) close() { p.reset() }
