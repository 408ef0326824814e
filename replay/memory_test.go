package replay_test

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/replay/replaytest"
)

// TestMain checks that no store goroutine (the memory janitor) outlives its
// store's Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newMemory(t testing.TB, cfg replay.Config) *replay.Memory {
	if cfg.Framer == nil {
		cfg.Framer = replaytest.Framer
	}
	m := replay.NewMemory(cfg)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func TestMemoryConformance(t *testing.T) {
	replaytest.Run(t, func(t *testing.T, cfg replay.Config) replay.Store {
		return newMemory(t, cfg)
	})
}

func appendOne(t *testing.T, s replay.Store, topic string) string {
	t.Helper()
	res, err := s.Append(t.Context(), topic, replay.Batch{Events: []replay.Draft{{Type: "x", Data: []byte("y")}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs[0]
}

func TestMemoryIDsAreEpochDashSeq(t *testing.T) {
	m := newMemory(t, replay.Config{})
	epoch := m.Epoch()
	if !regexp.MustCompile(`^[0-9a-z]{1,8}$`).MatchString(epoch) {
		t.Fatalf("Epoch() = %q, want 1 to 8 base-36 digits", epoch)
	}
	form := regexp.MustCompile(`^` + regexp.QuoteMeta(epoch) + `-([1-9][0-9]*)$`)
	var last uint64
	for i := range 10 {
		// One timeline for all topics: seqs rise across them.
		id := appendOne(t, m, "topic"+strconv.Itoa(i%3))
		sm := form.FindStringSubmatch(id)
		if sm == nil {
			t.Fatalf("id %q is not %q-<seq>", id, epoch)
		}
		seq, err := strconv.ParseUint(sm[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if seq <= last {
			t.Fatalf("seq %d after %d", seq, last)
		}
		last = seq
	}
}

func TestMemoryEpochsDiffer(t *testing.T) {
	a, b := newMemory(t, replay.Config{}), newMemory(t, replay.Config{})
	if a.Epoch() == b.Epoch() {
		t.Fatalf("two stores share the epoch %q", a.Epoch())
	}
}

func TestMemoryIDFromAnotherStoreIsUnknown(t *testing.T) {
	before := newMemory(t, replay.Config{})
	old := appendOne(t, before, "t")
	// The same topic, with events at the same seqs, in a later life.
	after := newMemory(t, replay.Config{})
	ids := []string{appendOne(t, after, "t"), appendOne(t, after, "t")}
	if strings.TrimPrefix(old, before.Epoch()) != strings.TrimPrefix(ids[0], after.Epoch()) {
		t.Fatalf("test assumption: %q and %q should have the same seq", old, ids[0])
	}
	c, err := after.Subscribe(t.Context(), "t", old, replay.GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gap == nil || p.Gap.Reason != replay.GapUnknown || p.Gap.Requested != old {
		t.Fatalf("gap = %+v, want unknown for %q", p.Gap, old)
	}
	if len(p.Events) != 2 || p.Events[0].ID != ids[0] || p.Events[1].ID != ids[1] {
		t.Fatalf("events after the gap: %v, want %q", p.Events, ids)
	}
}

func TestMemoryCloseEndsEverything(t *testing.T) {
	m := replay.NewMemory(replay.Config{Framer: replaytest.Framer})
	appendOne(t, m, "t")
	c, err := m.Subscribe(t.Context(), "t", "", replay.GapReplay)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Next(10)
	if err != nil || p.Wait == nil {
		t.Fatalf("Next = %+v, %v; want a Wait", p, err)
	}
	woken := make(chan error, 1)
	go func() {
		<-p.Wait
		_, err := c.Next(10)
		woken <- err
	}()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woken:
		if !errors.Is(err, replay.ErrStoreClosed) {
			t.Fatalf("Next after Close: %v, want ErrStoreClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake a waiting reader")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Append(t.Context(), "t", replay.Batch{}); !errors.Is(err, replay.ErrStoreClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := m.Subscribe(t.Context(), "t", "", replay.GapReplay); !errors.Is(err, replay.ErrStoreClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := m.CloseTopic(t.Context(), "t"); !errors.Is(err, replay.ErrStoreClosed) {
		t.Fatalf("CloseTopic after Close: %v", err)
	}
	c.Close()
}
