package caddysse

import (
	"net"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ssegate/caddy-sse/stream"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// ListenerWrapper (caddy.listeners.sse) lets event streams served over
// TLS park like plain HTTP/1.1 ones: an idle HTTPS subscriber then costs
// its connection and its cursor, with no goroutine of its own, and the
// topic's goroutine writes every event to all of its parked subscribers
// (see stream.ParkableListener). It must come before tls:
//
//	{
//		servers {
//			listener_wrappers {
//				sse
//				tls
//			}
//		}
//	}
//
// Connections behave as the ones it wraps until an event stream over
// HTTP/1.1 parks on one; HTTP/2 streams and every other request are
// unaffected. Without non-blocking socket writes (outside Unix) it wraps
// nothing.
type ListenerWrapper struct{}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sse",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// WrapListener wraps ln.
func (ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return stream.ParkableListener(ln)
}

// UnmarshalCaddyfile reads `sse`, which takes no arguments.
func (*ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("the sse listener wrapper takes no options")
	}
	return nil
}

var (
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
