package h2serve_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ssegate/caddy-sse/h2serve"
)

// rawClient is an HTTP/2 client that writes whatever frames a test asks
// for, as a hostile one would.
type rawClient struct {
	t    *testing.T
	tc   *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	addr string
}

func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *rawClient {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, tc: tc, fr: http2.NewFramer(tc, tc), addr: addr}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return c
}

// headerBlock encodes a GET of path.
func (c *rawClient) headerBlock(path string) []byte {
	c.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", c.addr}, {":path", path}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), c.hbuf.Bytes()...)
}

func (c *rawClient) open(id uint32, path string, end bool) error {
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.headerBlock(path), EndStream: end, EndHeaders: true})
}

// goAway reads until the server's GOAWAY and returns its code; the
// connection's end without one fails the test.
func (c *rawClient) goAway() http2.ErrCode {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("the connection ended without GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
		case *http2.GoAwayFrame:
			return f.ErrCode
		}
	}
}

// waitNoConns waits for the server to have let every connection go, and
// checks that no goroutine started since base (taken before the client
// dialed) is left: the connection's reader and every handler have ended.
func waitNoConns(t *testing.T, l *h2serve.Listener, base goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Server().Conns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still served", l.Server().Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The listener's accept loop starts at the first Accept, which may
	// come after base.
	if err := goleak.Find(base, goleak.IgnoreAnyFunction("github.com/ssegate/caddy-sse/h2serve.(*Listener).acceptLoop")); err != nil {
		t.Fatalf("goroutines left after the connection ended: %v", err)
	}
}

// Rapid reset (CVE-2023-44487): streams opened and reset in a loop, on a
// handler that does not watch its context, do not spawn more handler
// goroutines than MaxConcurrentStreams; the client is sent GOAWAY
// ENHANCE_YOUR_CALM once it has queued too many.
func TestRapidResetBounded(t *testing.T) {
	release := make(chan struct{})
	var running, peak atomic.Int32
	addr, l := serveWith(t, &h2serve.Server{MaxConcurrentStreams: 10, DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release // a slow handler, deaf to the reset
		})})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll()
	base := goleak.IgnoreCurrent()
	c := dialRaw(t, addr)
	go func() {
		for id := uint32(1); id < 2000; id += 2 {
			if c.open(id, "/", true) != nil || c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	if p := peak.Load(); p > 10 {
		t.Fatalf("%d handlers ran at once, over MaxConcurrentStreams (10)", p)
	}
	releaseAll()
	waitNoConns(t, l, base)
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := running.Load(); n > 0 {
		t.Fatalf("%d handlers still running", n)
	}
}

// A stream opened while MaxConcurrentStreams handlers of reset streams
// still run waits for one of them to end, then is served.
func TestStreamWaitsForResetHandlers(t *testing.T) {
	release := make(chan struct{})
	addr, l := serveWith(t, &h2serve.Server{MaxConcurrentStreams: 2, DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
				return
			}
			io.WriteString(w, "served")
		})})
	base := goleak.IgnoreCurrent()
	c := dialRaw(t, addr)
	for _, id := range []uint32{1, 3} {
		if err := c.open(id, "/slow", true); err != nil {
			t.Fatal(err)
		}
		if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.open(5, "/fast", true); err != nil {
		t.Fatal(err)
	}
	// PING round trip: every frame above was handled.
	if err := c.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(*http2.HeadersFrame); ok {
			t.Fatal("stream 5 was answered while two handlers ran")
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	close(release)
	var body []byte
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 5 {
			body = append(body, d.Data()...)
			if d.StreamEnded() {
				break
			}
		}
	}
	if string(body) != "served" {
		t.Fatalf("stream 5: %q", body)
	}
	c.tc.Close()
	waitNoConns(t, l, base)
}

// Floods of frames that carry no request (CVE-2019-9512, -9515, -9518 and
// kin) end in GOAWAY ENHANCE_YOUR_CALM, also when the client does not
// read what they make us write.
func TestControlFrameFloods(t *testing.T) {
	floods := map[string]func(c *rawClient, i int) error{
		"PING": func(c *rawClient, i int) error { return c.fr.WritePing(false, [8]byte{byte(i)}) },
		"SETTINGS": func(c *rawClient, i int) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		},
		"PRIORITY": func(c *rawClient, i int) error {
			return c.fr.WritePriority(uint32(2*i+101), http2.PriorityParam{StreamDep: 0, Weight: 15})
		},
		"RST_STREAM": func(c *rawClient, i int) error { return c.fr.WriteRSTStream(1, http2.ErrCodeCancel) },
		"empty DATA": func(c *rawClient, i int) error { return c.fr.WriteData(3, false, nil) },
		"padding-only DATA": func(c *rawClient, i int) error {
			return c.fr.WriteDataPadded(3, false, nil, make([]byte, 8))
		},
	}
	for name, frame := range floods {
		t.Run(name, func(t *testing.T) {
			block := make(chan struct{})
			addr, l := serveWith(t, &h2serve.Server{DrainTimeout: 2 * time.Second,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/upload" {
						select { // a request body that never ends
						case <-r.Context().Done():
						case <-block:
						}
					}
				})})
			defer close(block)
			base := goleak.IgnoreCurrent()
			c := dialRaw(t, addr)
			// Stream 1: done (RST_STREAM on it is allowed); stream 3: an
			// open upload, for the DATA frames.
			if err := c.open(1, "/", true); err != nil {
				t.Fatal(err)
			}
			if err := c.open(3, "/upload", false); err != nil {
				t.Fatal(err)
			}
			// Written without reading anything: what the server answers
			// must not pile up in its memory.
			for i := range 20000 {
				if err := frame(c, i); err != nil {
					break // the server closed the connection
				}
			}
			if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
			}
			waitNoConns(t, l, base)
		})
	}
}

// A CONTINUATION flood (CVE-2024-27316 and kin): a header block that
// never ends, in empty CONTINUATION frames that no size limit catches,
// ends in GOAWAY ENHANCE_YOUR_CALM.
func TestContinuationFlood(t *testing.T) {
	addr, l := serveWith(t, &h2serve.Server{DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	base := goleak.IgnoreCurrent()
	c := dialRaw(t, addr)
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.headerBlock("/"), EndStream: true}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 100000 {
			if c.fr.WriteContinuation(1, false, nil) != nil {
				return
			}
		}
	}()
	if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	waitNoConns(t, l, base)
}

// A header block over MaxHeaderListSize in many CONTINUATION frames is not
// decoded past the limit: the connection ends (x/net's framer) rather than
// buffering it.
func TestContinuationOverHeaderListSize(t *testing.T) {
	addr, l := serveWith(t, &h2serve.Server{MaxHeaderListSize: 4 << 10, DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	base := goleak.IgnoreCurrent()
	c := dialRaw(t, addr)
	c.hbuf.Reset()
	c.headerBlock("/")
	for i := range 2000 {
		c.enc.WriteField(hpack.HeaderField{Name: "x-pad", Value: string(rune('a'+i%26)) + "0123456789012345678901234567890123456789"})
	}
	block := c.hbuf.Bytes()
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:1000], EndStream: true}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for rest := block[1000:]; len(rest) > 0; {
			n := min(len(rest), 1000)
			if c.fr.WriteContinuation(1, n == len(rest), rest[:n]) != nil {
				return
			}
			rest = rest[n:]
		}
	}()
	if code := c.goAway(); code != http2.ErrCodeProtocol && code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR or ENHANCE_YOUR_CALM", code)
	}
	waitNoConns(t, l, base)
}

// A client that keeps its windows at zero holds a handler's write only
// until the handler's write deadline: the stream is then reset, the
// connection goes on (a passed deadline once broke the whole connection),
// and once the client leaves nothing is left.
func TestZeroWindowEndsAtWriteDeadline(t *testing.T) {
	wrote := make(chan error, 1)
	addr, l := serveWith(t, &h2serve.Server{DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			_ = rc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			w.WriteHeader(200)
			_ = rc.Flush()
			_, err := w.Write(bytes.Repeat([]byte("x"), 100<<10))
			wrote <- err
		})})
	base := goleak.IgnoreCurrent()
	c := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if err := c.open(1, "/", true); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatal("DATA beyond a zero window")
		}
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			if r.StreamID != 1 || r.ErrCode != http2.ErrCodeCancel {
				t.Fatalf("RST_STREAM %d %v, want 1 CANCEL", r.StreamID, r.ErrCode)
			}
			break
		}
	}
	if err := <-wrote; err == nil {
		t.Fatal("the write into a zero window succeeded")
	}
	if err := c.fr.WritePing(false, [8]byte{7}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("the connection ended with the stream: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	c.tc.Close()
	waitNoConns(t, l, base)
}
