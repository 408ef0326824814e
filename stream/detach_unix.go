//go:build unix

package stream

import "syscall"

// canWriteNow: this platform can write to a socket without waiting (see
// sendNow), so plain TCP streams park.
const canWriteNow = true

// sendNow writes buf without waiting: what the socket does not take at once
// is kept in pending.
func (d *detached) sendNow(buf []byte) error {
	if len(d.pending) > 0 {
		d.pending = append(d.pending, buf...)
		return nil
	}
	if d.writeNow == nil {
		// Bound once per stream: a closure made per write would cost an
		// allocation per delivery.
		d.writeNow = d.writeRaw
	}
	d.rawBuf = buf
	err := d.raw.Write(d.writeNow)
	n, werr := d.rawN, d.rawErr
	d.rawBuf, d.rawErr = nil, nil
	switch {
	case err != nil:
		return err
	case werr == syscall.EAGAIN:
		n = 0
	case werr != nil:
		return werr
	}
	if n < len(buf) {
		d.pending = append([]byte(nil), buf[n:]...)
	}
	return nil
}

// writeRaw is the RawConn callback of sendNow: one write of rawBuf that
// never waits for the socket to become writable.
func (d *detached) writeRaw(fd uintptr) bool {
	for {
		d.rawN, d.rawErr = syscall.Write(int(fd), d.rawBuf)
		if d.rawErr != syscall.EINTR {
			return true
		}
	}
}
