//go:build tools

// Package h2spec pins the HTTP/2 conformance tester h2spec, which the
// integration tests build from this module (its own go.mod, so that its
// dependencies never reach the module's users):
//
//	go build -o h2spec github.com/summerwind/h2spec/cmd/h2spec
package h2spec

import _ "github.com/summerwind/h2spec/cmd/h2spec"
