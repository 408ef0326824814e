package h2serve

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/testcert"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The limits the fuzzed server runs with: small, so that inputs of a few
// KiB reach them.
const (
	fuzzMaxStreams  = 8
	fuzzMaxHeaders  = 8 << 10
	fuzzStreamWin   = 16 << 10
	fuzzConnTimeout = 10 * time.Second
)

// fuzzHandler echoes a body (/echo), writes a few events and waits for
// its stream to end (/sse), or answers a short body.
func fuzzHandler(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	switch r.URL.Path {
	case "/echo":
		w.WriteHeader(200)
		_ = rc.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_ = rc.Flush()
		for i := range 3 {
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, strings.Repeat("x", 100)); err != nil {
				return
			}
			_ = rc.Flush()
		}
		<-r.Context().Done()
	default:
		_, _ = io.WriteString(w, "ok")
	}
}

// fuzzSeeds are frame sequences sent after the preface and SETTINGS: valid
// requests, and the known floods.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	var hbuf bytes.Buffer
	var enc *hpack.Encoder
	// fields encodes a header block (each seed is a connection of its
	// own, with an encoder of its own).
	fields := func(kv ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	block := func(method, path string, extra ...string) []byte {
		return fields(append([]string{":method", method, ":scheme", "https", ":authority", "localhost", ":path", path}, extra...)...)
	}
	seq := func(write func(fr *http2.Framer)) {
		enc = hpack.NewEncoder(&hbuf)
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		write(fr)
		seeds = append(seeds, b.Bytes())
	}
	seq(func(fr *http2.Framer) { // valid requests
		_ = fr.WriteSettingsAck()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("GET", "/"), EndStream: true, EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("GET", "/sse"), EndStream: true, EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block("POST", "/echo", "content-length", "10"), EndHeaders: true})
		_ = fr.WriteData(5, false, []byte("hello"))
		_ = fr.WriteData(5, true, []byte("world"))
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		_ = fr.WriteGoAway(5, http2.ErrCodeNo, nil)
	})
	seq(func(fr *http2.Framer) { // a request body with trailers and padding
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("POST", "/echo", "trailer", "x-sum"), EndHeaders: true})
		_ = fr.WriteDataPadded(1, false, []byte("abc"), make([]byte, 20))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: fields("x-sum", "1"), EndStream: true, EndHeaders: true})
	})
	seq(func(fr *http2.Framer) { // CONTINUATION flood
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("GET", "/")})
		for range 3000 {
			_ = fr.WriteContinuation(1, false, nil)
		}
	})
	seq(func(fr *http2.Framer) { // header list over the limit, in CONTINUATIONs
		b := block("GET", "/", "x-a", strings.Repeat("a", 3000), "x-b", strings.Repeat("b", 3000), "x-c", strings.Repeat("c", 3000))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:100]})
		for rest := b[100:]; len(rest) > 0; {
			n := min(len(rest), 500)
			_ = fr.WriteContinuation(1, n == len(rest), rest[:n])
			rest = rest[n:]
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("GET", "/"), EndStream: true, EndHeaders: true})
	})
	seq(func(fr *http2.Framer) { // SETTINGS flood
		for range 1500 {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		}
	})
	seq(func(fr *http2.Framer) { // PING flood
		for i := range 1500 {
			_ = fr.WritePing(false, [8]byte{byte(i)})
		}
	})
	seq(func(fr *http2.Framer) { // rapid reset
		for id := uint32(1); id < 800; id += 2 {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("GET", "/sse"), EndStream: true, EndHeaders: true})
			_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	seq(func(fr *http2.Framer) { // WINDOW_UPDATE overflow, connection and stream
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("GET", "/sse"), EndStream: true, EndHeaders: true})
		_ = fr.WriteWindowUpdate(1, 1<<31-1)
		_ = fr.WriteWindowUpdate(0, 1<<31-1)
		_ = fr.WriteWindowUpdate(0, 1<<31-1)
	})
	seq(func(fr *http2.Framer) { // zero-length DATA flood on an open upload
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("POST", "/echo"), EndHeaders: true})
		for range 1500 {
			_ = fr.WriteData(1, false, nil)
		}
	})
	seq(func(fr *http2.Framer) { // a body over the stream window
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("POST", "/echo"), EndHeaders: true})
		for range 3 {
			_ = fr.WriteData(1, false, make([]byte, 16000))
		}
	})
	seq(func(fr *http2.Framer) { // a zero window: the handler's writes wait
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("GET", "/sse"), EndStream: true, EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("POST", "/echo"), EndHeaders: true})
		_ = fr.WriteData(3, false, []byte("stuck"))
	})
	seq(func(fr *http2.Framer) { // more streams than allowed, without resets
		for id := uint32(1); id < 40; id += 2 {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("GET", "/sse"), EndStream: true, EndHeaders: true})
		}
	})
	return seeds
}

// FuzzConn feeds a connection arbitrary bytes, after a valid preface and
// SETTINGS (raw false) or from its first byte (raw true), and checks that
// the server does not panic, holds its limits, ends the connection once
// the client is done, and leaves no goroutine behind.
func FuzzConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(false, s)
	}
	f.Add(true, []byte(http2.ClientPreface))
	f.Add(true, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(true, append([]byte(http2.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, raw bool, data []byte) {
		before := goleak.IgnoreCurrent()
		var input []byte
		if !raw {
			input = append([]byte(http2.ClientPreface), 0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0)
		}
		input = append(input, data...)
		runFuzzConn(t, input)
		if err := goleak.Find(before); err != nil {
			t.Fatalf("goroutines left behind: %v", err)
		}
	})
}

func runFuzzConn(t *testing.T, input []byte) {
	var logMu sync.Mutex
	var panics []string
	// Handlers may start after ServeConn returns (it does not wait for
	// them, as net/http does not): counted, not a WaitGroup; goleak, after
	// this, finds any still running.
	var running atomic.Int32
	srv := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			running.Add(1)
			defer running.Add(-1)
			fuzzHandler(w, r)
		}),
		MaxConcurrentStreams: fuzzMaxStreams,
		MaxHeaderListSize:    fuzzMaxHeaders,
		StreamWindow:         fuzzStreamWin,
		IdleTimeout:          fuzzConnTimeout,
		WriteTimeout:         fuzzConnTimeout,
		ErrorLog: func(msg string, err error) {
			if strings.Contains(msg, "panic") {
				logMu.Lock()
				panics = append(panics, msg+": "+err.Error())
				logMu.Unlock()
			}
		},
	}
	cp, sp := net.Pipe()
	stc := tls.Server(sp, &tls.Config{Certificates: []tls.Certificate{testcert.Certificate(t)}, NextProtos: []string{"h2"}})
	ctc := tls.Client(cp, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	served := make(chan error, 1)
	go func() {
		if err := stc.Handshake(); err != nil {
			stc.Close()
			served <- err
			return
		}
		served <- srv.ServeConn(stc)
	}()
	if err := ctc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	drained := make(chan struct{})
	acked := make(chan struct{}) // the PING sent after the input came back
	var seen []string            // what the client read, for -v
	// The client reads everything, as a well-behaved one does.
	go func() {
		defer close(drained)
		fr := http2.NewFramer(nil, ctc)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				_, _ = io.Copy(io.Discard, ctc)
				return
			}
			desc := f.Header().Type.String()
			switch f := f.(type) {
			case *http2.PingFrame:
				if f.IsAck() && f.Data == donePing {
					close(acked)
				}
			case *http2.GoAwayFrame:
				desc += " " + f.ErrCode.String()
			case *http2.RSTStreamFrame:
				desc += " " + f.ErrCode.String()
			}
			if len(seen) == 0 || seen[len(seen)-1] != desc {
				seen = append(seen, desc)
			}
		}
	}()
	_ = ctc.SetWriteDeadline(time.Now().Add(fuzzConnTimeout))
	for rest := input; len(rest) > 0; {
		n := min(len(rest), 4096)
		if _, err := ctc.Write(rest[:n]); err != nil {
			break // the server ended the connection
		}
		rest = rest[n:]
		checkConnBounds(t, srv)
	}
	// A PING after the input: once it is acknowledged, every frame before
	// it was handled, and the handlers had a moment to answer. (An input
	// that ends inside a frame swallows it: hence the short wait, which
	// most inputs, cut by the fuzzer, meet.)
	var ping bytes.Buffer
	_ = http2.NewFramer(&ping, nil).WritePing(false, donePing)
	if _, err := ctc.Write(ping.Bytes()); err == nil {
		select {
		case <-acked:
		case <-drained:
		case <-time.After(10 * time.Millisecond):
		}
	}
	checkConnBounds(t, srv)
	_ = ctc.CloseWrite()
	var serveErr error
	select {
	case serveErr = <-served:
	case <-time.After(fuzzConnTimeout):
		t.Fatal("the connection did not end after the client finished")
	}
	ctc.Close()
	<-drained
	if testing.Verbose() {
		t.Logf("the client read: %s; ServeConn: %v", strings.Join(seen, ", "), serveErr)
	}
	for deadline := time.Now().Add(fuzzConnTimeout); running.Load() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("handlers still running after the connection ended")
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if len(panics) > 0 {
		t.Fatalf("recovered panic: %s", panics[0])
	}
}

var donePing = [8]byte{'f', 'u', 'z', 'z', 'd', 'o', 'n', 'e'}

// checkConnBounds checks what a connection holds against its limits.
func checkConnBounds(t *testing.T, s *Server) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		streams, handlers, queued := len(c.streams), c.handlers, len(c.queue)
		bodyBytes := 0
		for _, st := range c.streams {
			if st.body != nil {
				if len(st.body.buf) > fuzzStreamWin {
					t.Errorf("stream %d buffers %d body bytes, over its window", st.id, len(st.body.buf))
				}
				bodyBytes += len(st.body.buf)
			}
		}
		c.mu.Unlock()
		if streams > fuzzMaxStreams || handlers > fuzzMaxStreams || queued > maxQueued(fuzzMaxStreams) {
			t.Errorf("%d streams, %d handlers, %d queued: over the limits", streams, handlers, queued)
		}
	}
}
