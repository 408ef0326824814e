package caddysse

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are process-wide so that their values survive config reloads:
// each config has its own registry, and every config registers these same
// collectors into it. No label names a topic, so cardinality stays bounded
// however many topics clients create.
var metrics = struct {
	subscribers     prometheus.Gauge
	subscriptions   prometheus.Counter
	replays         prometheus.Counter
	resets          prometheus.Counter
	delivered       prometheus.Counter
	bytesWritten    prometheus.Counter
	slowDisconnects prometheus.Counter
	published       prometheus.Counter
	rejects         *prometheus.CounterVec
}{
	subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "subscribers",
		Help: "Open event streams.",
	}),
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
}

// Reasons a publish is rejected (label values of publish_rejects_total).
const (
	rejectAuth     = "auth"
	rejectBadInput = "bad_input"
	rejectTooLarge = "too_large"
	rejectClosed   = "closed"
	rejectLimit    = "limit"
	rejectStore    = "store_error"
)

// registerMetrics adds the collectors to a config's registry. A collector
// already there (the same config provisioning a second sse handler) is
// fine.
func registerMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		metrics.subscribers, metrics.subscriptions, metrics.replays, metrics.resets,
		metrics.delivered, metrics.bytesWritten, metrics.slowDisconnects,
		metrics.published, metrics.rejects,
	} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
