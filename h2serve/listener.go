package h2serve

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// Listener wraps a listener of TLS connections: each is handshaken in a
// goroutine of its own (a slow client never holds up Accept); those that
// negotiate h2 are served by Server, every other one is returned by
// Accept, handshaken, as the *tls.Conn it is. Connections that are not TLS
// are returned as they are.
type Listener struct {
	net.Listener
	srv *Server
	// HandshakeTimeout bounds each TLS handshake; default 10 s.
	HandshakeTimeout time.Duration

	start     sync.Once
	ready     chan net.Conn
	errs      chan error
	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the accept loop and the handshakes
}

// NewListener wraps ln, serving its h2 connections with srv.
func NewListener(ln net.Listener, srv *Server) *Listener {
	return &Listener{
		Listener: ln,
		srv:      srv,
		ready:    make(chan net.Conn),
		errs:     make(chan error),
		closing:  make(chan struct{}),
	}
}

// Server returns the server of the listener's h2 connections.
func (l *Listener) Server() *Server { return l.srv }

// Accept returns the next connection that is not served here.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		l.wg.Add(1)
		go l.acceptLoop()
	})
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.closing:
		return nil, net.ErrClosed
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			temporary := errors.As(err, &ne) && ne.Timeout()
			select {
			case l.errs <- err:
			case <-l.closing:
				return
			}
			if temporary {
				continue
			}
			return
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *Listener) handshake(c net.Conn) {
	defer l.wg.Done()
	defer func() {
		// Nothing of ours should panic here, but nothing else would catch
		// it before the process ends: lose this connection only.
		if p := recover(); p != nil {
			l.srv.logPanic("in a TLS handshake", c.RemoteAddr().String(), p)
			_ = c.Close()
		}
	}()
	tc, ok := c.(*tls.Conn)
	if ok {
		timeout := l.HandshakeTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			// A fresh goroutine reads the connection: this one's stack
			// grew during the handshake.
			go func() { _ = l.srv.ServeConn(tc) }()
			return
		}
	}
	select {
	case l.ready <- c:
	case <-l.closing:
		c.Close()
	}
}

// Close stops accepting and sends GOAWAY on the h2 connections, which
// close as their streams end (see Server.Shutdown).
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		l.closeErr = l.Listener.Close()
		l.srv.Shutdown()
	})
	return l.closeErr
}
