package caddysse

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/h2serve"
)

func init() {
	caddy.RegisterModule(H2ListenerWrapper{})
}

// H2ListenerWrapper (caddy.listeners.sse_h2) serves the HTTP/2
// connections of a TLS listener with a lean HTTP/2 server of this module
// instead of net/http's: a connection costs one goroutine (its frame
// reader) instead of two, and a stream writes its own frames, so an event
// delivered over HTTP/2 wakes one goroutine instead of two. Every request
// still goes through the server's routes as usual; HTTP/1.1 connections
// are left to net/http. It must come after tls:
//
//	{
//		servers {
//			listener_wrappers {
//				sse
//				tls
//				sse_h2
//			}
//		}
//	}
//
// On a config reload or stop its connections are sent GOAWAY and close
// when their streams end (event streams end within the sse handler's
// drain window), or after drain_timeout.
type H2ListenerWrapper struct {
	// MaxConcurrentStreams is the most streams a client may open at once
	// on one connection. Default 250.
	MaxConcurrentStreams uint32 `json:"max_concurrent_streams,omitempty"`
	// DrainTimeout bounds how long, after a reload or stop, a connection
	// may keep its open streams before it is closed. Default 30s.
	DrainTimeout caddy.Duration `json:"drain_timeout,omitempty"`
	// IdleTimeout closes a connection that has had no open stream for
	// this long. Default 5m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	ctx    caddy.Context
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (H2ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sse_h2",
		New: func() caddy.Module { return new(H2ListenerWrapper) },
	}
}

// Provision keeps the context, in which the http app is found at the
// first connection.
func (w *H2ListenerWrapper) Provision(ctx caddy.Context) error {
	w.ctx = ctx
	w.logger = ctx.Logger()
	return nil
}

// WrapListener wraps ln, which must be the tls listener's.
func (w *H2ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	h := &serverHandler{w: w, addr: ln.Addr()}
	srv := &h2serve.Server{
		Handler:              h,
		MaxConcurrentStreams: w.MaxConcurrentStreams,
		DrainTimeout:         time.Duration(w.DrainTimeout),
		IdleTimeout:          time.Duration(w.IdleTimeout),
		ConnContext: func(tc *tls.Conn) context.Context {
			return context.WithValue(context.Background(), caddyhttp.ConnCtxKey, net.Conn(tc))
		},
		ErrorLog: func(msg string, err error) {
			w.logger.Error(msg, zap.Error(err))
		},
	}
	return h2serve.NewListener(ln, srv)
}

// serverHandler is the Caddy server whose listener the wrapper wraps,
// found at the first request: when WrapListener runs the http app is
// still starting, and its servers list their listeners only after.
type serverHandler struct {
	w    *H2ListenerWrapper
	addr net.Addr

	mu  sync.Mutex
	srv http.Handler
}

func (h *serverHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	srv, err := h.server()
	if err != nil {
		h.w.logger.Error("serving HTTP/2", zap.Error(err))
		http.Error(w, "no server for this listener", http.StatusInternalServerError)
		return
	}
	srv.ServeHTTP(w, r)
}

func (h *serverHandler) server() (http.Handler, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return h.srv, nil
	}
	appAny, err := h.w.ctx.App("http")
	if err != nil {
		return nil, fmt.Errorf("finding the http app: %w", err)
	}
	app, ok := appAny.(*caddyhttp.App)
	if !ok {
		return nil, fmt.Errorf("the http app is a %T", appAny)
	}
	for _, srv := range app.Servers {
		for _, ln := range srv.Listeners() {
			if a := ln.Addr(); a.Network() == h.addr.Network() && a.String() == h.addr.String() {
				h.srv = srv
				return srv, nil
			}
		}
	}
	return nil, fmt.Errorf("no server of the http app listens on %s", h.addr)
}

// UnmarshalCaddyfile reads the wrapper's options:
//
//	sse_h2 {
//		max_concurrent_streams <n>
//		drain_timeout <duration>
//		idle_timeout <duration>
//	}
//
// All are optional; `sse_h2` alone takes the defaults.
func (w *H2ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		switch opt {
		case "max_concurrent_streams":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n == 0 {
				return d.Errf("max_concurrent_streams: want a positive whole number, got %q", val)
			}
			w.MaxConcurrentStreams = uint32(n)
		case "drain_timeout", "idle_timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur <= 0 {
				return d.Errf("%s: want a positive duration such as 30s, got %q", opt, val)
			}
			if opt == "drain_timeout" {
				w.DrainTimeout = caddy.Duration(dur)
			} else {
				w.IdleTimeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("unknown sse_h2 option %q (known: max_concurrent_streams, drain_timeout, idle_timeout)", opt)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

var (
	_ caddy.ListenerWrapper = (*H2ListenerWrapper)(nil)
	_ caddy.Provisioner     = (*H2ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*H2ListenerWrapper)(nil)
)
