package caddysse_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ssegate/caddy-sse/internal/ssetest"
)

// publishResult is the JSON a successful publish answers.
type publishResult struct {
	Topic     string   `json:"topic"`
	IDs       []string `json:"ids"`
	Duplicate bool     `json:"duplicate"`
}

// published is what a publish answered: status, headers and body, and the
// JSON result when the status is 200.
type published struct {
	status int
	header http.Header
	body   string
	publishResult
}

// sendPublish sends data to url with method (POST, or DELETE to end the
// topic) and headers given as "Name: value", and reads the answer, parsing
// the JSON result of a 200. It fails on a transport error or on a 200 whose
// body is not the JSON result; it takes no testing.T, so that goroutines
// (and publishers that expect failures) can use it.
func sendPublish(client *http.Client, method, url, data string, headers ...string) (published, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(data))
	if err != nil {
		return published{}, err
	}
	if err := addHeaders(req.Header, headers); err != nil {
		return published{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return published{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return published{}, fmt.Errorf("reading the answer: %w", err)
	}
	p := published{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if p.status == http.StatusOK {
		if err := json.Unmarshal(body, &p.publishResult); err != nil {
			return p, fmt.Errorf("publish answered %q, not the JSON result: %v", body, err)
		}
	}
	return p, nil
}

// oneID returns the id of a publish of one event, or an error saying what
// was answered instead.
func (p published) oneID() (string, error) {
	if p.status != http.StatusOK {
		return "", fmt.Errorf("publish answered %d: %s", p.status, p.body)
	}
	if len(p.IDs) != 1 || p.IDs[0] == "" {
		return "", fmt.Errorf("publish answered ids %q, want one", p.IDs)
	}
	return p.IDs[0], nil
}

// addHeaders sets headers given as "Name: value".
func addHeaders(h http.Header, headers []string) error {
	for _, line := range headers {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("header %q is not Name: value", line)
		}
		h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return nil
}

// adminMetrics returns what the admin endpoint on adminPort serves at
// /metrics.
func adminMetrics(t *testing.T, adminPort int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// dialStream subscribes to path on addr, failing the test unless it gets a
// stream; the stream closes when the test ends.
func dialStream(t *testing.T, addr, path string, headers ...string) *ssetest.Stream {
	t.Helper()
	s, err := ssetest.Dial(addr, path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Response.StatusCode != http.StatusOK {
		t.Fatalf("GET %s%s: %s", addr, path, s.Response.Status)
	}
	return s
}
