package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Replication, Sentinel and Cluster setups for tests, with failure
// detection tuned short (a second) so that failovers happen within a few
// seconds.

// StartReplica runs a redis-server replicating master and waits until the
// link is up.
func StartReplica(t testing.TB, master *Server, args ...string) *Server {
	t.Helper()
	host, port := hostPort(master.Addr)
	r := Start(t, append([]string{"--replicaof", host, port}, args...)...)
	r.WaitFor(func(info string) bool { return strings.Contains(info, "master_link_status:up") }, 10*time.Second, "INFO", "replication")
	return r
}

// WaitFor runs a command with redis-cli until ok says yes of its output,
// failing the test after timeout.
func (s *Server) WaitFor(ok func(out string) bool, timeout time.Duration, cmd ...string) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var out string
	for time.Now().Before(deadline) {
		out, _ = s.CLI(cmd...)
		if ok(out) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("%s: %q not as expected within %v:\n%s", s.Addr, cmd, timeout, out)
}

// Info returns INFO section (or the sentinel's INFO), by redis-cli.
func (s *Server) Info(section string) (string, error) {
	return s.CLI("INFO", section)
}

// CLI runs one command with redis-cli against the server and returns its
// output.
func (s *Server) CLI(args ...string) (string, error) {
	host, port := hostPort(s.Addr)
	cmd := exec.Command(cliBinary(s.t), append([]string{"-h", host, "-p", port}, args...)...)
	for i, a := range s.args {
		if a == "--requirepass" && i+1 < len(s.args) {
			cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+s.args[i+1])
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func cliBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-cli"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("redis-cli is not installed (CI is set, so this fails instead of skipping)")
	}
	t.Skip("redis-cli is not installed")
	return ""
}

func hostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// Sentinels is a set of sentinels monitoring one master.
type Sentinels struct {
	Master string // the name they monitor it as
	Nodes  []*Server
}

// Addrs are the sentinels' host:port.
func (ss *Sentinels) Addrs() []string {
	out := make([]string, len(ss.Nodes))
	for i, n := range ss.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartSentinels runs n sentinels (redis-server --sentinel) monitoring
// master under name, with a quorum of n/2+1, declaring it down after a
// second without an answer, and waits until each knows the replicas
// (so that it can fail over) and the other sentinels. extra lines go into
// each sentinel's configuration, e.g. "sentinel auth-pass <name> <pw>".
func StartSentinels(t testing.TB, master *Server, name string, n int, replicas int, extra ...string) *Sentinels {
	t.Helper()
	bin := Binary(t)
	host, port := hostPort(master.Addr)
	ss := &Sentinels{Master: name}
	for range n {
		s := &Server{t: t, bin: bin, dir: t.TempDir()}
		s.argv = func() []string {
			conf := filepath.Join(s.dir, "sentinel.conf")
			if _, err := os.Stat(conf); err != nil {
				// The sentinel rewrites its file: written once, kept
				// across restarts.
				body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s %d\n"+
					"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 4000\n"+
					"sentinel parallel-syncs %s 1\n",
					s.Port, s.dir, name, host, port, n/2+1, name, name, name) + strings.Join(extra, "\n") + "\n"
				if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return []string{conf, "--sentinel", "--loglevel", "warning", "--protected-mode", "no"}
		}
		ss.Nodes = append(ss.Nodes, startServer(t, s))
	}
	for _, s := range ss.Nodes {
		s.WaitFor(func(out string) bool {
			return fieldAfter(out, "num-slaves") >= replicas && fieldAfter(out, "num-other-sentinels") >= n-1
		}, 15*time.Second, "SENTINEL", "MASTER", name)
	}
	return ss
}

// MasterAddr asks the first sentinel that answers for the master's address.
func (ss *Sentinels) MasterAddr() string {
	for _, s := range ss.Nodes {
		out, err := s.CLI("SENTINEL", "GET-MASTER-ADDR-BY-NAME", ss.Master)
		if err == nil {
			if f := strings.Fields(out); len(f) == 2 {
				return f[0] + ":" + f[1]
			}
		}
	}
	return ""
}

// fieldAfter reads a number that follows a field name in redis-cli's
// one-value-per-line output.
func fieldAfter(out, name string) int {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == name && i+1 < len(lines) {
			n, _ := strconv.Atoi(strings.TrimSpace(lines[i+1]))
			return n
		}
	}
	return -1
}

// Cluster is a Redis Cluster of masters, each with its replicas.
type Cluster struct {
	Nodes []*Server // masters first, then replicas
}

// Addrs are every node's host:port (seed addresses).
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartCluster runs masters*(1+replicas) nodes with cluster-enabled (node
// timeout one second, so a replica takes over a dead master within a few
// seconds), joins them with redis-cli --cluster create, and waits until
// every node reports the cluster ok.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	c := &Cluster{}
	for range masters * (1 + replicas) {
		c.Nodes = append(c.Nodes, Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
			"--cluster-require-full-coverage", "no", "--appendfsync", "everysec"))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command(cliBinary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		n.WaitFor(func(out string) bool { return strings.Contains(out, "cluster_state:ok") }, 15*time.Second, "CLUSTER", "INFO")
	}
	return c
}

// WaitOK waits until every running node reports the cluster ok and agrees
// on who serves every slot (after a failover).
func (c *Cluster) WaitOK(timeout time.Duration) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		n.WaitFor(func(out string) bool {
			return strings.Contains(out, "cluster_state:ok") && strings.Contains(out, "cluster_slots_ok:16384")
		}, timeout, "CLUSTER", "INFO")
	}
}

// MasterOf returns the node that serves key's slot now, as the first
// running node sees it (CLUSTER NODES), or nil.
func (c *Cluster) MasterOf(key string) *Server {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		slotOut, err := n.CLI("CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		slot, _ := strconv.Atoi(strings.TrimSpace(slotOut))
		out, err := n.CLI("CLUSTER", "NODES")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			for _, r := range f[8:] {
				a, b, ok := strings.Cut(r, "-")
				if !ok {
					b = a
				}
				lo, err1 := strconv.Atoi(a)
				hi, err2 := strconv.Atoi(b)
				if err1 != nil || err2 != nil || slot < lo || slot > hi {
					continue
				}
				for _, m := range c.Nodes {
					if m.Addr == addr {
						return m
					}
				}
			}
		}
		return nil
	}
	return nil
}
