//go:build !linux

package stream

import "syscall"

// watchHangup is not available here: a detached stream notices a client
// that left by a failed write, or by peeking at the socket at heartbeat
// time.
func watchHangup(syscall.RawConn, func()) (unwatch func(), ok bool) { return nil, false }
