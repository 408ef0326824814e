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
	g          *group  // its set of topics; set by enter
	prev, next *member // in g's list
	transport  transport
	// disconnect ends the stream with reason and a retry hint.
	disconnect func(reason string)
}

// group is the open streams of one set of topics (one topic, or a
// multi-topic stream's set). Streams count under their topics through their
// group, so that a stream of 20 topics costs the table one entry, not 20:
// the set is counted once under each of its topics, whatever the number of
// streams on it.
type group struct {
	key    string
	topics []string
	// first is its list of members (a list, not a map: a set that no other
	// stream shares has one).
	first *member
	n     int
	count [tParked + 1]int // members by transport
}

// roster is the table of open streams by topic, for presence and
// Disconnect.
type roster struct {
	mu     sync.Mutex
	groups map[string]*group              // by Serve's key
	topics map[string]map[*group]struct{} // the groups counting under a topic
}

// enter counts m under each of its topics: key is Serve's (a stream's
// topic, or what names its set of topics, opts.Topics).
func (ro *roster) enter(m *member, key string, opts *Options) {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	g := ro.groups[key]
	if g == nil {
		if ro.groups == nil {
			ro.groups = make(map[string]*group)
			ro.topics = make(map[string]map[*group]struct{})
		}
		topics := opts.Topics
		if len(topics) == 0 {
			topics = []string{key}
		}
		g = &group{key: key, topics: topics}
		ro.groups[key] = g
		for _, t := range topics {
			gs := ro.topics[t]
			if gs == nil {
				gs = make(map[*group]struct{})
				ro.topics[t] = gs
			}
			gs[g] = struct{}{}
		}
	}
	m.g = g
	m.next = g.first
	if g.first != nil {
		g.first.prev = m
	}
	g.first = m
	g.n++
	g.count[m.transport]++
}

func (ro *roster) leave(m *member) {
	ro.mu.Lock()
	defer ro.mu.Unlock()
	g := m.g
	if m.prev != nil {
		m.prev.next = m.next
	} else {
		g.first = m.next
	}
	if m.next != nil {
		m.next.prev = m.prev
	}
	m.prev, m.next = nil, nil
	g.n--
	g.count[m.transport]--
	if g.n > 0 {
		return
	}
	delete(ro.groups, g.key)
	for _, t := range g.topics {
		gs := ro.topics[t]
		delete(gs, g)
		if len(gs) == 0 {
			delete(ro.topics, t)
		}
	}
}

// Presence counts the streams open on the topic key.
func (sv *Server) Presence(key string) Presence {
	sv.roster.mu.Lock()
	defer sv.roster.mu.Unlock()
	var p Presence
	for g := range sv.roster.topics[key] {
		p = p.Add(Presence{
			HTTP1:    g.count[tHTTP1],
			HTTP2:    g.count[tHTTP2],
			HTTP3:    g.count[tHTTP3],
			Detached: g.count[tDetached],
			Parked:   g.count[tParked],
		})
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
	var members []*member
	for g := range sv.roster.topics[key] {
		for m := g.first; m != nil; m = m.next {
			members = append(members, m)
		}
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
