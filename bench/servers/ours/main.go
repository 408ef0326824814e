// Command ours is Caddy v2.11.9 with its standard modules and caddy-sse,
// built from the working tree (bench/go.mod replaces the module with ../).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ssegate/caddy-sse"
)

func main() {
	caddycmd.Main()
}
