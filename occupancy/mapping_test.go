package occupancy

import (
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestDecoderEventsDefault: kind events without a map is DecodePayload, for every
// case of its table and random payloads.
func TestDecoderEventsDefault(t *testing.T) {
	d, err := NewDecoder(ReportEvents, Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	payloads := []string{
		`{"id":"000123","ts":"2026-11-27T09:59:59Z","direction":1}`,
		`[{"ts":1795773599000,"direction":1},{"ts":1795773599000,"direction":2},{"ts":"x","direction":1},7]`,
		`{"ts":`, ``, `"x"`, `{"ts":1795773661000,"direction":1}`,
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		payloads = append(payloads, randomEventsPayload(rng))
	}
	for i, p := range payloads {
		for _, dpu := range []string{"d1", "a b"} {
			wantE, wantR := DecodePayload(dpu, []byte(p), testLimits())
			got := d.Decode(dpu, []byte(p), testLimits())
			if !reflect.DeepEqual(got.Events, wantE) || !reflect.DeepEqual(got.Rejections, wantR) || got.Reports != nil {
				t.Fatalf("payload %d %q: got %+v, want %+v %+v", i, p, got, wantE, wantR)
			}
		}
	}
}

func randomEventsPayload(rng *rand.Rand) string {
	var parts []string
	for i := rng.Intn(5); i >= 0; i-- {
		ts := []string{`1795773599000`, `"2026-11-27T09:59:59.5Z"`, `"bad"`, `null`}[rng.Intn(4)]
		dir := []string{`1`, `-1`, `"1"`, `0`, `"in"`}[rng.Intn(5)]
		id := []string{``, `,"id":7`, `,"id":"x"`, `,"id":1.5`}[rng.Intn(4)]
		parts = append(parts, fmt.Sprintf(`{"ts":%s,"direction":%s%s}`, ts, dir, id))
	}
	if len(parts) == 1 && rng.Intn(2) == 0 {
		return parts[0]
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestDecoder(t *testing.T) {
	start, end := testNow-60_000, testNow-1000
	iv := func(dpu string, s, e, in, out int64) Report {
		return Report{DPU: dpu, Kind: ReportInterval, Start: s, TS: e, In: in, Out: out, Received: testNow}
	}
	cu := func(dpu string, ts, in, out int64) Report {
		return Report{DPU: dpu, Kind: ReportCumulative, TS: ts, In: in, Out: out, Received: testNow}
	}
	type rej struct {
		reason Reason
		index  int
		detail string // a part of the detail
	}
	tests := []struct {
		name    string
		kind    ReportKind
		m       Mapping
		dpu     string
		payload string
		events  []Event
		reports []Report
		rejs    []rej
	}{
		{name: "interval default shape", kind: ReportInterval, dpu: "d",
			payload: `{"start":"2026-11-27T09:59:00Z","end":1795773599000,"in":3,"out":"2"}`,
			reports: []Report{iv("d", start, end, 3, 2)}},
		{name: "interval batch keeps good neighbours", kind: ReportInterval, dpu: "d",
			payload: `[{"start":1795773540000,"end":1795773599000,"in":3,"out":0},
				{"start":1795773540000,"end":1795773599000,"out":1},
				{"start":1795773599000,"end":1795773540000,"in":1,"out":1},
				{"start":1795773540000,"end":1795773599000,"in":-1,"out":0},
				{"start":1795773540000,"end":1795773599000,"in":1.5,"out":0},
				{"start":1795773540000,"end":1795773599000,"in":"x","out":0},
				[1],
				{"start":1795773540000,"end":1795773661000,"in":1,"out":1},
				{"start":"9:00","end":1795773599000,"in":1,"out":1},
				{"start":1795773540000,"end":1795773599000,"in":0,"out":4}]`,
			reports: []Report{iv("d", start, end, 3, 0), iv("d", start, end, 0, 4)},
			rejs: []rej{{ReasonBadReport, 1, "missing in"}, {ReasonBadReport, 2, "not after start"}, {ReasonBadReport, 3, "in: must be >= 0"},
				{ReasonBadReport, 4, "in: want a non-negative integer"}, {ReasonBadReport, 5, "in: want a non-negative integer"},
				{ReasonBadJSON, 6, "json object"}, {ReasonFutureTS, 7, "ahead"}, {ReasonBadTS, 8, "start"}}},
		{name: "interval in above the bound", kind: ReportInterval, dpu: "d",
			payload: `{"start":1795773540000,"end":1795773599000,"in":3000000000,"out":0}`, rejs: []rej{{ReasonBadReport, -1, "above"}}},
		{name: "cumulative default shape", kind: ReportCumulative, dpu: "d",
			payload: `{"ts":"2026-11-27T09:59:59Z","in_total":120,"out_total":"117"}`,
			reports: []Report{cu("d", end, 120, 117)}},
		{name: "cumulative missing total", kind: ReportCumulative, dpu: "d",
			payload: `{"ts":"2026-11-27T09:59:59Z","in_total":120}`, rejs: []rej{{ReasonBadReport, -1, "missing out_total"}}},
		{name: "cumulative null total", kind: ReportCumulative, dpu: "d",
			payload: `{"ts":"2026-11-27T09:59:59Z","in_total":120,"out_total":null}`, rejs: []rej{{ReasonBadReport, -1, "missing out_total"}}},
		{name: "cumulative total above 2^53", kind: ReportCumulative, dpu: "d",
			payload: `{"ts":"2026-11-27T09:59:59Z","in_total":9007199254740993,"out_total":1}`, rejs: []rej{{ReasonBadReport, -1, "above 2^53"}}},
		{name: "cumulative too old", kind: ReportCumulative, dpu: "d",
			payload: `{"ts":"2020-01-01T00:00:00Z","in_total":1,"out_total":1}`, rejs: []rej{{ReasonTooOld, -1, "older"}}},
		{name: "bad topic", kind: ReportCumulative, dpu: "a b",
			payload: `{"ts":"2026-11-27T09:59:59Z","in_total":1,"out_total":1}`, rejs: []rej{{ReasonBadTopic, -1, "invalid dpu id"}}},
		{name: "bad json", kind: ReportCumulative, dpu: "d", payload: `{"ts":`, rejs: []rej{{ReasonBadJSON, -1, "invalid json"}}},
		{name: "not an object", kind: ReportCumulative, dpu: "d", payload: `17`, rejs: []rej{{ReasonBadJSON, -1, "object"}}},
		{name: "empty", kind: ReportInterval, dpu: "d", payload: ` `, rejs: []rej{{ReasonBadJSON, -1, "empty"}}},
		{name: "too large", kind: ReportInterval, dpu: "d", payload: `{"x":"` + strings.Repeat("a", 5000) + `"}`, rejs: []rej{{ReasonTooLarge, -1, "max_payload"}}},
		{name: "dpu from the payload, per item", kind: ReportCumulative,
			m:       Mapping{Items: "rows", DPU: "sensor", TS: "t", InTotal: "c.in", OutTotal: "c.out", TSFormat: FormatUnix},
			payload: `{"rows":[{"sensor":"s1","t":1795773599,"c":{"in":1,"out":2}},{"sensor":"s 2","t":1795773599,"c":{"in":1,"out":2}},{"t":1795773599.5,"c":{"in":1,"out":2}},{"sensor":7,"t":"1795773599.25","c":{"in":1,"out":2}}]}`,
			reports: []Report{cu("s1", end, 1, 2), cu("7", end+250, 1, 2)},
			rejs:    []rej{{ReasonBadReport, 1, "dpu"}, {ReasonBadReport, 2, `missing dpu (path "sensor")`}}},
		{name: "dpu from the root beside items", kind: ReportInterval,
			m:       Mapping{Items: "list", DPU: "$.meta.id", TSFormat: FormatUnixMS},
			payload: `{"meta":{"id":"m-1"},"list":[{"start":1795773540000,"end":"1795773599000","in":1,"out":0}]}`,
			reports: []Report{iv("m-1", start, end, 1, 0)}},
		{name: "missing items", kind: ReportInterval, dpu: "d", m: Mapping{Items: "list"},
			payload: `{"other":[]}`, rejs: []rej{{ReasonBadReport, -1, `missing items (path "list")`}}},
		{name: "unix_ms rejects a fraction", kind: ReportCumulative, dpu: "d", m: Mapping{TSFormat: FormatUnixMS},
			payload: `{"ts":1795773599000.5,"in_total":1,"out_total":1}`, rejs: []rej{{ReasonBadTS, -1, "ts: want integer"}}},
		{name: "rfc3339 rejects a number", kind: ReportCumulative, dpu: "d", m: Mapping{TSFormat: FormatRFC3339},
			payload: `{"ts":1795773599000,"in_total":1,"out_total":1}`, rejs: []rej{{ReasonBadTS, -1, "RFC 3339"}}},
		{name: "layout with a zone field", kind: ReportInterval, dpu: "d",
			m: Mapping{Start: "ti.s", End: "ti.e", TSFormat: "2006/01/02 15:04:05", TSZone: "ti.tz"},
			payload: `[{"ti":{"tz":"UTC+8:00","s":"2026/11/27 17:59:00","e":"2026/11/27 17:59:59"},"in":1,"out":1},
				{"ti":{"tz":"-0530","s":"2026/11/27 04:29:00","e":"2026/11/27 04:29:59"},"in":1,"out":1},
				{"ti":{"tz":"Europe/Berlin","s":"2026/11/27 10:59:00","e":"2026/11/27 10:59:59"},"in":1,"out":1},
				{"ti":{"tz":8,"s":"2026/11/27 17:59:00","e":"2026/11/27 17:59:59"},"in":1,"out":1},
				{"ti":{"s":"2026/11/27 17:59:00","e":"2026/11/27 17:59:59"},"in":1,"out":1},
				{"ti":{"tz":"Mars/Base","s":"2026/11/27 17:59:00","e":"2026/11/27 17:59:59"},"in":1,"out":1},
				{"ti":{"tz":"UTC","s":"27.11.2026","e":"2026/11/27 17:59:59"},"in":1,"out":1}]`,
			reports: []Report{iv("d", start, end, 1, 1), iv("d", start, end, 1, 1), iv("d", start, end, 1, 1), iv("d", start, end, 1, 1)},
			rejs:    []rej{{ReasonBadReport, 4, "missing ts_zone"}, {ReasonBadTS, 5, "ts_zone: zone"}, {ReasonBadTS, 6, "start: "}}},
		{name: "layout with a fixed zone", kind: ReportCumulative, dpu: "d",
			m:       Mapping{TSFormat: "02.01.2006 15:04:05.000", TimeZone: "America/New_York"},
			payload: `{"ts":"27.11.2026 04:59:59.000","in_total":1,"out_total":1}`,
			reports: []Report{cu("d", end, 1, 1)}},
		{name: "layout carrying its zone", kind: ReportCumulative, dpu: "d",
			m:       Mapping{TSFormat: "2006-01-02 15:04:05 -0700"},
			payload: `{"ts":"2026-11-27 11:59:59 +0200","in_total":1,"out_total":1}`,
			reports: []Report{cu("d", end, 1, 1)}},
		{name: "events with a map", kind: ReportEvents,
			m:       Mapping{Items: "evs", DPU: "$.dev", TS: "when", Direction: "dir", ID: "seq", TSFormat: FormatUnix},
			payload: `{"dev":"e1","evs":[{"when":1795773599,"dir":"-1","seq":9},{"when":1795773599,"dir":2},{"when":1795773599},{"when":1795773599,"dir":1,"seq":1.5}]}`,
			events:  []Event{{DPU: "e1", ID: "9", TS: end, Direction: -1, Received: testNow}},
			rejs:    []rej{{ReasonBadDirection, 1, "direction"}, {ReasonBadReport, 2, "missing direction"}, {ReasonBadID, 3, "id"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDecoder(tc.kind, tc.m)
			if err != nil {
				t.Fatal(err)
			}
			lim := testLimits()
			lim.MaxPayload = 4096
			got := d.Decode(tc.dpu, []byte(tc.payload), lim)
			if !reflect.DeepEqual(got.Events, tc.events) {
				t.Errorf("events:\n got %+v\nwant %+v", got.Events, tc.events)
			}
			if !reflect.DeepEqual(got.Reports, tc.reports) {
				t.Errorf("reports:\n got %+v\nwant %+v", got.Reports, tc.reports)
			}
			if len(got.Rejections) != len(tc.rejs) {
				t.Fatalf("rejections: got %+v, want %+v", got.Rejections, tc.rejs)
			}
			for i, r := range got.Rejections {
				w := tc.rejs[i]
				if r.Reason != w.reason || r.Index != w.index || !strings.Contains(r.Detail, w.detail) {
					t.Errorf("rejection %d: got %s@%d %q, want %s@%d containing %q", i, r.Reason, r.Index, r.Detail, w.reason, w.index, w.detail)
				}
			}
		})
	}
}

func TestMappingValidate(t *testing.T) {
	tests := []struct {
		name string
		kind ReportKind
		m    Mapping
		want []string // "path: part of the message"
	}{
		{name: "defaults", kind: ReportInterval},
		{name: "field of another kind", kind: ReportInterval, m: Mapping{InTotal: "a", TS: "t"},
			want: []string{"ts: not a field of kind interval (it has start, end, in, out)", "in_total: not a field of kind interval"}},
		{name: "id only for events", kind: ReportCumulative, m: Mapping{ID: "seq"}, want: []string{"id: not a field of kind cumulative"}},
		{name: "bad format", kind: ReportCumulative, m: Mapping{TSFormat: "rfc3339x"}, want: []string{`ts_format: "rfc3339x" is not rfc3339, unix, unix_ms or a Go time layout`}},
		{name: "layout without minutes", kind: ReportCumulative, m: Mapping{TSFormat: "2006-01-02"}, want: []string{"ts_format: "}},
		{name: "zone with rfc3339", kind: ReportCumulative, m: Mapping{TSFormat: FormatRFC3339, TSZone: "tz"}, want: []string{"ts_zone: only a ts_format layout"}},
		{name: "zone with a zoned layout", kind: ReportCumulative, m: Mapping{TSFormat: "2006-01-02T15:04:05Z07:00", TimeZone: "UTC+1"}, want: []string{"time_zone: the ts_format layout"}},
		{name: "both zones", kind: ReportCumulative, m: Mapping{TSFormat: "2006-01-02 15:04", TimeZone: "UTC", TSZone: "tz"}, want: []string{"time_zone: set ts_zone or time_zone, not both"}},
		{name: "bad fixed zone", kind: ReportCumulative, m: Mapping{TSFormat: "2006-01-02 15:04", TimeZone: "Moon/Base"}, want: []string{"time_zone: zone"}},
		{name: "blank path", kind: ReportCumulative, m: Mapping{TS: " t"}, want: []string{"ts: path"}},
		{name: "root items", kind: ReportCumulative, m: Mapping{Items: "$.list"}, want: []string{"items: items is taken from the whole payload"}},
		{name: "empty root path", kind: ReportEvents, m: Mapping{DPU: "$."}, want: []string{"dpu: path"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.m.Validate(tc.kind)
			if len(ps) != len(tc.want) {
				t.Fatalf("problems: got %v, want %v", ps, tc.want)
			}
			for i, p := range ps {
				if !strings.HasPrefix(p.String(), tc.want[i]) {
					t.Errorf("problem %d: got %q, want it to begin %q", i, p.String(), tc.want[i])
				}
			}
			_, err := NewDecoder(tc.kind, tc.m)
			if (err != nil) != (len(tc.want) > 0) {
				t.Errorf("NewDecoder: got error %v, want one: %v", err, len(tc.want) > 0)
			}
		})
	}
}

func TestParseZone(t *testing.T) {
	const bad = 1 << 30
	for _, tc := range []struct {
		in  string
		off int // seconds; bad = error
	}{
		{"Z", 0}, {"utc", 0}, {"GMT", 0}, {"+08:00", 8 * 3600}, {"-0530", -(5*3600 + 1800)}, {"UTC+8:00", 8 * 3600},
		{"GMT-3", -3 * 3600}, {"+8", 8 * 3600}, {"+14", 14 * 3600}, {"+15", bad}, {"+08:5", bad}, {"+0860", bad}, {"UTC+", bad},
		{"8", bad}, {"", bad}, {"Nowhere/City", bad}, {"Asia/Kathmandu", 5*3600 + 2700},
	} {
		l, err := parseZone(tc.in)
		if tc.off == bad {
			if err == nil {
				t.Errorf("parseZone(%q): got %v, want an error", tc.in, l)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseZone(%q): %v", tc.in, err)
			continue
		}
		if _, off := time.UnixMilli(testNow).In(l).Zone(); off != tc.off {
			t.Errorf("parseZone(%q): offset %d, want %d", tc.in, off, tc.off)
		}
	}
}

func TestReportRules(t *testing.T) {
	c := func(in, out int64) Report { return Report{Kind: ReportCumulative, In: in, Out: out} }
	if in, out := CumulativeDelta(c(10, 5), c(12, 5)); in != 2 || out != 0 {
		t.Errorf("delta: got %d %d, want 2 0", in, out)
	}
	if in, out := CumulativeDelta(c(10, 5), c(3, 7)); in != 3 || out != 2 {
		t.Errorf("delta over a reset of in: got %d %d, want 3 2", in, out)
	}
	if !CounterReset(c(10, 5), c(10, 4)) || CounterReset(c(10, 5), c(10, 5)) {
		t.Error("CounterReset: a drop of out is a reset, equal totals are not")
	}
	a := Report{Kind: ReportInterval, Start: 10, TS: 20}
	for _, tc := range []struct {
		s, e int64
		want bool
	}{{0, 10, false}, {0, 11, true}, {19, 30, true}, {20, 30, false}, {12, 13, true}, {0, 40, true}} {
		b := Report{Kind: ReportInterval, Start: tc.s, TS: tc.e}
		if a.Overlaps(b) != tc.want || b.Overlaps(a) != tc.want {
			t.Errorf("[10,20) and [%d,%d): overlap %v, want %v", tc.s, tc.e, a.Overlaps(b), tc.want)
		}
	}
	if ReportKind(7).String() != "kind-7" {
		t.Error("unknown kind name")
	}
	for _, s := range []string{"", "events", "interval", "cumulative"} {
		k, err := ParseReportKind(s)
		if err != nil || (s != "" && k.String() != s) {
			t.Errorf("ParseReportKind(%q): %v %v", s, k, err)
		}
	}
	if _, err := ParseReportKind("counts"); err == nil {
		t.Error("ParseReportKind(counts): want an error")
	}
}

// FuzzDecoder: any payload decodes without panicking, into items and rejections
// whose positions do not collide, for every kind.
func FuzzDecoder(f *testing.F) {
	f.Add(`{"start":1795773540000,"end":1795773599000,"in":3,"out":0}`, uint8(1))
	f.Add(`[{"ts":"2026-11-27T09:59:59Z","in_total":1,"out_total":2},{"ts":1}]`, uint8(2))
	f.Add(`{"rows":[{"t":"2026/11/27 17:59:00","tz":"+8"}]}`, uint8(3))
	decs := []*Decoder{}
	for _, k := range []ReportKind{ReportInterval, ReportCumulative} {
		d, _ := NewDecoder(k, Mapping{})
		decs = append(decs, d)
	}
	d, _ := NewDecoder(ReportCumulative, Mapping{Items: "rows", DPU: "$.dev", TS: "t", TSFormat: "2006/01/02 15:04:05", TSZone: "tz"})
	decs = append(decs, d)
	d, _ = NewDecoder(ReportEvents, Mapping{TS: "t"})
	decs = append(decs, d)
	// The vendors' example maps (which 4 on), so their real payloads in the seed
	// corpus are mutated through the maps they are written for.
	for _, v := range vendorMaps {
		d, err := NewDecoder(v.kind, v.m)
		if err != nil {
			f.Fatal(err)
		}
		decs = append(decs, d)
	}
	f.Fuzz(func(t *testing.T, payload string, which uint8) {
		d := decs[int(which)%len(decs)]
		got := d.Decode("d", []byte(payload), testLimits())
		seen := map[int]bool{}
		for _, r := range got.Rejections {
			if seen[r.Index] || r.Detail == "" {
				t.Fatalf("rejections %+v: repeated index or empty detail", got.Rejections)
			}
			seen[r.Index] = true
		}
		for _, r := range got.Reports {
			if err := r.Validate(); err != nil {
				t.Fatalf("decoded report %+v does not validate: %v", r, err)
			}
		}
		for _, ev := range got.Events {
			if !utf8.ValidString(ev.ID) || len(ev.ID) > MaxIDLen {
				t.Fatalf("event id %q: want at most %d bytes of valid UTF-8 (else bad_id)", ev.ID, MaxIDLen)
			}
		}
	})
}
