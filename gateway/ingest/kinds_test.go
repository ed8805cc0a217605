package ingest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// kindsTopics: the default events filter; a fleet of interval counters with their
// own field names; an entry of kind cumulative; and a fleet whose payload names the
// device (no DPU level in the topic).
var kindsTopics = config.EventsTopics{
	{Filter: "dpu/+/events"},
	{Filter: "counters/+/up", Kind: "interval", Map: &occupancy.Mapping{Start: "from", End: "to", In: "fw", Out: "bw", TSFormat: "unix"}},
	{Filter: "totals/+/up", Kind: "cumulative", Map: &occupancy.Mapping{TS: "t", InTotal: "a", OutTotal: "b"}},
	{Filter: "irisys/counts", Kind: "cumulative", Map: &occupancy.Mapping{Items: "CountLogs", DPU: "$.serial", TS: "Timestamp", InTotal: "In", OutTotal: "Out"}},
}

// kindsTopology: every DPU into one room. vs1 has its own kind and map (it wins over
// any entry's); iv1 and iv2 say only their kind (interval: the entry's map where the
// entry is of that kind, else the kind's own field names); d1 and ir1 say nothing.
func kindsTopology() occupancy.TopologyConfig {
	dpu := func(id, kind string, m *occupancy.Mapping) occupancy.DPUConfig {
		return occupancy.DPUConfig{ID: id, Doorway: "door", PlusSpace: "room", Kind: kind, Map: m}
	}
	return occupancy.TopologyConfig{
		Spaces:   []occupancy.SpaceConfig{{ID: "room", Name: "Room"}},
		Doorways: []occupancy.DoorwayConfig{{ID: "door", Name: "Door"}},
		DPUs: []occupancy.DPUConfig{
			dpu("d1", "", nil),
			dpu("vs1", "cumulative", &occupancy.Mapping{TS: "time", InTotal: "object.in", OutTotal: "object.out", TSFormat: "rfc3339"}),
			dpu("iv1", "interval", nil),
			dpu("iv2", "interval", nil),
			dpu("ir1", "", nil),
		},
	}
}

func kindsPipeline(t *testing.T, now time.Time) (*Pipeline, *Recorder, *tracker.Tracker, *metrics.Metrics) {
	t.Helper()
	return kindsPipelineOf(t, now, kindsTopology(), kindsTopics)
}

// kindsPipelineOf is kindsPipeline with topo and topics.
func kindsPipelineOf(t *testing.T, now time.Time, topo occupancy.TopologyConfig, topics config.EventsTopics) (*Pipeline, *Recorder, *tracker.Tracker, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	st, tr := openTracker(t, now, topo, occupancy.Options{SettleAfter: 5 * 60_000, ClampNegative: true}, m)
	rec := NewRecorder(st, m, zerolog.Nop())
	p, err := New(Options{Tracker: tr, Rejects: rec, Topics: topics, Topology: &topo, MaxFutureSkew: time.Minute,
		MaxPayload: 1 << 16, Metrics: m, Logger: zerolog.Nop(), Now: clock(now)})
	if err != nil {
		t.Fatal(err)
	}
	return p, rec, tr, m
}

// TestKindsQueued: messages of every kind arrive on their topics through the queue
// (the MQTT path), each decoded by the kind and map the precedence gives, stored in
// shared group commits and acknowledged once durable; a report missing a field is
// rejected as bad_report naming it, one of two overlapping intervals as overlap, a
// re-sent report is a duplicate, an unknown DPU's report is parked; the room counts
// the crossings the accepted reports stand for.
func TestKindsQueued(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ms := now.UnixMilli()
	p, rec, tr, m := kindsPipeline(t, now)
	rfc := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }
	unix := func(d time.Duration) int64 { return now.Add(d).Unix() }
	msgs := []struct{ topic, payload string }{
		{"dpu/d1/events", fmt.Sprintf(`{"ts":%d,"direction":1}`, ms-50_000)},                                                // +1
		{"dpu/vs1/events", fmt.Sprintf(`{"time":%q,"object":{"in":10,"out":3}}`, rfc(-60*time.Second))},                     // baseline
		{"dpu/vs1/events", fmt.Sprintf(`{"time":%q,"object":{"in":14,"out":4}}`, rfc(-30*time.Second))},                     // +4 -1
		{"counters/iv1/up", fmt.Sprintf(`{"from":%d,"to":%d,"fw":2,"bw":1}`, unix(-70*time.Second), unix(-40*time.Second))}, // +2 -1
		{"counters/iv1/up", fmt.Sprintf(`{"from":%d,"to":%d,"fw":2,"bw":1}`, unix(-50*time.Second), unix(-20*time.Second))}, // overlaps the one before
		{"totals/iv2/up", fmt.Sprintf(`{"start":%d,"end":%d,"in":3,"out":0}`, ms-90_000, ms-60_000)},                        // +3, the kind's own names
		{"irisys/counts", fmt.Sprintf(`{"serial":"ir1","CountLogs":[{"Timestamp":%q,"In":100,"Out":90},{"Timestamp":%q,"In":105,"Out":91}]}`,
			rfc(-80*time.Second), rfc(-10*time.Second))}, // +5 -1
		{"counters/iv1/up", fmt.Sprintf(`{"from":%d,"to":%d,"fw":2}`, unix(-10*time.Second), unix(-5*time.Second))},       // no bw
		{"counters/zz/up", fmt.Sprintf(`{"from":%d,"to":%d,"fw":1,"bw":0}`, unix(-10*time.Second), unix(-5*time.Second))}, // parked
		{"dpu/vs1/events", fmt.Sprintf(`{"time":%q,"object":{"in":14,"out":4}}`, rfc(-30*time.Second))},                   // re-sent
	}
	p.Start()
	acked := make(chan int, len(msgs))
	for i, msg := range msgs {
		if !p.Submit(Message{Topic: msg.topic, Payload: []byte(msg.payload), Received: ms, Ack: func() { acked <- i }}) {
			t.Fatalf("submit %d refused", i)
		}
	}
	var got []int
	for range msgs {
		select {
		case i := <-acked:
			got = append(got, i)
		case <-time.After(20 * time.Second):
			t.Fatalf("acknowledged %v, want all %d", got, len(msgs))
		}
	}
	p.Stop(context.Background())

	if o, _ := tr.Space("room"); o.Occupancy != 12 {
		t.Errorf("room = %d, want 12 (1 + 3 + 1 + 3 + 4)", o.Occupancy)
	}
	var reasons []string
	for {
		select {
		case o := <-rec.Outgoing():
			reasons = append(reasons, fmt.Sprintf("%s %s: %s", o.Topic, o.Rejection.Reason, o.Rejection.Detail))
			continue
		default:
		}
		break
	}
	slices.Sort(reasons)
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], `counters/iv1/up bad_report: missing out (path "bw")`) ||
		!strings.HasPrefix(reasons[1], "counters/iv1/up overlap: interval [") {
		t.Errorf("rejections:\n%s\nwant a bad_report naming out and an overlap", strings.Join(reasons, "\n"))
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"rejected bad_report", testutil.ToFloat64(m.EventsRejected.WithLabelValues("bad_report")), 1},
		{"rejected overlap", testutil.ToFloat64(m.EventsRejected.WithLabelValues("overlap")), 1},
		{"accepted", testutil.ToFloat64(m.EventsAccepted), 8}, // 1 event, 7 reports (one parked)
		{"duplicates", testutil.ToFloat64(m.EventsDuplicate), 1},
		{"received", testutil.ToFloat64(m.EventsReceived), 11},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	stats := map[string]tracker.DPUStat{}
	for _, d := range tr.DPUs() {
		stats[d.DPU] = d
	}
	if s := stats["zz"]; s.Parked != 1 {
		t.Errorf("zz: %+v, want 1 parked", s)
	}
	if s := stats["vs1"]; s.Accepted != 2 || s.Duplicates != 1 {
		t.Errorf("vs1: %+v, want 2 accepted, 1 duplicate", s)
	}
}

// TestKindsPush: HTTP push decodes by the DPU's own kind and map, else as events (a
// DPU the topology does not know included: parked); SetTopology makes a new version's
// kinds decode from then on.
func TestKindsPush(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ms := now.UnixMilli()
	p, _, tr, _ := kindsPipeline(t, now)
	push := func(dpu, payload string) Result {
		t.Helper()
		res, err := p.Ingest(context.Background(), Message{Topic: "http:/v1/dpus/" + dpu + "/events", DPU: dpu, Payload: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, c := range []struct {
		name, dpu, payload string
		accepted           int
		rejected           string
	}{
		{"own kind and map", "vs1", fmt.Sprintf(`[{"time":%q,"object":{"in":1,"out":0}},{"time":%q,"object":{"in":3,"out":1}}]`,
			now.Add(-time.Minute).Format(time.RFC3339), now.Add(-time.Second).Format(time.RFC3339)), 2, ""},
		{"own kind, the kind's own names (not an entry's map)", "iv1", fmt.Sprintf(`{"start":%d,"end":%d,"in":2,"out":0}`, ms-9_000, ms-4_000), 1, ""},
		{"an entry's map does not apply over HTTP", "iv1", fmt.Sprintf(`{"from":%d,"to":%d,"fw":2,"bw":0}`, ms/1000-3, ms/1000-2), 0, "-1:bad_report"},
		{"no kind: events", "d1", fmt.Sprintf(`{"ts":%d,"direction":1}`, ms-1_000), 1, ""},
		{"unknown DPU: events, parked", "new", fmt.Sprintf(`{"ts":%d,"direction":1}`, ms-1_000), 1, ""},
		{"unknown DPU, a report: not events", "new2", fmt.Sprintf(`{"start":%d,"end":%d,"in":2,"out":0}`, ms-9_000, ms-4_000), 0, "-1:bad_direction"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := push(c.dpu, c.payload)
			var rej []string
			for _, r := range res.Rejected {
				rej = append(rej, fmt.Sprintf("%d:%s", r.Index, r.Reason))
			}
			if res.Accepted != c.accepted || strings.Join(rej, ",") != c.rejected {
				t.Errorf("got %+v, want %d accepted, rejected %q", res, c.accepted, c.rejected)
			}
		})
	}
	if o, _ := tr.Space("room"); o.Occupancy != 4 {
		t.Errorf("room = %d, want 4 (vs1's difference 2 in 1 out, 2 from iv1, 1 from d1)", o.Occupancy)
	}
	// A new version makes d1 cumulative.
	if k := p.Kind("dpu/d1/events", ""); k != occupancy.ReportEvents {
		t.Errorf("d1 before: kind %v, want events", k)
	}
	next := kindsTopology()
	next.DPUs[0].Kind = "cumulative"
	if err := p.SetTopology(&next); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic, dpu string
		want       occupancy.ReportKind
	}{
		{"dpu/d1/events", "", occupancy.ReportCumulative}, {"", "d1", occupancy.ReportCumulative},
		{"totals/iv2/up", "", occupancy.ReportInterval}, {"irisys/counts", "", occupancy.ReportCumulative},
		{"counters/x/up", "", occupancy.ReportInterval}, {"", "x", occupancy.ReportEvents},
	} {
		if k := p.Kind(c.topic, c.dpu); k != c.want {
			t.Errorf("Kind(%q, %q) = %v, want %v", c.topic, c.dpu, k, c.want)
		}
	}
	if res := push("d1", fmt.Sprintf(`{"ts":%d,"in_total":7,"out_total":7}`, ms-500)); res.Accepted != 1 {
		t.Errorf("d1 as cumulative: got %+v, want accepted", res)
	}
}

// TestKindsPushFleet: where every mqtt.events_topic entry has one kind and map (a
// fleet of one vendor), an HTTP push of a DPU that sets no kind decodes with them,
// as its MQTT messages do, and a DPU of that kind without a map of its own takes the
// entry's map; a map that finds the DPU in the payload finds none over HTTP (the
// route names the DPU: a payload naming another is counted for the route's DPU);
// entries that differ leave pushes to events.
func TestKindsPushFleet(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ms := now.UnixMilli()
	totals := func(ts, in, out int64) string { return fmt.Sprintf(`{"t":%d,"a":%d,"b":%d}`, ts/1000, in, out) }
	fleet := &occupancy.Mapping{TS: "t", InTotal: "a", OutTotal: "b", TSFormat: "unix"}
	inPayload := &occupancy.Mapping{Items: "CountLogs", DPU: "$.serial", TS: "Timestamp", InTotal: "In", OutTotal: "Out", TSFormat: "unix"}
	irisys := func(serial string, ts, in, out int64) string {
		return fmt.Sprintf(`{"serial":%q,"CountLogs":[{"Timestamp":%d,"In":%d,"Out":%d}]}`, serial, ts/1000, in, out)
	}
	for _, c := range []struct {
		name     string
		topics   config.EventsTopics
		dpu      string
		payloads []string
		want     int64 // room after the pushes
		rejected string
	}{
		{"one cumulative fleet: a DPU without a kind", config.EventsTopics{{Filter: "vs/+/up", Kind: "cumulative", Map: fleet}},
			"d1", []string{totals(ms-60_000, 10, 2), totals(ms-30_000, 14, 3)}, 3, ""},
		{"two entries of one kind and map", config.EventsTopics{{Filter: "vs/+/up", Kind: "cumulative", Map: fleet}, {Filter: "site/vs/+/up", Kind: "cumulative", Map: fleet}},
			"d1", []string{totals(ms-60_000, 10, 2), totals(ms-30_000, 14, 3)}, 3, ""},
		{"a DPU of the fleet's kind takes its map", config.EventsTopics{{Filter: "vs/+/up", Kind: "cumulative", Map: fleet}},
			"cu", []string{totals(ms-60_000, 10, 2), totals(ms-30_000, 15, 3)}, 4, ""},
		{"an unknown DPU: the fleet's kind, parked", config.EventsTopics{{Filter: "vs/+/up", Kind: "cumulative", Map: fleet}},
			"new", []string{totals(ms-60_000, 10, 2)}, 0, ""},
		{"the DPU in the payload: the route's DPU counts", config.EventsTopics{{Filter: "irisys/counts", Kind: "cumulative", Map: inPayload}},
			"d1", []string{irisys("cu", ms-60_000, 5, 0), irisys("cu", ms-30_000, 9, 1)}, 3, ""},
		{"entries that differ: events", config.EventsTopics{{Filter: "dpu/+/events"}, {Filter: "vs/+/up", Kind: "cumulative", Map: fleet}},
			"d1", []string{totals(ms-60_000, 10, 2)}, 0, "-1:bad_direction"},
	} {
		t.Run(c.name, func(t *testing.T) {
			topo := occupancy.TopologyConfig{
				Spaces:   []occupancy.SpaceConfig{{ID: "room", Name: "Room"}},
				Doorways: []occupancy.DoorwayConfig{{ID: "door", Name: "Door"}},
				DPUs: []occupancy.DPUConfig{{ID: "d1", Doorway: "door", PlusSpace: "room"},
					{ID: "cu", Doorway: "door", PlusSpace: "room", Kind: "cumulative"}},
			}
			p, _, tr, _ := kindsPipelineOf(t, now, topo, c.topics)
			var rej []string
			for _, pl := range c.payloads {
				res, err := p.Ingest(context.Background(), Message{Topic: "http:/v1/dpus/" + c.dpu + "/events", DPU: c.dpu, Payload: []byte(pl)})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range res.Rejected {
					rej = append(rej, fmt.Sprintf("%d:%s", r.Index, r.Reason))
				}
			}
			if got := strings.Join(rej, ","); got != c.rejected {
				t.Errorf("rejected %q, want %q", got, c.rejected)
			}
			if o, _ := tr.Space("room"); o.Occupancy != c.want {
				t.Errorf("room = %d, want %d", o.Occupancy, c.want)
			}
			for _, st := range tr.DPUs() {
				if st.DPU != c.dpu && st.Accepted > 0 {
					t.Errorf("DPU %s has %d accepted: a push counted for another DPU than its route's", st.DPU, st.Accepted)
				}
			}
		})
	}
}
