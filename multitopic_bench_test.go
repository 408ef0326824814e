package caddysse_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

// BenchmarkMultiTopicStreams compares 1,000 streams of one topic with
// 1,000 streams of 20 topics each, through a real Caddy (memory store,
// plain HTTP/1.1, parked streams), client and server in this process:
//
//   - B/stream: heap and stacks held per idle stream (client side
//     included: a raw connection without a goroutine, the same in every
//     case);
//   - ns/delivery: CPU of the whole process (server, and clients reading
//     and counting events) per event delivered, one event published at a
//     time, each op one event.
//
// Cases: single (every stream on one topic); shared (every stream on the
// same 20 topics: the same fan-out, all the merge's cost); overlap (stream
// i on topics i…i+19 of 40: 40 sets of 25 streams, each event reaching
// 500); unique (each stream on 20 random topics of 200: 1,000 sets, about
// 100 streams per event). Run with
//
//	go test -run XXX -bench MultiTopicStreams -benchtime 300x .
func BenchmarkMultiTopicStreams(b *testing.B) {
	const streams = 1000
	cases := []struct {
		name   string
		topics func(i int, rnd *rand.Rand) []string
		pool   int
	}{
		{"single", func(int, *rand.Rand) []string { return []string{"t0"} }, 1},
		{"shared20", func(int, *rand.Rand) []string { return benchTopicRange(0, 20, 20) }, 20},
		{"overlap20", func(i int, _ *rand.Rand) []string { return benchTopicRange(i%40, 20, 40) }, 40},
		{"sets100", func(i int, _ *rand.Rand) []string { return benchTopicRange(i%100, 20, 100) }, 100},
		{"unique20", func(_ int, rnd *rand.Rand) []string {
			var ts []string
			for _, k := range rnd.Perm(200)[:20] {
				ts = append(ts, fmt.Sprint("t", k))
			}
			return ts
		}, 200},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			port := testcaddy.FreePort(b)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			testcaddy.Load(b, testcaddy.Format(fmt.Sprintf(`{
	admin off
	log {
		level ERROR
	}
}
http://%s {
	sse /b/* {
		heartbeat off
		history {
			events 100
		}
		limits {
			subscribers 100000
		}
		publish {
			allow_unauthenticated
		}
	}
}`, addr)))
			rnd := rand.New(rand.NewPCG(1, 2))
			sets := make([][]string, streams)
			reach := make([]int, c.pool) // streams per topic
			for i := range sets {
				sets[i] = c.topics(i, rnd)
				for _, t := range sets[i] {
					var k int
					fmt.Sscanf(t, "t%d", &k)
					reach[k]++
				}
			}
			// Memory per stream: what the second half of the streams
			// adds, so that what the first half set up (Caddy, lots,
			// fans) and what an earlier run leaves behind do not count.
			conns := make([]net.Conn, streams)
			var held [2]uint64
			for half := range 2 {
				for i := half * streams / 2; i < (half+1)*streams/2; i++ {
					path := "/b/x"
					if c.name == "single" {
						path = "/b/t0"
					} else {
						var q []string
						for _, t := range sets[i] {
							q = append(q, "topic=/b/"+t)
						}
						path += "?" + strings.Join(q, "&")
					}
					conn, err := benchDial(addr, path)
					if err != nil {
						b.Fatal(err)
					}
					conns[i] = conn
				}
				time.Sleep(2 * time.Second) // every stream parked
				held[half] = benchHeld()
			}
			if dir := os.Getenv("SSE_BENCH_HEAPPROFILE"); dir != "" {
				// Where the streams' memory goes (run with
				// -memprofilerate 1): the heap as the streams hold it.
				f, err := os.Create(filepath.Join(dir, c.name+".heap"))
				if err != nil {
					b.Fatal(err)
				}
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			var delivered atomic.Int64
			var wg sync.WaitGroup
			for _, conn := range conns {
				wg.Go(func() { benchCount(conn, &delivered) })
			}
			defer func() {
				for _, c := range conns {
					c.Close()
				}
				wg.Wait()
			}()
			client := &http.Client{Timeout: 10 * time.Second}
			publish := func(k int) {
				resp, err := client.Post(fmt.Sprintf("http://%s/b/t%d", addr, k%c.pool), "text/plain", strings.NewReader(`{"seq":1,"order":"A-1234","status":"shipped","items":3,"total":"42.00"}`))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// Warm up: every stream past its position block.
			publish(0)
			for delivered.Load() < int64(reach[0]) {
				time.Sleep(time.Millisecond)
			}
			delivered.Store(0)
			var want int64
			cpu0 := benchCPU()
			b.ResetTimer()
			for i := range b.N {
				k := (i + 1) % c.pool
				want += int64(reach[k])
				publish(k)
				for deadline := time.Now().Add(10 * time.Second); delivered.Load() < want; {
					if time.Now().After(deadline) {
						b.Fatalf("delivered %d of %d", delivered.Load(), want)
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
			b.StopTimer()
			cpu := benchCPU() - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(want), "ns/delivery")
			b.ReportMetric(float64(want)/float64(b.N), "deliveries/op")
			b.ReportMetric(float64(int64(held[1]-held[0]))/(streams/2), "B/stream")
		})
	}
}

func benchTopicRange(from, n, pool int) []string {
	var ts []string
	for k := range n {
		ts = append(ts, fmt.Sprint("t", (from+k)%pool))
	}
	return ts
}

// benchHeld is the live heap and the stacks in use after a collection.
func benchHeld() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

func benchCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDial opens a stream and reads its response head, keeping nothing
// but the connection.
func benchDial(addr, path string) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr)
	var head []byte
	buf := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := conn.Read(buf); err != nil {
			conn.Close()
			return nil, err
		}
		head = append(head, buf[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200")) {
		conn.Close()
		return nil, fmt.Errorf("GET %s: %s", path, head)
	}
	return conn, nil
}

// benchCount counts the events read from conn (their data lines).
func benchCount(conn net.Conn, n *atomic.Int64) {
	buf := make([]byte, 8<<10)
	marker := []byte("\ndata: ")
	var carry []byte
	for {
		k, err := conn.Read(buf)
		if k > 0 {
			chunk := append(carry, buf[:k]...)
			n.Add(int64(bytes.Count(chunk, marker)))
			keep := min(len(chunk), len(marker)-1)
			carry = append(carry[:0], chunk[len(chunk)-keep:]...)
		}
		if err != nil {
			return
		}
	}
}
