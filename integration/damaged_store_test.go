package integration_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// A stored event that cannot be read back (its bytes damaged on disk) is
// detected by its checksum, never served as data: a client replaying past
// it gets the events before it, a reset with reason unreadable, and the
// events after it; the damage is logged once and counted, and reconnecting
// does not loop on it.
func TestDamagedStoredEventIsReportedAndSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	client := &http.Client{Timeout: 10 * time.Second}
	port := testcaddy.FreePort(t)
	p := testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	data := []string{"first-event-data", "second-event-data", "third-event-data"}
	for _, d := range data {
		if _, err := filePublish(client, addr, "/f/log", d); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	damage(t, path, "second-event-data")

	port = testcaddy.FreePort(t)
	p = testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for round := range 2 {
		s, err := ssetest.Dial(addr, "/f/log?lastEventId=earliest")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(got) < 3 {
			e, err := s.Next()
			if err != nil {
				t.Fatalf("round %d: after %q: %v", round, got, err)
			}
			if e.Type == "reset" {
				got = append(got, "reset:"+reasonOf(e.Data))
				continue
			}
			got = append(got, e.Data)
		}
		s.Close()
		if want := []string{"first-event-data", "reset:unreadable", "third-event-data"}; !slices.Equal(got, want) {
			t.Errorf("round %d: got %q, want %q", round, got, want)
		}
	}
	if n := strings.Count(p.Log(), "stored event cannot be read"); n != 1 {
		t.Errorf("the damage was logged %d times, want once:\n%s", n, p.Log())
	}
	if !strings.Contains(p.Log(), "/f/log") {
		t.Errorf("the log does not name the topic:\n%s", p.Log())
	}
	if got := sitetest.Scrape(t, adminPortOf(t, p))["caddy_sse_unreadable_events_total"]; got != 1 {
		t.Errorf("caddy_sse_unreadable_events_total = %v, want 1", got)
	}
}

// damage flips a bit in every copy of marker in the file at path.
func damage(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(b, []byte(marker)); i >= 0; i = bytes.Index(b, []byte(marker)) {
		b[i+len(marker)-1] ^= 0x01
		n++
	}
	if n == 0 {
		t.Fatalf("%q is not in %s", marker, path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func reasonOf(resetData string) string {
	_, rest, _ := strings.Cut(resetData, `"reason":"`)
	reason, _, _ := strings.Cut(rest, `"`)
	return reason
}

// adminPortOf is the port of p's admin endpoint.
func adminPortOf(t *testing.T, p *testcaddy.Process) int {
	t.Helper()
	_, port, _ := strings.Cut(p.Admin, ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("admin address %q: %v", p.Admin, err)
	}
	return n
}
