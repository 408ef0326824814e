package stream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

// expiryServer serves topic "t" of store through a stream.Server in one
// mode; each request's stream expires at the time its ?expires= says (unix
// milliseconds), and how each stream ended is sent on ended.
type expiryServer struct {
	store *replay.Memory
	sv    *stream.Server
	http  *httptest.Server
	ended chan error
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func newExpiryServer(t *testing.T, mode stream.Mode, enc *stream.Encoding) *expiryServer {
	t.Helper()
	es := &expiryServer{
		store: replay.NewMemory(replay.Config{Framer: wire.EncodeEvent, Encodings: 2, MaxEvents: 100000, MaxBytes: 1 << 30}),
		ended: make(chan error, 16),
	}
	stopping, stop := context.WithCancel(context.Background())
	es.stop = stop
	es.sv = stream.NewServer(stopping, mode != stream.InRequest)
	if mode == stream.Detached {
		es.sv.NoPark()
	}
	es.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ms int64
		fmt.Sscan(r.URL.Query().Get("expires"), &ms)
		cur, err := es.store.Subscribe(r.Context(), "t", r.Header.Get("Last-Event-ID"), replay.GapReplay)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := stream.WriteHead(w, enc); err != nil {
			cur.Close()
			return
		}
		es.wg.Add(1)
		opts := stream.Options{
			WriteTimeout: 10 * time.Second, Stop: stopping, Encoding: enc,
			Expires: time.UnixMilli(ms), ExpiredEvent: "expired",
		}
		es.sv.Serve(w, r, "t", cur, opts, func(_ stream.Stats, err error) {
			cur.Close()
			es.ended <- err
			es.wg.Done()
		})
	}))
	t.Cleanup(func() {
		es.stop()
		es.http.Close()
		es.wg.Wait()
		es.store.Close()
	})
	return es
}

func (es *expiryServer) publish(t testing.TB, data string) string {
	t.Helper()
	res, err := es.store.Append(context.Background(), "t", replay.Batch{Events: []replay.Draft{{Type: "message", Data: []byte(data)}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs[0]
}

// open subscribes with a stream that expires at exp, and returns the
// response.
func (es *expiryServer) open(t *testing.T, exp time.Time, lastID string, enc *stream.Encoding) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/?expires=%d", es.http.URL, exp.UnixMilli()), nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if enc != nil {
		// Go's transport decompresses gzip only when it asked for it itself.
		req.Header.Set("Accept-Encoding", enc.Name)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readAll reads a stream to its end and returns its events, failing unless
// it ended cleanly (a complete body, and for gzip a valid trailer).
func readAll(t *testing.T, resp *http.Response, enc *stream.Encoding) []ssetest.Event {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the stream did not end cleanly: %v (read %q)", err, body)
	}
	if enc != nil {
		body = decode(t, enc, body)
	}
	return ssetest.NewParser().Feed(body)
}

var modes = []stream.Mode{stream.InRequest, stream.Detached, stream.Parked}

// A stream whose credential expires gets the expired event at that moment,
// then a clean end, in every serving mode and through shared compression;
// resuming with its last id then gets exactly what it missed.
func TestExpiryEndsStreamWithExpiredEvent(t *testing.T) {
	for _, mode := range modes {
		for _, enc := range []*stream.Encoding{nil, stream.Gzip} {
			name := mode.String() + "/identity"
			if enc != nil {
				name = mode.String() + "/" + enc.Name
			}
			t.Run(name, func(t *testing.T) {
				es := newExpiryServer(t, mode, enc)
				first := es.publish(t, "before")
				exp := time.Now().Add(time.Second).Truncate(time.Millisecond) // as sent
				resp := es.open(t, exp, "earliest", enc)
				if mode != stream.InRequest {
					waitMode(t, es.sv, mode)
				}
				events := readAll(t, resp, enc)
				ended := time.Now()
				if ended.Before(exp) {
					t.Errorf("the stream ended %v before its credential expired", exp.Sub(ended))
				}
				if late := ended.Sub(exp); late > 2*time.Second {
					t.Errorf("the stream ended %v after its credential expired", late)
				}
				if len(events) != 2 || events[0].ID != first || events[0].Data != "before" ||
					events[1].Type != "expired" || events[1].Data != `{"reason":"credential expired"}` {
					t.Fatalf("events %+v, want the event then expired", events)
				}
				if err := <-es.ended; !errors.Is(err, stream.ErrExpired) {
					t.Errorf("the stream ended with %v, want ErrExpired", err)
				}
				// Published while away; the refreshed credential resumes.
				missed := es.publish(t, "missed")
				resp = es.open(t, time.Now().Add(300*time.Millisecond), events[1].ID, enc)
				events = readAll(t, resp, enc)
				if len(events) != 2 || events[0].ID != missed || events[0].Data != "missed" || events[1].Type != "expired" {
					t.Errorf("resumed with %+v, want exactly the missed event then expired", events)
				}
				<-es.ended
			})
		}
	}
}

// waitMode waits until a stream is served in mode m.
func waitMode(t *testing.T, sv *stream.Server, m stream.Mode) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sv.Streams(m) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no stream served %s", m)
		}
		time.Sleep(time.Millisecond)
	}
}

// A stream kept busy by a steady flow of events still ends when its
// credential expires, not when the flow stops.
func TestExpiryEndsBusyStream(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			es := newExpiryServer(t, mode, nil)
			done := make(chan struct{})
			var publisher sync.WaitGroup
			defer publisher.Wait()
			defer close(done)
			publisher.Go(func() {
				data := []byte(strings.Repeat("x", 100))
				for {
					select {
					case <-done:
						return
					case <-time.After(2 * time.Millisecond):
						_, _ = es.store.Append(context.Background(), "t", replay.Batch{Events: []replay.Draft{{Type: "message", Data: data}}})
					}
				}
			})
			exp := time.Now().Add(800 * time.Millisecond)
			events := readAll(t, es.open(t, exp, "", nil), nil)
			if late := time.Since(exp); late > 2*time.Second {
				t.Errorf("the busy stream ended %v after its credential expired", late)
			}
			if len(events) < 2 || events[len(events)-1].Type != "expired" {
				t.Fatalf("%d events, the last %+v; want events then expired", len(events), events[len(events)-1])
			}
			<-es.ended
		})
	}
}

// A parked stream with a near expiry joins a lot whose driver sleeps
// (no heartbeats, a stream parked with a far expiry): it still ends on
// time, and the other stream goes on.
func TestExpiryWakesSleepingLot(t *testing.T) {
	es := newExpiryServer(t, stream.Parked, nil)
	far := es.open(t, time.Now().Add(time.Hour), "", nil)
	waitMode(t, es.sv, stream.Parked)
	time.Sleep(50 * time.Millisecond) // the driver is asleep
	exp := time.Now().Add(800 * time.Millisecond)
	near := readAll(t, es.open(t, exp, "", nil), nil)
	if late := time.Since(exp); late > time.Second {
		t.Errorf("the near stream ended %v after its credential expired", late)
	}
	if len(near) != 1 || near[0].Type != "expired" {
		t.Errorf("near stream got %+v, want the expired event only", near)
	}
	<-es.ended
	id := es.publish(t, "still here")
	p := ssetest.NewParser()
	buf := make([]byte, 4096)
	for {
		n, err := far.Body.Read(buf)
		if evs := p.Feed(buf[:n]); len(evs) > 0 {
			if evs[0].ID != id {
				t.Errorf("far stream got %+v", evs)
			}
			break
		}
		if err != nil {
			t.Fatalf("far stream: %v", err)
		}
	}
}
