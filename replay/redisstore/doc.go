// Package redisstore is a replay.Store kept in Redis Streams, shared by every
// Caddy node that points at the same Redis and key prefix: a topic is one
// stream, an event id is the stream entry id Redis assigned (<ms>-<seq>), so
// a client can resume on any node with an id any node gave it.
//
// # Key layout
//
// Every key of one topic carries the topic as a hash tag, so on Redis
// Cluster a topic lives in one slot and each script below touches one slot.
// A topic that is empty, contains a brace or starts with "~" is written in
// the tag as "~" and its hex encoding. With the default prefix "sse:":
//
//	sse:{<topic>}:log          stream: the events. Fields t (type), d (data),
//	                           p (id of the entry before it), c (bytes it is
//	                           charged against the history size bound);
//	                           the close marker entry has x and p instead.
//	sse:{<topic>}:meta         hash: last (id of the newest entry), floor
//	                           (newest id trimmed away), bytes (sum of c
//	                           retained), closed (id of the close marker).
//	sse:{<topic>}:dedup        hash: idempotency key -> "<ms> <id> <id>…",
//	                           the ids of the batch first appended with it.
//	sse:{<topic>}:dedup:order  sorted set: the same keys, oldest first.
//	sse:topics                 sorted set: topic -> until when it counts
//	                           against the topic limit (ms). A topic counts
//	                           from its first append or its close; one that
//	                           only has subscribers holds no key and takes
//	                           no slot.
//	sse:lease:{<name>}         string: the token of the lease's holder.
//	sse:lease:{<name>}:cursor  string: the upstream position recorded by the
//	                           last fenced append.
//
// The log and meta of a topic expire when nothing has been appended for the
// history age (nodes with subscribers keep them alive, however short the
// age); the dedup keys when no keyed batch came for the dedup window.
//
// # Appending
//
// A batch is one Lua script: it refuses a closed topic, answers a repeated
// idempotency key with the first ids, XADDs the events, trims, and records
// the key; the publisher is answered only after Redis ran it. Trimming
// happens there, on append: oldest entries first, exactly to the bounds
// (events, age from the id's time, and bytes) — not with the approximate
// MAXLEN ~, because a topic's history must be the same whichever node reads
// it, so XLEN never exceeds the event bound. The byte bound is approximate
// in one way: it counts, per event, what the event costs in a node's memory
// (data, frame, reserved compressed copies) as the appending node computes
// it with its Framer before Redis has assigned the id (an id of typical
// length stands in), and that number is stored in the entry (c) so every
// node and Redis agree on it. Configure changes the bounds at once for what
// this node reads; Redis is trimmed to them on each topic's next append.
//
// # Reading
//
// A node tails only the topics it has subscribers for. It loads a topic's
// retained history once (one XREVRANGE), then follows it with XREAD BLOCK:
// a few dedicated connections, each following up to StreamsPerConn topics
// in one XREAD. What arrives is framed once into a window per topic that all
// local cursors share, so Next never touches the network. The window holds
// the topic's whole retained history (as the memory store would: the
// history bounds are its size), so a cursor before its start has missed
// events and gets an expired gap; a resume anywhere in the history is read
// from memory. Every entry names
// the entry before it, so a window notices entries trimmed before it read
// them (a slow or disconnected node) and its cursors get an expired gap
// instead of a silent hole. The node's own appends enter its window before
// Append returns. A topic without local subscribers is dropped after
// Options.Linger.
//
// Subscribe decides on a window that agrees with Redis: it asks Redis
// where the topic is (one HMGET) and, when the tail has not caught up yet,
// reads the rest first. So every node answers an id the same way: resumed
// after it, a gap, or ErrTopicClosed. A cursor opened without an id has a
// position at once (0-0 on a topic without history) that resumes exactly
// on any node.
//
// # Closed topics
//
// CloseTopic appends a marker entry whose p names the last event. A
// subscriber before that event still gets what it missed, then Closed: from
// an earlier id, from Earliest, or from an unknown or expired id after its
// gap. Only a subscriber with nothing left (no id, the last event, or the
// marker, where a GapLive cursor on a closed topic rests) gets
// ErrTopicClosed.
//
// # When Redis loses its data
//
// A Redis restarted without persistence, flushed or replaced no longer has
// the ids the nodes handed out, while each node may still hold a window of
// them. A node notices in three ways: the janitor reads Redis's run_id
// (INFO server) every second and, when it changed, compares every window
// with Redis; Subscribe compares the window with Redis's last id; the tail
// sees an entry that follows one before the window's end (the stream
// started over). Only a window holding entries Redis no longer has is
// reloaded, so a restart that kept the data (RDB, AOF) changes nothing.
// Cursors of a reloaded window get an unknown gap, and so does a client
// resuming with such an id on any node: an id before the first entry of a
// stream that starts at 0-0 was never issued by it.
//
// # Outages
//
// When Redis cannot be reached, Append, CloseTopic and Subscribe fail at
// once with an error wrapping replay.ErrUnavailable, and nothing is
// acknowledged that Redis did not store (a timed-out append may still have
// been stored: the publisher's retry with the same idempotency key is then a
// duplicate). Open cursors stay open, and continue from their position when
// the tail connections are back (they reconnect with capped backoff). The
// first failure and the recovery are logged once each; Up and Outages report
// the state.
//
// # Leases
//
// Shared.Lease takes "SET NX PX" on the lease key, renews it every third of
// its time with a compare-and-PEXPIRE script and declares it lost when a
// renewal finds another holder or renewals failed for a whole lease time. A
// fenced append checks the token in the same script that appends and records
// the batch's cursor. The lease keys are in another hash slot than the
// topic's, so fenced appends need standalone Redis or Sentinel; on Redis
// Cluster they would fail with CROSSSLOT. (The store itself takes one
// server's client options: Sentinel and Cluster clients are not wired up
// yet. The rest of the key layout is Cluster-ready, though one XREAD can
// only name streams of one slot there.)
package redisstore
