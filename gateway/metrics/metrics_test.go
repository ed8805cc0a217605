package metrics

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/occupancyd/occupancyd/occupancy"
)

// collect writes out every series of c.
func collect(t *testing.T, c prometheus.Collector) []*dto.Metric {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	var out []*dto.Metric
	for m := range ch {
		pb := &dto.Metric{}
		if err := m.Write(pb); err != nil {
			t.Fatal(err)
		}
		out = append(out, pb)
	}
	return out
}

// value reads the single series of a counter or gauge (or the sample count of a
// histogram) straight from the collector.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	var vals []float64
	for _, pb := range collect(t, c) {
		switch {
		case pb.Counter != nil:
			vals = append(vals, pb.Counter.GetValue())
		case pb.Gauge != nil:
			vals = append(vals, pb.Gauge.GetValue())
		case pb.Histogram != nil:
			vals = append(vals, float64(pb.Histogram.GetSampleCount()))
		}
	}
	if len(vals) != 1 {
		t.Fatalf("collector has %d series, want 1", len(vals))
	}
	return vals[0]
}

// spaceValue reads the occupancyd_space_occupancy series of one space from the
// collector's output (it must appear exactly once).
func spaceValue(t *testing.T, c prometheus.Collector, space string) float64 {
	t.Helper()
	var vals []float64
	for _, pb := range collect(t, c) {
		for _, l := range pb.GetLabel() {
			if l.GetName() == "space" && l.GetValue() == space && pb.Gauge != nil {
				vals = append(vals, pb.Gauge.GetValue())
			}
		}
	}
	if len(vals) != 1 {
		t.Fatalf("space %q has %d series, want 1", space, len(vals))
	}
	return vals[0]
}

func TestMetricsRegistration(t *testing.T) {
	m := New()
	// A second set must not collide (own registry per gateway).
	_ = New()

	m.EventsReceived.Add(5)
	m.EventsAccepted.Add(3)
	m.EventsDuplicate.Inc()
	m.Rejected(occupancy.ReasonBadJSON)
	m.Rejected(occupancy.ReasonBadJSON)
	m.Rejected("something_new")
	m.EventsLate.Inc()
	m.EventsParked.Set(2)
	m.IngestBatch.Observe(0.003)
	m.Publishes.Add(4)
	m.PendingEntries.Set(17)
	m.SettleLag.Set(300)
	m.MQTTConnected.Set(1)
	m.SetSpaces([]occupancy.Occupancy{{Space: "lobby", Occupancy: 7}, {Space: "hq", Occupancy: 9}})
	m.RemoveSpaces([]string{"hq"})

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"received", value(t, m.EventsReceived), 5},
		{"accepted", value(t, m.EventsAccepted), 3},
		{"duplicate", value(t, m.EventsDuplicate), 1},
		{"rejected bad_json", value(t, m.EventsRejected.WithLabelValues("bad_json")), 2},
		{"rejected new reason", value(t, m.EventsRejected.WithLabelValues("something_new")), 1},
		{"rejected late (pre-initialised)", value(t, m.EventsRejected.WithLabelValues("late")), 0},
		{"late", value(t, m.EventsLate), 1},
		{"parked", value(t, m.EventsParked), 2},
		{"publishes", value(t, m.Publishes), 4},
		{"pending", value(t, m.PendingEntries), 17},
		{"settle lag", value(t, m.SettleLag), 300},
		{"connected", value(t, m.MQTTConnected), 1},
		{"space lobby", spaceValue(t, m.SpaceOccupancy, "lobby"), 7},
		{"space series after removal", float64(len(collect(t, m.SpaceOccupancy))), 1},
		{"rejected series", float64(len(collect(t, m.EventsRejected))), float64(len(rejectReasons) + 1)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if got := value(t, m.IngestBatch); got != 1 {
		t.Errorf("ingest batch observations = %v, want 1", got)
	}
	// Everything gathers without error and each contract metric is registered once.
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	seen := map[string]int{}
	for _, mf := range mfs {
		seen[mf.GetName()]++
	}
	for _, name := range []string{
		"occupancyd_events_received_total", "occupancyd_events_accepted_total",
		"occupancyd_events_duplicate_total", "occupancyd_events_rejected_total",
		"occupancyd_events_late_total", "occupancyd_events_parked",
		"occupancyd_ingest_batch_seconds", "occupancyd_publishes_total",
		"occupancyd_pending_entries", "occupancyd_settle_lag_seconds",
		"occupancyd_mqtt_connected", "occupancyd_space_occupancy",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if seen[name] != 1 {
			t.Errorf("metric %s gathered %d times, want 1", name, seen[name])
		}
	}
}

// TestSpaceGauges: occupancyd_space_occupancy carries exactly the spaces set and not
// removed, each with its last value, and gathers sorted with the contract's name,
// type and label.
func TestSpaceGauges(t *testing.T) {
	m := New()
	m.SetSpaces([]occupancy.Occupancy{{Space: "b", Occupancy: 1}, {Space: "a", Occupancy: 2}, {Space: "c", Occupancy: 3}})
	m.SetSpaces([]occupancy.Occupancy{{Space: "b", Occupancy: 5}, {Space: "d", Occupancy: 0}})
	m.RemoveSpaces([]string{"c", "unknown"})
	want := map[string]float64{"a": 2, "b": 5, "d": 0}
	if v, ok := m.SpaceOccupancy.Value("b"); !ok || v != 5 {
		t.Errorf("Value(b) = %d, %v; want 5, true", v, ok)
	}
	if _, ok := m.SpaceOccupancy.Value("c"); ok {
		t.Error("Value(c) present after removal")
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "occupancyd_space_occupancy" {
			continue
		}
		if mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("type = %v, want gauge", mf.GetType())
		}
		for _, pm := range mf.GetMetric() {
			if len(pm.GetLabel()) != 1 || pm.GetLabel()[0].GetName() != "space" {
				t.Fatalf("labels = %v, want one space label", pm.GetLabel())
			}
			sp := pm.GetLabel()[0].GetValue()
			got = append(got, sp)
			if w, ok := want[sp]; !ok || pm.GetGauge().GetValue() != w {
				t.Errorf("space %s = %v, want %v (present %v)", sp, pm.GetGauge().GetValue(), w, ok)
			}
		}
	}
	if strings.Join(got, ",") != "a,b,d" {
		t.Errorf("series = %v, want a,b,d in order", got)
	}
}

// BenchmarkSpaceGauges: live heap per space of occupancyd_space_occupancy at the
// 100,000-DPU campus's 68,000 spaces, and the time of one Gather of them, for this
// collector and for the prometheus.GaugeVec it replaced.
func BenchmarkSpaceGauges(b *testing.B) {
	const n = 68_000
	occs := make([]occupancy.Occupancy, n)
	for i := range occs {
		occs[i] = occupancy.Occupancy{Space: fmt.Sprintf("s%04d-f%d-r%02d", i/34, i%34/10, i%10), Occupancy: int64(i % 40)}
	}
	live := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for _, kind := range []string{"gaugevec", "spacegauges"} {
		b.Run(kind, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			m0 := live()
			var keep any
			switch kind {
			case "gaugevec":
				v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "occupancyd_space_occupancy", Help: "h"}, []string{"space"})
				for _, o := range occs {
					v.WithLabelValues(o.Space).Set(float64(o.Occupancy))
				}
				reg.MustRegister(v)
				keep = v
			default:
				g := newSpaceGauges()
				g.set(occs)
				reg.MustRegister(g)
				keep = g
			}
			m1 := live()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.KeepAlive(keep)
			b.ReportMetric(float64(m1-m0)/n, "live-B/space")
		})
	}
}
