package tracker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// persisted opens the tracker with its statistics kept in the store.
func persisted(mod func(*Options)) func(*Options) {
	return func(o *Options) {
		o.StatsStore = o.Store.(*buffer.Store)
		if mod != nil {
			mod(o)
		}
	}
}

func (e *env) ingest(evs ...occupancy.Event) []Result {
	e.t.Helper()
	res, err := e.tr.Ingest(context.Background(), evs)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// close ends a run: with clean, as the daemon stops (statistics saved and marked
// complete); without, as a kill -9 after the last periodic save.
func (e *env) close(clean bool) {
	e.t.Helper()
	if clean {
		if err := e.tr.SaveStats(true); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
}

func dpuRow(t *testing.T, tr *Tracker, dpu string) DPUStat {
	t.Helper()
	st, ok := findRow(tr, dpu)
	if !ok {
		t.Fatalf("no row for DPU %q", dpu)
	}
	return st
}

// findRow returns dpu's row of GET /v1/dpus (a DPU in no topology has one once
// anything of it was counted).
func findRow(tr *Tracker, dpu string) (DPUStat, bool) {
	for _, st := range tr.DPUs() {
		if st.DPU == dpu {
			return st, true
		}
	}
	return DPUStat{DPU: dpu}, false
}

func seqEvents(dpu string, from, to int, ts int64) []occupancy.Event {
	var evs []occupancy.Event
	for i := from; i <= to; i++ {
		evs = append(evs, occupancy.Event{DPU: dpu, ID: fmt.Sprint(i), TS: ts + int64(i)*1000, Direction: 1, Received: ts + int64(i)*1000})
	}
	return evs
}

// TestStatsTotalsAcrossRestarts runs the tracker over one Badger store through
// clean stops and crashes (no save after the last periodic one), with random
// traffic of accepted, duplicate, parked and rejected events, and checks the
// totals and the since-start figures against counts kept here.
func TestStatsTotalsAcrossRestarts(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 4))
	e := newEnv(t)
	type counts struct{ accepted, dups, rejected, parked int64 }
	total := map[string]*counts{}
	saved := map[string]counts{}       // as of the last save
	dpus := []string{"d1", "d2", "dx"} // dx is in no topology version: its events are parked
	for _, d := range dpus {
		total[d] = &counts{}
	}
	var stored []occupancy.Event
	for run := range 6 {
		tr := e.open(persisted(nil))
		since := map[string]*counts{}
		for _, d := range dpus {
			since[d] = &counts{}
			// After a crash, the counts since the last save are lost.
			*total[d] = saved[d]
			row, _ := findRow(tr, d)
			c := saved[d]
			if row.Accepted != c.accepted || row.Duplicates != c.dups || row.Rejected != c.rejected || row.Parked != c.parked {
				t.Fatalf("run %d, DPU %s at start: got accepted %d, duplicates %d, rejected %d, parked %d; want %+v",
					run, d, row.Accepted, row.Duplicates, row.Rejected, row.Parked, c)
			}
			if row.SinceStart != (DPUCounts{}) {
				t.Fatalf("run %d, DPU %s at start: since_start %+v, want zeros", run, d, row.SinceStart)
			}
		}
		for range 20 {
			e.clock.Add(1000 + rng.Int64N(5000))
			var batch []occupancy.Event
			for range 1 + rng.IntN(10) {
				d := dpus[rng.IntN(len(dpus))]
				if len(stored) > 0 && rng.IntN(4) == 0 {
					batch = append(batch, stored[rng.IntN(len(stored))]) // redelivered
					continue
				}
				ts := e.clock.Load() - rng.Int64N(60_000)
				batch = append(batch, occupancy.Event{DPU: d, ID: fmt.Sprintf("r%d-%d", run, rng.Int64()), TS: ts,
					Direction: 1, Received: e.clock.Load()})
			}
			for i, r := range e.ingest(batch...) {
				ev := batch[i]
				c, s := total[ev.DPU], since[ev.DPU]
				switch r.Outcome {
				case Accepted, Parked:
					c.accepted++
					s.accepted++
					stored = append(stored, ev)
					if r.Outcome == Parked {
						c.parked++
						s.parked++
					}
				case Duplicate:
					c.dups++
					s.dups++
				default:
					t.Fatalf("event %+v: outcome %v", ev, r.Outcome)
				}
			}
			if rng.IntN(3) == 0 {
				d := dpus[rng.IntN(len(dpus))]
				tr.CountRejected(d)
				total[d].rejected++
				since[d].rejected++
			}
			if rng.IntN(6) == 0 { // the periodic save
				if err := tr.SaveStats(false); err != nil {
					t.Fatal(err)
				}
				for _, d := range dpus {
					saved[d] = *total[d]
				}
			}
		}
		for _, d := range dpus {
			row, _ := findRow(tr, d)
			c, s := total[d], since[d]
			got := counts{row.Accepted, row.Duplicates, row.Rejected, row.Parked}
			gotSince := counts{row.SinceStart.Accepted, row.SinceStart.Duplicates, row.SinceStart.Rejected, row.SinceStart.Parked}
			if got != *c || gotSince != *s {
				t.Fatalf("run %d, DPU %s: got totals %+v since start %+v; want %+v and %+v", run, d, got, gotSince, *c, *s)
			}
		}
		clean := rng.IntN(2) == 0
		if clean {
			for _, d := range dpus {
				saved[d] = *total[d]
			}
		}
		t.Logf("run %d: %d events stored, clean stop %v", run, len(stored), clean)
		e.close(clean)
	}
}

// TestStatsSequenceAcrossRestarts: after a clean stop, a DPU's sequence continues
// (a gap across the restart counts, ids that go on are no restart); after a crash
// it starts afresh, so ids acknowledged after the last save are no false gap.
func TestStatsSequenceAcrossRestarts(t *testing.T) {
	for _, c := range []struct {
		name            string
		clean           bool
		gaps, restarts  int64
		sinceGaps       int64
		acceptedAtStart int64
	}{
		{"clean stop", true, 4, 0, 4, 20},
		{"crash", false, 0, 0, 0, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.open(persisted(nil))
			ts := e.clock.Load() - 50_000
			e.ingest(seqEvents("d1", 1, 10, ts)...)
			if err := e.tr.SaveStats(false); err != nil {
				t.Fatal(err)
			}
			e.ingest(seqEvents("d1", 11, 20, ts)...) // not saved before a crash
			e.close(c.clean)

			e.clock.Add(60_000)
			tr := e.open(persisted(nil))
			if got := dpuRow(t, tr, "d1").Accepted; got != c.acceptedAtStart {
				t.Fatalf("accepted at start = %d, want %d", got, c.acceptedAtStart)
			}
			e.ingest(seqEvents("d1", 25, 30, ts+30_000)...) // 21..24 lost upstream
			row := dpuRow(t, tr, "d1")
			if row.Gaps != c.gaps || row.Restarts != c.restarts || row.SinceStart.Gaps != c.sinceGaps {
				t.Fatalf("gaps %d (since start %d), restarts %d; want %d (%d), %d",
					row.Gaps, row.SinceStart.Gaps, row.Restarts, c.gaps, c.sinceGaps, c.restarts)
			}
		})
	}
}

// TestQuietThroughTracker drives the clock by hand: DPUs go quiet after their
// quiet_after (d2 overrides the default), a report ends it, a DPU that never
// reported is counted from when a version first knew it, and a restart keeps all
// of it (the last reports are in the store; the first knowledge is the stored
// versions').
func TestQuietThroughTracker(t *testing.T) {
	e := newEnv(t)
	m := metrics.New()
	topo := testTopology
	topo.DPUs = append([]occupancy.DPUConfig(nil), testTopology.DPUs...)
	topo.DPUs[1].QuietAfter = occupancy.Duration(10 * time.Minute)
	opts := persisted(func(o *Options) {
		o.QuietAfter = 30 * time.Minute
		o.Metrics = m
		o.Topology = &topo
	})
	tr := e.open(opts)
	start := e.clock.Load()
	quiet := func(want ...string) {
		t.Helper()
		e.tick()
		h := tr.Health()
		if fmt.Sprint(h.QuietIDs) != fmt.Sprint(want) || h.Quiet != len(want) || h.DPUs != 3 && h.DPUs != 2 {
			t.Fatalf("at +%s: quiet %v (%d of %d), want %v", time.Duration(e.clock.Load()-start)*time.Millisecond,
				h.QuietIDs, h.Quiet, h.DPUs, want)
		}
		if got := gathered(t, m, "occupancyd_dpus_quiet")[""]; got != float64(len(want)) {
			t.Fatalf("occupancyd_dpus_quiet = %v, want %d", got, len(want))
		}
	}
	at := func(d time.Duration) { e.clock.Store(start + d.Milliseconds()) }

	e.ingest(occupancy.Event{DPU: "d1", ID: "1", TS: start, Direction: 1, Received: start})
	quiet()
	at(10*time.Minute - time.Millisecond)
	quiet()
	at(10 * time.Minute) // d2 never reported: 10 minutes after the version knew it
	quiet("d2")
	if row := dpuRow(t, tr, "d2"); !row.Quiet || row.QuietSince != payload.FormatMS(start+10*60_000) {
		t.Fatalf("d2: quiet %v since %q, want since %s", row.Quiet, row.QuietSince, payload.FormatMS(start+10*60_000))
	}
	at(29 * time.Minute)
	e.ingest(occupancy.Event{DPU: "d2", ID: "1", TS: e.clock.Load(), Direction: 1, Received: e.clock.Load()})
	if h := tr.Health(); h.Quiet != 0 {
		t.Fatalf("a report of d2 left %d quiet, want 0 at once", h.Quiet)
	}
	at(30 * time.Minute) // d1's report + 30 minutes
	quiet("d1")
	at(39 * time.Minute) // d2's report + 10 minutes
	quiet("d1", "d2")

	t.Run("metrics", func(t *testing.T) {
		// The default: series of the quiet DPUs only.
		got := gathered(t, m, "occupancyd_dpu_last_event_timestamp_seconds")
		want := map[string]float64{"d1": float64(start) / 1000, "d2": float64(start+29*60_000) / 1000}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("occupancyd_dpu_last_event_timestamp_seconds: got %v, want %v", got, want)
		}
		if err := m.DPULastEvent.SetMode(metrics.LastEventNone); err != nil {
			t.Fatal(err)
		}
		if got := gathered(t, m, "occupancyd_dpu_last_event_timestamp_seconds"); len(got) != 0 {
			t.Errorf("mode none: got %v, want no series", got)
		}
		if err := m.DPULastEvent.SetMode(metrics.LastEventAll); err != nil {
			t.Fatal(err)
		}
		if got := gathered(t, m, "occupancyd_dpu_last_event_timestamp_seconds"); len(got) != 2 {
			t.Errorf("mode all: got %v, want d1 and d2", got)
		}
		if err := m.DPULastEvent.SetMode("some"); err == nil {
			t.Error("mode some was taken")
		}
	})

	// A restart: the last reports come from the store, d2 stays quiet since the same
	// instant; a new version that adds d3 counts d3 from its own instant.
	e.close(true)
	at(45 * time.Minute)
	tr = e.open(opts)
	if h := tr.Health(); fmt.Sprint(h.QuietIDs) != "[d1 d2]" {
		t.Fatalf("after a restart: quiet %v, want [d1 d2]", h.QuietIDs)
	}
	if row := dpuRow(t, tr, "d2"); row.QuietSince != payload.FormatMS(start+39*60_000) {
		t.Fatalf("d2 after a restart: quiet since %q, want %s", row.QuietSince, payload.FormatMS(start+39*60_000))
	}
	topo2 := topo
	topo2.DPUs = append(append([]occupancy.DPUConfig(nil), topo.DPUs...),
		occupancy.DPUConfig{ID: "d3", Doorway: "door", PlusSpace: "r1", MinusSpace: "f1", QuietAfter: occupancy.Duration(time.Minute)})
	if _, _, err := tr.AddVersion(topo2); err != nil {
		t.Fatal(err)
	}
	at(45*time.Minute + time.Minute - time.Millisecond)
	quiet("d1", "d2")
	at(46 * time.Minute)
	quiet("d1", "d2", "d3")
	// A version without d1: no longer watched.
	topo3 := topo2
	topo3.DPUs = topo2.DPUs[1:]
	if _, _, err := tr.AddVersion(topo3); err != nil {
		t.Fatal(err)
	}
	quiet("d2", "d3")
}

// gathered returns the values of a metric family by the value of its one label
// ("" without labels).
func gathered(t *testing.T, m *metrics.Metrics, name string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, x := range mf.GetMetric() {
			label := ""
			if ls := x.GetLabel(); len(ls) > 0 {
				label = ls[0].GetValue()
			}
			out[label] = x.GetGauge().GetValue()
		}
	}
	return out
}

func TestCheckQuietManyAtOnce(t *testing.T) {
	s := NewDPUStats()
	const n = 3*checkChunk + 17
	tds := make([]TopologyDPU, n)
	for i := range tds {
		tds[i] = TopologyDPU{ID: fmt.Sprintf("d%05d", i), FirstKnown: t0}
	}
	s.SetTopology(tds, time.Minute, t0)
	if popped := s.CheckQuiet(t0 + 60_000); popped != n {
		t.Fatalf("popped %d, want %d", popped, n)
	}
	h := s.Health()
	if h.Quiet != n || len(h.QuietIDs) != MaxQuietIDs || h.QuietIDs[0] != "d00000" || h.QuietIDs[MaxQuietIDs-1] != "d00099" {
		t.Fatalf("quiet %d, ids %d from %s to %s; want %d, %d from d00000 to d00099", h.Quiet, len(h.QuietIDs),
			h.QuietIDs[0], h.QuietIDs[len(h.QuietIDs)-1], n, MaxQuietIDs)
	}
}
