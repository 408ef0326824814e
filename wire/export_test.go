package wire

import "slices"

// AppendEvent (tests only) is EncodeEvent appending to dst, so a writer can batch events
// into one reused buffer.
func AppendEvent(dst []byte, id, name string, data []byte) []byte {
	id, name = SanitizeID(id), SanitizeName(name)
	return appendEvent(slices.Grow(dst, encodedSize(id, name, data)), id, name, data)
}

// EncodedSize (tests only) returns len(EncodeEvent(id, name, data)) without building it,
// for memory accounting.
func EncodedSize(id, name string, data []byte) int {
	return encodedSize(SanitizeID(id), SanitizeName(name), data)
}
