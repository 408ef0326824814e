package caddysse

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/caddy-sse/replay/redisstore"
	"github.com/ssegate/caddy-sse/source"
)

// metrics are process-wide so that their values survive config reloads:
// each config has its own registry, and every config registers these same
// collectors into it. No label names a topic, so cardinality stays bounded
// however many topics clients create.
var metrics = struct {
	subscribers      prometheus.GaugeFunc
	subscriptions    prometheus.Counter
	replays          prometheus.Counter
	resets           prometheus.Counter
	delivered        prometheus.Counter
	bytesWritten     prometheus.Counter
	slowDisconnects  prometheus.Counter
	published        prometheus.Counter
	rejects          *prometheus.CounterVec
	subscribeRejects *prometheus.CounterVec
	unreadable       prometheus.Counter
	refused          *prometheus.CounterVec
}{
	// Read from the counter limits.subscribers is checked against, so the
	// metric and the limit can never disagree.
	subscribers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "subscribers",
		Help: "Open event streams (what limits.subscribers counts).",
	}, func() float64 { return float64(subscribers.Load()) }),
	subscriptions: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "subscriptions_total",
		Help: "Event streams opened.",
	}),
	replays: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "replays_total",
		Help: "Event streams opened with a cursor (Last-Event-ID or lastEventId).",
	}),
	resets: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "resets_total",
		Help: "Reset events sent because a cursor could not be continued exactly.",
	}),
	delivered: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "events_delivered_total",
		Help: "Events written to subscribers (one per event per subscriber).",
	}),
	bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "bytes_written_total",
		Help: "Bytes written to subscribers before compression.",
	}),
	slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "slow_consumer_disconnects_total",
		Help: "Subscribers cut off because a write did not complete within write_timeout.",
	}),
	published: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "events_published_total",
		Help: "Events appended to topics (duplicates not counted).",
	}),
	rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "publish_rejects_total",
		Help: "Publish and close requests refused, by reason.",
	}, []string{"reason"}),
	subscribeRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "subscribe_rejects_total",
		Help: "Subscribers turned away, by reason: a limit (sent back with a retry hint), the store unreachable, or an authorization failure.",
	}, []string{"reason"}),
	unreadable: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "unreadable_events_total",
		Help: "Stored events that could not be read back (damaged records); their readers got a reset with reason unreadable.",
	}),
	refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "requests_refused_total",
		Help: "HTTP/1.x requests the sse listener wrapper refused with 400 and a close, by reason (content_length_and_transfer_encoding: a request smuggling attempt).",
	}, []string{"reason"}),
}

// Reasons the listener wrapper refuses a request (label values of
// requests_refused_total).
const refuseCLAndTE = "content_length_and_transfer_encoding"

// Reasons a subscriber is turned away (label values of
// subscribe_rejects_total, besides the authorization reasons).
const (
	rejectSubscribers         = "subscribers"
	rejectSubscribersPerTopic = "subscribers_per_topic"
	rejectTopics              = "topics"
	rejectUnavailable         = "unavailable"
)

// Reasons a publish is rejected (label values of publish_rejects_total).
const (
	rejectAuth     = "auth"
	rejectBadInput = "bad_input"
	rejectTooLarge = "too_large"
	rejectClosed   = "closed"
	rejectLimit    = "limit"
	rejectStore    = "store_error"
)

// sourceCollector reports the counters every live source keeps, labelled
// by its upstream URL (credentials removed): one series per configured
// source, never per topic.
type sourceCollector struct{}

var (
	sourceConnectsDesc = prometheus.NewDesc("caddy_sse_source_connects_total",
		"Upstream connections a source opened with a 2xx answer; more than one means reconnects.", []string{"source"}, nil)
	sourceRequestsDesc = prometheus.NewDesc("caddy_sse_source_requests_total",
		"Requests a source made to its upstream, whatever the answer.", []string{"source"}, nil)
	sourceAppendedDesc = prometheus.NewDesc("caddy_sse_source_events_appended_total",
		"Events a source appended to topics.", []string{"source"}, nil)
	sourceSkippedDesc = prometheus.NewDesc("caddy_sse_source_lines_skipped_total",
		"Upstream lines skipped because of what they hold, by reason (too_long, malformed, missing_field, bad_topic, too_large, topic_closed, topic_limit); never because the store was down.",
		[]string{"source", "reason"}, nil)
	sourceDuplicatesDesc = prometheus.NewDesc("caddy_sse_source_lines_duplicate_total",
		"Upstream lines dropped because their id was already appended (overlap after a resume).", []string{"source"}, nil)
)

func (sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sourceConnectsDesc, sourceRequestsDesc, sourceAppendedDesc, sourceSkippedDesc, sourceDuplicatesDesc} {
		ch <- d
	}
}

func (sourceCollector) Collect(ch chan<- prometheus.Metric) {
	// Two configs may briefly hold sources for the same URL during a
	// reload; their counts are summed so a series is never duplicated.
	type sums struct {
		connects, requests, appended, duplicates int64
		skipped                                  [len(source.SkipReasons)]int64
	}
	bySource := map[string]*sums{}
	sourcePool.Range(func(_, v any) bool {
		src, ok := v.(*source.Source)
		if !ok {
			return true
		}
		label := redactURL(src.URL())
		s := bySource[label]
		if s == nil {
			s = new(sums)
			bySource[label] = s
		}
		st := src.Stats()
		s.connects += st.Connects
		s.requests += st.Requests
		s.appended += st.Appended
		for i, reason := range source.SkipReasons {
			s.skipped[i] += st.SkippedBy[reason]
		}
		s.duplicates += st.Duplicates
		return true
	})
	for label, s := range bySource {
		ch <- prometheus.MustNewConstMetric(sourceConnectsDesc, prometheus.CounterValue, float64(s.connects), label)
		ch <- prometheus.MustNewConstMetric(sourceRequestsDesc, prometheus.CounterValue, float64(s.requests), label)
		ch <- prometheus.MustNewConstMetric(sourceAppendedDesc, prometheus.CounterValue, float64(s.appended), label)
		for i, reason := range source.SkipReasons {
			ch <- prometheus.MustNewConstMetric(sourceSkippedDesc, prometheus.CounterValue, float64(s.skipped[i]), label, reason)
		}
		ch <- prometheus.MustNewConstMetric(sourceDuplicatesDesc, prometheus.CounterValue, float64(s.duplicates), label)
	}
}

// registerMetrics adds the collectors to a config's registry. A collector
// already there (the same config provisioning a second sse handler) is
// fine.
func registerMetrics(reg prometheus.Registerer) error {
	return register(reg,
		metrics.subscribers, metrics.subscriptions, metrics.replays, metrics.resets,
		metrics.delivered, metrics.bytesWritten, metrics.slowDisconnects,
		metrics.published, metrics.rejects, metrics.subscribeRejects, metrics.unreadable,
		sourceCollector{},
	)
}

// register adds collectors to a registry. One already there is fine: each
// config has its own registry, provisioned once per sse handler, and the
// collectors are process-wide so that their values survive reloads.
func register(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// ---- Redis stores ----
var (
	redisUpDesc = prometheus.NewDesc("caddy_sse_redis_up",
		"1 when the last exchange with the Redis server of an sse redis store succeeded.", []string{"addr"}, nil)
	redisOutagesDesc = prometheus.NewDesc("caddy_sse_redis_outages_total",
		"Times the Redis server of an sse redis store became unreachable.", []string{"addr"}, nil)
)

// redisCollector reports the state of every open Redis store, by server
// address (never credentials). Stores on one server with different
// prefixes are one series: up only when all are.
type redisCollector struct{}

func (redisCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisUpDesc
	ch <- redisOutagesDesc
}

func (redisCollector) Collect(ch chan<- prometheus.Metric) {
	type state struct {
		up      bool
		outages uint64
	}
	byAddr := map[string]*state{}
	stores.Range(func(_, v any) bool {
		st, ok := v.(*redisstore.Store)
		if !ok {
			return true
		}
		addr := st.Addr()
		s := byAddr[addr]
		if s == nil {
			s = &state{up: true}
			byAddr[addr] = s
		}
		s.up = s.up && st.Up()
		s.outages += st.Outages()
		return true
	})
	for addr, s := range byAddr {
		up := 0.0
		if s.up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(redisUpDesc, prometheus.GaugeValue, up, addr)
		ch <- prometheus.MustNewConstMetric(redisOutagesDesc, prometheus.CounterValue, float64(s.outages), addr)
	}
}

// registerRedisMetrics adds the Redis collector to a config's registry,
// once a redis store is provisioned in it.
func registerRedisMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	return register(reg, redisCollector{})
}
