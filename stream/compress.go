package stream

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"mime"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/ssegate/caddy-sse/replay"
)

// Encoding compresses an event stream so that every event is compressed
// once and the bytes are shared by every subscriber, where Caddy's encode
// runs one compressor per stream. Each event becomes a self-contained
// segment (no dictionary crosses events), so the segment is the same
// whatever a subscriber received before it; a decoder still reads the
// concatenation as one valid stream and gets each event as soon as its
// segment arrives.
type Encoding struct {
	// Name is the Content-Encoding token.
	Name string
	// slot is where events cache their segment (replay.Event.Encoded).
	slot int
	// compress turns bytes into a segment; deterministic.
	compress func([]byte) []byte
	// heartbeat is the heartbeat comment, compressed once.
	heartbeat []byte
	// gzip streams need a header and, at a clean end, a trailer.
	gzip bool
}

// Encodings this package offers, by Content-Encoding token. Each caches
// its segments in its own slot of replay.Event.
var (
	Gzip = newEncoding("gzip", 0, gzipSegment, true)
	Zstd = newEncoding("zstd", 1, zstdFrame, false)

	encodings = []*Encoding{Gzip, Zstd}
)

// Every encoding needs a slot in replay.Event's cache: this fails to
// compile when an encoding is added without a slot for it.
var _ = [replay.MaxEncodings - 2]struct{}{}

// EncodingNames lists the encodings this package offers, in the order the
// configuration documents them.
func EncodingNames() []string {
	names := make([]string, len(encodings))
	for i, e := range encodings {
		names[i] = e.Name
	}
	return names
}

func newEncoding(name string, slot int, compress func([]byte) []byte, gzip bool) *Encoding {
	e := &Encoding{Name: name, slot: slot, compress: compress, gzip: gzip}
	e.heartbeat = compress(heartbeat)
	return e
}

// EncodingByName returns the encoding for a Content-Encoding token.
func EncodingByName(name string) *Encoding {
	for _, e := range encodings {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// segment returns an event's frame in this encoding, compressed at most
// once per event.
func (e *Encoding) segment(ev *replay.Event) []byte {
	return ev.Encoded(e.slot, e.compress)
}

// gzip: a stream is the 10-byte member header, then per event the raw
// DEFLATE blocks of a fresh compressor ended by a sync flush (so the
// event is decodable at once and nothing carries over), then at the end
// an empty final block and the trailer (CRC-32 and length of the
// uncompressed bytes this subscriber received).
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// gzipFinalBlock is an empty fixed-Huffman block with BFINAL set.
var gzipFinalBlock = []byte{0x03, 0x00}

var flatePool = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.DefaultCompression)
	return w
}}

func gzipSegment(b []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(b)/2 + 16)
	w := flatePool.Get().(*flate.Writer)
	w.Reset(&out)
	_, _ = w.Write(b) // a bytes.Buffer does not fail
	_ = w.Flush()
	flatePool.Put(w)
	return out.Bytes()
}

// zstd: every event is its own frame; concatenated frames are one valid
// zstd stream, and a frame ends cleanly, so no trailer is needed.
var zstdEncoder, _ = zstd.NewWriter(nil,
	zstd.WithEncoderConcurrency(1),
	zstd.WithEncoderLevel(zstd.SpeedDefault),
	zstd.WithWindowSize(1<<20), // what decoders must hold stays small
)

func zstdFrame(b []byte) []byte {
	return zstdEncoder.EncodeAll(b, make([]byte, 0, len(b)/2+16))
}

// encodedWriter is one subscriber's compression state: for gzip, the
// running CRC-32 and length its trailer needs.
type encodedWriter struct {
	enc  *Encoding
	crc  uint32
	size uint32
}

func (w *encodedWriter) account(plain []byte) {
	if w.enc.gzip {
		w.crc = crc32.Update(w.crc, crc32.IEEETable, plain)
		w.size += uint32(len(plain)) // ISIZE is the length modulo 2^32
	}
}

// event appends an event's shared segment.
func (w *encodedWriter) event(dst []byte, ev *replay.Event) []byte {
	return append(dst, w.shared(ev)...)
}

// shared returns an event's segment itself, to be written as is.
func (w *encodedWriter) shared(ev *replay.Event) []byte {
	w.account(ev.Frame)
	return w.enc.segment(ev)
}

// own appends bytes only this subscriber sends (retry lines, reset and
// close events), compressed for it alone.
func (w *encodedWriter) own(dst []byte, plain []byte) []byte {
	w.account(plain)
	return append(dst, w.enc.compress(plain)...)
}

func (w *encodedWriter) heartbeat(dst []byte) []byte {
	w.account(heartbeat)
	return append(dst, w.enc.heartbeat...)
}

// start is what goes before anything else in the body.
func (w *encodedWriter) start(dst []byte) []byte {
	if w.enc.gzip {
		return append(dst, gzipHeader...)
	}
	return dst
}

// trailer ends the compressed stream cleanly, so a strict decoder sees no
// truncation when the stream ends on purpose (topic closed, stop).
func (w *encodedWriter) trailer(dst []byte) []byte {
	if !w.enc.gzip {
		return dst
	}
	dst = append(dst, gzipFinalBlock...)
	dst = binary.LittleEndian.AppendUint32(dst, w.crc)
	return binary.LittleEndian.AppendUint32(dst, w.size)
}

// Negotiate picks the encoding for a request's Accept-Encoding among
// offered (in the server's order of preference): the highest q-value wins,
// ties go to the server's preference, q=0 refuses, "*" stands for any
// encoding not named. It returns nil for identity.
func Negotiate(acceptEncoding string, offered []*Encoding) *Encoding {
	if acceptEncoding == "" || len(offered) == 0 {
		return nil
	}
	q := map[string]float64{}
	for _, part := range strings.Split(acceptEncoding, ",") {
		token, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		token = strings.ToLower(strings.TrimSpace(token))
		if token == "" {
			continue
		}
		weight := 1.0
		if params != "" {
			if _, p, err := mime.ParseMediaType("x/x;" + params); err == nil {
				if v, ok := p["q"]; ok {
					f, err := strconv.ParseFloat(v, 64)
					if err != nil || f < 0 || f > 1 {
						continue
					}
					weight = f
				}
			}
		}
		if old, ok := q[token]; !ok || weight > old {
			q[token] = weight
		}
	}
	var best *Encoding
	bestQ := 0.0
	for _, enc := range offered {
		w, ok := q[enc.Name]
		if !ok {
			w = q["*"]
		}
		if w > bestQ {
			best, bestQ = enc, w
		}
	}
	return best
}
