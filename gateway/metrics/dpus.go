package metrics

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Which DPUs have a series of occupancyd_dpu_last_event_timestamp_seconds
// (health.last_event_metric): one series per DPU is 100,000 at a campus, so the
// operator chooses.
const (
	LastEventQuiet = "quiet" // the quiet DPUs only (the default): a healthy campus exports none
	LastEventAll   = "all"   // every DPU of the topology in force
	LastEventNone  = "none"  // no series
)

// LastEventModes are the values of health.last_event_metric.
var LastEventModes = []string{LastEventQuiet, LastEventAll, LastEventNone}

// LastEventFunc calls fn with the last report time (Unix ms; ok false if the DPU
// never reported) of every DPU of the topology in force (all) or of the quiet ones.
type LastEventFunc func(all bool, fn func(dpu string, ms int64, ok bool))

// DPULastEvent is occupancyd_dpu_last_event_timestamp_seconds{dpu}: when the
// gateway last received an event or report of the DPU (0: never). Its series are
// made while /metrics is scraped, from the tracker's statistics, for the DPUs the
// mode says.
type DPULastEvent struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	mode string
	src  LastEventFunc
}

func newDPULastEvent() *DPULastEvent {
	return &DPULastEvent{
		desc: prometheus.NewDesc("occupancyd_dpu_last_event_timestamp_seconds",
			"When the gateway last received an event or report of the DPU (Unix seconds; 0: never). "+
				"Series for the DPUs health.last_event_metric says: quiet (default), all or none.",
			[]string{"dpu"}, nil),
		mode: LastEventQuiet,
	}
}

// SetMode sets which DPUs have a series: LastEventQuiet ("" too), LastEventAll or
// LastEventNone.
func (g *DPULastEvent) SetMode(mode string) error {
	switch mode {
	case "":
		mode = LastEventQuiet
	case LastEventQuiet, LastEventAll, LastEventNone:
	default:
		return fmt.Errorf("last event metric: want one of %q, got %q", LastEventModes, mode)
	}
	g.mu.Lock()
	g.mode = mode
	g.mu.Unlock()
	return nil
}

func (g *DPULastEvent) setSource(src LastEventFunc) {
	g.mu.Lock()
	g.src = src
	g.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (g *DPULastEvent) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *DPULastEvent) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	mode, src := g.mode, g.src
	g.mu.Unlock()
	if src == nil || mode == LastEventNone {
		return
	}
	var rows []labelled
	src(mode == LastEventAll, func(dpu string, ms int64, ok bool) {
		v := 0.0
		if ok {
			v = float64(ms) / 1000
		}
		rows = append(rows, labelled{desc: g.desc, name: &dpuLabel, label: dpu, v: v})
	})
	for i := range rows {
		ch <- &rows[i]
	}
}

var dpuLabel = "dpu"

// labelled is one gauge series with one label, made during a scrape.
type labelled struct {
	desc  *prometheus.Desc
	name  *string
	label string
	v     float64
}

func (m *labelled) Desc() *prometheus.Desc { return m.desc }

func (m *labelled) Write(out *dto.Metric) error {
	out.Label = []*dto.LabelPair{{Name: m.name, Value: &m.label}}
	out.Gauge = &dto.Gauge{Value: &m.v}
	return nil
}
