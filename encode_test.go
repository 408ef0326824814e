package caddysse_test

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Behind Caddy's own `encode` (the handler's compress option off), a
// stream is compressed with the encoding the client accepts, and every
// event is flushed through the compressor: a standard decoder reading the
// stream incrementally gets each event before the next is published.
func TestStreamBehindEncode(t *testing.T) {
	s := startSite(t, `
	encode zstd gzip
	sse /s/* {`+openPublish+`
	}`)
	decoders := map[string]func(io.Reader) (io.Reader, func(), error){
		"gzip": func(r io.Reader) (io.Reader, func(), error) {
			d, err := gzip.NewReader(r)
			if err != nil {
				return nil, nil, err
			}
			return d, func() { d.Close() }, nil
		},
		"zstd": func(r io.Reader) (io.Reader, func(), error) {
			// One goroutine, decoding as the bytes come: the default
			// concurrent decoder reads ahead.
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, nil, err
			}
			return d, d.Close, nil
		},
	}
	for _, name := range []string{"gzip", "zstd"} {
		t.Run(name, func(t *testing.T) {
			path := topic(t, "/s/", "t")
			st := openStream(t, s.url+path, decoders[name], "Accept-Encoding: "+name)
			if st.resp.StatusCode != http.StatusOK {
				t.Fatalf("GET answered %d", st.resp.StatusCode)
			}
			if got := st.resp.Header.Get("Content-Encoding"); got != name {
				t.Fatalf("Content-Encoding %q, want %q", got, name)
			}
			if got := st.resp.Header.Get("Content-Type"); got != "text/event-stream" {
				t.Errorf("Content-Type %q, want text/event-stream", got)
			}
			st.await("retry field", func() bool { return st.parser.Retry == 3000 })
			for i := range 5 {
				data := fmt.Sprintf("event %d via %s", i, name)
				id := s.publishID(path, data)
				// Wait for it before publishing the next: only a flush per
				// event gets it here.
				sameEvents(t, fmt.Sprint("event ", i), st.nextN(1), []string{id}, []string{data})
			}
		})
	}
}
