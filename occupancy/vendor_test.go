package occupancy

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// vendorMaps are the example maps of the reference for counters that report counts:
// each decodes the payload of that shape in testdata/vendors (see its README).
var vendorMaps = []struct {
	name, file string
	kind       ReportKind
	m          Mapping
	dpu        string // the topic's DPU id ("" where the map takes it from the payload)
	want       []Report
}{
	{
		name: "Milesight VS13x HTTP/MQTT push, period counts of line 1", file: "milesight-vs13x-http.json",
		kind: ReportInterval,
		m: Mapping{DPU: "device_info.device_sn", Start: "time_info.start_time", End: "time_info.end_time",
			In: "line_1_period_in", Out: "line_1_period_out", TSFormat: "2006/01/02 15:04:05", TSZone: "time_info.timezone"},
		want: []Report{{DPU: "6785D17946230001", Kind: ReportInterval, Start: utcMS("2026-11-27T09:45:00Z"), TS: utcMS("2026-11-27T10:00:00Z"), In: 12, Out: 7}},
	},
	{
		name: "Milesight VS133/VS135 LoRaWAN totals through ChirpStack", file: "milesight-vs13x-chirpstack.json",
		kind: ReportCumulative,
		m:    Mapping{DPU: "deviceInfo.deviceName", TS: "time", InTotal: "object.line_1_total_in", OutTotal: "object.line_1_total_out", TSFormat: FormatRFC3339},
		want: []Report{{DPU: "vs133-lobby", Kind: ReportCumulative, TS: utcMS("2026-11-27T09:59:30.123Z"), In: 72, Out: 200}},
	},
	{
		name: "Irisys Vector count registers (HTTP post)", file: "irisys-vector-httppost.json",
		kind: ReportCumulative,
		m: Mapping{Items: "CountLogs", DPU: "$.FriendlyDeviceSerial", TS: "Timestamp",
			InTotal: `Counts.#(Name=="Line 1").Value`, OutTotal: `Counts.#(Name=="Line 2").Value`},
		want: []Report{
			{DPU: "V4D-17020025", Kind: ReportCumulative, TS: utcMS("2026-11-27T09:58:00Z"), In: 121, Out: 117},
			{DPU: "V4D-17020025", Kind: ReportCumulative, TS: utcMS("2026-11-27T09:59:00Z"), In: 125, Out: 118},
		},
	},
	{
		name: "Xovis logics push, line logic of the main entrance", file: "xovis-logics-push.json",
		kind: ReportInterval,
		m: Mapping{Items: `logics_data.logics.#(name=="Main entrance").records`, DPU: "$.logics_data.sensor_info.name",
			Start: "from", End: "to", In: `counts.#(name=="fw").value`, Out: `counts.#(name=="bw").value`},
		want: []Report{
			{DPU: "xovis-main", Kind: ReportInterval, Start: utcMS("2026-11-27T09:57:00Z"), TS: utcMS("2026-11-27T09:58:00Z"), In: 3, Out: 1},
			{DPU: "xovis-main", Kind: ReportInterval, Start: utcMS("2026-11-27T09:58:00Z"), TS: utcMS("2026-11-27T09:59:00Z"), In: 0, Out: 2},
		},
	},
	{
		name: "VIVOTEK counting rule, DPU id from the topic", file: "vivotek-counting-push.json",
		kind: ReportInterval,
		m: Mapping{Items: `Data.#(RuleType=="Counting").CountingInfo.#(RuleName=="Counting1")`,
			Start: "StartTime", End: "EndTime", In: "In", Out: "Out"},
		dpu:  "sc8131-door",
		want: []Report{{DPU: "sc8131-door", Kind: ReportInterval, Start: utcMS("2026-11-27T09:30:00Z"), TS: utcMS("2026-11-27T09:45:00Z"), In: 1, Out: 2}},
	},
}

func utcMS(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func TestVendorPayloads(t *testing.T) {
	for _, v := range vendorMaps {
		t.Run(v.name, func(t *testing.T) {
			payload, err := os.ReadFile(filepath.Join("testdata", "vendors", v.file))
			if err != nil {
				t.Fatal(err)
			}
			if ps := v.m.Validate(v.kind); len(ps) > 0 {
				t.Fatalf("example map does not validate: %v", ps)
			}
			d, err := NewDecoder(v.kind, v.m)
			if err != nil {
				t.Fatal(err)
			}
			lim := testLimits()
			lim.MaxPayload = 1 << 16
			got := d.Decode(v.dpu, payload, lim)
			if len(got.Rejections) > 0 || len(got.Events) > 0 {
				t.Fatalf("got rejections %+v and events %+v, want reports only", got.Rejections, got.Events)
			}
			want := make([]Report, len(v.want))
			for i, r := range v.want {
				r.Received = testNow
				want[i] = r
			}
			if !reflect.DeepEqual(got.Reports, want) {
				t.Fatalf("reports:\n got %+v\nwant %+v", got.Reports, want)
			}
			// The same payload without a field the map needs is rejected naming it.
			d2, err := NewDecoder(v.kind, withMissingCount(v.kind, v.m))
			if err != nil {
				t.Fatal(err)
			}
			bad := d2.Decode(v.dpu, payload, lim)
			if len(bad.Reports) != 0 || len(bad.Rejections) != len(want) {
				t.Fatalf("with a missing field: got %+v, want %d rejections", bad, len(want))
			}
			for _, r := range bad.Rejections {
				if r.Reason != ReasonBadReport || r.Detail != `missing in (path "no_such_field")` && r.Detail != `missing in_total (path "no_such_field")` {
					t.Errorf("rejection: got %s %q, want bad_report naming the missing count", r.Reason, r.Detail)
				}
			}
		})
	}
}

// withMissingCount points the map's in or in_total at a field the payload lacks.
func withMissingCount(k ReportKind, m Mapping) Mapping {
	if k == ReportInterval {
		m.In = "no_such_field"
	} else {
		m.InTotal = "no_such_field"
	}
	return m
}
