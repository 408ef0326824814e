package browser_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// openWithReferrer navigates to url as a link on referrer would. Caddy's
// admin endpoint refuses a browser request that carries neither Origin nor
// Referer (a URL typed into the address bar): the inspector is opened from
// a link, as the demo page has (see README).
func (b *browser) openWithReferrer(url, referrer string) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, page.Navigate, page.NavigateParams{URL: url, Referrer: referrer}); err != nil {
		b.t.Fatalf("opening %s: %v", url, err)
	}
	b.waitUntil("the page loaded", `location.href === `+strconv.Quote(url)+` && document.readyState === "complete"`)
}

// waitUntil polls the page until js is true.
func (b *browser) waitUntil(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the page never showed %s (%v); it shows: %s", what, err, b.evalString(`document.body.innerText`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot saves the page to path when SSE_SCREENSHOTS is set (that is
// how docs/*.png are made: SSE_SCREENSHOTS=1 go test ./browser).
func (b *browser) screenshot(path string) {
	b.t.Helper()
	if os.Getenv("SSE_SCREENSHOTS") == "" {
		return
	}
	if err := chromedp.Do(b.ctx, chromedp.EmulateViewport(1280, 760), chromedp.Sleep(300*time.Millisecond)); err != nil {
		b.t.Fatalf("sizing the page: %v", err)
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s", path)
}

// The inspector lists a topic, tails it live (an event published while it
// is open shows up), its counts follow a subscriber joining, and its
// publish and close buttons act on the topic.
func TestInspector(t *testing.T) {
	b := newBrowser(t)
	adminPort := testcaddy.FreePort(t)
	s := &server{t: t, port: testcaddy.FreePort(t)}
	s.origin = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.client = &http.Client{Timeout: 10 * time.Second}
	testcaddy.Load(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	sse /t/* {
		publish {
			bearer browser-token
		}
	}
}
`, adminPort, s.port))
	s.publish("/t/orders", `{"order":1,"status":"paid"}`)
	s.publish("/t/news", "first")

	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	b.openWithReferrer(admin+"/sse/", admin+"/")
	row := `document.querySelector('#topics tr[data-topic="/t/news"]')`
	b.waitUntil("the topic listed", row+` !== null`)
	if got := b.evalString(row + `.querySelector('.subs').textContent`); got != "0" {
		t.Errorf("subscribers %q before anyone joined", got)
	}

	b.do(row + `.click()`)
	b.waitUntil("the tail connected", `document.getElementById('status').textContent.startsWith('live')`)
	b.waitUntil("the retained event", `document.getElementById('log').innerText.includes('first')`)
	s.publish("/t/news", "published while open")
	b.waitUntil("the live event", `document.getElementById('log').innerText.includes('published while open')`)

	// A subscriber joins: the list and the topic's detail count it.
	sub, err := ssetest.Dial(strings.TrimPrefix(s.origin, "http://"), "/t/news")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b.waitUntil("the subscriber counted", `document.querySelector('#topics tr[data-topic="/t/news"] .subs').textContent === "1"`)
	b.waitUntil("the transport split", `document.querySelector('[data-stat="HTTP/1 parked"] b').textContent === "1"`)

	// Publish from the page: the subscriber gets it.
	b.do(`document.getElementById('etype').value = 'note'`)
	b.do(`document.getElementById('edata').value = 'from the inspector'`)
	b.do(`document.getElementById('publish').click()`)
	_ = sub.Conn.SetReadDeadline(time.Now().Add(waitLimit))
	ev, err := sub.Next()
	if err != nil || ev.Type != "note" || ev.Data != "from the inspector" {
		t.Errorf("subscriber got %+v, %v", ev, err)
	}
	b.waitUntil("the published event in the tail", `document.getElementById('log').innerText.includes('from the inspector')`)
	b.screenshot(filepath.Join("..", "docs", "inspector.png"))

	// Close from the page: the subscriber gets close, the tail says so.
	b.do(`window.confirm = () => true`)
	b.do(`document.getElementById('close').click()`)
	ev, err = sub.Next()
	if err != nil || ev.Type != "close" {
		t.Errorf("subscriber got %+v, %v; want close", ev, err)
	}
	b.waitUntil("the close in the tail", `document.getElementById('status').textContent === 'closed'`)
	b.waitUntil("the topic shown closed", row+`.innerText.includes('closed')`)
	if n := b.evalInt(`document.querySelectorAll('#topics tbody tr[data-topic]').length`); n != 2 {
		t.Errorf("%d topics listed, want 2", n)
	}
}
