// Package tlsbuf releases the read buffers a crypto/tls connection keeps
// from its handshake.
package tlsbuf

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// A tls.Conn keeps the buffers its handshake read into for as long as it
// lives: rawInput (records as read) and hand (handshake messages) grow to
// the client's hello, over 1.5 KiB each since browsers send a post-quantum
// key share, and input keeps a slice of rawInput. A connection that will
// read little more (a detached event stream, an HTTP/2 connection of
// event streams) saves about 3.5 KiB by releasing them, which the garbage
// collector's headroom then doubles in the process's memory; later reads
// grow rawInput to their own records' size.
//
// crypto/tls offers no way to release them, so the fields are found by
// name and type once, at start-up; when they are not there as expected
// (another Go release), nothing is released.
var tlsReadBuffers = func() (b struct {
	ok                    bool
	rawInput, hand, input uintptr
}) {
	t := reflect.TypeFor[tls.Conn]()
	field := func(name string, typ reflect.Type) (uintptr, bool) {
		f, ok := t.FieldByName(name)
		return f.Offset, ok && f.Type == typ
	}
	var ok1, ok2, ok3 bool
	b.rawInput, ok1 = field("rawInput", reflect.TypeFor[bytes.Buffer]())
	b.hand, ok2 = field("hand", reflect.TypeFor[bytes.Buffer]())
	b.input, ok3 = field("input", reflect.TypeFor[bytes.Reader]())
	b.ok = ok1 && ok2 && ok3
	return b
}()

// Release drops tc's read buffers when they hold nothing unread, and
// reports whether it did. tc must not be read concurrently (net/http's
// background read has ended when Hijack returns).
func Release(tc *tls.Conn) bool {
	if !tlsReadBuffers.ok {
		return false
	}
	p := unsafe.Pointer(tc)
	raw := (*bytes.Buffer)(unsafe.Add(p, tlsReadBuffers.rawInput))
	hand := (*bytes.Buffer)(unsafe.Add(p, tlsReadBuffers.hand))
	input := (*bytes.Reader)(unsafe.Add(p, tlsReadBuffers.input))
	if raw.Len() != 0 || hand.Len() != 0 || input.Len() != 0 {
		return false
	}
	*raw, *hand, *input = bytes.Buffer{}, bytes.Buffer{}, bytes.Reader{}
	return true
}
