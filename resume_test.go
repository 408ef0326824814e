package caddysse_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// A client resumes with Last-Event-ID (the header EventSource sends) or the
// lastEventId / last_event_id query parameter, and gets exactly the events
// after that id, then live ones: none twice, none missing.
func TestResume(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	cases := []struct {
		name    string
		query   func(ids []string) string
		headers func(ids []string) []string
		after   int // index of the last event the client should not get again; -1 for all
	}{
		{"header", nil, func(ids []string) []string { return []string{"Last-Event-ID: " + ids[1]} }, 1},
		{"lastEventId", func(ids []string) string { return "?lastEventId=" + ids[1] }, nil, 1},
		{"last_event_id", func(ids []string) string { return "?last_event_id=" + ids[1] }, nil, 1},
		{"header wins over query", func(ids []string) string { return "?lastEventId=" + ids[0] },
			func(ids []string) []string { return []string{"Last-Event-ID: " + ids[2]} }, 2},
		{"earliest", func([]string) string { return "?lastEventId=earliest" }, nil, -1},
		{"last event", func(ids []string) string { return "?lastEventId=" + ids[4] }, nil, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := topic(t, "/s/", "log")
			var ids, data []string
			for i := range 5 {
				data = append(data, fmt.Sprint("event ", i))
				ids = append(ids, s.publishID(path, data[i]))
			}
			url := path
			if c.query != nil {
				url += c.query(ids)
			}
			var headers []string
			if c.headers != nil {
				headers = c.headers(ids)
			}
			st := openStream(t, s.url+url, nil, headers...)
			if st.resp.StatusCode != http.StatusOK {
				t.Fatalf("resume answered %d", st.resp.StatusCode)
			}
			sameEvents(t, "replayed", st.nextN(4-c.after), ids[c.after+1:], data[c.after+1:])
			live := s.publishID(path, "live")
			sameEvents(t, "then live", st.nextN(1), []string{live}, []string{"live"})
		})
	}
}

// resetData is the JSON of a reset event.
type resetData struct {
	Reason      string `json:"reason"`
	Requested   string `json:"requested"`
	ResumeAfter string `json:"resume_after"`
}

// expectReset reads the reset event and checks what it says.
func expectReset(t *testing.T, st *stream, reason, requested, resumeAfter string) resetData {
	t.Helper()
	e := st.next()
	if e.Type != "reset" {
		t.Fatalf("first event %+v, want a reset event", e)
	}
	var d resetData
	if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
		t.Fatalf("reset data %q is not JSON: %v", e.Data, err)
	}
	if d.Reason != reason || d.Requested != requested || (resumeAfter != "" && d.ResumeAfter != resumeAfter) {
		t.Errorf("reset data %+v, want reason %q, requested %q, resume_after %q", d, reason, requested, resumeAfter)
	}
	if d.ResumeAfter == "" || e.ID != d.ResumeAfter {
		t.Errorf("reset event id %q, want its resume_after %q", e.ID, d.ResumeAfter)
	}
	return d
}

// A client whose id cannot be continued exactly (never issued, from an
// earlier life of the store, or pruned from history) is told so with a
// reset event, whose id is where delivery resumes, then gets what is
// retained; with on_gap live, only what is sitetest.Published next.
func TestResetWhenIDCannotBeResumed(t *testing.T) {
	s := startSite(t, `
	sse /replay/* {
		history {
			events 3
		}`+openPublish+`
	}
	sse /live/* {
		on_gap live
		history {
			events 3
		}`+openPublish+`
	}`)
	publishN := func(path string, n int) (ids, data []string) {
		for i := range n {
			data = append(data, fmt.Sprint(i+1))
			ids = append(ids, s.publishID(path, data[i]))
		}
		return ids, data
	}

	t.Run("unknown id", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 2)
		st := s.subscribe(path, "Last-Event-ID: garbage")
		d := expectReset(t, st, "unknown", "garbage", "")
		sameEvents(t, "after the reset", st.nextN(2), ids, data)
		// The reset's id is a real position: resuming from it is exact.
		again := s.subscribe(path, "Last-Event-ID: "+d.ResumeAfter)
		sameEvents(t, "resumed from resume_after", again.nextN(2), ids, data)
	})

	t.Run("id of an earlier epoch", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 2)
		epoch, seq, ok := strings.Cut(ids[0], "-")
		if !ok {
			t.Fatalf("id %q is not <epoch>-<seq>", ids[0])
		}
		other := "z" + epoch[1:]
		if other == epoch {
			other = "y" + epoch[1:]
		}
		old := other + "-" + seq
		st := s.subscribe(path + "?lastEventId=" + old)
		expectReset(t, st, "unknown", old, "")
		sameEvents(t, "after the reset", st.nextN(2), ids, data)
	})

	t.Run("expired id", func(t *testing.T) {
		path := topic(t, "/replay/", "t")
		ids, data := publishN(path, 10)
		st := s.subscribe(path, "Last-Event-ID: "+ids[0])
		// History keeps the last 3: delivery resumes after the 7th.
		expectReset(t, st, "expired", ids[0], ids[6])
		sameEvents(t, "retained", st.nextN(3), ids[7:], data[7:])
		live := s.publishID(path, "11")
		sameEvents(t, "then live", st.nextN(1), []string{live}, []string{"11"})
	})

	t.Run("on_gap live", func(t *testing.T) {
		path := topic(t, "/live/", "t")
		ids, _ := publishN(path, 10)
		st := s.subscribe(path, "Last-Event-ID: "+ids[0])
		expectReset(t, st, "expired", ids[0], ids[9])
		live := s.publishID(path, "11")
		sameEvents(t, "only new events", st.nextN(1), []string{live}, []string{"11"})

		st = s.subscribe(path, "Last-Event-ID: garbage")
		expectReset(t, st, "unknown", "garbage", live)
		next := s.publishID(path, "12")
		sameEvents(t, "only new events", st.nextN(1), []string{next}, []string{"12"})
	})
}

var retryField = regexp.MustCompile(`retry: (\d+)\n\n$`)

// A reload keeps history: a client resumes with an id from before it and
// gets exactly what followed. A stream open during the reload ends with a
// retry field, and the client resumes on the new config without loss.
func TestResumeAcrossReload(t *testing.T) {
	config := func(heartbeat string) string {
		return `
	sse /s/* {
		heartbeat ` + heartbeat + `
		drain_window 300ms` + openPublish + `
	}`
	}
	s := startSite(t, config("15s"))
	path := topic(t, "/s/", "t")
	var ids, data []string
	add := func(d string) {
		ids = append(ids, s.publishID(path, d))
		data = append(data, d)
	}
	for _, d := range []string{"e1", "e2", "e3"} {
		add(d)
	}
	open := s.subscribe(path, "Last-Event-ID: "+ids[0])
	got := open.nextN(2)

	s.reload(config("20s"))
	add("e4")
	if err := open.awaitEnd(); err != io.EOF {
		t.Errorf("the stream open during the reload ended with %v, want EOF", err)
	}
	m := retryField.FindSubmatch(open.wire)
	if m == nil {
		t.Fatalf("the stream open during the reload did not end with a retry field:\n%q", open.wire)
	}
	if ms, _ := strconv.Atoi(string(m[1])); ms < 3000 {
		t.Errorf("it ended with retry %d, want at least the configured 3000", ms)
	}
	got = append(got, open.queue...) // e4, if it came before the stream ended

	// Like EventSource: reconnect with the last id received.
	resumed := s.subscribe(path, "Last-Event-ID: "+open.parser.LastEventID)
	add("e5")
	got = append(got, resumed.nextN(len(ids)-1-len(got))...)
	sameEvents(t, "across the reload", got, ids[1:], data[1:])

	fromBefore := s.subscribe(path, "Last-Event-ID: "+ids[0])
	sameEvents(t, "resumed with a pre-reload id", fromBefore.nextN(4), ids[1:], data[1:])
}
