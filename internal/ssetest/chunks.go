package ssetest

import "io"

// ChunkReader returns Data in chunks whose sizes (1 to 64 bytes) come
// from Sizes in turn, one byte at a time without Sizes: a reader that cuts
// input at every place a network might.
type ChunkReader struct {
	Data  []byte
	Sizes []byte
	i     int
}

func (c *ChunkReader) Read(p []byte) (int, error) {
	if len(c.Data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.Sizes) > 0 {
		n = int(c.Sizes[c.i%len(c.Sizes)])%64 + 1
		c.i++
	}
	n = min(n, len(p), len(c.Data))
	copy(p, c.Data[:n])
	c.Data = c.Data[n:]
	return n, nil
}
