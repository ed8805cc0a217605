// Package metrics holds occupancyd's Prometheus metrics (DESIGN 5, /metrics): every
// collector on its own registry, so that several gateways in one process (tests)
// never collide. The packages that count take a *Metrics through their constructor;
// this package counts nothing itself.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"

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
	CounterResets   prometheus.Counter     // occupancyd_counter_resets_total (cumulative DPUs)
	IngestBatch     prometheus.Histogram   // occupancyd_ingest_batch_seconds (store+ack latency)
	Publishes       prometheus.Counter     // occupancyd_publishes_total
	PendingEntries  prometheus.Gauge       // occupancyd_pending_entries
	SettleLag       prometheus.Gauge       // occupancyd_settle_lag_seconds (now - horizon)
	MQTTConnected   prometheus.Gauge       // occupancyd_mqtt_connected (0/1)
	// The output connection (gateway/mqtt Output).
	MQTTOutputConnected  prometheus.Gauge   // occupancyd_mqtt_output_connected (0/1)
	PublishLag           prometheus.Gauge   // occupancyd_publish_lag_seconds
	PublishPending       prometheus.Gauge   // occupancyd_publish_pending_spaces
	PublishBacklog       prometheus.Gauge   // occupancyd_publish_backlog
	PublishInFlight      prometheus.Gauge   // occupancyd_publish_inflight
	PublishWindow        prometheus.Gauge   // occupancyd_publish_window
	RejectedNotPublished prometheus.Counter // occupancyd_rejected_unpublished_total
	SpaceOccupancy       *SpaceGauges       // occupancyd_space_occupancy{space}

	// Dead letters the store refused (disk full); their messages were still
	// published on the rejected topic.
	DeadLettersDropped prometheus.Counter // occupancyd_dead_letters_dropped_total
	// RejectedMessages counts messages with rejected events (a message of 100,000
	// bad events is one dead letter and one publish on the rejected topic).
	RejectedMessages prometheus.Counter  // occupancyd_rejected_messages_total
	readiness        *readinessCollector // occupancyd_ready, occupancyd_not_ready_reason{reason}
	// DPU health and the build.
	DPUs         prometheus.Gauge     // occupancyd_dpus (of the topology in force)
	DPUsQuiet    prometheus.Gauge     // occupancyd_dpus_quiet
	DPULastEvent *DPULastEvent        // occupancyd_dpu_last_event_timestamp_seconds{dpu}
	BuildInfo    *prometheus.GaugeVec // occupancyd_build_info{version,commit,goversion} 1
	Registry     *prometheus.Registry // served at /metrics (plus Go/process collectors)
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
	occupancy.ReasonBadID,
	occupancy.ReasonBadReport,
	occupancy.ReasonOverlap,
}

// New creates the gateway metrics on a fresh registry that also carries the Go
// runtime and process collectors.
func New() *Metrics {
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
			Help: "Rejected events, by reason (a message rejected as a whole counts once).",
		}, []string{"reason"}),
		EventsLate: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_events_late_total",
			Help: "Events whose ts was before the settled horizon when received.",
		}),
		EventsParked: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_events_parked",
			Help: "Events parked for DPUs no topology version maps yet.",
		}),
		CounterResets: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_counter_resets_total",
			Help: "Counter resets of cumulative DPUs: a report whose in_total or out_total is below the one before it in ts order (each DPU's in GET /v1/dpus).",
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
			Help: "1 while the MQTT client is connected (the ingest connection), else 0.",
		}),
		MQTTOutputConnected: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_mqtt_output_connected",
			Help: "1 while the MQTT output connection (client id <client_id>-pub) is connected, else 0.",
		}),
		PublishLag: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_publish_lag_seconds",
			Help: "Age of the oldest occupancy change not yet published (0: none waiting).",
		}),
		PublishPending: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_publish_pending_spaces",
			Help: "Spaces whose latest change is not published yet (at most one entry per space).",
		}),
		PublishBacklog: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_publish_backlog",
			Help: "Republications waiting: every space after a (re)connect or a topology version, discovery configs, cleared topics, status.",
		}),
		PublishInFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_publish_inflight",
			Help: "QoS 1 publishes the broker has not acknowledged yet.",
		}),
		PublishWindow: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_publish_window",
			Help: "The output's adaptive window: the most unacknowledged QoS 1 publishes it allows now (smaller while the broker acknowledges slowly).",
		}),
		RejectedNotPublished: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_rejected_unpublished_total",
			Help: "Rejected messages not sent on the rejected topic because the output connection was down or the queue to it was full (still dead letters).",
		}),
		SpaceOccupancy: newSpaceGauges(),
		Registry:       reg,
		DeadLettersDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_dead_letters_dropped_total",
			Help: "Dead letters (rejected messages) that could not be stored, e.g. on a full disk; they were still published on the rejected topic.",
		}),
		RejectedMessages: f.NewCounter(prometheus.CounterOpts{
			Name: "occupancyd_rejected_messages_total",
			Help: "Messages with at least one rejected event (each is one dead letter and one publish on the rejected topic).",
		}),
		readiness: newReadinessCollector(),
		DPUs: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_dpus",
			Help: "DPUs of the topology in force.",
		}),
		DPUsQuiet: f.NewGauge(prometheus.GaugeOpts{
			Name: "occupancyd_dpus_quiet",
			Help: "DPUs of the topology in force with no report for their quiet_after (health.dpu_quiet_after).",
		}),
		DPULastEvent: newDPULastEvent(),
		BuildInfo: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "occupancyd_build_info",
			Help: "Always 1; the labels say which build runs.",
		}, []string{"version", "commit", "goversion"}),
	}
	reg.MustRegister(m.SpaceOccupancy, m.readiness, m.DPULastEvent)
	for _, r := range rejectReasons {
		m.EventsRejected.WithLabelValues(string(r))
	}
	return m
}

// Rejected counts one rejection with its reason.
func (m *Metrics) Rejected(reason occupancy.Reason) {
	m.EventsRejected.WithLabelValues(string(reason)).Inc()
}

// RejectedN counts n rejected events with one reason.
func (m *Metrics) RejectedN(reason occupancy.Reason, n int) {
	m.EventsRejected.WithLabelValues(string(reason)).Add(float64(n))
}

// SetBuildInfo sets occupancyd_build_info{version,commit,goversion} to 1.
func (m *Metrics) SetBuildInfo(version, commit, goversion string) {
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, commit, goversion).Set(1)
}

// LastEventSource sets where occupancyd_dpu_last_event_timestamp_seconds reads from
// (the tracker's DPU statistics).
func (m *Metrics) LastEventSource(src LastEventFunc) { m.DPULastEvent.setSource(src) }

// SetSpaces sets occupancyd_space_occupancy for the given spaces.
func (m *Metrics) SetSpaces(spaces []occupancy.Occupancy) {
	m.SpaceOccupancy.set(spaces)
}

// RemoveSpaces drops the occupancy series of spaces a topology version removed.
func (m *Metrics) RemoveSpaces(ids []string) {
	m.SpaceOccupancy.remove(ids)
}

// SpaceGauges is occupancyd_space_occupancy{space}: one gauge per space, which at
// 100,000 DPUs is 68,000 series. A GaugeVec keeps a gauge object, its label pairs and
// a hashed index entry per series (about 450 bytes each, ~31 MB live heap for the
// campus, twice that in RSS under GOGC=100); this keeps one map entry per space (the
// id string is the topology's, shared) and builds the series only while /metrics is
// scraped. It is goroutine-safe.
type SpaceGauges struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	vals map[string]int64
}

func newSpaceGauges() *SpaceGauges {
	return &SpaceGauges{
		desc: prometheus.NewDesc("occupancyd_space_occupancy",
			"Current occupancy of each space (pending events included).", []string{"space"}, nil),
		vals: make(map[string]int64),
	}
}

func (g *SpaceGauges) set(spaces []occupancy.Occupancy) {
	g.mu.Lock()
	for _, o := range spaces {
		g.vals[o.Space] = o.Occupancy
	}
	g.mu.Unlock()
}

func (g *SpaceGauges) remove(ids []string) {
	g.mu.Lock()
	for _, id := range ids {
		delete(g.vals, id)
	}
	g.mu.Unlock()
}

// Value returns the gauge of one space and whether it has a series.
func (g *SpaceGauges) Value(space string) (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.vals[space]
	return v, ok
}

// Describe implements prometheus.Collector.
func (g *SpaceGauges) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector. The values are copied under the lock and
// sent after it, so a slow scrape never holds up the engine tick that sets them; the
// series of one scrape share one allocation.
func (g *SpaceGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	snap := make([]spaceMetric, 0, len(g.vals))
	for k, v := range g.vals {
		snap = append(snap, spaceMetric{desc: g.desc, space: k, v: float64(v)})
	}
	g.mu.Unlock()
	for i := range snap {
		ch <- &snap[i]
	}
}

// spaceMetric is one series of occupancyd_space_occupancy during a scrape.
type spaceMetric struct {
	desc  *prometheus.Desc
	space string
	v     float64
}

var spaceLabel = "space"

func (m *spaceMetric) Desc() *prometheus.Desc { return m.desc }

func (m *spaceMetric) Write(out *dto.Metric) error {
	out.Label = []*dto.LabelPair{{Name: &spaceLabel, Value: &m.space}}
	out.Gauge = &dto.Gauge{Value: &m.v}
	return nil
}
