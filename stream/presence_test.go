package stream_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/stream"
	"github.com/ssegate/caddy-sse/wire"
)

// Each serving mode is counted under its transport while the stream is
// open, and Disconnect ends it with the reason and a retry hint.
func TestPresenceAndDisconnect(t *testing.T) {
	cases := []struct {
		name   string
		noPark bool
		http2  bool
		want   func(stream.Presence) bool
	}{
		{"parked", false, false, func(p stream.Presence) bool { return p.Parked == 1 && p.Total() == 1 }},
		{"detached", true, false, func(p stream.Presence) bool { return p.Detached == 1 && p.Total() == 1 }},
		{"http2 in request", false, true, func(p stream.Presence) bool { return p.HTTP2 == 1 && p.Total() == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := replay.NewMemory(replay.Config{Framer: wire.EncodeEvent})
			defer store.Close()
			stop, cancel := context.WithCancel(context.Background())
			defer cancel()
			sv := stream.NewServer(stop, true)
			if tc.noPark {
				sv.NoPark()
			}
			ended := make(chan error, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cur, err := store.Subscribe(r.Context(), "t", "", replay.GapReplay)
				if err != nil {
					t.Error(err)
					return
				}
				if err := stream.WriteHead(w, nil); err != nil {
					return
				}
				sv.Serve(w, r, "t", cur, stream.Options{Retry: time.Second, Heartbeat: time.Minute, WriteTimeout: 5 * time.Second, Stop: stop}, func(_ stream.Stats, err error) {
					cur.Close()
					ended <- err
				})
			}))
			client := &http.Client{Timeout: 10 * time.Second}
			if tc.http2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
				client = srv.Client()
				client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test server
				client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
			} else {
				srv.Start()
			}
			defer srv.Close()

			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tc.http2 && resp.ProtoMajor != 2 {
				t.Fatalf("served over %s", resp.Proto)
			}
			for deadline := time.Now().Add(5 * time.Second); !tc.want(sv.Presence("t")); {
				if time.Now().After(deadline) {
					t.Fatalf("presence %+v", sv.Presence("t"))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := sv.Topics(); len(got) != 1 || got[0] != "t" {
				t.Errorf("topics %v", got)
			}
			if n := sv.Disconnect("other", "x"); n != 0 {
				t.Errorf("disconnected %d of another topic", n)
			}
			if n := sv.Disconnect("t", "going away"); n != 1 {
				t.Errorf("disconnected %d, want 1", n)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("the stream did not end cleanly: %v (%q)", err, body)
			}
			if !strings.HasSuffix(string(body), ": going away\n\nretry: 1000\n\n") {
				t.Errorf("the stream ended with %q", body)
			}
			select {
			case err := <-ended:
				if err != stream.ErrDisconnected {
					t.Errorf("ended with %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the stream's done was not called")
			}
			if p := sv.Presence("t"); p.Total() != 0 || len(sv.Topics()) != 0 {
				t.Errorf("still counted: %+v", p)
			}
		})
	}
}
