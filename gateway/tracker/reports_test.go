package tracker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/occupancy"
)

// reportTopology: each DPU changes a space of its own under hq, so that the
// crossings a report stands for never take a space below zero whenever the report
// counts them (no clamping; the model is a plain sum).
var reportTopology = occupancy.TopologyConfig{
	Spaces: []occupancy.SpaceConfig{
		{ID: "hq", Name: "HQ"}, {ID: "a", Name: "A", Parent: "hq"}, {ID: "b", Name: "B", Parent: "hq"}, {ID: "c", Name: "C", Parent: "hq"},
	},
	Doorways: []occupancy.DoorwayConfig{{ID: "da", Name: "A"}, {ID: "db", Name: "B"}, {ID: "dc", Name: "C"}},
	DPUs: []occupancy.DPUConfig{
		{ID: "d1", Doorway: "da", PlusSpace: "a"},
		{ID: "i1", Doorway: "db", PlusSpace: "b", Kind: "interval"},
		{ID: "c1", Doorway: "dc", PlusSpace: "c", Kind: "cumulative"},
	},
}

// crossing is what the model counts: n people into a space (n < 0: out of it) at ts.
type crossing struct {
	space string
	ts, n int64
}

// reportModel is every space's occupancy after the crossings with ts <= at; hq holds
// a, b and c.
func reportModel(cs []crossing, at int64) map[string]int64 {
	m := map[string]int64{"hq": 0, "a": 0, "b": 0, "c": 0}
	for _, c := range cs {
		if c.ts <= at {
			m[c.space] += c.n
			m["hq"] += c.n
		}
	}
	return m
}

// reportTraffic is a stream of the three kinds from t0 on: events of d1 one by one,
// interval reports of i1 for consecutive 10 s periods, and cumulative totals of c1
// every 10 s whose counters restart from 0 once (a reboot right after a report, so
// nothing is lost). It returns the inputs and the crossings they stand for, each
// counted at the instant the contract says (an event at its ts, an interval at its
// end, a cumulative report's difference at its ts).
func reportTraffic(rng *rand.Rand, periods int) ([]occupancy.Event, []occupancy.Report, []crossing) {
	var evs []occupancy.Event
	var reps []occupancy.Report
	var cs []crossing
	var inA, inB, inC int64                                   // people in each space
	totIn, totOut := 500+rng.Int64N(100), 400+rng.Int64N(100) // c1's counters, since its origin
	reboot := periods / 2
	for p := 0; p < periods; p++ {
		start := t0 + int64(p)*10_000
		end := start + 10_000
		// d1: a few events inside the period.
		for k := 0; k < rng.IntN(4); k++ {
			dir := int8(1)
			if inA > 0 && rng.IntN(2) == 0 {
				dir = -1
			}
			inA += int64(dir)
			ts := start + int64(k)*2_000 + rng.Int64N(1_000)
			evs = append(evs, occupancy.Event{DPU: "d1", ID: fmt.Sprint(len(evs) + 1), TS: ts, Direction: dir, Received: ts})
			cs = append(cs, crossing{"a", ts, int64(dir)})
		}
		// i1: n in, then at most as many out as are inside.
		in := rng.Int64N(5)
		out := rng.Int64N(inB + in + 1)
		inB += in - out
		reps = append(reps, occupancy.Report{DPU: "i1", Kind: occupancy.ReportInterval, Start: start, TS: end, In: in, Out: out, Received: end})
		cs = append(cs, crossing{"b", end, in}, crossing{"b", end, -out})
		// c1: totals at end - 1 s.
		if p == reboot {
			totIn, totOut = 0, 0
		}
		in, out = 0, 0
		if p > 0 { // the first report is the baseline: what led to it counts nothing
			in = rng.Int64N(5)
			out = rng.Int64N(inC + in + 1)
		}
		inC += in - out
		totIn, totOut = totIn+in, totOut+out
		ts := end - 1_000
		reps = append(reps, occupancy.Report{DPU: "c1", Kind: occupancy.ReportCumulative, TS: ts, In: totIn, Out: totOut, Received: ts})
		cs = append(cs, crossing{"c", ts, in}, crossing{"c", ts, -out})
	}
	return evs, reps, cs
}

// TestIngestReportsMatchesModel: events and interval and cumulative reports arrive
// shuffled and re-sent, mixed in batches from concurrent callers (one group commit
// each); every report is accepted once and its re-sends are duplicates, a report
// overlapping a stored interval is rejected (overlap), the counter reset is counted,
// and occupancy now and at past instants — pending, then settled — is the model's.
func TestIngestReportsMatchesModel(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 17))
			e := newEnv(t)
			m := metrics.New()
			tr := e.open(func(o *Options) {
				topo := reportTopology
				o.Topology, o.Metrics = &topo, m
				o.StatsStore = o.Store.(StatsStore)
			})
			evs, reps, cs := reportTraffic(rng, 24) // 4 minutes, inside the hold
			type input struct {
				ev  *occupancy.Event
				rep *occupancy.Report
			}
			var sends []input
			for i := range evs {
				sends = append(sends, input{ev: &evs[i]})
			}
			for i := range reps {
				sends = append(sends, input{rep: &reps[i]})
				if rng.IntN(4) == 0 {
					sends = append(sends, input{rep: &reps[i]})
				}
			}
			rng.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })
			e.clock.Store(t0 + settle - 1)

			var mu sync.Mutex
			outcomes := map[string][]Outcome{}
			key := func(r occupancy.Report) string { return fmt.Sprintf("%s/%d/%d", r.DPU, r.Start, r.TS) }
			work := make(chan []input)
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for b := range work {
						var bevs []occupancy.Event
						var breps []occupancy.Report
						for _, in := range b {
							if in.ev != nil {
								bevs = append(bevs, *in.ev)
							} else {
								breps = append(breps, *in.rep)
							}
						}
						er, rr, err := tr.IngestMixed(context.Background(), bevs, breps)
						if err != nil {
							t.Error(err)
							return
						}
						if len(er) != len(bevs) || len(rr) != len(breps) {
							t.Errorf("got %d and %d results for %d events and %d reports", len(er), len(rr), len(bevs), len(breps))
							return
						}
						mu.Lock()
						for i, r := range er {
							if r.Outcome != Accepted {
								t.Errorf("event %+v: outcome %v", bevs[i], r.Outcome)
							}
						}
						for i, r := range rr {
							outcomes[key(breps[i])] = append(outcomes[key(breps[i])], r.Outcome)
						}
						mu.Unlock()
					}
				}()
			}
			for i := 0; i < len(sends); {
				n := 1 + rng.IntN(12)
				work <- sends[i:min(i+n, len(sends))]
				i += n
			}
			close(work)
			wg.Wait()

			for _, r := range reps {
				got := outcomes[key(r)]
				if acc, all := countOutcome(got, Accepted), len(got); acc != 1 || countOutcome(got, Duplicate) != all-1 {
					t.Errorf("report %s: outcomes %v, want accepted once, the re-sends duplicates", key(r), got)
				}
			}
			if got := testutil.ToFloat64(m.CounterResets); got != 1 {
				t.Errorf("occupancyd_counter_resets_total = %v, want 1", got)
			}
			// Per DPU (GET /v1/dpus): the accepted events and reports and the re-sent
			// reports, every DPU that sent anything reporting (last_received), and the
			// counter reset its cumulative DPU's.
			type counts struct{ accepted, dups int64 }
			model := map[string]*counts{}
			at := func(dpu string) *counts {
				if model[dpu] == nil {
					model[dpu] = &counts{}
				}
				return model[dpu]
			}
			for _, ev := range evs {
				at(ev.DPU).accepted++
			}
			for _, r := range reps {
				got := outcomes[key(r)]
				at(r.DPU).accepted += int64(countOutcome(got, Accepted))
				at(r.DPU).dups += int64(countOutcome(got, Duplicate))
			}
			resets := func() (total, sinceStart int64, cumulative bool) {
				for _, st := range tr.DPUs() {
					total += st.CounterResets
					sinceStart += st.SinceStart.CounterResets
					if st.CounterResets > 0 {
						cumulative = strings.HasPrefix(st.DPU, "c")
					}
				}
				return total, sinceStart, cumulative
			}
			for _, st := range tr.DPUs() {
				c := model[st.DPU]
				if c == nil {
					continue
				}
				if st.Accepted != c.accepted || st.Duplicates != c.dups || st.LastReceived == "" {
					t.Errorf("DPU %s: accepted %d, duplicates %d, last_received %q; want %d, %d and a time",
						st.DPU, st.Accepted, st.Duplicates, st.LastReceived, c.accepted, c.dups)
				}
			}
			if total, since, cum := resets(); total != 1 || since != 1 || !cum {
				t.Errorf("counter_resets: %d in all, %d since start, on a cumulative DPU %v; want the one reset of a cumulative DPU", total, since, cum)
			}
			// A different interval overlapping a stored one is rejected.
			ov := reps[4]
			ov.Start, ov.TS = ov.Start+5_000, ov.TS+5_000
			_, rr, err := tr.IngestMixed(context.Background(), nil, []occupancy.Report{ov})
			if err != nil || rr[0].Outcome != Rejected || rr[0].Rejection.Reason != occupancy.ReasonOverlap {
				t.Errorf("overlapping report: got %+v, %v; want rejected overlap", rr, err)
			}

			check := func(when string) {
				t.Helper()
				for id, w := range reportModel(cs, 1<<62) {
					if got := occ(tr, id); got != w {
						t.Errorf("%s: %s = %d, want %d", when, id, got, w)
					}
				}
				for i := 0; i < 25; i++ {
					at := cs[rng.IntN(len(cs))].ts - int64(rng.IntN(2))
					for id, w := range reportModel(cs, at) {
						if got, err := tr.At(id, at); err != nil || got != w {
							t.Errorf("%s: %s at %d = %d, %v; want %d", when, id, at, got, err, w)
						}
					}
				}
			}
			check("pending")
			e.clock.Store(reps[len(reps)-1].TS + 3*settle)
			e.tick()
			check("settled")

			// Late (ts before the horizon): stored, corrected at the horizon.
			h := tr.Horizon()
			late := occupancy.Report{DPU: "i1", Kind: occupancy.ReportInterval, Start: t0 - 20_000, TS: t0 - 10_000, In: 3, Out: 1, Received: e.clock.Load()}
			_, rr, err = tr.IngestMixed(context.Background(), nil, []occupancy.Report{late})
			if err != nil || rr[0].Outcome != Accepted || late.TS >= h {
				t.Fatalf("late report: got %+v, %v (horizon %d)", rr, err, h)
			}
			cs = append(cs, crossing{"b", h, 2}) // the correction at the horizon
			check("after a late report")
			e.tick()
			e.st.Close()
			tr = e.open(func(o *Options) {
				topo := reportTopology
				o.Topology = &topo
				o.StatsStore = o.Store.(StatsStore)
			})
			check("rebuilt from the store")
			// The store counted the reset with its report: kept across the restart
			// (after a crash too: nothing saved the statistics before the close).
			if total, since, _ := resets(); total != 1 || since != 0 {
				t.Errorf("after the restart counter_resets: %d in all, %d since start; want 1 and 0", total, since)
			}
		})
	}
}

func countOutcome(os []Outcome, o Outcome) int {
	n := 0
	for _, x := range os {
		if x == o {
			n++
		}
	}
	return n
}

// TestReportsParkedLateDrop: reports of a DPU no version knows are parked and count
// once a version adds it (its first mapping covers earlier time); under late_events
// drop a report before the horizon is rejected as late and not stored; past
// storage.max_parked parked inputs, one more is rejected as unknown_dpu.
func TestReportsParkedLateDrop(t *testing.T) {
	t.Run("parked, then mapped", func(t *testing.T) {
		e := newEnv(t)
		tr := e.open(func(o *Options) {
			topo := reportTopology
			o.Topology = &topo
		})
		e.clock.Store(t0 + 60_000)
		reps := []occupancy.Report{
			{DPU: "c9", Kind: occupancy.ReportCumulative, TS: t0 + 10_000, In: 100, Out: 90},
			{DPU: "c9", Kind: occupancy.ReportCumulative, TS: t0 + 30_000, In: 107, Out: 91},
			{DPU: "c9", Kind: occupancy.ReportCumulative, TS: t0 + 20_000, In: 104, Out: 90},
		}
		_, rr, err := tr.IngestMixed(context.Background(), nil, reps)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rr {
			if r.Outcome != Parked {
				t.Errorf("report %d: got %v, want parked", i, r.Outcome)
			}
		}
		next := reportTopology
		next.DPUs = append(slices.Clone(next.DPUs), occupancy.DPUConfig{ID: "c9", Doorway: "dc", PlusSpace: "c", Kind: "cumulative"})
		if _, added, err := tr.AddVersion(next); err != nil || !added {
			t.Fatalf("AddVersion: %v, %v", added, err)
		}
		if got := occ(tr, "c"); got != 6 {
			t.Errorf("c = %d after c9 is configured, want 6 (7 in, 1 out after the baseline)", got)
		}
		if v, err := tr.At("c", t0+20_000); err != nil || v != 4 {
			t.Errorf("c at the second report = %d, %v; want 4", v, err)
		}
	})
	t.Run("late under drop, and max_parked", func(t *testing.T) {
		e := newEnv(t)
		tr := e.open(func(o *Options) {
			topo := reportTopology
			o.Topology, o.Engine.LateEvents, o.MaxParked = &topo, occupancy.LateDrop, 1
		})
		h := tr.Horizon()
		_, rr, err := tr.IngestMixed(context.Background(), nil, []occupancy.Report{
			{DPU: "i1", Kind: occupancy.ReportInterval, Start: h - 10_000, TS: h - 1, In: 1},
			{DPU: "i1", Kind: occupancy.ReportInterval, Start: h, TS: h + 10_000, In: 1},
			{DPU: "x1", Kind: occupancy.ReportInterval, Start: h, TS: h + 10_000, In: 1},
			{DPU: "x2", Kind: occupancy.ReportInterval, Start: h, TS: h + 10_000, In: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		got := []Outcome{rr[0].Outcome, rr[1].Outcome, rr[2].Outcome, rr[3].Outcome}
		if !slices.Equal(got, []Outcome{Rejected, Accepted, Parked, Rejected}) ||
			rr[0].Rejection.Reason != occupancy.ReasonLate || rr[3].Rejection.Reason != occupancy.ReasonUnknownDPU {
			t.Errorf("outcomes: got %v (%+v, %+v), want rejected late, accepted, parked, rejected unknown_dpu", got, rr[0].Rejection, rr[3].Rejection)
		}
		n := 0
		if err := e.st.Reports(-1<<62, 1<<62, func(occupancy.Report) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("stored reports: got %d, want 2 (the late one is not stored)", n)
		}
	})
}
