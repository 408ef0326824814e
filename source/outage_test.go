package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/wire"
)

// A failed append is a bad line only when the store refuses that line for
// good. Everything else, and above all an error nobody classified, waits:
// skipping loses the line, waiting at worst stalls the source.
func TestStoreErrorsThatSkipALine(t *testing.T) {
	for _, c := range []struct {
		err   error
		fault storeFault
		kind  string
	}{
		{fmt.Errorf("%w: redis at 127.0.0.1:6379: dial tcp: connection refused", replay.ErrUnavailable), faultTransient, ""},
		{fmt.Errorf("%w: redis at 127.0.0.1:6379: read tcp: i/o timeout", replay.ErrUnavailable), faultTransient, ""},
		{context.DeadlineExceeded, faultTransient, ""},
		{context.Canceled, faultTransient, ""},
		{replay.ErrLeaseLost, faultTransient, ""},
		{errors.New("redisstore: OOM command not allowed when used memory > 'maxmemory'"), faultTransient, ""},
		{errors.New("redisstore: unexpected answer \"?\" to append"), faultTransient, ""},
		{replay.ErrBatchTooLarge, faultLine, SkipTooLarge},
		{replay.ErrTooManyTopics, faultLine, SkipTopicLimit},
		{fmt.Errorf("appending: %w", replay.ErrTopicClosed), faultTopicClosed, SkipTopicClosed},
		{replay.ErrStoreClosed, faultStoreClosed, ""},
	} {
		fault, kind := classify(c.err)
		if fault != c.fault || kind != c.kind {
			t.Errorf("%v: fault %d, kind %q; want %d, %q", c.err, fault, kind, c.fault, c.kind)
		}
	}
}

// Every kind of skip a line can earn is one of the bounded SkipReasons.
func TestSkipKindsAreBounded(t *testing.T) {
	m := Mapping{TopicField: "t", IDField: "id", DataField: "d", MaxEvent: 8, MaxTopicLength: 10}
	for line, want := range map[string]string{
		"\xff":                    SkipMalformed,
		`not json`:                SkipMalformed,
		`[1]`:                     SkipMalformed,
		`{"id":1,"d":"x"}`:        SkipMissingField,
		`{"t":"/a","d":"x"}`:      SkipMissingField,
		`{"t":"","id":1,"d":"x"}`: SkipBadTopic,
		`{"t":"/a/much/too/long","id":1,"d":"x"}`:                                SkipBadTopic,
		`{"t":"/a","id":1,"d":"123456789"}`:                                      SkipTooLarge,
		`{"t":"/a","id":"` + strings.Repeat("9", maxUpstreamID+1) + `","d":"x"}`: SkipMalformed,
	} {
		_, err := m.Map([]byte(line))
		var sk *Skip
		if !errors.As(err, &sk) || sk.Kind != want {
			t.Errorf("%.40s: %v, want a skip of kind %s", line, err, want)
		}
	}
}

// A line without an id cannot be asked for again, so while the store is
// frozen the source holds it, reads nothing more (the upstream waits on its
// connection) and retries the append. Appends that timed out in the freeze
// run when Redis wakes up; the line's idempotency key keeps the retries
// from adding it again. Every line is in the topic once, in order, over the
// one upstream connection, and nothing was skipped.
func TestLineWithoutIDWaitsForTheStore(t *testing.T) {
	srv := redistest.Start(t)
	store, err := redisstore.New(context.Background(), redisstore.Options{
		Redis: &redis.Options{Addr: srv.Addr}, Prefix: "hold:",
	}, replay.Config{Framer: wire.EncodeEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	more := make(chan struct{})
	sc, url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeLines(w, "a1", "a2", "a3")
		select {
		case <-more:
		case <-r.Context().Done():
			return
		}
		writeLines(w, "b1", "b2", "b3")
		hold(w, r)
	})
	src := newSource(t, Config{URL: url, Mapping: Mapping{Topic: "/t"}}, store)
	events(t, store, "/t", 3)

	srv.Freeze()
	close(more)
	time.Sleep(3 * time.Second)
	srv.Thaw()

	got := events(t, store, "/t", 6)
	time.Sleep(300 * time.Millisecond) // room for a late duplicate
	got = events(t, store, "/t", 6)
	if strings.Join(got, ",") != "a1,a2,a3,b1,b2,b3" {
		t.Fatalf("topic holds %q, want a1..a3, b1..b3 once each", got)
	}
	if n := sc.count(); n != 1 {
		t.Errorf("%d upstream requests: the source reconnected, which loses lines an upstream without ids cannot resend", n)
	}
	// A retry that found its line already appended (it ran in Redis after
	// timing out here) counts as a duplicate.
	if st := src.Stats(); st.Skipped != 0 || st.Appended+st.Duplicates != 6 {
		t.Errorf("stats %+v: want 6 appended or found appended, nothing skipped", st)
	}
}
