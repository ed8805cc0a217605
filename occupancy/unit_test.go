package occupancy

import (
	"errors"
	"math/rand"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestDailyInstants(t *testing.T) {
	ber, _ := time.LoadLocation("Europe/Berlin")
	ny, _ := time.LoadLocation("America/New_York")
	lh, _ := time.LoadLocation("Australia/Lord_Howe")
	tests := []struct {
		name string
		loc  *time.Location
		day  time.Time
		hhmm int
		want time.Time
	}{
		{"winter", ber, time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC), 4 * 60, time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)},
		{"summer", ber, time.Date(2026, 7, 10, 0, 0, 0, 0, time.UTC), 4 * 60, time.Date(2026, 7, 10, 2, 0, 0, 0, time.UTC)},
		{"gap fires at its end", ber, time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), 2*60 + 30, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		{"gap start", ber, time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), 2 * 60, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		{"repeated hour fires first", ber, time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC), 2*60 + 30, time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)},
		{"new york gap", ny, time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), 2*60 + 15, time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		{"new york repeated", ny, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), 1*60 + 30, time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
		{"lord howe half-hour gap", lh, time.Date(2026, 10, 4, 0, 0, 0, 0, time.UTC), 2*60 + 10, time.Date(2026, 10, 3, 15, 30, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y, m, d := tc.day.Date()
			got := localInstant(y, m, d, tc.hhmm, tc.loc)
			if got != tc.want.UnixMilli() {
				t.Errorf("got %s, want %s", fmtMS(got), fmtMS(tc.want.UnixMilli()))
			}
		})
	}
	// Once per local day across a whole year in each zone, against the minute scan.
	for _, tz := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"} {
		loc, _ := time.LoadLocation(tz)
		from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		to := from + 10*86_400_000
		for _, hhmm := range []string{"02:30", "00:00", "23:59", "01:59", "03:00"} {
			m, _ := parseHHMM(hhmm)
			for _, off := range []int64{0, 27, 216} {
				f, tt := from+off*86_400_000, to+off*86_400_000
				got := dailyInstants(m, loc, f, tt)
				want := refDailyInstants(hhmm, tz, f, tt)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s %s +%dd: got %v, want %v", tz, hhmm, off, got, want)
				}
			}
		}
	}
}

func smallTopo() TopologyConfig {
	return TopologyConfig{
		Spaces: []SpaceConfig{{ID: "bldg", Capacity: 100}, {ID: "f1", Parent: "bldg"}, {ID: "f2", Parent: "bldg"}, {ID: "room", Parent: "f1"}},
		DPUs:   []DPUConfig{{ID: "door", PlusSpace: "room"}, {ID: "side", PlusSpace: "f2"}},
	}
}

func occ(t *testing.T, e *Engine, id string) int64 {
	t.Helper()
	o, ok := e.Current(id)
	if !ok {
		t.Fatalf("space %s unknown", id)
	}
	return o.Occupancy
}

func wantOcc(t *testing.T, e *Engine, want map[string]int64) {
	t.Helper()
	for id, w := range want {
		if got := occ(t, e, id); got != w {
			t.Errorf("%s: got %d, want %d", id, got, w)
		}
	}
}

// TestMoveCarriesCount: a version moving a space under another parent carries its
// current count (old ancestors drop, new ones rise, at the version instant), and a
// restart keeps it.
func TestMoveCarriesCount(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), t0)
	d.apply([]Event{{DPU: "door", TS: t0 + 1000, Direction: 1}, {DPU: "door", TS: t0 + 2000, Direction: 1}, {DPU: "side", TS: t0 + 3000, Direction: 1}}, t0+4000)
	wantOcc(t, d.eng, map[string]int64{"bldg": 3, "f1": 2, "f2": 1, "room": 2})
	moved := smallTopo()
	moved.Spaces[3].Parent = "f2"
	at := t0 + 10_000
	d.st.PutVersion(Version{At: at, Topology: moved})
	ch, err := d.eng.AddVersion(Version{At: at, Topology: moved}, at)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ch.Moved, []string{"room"}) || len(ch.Added)+len(ch.Removed) != 0 {
		t.Fatalf("version change: got %+v", ch)
	}
	wantOcc(t, d.eng, map[string]int64{"bldg": 3, "f1": 0, "f2": 3, "room": 2})
	if v, _ := d.eng.At("f1", at-1); v != 2 {
		t.Errorf("f1 before the move: got %d, want 2", v)
	}
	// Crossings after the move count through the new parent; before, through the old.
	d.apply([]Event{{DPU: "door", TS: at + 1000, Direction: -1}, {DPU: "door", TS: t0 + 5000, Direction: 1}}, at+2000)
	wantOcc(t, d.eng, map[string]int64{"bldg": 3, "f1": 0, "f2": 3, "room": 2})
	d.tick(at + 10*minute) // held since open
	d.tick(at + 20*minute)
	rows := d.st.rows["f2"]
	var kinds []EntryKind
	for _, r := range rows {
		kinds = append(kinds, r.Kind)
	}
	if !reflect.DeepEqual(kinds, []EntryKind{KindEvent, KindMove, KindEvent}) {
		t.Errorf("f2 row kinds: got %v", kinds)
	}
	d.reopen(at + 21*minute)
	wantOcc(t, d.eng, map[string]int64{"bldg": 3, "f1": 0, "f2": 3, "room": 2})
}

// TestVersionMapping: an event maps through the version in force at its ts; a DPU's
// first mapping covers earlier time; moving a DPU does not change earlier counts.
func TestVersionMapping(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), t0)
	// "new" is unknown: parked.
	d.apply([]Event{{DPU: "new", TS: t0 + 1000, Direction: 1}}, t0+1500)
	if d.eng.ParkedCount() != 1 || d.eng.Mappable("new", t0) {
		t.Fatalf("parked: got %d", d.eng.ParkedCount())
	}
	v2 := smallTopo()
	v2.DPUs = append(v2.DPUs, DPUConfig{ID: "new", PlusSpace: "f2"})
	v2.DPUs[0].PlusSpace = "f2" // door moves to f2
	at := t0 + 60_000
	d.addVersion(Version{At: at, Topology: v2}, at)
	if d.eng.ParkedCount() != 0 || !d.eng.Mappable("new", t0-86_400_000) {
		t.Fatalf("after version: parked %d", d.eng.ParkedCount())
	}
	d.apply([]Event{{DPU: "door", TS: t0 + 2000, Direction: 1}, {DPU: "door", TS: at + 1, Direction: 1}}, at+2)
	wantOcc(t, d.eng, map[string]int64{"bldg": 3, "f1": 1, "room": 1, "f2": 2})
	st, ok := d.eng.Tick(at + 3)
	if !ok || len(st.Unparked) != 1 || st.Unparked[0].DPU != "new" {
		t.Fatalf("settlement: got %+v, %v", st.Unparked, ok)
	}
}

func TestQueryErrors(t *testing.T) {
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), testNow)
	if _, err := d.eng.At("nope", testNow); !errors.Is(err, ErrUnknownSpace) {
		t.Errorf("At: got %v", err)
	}
	if _, err := d.eng.Counts("nope", testNow, testNow+1, 1); !errors.Is(err, ErrUnknownSpace) {
		t.Errorf("Counts: got %v", err)
	}
	if err := d.eng.Reset(Reset{Space: "nope", TS: testNow}, testNow); !errors.Is(err, ErrUnknownSpace) {
		t.Errorf("Reset: got %v", err)
	}
	if err := d.eng.Reset(Reset{Space: "bldg", TS: d.eng.Horizon() - 1}, testNow); err == nil {
		t.Errorf("Reset before the horizon: want an error")
	}
	for _, c := range [][3]int64{{0, 10, 0}, {10, 10, 1}, {0, 1_000_000, 1}} {
		if _, err := d.eng.Counts("bldg", testNow+c[0], testNow+c[1], c[2]); err == nil {
			t.Errorf("Counts%v: want an error", c)
		}
	}
	if _, err := d.eng.AddVersion(Version{At: testNow - 1, Topology: smallTopo()}, testNow); err == nil {
		t.Errorf("AddVersion before the latest: want an error")
	}
	bad := smallTopo()
	bad.DPUs[0].PlusSpace = "nowhere"
	if _, err := d.eng.AddVersion(Version{At: testNow + 1, Topology: bad}, testNow); err == nil {
		t.Errorf("AddVersion of a bad topology: want an error")
	}
}

// TestCapacityChangeFeed: a capacity change alone is a change.
func TestCapacityChangeFeed(t *testing.T) {
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), testNow)
	if got := d.eng.Changed(); len(got) != 0 {
		t.Fatalf("after open: got %v", got)
	}
	v2 := smallTopo()
	v2.Spaces[1].Capacity = 7
	d.addVersion(Version{At: testNow + 1, Topology: v2}, testNow+1)
	if got := d.eng.Changed(); !reflect.DeepEqual(got, []string{"f1"}) {
		t.Fatalf("got %v, want [f1]", got)
	}
}

// TestRewind: events imported into history (stored below the horizon) are folded in
// by Rewind; the rewritten rows equal the true timeline.
func TestRewind(t *testing.T) {
	for seed := int64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewSource(seed))
		sc := genScenario(rng, false)
		opts := Options{SettleAfter: sc.settle, LateEvents: LateApply, ClampNegative: true}
		d := newDriver(t, opts, sc.topo, sc.t0)
		// Hold back a third of the stream; import it at the end.
		var imported []Event
		var live []delivery
		for _, x := range sc.stream {
			if rng.Intn(3) == 0 {
				imported = append(imported, x.ev)
			} else {
				live = append(live, x)
			}
		}
		sc.stream = live
		c := newChecker(t, d.eng, false)
		sc.run(rng, []*driver{d}, func(int64, int) {})
		now := sc.end + sc.settle + 3*sc.step
		from := now
		for i := range imported {
			imported[i].Received = 0
			from = min(from, imported[i].TS)
		}
		d.st.Append(imported, nil)
		st, err := d.eng.Rewind(from, now)
		if err != nil {
			t.Fatal(err)
		}
		if st.RewriteFrom != from {
			t.Fatalf("RewriteFrom: got %d, want %d", st.RewriteFrom, from)
		}
		if err := d.st.Commit(st); err != nil {
			t.Fatal(err)
		}
		c.exactOld = true
		c.lastCur = map[string]int64{}
		for _, o := range d.eng.Spaces() {
			c.lastCur[o.Space], c.lastCap[o.Space] = o.Occupancy, o.Capacity
		}
		d.eng.Changed()
		c.check(d, rng, now, sc.t0)
	}
}

// TestHorizon: H holds still for SettleAfter after Open and after Hold, then follows
// now-SettleAfter and never moves back; Tick reports a settlement only when there is
// something to commit.
func TestHorizon(t *testing.T) {
	const settle = 5 * minute
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: settle, ClampNegative: true}, smallTopo(), t0)
	h0 := d.eng.Horizon()
	if _, ok := d.eng.Tick(t0 + settle - 1); ok {
		t.Fatalf("tick during the hold: want nothing to commit")
	}
	if d.eng.Horizon() != h0 {
		t.Fatalf("horizon moved during the hold")
	}
	st, ok := d.eng.Tick(t0 + settle + 1000)
	if !ok || d.eng.Horizon() != t0+1000 || st.Checkpoint.Horizon != t0+1000 {
		t.Fatalf("after the hold: got H %s (ok %v)", fmtMS(d.eng.Horizon()), ok)
	}
	d.eng.Hold(t0 + settle + 2000)
	d.eng.Tick(t0 + 2*settle)
	if d.eng.Horizon() != t0+1000 {
		t.Fatalf("horizon moved during Hold: %s", fmtMS(d.eng.Horizon()))
	}
	d.eng.Tick(t0 + 2*settle + 3000)
	if got, want := d.eng.Horizon(), t0+settle+3000; got != want {
		t.Fatalf("after Hold: got %s, want %s", fmtMS(got), fmtMS(want))
	}
	d.eng.Tick(t0) // a clock going back does not move H back
	if got, want := d.eng.Horizon(), t0+settle+3000; got != want {
		t.Fatalf("clock back: got %s, want %s", fmtMS(got), fmtMS(want))
	}
	// A late event under apply: a correction row at H, committed at the next tick
	// even though H does not move.
	now := t0 + 2*settle + 3000
	d.apply([]Event{{DPU: "door", TS: t0 + 500, Direction: 1}}, now)
	if d.late != 1 {
		t.Fatalf("late: got %d, want 1", d.late)
	}
	st, ok = d.eng.Tick(now)
	if !ok || len(st.Rows) != 0 || len(st.Checkpoint.State) == 0 {
		t.Fatalf("dirty tick: got ok %v, %d rows, state %q", ok, len(st.Rows), st.Checkpoint.State)
	}
	if err := d.st.Commit(st); err != nil {
		t.Fatal(err)
	}
	wantOcc(t, d.eng, map[string]int64{"room": 1, "f1": 1, "bldg": 1})
	d.tick(now + minute)
	var kinds []EntryKind
	for _, r := range d.st.rows["room"] {
		kinds = append(kinds, r.Kind)
	}
	if !reflect.DeepEqual(kinds, []EntryKind{KindCorrection}) {
		t.Fatalf("room rows: got kinds %v, want one correction", kinds)
	}
}

// TestNewStoreHorizon (issue 10 item 1): on a new store H starts at the first
// start - settle_after, so crossings dated in the minutes before the first start are
// pending: they show in At at their own instants and in Counts buckets with their
// entrances, not as one correction at the start. A store reopened before its first
// checkpoint replays everything stored, even events before that H.
func TestNewStoreHorizon(t *testing.T) {
	const settle = 5 * minute
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: settle, ClampNegative: true}, smallTopo(), t0)
	if got, want := d.eng.Horizon(), t0-settle; got != want {
		t.Fatalf("horizon of a new store: got %s, want %s", fmtMS(got), fmtMS(want))
	}
	// The report: three crossings dated 60 s, 50 s and 40 s before the start.
	var evs []Event
	for i, ago := range []int64{60, 50, 40} {
		evs = append(evs, Event{DPU: "door", ID: strconv.Itoa(i), TS: t0 - ago*1000, Direction: 1})
	}
	d.apply(evs, t0+100)
	if d.late != 0 {
		t.Fatalf("late: got %d, want 0", d.late)
	}
	check := func(when string) {
		t.Helper()
		wantOcc(t, d.eng, map[string]int64{"room": 3, "f1": 3, "bldg": 3})
		for _, c := range []struct{ at, want int64 }{{t0 - 61_000, 0}, {t0 - 60_000, 1}, {t0 - 45_000, 2}, {t0 - 40_000, 3}, {t0, 3}} {
			if got, err := d.eng.At("room", c.at); err != nil || got != c.want {
				t.Errorf("%s: at(room, %s): got %d, %v, want %d", when, fmtMS(c.at), got, err, c.want)
			}
		}
		got, err := d.eng.Counts("room", t0-3*minute, t0+minute, minute)
		if err != nil {
			t.Fatal(err)
		}
		want := []Bucket{
			{Start: t0 - 3*minute, End: t0 - 2*minute},
			{Start: t0 - 2*minute, End: t0 - minute},
			{Start: t0 - minute, End: t0, Occupancy: 3, Min: 0, Max: 3, Entrances: 3},
			{Start: t0, End: t0 + minute, Occupancy: 3, Min: 3, Max: 3},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: counts(room):\n got %+v\nwant %+v", when, got, want)
		}
	}
	check("pending")
	d.tick(t0 + settle + 2*minute) // after the hold: everything settles as it is
	if got, want := d.eng.Horizon(), t0+2*minute; got != want {
		t.Fatalf("horizon after the hold: got %s, want %s", fmtMS(got), fmtMS(want))
	}
	check("settled")

	t.Run("reopened before the first checkpoint", func(t *testing.T) {
		d := newDriver(t, Options{SettleAfter: settle, ClampNegative: true}, smallTopo(), t0)
		// Stored (the process died before it committed a correction): an event long
		// before the first H, and one inside the window.
		d.st.Append([]Event{{DPU: "door", TS: t0 - time.Hour.Milliseconds(), Direction: 1}, {DPU: "side", TS: t0 - minute, Direction: 1}}, nil)
		d.reopen(t0 + minute)
		if got, want := d.eng.Horizon(), t0-time.Hour.Milliseconds(); got != want {
			t.Fatalf("horizon: got %s, want %s", fmtMS(got), fmtMS(want))
		}
		wantOcc(t, d.eng, map[string]int64{"room": 1, "f2": 1, "bldg": 2})
	})
}

// TestCorrectionCounts (issue 10 item 2): a late-event correction counts the late
// crossings as entrances and exits, in the pending bucket and in the settled row,
// so that the bucket adds up and a day's entrances count every crossing once; a
// late entrance before an exit that was absorbed at 0 makes that exit count too.
func TestCorrectionCounts(t *testing.T) {
	const settle = 5 * minute
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: settle, ClampNegative: true}, smallTopo(), t0)
	d.apply([]Event{{DPU: "door", ID: "1", TS: t0 + 1000, Direction: -1}}, t0+1000) // absorbed at 0
	d.tick(t0 + settle + 2*minute)
	h := d.eng.Horizon() // t0 + 2m
	// Late: two entrances and an exit before the absorbed exit, one entrance after.
	late := []Event{
		{DPU: "door", ID: "a", TS: t0 - 3000, Direction: 1},
		{DPU: "door", ID: "b", TS: t0 - 2000, Direction: 1},
		{DPU: "door", ID: "c", TS: t0 - 1000, Direction: -1},
		{DPU: "door", ID: "d", TS: t0 + 2000, Direction: 1},
	}
	now := t0 + settle + 3*minute
	d.apply(late, now)
	d.tick(now)
	// True timeline: +1 +1 -1 -1(now counted) +1 = 1; 3 entrances, 2 exits, of which
	// the rows before H counted none.
	wantCorr := Bucket{Start: h, End: h + minute, Occupancy: 1, Min: 0, Max: 1, Entrances: 3, Exits: 2}
	check := func(when string) {
		t.Helper()
		got, err := d.eng.Counts("room", h, h+minute, minute)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != wantCorr {
			t.Errorf("%s: bucket of the correction: got %+v, want %+v", when, got[0], wantCorr)
		}
		day, err := d.eng.Counts("room", t0-time.Hour.Milliseconds(), now+minute, now+minute-(t0-time.Hour.Milliseconds()))
		if err != nil {
			t.Fatal(err)
		}
		if day[0].Entrances != 3 || day[0].Exits != 2 || day[0].Occupancy != 1 {
			t.Errorf("%s: the whole day: got %+v, want 3 entrances, 2 exits, occupancy 1", when, day[0])
		}
	}
	check("pending")
	d.tick(now + settle + minute)
	check("settled")
	var corr []Row
	for _, r := range d.st.rows["room"] {
		if r.Kind == KindCorrection {
			corr = append(corr, r)
		}
	}
	if want := []Row{{Space: "room", TS: h, Occupancy: 1, Entrances: 3, Exits: 2, Kind: KindCorrection}}; !reflect.DeepEqual(corr, want) {
		t.Errorf("correction rows: got %+v, want %+v", corr, want)
	}
	// The same late event again (a redelivery the gateway applies again, in case its
	// correction was never committed) counts nothing more.
	if res, err := d.eng.Apply(late[:1], now+settle+2*minute); err != nil || res.Late != 1 {
		t.Fatalf("apply again: got %+v, %v", res, err)
	}
	d.tick(now + settle + 2*minute)
	check("redelivered")
}

// TestRewindAcrossCorrection: an import whose earliest event lies inside the span
// of a late correction rewrites from before that span: the late event keeps
// counting (it was lost, value and crossing, when the rewrite dropped the
// correction and kept the rows that miss it).
func TestRewindAcrossCorrection(t *testing.T) {
	const settle = 5 * minute
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: settle, ClampNegative: true}, smallTopo(), t0)
	d.apply([]Event{{DPU: "door", ID: "1", TS: t0 + 1000, Direction: 1}}, t0+1000)
	d.tick(t0 + settle + 10*minute)
	d.apply([]Event{{DPU: "door", ID: "late", TS: t0 + 2000, Direction: 1}}, t0+settle+10*minute)
	now := t0 + settle + 20*minute
	d.tick(now)
	imp := []Event{{DPU: "door", ID: "imported", TS: t0 + 3*minute, Direction: 1}}
	d.st.Append(imp, nil)
	st, err := d.eng.Rewind(imp[0].TS, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.RewriteFrom != t0+2000 {
		t.Errorf("RewriteFrom: got %s, want the late event's ts %s", fmtMS(st.RewriteFrom), fmtMS(t0+2000))
	}
	if err := d.st.Commit(st); err != nil {
		t.Fatal(err)
	}
	wantOcc(t, d.eng, map[string]int64{"room": 3, "f1": 3, "bldg": 3})
	var got []Row
	for _, r := range d.st.rows["room"] {
		got = append(got, Row{TS: r.TS, Occupancy: r.Occupancy, Entrances: r.Entrances, Kind: r.Kind})
	}
	want := []Row{{TS: t0 + 1000, Occupancy: 1, Entrances: 1}, {TS: t0 + 2000, Occupancy: 2, Entrances: 1}, {TS: t0 + 3*minute, Occupancy: 3, Entrances: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows of room after the rewrite:\n got %+v\nwant %+v", got, want)
	}
}

// TestResets: a manual reset to 0 zeroes the space and everything nested in it; to
// N > 0 it sets the space alone; a daily reset in local time zeroes the subtree.
func TestResets(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC).UnixMilli() // 03:00 in Berlin
	topo := smallTopo()
	topo.Spaces[1].TimeZone, topo.Spaces[1].DailyReset = "Europe/Berlin", "04:00"
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, topo, t0)
	var evs []Event
	for i := 0; i < 5; i++ {
		evs = append(evs, Event{DPU: "door", TS: t0 + int64(i), Direction: 1}, Event{DPU: "side", TS: t0 + int64(i), Direction: 1})
	}
	d.apply(evs, t0+10)
	wantOcc(t, d.eng, map[string]int64{"bldg": 10, "f1": 5, "room": 5, "f2": 5})
	d.reset(Reset{Space: "f2", TS: t0 + 20, Occupancy: 2}, t0+20)
	wantOcc(t, d.eng, map[string]int64{"bldg": 10, "f1": 5, "room": 5, "f2": 2})
	d.reset(Reset{Space: "bldg", TS: t0 + 30, Occupancy: 7}, t0+30)
	wantOcc(t, d.eng, map[string]int64{"bldg": 7, "f1": 5, "room": 5, "f2": 2})
	// Daily reset of f1 at 04:00 Berlin = 03:00Z: f1 and room to 0, bldg untouched.
	d.tick(t0 + 3_600_000)
	wantOcc(t, d.eng, map[string]int64{"bldg": 7, "f1": 0, "room": 0, "f2": 2})
	if v, _ := d.eng.At("room", t0+3_600_000-1); v != 5 {
		t.Fatalf("room before the daily reset: got %d, want 5", v)
	}
	d.reset(Reset{Space: "bldg", TS: t0 + 3_700_000}, t0+3_700_000)
	wantOcc(t, d.eng, map[string]int64{"bldg": 0, "f1": 0, "room": 0, "f2": 0})
}

// TestRemovedSpace: a version removing a space reports it; it leaves the current
// topology (Current, Spaces, Changed) but its history stays queryable.
func TestRemovedSpace(t *testing.T) {
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), testNow)
	d.apply([]Event{{DPU: "side", TS: testNow + 1, Direction: 1}}, testNow+2)
	v2 := smallTopo()
	v2.Spaces = v2.Spaces[:2] // drop f2 and room
	v2.Spaces = append(v2.Spaces, SpaceConfig{ID: "annex"})
	v2.DPUs = []DPUConfig{{ID: "door", PlusSpace: "annex"}}
	d.st.PutVersion(Version{At: testNow + 10, Topology: v2})
	ch, err := d.eng.AddVersion(Version{At: testNow + 10, Topology: v2}, testNow+10)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ch.Removed, []string{"f2", "room"}) || !reflect.DeepEqual(ch.Added, []string{"annex"}) {
		t.Fatalf("change: got %+v", ch)
	}
	if _, ok := d.eng.Current("f2"); ok {
		t.Fatalf("removed space still current")
	}
	var ids []string
	for _, o := range d.eng.Spaces() {
		ids = append(ids, o.Space)
	}
	if !reflect.DeepEqual(ids, []string{"bldg", "f1", "annex"}) {
		t.Fatalf("spaces: got %v", ids)
	}
	if v, err := d.eng.At("f2", testNow+5); err != nil || v != 1 {
		t.Fatalf("history of a removed space: got %d, %v", v, err)
	}
	d.eng.Changed()
	d.apply([]Event{{DPU: "side", TS: testNow + 11, Direction: 1}, {DPU: "door", TS: testNow + 12, Direction: 1}}, testNow+20)
	if got := d.eng.Changed(); !reflect.DeepEqual(got, []string{"annex"}) {
		t.Fatalf("changed: got %v, want [annex]", got)
	}
	if d.eng.ParkedCount() != 1 {
		t.Fatalf("side is in no later version: got %d parked, want 1", d.eng.ParkedCount())
	}
}

func TestApplyBadDirection(t *testing.T) {
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), testNow)
	res, err := d.eng.Apply([]Event{{DPU: "door", TS: testNow + 1, Direction: 2}, {DPU: "door", TS: testNow + 2, Direction: 1}}, testNow+3)
	if err == nil || res.Applied != 1 {
		t.Fatalf("got %+v, %v; want 1 applied and an error", res, err)
	}
	wantOcc(t, d.eng, map[string]int64{"room": 1})
}
