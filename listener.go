package caddysse

import (
	"fmt"
	"net"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/h1guard"
	"github.com/ssegate/caddy-sse/stream"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// ListenerWrapper (caddy.listeners.sse) does two jobs at the connection,
// beneath net/http.
//
// It lets event streams served over TLS park like plain HTTP/1.1 ones: an
// idle HTTPS subscriber then costs its connection and its cursor, with no
// goroutine of its own, and the topic's goroutine writes every event to
// all of its parked subscribers (see stream.ParkableListener). For that it
// must come before tls:
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
// Apart from the refusal below, connections behave as the ones it wraps
// until an event stream over HTTP/1.1 parks on one; HTTP/2 streams and
// every other request are unaffected. Without non-blocking socket writes (outside Unix) streams
// over TLS do not park.
//
// On a plain HTTP server (Caddy behind a load balancer, where request
// smuggling matters) it refuses every HTTP/1.x request that carries both
// Content-Length and Transfer-Encoding: 400 with Connection: close, and
// nothing after it on the connection is read (see h1guard). net/http
// would read such a request as chunked and drop its Content-Length before
// any handler could see it. Refusals are counted in
// caddy_sse_requests_refused_total{reason} and logged at debug level with
// the client's address. Over TLS the wrapper sits beneath the encryption
// and sees only records, so it cannot inspect requests there.
//
//	{
//		servers {
//			listener_wrappers {
//				sse
//			}
//		}
//	}
type ListenerWrapper struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sse",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision registers the wrapper's metric and takes its logger.
func (w *ListenerWrapper) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	if err := register(ctx.GetMetricsRegistry(), metrics.refused); err != nil {
		return fmt.Errorf("registering the sse listener wrapper's metrics: %w", err)
	}
	// The series exists from the start, so a dashboard shows 0 rather
	// than nothing.
	metrics.refused.WithLabelValues(refuseCLAndTE)
	return nil
}

// WrapListener wraps ln: the request guard beneath, so that a parked
// stream's connection is still the parkable one above it.
func (w *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return stream.ParkableListener(h1guard.Listener(ln, w.refused))
}

// refused counts and logs a request h1guard refused.
func (w *ListenerWrapper) refused(remote net.Addr) {
	metrics.refused.WithLabelValues(refuseCLAndTE).Inc()
	if w.logger != nil {
		w.logger.Debug("refused a request with both Content-Length and Transfer-Encoding (request smuggling); closing its connection",
			zap.Stringer("remote_addr", remote))
	}
}

// UnmarshalCaddyfile reads the wrapper in a server's listener_wrappers:
//
//	sse
//
// It takes no arguments and no block; on an HTTPS server put it before
// tls.
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
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
