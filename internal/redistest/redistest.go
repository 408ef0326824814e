// Package redistest runs a real redis-server for tests: on a free loopback
// port, in its own temporary directory, with its data kept across Stop and
// Restart (append-only file, fsync on every write) so tests can take Redis
// away and bring it back.
//
// When no redis-server binary is installed the test is skipped, unless the
// environment variable CI is set: then it fails, so CI cannot pass by
// skipping.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/freeport"
)

// Server is one redis-server process (or, after Stop, the data it left).
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	Port int
	// Addr is host:port.
	Addr string
	args []string
	// argv, when set, replaces the default command line (sentinels).
	argv func() []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// Binary returns the path of redis-server, skipping (or, with CI set,
// failing) the test when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("redis-server is not installed (CI is set, so this fails instead of skipping)")
	}
	t.Skip("redis-server is not installed")
	return ""
}

// Start runs a redis-server for the test; it is killed when the test ends.
// args are extra redis-server options, after (so overriding) the defaults,
// e.g. "--appendfsync", "everysec".
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return startServer(t, &Server{t: t, bin: Binary(t), dir: t.TempDir(), args: args})
}

func startServer(t testing.TB, s *Server) *Server {
	t.Helper()
	t.Cleanup(s.kill)
	var lastErr error
	for range 5 {
		s.Port = FreePort(t)
		s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr }

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	argv := append([]string{
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
	}, s.args...)
	if s.argv != nil {
		argv = s.argv()
	}
	cmd := exec.Command(s.bin, argv...)
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.log = cmd, done, log
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server not answering PING after 10s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING and expects PONG (a server still loading its data
// answers -LOADING, which is not ready).
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	// A server with a password answers -NOAUTH: it is up all the same.
	if reply := strings.TrimSpace(line); reply != "+PONG" && !strings.HasPrefix(reply, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop shuts the server down gracefully (SIGTERM), keeping its data.
func (s *Server) Stop() {
	s.t.Helper()
	cmd, done := s.take()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		s.t.Errorf("redis-server did not stop within 10s of SIGTERM")
	}
}

// Restart starts the server again on the same port and data, after Stop
// (or stops it first).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.t.Fatalf("restarting redis-server: %v", err)
}

// Crash kills the server at once (SIGKILL), losing what it had not made
// durable; Restart brings it back on the same port and data.
func (s *Server) Crash() {
	s.t.Helper()
	s.kill()
}

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Log returns what the current process printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// take returns the running process (nil when there is none) and its done
// channel, and marks the server stopped.
func (s *Server) take() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	return cmd, done
}

func (s *Server) kill() {
	cmd, done := s.take()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Do sends one command (its arguments as bulk strings) on a fresh
// connection and returns the raw first reply line, for tests that want to
// look at Redis without a client library: "+OK", ":42", "$5" (the bulk's
// length; the bulk itself is not read), "*3", "-ERR ...".
func (s *Server) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// FreePort returns a loopback TCP port that was free a moment ago and that
// this process has not handed out before (see internal/freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.Get(t)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
