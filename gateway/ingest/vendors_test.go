package ingest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// TestVendorsConfig: configs/vendors.yaml is a valid configuration, and each of its
// entries decodes the vendor payload of that shape (occupancy/testdata/vendors) to
// the reports the payload stands for, through the routes a message takes: its topic
// (MQTT) or its DPU (HTTP push).
func TestVendorsConfig(t *testing.T) {
	cfg, err := config.LoadConfig("../../configs/vendors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 5, 0, 0, time.UTC)
	p, err := New(Options{Tracker: nopTracker{}, Rejects: NewRecorder(nil, nil, zerolog.Nop()), Topics: cfg.MQTT.EventsTopic,
		Topology: &cfg.Topology, MaxFutureSkew: time.Minute, MaxPayload: cfg.MQTT.MaxPayload, Logger: zerolog.Nop(),
		Now: clock(now)})
	if err != nil {
		t.Fatal(err)
	}
	ms := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	iv := func(dpu, start, end string, in, out int64) occupancy.Report {
		return occupancy.Report{DPU: dpu, Kind: occupancy.ReportInterval, Start: ms(start), TS: ms(end), In: in, Out: out, Received: now.UnixMilli()}
	}
	cu := func(dpu, ts string, in, out int64) occupancy.Report {
		return occupancy.Report{DPU: dpu, Kind: occupancy.ReportCumulative, TS: ms(ts), In: in, Out: out, Received: now.UnixMilli()}
	}
	for _, c := range []struct {
		name, file, topic, dpu string
		want                   []occupancy.Report
	}{
		{"Milesight VS13x MQTT push", "milesight-vs13x-http.json", "milesight/people-counter/push", "",
			[]occupancy.Report{iv("6785D17946230001", "2026-11-27T09:45:00Z", "2026-11-27T10:00:00Z", 12, 7)}},
		{"Milesight VS133 through ChirpStack", "milesight-vs13x-chirpstack.json", "application/7/device/24e124795d123456/event/up", "",
			[]occupancy.Report{cu("vs133-lobby", "2026-11-27T09:59:30.123Z", 72, 200)}},
		{"Xovis logics push", "xovis-logics-push.json", "xovis/logics", "",
			[]occupancy.Report{iv("xovis-main", "2026-11-27T09:57:00Z", "2026-11-27T09:58:00Z", 3, 1),
				iv("xovis-main", "2026-11-27T09:58:00Z", "2026-11-27T09:59:00Z", 0, 2)}},
		{"VIVOTEK counting push", "vivotek-counting-push.json", "vivotek/sc8131-door/counting", "",
			[]occupancy.Report{iv("sc8131-door", "2026-11-27T09:30:00Z", "2026-11-27T09:45:00Z", 1, 2)}},
		{"Irisys Vector HTTP post", "irisys-vector-httppost.json", "", "V4D-17020025",
			[]occupancy.Report{cu("V4D-17020025", "2026-11-27T09:58:00Z", 121, 117), cu("V4D-17020025", "2026-11-27T09:59:00Z", 125, 118)}},
		{"Milesight VS133 HTTP push", "milesight-vs13x-http.json", "", "vs133-side",
			[]occupancy.Report{iv("vs133-side", "2026-11-27T09:45:00Z", "2026-11-27T10:00:00Z", 12, 7)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			payload, err := os.ReadFile(filepath.Join("../../occupancy/testdata/vendors", c.file))
			if err != nil {
				t.Fatal(err)
			}
			w := p.decode(Message{Topic: c.topic, DPU: c.dpu, Payload: payload, Received: now.UnixMilli()})
			if len(w.rejections) > 0 || len(w.events) > 0 {
				t.Fatalf("got rejections %+v and events %+v, want reports only", w.rejections, w.events)
			}
			if !reflect.DeepEqual(w.reports, c.want) {
				t.Errorf("reports:\n got %+v\nwant %+v", w.reports, c.want)
			}
			for _, r := range w.reports {
				if _, ok := dpuIndex(cfg.Topology)[r.DPU]; !ok {
					t.Errorf("DPU %q is not in the example topology", r.DPU)
				}
			}
		})
	}
}

func dpuIndex(tc occupancy.TopologyConfig) map[string]int {
	m := map[string]int{}
	for i, d := range tc.DPUs {
		m[d.ID] = i
	}
	return m
}
