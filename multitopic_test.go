package caddysse_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
)

// multiPath is the URL of a multi-topic stream on topics.
func multiPath(base string, topics ...string) string {
	q := url.Values{"topic": topics}
	return base + "?" + q.Encode()
}

// multiTopics returns n topic paths unique to the test.
func multiTopics(t *testing.T, prefix string, n int) []string {
	var ts []string
	for i := range n {
		ts = append(ts, topic(t, prefix, fmt.Sprint("t", i)))
	}
	return ts
}

type published1 struct{ topic, id, data string }

// publishRound publishes n events, to each topic in turn.
func (s *site) publishRound(topics []string, from, n int) []published1 {
	s.t.Helper()
	var out []published1
	for k := from; k < from+n; k++ {
		tp := topics[k%len(topics)]
		data := fmt.Sprintf("%s#%d", tp, k)
		out = append(out, published1{tp, s.publishID(tp, data), data})
	}
	return out
}

// checkMulti checks events against what was published, in order, ids
// included; with named, each event is named after its topic.
func checkMulti(t *testing.T, got []ssetest.Event, want []published1, named bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(got), got, len(want))
	}
	for i, e := range got {
		w := want[i]
		typ := "message"
		if named {
			typ = w.topic
		}
		if e.ID != w.id || e.Data != w.data || e.Type != typ {
			t.Fatalf("event %d: %+v, want id %s data %s type %s", i, e, w.id, w.data, typ)
		}
	}
}

type closeData struct {
	Reason string `json:"reason"`
	Topic  string `json:"topic"`
}

// One stream on several topics: every event once, in the store's order,
// with ids that resume the whole set; the event name can be the topic.
func TestMultiTopicInterleaveAndResume(t *testing.T) {
	s := startSite(t, `
	sse /m/* {`+openPublish+`
	}
	sse /named/* {
		multi_topic_event_name topic`+openPublish+`
	}`)
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprint("named=", named), func(t *testing.T) {
			base := "/m/"
			if named {
				base = "/named/"
			}
			topics := multiTopics(t, base, 3)
			before := s.publishID(topics[0], "before")
			st := s.subscribe(multiPath(base+"any", topics...))
			// The other topic of the path is not added.
			s.publishID(base+"any", "not listed")
			want := s.publishRound(topics, 0, 12)
			checkMulti(t, st.nextN(12), want, named)
			st.close()

			// Resume after any event, and after the one before the stream.
			for k := range want {
				r := s.subscribe(multiPath(base+"any", topics...), "Last-Event-ID: "+want[k].id)
				checkMulti(t, r.nextN(len(want)-k-1), want[k+1:], named)
				r.close()
			}
			r := s.subscribe(multiPath(base+"x", topics...) + "&lastEventId=" + before)
			checkMulti(t, r.nextN(len(want)), want, named)
			more := s.publishRound(topics, 12, 4)
			checkMulti(t, r.nextN(4), more, named)
		})
	}
}

// A client that connected without a cursor gets the set's position at
// once: a drop before the first event resumes exactly.
func TestMultiTopicPositionFirst(t *testing.T) {
	s := startSite(t, `sse /p/* {`+openPublish+`
	}`)
	topics := multiTopics(t, "/p/", 2)
	st := s.subscribe(multiPath("/p/", topics...))
	st.await("position", func() bool { return st.parser.LastEventID != "" })
	pos := st.parser.LastEventID
	st.close()
	want := s.publishRound(topics, 0, 4)
	r := s.subscribe(multiPath("/p/", topics...), "Last-Event-ID: "+pos)
	checkMulti(t, r.nextN(4), want, false)
}

// A topic whose part of the cursor left history gets its own reset naming
// it; the others continue exactly.
func TestMultiTopicReset(t *testing.T) {
	s := startSite(t, `sse /g/* {
		history {
			events 3
		}`+openPublish+`
	}`)
	topics := multiTopics(t, "/g/", 2)
	keep, lose := topics[0], topics[1]
	first := s.publishRound(topics, 0, 2)
	pos := first[1].id
	var lost []published1
	for i := range 5 {
		lost = append(lost, published1{lose, s.publishID(lose, fmt.Sprint("lose", i)), fmt.Sprint("lose", i)})
	}
	kept := published1{keep, s.publishID(keep, "keep"), "keep"}
	st := s.subscribe(multiPath("/g/", topics...), "Last-Event-ID: "+pos)
	e := st.next()
	var d struct {
		resetData
		Topic string `json:"topic"`
	}
	if err := json.Unmarshal([]byte(e.Data), &d); err != nil || e.Type != "reset" {
		t.Fatalf("first event %+v, want a reset", e)
	}
	if d.Topic != lose || d.Reason != "expired" || d.Requested != pos || e.ID != pos {
		t.Fatalf("reset %+v (id %s), want topic %s expired at %s, id unchanged", d, e.ID, lose, pos)
	}
	checkMulti(t, st.nextN(4), append(lost[2:], kept), false)
}

// A topic that ends sends its own close naming it and the stream goes on;
// when all have ended the stream ends, and the set answers 204.
func TestMultiTopicClose(t *testing.T) {
	s := startSite(t, `sse /c/* {`+openPublish+`
	}`)
	topics := multiTopics(t, "/c/", 3)
	st := s.subscribe(multiPath("/c/", topics...))
	want := s.publishRound(topics, 0, 3)
	checkMulti(t, st.nextN(3), want, false)
	if r := s.do(http.MethodDelete, topics[1], ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE answered %d", r.status)
	}
	e := st.next()
	var d closeData
	if err := json.Unmarshal([]byte(e.Data), &d); err != nil || e.Type != "close" || d.Topic != topics[1] || d.Reason != "topic closed" {
		t.Fatalf("after DELETE %s: %+v, want a close naming it", topics[1], e)
	}
	later := published1{topics[0], s.publishID(topics[0], "later"), "later"}
	checkMulti(t, st.nextN(1), []published1{later}, false)
	for _, tp := range []string{topics[0], topics[2]} {
		s.do(http.MethodDelete, tp, "")
	}
	var closed []string
	for range 2 {
		e := st.next()
		var d closeData
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil || e.Type != "close" {
			t.Fatalf("got %+v, want close events", e)
		}
		closed = append(closed, d.Topic)
	}
	slices.Sort(closed)
	if !slices.Equal(closed, []string{topics[0], topics[2]}) {
		t.Fatalf("closed %v", closed)
	}
	if err := st.awaitEnd(); err != nil && err.Error() != "EOF" {
		t.Fatalf("the stream ended with %v", err)
	}
	for _, h := range [][]string{nil, {"Last-Event-ID: " + later.id}} {
		if r := s.open(multiPath("/c/", topics...), h...); r.resp.StatusCode != http.StatusNoContent {
			t.Fatalf("GET of the ended set (%v) answered %d", h, r.resp.StatusCode)
		}
	}
	// A client that missed the end gets what it missed, then the closes.
	r := s.subscribe(multiPath("/c/", topics...), "Last-Event-ID: "+want[2].id)
	checkMulti(t, r.nextN(1), []published1{later}, false)
	if err := r.awaitEnd(); err != nil && err.Error() != "EOF" {
		t.Fatal(err)
	}
	if n := strings.Count(string(r.wire), "event: close"); n != 3 {
		t.Fatalf("%d close events, want one per topic:\n%s", n, r.wire)
	}
}

// The limits: topics per stream, names like any topic's, one subscriber
// per stream, and one against each topic's limit.
func TestMultiTopicLimits(t *testing.T) {
	s := startSite(t, `
	sse /l/* {
		limits {
			topics_per_stream 3
			subscribers_per_topic 1
		}`+openPublish+`
	}
	sse /off/* {
		multi_topic_param off`+openPublish+`
	}
	sse /alt/* {
		multi_topic_param t`+openPublish+`
	}`)
	topics := multiTopics(t, "/l/", 4)
	if r := s.do(http.MethodGet, multiPath("/l/", topics...), ""); r.status != http.StatusBadRequest || !strings.Contains(r.body, "limit of 3") {
		t.Fatalf("4 topics: %d %s", r.status, r.body)
	}
	for _, bad := range []string{"", "/l/a\x01b", "/l/\u2028"} {
		if r := s.do(http.MethodGet, multiPath("/l/", topics[0], bad), ""); r.status != http.StatusBadRequest {
			t.Fatalf("topic %q: %d %s", bad, r.status, r.body)
		}
	}
	st := s.subscribe(multiPath("/l/", topics[:3]...))
	st.await("position", func() bool { return st.parser.LastEventID != "" })
	// Each of its topics is taken for subscribers_per_topic 1.
	r := s.open(topics[1])
	r.awaitEnd()
	if !strings.Contains(string(r.wire), "subscriber limit of the topic") {
		t.Fatalf("a second subscriber of %s: %q", topics[1], r.wire)
	}
	// Repeats count once.
	st2 := s.subscribe(multiPath("/l/", topics[3], topics[3], topics[3], topics[3]))
	st2.close()
	st.close()

	// off: the parameter is an ordinary query parameter.
	off := topic(t, "/off/", "x")
	o := s.subscribe(multiPath(off, "/off/elsewhere"))
	id := s.publishID(off, "own topic")
	if e := o.next(); e.ID != id {
		t.Fatalf("with multi_topic_param off: %+v", e)
	}
	// Another parameter name.
	alt := multiTopics(t, "/alt/", 2)
	a := s.subscribe("/alt/?t=" + url.QueryEscape(alt[0]) + "&t=" + url.QueryEscape(alt[1]))
	want := s.publishRound(alt, 0, 2)
	checkMulti(t, a.nextN(2), want, false)
}

// Compressed multi-topic streams, events named after their topic.
func TestMultiTopicCompressed(t *testing.T) {
	s := startSite(t, `sse /z/* {
		compress gzip
		multi_topic_event_name topic`+openPublish+`
	}`)
	topics := multiTopics(t, "/z/", 2)
	gunzip := func(r io.Reader) (io.Reader, func(), error) {
		z, err := gzip.NewReader(r)
		return z, func() {}, err
	}
	st := openStream(t, s.url+multiPath("/z/", topics...), gunzip, "Accept-Encoding: gzip")
	if st.resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", st.resp.Header.Get("Content-Encoding"))
	}
	want := s.publishRound(topics, 0, 6)
	checkMulti(t, st.nextN(6), want, true)
}

// With a subscribe block, every topic listed must be granted: one that is
// not refuses the whole stream, naming it.
func TestMultiTopicAuthorization(t *testing.T) {
	s := startSite(t, `sse /a/* {
		subscribe {
			signed_url test-secret
			public /a/pub/**
		}`+openPublish+`
	}`)
	open := []string{"/a/pub/x", "/a/pub/y"}
	st := s.subscribe(multiPath("/a/pub/x", open...))
	want := s.publishRound(open, 0, 2)
	checkMulti(t, st.nextN(2), want, false)
	r := s.do(http.MethodGet, multiPath("/a/pub/x", "/a/pub/x", "/a/private/z"), "")
	if r.status != http.StatusUnauthorized && r.status != http.StatusForbidden {
		t.Fatalf("a set with a topic not granted answered %d: %s", r.status, r.body)
	}
	if !strings.Contains(r.body, "/a/private/z") && r.status == http.StatusForbidden {
		t.Fatalf("the refusal does not name the topic: %s", r.body)
	}
}

// Parked streams whose sets of topics no other stream shares each have a
// lot of their own. A waiting lot holds no goroutine: its set's logs and
// an alarm call it back, so it still delivers every event and heartbeat.
func TestMultiTopicLotsSleepWithoutGoroutine(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testLotsSleep(t, "") })
	// Redis multi-topic cursors are composites of one cursor per topic,
	// whose topics call them back (replay.Notifier) instead of a goroutine
	// watching each waiting stream's topics.
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		testLotsSleep(t, "\n\t\tstore redis "+srv.URL())
	})
}

func testLotsSleep(t *testing.T, store string) {
	s := startSite(t, `
	sse /sleep/* {
		heartbeat 300ms`+store+openPublish+`
	}`)
	common := topic(t, "/sleep/", "common")
	var streams []*stream
	for i := range 8 {
		st := s.subscribe(multiPath("/sleep/", topic(t, "/sleep/", fmt.Sprint("own", i)), common))
		st.await("position", func() bool { return bytes.Contains(st.wire, []byte("id: ")) })
		streams = append(streams, st)
	}
	// Lots wake for each heartbeat: asleep means at some moment none runs.
	asleep := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 2)
			return !strings.Contains(b.String(), "stream.(*lot).drive(") &&
				!strings.Contains(b.String(), "replay.(*composite).wait.func")
		})
	}
	asleep("every lot asleep")
	for _, st := range streams {
		n := st.parser.Comments
		st.await("heartbeat from a sleeping lot", func() bool { return st.parser.Comments > n })
	}
	asleep("every lot asleep after the heartbeats")
	id := s.publishID(common, "to every set")
	for i, st := range streams {
		// On Redis a multi-topic stream's ids are composites of its own.
		if e := st.next(); (store == "" && e.ID != id) || e.Data != "to every set" {
			t.Fatalf("stream %d got %+v, want id %s", i, e, id)
		}
	}
	own := topic(t, "/sleep/", "own3")
	id = s.publishID(own, "to one set")
	if e := streams[3].next(); (store == "" && e.ID != id) || e.Data != "to one set" {
		t.Fatalf("stream 3 got %+v, want id %s", e, id)
	}
	asleep("every lot asleep after delivering")
}
