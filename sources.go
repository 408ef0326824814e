package caddysse

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
	"github.com/ssegate/caddy-sse/source"
)

// SourceConfig pulls an upstream stream into topics: a backend that streams
// NDJSON (one JSON value per line) or Server-Sent Events gets fan-out,
// history, heartbeats and resumption, with one upstream connection however
// many clients listen.
//
// The upstream is re-opened whenever its stream ends: on end of stream, a
// network error, a non-2xx answer or idle_timeout, after a backoff delay
// (longer if the upstream sent Retry-After). On reconnection the last
// upstream id goes back to it (resume), and lines whose upstream id was
// already appended (the usual overlap after a resume) are dropped, so
// subscribers see neither a gap nor a duplicate. An upstream answer of 204,
// or a line matching close_when, ends the topic as a DELETE does: its
// subscribers get the close event and later GETs answer 204. A source that
// ended does not connect again until its config changes or Caddy restarts.
//
// Lines follow the ndjson and JSON Lines specs: LF or CRLF line ends, blank
// lines skipped, a leading byte order mark dropped, the last line may lack
// its line end. A line longer than max_line is skipped without being held
// in memory. With any field mapping (topic_field, id_field, event_field,
// data_field, close_when) a line that is not valid JSON, or lacks a mapped
// field, is skipped; without mapping the line is the event data as is (it
// must be valid UTF-8). Lines whose data exceeds the handler's event_size
// are skipped too. Skipped lines are counted by reason and logged
// (rate-limited) with their line number and a sample; the stream goes on.
//
// A store that cannot take a line (unavailable, a timeout, a lost lease)
// never makes it skipped: a line the upstream can resend (id_field with
// resume, or an sse event with its own id) ends the connection, which is
// resumed after the last line appended; any other line is held (one line)
// and its append retried while the connection stays unread. Only a line
// the store refuses for good (too large for the history, over the topic
// limit, a routed topic that ended) is skipped.
//
// A source whose config is unchanged by a reload keeps its upstream
// connection. A changed source opens a new connection that resumes from
// where the old one is (same URL, format, topic, topic_field and id_field)
// while the old one is closed.
type SourceConfig struct {
	// The upstream URL, http or https. Placeholders such as `{env.*}` are
	// expanded once, when the config loads.
	URL string `json:"url"`

	// `ndjson` (default): one JSON value per line. `sse`: an upstream
	// event stream, relayed with its event types and data; its ids are the
	// resume cursor and dedup key.
	Format string `json:"format,omitempty"`

	// The topic every line goes to. It must be the topic subscribers ask
	// for: with the default handler topic, the request path, e.g.
	// `/events/jobs`. Give either topic or topic_field.
	Topic string `json:"topic,omitempty"`

	// Routes each line to the topic named by this field: a dot path into
	// the line's JSON object, e.g. `meta.channel` (a number segment
	// indexes an array: `items.0.id`). Lines whose value is not a valid
	// topic name are skipped. NDJSON only.
	TopicField string `json:"topic_field,omitempty"`

	// The upstream's own id of a line (dot path): the cursor sent back on
	// reconnection and the key that drops lines appended already. The ids
	// of the last 4096 appended lines are remembered. NDJSON only.
	IDField string `json:"id_field,omitempty"`

	// The event type of a line (dot path), sanitised like any event name.
	// Default: every event is `message`. NDJSON only.
	EventField string `json:"event_field,omitempty"`

	// The event data (dot path). Default: the whole line. NDJSON only.
	//
	// For every mapped field a JSON string is used as is and any other
	// value becomes its compact JSON text (`42`, `{"a":1}`); a missing or
	// null value makes the line skipped.
	DataField string `json:"data_field,omitempty"`

	// How the last upstream id goes back to the upstream on reconnection.
	// Default: not at all for ndjson (which needs id_field to resume), the
	// `Last-Event-ID` header for sse.
	Resume *SourceResume `json:"resume,omitempty"`

	// Extra request headers, e.g. `{"Authorization": ["Bearer
	// {env.UPSTREAM_TOKEN}"]}`. Placeholders are expanded once, when the
	// config loads. `Accept` defaults to `application/x-ndjson` (ndjson)
	// or `text/event-stream` (sse).
	Headers http.Header `json:"headers,omitempty"`

	// `always` (default): the upstream is pulled from the moment the
	// config loads until it unloads, so history stays warm. `on_demand`:
	// the upstream is opened when the first subscriber of the source's
	// topic arrives (with topic_field, of any topic of this handler) and
	// closed linger after the last one left; history is kept.
	Mode string `json:"mode,omitempty"`

	// With mode on_demand, how long the upstream stays open after the last
	// subscriber left. Default: 30s; a negative value closes it at once.
	Linger caddy.Duration `json:"linger,omitempty"`

	// The reconnection delay: random (full jitter) between backoff_min and
	// a window that doubles with every failed attempt up to backoff_max,
	// and starts again from backoff_min once lines flow. An upstream's
	// `Retry-After` (on an error answer) is honoured over it, up to an
	// hour; an sse upstream's `retry:` field is used as a minimum, up to
	// backoff_max. Defaults: 500ms and 30s.
	BackoffMin caddy.Duration `json:"backoff_min,omitempty"`
	BackoffMax caddy.Duration `json:"backoff_max,omitempty"`

	// Reconnect when the upstream sends nothing (not even a blank line or
	// an SSE comment) for this long; it also bounds the wait for the
	// response head. Default: 0, no idle limit (the response head must
	// come within 30s; TCP keep-alives detect a dead peer).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// The longest line held, in bytes; a longer line is skipped without
	// being buffered whole. Default: 1MiB.
	MaxLine int64 `json:"max_line,omitempty"`

	// A line whose field equals value is appended, then ends its topic, as
	// a DELETE would. NDJSON only.
	CloseWhen *SourceCloseWhen `json:"close_when,omitempty"`

	// Set by provisionSources; read by the handler's streams.
	key      string // in sourcePool; "" once released
	src      *source.Source
	topic    string // the fixed topic after placeholders
	onDemand bool
}

// SourceResume says how a source sends its cursor back. Give one of the
// two.
type SourceResume struct {
	// The request header carrying the last upstream id, e.g.
	// `Last-Event-ID`.
	Header string `json:"header,omitempty"`
	// The query parameter carrying the last upstream id, e.g. `after`.
	Query string `json:"query,omitempty"`
}

// SourceCloseWhen ends a topic on a line.
type SourceCloseWhen struct {
	// Dot path of the field, e.g. `status`.
	Field string `json:"field"`
	// The value (as text: a string as is, anything else as compact JSON)
	// that ends the topic, e.g. `done`.
	Value string `json:"value"`
}

// sourcePool keeps sources, with their upstream connection, across config
// reloads: the new config takes a reference (keyed by a hash of the
// source's resolved config and its store) before the old one drops its
// own, so an unchanged source is never closed and re-opened.
var sourcePool = caddy.NewUsagePool()

// provisionSources starts (or, when a running config has the same source,
// reuses) the handler's sources. It needs the store.
func (h *Handler) provisionSources(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	for i, sc := range h.Sources {
		if sc == nil {
			return fmt.Errorf("source %d: empty", i)
		}
		cfg, err := sc.resolve(repl, h)
		if err != nil {
			return fmt.Errorf("source %d (%s): %w", i, sc.URL, err)
		}
		key, err := sourceKey(cfg, h.store)
		if err != nil {
			return fmt.Errorf("source %d (%s): %w", i, sc.URL, err)
		}
		logger := ctx.Logger().With(zap.String("source", redactURL(cfg.URL)))
		v, loaded, err := sourcePool.LoadOrNew(key, func() (caddy.Destructor, error) {
			return source.New(cfg, h.store, logger)
		})
		if err != nil {
			return fmt.Errorf("source %d (%s): %w", i, sc.URL, err)
		}
		sc.key, sc.src = key, v.(*source.Source)
		sc.topic, sc.onDemand = cfg.Mapping.Topic, cfg.OnDemand
		if loaded {
			sc.src.SetLogger(logger)
		}
	}
	return nil
}

// cleanupSources drops the handler's references to its sources; a source
// no other config uses stops, and is gone (connection and goroutines) when
// this returns.
func (h *Handler) cleanupSources() error {
	var errs []error
	for _, sc := range h.Sources {
		if sc == nil || sc.key == "" {
			continue
		}
		key := sc.key
		sc.key = ""
		if _, err := sourcePool.Delete(key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sourceDemand is called by a subscriber of topic for as long as its
// stream is open: it opens the upstream of every on_demand source feeding
// that topic (with topic_field, every on_demand source of the handler).
// The returned release must be called when the stream ends.
func (h *Handler) sourceDemand(topic string) (release func()) {
	var releases []func()
	for _, sc := range h.Sources {
		if sc == nil || sc.src == nil || !sc.onDemand {
			continue
		}
		if sc.topic != "" && sc.topic != topic {
			continue
		}
		releases = append(releases, sc.src.Acquire())
	}
	switch len(releases) {
	case 0:
		return noRelease
	case 1:
		return releases[0]
	}
	return func() {
		for _, r := range releases {
			r()
		}
	}
}

func noRelease() {}

// resolve expands placeholders, applies defaults and checks the config.
func (sc *SourceConfig) resolve(repl *caddy.Replacer, h *Handler) (source.Config, error) {
	cfg := source.Config{
		URL:    repl.ReplaceKnown(sc.URL, ""),
		Format: sc.Format,
		Mapping: source.Mapping{
			Topic:          repl.ReplaceKnown(sc.Topic, ""),
			TopicField:     sc.TopicField,
			IDField:        sc.IDField,
			EventField:     sc.EventField,
			DataField:      sc.DataField,
			MaxEvent:       int(h.Limits.EventSize),
			MaxTopicLength: h.Limits.TopicLength,
		},
		BackoffMin:  time.Duration(sc.BackoffMin),
		BackoffMax:  time.Duration(sc.BackoffMax),
		IdleTimeout: time.Duration(sc.IdleTimeout),
		MaxLine:     int(sc.MaxLine),
	}
	switch sc.Mode {
	case "", "always":
	case "on_demand":
		cfg.OnDemand = true
		cfg.Linger = source.DefaultLinger
		if sc.Linger != 0 {
			cfg.Linger = max(time.Duration(sc.Linger), 0)
		}
	default:
		return cfg, fmt.Errorf("mode %q is neither always nor on_demand", sc.Mode)
	}
	if r := sc.Resume; r != nil {
		if (r.Header == "") == (r.Query == "") {
			return cfg, errors.New("resume: give a header or a query parameter")
		}
		cfg.ResumeHeader, cfg.ResumeQuery = r.Header, r.Query
	}
	if c := sc.CloseWhen; c != nil {
		if c.Field == "" {
			return cfg, errors.New("close_when: no field")
		}
		cfg.Mapping.CloseField, cfg.Mapping.CloseValue = c.Field, c.Value
	}
	if len(sc.Headers) > 0 {
		cfg.Header = make(http.Header, len(sc.Headers))
		for name, values := range sc.Headers {
			for _, v := range values {
				cfg.Header.Add(name, repl.ReplaceKnown(v, ""))
			}
		}
	}
	if sc.MaxLine < 0 || sc.MaxLine > 1<<30 {
		return cfg, fmt.Errorf("max_line %d: must be between 1 byte and 1GiB", sc.MaxLine)
	}
	if sc.BackoffMin < 0 || sc.BackoffMax < 0 || sc.IdleTimeout < 0 {
		return cfg, errors.New("backoff and idle_timeout must not be negative")
	}
	cfg = cfg.WithDefaults()
	return cfg, cfg.Validate()
}

// sourceKey identifies a source in sourcePool: a hash (so that header
// secrets are not kept in clear) of its resolved config and its store.
func sourceKey(cfg source.Config, store replay.Store) (string, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte(fmt.Sprintf("%p\x00", store)), b...))
	return "source:" + hex.EncodeToString(sum[:]), nil
}

// unmarshalSource reads one `source` block of the sse directive. Syntax:
//
//	source <url> {
//		format       ndjson | sse                 # default ndjson
//		topic        <name>                       # every line goes to this topic, or
//		topic_field  <path>                       # route each line by a JSON field (dot path)
//		id_field     <path>                       # the upstream's id: resume cursor and dedup key
//		event_field  <path>                       # event type; default message
//		data_field   <path>                       # default: the whole line
//		resume       header <name> | query <name> # how the last upstream id goes back
//		header       <name> <value>               # repeatable; {env.*} placeholders work
//		mode         always | on_demand [<linger>] # default always; linger default 30s
//		backoff      <min> <max>                  # default 500ms 30s
//		idle_timeout <duration>                   # default off
//		max_line     <size>                       # default 1MiB
//		close_when   <path> <value>               # a line whose field equals value ends the topic
//	}
//
// A sse block may hold several source blocks. `mode on_demand 0` closes the
// upstream as soon as the last subscriber leaves.
func unmarshalSource(d *caddyfile.Dispenser) (*SourceConfig, error) {
	sc := new(SourceConfig)
	if !d.NextArg() {
		return nil, d.Errf("source: missing upstream URL")
	}
	sc.URL = d.Val()
	if d.NextArg() {
		return nil, d.Errf("source: too many arguments; options go in a block")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "format":
			err = oneArg(d, &sc.Format)
			if err == nil && sc.Format != source.FormatNDJSON && sc.Format != source.FormatSSE {
				err = d.Errf("format: %q is neither ndjson nor sse", sc.Format)
			}
		case "topic":
			err = oneArg(d, &sc.Topic)
		case "topic_field":
			err = oneArg(d, &sc.TopicField)
		case "id_field":
			err = oneArg(d, &sc.IDField)
		case "event_field":
			err = oneArg(d, &sc.EventField)
		case "data_field":
			err = oneArg(d, &sc.DataField)
		case "resume":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("resume: want header <name> or query <name>")
			}
			switch args[0] {
			case "header":
				sc.Resume = &SourceResume{Header: args[1]}
			case "query":
				sc.Resume = &SourceResume{Query: args[1]}
			default:
				return nil, d.Errf("resume: %q is neither header nor query", args[0])
			}
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("header: want <name> <value>")
			}
			if sc.Headers == nil {
				sc.Headers = make(http.Header)
			}
			sc.Headers.Add(args[0], args[1])
		case "mode":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "always":
			case len(args) >= 1 && len(args) <= 2 && args[0] == "on_demand":
				if len(args) == 2 {
					dur, perr := caddy.ParseDuration(args[1])
					if perr != nil || dur < 0 {
						return nil, d.Errf("mode: linger %q is not a duration", args[1])
					}
					sc.Linger = caddy.Duration(dur)
					if dur == 0 {
						sc.Linger = -1 // the JSON encoding of "at once"
					}
				}
			default:
				return nil, d.Errf("mode: want always or on_demand [<linger>]")
			}
			sc.Mode = args[0]
		case "backoff":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("backoff: want <min> <max>")
			}
			lo, err1 := caddy.ParseDuration(args[0])
			hi, err2 := caddy.ParseDuration(args[1])
			if err1 != nil || err2 != nil || lo <= 0 || hi < lo {
				return nil, d.Errf("backoff: %q %q: want two durations, 0 < min <= max", args[0], args[1])
			}
			sc.BackoffMin, sc.BackoffMax = caddy.Duration(lo), caddy.Duration(hi)
		case "idle_timeout":
			err = durationArg(d, &sc.IdleTimeout)
		case "max_line":
			err = sizeArg(d, &sc.MaxLine)
			if err == nil && (sc.MaxLine <= 0 || sc.MaxLine > 1<<30) {
				err = d.Errf("max_line: must be between 1 byte and 1GiB")
			}
		case "close_when":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("close_when: want <path> <value>")
			}
			sc.CloseWhen = &SourceCloseWhen{Field: args[0], Value: args[1]}
		default:
			err = unknownOption(d, "source", opt, sourceOptions)
		}
		if err != nil {
			return nil, err
		}
	}
	return sc, nil
}
