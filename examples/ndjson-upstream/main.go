// Command ndjson-upstream is a small NDJSON backend for trying caddy-sse's
// sources: it streams one JSON object per line, forever, and honours a
// resume cursor, as the kind of internal feed (job logs, change events) that
// caddy-sse puts in front of browsers.
//
//	go run ./examples/ndjson-upstream -addr 127.0.0.1:9000
//
// GET /feed streams lines such as
//
//	{"id":41,"channel":"/events/ticker","type":"tick","data":{"n":21,"at":"2026-01-02T03:04:05Z"}}
//	{"id":42,"channel":"/events/jobs/3","type":"log","data":"step 2 of 5"}
//	{"id":46,"channel":"/events/jobs/3","type":"exit","data":{"code":0}}
//
// ids rise by one (from the start time in seconds times 1000). GET /feed?after=41 (or with the header X-Cursor: 41)
// first sends the retained lines after id 41, then continues live, so a
// client that reconnects with the last id it saw misses nothing. With
// -drop-every n the server breaks the connection in the middle of every
// n-th line, to watch the source resume.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// feed is the upstream's log: the last lines, for resumption, and a signal
// for live readers.
type feed struct {
	mu      sync.Mutex
	lines   [][]byte // lines[i] has id first+i
	first   int64
	changed chan struct{}
}

const retained = 1000

func (f *feed) append(v map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.first + int64(len(f.lines))
	v["id"] = id
	b, _ := json.Marshal(v)
	f.lines = append(f.lines, append(b, '\n'))
	if len(f.lines) > retained {
		f.lines = f.lines[1:]
		f.first++
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// after returns the lines with an id above cursor (all retained ones for
// -1), and a channel closed at the next append.
func (f *feed) after(cursor int64) ([][]byte, int64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.first + int64(len(f.lines)) - 1
	from := max(cursor+1-f.first, 0)
	if from > int64(len(f.lines)) {
		from = int64(len(f.lines))
	}
	return f.lines[from:], last, f.changed
}

func (f *feed) produce(interval time.Duration) {
	job, step := 1, 0
	for n := 1; ; n++ {
		time.Sleep(interval)
		if n%2 == 1 {
			f.append(map[string]any{"channel": "/events/ticker", "type": "tick",
				"data": map[string]any{"n": n/2 + 1, "at": time.Now().UTC().Format(time.RFC3339)}})
			continue
		}
		channel := fmt.Sprintf("/events/jobs/%d", job)
		if step++; step <= 5 {
			f.append(map[string]any{"channel": channel, "type": "log", "data": fmt.Sprintf("step %d of 5", step)})
			continue
		}
		f.append(map[string]any{"channel": channel, "type": "exit", "data": map[string]any{"code": 0}})
		job, step = job+1, 0
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	interval := flag.Duration("interval", time.Second, "time between lines")
	dropEvery := flag.Int("drop-every", 0, "break the connection mid-line every n lines (0: never)")
	flag.Parse()

	// ids start from the start time, so they stay unique (and rising)
	// across restarts of this program: an id is a line's identity, and a
	// source drops a line whose id it has appended already.
	f := &feed{changed: make(chan struct{}), first: time.Now().Unix() * 1000}
	go f.produce(*interval)

	http.HandleFunc("GET /feed", func(w http.ResponseWriter, r *http.Request) {
		cursorText := r.URL.Query().Get("after")
		if cursorText == "" {
			cursorText = r.Header.Get("X-Cursor")
		}
		cursor := int64(-1) // no cursor: live lines only
		if cursorText != "" {
			c, err := strconv.ParseInt(cursorText, 10, 64)
			if err != nil {
				http.Error(w, "after: not an id", http.StatusBadRequest)
				return
			}
			cursor = c
		} else {
			_, last, _ := f.after(-1)
			cursor = last
		}
		log.Printf("%s connected, cursor %q", r.RemoteAddr, cursorText)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sent := 0
		for {
			lines, last, changed := f.after(cursor)
			for _, l := range lines {
				if sent++; *dropEvery > 0 && sent%*dropEvery == 0 {
					w.Write(l[:len(l)/2])
					w.(http.Flusher).Flush()
					log.Printf("%s: dropping the connection mid-line", r.RemoteAddr)
					panic(http.ErrAbortHandler)
				}
				if _, err := w.Write(l); err != nil {
					return
				}
			}
			w.(http.Flusher).Flush()
			cursor = last
			select {
			case <-changed:
			case <-r.Context().Done():
				log.Printf("%s gone", r.RemoteAddr)
				return
			}
		}
	})
	log.Printf("streaming NDJSON on http://%s/feed", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
