package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

func f0(x float64) string { return commas(int64(math.Round(x))) }
func f1(x float64) string { return fmt.Sprintf("%.1f", x) }
func f2(x float64) string { return fmt.Sprintf("%.2f", x) }
func i0(x int64) string   { return commas(x) }

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ratio(o, m float64) string {
	if m == 0 || o == 0 || math.IsNaN(o) || math.IsNaN(m) {
		return "–"
	}
	return fmt.Sprintf("%.2f", o/m)
}

type row struct {
	name, ours, merc, ratio string
}

func cmpTable(b *strings.Builder, rows []row) {
	b.WriteString("| | ours | Mercure | ours / Mercure |\n|---|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", r.name, r.ours, r.merc, r.ratio)
	}
	b.WriteString("\n")
}

func find[T any](xs []T, key func(T) string, want string) (T, bool) {
	for _, x := range xs {
		if key(x) == want {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func errorsOf(b *strings.Builder, errs ...string) {
	for _, e := range errs {
		if e != "" {
			fmt.Fprintf(b, "> error: %s\n\n", strings.ReplaceAll(e, "\n", " "))
		}
	}
}

func report(res *results) string {
	var b strings.Builder
	b.WriteString("# caddy-sse and Mercure, side by side\n\n")
	if res.Transport != "" && res.Transport != transportH1 {
		fmt.Fprintf(&b, "Subscribers over **%s** (%s).\n\n", res.Transport, res.Config["transport"])
	}
	summaryTable(&b, res)
	fmt.Fprintf(&b, "Run %s, %s in all", res.Started.UTC().Format("2006-01-02 15:04 MST"), (time.Duration(res.Seconds) * time.Second).Round(time.Second))
	if res.Quick {
		b.WriteString(" (`-quick`: small sizes, short phases; a smoke run, not figures to quote)")
	}
	b.WriteString(".\n\n")
	fmt.Fprintf(&b, "```sh\n%s\n```\n\n", res.Command)
	b.WriteString("| machine | |\n|---|---|\n")
	for _, k := range sortedKeys(res.Machine) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, res.Machine[k])
	}
	for _, k := range sortedKeys(res.Versions) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, res.Versions[k])
	}
	b.WriteString("\n")
	b.WriteString(`Both servers are Caddy v2.11.9 built by this harness, on loopback, no TLS, no ` + "`encode`" + `,
logs at ERROR, heartbeat 15 s. Ours: ` + "`sse`" + ` with the memory store and a history of 1,000
events per topic, publishers authenticated with a bearer token. Mercure: ` + "`mercure`" + ` with the
bolt transport (its only transport with history; ` + "`local`" + ` keeps none) of size 1,000 on tmpfs
(` + "`/dev/shm`" + `, so in memory like ours), anonymous subscribers, publishers authenticated with an
HS256 JWT. The load generator (raw TCP, its own HTTP/1.1 and SSE parser) runs on the same 2 cores,
so read the ratios of one run, not absolute figures. Server RSS and CPU (user + system) come from
` + "`/proc/<pid>`" + `. A ratio below 1 favours ours for memory, latency and CPU; above 1 for throughput.

`)
	keys := sortedKeys(res.Config)
	b.WriteString("| scenario | load |\n|---|---|\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %s |\n", k, res.Config[k])
	}
	b.WriteString("\n")

	if len(res.Idle) > 0 {
		b.WriteString("## 1. Idle subscribers\n\n")
		idleTable(&b, res.Idle)
	}
	if len(res.Fanout) > 0 {
		b.WriteString("## 2. Fan-out on one topic\n\n")
		b.WriteString("Latency is from just before the publish request is written to the moment the subscriber has parsed the event (same process, monotonic clock). CPU per delivery is the server's CPU time over the publishing phase divided by the events delivered. The load generator's own CPU per delivery is shown for scale: it shares the cores.\n\n")
		fanTables(&b, res.Fanout)
		b.WriteString("![latency and CPU per delivery by subscriber count](chart.png)\n\n")
	}
	if len(res.Topics) > 0 {
		b.WriteString("## 3. Many topics\n\n")
		topicsTable(&b, res.Topics)
	}
	if len(res.Multi) > 0 {
		b.WriteString("## 3b. Several topics on one connection\n\n")
		multiTable(&b, res.Multi)
	}
	if len(res.Ingest) > 0 {
		b.WriteString("## 4. Ingest\n\n")
		ingestTable(&b, res.Ingest)
	}
	if len(res.Catchup) > 0 {
		b.WriteString("## 5. Catch-up\n\n")
		catchupTables(&b, res.Catchup)
	}
	if len(res.Scale) > 0 {
		b.WriteString("## 6. Scale\n\n")
		idleTable(&b, res.Scale)
	}
	if len(res.Compress) > 0 || len(res.Corpus) > 0 {
		b.WriteString("## 7. Compression (ours only)\n\n")
		compressTables(&b, res.Compress, res.Corpus)
	}
	b.WriteString("## Server configurations\n\n")
	b.WriteString("Each measurement starts a fresh process on a free port (8080 below stands for it). Ours, no compression (the compression scenario adds `encode gzip`/`encode zstd` in the site block or `compress gzip`/`compress zstd` in `sse`):\n\n")
	fmt.Fprintf(&b, "```caddyfile\n%s```\n\n", oursCaddyfile(res.serverConf(oursName), 8080, "/dev/shm/ours-XXXX"))
	b.WriteString("Mercure (size 1,001 in the catch-up scenario; the JWT signing key is the benchmark's own):\n\n")
	fmt.Fprintf(&b, "```caddyfile\n%s```\n", mercureCaddyfile(res.serverConf(mercureName), 8080, "/dev/shm/mercure-XXXX", "/dev/shm/mercure-XXXX/mercure.db", mercureHistoryEv))
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	slices.Sort(k)
	return k
}

func idleTable(b *strings.Builder, rs []idleRes) {
	o, _ := find(rs, func(r idleRes) string { return r.Server }, oursName)
	m, _ := find(rs, func(r idleRes) string { return r.Server }, mercureName)
	cmpTable(b, []row{
		{"subscribers asked / connected", fmt.Sprintf("%s / %s", i0(int64(o.N)), i0(int64(o.Connected))), fmt.Sprintf("%s / %s", i0(int64(m.N)), i0(int64(m.Connected))), ""},
		{"time to connect all (s)", f1(o.ConnectSecs), f1(m.ConnectSecs), ratio(o.ConnectSecs, m.ConnectSecs)},
		{"server RSS before → after the hold (MiB)", f1(o.BaseRSSMiB) + " → " + f1(o.EndRSSMiB), f1(m.BaseRSSMiB) + " → " + f1(m.EndRSSMiB), ratio(o.EndRSSMiB, m.EndRSSMiB)},
		{"peak RSS during the hold (MiB)", f1(o.PeakRSSMiB), f1(m.PeakRSSMiB), ratio(o.PeakRSSMiB, m.PeakRSSMiB)},
		{"**RSS per subscriber (KiB)**", "**" + f1(o.KiBPerSub) + "**", "**" + f1(m.KiBPerSub) + "**", "**" + ratio(o.KiBPerSub, m.KiBPerSub) + "**"},
		{fmt.Sprintf("still open after %.0f s", o.HoldSecs), i0(int64(o.Open)), i0(int64(m.Open)), ""},
		{"disconnected during the hold", i0(int64(o.Connected - o.Open)), i0(int64(m.Connected - m.Open)), ""},
		{"received ≥ 1 heartbeat during the hold (fewest per subscriber)", fmt.Sprintf("%s (%d)", i0(int64(o.WithHeartbeat)), o.MinHeartbeats), fmt.Sprintf("%s (%d)", i0(int64(m.WithHeartbeat)), m.MinHeartbeats), ""},
		{"received the probe event published after the hold", i0(int64(o.ProbeReceived)), i0(int64(m.ProbeReceived)), ""},
		{"server CPU during the hold (ms)", f0(o.HoldCPUms), f0(m.HoldCPUms), ratio(o.HoldCPUms, m.HoldCPUms)},
		{"other processes' CPU during the hold (cores)", f2(o.OtherCores), f2(m.OtherCores), ""},
	})
	errorsOf(b, o.Err, m.Err)
}

func byServer(rs []fanRes, n int) (o, m fanRes, okO, okM bool) {
	for _, r := range rs {
		if r.N != n {
			continue
		}
		switch r.Server {
		case oursName:
			o, okO = r, true
		case mercureName:
			m, okM = r, true
		}
	}
	return
}

func fanSizesOf(rs []fanRes) []int {
	var ns []int
	for _, r := range rs {
		if !slices.Contains(ns, r.N) {
			ns = append(ns, r.N)
		}
	}
	slices.Sort(ns)
	return ns
}

func fanTables(b *strings.Builder, rs []fanRes) {
	b.WriteString("| subscribers | events/s × s | p50 ours | p50 Mercure | p99 ours | p99 Mercure | p99 ours / Mercure | max ours | max Mercure |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var errs []string
	for _, n := range fanSizesOf(rs) {
		o, m, _, _ := byServer(rs, n)
		rate := o.Rate
		if rate == 0 {
			rate = m.Rate
		}
		fmt.Fprintf(b, "| %s | %s × %s | %s ms | %s ms | %s ms | %s ms | **%s** | %s ms | %s ms |\n",
			i0(int64(n)), fmt.Sprintf("%.4g", rate), i0(int64(max(o.Published+o.PubFailed, m.Published+m.PubFailed))),
			f1(o.Lat.P50), f1(m.Lat.P50), f1(o.Lat.P99), f1(m.Lat.P99), ratio(o.Lat.P99, m.Lat.P99), f1(o.Lat.Max), f1(m.Lat.Max))
		errs = append(errs, o.Err, m.Err)
	}
	b.WriteString("\n| subscribers | server CPU µs per delivery, ours | Mercure | ours / Mercure | load generator µs per delivery (ours run / Mercure run) | delivered ours / Mercure | lost ours / Mercure | disconnected ours / Mercure | RSS per subscriber, KiB, ours / Mercure | other processes' CPU, cores (ours run / Mercure run) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range fanSizesOf(rs) {
		o, m, _, _ := byServer(rs, n)
		fmt.Fprintf(b, "| %s | %s | %s | **%s** | %s / %s | %s / %s | %s / %s | %d / %d | %s / %s | %s / %s |\n",
			i0(int64(n)), f1(o.USPerDeliv), f1(m.USPerDeliv), ratio(o.USPerDeliv, m.USPerDeliv),
			f1(o.ClientUSPerD), f1(m.ClientUSPerD), i0(o.Delivered), i0(m.Delivered), i0(o.Lost), i0(m.Lost),
			o.Disconnected, m.Disconnected, f1(o.KiBPerSub), f1(m.KiBPerSub), f2(o.OtherCores), f2(m.OtherCores))
	}
	b.WriteString("\n")
	errorsOf(b, errs...)
}

func topicsTable(b *strings.Builder, rs []fanRes) {
	o, _ := find(rs, func(r fanRes) string { return r.Server }, oursName)
	m, _ := find(rs, func(r fanRes) string { return r.Server }, mercureName)
	fmt.Fprintf(b, "%s subscribers spread evenly over %s topics; %.0f events/s round-robin over the topics, published by 8 keep-alive connections.\n\n", i0(int64(max(o.N, m.N))), i0(int64(max(o.Topics, m.Topics))), max(o.Rate, m.Rate))
	cmpTable(b, []row{
		{"events published (failed)", fmt.Sprintf("%s (%d)", i0(int64(o.Published)), o.PubFailed), fmt.Sprintf("%s (%d)", i0(int64(m.Published)), m.PubFailed), ""},
		{"deliveries expected / received", i0(o.Expected) + " / " + i0(o.Delivered), i0(m.Expected) + " / " + i0(m.Delivered), ""},
		{"lost / out of order", fmt.Sprintf("%d / %d", o.Lost, o.OutOfOrder), fmt.Sprintf("%d / %d", m.Lost, m.OutOfOrder), ""},
		{"latency p50 (ms)", f1(o.Lat.P50), f1(m.Lat.P50), ratio(o.Lat.P50, m.Lat.P50)},
		{"latency p99 (ms)", f1(o.Lat.P99), f1(m.Lat.P99), "**" + ratio(o.Lat.P99, m.Lat.P99) + "**"},
		{"latency max (ms)", f1(o.Lat.Max), f1(m.Lat.Max), ratio(o.Lat.Max, m.Lat.Max)},
		{"server CPU µs per delivery (incl. the publish)", f1(o.USPerDeliv), f1(m.USPerDeliv), "**" + ratio(o.USPerDeliv, m.USPerDeliv) + "**"},
		{"load generator µs per delivery", f1(o.ClientUSPerD), f1(m.ClientUSPerD), ""},
		{"RSS per subscriber (KiB)", f1(o.KiBPerSub), f1(m.KiBPerSub), ratio(o.KiBPerSub, m.KiBPerSub)},
		{"disconnected", i0(int64(o.Disconnected)), i0(int64(m.Disconnected)), ""},
		{"other processes' CPU while publishing (cores)", f2(o.OtherCores), f2(m.OtherCores), ""},
	})
	errorsOf(b, o.Err, m.Err)
}

// multiTable compares multi-topic streams with single-topic streams on the
// same topics and events, for each server.
func multiTable(b *strings.Builder, rs []fanRes) {
	var any fanRes
	for _, r := range rs {
		if r.PerStream > 0 {
			any = r
		}
	}
	// get finds a server's multi-topic run, or its single-topic run with
	// as many streams (same) or with the most (not same).
	get := func(name string, multi, same bool) (fanRes, bool) {
		var best fanRes
		ok := false
		for _, r := range rs {
			if r.Server != name || (r.PerStream > 0) != multi {
				continue
			}
			if multi || (same && r.N == any.N) || (!same && r.N != any.N && r.N > best.N) {
				best, ok = r, true
			}
		}
		return best, ok
	}
	fmt.Fprintf(b, "Streams of %d topics each, stream i on topics i … i+%d (of %d, so sets overlap), against as many single-topic streams on %d topics (each event reaching as many streams: like for like) and against single-topic streams spread evenly over all the topics (one stream per topic a page follows, without multi-topic streams); %.0f events/s round-robin over the topics, published by 4 keep-alive connections. Ours subscribes with `/events/?topic=/events/t0&topic=/events/t1…`, Mercure with `/.well-known/mercure?topic=t0&topic=t1…`. Lost and out of order are counted per topic (each event's seq says its topic). RSS per stream is (RSS with the streams open − RSS before) / streams; CPU per delivery is the server's CPU over the publishing phase / events delivered.\n\n", any.PerStream, any.PerStream-1, any.Topics, max(1, any.Topics/max(1, any.PerStream)), any.Rate)
	b.WriteString("| | streams | topics per stream | topics | RSS per stream (KiB) | RSS of all streams (MiB) | server CPU µs per delivery | p50 / p99 ms | deliveries | lost / out of order | disconnected | other processes (cores) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var errs []string
	for _, name := range []string{oursName, mercureName} {
		for _, k := range []struct{ multi, same bool }{{true, true}, {false, true}, {false, false}} {
			multi := k.multi
			r, ok := get(name, multi, k.same)
			if !ok {
				continue
			}
			kind := "single-topic"
			if multi {
				kind = "multi-topic"
			}
			fmt.Fprintf(b, "| %s, %s | %s | %d | %d | %s | %s | %s | %s / %s | %s | %d / %d | %d | %s |\n", name, kind, i0(int64(r.N)), max(1, r.PerStream), r.Topics,
				f1(r.KiBPerSub), f1(r.KiBPerSub*float64(r.N)/1024), f1(r.USPerDeliv), f1(r.Lat.P50), f1(r.Lat.P99), i0(r.Delivered), r.Lost, r.OutOfOrder, r.Disconnected, f2(r.OtherCores))
			errs = append(errs, r.Err)
		}
	}
	b.WriteString("\n")
	om, ok1 := get(oursName, true, true)
	single, ok2 := get(oursName, false, true)
	mm, ok3 := get(mercureName, true, true)
	if ok1 && ok2 {
		fmt.Fprintf(b, "Ours, a multi-topic stream against a single-topic one (as many streams): **%s×** the memory per stream, **%s×** the CPU per delivery.", ratio(om.KiBPerSub, single.KiBPerSub), ratio(om.USPerDeliv, single.USPerDeliv))
		if ok3 {
			b.WriteString(" ")
		} else {
			b.WriteString("\n\n")
		}
	}
	if ok1 && ok3 {
		fmt.Fprintf(b, "Multi-topic, ours / Mercure: memory per stream **%s**, CPU per delivery **%s**, p99 %s.\n\n", ratio(om.KiBPerSub, mm.KiBPerSub), ratio(om.USPerDeliv, mm.USPerDeliv), ratio(om.Lat.P99, mm.Lat.P99))
	}
	errorsOf(b, errs...)
}

func ingestTable(b *strings.Builder, rs []ingestRes) {
	get := func(server, mode string) (ingestRes, bool) {
		for _, r := range rs {
			if r.Server == server && r.Mode == mode {
				return r, true
			}
		}
		return ingestRes{}, false
	}
	os1, _ := get(oursName, "single")
	ob, okB := get(oursName, "batch")
	op, _ := get(oursName, "plain")
	ms, _ := get(mercureName, "single")
	mp, _ := get(mercureName, "plain")
	conns := max(os1.Conns, ms.Conns)
	fmt.Fprintf(b, "%d publishers on keep-alive connections, as fast as answers come, for %.0f s each; one topic; 200-byte JSON events. The plain row is Caddy's own `respond` handler in the same binary under the same load: the ceiling HTTP sets.\n\n", conns, max(os1.Secs, ms.Secs))
	perReq := func(r ingestRes) string {
		if r.Requests == 0 {
			return "–"
		}
		return f1(r.ServerCPUms * 1000 / float64(r.Requests))
	}
	batch := "–"
	batchPer := "–"
	if okB {
		batch = f0(ob.EventsPerSec)
		batchPer = f2(ob.ServerCPUms * 1000 / float64(max(ob.Events, 1)))
	}
	cmpTable(b, []row{
		{"**single-event POSTs (events/s)**", "**" + f0(os1.EventsPerSec) + "**", "**" + f0(ms.EventsPerSec) + "**", "**" + ratio(os1.EventsPerSec, ms.EventsPerSec) + "**"},
		{"server CPU µs per single-event POST", perReq(os1), perReq(ms), ratio(os1.ServerCPUms/float64(max(os1.Requests, 1)), ms.ServerCPUms/float64(max(ms.Requests, 1)))},
		{"plain `respond` POSTs (requests/s)", f0(op.ReqPerSec), f0(mp.ReqPerSec), ratio(op.ReqPerSec, mp.ReqPerSec)},
		{"single-event POSTs / plain `respond`", f2(os1.EventsPerSec / math.Max(op.ReqPerSec, 1)), f2(ms.EventsPerSec / math.Max(mp.ReqPerSec, 1)), ""},
		{fmt.Sprintf("NDJSON batches of %d (events/s)", max(int(ob.Events/max(ob.Requests, 1)), 0)), batch, "n/a (no batch publishing)", ""},
		{"server CPU µs per event in batches", batchPer, "n/a", ""},
		{"errors (single / batch / plain)", fmt.Sprintf("%d / %d / %d", os1.Errors, ob.Errors, op.Errors), fmt.Sprintf("%d / – / %d", ms.Errors, mp.Errors), ""},
		{"other processes' CPU (cores; single / batch / plain)", fmt.Sprintf("%s / %s / %s", f2(os1.OtherCores), f2(ob.OtherCores), f2(op.OtherCores)), fmt.Sprintf("%s / – / %s", f2(ms.OtherCores), f2(mp.OtherCores)), ""},
	})
	errorsOf(b, os1.Err, ob.Err, op.Err, ms.Err, mp.Err)
}

func catchupTables(b *strings.Builder, rs []catchupRes) {
	var sizes []int
	for _, r := range rs {
		if !slices.Contains(sizes, r.Missed) {
			sizes = append(sizes, r.Missed)
		}
	}
	for _, missed := range sizes {
		var o, m catchupRes
		for _, r := range rs {
			if r.Missed != missed {
				continue
			}
			if r.Server == oursName {
				o = r
			} else {
				m = r
			}
		}
		catchupTable(b, o, m)
	}
}

func catchupTable(b *strings.Builder, o, m catchupRes) {
	missed := max(o.Missed, m.Missed)
	fmt.Fprintf(b, "### %s missed events\n\n", i0(int64(missed)))
	fmt.Fprintf(b, "%s events are published with nobody listening, after a marker event; then %s subscribers connect at the same moment with `Last-Event-ID` = the marker's id and must each receive all %s, then one live event. Ours keeps %s events per topic; Mercure's bolt history is sized %s, since it must still hold the resume id itself (ours remembers where its pruned history ends).\n\n",
		i0(int64(missed)), i0(int64(max(o.N, m.N))), i0(int64(missed)), i0(int64(o.HistorySize)), i0(int64(m.HistorySize)))
	cmpTable(b, []row{
		{"connected", i0(int64(o.Connected)), i0(int64(m.Connected)), ""},
		{"**received every missed event**", "**" + i0(int64(o.Completed)) + "**", "**" + i0(int64(m.Completed)) + "**", ""},
		{"**time until all are live (s)**", "**" + f2(o.AllLiveSecs) + "**", "**" + f2(m.AllLiveSecs) + "**", "**" + ratio(o.AllLiveSecs, m.AllLiveSecs) + "**"},
		{"median time until live (s)", f2(o.P50LiveSecs), f2(m.P50LiveSecs), ratio(o.P50LiveSecs, m.P50LiveSecs)},
		{"disconnected before catching up", i0(int64(o.Disconnected)), i0(int64(m.Disconnected)), ""},
		{"events lost", i0(o.Lost), i0(m.Lost), ""},
		{"reset events / out of order", fmt.Sprintf("%d / %d", o.Resets, o.OutOfOrder), fmt.Sprintf("%d / %d", m.Resets, m.OutOfOrder), ""},
		{"still open, and got the live event after", fmt.Sprintf("%s, %s", i0(int64(o.StillOpen)), i0(int64(o.ProbeReceived))), fmt.Sprintf("%s, %s", i0(int64(m.StillOpen)), i0(int64(m.ProbeReceived))), ""},
		{"server CPU for the catch-up (ms)", f0(o.ServerCPUms), f0(m.ServerCPUms), ratio(o.ServerCPUms, m.ServerCPUms)},
		{"peak RSS (MiB)", f1(o.PeakRSSMiB), f1(m.PeakRSSMiB), ratio(o.PeakRSSMiB, m.PeakRSSMiB)},
		{"other processes' CPU during the catch-up (cores)", f2(o.OtherCores), f2(m.OtherCores), ""},
	})
	errorsOf(b, o.Err, m.Err)
}

func compressTables(b *strings.Builder, rs []fanRes, corpus []corpusRes) {
	variants := []variant{plainVariant, encodeGzip, encodeZstd, sharedGzip, sharedZstd}
	sizes := fanSizesOf(rs)
	get := func(v variant, n int) (fanRes, bool) {
		for _, r := range rs {
			if r.Variant == string(v) && r.N == n {
				return r, true
			}
		}
		return fanRes{}, false
	}
	if len(rs) > 0 {
		b.WriteString("Each variant on a fresh server: subscribers sit idle (memory is read then), then events of 200 bytes fan out at the rate of the fan-out scenario. `encode` runs one compressor per stream; `compress` compresses each event once and shares the bytes. Deltas are against `none` at the same size.\n\n")
		b.WriteString("| variant | Content-Encoding | subscribers | RSS per idle subscriber (KiB) | Δ vs none | server CPU µs per delivery | vs none | p50 / p99 (ms) | delivered / expected (decoding subscribers) | peak RSS while delivering (MiB) | other processes' CPU (cores) |\n")
		b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range sizes {
			base, _ := get(plainVariant, n)
			for _, v := range variants {
				r, ok := get(v, n)
				if !ok {
					continue
				}
				enc := r.Encoding
				if enc == "" {
					enc = "identity"
				}
				fmt.Fprintf(b, "| %s | %s | %s | %s | %+.1f | %s | %s | %s / %s | %s / %s (%s) | %s | %s |\n",
					v, enc, i0(int64(n)), f1(r.KiBPerSub), r.KiBPerSub-base.KiBPerSub, f1(r.USPerDeliv), ratio(r.USPerDeliv, base.USPerDeliv),
					f1(r.Lat.P50), f1(r.Lat.P99), i0(r.Delivered), i0(r.Expected), i0(int64(r.DecodedSubs)), f1(r.PeakRSSMiB), f2(r.OtherCores))
			}
		}
		b.WriteString("\n")
		var errs []string
		for _, r := range rs {
			if r.Err != "" {
				errs = append(errs, fmt.Sprintf("%s at %d: %s", r.Variant, r.N, r.Err))
			}
		}
		errorsOf(b, errs...)
	}
	if len(corpus) > 0 {
		b.WriteString("Bytes per event for a realistic JSON corpus (order change events with random ids, amounts and item lists), measured on the stream of each subscriber: body bytes as compressed, and TCP payload with HTTP chunk framing. Ratio = `none` body bytes / this variant's.\n\n")
		b.WriteString("| variant | event size | body bytes per event | wire bytes per event | compression ratio | vs `encode` of the same algorithm |\n|---|---:|---:|---:|---:|---:|\n")
		getC := func(v variant, size int) corpusRes {
			for _, c := range corpus {
				if c.Variant == string(v) && c.Size == size {
					return c
				}
			}
			return corpusRes{}
		}
		var errs []string
		for _, size := range []int{200, 2048} {
			base := getC(plainVariant, size)
			for _, v := range variants {
				c := getC(v, size)
				if c.Variant == "" {
					continue
				}
				vsEncode := ""
				switch v {
				case sharedGzip:
					vsEncode = ratio(getC(encodeGzip, size).BodyBytesPerEvent, c.BodyBytesPerEvent) + " of the ratio kept"
				case sharedZstd:
					vsEncode = ratio(getC(encodeZstd, size).BodyBytesPerEvent, c.BodyBytesPerEvent) + " of the ratio kept"
				}
				fmt.Fprintf(b, "| %s | %s B | %s | %s | %s | %s |\n", v, i0(int64(size)), f1(c.BodyBytesPerEvent), f1(c.WireBytesPerEvent), ratio(base.BodyBytesPerEvent, c.BodyBytesPerEvent), vsEncode)
				if c.Err != "" || c.Received != c.Expected {
					errs = append(errs, fmt.Sprintf("%s %d B: received %d of %d %s", v, size, c.Received, c.Expected, c.Err))
				}
			}
		}
		b.WriteString("\n")
		errorsOf(b, errs...)
	}
}

// serverConf is the configuration a run gave server name.
func (res *results) serverConf(name string) serverConf {
	return serverConf{name: name, variant: plainVariant, transport: res.Transport, h2Streams: res.H2Streams, wrapper: res.Wrapper, h2Lean: res.H2Lean, oursServers: res.OursServers}
}

// summaryTable is one row per server (every server run, nchan included):
// idle memory, and per fan-out size CPU per delivery and latency, with
// ours' ratio to each peer.
func summaryTable(b *strings.Builder, res *results) {
	var names []string
	for _, n := range []string{oursName, mercureName, nchanName} {
		_, inIdle := find(res.Idle, func(r idleRes) string { return r.Server }, n)
		_, inFan := find(res.Fanout, func(r fanRes) string { return r.Server }, n)
		if inIdle || inFan {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	sizes := fanSizesOf(res.Fanout)
	b.WriteString("## Summary\n\n| server | KiB per idle subscriber |")
	for _, n := range sizes {
		fmt.Fprintf(b, " fan-out %s: µs per delivery | p50 / p99 ms | lost |", i0(int64(n)))
	}
	b.WriteString("\n|---|---:|")
	for range sizes {
		b.WriteString("---:|---:|---:|")
	}
	b.WriteString("\n")
	get := func(name string, n int) fanRes {
		for _, r := range res.Fanout {
			if r.Server == name && r.N == n {
				return r
			}
		}
		return fanRes{}
	}
	idle := func(name string) idleRes {
		r, _ := find(res.Idle, func(r idleRes) string { return r.Server }, name)
		return r
	}
	for _, name := range names {
		fmt.Fprintf(b, "| %s | %s |", name, f1(idle(name).KiBPerSub))
		for _, n := range sizes {
			r := get(name, n)
			fmt.Fprintf(b, " %s | %s / %s | %d |", f1(r.USPerDeliv), f1(r.Lat.P50), f1(r.Lat.P99), r.Lost)
		}
		b.WriteString("\n")
	}
	for _, peer := range names[1:] {
		if names[0] != oursName {
			break
		}
		fmt.Fprintf(b, "| ours / %s | %s |", peer, ratio(idle(oursName).KiBPerSub, idle(peer).KiBPerSub))
		for _, n := range sizes {
			o, p := get(oursName, n), get(peer, n)
			fmt.Fprintf(b, " %s | %s / %s | |", ratio(o.USPerDeliv, p.USPerDeliv), ratio(o.Lat.P50, p.Lat.P50), ratio(o.Lat.P99, p.Lat.P99))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}
