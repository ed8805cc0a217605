package occupancy_test

import (
	"context"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/occupancy"
	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

// The history property (issue 10): what At and Counts answer — settled history,
// the pending window, the horizon itself and the future — equals an independent
// sorted replay (occupancy/refmodel) for every space, whatever the arrival order,
// with events dated before and after the first start, duplicates, late events,
// restarts that rebuild the engine from the store, and reconnects that hold the
// horizon. Run over the tests' in-memory store and over the real buffer (Badger).

// hstore is the store of one run with the gateway's write side.
type hstore interface {
	occupancy.Store
	add(evs []occupancy.Event) (fresh []bool, err error)
	commit(occupancy.Settlement) error
	putVersion(occupancy.Version) error
	putReset(occupancy.Reset) error
	restart(t *testing.T) hstore // the store as a new process finds it
}

type memH struct{ *occupancy.MemStore }

func (m memH) add(evs []occupancy.Event) ([]bool, error)    { return m.Append(evs, nil), nil }
func (m memH) commit(st occupancy.Settlement) error         { return m.Commit(st) }
func (m memH) putVersion(v occupancy.Version) error         { m.PutVersion(v); return nil }
func (m memH) putReset(r occupancy.Reset) error             { m.PutReset(r); return nil }
func (m memH) restart(*testing.T) hstore                    { return m }
func newMemH(*testing.T) hstore                             { return memH{occupancy.NewMemStore()} }
func (b badgerH) putVersion(v occupancy.Version) error      { return b.PutVersion(v) }
func (b badgerH) putReset(r occupancy.Reset) error          { return b.PutReset(r) }
func (b badgerH) commit(st occupancy.Settlement) error      { return b.Commit(st) }
func (b badgerH) add(evs []occupancy.Event) ([]bool, error) { return b.addEvents(evs) }

type badgerH struct {
	*buffer.Store
	dir string
}

func openBadgerH(t *testing.T, dir string) badgerH {
	t.Helper()
	s, err := buffer.Open(buffer.Options{Dir: dir, Logger: zerolog.Nop(), MinFreeBytes: -1})
	if err != nil {
		t.Fatalf("open buffer: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return badgerH{Store: s, dir: dir}
}

func newBadgerH(t *testing.T) hstore { return openBadgerH(t, t.TempDir()) }

func (b badgerH) addEvents(evs []occupancy.Event) ([]bool, error) {
	res, err := b.Append(context.Background(), evs, make([]bool, len(evs)))
	if err != nil {
		return nil, err
	}
	fresh := make([]bool, len(res))
	for i, r := range res {
		fresh[i] = !r.Duplicate
	}
	return fresh, nil
}

func (b badgerH) restart(t *testing.T) hstore {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatalf("close buffer: %v", err)
	}
	return openBadgerH(t, b.dir)
}

type hdelivery struct {
	at int64
	ev refmodel.Event
}

// hscenario is one random run.
type hscenario struct {
	settle, step, t0, end int64
	topo                  occupancy.TopologyConfig
	cfg                   refmodel.Config // the same for the model
	deliveries            []hdelivery     // by at
	resets                []occupancy.Reset
}

func genHistory(rng *rand.Rand, withResets bool) hscenario {
	settle := []int64{60_000, 2 * 60_000, 5 * 60_000}[rng.Intn(3)]
	sc := hscenario{settle: settle, step: settle / 10}
	// Around a DST change of Europe/Berlin or America/New_York, or on an ordinary day.
	days := []time.Time{time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC), time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)}
	sc.t0 = days[rng.Intn(len(days))].UnixMilli() + rng.Int63n(3*3_600_000)
	sc.end = sc.t0 + int64(20+rng.Intn(40))*60_000
	sc.cfg = refmodel.Config{SettleAfter: settle, Clamp: rng.Intn(4) != 0}
	n, m := 2+rng.Intn(7), 1+rng.Intn(6)
	sc.topo = occupancy.GenTopology(rng, n, m)
	for i, s := range sc.topo.Spaces {
		sc.topo.Spaces[i].DailyReset = "" // daily resets are the reference tests' (DST)
		sc.cfg.Spaces = append(sc.cfg.Spaces, refmodel.Space{ID: s.ID, Parent: s.Parent})
	}
	for _, d := range sc.topo.DPUs {
		sc.cfg.DPUs = append(sc.cfg.DPUs, refmodel.DPU{ID: d.ID, Plus: d.PlusSpace, Minus: d.MinusSpace})
	}
	seq := map[string]int{}
	for i, nev := 0, 100+rng.Intn(400); i < nev; i++ {
		d := sc.cfg.DPUs[rng.Intn(m)].ID
		var ts, at int64
		switch r := rng.Intn(20); {
		case r < 3: // dated before the first start's horizon: late at the start
			ts = sc.t0 - settle - 1 - rng.Int63n(2*settle)
			at = sc.t0 + rng.Int63n(sc.step)
		case r < 7: // a backlog from the minutes before the first start: pending
			ts = sc.t0 - settle + rng.Int63n(settle)
			at = sc.t0 + rng.Int63n(sc.step)
		default:
			ts = sc.t0 + rng.Int63n(sc.end-sc.t0)
			switch k := rng.Intn(20); {
			case k < 12:
				at = ts + rng.Int63n(1000)
			case k < 17:
				at = ts + rng.Int63n(settle-sc.step)
			default: // late
				at = ts + settle + sc.step + rng.Int63n(10*60_000)
			}
		}
		if rng.Intn(3) == 0 {
			ts -= ts % 1000 // same-millisecond neighbours
		}
		ev := refmodel.Event{DPU: d, TS: ts, Dir: 1}
		if rng.Intn(3) == 0 {
			ev.Dir = -1
		}
		if rng.Intn(4) != 0 {
			seq[d]++
			ev.ID = strconv.Itoa(seq[d])
		}
		sc.deliveries = append(sc.deliveries, hdelivery{at: at, ev: ev})
		if rng.Intn(10) == 0 { // delivered again, maybe after its ts was settled
			sc.deliveries = append(sc.deliveries, hdelivery{at: at + rng.Int63n(10*60_000), ev: ev})
		}
	}
	sort.SliceStable(sc.deliveries, func(i, j int) bool { return sc.deliveries[i].at < sc.deliveries[j].at })
	if withResets {
		for i := 1 + rng.Intn(3); i > 0; i-- {
			r := occupancy.Reset{Space: sc.cfg.Spaces[rng.Intn(n)].ID, TS: sc.t0 + rng.Int63n(sc.end-sc.t0)}
			if rng.Intn(2) == 0 {
				r.Occupancy = int64(rng.Intn(5))
			}
			sc.resets = append(sc.resets, r)
		}
		sort.Slice(sc.resets, func(i, j int) bool { return sc.resets[i].TS < sc.resets[j].TS })
	}
	return sc
}

// location is the time zone of space id: its own, else its nearest ancestor's,
// UTC at the top.
func (sc *hscenario) location(id string) *time.Location {
	parent, zone := map[string]string{}, map[string]string{}
	for _, s := range sc.topo.Spaces {
		parent[s.ID], zone[s.ID] = s.Parent, s.TimeZone
	}
	for ; id != ""; id = parent[id] {
		if zone[id] != "" {
			loc, err := time.LoadLocation(zone[id])
			if err != nil {
				panic(err)
			}
			return loc
		}
	}
	return time.UTC
}

// hrun is the engine and its store, fed as the gateway feeds them, and the model.
type hrun struct {
	t     *testing.T
	rng   *rand.Rand
	sc    hscenario
	opts  occupancy.Options
	st    hstore
	eng   *occupancy.Engine
	model *refmodel.Model
	late  int
}

func (r *hrun) open(now int64) {
	r.t.Helper()
	eng, err := occupancy.Open(r.opts, r.st, now)
	if err != nil {
		r.t.Fatalf("open engine at %s: %v", fmtT(now), err)
	}
	r.eng = eng
	r.model.Start(now)
}

// deliver is one ingest batch: stored, then the new events applied, and the late
// duplicates again (the gateway does, in case their correction was never
// committed); a batch with late events is committed before it is acknowledged.
func (r *hrun) deliver(evs []refmodel.Event, now int64) {
	r.t.Helper()
	h := r.eng.Horizon()
	oevs := make([]occupancy.Event, len(evs))
	for i, e := range evs {
		oevs[i] = occupancy.Event{DPU: e.DPU, ID: e.ID, TS: e.TS, Direction: int8(e.Dir), Received: now, Late: e.TS < h}
	}
	fresh, err := r.st.add(oevs)
	if err != nil {
		r.t.Fatalf("store events: %v", err)
	}
	var apply []occupancy.Event
	for i, e := range oevs {
		if fresh[i] || e.Late {
			apply = append(apply, e)
		}
	}
	res, err := r.eng.Apply(apply, now)
	if err != nil {
		r.t.Fatalf("apply: %v", err)
	}
	if late := r.model.Receive(evs); late != countNew(fresh, oevs) {
		r.t.Fatalf("model: %d new late events, engine store: %d", late, countNew(fresh, oevs))
	}
	r.late += res.Late
	if res.Late > 0 {
		r.tick(now)
	}
}

func countNew(fresh []bool, evs []occupancy.Event) int {
	n := 0
	for i := range evs {
		if fresh[i] && evs[i].Late {
			n++
		}
	}
	return n
}

func (r *hrun) tick(now int64) {
	r.t.Helper()
	if st, ok := r.eng.Tick(now); ok {
		if err := r.st.commit(st); err != nil {
			r.t.Fatalf("commit: %v", err)
		}
	}
	r.model.Tick(now)
}

func (r *hrun) reset(rs occupancy.Reset, now int64) {
	r.t.Helper()
	rs.TS = max(rs.TS, r.eng.Horizon())
	if err := r.st.putReset(rs); err != nil {
		r.t.Fatal(err)
	}
	if err := r.eng.Reset(rs, now); err != nil {
		r.t.Fatalf("reset: %v", err)
	}
	r.model.Reset(refmodel.Reset{Space: rs.Space, TS: rs.TS, Value: rs.Occupancy})
}

func fmtT(ms int64) string { return time.UnixMilli(ms).UTC().Format("15:04:05.000") }

// check compares the engine with the model at now.
func (r *hrun) check(now int64) {
	t, rng, sc, m := r.t, r.rng, r.sc, r.model
	t.Helper()
	h := r.eng.Horizon()
	if mh := m.Horizon(); h != mh {
		t.Fatalf("now %s: horizon: got %s, want %s", fmtT(now), fmtT(h), fmtT(mh))
	}
	first := sc.t0 - 4*sc.settle
	for _, sp := range sc.cfg.Spaces {
		id := sp.ID
		o, _ := r.eng.Current(id)
		if want := m.Current(id); o.Occupancy != want {
			t.Fatalf("now %s: current %s: got %d, want %d", fmtT(now), id, o.Occupancy, want)
		}
		// At: settled, pending, exactly at H and around it, the future.
		ats := []int64{h, h - 1, h + 1, now, now + 1 + rng.Int63n(sc.settle), first + rng.Int63n(h-first),
			h + rng.Int63n(now-h+1), first + rng.Int63n(now-first)}
		for _, at := range ats {
			got, err := r.eng.At(id, at)
			if err != nil {
				t.Fatal(err)
			}
			if want := m.At(id, at); got != want {
				t.Fatalf("now %s H %s: at(%s, %s): got %d, want %d (true timeline %d)", fmtT(now), fmtT(h), id, fmtT(at), got, want, m.TrueAt(id, at))
			}
		}
		// Counts over ranges around H, random intervals.
		for k := 0; k < 3; k++ {
			iv := []int64{1000, 7_000, 60_000, 5 * 60_000, 15 * 60_000, 3_600_000}[rng.Intn(6)]
			start := h - rng.Int63n(20)*iv - rng.Int63n(iv)
			if k == 2 {
				start = first + rng.Int63n(now-first)
			}
			end := start + iv*int64(1+rng.Intn(40)) + rng.Int63n(2)*iv/3
			r.compareCounts(now, id, start, end, iv)
		}
		// Calendar buckets in the space's time zone (its own or inherited), up to now.
		iv := []int64{60_000, 15 * 60_000, 3_600_000, 86_400_000}[rng.Intn(4)]
		start := first + rng.Int63n(now-first)
		end := start + 1 + rng.Int63n(3*3_600_000)
		loc := sc.location(id)
		got, err := r.eng.CalendarCounts(id, start, end, iv, now)
		if err != nil {
			t.Fatal(err)
		}
		var want []occupancy.Bucket
		for _, w := range m.Counts(id, refmodel.CalendarBounds(loc, start, end, iv, now)) {
			want = append(want, occupancy.Bucket{Start: w.Start, End: w.End, Occupancy: w.Occupancy, Min: w.Min, Max: w.Max, Entrances: w.Entrances, Exits: w.Exits})
		}
		if len(got) != 0 || len(want) != 0 {
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("now %s: calendar counts(%s in %s, %s, %s, %d):\n got %+v\nwant %+v", fmtT(now), id, loc, fmtT(start), fmtT(end), iv, got, want)
			}
		}
		// Every crossing the true timeline counts is counted exactly once.
		all, err := r.eng.Counts(id, first, now+sc.settle, now+sc.settle-first)
		if err != nil {
			t.Fatal(err)
		}
		if in, out := m.TrueTotals(id); all[0].Entrances != in || all[0].Exits != out {
			t.Fatalf("now %s: %s entrances/exits over all time: got %d/%d, want %d/%d (the true timeline's)", fmtT(now), id, all[0].Entrances, all[0].Exits, in, out)
		}
	}
}

func (r *hrun) compareCounts(now int64, id string, start, end, iv int64) {
	t := r.t
	t.Helper()
	got, err := r.eng.Counts(id, start, end, iv)
	if err != nil {
		t.Fatal(err)
	}
	want := r.model.Counts(id, refmodel.Uniform(start, end, iv))
	if len(got) != len(want) {
		t.Fatalf("counts(%s, %s, %s, %d): got %d buckets, want %d", id, fmtT(start), fmtT(end), iv, len(got), len(want))
	}
	carried, err := r.eng.At(id, start-1)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		g := got[i]
		wb := occupancy.Bucket{Start: w.Start, End: w.End, Occupancy: w.Occupancy, Min: w.Min, Max: w.Max, Entrances: w.Entrances, Exits: w.Exits}
		if g != wb {
			t.Fatalf("now %s H %s: counts(%s, %s, %s, %d) bucket %d: got %+v, want %+v", fmtT(now), fmtT(r.eng.Horizon()), id, fmtT(start), fmtT(end), iv, i, g, wb)
		}
		// Every bucket adds up (DESIGN 3), clamping included: a decrement absorbed
		// at 0 is neither an exit nor a change.
		if !w.HasReset && len(r.sc.resets) == 0 && g.Occupancy != carried+g.Entrances-g.Exits {
			t.Fatalf("counts(%s) bucket %d %+v: occupancy %d != carried in %d + entrances %d - exits %d", id, i, g, g.Occupancy, carried, g.Entrances, g.Exits)
		}
		carried = g.Occupancy
	}
}

// runHistory plays sc against one store.
func runHistory(t *testing.T, rng *rand.Rand, sc hscenario, st hstore) *hrun {
	r := &hrun{t: t, rng: rng, sc: sc, st: st, model: refmodel.New(sc.cfg),
		opts: occupancy.Options{SettleAfter: sc.settle, LateEvents: occupancy.LateApply, ClampNegative: sc.cfg.Clamp}}
	if err := st.putVersion(occupancy.Version{At: sc.t0, Topology: sc.topo}); err != nil {
		t.Fatal(err)
	}
	r.open(sc.t0)
	r.check(sc.t0)
	di, ri, step := 0, 0, 0
	for now := sc.t0; now <= sc.end+2*sc.settle+2*sc.step; now += sc.step {
		var due []refmodel.Event
		for ; di < len(sc.deliveries) && sc.deliveries[di].at <= now; di++ {
			due = append(due, sc.deliveries[di].ev)
		}
		rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
		for len(due) > 0 {
			k := 1 + rng.Intn(len(due))
			r.deliver(due[:k], now)
			due = due[k:]
		}
		for ; ri < len(sc.resets) && sc.resets[ri].TS <= now; ri++ {
			r.reset(occupancy.Reset{Space: sc.resets[ri].Space, TS: now - rng.Int63n(sc.settle/2), Occupancy: sc.resets[ri].Occupancy}, now)
		}
		r.tick(now)
		switch rng.Intn(20) {
		case 0: // a restart: the engine is rebuilt from the store
			r.st = r.st.restart(t)
			r.open(now)
		case 1: // a broker reconnect
			r.eng.Hold(now)
			r.model.Hold(now)
		}
		if step%8 == 0 {
			r.check(now)
		}
		step++
	}
	r.check(sc.end + 2*sc.settle + 3*sc.step)
	return r
}

func TestHistoryMatchesModel(t *testing.T) {
	runs := 12
	if testing.Short() {
		runs = 4
	}
	stores := []struct {
		name string
		open func(*testing.T) hstore
		runs int
	}{{"mem", newMemH, runs}, {"badger", newBadgerH, (runs + 3) / 4}}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			for run := 0; run < s.runs; run++ {
				seed := int64(100 + run)
				t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
					rng := rand.New(rand.NewSource(seed))
					r := runHistory(t, rng, genHistory(rng, run%2 == 1), s.open(t))
					if r.late == 0 {
						t.Logf("seed %d: no late events", seed)
					}
				})
			}
		})
	}
}
