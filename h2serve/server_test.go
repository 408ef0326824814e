package h2serve_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ssegate/caddy-sse/h2serve"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/testcert"
)

func TestMain(m *testing.M) { os.Exit(sitetest.RunChecked(m)) }

// serve starts a Listener over a TLS listener with h, and an HTTP/1.1
// server on the connections it passes on.
func serve(t *testing.T, h http.Handler) (addr string, l *h2serve.Listener) {
	t.Helper()
	return serveWith(t, &h2serve.Server{Handler: h, DrainTimeout: 2 * time.Second})
}

// serveWith is serve with a server of the test's own.
func serveWith(t *testing.T, srv *h2serve.Server) (addr string, l *h2serve.Listener) {
	t.Helper()
	h := srv.Handler
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{testcert.Certificate(t)}, NextProtos: []string{"h2", "http/1.1"}}
	l = h2serve.NewListener(tls.NewListener(raw, cfg), srv)
	h1 := &http.Server{Handler: h, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	done := make(chan struct{})
	go func() { defer close(done); _ = h1.Serve(l) }()
	t.Cleanup(func() {
		l.Close()
		_ = h1.Close()
		<-done
		deadline := time.Now().Add(5 * time.Second)
		for l.Server().Conns() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	})
	return raw.Addr().String(), l
}

func h2Client(t *testing.T) (*http.Client, *http2.Transport) {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

func TestRequestsAndBodies(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%s %s %s tls=%v len=%d body=%s", r.Proto, r.Method, r.Host, r.TLS != nil, r.ContentLength, b)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 300<<10)))
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("body"))
			w.Header().Set("X-Sum", "42")
		}
	}))
	client, _ := h2Client(t)
	resp, err := client.Post("https://"+addr+"/echo", "text/plain", strings.NewReader(strings.Repeat("b", 200<<10)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("HTTP/2.0 POST %s tls=true len=%d body=%s", addr, 200<<10, strings.Repeat("b", 200<<10))
	if string(got) != want {
		t.Fatalf("echo: got %.80q…", got)
	}
	resp, err = client.Get("https://" + addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 300<<10 || resp.ProtoMajor != 2 {
		t.Fatalf("big: %d bytes over %s", len(got), resp.Proto)
	}
	resp, err = client.Get("https://" + addr + "/trailer")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer: %q %v", got, resp.Trailer)
	}
	resp, err = client.Get("https://" + addr + "/echo")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if cl := resp.Header.Get("Content-Length"); cl == "" {
		t.Fatalf("a small response has no Content-Length: %v", resp.Header)
	}
}

// An HTTP/1.1 client on the same listener is handed to net/http.
func TestHTTP1PassesThrough(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
	}))
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "HTTP/1.1 tls=true" {
		t.Fatalf("got %q", got)
	}
}

// A stream the client resets ends its handler's request context, and the
// other streams of the connection go on.
func TestResetCancelsHandler(t *testing.T) {
	var ended atomic.Int32
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		for i := 0; ; i++ {
			select {
			case <-r.Context().Done():
				ended.Add(1)
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(w, "tick %d\n", i); err != nil {
				ended.Add(1)
				return
			}
			http.NewResponseController(w).Flush()
		}
	}))
	client, _ := h2Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/a", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	other, err := client.Get("https://" + addr + "/b")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "tick 0\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	cancel() // the client sends RST_STREAM
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for ended.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ended.Load() != 1 {
		t.Fatal("the reset stream's handler did not end")
	}
	obr := bufio.NewReader(other.Body)
	for range 3 {
		if _, err := obr.ReadString('\n'); err != nil {
			t.Fatalf("the other stream: %v", err)
		}
	}
	other.Body.Close()
}

// The client's flow control holds a writer back: with a window of 1
// byte, data goes out a byte at a time as the client opens it.
func TestFlowControlSmallWindow(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("z", 100<<10)))
	}))
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxReadFrameSize: 16384}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 100<<10 {
		t.Fatalf("got %d bytes", len(got))
	}
}

// Close sends GOAWAY: open streams finish, then the connection closes.
func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	addr, l := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		<-release
		w.Write([]byte("done"))
	}))
	client, _ := h2Client(t)
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	time.Sleep(50 * time.Millisecond)
	if l.Server().Conns() != 1 {
		t.Fatal("the connection closed under its open stream")
	}
	close(release)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "done" || err != nil {
		t.Fatalf("got %q %v", got, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Server().Conns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.Server().Conns(); n != 0 {
		t.Fatalf("%d connections left after their streams ended", n)
	}
	if _, err := client.Get("https://" + addr + "/"); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("a request after Close: %v", err)
	}
}

// A response taken from its handler goes on after the handler returns:
// its owner writes the rest and ends it cleanly; a reset by the client
// is reported to it.
func TestDetachedStream(t *testing.T) {
	detached := make(chan *h2serve.Detached, 2)
	addr, l := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		d, err := h2serve.Detach(w)
		if err != nil {
			t.Error(err)
			return
		}
		detached <- d
	}))
	client, _ := h2Client(t)

	resp, err := client.Get("https://" + addr + "/clean")
	if err != nil {
		t.Fatal(err)
	}
	d := <-detached
	for i := range 3 {
		if err := d.Write([]byte(fmt.Sprintf("line %d\n", i)), time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	d.Close(true)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "line 0\nline 1\nline 2\n" {
		t.Fatalf("detached body: %q, %v", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/reset", nil)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	d = <-detached
	gone := make(chan struct{})
	d.OnGone(func() { close(gone) })
	cancel()
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("a reset of a detached stream was not reported")
	}
	if !d.Gone() {
		t.Fatal("Gone is false after the reset")
	}
	d.Close(false)
	if l.Server().Conns() != 1 {
		t.Fatalf("%d connections; the one connection serves both streams", l.Server().Conns())
	}
}

// A header list over MaxHeaderListSize is answered 431 (read with a raw
// framer: Go's client refuses to send it once it knows the limit), and the
// connection goes on.
func TestHeaderListTooLarge(t *testing.T) {
	addr, _ := serveWith(t, &h2serve.Server{MaxHeaderListSize: 4 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})})
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	request := func(id uint32, extra int) {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", addr}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for i := range extra {
			enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-h%d", i), Value: strings.Repeat("v", 500)})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(id uint32) string {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("reading the answer to stream %d: %v", id, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == id {
					return f.PseudoValue("status")
				}
			case *http2.GoAwayFrame:
				t.Fatalf("GOAWAY %v", f.ErrCode)
			}
		}
	}
	request(1, 12) // 12 fields of 500 bytes: over 4 KiB
	if got := status(1); got != "431" {
		t.Fatalf("status %s, want 431", got)
	}
	request(3, 1)
	if got := status(3); got != "200" {
		t.Fatalf("after the 431: status %s, want 200", got)
	}
}

// A connection without streams for IdleTimeout is closed.
func TestIdleConnectionCloses(t *testing.T) {
	addr, l := serveWith(t, &h2serve.Server{IdleTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})})
	client, _ := h2Client(t)
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := l.Server().Conns(); n != 1 {
		t.Fatalf("%d connections after a request, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Server().Conns() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection is still open")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A request that expects 100-continue gets it when the handler reads its
// body, and then the answer.
func TestExpectContinue(t *testing.T) {
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d bytes", len(b))
	}))
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "https://"+addr+"/", strings.NewReader(strings.Repeat("b", 1000)))
	req.Header.Set("Expect", "100-continue")
	var continued atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got100Continue: func() { continued.Store(true) },
	}))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "got 1000 bytes" || !continued.Load() {
		t.Fatalf("got %q, 100 Continue seen: %v", b, continued.Load())
	}
}
