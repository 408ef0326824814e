// Package h2serve serves HTTP/2 connections with less than net/http does
// per connection and per stream, for listeners whose connections are
// mostly long-lived event streams.
//
// net/http's HTTP/2 server keeps two goroutines per connection (the serve
// loop and its frame reader) besides each handler's, and every write of a
// handler is a message to the serve loop, which writes the frame: per
// event delivered, two goroutines wake. Here a connection has one
// goroutine, its frame reader (started after the TLS handshake, so its
// stack starts small), and a handler writes its frames itself, under the
// connection's write lock, within the flow-control windows: one wake-up
// and one write per delivery.
//
// Listener wraps a TLS listener: connections whose ALPN is h2 are served
// here, every other one is returned from Accept already handshaken, for
// net/http to serve.
//
// What is implemented (RFC 9113): the connection preface, SETTINGS with
// acknowledgement, PING, GOAWAY both ways, connection and stream flow
// control both ways, HEADERS and CONTINUATION with HPACK, request bodies
// (a bounded buffer per stream, credited back as the handler reads),
// trailers both ways, RST_STREAM both ways (a reset stream's request
// context is cancelled), the stream states and their errors. PRIORITY is
// read and ignored (as RFC 9113 allows); there is no server push and no
// extended CONNECT.
//
// It runs at the edge: the known HTTP/2 floods (rapid reset, control
// frames, CONTINUATION) are bounded (see flood.go), and a panic in any of
// a connection's goroutines ends that connection only (see recover.go).
// FuzzConn feeds a connection arbitrary bytes.
package h2serve
