// Package stream delivers a topic's events to subscribers: it reads a
// subscriber's cursor on the topic log (package replay) and writes what it
// reads to the client as an event stream, with heartbeats, a write timeout,
// shared compression and a drain when the server stops.
//
// Server is the front door. It serves each stream in the leanest of three
// modes the connection allows:
//
//   - in the request: the stream stays inside net/http's handler goroutine
//     (HTTP/2 served by net/http, HTTP/3, and streams that another handler
//     such as Caddy's encode transforms). About 38 KiB per idle subscriber.
//   - detached: a plain HTTP/1.x connection is taken over from net/http
//     once the response head is sent (see detach.go), or an HTTP/2 stream
//     is taken from its handler on a connection that package h2serve
//     serves (the sse_h2 listener wrapper; see detach_h2.go), so the
//     request's goroutine, buffers and Caddy's per-request state are
//     released.
//   - parked: a detached stream whose socket can be written without
//     blocking (plain TCP, or TLS over a ParkableListener's connection,
//     see parkable.go; for HTTP/2, the connection's) and that has sent
//     everything there is waits with
//     no goroutine of its own. One goroutine per topic (its lot) waits for
//     the log to change, then reads every parked cursor and writes to each
//     socket without blocking. A delivery then costs a cursor read and a
//     write, not also the wake-up and scheduling of a goroutine per
//     subscriber, and an idle subscriber costs a few KiB.
//
// A parked stream leaves the lot for a goroutine of its own whenever it
// would have to wait or do more than one quick write (a slow reader, a
// catch-up, a gap to report, an end), and parks again once caught up.
//
// The wire format itself lives in package wire.
package stream
