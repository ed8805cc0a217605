package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// crossingAt is one crossing of the report model, with the gateway's order at its
// instant: events first (by DPU, id), then reports (by DPU; an interval report before
// a cumulative one), within a report the ins before the outs.
type crossingAt struct {
	ts       int64
	cls      int // 0 event, 1 interval, 2 cumulative
	dpu, id  string
	sub, seq int
	ev       sentEvent
}

// reportModel replays events and the crossings interval and cumulative reports stand
// for (DESIGN 2a) through model: an interval's at its end; a cumulative report's
// differences to the one before it in ts order at its ts (a counter lower than
// before counts from 0), the first counting nothing.
func (m *model) replayKinds(evs []sentEvent, reps []occupancy.Report) {
	var cs []crossingAt
	for _, e := range evs {
		cs = append(cs, crossingAt{ts: e.ts, dpu: e.dpu, id: e.id, ev: e})
	}
	add := func(cls int, dpu string, ts, in, out int64) {
		for i := int64(0); i < in+out; i++ {
			dir, sub := 1, 0
			if i >= in {
				dir, sub = -1, 1
			}
			cs = append(cs, crossingAt{ts: ts, cls: cls, dpu: dpu, sub: sub, seq: int(i), ev: sentEvent{dpu: dpu, ts: ts, dir: dir}})
		}
	}
	cum := map[string][]occupancy.Report{}
	for _, r := range reps {
		if r.Kind == occupancy.ReportInterval {
			add(1, r.DPU, r.TS, r.In, r.Out)
		} else {
			cum[r.DPU] = append(cum[r.DPU], r)
		}
	}
	for dpu, rs := range cum {
		sort.Slice(rs, func(i, j int) bool { return rs[i].TS < rs[j].TS })
		for i := 1; i < len(rs); i++ {
			d := func(prev, next int64) int64 {
				if next < prev {
					return next
				}
				return next - prev
			}
			add(2, dpu, rs[i].TS, d(rs[i-1].In, rs[i].In), d(rs[i-1].Out, rs[i].Out))
		}
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		switch {
		case a.ts != b.ts:
			return a.ts < b.ts
		case a.cls != b.cls && (a.cls == 0 || b.cls == 0):
			return a.cls < b.cls
		case a.dpu != b.dpu:
			return a.dpu < b.dpu
		case a.cls != b.cls:
			return a.cls < b.cls
		case a.id != b.id:
			return a.id < b.id
		case a.sub != b.sub:
			return a.sub < b.sub
		}
		return a.seq < b.seq
	})
	for _, c := range cs {
		m.apply(c.ev)
	}
}

// TestSimKindsMatchModel: every DPU reports in its kind and map — its own (dpusim
// topology --kinds), or the one run --kinds draws (on the kind's topic, in that
// entry's map) — and over HTTP in its own kind and map. Every message decodes with
// the gateway's decoder of that kind and map (a malformed one does not); a re-sent
// report is the same report; no two intervals of a DPU overlap; and replaying the
// distinct events and the crossings the reports stand for through the independent
// model, in the gateway's order, never clamps and gives the simulator's truth.
func TestSimKindsMatchModel(t *testing.T) {
	spec, err := ParseKindSpec("events=0.4,interval=0.3,cumulative=0.3")
	if err != nil {
		t.Fatal(err)
	}
	own := DefaultTopoOptions()
	own.Sites, own.DPUsPerSite, own.Seed, own.Kinds = 6, 17, 3, spec
	ownCfg, _ := genConfig(t, own)
	plain := own
	plain.Kinds = KindSpec{}
	plainCfg, _ := genConfig(t, plain)
	n := 40000
	if testing.Short() || raceEnabled {
		n = 15000
	}
	for _, tc := range []struct {
		name string
		cfg  *simConfig
		opt  SimOptions
		rate float64
	}{
		{"own kinds", ownCfg, SimOptions{Seed: 1, ReportPeriod: 5 * time.Second, CounterResets: 0.1}, 500},
		{"own kinds, everything", ownCfg, SimOptions{Seed: 2, Reorder: 0.3, MaxDelay: 3 * time.Second, Duplicates: 0.1, Late: 0.05, Bad: 0.05,
			SettleAfter: 10 * time.Second, ReportPeriod: 2 * time.Second, CounterResets: 0.2, HTTPPush: 0.3}, 2000},
		{"run --kinds", plainCfg, SimOptions{Seed: 3, Kinds: spec, Reorder: 0.1, MaxDelay: time.Second, Duplicates: 0.05, Late: 0.02,
			SettleAfter: time.Minute, ReportPeriod: 4 * time.Second, CounterResets: 0.1, HTTPPush: 0.2}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.Entries = tc.cfg.entries
			s, err := NewSim(tc.cfg.Topology, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixMilli()
			var msgs []Msg
			var last int64
			for i := 0; i < n; i++ {
				last = start + int64(float64(i)*1000/tc.rate)
				msgs = append(msgs, s.Next(last)...)
			}
			msgs = append(msgs, s.Finish(last)...)
			truth := s.Truth()

			dpus := map[string]occupancy.DPUConfig{}
			for _, d := range tc.cfg.Topology.DPUs {
				dpus[d.ID] = d
			}
			lim := occupancy.Limits{Now: last + 1, MaxFutureSkew: math.MaxInt32}
			decoders := map[string]*occupancy.Decoder{}
			decoder := func(k occupancy.ReportKind, m *occupancy.Mapping) *occupancy.Decoder {
				var mm occupancy.Mapping
				if m != nil {
					mm = *m
				}
				key := fmt.Sprintf("%d %+v", k, mm)
				if d := decoders[key]; d != nil {
					return d
				}
				d, err := occupancy.NewDecoder(k, mm)
				if err != nil {
					t.Fatal(err)
				}
				decoders[key] = d
				return d
			}
			seenEv := map[[3]string]bool{}
			seenRep := map[string]occupancy.Report{}
			var evs []sentEvent
			var reps []occupancy.Report
			kinds := map[occupancy.ReportKind]int{}
			var pushed, bad int
			for _, msg := range msgs {
				d := dpus[msg.DPUID]
				var eventsTopic string
				if tc.opt.SiteTopics {
					t.Fatal("not covered")
				}
				eventsTopic = "dpu/" + d.ID + "/events"
				plan, err := planDPU(d, eventsTopic, tc.cfg.entries, tc.opt.Kinds, tc.opt.Seed)
				if err != nil {
					t.Fatal(err)
				}
				var dec *occupancy.Decoder
				if msg.HTTP {
					pushed++
					if !plan.push {
						t.Fatalf("DPU %s pushes over HTTP, but the gateway would decode it as %q", d.ID, d.Kind)
					}
					k, _ := occupancy.ParseReportKind(d.Kind)
					dec = decoder(k, d.Map)
				} else {
					if msg.Topic != plan.topic || entryFor(tc.cfg.entries, msg.Topic) == nil {
						t.Fatalf("DPU %s published on %q, want %q, a topic the config subscribes", d.ID, msg.Topic, plan.topic)
					}
					dec = decoder(plan.kind, plan.m)
				}
				got := dec.Decode(d.ID, msg.Payload, lim)
				if msg.Kind == KindBad {
					bad++
					if len(got.Events)+len(got.Reports) > 0 {
						t.Fatalf("bad message %s decodes", msg.Payload)
					}
					continue
				}
				if len(got.Rejections) > 0 || len(got.Events)+len(got.Reports) != 1 {
					t.Fatalf("message %s of DPU %s (%s, http %v): got %+v, want one event or report", msg.Payload, d.ID, plan.kind, msg.HTTP, got)
				}
				kinds[dec.Kind()]++
				if len(got.Events) == 1 {
					e := got.Events[0]
					se := sentEvent{dpu: e.DPU, id: e.ID, ts: e.TS, dir: int(e.Direction)}
					key := [3]string{e.DPU, e.ID, fmt.Sprint(e.TS)}
					if !seenEv[key] {
						seenEv[key] = true
						evs = append(evs, se)
					}
					continue
				}
				r := got.Reports[0]
				r.Received = 0
				if *msg.Report != r {
					t.Fatalf("payload %s decodes to %+v, the simulator sent %+v", msg.Payload, r, *msg.Report)
				}
				key := fmt.Sprintf("%s %d %d %d", r.DPU, r.Kind, r.Start, r.TS)
				if r.Kind == occupancy.ReportCumulative {
					key = fmt.Sprintf("%s %d %d", r.DPU, r.Kind, r.TS)
				}
				if prev, ok := seenRep[key]; ok {
					if prev != r {
						t.Fatalf("two reports of one identity: %+v and %+v", prev, r)
					}
					continue
				}
				seenRep[key] = r
				reps = append(reps, r)
			}
			// No two different intervals of a DPU overlap (the gateway would refuse one).
			byDPU := map[string][]occupancy.Report{}
			for _, r := range reps {
				if r.Kind == occupancy.ReportInterval {
					byDPU[r.DPU] = append(byDPU[r.DPU], r)
				}
			}
			for dpu, rs := range byDPU {
				sort.Slice(rs, func(i, j int) bool { return rs[i].Start < rs[j].Start })
				for i := 1; i < len(rs); i++ {
					if rs[i].Start < rs[i-1].TS {
						t.Fatalf("DPU %s: intervals [%d, %d) and [%d, %d) overlap", dpu, rs[i-1].Start, rs[i-1].TS, rs[i].Start, rs[i].TS)
					}
				}
			}
			m := newModel(tc.cfg.Topology)
			m.replayKinds(evs, reps)
			if m.clamps != 0 {
				t.Errorf("the gateway's timeline clamped %d times: the simulation let someone leave a space the gateway counts empty", m.clamps)
			}
			nonzero := 0
			for _, sc := range truth {
				if got, want := sc.Occupancy, m.occ[sc.Space]; got != want {
					t.Errorf("space %s: simulator truth %d, model %d", sc.Space, got, want)
				}
				if sc.Occupancy > 0 {
					nonzero++
				}
			}
			st := s.Stats
			t.Logf("%d messages: %d by kind %v, %d pushed, %d bad; %d reports, %d counter resets, %d late", len(msgs), len(evs)+len(reps), kinds, pushed, bad, st.Reports, st.CounterResets, st.Late)
			if nonzero == 0 || kinds[occupancy.ReportInterval] == 0 || kinds[occupancy.ReportCumulative] == 0 || kinds[occupancy.ReportEvents] == 0 {
				t.Errorf("nobody inside, or a kind never reported: the test proves nothing")
			}
			if tc.opt.CounterResets > 0 && st.CounterResets == 0 {
				t.Errorf("no counter reset")
			}
			if (tc.opt.HTTPPush > 0) != (pushed > 0) {
				t.Errorf("%d pushed with --http-push %g", pushed, tc.opt.HTTPPush)
			}
		})
	}
}

// TestPlanDPU: the kind, topic and maps of a DPU, as the gateway chooses them.
func TestPlanDPU(t *testing.T) {
	im := &occupancy.Mapping{Start: "a", End: "b", In: "c", Out: "d"}
	cm := &occupancy.Mapping{TS: "t", InTotal: "i", OutTotal: "o"}
	entries := config.EventsTopics{
		{Filter: "dpu/+/events"},
		{Filter: "dpu/+/interval", Kind: "interval"},
		{Filter: "dpu/+/cumulative", Kind: "cumulative", Map: cm},
		{Filter: "fleet/+/events", Kind: "cumulative", Map: cm},
		{Filter: "payload/#", Kind: "cumulative", Map: &occupancy.Mapping{DPU: "sn"}},
	}
	spec := KindSpec{0, 0, 1} // every DPU without a kind: cumulative
	for _, c := range []struct {
		name  string
		d     occupancy.DPUConfig
		topic string
		spec  KindSpec
		want  string
	}{
		{"events", occupancy.DPUConfig{ID: "x"}, "dpu/x/events", KindSpec{}, "events dpu/x/events <nil> push <nil>"},
		{"own kind", occupancy.DPUConfig{ID: "x", Kind: "interval"}, "dpu/x/events", spec, "interval dpu/x/events <nil> push <nil>"},
		{"own kind and map", occupancy.DPUConfig{ID: "x", Kind: "interval", Map: im}, "dpu/x/events", spec, "interval dpu/x/events a push a"},
		{"--kinds: the kind's topic and its entry's map", occupancy.DPUConfig{ID: "x"}, "dpu/x/events", spec, "cumulative dpu/x/cumulative t no <nil>"},
		{"the entry's kind and map", occupancy.DPUConfig{ID: "x"}, "fleet/x/events", KindSpec{}, "cumulative fleet/x/events t no <nil>"},
		{"own kind, the entry's map of that kind", occupancy.DPUConfig{ID: "x", Kind: "cumulative"}, "fleet/x/events", KindSpec{}, "cumulative fleet/x/events t push <nil>"},
		{"own kind, an entry of another", occupancy.DPUConfig{ID: "x", Kind: "interval"}, "fleet/x/events", KindSpec{}, "interval fleet/x/events <nil> push <nil>"},
		// One fleet entry: the gateway decodes a push of a DPU without a map of its
		// own with the entry's map where the kinds agree.
		{"one entry: own kind, the entry's map", occupancy.DPUConfig{ID: "x", Kind: "cumulative"}, "fleet/x/events", KindSpec{}, "cumulative fleet/x/events t no <nil>"},
		{"one entry: own kind and map", occupancy.DPUConfig{ID: "x", Kind: "cumulative", Map: cm}, "fleet/x/events", KindSpec{}, "cumulative fleet/x/events t push t"},
		{"one entry: own kind, another", occupancy.DPUConfig{ID: "x", Kind: "interval"}, "fleet/x/events", KindSpec{}, "interval fleet/x/events <nil> push <nil>"},
		{"one events entry with a map", occupancy.DPUConfig{ID: "x"}, "ev/x/up", KindSpec{}, "events ev/x/up when no <nil>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			entries := entries
			switch {
			case strings.HasPrefix(c.name, "one entry"):
				entries = config.EventsTopics{{Filter: "fleet/+/events", Kind: "cumulative", Map: cm}}
			case strings.HasPrefix(c.name, "one events entry"):
				entries = config.EventsTopics{{Filter: "ev/+/up", Map: &occupancy.Mapping{TS: "when"}}}
			}
			p, err := planDPU(c.d, c.topic, entries, c.spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			first := func(m *occupancy.Mapping) string {
				if m == nil {
					return "<nil>"
				}
				return m.Start + m.TS
			}
			push := "no"
			if p.push {
				push = "push"
			}
			if got := fmt.Sprintf("%s %s %s %s %s", p.kind, p.topic, first(p.m), push, first(p.httpM)); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
	for _, c := range []struct {
		name, topic string
		entries     config.EventsTopics
		want        string
	}{
		{"--kinds without an entry", "dpu/x/events", config.Topics("dpu/+/events"), "no mqtt.events_topic entry of kind cumulative"},
		{"an entry naming the DPU in the payload", "payload/x/events", entries, "takes the DPU id from the payload"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := planDPU(occupancy.DPUConfig{ID: "x"}, c.topic, c.entries, spec, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestParseKindSpec(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"events=0.6,interval=0.2,cumulative=0.2", "events=0.6,interval=0.2,cumulative=0.2", ""},
		{"interval=1", "interval=1", ""},
		{"events=0.5, cumulative=0.5", "events=0.5,cumulative=0.5", ""},
		{"events=0.5", "", "add up to 0.5"},
		{"counts=1", "", "kind=share"},
		{"events=x", "", "kind=share"},
		{"events", "", "kind=share"},
	} {
		k, err := ParseKindSpec(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: got %v, want an error containing %q", c.in, err, c.err)
		case c.err == "" && (err != nil || k.String() != c.want):
			t.Errorf("%q: got %s, %v; want %s", c.in, k, err, c.want)
		}
	}
	// The shares are kept over many DPU ids.
	k, _ := ParseKindSpec("events=0.6,interval=0.3,cumulative=0.1")
	var n [3]int
	for i := range 20000 {
		n[k.Kind(7, fmt.Sprintf("s%04d-d%02d", i/50, i%50))]++
	}
	for kind, share := range k {
		if got := float64(n[kind]) / 20000; math.Abs(got-share) > 0.02 {
			t.Errorf("%s: share %.3f, want %.1f", occupancy.ReportKind(kind), got, share)
		}
	}
}
