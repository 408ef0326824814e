// Package freeport hands out loopback TCP ports for tests that start
// servers (Caddy, redis-server) on a port chosen in advance.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports handed out by Get come from below Linux's ephemeral range
// (32768 and up): a port from that range, free when we looked, can be taken
// by any outgoing connection (of this test or of a test package running
// beside it) before the server binds it.
const (
	portBase  = 20000
	portRange = 12000
)

var (
	portsMu  sync.Mutex
	portsOut = map[int]bool{}
)

// Get returns a loopback TCP port that was free a moment ago and that this
// process has not handed out before.
func Get(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := portBase + rand.IntN(portRange)
		if portsOut[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		portsOut[port] = true
		return port
	}
	t.Fatal("no free loopback port found")
	return 0
}
