package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// value reads the single series of a counter or gauge (or the sample count of a
// histogram) straight from the collector.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	var vals []float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
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

func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestMetricsRegistration(t *testing.T) {
	m := NewMetrics()
	// A second set must not collide (own registry per gateway).
	_ = NewMetrics()

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
		{"space lobby", value(t, m.SpaceOccupancy.WithLabelValues("lobby")), 7},
		{"space series after removal", float64(count(m.SpaceOccupancy)), 1},
		{"rejected series", float64(count(m.EventsRejected)), float64(len(rejectReasons) + 1)},
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

// TestMetricsExposition scrapes /metrics of a real server and checks every metric of
// the contract is there in the Prometheus text format, with the Go/process collectors.
func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.EventsAccepted.Add(42)
	m.SpaceOccupancy.WithLabelValues("room-a").Set(3)
	s := startServer(t, "", newFakeQuerier(), m, zerolog.Nop())
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type = %q, want text/plain exposition", ct)
	}
	text := string(body)
	for _, want := range []string{
		"occupancyd_events_received_total 0",
		"occupancyd_events_accepted_total 42",
		"occupancyd_events_duplicate_total 0",
		`occupancyd_events_rejected_total{reason="bad_json"} 0`,
		`occupancyd_events_rejected_total{reason="unknown_dpu"} 0`,
		"occupancyd_events_late_total 0",
		"occupancyd_events_parked 0",
		"occupancyd_ingest_batch_seconds_bucket",
		"occupancyd_publishes_total 0",
		"occupancyd_pending_entries 0",
		"occupancyd_settle_lag_seconds 0",
		"occupancyd_mqtt_connected 0",
		`occupancyd_space_occupancy{space="room-a"} 3`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want+"{") && !strings.Contains(text, want+" ") {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
