package caddysse_test

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// Past a limit, a publisher is told to come back later (503 with
// Retry-After) and a subscriber is turned away with a 200 stream that names
// the limit, carries a retry hint and ends, since EventSource takes any
// other status as final. Subscribing to a topic that has no events takes no
// topic slot, so anonymous subscribers cannot lock publishers out.
func TestLimits(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		limits {
			topics 3
			subscribers_per_topic 1
		}`+openPublish+`
	}`)
	// Subscribers on made-up topics first: they must not fill the slots.
	for i := range 5 {
		s.subscribe(topic(t, "/s/idle-", strconv.Itoa(i)))
	}
	for i := 1; i <= 3; i++ {
		s.publishID(topic(t, "/s/", strconv.Itoa(i)), "x")
	}
	if r := s.do(http.MethodPost, topic(t, "/s/", "4"), "x"); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.errorMessage() == "" {
		t.Errorf("publishing to a 4th topic answered %d (Retry-After %q) %q, want 503 with Retry-After and a message", r.status, r.header.Get("Retry-After"), r.body)
	}
	turnedAway := func(what string, st *stream, limit string) {
		t.Helper()
		st.awaitEnd()
		if st.resp.StatusCode != http.StatusOK || !regexp.MustCompile(`^: `+limit+`\n\nretry: [0-9]+\n\n$`).Match(st.wire) {
			t.Errorf("%s answered %d %q, want 200 with a comment %q, a retry hint and the end", what, st.resp.StatusCode, st.wire, limit)
		}
	}

	path := topic(t, "/s/", "1")
	first := s.subscribe(path)
	turnedAway("a second subscriber", s.open(path), "subscriber limit of the topic reached")

	// When the first leaves, its place is free again.
	first.close()
	deadline := time.Now().Add(waitLimit)
	for {
		st := s.open(path)
		st.listen(300 * time.Millisecond)
		if !st.ended {
			break
		}
		st.close()
		if time.Now().After(deadline) {
			t.Fatalf("still turned away (%q) after the first subscriber left", st.wire)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
