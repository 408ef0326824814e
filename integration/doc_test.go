// Package integration_test holds the suites that run Caddy as a child
// process (restarts, kill -9, two nodes) or start redis-server: slower than
// the in-process specifications of the root package, and each spawning
// what it needs on free loopback ports. With CI set, a missing redis-server
// fails these tests instead of skipping them.

package integration_test

import (
	"os"
	"testing"

	"github.com/ssegate/caddy-sse/internal/sitetest"
)

func TestMain(m *testing.M) { os.Exit(sitetest.RunChecked(m)) }
