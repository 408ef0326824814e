// Package replaytest is the conformance suite of replay.Store: every store
// (memory, file, clustered) runs the same specifications, so nothing above the
// replay package can tell which one is in use.
//
// A store's test calls Run with a constructor:
//
//	func TestConformance(t *testing.T) {
//		replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
//			s := NewMyStore(cfg)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// A store whose history outlives its process (a file, a shared server) also
// calls RunDurable, with a constructor that can reopen the store: the
// specifications a resuming client relies on then hold across a restart.
//
// Every subtest gets a fresh, empty store from newStore and runs in parallel
// with the others, so the stores newStore returns must not share topics (a
// store backed by a shared server should use a unique key prefix per call).
// cfg always carries a Framer; the store must use it.
//
// Ids are opaque to the suite, with one exception: to build an id "ahead of
// the log" it increments the decimal number an id ends with (as in
// "<epoch>-<seq>" or Redis's "<ms>-<seq>"); for ids that do not end in digits
// that check is skipped.
package replaytest

import (
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// Framer is the Framer the suite configures: "<id>|<type>|<data>".
func Framer(id, eventType string, data []byte) []byte {
	return []byte(id + "|" + eventType + "|" + string(data))
}

// NewStore makes a fresh, empty store bounded by cfg; it must release the
// store when t ends (t.Cleanup).
type NewStore func(t *testing.T, cfg replay.Config) replay.Store

// patience bounds every wait for something that must happen "eventually".
const patience = 10 * time.Second

// Run runs the conformance suite against the stores newStore makes.
func Run(t *testing.T, newStore func(t *testing.T, cfg replay.Config) replay.Store) {
	specs := []struct {
		name string
		fn   func(t *testing.T, newStore NewStore)
	}{
		{"appended events are read back in order with ids, types, data and frames", testReadBack},
		{"a live cursor sees only events appended after it", testLiveCursor},
		{"an earliest cursor sees everything retained", testEarliestCursor},
		{"resuming after any id in the log returns exactly the events after it", testResumeEveryID},
		{"replay then live is one read: concurrent appends are delivered exactly once, in order", testConcurrentReplayThenLive},
		{"a reader blocked on Wait is woken by an append", testWaitWokenByAppend},
		{"a reader blocked on Wait is woken by CloseTopic", testWaitWokenByCloseTopic},
		{"an expired id gives an expired gap, then the oldest retained events under GapReplay", testExpiredReplay},
		{"an expired id gives an expired gap, then only new events under GapLive", testExpiredLive},
		{"an unknown id gives an unknown gap", testUnknownIDs},
		{"a gap found at subscribe keeps its reason when pruning moves the cursor before its first read", testPendingGapKeepsReason},
		{"a slow cursor that falls behind pruning gets an expired gap, then the retained events", testSlowCursor},
		{"a slow cursor under GapLive skips to new events", testSlowCursorLive},
		{"MaxEvents prunes oldest first", testMaxEvents},
		{"MaxBytes prunes oldest first", testMaxBytes},
		{"MaxAge prunes oldest first", testMaxAge},
		{"a batch is appended atomically and in order", testBatchAtomic},
		{"a batch larger than the bounds fails with ErrBatchTooLarge and appends nothing", testBatchTooLarge},
		{"a repeated batch key appends nothing and returns the original ids", testDedup},
		{"batch keys are per topic", testDedupPerTopic},
		{"MaxDedupKeys forgets the oldest keys first", testMaxDedupKeys},
		{"a closed topic delivers its remaining events, then Closed", testCloseTopicDrains},
		{"a closed topic refuses Append, CloseTopic and a Subscribe without a cursor", testCloseTopicRefuses},
		{"MaxTopics refuses new topics with ErrTooManyTopics", testMaxTopics},
		{"topics that only have subscribers do not count against MaxTopics", testMaxTopicsIgnoresSubscribedOnly},
		{"MaxSubscribersPerTopic refuses with ErrTooManySubscribers until a cursor closes", testMaxSubscribers},
		{"Configure with smaller bounds prunes existing history, keeping what still fits", testConfigureShrinks},
	}
	for _, s := range specs {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.fn(t, func(t *testing.T, cfg replay.Config) replay.Store {
				t.Helper()
				cfg.Framer = Framer
				return newStore(t, cfg)
			})
		})
	}
	// The specs of what must survive a restart hold within one life too.
	runLives(t, func(t *testing.T, cfg replay.Config) (replay.Store, func() replay.Store) {
		s := newStore(t, cfg)
		return s, func() replay.Store { return s }
	})
}
