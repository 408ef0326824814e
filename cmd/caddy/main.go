// Command caddy is Caddy with its standard modules plus caddy-sse, so the
// module can be tried with `go run ./cmd/caddy run --config examples/Caddyfile`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ssegate/caddy-sse"
)

func main() {
	caddycmd.Main()
}
