package stream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/ssegate/caddy-sse/wire"
)

// ErrDisconnected: the stream was ended by Disconnect, with a retry hint
// (it wraps ErrStopped: the client comes back and resumes, as after a
// stop).
var ErrDisconnected = fmt.Errorf("%w: subscribers of the topic disconnected", ErrStopped)

// Presence counts the open streams of one topic by how they are served.
type Presence struct {
	// In a request, by the HTTP version of the request.
	HTTP1, HTTP2, HTTP3 int
	// Taken over from net/http (plain HTTP/1.x, see the package doc):
	// waiting in their own goroutine (detached) or in the topic's lot
	// (parked).
	Detached, Parked int
}

// Total is the number of streams counted.
func (p Presence) Total() int { return p.HTTP1 + p.HTTP2 + p.HTTP3 + p.Detached + p.Parked }

// Add returns the sum of p and q.
func (p Presence) Add(q Presence) Presence {
	return Presence{p.HTTP1 + q.HTTP1, p.HTTP2 + q.HTTP2, p.HTTP3 + q.HTTP3, p.Detached + q.Detached, p.Parked + q.Parked}
}

// transport is how one stream is served: a field of Presence.
type transport int

const (
	tHTTP1 transport = iota
	tHTTP2
	tHTTP3
	tDetached
	tParked
)

func inRequestTransport(r *http.Request) transport {
	switch r.ProtoMajor {
	case 2:
		return tHTTP2
	case 3:
		return tHTTP3
	}
	return tHTTP1
}

// member is one open stream in the server's table of topics.
type member struct {
	topics    []string // the topics it counts under
	transport transport
	// disconnect ends the stream with reason and a retry hint.
	disconnect func(reason string)
}

// roster is the table of open streams by topic, for presence and
// Disconnect.
type roster struct {
	mu     sync.Mutex
	topics map[string]map[*member]struct{}
}

// enter counts m under each of its topics.
func (ro *roster) enter(m *member) {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if ro.topics == nil {
		ro.topics = make(map[string]map[*member]struct{})
	}
	for _, key := range m.topics {
		set := ro.topics[key]
		if set == nil {
			set = make(map[*member]struct{})
			ro.topics[key] = set
		}
		set[m] = struct{}{}
	}
}

func (ro *roster) leave(m *member) {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	for _, key := range m.topics {
		set := ro.topics[key]
		delete(set, m)
		if len(set) == 0 {
			delete(ro.topics, key)
		}
	}
}

// newMember is a stream of Serve's key (or opts.Topics) in the roster.
func newMember(key string, opts *Options, t transport) *member {
	topics := opts.Topics
	if len(topics) == 0 {
		topics = []string{key}
	}
	return &member{topics: topics, transport: t}
}

// Presence counts the streams open on the topic key.
func (sv *Server) Presence(key string) Presence {
	sv.roster.mu.Lock()
	defer sv.roster.mu.Unlock()
	var p Presence
	for m := range sv.roster.topics[key] {
		switch m.transport {
		case tHTTP1:
			p.HTTP1++
		case tHTTP2:
			p.HTTP2++
		case tHTTP3:
			p.HTTP3++
		case tDetached:
			p.Detached++
		case tParked:
			p.Parked++
		}
	}
	return p
}

// Topics lists, in order, the topics that have open streams.
func (sv *Server) Topics() []string {
	sv.roster.mu.Lock()
	names := make([]string, 0, len(sv.roster.topics))
	for name := range sv.roster.topics {
		names = append(names, name)
	}
	sv.roster.mu.Unlock()
	sort.Strings(names)
	return names
}

// Disconnect ends every stream open on the topic key now: each is sent
// reason as a comment (when not empty), then a retry hint, as on a stop
// without the drain, so that its client reconnects and resumes with
// Last-Event-ID. It returns how many streams it ended.
func (sv *Server) Disconnect(key, reason string) int {
	sv.roster.mu.Lock()
	members := make([]*member, 0, len(sv.roster.topics[key]))
	for m := range sv.roster.topics[key] {
		members = append(members, m)
	}
	sv.roster.mu.Unlock()
	for _, m := range members {
		m.disconnect(reason)
	}
	return len(members)
}

// disconnected is the cause with which Disconnect cancels a stream's
// context.
type disconnected struct{ reason string }

func (d *disconnected) Error() string { return "disconnected: " + d.reason }

// disconnectable returns a stream's context and the function with which
// Disconnect ends it.
func disconnectable(parent context.Context) (context.Context, func(reason string)) {
	ctx, cancel := context.WithCancelCause(parent)
	return ctx, func(reason string) { cancel(&disconnected{reason}) }
}

// disconnectReason reports whether err (a context's cause) is a
// Disconnect, and its reason.
func disconnectReason(err error) (string, bool) {
	var d *disconnected
	if errors.As(err, &d) {
		return d.reason, true
	}
	return "", false
}

// disconnect writes the reason and the retry hint that end a stream that
// Disconnect ended.
func (s *subscriber) disconnect(reason string) error {
	var b []byte
	if reason != "" {
		b = s.plain(b, wire.EncodeComment(reason))
	}
	retry := s.opts.Retry
	if s.opts.StopRetry != nil {
		retry = s.opts.StopRetry()
	}
	b = s.plain(b, wire.EncodeRetry(retry))
	if s.enc != nil {
		b = s.enc.trailer(b)
	}
	if err := s.write(b); err != nil {
		return err
	}
	return ErrDisconnected
}

// disconnect asks a parked stream to end (see Server.Disconnect): its own
// goroutine, or the lot's next round, ends it.
func (ps *parkedStream) disconnect(reason string) {
	ps.kicked.Store(&reason)
	ps.lot.poke()
}
