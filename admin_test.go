package caddysse_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// adminTopic is an entry of the admin API's topic list, and the answer of
// GET /sse/topics/<topic>.
type adminTopic struct {
	Topic       string     `json:"topic"`
	Store       string     `json:"store"`
	Href        string     `json:"href"`
	Subscribers int        `json:"subscribers"`
	Events      *int       `json:"events"`
	Bytes       *int64     `json:"bytes"`
	FirstID     string     `json:"first_id"`
	LastID      string     `json:"last_id"`
	LastEvent   *time.Time `json:"last_event"`
	Closed      bool       `json:"closed"`
	Note        string     `json:"note"`
	Transports  *struct {
		HTTP1Parked    int `json:"http1_parked"`
		HTTP1Detached  int `json:"http1_detached"`
		HTTP1InRequest int `json:"http1_in_request"`
		HTTP2          int `json:"http2"`
		HTTP3          int `json:"http3"`
	} `json:"transports"`
	Nodes []struct {
		Node        string `json:"node"`
		Subscribers int    `json:"subscribers"`
	} `json:"nodes"`
}

type adminList struct {
	Topics []adminTopic `json:"topics"`
	Next   string       `json:"next"`
}

// adminCaddy runs a config with an admin endpoint and two sse sites: /m/*
// on a memory store (publishing with a bearer token), /f/* on a file store
// (no publish block, streams kept in their request).
func adminCaddy(t *testing.T) (admin, site string) {
	t.Helper()
	adminPort, port := testcaddy.FreePort(t), testcaddy.FreePort(t)
	testcaddy.Load(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
}

http://127.0.0.1:%d {
	sse /m/* {
		heartbeat 1s
		publish {
			bearer reload-token
		}
	}
	sse /f/* {
		detach off
		store file %s
	}
}
`, adminPort, port, filepath.Join(t.TempDir(), "sse.db")))
	return fmt.Sprintf("http://127.0.0.1:%d", adminPort), fmt.Sprintf("127.0.0.1:%d", port)
}

// adminDo sends a request to the admin API and returns the status and body.
func adminDo(t *testing.T, method, url, body string, headers ...string) (int, string) {
	t.Helper()
	return sitetest.Do(t, method, url, body, headers...)
}

// adminJSON GETs url and decodes its 200 answer into v.
func adminJSON(t *testing.T, url string, v any) {
	t.Helper()
	status, body := adminDo(t, http.MethodGet, url, "")
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

// adminJSONBody decodes an answer's body into v.
func adminJSONBody(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
}

// wantError checks a JSON error answer.
func wantError(t *testing.T, what string, status int, body string, wantStatus int, wantIn string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if status != wantStatus || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, wantIn) {
		t.Errorf("%s: answered %d %s; want %d with an error saying %q", what, status, body, wantStatus, wantIn)
	}
}

// topicURL is the admin URL of topic, its name path-encoded.
func topicURL(admin, topic string) string { return sitetest.AdminTopicURL(admin, topic) }

// nextEvent reads the stream's next event within wait.
func nextEvent(t *testing.T, s *ssetest.Stream, wait time.Duration) ssetest.Event {
	t.Helper()
	return sitetest.NextEvent(t, s, wait)
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	sitetest.WaitFor(t, what, 10*time.Second, cond)
}

func TestAdminListsTopicsOfEveryStore(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	postEvent(t, client, "http://"+site+"/m/one", "a")
	postEvent(t, client, "http://"+site+"/m/one", "b")
	sitetest.DialStream(t, site, "/f/two")
	sitetest.DialStream(t, site, "/m/one")

	var list adminList
	waitFor(t, "both topics listed with their subscriber", func() bool {
		adminJSON(t, admin+"/sse/topics", &list)
		return len(list.Topics) == 2 && list.Topics[0].Subscribers == 1 && list.Topics[1].Subscribers == 1
	})
	one, two := list.Topics[1], list.Topics[0] // "/f/two" sorts first
	if one.Topic != "/m/one" || one.Store != "memory:default" || one.Events == nil || *one.Events != 2 ||
		*one.Bytes <= 0 || one.FirstID == "" || one.LastID == "" || one.FirstID == one.LastID || one.LastEvent == nil || one.Closed {
		t.Errorf("/m/one listed as %+v", one)
	}
	if time.Since(*one.LastEvent) > time.Minute {
		t.Errorf("last event at %v", one.LastEvent)
	}
	if two.Topic != "/f/two" || !strings.HasPrefix(two.Store, "file:") || two.Events == nil || *two.Events != 0 || two.LastEvent != nil {
		t.Errorf("/f/two listed as %+v", two)
	}
	if one.Href != "/sse/topics/%2Fm%2Fone" {
		t.Errorf("href %q", one.Href)
	}
	if list.Next != "" {
		t.Errorf("next %q on the only page", list.Next)
	}

	adminJSON(t, admin+"/sse/topics?prefix=/m/", &list)
	if len(list.Topics) != 1 || list.Topics[0].Topic != "/m/one" {
		t.Errorf("prefix /m/ listed %+v", list.Topics)
	}
	status, body := adminDo(t, http.MethodGet, admin+"/sse/topics?limit=x", "")
	wantError(t, "limit=x", status, body, http.StatusBadRequest, "limit")
	status, body = adminDo(t, http.MethodPost, admin+"/sse/topics", "")
	wantError(t, "POST /sse/topics", status, body, http.StatusMethodNotAllowed, "GET")
}

// Pages of a few topics each list every topic once, in order, while topics
// are created between pages.
func TestAdminPagesThroughThousandsOfTopics(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	const n = 1200
	for i := range n {
		if _, err := sitetest.Publish(client, http.MethodPost, topicURL(admin, fmt.Sprintf("/m/t%04d", i))+"?store=memory:default", "x"); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for page := 0; ; page++ {
		var list adminList
		adminJSON(t, admin+"/sse/topics?limit=500&after="+url.QueryEscape(after), &list)
		if len(list.Topics) > 500 {
			t.Fatalf("page of %d topics, limit 500", len(list.Topics))
		}
		for _, tp := range list.Topics {
			got = append(got, tp.Topic)
		}
		if page == 0 {
			// A topic created behind the cursor is not listed again,
			// nor does it shift what comes next.
			postEvent(t, client, "http://"+site+"/m/a-new-one", "x")
		}
		if list.Next == "" {
			break
		}
		after = list.Next
	}
	if len(got) != n {
		t.Fatalf("listed %d topics, want %d", len(got), n)
	}
	for i, name := range got {
		if want := fmt.Sprintf("/m/t%04d", i); name != want {
			t.Fatalf("topic %d is %q, want %q", i, name, want)
		}
	}
}

func TestAdminDescribesOneTopic(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	postEvent(t, client, "http://"+site+"/m/chat/room", "hello")
	sitetest.DialStream(t, site, "/m/chat/room")
	sitetest.DialStream(t, site, "/f/x")

	var one adminTopic
	waitFor(t, "the parked subscriber", func() bool {
		adminJSON(t, topicURL(admin, "/m/chat/room"), &one)
		return one.Transports != nil && one.Transports.HTTP1Parked == 1
	})
	if one.Topic != "/m/chat/room" || one.Subscribers != 1 || *one.Events != 1 || len(one.Nodes) != 1 || one.Nodes[0].Subscribers != 1 {
		t.Errorf("/m/chat/room: %+v", one)
	}
	// A stream in its request (detach off) over HTTP/1.1.
	adminJSON(t, topicURL(admin, "/f/x"), &one)
	if one.Transports == nil || one.Transports.HTTP1InRequest != 1 || one.Subscribers != 1 {
		t.Errorf("/f/x: %+v", one)
	}
	status, body := adminDo(t, http.MethodGet, topicURL(admin, "/nope"), "")
	wantError(t, "unknown topic", status, body, http.StatusNotFound, "unknown topic")
	status, body = adminDo(t, http.MethodPut, topicURL(admin, "/m/chat/room"), "")
	wantError(t, "PUT", status, body, http.StatusMethodNotAllowed, "allowed")
	// The same topic spelt with its slashes as path segments (no leading
	// slash) is another topic.
	status, _ = adminDo(t, http.MethodGet, admin+"/sse/topics/m/chat/room", "")
	if status != http.StatusNotFound {
		t.Errorf("m/chat/room: %d", status)
	}
}

func TestAdminPublishesAndClosesWithoutCredentials(t *testing.T) {
	admin, site := adminCaddy(t)
	s := sitetest.DialStream(t, site, "/m/jobs/1")
	s2 := sitetest.DialStream(t, site, "/f/jobs/1")

	status, body := adminDo(t, http.MethodPost, topicURL(admin, "/m/jobs/1")+"?event=progress", "50%")
	if status != http.StatusOK || !strings.Contains(body, `"ids"`) {
		t.Fatalf("admin publish: %d %s", status, body)
	}
	if ev := nextEvent(t, s, 10*time.Second); ev.Type != "progress" || ev.Data != "50%" {
		t.Errorf("subscriber got %+v", ev)
	}
	// NDJSON, to the handler without a publish block.
	status, body = adminDo(t, http.MethodPost, topicURL(admin, "/f/jobs/1"), "{\"a\":1}\n{\"a\":2}\n", "Content-Type: application/x-ndjson")
	if status != http.StatusOK {
		t.Fatalf("admin NDJSON publish: %d %s", status, body)
	}
	for _, want := range []string{`{"a":1}`, `{"a":2}`} {
		if ev := nextEvent(t, s2, 10*time.Second); ev.Type != "message" || ev.Data != want {
			t.Errorf("subscriber got %+v, want %s", ev, want)
		}
	}

	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/m/jobs/1"), "")
	if status != http.StatusNoContent {
		t.Fatalf("admin close: %d %s", status, body)
	}
	if ev := nextEvent(t, s, 10*time.Second); ev.Type != "close" {
		t.Errorf("subscriber got %+v, want close", ev)
	}
	if s3, err := ssetest.Dial(site, "/m/jobs/1"); err != nil || s3.Response.StatusCode != http.StatusNoContent {
		t.Errorf("GET after close: %v %v", s3, err)
	} else {
		s3.Close()
	}
	var one adminTopic
	adminJSON(t, topicURL(admin, "/m/jobs/1"), &one)
	if !one.Closed {
		t.Errorf("closed topic: %+v", one)
	}
	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/m/jobs/1"), "")
	wantError(t, "second close", status, body, http.StatusGone, "closed")
	status, body = adminDo(t, http.MethodPost, topicURL(admin, "/m/jobs/1"), "late")
	wantError(t, "publish after close", status, body, http.StatusGone, "closed")
	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/m/never"), "")
	wantError(t, "close unknown", status, body, http.StatusNotFound, "unknown topic")
	status, body = adminDo(t, http.MethodPost, topicURL(admin, "/m/x")+"?store=memory:default", "")
	wantError(t, "empty publish", status, body, http.StatusBadRequest, "empty body")
	// A new topic, with two stores to choose from.
	status, body = adminDo(t, http.MethodPost, topicURL(admin, "/m/x"), "x")
	wantError(t, "publish to a new topic", status, body, http.StatusConflict, "?store=")
}

func TestAdminDisconnectsSubscribersWhoResume(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	id := postEvent(t, client, "http://"+site+"/m/kick", "before")
	parked := sitetest.DialStream(t, site, "/m/kick", "Last-Event-ID: "+id)
	inRequest := sitetest.DialStream(t, site, "/f/kick")
	waitFor(t, "both subscribers", func() bool {
		var a, b adminTopic
		adminJSON(t, topicURL(admin, "/m/kick"), &a)
		adminJSON(t, topicURL(admin, "/f/kick"), &b)
		return a.Subscribers == 1 && b.Subscribers == 1
	})

	status, body := adminDo(t, http.MethodDelete, topicURL(admin, "/m/kick")+"/subscribers?reason=maintenance", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect: %d %s", status, body)
	}
	got, ended := parked.ReadToEnd(10 * time.Second)
	if !ended || !strings.Contains(string(got), ": maintenance\n\nretry: ") {
		t.Errorf("kicked parked stream got %q (ended %v)", got, ended)
	}
	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/f/kick")+"/subscribers", `{"reason":"bye"}`)
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect in request: %d %s", status, body)
	}
	got, ended = inRequest.ReadToEnd(10 * time.Second)
	if !ended || !strings.Contains(string(got), ": bye\n\nretry: ") {
		t.Errorf("kicked in-request stream got %q (ended %v)", got, ended)
	}
	// The client comes back with its last id and misses nothing.
	postEvent(t, client, "http://"+site+"/m/kick", "after")
	back := sitetest.DialStream(t, site, "/m/kick", "Last-Event-ID: "+id)
	if ev := nextEvent(t, back, 10*time.Second); ev.Data != "after" {
		t.Errorf("resumed with %+v", ev)
	}
	var one adminTopic
	waitFor(t, "the counts", func() bool {
		adminJSON(t, topicURL(admin, "/f/kick"), &one)
		return one.Subscribers == 0
	})
	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/f/kick")+"/subscribers", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":0`) {
		t.Errorf("disconnect nobody: %d %s", status, body)
	}
	status, body = adminDo(t, http.MethodDelete, topicURL(admin, "/nope")+"/subscribers", "")
	wantError(t, "disconnect unknown", status, body, http.StatusNotFound, "unknown topic")
}

func TestAdminTailsATopicAndServesTheInspector(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	postEvent(t, client, "http://"+site+"/m/tail", "old")
	adminAddr := strings.TrimPrefix(admin, "http://")
	tail := sitetest.DialStream(t, adminAddr, "/sse/topics/%2Fm%2Ftail/events?lastEventId=earliest")
	var got struct {
		Type string    `json:"type"`
		Time time.Time `json:"time"`
		Data string    `json:"data"`
	}
	if ev := nextEvent(t, tail, 10*time.Second); json.Unmarshal([]byte(ev.Data), &got) != nil || got.Data != "old" || got.Type != "message" || time.Since(got.Time) > time.Minute {
		t.Errorf("tail replayed %+v", ev)
	}
	// Every type comes as a message, its type in the data.
	status, body := adminDo(t, http.MethodPost, topicURL(admin, "/m/tail")+"?event=progress", "new")
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, body)
	}
	if ev := nextEvent(t, tail, 10*time.Second); ev.Type != "message" || json.Unmarshal([]byte(ev.Data), &got) != nil || got.Data != "new" || got.Type != "progress" {
		t.Errorf("tail got %+v", ev)
	}
	// A tail is no subscriber.
	var one adminTopic
	adminJSON(t, topicURL(admin, "/m/tail"), &one)
	if one.Subscribers != 0 {
		t.Errorf("tail counted: %+v", one)
	}

	resp, err := http.Get(admin + "/sse/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "/sse/topics") {
		t.Errorf("inspector: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	status, body = adminDo(t, http.MethodGet, admin+"/sse/nothing", "")
	wantError(t, "unknown route", status, body, http.StatusNotFound, "/sse/topics")
}

// A stream of several topics is a subscriber of each: counted under each,
// and ended by disconnecting any of them.
func TestAdminCountsMultiTopicStreams(t *testing.T) {
	admin, site := adminCaddy(t)
	multi := sitetest.DialStream(t, site, "/m/?topic=/m/a&topic=/m/b")
	for _, name := range []string{"/m/a", "/m/b"} {
		var one adminTopic
		waitFor(t, name+" counted", func() bool {
			status, body := adminDo(t, http.MethodGet, topicURL(admin, name), "")
			if status != http.StatusOK {
				return false
			}
			adminJSONBody(t, body, &one)
			return one.Subscribers == 1
		})
	}
	var list adminList
	adminJSON(t, admin+"/sse/topics?prefix=/m/", &list)
	for _, tp := range list.Topics {
		if strings.ContainsRune(tp.Topic, 0) {
			t.Errorf("listed a stream key as a topic: %q", tp.Topic)
		}
	}
	status, body := adminDo(t, http.MethodDelete, topicURL(admin, "/m/b")+"/subscribers?reason=bye", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect: %d %s", status, body)
	}
	if got, ended := multi.ReadToEnd(10 * time.Second); !ended || !strings.Contains(string(got), ": bye\n") {
		t.Errorf("multi-topic stream got %q (ended %v)", got, ended)
	}
}

// A multi-topic stream counts under each of its topics, and disconnecting
// any of them ends it; it resumes them all.
func TestAdminCountsMultiTopicStreamsUnderEachTopic(t *testing.T) {
	admin, site := adminCaddy(t)
	client := &http.Client{Timeout: 10 * time.Second}
	id := postEvent(t, client, "http://"+site+"/m/multi-a", "a0")
	postEvent(t, client, "http://"+site+"/m/multi-b", "b0")
	st := sitetest.DialStream(t, site, "/m/x?topic=/m/multi-a&topic=/m/multi-b", "Last-Event-ID: "+id)
	if ev := nextEvent(t, st, 10*time.Second); ev.Data != "b0" {
		t.Fatalf("first event %+v", ev)
	}
	waitFor(t, "the stream counted under both topics", func() bool {
		var a, b adminTopic
		adminJSON(t, topicURL(admin, "/m/multi-a"), &a)
		adminJSON(t, topicURL(admin, "/m/multi-b"), &b)
		return a.Subscribers == 1 && b.Subscribers == 1
	})
	status, body := adminDo(t, http.MethodDelete, topicURL(admin, "/m/multi-b")+"/subscribers?reason=maintenance", "")
	if status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect: %d %s", status, body)
	}
	if _, ended := st.ReadToEnd(10 * time.Second); !ended {
		t.Fatal("the multi-topic stream did not end")
	}
	var a adminTopic
	waitFor(t, "the stream gone from both topics", func() bool {
		adminJSON(t, topicURL(admin, "/m/multi-a"), &a)
		return a.Subscribers == 0
	})
}
