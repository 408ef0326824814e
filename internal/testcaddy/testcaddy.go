// Package testcaddy runs a real Caddy for tests: in this process (so the
// race detector and goroutine checks see the module's code) or as the
// binary built from cmd/caddy (for what only a real process shows: exit,
// signals, restarts).
package testcaddy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/ssegate/caddy-sse/internal/freeport"
	// What a real Caddy has: encode, file_server, the admin /metrics
	// endpoint and the rest of the standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The module under test.
	_ "github.com/ssegate/caddy-sse"
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// this process has not handed out before (see internal/freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.Get(t)
}

// Adapt turns a Caddyfile into Caddy's JSON, failing the test on error.
func Adapt(t testing.TB, caddyfileText string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfileText)
	}
	for _, w := range warnings {
		t.Logf("Caddyfile warning: %s", w.String())
	}
	return cfg
}

// Load runs caddyfileText in this process, replacing the running config as
// a reload would. The config is stopped when the test ends.
func Load(t testing.TB, caddyfileText string) {
	t.Helper()
	if err := caddy.Load(Adapt(t, caddyfileText), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		// caddy.Stop leaves the admin endpoint running; a config that
		// disables it stops that too, so nothing outlives the test.
		if err := caddy.Load([]byte(`{"admin":{"disabled":true}}`), true); err != nil {
			t.Errorf("unloading config: %v", err)
		}
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
}

// Reload replaces the running in-process config, keeping the first Load's
// cleanup.
func Reload(t testing.TB, caddyfileText string) {
	t.Helper()
	if err := caddy.Load(Adapt(t, caddyfileText), true); err != nil {
		t.Fatalf("reloading config: %v", err)
	}
}

// ValidateCaddyfile adapts and provisions without running, returning the
// error Caddy would report.
func ValidateCaddyfile(caddyfileText string) error {
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

// Format normalises Caddyfile text (used by golden tests).
func Format(text string) string {
	return string(caddyfile.Format([]byte(text)))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/caddy once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-sse-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "caddy")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/caddy")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Process is a Caddy binary running a Caddyfile.
type Process struct {
	t     testing.TB
	cmd   *exec.Cmd
	Admin string // host:port of the admin API
	dir   string
	log   *bytes.Buffer
	done  chan struct{}
}

// Start runs the built binary with caddyfileText, which must contain the
// placeholder ADMIN where the global admin address goes, e.g.
// "{\n\tadmin ADMIN\n}". The process is killed when the test ends.
func Start(t testing.TB, caddyfileText string) *Process {
	t.Helper()
	bin := Binary(t)
	p := &Process{t: t, Admin: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), dir: t.TempDir(), log: new(bytes.Buffer), done: make(chan struct{})}
	cfgPath := filepath.Join(p.dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(strings.ReplaceAll(caddyfileText, "ADMIN", p.Admin)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	p.cmd.Dir = p.dir
	p.cmd.Env = append(os.Environ(), "HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	p.cmd.Stdout = &syncWriter{w: p.log}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.Log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + p.Admin + "/config/")
		if err == nil {
			resp.Body.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("caddy exited at start:\n%s", p.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy admin API not up after 15s:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns what the process printed so far.
func (p *Process) Log() string {
	return p.cmd.Stdout.(*syncWriter).String()
}

// Reload loads a new Caddyfile through the admin API, as `caddy reload` does.
func (p *Process) Reload(caddyfileText string) error {
	body := strings.ReplaceAll(caddyfileText, "ADMIN", p.Admin)
	req, err := http.NewRequest(http.MethodPost, "http://"+p.Admin+"/load", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting /load: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("/load answered %s: %s", resp.Status, b.String())
	}
	return nil
}

// Stop asks Caddy to exit through the admin API, as `caddy stop` does, and
// waits up to limit for the process to end.
func (p *Process) Stop(limit time.Duration) error {
	resp, err := http.Post("http://"+p.Admin+"/stop", "", nil)
	if err != nil {
		return fmt.Errorf("posting /stop: %w", err)
	}
	resp.Body.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("caddy still running %s after /stop", limit)
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// InsecureTransport is for talking to a test site with `tls internal`: its
// certificate comes from a CA the test machine does not trust.
func InsecureTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback test sites only
	return tr
}

// Signal sends sig to the process: SIGSTOP and SIGCONT pause and resume
// it, as a long GC pause or a frozen VM would.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }
