package h2serve

import (
	"errors"
	"io"
	"time"

	"golang.org/x/net/http2"
)

// The bounds against the known HTTP/2 floods, besides those of the Server's
// options (streams, header list, stream window):
//
//   - rapid reset (CVE-2023-44487): at most MaxConcurrentStreams handlers
//     run per connection, reset streams included; a stream opened past
//     that waits for one to end, and more than maxQueued waiting (the
//     client resets faster than handlers end) is answered GOAWAY
//     ENHANCE_YOUR_CALM.
//   - control frames (PING, SETTINGS, RST_STREAM and PRIORITY floods,
//     empty DATA frames, streams opened past our limit: CVE-2019-9512,
//     -9514, -9515, -9518): each spends one of calmBurst tokens, refilled
//     at calmPerSecond; a connection out of tokens is sent GOAWAY
//     ENHANCE_YOUR_CALM. Answers (PING and SETTINGS acks, RST_STREAM,
//     WINDOW_UPDATE) are written by the reader as it reads, never queued:
//     a client that does not read stalls its own requests, and at worst
//     WriteTimeout ends the connection; server memory does not grow.
//   - CONTINUATION flood (CVE-2024-27316 and kin): x/net's framer stops
//     decoding a header block once it is over MaxHeaderListSize (the
//     request is answered 431), and ends the connection when a fragment
//     comes past that; frameGuard caps the CONTINUATION frames of one
//     block, which also bounds empty ones (they never exceed a size).
const (
	calmBurst     = 1000
	calmPerSecond = 100
)

// maxQueued is how many streams may wait for a handler (see conn.queue).
func maxQueued(maxStreams uint32) int { return 4 * int(maxStreams) }

// maxContinuations is how many CONTINUATION frames one header block may
// have: a header list of the largest size we take, in frames of the
// smallest size a client may use (16 KiB), needs maxHeaderList/16384;
// this allows four times that, and at least 16.
func maxContinuations(maxHeaderList uint32) int { return 16 + int(maxHeaderList/4096) }

// spend takes a token of the connection's budget for frames that make us
// work without carrying a request; the reader goroutine calls it.
func (c *conn) spend() error {
	now := time.Now()
	if c.calmLeft < calmBurst {
		elapsed := min(now.Sub(c.calmAt), time.Hour) // no overflow below
		if add := int(elapsed * calmPerSecond / time.Second); add > 0 {
			c.calmLeft = min(calmBurst, c.calmLeft+add)
			c.calmAt = now
		}
	} else {
		c.calmAt = now
	}
	if c.calmLeft <= 0 {
		return connError{http2.ErrCodeEnhanceYourCalm, "too many control frames"}
	}
	c.calmLeft--
	return nil
}

var errContinuationFlood = errors.New("too many CONTINUATION frames in one header block")

// frameGuard sits between the TLS connection and the framer, and follows
// the frame boundaries in what it reads: x/net's framer reads a header
// block's CONTINUATION frames inside one ReadFrame, out of our reach, and
// takes any number of empty ones. The framer reads a frame as its 9-byte
// header and then its payload; a read here never crosses either.
type frameGuard struct {
	r       io.Reader
	maxCont int
	hdr     [9]byte
	hn      int // bytes of the frame header read so far
	left    int // payload bytes of the current frame not read yet
	cont    int // CONTINUATION frames since the last HEADERS
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.left > 0 {
		if len(p) > g.left {
			p = p[:g.left]
		}
		n, err := g.r.Read(p)
		g.left -= n
		return n, err
	}
	if len(p) > len(g.hdr)-g.hn {
		p = p[:len(g.hdr)-g.hn]
	}
	n, err := g.r.Read(p)
	copy(g.hdr[g.hn:], p[:n])
	g.hn += n
	if g.hn == len(g.hdr) {
		g.hn = 0
		g.left = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		switch http2.FrameType(g.hdr[3]) {
		case http2.FrameHeaders:
			g.cont = 0
		case http2.FrameContinuation:
			g.cont++
			if g.cont > g.maxCont {
				// The frame's header is kept from the framer, which sees
				// the error instead.
				return 0, errContinuationFlood
			}
		}
	}
	return n, err
}
