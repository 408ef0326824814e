//go:build !unix

package stream

import "errors"

// canWriteNow: without a portable non-blocking write to a socket here,
// detached streams never park; each is served by a goroutine of its own.
const canWriteNow = false

// sendNow is never called where streams do not park.
func (d *detached) sendNow([]byte) error {
	return errors.New("non-blocking writes are not supported on this platform")
}
