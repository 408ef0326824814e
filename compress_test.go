package caddysse_test

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// With `compress`, the handler compresses each event once and every
// subscriber gets the same bytes; a standard decoder must read the stream
// incrementally (each event before the next is sitetest.Published) and, when the
// topic closes, see a clean end of the compressed stream.
func TestSharedCompressionDecodesIncrementallyAndEndsCleanly(t *testing.T) {
	decoders := map[string]func(io.Reader) (io.Reader, error){
		"gzip": func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
		"zstd": func(r io.Reader) (io.Reader, error) {
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		},
	}
	port := testcaddy.FreePort(t)
	testcaddy.Load(t, fmt.Sprintf(`{
	admin off
}

http://127.0.0.1:%d {
	encode zstd gzip
	sse /c/* {
		compress gzip zstd
		publish {
			bearer reload-token
		}
	}
}
`, port))
	publisher := &http.Client{Timeout: 10 * time.Second}
	for _, name := range []string{"gzip", "zstd"} {
		t.Run(name, func(t *testing.T) {
			url := fmt.Sprintf("http://127.0.0.1:%d/c/shared-%s", port, name)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Accept-Encoding", name)
			// A transport that leaves Content-Encoding to us.
			resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Encoding"); got != name {
				t.Fatalf("Content-Encoding %q, want %q", got, name)
			}
			if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
				t.Errorf("Vary %q, want Accept-Encoding", got)
			}
			plain, err := decoders[name](resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			events := ssetest.NewReader(plain)
			for i := range 5 {
				data := fmt.Sprintf("event %d of %s", i, name)
				postEvent(t, publisher, url, data)
				ev, err := events.Next()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if ev.Data != data {
					t.Fatalf("event %d: data %q, want %q", i, ev.Data, data)
				}
			}
			del, _ := http.NewRequest(http.MethodDelete, url, nil)
			del.Header.Set("Authorization", "Bearer reload-token")
			if r, err := publisher.Do(del); err != nil {
				t.Fatal(err)
			} else {
				r.Body.Close()
			}
			ev, err := events.Next()
			if err != nil || ev.Type != "close" {
				t.Fatalf("after DELETE: %+v, %v; want the close event", ev, err)
			}
			// The decoder, not just the connection, must see the end: a
			// truncated stream reads as io.ErrUnexpectedEOF or a checksum
			// error instead of io.EOF.
			if _, err := events.Next(); !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("end of stream: %v, want a clean io.EOF", err)
			}
		})
	}
	t.Run("identity when nothing offered is accepted", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/c/identity", port), nil)
		req.Header.Set("Accept-Encoding", "br, gzip;q=0")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got := resp.Header.Get("Content-Encoding"); got != "" {
			t.Errorf("Content-Encoding %q, want none (encode must not compress either)", got)
		}
		first := make([]byte, len("retry: 3000\n\n"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "retry: 3000\n\n" {
			t.Errorf("identity stream starts %q (%v), want the plain retry field", first, err)
		}
	})
}
