package caddysse_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/h1guard"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// smuggleSite is a plain http:// site with an open publish, its admin
// endpoint on adminPort, and the sse listener wrapper when wrapped.
func smuggleSite(t *testing.T, wrapped bool) (s *site, adminPort int) {
	t.Helper()
	adminPort = testcaddy.FreePort(t)
	s = &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))}
	s.url = "http://" + s.addr
	tr := &http.Transport{DisableCompression: true}
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	wrappers := ""
	if wrapped {
		wrappers = "servers {\n\t\tlistener_wrappers {\n\t\t\tsse\n\t\t}\n\t}"
	}
	testcaddy.Load(t, testcaddy.Format(fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\t%s\n}\n\nhttp://%s {\n\tsse /t/* {%s\n\t}\n}\n",
		adminPort, wrappers, s.addr, openPublish)))
	t.Cleanup(tr.CloseIdleConnections)
	return s, adminPort
}

// smuggle sends, on one raw connection, a publish with both Content-Length
// and Transfer-Encoding whose body, framed by Content-Length as a front
// proxy would, hides a second publish of "smuggled"; read as chunked (as
// net/http does) the body ends early and the hidden publish is a request
// of its own. It returns all the server sent until it closed, or until
// quiet for a second.
func smuggle(t *testing.T, addr, path string) string {
	t.Helper()
	return smuggleAfter(t, addr, path, "")
}

// smuggleAfter is smuggle with before sent first on the same connection,
// in the same write (pipelined).
func smuggleAfter(t *testing.T, addr, path, before string) string {
	t.Helper()
	hidden := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 8\r\n\r\nsmuggled", path, addr)
	body := "0\r\n\r\n" + hidden
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%sPOST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s",
		before, path, addr, len(body), body)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	got, _ := io.ReadAll(c)
	return string(got)
}

// events reads the topic from its earliest event up to the one with data
// last, and returns the data of each.
func (s *site) eventData(path, last string) []string {
	s.t.Helper()
	st := s.subscribe(path + "?lastEventId=earliest")
	defer st.close()
	var data []string
	for {
		ev := st.next()
		data = append(data, ev.Data)
		if ev.Data == last {
			return data
		}
	}
}

// Through the sse listener wrapper on a plain HTTP server, a request with
// both Content-Length and Transfer-Encoding gets 400 with Connection:
// close and the connection ends; the publish hidden in its body never
// reaches the handler; the refusal is counted; ordinary publishes and
// subscribers on the same server are served.
func TestSmugglingIsRefusedByTheListenerWrapper(t *testing.T) {
	s, adminPort := smuggleSite(t, true)
	path := topic(t, "/t/", "x")
	before := sitetest.Scrape(t, adminPort)
	const series = `caddy_sse_requests_refused_total{reason="content_length_and_transfer_encoding"}`
	if _, ok := before[series]; !ok {
		t.Fatalf("no %s series before any refusal", series)
	}
	if got := smuggle(t, s.addr, path); got != h1guard.Refusal {
		t.Fatalf("answer %q, want the refusal then the end of the connection", got)
	}
	s.publishID(path, "after")
	if got := s.eventData(path, "after"); len(got) != 1 {
		t.Fatalf("the topic holds %q, want only the publish after the refusal", got)
	}
	if d := sitetest.Scrape(t, adminPort)[series] - before[series]; d != 1 {
		t.Fatalf("%s went up by %v, want 1", series, d)
	}

	// Pipelined after a valid publish on the same connection: the
	// publish is served and answered first, then the refusal.
	first := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nfirst", path, s.addr)
	got := smuggleAfter(t, s.addr, path, first)
	answer, refusal, ok := strings.Cut(got, "\r\n\r\n{")
	if !ok || !strings.HasPrefix(answer, "HTTP/1.1 200 ") || !strings.HasSuffix(refusal, "}\n"+h1guard.Refusal) {
		t.Fatalf("answers %q, want the publish's 200 then the refusal", got)
	}
	s.publishID(path, "last")
	if got := s.eventData(path, "last"); fmt.Sprint(got) != "[after first last]" {
		t.Fatalf("the topic holds %q, want after, first, last", got)
	}
}

// Without the wrapper Go's server reads the same request as chunked (the
// handler cannot see its Content-Length), so it is answered, but with
// Connection: close: the publish hidden behind it is never read.
func TestSmugglingWithoutTheListenerWrapperReadsNothingBehindIt(t *testing.T) {
	s, _ := smuggleSite(t, false)
	path := topic(t, "/t/", "x")
	got := smuggle(t, s.addr, path)
	head, _, _ := strings.Cut(got, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 ") || !strings.Contains(head, "\r\nConnection: close") {
		t.Fatalf("answer %q, want one answer with Connection: close", got)
	}
	if n := strings.Count(got, "HTTP/1.1 "); n != 1 {
		t.Fatalf("%d answers on the connection, want 1: %q", n, got)
	}
	s.publishID(path, "after")
	if data := s.eventData(path, "after"); strings.Contains(strings.Join(data, ","), "smuggled") {
		t.Fatalf("the topic holds %q: the hidden publish was served", data)
	}
}

// A chunked publish (no Content-Length) is served, and the connection
// closes after its answer.
func TestChunkedPublishClosesTheConnection(t *testing.T) {
	s, _ := smuggleSite(t, false)
	path := topic(t, "/t/", "x")
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", path, s.addr)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	head, _, _ := strings.Cut(string(got), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 ") || !strings.Contains(head, "\r\nConnection: close") {
		t.Fatalf("answer %q, want 200 with Connection: close", got)
	}
	if data := s.eventData(path, "hello"); fmt.Sprint(data) != "[hello]" {
		t.Fatalf("the topic holds %q, want the chunked publish", data)
	}
}

// The wrapper steps aside from HTTP/2 without TLS (h2c, prior knowledge):
// a publish over it is served.
func TestListenerWrapperLetsH2CThrough(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Load(t, testcaddy.Format(fmt.Sprintf("{\n\tadmin off\n\tservers {\n\t\tprotocols h1 h2c\n\t\tlistener_wrappers {\n\t\t\tsse\n\t\t}\n\t}\n}\n\nhttp://%s {\n\tsse /t/* {%s\n\t}\n}\n",
		addr, openPublish)))
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	resp, err := client.Post("http://"+addr+topic(t, "/t/", "x"), "text/plain", strings.NewReader("over h2c"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("%s %s: %s", resp.Proto, resp.Status, body)
	}
}
