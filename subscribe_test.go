package caddysse_test

import (
	"regexp"
	"testing"
	"time"
)

// A subscriber gets an event stream that starts with the reconnection
// delay, then every sitetest.Published event with its id, in order; a publish
// answers with the ids it assigned.
func TestSubscribeAndPublish(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		publish {
			allow_unauthenticated
			event {http.request.header.X-GitHub-Event}
		}
	}`)
	path := topic(t, "/s/", "news")
	st := s.subscribe(path)

	h := st.resp.Header
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// The stream opens with the reconnection delay and, since the client
	// came without a cursor, its position: an id in a block without data,
	// which sets the client's last event ID and dispatches nothing.
	opening := regexp.MustCompile(`^retry: 3000\n\nid: ([0-9a-z]+-[0-9]+)\n\n$`)
	st.await("retry and position", func() bool { return opening.Match(st.wire) })
	position := opening.FindStringSubmatch(string(st.wire))[1]
	if len(st.queue) != 0 || st.parser.LastEventID != position {
		t.Fatalf("the opening dispatched %d events and set last event ID %q; want none and a position", len(st.queue), st.parser.LastEventID)
	}

	first := s.publish(path, "hello")
	if first.Topic != path || len(first.IDs) != 1 || first.Duplicate {
		t.Fatalf("publish answered %+v, want topic %q and one id", first, path)
	}
	e := st.next()
	if e.ID != first.IDs[0] || e.Type != "message" || e.Data != "hello" {
		t.Errorf("first event %+v, want id %s, type message, data hello", e, first.IDs[0])
	}

	push := s.publishID(path, `{"ref":"main"}`, "X-GitHub-Event: push")
	e = st.next()
	if e.ID != push || e.Type != "push" || e.Data != `{"ref":"main"}` {
		t.Errorf("second event %+v, want id %s, type push (from the header)", e, push)
	}

	// CRLF, lone CR and LF all end a line; the client reads LF-joined lines.
	multi := s.publishID(path, "line one\r\nline two\rline three\nline four")
	e = st.next()
	if want := "line one\nline two\nline three\nline four"; e.ID != multi || e.Data != want {
		t.Errorf("multi-line event %+v, want id %s and data %q", e, multi, want)
	}

	wantWire := "retry: 3000\n\n" + "id: " + position + "\n\n" +
		"id: " + first.IDs[0] + "\ndata: hello\n\n" +
		"id: " + push + "\nevent: push\ndata: {\"ref\":\"main\"}\n\n" +
		"id: " + multi + "\ndata: line one\ndata: line two\ndata: line three\ndata: line four\n\n"
	if string(st.wire) != wantWire {
		t.Errorf("on the wire:\n%q\nwant:\n%q", st.wire, wantWire)
	}
	if ignored := st.parser.Ignored; ignored != 0 {
		t.Errorf("the parser ignored %d lines", ignored)
	}
	if ids := []string{first.IDs[0], push, multi}; ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Errorf("ids %q are not distinct", ids)
	}
}

// A quiet stream carries a comment line after each heartbeat interval, so
// proxies keep it open; with heartbeat off it carries nothing.
func TestHeartbeat(t *testing.T) {
	s := startSite(t, `
	sse /beat/* {
		heartbeat 200ms
	}
	sse /quiet/* {
		heartbeat off
	}`)
	st := s.subscribe(topic(t, "/beat/", "t"))
	st.await("heartbeat comment", func() bool { return st.parser.Comments > 0 })
	if want := regexp.MustCompile(`^retry: 3000\n\nid: [^\n]+\n\n:\n\n`); !want.Match(st.wire) {
		t.Errorf("stream %q, want it to start with retry, position and a heartbeat comment", st.wire)
	}

	quiet := s.subscribe(topic(t, "/quiet/", "t"))
	quiet.listen(time.Second)
	if want := regexp.MustCompile(`^retry: 3000\n\nid: [^\n]+\n\n$`); !want.Match(quiet.wire) || quiet.parser.Comments != 0 {
		t.Errorf("with heartbeat off, the stream carried %q in a second; want only retry and position", quiet.wire)
	}
}
