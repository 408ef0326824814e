package main

// TLS and HTTP/2 for the load generator (-transport): subscribers and
// publishers dial TLS themselves (one connection per subscriber, as a
// browser tab makes), and HTTP/2 subscribers speak raw frames
// (golang.org/x/net/http2's Framer and HPACK): one reader goroutine per
// connection, -h2-streams streams on each, no net/http.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Transports the subscribers use.
const (
	transportH1  = "h1"  // plain HTTP/1.1
	transportTLS = "tls" // HTTP/1.1 over TLS
	transportH2  = "h2"  // HTTP/2 over TLS
)

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// its key into dir.
func writeCert(dir string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// tlsClient is the client configuration: the certificate is the harness's
// own, so it is not verified; ALPN picks the protocol.
func tlsClient(proto string) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}, ServerName: "127.0.0.1"}
}

// dialTLS dials and completes the handshake.
func (d *dialer) dialTLS(conf *tls.Config) (*tls.Conn, error) {
	c, err := d.dialTCP()
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, conf)
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// h2pool hands out streams, streamsPerConn to a connection.
type h2pool struct {
	d              *dialer
	streamsPerConn int
	mu             sync.Mutex
	cur            *h2conn
}

type h2conn struct {
	ready   chan struct{} // closed once dialed (err set on failure)
	err     error
	c       net.Conn
	streams int // handed out; guarded by the pool's mu

	wmu    sync.Mutex // framer writes and henc
	fr     *http2.Framer
	henc   *hpack.Encoder
	hbuf   bytes.Buffer
	nextID uint32

	mu        sync.Mutex
	subs      map[uint32]*h2stream
	closed    bool
	connUnack int // owned by read
}

type h2stream struct {
	s      *sub
	ready  func(error)
	headed bool
	p      sseParser
	unack  int // bytes received since the last WINDOW_UPDATE
}

const h2Window = 1 << 20

// attach opens s as a stream on a connection with room left.
func (p *h2pool) attach(s *sub, ready func(error)) {
	p.mu.Lock()
	c := p.cur
	dialIt := false
	if c == nil || c.streams >= p.streamsPerConn {
		c = &h2conn{ready: make(chan struct{}), subs: map[uint32]*h2stream{}, nextID: 1}
		p.cur = c
		dialIt = true
	}
	c.streams++
	p.mu.Unlock()
	if dialIt {
		c.err = c.dial(p.d)
		close(c.ready)
	}
	<-c.ready
	if c.err != nil {
		ready(c.err)
		s.err = c.err
		s.closedAt.Store(mono())
		s.wg.Done()
		return
	}
	s.mu.Lock()
	s.h2 = c
	s.mu.Unlock()
	if err := c.open(s, ready); err != nil {
		ready(err)
		s.err = err
		s.closedAt.Store(mono())
		s.wg.Done()
	}
}

func (c *h2conn) dial(d *dialer) error {
	tc, err := d.dialTLS(tlsClient("h2"))
	if err != nil {
		return err
	}
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		tc.Close()
		return errors.New("server did not negotiate h2")
	}
	c.c = tc
	if _, err := tc.Write([]byte(http2.ClientPreface)); err != nil {
		tc.Close()
		return err
	}
	c.fr = http2.NewFramer(tc, tc)
	c.fr.SetMaxReadFrameSize(1 << 20)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2Window},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	); err != nil {
		tc.Close()
		return err
	}
	if err := c.fr.WriteWindowUpdate(0, 1<<30); err != nil {
		tc.Close()
		return err
	}
	go c.read(d.addr)
	return nil
}

func (c *h2conn) open(s *sub, ready func(error)) error {
	st := &h2stream{s: s, ready: ready}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	id := c.nextID
	c.nextID += 2
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.subs[id] = st
	c.mu.Unlock()
	c.hbuf.Reset()
	for _, f := range [][2]string{
		{":method", "GET"}, {":scheme", "https"}, {":authority", "127.0.0.1"}, {":path", s.opts.path},
		{"accept", "text/event-stream"}, {"cache-control", "no-cache"},
	} {
		_ = c.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if s.opts.lastEventID != "" {
		_ = c.henc.WriteField(hpack.HeaderField{Name: "last-event-id", Value: s.opts.lastEventID})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

// read is the connection's one goroutine: frames in, events counted.
func (c *h2conn) read(authority string) {
	err := c.readFrames()
	c.mu.Lock()
	c.closed = true
	subs := c.subs
	c.subs = map[uint32]*h2stream{}
	c.mu.Unlock()
	c.c.Close()
	for _, st := range subs {
		st.end(err)
	}
}

func (st *h2stream) end(err error) {
	s := st.s
	if !st.headed {
		if err == nil {
			err = errors.New("stream ended before its response head")
		}
		st.ready(err)
	}
	s.mu.Lock()
	if s.closing {
		err = nil
	}
	s.mu.Unlock()
	s.err = err
	s.closedAt.Store(mono())
	s.wg.Done()
}

func (c *h2conn) readFrames() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			st := c.stream(f.StreamID)
			if st == nil || st.headed {
				continue
			}
			st.headed = true
			status, _ := strconv.Atoi(f.PseudoValue("status"))
			st.s.head = respHead{status: status, contentLength: -1}
			for _, hf := range f.RegularFields() {
				if hf.Name == "content-encoding" {
					st.s.head.contentEncoding = hf.Value
				}
			}
			if status != 200 {
				st.ready(fmt.Errorf("status %d", status))
			} else {
				st.ready(nil)
			}
			if f.StreamEnded() {
				c.drop(f.StreamID, nil)
			}
		case *http2.DataFrame:
			n := len(f.Data())
			st := c.stream(f.StreamID)
			if st != nil {
				st.s.wireBytes.Add(int64(n))
				st.s.bodyBytes.Add(int64(n))
				st.p.feed(st.s, f.Data())
				st.unack += n
				if st.unack >= h2Window/2 && !f.StreamEnded() {
					c.wmu.Lock()
					_ = c.fr.WriteWindowUpdate(f.StreamID, uint32(st.unack))
					c.wmu.Unlock()
					st.unack = 0
				}
			}
			if n > 0 {
				c.connUnack += n
				if c.connUnack >= 1<<29 {
					c.wmu.Lock()
					_ = c.fr.WriteWindowUpdate(0, uint32(c.connUnack))
					c.wmu.Unlock()
					c.connUnack = 0
				}
			}
			if f.StreamEnded() {
				c.drop(f.StreamID, nil)
			}
		case *http2.RSTStreamFrame:
			c.drop(f.StreamID, fmt.Errorf("stream reset: %v", f.ErrCode))
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				err = c.fr.WriteSettingsAck()
				c.wmu.Unlock()
				if err != nil {
					return err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				err = c.fr.WritePing(true, f.Data)
				c.wmu.Unlock()
				if err != nil {
					return err
				}
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("goaway: %v", f.ErrCode)
		}
	}
}

func (c *h2conn) stream(id uint32) *h2stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[id]
}

func (c *h2conn) drop(id uint32, err error) {
	c.mu.Lock()
	st := c.subs[id]
	delete(c.subs, id)
	c.mu.Unlock()
	if st != nil {
		st.end(err)
	}
}

// closeAll ends the connection and every stream on it.
func (c *h2conn) closeAll() {
	c.mu.Lock()
	for _, st := range c.subs {
		st.s.mu.Lock()
		st.s.closing = true
		st.s.mu.Unlock()
	}
	c.mu.Unlock()
	if c.c != nil {
		c.c.Close()
	}
}

// sseParser is the SSE parser of sub.parse, fed frame by frame.
type sseParser struct {
	part    []byte
	hasData bool
	isReset bool
	seq, ts int64
	started bool
}

func (p *sseParser) feed(s *sub, b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.part = append(p.part, b...)
			return
		}
		line := b[:i]
		b = b[i+1:]
		if len(p.part) > 0 {
			p.part = append(p.part, line...)
			line = p.part
		}
		p.line(s, line)
		p.part = p.part[:0]
	}
}

func (p *sseParser) line(s *sub, line []byte) {
	if !p.started {
		p.started, p.seq = true, -1
	}
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	switch {
	case len(line) == 0:
		if p.hasData {
			s.onEvent(p.seq, p.ts, p.isReset)
		}
		p.hasData, p.isReset, p.seq, p.ts = false, false, -1, 0
	case line[0] == ':':
		s.heartbeats.Add(1)
	case bytes.HasPrefix(line, prefData):
		if !p.hasData {
			p.hasData = true
			p.seq, p.ts = parseSeqTS(line[len(prefData):])
		}
	case bytes.HasPrefix(line, prefEvent):
		p.isReset = bytes.Equal(bytes.TrimSpace(line[len(prefEvent):]), []byte("reset"))
	}
}
