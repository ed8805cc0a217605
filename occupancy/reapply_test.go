package occupancy

import "testing"

// TestLateApplyIsIdempotent: a late event's correction is computed by a replay of
// the stored events, so applying a stored late event again changes nothing. Open
// relies on it (a late event whose correction no checkpoint holds is corrected again
// at start), and so does the gateway (a late event redelivered as a duplicate is
// applied again).
func TestLateApplyIsIdempotent(t *testing.T) {
	const settle = 5 * minute
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: settle, LateEvents: LateApply, ClampNegative: true}, smallTopo(), t0)
	now := t0 + 2*settle
	d.tick(now)
	h := d.eng.Horizon()
	d.apply([]Event{{DPU: "door", ID: "1", TS: h - 3*minute, Direction: 1}}, now)
	d.apply([]Event{{DPU: "door", ID: "2", TS: h - 2*minute, Direction: 1}, {DPU: "side", ID: "1", TS: h - minute, Direction: 1}}, now)
	d.apply([]Event{{DPU: "door", ID: "3", TS: h + minute, Direction: -1}}, now) // pending
	want := map[string]int64{"room": 1, "f1": 1, "f2": 1, "bldg": 2}
	wantOcc(t, d.eng, want)

	t.Run("applied again", func(t *testing.T) {
		again := []Event{{DPU: "door", ID: "1", TS: h - 3*minute, Direction: 1, Late: true}, {DPU: "side", ID: "1", TS: h - minute, Direction: 1, Late: true}}
		if _, err := d.eng.Apply(again, now); err != nil {
			t.Fatal(err)
		}
		wantOcc(t, d.eng, want)
	})

	t.Run("stored but never applied before a restart", func(t *testing.T) {
		st, ok := d.eng.Tick(now + 1000)
		if ok {
			if err := d.st.Commit(st); err != nil {
				t.Fatal(err)
			}
		}
		// Stored (acknowledged), then the process dies before Apply or before the
		// commit of its correction.
		lost := Event{DPU: "side", ID: "2", TS: h - 30_000, Direction: 1, Late: true}
		d.st.Append([]Event{lost}, []bool{false})
		eng, err := Open(d.opts, d.st, now+2000)
		if err != nil {
			t.Fatal(err)
		}
		// Before the checkpoint's horizon, so not replayed, but kept as late by the
		// store: corrected at start.
		wantOcc(t, eng, map[string]int64{"room": 1, "f1": 1, "f2": 2, "bldg": 3})
		// Redelivered: the store says duplicate, the gateway applies it again.
		if _, err := eng.Apply([]Event{lost}, now+3000); err != nil {
			t.Fatal(err)
		}
		wantOcc(t, eng, map[string]int64{"room": 1, "f1": 1, "f2": 2, "bldg": 3})
		if _, err := eng.Apply([]Event{lost}, now+4000); err != nil {
			t.Fatal(err)
		}
		wantOcc(t, eng, map[string]int64{"room": 1, "f1": 1, "f2": 2, "bldg": 3})
	})
}

func TestPending(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), t0)
	if got := d.eng.Pending(); got != 0 {
		t.Fatalf("new engine: got %d pending, want 0", got)
	}
	// door: room, f1, bldg; side: f2, bldg.
	d.apply([]Event{{DPU: "door", TS: t0 + 1, Direction: 1}, {DPU: "side", TS: t0 + 2, Direction: 1}}, t0+3)
	if got, want := d.eng.Pending(), 5; got != want {
		t.Fatalf("got %d pending entries, want %d", got, want)
	}
	d.tick(t0 + 5*minute + 10)
	if got := d.eng.Pending(); got != 0 {
		t.Fatalf("after settling: got %d pending, want 0", got)
	}
}
