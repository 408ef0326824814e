// Command sidebyside builds Caddy with caddy-sse (from the working tree) and
// Caddy with Mercure, runs the same SSE load against both, alternating, and
// writes results.md, results.json and chart.png.
//
//	cd bench && go run ./cmd/sidebyside -out results
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	out       string
	scenarios map[string]bool
	servers   map[string]bool
	quick     bool
	sources   int
	noBuild   bool
	binDir    string
	tmpRoot   string

	idleN    int
	idleHold time.Duration

	fanSizes    []int
	fanDuration time.Duration
	fanMaxRate  float64
	fanBudget   float64

	topicsN        int
	topicsCount    int
	topicsRate     float64
	topicsDuration time.Duration

	multiN        int
	multiPer      int
	multiPool     int
	multiSingle   int
	multiRate     float64
	multiDuration time.Duration

	ingestConns    int
	ingestDuration time.Duration
	batch          int

	catchupN      int
	catchupMissed []int

	scaleN    int
	scaleHold time.Duration

	compSizes  []int
	compHold   time.Duration
	compBudget float64

	transport   string
	pprofDir    string
	oursServers string
	h2Streams   int
	wrapper     bool
	h2Lean      bool

	quietCores float64
	quietWait  time.Duration
	quietTotal time.Duration

	noisyLimit   float64
	noisyRetries int
	noisyTotal   time.Duration
	decodeSample int
	corpusSubs   int
	corpusEvents int
}

var allScenarios = []string{"idle", "fanout", "topics", "multitopic", "ingest", "catchup", "scale", "compress"}

type results struct {
	Started  time.Time
	Seconds  float64
	Command  string
	Quick    bool
	Machine  map[string]string
	Versions map[string]string
	Config   map[string]string
	// Transport, H2Streams, Wrapper: see -transport, -h2-streams, -wrapper.
	Transport string
	H2Streams int
	Wrapper   bool
	// H2Lean: see -h2-lean.
	H2Lean bool `json:",omitempty"`
	// OursServers: see -ours-servers.
	OursServers string
	Idle        []idleRes
	Fanout      []fanRes
	Topics      []fanRes
	// Multi: the multi-topic scenario, multi-topic streams and single-topic
	// streams on the same topics and events.
	Multi    []fanRes
	Ingest   []ingestRes
	Catchup  []catchupRes
	Scale    []idleRes
	Compress []fanRes
	Corpus   []corpusRes
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func intList(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad number %q\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func setList(s string, allowed []string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "all" {
			for _, a := range allowed {
				m[a] = true
			}
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == f
		}
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown name %q (choose from %s)\n", f, strings.Join(allowed, ","))
			os.Exit(2)
		}
		m[f] = true
	}
	return m
}

func main() {
	var c config
	var scen, servers, fanSizes, compSizes string
	flag.StringVar(&c.out, "out", "results", "directory for results.md, results.json and chart.png")
	flag.StringVar(&scen, "scenarios", "all", "comma-separated: "+strings.Join(allScenarios, ","))
	flag.StringVar(&servers, "servers", "ours,mercure", "servers to run: ours,mercure,nchan (nchan: Debian's nginx with libnginx-mod-nchan, installed)")
	flag.BoolVar(&c.quick, "quick", false, "small sizes and short phases: a smoke run of about two minutes")
	flag.IntVar(&c.sources, "sources", 64, "source addresses 127.0.0.1 .. 127.0.0.N for outgoing connections")
	flag.BoolVar(&c.noBuild, "no-build", false, "use the binaries already in -bin")
	flag.StringVar(&c.binDir, "bin", "bin", "where the server binaries are built")
	flag.StringVar(&c.tmpRoot, "tmp", "/dev/shm", "where servers get their directories (Mercure's bolt file lives there)")
	flag.StringVar(&c.transport, "transport", transportH1, "subscribers' transport: h1 (plain HTTP/1.1), tls (HTTP/1.1 over TLS), h2 (HTTP/2 over TLS), h3 (HTTP/3 over QUIC, -h2-streams streams per connection; not nchan); publishers use HTTP/1.1 (over TLS unless h1)")
	flag.StringVar(&c.pprofDir, "pprof", "", "save Caddy's heap and goroutine profiles at the end of each idle hold and a CPU profile of each fan-out's publishing into this directory (turns the admin endpoint on)")
	flag.StringVar(&c.oursServers, "ours-servers", "", "Caddyfile lines added to ours' servers global option, e.g. 'timeouts {\\n\\twrite_idle -1s\\n}' (\\n and \\t are unescaped)")
	flag.IntVar(&c.h2Streams, "h2-streams", 1, "h2, h3: subscriber streams per connection")
	flag.BoolVar(&c.wrapper, "wrapper", true, "tls, h2: ours gets the sse listener wrapper before tls (listener_wrappers { sse; tls })")
	flag.BoolVar(&c.h2Lean, "h2-lean", true, "h2: ours also gets the sse_h2 listener wrapper after tls (listener_wrappers { sse; tls; sse_h2 }): its own lean HTTP/2 server, the recommended config; -h2-lean=false measures net/http's HTTP/2 server")
	flag.IntVar(&c.idleN, "idle-n", 10000, "idle: subscribers")
	flag.DurationVar(&c.idleHold, "idle-hold", 30*time.Second, "idle: how long they are held")
	flag.StringVar(&fanSizes, "fanout-sizes", "500,1000,2000,5000", "fan-out: subscriber counts (one topic)")
	flag.DurationVar(&c.fanDuration, "fanout-duration", 10*time.Second, "fan-out: publishing time")
	flag.Float64Var(&c.fanMaxRate, "fanout-rate", 20, "fan-out: events per second (at most)")
	flag.Float64Var(&c.fanBudget, "fanout-deliveries", 20000, "fan-out: the rate is lowered so that rate × subscribers stays at most this many deliveries per second")
	flag.IntVar(&c.topicsN, "topics-n", 5000, "many topics: subscribers")
	flag.IntVar(&c.topicsCount, "topics-count", 1000, "many topics: topics")
	flag.Float64Var(&c.topicsRate, "topics-rate", 1000, "many topics: events per second, round-robin over the topics")
	flag.DurationVar(&c.topicsDuration, "topics-duration", 10*time.Second, "many topics: publishing time")
	flag.IntVar(&c.multiN, "multi-n", 1000, "multi-topic: multi-topic streams")
	flag.IntVar(&c.multiPer, "multi-per", 20, "multi-topic: topics per stream (stream i on topics i … i+per-1 of the pool)")
	flag.IntVar(&c.multiPool, "multi-pool", 100, "multi-topic: topics in all")
	flag.IntVar(&c.multiSingle, "multi-single", 19000, "multi-topic: single-topic streams compared, spread evenly over the pool (multi-n × multi-per subscriptions, as far as 20,000 open files per process allow)")
	flag.Float64Var(&c.multiRate, "multi-rate", 100, "multi-topic: events per second, round-robin over the pool")
	flag.DurationVar(&c.multiDuration, "multi-duration", 10*time.Second, "multi-topic: publishing time")
	flag.IntVar(&c.ingestConns, "ingest-conns", 16, "ingest: concurrent publishers (keep-alive connections)")
	flag.DurationVar(&c.ingestDuration, "ingest-duration", 5*time.Second, "ingest: measured time per mode")
	flag.IntVar(&c.batch, "batch", 100, "ingest: events per NDJSON batch")
	flag.IntVar(&c.catchupN, "catchup-n", 1000, "catch-up: resuming subscribers")
	catchupEvents := flag.String("catchup-events", "1000,2000", "catch-up: missed events each subscriber must receive, one run per value (histories are raised to hold them past 1,000)")
	flag.IntVar(&c.scaleN, "scale-n", 19000, "scale: subscribers")
	flag.DurationVar(&c.scaleHold, "scale-hold", 60*time.Second, "scale: how long they are held")
	flag.StringVar(&compSizes, "compress-sizes", "1000,5000", "compression: subscriber counts")
	flag.DurationVar(&c.compHold, "compress-hold", 5*time.Second, "compression: idle time before publishing (idle memory is read then)")
	flag.IntVar(&c.decodeSample, "decode-sample", 1000, "compression: subscribers that decode a compressed stream (the others count bytes); -1: all")
	flag.IntVar(&c.corpusSubs, "corpus-subs", 10, "compression corpus: subscribers per event size")
	flag.IntVar(&c.corpusEvents, "corpus-events", 200, "compression corpus: events per event size")
	flag.Float64Var(&c.compBudget, "compress-deliveries", 5000, "compression: like -fanout-deliveries (lower, since per-stream encode costs several times more CPU per delivery)")
	flag.Float64Var(&c.quietCores, "quiet", 0.3, "before each measurement wait until other processes use fewer cores than this (0: never wait)")
	flag.DurationVar(&c.quietWait, "quiet-wait", 30*time.Second, "longest wait for a quiet machine before one measurement")
	flag.DurationVar(&c.quietTotal, "quiet-total", 3*time.Minute, "longest total wait for a quiet machine over the run")
	flag.Float64Var(&c.noisyLimit, "noisy", 0.3, "a short measurement during which other processes used more cores than this is run again")
	flag.IntVar(&c.noisyRetries, "noisy-retries", 2, "how many times a noisy measurement is run again (the least noisy run is kept)")
	flag.DurationVar(&c.noisyTotal, "noisy-total", 150*time.Second, "longest total time spent re-running noisy measurements")
	maxTime := flag.Duration("max-time", 40*time.Minute, "end the whole run (and its servers) after this long")
	render := flag.Bool("render", false, "only rewrite results.md and chart.png from -out/results.json")
	flag.Parse()
	if *render {
		b, err := os.ReadFile(filepath.Join(c.out, "results.json"))
		if err != nil {
			fatal(err)
		}
		var res results
		if err := json.Unmarshal(b, &res); err != nil {
			fatal(err)
		}
		if err := writeOutputs(c.out, &res); err != nil {
			fatal(err)
		}
		return
	}

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("idle-n", func() { c.idleN = 1000 })
		def("idle-hold", func() { c.idleHold = 16 * time.Second })
		def("fanout-sizes", func() { fanSizes = "200,1000" })
		def("fanout-duration", func() { c.fanDuration = 3 * time.Second })
		def("topics-n", func() { c.topicsN = 1000 })
		def("topics-count", func() { c.topicsCount = 200 })
		def("topics-rate", func() { c.topicsRate = 200 })
		def("topics-duration", func() { c.topicsDuration = 3 * time.Second })
		def("multi-n", func() { c.multiN = 200 })
		def("multi-single", func() { c.multiSingle = 2000 })
		def("multi-duration", func() { c.multiDuration = 3 * time.Second })
		def("ingest-duration", func() { c.ingestDuration = 2 * time.Second })
		def("catchup-n", func() { c.catchupN = 200 })
		def("scale-n", func() { c.scaleN = 3000 })
		def("scale-hold", func() { c.scaleHold = 5 * time.Second })
		def("compress-sizes", func() { compSizes = "300" })
		def("compress-hold", func() { c.compHold = 2 * time.Second })
		def("corpus-events", func() { c.corpusEvents = 50 })
		// a smoke run does not wait for a quiet machine
		def("quiet", func() { c.quietCores = 0 })
		def("noisy-retries", func() { c.noisyRetries = 0 })
	}
	c.oursServers = strings.NewReplacer(`\n`, "\n", `\t`, "\t").Replace(c.oursServers)
	c.scenarios = setList(scen, allScenarios)
	c.servers = setList(servers, []string{oursName, mercureName, nchanName})
	switch c.transport {
	case transportH1, transportTLS, transportH2, transportH3:
	default:
		fmt.Fprintf(os.Stderr, "-transport %q: want h1, tls, h2 or h3\n", c.transport)
		os.Exit(2)
	}
	if c.transport == transportH3 && c.servers[nchanName] {
		// Debian's nginx is 1.22 (no http_v3_module; QUIC needs 1.25+)
		fmt.Fprintln(os.Stderr, "-transport h3: nchan cannot serve HTTP/3 (Debian's nginx 1.22 has no http_v3_module; QUIC needs nginx 1.25+); leave it out of -servers")
		os.Exit(2)
	}
	c.fanSizes = intList(fanSizes)
	c.compSizes = intList(compSizes)
	c.catchupMissed = intList(*catchupEvents)

	raiseNofile()

	// Bounded in time as a whole too: interrupted or over -max-time, the
	// servers are stopped and the run ends.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sig:
			logf("%v: stopping the servers", s)
		case <-time.After(*maxTime):
			logf("the run exceeded -max-time %s: stopping the servers", *maxTime)
		}
		stopAll()
		os.Exit(1)
	}()

	benchDir, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	if _, err := os.Stat(filepath.Join(benchDir, "servers", oursName)); err != nil {
		fatal(fmt.Errorf("run from the bench directory (cd bench && go run ./cmd/sidebyside): %v", err))
	}
	c.binDir, _ = filepath.Abs(c.binDir)
	c.out, _ = filepath.Abs(c.out)
	if _, err := os.Stat(c.tmpRoot); err != nil {
		c.tmpRoot = os.TempDir()
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fatal(err)
	}
	if c.pprofDir != "" {
		c.pprofDir, _ = filepath.Abs(c.pprofDir)
		if err := os.MkdirAll(c.pprofDir, 0o755); err != nil {
			fatal(err)
		}
	}
	if !c.noBuild {
		logf("building %s and %s into %s", oursName, mercureName, c.binDir)
		if err := build(benchDir, c.binDir, 5, c.servers); err != nil {
			fatal(err)
		}
	}

	res := &results{
		Started:     time.Now(),
		Command:     "cd bench && go run ./cmd/sidebyside " + strings.Join(os.Args[1:], " "),
		Quick:       c.quick,
		Machine:     machine(),
		Versions:    versions(benchDir, c.binDir),
		Config:      describeConfig(&c),
		Transport:   c.transport,
		H2Streams:   c.h2Streams,
		Wrapper:     c.wrapper,
		H2Lean:      c.h2Lean,
		OursServers: c.oursServers,
	}
	r := &runner{c: c, binDir: c.binDir, tmpRoot: c.tmpRoot}
	res.Machine["load average at the start"] = loadavg()
	save := func() {
		res.Seconds = time.Since(res.Started).Seconds()
		res.Machine["load average at the end"] = loadavg()
		res.Machine["waited for a quiet machine"] = quietWaited.Round(time.Second).String()
		res.Machine["re-ran noisy measurements"] = fmt.Sprintf("%d times, %s", r.retries, r.retrySpent.Round(time.Second))
		if err := writeOutputs(c.out, res); err != nil {
			logf("writing results: %v", err)
		}
	}

	if c.scenarios["idle"] {
		logf("scenario idle: %d subscribers held %s", c.idleN, c.idleHold)
		for _, name := range r.order() {
			res.Idle = append(res.Idle, r.idle(name, c.idleN, c.idleHold))
		}
		save()
	}
	if c.scenarios["fanout"] {
		for _, n := range c.fanSizes {
			rate := min(c.fanMaxRate, c.fanBudget/float64(n))
			logf("scenario fan-out: %d subscribers, %.1f events/s for %s", n, rate, c.fanDuration)
			for _, name := range r.order() {
				res.Fanout = append(res.Fanout, r.fanoutQuiet(fanSpec{
					conf: serverConf{name: name}, n: n, topics: 1, rate: rate, duration: c.fanDuration,
					size: 200, decodeSample: -1, pubConns: 2,
				}))
			}
			save()
		}
	}
	if c.scenarios["topics"] {
		logf("scenario many topics: %d subscribers over %d topics, %.0f events/s for %s", c.topicsN, c.topicsCount, c.topicsRate, c.topicsDuration)
		for _, name := range r.order() {
			res.Topics = append(res.Topics, r.fanoutQuiet(fanSpec{
				conf: serverConf{name: name}, n: c.topicsN, topics: c.topicsCount, rate: c.topicsRate,
				duration: c.topicsDuration, size: 200, decodeSample: -1, pubConns: 8,
			}))
		}
		save()
	}
	if c.scenarios["multitopic"] {
		logf("scenario multi-topic: %d streams of %d topics each (of %d), against %d single-topic streams; %.0f events/s for %s", c.multiN, c.multiPer, c.multiPool, c.multiSingle, c.multiRate, c.multiDuration)
		for _, name := range r.order() {
			if name == nchanName {
				continue // not compared here
			}
			res.Multi = append(res.Multi, r.fanoutQuiet(fanSpec{
				conf: serverConf{name: name}, n: c.multiN, topics: c.multiPool, perStream: c.multiPer, rate: c.multiRate,
				duration: c.multiDuration, size: 200, decodeSample: -1, pubConns: 4,
			}))
		}
		save()
		// Single-topic streams: as many as the multi-topic ones, on fewer
		// topics so that an event reaches as many streams (like for like:
		// memory per stream, CPU per delivery); then as many as the
		// subscriptions they replace, on every topic (what a page without
		// multi-topic streams opens).
		for _, k := range []struct{ n, topics int }{{c.multiN, max(1, c.multiPool/c.multiPer)}, {c.multiSingle, c.multiPool}} {
			for _, name := range r.order() {
				if name == nchanName {
					continue
				}
				res.Multi = append(res.Multi, r.fanoutQuiet(fanSpec{
					conf: serverConf{name: name}, n: k.n, topics: k.topics, rate: c.multiRate,
					duration: c.multiDuration, size: 200, decodeSample: -1, pubConns: 4,
				}))
			}
			save()
		}
	}
	if c.scenarios["ingest"] {
		logf("scenario ingest: %d publishers, %s per mode", c.ingestConns, c.ingestDuration)
		for _, mode := range []string{"single", "batch", "plain"} {
			for _, name := range r.order() {
				if mode == "batch" && name != oursName {
					continue // Mercure has no batch publishing
				}
				res.Ingest = append(res.Ingest, measureQuiet(r, func() ingestRes {
					return r.ingestOn(name, mode)
				}, func(x ingestRes) float64 { return x.OtherCores }))
			}
		}
		save()
	}
	if c.scenarios["catchup"] {
		for _, missed := range c.catchupMissed {
			logf("scenario catch-up: %d subscribers resuming %d missed events", c.catchupN, missed)
			for _, name := range r.order() {
				res.Catchup = append(res.Catchup, measureQuiet(r, func() catchupRes {
					return r.catchup(name, c.catchupN, missed)
				}, func(x catchupRes) float64 { return x.OtherCores }))
			}
			save()
		}
	}
	if c.scenarios["scale"] {
		logf("scenario scale: %d subscribers held %s", c.scaleN, c.scaleHold)
		for _, name := range r.order() {
			res.Scale = append(res.Scale, r.idle(name, c.scaleN, c.scaleHold))
		}
		save()
	}
	if c.scenarios["compress"] && c.servers[oursName] {
		variants := []variant{plainVariant, encodeGzip, encodeZstd, sharedGzip, sharedZstd}
		for _, n := range c.compSizes {
			rate := min(c.fanMaxRate, c.compBudget/float64(n))
			logf("scenario compression: %d subscribers, %.1f events/s for %s", n, rate, c.fanDuration)
			for _, v := range variants {
				res.Compress = append(res.Compress, r.fanoutQuiet(fanSpec{
					conf: serverConf{name: oursName, variant: v}, n: n, topics: 1, rate: rate, duration: c.fanDuration,
					size: 200, idleHold: c.compHold, decodeSample: c.decodeSample, pubConns: 2,
				}))
			}
			save()
		}
		logf("scenario compression: corpus of 200-byte and 2-KiB events")
		for _, v := range variants {
			res.Corpus = append(res.Corpus, r.corpus(v, []int{200, 2048}, c.corpusSubs, c.corpusEvents)...)
		}
		save()
	}
	save()
	logf("done in %s; wrote %s", time.Since(res.Started).Round(time.Second), filepath.Join(c.out, "results.md"))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "sidebyside:", err)
	os.Exit(1)
}

// raiseNofile lifts the soft open-file limit to the hard one; the servers
// inherit it.
func raiseNofile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			logf("raising the open-file limit: %v", err)
		}
	}
}

func machine() map[string]string {
	m := map[string]string{
		"cores": strconv.Itoa(runtime.NumCPU()),
		"go":    runtime.Version(),
		"os":    runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					m["cpu"] = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					kb, _ := strconv.ParseFloat(f[1], 64)
					m["memory"] = fmt.Sprintf("%.1f GiB", kb/1024/1024)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		m["open files"] = fmt.Sprintf("%d (soft) / %d (hard)", rl.Cur, rl.Max)
	}
	return m
}

func versions(benchDir, binDir string) map[string]string {
	v := map[string]string{"mercure": "github.com/dunglas/mercure/caddy v0.24.2 (bolt transport)"}
	if out, err := exec.Command(filepath.Join(binDir, oursName), "version").Output(); err == nil {
		v["caddy"] = strings.Fields(string(out) + " ?")[0]
	}
	repo := filepath.Dir(benchDir)
	rev, _ := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	st, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=all", "--", ".", ":(exclude)bench").Output()
	ours := "caddy-sse working tree at " + strings.TrimSpace(string(rev))
	var changed []string
	for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			f := strings.Fields(l)
			changed = append(changed, f[len(f)-1])
		}
	}
	if len(changed) > 0 {
		ours += " + uncommitted changes in " + strings.Join(changed, ", ")
	}
	v["ours"] = ours
	return v
}

func describeConfig(c *config) map[string]string {
	return map[string]string{
		"idle":       fmt.Sprintf("%d subscribers, one topic, held %s", c.idleN, c.idleHold),
		"fanout":     fmt.Sprintf("subscribers %v on one topic; %.0f events/s at most and at most %.0f deliveries/s; %s of publishing; 200-byte JSON events", c.fanSizes, c.fanMaxRate, c.fanBudget, c.fanDuration),
		"topics":     fmt.Sprintf("%d subscribers over %d topics, %.0f events/s round-robin over topics for %s", c.topicsN, c.topicsCount, c.topicsRate, c.topicsDuration),
		"multitopic": fmt.Sprintf("%d streams of %d topics each (stream i on topics i … i+%d of %d), then as many single-topic streams on %d topics (as many per event), then %d single-topic streams spread evenly over the %d topics; %.0f events/s round-robin over the topics for %s, 4 publishing connections", c.multiN, c.multiPer, c.multiPer-1, c.multiPool, max(1, c.multiPool/c.multiPer), c.multiSingle, c.multiPool, c.multiRate, c.multiDuration),
		"ingest":     fmt.Sprintf("%d keep-alive publishers, %s per mode after 0.5 s of warm-up; batches of %d", c.ingestConns, c.ingestDuration, c.batch),
		"catchup":    fmt.Sprintf("%d subscribers resume %v missed events at once", c.catchupN, c.catchupMissed),
		"scale":      fmt.Sprintf("%d subscribers held %s", c.scaleN, c.scaleHold),
		"compress":   fmt.Sprintf("subscribers %v; idle %s before publishing; then 200-byte events, %.0f/s at most and at most %.0f deliveries/s, for %s; %d decode, the others count bytes; corpus %d subscribers × %d events", c.compSizes, c.compHold, c.fanMaxRate, c.compBudget, c.fanDuration, c.decodeSample, c.corpusSubs, c.corpusEvents),
		"sources":    fmt.Sprintf("127.0.0.1..127.0.0.%d", c.sources),
		"transport":  fmt.Sprintf("%s (h2 streams per connection: %d; ours with the sse listener wrapper: %v; ours with sse_h2: %v; ours' extra servers lines: %q)", c.transport, c.h2Streams, c.wrapper, c.h2Lean && c.transport == transportH2, c.oursServers),
	}
}

func writeOutputs(dir string, res *results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(report(res)), 0o644); err != nil {
		return err
	}
	if _, ok := find(res.Fanout, func(r fanRes) string { return r.Server }, oursName); ok {
		if err := chart(filepath.Join(dir, "chart.png"), res); err != nil {
			return err
		}
	}
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ") + " (1, 5, 15 min)"
}
