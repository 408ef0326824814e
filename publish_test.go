package caddysse_test

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// An NDJSON body publishes one event per non-empty line, atomically: a bad
// line rejects the whole batch, saying which line, and appends nothing.
func TestPublishNDJSON(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	path := topic(t, "/s/", "batch")
	st := s.subscribe(path)
	st.await("retry field", func() bool { return st.parser.Retry >= 0 })

	ndjson := "Content-Type: application/x-ndjson"
	res := s.publish(path, "{\"n\":1}\n\n{\"n\":2}\r\n   \n{\"n\":3}\n", ndjson)
	if len(res.IDs) != 3 {
		t.Fatalf("ids %q, want 3", res.IDs)
	}
	sameEvents(t, "NDJSON batch", st.nextN(3), res.IDs, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`})

	bad := s.do(http.MethodPost, path, "{\"n\":4}\n{\"n\":5\n{\"n\":6}\n", ndjson)
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.errorMessage(), "line 2") {
		t.Errorf("batch with a bad second line answered %d %q, want 400 naming line 2", bad.status, bad.body)
	}
	// Nothing of the rejected batch was appended: the next event the
	// subscriber gets is the one sitetest.Published after it, and history agrees.
	after := s.publishID(path, `{"n":7}`, ndjson)
	sameEvents(t, "after the rejected batch", st.nextN(1), []string{after}, []string{`{"n":7}`})
	replayed := s.subscribe(path + "?lastEventId=earliest")
	sameEvents(t, "history", replayed.nextN(4), append(res.IDs, after), []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":7}`})
}

// DELETE ends a topic: its subscribers get the close event and their
// streams end; afterwards a subscribe answers 204 (which stops EventSource
// reconnecting) and a publish 410.
func TestDeleteClosesTopic(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		publish {
			bearer secret-token
		}
	}`)
	auth := "Authorization: Bearer secret-token"
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	id := s.publishID(path, "last words", auth)
	sameEvents(t, "before closing", st.nextN(1), []string{id}, []string{"last words"})

	if r := s.do(http.MethodDelete, path, "", "Authorization: Bearer wrong"); r.status != http.StatusUnauthorized {
		t.Errorf("DELETE with a wrong token answered %d, want 401", r.status)
	}
	if r := s.do(http.MethodDelete, path, "", auth); r.status != http.StatusNoContent {
		t.Fatalf("DELETE answered %d %s, want 204", r.status, r.body)
	}
	e := st.next()
	if e.Type != "close" || !strings.Contains(e.Data, "closed") {
		t.Errorf("last event %+v, want a close event", e)
	}
	if err := st.awaitEnd(); err != io.EOF {
		t.Errorf("after the close event the stream ended with %v, want EOF", err)
	}
	if len(st.queue) != 0 {
		t.Errorf("events after close: %+v", st.queue)
	}

	if r := s.do(http.MethodGet, path, "", "Last-Event-ID: "+id); r.status != http.StatusNoContent || r.body != "" {
		t.Errorf("GET of a closed topic answered %d %q, want 204", r.status, r.body)
	}
	r := s.do(http.MethodPost, path, "more", auth)
	if r.status != http.StatusGone || !strings.Contains(r.errorMessage(), "closed") {
		t.Errorf("POST to a closed topic answered %d %q, want 410 saying it is closed", r.status, r.body)
	}
	if r := s.do(http.MethodDelete, path, "", auth); r.status != http.StatusGone {
		t.Errorf("second DELETE answered %d, want 410", r.status)
	}
}

// Without a publish block the URL is subscribe-only.
func TestWithoutPublishOnlyGET(t *testing.T) {
	s := startSite(t, `sse /s/*`)
	path := topic(t, "/s/", "t")
	for _, method := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
		r := s.do(method, path, "data")
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s answered %d with Allow %q, want 405 with Allow: GET, HEAD", method, r.status, r.header.Get("Allow"))
		}
		if !strings.Contains(r.errorMessage(), method) {
			t.Errorf("%s: error %q does not name the method", method, r.body)
		}
		if method != http.MethodPut && !strings.Contains(r.errorMessage(), "add a publish block") {
			t.Errorf("%s: error %q does not say how to publish here", method, r.body)
		}
	}
	s.subscribe(path)
}

const (
	authBearer = "bearer-token-1"
	authGitHub = "github-secret"
	// whsec_ + base64 of the key bytes "standard webhooks test key!!".
	authKey = "standard webhooks test key!!"
)

func githubSignature(body string) string {
	mac := hmac.New(sha256.New, []byte(authGitHub))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func standardSignature(id string, ts int64, body string) string {
	mac := hmac.New(sha256.New, []byte(authKey))
	fmt.Fprintf(mac, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// With several schemes configured, a request passing any one is accepted;
// any other gets 401 saying what is wrong, and appends nothing.
func TestPublishAuthentication(t *testing.T) {
	s := startSite(t, fmt.Sprintf(`
	sse /s/* {
		publish {
			bearer %s
			hmac_sha256 %s
			standard_webhooks whsec_%s
		}
	}`, authBearer, authGitHub, base64.StdEncoding.EncodeToString([]byte(authKey))))
	path := topic(t, "/s/", "t")
	now := time.Now().Unix()
	stale := time.Now().Add(-10 * time.Minute).Unix()
	sw := func(id string, ts int64, body string) []string {
		return []string{"webhook-id: " + id, "webhook-timestamp: " + strconv.FormatInt(ts, 10), "webhook-signature: " + standardSignature(id, ts, body)}
	}
	cases := []struct {
		name    string
		body    string
		headers []string
		status  int
		says    string // in the 401 error
	}{
		{"bearer", "by bearer", []string{"Authorization: Bearer " + authBearer}, 200, ""},
		{"github hmac", "by github", []string{"X-Hub-Signature-256: " + githubSignature("by github")}, 200, ""},
		{"standard webhooks", "by standard", sw("msg_ok", now, "by standard"), 200, ""},

		{"wrong bearer", "x1", []string{"Authorization: Bearer nope"}, 401, "bearer: token mismatch"},
		{"wrong hmac", "x2", []string{"X-Hub-Signature-256: " + githubSignature("other body")}, 401, "hmac_sha256: signature mismatch"},
		{"hmac not hex", "x3", []string{"X-Hub-Signature-256: sha256=zz"}, 401, "not a hex"},
		{"wrong standard signature", "x4", sw("msg_bad", now, "other body"), 401, "standard_webhooks: signature mismatch"},
		{"stale timestamp", "x5", sw("msg_stale", stale, "x5"), 401, "old, beyond the tolerance"},
		{"no credentials", "x6", nil, 401, "missing Authorization header"},
		{"missing signature header", "x7", []string{"webhook-id: msg_x7", "webhook-timestamp: " + strconv.FormatInt(now, 10)}, 401, "missing webhook-signature header"},
	}
	var accepted, acceptedIDs []string
	for _, c := range cases {
		r := s.do(http.MethodPost, path, c.body, c.headers...)
		if r.status != c.status {
			t.Errorf("%s: answered %d %s, want %d", c.name, r.status, r.body, c.status)
			continue
		}
		if c.status == http.StatusOK {
			var res sitetest.Result
			_ = json.Unmarshal([]byte(r.body), &res)
			accepted = append(accepted, c.body)
			acceptedIDs = append(acceptedIDs, res.IDs...)
			continue
		}
		if msg := r.errorMessage(); !strings.Contains(msg, c.says) || !strings.HasPrefix(msg, "authentication failed") {
			t.Errorf("%s: 401 says %q, want it to mention %q", c.name, msg, c.says)
		}
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want the Bearer challenge", c.name, got)
		}
		if strings.Contains(r.body, authGitHub) || strings.Contains(r.body, authBearer) {
			t.Errorf("%s: the error reveals a secret: %s", c.name, r.body)
		}
	}
	// Only the accepted requests were appended.
	st := s.subscribe(path + "?lastEventId=earliest")
	sameEvents(t, "history", st.nextN(len(accepted)), acceptedIDs, accepted)
	last := s.publishID(path, "end", "Authorization: Bearer "+authBearer)
	sameEvents(t, "next", st.nextN(1), []string{last}, []string{"end"})
}

// A publish block must say how publishers authenticate; leaving the
// endpoint open takes an explicit allow_unauthenticated.
func TestPublishWithoutAuthNeedsAllowUnauthenticated(t *testing.T) {
	port := testcaddy.FreePort(t)
	open := func(extra string) string {
		return testcaddy.Format(fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\tsse /s/* {\n\t\tpublish {\n\t\t\tevent update\n\t\t\t%s\n\t\t}\n\t}\n}\n", port, extra))
	}
	err := testcaddy.ValidateCaddyfile(open(""))
	if err == nil || !strings.Contains(err.Error(), "allow_unauthenticated") {
		t.Fatalf("a publish block without authentication provisioned with error %v, want one mentioning allow_unauthenticated", err)
	}
	if err := testcaddy.ValidateCaddyfile(open("allow_unauthenticated")); err != nil {
		t.Fatalf("with allow_unauthenticated: %v", err)
	}
	testcaddy.Load(t, open("allow_unauthenticated"))
	s := &site{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), client: &http.Client{Timeout: 5 * time.Second}}
	s.url = "http://" + s.addr
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	id := s.publishID(path, "anyone")
	e := st.next()
	if e.ID != id || e.Type != "update" || e.Data != "anyone" {
		t.Errorf("event %+v, want id %s, type update, data anyone", e, id)
	}
}

// A delivery repeated with the same id (a sender retrying) appends nothing
// and answers the ids of the first delivery.
func TestPublishDeduplicates(t *testing.T) {
	s := startSite(t, `sse /s/* {`+openPublish+`
	}`)
	path := topic(t, "/s/", "t")
	st := s.subscribe(path)
	st.await("retry field", func() bool { return st.parser.Retry >= 0 })
	var ids, data []string
	for _, h := range []string{"Idempotency-Key: order-17", "webhook-id: msg_2Lh9", "X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958"} {
		name, _, _ := strings.Cut(h, ":")
		first := s.publish(path, "via "+name, h)
		r := s.do(http.MethodPost, path, "via "+name, h)
		var again sitetest.Result
		_ = json.Unmarshal([]byte(r.body), &again)
		if r.status != http.StatusOK || !slices.Equal(again.IDs, first.IDs) || !again.Duplicate || !strings.Contains(r.body, `"duplicate":true`) {
			t.Errorf("%s repeated: %d %s, want 200 with ids %q and duplicate true", name, r.status, r.body, first.IDs)
		}
		if first.Duplicate {
			t.Errorf("%s: the first delivery is marked duplicate", name)
		}
		ids = append(ids, first.IDs...)
		data = append(data, "via "+name)
	}
	ids = append(ids, s.publishID(path, "end"))
	data = append(data, "end")
	sameEvents(t, "each delivery once", st.nextN(4), ids, data)
}

// What cannot be an event, or a topic, is refused with a status and a
// message saying why, and nothing is appended.
func TestBadInputRejected(t *testing.T) {
	s := startSite(t, `
	sse /s/* {
		limits {
			topic_length 40
		}
		publish {
			allow_unauthenticated
			max_body 1KiB
		}
	}`)
	path := "/s/bad-input"
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		says   string
	}{
		{"body over max_body", path, strings.Repeat("x", 1025), 413, "max_body of 1024 bytes"},
		{"invalid UTF-8", path, "caf\xe9", 400, "UTF-8"},
		{"empty body", path, "", 400, "empty body"},
		{"control character in topic", "/s/a%01b", "x", 400, "control character U+0001"},
		{"topic too long", "/s/" + strings.Repeat("t", 38), "x", 400, "longer than the limit of 40"},
	}
	for _, c := range cases {
		r := s.do(http.MethodPost, c.path, c.body)
		if r.status != c.status || !strings.Contains(r.errorMessage(), c.says) {
			t.Errorf("%s: answered %d %q, want %d saying %q", c.name, r.status, r.body, c.status, c.says)
		}
	}
	if r := s.do(http.MethodGet, "/s/a%01b", ""); r.status != 400 || !strings.Contains(r.errorMessage(), "control character") {
		t.Errorf("subscribing to a topic with a control character answered %d %q, want 400", r.status, r.body)
	}
	// 1024 bytes is within max_body.
	st := s.subscribe(path + "?lastEventId=earliest")
	big := strings.Repeat("y", 1024)
	id := s.publishID(path, big)
	sameEvents(t, "history after the rejections", st.nextN(1), []string{id}, []string{big})
}

// A publish whose Content-Length exceeds max_body is refused at once: 413,
// before any byte of the body is read, so a client that sent Expect:
// 100-continue is never told to go on (and never sends the body).
func TestOversizedPublishRefusedFromItsContentLength(t *testing.T) {
	s := startSite(t, `
	sse /big/* {
		publish {
			allow_unauthenticated
			max_body 1KiB
		}
	}`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /big/x HTTP/1.1\r\nHost: %s\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n\r\n", strings.TrimPrefix(s.url, "http://"))
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to the head alone: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "max_body") {
		t.Errorf("answered %s %q, want 413 naming max_body (and no 100 Continue first)", resp.Status, body)
	}
}

// Event names taken from input drop every Unicode control character (C1
// ones such as NEXT LINE U+0085 and U+009B included) and the line and
// paragraph separators, which some parsers and viewers take as line ends:
// nothing a publisher sends can split a field.
func TestEventNamesDropUnicodeLineBreaksAndControls(t *testing.T) {
	s := startSite(t, `
	sse /names/* {
		publish {
			allow_unauthenticated
			event {http.request.header.X-Event}
		}
	}`)
	path := topic(t, "/names/", "t")
	st := s.subscribe(path)
	s.publishID(path, "x", "X-Event: up\u0085date\u2028id: forged\u2029\u009b")
	e := st.next()
	if e.Type != "updateid: forged" || e.Data != "x" {
		t.Errorf("event type %q data %q, want the name with its line breaks and controls dropped", e.Type, e.Data)
	}
	if bytes.Contains(st.wire, []byte("\u0085")) || bytes.Contains(st.wire, []byte("\u2028")) {
		t.Errorf("the wire carries a Unicode line break: %q", st.wire)
	}
}
