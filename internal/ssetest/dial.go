package ssetest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Stream is one event stream opened over a raw TCP connection: far lighter
// than net/http's client, so a test can hold thousands at once.
type Stream struct {
	Conn     net.Conn
	Response *http.Response
	*Reader
}

// Dial opens GET path on addr (host:port) with the given extra header lines
// ("Last-Event-ID: x"), and reads the response head. The body is read
// through the embedded Reader (chunked encoding undone by net/http).
func Dial(addr, path string, headers ...string) (*Stream, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", path, addr)
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write([]byte(req.String())); err != nil {
		conn.Close()
		return nil, fmt.Errorf("writing request: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading response head: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &Stream{Conn: conn, Response: resp, Reader: NewReader(resp.Body)}, nil
}

// ReadToEnd reads the body, bypassing the Reader, for up to wait and
// returns what came and whether the body ended cleanly in that time: what
// a subscriber turned away with a retry hint sees, where a live stream
// stays open.
func (s *Stream) ReadToEnd(wait time.Duration) (body []byte, ended bool) {
	_ = s.Conn.SetReadDeadline(time.Now().Add(wait))
	defer s.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck
	body, err := io.ReadAll(s.Response.Body)
	return body, err == nil
}

// Close closes the connection.
func (s *Stream) Close() error { return s.Conn.Close() }
