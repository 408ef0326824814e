package h2serve

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Server serves HTTP/2 connections (ServeConn) with Handler. Its zero
// limits take the defaults below. A Server must not be copied once used.
type Server struct {
	// Handler serves every request.
	Handler http.Handler
	// MaxConcurrentStreams is the most streams a client may have open on
	// one connection (SETTINGS_MAX_CONCURRENT_STREAMS), and the most
	// handlers that run at once for it, those of streams it reset
	// included (see flood.go); default 250.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header list (as HTTP/2 counts
	// it, SETTINGS_MAX_HEADER_LIST_SIZE); a request over it is answered
	// 431. Default 1 MiB.
	MaxHeaderListSize uint32
	// StreamWindow is how many request body bytes a stream may have in
	// flight (its initial flow-control window, and the most one stream's
	// body buffer holds); default 64 KiB.
	StreamWindow uint32
	// IdleTimeout closes a connection that has had no open stream for this
	// long; default 5 minutes.
	IdleTimeout time.Duration
	// WriteTimeout bounds a frame write that no handler's write deadline
	// bounds (control frames, handlers that set none); default 30 s.
	WriteTimeout time.Duration
	// DrainTimeout is how long, after Shutdown, connections may keep their
	// open streams before they are closed; default 30 s.
	DrainTimeout time.Duration
	// ConnContext, if set, returns the context the requests of a
	// connection derive from.
	ConnContext func(*tls.Conn) context.Context
	// ErrorLog, if set, is told about panics (with their stack: a handler's
	// resets its stream, any other ends its connection) and connections
	// that end on an error of ours.
	ErrorLog func(msg string, err error)

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	drain    *time.Timer
}

const (
	defaultMaxStreams    = 250
	defaultMaxHeaderList = 1 << 20
	defaultStreamWindow  = 64 << 10
	// connWindow is the connection's receive window: every DATA frame is
	// credited back at once (each stream's buffer is bounded by its own
	// window), so this only bounds a burst.
	connWindow            = 1 << 20
	defaultIdleTimeout    = 5 * time.Minute
	defaultWriteTimeout   = 30 * time.Second
	defaultDrainTimeout   = 30 * time.Second
	prefaceTimeout        = 10 * time.Second
	goAwayLinger          = time.Second
	maxWindow             = 1<<31 - 1
	initialPeerWindow     = 65535
	initialPeerFrameSize  = 16384
	initialHeaderTableLen = 4096
)

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return defaultMaxStreams
	}
	return s.MaxConcurrentStreams
}

func (s *Server) maxHeaderList() uint32 {
	if s.MaxHeaderListSize == 0 {
		return defaultMaxHeaderList
	}
	return s.MaxHeaderListSize
}

func (s *Server) streamWindow() uint32 {
	if s.StreamWindow == 0 {
		return defaultStreamWindow
	}
	if s.StreamWindow > maxWindow {
		return maxWindow
	}
	return s.StreamWindow
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Server) logf(msg string, err error) {
	if s.ErrorLog != nil {
		s.ErrorLog(msg, err)
	}
}

// ErrServerClosed is returned by ServeConn after Shutdown.
var ErrServerClosed = errors.New("h2serve: server closed")

// ServeConn serves the HTTP/2 connection tc, whose TLS handshake is done
// and negotiated h2, until it ends; it closes tc. Run it in a goroutine of
// its own that did not do the handshake: that goroutine reads the
// connection for its whole life, and starts with a small stack.
func (s *Server) ServeConn(tc *tls.Conn) (err error) {
	var c *conn
	defer func() {
		// A panic in ConnContext, say, before the connection's own
		// recover is in place (see conn.recoverConn).
		if p := recover(); p != nil {
			s.logPanic("setting up a connection", tc.RemoteAddr().String(), p)
			if c != nil {
				c.forceClose(errPanic)
			} else {
				_ = tc.NetConn().Close()
			}
			err = errPanic
		}
	}()
	c = newConn(s, tc)
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		tc.Close()
		return ErrServerClosed
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	return c.serve()
}

// Shutdown sends every connection a GOAWAY: no new streams are taken, and
// each connection closes when its open streams end, or after DrainTimeout.
// It does not wait.
func (s *Server) Shutdown() {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return
	}
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.drain = time.AfterFunc(orDefault(s.DrainTimeout, defaultDrainTimeout), func() {
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			func() {
				defer c.recoverConn("closing after the drain timeout")
				c.close(errDrained)
			}()
		}
	})
	s.mu.Unlock()
	// Outside the lock: a GOAWAY may wait for a connection's writer.
	for _, c := range conns {
		c.shutdown()
	}
}

// Conns reports how many connections are being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

var errDrained = errors.New("h2serve: connection closed after the drain timeout")
