package browser_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// The demo as shipped (examples/Caddyfile and examples/site), on free ports:
// the page shows events with ids and types, a reconnection with the
// Last-Event-ID the browser sent, a reset, the close (after which it stops
// reconnecting), wrapped curl lines, and links to the inspector.
func TestDemoPage(t *testing.T) {
	b := newBrowser(t)
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	adminAddr, siteAddr := fmt.Sprintf("127.0.0.1:%d", adminPort), fmt.Sprintf("127.0.0.1:%d", port)
	onPorts := strings.NewReplacer("127.0.0.1:2019", adminAddr, "localhost:2019", fmt.Sprintf("localhost:%d", adminPort), "127.0.0.1:8080", siteAddr)

	caddyfile, err := os.ReadFile(filepath.Join("..", "examples", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join("..", "examples", "site", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte(onPorts.Replace(string(page))), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSE_DEMO_ROOT", root)
	testcaddy.Load(t, onPorts.Replace(string(caddyfile)))
	s := &server{t: t, port: port, origin: "http://" + siteAddr, client: &http.Client{Timeout: 10 * time.Second}}

	b.open(s.origin + "/")
	b.waitUntil("the stream open", `document.getElementById('state').textContent === 'open'`)
	topic := b.evalString(`document.getElementById('topic').value`)
	if !strings.HasPrefix(topic, "/events/demo-") {
		t.Fatalf("topic %q is not a fresh demo topic", topic)
	}

	// An event published from the page, with a type, shows its id and type.
	b.do(`document.getElementById('etype').value = 'progress'`)
	b.do(`document.getElementById('edata').value = '50%'`)
	b.do(`document.getElementById('publish').click()`)
	b.waitUntil("the typed event", `[...document.querySelectorAll('#log tr.event')].some(r => r.cells[3].textContent === 'progress' && r.cells[4].textContent === '50%' && r.cells[2].textContent !== '')`)
	id := s.publishAs(topic, "from curl", "demo-token")
	b.waitUntil("the event from curl", `document.getElementById('lastid').textContent === `+jsString(id))

	// Dropped through the admin API: the browser reconnects and says which
	// id it sent. Meanwhile the history (100 events) moves past it: reset.
	b.do(`document.getElementById('kick').click()`)
	b.waitUntil("the drop", `document.querySelector('#log tr.error') !== null`)
	for i := range 105 {
		s.publishAs(topic, fmt.Sprintf("burst %d", i), "demo-token")
	}
	b.waitUntil("the reconnection", `document.getElementById('reconnects').textContent === '1'`)
	b.waitUntil("the reset", `document.querySelector('#log tr.reset') !== null`)
	if got := b.evalString(`document.querySelector('#log tr.open').innerText`); !strings.Contains(got, "Last-Event-ID: "+id) {
		t.Errorf("reconnection row %q does not name the id sent, %s", got, id)
	}
	if got := b.evalString(`document.querySelector('#log tr.reset').innerText`); !strings.Contains(got, "could not resume exactly after "+id) || !strings.Contains(got, "older than the history") {
		t.Errorf("reset row %q", got)
	}
	sent := ""
	b.mu.Lock()
	for _, e := range b.extra {
		if v := header(e.Headers, "Last-Event-ID"); v != "" {
			sent = v
		}
	}
	b.mu.Unlock()
	if sent != id {
		t.Errorf("the browser sent Last-Event-ID %q, want %q", sent, id)
	}

	b.screenshot(filepath.Join("..", "docs", "demo.png"))

	// The curl lines wrap instead of being cut off.
	if n := b.evalInt(`[...document.querySelectorAll('pre')].filter(p => p.scrollWidth > p.clientWidth + 1).length`); n != 0 {
		t.Errorf("%d curl lines overflow their box", n)
	}
	if got := b.evalString(`document.getElementById('curl-publish').textContent`); !strings.Contains(got, s.origin+topic) {
		t.Errorf("curl line %q does not name the topic", got)
	}

	// Closed: rendered, and the page stops reconnecting.
	b.do(`document.getElementById('close').click()`)
	b.waitUntil("the close", `document.querySelector('#log tr.close') !== null && document.getElementById('state').textContent === 'closed'`)
	before := b.requestsFor(topic + "?lastEventId")
	time.Sleep(4 * time.Second) // past the retry delay
	if after := b.requestsFor(topic + "?lastEventId"); after != before {
		t.Errorf("the page reconnected after close: %d requests, then %d", before, after)
	}

	// The inspector link opens the inspector (the demo allows its origin).
	b.do(`document.getElementById('inspector').click()`)
	b.waitUntil("the inspector", `document.title === 'caddy-sse inspector' && document.querySelector('#topics tr[data-topic]') !== null`)
}

// publishAs publishes one event with token and returns its id.
func (s *server) publishAs(topic, data, token string) string {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.origin+topic, strings.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct{ IDs []string }
	if resp.StatusCode != http.StatusOK || decodeJSON(resp, &res) != nil || len(res.IDs) != 1 {
		s.t.Fatalf("publish answered %s", resp.Status)
	}
	return res.IDs[0]
}

func decodeJSON(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return strconv.Quote(s) }
