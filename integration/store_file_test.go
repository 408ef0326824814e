package integration_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/caddy-sse/internal/sitetest"
	"github.com/ssegate/caddy-sse/internal/ssetest"
	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

func fileStoreCaddyfile(port int, path string) string {
	return fmt.Sprintf(`{
	admin ADMIN
}

http://127.0.0.1:%d {
	sse /f/* {
		store file %s
		publish {
			bearer file-token
		}
	}
}
`, port, path)
}

// filePublished is an acknowledged publish.
type filePublished struct {
	topic, id, data string
}

// filePublish POSTs data to topic and returns the id when the answer is 200.
func filePublish(client *http.Client, addr, topic, data string) (string, error) {
	res, err := sitetest.Publish(client, http.MethodPost, "http://"+addr+topic, data, "Authorization: Bearer file-token")
	if err != nil {
		return "", err
	}
	return res.OneID()
}

// fileReadUntil subscribes to topic after from and returns the events up to
// and including the one whose data is marker.
func fileReadUntil(t *testing.T, addr, topic, from, marker string) []ssetest.Event {
	t.Helper()
	s, err := ssetest.Dial(addr, topic, "Last-Event-ID: "+from)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Response.StatusCode != http.StatusOK {
		t.Fatalf("subscribing to %s after %s: %s", topic, from, s.Response.Status)
	}
	_ = s.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []ssetest.Event
	for {
		e, err := s.Next()
		if err != nil {
			t.Fatalf("reading %s after %s (read %d events): %v", topic, from, len(got), err)
		}
		got = append(got, e)
		if e.Data == marker {
			return got
		}
	}
}

// fileKill9 sends SIGKILL to the Caddy child process whose config lives
// under root (testcaddy writes it in a temporary directory of the test).
func fileKill9(t *testing.T, p *testcaddy.Process, root string) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc to find the caddy process: %v", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), root+string(filepath.Separator)) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		proc, err := os.FindProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Kill(); err != nil { // SIGKILL
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		select {
		case <-p.Done():
			return
		case <-time.After(10 * time.Second):
			t.Fatal("caddy still running 10s after kill -9")
		}
	}
	t.Fatalf("no caddy process of this test found under %s", root)
}

// The file store through a real Caddy: history survives `caddy stop` and a
// start (resuming with any id from before gets exactly the events after it,
// on each topic), and every publish acknowledged with 200 survives a kill -9
// during publishing.
func TestFileStoreSurvivesRestartAndKill(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sse.db")
	client := &http.Client{Timeout: 10 * time.Second}
	topics := []string{"/f/a", "/f/b", "/f/c"}

	// 1. Publish, then caddy stop.
	port := testcaddy.FreePort(t)
	p := testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logs := map[string][]filePublished{}
	for i := range 30 {
		topic := topics[i%len(topics)]
		data := fmt.Sprintf("before-%d", i)
		id, err := filePublish(client, addr, topic, data)
		if err != nil {
			t.Fatal(err)
		}
		logs[topic] = append(logs[topic], filePublished{topic, id, data})
	}
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"opened sse file store", "closed sse file store"} {
		if !strings.Contains(p.Log(), line) {
			t.Errorf("no log line %q:\n%s", line, p.Log())
		}
	}

	// 2. Start on the same file: resume after every id from before.
	port = testcaddy.FreePort(t)
	p = testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for _, topic := range topics {
		marker := "marker-" + topic
		if _, err := filePublish(client, addr, topic, marker); err != nil {
			t.Fatal(err)
		}
		log := logs[topic]
		for i, before := range log {
			got := fileReadUntil(t, addr, topic, before.id, marker)
			var want []string
			for _, e := range log[i+1:] {
				want = append(want, e.id+" "+e.data)
			}
			var have []string
			for _, e := range got[:len(got)-1] {
				have = append(have, e.ID+" "+e.Data)
			}
			if !slices.Equal(have, want) || got[len(got)-1].Type != "message" {
				t.Fatalf("%s resumed after %s (from before the restart): got %q then %+v, want %q then the marker", topic, before.id, have, got[len(got)-1], want)
			}
		}
	}

	// A reload on the same file keeps it open (a second open would find
	// it locked) and keeps its history.
	if err := p.Reload(strings.Replace(fileStoreCaddyfile(port, path), "bearer file-token", "bearer file-token\n\t\t\tevent reloaded", 1)); err != nil {
		t.Fatalf("reload on the same file: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		// The new config serves once the reload is done.
		if _, err := filePublish(client, addr, "/f/a", "after-reload"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := fileReadUntil(t, addr, "/f/a", logs["/f/a"][0].id, "after-reload")
	if len(got) != len(logs["/f/a"])+1 || got[len(got)-1].Type != "reloaded" {
		t.Fatalf("after the reload, resuming after the first event read %+v", got)
	}
	if strings.Count(p.Log(), "closed sse file store") != 0 {
		t.Fatalf("the reload closed the store:\n%s", p.Log())
	}
	logs["/f/a"] = append(logs["/f/a"], filePublished{"/f/a", got[len(got)-1].ID, "after-reload"})

	// A second process cannot open the file while this one holds it: the
	// config fails, naming the file.
	err := testcaddy.ValidateCaddyfile(strings.Replace(fileStoreCaddyfile(testcaddy.FreePort(t), path), "admin ADMIN", "admin off", 1))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("loading a config on a file another process holds: %v, want a lock error naming %s", err, path)
	}

	// 3. kill -9 while 8 publishers are publishing: every event answered
	// 200 survives.
	var (
		mu    sync.Mutex
		acked []filePublished
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				topic := topics[(w+i)%len(topics)]
				data := fmt.Sprintf("w%d-%d", w, i)
				id, err := filePublish(c, addr, topic, data)
				if err != nil {
					return // the process is gone
				}
				mu.Lock()
				acked = append(acked, filePublished{topic, id, data})
				mu.Unlock()
			}
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes acknowledged in 20s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fileKill9(t, p, filepath.Dir(dir))
	close(stop)
	wg.Wait()

	// 4. Start again: every acknowledged event is there, in order.
	port = testcaddy.FreePort(t)
	p = testcaddy.Start(t, fileStoreCaddyfile(port, path))
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for _, topic := range topics {
		marker := "after-kill-" + topic
		if _, err := filePublish(client, addr, topic, marker); err != nil {
			t.Fatal(err)
		}
		got := fileReadUntil(t, addr, topic, "earliest", marker)
		pos := map[string]int{}
		for i, e := range got {
			pos[e.ID+" "+e.Data] = i
		}
		lastOfWriter := map[string]int{}
		n := 0
		for _, a := range append(logs[topic], acked...) {
			if a.topic != topic {
				continue
			}
			i, ok := pos[a.id+" "+a.data]
			if !ok {
				t.Fatalf("%s: acknowledged event %s %q is missing after kill -9 and restart", topic, a.id, a.data)
			}
			writer, _, _ := strings.Cut(a.data, "-")
			if prev, ok := lastOfWriter[writer]; ok && prev >= i {
				t.Fatalf("%s: event %s %q out of order", topic, a.id, a.data)
			}
			lastOfWriter[writer] = i
			n++
		}
		t.Logf("%s: %d acknowledged events all present after kill -9 (%d retained in all)", topic, n, len(got)-1)
	}
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// A corrupt file fails the config with a message naming the file; Caddy
// keeps running and nothing is started empty.
func TestFileStoreCorruptFileFailsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sse.db")
	garbage := []byte(strings.Repeat("this is not a store file\n", 400))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	err := testcaddy.ValidateCaddyfile(fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	sse /f/* {
		store file %s
	}
}
`, testcaddy.FreePort(t), path))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("config on a corrupt file: %v, want an error naming %s as corrupt", err, path)
	}
	t.Logf("%v", err)
	if b, _ := os.ReadFile(path); string(b) != string(garbage) {
		t.Fatal("the corrupt file was modified")
	}
}

func TestFileStoreCaddyfile(t *testing.T) {
	cfg := string(testcaddy.Adapt(t, `http://127.0.0.1:9 {
	sse {
		store file /var/lib/caddy/sse.db
	}
}
`))
	if want := `"store":{"module":"file","path":"/var/lib/caddy/sse.db"}`; !strings.Contains(cfg, want) {
		t.Fatalf("adapted config %s lacks %s", cfg, want)
	}
	for _, bad := range []string{"store file", "store file a b"} {
		err := testcaddy.ValidateCaddyfile("http://127.0.0.1:9 {\n\tsse {\n\t\t" + bad + "\n\t}\n}\n")
		if err == nil {
			t.Fatalf("%q was accepted", bad)
		}
	}
}
