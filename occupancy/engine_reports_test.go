package occupancy

import (
	"reflect"
	"testing"
)

// applyReports stores reports as the gateway does (parked when no version maps
// them, refused when they overlap a stored interval) and applies the new ones.
func (d *driver) applyReports(reps []Report, now int64) {
	parked := make([]bool, len(reps))
	h := d.eng.Horizon()
	for i, r := range reps {
		parked[i] = !d.eng.Mappable(r.DPU, r.TS)
		reps[i].Late = r.TS < h // as the gateway does: stored with a late mark
	}
	fresh := d.st.AppendReports(reps, parked)
	var batch []Report
	for i, r := range reps {
		if fresh[i] {
			batch = append(batch, r)
		}
	}
	res, err := d.eng.ApplyReports(batch, now)
	d.applied(res, err, now)
}

// reportTopo: a building with a lobby (entered from outside by x, an interval DPU,
// and c, a cumulative one) and a room off the lobby (r, interval).
var reportTopo = TopologyConfig{
	Spaces: []SpaceConfig{{ID: "b"}, {ID: "lobby", Parent: "b"}, {ID: "room", Parent: "b"}},
	DPUs: []DPUConfig{{ID: "x", PlusSpace: "lobby"}, {ID: "c", PlusSpace: "lobby"},
		{ID: "r", PlusSpace: "room", MinusSpace: "lobby"}},
}

func iv(dpu string, start, end, in, out int64) Report {
	return Report{DPU: dpu, Kind: ReportInterval, Start: start, TS: end, In: in, Out: out}
}

func cu(dpu string, ts, in, out int64) Report {
	return Report{DPU: dpu, Kind: ReportCumulative, TS: ts, In: in, Out: out}
}

func current(t *testing.T, e *Engine, space string) int64 {
	t.Helper()
	o, ok := e.Current(space)
	if !ok {
		t.Fatalf("no space %s", space)
	}
	return o.Occupancy
}

func countsOf(t *testing.T, d *driver, space string, start, end, interval int64) []Bucket {
	t.Helper()
	q, err := d.eng.PrepareCounts(space, start, end, interval)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := q.Run(d.st)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// TestIntervalReport: N ins and M outs count at the end, ins first, as one entry per
// space (3,000 crossings are 2 pending entries, not 6,000), clamped as single steps
// would be: exits are the actual decrease.
func TestIntervalReport(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, LateEvents: LateApply, ClampNegative: true}, reportTopo, t0)
	d.applyReports([]Report{iv("x", t0, t0+60_000, 2000, 1000)}, t0+61_000)
	if n := d.eng.Pending(); n != 2 {
		t.Errorf("pending entries: got %d, want 2 (lobby and b)", n)
	}
	if got := current(t, d.eng, "lobby"); got != 1000 {
		t.Errorf("lobby: got %d, want 1000", got)
	}
	bs := countsOf(t, d, "lobby", t0, t0+120_000, 60_000)
	want := []Bucket{{Start: t0, End: t0 + 60_000}, {Start: t0 + 60_000, End: t0 + 120_000, Occupancy: 1000, Min: 0, Max: 1000, Entrances: 2000, Exits: 1000}}
	if !reflect.DeepEqual(bs, want) {
		t.Errorf("counts: got %+v, want %+v", bs, want)
	}
	// r reports 3 from the lobby into the room, then 1200 back: each space on its
	// own, the room is clamped at 0 after its 3 (3 exits, not 1200) and the lobby
	// gets 1200 - 3; the building is not crossed.
	d.applyReports([]Report{iv("r", t0+60_000, t0+90_000, 3, 1200)}, t0+91_000)
	for sp, want := range map[string]int64{"lobby": 2197, "room": 0, "b": 1000} {
		if got := current(t, d.eng, sp); got != want {
			t.Errorf("%s: got %d, want %d", sp, got, want)
		}
	}
	room := countsOf(t, d, "room", t0+60_000, t0+120_000, 60_000)
	if room[0].Entrances != 3 || room[0].Exits != 3 {
		t.Errorf("room: got %d entrances, %d exits, want 3 and 3", room[0].Entrances, room[0].Exits)
	}
	lobby := countsOf(t, d, "lobby", t0+60_000, t0+120_000, 60_000)
	if lobby[0].Entrances != 3200 || lobby[0].Exits != 1003 {
		t.Errorf("lobby: got %d entrances, %d exits, want 3200 and 1003", lobby[0].Entrances, lobby[0].Exits)
	}
	// Settled, a report is one row per space it changed.
	d.tick(t0 + 20*minute)
	var kinds []EntryKind
	for _, r := range d.st.rows["room"] {
		kinds = append(kinds, r.Kind)
	}
	if !reflect.DeepEqual(kinds, []EntryKind{KindReport}) {
		t.Errorf("room rows: kinds %v, want one report row", kinds)
	}
}

// TestCumulativeReports: the first report is the baseline, later ones count their
// increase, a counter that drops counts its new value (a reset), a lost report loses
// nothing, and one arriving out of order slots in between its neighbours.
func TestCumulativeReports(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, LateEvents: LateApply, ClampNegative: true}, reportTopo, t0)
	step := func(r Report, want int64) {
		t.Helper()
		d.applyReports([]Report{r}, r.TS+1000)
		if got := current(t, d.eng, "lobby"); got != want {
			t.Fatalf("after %+v: lobby %d, want %d", r, got, want)
		}
	}
	step(cu("c", t0+10_000, 500, 480), 0)  // baseline: counts nothing
	step(cu("c", t0+20_000, 510, 482), 8)  // +10 -2
	step(cu("c", t0+40_000, 530, 483), 27) // +20 -1 (the report at 30 s was lost)
	step(cu("c", t0+50_000, 3, 1), 29)     // both counters reset: +3 -1
	step(cu("c", t0+30_000, 515, 482), 29) // at 30 s after all: +5 -0 there, +15 -1 at 40 s
	if got, _ := d.eng.At("lobby", t0+30_000); got != 13 {
		t.Errorf("at 30 s: got %d, want 13", got)
	}
	if got, _ := d.eng.At("lobby", t0+40_000); got != 27 {
		t.Errorf("at 40 s: got %d, want 27", got)
	}
	step(cu("c", t0+5_000, 490, 480), 39) // an earlier baseline: +10 at 10 s
	// Reopened, the engine reads the same state back from the store.
	d.reopen(t0 + 2*minute)
	if got := current(t, d.eng, "lobby"); got != 39 {
		t.Errorf("reopened: lobby %d, want 39", got)
	}
	step(cu("c", t0+60_000, 13, 1), 49)
}

// TestReportsParkedUntilMapped: reports of a DPU no version knows are parked and
// count once a version maps it, the cumulative ones from their first report.
func TestReportsParkedUntilMapped(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, LateEvents: LateApply, ClampNegative: true}, reportTopo, t0)
	d.applyReports([]Report{iv("n1", t0, t0+10_000, 4, 1), cu("n2", t0+10_000, 100, 0), cu("n2", t0+20_000, 107, 0)}, t0+21_000)
	if got := d.eng.ParkedCount(); got != 3 {
		t.Fatalf("parked: got %d, want 3", got)
	}
	next := reportTopo
	next.DPUs = append(append([]DPUConfig(nil), reportTopo.DPUs...), DPUConfig{ID: "n1", PlusSpace: "room"}, DPUConfig{ID: "n2", PlusSpace: "room"})
	d.addVersion(Version{At: t0 + 30_000, Topology: next}, t0+30_000)
	if got := d.eng.ParkedCount(); got != 0 {
		t.Errorf("parked after the version: got %d, want 0", got)
	}
	if got := current(t, d.eng, "room"); got != 10 {
		t.Errorf("room: got %d, want 10 (3 + 7)", got)
	}
	d.tick(t0 + 31_000)
	if len(d.st.repParked) != 0 {
		t.Errorf("parked marks after the commit: %v", d.st.repParked)
	}
}

// TestLateReports: a report arriving after the horizon passed its instant is
// corrected at the horizon; a late cumulative report also shrinks the difference
// of the pending one after it.
func TestLateReports(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, LateEvents: LateApply, ClampNegative: true}, reportTopo, t0)
	d.applyReports([]Report{cu("c", t0+10_000, 100, 0), iv("x", t0, t0+20_000, 5, 0)}, t0+21_000)
	d.tick(t0 + 20*minute)                                                // H = t0 + 15 min
	d.applyReports([]Report{cu("c", t0+16*minute, 130, 0)}, t0+20*minute) // pending: +30
	if got := current(t, d.eng, "lobby"); got != 35 {
		t.Fatalf("lobby: got %d, want 35", got)
	}
	// Late: x's next interval, and c's report at 10 min (+12 there; +18 left at 16 min).
	d.applyReports([]Report{iv("x", t0+20_000, t0+5*minute, 2, 1), cu("c", t0+10*minute, 112, 0)}, t0+20*minute+1)
	if d.late != 2 {
		t.Errorf("late: got %d, want 2", d.late)
	}
	if got := current(t, d.eng, "lobby"); got != 36 {
		t.Errorf("lobby after the late reports: got %d, want 36", got)
	}
	if got, _ := d.eng.At("lobby", t0+15*minute); got != 18 {
		t.Errorf("at H: got %d, want 18 (the correction)", got)
	}
	bs := countsOf(t, d, "lobby", t0+16*minute, t0+17*minute, minute)
	if bs[0].Entrances != 18 {
		t.Errorf("entrances at 16 min: got %d, want 18 (30 less the 12 counted at 10 min)", bs[0].Entrances)
	}
}
