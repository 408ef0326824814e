package integration_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// closedTopic is a topic that got three events and was then closed.
type closedTopic struct {
	addr, path string
	ids        []string // of "one", "two", "three"
}

func publishAndClose(t *testing.T, client *http.Client, addr, path string) closedTopic {
	t.Helper()
	ct := closedTopic{addr: addr, path: path}
	for _, data := range []string{"one", "two", "three"} {
		id, err := filePublish(client, addr, path, data)
		if err != nil {
			t.Fatal(err)
		}
		ct.ids = append(ct.ids, id)
	}
	if _, err := sitetest.Publish(client, http.MethodDelete, "http://"+addr+path, "", "Authorization: Bearer file-token"); err != nil {
		t.Fatal(err)
	}
	return ct
}

// check asserts what every kind of client of the closed topic gets: one
// with a cursor before the close gets what it missed, then close, then the
// stream ends cleanly; earliest replays everything retained, then close;
// no cursor, or a cursor at the close, gets 204.
func (ct closedTopic) check(t *testing.T, when string) {
	t.Helper()
	for _, c := range []struct {
		name, cursor string
		want         []string // data of the events before close; nil: 204
	}{
		{"cursor before the last two events", ct.ids[0], []string{"two", "three"}},
		{"cursor before the last event", ct.ids[1], []string{"three"}},
		{"earliest", "earliest", []string{"one", "two", "three"}},
		{"no cursor", "", nil},
		{"cursor at the close", ct.ids[2], nil},
	} {
		var headers []string
		if c.cursor != "" {
			headers = append(headers, "Last-Event-ID: "+c.cursor)
		}
		s, err := ssetest.Dial(ct.addr, ct.path, headers...)
		if err != nil {
			t.Fatal(err)
		}
		body, ended := s.ReadToEnd(10 * time.Second)
		s.Close()
		if c.want == nil {
			if s.Response.StatusCode != http.StatusNoContent {
				t.Errorf("%s, %s: answered %s %q, want 204", when, c.name, s.Response.Status, body)
			}
			continue
		}
		if s.Response.StatusCode != http.StatusOK || !ended {
			t.Errorf("%s, %s: answered %s, ended cleanly: %v; want 200 ending by itself", when, c.name, s.Response.Status, ended)
			continue
		}
		events, _ := ssetest.ParseAll(body)
		var data []string
		for _, e := range events {
			data = append(data, e.Type+":"+e.Data)
		}
		var want []string
		for _, d := range c.want {
			want = append(want, "message:"+d)
		}
		want = append(want, `close:{"reason":"topic closed"}`)
		if !slices.Equal(data, want) {
			t.Errorf("%s, %s: got %q, want %q", when, c.name, data, want)
		}
	}
}

// A closed topic keeps what a resuming client missed: in memory, and in
// the file store across a restart.
func TestClosedTopicReplaysToResumingClients(t *testing.T) {
	client := &http.Client{Timeout: 10 * time.Second}

	t.Run("memory", func(t *testing.T) {
		port := testcaddy.FreePort(t)
		testcaddy.Load(t, fmt.Sprintf(`{
	admin off
}

http://127.0.0.1:%d {
	sse /f/* {
		publish {
			bearer file-token
		}
	}
}
`, port))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		publishAndClose(t, client, addr, "/f/job-memory").check(t, "memory")
	})

	t.Run("file across a restart", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sse.db")
		port := testcaddy.FreePort(t)
		p := testcaddy.Start(t, fileStoreCaddyfile(port, path))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ct := publishAndClose(t, client, addr, "/f/job-file")
		ct.check(t, "before the restart")
		if err := p.Stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		port = testcaddy.FreePort(t)
		testcaddy.Start(t, fileStoreCaddyfile(port, path))
		ct.addr = fmt.Sprintf("127.0.0.1:%d", port)
		ct.check(t, "after the restart")
	})
}
