package stream

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// Server serves the event streams of one handler: it picks each stream's
// serving mode (see the package doc), keeps the parked streams' lots, and
// knows the streams that run outside a request, which net/http's graceful
// shutdown no longer waits for.
type Server struct {
	stop    context.Context
	detach  bool
	parking *parking
	// outside counts the streams running outside a request (detached or
	// parked).
	outside sync.WaitGroup
	modes   [numModes]atomic.Int64
	noPark  bool // tests: serve detached streams as TLS ones are
	// roster knows each topic's open streams (see presence.go).
	roster roster
}

// Mode is how a stream is served (see the package doc).
type Mode int

// Serving modes.
const (
	InRequest Mode = iota
	Detached
	Parked
	numModes
)

func (m Mode) String() string {
	return [...]string{"in_request", "detached", "parked"}[m]
}

// NewServer makes the server of a handler whose streams end, each after its
// Options.Drain delay, when stop is done. With detach false every stream
// stays in its request.
func NewServer(stop context.Context, detach bool) *Server {
	return &Server{stop: stop, detach: detach, parking: newParking(stop)}
}

// Serve delivers cur to the client of w and r, whose response head
// WriteHead has sent, until the topic closes, the client leaves, a write
// fails or times out, the server stops, or the credential that opened the
// stream expires (Options.Expires); then done is called, once, with
// what was delivered and why the stream ended. Serve returns as soon as the
// stream no longer needs the request: at its end, or once it is detached
// from net/http. key names the topic the stream's lot is shared by (for a
// multi-topic stream, see Options.Topics, what its cursor waits on).
func (sv *Server) Serve(w http.ResponseWriter, r *http.Request, key string, cur replay.Cursor, opts Options, done func(Stats, error)) {
	// A stream that encode (or anything but us) compresses must keep its
	// writer chain, so only an untransformed one is taken over.
	if sv.detach && (opts.Encoding != nil || w.Header().Get("Content-Encoding") == "") {
		if d, err := takeOver(w, r); err == nil {
			sv.outside.Add(1)
			mode := Detached
			if d.canPark() && !sv.noPark {
				mode = Parked
			}
			sv.modes[mode].Add(1)
			m := &member{transport: tDetached}
			end := func(stats Stats, err error) {
				sv.roster.leave(m)
				sv.modes[mode].Add(-1)
				done(stats, err)
				sv.outside.Done()
			}
			if mode == Parked {
				ps := sv.parking.newStream(key, d, cur, opts, end)
				m.transport, m.disconnect = tParked, ps.disconnect
				sv.roster.enter(m, key, &opts)
				ps.start()
			} else {
				ctx, disconnect := disconnectable(context.Background())
				m.disconnect = disconnect
				sv.roster.enter(m, key, &opts)
				go func() { end(serveDetached(ctx, d, cur, opts)) }()
			}
			return
		}
	}
	sv.modes[InRequest].Add(1)
	defer sv.modes[InRequest].Add(-1)
	ctx, disconnect := disconnectable(r.Context())
	m := &member{transport: inRequestTransport(r), disconnect: disconnect}
	sv.roster.enter(m, key, &opts)
	stats, err := serveInRequest(ctx, w, cur, opts)
	sv.roster.leave(m)
	done(stats, err)
}

// Streams reports how many streams are open in mode m.
func (sv *Server) Streams(m Mode) int64 { return sv.modes[m].Load() }

// Wait waits up to timeout for the streams running outside a request to
// end (after the server stopped), and reports whether they all did. The
// streams inside requests are waited for by net/http itself.
func (sv *Server) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		sv.outside.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// takeOver takes the stream of w and r from net/http (HTTP/1.x) or from
// the sse_h2 listener's HTTP/2 server.
func takeOver(w http.ResponseWriter, r *http.Request) (takenConn, error) {
	if r.ProtoMajor == 2 {
		return detachH2(w)
	}
	return detach(w, r)
}
