// Package redisstore is a replay.Store kept in Redis Streams, shared by every
// Caddy node that points at the same Redis and key prefix: a topic is one
// stream, an event id is the stream entry id Redis assigned (<ms>-<seq>), so
// a client can resume on any node with an id any node gave it.
//
// # Key layout
//
// Every key of one topic carries the topic as a hash tag, so on Redis
// Cluster a topic lives in one slot and each script below touches one slot
// (no script names keys of two hash tags: no CROSSSLOT anywhere).
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
//	sse:{<topic>}:fences       hash: lease name -> the highest fencing
//	                           token a fenced append to this topic
//	                           carried (see Leases).
//	sse:topics                 sorted set: topic -> until when it counts
//	                           against the topic limit (ms). A topic counts
//	                           from its first append or its close; one that
//	                           only has subscribers holds no key and takes
//	                           no slot.
//	sse:lease:{<name>}         string: the token of the lease's holder.
//	sse:lease:{<name>}:cursor  string: the upstream position recorded
//	                           after the holder's last fenced append.
//	sse:lease:{<name>}:fence   counter: the fencing token of the latest
//	                           holder (incremented on every acquisition).
//
// sse:topics is in a slot of its own; it is only ever touched by its own
// script (registration), never in the same script as a topic's keys.
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
// Shared.Lease takes "SET NX PX" on the lease key and, in the same script,
// increments the lease's fencing counter: each holder gets a fencing token
// higher than every earlier holder's. It renews the lease every third of
// its time with a compare-and-PEXPIRE script and declares it lost when a
// renewal finds another holder or renewals failed for a whole lease time.
//
// A source with topic_field appends to topics in any slot, while its lease
// is in a slot of its own, so a fenced append cannot read the lease key in
// its script (CROSSSLOT on Cluster). Instead the fencing token travels with
// the append and is compared in the topic's slot: the append script
// refuses the batch (ErrLeaseLost) when the topic's fences hash holds a
// higher token for that lease, and otherwise records its token there, in
// the same step as the XADD. So once a new holder has appended to a topic,
// no earlier holder can append to it again, whatever it believes. Before
// sending a fenced append the node also checks that Redis confirmed the
// lease within the last lease time (from when the renewal was sent): a
// node that froze past its lease refuses its own appends when it wakes,
// before the new holder may have written the topic. (What a paused former
// holder could still append in between, to a topic the new holder has not
// written yet, is an upstream line the new holder will read again; its
// idempotency key drops the repeat.) The fences hash expires with the
// topic's history age.
//
// The upstream cursor is recorded in the lease's slot right after each
// successful fenced append, by a script that writes it only while the
// token still holds the lease. A holder that dies between the two leaves
// the cursor one batch behind: the new holder reads that batch again, and
// the idempotency keys (the upstream ids) drop it. This is the same in
// every mode; on one server the two scripts simply run on the same
// server.
//
// # Sentinel and Cluster
//
// Options.Sentinel uses go-redis's failover client: it asks the sentinels
// for the master, follows +switch-master, and asks again when a dial fails.
// Options.Cluster uses the cluster client for reads (it follows MOVED and
// ASK). Writes that must not run twice (append, close) go to the master of
// the topic's slot without the client's retries; a MOVED, ASK, TRYAGAIN,
// CLUSTERDOWN or refused dial (the script did not run) reloads the slot
// map and tries again, four times within the operation timeout. Anything
// else fails with ErrUnavailable, so while no master serves the slot
// publishes answer 503 with Retry-After, and succeed again once a replica
// is promoted. The janitor's probe reads INFO of the master (of every
// master on Cluster): a failover changes the run_id like a restart, and
// windows holding entries the new master never got are reloaded (their
// cursors get a reset).
//
// Tails: one XREAD names streams of one slot only on Cluster (two slots of
// the same master are refused with CROSSSLOT too), so there a tailer
// follows the topics of one hash slot, over its own connection to the
// master that owns it. After an error (the master died, MOVED, ASK) it
// closes that connection, has the cluster client reload its slot map and
// connects to the slot's master anew. A tailer's place is each topic's
// window end, not the connection, so moving it neither skips nor repeats
// an entry. The price: a node tailing topics in many slots holds one
// connection per slot (topics that share a slot share one). On Sentinel a
// tailer is a failover client of its own (one connection), which follows
// the master like the main client.
//
// # Replication and min_replicas_ack
//
// Redis replicates asynchronously: an append the master acknowledged may be
// missing on the replica Sentinel or the Cluster promotes. With
// Options.MinReplicasAck n, the append script and WAIT n run on one
// connection (a pipeline to the slot's master), and the append is
// acknowledged only when WAIT reports n replicas within ReplicaAckTimeout;
// otherwise it fails with ErrUnavailable (503), and the event may still
// appear (it is on the master, and may reach the replicas later). A
// repeated append with the same idempotency key also waits: its script
// writes (refreshes the key's expiry), so WAIT covers the first append
// too. n is capped at the number of replicas the master has connected, as
// the janitor reads it every second (INFO replication): a master left
// without replicas, as the promoted replica of a one-replica setup is,
// acknowledges on its own, since no failover could promote anything (a
// later failover of it has nothing to promote either); until the janitor
// has seen the new master, its publishes wait for n and fail. While a
// replica that is still configured is disconnected from the master (a
// network blip), the master does not count it, so appends acknowledged
// meanwhile are on the master alone. Subscribers may see an event before
// WAIT confirmed it; if the master dies before any replica got it, nodes
// that delivered it give those subscribers a reset (GapUnknown), as after
// Redis lost data.
package redisstore
