package tlsbuf

// Supported reports whether this Go release's tls.Conn has the read
// buffers Release expects (tests check it, so that a Go upgrade that
// renames them is noticed).
func Supported() bool { return tlsReadBuffers.ok }
