// Package sitetest is the client side of the tests that run a real Caddy
// with this module (in this process or as a child process): publishing,
// subscribing over a raw connection, and reading the admin endpoint's
// metrics. It takes no part in serving.
package sitetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"go.uber.org/goleak"
)

// Result is the JSON a successful publish answers.
type Result struct {
	Topic     string   `json:"topic"`
	IDs       []string `json:"ids"`
	Duplicate bool     `json:"duplicate"`
}

// Published is what a publish answered: status, headers and body, and the
// JSON result when the status is 200.
type Published struct {
	Status int
	Header http.Header
	Body   string
	Result
}

// Publish sends data to url with method (POST, or DELETE to end the topic)
// and headers given as "Name: value", and reads the answer, parsing the
// JSON result of a 200. It fails on a transport error or on a 200 whose
// body is not the JSON result; it takes no testing.T, so that goroutines
// (and publishers that expect failures) can use it.
func Publish(client *http.Client, method, url, data string, headers ...string) (Published, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(data))
	if err != nil {
		return Published{}, err
	}
	if err := AddHeaders(req.Header, headers); err != nil {
		return Published{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Published{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Published{}, fmt.Errorf("reading the answer: %w", err)
	}
	p := Published{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	if p.Status == http.StatusOK {
		if err := json.Unmarshal(body, &p.Result); err != nil {
			return p, fmt.Errorf("publish answered %q, not the JSON result: %v", body, err)
		}
	}
	return p, nil
}

// OneID returns the id of a publish of one event, or an error saying what
// was answered instead.
func (p Published) OneID() (string, error) {
	if p.Status != http.StatusOK {
		return "", fmt.Errorf("publish answered %d: %s", p.Status, p.Body)
	}
	if len(p.IDs) != 1 || p.IDs[0] == "" {
		return "", fmt.Errorf("publish answered ids %q, want one", p.IDs)
	}
	return p.IDs[0], nil
}

// AddHeaders sets headers given as "Name: value".
func AddHeaders(h http.Header, headers []string) error {
	for _, line := range headers {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("header %q is not Name: value", line)
		}
		h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return nil
}

// Do sends a request with headers given as "Name: value" and returns the
// answer's status and body (the admin API's routes, mostly).
func Do(t testing.TB, method, url, body string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := AddHeaders(req.Header, headers); err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// AdminTopicURL is the admin API's URL of topic on the admin endpoint
// admin, the name path-encoded.
func AdminTopicURL(admin, topic string) string {
	return admin + "/sse/topics/" + url.PathEscape(topic)
}

// NextEvent reads the stream's next event within wait, failing the test
// otherwise.
func NextEvent(t testing.TB, s *ssetest.Stream, wait time.Duration) ssetest.Event {
	t.Helper()
	_ = s.Conn.SetReadDeadline(time.Now().Add(wait))
	defer s.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck
	ev, err := s.Next()
	if err != nil {
		t.Fatalf("reading event: %v", err)
	}
	return ev
}

// WaitFor polls cond until it holds, failing the test after within.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DialStream subscribes to path on addr, failing the test unless it gets a
// stream; the stream closes when the test ends.
func DialStream(t testing.TB, addr, path string, headers ...string) *ssetest.Stream {
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

// AdminMetrics returns what the admin endpoint on adminPort serves at
// /metrics.
func AdminMetrics(t testing.TB, adminPort int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

var sampleLine = regexp.MustCompile(`^(caddy_sse_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$`)

// Scrape returns the module's metrics on the admin endpoint, by series
// (name with its labels, as exposed).
func Scrape(t testing.TB, adminPort int) map[string]float64 {
	t.Helper()
	body := AdminMetrics(t, adminPort)
	values := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if m := sampleLine.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			values[m[1]] = v
		}
	}
	if len(values) == 0 {
		t.Fatalf("no caddy_sse_ metrics on the admin endpoint:\n%.2000s", body)
	}
	return values
}

// RunChecked runs a test binary's tests and then fails it if they left
// goroutines behind (a stream, source or store that outlived its config):
// call it from TestMain as os.Exit(sitetest.RunChecked(m)).
func RunChecked(m *testing.M) int {
	before := goleak.IgnoreCurrent()
	code := m.Run()
	if code != 0 {
		return code
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if err := goleak.Find(before,
		// Caddy's storage cleaning takes a lock file in its data
		// directory, and certmagic refreshes it every 5s until the
		// refresher wakes to find it released: it may outlive the config
		// by up to 5s, holding nothing of ours.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	); err != nil {
		fmt.Fprintf(os.Stderr, "goroutines left behind by the tests:\n%v\n", err)
		return 1
	}
	return 0
}
