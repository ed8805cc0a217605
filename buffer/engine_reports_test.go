package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

// TestEngineOnStoreReports runs the engine on a real store the way the gateway does
// (store, then apply; ticks committed; reopened at random from what is committed)
// with interval, cumulative and event DPUs delivered shuffled, re-sent, lost and
// late, and checks every space against the crossings the stored input stands for,
// counted here: unclamped, a space's value is what its DPUs brought in less what
// they took out. Parked reports of a DPU a later version brings count then.
func TestEngineOnStoreReports(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			testEngineOnStore(t, rand.New(rand.NewPCG(seed, 17)))
		})
	}
}

func testEngineOnStore(t *testing.T, rng *rand.Rand) {
	const minute = int64(60_000)
	t0 := int64(1_795_000_000_000)
	topo := occupancy.TopologyConfig{
		Spaces: []occupancy.SpaceConfig{{ID: "b"}, {ID: "l", Parent: "b"}, {ID: "r", Parent: "b"}},
		DPUs: []occupancy.DPUConfig{{ID: "iv", PlusSpace: "l"}, {ID: "cu", PlusSpace: "l"},
			{ID: "ev", PlusSpace: "r", MinusSpace: "l"}},
	}
	s := openT(t, Options{})
	if err := s.PutVersion(occupancy.Version{At: t0, Topology: topo}); err != nil {
		t.Fatal(err)
	}
	opts := occupancy.Options{SettleAfter: 5 * minute, LateEvents: occupancy.LateApply}
	eng, err := occupancy.Open(opts, s, t0)
	if err != nil {
		t.Fatal(err)
	}
	// The input: reports of iv, cu and (unknown until a version at t0+60 min) nu,
	// events of ev, each delivered at its instant plus a delay.
	type item struct {
		at  int64
		rep *occupancy.Report
		ev  *occupancy.Event
	}
	var items []item
	deliver := func(ts int64, rep *occupancy.Report, ev *occupancy.Event) {
		d := int64(rng.IntN(3000))
		if rng.IntN(10) == 0 {
			d = 8*minute + int64(rng.IntN(20))*minute // late
		}
		for k := 0; k < 1+rng.IntN(2); k++ { // re-sent now and then
			items = append(items, item{at: ts + d + int64(k)*30_000, rep: rep, ev: ev})
		}
	}
	end := t0 + 120*minute
	for t := t0; t < end; t += 1000 * int64(20+rng.IntN(100)) {
		r := occupancy.Report{DPU: "iv", Kind: occupancy.ReportInterval, Start: t - 10_000, TS: t, In: int64(rng.IntN(40)), Out: int64(rng.IntN(30))}
		deliver(t, &r, nil)
	}
	for _, dpu := range []string{"cu", "nu"} {
		in, out := int64(1000), int64(900)
		for t := t0 + 1000; t < end; t += 1000 * int64(20+rng.IntN(100)) {
			if rng.IntN(15) == 0 {
				in, out = int64(rng.IntN(3)), int64(rng.IntN(3)) // reset
			} else {
				in, out = in+int64(rng.IntN(30)), out+int64(rng.IntN(25))
			}
			r := occupancy.Report{DPU: dpu, Kind: occupancy.ReportCumulative, TS: t, In: in, Out: out}
			if rng.IntN(10) != 0 { // else lost
				deliver(t, &r, nil)
			}
		}
	}
	for t := t0 + 500; t < end; t += 1000 * int64(1+rng.IntN(30)) {
		e := occupancy.Event{DPU: "ev", ID: fmt.Sprint(t), TS: t, Direction: int8(1 - 2*rng.IntN(2))}
		deliver(t, nil, &e)
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].at < items[j].at })

	added := false
	next := 0
	for now := t0 + 5000; now < end+40*minute; now += 5000 {
		if !added && now >= t0+60*minute {
			v := occupancy.Version{At: now, Topology: topo}
			v.Topology.DPUs = append(append([]occupancy.DPUConfig(nil), topo.DPUs...), occupancy.DPUConfig{ID: "nu", PlusSpace: "r"})
			if err := s.PutVersion(v); err != nil {
				t.Fatal(err)
			}
			if _, err := eng.AddVersion(v, now); err != nil {
				t.Fatal(err)
			}
			added = true
		}
		var evs []occupancy.Event
		var reps []occupancy.Report
		for ; next < len(items) && items[next].at <= now; next++ {
			if it := items[next]; it.rep != nil {
				r := *it.rep
				r.Received, r.Late = now, r.TS < eng.Horizon()
				reps = append(reps, r)
			} else {
				e := *it.ev
				e.Received, e.Late = now, e.TS < eng.Horizon()
				evs = append(evs, e)
			}
		}
		if len(evs)+len(reps) > 0 {
			ep, rp := make([]bool, len(evs)), make([]bool, len(reps))
			for i, e := range evs {
				ep[i] = !eng.Mappable(e.DPU, e.TS)
			}
			for i, r := range reps {
				rp[i] = !eng.Mappable(r.DPU, r.TS)
			}
			er, rr, err := s.AppendMixed(context.Background(), evs, ep, reps, rp)
			if err != nil {
				t.Fatal(err)
			}
			var freshE []occupancy.Event
			var freshR []occupancy.Report
			for i, e := range evs {
				if !er[i].Duplicate || (e.Late && !ep[i]) { // a late duplicate is applied again
					freshE = append(freshE, e)
				}
			}
			for i, r := range reps {
				if !rr[i].Duplicate || (r.Late && !rp[i]) {
					freshR = append(freshR, r)
				}
			}
			if _, err := eng.Apply(freshE, now); err != nil {
				t.Fatal(err)
			}
			if _, err := eng.ApplyReports(freshR, now); err != nil {
				t.Fatal(err)
			}
		}
		if st, ok := eng.Tick(now); ok {
			if err := s.Commit(st); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(80) == 0 { // a restart, from what is committed
			if eng, err = occupancy.Open(opts, s, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := expectedFromStore(t, s)
	check := func(eng *occupancy.Engine, what string) {
		t.Helper()
		for _, o := range eng.Spaces() {
			if o.Occupancy != want[o.Space] {
				t.Errorf("%s: %s is %d, the stored crossings make %d", what, o.Space, o.Occupancy, want[o.Space])
			}
		}
	}
	check(eng, "running")
	eng2, err := occupancy.Open(opts, s, end+41*minute)
	if err != nil {
		t.Fatal(err)
	}
	check(eng2, "reopened")
	if eng2.ParkedCount() != 0 || s.ParkedCount() != 0 {
		t.Errorf("parked: engine %d, store %d, want none", eng2.ParkedCount(), s.ParkedCount())
	}
}

// expectedFromStore counts, without clamping, what the stored input brings into and
// takes out of each space: iv and cu into l, nu into r, ev from l into r, b the sum.
func expectedFromStore(t *testing.T, s *Store) map[string]int64 {
	want := map[string]int64{}
	byDPU := map[string][]occupancy.Report{}
	for _, r := range allReports(t, s) {
		if r.Kind == occupancy.ReportInterval {
			want["l"] += r.In - r.Out
			continue
		}
		byDPU[r.DPU] = append(byDPU[r.DPU], r)
	}
	for dpu, rs := range byDPU {
		sp := map[string]string{"cu": "l", "nu": "r"}[dpu]
		for i := 1; i < len(rs); i++ {
			for c, pair := range [2][2]int64{{rs[i-1].In, rs[i].In}, {rs[i-1].Out, rs[i].Out}} {
				d := pair[1] - pair[0]
				if d < 0 {
					d = pair[1]
				}
				want[sp] += d * int64(1-2*c)
			}
		}
	}
	for _, e := range allEvents(t, s) {
		want["r"] += int64(e.Direction)
		want["l"] -= int64(e.Direction)
	}
	want["b"] = want["l"] + want["r"]
	return want
}
