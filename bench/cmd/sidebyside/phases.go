package main

// Building blocks of the scenarios: connecting many subscribers, paced and
// closed-loop publishing, waiting for deliveries, latency percentiles.

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type connectResult struct {
	ok, failed int
	took       time.Duration
	firstErr   error
}

// connectSubs opens n subscriptions, at most parallel dials at a time, and
// waits (at most timeout) for every response head.
func connectSubs(s *server, n, parallel int, timeout time.Duration, optsFor func(i int) subOpts) ([]*sub, connectResult) {
	subs := make([]*sub, n)
	var res connectResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	start := time.Now()
	deadline := start.Add(timeout)
	for i := range n {
		if time.Now().After(deadline) {
			subs = subs[:i]
			break
		}
		sem <- struct{}{}
		sb := &sub{opts: optsFor(i)}
		subs[i] = sb
		wg.Add(1)
		var once sync.Once
		sb.start(s.d, func(err error) {
			once.Do(func() {
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.ok++
				}
				mu.Unlock()
				<-sem
				wg.Done()
			})
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) + 5*time.Second):
		mu.Lock()
		if res.firstErr == nil {
			res.firstErr = fmt.Errorf("connect timed out")
		}
		mu.Unlock()
	}
	res.took = time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	return subs, res
}

// closeSubs closes every connection and waits for the reader goroutines.
func closeSubs(subs []*sub) {
	for _, s := range subs {
		s.close()
	}
	done := make(chan struct{})
	go func() {
		for _, s := range subs {
			s.wg.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		logf("warning: some subscriber goroutines did not end")
	}
}

// openCount counts subscriptions whose stream is still open.
func openCount(subs []*sub) int {
	n := 0
	for _, s := range subs {
		if s.closedAt.Load() == 0 {
			n++
		}
	}
	return n
}

// waitFor polls cond every 20 ms until it holds or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pacedResult reports a paced publishing run.
type pacedResult struct {
	attempted int
	ok        int
	failed    int
	perTopic  []int64 // successful publishes per topic index
	took      time.Duration
	firstErr  error
}

// publishPaced publishes count events at rate per second over conns
// keep-alive connections; event i goes to topic topicOf(i) and carries seq
// i+1 and its send time.
func publishPaced(s *server, topics []string, count int, rate float64, conns int, size int, topicOf func(i int) int) pacedResult {
	res := pacedResult{attempted: count, perTopic: make([]int64, len(topics))}
	jobs := make(chan int, count)
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newPubConn(s.d)
			defer p.close()
			g := newEventGen(uint64(w) + 1)
			var buf []byte
			for i := range jobs {
				t := topicOf(i)
				buf = g.event(buf[:0], size, int64(i+1), mono())
				if _, err := s.publish(p, topics[t], buf); err != nil {
					failed.Add(1)
					mu.Lock()
					if res.firstErr == nil {
						res.firstErr = err
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				atomic.AddInt64(&res.perTopic[t], 1)
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := range count {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	res.took = time.Since(start)
	res.ok, res.failed = int(ok.Load()), int(failed.Load())
	return res
}

// percentiles of latency samples in µs, reported in ms.
type latStats struct {
	N                  int
	P50, P90, P99, Max float64 // ms
}

func latencies(subs []*sub) latStats {
	n := 0
	for _, s := range subs {
		n += len(s.lat)
	}
	all := make([]int32, 0, n)
	for _, s := range subs {
		all = append(all, s.lat...)
	}
	if len(all) == 0 {
		return latStats{}
	}
	slices.Sort(all)
	q := func(p float64) float64 {
		i := int(p * float64(len(all)-1))
		return float64(all[i]) / 1000
	}
	return latStats{N: len(all), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: float64(all[len(all)-1]) / 1000}
}

// sampler records the peak RSS of a server while a phase runs.
type sampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func startSampler(s *server) *sampler {
	sm := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if r := s.stat().rssKiB; r > sm.peak.Load() {
				sm.peak.Store(r)
			}
			select {
			case <-sm.stop:
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

func (sm *sampler) end() int64 {
	close(sm.stop)
	<-sm.done
	return sm.peak.Load()
}
