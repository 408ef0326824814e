package stream

// Exported for the external tests and benchmarks of this package only.

// Serve serves a stream inside its request (the mode HTTP/2 and HTTP/3
// streams always take).
var Serve = serveInRequest

// SegmentOf returns an event's frame in enc, as every subscriber that
// negotiated enc receives it.
var SegmentOf = (*Encoding).segment

// NoPark makes sv serve detached streams each with a goroutine of its own,
// never parked: the mode TLS streams take.
func (sv *Server) NoPark() { sv.noPark = true }
