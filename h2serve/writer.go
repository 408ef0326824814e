package h2serve

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// smallBody is how much of a response is held before its head is sent, so
// that a short response goes out with its Content-Length (and a sniffed
// Content-Type) in one write. A Flush sends the head at once.
const smallBody = 4 << 10

// responseWriter is a stream's http.ResponseWriter. It is used by the
// handler's goroutine; it writes its frames itself (see conn.wmu).
// http.ResponseController finds Flush/FlushError, SetWriteDeadline and
// SetReadDeadline on it.
type responseWriter struct {
	st          *stream
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool // the handler decided the status
	headSent    bool
	buf         []byte // the start of the body while the head is held
	done        bool
	written     int64
	declared    int64 // Content-Length the handler set, or -1
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *responseWriter) WriteHeader(code int) {
	if w.done || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("h2serve: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational response (103 Early Hints, ...) goes out now;
		// the final one follows.
		_ = w.writeHead(code, w.header, false, true)
		return
	}
	w.wroteHeader = true
	w.status = code
	w.declared = -1
	if cl := w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.header.Del("Content-Length")
		}
	}
}

// bodyAllowed reports whether the response may have a body.
func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified && !(w.status >= 100 && w.status < 200)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("h2serve: write after the handler returned")
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	if !w.headSent {
		if len(w.buf)+len(p) <= smallBody {
			w.buf = append(w.buf, p...)
			w.written += int64(len(p))
			return len(p), nil
		}
		if err := w.sendHead(false); err != nil {
			return 0, err
		}
	}
	if err := w.st.writeData(p, false, w.deadline()); err != nil {
		return 0, err
	}
	w.written += int64(len(p))
	return len(p), nil
}

// Flush sends what is held. For http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError sends the head, if held, and the body held with it; every
// Write after the head is sent goes out at once, so there is nothing else
// to flush. http.ResponseController calls it.
func (w *responseWriter) FlushError() error {
	if w.done {
		return errors.New("h2serve: flush after the handler returned")
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.headSent {
		return nil
	}
	return w.sendHead(false)
}

// SetWriteDeadline bounds the stream's writes, including the wait for the
// client to open its flow-control window. For http.ResponseController.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	c := w.st.c
	c.mu.Lock()
	w.st.wdeadline = t
	c.mu.Unlock()
	return nil
}

// SetReadDeadline is accepted and not enforced: a request body is
// bounded by its stream's window, and the handler's context ends with
// the stream. For http.ResponseController.
func (w *responseWriter) SetReadDeadline(time.Time) error { return nil }

func (w *responseWriter) deadline() time.Time {
	c := w.st.c
	c.mu.Lock()
	d := w.st.wdeadline
	c.mu.Unlock()
	return d
}

// sendHead sends the response head and the body held so far; end ends
// the stream with them.
func (w *responseWriter) sendHead(end bool) error {
	w.headSent = true
	w.st.headStarted.Store(true)
	h := w.Header()
	if _, ok := h["Content-Type"]; !ok && len(w.buf) > 0 && w.bodyAllowed() && h.Get("Content-Encoding") == "" {
		h.Set("Content-Type", http.DetectContentType(w.buf))
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	trailers := w.trailerKeys()
	if end && w.declared < 0 && len(trailers) == 0 && w.bodyAllowed() && w.req.Method != http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(len(w.buf)))
	}
	headEnds := end && len(w.buf) == 0 && len(trailers) == 0
	if err := w.writeHead(w.status, h, headEnds, false); err != nil {
		return err
	}
	if headEnds {
		return nil
	}
	if len(w.buf) > 0 {
		buf := w.buf
		w.buf = nil
		return w.st.writeData(buf, end && len(trailers) == 0, w.deadline())
	}
	return nil
}

// finish ends the response when the handler returns.
func (w *responseWriter) finish() error {
	if w.done {
		return nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	defer func() { w.done = true }()
	trailers := w.trailerKeys()
	if !w.headSent {
		if err := w.sendHead(true); err != nil {
			return err
		}
		if len(trailers) == 0 {
			return nil
		}
	} else if len(trailers) == 0 {
		return w.st.writeData(nil, true, w.deadline())
	}
	th := make(http.Header, len(trailers))
	for _, k := range trailers {
		if v, ok := w.header[k]; ok {
			th[strings.TrimPrefix(k, http.TrailerPrefix)] = v
		}
	}
	return w.writeHead(0, th, true, false)
}

// trailerKeys lists the header keys that are trailers: declared in
// Trailer, or set with http.TrailerPrefix.
func (w *responseWriter) trailerKeys() []string {
	var keys []string
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				keys = append(keys, k)
			}
		}
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			keys = append(keys, k)
		}
	}
	return keys
}

// writeHead encodes and writes a header block (status 0: trailers),
// split into HEADERS and CONTINUATION frames, in one write.
func (w *responseWriter) writeHead(status int, h http.Header, end, informational bool) error {
	st := w.st
	c := st.c
	deadline := w.deadline()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if st.closedW.Load() {
		return errStreamClosed
	}
	c.hbuf.Reset()
	if status != 0 {
		_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	}
	for k, vv := range h {
		if status != 0 && (k == "Trailer" || strings.HasPrefix(k, http.TrailerPrefix) || w.isDeclaredTrailer(k, informational)) {
			continue
		}
		lk := lowerHeader(k)
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			continue // connection-specific: not in HTTP/2
		}
		if !httpguts.ValidHeaderFieldName(lk) {
			continue
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			_ = c.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
		}
	}
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame.Load())
	c.wbuf = c.wbuf[:0]
	typ := http2.FrameHeaders
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), max)
		var flags http2.Flags
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		if first && end {
			flags |= http2.FlagHeadersEndStream
		}
		c.wbuf = appendFrameHeader(c.wbuf, n, typ, flags, st.id)
		c.wbuf = append(c.wbuf, block[:n]...)
		block = block[n:]
		typ = http2.FrameContinuation
	}
	if end {
		st.endLocal()
	}
	return c.flushLocked(deadline)
}

// endLocal records, before the frame with END_STREAM is written, that
// the stream's side is done: a client that reads that frame and reuses
// the id must find the stream closed. wmu is held.
func (st *stream) endLocal() {
	st.closedW.Store(true)
	c := st.c
	c.mu.Lock()
	st.localClosed = true
	if st.remoteClosed {
		c.removeLocked(st)
	}
	c.mu.Unlock()
}

// isDeclaredTrailer reports a key named in the Trailer header (sent after
// the body, not in the head).
func (w *responseWriter) isDeclaredTrailer(k string, informational bool) bool {
	if informational {
		return false
	}
	for _, v := range w.header["Trailer"] {
		for t := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(t)) == k {
				return true
			}
		}
	}
	return false
}

// writeData writes p as DATA frames, each within the flow-control windows
// (waiting for them until deadline); end ends the stream.
func (st *stream) writeData(p []byte, end bool, deadline time.Time) error {
	c := st.c
	for {
		n := 0
		if len(p) > 0 {
			var err error
			if n, err = c.awaitWindow(st, len(p), deadline); err != nil {
				return err
			}
		}
		last := end && n == len(p)
		c.wmu.Lock()
		if st.closedW.Load() {
			c.wmu.Unlock()
			return errStreamClosed
		}
		var flags http2.Flags
		if last {
			flags = http2.FlagDataEndStream
			st.endLocal()
		}
		c.wbuf = appendFrameHeader(c.wbuf[:0], n, http2.FrameData, flags, st.id)
		c.wbuf = append(c.wbuf, p[:n]...)
		err := c.flushLocked(deadline)
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

// lowerHeader is the HTTP/2 name of a canonical header key; the common
// ones are not lowered again on every response.
func lowerHeader(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
		"Access-Control-Max-Age", "Age", "Alt-Svc", "Cache-Control", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Range", "Content-Type", "Date", "Etag", "Expires",
		"Last-Modified", "Link", "Location", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Vary", "Via", "Www-Authenticate", "X-Accel-Buffering", "X-Content-Type-Options", "X-Frame-Options"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()
