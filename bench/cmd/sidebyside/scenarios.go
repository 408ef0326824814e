package main

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type runner struct {
	c       config
	binDir  string
	tmpRoot string
	pairs   int // alternation counter

	retries    int
	retrySpent time.Duration
}

// measureQuiet runs a short measurement again (up to -noisy-retries times,
// within -noisy-total over the run) while other processes used more than
// -noisy cores during it, and keeps the least perturbed run.
func measureQuiet[T any](r *runner, run func() T, other func(T) float64) T {
	best := run()
	for i := 0; i < r.c.noisyRetries && other(best) > r.c.noisyLimit && r.retrySpent < r.c.noisyTotal; i++ {
		logf("  other processes used %.2f cores during the least perturbed run so far: running it again", other(best))
		t0 := time.Now()
		x := run()
		r.retries++
		r.retrySpent += time.Since(t0)
		if other(x) < other(best) {
			best = x
		}
	}
	return best
}

func (r *runner) fanoutQuiet(sp fanSpec) fanRes {
	return measureQuiet(r, func() fanRes { return r.fanout(sp) }, func(x fanRes) float64 { return x.OtherCores })
}

// ingestOn measures one ingest mode on a fresh server.
func (r *runner) ingestOn(name, mode string) ingestRes {
	s, err := r.start(serverConf{name: name})
	if err != nil {
		return ingestRes{Server: name, Mode: mode, Err: err.Error()}
	}
	defer s.stop()
	return r.ingest(s, mode, r.c.ingestConns, r.c.ingestDuration, r.c.batch)
}

// order alternates which server goes first, pair after pair.
func (r *runner) order() []string {
	r.pairs++
	var o []string
	if r.pairs%2 == 1 {
		o = []string{oursName, mercureName, nchanName}
	} else {
		o = []string{nchanName, mercureName, oursName}
	}
	var out []string
	for _, n := range o {
		if r.c.servers[n] {
			out = append(out, n)
		}
	}
	return out
}

func (r *runner) start(conf serverConf) (*server, error) {
	if conf.transport == "" {
		conf.transport, conf.h2Streams, conf.wrapper, conf.h2Lean = r.c.transport, r.c.h2Streams, r.c.wrapper, r.c.h2Lean
	}
	conf.pprofDir = r.c.pprofDir
	conf.oursServers = r.c.oursServers
	if r.c.quietCores > 0 {
		waitQuiet(r.c.quietCores, r.c.quietWait, r.c.quietTotal)
	}
	s, err := startServer(r.binDir, r.tmpRoot, conf, r.c.sources)
	if err != nil {
		return nil, err
	}
	// warm up: one publish, so the first measured one is not the first ever
	p := newPubConn(s.d)
	_, err = s.publish(p, "warmup", []byte(`{"warmup":true}`))
	p.close()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("warm-up publish to %s: %w", conf.name, err)
	}
	time.Sleep(300 * time.Millisecond)
	return s, nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---------------------------------------------------------------- idle/scale

type idleRes struct {
	Server        string
	N             int
	Connected     int
	ConnectFailed int
	ConnectSecs   float64
	HoldSecs      float64
	BaseRSSMiB    float64
	EndRSSMiB     float64
	PeakRSSMiB    float64
	KiBPerSub     float64
	Open          int // still open at the end of the hold
	WithHeartbeat int // received at least one heartbeat during the hold
	MinHeartbeats int64
	ProbeReceived int
	HoldCPUms     float64
	OtherCores    float64 // CPU used by other processes during the hold
	Err           string
}

// idle holds n subscribers on one topic for hold, then publishes one probe
// event that every one of them must receive.
func (r *runner) idle(name string, n int, hold time.Duration) idleRes {
	res := idleRes{Server: name, N: n, HoldSecs: hold.Seconds()}
	s, err := r.start(serverConf{name: name})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer s.stop()
	base := s.stat()
	res.BaseRSSMiB = mib(base.rssKiB)
	topic := "idle"
	subs, cr := connectSubs(s, n, 256, 180*time.Second, func(int) subOpts {
		return subOpts{path: s.subPath(topic), decode: true, target: 1}
	})
	defer closeSubs(subs)
	res.Connected, res.ConnectFailed, res.ConnectSecs = cr.ok, cr.failed, cr.took.Seconds()
	if cr.firstErr != nil {
		res.Err = "connect: " + cr.firstErr.Error()
	}
	hb0 := make([]int64, len(subs))
	for i, sb := range subs {
		hb0[i] = sb.heartbeats.Load()
	}
	sm := startSampler(s)
	st0, bg0 := s.stat(), snapBG(s)
	time.Sleep(hold)
	st1 := s.stat()
	s.profile("heap", "gc=1", fmt.Sprintf("idle%d", n))
	s.profile("goroutine", "debug=1", fmt.Sprintf("idle%d", n))
	s.profile("metrics", "", fmt.Sprintf("idle%d", n))
	res.OtherCores = bg0.cores(snapBG(s))
	res.PeakRSSMiB = mib(sm.end())
	res.EndRSSMiB = mib(st1.rssKiB)
	res.HoldCPUms = float64((st1.cpu - st0.cpu).Milliseconds())
	if res.Connected > 0 {
		res.KiBPerSub = float64(st1.rssKiB-base.rssKiB) / float64(res.Connected)
	}
	res.Open = openCount(subs)
	res.MinHeartbeats = -1
	for i, sb := range subs {
		if sb.closedAt.Load() != 0 {
			continue
		}
		h := sb.heartbeats.Load() - hb0[i]
		if h >= 1 {
			res.WithHeartbeat++
		}
		if res.MinHeartbeats < 0 || h < res.MinHeartbeats {
			res.MinHeartbeats = h
		}
	}
	// probe: every open subscriber must still receive a live event
	p := newPubConn(s.d)
	g := newEventGen(7)
	_, err = s.publish(p, topic, g.event(nil, 200, 1, mono()))
	p.close()
	if err != nil {
		res.Err = "probe: " + err.Error()
	}
	waitFor(15*time.Second, func() bool {
		for _, sb := range subs {
			if sb.closedAt.Load() == 0 && sb.events.Load() < 1 {
				return false
			}
		}
		return true
	})
	for _, sb := range subs {
		if sb.events.Load() >= 1 {
			res.ProbeReceived++
		}
	}
	logf("  %s idle n=%d: connected %d (%.1fs), %.1f KiB/sub, open %d, heartbeat %d, probe %d",
		name, n, res.Connected, res.ConnectSecs, res.KiBPerSub, res.Open, res.WithHeartbeat, res.ProbeReceived)
	return res
}

// ---------------------------------------------------------------- fan-out

type fanSpec struct {
	conf     serverConf
	n        int
	topics   int
	rate     float64
	duration time.Duration
	size     int
	// idleHold is how long subscribers sit before publishing starts (idle
	// memory is read at its end); at least 1 s.
	idleHold time.Duration
	// decodeSample: subscribers [0, decodeSample) decode compressed streams;
	// the others only count bytes. <0: all.
	decodeSample int
	pubConns     int
	// perStream > 0: each subscriber is one multi-topic stream on
	// perStream topics, subscriber i on topics i, i+1, … (modulo topics),
	// so that sets overlap; 0: subscriber i on topic i%topics.
	perStream int
}

// topicsOf lists the topics (indices) subscriber i follows.
func (sp fanSpec) topicsOf(i int) []int {
	if sp.perStream == 0 {
		return []int{i % sp.topics}
	}
	ks := make([]int, sp.perStream)
	for k := range ks {
		ks[k] = (i + k) % sp.topics
	}
	return ks
}

type fanRes struct {
	Server       string
	Variant      string
	Encoding     string // Content-Encoding the subscribers got
	N            int
	Topics       int
	PerStream    int // topics per stream (multi-topic scenario); 0: one
	Rate         float64
	Published    int
	PubFailed    int
	Expected     int64 // deliveries expected by the decoding subscribers
	Delivered    int64
	Lost         int64
	OutOfOrder   int64
	Resets       int64
	Disconnected int
	DecodedSubs  int
	Lat          latStats
	ServerCPUms  float64
	ClientCPUms  float64
	USPerDeliv   float64 // server CPU µs per delivery
	ClientUSPerD float64
	BaseRSSMiB   float64
	ConnRSSMiB   float64
	KiBPerSub    float64
	DrainMs      float64 // from the last publish's answer to the last delivery
	PeakRSSMiB   float64 // while publishing and delivering
	OtherCores   float64 // CPU used by other processes while publishing
	Err          string
}

func (r *runner) fanout(sp fanSpec) fanRes {
	res := fanRes{Server: sp.conf.name, Variant: string(sp.conf.variant), N: sp.n, Topics: sp.topics, PerStream: sp.perStream, Rate: sp.rate}
	s, err := r.start(sp.conf)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer s.stop()
	topics := make([]string, sp.topics)
	for i := range topics {
		topics[i] = "t" + strconv.Itoa(i)
	}
	count := int(sp.rate * sp.duration.Seconds())
	exp := make([]int64, sp.topics)
	for k := range exp {
		exp[k] = int64(count / sp.topics)
		if k < count%sp.topics {
			exp[k]++
		}
	}
	decode := func(i int) bool {
		return sp.conf.variant.acceptEncoding() == "" || sp.decodeSample < 0 || i < sp.decodeSample
	}
	base := s.stat()
	res.BaseRSSMiB = mib(base.rssKiB)
	subs, cr := connectSubs(s, sp.n, 256, 120*time.Second, func(i int) subOpts {
		o := subOpts{
			acceptEncoding: sp.conf.variant.acceptEncoding(),
			decode:         decode(i),
			recordLatency:  decode(i),
		}
		ks := sp.topicsOf(i)
		for _, k := range ks {
			o.target += exp[k]
		}
		if sp.perStream == 0 {
			o.path = s.subPath(topics[ks[0]])
		} else {
			names := make([]string, len(ks))
			for j, k := range ks {
				names[j] = topics[k]
			}
			o.path = s.multiPath(names)
			// Order is per topic: the topic of an event is its seq's
			// (see publishPaced).
			o.topics = sp.topics
		}
		return o
	})
	defer closeSubs(subs)
	if cr.firstErr != nil {
		res.Err = fmt.Sprintf("connect: %d failed: %v", cr.failed, cr.firstErr)
	}
	if len(subs) > 0 && subs[0].closedAt.Load() == 0 {
		res.Encoding = subs[0].head.contentEncoding
	}
	hold := max(sp.idleHold, time.Second)
	time.Sleep(hold)
	st := s.stat()
	res.ConnRSSMiB = mib(st.rssKiB)
	if cr.ok > 0 {
		res.KiBPerSub = float64(st.rssKiB-base.rssKiB) / float64(cr.ok)
	}
	sm := startSampler(s)
	bg0 := snapBG(s)
	cpu0, self0 := s.stat().cpu, selfCPU()
	profiled := make(chan struct{})
	go func() {
		defer close(profiled)
		name := fmt.Sprintf("fanout%d", sp.n)
		if sp.topics > 1 {
			name += fmt.Sprintf("-topics%d", sp.topics)
		}
		if sp.perStream > 0 {
			name += fmt.Sprintf("-per%d", sp.perStream)
		}
		s.profile("profile", fmt.Sprintf("seconds=%d", int(sp.duration.Seconds())), name)
	}()
	pr := publishPaced(s, topics, count, sp.rate, sp.pubConns, sp.size, func(i int) int { return i % sp.topics })
	if s.conf.pprofDir == "" {
		<-profiled
	}
	tLast := time.Now()
	res.Published, res.PubFailed = pr.ok, pr.failed
	if pr.firstErr != nil && res.Err == "" {
		res.Err = "publish: " + pr.firstErr.Error()
	}
	expectedOf := func(i int) int64 {
		var e int64
		for _, k := range sp.topicsOf(i) {
			e += pr.perTopic[k]
		}
		return e
	}
	waitFor(30*time.Second, func() bool {
		for i, sb := range subs {
			if decode(i) && sb.closedAt.Load() == 0 && sb.events.Load() < expectedOf(i) {
				return false
			}
		}
		return true
	})
	var lastDone int64
	for i, sb := range subs {
		if decode(i) {
			if d := sb.doneAt.Load(); d > lastDone {
				lastDone = d
			}
		}
	}
	res.DrainMs = float64(time.Since(tLast).Milliseconds())
	if sp.decodeSample >= 0 && sp.n > sp.decodeSample && sp.conf.variant.acceptEncoding() != "" {
		time.Sleep(500 * time.Millisecond) // let the counted-only streams finish too
	}
	cpu1, self1 := s.stat().cpu, selfCPU()
	res.OtherCores = bg0.cores(snapBG(s))
	res.PeakRSSMiB = mib(sm.end())
	var allExpected int64
	for i, sb := range subs {
		e := expectedOf(i)
		allExpected += e
		if sb.closedAt.Load() != 0 {
			res.Disconnected++
		}
		if !decode(i) {
			continue
		}
		res.DecodedSubs++
		got := sb.events.Load()
		res.Expected += e
		res.Delivered += got
		if got < e {
			res.Lost += e - got
		}
		res.OutOfOrder += sb.ooo.Load()
		res.Resets += sb.resets.Load()
	}
	closeSubs(subs)
	<-profiled
	res.Lat = latencies(subs)
	deliveries := res.Delivered
	if res.DecodedSubs < len(subs) {
		deliveries = allExpected
	}
	res.ServerCPUms = float64((cpu1 - cpu0).Microseconds()) / 1000
	res.ClientCPUms = float64((self1 - self0).Microseconds()) / 1000
	if deliveries > 0 {
		res.USPerDeliv = float64((cpu1 - cpu0).Microseconds()) / float64(deliveries)
		res.ClientUSPerD = float64((self1 - self0).Microseconds()) / float64(deliveries)
	}
	logf("  %s fan-out n=%d topics=%d per stream=%d rate=%.0f/s: published %d, delivered %d/%d, lost %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %.1f µs/delivery (client %.1f), %.1f KiB/sub, other processes %.2f cores%s",
		res.Server+variantSuffix(sp.conf.variant), sp.n, sp.topics, max(1, sp.perStream), sp.rate, res.Published, res.Delivered, res.Expected, res.Lost,
		res.Lat.P50, res.Lat.P99, res.Lat.Max, res.USPerDeliv, res.ClientUSPerD, res.KiBPerSub, res.OtherCores, errSuffix(res.Err))
	return res
}

func variantSuffix(v variant) string {
	if v == "" || v == plainVariant {
		return ""
	}
	return " [" + string(v) + "]"
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " ERROR: " + e
}

// ---------------------------------------------------------------- ingest

type ingestRes struct {
	Server       string
	Mode         string // single, batch, plain
	Conns        int
	Secs         float64
	Requests     int64
	Events       int64
	ReqPerSec    float64
	EventsPerSec float64
	Errors       int64
	ServerCPUms  float64
	OtherCores   float64
	Err          string
}

func (r *runner) ingest(s *server, mode string, conns int, dur time.Duration, batch int) ingestRes {
	res := ingestRes{Server: s.conf.name, Mode: mode, Conns: conns}
	var reqs, errs atomic.Int64
	var stop atomic.Bool
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	topic := "ingest-" + mode
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newPubConn(s.d)
			defer p.close()
			g := newEventGen(uint64(100 + w))
			var buf []byte
			var seq int64
			for !stop.Load() {
				var err error
				switch mode {
				case "single":
					seq++
					buf = g.event(buf[:0], 200, seq, mono())
					_, err = s.publish(p, topic, buf)
				case "batch":
					buf = buf[:0]
					for range batch {
						seq++
						buf = g.event(buf, 200, seq, mono())
						buf = append(buf, '\n')
					}
					err = s.publishBatch(p, topic, buf)
				case "plain":
					seq++
					buf = g.event(buf[:0], 200, seq, mono())
					var st int
					st, _, err = p.post("/plain", "application/json", "Bearer "+bearerToken, buf)
					if err == nil && st != 200 {
						err = fmt.Errorf("status %d", st)
					}
				}
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				reqs.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // warm-up, not counted
	r0, e0, st0, t0, bg0 := reqs.Load(), errs.Load(), s.stat(), time.Now(), snapBG(s)
	time.Sleep(dur)
	r1, e1, st1, t1 := reqs.Load(), errs.Load(), s.stat(), time.Now()
	res.OtherCores = bg0.cores(snapBG(s))
	stop.Store(true)
	wg.Wait()
	res.Secs = t1.Sub(t0).Seconds()
	res.Requests = r1 - r0
	res.Errors = e1 - e0
	res.Events = res.Requests
	if mode == "batch" {
		res.Events *= int64(batch)
	}
	res.ReqPerSec = float64(res.Requests) / res.Secs
	res.EventsPerSec = float64(res.Events) / res.Secs
	res.ServerCPUms = float64((st1.cpu - st0.cpu).Milliseconds())
	res.Err = errString(firstErr)
	logf("  %s ingest %s: %.0f req/s, %.0f events/s, %d errors, other processes %.2f cores%s", s.conf.name, mode, res.ReqPerSec, res.EventsPerSec, res.Errors, res.OtherCores, errSuffix(res.Err))
	return res
}

// ---------------------------------------------------------------- catch-up

type catchupRes struct {
	Server        string
	N             int
	Missed        int
	HistorySize   int
	Connected     int
	ConnectFailed int
	Completed     int // received every missed event
	AllLiveSecs   float64
	P50LiveSecs   float64
	Disconnected  int // stream ended before the subscriber had caught up
	Lost          int64
	Resets        int64
	OutOfOrder    int64
	ProbeReceived int // live event after the catch-up, by subscribers still open
	StillOpen     int
	PeakRSSMiB    float64
	ServerCPUms   float64
	OtherCores    float64
	Err           string
}

func (r *runner) catchup(name string, n, missed int) catchupRes {
	res := catchupRes{Server: name, N: n, Missed: missed, HistorySize: max(1000, missed)}
	conf := serverConf{name: name, oursHistory: max(1000, missed)}
	if name == mercureName {
		// Mercure's bolt history must still hold the resume id itself, one
		// more entry than the events to replay.
		conf.mercureHistory = missed + 1
		res.HistorySize = missed + 1
	}
	s, err := r.start(conf)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer s.stop()
	topic := "catchup"
	p := newPubConn(s.d)
	defer p.close()
	g := newEventGen(3)
	marker, err := s.publish(p, topic, []byte(`{"marker":true}`))
	if err != nil || marker == "" {
		res.Err = fmt.Sprintf("marker publish: %v (id %q)", err, marker)
		return res
	}
	for i := 1; i <= missed; i++ {
		if _, err := s.publish(p, topic, g.event(nil, 200, int64(i), mono())); err != nil {
			res.Err = "publish: " + err.Error()
			return res
		}
	}
	time.Sleep(500 * time.Millisecond)
	sm := startSampler(s)
	st0, bg0 := s.stat(), snapBG(s)
	t0 := mono()
	subs, cr := connectSubs(s, n, n, 60*time.Second, func(int) subOpts {
		return subOpts{path: s.subPath(topic), lastEventID: marker, decode: true, target: int64(missed)}
	})
	defer closeSubs(subs)
	res.Connected, res.ConnectFailed = cr.ok, cr.failed
	if cr.firstErr != nil {
		res.Err = "connect: " + cr.firstErr.Error()
	}
	waitFor(60*time.Second, func() bool {
		for _, sb := range subs {
			if sb.doneAt.Load() == 0 && sb.closedAt.Load() == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(200 * time.Millisecond)
	st1 := s.stat()
	res.OtherCores = bg0.cores(snapBG(s))
	var done []float64
	for _, sb := range subs {
		got := sb.events.Load()
		if d := sb.doneAt.Load(); d != 0 {
			res.Completed++
			done = append(done, float64(d-t0)/1e9)
		} else if sb.closedAt.Load() != 0 {
			res.Disconnected++
		}
		if got < int64(missed) {
			res.Lost += int64(missed) - got
		}
		res.Resets += sb.resets.Load()
		res.OutOfOrder += sb.ooo.Load()
	}
	if len(done) > 0 {
		slices.Sort(done)
		res.AllLiveSecs = done[len(done)-1]
		res.P50LiveSecs = done[len(done)/2]
	}
	// one live event after the catch-up
	if _, err := s.publish(p, topic, g.event(nil, 200, int64(missed+1), mono())); err != nil && res.Err == "" {
		res.Err = "probe: " + err.Error()
	}
	waitFor(10*time.Second, func() bool {
		for _, sb := range subs {
			if sb.closedAt.Load() == 0 && sb.events.Load() < int64(missed+1) {
				return false
			}
		}
		return true
	})
	for _, sb := range subs {
		if sb.closedAt.Load() == 0 {
			res.StillOpen++
			if sb.events.Load() >= int64(missed+1) {
				res.ProbeReceived++
			}
		}
	}
	res.PeakRSSMiB = mib(sm.end())
	res.ServerCPUms = float64((st1.cpu - st0.cpu).Milliseconds())
	logf("  %s catch-up n=%d missed=%d: completed %d, all live after %.2fs (p50 %.2fs), disconnected %d, lost %d, resets %d, probe %d/%d%s",
		name, n, missed, res.Completed, res.AllLiveSecs, res.P50LiveSecs, res.Disconnected, res.Lost, res.Resets, res.ProbeReceived, res.StillOpen, errSuffix(res.Err))
	return res
}

// ---------------------------------------------------------------- compression corpus

type corpusRes struct {
	Variant           string
	Encoding          string
	Size              int
	Events            int
	BodyBytesPerEvent float64 // after de-chunking, as compressed
	WireBytesPerEvent float64 // TCP payload, with chunk framing
	Received          int64
	Expected          int64
	Err               string
}

// corpus measures bytes per event for 200-byte and 2-KiB JSON events.
func (r *runner) corpus(v variant, sizes []int, subsPer, events int) []corpusRes {
	var out []corpusRes
	s, err := r.start(serverConf{name: oursName, variant: v})
	if err != nil {
		for _, sz := range sizes {
			out = append(out, corpusRes{Variant: string(v), Size: sz, Err: err.Error()})
		}
		return out
	}
	defer s.stop()
	for _, sz := range sizes {
		res := corpusRes{Variant: string(v), Size: sz, Events: events}
		topic := "corpus" + strconv.Itoa(sz)
		subs, cr := connectSubs(s, subsPer, subsPer, 30*time.Second, func(int) subOpts {
			return subOpts{path: s.subPath(topic), acceptEncoding: v.acceptEncoding(), decode: true, target: int64(events)}
		})
		if cr.firstErr != nil {
			res.Err = cr.firstErr.Error()
		}
		time.Sleep(300 * time.Millisecond)
		if len(subs) > 0 {
			res.Encoding = subs[0].head.contentEncoding
		}
		var b0, w0 int64
		for _, sb := range subs {
			b0 += sb.bodyBytes.Load()
			w0 += sb.wireBytes.Load()
		}
		pr := publishPaced(s, []string{topic}, events, 200, 1, sz, func(int) int { return 0 })
		if pr.firstErr != nil {
			res.Err = pr.firstErr.Error()
		}
		waitFor(20*time.Second, func() bool {
			for _, sb := range subs {
				if sb.closedAt.Load() == 0 && sb.events.Load() < int64(pr.ok) {
					return false
				}
			}
			return true
		})
		time.Sleep(100 * time.Millisecond)
		var b1, w1 int64
		for _, sb := range subs {
			b1 += sb.bodyBytes.Load()
			w1 += sb.wireBytes.Load()
			res.Received += sb.events.Load()
		}
		res.Expected = int64(pr.ok) * int64(len(subs))
		if res.Received > 0 {
			res.BodyBytesPerEvent = float64(b1-b0) / float64(res.Received)
			res.WireBytesPerEvent = float64(w1-w0) / float64(res.Received)
		}
		closeSubs(subs)
		logf("  corpus %s %d B: %.1f body bytes/event, %.1f wire bytes/event, received %d/%d, encoding %q%s",
			v, sz, res.BodyBytesPerEvent, res.WireBytesPerEvent, res.Received, res.Expected, res.Encoding, errSuffix(res.Err))
		out = append(out, res)
	}
	return out
}
