package occupancy

import (
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"
)

const minute = int64(60_000)

var testZones = []string{"", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"}
var testResets = []string{"", "", "02:30", "04:00", "00:00", "23:59", "01:15"}

// genTopology makes a random nested topology: spaces s0..s(n-1) (each parent listed
// before it), DPUs d0..d(m-1) between random spaces or outside.
func genTopology(rng *rand.Rand, n, m int) TopologyConfig {
	var c TopologyConfig
	for i := 0; i < n; i++ {
		s := SpaceConfig{ID: fmt.Sprintf("s%d", i), Name: fmt.Sprintf("Space %d", i)}
		if i > 0 && rng.Intn(4) != 0 {
			s.Parent = fmt.Sprintf("s%d", rng.Intn(i))
		}
		if rng.Intn(3) == 0 {
			s.Capacity = int64(rng.Intn(50))
		}
		if rng.Intn(3) == 0 {
			s.TimeZone = testZones[rng.Intn(len(testZones))]
			s.DailyReset = testResets[rng.Intn(len(testResets))]
		}
		c.Spaces = append(c.Spaces, s)
	}
	c.Doorways = []DoorwayConfig{{ID: "door", Name: "Door"}}
	for i := 0; i < m; i++ {
		c.DPUs = append(c.DPUs, genDPU(rng, fmt.Sprintf("d%d", i), n))
	}
	return c
}

func genDPU(rng *rand.Rand, id string, n int) DPUConfig {
	d := DPUConfig{ID: id, Doorway: "door"}
	for d.PlusSpace == d.MinusSpace {
		d.PlusSpace, d.MinusSpace = "", ""
		if rng.Intn(5) != 0 {
			d.PlusSpace = fmt.Sprintf("s%d", rng.Intn(n))
		}
		if rng.Intn(2) == 0 {
			d.MinusSpace = fmt.Sprintf("s%d", rng.Intn(n))
		}
	}
	return d
}

type delivery struct {
	at int64
	ev Event
}

// reportDelivery is a report delivered at an instant (reports_prop_test.go).
type reportDelivery struct {
	at  int64
	rep Report
}

// scenario is one random run: a topology, versions to add, a stream of events with
// delivery times, manual resets.
type scenario struct {
	t0, end   int64
	topo      TopologyConfig
	versions  []Version // added during the run (At = delivery time)
	stream    []delivery
	reports   []reportDelivery // sorted by delivery time
	resets    []Reset          // delivered at TS
	late      bool
	settle    int64
	step      int64
	reopenPct int
}

var testStarts = []time.Time{
	time.Date(2026, 3, 28, 22, 0, 0, 0, time.UTC),  // Berlin spring-forward night
	time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC), // Berlin fall-back night
	time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC),   // New York fall-back
	time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
}

func genScenario(rng *rand.Rand, late bool) scenario { return genScenarioMoves(rng, late, false) }

// genScenarioMoves: with moves, later versions may also move a space under another
// parent (not modelled by the reference; used where engines are compared).
func genScenarioMoves(rng *rand.Rand, late, moves bool) scenario {
	sc := scenario{settle: 5 * minute, step: 30_000, late: late}
	sc.t0 = testStarts[rng.Intn(len(testStarts))].UnixMilli() + int64(rng.Intn(120))*minute
	dur := int64(3*60+rng.Intn(180)) * minute
	sc.end = sc.t0 + dur
	n, m := 2+rng.Intn(10), 1+rng.Intn(8)
	sc.topo = genTopology(rng, n, m)
	// Later versions: add unknown DPUs u0..; change capacities; drop a DPU.
	nu := rng.Intn(3)
	cfg := sc.topo
	var vAt []int64
	for i := 0; i < nu; i++ {
		at := sc.t0 + int64(rng.Int63n(dur))
		vAt = append(vAt, at)
	}
	sort.Slice(vAt, func(i, j int) bool { return vAt[i] < vAt[j] })
	unknownFrom := map[string]int64{}
	for i, at := range vAt {
		next := TopologyConfig{Spaces: append([]SpaceConfig(nil), cfg.Spaces...), Doorways: cfg.Doorways, DPUs: append([]DPUConfig(nil), cfg.DPUs...)}
		id := fmt.Sprintf("u%d", i)
		next.DPUs = append(next.DPUs, genDPU(rng, id, n))
		unknownFrom[id] = at
		k := rng.Intn(len(next.Spaces))
		next.Spaces[k].Capacity = int64(rng.Intn(40))
		if moves && n > 1 {
			k := 1 + rng.Intn(n-1)
			next.Spaces[k].Parent = ""
			if p := rng.Intn(k + 1); p < k {
				next.Spaces[k].Parent = fmt.Sprintf("s%d", p)
			}
		}
		if len(next.DPUs) > 2 && rng.Intn(3) == 0 {
			next.DPUs = next.DPUs[1:] // d0 goes away: its later events park
		}
		sc.versions = append(sc.versions, Version{At: at, Topology: next})
		cfg = next
	}
	dpus := []string{}
	for _, d := range sc.topo.DPUs {
		dpus = append(dpus, d.ID)
	}
	for id := range unknownFrom {
		dpus = append(dpus, id)
	}
	sort.Strings(dpus)
	nev := 200 + rng.Intn(1500)
	seq := map[string]int{}
	for i := 0; i < nev; i++ {
		dpu := dpus[rng.Intn(len(dpus))]
		ts := sc.t0 + rng.Int63n(dur)
		if from, ok := unknownFrom[dpu]; ok {
			// Unknown until its version: keep its events unparkable in time unless late.
			lo := from - 2*minute
			if late {
				lo = from - 40*minute
			}
			if ts < lo {
				ts = lo + rng.Int63n(sc.end-lo)
			}
		}
		if rng.Intn(3) == 0 {
			ts -= ts % 1000 // same-millisecond collisions
		}
		ev := Event{DPU: dpu, TS: ts, Direction: int8(rng.Intn(2)*2 - 1)}
		if rng.Intn(5) != 0 {
			// Mostly positive: counts build up, clamping still happens.
			if rng.Intn(3) != 0 {
				ev.Direction = 1
			}
		}
		if rng.Intn(4) != 0 {
			seq[dpu]++
			ev.ID = strconv.Itoa(seq[dpu])
		}
		delay := int64(0)
		switch r := rng.Intn(10); {
		case r < 6:
			delay = int64(rng.Intn(1000))
		case r < 9:
			delay = rng.Int63n(sc.settle - sc.step - 1000)
		default:
			delay = rng.Int63n(sc.settle - sc.step - 1000)
			if late {
				delay = sc.settle + sc.step + rng.Int63n(30*minute)
			}
		}
		ev.Received = ts + delay
		sc.stream = append(sc.stream, delivery{at: ts + delay, ev: ev})
		if rng.Intn(10) == 0 { // duplicate delivery
			sc.stream = append(sc.stream, delivery{at: ts + delay + int64(rng.Intn(100_000)), ev: ev})
		}
	}
	for i := rng.Intn(4); i > 0; i-- {
		r := Reset{Space: fmt.Sprintf("s%d", rng.Intn(n)), TS: sc.t0 + rng.Int63n(dur)}
		if rng.Intn(2) == 0 {
			r.Occupancy = int64(rng.Intn(20))
		}
		sc.resets = append(sc.resets, r)
	}
	sort.SliceStable(sc.stream, func(i, j int) bool { return sc.stream[i].at < sc.stream[j].at })
	return sc
}

// driver feeds one engine and its memstore the way the gateway does.
type driver struct {
	t    *testing.T
	opts Options
	st   *memStore
	eng  *Engine
	late int
	// lateH is the horizon when a late event was last applied: from it on the
	// settled history is the true timeline again.
	lateH int64
	// afterApply, when set, runs after every apply (before the tick commits).
	afterApply func(now int64)
}

func newDriver(t *testing.T, opts Options, topo TopologyConfig, at int64) *driver {
	d := &driver{t: t, opts: opts, st: newMemStore()}
	d.st.PutVersion(Version{At: at, Topology: topo})
	var err error
	d.eng, err = Open(opts, d.st, at)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return d
}

func (d *driver) apply(evs []Event, now int64) {
	parked := make([]bool, len(evs))
	h := d.eng.Horizon()
	for i, ev := range evs {
		parked[i] = !d.eng.Mappable(ev.DPU, ev.TS)
		// As the gateway does: an event before the horizon is stored as late.
		evs[i].Late = ev.TS < h
	}
	fresh := d.st.Append(evs, parked)
	var batch []Event
	for i, ev := range evs {
		if fresh[i] {
			batch = append(batch, ev)
		}
	}
	res, err := d.eng.Apply(batch, now)
	d.applied(res, err, now)
}

// applied checks an apply's outcome and notes its late inputs.
func (d *driver) applied(res ApplyResult, err error, now int64) {
	if err != nil {
		d.t.Fatalf("apply: %v", err)
	}
	d.late += res.Late
	if res.Late > 0 {
		d.lateH = d.eng.Horizon()
	}
	if d.afterApply != nil {
		d.afterApply(now)
	}
}

func (d *driver) tick(now int64) {
	st, ok := d.eng.Tick(now)
	if !ok {
		return
	}
	if err := d.st.Commit(st); err != nil {
		d.t.Fatalf("commit: %v", err)
	}
}

func (d *driver) reset(r Reset, now int64) {
	if r.TS < d.eng.Horizon() {
		r.TS = d.eng.Horizon()
	}
	d.st.PutReset(r)
	if err := d.eng.Reset(r, now); err != nil {
		d.t.Fatalf("reset: %v", err)
	}
}

func (d *driver) addVersion(v Version, now int64) {
	d.st.PutVersion(v)
	ch, err := d.eng.AddVersion(v, now)
	if err != nil {
		d.t.Fatalf("add version: %v", err)
	}
	if ch.Unparked > 0 {
		d.lateH = d.eng.Horizon() // unparked events may be late
	}
}

func (d *driver) reopen(now int64) {
	var err error
	d.eng, err = Open(d.opts, d.st, now)
	if err != nil {
		d.t.Fatalf("reopen: %v", err)
	}
}

func (d *driver) ref(now int64) *refModel {
	m := &refModel{versions: d.st.versions, daily: now, clamp: d.opts.ClampNegative,
		h0: d.st.versions[0].At - d.opts.SettleAfter}
	m.events = append(m.events, d.st.events...)
	m.reports = append(m.reports, d.st.reports...)
	for _, ev := range d.st.parked {
		m.events = append(m.events, ev)
	}
	for _, r := range d.st.resets {
		m.resets = append(m.resets, r)
	}
	return m
}

// run plays a scenario on drivers (all fed the same operations); hook is called after
// every step.
func (sc scenario) run(rng *rand.Rand, ds []*driver, hook func(now int64, step int)) {
	si, vi, ri, pi := 0, 0, 0, 0
	resets := append([]Reset(nil), sc.resets...)
	sort.Slice(resets, func(i, j int) bool { return resets[i].TS < resets[j].TS })
	stepN := 0
	for now := sc.t0 + sc.step; now <= sc.end+sc.settle+2*sc.step; now += sc.step {
		for vi < len(sc.versions) && sc.versions[vi].At <= now {
			for _, d := range ds {
				d.addVersion(sc.versions[vi], now)
			}
			vi++
		}
		var due []Event
		for si < len(sc.stream) && sc.stream[si].at <= now {
			due = append(due, sc.stream[si].ev)
			si++
		}
		rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
		for len(due) > 0 {
			k := 1 + rng.Intn(len(due))
			for _, d := range ds {
				d.apply(due[:k], now)
			}
			due = due[k:]
		}
		var dueR []Report
		for pi < len(sc.reports) && sc.reports[pi].at <= now {
			dueR = append(dueR, sc.reports[pi].rep)
			pi++
		}
		rng.Shuffle(len(dueR), func(i, j int) { dueR[i], dueR[j] = dueR[j], dueR[i] })
		for len(dueR) > 0 {
			k := 1 + rng.Intn(len(dueR))
			for _, d := range ds {
				d.applyReports(dueR[:k], now)
			}
			dueR = dueR[k:]
		}
		for ri < len(resets) && resets[ri].TS <= now {
			r := Reset{Space: resets[ri].Space, TS: now - int64(rng.Intn(60_000)), Occupancy: resets[ri].Occupancy}
			for _, d := range ds {
				d.reset(r, now)
			}
			ri++
		}
		for _, d := range ds {
			d.tick(now)
		}
		hook(now, stepN)
		stepN++
	}
}

type checker struct {
	t        *testing.T
	lastCur  map[string]int64
	lastCap  map[string]int64
	exactOld bool // settled history equals the reference (no late events)
	noRows   bool // rows are not compared (reports: one row per report, not per crossing)
}

func (c *checker) check(d *driver, rng *rand.Rand, now int64, t0 int64) {
	t := c.t
	t.Helper()
	eng := d.eng
	m := d.ref(now)
	tl := m.timelines()
	h := eng.Horizon()
	// Current values and the change feed.
	wantChanged := map[string]bool{}
	for _, o := range eng.Spaces() {
		want := refCurrent(tl[o.Space])
		if o.Occupancy != want {
			t.Fatalf("now %s: current %s: got %d, want %d", fmtMS(now), o.Space, o.Occupancy, want)
		}
		if c.lastCur[o.Space] != want || c.lastCap[o.Space] != o.Capacity {
			wantChanged[o.Space] = true
		}
		c.lastCur[o.Space], c.lastCap[o.Space] = want, o.Capacity
	}
	gotChanged := map[string]bool{}
	for _, id := range eng.Changed() {
		gotChanged[id] = true
	}
	if !reflect.DeepEqual(gotChanged, wantChanged) {
		t.Fatalf("now %s: changed: got %v, want %v", fmtMS(now), gotChanged, wantChanged)
	}
	spaces := eng.Topology().Spaces()
	// Occupancy at instants.
	for i := 0; i < 30; i++ {
		s := spaces[rng.Intn(len(spaces))].ID
		tt := t0 - minute + rng.Int63n(now-t0+2*minute)
		if i%3 == 0 {
			tt = h + rng.Int63n(now-h+minute+1)
		}
		if tt < h && !c.exactOld && tt <= d.lateH {
			continue
		}
		got, err := eng.At(s, tt)
		if err != nil {
			t.Fatal(err)
		}
		if want := refAt(tl[s], tt); got != want {
			t.Fatalf("now %s H %s: at(%s, %s): got %d, want %d", fmtMS(now), fmtMS(h), s, fmtMS(tt), got, want)
		}
	}
	// Settled rows.
	if c.exactOld && !c.noRows {
		for _, s := range spaces {
			got := d.st.rows[s.ID]
			want := refRows(s.ID, tl[s.ID], h)
			if len(got) == 0 && len(want) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want) {
				for i := 0; i < min(len(got), len(want)); i++ {
					if got[i] != want[i] {
						t.Fatalf("rows of %s differ at %d: got %+v, want %+v", s.ID, i, got[i], want[i])
					}
				}
				t.Fatalf("rows of %s: got %d rows, want %d", s.ID, len(got), len(want))
			}
		}
	}
	// Buckets.
	for i := 0; i < 5; i++ {
		s := spaces[rng.Intn(len(spaces))].ID
		interval := []int64{1000, 60_000, 7 * 60_000, 15 * 60_000, 3_600_000}[rng.Intn(5)]
		start := t0 - minute + rng.Int63n(now-t0+minute)
		if !c.exactOld && start <= d.lateH {
			start = d.lateH + 1 + rng.Int63n(now-d.lateH+1)
		}
		end := start + interval*int64(1+rng.Intn(20)) + int64(rng.Intn(2))*interval/3
		if interval == 1000 {
			end = start + 1000*int64(1+rng.Intn(600))
		}
		got, err := eng.Counts(s, start, end, interval)
		if err != nil {
			t.Fatal(err)
		}
		if want := refCounts(tl[s], start, end, interval); !reflect.DeepEqual(got, want) {
			for j := range got {
				if j < len(want) && got[j] != want[j] {
					t.Fatalf("counts(%s, %s, %s, %d) bucket %d: got %+v, want %+v", s, fmtMS(start), fmtMS(end), interval, j, got[j], want[j])
				}
			}
			t.Fatalf("counts(%s): got %d buckets, want %d", s, len(got), len(want))
		}
	}
}

// newChecker starts the change-feed model from the engine's state at Open.
func newChecker(t *testing.T, eng *Engine, exact bool) *checker {
	c := &checker{t: t, lastCur: map[string]int64{}, lastCap: map[string]int64{}, exactOld: exact}
	for _, o := range eng.Spaces() {
		c.lastCur[o.Space], c.lastCap[o.Space] = o.Occupancy, o.Capacity
	}
	return c
}

// testRuns sizes the randomized tests: 24 runs by default (well under a minute
// with -race), 8 with -short, OCCUPANCY_RUNS=N for long soaks.
func testRuns() int {
	if n, err := strconv.Atoi(os.Getenv("OCCUPANCY_RUNS")); err == nil && n > 0 {
		return n
	}
	if testing.Short() {
		return 8
	}
	return 24
}

// TestEngineMatchesReference: random nested topologies, shuffled in-window arrival,
// duplicates, manual and daily resets (DST nights), parked DPUs added by later
// versions; the timeline, rows, queries and change feed equal the naive model.
func TestEngineMatchesReference(t *testing.T) {
	for run := 0; run < testRuns(); run++ {
		seed := int64(1000 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			d := runReference(t, rng, genScenario(rng, false))
			if d.late != 0 {
				t.Fatalf("scenario produced %d late events", d.late)
			}
		})
	}
}

// TestLateEvents: events arriving after the horizon passed their ts are corrected at
// the horizon (apply): current values and the pending timeline equal the true
// timeline however many late events arrive in any order, the settled rows are never
// rewritten, and history settled after the last correction is true again.
func TestLateEvents(t *testing.T) {
	for run := 0; run < testRuns()/2; run++ {
		seed := int64(5000 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genScenario(rng, true)
			opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: rng.Intn(4) != 0}
			d := newDriver(t, opts, sc.topo, sc.t0)
			c := newChecker(t, d.eng, false)
			var snap map[string][]Row
			sc.run(rng, []*driver{d}, func(now int64, step int) {
				// Rows settled before stay byte-identical.
				for sp, rs := range snap {
					if got := d.st.rows[sp]; len(got) < len(rs) || !reflect.DeepEqual(got[:len(rs)], rs) {
						t.Fatalf("settled rows of %s were rewritten", sp)
					}
				}
				snap = map[string][]Row{}
				for sp, rs := range d.st.rows {
					snap[sp] = append([]Row(nil), rs...)
				}
				if step%20 == 0 {
					c.check(d, rng, now, sc.t0)
				}
			})
			c.check(d, rng, sc.end+sc.settle+2*sc.step, sc.t0)
			if d.late == 0 && run < 3 {
				t.Logf("seed %d: no late events", seed)
			}
		})
	}
}

// TestLateDrop: under drop, late events change nothing.
func TestLateDrop(t *testing.T) {
	topo := TopologyConfig{Spaces: []SpaceConfig{{ID: "a"}}, DPUs: []DPUConfig{{ID: "x", PlusSpace: "a"}}}
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, LateEvents: LateDrop, ClampNegative: true}, topo, t0)
	d.apply([]Event{{DPU: "x", TS: t0 + 1000, Direction: 1}}, t0+2000)
	d.tick(t0 + 20*minute)
	res, err := d.eng.Apply([]Event{{DPU: "x", TS: t0 + 2000, Direction: 1}}, t0+20*minute)
	if err != nil || res.Late != 1 || res.Applied != 0 {
		t.Fatalf("apply late under drop: got %+v, %v", res, err)
	}
	if o, _ := d.eng.Current("a"); o.Occupancy != 1 {
		t.Fatalf("occupancy: got %d, want 1", o.Occupancy)
	}
}

// TestRebuild: an engine closed and reopened (from its committed settlements) at
// random ticks ends in exactly the state of one that never stopped (both held at
// the reopen instants, as the gateway does on every start and reconnect).
func TestRebuild(t *testing.T) {
	for run := 0; run < testRuns()/2; run++ {
		seed := int64(9000 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			_, _, reopened := runRebuild(t, rng, genScenarioMoves(rng, run%2 == 0, run%3 != 0))
			if reopened == 0 {
				t.Logf("seed %d: never reopened", seed)
			}
		})
	}
}

// TestRebuildBeforeCommit: the process dies after events are stored and applied
// (and acknowledged) but before the tick commits: a rebuild from the store equals an
// engine that never stopped, late events included, because the store keeps the
// late events whose corrections no checkpoint holds yet.
func TestRebuildBeforeCommit(t *testing.T) {
	for run := 0; run < testRuns()/2; run++ {
		seed := int64(9500 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			runRebuildBeforeCommit(t, rng, genScenarioMoves(rng, true, false))
		})
	}
}

// runRebuildBeforeCommit drives an engine a that never stops and an engine b
// reopened at random right after an apply, before the tick that commits it (a held
// at the same instants), through sc, comparing them every 10 steps and after the end.
func runRebuildBeforeCommit(t *testing.T, rng *rand.Rand, sc scenario) (a, b *driver) {
	t.Helper()
	opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: rng.Intn(4) != 0}
	a = newDriver(t, opts, sc.topo, sc.t0)
	b = newDriver(t, opts, sc.topo, sc.t0)
	reopened, lateBefore := 0, 0
	b.afterApply = func(now int64) {
		if rng.Intn(6) != 0 {
			return
		}
		lateBefore += len(b.st.late) + len(b.st.lateReps)
		b.reopen(now)
		a.eng.Hold(now)
		reopened++
	}
	sc.run(rng, []*driver{a, b}, func(now int64, step int) {
		if step%10 == 0 {
			compareEngines(t, rng, a, b, now, sc.t0)
		}
	})
	compareEngines(t, rng, a, b, sc.end+sc.settle+2*sc.step, sc.t0)
	if n := len(b.st.late) + len(b.st.lateReps); n != 0 {
		t.Errorf("after the last commit %d events and reports are still kept as late, want 0", n)
	}
	t.Logf("%d reopenings before a commit, with %d uncommitted late inputs in all; %d late inputs", reopened, lateBefore, b.late)
	return a, b
}

// runReference drives one engine through sc, checking it against the naive model
// every 25 steps and after the end.
func runReference(t *testing.T, rng *rand.Rand, sc scenario) *driver {
	t.Helper()
	opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: rng.Intn(4) != 0}
	d := newDriver(t, opts, sc.topo, sc.t0)
	c := newChecker(t, d.eng, true)
	sc.run(rng, []*driver{d}, func(now int64, step int) {
		if step%25 == 0 {
			c.check(d, rng, now, sc.t0)
		}
	})
	c.check(d, rng, sc.end+sc.settle+2*sc.step, sc.t0)
	return d
}

// runRebuild drives an engine a that never stops and an engine b reopened at random
// ticks (a held at the same instants) through sc, comparing them every 10 steps and
// after the end; it returns both and how often b was reopened.
func runRebuild(t *testing.T, rng *rand.Rand, sc scenario) (a, b *driver, reopened int) {
	t.Helper()
	opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: rng.Intn(4) != 0}
	a = newDriver(t, opts, sc.topo, sc.t0)
	b = newDriver(t, opts, sc.topo, sc.t0)
	sc.run(rng, []*driver{a, b}, func(now int64, step int) {
		if rng.Intn(15) == 0 {
			b.reopen(now)
			a.eng.Hold(now)
			reopened++
		}
		if step%10 == 0 {
			compareEngines(t, rng, a, b, now, sc.t0)
		}
	})
	compareEngines(t, rng, a, b, sc.end+sc.settle+2*sc.step, sc.t0)
	return a, b, reopened
}

func compareEngines(t *testing.T, rng *rand.Rand, a, b *driver, now, t0 int64) {
	t.Helper()
	if a.eng.Horizon() != b.eng.Horizon() {
		t.Fatalf("horizon: got %s, want %s", fmtMS(b.eng.Horizon()), fmtMS(a.eng.Horizon()))
	}
	if !reflect.DeepEqual(a.st.rows, b.st.rows) {
		for sp, ra := range a.st.rows {
			rb := b.st.rows[sp]
			for i := range ra {
				if i >= len(rb) || ra[i] != rb[i] {
					t.Fatalf("rows of %s differ at %d: reopened %v, uninterrupted %+v", sp, i, rb[i:min(i+1, len(rb))], ra[i])
				}
			}
		}
		t.Fatalf("rows differ")
	}
	sa, sb := a.eng.Spaces(), b.eng.Spaces()
	for i := range sa {
		sa[i].Updated, sb[i].Updated = 0, 0
	}
	if !reflect.DeepEqual(sa, sb) {
		t.Fatalf("now %s: spaces: reopened %+v, uninterrupted %+v", fmtMS(now), sb, sa)
	}
	for i := 0; i < 20; i++ {
		s := sa[rng.Intn(len(sa))].Space
		tt := t0 + rng.Int63n(now-t0+minute)
		va, _ := a.eng.At(s, tt)
		vb, _ := b.eng.At(s, tt)
		if va != vb {
			t.Fatalf("at(%s, %s): reopened %d, uninterrupted %d", s, fmtMS(tt), vb, va)
		}
		ca, _ := a.eng.Counts(s, tt, tt+2*3_600_000, 15*60_000)
		cb, _ := b.eng.Counts(s, tt, tt+2*3_600_000, 15*60_000)
		if !reflect.DeepEqual(ca, cb) {
			t.Fatalf("counts(%s, %s): reopened %+v, uninterrupted %+v", s, fmtMS(tt), cb, ca)
		}
	}
}
