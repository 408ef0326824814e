package integration_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
	"github.com/ssegate/caddy-sse/internal/testcert"
)

// h3Site is an HTTPS site serving HTTP/3 (UDP on the site's port) besides
// HTTP/1.1 and HTTP/2.
type h3Site struct {
	port         int
	cert, key    string
	heartbeat    string
	writeTimeout string
}

func (s h3Site) caddyfile() string {
	return fmt.Sprintf(`{
	admin ADMIN
	auto_https off
	servers {
		protocols h1 h2 h3
	}
}

https://127.0.0.1:%d {
	tls %s %s
	sse /h3/* {
		heartbeat %s
		write_timeout %s
		drain_window 1s
		retry 100ms
		publish {
			bearer h3-token
		}
	}
}
`, s.port, s.cert, s.key, s.heartbeat, s.writeTimeout)
}

// h3Client is one browser-like HTTP/3 client: one QUIC connection to the
// site, reused for its requests.
type h3Client struct {
	tr     *http3.Transport
	client *http.Client
}

func newH3Client(conf *quic.Config) *h3Client {
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own certificate
		QUICConfig:      conf,
	}
	return &h3Client{tr: tr, client: &http.Client{Transport: tr}}
}

func (c *h3Client) Close() { _ = c.tr.Close() }

// h3Stream reads an event stream received over HTTP/3 with the WHATWG
// parser of every other test.
type h3Stream struct {
	resp   *http.Response
	cancel context.CancelFunc
	p      *ssetest.Parser
	events []ssetest.Event
	raw    []byte // every byte of the body so far
	buf    []byte
	ended  bool  // the body ended cleanly (EOF)
	err    error // the body ended with an error
}

// subscribe opens path over HTTP/3; the caller closes the stream.
func (c *h3Client) subscribe(t *testing.T, port int, path string, headers ...string) *h3Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if err := sitetest.AddHeaders(req.Header, headers); err != nil {
		t.Fatal(err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s over HTTP/3: %v", path, err)
	}
	if resp.ProtoMajor != 3 {
		t.Fatalf("GET %s: answered over %s, want HTTP/3", path, resp.Proto)
	}
	return &h3Stream{resp: resp, cancel: cancel, p: ssetest.NewParser(), buf: make([]byte, 32<<10)}
}

func (s *h3Stream) Close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

// readUntil reads until cond holds, the stream ends, or wait passes (which
// abandons the stream); it reports whether cond held.
func (s *h3Stream) readUntil(wait time.Duration, cond func() bool) bool {
	timer := time.AfterFunc(wait, s.cancel)
	defer timer.Stop()
	for !cond() {
		if s.ended || s.err != nil {
			return false
		}
		n, err := s.resp.Body.Read(s.buf)
		s.raw = append(s.raw, s.buf[:n]...)
		s.events = append(s.events, s.p.Feed(s.buf[:n])...)
		switch {
		case errors.Is(err, io.EOF):
			s.ended = true
		case err != nil:
			s.err = err
		}
	}
	return true
}

// data returns the data of the events received since index from.
func (s *h3Stream) data(from int) []string {
	var out []string
	for _, e := range s.events[from:] {
		out = append(out, e.Type+":"+e.Data)
	}
	return out
}

func h3Publish(t *testing.T, client *http.Client, port int, path, data string) string {
	t.Helper()
	res, err := sitetest.Publish(client, http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), data, "Authorization: Bearer h3-token")
	if err != nil {
		t.Fatal(err)
	}
	id, err := res.OneID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func messages(data ...string) []string {
	var out []string
	for _, d := range data {
		out = append(out, "message:"+d)
	}
	return out
}

// Every delivery guarantee of HTTP/1.1 holds over HTTP/3 through a real
// Caddy: events in order with their ids, heartbeats, an exact resume after
// a dropped connection, a clean end and an exact resume across a reload,
// and a closed topic that ends the stream and answers 204 afterwards.
func TestHTTP3KeepsTheDeliveryGuarantees(t *testing.T) {
	dir := t.TempDir()
	cert, key := testcert.Write(t, dir)
	site := h3Site{port: testcaddy.FreePort(t), cert: cert, key: key, heartbeat: "200ms", writeTimeout: "5s"}
	p := testcaddy.Start(t, site.caddyfile())
	port := site.port
	pub := &http.Client{Timeout: 10 * time.Second, Transport: testcaddy.InsecureTransport()}
	defer pub.CloseIdleConnections()
	const path = "/h3/guarantees"
	const wait = 10 * time.Second

	c := newH3Client(nil)
	defer c.Close()
	s := c.subscribe(t, port, path)
	if s.resp.StatusCode != http.StatusOK || s.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("subscribe answered %s, Content-Type %q", s.resp.Status, s.resp.Header.Get("Content-Type"))
	}

	// Events in order, each with its publish's id.
	var ids []string
	for i := range 5 {
		ids = append(ids, h3Publish(t, pub, port, path, "e"+strconv.Itoa(i)))
	}
	if !s.readUntil(wait, func() bool { return len(s.events) >= 5 }) {
		t.Fatalf("got %q before the stream ended (%v), want 5 events", s.data(0), s.err)
	}
	if got, want := s.data(0), messages("e0", "e1", "e2", "e3", "e4"); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i, e := range s.events {
		if e.ID != ids[i] {
			t.Fatalf("event %d has id %q, want its publish's %q", i, e.ID, ids[i])
		}
	}

	// Heartbeats arrive on a quiet stream.
	if !s.readUntil(wait, func() bool { return s.p.Comments >= 2 }) {
		t.Fatalf("no heartbeats on a quiet HTTP/3 stream (comments: %d, err %v)", s.p.Comments, s.err)
	}

	// The connection drops; what was published meanwhile comes back
	// exactly on a new connection resuming with Last-Event-ID.
	last := s.events[len(s.events)-1].ID
	s.Close()
	c.Close()
	for _, d := range []string{"m0", "m1", "m2"} {
		h3Publish(t, pub, port, path, d)
	}
	c = newH3Client(nil)
	defer c.Close()
	s = c.subscribe(t, port, path, "Last-Event-ID: "+last)
	h3Publish(t, pub, port, path, "live")
	if !s.readUntil(wait, func() bool { return len(s.events) >= 4 }) {
		t.Fatalf("after resuming got %q (%v), want 4 events", s.data(0), s.err)
	}
	if got, want := s.data(0), messages("m0", "m1", "m2", "live"); !slices.Equal(got, want) {
		t.Fatalf("after resuming got %q, want %q: a gap or a duplicate", got, want)
	}

	// A reload ends the stream cleanly within the drain window, with a
	// retry hint; resuming on the same client misses nothing.
	last = s.events[len(s.events)-1].ID
	n, rawAtReload := len(s.events), len(s.raw)
	site.heartbeat = "250ms" // a changed config, so that the reload is real
	if err := p.Reload(site.caddyfile()); err != nil {
		t.Fatal(err)
	}
	if s.readUntil(wait, func() bool { return false }); !s.ended {
		t.Fatalf("after a reload the HTTP/3 stream ended with %v, want a clean end", s.err)
	}
	// The drain's closing hint: retry (100ms) plus up to 5 s of jitter.
	if tail := s.raw[rawAtReload:]; !strings.Contains("\n"+string(tail), "\nretry:") || s.p.Retry < 100 || s.p.Retry > 5100 {
		t.Fatalf("the drained stream ended with %q (retry %d), want a closing retry hint between 100 and 5100 ms", tail, s.p.Retry)
	}
	if got := s.data(n); len(got) != 0 {
		t.Fatalf("the drained stream delivered %q after the reload, want nothing", got)
	}
	h3Publish(t, pub, port, path, "after-reload")
	s2 := c.subscribe(t, port, path, "Last-Event-ID: "+last)
	defer s2.Close()
	if !s2.readUntil(wait, func() bool { return len(s2.events) >= 1 }) {
		t.Fatalf("after the reload got %q (%v), want 1 event", s2.data(0), s2.err)
	}
	if got, want := s2.data(0), messages("after-reload"); !slices.Equal(got, want) {
		t.Fatalf("after the reload got %q, want %q", got, want)
	}

	// Closing the topic sends close and ends the stream; a reconnect with
	// the last id gets 204, which stops EventSource.
	if _, err := sitetest.Publish(pub, http.MethodDelete, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), "", "Authorization: Bearer h3-token"); err != nil {
		t.Fatal(err)
	}
	if s2.readUntil(wait, func() bool { return false }); !s2.ended {
		t.Fatalf("closing the topic ended the HTTP/3 stream with %v, want a clean end", s2.err)
	}
	if got, want := s2.data(0), append(messages("after-reload"), `close:{"reason":"topic closed"}`); !slices.Equal(got, want) {
		t.Fatalf("closing the topic: got %q, want %q", got, want)
	}
	s3 := c.subscribe(t, port, path, "Last-Event-ID: "+s2.events[len(s2.events)-1].ID)
	defer s3.Close()
	if s3.resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reconnecting to the closed topic answered %s, want 204", s3.resp.Status)
	}
}

// A subscriber over HTTP/3 that stops reading (its stream's flow-control
// window fills) is cut off after write_timeout and counted as a slow
// consumer, as over HTTP/1.1; a subscriber that reads is not held back.
func TestHTTP3SlowConsumerIsCutOffAfterWriteTimeout(t *testing.T) {
	dir := t.TempDir()
	cert, key := testcert.Write(t, dir)
	site := h3Site{port: testcaddy.FreePort(t), cert: cert, key: key, heartbeat: "off", writeTimeout: "1s"}
	p := testcaddy.Start(t, site.caddyfile())
	port := site.port
	_, adminPortText, _ := strings.Cut(p.Admin, ":")
	adminPort, err := strconv.Atoi(adminPortText)
	if err != nil {
		t.Fatal(err)
	}
	pub := &http.Client{Timeout: 10 * time.Second, Transport: testcaddy.InsecureTransport()}
	defer pub.CloseIdleConnections()
	const path = "/h3/slow"

	// A small stream window: the server can send 16 KiB it has not
	// read; the rest waits for the reader, who never reads.
	slow := newH3Client(&quic.Config{InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10})
	defer slow.Close()
	stalled := slow.subscribe(t, port, path)
	defer stalled.Close()
	fast := newH3Client(nil)
	defer fast.Close()
	reader := fast.subscribe(t, port, path)
	defer reader.Close()

	before := sitetest.Scrape(t, adminPort)["caddy_sse_slow_consumer_disconnects_total"]
	pad := strings.Repeat("p", 4<<10)
	const n = 64 // 256 KiB: 16 times the stalled stream's window
	for i := range n {
		h3Publish(t, pub, port, path, strconv.Itoa(i)+" "+pad)
	}
	if !reader.readUntil(10*time.Second, func() bool { return len(reader.events) >= n }) {
		t.Fatalf("the reading subscriber got %d of %d events (%v)", len(reader.events), n, reader.err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for sitetest.Scrape(t, adminPort)["caddy_sse_slow_consumer_disconnects_total"]-before < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the stalled HTTP/3 subscriber was not cut off within 30 s of a 1 s write_timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Reading again, the stalled client finds its stream ended (reset or
	// finished) short of the events it never took.
	stalled.readUntil(10*time.Second, func() bool { return false })
	if !stalled.ended && stalled.err == nil {
		t.Fatal("the cut-off stream did not end")
	}
	if errors.Is(stalled.err, context.Canceled) {
		t.Fatalf("the cut-off stream was still open after 10 s (%d events read)", len(stalled.events))
	}
	if len(stalled.events) >= n {
		t.Fatalf("the stalled subscriber got all %d events: it was not cut off", n)
	}
	t.Logf("stalled HTTP/3 subscriber: %d of %d events, then the stream ended (clean end: %v, error: %v)", len(stalled.events), n, stalled.ended, stalled.err)
}
