package caddysse

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/ssegate/caddy-sse/auth"
	"github.com/ssegate/caddy-sse/stream"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sse", parseCaddyfile)
	// Right after encode: encode then wraps our writer, so events are
	// compressed when it is configured (and flushed per event through it),
	// while handlers that buffer responses (templates, intercept) come
	// later and never sit between a stream and its client. Authentication
	// directives (basic_auth, forward_auth) run before both.
	httpcaddyfile.RegisterDirectiveOrder("sse", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sse [<matcher>] {
//		topic         <placeholder>            # default {path}
//		retry         <duration>               # default 3s
//		heartbeat     <duration> | off         # default 15s; 0 or off disables
//		write_timeout <duration>               # default 30s
//		drain_window  <duration>               # default 5s; 0 ends streams at once on reload
//		compress      <encoding...> | off      # gzip, zstd; default off (encode applies)
//		detach        on | off                 # default on: HTTP/1.x streams leave net/http
//		on_gap        replay | live            # default replay
//		reset_event   <name>                   # default reset
//		close_event   <name>                   # default close
//		multi_topic_param      <name> | off    # default topic: ?topic=/a&topic=/b
//		multi_topic_event_name type | topic    # default type
//		expired_event <name>                   # default expired
//		history {
//			events <n>                         # default 1000
//			size   <size>                      # default 16MiB
//			age    <duration>                  # default 1h
//		}
//		limits {
//			topics                <n>          # default 10000
//			subscribers           <n>          # default 10000, per process
//			subscribers_per_topic <n>          # default 0: none
//			event_size            <size>       # default 1MiB
//			topic_length          <n>          # default 256 bytes
//			topics_per_stream     <n>          # default 64
//		}
//		store memory [<name>]                  # default: memory default
//		store file <path>                      # bbolt file: history survives restarts
//		store redis <url> [<url>...] {         # Redis Streams: several nodes share topics
//			mode          standalone|sentinel|cluster  # default standalone
//			master        <name>               # sentinel: the monitored master
//			sentinel_username <user>
//			sentinel_password <password>
//			min_replicas_ack <n> [<timeout>]   # default 0; acknowledge after WAIT
//			prefix        <string>             # default sse:
//			pool_size     <n>
//			dial_timeout  <duration>
//			read_timeout  <duration>
//			write_timeout <duration>
//			lease_ttl     <duration>
//		}
//		publish {
//			bearer            <token>
//			hmac_sha256       <secret> [<header>]
//			standard_webhooks <whsec_secret>
//			allow_unauthenticated
//			event             <placeholder>    # default message
//			max_body          <size>           # default 1MiB
//			dedup_window      <duration>       # default 1h
//			jwt { … }                          # see auth.JWT.UnmarshalCaddyfile; claim default sse.publish
//		}
//		subscribe {                            # default: none, every topic public
//			jwt { … }
//			signed_url <secret>
//			public     <pattern...>
//		}
//		cors {                                 # default: none, no CORS headers
//			origins <origin...> | *
//			credentials
//		}
//		source <url> { … }                     # repeatable: an upstream pulled into topics (see unmarshalSource)
//	}
//
// bearer, hmac_sha256 and standard_webhooks may each be given several times;
// any one passing admits a request. Every other option may be given once
// per block: a second one is an error naming it, never a silent override.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := optionsSeen{"source": repeatable}
	for d.NextBlock(0) {
		if err := seen.once(d, "sse"); err != nil {
			return err
		}
		switch d.Val() {
		case "topic":
			if err := oneArg(d, &h.Topic); err != nil {
				return err
			}
		case "retry":
			if err := durationArg(d, &h.Retry); err != nil {
				return err
			}
		case "heartbeat":
			if err := durationArg(d, &h.Heartbeat); err != nil {
				return err
			}
			if h.Heartbeat == 0 {
				h.Heartbeat = -1 // the JSON encoding of "off"
			}
		case "write_timeout":
			if err := durationArg(d, &h.WriteTimeout); err != nil {
				return err
			}
		case "drain_window":
			if err := durationArg(d, &h.DrainWindow); err != nil {
				return err
			}
			if h.DrainWindow == 0 {
				h.DrainWindow = -1 // the JSON encoding of "end at once"
			}
		case "compress":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("compress: name encodings (%s) or off", strings.Join(stream.EncodingNames(), ", "))
			}
			h.Compress = nil
			if len(args) == 1 && args[0] == "off" {
				continue
			}
			for _, a := range args {
				if stream.EncodingByName(a) == nil {
					return d.Errf("compress: unknown encoding %q; offered: %s, or off", a, strings.Join(stream.EncodingNames(), ", "))
				}
				h.Compress = append(h.Compress, a)
			}
		case "detach":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			if v != "on" && v != "off" {
				return d.Errf("detach: %q is neither on nor off", v)
			}
			on := v == "on"
			h.Detach = &on
		case "on_gap":
			if err := oneArg(d, &h.OnGap); err != nil {
				return err
			}
			if h.OnGap != "replay" && h.OnGap != "live" {
				return d.Errf("on_gap: %q is neither replay nor live", h.OnGap)
			}
		case "reset_event":
			if err := oneArg(d, &h.ResetEvent); err != nil {
				return err
			}
		case "close_event":
			if err := oneArg(d, &h.CloseEvent); err != nil {
				return err
			}
		case "multi_topic_param":
			if err := oneArg(d, &h.MultiTopicParam); err != nil {
				return err
			}
		case "multi_topic_event_name":
			if err := oneArg(d, &h.MultiTopicEventName); err != nil {
				return err
			}
			if v := h.MultiTopicEventName; v != "type" && v != "topic" {
				return d.Errf("multi_topic_event_name: %q is neither type nor topic", v)
			}
		case "history":
			if err := h.unmarshalHistory(d); err != nil {
				return err
			}
		case "limits":
			if err := h.unmarshalLimits(d); err != nil {
				return err
			}
		case "store":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "http.handlers.sse.stores."+name)
			if err != nil {
				return err
			}
			h.StoreRaw = caddyconfig.JSONModuleObject(unm, "module", name, nil)
		case "publish":
			if err := h.unmarshalPublish(d); err != nil {
				return err
			}
		case "subscribe":
			h.Subscribe = new(auth.Subscribe)
			if err := h.Subscribe.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
		case "cors":
			h.CORS = new(auth.CORS)
			if err := h.CORS.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
		case "expired_event":
			if err := oneArg(d, &h.ExpiredEvent); err != nil {
				return err
			}
		case "source":
			sc, err := unmarshalSource(d)
			if err != nil {
				return err
			}
			h.Sources = append(h.Sources, sc)
		default:
			return unknownOption(d, "sse", d.Val(), sseOptions)
		}
	}
	return nil
}

func (h *Handler) unmarshalHistory(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.History == nil {
		h.History = new(History)
	}
	seen := optionsSeen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.once(d, "history"); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "events":
			err = intArg(d, &h.History.Events)
		case "size":
			err = sizeArg(d, &h.History.Size)
		case "age":
			err = durationArg(d, &h.History.Age)
		default:
			err = unknownOption(d, "history", d.Val(), historyOptions)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalLimits(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Limits == nil {
		h.Limits = new(Limits)
	}
	seen := optionsSeen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.once(d, "limits"); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "topics":
			err = intArg(d, &h.Limits.Topics)
		case "subscribers":
			err = intArg(d, &h.Limits.Subscribers)
		case "subscribers_per_topic":
			err = intArg(d, &h.Limits.SubscribersPerTopic)
		case "event_size":
			err = sizeArg(d, &h.Limits.EventSize)
		case "topic_length":
			err = intArg(d, &h.Limits.TopicLength)
		case "topics_per_stream":
			err = intArg(d, &h.Limits.TopicsPerStream)
		default:
			err = unknownOption(d, "limits", d.Val(), limitsOptions)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalPublish(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Publish == nil {
		h.Publish = new(Publish)
	}
	p := h.Publish
	seen := optionsSeen{"bearer": repeatable, "hmac_sha256": repeatable, "standard_webhooks": repeatable}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.once(d, "publish"); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "bearer":
			var token string
			if err = oneArg(d, &token); err == nil {
				p.Bearer = append(p.Bearer, token)
			}
		case "hmac_sha256":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			s := HMACSecret{Secret: args[0]}
			if len(args) == 2 {
				s.Header = args[1]
			}
			p.HMACSHA256 = append(p.HMACSHA256, s)
		case "standard_webhooks":
			var secret string
			if err = oneArg(d, &secret); err == nil {
				p.StandardWebhooks = append(p.StandardWebhooks, secret)
			}
		case "allow_unauthenticated":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.AllowUnauthenticated = true
		case "event":
			err = oneArg(d, &p.Event)
		case "max_body":
			err = sizeArg(d, &p.MaxBody)
		case "dedup_window":
			err = durationArg(d, &p.DedupWindow)
		case "jwt":
			p.JWT = new(auth.PublishJWT)
			err = p.JWT.UnmarshalCaddyfile(d.NewFromNextSegment())
		default:
			err = unknownOption(d, "publish", d.Val(), publishOptions)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// optionsSeen rejects an option given twice in one block, where the second
// would silently win over the first; options marked repeatable (secrets
// during rotation, sources) may come any number of times.
type optionsSeen map[string]optionCount

type optionCount int

const (
	seenOnce optionCount = iota + 1
	repeatable
)

func (seen optionsSeen) once(d *caddyfile.Dispenser, block string) error {
	opt := d.Val()
	switch seen[opt] {
	case seenOnce:
		return d.Errf("%s: option %q given twice; give it once", block, opt)
	case repeatable:
		return nil
	}
	seen[opt] = seenOnce
	return nil
}

// oneArg reads exactly one argument of the current option.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: missing value", opt)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: too many values", opt)
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	if s == "off" {
		*dst = 0
		return nil
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %v", opt, err)
	}
	if dur < 0 {
		return d.Errf("%s: %s is negative", opt, s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return d.Errf("%s: %q is not a non-negative integer", opt, s)
	}
	*dst = n
	return nil
}

func sizeArg(d *caddyfile.Dispenser, dst *int64) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<40 {
		return d.Errf("%s: %q is not a size such as 64KiB or 1MB", opt, s)
	}
	*dst = int64(n)
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
