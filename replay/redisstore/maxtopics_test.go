package redisstore_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/redistest"
	"github.com/ssegate/caddy-sse/replay"
)

// Subscribers held open on made-up topics, on any node and however long
// (past the janitor's renewals), take no slot of the cluster-wide topic
// limit: publishers still get the topics they need. A topic counts once it
// is appended to or closed.
func TestSubscribersTakeNoTopicSlot(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, replay.Config{MaxTopics: 2})
	for i := range 10 {
		subscribe(t, a, fmt.Sprintf("/made-up/%d", i), "")
		subscribe(t, b, fmt.Sprintf("/made-up/b%d", i), "")
	}
	time.Sleep(1500 * time.Millisecond) // a janitor round on each node
	appendData(t, a, "/first", "1")
	if err := b.CloseTopic(t.Context(), "/second"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []replay.Store{a, b} {
		for _, topic := range []string{"/third", "/made-up/0"} {
			_, err := s.Append(t.Context(), topic, replay.Batch{Events: []replay.Draft{{Data: []byte("x")}}})
			if !errors.Is(err, replay.ErrTooManyTopics) {
				t.Fatalf("Append to %s past the limit: %v", topic, err)
			}
		}
		// Subscribing to new names still works.
		subscribe(t, s, "/made-up/later", "")
	}
	time.Sleep(1500 * time.Millisecond)
	counted, err := a.Client().ZRange(t.Context(), a.Prefix()+"topics", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(counted)
	if !slices.Equal(counted, []string{"/first", "/second"}) {
		t.Fatalf("the topic registry holds %q, want the two written topics", counted)
	}
}
