// Command mercure is Caddy v2.11.9 with its standard modules and the Mercure
// hub module (github.com/dunglas/mercure/caddy v0.24.2), as the peer of the
// side-by-side benchmark.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/dunglas/mercure/caddy"
)

func main() {
	caddycmd.Main()
}
