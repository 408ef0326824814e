//go:build linux || darwin || freebsd || netbsd || openbsd

package stream

import "syscall"

// peekClosed reports whether the peer closed its side: a read that would
// return end of file, or an error such as a reset. It neither blocks nor consumes anything.
func peekClosed(raw syscall.RawConn) bool {
	var closed bool
	var b [1]byte
	err := raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case nil:
			closed = n == 0
		case syscall.EAGAIN, syscall.EINTR:
		default: // reset by the peer, or worse
			closed = true
		}
		return true // never wait for readiness
	})
	return err == nil && closed
}
