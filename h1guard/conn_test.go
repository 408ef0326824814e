package h1guard_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/h1guard"
	"github.com/ssegate/caddy-sse/internal/sitetest"
)

func TestMain(m *testing.M) { os.Exit(sitetest.RunChecked(m)) }

// server is a net/http server behind the guard that answers each request
// with "ok <method> <path> <body>" and records what it served.
type server struct {
	addr    string
	refused atomic.Int32
	mu      sync.Mutex
	served  []string
}

func startServer(t *testing.T, handler http.HandlerFunc) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String()}
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			line := fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, body)
			s.mu.Lock()
			s.served = append(s.served, line)
			s.mu.Unlock()
			fmt.Fprintf(w, "ok %s", line)
		}
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(h1guard.Listener(ln, func(net.Addr) { s.refused.Add(1) }))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

func (s *server) servedList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.served...)
}

// exchange writes raw to a new connection, closes its writing side, and
// returns everything the server sends until it closes.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, got)
	}
	return string(got)
}

// readResponses parses the HTTP responses in raw, returning status and
// body of each, and what follows the last one.
func readResponses(t *testing.T, raw string) (answers []string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return answers
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("parsing %q: %v", raw, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading a body in %q: %v", raw, err)
		}
		answers = append(answers, fmt.Sprintf("%d close=%v|%s", resp.StatusCode, resp.Close, body))
	}
}

// A smuggling attempt pipelined after a valid request: the valid request
// is served and answered first, the one with both Content-Length and
// Transfer-Encoding gets the refusal and the connection closes, and the
// request hidden in its body never reaches the handler.
func TestPipelinedSmugglingIsRefusedInTurn(t *testing.T) {
	s := startServer(t, nil)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	raw := "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\n" + smuggled
	got := exchange(t, s.addr, raw)
	if !strings.HasSuffix(got, h1guard.Refusal) {
		t.Fatalf("answer %q does not end with the refusal", got)
	}
	answers := readResponses(t, got)
	want := []string{"200 close=false|ok POST /first hello", "400 close=true|request has both Content-Length and Transfer-Encoding\r\n"}
	if fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Fatalf("answers %q, want %q", answers, want)
	}
	if served := s.servedList(); len(served) != 1 || served[0] != "POST /first hello" {
		t.Fatalf("served %q, want only the first request", served)
	}
	if n := s.refused.Load(); n != 1 {
		t.Fatalf("%d refusals reported, want 1", n)
	}
}

// A refused request alone on its connection: the refusal, then the end
// of the connection, even when the client goes on sending.
func TestRefusalClosesTheConnection(t *testing.T) {
	s := startServer(t, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
	got, err := io.ReadAll(c)
	if err != nil || string(got) != h1guard.Refusal {
		t.Fatalf("got %q, %v; want the refusal then EOF", got, err)
	}
	if served := s.servedList(); len(served) != 0 {
		t.Fatalf("served %q", served)
	}
}

// Ordinary traffic through the guard is served as without it: keep-alive
// requests with Content-Length and chunked bodies, over one connection.
func TestOrdinaryRequestsPassThrough(t *testing.T) {
	s := startServer(t, nil)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 5 {
		body := io.Reader(strings.NewReader(fmt.Sprint("body", i)))
		if i%2 == 1 {
			body = io.MultiReader(body) // unknown length: sent chunked
		}
		resp, err := client.Post("http://"+s.addr+fmt.Sprint("/p", i), "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("ok POST /p%d body%d", i, i); string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if n := s.refused.Load(); n != 0 {
		t.Fatalf("%d refusals", n)
	}
}

// After a 101 the connection carries another protocol: bytes that look
// like a request to refuse reach the handler that took the connection.
func TestSwitchedConnectionIsNotInspected(t *testing.T) {
	got := make(chan string, 1)
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(brw)
		got <- string(b)
	})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	inner := "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nafter"
	fmt.Fprint(c, inner)
	_ = c.(*net.TCPConn).CloseWrite()
	if b := <-got; b != inner {
		t.Fatalf("the upgraded handler read %q, want %q", b, inner)
	}
	if n := s.refused.Load(); n != 0 {
		t.Fatalf("%d refusals", n)
	}
}

// An Upgrade or CONNECT the server does not accept leaves the connection
// HTTP/1, and inspected: a later 2xx to another request does not end the
// inspection, and a smuggling attempt after them is refused.
func TestRefusedSwitchKeepsInspecting(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			http.Error(w, "no tunnels", http.StatusMethodNotAllowed)
			return
		}
		fmt.Fprint(w, "ok")
	})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, req := range []string{
		"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		fmt.Fprint(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fmt.Fprint(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	got, err := io.ReadAll(br)
	if err != nil || string(got) != h1guard.Refusal {
		t.Fatalf("got %q, %v; want the refusal then EOF", got, err)
	}
}

// What the guard leaves to net/http, net/http refuses itself and closes
// the connection: differing Content-Length values (400), a
// Transfer-Encoding other than chunked (501).
func TestNetHTTPRefusesWhatTheGuardLeaves(t *testing.T) {
	s := startServer(t, nil)
	for _, c := range []struct{ raw, status string }{
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400 "},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501 "},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 501 "},
	} {
		got := exchange(t, s.addr, c.raw+"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
		if !strings.HasPrefix(got, c.status) || !strings.Contains(got, "Connection: close") || strings.Contains(got, "/after") {
			t.Errorf("%q: answered %q, want %s with Connection: close and nothing after", c.raw, got, c.status)
		}
	}
	if served := s.servedList(); len(served) != 0 {
		t.Fatalf("served %q", served)
	}
}
