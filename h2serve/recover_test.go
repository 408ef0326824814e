package h2serve_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/h2serve"
)

// panicLog collects what the server logs.
type panicLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *panicLog) log(msg string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg+": "+err.Error())
}

func (l *panicLog) find(sub string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return s
		}
	}
	return ""
}

// A panic on the connection's frame reader (here an OnGone callback, run
// when the client resets a detached stream) ends that connection only,
// logged with its stack; the process and the other connections go on.
func TestPanicOnFrameReaderClosesOneConnection(t *testing.T) {
	var logs panicLog
	ready := make(chan struct{}) // OnGone is in place: the reset may come
	addr, l := serveWith(t, &h2serve.Server{ErrorLog: logs.log, DrainTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/boom" {
				io.WriteString(w, "ok")
				return
			}
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			d, err := h2serve.Detach(w)
			if err != nil {
				t.Error(err)
				return
			}
			d.OnGone(func() {
				d.Close(false)
				panic("OnGone exploded")
			})
			close(ready)
		})})
	boomClient, _ := h2Client(t)
	okClient, _ := h2Client(t)
	resp, err := okClient.Get("https://" + addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/boom", nil)
	resp, err = boomClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-ready
	cancel() // RST_STREAM: the reader runs OnGone
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for l.Server().Conns() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.Server().Conns(); n != 1 {
		t.Fatalf("%d connections after the panic, want the other one only", n)
	}
	line := logs.find("OnGone exploded")
	if line == "" || !strings.Contains(line, "goroutine ") || !strings.Contains(line, "recover_test.go") {
		t.Fatalf("the panic was not logged with its stack: %q", line)
	}
	// The other connection still serves.
	resp, err = okClient.Get("https://" + addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("the other connection answered %q", b)
	}
}

// A panic in ConnContext, before the connection's frame reader starts,
// loses that connection only.
func TestPanicInConnContext(t *testing.T) {
	var logs panicLog
	var n atomic.Int32
	addr, _ := serveWith(t, &h2serve.Server{ErrorLog: logs.log, DrainTimeout: 2 * time.Second,
		ConnContext: func(*tls.Conn) context.Context {
			if n.Add(1) == 1 {
				panic("ConnContext exploded")
			}
			return context.Background()
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })})
	first, _ := h2Client(t)
	if _, err := first.Get("https://" + addr + "/"); err == nil {
		t.Fatal("the connection whose ConnContext panicked answered")
	}
	if logs.find("ConnContext exploded") == "" {
		t.Fatal("the panic was not logged")
	}
	second, _ := h2Client(t)
	resp, err := second.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("got %q", b)
	}
}
