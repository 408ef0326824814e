package integration_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// `caddy stop` with 1,000 open streams: the process exits promptly (a plain
// Caddy would wait on the streams forever), and every stream ends with a
// retry field, jittered so the clients do not all come back at once.
func TestCaddyStopWithOpenStreamsExitsPromptly(t *testing.T) {
	const streams = 1000
	port := testcaddy.FreePort(t)
	p := testcaddy.Start(t, fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /s/* {
		retry 1s
	}
}
`, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	type result struct {
		retry int // the last retry field seen
		err   error
	}
	results := make([]result, streams)
	var opened, wg sync.WaitGroup
	for i := range streams {
		opened.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := ssetest.Dial(addr, fmt.Sprintf("/s/stop-%d", i%10))
			opened.Done()
			if err != nil {
				results[i].err = err
				return
			}
			defer s.Close()
			if s.Response.StatusCode != http.StatusOK {
				results[i].err = fmt.Errorf("status %s", s.Response.Status)
				return
			}
			_ = s.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			// No events come; the stream must end by itself, at EOF.
			_, err = s.Next()
			if !errors.Is(err, io.EOF) {
				results[i].err = fmt.Errorf("stream ended with %v, want EOF", err)
			}
			results[i].retry = s.Retry()
		}()
	}
	opened.Wait()
	// Let every stream get past its head before stopping.
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	wg.Wait()

	endHints := map[int]int{}
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("stream %d: %v", i, r.err)
		}
		// The closing hint is retry (1s) plus up to 5s of jitter.
		if r.retry < 1000 || r.retry > 6000 {
			t.Fatalf("stream %d ended with retry %d, want a hint between 1000 and 6000", i, r.retry)
		}
		endHints[r.retry/1000]++
	}
	t.Logf("caddy stop with %d open streams: process exited after %v; closing retry hints by second: %v", streams, took.Round(time.Millisecond), endHints)
	if len(endHints) < 3 {
		t.Errorf("closing retry hints fall in %d distinct seconds (%v): not jittered", len(endHints), endHints)
	}
}
