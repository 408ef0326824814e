package caddysse_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/ssegate/caddy-sse/internal/testcaddy"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/caddyfile")

// adapt turns a Caddyfile into Caddy's JSON as `caddy adapt` does.
func adapt(text string) ([]byte, error) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

// Every testdata/caddyfile/*.caddyfile adapts to the JSON beside it, and
// that config provisions. Run with -update to rewrite the JSON.
func TestCaddyfileAdaptGolden(t *testing.T) {
	t.Setenv("SSE_GOLDEN_TOKEN", "token-from-env")
	inputs, err := filepath.Glob(filepath.Join("testdata", "caddyfile", "*.caddyfile"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			text, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := adapt(string(text))
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, cfg, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("%s adapts to:\n%s\nwant (%s):\n%s", in, pretty.Bytes(), golden, want)
			}
			if err := testcaddy.ValidateCaddyfile(string(text)); err != nil {
				t.Errorf("the adapted config does not provision: %v", err)
			}
		})
	}
}

// A mistake in the sse block is reported with the directive and the line
// it is on.
func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name  string
		block string // the site block's body: the sse directive is on line 2
		line  int
		says  string
	}{
		{"unknown option", "sse {\n\tretry 1s\n\tbogus 1\n}", 4, `unrecognized sse option "bogus"`},
		{"unknown history option", "sse {\n\thistory {\n\t\tevents 5\n\t\tdays 3\n\t}\n}", 5, `unrecognized history option "days"`},
		{"unknown limits option", "sse {\n\tlimits {\n\t\tclients 3\n\t}\n}", 4, `unrecognized limits option "clients"`},
		{"unknown publish option", "sse {\n\tpublish {\n\t\tbasic alice\n\t}\n}", 4, `unrecognized publish option "basic"`},
		{"bad duration", "sse {\n\tretry soon\n}", 3, "retry:"},
		{"negative duration", "sse {\n\twrite_timeout -1s\n}", 3, "write_timeout: -1s is negative"},
		{"bad size", "sse {\n\thistory {\n\t\tsize lots\n\t}\n}", 4, `size: "lots" is not a size`},
		{"bad publish size", "sse {\n\tpublish {\n\t\tallow_unauthenticated\n\t\tmax_body 2TiB\n\t}\n}", 5, `max_body: "2TiB" is not a size`},
		{"bad integer", "sse {\n\thistory {\n\t\tevents many\n\t}\n}", 4, `events: "many" is not a non-negative integer`},
		{"on_gap bogus", "sse {\n\ton_gap bogus\n}", 3, `on_gap: "bogus" is neither replay nor live`},
		{"unknown encoding", "sse {\n\tcompress br\n}", 3, `compress: unknown encoding "br"`},
		{"detach bogus", "sse {\n\tdetach sometimes\n}", 3, `detach: "sometimes" is neither on nor off`},
		{"extra argument", "sse {\n\tretry 1s 2s\n}", 3, "retry: too many values"},
		{"missing value", "sse {\n\theartbeat\n}", 3, "heartbeat: missing value"},
		{"argument after the matcher", "sse /events/* extra", 2, "wrong argument count"},
		{"argument on a block", "sse {\n\thistory 5 {\n\t\tevents 5\n\t}\n}", 3, "wrong argument count"},
		{"unknown source option", "sse {\n\tsource http://127.0.0.1:9/feed {\n\t\ttopic /feed\n\t\tpoll 5s\n\t}\n}", 5, `unrecognized source option "poll"`},
		{"option given twice", "sse {\n\tretry 1s\n\tretry 2s\n}", 4, `sse: option "retry" given twice`},
		{"block given twice", "sse {\n\thistory {\n\t\tevents 5\n\t}\n\thistory {\n\t\tage 1m\n\t}\n}", 6, `sse: option "history" given twice`},
		{"limits option given twice", "sse {\n\tlimits {\n\t\ttopics 3\n\t\ttopics 4\n\t}\n}", 5, `limits: option "topics" given twice`},
		{"publish option given twice", "sse {\n\tpublish {\n\t\tbearer a\n\t\tbearer b\n\t\tmax_body 1KiB\n\t\tmax_body 2KiB\n\t}\n}", 7, `publish: option "max_body" given twice`},
		{"a typo of an option", "sse {\n\thearbeat 5s\n}", 3, `unrecognized sse option "hearbeat"; did you mean heartbeat?`},
		{"a dash for an underscore", "sse {\n\twrite-timeout 5s\n}", 3, `did you mean write_timeout?`},
		{"a singular for a plural", "sse {\n\tlimits {\n\t\tsubscriber 3\n\t}\n}", 4, `did you mean subscribers?`},
		{"a typo in publish", "sse {\n\tpublish {\n\t\tberaer x\n\t}\n}", 4, `did you mean bearer?`},
		{"nothing close", "sse {\n\tbogus 1\n}", 3, `known options: topic, retry, heartbeat`},
		{"hmac_sha256 with three values", "sse {\n\tpublish {\n\t\thmac_sha256 a b c\n\t}\n}", 4, "wrong argument count"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := "http://localhost:8080 {\n\t" + strings.ReplaceAll(c.block, "\n", "\n\t") + "\n}\n"
			_, err := adapt(text)
			if err == nil {
				t.Fatalf("adapted without error:\n%s", text)
			}
			msg := err.Error()
			for _, want := range []string{"parsing caddyfile tokens for 'sse'", c.says} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if at := ", at Caddyfile:" + strconv.Itoa(c.line); !strings.HasSuffix(msg, at) {
				t.Errorf("error %q does not end %q", msg, at)
			}
		})
	}
}

// Mistakes in `store redis` are reported with their line; a bad URL fails
// the config without showing its password.
func TestRedisStoreCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ block, says string }{
		{"store redis", "store redis: missing the URL"},
		{"store redis redis://127.0.0.1:6379 {\n\tmode ring\n}", `mode: "ring" is not standalone, sentinel or cluster`},
		{"store redis redis://127.0.0.1:6379 {\n\tmode cluster\n\tmode cluster\n}", `option "mode" given twice`},
		{"store redis redis://127.0.0.1:6379 {\n\tmin_replicas_ack\n}", "min_replicas_ack: want <n> [<timeout>]"},
		{"store redis redis://127.0.0.1:6379 {\n\tmin_replicas_ack one\n}", `min_replicas_ack: "one" is not a non-negative integer`},
		{"store redis redis://127.0.0.1:6379 {\n\tmin_replicas_ack 1 soon\n}", `min_replicas_ack: timeout "soon"`},
		{"store redis redis://127.0.0.1:6379 {\n\tbogus 1\n}", `unrecognized redis store option "bogus"`},
		{"store redis redis://127.0.0.1:6379 {\n\tpool_size many\n}", `pool_size: "many" is not a non-negative integer`},
		{"store redis redis://127.0.0.1:6379 {\n\tdial_timeout soon\n}", "dial_timeout:"},
		{"store redis redis://127.0.0.1:6379 {\n\tprefix a:\n\tprefix b:\n}", `option "prefix" given twice`},
	} {
		text := "http://localhost:8080 {\n\tsse {\n\t\t" + strings.ReplaceAll(c.block, "\n", "\n\t\t") + "\n\t}\n}\n"
		if _, err := adapt(text); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: error %v, want one saying %q", c.block, err, c.says)
		}
	}
	for _, c := range []struct{ url, says string }{
		{"http://127.0.0.1:6379", "redis store: url"},
		{"redis://user:hunter2@127.0.0.1:notaport", "redis store: url"},
		{"redis://127.0.0.1:6379 {\n\tprefix a{b}\n}", "must not contain braces"},
		{"redis://127.0.0.1:6379 redis://127.0.0.1:6380", "several URLs need mode sentinel or cluster"},
		{"redis://127.0.0.1:26379 {\n\tmode sentinel\n}", "mode sentinel needs master <name>"},
		{"redis://127.0.0.1:7000 {\n\tmode cluster\n\tmaster m\n}", "master, sentinel_username and sentinel_password are for mode sentinel"},
		{"redis://127.0.0.1:7000/2 {\n\tmode cluster\n}", "cluster mode has no databases"},
		{"redis://127.0.0.1:7000 {\n\tmin_replicas_ack 1 3s\n}", "must be shorter than read_timeout"},
		{"redis://127.0.0.1:7000 redis://u:hunter2@127.0.0.1:notaport {\n\tmode cluster\n}", "redis store: url 2"},
	} {
		text := "{\n\tadmin off\n}\nhttp://localhost:8080 {\n\tsse {\n\t\tstore redis " + c.url + "\n\t}\n}\n"
		err := testcaddy.ValidateCaddyfile(text)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: error %v, want one saying %q", c.url, err, c.says)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
