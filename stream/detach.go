package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ssegate/caddy-sse/internal/tlsbuf"
	"github.com/ssegate/caddy-sse/replay"
)

// detached is an HTTP/1.x event stream whose connection was taken over from
// net/http once the response head was sent. The request's goroutine, its
// buffered reader and writer and Caddy's per-request state are released;
// what stays per subscriber is the connection and the cursor, and a
// goroutine only while the stream is not parked (see the package doc). That is the difference between roughly 38 KiB and a few KiB
// per idle subscriber.
//
// The price, which the handler accepts only for plain HTTP/1.x streams
// that no other handler transforms: the stream frames its own chunked
// encoding, Caddy's access log sees the request end when the stream is
// detached, Caddy's graceful shutdown no longer waits for it (the handler
// ends it itself), and a client that leaves is noticed by a failed write
// or, when idle, by peeking at the socket at heartbeat time.
type detached struct {
	conn    net.Conn
	chunked bool
	raw     syscall.RawConn // of the TCP socket; nil when the conn has none
	// direct: conn is the socket itself (not TLS) and the platform lets
	// bytes be written to raw without blocking (see rawWriter), which is
	// what lets a stream wait parked (canPark).
	direct bool
	// pc: conn is TLS over a ParkableListener's connection, whose writes
	// can be made non-blocking: the stream parks too.
	pc *parkConn

	// unwatch ends the hang-up watch (see watch); nil without one.
	unwatch func()

	// While parked, writes never block: what the socket does not take at
	// once is kept pending in w (pc's, over TLS: encrypted bytes) and
	// written by the stream's own goroutine (see Lot).
	nonblocking bool
	w           *rawWriter
}

// takenConn is a stream taken over from net/http, as the serving modes
// outside a request use it: an HTTP/1.x connection (detached) or an
// HTTP/2 stream of the sse_h2 listener's server (h2Taken).
type takenConn interface {
	sink
	// canPark reports whether the stream can wait parked in a lot: its
	// writes can be made non-blocking.
	canPark() bool
	// watch calls onHangup once the client is seen gone.
	watch(onHangup func())
	// park makes writes non-blocking (what cannot go out at once is kept,
	// see hasPending); unpark makes them blocking again and writes what
	// was kept, by deadline.
	park()
	unpark(deadline time.Time) error
	hasPending() bool
	// close ends the stream; cleanly (the body ended) after a clean end.
	close(err error)
}

// cleanEnd reports an end after which the response body is ended
// properly.
func cleanEnd(err error) bool {
	return errors.Is(err, ErrTopicClosed) || errors.Is(err, ErrStopped) || errors.Is(err, ErrExpired)
}

// canPark reports whether d can wait parked in a lot.
func (d *detached) canPark() bool { return d.direct || d.pc != nil }

// ErrNotDetachable is returned by detach for a stream that must stay with
// net/http: HTTP/2 and HTTP/3 multiplex streams over one connection.
var ErrNotDetachable = errors.New("stream cannot be detached from its connection")

// detach takes over the connection of the HTTP/1.x request r, whose
// response head WriteHead has sent. Bytes the client sent after its
// request are dropped: an event stream is the last response of its
// connection.
func detach(w http.ResponseWriter, r *http.Request) (*detached, error) {
	if r.ProtoMajor != 1 {
		return nil, ErrNotDetachable
	}
	// net/http chose the framing when it wrote the head: chunked for
	// HTTP/1.1 unless the handler asked for identity, otherwise the body
	// ends with the connection.
	chunked := r.ProtoAtLeast(1, 1) && w.Header().Get("Transfer-Encoding") != "identity"
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDetachable, err)
	}
	conn = unwrapCounted(conn)
	// Clear the server's read and write deadlines: the stream sets its own
	// write deadlines and never reads.
	_ = conn.SetDeadline(time.Time{})
	d := &detached{conn: conn, chunked: chunked}
	tcp := conn
	if tc, ok := conn.(*tls.Conn); ok {
		tcp = tc.NetConn()
		tlsbuf.Release(tc)
	}
	if sc, ok := tcp.(syscall.Conn); ok {
		d.raw, _ = sc.SyscallConn()
		d.direct = d.raw != nil && tcp == conn && canWriteNow
	}
	switch pc, ok := tcp.(*parkConn); {
	case ok && tcp != conn:
		d.pc, d.w = pc, &pc.w
	case d.direct:
		d.w = &rawWriter{raw: d.raw}
	}
	return d, nil
}

// caddyCountedConn is the type of the connection Caddy's access log
// recorder hands out on Hijack: it embeds the real connection as its field
// Conn and adds what is written to the recorder's size.
var caddyCountedConn = struct{ pkg, name string }{"github.com/caddyserver/caddy/v2/modules/caddyhttp", "hijackedConn"}

// unwrapCounted returns the connection under Caddy's access log counter
// (a site with `log`), and any other connection as it is. The counter's
// size is read by the access log once the handler returns, while a
// detached stream goes on writing from another goroutine (a data race),
// and it hides the socket (syscall.Conn), without which a stream can
// neither park nor notice a hang-up. The access log then records the
// head's size, as it would anyway: it is written when the handler returns.
func unwrapCounted(conn net.Conn) net.Conn {
	v := reflect.ValueOf(conn)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return conn
	}
	if t := v.Elem().Type(); t.PkgPath() != caddyCountedConn.pkg || t.Name() != caddyCountedConn.name {
		return conn
	}
	if inner, ok := v.Elem().FieldByName("Conn").Interface().(net.Conn); ok && inner != nil {
		return inner
	}
	return conn
}

// serveDetached is serveInRequest for a detached stream: it delivers until the topic
// closes, a write fails or times out, the client is seen gone, or
// opts.Stop ends it, then ends the HTTP body properly when it can and
// closes the connection.
func serveDetached(parent context.Context, d takenConn, cur replay.Cursor, opts Options) (Stats, error) {
	ctx, hangup := context.WithCancelCause(parent)
	defer hangup(nil)
	d.watch(func() { hangup(ErrClientGone) })
	stats, err := serve(ctx, d, cur, opts)
	if errors.Is(err, context.Canceled) {
		err = context.Cause(ctx)
	}
	d.close(err)
	return stats, err
}

// watch calls onHangup when the client hangs up (see watchHangup), until
// close.
func (d *detached) watch(onHangup func()) {
	if d.raw == nil {
		return
	}
	if stop, ok := watchHangup(d.raw, onHangup); ok {
		d.unwatch = stop
	}
}

// close ends the stream's connection. After a clean end (the topic closed,
// the server stopping, the credential expired) the last chunk ends the
// response body first, so the client sees a complete response.
//
// A parked stream that ends otherwise (its client gone, a write failed)
// ends from the lot, whose writes must not wait: over TLS the close alert
// is then left unsent.
func (d *detached) close(err error) {
	if d.chunked && cleanEnd(err) {
		deadline := time.Now().Add(time.Second)
		if d.nonblocking {
			_ = d.unpark(deadline)
		}
		_ = d.conn.SetWriteDeadline(deadline)
		_, _ = d.conn.Write(lastChunk)
	}
	// The watch goes before the socket: its descriptor may be reused at once.
	if d.unwatch != nil {
		d.unwatch()
	}
	d.conn.Close()
}

var (
	lastChunk = []byte("0\r\n\r\n")
	crlf      = []byte("\r\n")
)

// chunkPool holds the buffers a chunk is assembled in, so that one write
// (and, over TLS, one record) carries it and nothing is allocated per
// delivery.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (d *detached) send(b []byte, deadline time.Time) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !deadline.IsZero() && !d.nonblocking {
		_ = d.conn.SetWriteDeadline(deadline)
	}
	bp := chunkPool.Get().(*[]byte)
	buf := (*bp)[:0]
	if d.chunked {
		buf = strconv.AppendInt(buf, int64(len(b)), 16)
		buf = append(buf, crlf...)
		buf = append(buf, b...)
		buf = append(buf, crlf...)
	} else {
		buf = append(buf, b...)
	}
	var err error
	if d.nonblocking && d.pc == nil {
		err = d.w.writeNow(buf)
	} else {
		// Over TLS while parked, the parkConn beneath never blocks.
		_, err = d.conn.Write(buf)
	}
	if cap(buf) <= 64<<10 {
		*bp = buf
		chunkPool.Put(bp)
	}
	if err != nil {
		return 0, fmt.Errorf("writing to subscriber: %w", err)
	}
	return len(b), nil
}

// park makes the stream's writes non-blocking while it waits in a lot: what
// the socket does not take at once is kept pending (see hasPending).
func (d *detached) park() {
	// A deadline left on the socket would fail the parked writes once it
	// passed; they never wait, so they need none.
	_ = d.conn.SetWriteDeadline(time.Time{})
	d.nonblocking = true
	if d.pc != nil {
		d.pc.nonblocking = true
	}
}

// hasPending reports bytes a parked write left for the stream's own
// goroutine to write.
func (d *detached) hasPending() bool { return d.w != nil && len(d.w.pending) > 0 }

// unpark makes writes blocking again, for the stream's own goroutine, and
// writes what a parked write left, waiting for the socket up to deadline.
func (d *detached) unpark(deadline time.Time) error {
	if !d.nonblocking {
		return nil
	}
	d.nonblocking = false
	var err error
	if d.pc != nil {
		err = d.pc.flush(deadline)
	} else {
		err = flushPending(d.conn, d.w, deadline)
	}
	if err != nil {
		return fmt.Errorf("writing to subscriber: %w", err)
	}
	return nil
}

func (d *detached) gone() bool {
	if d.raw == nil {
		return false
	}
	return peekClosed(d.raw)
}
