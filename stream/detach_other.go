//go:build !unix

package stream

import (
	"errors"
	"net"
	"syscall"
)

// canWriteNow: without a portable non-blocking write to a socket here,
// detached streams never park; each is served by a goroutine of its own.
const canWriteNow = false

type rawWriter struct {
	raw     syscall.RawConn
	pending []byte
}

// writeNow is never called where streams do not park.
func (w *rawWriter) writeNow([]byte) error {
	return errors.New("non-blocking writes are not supported on this platform")
}

// wrapParkable: connections stay as they are, and TLS streams do not park.
func wrapParkable(c net.Conn) net.Conn { return c }
