package refmodel

import (
	"reflect"
	"testing"
)

// The model against figures worked out by hand.
func TestModelByHand(t *testing.T) {
	const s, min = 1000, 60_000
	cfg := Config{
		Spaces:      []Space{{ID: "bldg"}, {ID: "room", Parent: "bldg"}},
		DPUs:        []DPU{{ID: "door", Plus: "room"}, {ID: "inner", Plus: "room", Minus: "bldg"}},
		SettleAfter: 5 * min,
		Clamp:       true,
	}
	t0 := int64(1_800_000_000_000)
	m := New(cfg)
	m.Start(t0)
	if got, want := m.Horizon(), t0-5*min; got != want {
		t.Fatalf("horizon of a new store: got %d, want %d", got, want)
	}
	// The backlog, 60, 50 and 40 s before the start: pending.
	if late := m.Receive([]Event{{DPU: "door", ID: "1", TS: t0 - 60*s, Dir: 1}, {DPU: "door", ID: "2", TS: t0 - 50*s, Dir: 1}, {DPU: "door", ID: "3", TS: t0 - 40*s, Dir: 1}}); late != 0 {
		t.Fatalf("late: got %d, want 0", late)
	}
	if got := m.At("room", t0-45*s); got != 2 {
		t.Errorf("at(room, -45 s): got %d, want 2", got)
	}
	// Moving within the building: room -1, bldg unchanged.
	m.Receive([]Event{{DPU: "inner", TS: t0 + s, Dir: -1}})
	if r, b := m.Current("room"), m.Current("bldg"); r != 2 || b != 3 {
		t.Errorf("current: room %d bldg %d, want 2 and 3", r, b)
	}
	m.Tick(t0 + 4*min) // held
	if m.Horizon() != t0-5*min {
		t.Fatalf("the horizon moved during the hold")
	}
	m.Tick(t0 + 10*min)
	h := m.Horizon()
	// Late, before the exit of "inner" at t0+1s: an exit, and an entrance that a
	// clamped exit at 0 absorbs in the true timeline (room: 3 2 1 0 -> exit at 0).
	m.Receive([]Event{{DPU: "door", ID: "x", TS: t0 - 30*s, Dir: -1}, {DPU: "door", ID: "y", TS: t0 - 20*s, Dir: -1}, {DPU: "door", ID: "z", TS: t0 - 10*s, Dir: -1}})
	// Rows as settled: room 1 2 3, then 2 (inner exit). True: 1 2 3 2 1 0, then the
	// inner exit is absorbed at 0: 3 in, 3 out; the rows counted 3 in, 1 out.
	got := m.Counts("room", []int64{h, h + min})
	want := []Bucket{{Start: h, End: h + min, Occupancy: 0, Min: 0, Max: 2, Entrances: 0, Exits: 2, CarriedIn: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bucket of the correction: got %+v, want %+v", got, want)
	}
	if in, out := m.TrueTotals("room"); in != 3 || out != 3 {
		t.Errorf("true totals: got %d/%d, want 3/3", in, out)
	}
	all := m.Counts("room", []int64{t0 - 10*min, h + min})
	if all[0].Entrances != 3 || all[0].Exits != 3 {
		t.Errorf("all time: got %+v, want 3 entrances, 3 exits", all[0])
	}
	if got := m.At("room", t0+2*s); got != 2 {
		t.Errorf("settled history at +2 s: got %d, want 2 (as it was known)", got)
	}
}
