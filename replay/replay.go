// Package replay holds topic logs: every topic is an ordered, bounded log of
// events with ids, and a subscriber is a cursor reading it. Replaying missed
// events and delivering live ones are the same read of the same log, so no
// event can fall between the two or be delivered twice.
//
// Stores implement Store, and nothing above this package knows which one is
// in use: Memory (the default: logs in this process), File (durable: logs in
// a bbolt file that survives restarts) and, in replay/redisstore, a Redis
// Streams store that several nodes share (it implements Shared too). The
// conformance suite in replay/replaytest is what each of them must pass.
package replay

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Earliest is the cursor a client sends (as Last-Event-ID or lastEventId) to
// ask for everything the topic still retains.
const Earliest = "earliest"

// Event is one entry of a topic log. It is immutable once appended and shared
// by every subscriber that reads it.
type Event struct {
	// ID is the event's position in its topic, assigned by the store.
	ID string
	// Type is the SSE event name (already sanitised by the publisher).
	Type string
	// Data is the event payload, line breaks normalised to LF.
	Data []byte
	// Time is when the store accepted the event; history age counts from it.
	Time time.Time
	// Frame is the event's wire encoding, computed once by the store's Framer
	// when the event enters the log, so a delivery to N subscribers encodes
	// nothing N times.
	Frame []byte

	// seq orders events in the store's timeline (memory store).
	seq uint64
	// encoded caches Frame in other encodings (shared compression).
	encoded [MaxEncodings]atomic.Pointer[[]byte]
	// encodedBudget is what the cached encodings are charged against the
	// history bounds, reserved when the event is appended.
	encodedBudget int
}

// MaxEncodings is how many encoded copies of a frame an event can cache.
const MaxEncodings = 2

// Encoded returns the frame in the encoding numbered slot, computing it with
// encode on first use: one compression per event and encoding, shared by
// every subscriber that negotiated it. Concurrent first callers may both
// compute; encode must be deterministic, so either result serves.
func (e *Event) Encoded(slot int, encode func(frame []byte) []byte) []byte {
	if p := e.encoded[slot].Load(); p != nil {
		return *p
	}
	b := encode(e.Frame)
	e.encoded[slot].CompareAndSwap(nil, &b)
	return *e.encoded[slot].Load()
}

// size is what an event costs against a topic's byte bound.
func (e *Event) size() int64 {
	const overhead = 96 // struct, slice headers, the id string
	return int64(len(e.Data)+len(e.Frame)+len(e.ID)+len(e.Type)+e.encodedBudget) + overhead
}

// Draft is an event offered for publishing: it has no id yet.
type Draft struct {
	Type string
	Data []byte
}

// Batch is a group of drafts appended atomically and in order.
type Batch struct {
	Events []Draft
	// Key, when set, makes the append idempotent: a batch whose key was
	// already appended to the topic within the dedup window appends nothing
	// and reports the ids of the first append.
	Key string
	// Lease, when set, fences the append: it is applied only while this
	// holder still holds the lease (otherwise ErrLeaseLost and nothing is
	// appended), and Cursor is recorded as the lease's upstream position in
	// the same atomic step. Only Shared stores use it; others ignore it.
	Lease Lease
	// Cursor is the upstream position the batch reaches (see Lease).
	Cursor string
}

// Appended reports the result of an append.
type Appended struct {
	IDs []string
	// Duplicate is true when Batch.Key had been seen: nothing was appended
	// and IDs are those of the original append.
	Duplicate bool
}

// Gap reasons.
const (
	// GapExpired: the requested id was once in the log but has been pruned
	// (history bounds), so events were missed.
	GapExpired = "expired"
	// GapUnknown: the id was never issued by this log: malformed, from an
	// earlier life (epoch) of the store, or ahead of the log.
	GapUnknown = "unknown"
	// GapUnreadable: a stored event could not be read back (its record is
	// damaged); delivery continues after it. The store reports the damage
	// through Config.OnUnreadable.
	GapUnreadable = "unreadable"
)

// Gap says that delivery cannot continue exactly after the requested id. It is
// sent to the client as the data of a reset event.
type Gap struct {
	Reason string `json:"reason"`
	// Requested is the id the client asked to resume after.
	Requested string `json:"requested"`
	// ResumeAfter is the cursor after which delivery continues: the events
	// that follow are the first ones the client gets.
	ResumeAfter string `json:"resume_after"`
	// Topic, on a multi-topic cursor (see SubscribeMany), names the one
	// topic the gap is in: the other topics continue exactly. Empty when
	// the gap is the whole cursor's (an id that is not one of its own).
	Topic string `json:"topic,omitempty"`
}

// GapPolicy chooses where a cursor continues when it hits a gap.
type GapPolicy int

const (
	// GapReplay continues from the oldest retained event.
	GapReplay GapPolicy = iota
	// GapLive skips to the end of the log: only new events follow.
	GapLive
)

// Page is what one read of a cursor returns.
type Page struct {
	// Events follow the cursor in order; the slice is shared and read-only.
	Events []*Event
	// Gap is set when the cursor could not continue exactly where it was.
	// It is reported once, before Events.
	Gap *Gap
	// Closed is set when the topic has ended and Events holds the last ones.
	Closed bool
	// Wait, when Events is empty and Closed is false, is closed as soon as
	// the log changes, so the reader can block on it without missing a write
	// that happens between the read and the wait. It may be closed already:
	// then there is more to read at once.
	Wait <-chan struct{}

	// The fields below are set by multi-topic cursors only (SubscribeMany);
	// their slices are valid until the cursor's next read.

	// Topics names the topic of each event (as long as Events).
	Topics []string
	// IDs, when set, is the cursor's id after each event (as long as
	// Events), to be sent instead of the event's own id: a cursor whose
	// position is not the id of the event it last read (see Compose).
	IDs []string
	// ClosedTopics are topics that ended after their last event in Events
	// (or before): the others go on. Closed is set with the last of them.
	ClosedTopics []string
}

// FellBehind records in p that its cursor fell behind the retained history
// (a slow reader): requested is where the cursor was, resumeAfter where
// delivery continues. A gap already in p (found by Subscribe, not reported
// yet) keeps its reason and the client's id; only its resume point moves.
func (p *Page) FellBehind(requested, resumeAfter string) {
	if p.Gap != nil {
		p.Gap.ResumeAfter = resumeAfter
		return
	}
	p.Gap = &Gap{Reason: GapExpired, Requested: requested, ResumeAfter: resumeAfter}
}

// Cursor is one subscriber's position in one topic.
type Cursor interface {
	// Next reads up to max events after the cursor and advances past them.
	// It never blocks.
	Next(max int) (Page, error)
	// Position is the id after which the next read continues.
	Position() string
	// Close releases the subscription. It is safe to call more than once.
	Close()
}

// Store holds the logs of many topics.
type Store interface {
	// Append adds b to topic atomically. It creates the topic when needed.
	Append(ctx context.Context, topic string, b Batch) (Appended, error)
	// Subscribe opens a cursor on topic after from: "" for live events only,
	// Earliest for everything retained, or an event id. An id the log cannot
	// continue after yields a cursor whose first page carries a Gap.
	//
	// On a closed topic, a client that missed something still gets it, so
	// that the last events (often a job's outcome) survive a dropped
	// connection:
	//   - from "", or an id at or after the topic's last event: nothing is
	//     missed, and Subscribe fails with ErrTopicClosed;
	//   - an id before the last event: the cursor delivers exactly the
	//     events after it, then Closed;
	//   - Earliest: everything retained, then Closed (on the first page when
	//     nothing is retained);
	//   - an unknown or expired id: the usual Gap, then what onGap resumes
	//     at (GapReplay: what is retained; GapLive: nothing), then Closed.
	Subscribe(ctx context.Context, topic, from string, onGap GapPolicy) (Cursor, error)
	// CloseTopic ends a topic: readers get Closed after its last event,
	// later Append and CloseTopic calls fail with ErrTopicClosed, and
	// Subscribe behaves as documented there.
	CloseTopic(ctx context.Context, topic string) error
	// Configure applies new bounds, pruning what no longer fits.
	Configure(cfg Config)
}

// Shared is implemented by stores that several Caddy nodes use at once
// (Redis). It elects one node to pull each source: the holder of the
// source's lease.
type Shared interface {
	Store
	// Lease blocks until this node holds the lease called name, or ctx
	// ends. The store renews it until Release; if a renewal fails for
	// longer than the lease lasts, Lost is closed and the store refuses
	// the holder's fenced appends, so a paused former holder cannot
	// append after another node took over.
	Lease(ctx context.Context, name string) (Lease, error)
}

// Lease is one node's hold on a named lease (see Shared).
type Lease interface {
	// Lost is closed when the lease is no longer held: released, expired
	// or taken over.
	Lost() <-chan struct{}
	// Cursor is the upstream position recorded by the last fenced append
	// of any holder of this lease: where the new holder resumes.
	Cursor() string
	// Release gives the lease up at once so another node can take it.
	Release()
}

// Framer encodes an event to its wire bytes once, when it enters a log.
type Framer func(id, eventType string, data []byte) []byte

// Config bounds a store. Zero values take the documented defaults.
type Config struct {
	// MaxEvents per topic. Default 1000.
	MaxEvents int
	// MaxBytes of history per topic (data and wire bytes). Default 16 MiB.
	MaxBytes int64
	// MaxAge of retained events; also how long a closed topic is remembered.
	// Default 1h.
	MaxAge time.Duration
	// MaxTopics that hold something at once: a topic counts from its first
	// accepted append (in File, even if writing it then fails) or its close
	// until it is forgotten, closed ones included while they are remembered. A topic that only
	// has subscribers does not count, so that clients subscribing to
	// made-up names cannot lock publishers out of new topics; such topics
	// are bounded by the subscriber limits instead, and forgotten once
	// their last subscriber leaves. Default 10000.
	MaxTopics int
	// MaxSubscribersPerTopic on this node. Default 0: no per-topic limit.
	MaxSubscribersPerTopic int
	// DedupWindow is how long an idempotency key is remembered. Default 1h.
	DedupWindow time.Duration
	// MaxDedupKeys remembered per topic; the oldest go first. Default 10000.
	MaxDedupKeys int
	// Framer encodes events; required.
	Framer Framer
	// OnUnreadable, when set, is told of each stored event that cannot be
	// read back (a damaged record in a durable store): once per record in
	// the store's life, however many readers hit it, so that it can be
	// logged and counted. err names the file and the cause. Readers get a
	// GapUnreadable gap and continue after the damage. It is called from
	// the reading goroutine, with no lock of the store held.
	OnUnreadable func(topic, id string, err error)
	// Encodings is how many compressed copies of each frame subscribers
	// may make the log cache (see Event.Encoded); each is charged as much
	// as the frame against MaxBytes, so the bound holds whatever is cached.
	Encodings int
}

// newEvent builds an event for appending: framed once, with room for its
// cached encodings reserved against the history bounds. Every store appends
// through it, so events cost the same in each.
func (c *Config) newEvent(seq uint64, id string, d Draft, now time.Time) *Event {
	e := &Event{ID: id, Type: d.Type, Data: d.Data, Time: now, Frame: c.Framer(id, d.Type, d.Data), seq: seq}
	e.encodedBudget = len(e.Frame) * min(c.Encodings, MaxEncodings)
	return e
}

// NewEvent builds an event for a store outside this package (Redis): framed
// once with the Framer, with room for its cached encodings reserved, exactly
// as this package's stores build theirs. at is when the store accepted it.
func (c *Config) NewEvent(id string, d Draft, at time.Time) *Event {
	return c.newEvent(0, id, d, at)
}

// Size is what the event costs against Config.MaxBytes.
func (e *Event) Size() int64 { return e.size() }

// Exceeds reports whether a topic log holding events events that cost
// bytes, the oldest of them accepted at oldest, is past c's bounds at now:
// then its oldest event goes.
func (c *Config) Exceeds(events int, bytes int64, oldest, now time.Time) bool {
	return events > c.MaxEvents || bytes > c.MaxBytes || now.Sub(oldest) > c.MaxAge
}

// Defaults of Config.
const (
	DefaultMaxEvents    = 1000
	DefaultMaxBytes     = 16 << 20
	DefaultMaxAge       = time.Hour
	DefaultMaxTopics    = 10000
	DefaultDedupWindow  = time.Hour
	DefaultMaxDedupKeys = 10000
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.MaxEvents <= 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxTopics <= 0 {
		c.MaxTopics = DefaultMaxTopics
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.MaxDedupKeys <= 0 {
		c.MaxDedupKeys = DefaultMaxDedupKeys
	}
	return c
}

// Errors a store returns; callers map them to HTTP statuses.
var (
	ErrTopicClosed        = errors.New("topic is closed")
	ErrTooManyTopics      = errors.New("topic limit reached")
	ErrTooManySubscribers = errors.New("subscriber limit of the topic reached")
	ErrBatchTooLarge      = errors.New("batch is larger than the topic's history bound")
	ErrStoreClosed        = errors.New("store is closed")
	// ErrUnavailable: the store's backend cannot be reached and nothing
	// was stored. Callers answer 503 with Retry-After.
	ErrUnavailable = errors.New("store unavailable")
	// ErrLeaseLost: a fenced append came from a node that no longer holds
	// the lease; nothing was appended.
	ErrLeaseLost = errors.New("lease lost")
)
