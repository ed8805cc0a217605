package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Metrics are the Prometheus metrics of the gateway (served at /metrics). Every
// collector is registered on Registry, its own registry (not the global default), so
// several gateways in one process (tests) never collide.
type Metrics struct {
	EventsReceived  prometheus.Counter     // occupancyd_events_received_total
	EventsAccepted  prometheus.Counter     // occupancyd_events_accepted_total
	EventsDuplicate prometheus.Counter     // occupancyd_events_duplicate_total
	EventsRejected  *prometheus.CounterVec // occupancyd_events_rejected_total{reason}
	EventsLate      prometheus.Counter     // occupancyd_events_late_total
	EventsParked    prometheus.Gauge       // occupancyd_events_parked
	IngestBatch     prometheus.Histogram   // occupancyd_ingest_batch_seconds (store+ack latency)
	Publishes       prometheus.Counter     // occupancyd_publishes_total
	PendingEntries  prometheus.Gauge       // occupancyd_pending_entries
	SettleLag       prometheus.Gauge       // occupancyd_settle_lag_seconds (now - horizon)
	MQTTConnected   prometheus.Gauge       // occupancyd_mqtt_connected (0/1)
	SpaceOccupancy  *prometheus.GaugeVec   // occupancyd_space_occupancy{space}
	Registry        *prometheus.Registry   // served at /metrics (plus Go/process collectors)
}

// rejectReasons are the reasons pre-initialised to 0 so that a dashboard sees every
// series (and rate() works) before the first rejection of that kind.
var rejectReasons = []occupancy.Reason{
	occupancy.ReasonBadJSON,
	occupancy.ReasonBadDirection,
	occupancy.ReasonBadTS,
	occupancy.ReasonFutureTS,
	occupancy.ReasonTooOld,
	occupancy.ReasonTooLarge,
	occupancy.ReasonLate,
	occupancy.ReasonUnknownDPU,
	occupancy.ReasonBadTopic,
}

// NewMetrics creates the gateway metrics on a fresh registry that also carries the Go
// runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := promauto.With(reg) // every collector below is registered on reg
	m := &Metrics{
		EventsReceived: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_events_received_total",
			Help: "DPU events received over MQTT or HTTP, before validation (a batch counts each element).",
		}),
		EventsAccepted: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_events_accepted_total",
			Help: "Events stored durably for the first time (parked ones included).",
		}),
		EventsDuplicate: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_events_duplicate_total",
			Help: "Events that were already stored (redeliveries, re-sent events); counted once.",
		}),
		EventsRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "occupancyd_events_rejected_total",
			Help: "Rejected messages or batch elements, by reason.",
		}, []string{"reason"}),
		EventsLate: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_events_late_total",
			Help: "Events whose ts was before the settled horizon when received.",
		}),
		EventsParked: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_events_parked",
			Help: "Events parked for DPUs no topology version maps yet.",
		}),
		IngestBatch: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "occupancyd_ingest_batch_seconds",
			Help:    "Latency of one ingest batch from receipt to durable store and MQTT ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100µs .. ~6.5s
		}),
		Publishes: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_publishes_total",
			Help: "MQTT messages published by the gateway (occupancy, count, discovery, status).",
		}),
		PendingEntries: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_pending_entries",
			Help: "Timeline entries at or after the settled horizon (still reorderable).",
		}),
		SettleLag: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_settle_lag_seconds",
			Help: "Now minus the settled horizon.",
		}),
		MQTTConnected: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_mqtt_connected",
			Help: "1 while the MQTT client is connected, else 0.",
		}),
		SpaceOccupancy: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "occupancyd_space_occupancy",
			Help: "Current occupancy of each space (pending events included).",
		}, []string{"space"}),
		Registry: reg,
	}
	for _, r := range rejectReasons {
		m.EventsRejected.WithLabelValues(string(r))
	}
	return m
}

// Rejected counts one rejection with its reason.
func (m *Metrics) Rejected(reason occupancy.Reason) {
	m.EventsRejected.WithLabelValues(string(reason)).Inc()
}

// SetSpaces sets occupancyd_space_occupancy for the given spaces.
func (m *Metrics) SetSpaces(spaces []occupancy.Occupancy) {
	for _, o := range spaces {
		m.SpaceOccupancy.WithLabelValues(o.Space).Set(float64(o.Occupancy))
	}
}

// RemoveSpaces drops the occupancy series of spaces a topology version removed.
func (m *Metrics) RemoveSpaces(ids []string) {
	for _, id := range ids {
		m.SpaceOccupancy.DeleteLabelValues(id)
	}
}
