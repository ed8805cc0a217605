package occupancy

import (
	"fmt"
	"math/rand"
	"os"
	"sort"
	"testing"
)

// The property test of issue 17 item 5: random streams of interval and cumulative
// reports (shuffled, duplicated, lost, overlapping, with counter resets), mixed with
// DPUs that send events, in nested topologies with later versions (DPUs unknown at
// first, a DPU dropped), late arrivals and restarts, compared with the reference
// model, which expands every stored report into the single crossings it stands for
// and replays them one step at a time (reference_test.go, refCrossings).

// genReportScenario is genScenario with about a third of the DPUs reporting
// intervals and a third cumulative totals instead of events.
func genReportScenario(rng *rand.Rand, late, moves bool) scenario {
	sc := genScenarioMoves(rng, late, moves)
	kinds := map[string]ReportKind{}
	known := map[string]int64{} // DPU -> when a version first maps it
	for _, d := range sc.topo.DPUs {
		known[d.ID] = sc.t0
	}
	for i, v := range sc.versions {
		known[fmt.Sprintf("u%d", i)] = v.At
	}
	ids := make([]string, 0, len(known))
	for id := range known {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		kinds[id] = ReportKind(rng.Intn(3))
	}
	for k, id := range ids[:min(2, len(ids))] { // at least one report DPU of each kind
		if k == 0 || kinds[ids[0]] == ReportEvents {
			kinds[id] = ReportKind(1 + k)
		}
	}
	stream := sc.stream[:0]
	for _, dl := range sc.stream {
		if kinds[dl.ev.DPU] == ReportEvents {
			stream = append(stream, dl)
		}
	}
	sc.stream = stream
	delay := func() int64 {
		switch r := rng.Intn(10); {
		case r < 6:
			return int64(rng.Intn(2000))
		case r < 9 || !late:
			return rng.Int63n(sc.settle - sc.step - 2000)
		default:
			return sc.settle + sc.step + rng.Int63n(30*minute)
		}
	}
	deliver := func(r Report) {
		at := r.TS + delay()
		r.Received = at
		sc.reports = append(sc.reports, reportDelivery{at: at, rep: r})
		if rng.Intn(8) == 0 { // re-sent
			sc.reports = append(sc.reports, reportDelivery{at: at + int64(rng.Intn(200_000)), rep: r})
		}
	}
	count := func() int64 {
		switch r := rng.Intn(100); {
		case r < 1:
			return int64(100 + rng.Intn(300)) // a busy interval: one entry, not hundreds
		case r < 20:
			return 0
		default:
			return int64(rng.Intn(12))
		}
	}
	for _, id := range ids {
		from := known[id]
		lo := sc.t0
		if from > sc.t0 {
			// Unknown until its version: parked, and applied when it comes.
			lo = from - 2*minute
			if late {
				lo = from - 40*minute
			}
		}
		t := lo + rng.Int63n(10*minute)
		switch kinds[id] {
		case ReportInterval:
			for t < sc.end {
				end := t + 1000*int64(5+rng.Intn(240))
				if rng.Intn(3) == 0 {
					end -= end % 1000 // same-ms collisions with other DPUs
				}
				r := Report{DPU: id, Kind: ReportInterval, Start: t, TS: end, In: count(), Out: count()}
				deliver(r)
				if rng.Intn(20) == 0 { // a different report overlapping it: refused
					deliver(Report{DPU: id, Kind: ReportInterval, Start: t + 1000, TS: end + 7000, In: 5, Out: 5})
				}
				t = end
				if rng.Intn(4) == 0 {
					t += 1000 * int64(rng.Intn(120)) // a gap no report covers
				}
			}
		case ReportCumulative:
			in, out := int64(rng.Intn(5000)), int64(rng.Intn(5000))
			for t < sc.end {
				switch r := rng.Intn(25); {
				case r == 0: // the device restarts: both counters from 0
					in, out = int64(rng.Intn(3)), int64(rng.Intn(3))
				case r == 1: // one counter wraps
					in = int64(rng.Intn(4))
				default:
					in += count()
					out += count()
				}
				r := Report{DPU: id, Kind: ReportCumulative, TS: t, In: in, Out: out}
				if rng.Intn(12) != 0 { // else lost: the next one carries it
					deliver(r)
				}
				t += 1000 * int64(5+rng.Intn(180))
				if rng.Intn(3) == 0 {
					t -= t % 1000
				}
			}
		}
	}
	sort.SliceStable(sc.reports, func(i, j int) bool { return sc.reports[i].at < sc.reports[j].at })
	return sc
}

// TestReportsMatchReference: mixed event and report DPUs delivered in shuffled
// order within the window: current values, the change feed, values at instants and
// buckets (entrances, exits, min, max), pending and settled, equal the reference.
func TestReportsMatchReference(t *testing.T) {
	for run := 0; run < reportRuns(); run++ {
		seed := int64(17_000 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genReportScenario(rng, false, false)
			d := runReportReference(t, rng, sc, true)
			if d.late != 0 {
				t.Fatalf("scenario produced %d late inputs", d.late)
			}
		})
	}
}

// TestReportsLate: reports arriving after the horizon passed them are corrected at
// the horizon: the current values and everything pending equal the reference, and
// the history settled after the last correction too.
func TestReportsLate(t *testing.T) {
	lates := 0
	for run := 0; run < reportRuns(); run++ {
		seed := int64(17_500 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genReportScenario(rng, true, false)
			d := runReportReference(t, rng, sc, false)
			lates += d.late
		})
	}
	if lates == 0 {
		t.Error("no late input in any run")
	}
}

// TestReportsRebuild: an engine reopened from its store at random ticks (reports
// replayed from the horizon, each cumulative DPU's baseline read from the store)
// ends exactly where one that never stopped does, with moves and late reports, and
// both equal the reference.
func TestReportsRebuild(t *testing.T) {
	for run := 0; run < reportRuns(); run++ {
		seed := int64(17_800 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genReportScenario(rng, run%2 == 0, run%3 == 1)
			a, b, reopened := runRebuild(t, rng, sc)
			if reopened == 0 {
				t.Logf("seed %d: never reopened", seed)
			}
			if run%3 != 1 { // the reference does not model moves
				now := sc.end + sc.settle + 2*sc.step
				for _, d := range []*driver{a, b} {
					d.eng.Changed() // the change feed of the run is not what is checked here
					c := newChecker(t, d.eng, false)
					c.noRows = true
					d.lateH = max(a.lateH, b.lateH)
					c.check(d, rng, now, sc.t0)
				}
			}
		})
	}
}

// reportRuns sizes the report property tests: half of testRuns (12; 4 with -short),
// 4 under the race detector unless OCCUPANCY_RUNS is set.
func reportRuns() int {
	if raceEnabled && os.Getenv("OCCUPANCY_RUNS") == "" {
		return 4
	}
	return max(testRuns()/2, 1)
}

// TestReportsRebuildBeforeCommit: an engine reopened right after applying late
// reports, before the commit of their corrections, corrects for them again from
// their late marks and ends where an uninterrupted one does; no mark is left.
func TestReportsRebuildBeforeCommit(t *testing.T) {
	for run := 0; run < reportRuns(); run++ {
		seed := int64(17_900 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			runRebuildBeforeCommit(t, rng, genReportScenario(rng, true, false))
		})
	}
}

// runReportReference drives one engine through sc, checking it against the
// reference every 20 steps and after the end.
func runReportReference(t *testing.T, rng *rand.Rand, sc scenario, exact bool) *driver {
	t.Helper()
	opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: rng.Intn(4) != 0}
	d := newDriver(t, opts, sc.topo, sc.t0)
	c := newChecker(t, d.eng, exact)
	c.noRows = true
	sc.run(rng, []*driver{d}, func(now int64, step int) {
		if step%30 == 0 {
			c.check(d, rng, now, sc.t0)
		}
	})
	c.check(d, rng, sc.end+sc.settle+2*sc.step, sc.t0)
	if len(d.st.reports) == 0 {
		t.Fatal("no report stored")
	}
	return d
}

// TestReportScenarioShape: the generator makes what the properties need (so that
// the tests above cannot pass vacuously): stored reports of both kinds, refused
// overlaps, counter resets, busy intervals, parked reports of DPUs a later version
// brings, and event DPUs beside them.
func TestReportScenarioShape(t *testing.T) {
	var intervals, cumulative, refused, resets, busy, events, parked int
	for run := 0; run < 6; run++ {
		rng := rand.New(rand.NewSource(int64(17_000 + run)))
		sc := genReportScenario(rng, false, false)
		d := newDriver(t, Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: true}, sc.topo, sc.t0)
		most := 0
		sc.run(rng, []*driver{d}, func(now int64, step int) { most = max(most, len(d.st.repParked)) })
		parked += most
		offered := map[repKey]bool{}
		for _, dl := range sc.reports {
			offered[keyOf(dl.rep)] = true
		}
		stored := map[repKey]bool{}
		for _, r := range d.st.reports {
			stored[keyOf(r)] = true
			if r.Kind == ReportInterval {
				intervals++
			} else {
				cumulative++
			}
			if r.Kind == ReportInterval && r.In+r.Out >= 100 {
				busy++
			}
		}
		refused += len(offered) - len(stored)
		byDPU := map[string][]Report{}
		for _, r := range d.st.reports {
			if r.Kind == ReportCumulative {
				byDPU[r.DPU] = append(byDPU[r.DPU], r)
			}
		}
		for _, rs := range byDPU {
			sort.Slice(rs, func(i, j int) bool { return rs[i].TS < rs[j].TS })
			for i := 1; i < len(rs); i++ {
				if CounterReset(rs[i-1], rs[i]) {
					resets++
				}
			}
		}
		events += len(d.st.events)
	}
	t.Logf("intervals %d, cumulative %d, refused %d, resets %d, busy %d, events %d, most parked reports %d",
		intervals, cumulative, refused, resets, busy, events, parked)
	for name, n := range map[string]int{"interval": intervals, "cumulative": cumulative, "refused overlap": refused,
		"counter reset": resets, "busy report": busy, "event": events, "parked report": parked} {
		if n == 0 {
			t.Errorf("no %s in 6 scenarios", name)
		}
	}
}
