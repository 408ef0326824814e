package h2serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ssegate/caddy-sse/internal/tlsbuf"
)

// conn is one HTTP/2 connection. Its reader goroutine (serve) reads and
// handles every frame; handlers write their own frames under wmu.
type conn struct {
	srv      *Server
	tc       *tls.Conn
	fr       *http2.Framer // read side only
	ctx      context.Context
	tlsState *tls.ConnectionState
	remote   string

	// peerMaxFrame is the largest frame payload the client takes.
	peerMaxFrame atomic.Uint32

	// Write side, under wmu: frames are built in wbuf and written with one
	// Write (one TLS record, one system call).
	wmu       sync.Mutex
	wbuf      []byte
	hbuf      bytes.Buffer
	henc      *hpack.Encoder
	wdeadline time.Time // as last set on tc
	werr      error     // sticky: a failed write breaks the connection
	// nb: the connection beneath TLS, when its writes can be made
	// non-blocking (see Detached.TryWrite); nbPending: such a write left
	// bytes in it, which any next write sends first.
	nb        NonblockingConn
	nbPending atomic.Bool
	brokenW   atomic.Bool // a write failed (see writeFailed)

	// State, under mu.
	mu          sync.Mutex
	cond        sync.Cond // flow-control windows grew, or streams ended
	streams     map[uint32]*stream
	maxClientID uint32 // highest stream id the client opened
	sendWindow  int64  // the client's connection window for our DATA
	recvUnacked uint32 // DATA bytes received and not yet credited back
	peerWindow  int64  // the client's initial stream window
	handlers    int    // handler goroutines running (detached streams count)
	// queue: streams opened while MaxConcurrentStreams handlers ran (the
	// client reset streams whose handlers had not ended yet); each starts
	// as a handler ends. An entry whose stream was reset meanwhile stays,
	// emptied, and counts: see maxQueued.
	queue []*stream
	// calmLeft, calmAt: the budget of frames that ask work of us without
	// carrying a request (see spend); only the reader goroutine uses them.
	calmLeft   int
	calmAt     time.Time
	goAway     bool // we sent GOAWAY: no new streams
	peerGoAway bool // the client sent GOAWAY
	closed     bool
	closeErr   error
}

func newConn(s *Server, tc *tls.Conn) *conn {
	c := &conn{
		srv:        s,
		tc:         tc,
		streams:    make(map[uint32]*stream),
		sendWindow: initialPeerWindow,
		peerWindow: initialPeerWindow,
		remote:     tc.RemoteAddr().String(),
	}
	c.cond.L = &c.mu
	c.calmLeft, c.calmAt = calmBurst, time.Now()
	c.peerMaxFrame.Store(initialPeerFrameSize)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.nb, _ = tc.NetConn().(NonblockingConn)
	st := tc.ConnectionState()
	c.tlsState = &st
	c.fr = http2.NewFramer(io.Discard, &frameGuard{r: tc, maxCont: maxContinuations(s.maxHeaderList())})
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(initialPeerFrameSize) // we announce no larger
	c.fr.MaxHeaderListSize = s.maxHeaderList()
	c.fr.ReadMetaHeaders = hpack.NewDecoder(initialHeaderTableLen, nil)
	c.fr.ReadMetaHeaders.SetMaxStringLength(int(s.maxHeaderList()))
	ctx := context.Background()
	if s.ConnContext != nil {
		ctx = s.ConnContext(tc)
	}
	c.ctx = context.WithValue(ctx, http.LocalAddrContextKey, tc.LocalAddr())
	return c
}

// connError and streamError are how frame handling reports an error that
// ends the connection (GOAWAY) or a stream (RST_STREAM).
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("connection error %v: %s", e.code, e.reason) }

type streamError struct {
	id   uint32
	code http2.ErrCode
}

func (e streamError) Error() string {
	return fmt.Sprintf("stream %d error %v", e.id, e.code)
}

// serve reads the connection until it ends.
func (c *conn) serve() error {
	defer c.close(nil)
	defer c.recoverConn("reading frames") // runs first: the close above follows
	_ = c.tc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.tc, preface[:]); err != nil {
		return fmt.Errorf("reading the client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		c.fail(connError{http2.ErrCodeProtocol, "bad client preface"})
		return errors.New("bad client preface")
	}
	if err := c.writeSettings(); err != nil {
		return err
	}
	first := true
	released, tries := false, 0
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			if !c.frameError(err) {
				return err
			}
			continue
		}
		if !released && tries < 16 {
			// The handshake's read buffers go once nothing unread is
			// left in them (usually after the client's first flight).
			released = tlsbuf.Release(c.tc)
			tries++
		}
		if first {
			// The preface ends with the client's SETTINGS.
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.fail(connError{http2.ErrCodeProtocol, "first frame is not SETTINGS"})
				return errors.New("first frame is not SETTINGS")
			}
			first = false
			c.armIdle()
		}
		err = c.handle(f)
		var se streamError
		var ce connError
		switch {
		case err == nil:
		case errors.As(err, &se):
			c.resetStream(se.id, se.code)
		case errors.As(err, &ce):
			c.fail(ce)
			return ce
		default:
			return err
		}
	}
}

// frameError handles an error of the framer; it reports whether the
// connection goes on.
func (c *conn) frameError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		// A header block the framer refused (bad fields) still opened its
		// stream: HPACK state was kept, the id is used.
		c.mu.Lock()
		if se.StreamID%2 == 1 && se.StreamID > c.maxClientID {
			c.maxClientID = se.StreamID
		}
		c.mu.Unlock()
		c.resetStream(se.StreamID, se.Code)
		return true
	case errors.As(err, &ce):
		c.fail(connError{http2.ErrCode(ce), "framing"})
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.fail(connError{http2.ErrCodeFrameSize, "frame too large"})
	case errors.Is(err, errContinuationFlood):
		c.fail(connError{http2.ErrCodeEnhanceYourCalm, err.Error()})
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.mu.Lock()
			idle := len(c.streams) == 0 && c.handlers == 0
			c.mu.Unlock()
			if idle {
				// The idle timeout (see armIdle): leave cleanly.
				c.fail(connError{http2.ErrCodeNo, "idle"})
			}
		}
	}
	return false
}

// armIdle sets the read deadline that closes a connection left without
// streams; one with streams reads without a deadline.
func (c *conn) armIdle() {
	_ = c.tc.SetReadDeadline(time.Now().Add(orDefault(c.srv.IdleTimeout, defaultIdleTimeout)))
}

// fail sends GOAWAY with e's code and closes the connection, giving the
// client a moment to read the GOAWAY first.
func (c *conn) fail(e connError) {
	c.mu.Lock()
	last := c.maxClientID
	c.goAway = true
	c.mu.Unlock()
	if err := c.writeGoAway(last, e.code, e.reason); err == nil {
		// Closing at once could reset the connection under the GOAWAY
		// while the client's frames are unread: read (and drop) them for
		// a moment.
		_ = c.tc.SetReadDeadline(time.Now().Add(goAwayLinger))
		_, _ = io.Copy(io.Discard, c.tc)
	}
	c.close(e)
}

// shutdown sends GOAWAY(NO_ERROR) and closes the connection once its
// streams end.
func (c *conn) shutdown() {
	c.mu.Lock()
	if c.goAway || c.closed {
		c.mu.Unlock()
		return
	}
	c.goAway = true
	last := c.maxClientID
	idle := c.handlers == 0
	c.mu.Unlock()
	if err := c.writeGoAway(last, http2.ErrCodeNo, ""); err != nil || idle {
		c.close(nil)
	}
}

// close ends the connection: every stream's request context is cancelled
// and writers waiting for a window are woken.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.queue = nil // their streams are in streams, or reset
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, st := range streams {
		c.abortSafe(st, errConnClosed)
	}
	if c.brokenW.Load() {
		c.tc.NetConn().Close()
		return
	}
	c.tc.Close()
}

var (
	errConnClosed   = errors.New("h2serve: connection closed")
	errStreamClosed = errors.New("h2serve: stream closed")
	errStreamReset  = errors.New("h2serve: stream reset by the client")
)

// handle handles one frame.
func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.MetaHeadersFrame:
		return c.handleHeaders(f)
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.WindowUpdateFrame:
		return c.handleWindowUpdate(f)
	case *http2.PingFrame:
		if err := c.spend(); err != nil {
			return err
		}
		if f.IsAck() {
			return nil
		}
		// Written at once by this goroutine, not queued: a client that
		// floods PINGs without reading stalls its own reader (until
		// WriteTimeout ends the connection), and no memory grows.
		return c.writeFrame(http2.FramePing, http2.FlagPingAck, 0, f.Data[:])
	case *http2.RSTStreamFrame:
		if err := c.spend(); err != nil {
			return err
		}
		return c.handleRST(f)
	case *http2.PriorityFrame:
		if err := c.spend(); err != nil {
			return err
		}
		if f.StreamDep == f.StreamID {
			return streamError{f.StreamID, http2.ErrCodeProtocol}
		}
		return nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.peerGoAway = true
		idle := c.handlers == 0
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeNo, "client went away"}
		}
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.ContinuationFrame:
		// The framer joins CONTINUATION to its HEADERS; one here is out
		// of order.
		return connError{http2.ErrCodeProtocol, "unexpected CONTINUATION"}
	}
	return nil // unknown frame types are ignored
}

func (c *conn) handleSettings(f *http2.SettingsFrame) error {
	if err := c.spend(); err != nil {
		return err
	}
	if f.IsAck() {
		return nil
	}
	// The write lock is held from the first setting applied to the
	// acknowledgement: a writer that a larger window lets go must not
	// send DATA before the client has its ACK (lock order: wmu, then mu).
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connError{http2.ErrCode(ce), "bad setting " + s.String()}
			}
			return connError{http2.ErrCodeProtocol, "bad setting"}
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					c.mu.Unlock()
					return connError{http2.ErrCodeFlowControl, "stream window overflow"}
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame.Store(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wbuf = appendFrameHeader(c.wbuf[:0], 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	return c.flushLocked(time.Time{})
}

func (c *conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxClientID {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		return nil // closed: ignored
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > maxWindow {
		return streamError{f.StreamID, http2.ErrCodeFlowControl}
	}
	c.cond.Broadcast()
	return nil
}

func (c *conn) handleRST(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	if f.StreamID > c.maxClientID {
		c.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	st := c.streams[f.StreamID]
	if st != nil {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if st != nil {
		st.closedW.Store(true) // no frame may follow on a reset stream
		st.abort(errStreamReset)
	}
	return nil
}

// removeLocked forgets st (closed or reset); c.mu is held.
func (c *conn) removeLocked(st *stream) {
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	// A stream still queued for a handler (reset before it started) will
	// not start: its request (up to MaxHeaderListSize) goes now.
	st.queuedH, st.queuedR = nil, nil
	c.cond.Broadcast()
}

func (c *conn) handleData(f *http2.DataFrame) error {
	n := f.Length
	if len(f.Data()) == 0 && !f.StreamEnded() {
		// No data and no end: nothing but work (a WINDOW_UPDATE for its
		// padding, if any).
		if err := c.spend(); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if c.recvUnacked+n > connWindow {
		c.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	if n > 0 {
		c.recvUnacked += n
		// Credit the connection window back at once; streams bound their
		// own buffers.
		if c.recvUnacked >= connWindow/4 {
			inc := c.recvUnacked
			c.recvUnacked = 0
			c.mu.Unlock()
			if err := c.writeWindowUpdate(0, inc); err != nil {
				return err
			}
			c.mu.Lock()
		}
	}
	st := c.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID > c.maxClientID
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		return streamError{f.StreamID, http2.ErrCodeStreamClosed}
	}
	if st.remoteClosed {
		c.mu.Unlock()
		return streamError{f.StreamID, http2.ErrCodeStreamClosed}
	}
	if int64(n) > st.recvWindow {
		c.mu.Unlock()
		return streamError{f.StreamID, http2.ErrCodeFlowControl}
	}
	st.recvWindow -= int64(n)
	data := f.Data()
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		c.mu.Unlock()
		return streamError{f.StreamID, http2.ErrCodeProtocol}
	}
	credit := n - uint32(len(data)) // padding is credited back at once
	if st.body != nil {
		if st.body.closed {
			credit = n // nobody reads: credit it all back
		} else {
			st.body.buf = append(st.body.buf, data...)
			st.body.cond.Broadcast()
		}
	}
	st.recvWindow += int64(credit)
	end := f.StreamEnded()
	if end {
		if st.declared >= 0 && st.received != st.declared {
			c.mu.Unlock()
			return streamError{f.StreamID, http2.ErrCodeProtocol}
		}
		c.endRemoteLocked(st, nil)
	}
	c.mu.Unlock()
	if credit > 0 && !end {
		return c.writeWindowUpdate(f.StreamID, credit)
	}
	return nil
}

// endRemoteLocked records that the client finished its side of st; c.mu
// is held.
func (c *conn) endRemoteLocked(st *stream, trailer http.Header) {
	st.remoteClosed = true
	if st.body != nil {
		st.body.trailer = trailer
		st.body.err = io.EOF
		st.body.cond.Broadcast()
	}
	if st.localClosed {
		c.removeLocked(st)
	}
}

// resetStream sends RST_STREAM for id and ends its stream, if open.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if st != nil {
		c.wmu.Lock()
		st.closedW.Store(true)
		c.writeRSTLocked(id, code)
		c.wmu.Unlock()
		st.abort(errStreamClosed)
		return
	}
	c.wmu.Lock()
	c.writeRSTLocked(id, code)
	c.wmu.Unlock()
}

// streamStarted and streamDone count the handlers running; a connection
// without any, past its GOAWAY, closes.
func (c *conn) handlerDone(st *stream) {
	c.mu.Lock()
	c.handlers--
	if st.remoteClosed && st.localClosed {
		c.removeLocked(st)
	}
	// Start the streams that waited for a handler to end.
	var next []*stream
	for len(c.queue) > 0 && c.handlers < int(c.srv.maxStreams()) {
		q := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if q.queuedH == nil {
			continue // reset while it waited
		}
		c.handlers++
		next = append(next, q)
	}
	if len(c.queue) == 0 {
		c.queue = nil
	}
	idle := c.handlers == 0
	leaving := idle && (c.goAway || c.peerGoAway)
	starts := make([]func(), 0, len(next))
	for _, q := range next {
		h, r := q.queuedH, q.queuedR
		q.queuedH, q.queuedR = nil, nil
		starts = append(starts, func() { go c.runHandler(q, h, r) })
	}
	c.mu.Unlock()
	for _, start := range starts {
		start()
	}
	if leaving {
		c.close(nil)
		return
	}
	if idle {
		c.armIdle()
	}
}

// ----- writing frames; each builds the frame in wbuf and writes it once.

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// writeFrame writes one frame with the connection's default deadline.
func (c *conn) writeFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(appendFrameHeader(c.wbuf[:0], len(payload), typ, flags, id), payload...)
	return c.flushLocked(time.Time{})
}

func (c *conn) writeSettings() error {
	var p []byte
	put := func(id http2.SettingID, v uint32) {
		p = binary.BigEndian.AppendUint16(p, uint16(id))
		p = binary.BigEndian.AppendUint32(p, v)
	}
	put(http2.SettingMaxConcurrentStreams, c.srv.maxStreams())
	put(http2.SettingInitialWindowSize, c.srv.streamWindow())
	put(http2.SettingMaxHeaderListSize, c.srv.maxHeaderList())
	put(http2.SettingEnablePush, 0)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(appendFrameHeader(c.wbuf[:0], len(p), http2.FrameSettings, 0, 0), p...)
	c.wbuf = appendFrameHeader(c.wbuf, 4, http2.FrameWindowUpdate, 0, 0)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, connWindow-initialPeerWindow)
	return c.flushLocked(time.Time{})
}

func (c *conn) writeWindowUpdate(id, inc uint32) error {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], inc)
	return c.writeFrame(http2.FrameWindowUpdate, 0, id, p[:])
}

func (c *conn) writeGoAway(last uint32, code http2.ErrCode, reason string) error {
	p := binary.BigEndian.AppendUint32(nil, last)
	p = binary.BigEndian.AppendUint32(p, uint32(code))
	p = append(p, reason...)
	return c.writeFrame(http2.FrameGoAway, 0, 0, p)
}

// writeRSTLocked writes RST_STREAM; wmu is held.
func (c *conn) writeRSTLocked(id uint32, code http2.ErrCode) {
	c.wbuf = appendFrameHeader(c.wbuf[:0], 4, http2.FrameRSTStream, 0, id)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(code))
	_ = c.flushLocked(time.Time{})
}

// flushLocked writes wbuf by deadline (zero: the connection's default
// write timeout); wmu is held. The socket's deadline is moved only when
// it must: a stream's own deadline is set as it is, and the default one
// is renewed once half of it has passed, so that most writes cost no
// timer update.
func (c *conn) flushLocked(deadline time.Time) error {
	if c.werr != nil {
		return c.werr
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		// A stream's deadline that has passed fails that stream's write,
		// not the connection: writing with it would time out inside TLS,
		// whose write errors are sticky, and lose every stream.
		return os.ErrDeadlineExceeded
	}
	if c.nb != nil {
		if err := c.flushNonblockingLocked(deadline); err != nil {
			return err
		}
	}
	if deadline.IsZero() {
		timeout := orDefault(c.srv.WriteTimeout, defaultWriteTimeout)
		now := time.Now()
		if c.wdeadline.IsZero() || c.wdeadline.Sub(now) < timeout/2 {
			deadline = now.Add(timeout)
		} else {
			deadline = c.wdeadline
		}
	}
	if !deadline.Equal(c.wdeadline) {
		_ = c.tc.SetWriteDeadline(deadline)
		c.wdeadline = deadline
	}
	_, err := c.tc.Write(c.wbuf)
	if cap(c.wbuf) > 32<<10 {
		c.wbuf = nil // a large response's buffer is not kept for an idle connection
	}
	if err != nil {
		c.writeFailed(err)
		return c.werr
	}
	return nil
}

// writeFailed breaks the connection after a failed write (wmu is held):
// every stream's writes fail from now on. The socket is closed beneath
// TLS: a close alert sealed after a record that was lost would reach the
// client as a corrupt record rather than the end of the connection.
func (c *conn) writeFailed(err error) {
	c.werr = fmt.Errorf("writing to the connection: %w", err)
	c.brokenW.Store(true)
	go func(err error) {
		defer c.recoverConn("closing after a failed write")
		c.close(err)
	}(c.werr)
}

// awaitWindow takes up to want bytes of send window for st (at most a
// frame), waiting for the client to open it until deadline.
func (c *conn) awaitWindow(st *stream, want int, deadline time.Time) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if c.closed {
			return 0, errConnClosed
		}
		if st.closedW.Load() {
			return 0, errStreamClosed
		}
		n := int64(want)
		n = min(n, st.sendWindow, c.sendWindow, int64(c.peerMaxFrame.Load()))
		if n > 0 {
			st.sendWindow -= n
			c.sendWindow -= n
			return int(n), nil
		}
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			if timer == nil {
				timer = time.AfterFunc(d, func() {
					c.mu.Lock()
					c.cond.Broadcast()
					c.mu.Unlock()
				})
			}
		}
		c.cond.Wait()
	}
}
