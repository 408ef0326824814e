package main

// Building, configuring, starting and measuring the two Caddy binaries.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	oursName    = "ours"
	mercureName = "mercure"
	// nchanName is nginx with nchan (Debian's nginx and
	// libnginx-mod-nchan, not built here): -servers ours,mercure,nchan.
	nchanName   = "nchan"
	nchanModule = "/usr/lib/nginx/modules/ngx_nchan_module.so"

	// bearerToken authenticates publishers to ours.
	bearerToken = "bench-publisher-token-2f6c1e"
	// mercureKey signs the publisher JWT (HS256).
	mercureKey = "bench-mercure-publisher-key-0123456789abcdef"
)

// build compiles both servers into binDir from bench/go.mod (ours through
// its replace of the working tree). -mod=mod lets a dependency the working
// tree has just gained be added to bench/go.mod instead of failing.
func build(benchDir, binDir string, retries int, wanted map[string]bool) error {
	for _, name := range []string{oursName, mercureName} {
		if !wanted[name] {
			continue
		}
		var out []byte
		var err error
		for attempt := 0; ; attempt++ {
			cmd := exec.Command("go", "build", "-mod=mod", "-o", filepath.Join(binDir, name), "./servers/"+name)
			cmd.Dir = benchDir
			out, err = cmd.CombinedOutput()
			if err == nil || attempt >= retries {
				break
			}
			logf("build of %s failed (attempt %d), retrying in 60 s (work in progress in the tree?):\n%s", name, attempt+1, out)
			time.Sleep(60 * time.Second)
		}
		if err != nil {
			return fmt.Errorf("building %s: %v\n%s", name, err, out)
		}
	}
	return nil
}

// variant selects a compression setup (ours only).
type variant string

const (
	plainVariant     variant = "none"
	encodeGzip       variant = "encode gzip"
	encodeZstd       variant = "encode zstd"
	sharedGzip       variant = "compress gzip"
	sharedZstd       variant = "compress zstd"
	mercureHistoryEv         = 1000
)

func (v variant) acceptEncoding() string {
	switch v {
	case encodeGzip, sharedGzip:
		return "gzip"
	case encodeZstd, sharedZstd:
		return "zstd"
	}
	return ""
}

type serverConf struct {
	name    string
	variant variant
	// mercureHistory is the bolt transport's size (0: mercureHistoryEv).
	mercureHistory int
	// oursHistory is ours' history events per topic (0: 1000).
	oursHistory int
	// transport: h1 (plain), tls or h2 (see -transport); h2Streams streams
	// per HTTP/2 connection; wrapper: ours gets the sse listener wrapper
	// before tls.
	transport string
	h2Streams int
	wrapper   bool
	// h2Lean: ours gets the sse_h2 listener wrapper after tls.
	h2Lean bool
	// adminPort, when set, turns Caddy's admin endpoint on there (for
	// -pprof); 0 keeps it off.
	adminPort int
	// pprofDir: where -pprof profiles go ("" for none).
	pprofDir string
	// oursServers: Caddyfile lines added to ours' servers global option
	// (-ours-servers).
	oursServers string
}

func (c serverConf) admin() string {
	if c.adminPort == 0 {
		return "admin off"
	}
	return fmt.Sprintf("admin 127.0.0.1:%d", c.adminPort)
}

// site is the site address and the lines that set up TLS.
func (c serverConf) site(port int, dir string) (addr, tlsLine, global string) {
	extra := ""
	if c.name == oursName && c.oursServers != "" {
		extra = "\t\t" + strings.ReplaceAll(c.oursServers, "\n", "\n\t\t") + "\n"
	}
	if c.transport == "" || c.transport == transportH1 {
		if extra != "" {
			global = "\tservers {\n" + extra + "\t}\n"
		}
		return fmt.Sprintf("http://127.0.0.1:%d", port), "", global
	}
	tlsLine = fmt.Sprintf("\ttls %s %s\n", filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	protocols := "h1 h2"
	if c.transport == transportH3 {
		// HTTP/3 on UDP at the same port; publishers stay on HTTP/1.1
		protocols = "h1 h2 h3"
	}
	global = "\tservers {\n\t\tprotocols " + protocols + "\n"
	// sse_h2 serves the subscribers' HTTP/2 only: the other transports'
	// figures stay those of the sse wrapper alone.
	h2Lean := c.h2Lean && c.transport == transportH2
	if (c.wrapper || h2Lean) && c.name == oursName {
		global += "\t\tlistener_wrappers {\n"
		if c.wrapper {
			global += "\t\t\tsse\n"
		}
		global += "\t\t\ttls\n"
		if h2Lean {
			global += "\t\t\tsse_h2\n"
		}
		global += "\t\t}\n"
	}
	global += extra + "\t}\n"
	return fmt.Sprintf("https://127.0.0.1:%d", port), tlsLine, global
}

func oursCaddyfile(conf serverConf, port int, dir string) string {
	v, history := conf.variant, conf.oursHistory
	addr, tlsLine, global := conf.site(port, dir)
	if history == 0 {
		history = 1000
	}
	encode, compress := "", ""
	switch v {
	case encodeGzip:
		encode = "encode gzip"
	case encodeZstd:
		encode = "encode zstd"
	case sharedGzip:
		compress = "compress gzip"
	case sharedZstd:
		compress = "compress zstd"
	}
	site := addr + " {\n" + tlsLine
	if encode != "" {
		site += "\t" + encode + "\n"
	}
	sse := "\tsse /events/* {\n\t\theartbeat 15s\n"
	if compress != "" {
		sse += "\t\t" + compress + "\n"
	}
	return `{
	` + conf.admin() + `
	persist_config off
	auto_https off
	log {
		level ERROR
	}
` + global + `}

` + site + sse + fmt.Sprintf(`		history {
			events %d
		}
		limits {
			topics 100000
			subscribers 100000
		}
		publish {
			bearer %s
		}
	}
	handle /plain {
		respond "ok" 200
	}
}
`, history, bearerToken)
}

func mercureCaddyfile(conf serverConf, port int, dir, dbPath string, size int) string {
	addr, tlsLine, global := conf.site(port, dir)
	if conf.transport == transportH3 {
		// Mercure sends "Connection: keep-alive", a header HTTP/3 forbids
		// (RFC 9114 section 4.2: the message is malformed); quic-go's
		// server passes it on and its client refuses the response. A
		// deleting header op is deferred to the response head.
		tlsLine += "\theader -Connection\n"
	}
	return fmt.Sprintf(`{
	%s
	persist_config off
	auto_https off
	log {
		level ERROR
	}
%s}

%s {
%s	mercure {
		publisher_jwt %s HS256
		anonymous
		heartbeat 15s
		transport bolt {
			path %s
			size %d
		}
	}
	handle /plain {
		respond "ok" 200
	}
}
`, conf.admin(), global, addr, tlsLine, mercureKey, dbPath, size)
}

// hs256 makes a JWT signed with HMAC-SHA256.
func hs256(key string, claims string) string {
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

var mercureJWT = hs256(mercureKey, `{"mercure":{"publish":["*"],"subscribe":["*"]}}`)

// server is one running Caddy process.
type server struct {
	conf serverConf
	port int
	dir  string
	cmd  *exec.Cmd
	pid  int
	d    *dialer
	logf *os.File
}

var nextPort = 19100

// freePort returns a port below the ephemeral range that nothing listens on.
func freePort() int {
	for {
		nextPort++
		if nextPort > 32000 {
			nextPort = 19100
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(nextPort))
		if err != nil {
			continue
		}
		l.Close()
		// HTTP/3 takes the same port on UDP
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(nextPort))
		if err == nil {
			u.Close()
			return nextPort
		}
	}
}

func startServer(binDir, tmpRoot string, conf serverConf, sources int) (*server, error) {
	if conf.pprofDir != "" {
		conf.adminPort = freePort()
	}
	s := &server{conf: conf, port: freePort()}
	var err error
	// Mercure's bolt history lives in tmpfs (/dev/shm) when available, so
	// like ours it is held in memory (fsync is a no-op there).
	s.dir, err = os.MkdirTemp(tmpRoot, conf.name+"-")
	if err != nil {
		return nil, err
	}
	if conf.transport == transportTLS || conf.transport == transportH2 || conf.transport == transportH3 {
		if _, _, err := writeCert(s.dir); err != nil {
			return nil, err
		}
	}
	var cf string
	switch conf.name {
	case nchanName:
		cf = nchanConf(conf, s.port, s.dir)
	case oursName:
		cf = oursCaddyfile(conf, s.port, s.dir)
	case mercureName:
		size := conf.mercureHistory
		if size == 0 {
			size = mercureHistoryEv
		}
		cf = mercureCaddyfile(conf, s.port, s.dir, filepath.Join(s.dir, "mercure.db"), size)
	}
	cfPath := filepath.Join(s.dir, "Caddyfile")
	if conf.name == nchanName {
		cfPath = filepath.Join(s.dir, "nginx.conf")
	}
	if err := os.WriteFile(cfPath, []byte(cf), 0o644); err != nil {
		return nil, err
	}
	s.logf, err = os.Create(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return nil, err
	}
	if conf.name == nchanName {
		s.cmd = exec.Command("nginx", "-p", s.dir, "-c", cfPath)
	} else {
		s.cmd = exec.Command(filepath.Join(binDir, conf.name), "run", "--config", cfPath, "--adapter", "caddyfile")
	}
	s.cmd.Dir = s.dir
	s.cmd.Stdout = s.logf
	s.cmd.Stderr = s.logf
	s.cmd.Env = append(os.Environ(),
		"HOME="+s.dir,
		"XDG_CONFIG_HOME="+filepath.Join(s.dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(s.dir, "data"),
	)
	// the server dies with the harness
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.pid = s.cmd.Process.Pid
	track(s, true)
	s.d = newDialer(s.port, sources)
	switch conf.transport {
	case transportTLS:
		s.d.tls = tlsClient("http/1.1")
	case transportH2:
		s.d.tls = tlsClient("http/1.1") // publishers
		s.d.h2 = &h2pool{d: s.d, streamsPerConn: max(1, conf.h2Streams)}
	case transportH3:
		s.d.tls = tlsClient("http/1.1") // publishers
		s.d.h3 = newH3Dialer(s.d, s.port, conf.h2Streams)
	}
	// ready when /plain answers
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := newPubConn(s.d)
		st, _, err := p.post("/plain", "text/plain", "", []byte("x"))
		p.close()
		if err == nil && st == 200 {
			break
		}
		if time.Now().After(deadline) {
			s.stop()
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			return nil, fmt.Errorf("%s did not start: %v (status %d)\n%s", conf.name, err, st, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s, nil
}

func (s *server) label() string {
	if s.conf.name == oursName && s.conf.variant != "" && s.conf.variant != plainVariant {
		return s.conf.name + " (" + string(s.conf.variant) + ")"
	}
	return s.conf.name
}

// stop ends the process (SIGTERM, then SIGKILL after 5 s) and removes its
// directory.
func (s *server) stop() {
	track(s, false)
	if s.d != nil && s.d.h3 != nil {
		s.d.h3.close(s.label())
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
	if s.logf != nil {
		s.logf.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

var (
	runningMu sync.Mutex
	running   = map[*server]bool{}
)

func track(s *server, on bool) {
	runningMu.Lock()
	defer runningMu.Unlock()
	if on {
		running[s] = true
	} else {
		delete(running, s)
	}
}

// stopAll ends every server still running (interrupt, watchdog).
func stopAll() {
	runningMu.Lock()
	var ss []*server
	for s := range running {
		ss = append(ss, s)
	}
	runningMu.Unlock()
	for _, s := range ss {
		s.stop()
	}
}

// alive reports whether the process still runs.
func (s *server) alive() bool {
	return s.cmd.Process.Signal(syscall.Signal(0)) == nil && s.cmd.ProcessState == nil
}

// procStat is RSS and CPU time of a process.
type procStat struct {
	rssKiB int64
	cpu    time.Duration // user + system
}

const clkTck = 100 // sysconf(_SC_CLK_TCK) on Linux

func (s *server) stat() procStat {
	var ps procStat
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					ps.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
				}
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid)); err == nil {
		// fields after the command name, which is in parentheses
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			// f[0] is field 3 (state); utime is field 14, stime 15
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				ps.cpu = time.Duration(u+st) * time.Second / clkTck
			}
		}
	}
	return ps
}

// selfCPU is the load generator's own CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// publishing, per server kind

// topicPath is what a subscriber GETs for a topic.
func (s *server) subPath(topic string) string {
	if s.conf.name == mercureName {
		return "/.well-known/mercure?topic=" + url.QueryEscape(topic)
	}
	return "/events/" + topic
}

// multiPath is what a subscriber GETs for one stream of several topics:
// ours' `topic` query parameters (topics named by their path), Mercure's
// own (`topic`, once per topic).
func (s *server) multiPath(topics []string) string {
	q := make(url.Values)
	for _, t := range topics {
		if s.conf.name == mercureName {
			q.Add("topic", t)
		} else {
			q.Add("topic", "/events/"+t)
		}
	}
	if s.conf.name == mercureName {
		return "/.well-known/mercure?" + q.Encode()
	}
	return "/events/?" + q.Encode()
}

// publish sends one event and returns its id.
func (s *server) publish(p *pubConn, topic string, data []byte) (string, error) {
	var st int
	var body []byte
	var err error
	if s.conf.name == mercureName {
		form := make([]byte, 0, len(data)*3/2+64)
		form = append(form, "topic="...)
		form = append(form, url.QueryEscape(topic)...)
		form = append(form, "&data="...)
		form = append(form, url.QueryEscape(string(data))...)
		st, body, err = p.post("/.well-known/mercure", "application/x-www-form-urlencoded", "Bearer "+mercureJWT, form)
	} else if s.conf.name == nchanName {
		st, body, err = p.post("/pub/"+topic, "application/json", "", data)
		if err == nil && (st == 201 || st == 202) {
			return "", nil // nchan answers the channel's state, no id
		}
	} else {
		st, body, err = p.post("/events/"+topic, "application/json", "Bearer "+bearerToken, data)
	}
	if err != nil {
		return "", err
	}
	if st != 200 {
		return "", fmt.Errorf("publish: status %d: %s", st, bytes.TrimSpace(body))
	}
	if s.conf.name == mercureName {
		return string(bytes.TrimSpace(body)), nil
	}
	// {"topic":"/events/t","ids":["…"]}
	if i := bytes.Index(body, []byte(`"ids":["`)); i >= 0 {
		rest := body[i+len(`"ids":["`):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			return string(rest[:j]), nil
		}
	}
	return "", nil
}

// publishBatch sends NDJSON lines to ours in one request.
func (s *server) publishBatch(p *pubConn, topic string, ndjson []byte) error {
	st, body, err := p.post("/events/"+topic, "application/x-ndjson", "Bearer "+bearerToken, ndjson)
	if err != nil {
		return err
	}
	if st != 200 {
		return fmt.Errorf("batch: status %d: %s", st, bytes.TrimSpace(body))
	}
	return nil
}

// machineBusy is the CPU time all processes have used (from /proc/stat).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clkTck
}

// bgSnap measures the CPU that processes other than the load generator and
// the server under test use: other work on the machine, which perturbs the
// figures.
type bgSnap struct {
	t    time.Time
	busy time.Duration
	ours time.Duration
}

func snapBG(s *server) bgSnap {
	b := bgSnap{t: time.Now(), busy: machineBusy(), ours: selfCPU()}
	if s != nil {
		b.ours += s.stat().cpu
	}
	return b
}

// cores is the background CPU between a and b, in cores.
func (a bgSnap) cores(b bgSnap) float64 {
	wall := b.t.Sub(a.t).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, ((b.busy-a.busy)-(b.ours-a.ours)).Seconds()/wall)
}

var quietWaited time.Duration

// waitQuiet waits (at most perPhase, and totalCap over the run) until other
// processes use less than limit cores over a second.
func waitQuiet(limit float64, perPhase, totalCap time.Duration) {
	start := time.Now()
	logged := false
	for {
		a := snapBG(nil)
		time.Sleep(time.Second)
		c := a.cores(snapBG(nil))
		if c < limit {
			break
		}
		if time.Since(start) > perPhase || quietWaited+time.Since(start) > totalCap {
			logf("  machine still busy (%.2f cores used by other processes); measuring anyway", c)
			break
		}
		if !logged {
			logf("  waiting for other processes to quieten (%.2f cores busy)", c)
			logged = true
		}
	}
	quietWaited += time.Since(start)
}

// profile saves Caddy's /debug/pprof/<what> (query: e.g. seconds=10) to
// pprofDir/<transport>-<server>-<label>.<what> (with -pprof).
func (s *server) profile(what, query, label string) {
	if s.conf.pprofDir == "" {
		return
	}
	u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?%s", s.conf.adminPort, what, query)
	if what == "metrics" {
		u = fmt.Sprintf("http://127.0.0.1:%d/metrics", s.conf.adminPort)
	}
	resp, err := http.Get(u)
	if err != nil {
		logf("  pprof %s: %v", what, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	name := filepath.Join(s.conf.pprofDir, fmt.Sprintf("%s-%s-%s.%s", s.conf.transport, s.conf.name, label, what))
	if err := os.WriteFile(name, b, 0o644); err != nil {
		logf("  pprof: %v", err)
	}
}

// nchanConf is nginx in one process (no master) serving nchan: subscribers
// at /events/<topic> (EventSource), publishers at /pub/<topic>, history of
// 1,000 messages per channel, a ping every 15 s.
func nchanConf(conf serverConf, port int, dir string) string {
	listen := fmt.Sprintf("listen 127.0.0.1:%d;", port)
	tlsLines := ""
	if conf.transport == transportTLS || conf.transport == transportH2 {
		listen = fmt.Sprintf("listen 127.0.0.1:%d ssl http2;", port)
		tlsLines = fmt.Sprintf("\t\tssl_certificate %s;\n\t\tssl_certificate_key %s;\n", filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	}
	return fmt.Sprintf(`load_module %s;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 100000;
error_log %s/error.log error;
pid %s/nginx.pid;
events {
	worker_connections 60000;
}
http {
	access_log off;
	client_body_temp_path %s;
	proxy_temp_path %s;
	fastcgi_temp_path %s;
	uwsgi_temp_path %s;
	scgi_temp_path %s;
	keepalive_requests 1000000;
	server {
		%s
%s		location ~ ^/events/(.+)$ {
			nchan_subscriber eventsource;
			nchan_channel_id $1;
			nchan_eventsource_ping_interval 15;
		}
		location ~ ^/pub/(.+)$ {
			nchan_publisher;
			nchan_channel_id $1;
			nchan_message_buffer_length 1000;
			nchan_message_timeout 1h;
		}
		location = /plain {
			return 200 "ok";
		}
	}
}
`, nchanModule, dir, dir, dir, dir, dir, dir, dir, listen, tlsLines)
}
