package tracker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/occupancy"
)

// These tests run the tracker over a real Badger store in t.TempDir() and the real
// engine, on a clock the test sets, and compare with a model written here.

// testTopology: a building with a floor and a room; d1 leads in from outside to
// the floor, d2 from the floor into the room.
var testTopology = occupancy.TopologyConfig{
	Spaces: []occupancy.SpaceConfig{
		{ID: "hq", Name: "HQ"}, {ID: "f1", Name: "Floor 1", Parent: "hq"}, {ID: "r1", Name: "Room 1", Parent: "f1", Capacity: 4},
	},
	Doorways: []occupancy.DoorwayConfig{{ID: "main", Name: "Main"}, {ID: "door", Name: "Door"}},
	DPUs: []occupancy.DPUConfig{
		{ID: "d1", Doorway: "main", PlusSpace: "f1"},
		{ID: "d2", Doorway: "door", PlusSpace: "r1", MinusSpace: "f1"},
	},
}

const (
	t0     = int64(1_795_000_000_000) // 2026-11-18
	settle = int64(5 * 60_000)
)

type env struct {
	t     testing.TB
	dir   string
	clock atomic.Int64
	st    *buffer.Store
	tr    *Tracker
}

func newEnv(t testing.TB) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.clock.Store(t0)
	return e
}

func (e *env) now() time.Time { return time.UnixMilli(e.clock.Load()) }

func (e *env) options(store Store) Options {
	topo := testTopology
	return Options{
		Store:         store,
		Engine:        occupancy.Options{SettleAfter: settle, LateEvents: occupancy.LateApply, ClampNegative: true},
		MaxParked:     1000,
		Topology:      &topo,
		MaxFutureSkew: time.Minute,
		Logger:        zerolog.Nop(),
		Now:           e.now,
	}
}

// open opens the store (and closes it when the test ends) and the tracker over it,
// wrapped by wrap when given.
func (e *env) open(mod func(*Options), wrap ...func(*buffer.Store) Store) *Tracker {
	t := e.t
	st, err := buffer.Open(buffer.Options{Dir: filepath.Join(e.dir, "data"), Logger: zerolog.Nop(), MinFreeBytes: -1, Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var store Store = st
	if len(wrap) > 0 {
		store = wrap[0](st)
	}
	o := e.options(store)
	if mod != nil {
		mod(&o)
	}
	tr, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	e.st, e.tr = st, tr
	return tr
}

func (e *env) tick() TickStats {
	e.t.Helper()
	ts, err := e.tr.Tick()
	if err != nil {
		e.t.Fatal(err)
	}
	return ts
}

func occ(tr *Tracker, space string) int64 {
	o, _ := tr.Space(space)
	return o.Occupancy
}

// ---- the model ----

// walk generates n crossings from ts on, one every step ms, that never take a
// space below zero in ts order (so clamping never acts), with integer ids per DPU.
// deltas gives each crossing's effect per space, for the model.
func walk(rng *rand.Rand, n int, ts, step int64) []occupancy.Event {
	var f1, r1 int64 // people on the floor outside the room, in the room
	seq := map[string]int{}
	evs := make([]occupancy.Event, 0, n)
	for len(evs) < n {
		ts += 1 + rng.Int64N(step)
		var dpu string
		var dir int8
		switch k := rng.IntN(4); {
		case k == 0 || f1+r1 == 0:
			dpu, dir, f1 = "d1", 1, f1+1
		case k == 1 && f1 > 0:
			dpu, dir, f1 = "d1", -1, f1-1
		case k == 2 && f1 > 0:
			dpu, dir, f1, r1 = "d2", 1, f1-1, r1+1
		case r1 > 0:
			dpu, dir, f1, r1 = "d2", -1, f1+1, r1-1
		default:
			continue
		}
		seq[dpu]++
		evs = append(evs, occupancy.Event{DPU: dpu, ID: fmt.Sprint(seq[dpu]), TS: ts, Direction: dir, Received: ts})
	}
	return evs
}

// modelAt is every space's occupancy after the events with ts <= at (DESIGN 1:
// entering the floor raises floor and building, the room raises room, floor and
// building; floor <-> room changes the room alone).
func modelAt(evs []occupancy.Event, at int64) map[string]int64 {
	m := map[string]int64{"hq": 0, "f1": 0, "r1": 0}
	for _, e := range evs {
		if e.TS > at {
			continue
		}
		d := int64(e.Direction)
		switch e.DPU {
		case "d1":
			m["hq"] += d
			m["f1"] += d
		case "d2":
			m["r1"] += d
		}
	}
	return m
}

// ---- tests ----

// TestIngestMatchesModel: events arrive shuffled, in batches from concurrent
// callers, with redeliveries, while ticks settle part of them; every identity is
// accepted exactly once and duplicates are reported as such, and occupancy now and
// at past instants (settled or pending) is the model's.
func TestIngestMatchesModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			e := newEnv(t)
			tr := e.open(nil)
			evs := walk(rng, 600, t0, 800) // ~4 min of events after the first version
			// Deliveries: each event once, a fifth of them again; shuffled within a
			// window, cut into batches, handed to 4 callers.
			var sends []occupancy.Event
			for _, ev := range evs {
				sends = append(sends, ev)
				if rng.IntN(5) == 0 {
					sends = append(sends, ev)
				}
			}
			for i := range sends {
				if j := i + rng.IntN(40); j < len(sends) {
					sends[i], sends[j] = sends[j], sends[i]
				}
			}
			var batches [][]occupancy.Event
			for i := 0; i < len(sends); {
				n := 1 + rng.IntN(30)
				batches = append(batches, sends[i:min(i+n, len(sends))])
				i += n
			}
			// Within the hold after open: the horizon stays at the first version, so
			// nothing is late whatever the arrival order.
			e.clock.Store(t0 + settle - 1)
			if last := evs[len(evs)-1].TS; last >= t0+settle-1 {
				t.Fatalf("the walk ends at %d, after the hold", last)
			}
			var mu sync.Mutex
			outcomes := map[string][]Outcome{}
			var wg sync.WaitGroup
			work := make(chan []occupancy.Event)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for b := range work {
						res, err := tr.Ingest(context.Background(), b)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for i, r := range res {
							k := string(b[i].Key())
							outcomes[k] = append(outcomes[k], r.Outcome)
						}
						mu.Unlock()
					}
				}()
			}
			for i, b := range batches {
				work <- b
				if i%10 == 9 {
					e.tick()
				}
			}
			close(work)
			wg.Wait()

			for _, ev := range evs {
				got := outcomes[string(ev.Key())]
				acc := 0
				for _, o := range got {
					switch o {
					case Accepted:
						acc++
					case Duplicate:
					default:
						t.Errorf("event %s/%s: outcome %v", ev.DPU, ev.ID, o)
					}
				}
				if acc != 1 {
					t.Errorf("event %s/%s: accepted %d times (%v), want once", ev.DPU, ev.ID, acc, got)
				}
			}
			check := func(when string) {
				t.Helper()
				want := modelAt(evs, 1<<62)
				for id, w := range want {
					if got := occ(tr, id); got != w {
						t.Errorf("%s: %s = %d, want %d", when, id, got, w)
					}
				}
				for i := 0; i < 30; i++ {
					at := evs[rng.IntN(len(evs))].TS - int64(rng.IntN(2))
					want := modelAt(evs, at)
					for id, w := range want {
						if got, err := tr.At(id, at); err != nil || got != w {
							t.Errorf("%s: %s at %d = %d, %v; want %d", when, id, at, got, err, w)
						}
					}
				}
			}
			check("pending")
			// Past the hold: the horizon moves over part, then all, of the events.
			e.clock.Store(evs[len(evs)/2].TS + settle + settle)
			e.tick()
			e.clock.Store(evs[len(evs)/2].TS + settle)
			check("half settled") // (the clock went back: H only moves forward)
			e.clock.Store(evs[len(evs)-1].TS + 3*settle)
			if h := e.tick().Horizon; h <= evs[len(evs)-1].TS {
				t.Fatalf("horizon %d not past the last event %d", h, evs[len(evs)-1].TS)
			}
			check("settled")
		})
	}
}

// TestIngestLateAndParked: under late_events drop an event before the horizon is
// rejected as late (and not stored); under apply it is stored, corrected and
// committed before Ingest returns. An event of an unknown DPU is parked until
// storage.max_parked are, then rejected as unknown_dpu.
func TestIngestLateAndParked(t *testing.T) {
	t.Run("drop", func(t *testing.T) {
		e := newEnv(t)
		tr := e.open(func(o *Options) { o.Engine.LateEvents = occupancy.LateDrop })
		h := tr.Horizon()
		res, err := tr.Ingest(context.Background(), []occupancy.Event{
			{DPU: "d1", ID: "1", TS: h - 1, Direction: 1},
			{DPU: "d1", ID: "2", TS: h + 1, Direction: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Outcome != Rejected || res[0].Rejection.Reason != occupancy.ReasonLate || res[0].Rejection.Index != -1 {
			t.Errorf("late event: got %+v, want rejected late", res[0])
		}
		if res[1].Outcome != Accepted {
			t.Errorf("pending event: got %v, want accepted", res[1].Outcome)
		}
		n := 0
		_ = e.st.Events(0, 1<<62, func(occupancy.Event) error { n++; return nil })
		if n != 1 {
			t.Errorf("stored events: got %d, want 1 (a dropped late event is not stored)", n)
		}
	})
	t.Run("apply: durable by its late mark before any commit", func(t *testing.T) {
		e := newEnv(t)
		tr := e.open(nil)
		// A committed checkpoint whose horizon is past the event: a rebuild does
		// not replay it from the log.
		e.clock.Store(t0 + 2*settle)
		e.tick()
		h := tr.Horizon()
		cp0, ok, err := e.st.Checkpoint()
		if err != nil || !ok || cp0.Horizon != h {
			t.Fatalf("checkpoint: %+v, %v, %v; want one at the horizon %d", cp0, ok, err, h)
		}
		res, err := tr.Ingest(context.Background(), []occupancy.Event{{DPU: "d1", ID: "1", TS: h - 60_000, Direction: 1}})
		if err != nil || res[0].Outcome != Accepted {
			t.Fatalf("late event: %+v, %v", res, err)
		}
		if got := occ(tr, "f1"); got != 1 {
			t.Errorf("f1 after a late event: got %d, want 1", got)
		}
		marks := func() int {
			n := 0
			if err := e.st.Late(func(occupancy.Event) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// Ingest returned without a commit (no whole tick per late batch)...
		if cp, _, _ := e.st.Checkpoint(); !reflect.DeepEqual(cp, cp0) {
			t.Errorf("checkpoint changed by Ingest: %+v, want %+v", cp, cp0)
		}
		// ...but the event is kept as late, and a rebuild from the store counts it.
		if n := marks(); n != 1 {
			t.Errorf("late marks after Ingest: got %d, want 1", n)
		}
		eng, err := occupancy.Open(e.options(nil).Engine, e.st, e.clock.Load())
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := eng.Current("f1"); o.Occupancy != 1 {
			t.Errorf("f1 rebuilt from the store before the commit: got %d, want 1", o.Occupancy)
		}
		// The next tick commits the correction and forgets the mark.
		e.tick()
		if n := marks(); n != 0 {
			t.Errorf("late marks after the tick: got %d, want 0", n)
		}
	})
	t.Run("parked until max_parked", func(t *testing.T) {
		e := newEnv(t)
		tr := e.open(func(o *Options) { o.MaxParked = 2 })
		var evs []occupancy.Event
		for i := range 3 {
			evs = append(evs, occupancy.Event{DPU: "d9", ID: fmt.Sprint(i), TS: t0 + int64(i), Direction: 1})
		}
		res, err := tr.Ingest(context.Background(), evs)
		if err != nil {
			t.Fatal(err)
		}
		got := []Outcome{res[0].Outcome, res[1].Outcome, res[2].Outcome}
		if !slices.Equal(got, []Outcome{Parked, Parked, Rejected}) || res[2].Rejection.Reason != occupancy.ReasonUnknownDPU {
			t.Errorf("outcomes: got %v (%+v), want parked, parked, rejected unknown_dpu", got, res[2].Rejection)
		}
		if d := tr.DPUs(); len(d) != 3 || d[2].DPU != "d9" || d[2].Accepted != 2 || d[2].Parked != 2 {
			t.Errorf("DPU stats: got %+v, want d9 with 2 accepted, 2 parked", d)
		}
	})
}

// TestReset: stored then applied; before the horizon or with a negative value it is
// a bad reset; an unknown space is ErrUnknownSpace.
func TestReset(t *testing.T) {
	e := newEnv(t)
	tr := e.open(nil)
	if err := tr.Reset(occupancy.Reset{Space: "r1", TS: t0, Occupancy: 3}); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got := occ(tr, "r1"); got != 3 {
		t.Errorf("r1 after reset to 3 = %d", got)
	}
	for _, c := range []struct {
		name string
		r    occupancy.Reset
		want error
	}{
		{"before the horizon", occupancy.Reset{Space: "r1", TS: tr.Horizon() - 1}, ErrBadReset},
		{"negative", occupancy.Reset{Space: "r1", Occupancy: -1}, ErrBadReset},
		{"in the future", occupancy.Reset{Space: "r1", TS: t0 + 2*60_000}, ErrBadReset},
		{"unknown space", occupancy.Reset{Space: "nope"}, occupancy.ErrUnknownSpace},
	} {
		if err := tr.Reset(c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Stored: a reopened tracker has it.
	e.st.Close()
	if got := occ(e.open(nil), "r1"); got != 3 {
		t.Errorf("r1 after reopen = %d, want 3", got)
	}
}

// TestParkedThenMapped: an event for a DPU no version knows is parked (not
// rejected), and counts once a new version adds the DPU: its first mapping covers
// the earlier time.
func TestParkedThenMapped(t *testing.T) {
	e := newEnv(t)
	tr := e.open(nil)
	ts := t0 + 1_000
	e.clock.Store(ts + 1_000)
	res, err := tr.Ingest(context.Background(), []occupancy.Event{{DPU: "d9", ID: "1", TS: ts, Direction: 1}})
	if err != nil || res[0].Outcome != Parked {
		t.Fatalf("got %+v, %v; want parked", res, err)
	}
	if n := e.st.ParkedCount(); n != 1 {
		t.Fatalf("parked in the store = %d, want 1", n)
	}
	if got := occ(tr, "r1"); got != 0 {
		t.Fatalf("r1 = %d before d9 is configured, want 0", got)
	}
	next := testTopology
	next.Doorways = append(slices.Clone(next.Doorways), occupancy.DoorwayConfig{ID: "new", Name: "New"})
	next.DPUs = append(slices.Clone(next.DPUs), occupancy.DPUConfig{ID: "d9", Doorway: "new", PlusSpace: "r1", MinusSpace: "f1"})
	e.clock.Add(1)
	if _, added, err := tr.AddVersion(next); err != nil || !added {
		t.Fatalf("AddVersion: %v, %v", added, err)
	}
	if got := occ(tr, "r1"); got != 1 {
		t.Errorf("r1 = %d after d9 is configured, want 1", got)
	}
	if v, err := tr.At("r1", ts); err != nil || v != 1 {
		t.Errorf("r1 at the parked event's ts = %d, %v; want 1 (the first mapping covers earlier time)", v, err)
	}
	if _, added, err := tr.AddVersion(next); err != nil || added {
		t.Errorf("the same topology again: added %v, %v; want nothing added", added, err)
	}
	if _, _, err := tr.AddVersion(occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "x", Parent: "nowhere"}}}); err == nil {
		t.Error("an invalid topology was accepted")
	}
}

// TestOpenVersions: the configured topology is stored as a version unless it is the
// latest stored; import (KeepStored) keeps the stored versions.
func TestOpenVersions(t *testing.T) {
	e := newEnv(t)
	e.open(nil)
	versions := func() []occupancy.Version {
		vs, err := e.st.Versions()
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}
	if n := len(versions()); n != 1 {
		t.Fatalf("versions after the first open: %d, want 1", n)
	}
	e.st.Close()
	e.open(nil)
	if n := len(versions()); n != 1 {
		t.Fatalf("versions after reopening with the same topology: %d, want 1", n)
	}
	e.st.Close()
	changed := testTopology
	changed.Spaces = slices.Clone(changed.Spaces)
	changed.Spaces[2].Capacity = 9
	e.open(func(o *Options) { o.Topology = &changed; o.KeepStored = true })
	if n := len(versions()); n != 1 {
		t.Fatalf("versions after an import open with another topology: %d, want 1", n)
	}
	e.st.Close()
	tr := e.open(func(o *Options) { o.Topology = &changed })
	vs := versions()
	if len(vs) != 2 || vs[1].At <= vs[0].At {
		t.Fatalf("versions after a changed topology: %+v, want 2, in order", vs)
	}
	if o, _ := tr.Space("r1"); o.Capacity != 9 {
		t.Errorf("r1 capacity = %d, want 9", o.Capacity)
	}
}

// TestChangeFeed: a subscriber is told as soon as events are applied (no tick
// needed), gets each changed space once with its latest value, is told of removed
// spaces and new versions, and of every tick.
func TestChangeFeed(t *testing.T) {
	e := newEnv(t)
	tr := e.open(nil)
	sub := tr.Subscribe()
	defer sub.Close()
	signalled := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(time.Second):
			return false
		}
	}
	var evs []occupancy.Event
	for i := range 5 {
		evs = append(evs, occupancy.Event{DPU: "d1", ID: fmt.Sprint(i), TS: t0 + int64(i), Direction: 1})
	}
	for _, ev := range evs { // five applies, one drain
		if _, err := tr.Ingest(context.Background(), []occupancy.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	if !signalled(sub.Changed()) {
		t.Fatal("no change signalled after ingest")
	}
	changed, removed, topo := sub.Drain()
	got := map[string]int64{}
	for _, o := range changed {
		if _, dup := got[o.Space]; dup {
			t.Errorf("space %s twice in one drain", o.Space)
		}
		got[o.Space] = o.Occupancy
	}
	if fmt.Sprint(got) != "map[f1:5 hq:5]" || topo || len(removed) > 0 {
		t.Errorf("drained %+v, %v, %v; want f1 and hq at 5", changed, removed, topo)
	}
	if changed, removed, topo := sub.Drain(); len(changed)+len(removed) > 0 || topo {
		t.Errorf("second drain: %+v, %v, %v; want nothing", changed, removed, topo)
	}
	e.tick()
	if !signalled(sub.Ticked()) {
		t.Error("no tick signalled")
	}
	// A version without the room: removed; the floor's capacity changes: changed.
	next := occupancy.TopologyConfig{
		Spaces:   []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}, {ID: "f1", Name: "Floor 1", Parent: "hq", Capacity: 50}},
		Doorways: testTopology.Doorways[:1],
		DPUs:     testTopology.DPUs[:1],
	}
	e.clock.Add(1)
	if _, _, err := tr.AddVersion(next); err != nil {
		t.Fatal(err)
	}
	changed, removed, topo = sub.Drain()
	if len(changed) != 1 || changed[0].Space != "f1" || changed[0].Capacity != 50 || !slices.Equal(removed, []string{"r1"}) || !topo {
		t.Errorf("after a version: %+v, %v, %v; want f1 with capacity 50, r1 removed, a new topology", changed, removed, topo)
	}
}

// holdStore holds a Rows scan after its first row until released.
type holdStore struct {
	Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (h *holdStore) Rows(space string, from, to int64, fn func(occupancy.Row) error) error {
	first := h.armed.CompareAndSwap(true, false)
	return h.Store.Rows(space, from, to, func(r occupancy.Row) error {
		if first {
			first = false
			h.entered <- struct{}{}
			<-h.release
		}
		return fn(r)
	})
}

// TestQueryOutsideEngineLock: a counts query held in the middle of its scan of the
// settled rows does not hold up ingest, applies or ticks — which move the horizon
// and commit new rows meanwhile — and answers as of when it started.
func TestQueryOutsideEngineLock(t *testing.T) {
	e := newEnv(t)
	var hs *holdStore
	tr := e.open(nil, func(st *buffer.Store) Store {
		hs = &holdStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
		return hs
	})
	rng := rand.New(rand.NewPCG(9, 9))
	evs := walk(rng, 400, t0, 2_000)
	if _, err := tr.Ingest(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	mid := evs[len(evs)/2].TS
	e.clock.Store(mid + settle)
	e.tick()
	e.clock.Store(mid + 2*settle)
	h := e.tick().Horizon // about the middle of the events: half settled
	start, end, iv := t0, evs[len(evs)-1].TS+1, int64(10_000)
	want, err := tr.Counts("hq", start, end, iv)
	if err != nil {
		t.Fatal(err)
	}

	hs.armed.Store(true)
	type answer struct {
		bs  []occupancy.Bucket
		err error
	}
	got := make(chan answer, 1)
	go func() {
		bs, err := tr.Counts("hq", start, end, iv)
		got <- answer{bs, err}
	}()
	<-hs.entered // the query is in the middle of its scan of settled rows
	done := make(chan string, 1)
	go func() {
		more := walk(rng, 50, end+settle, 1_000) // after the query's range
		if _, err := tr.Ingest(context.Background(), more); err != nil {
			done <- err.Error()
			return
		}
		e.clock.Store(end + 2*settle) // every event of the range settles
		if ts, err := tr.Tick(); err != nil || ts.Horizon <= end {
			done <- fmt.Sprintf("tick: horizon %d, %v", ts.Horizon, err)
			return
		}
		_ = tr.Spaces()
		done <- ""
	}()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatal(msg)
		}
	case <-time.After(10 * time.Second):
		close(hs.release)
		t.Fatal("ingest and tick waited for the query holding its scan")
	}
	close(hs.release)
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	if !slices.Equal(a.bs, want) {
		t.Errorf("held query:\n got %+v\nwant %+v", a.bs, want)
	}
	// And the same range now, all settled, answers the same from the rows alone.
	again, err := tr.Counts("hq", start, end, iv)
	if err != nil || !slices.Equal(again, want) {
		t.Errorf("after the horizon passed the range (was %d): got %+v, %v; want %+v", h, again, err, want)
	}
}

// BenchmarkIngestWithCounts measures ingest (batches of 256 in-order events through
// Ingest: durable append, apply; events/s and the 99th percentile of one Ingest)
// alone, beside a goroutine that asks 10,000-bucket counts queries over settled
// history without stopping, and beside the same queries answered under the engine
// lock, as they were before the tracker read settled rows outside it.
func BenchmarkIngestWithCounts(b *testing.B) {
	for _, mode := range []string{"alone", "counts", "counts-under-lock"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b)
			tr := e.open(nil)
			// A day of settled history for hq: one crossing every 4 s.
			rng := rand.New(rand.NewPCG(1, 2))
			day := int64(24 * 3600_000)
			hist := walk(rng, int(day/4_000), t0-day, 8_000)
			for i := 0; i < len(hist); i += 4096 {
				if _, err := tr.Backfill(context.Background(), hist[i:min(i+4096, len(hist))]); err != nil {
					b.Fatal(err)
				}
			}
			if err := tr.Rewind(hist[0].TS); err != nil {
				b.Fatal(err)
			}
			live := walk(rng, b.N*256+256, t0+1_000, 20)
			e.clock.Store(live[len(live)-1].TS)
			ctx, cancel := context.WithCancel(context.Background())
			var queries atomic.Int64
			var qwg sync.WaitGroup
			if mode != "alone" {
				qwg.Add(1)
				go func() {
					defer qwg.Done()
					for ctx.Err() == nil {
						var err error
						if mode == "counts" {
							_, err = tr.Counts("hq", t0-day, t0-day+10_000*8_000, 8_000)
						} else {
							tr.mu.Lock()
							_, err = tr.eng.Counts("hq", t0-day, t0-day+10_000*8_000, 8_000)
							tr.mu.Unlock()
						}
						if err != nil {
							b.Error(err)
							return
						}
						queries.Add(1)
					}
				}()
			}
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := tr.Ingest(context.Background(), live[i*256:(i+1)*256]); err != nil {
					b.Fatal(err)
				}
				lat[i] = time.Since(t0)
			}
			el := time.Since(start)
			b.StopTimer()
			cancel()
			qwg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N*256)/el.Seconds(), "events/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(queries.Load())/el.Seconds(), "queries/s")
		})
	}
}

// writeThenFail is a store whose Append fails after writing, once per armed call:
// the events are stored, the caller is told they are not.
type writeThenFail struct {
	Store
	armed atomic.Int32
}

func (w *writeThenFail) Append(ctx context.Context, evs []occupancy.Event, parked []bool) ([]buffer.AppendResult, error) {
	res, err := w.Store.Append(ctx, evs, parked)
	if err == nil && w.armed.Add(-1) >= 0 {
		return nil, errors.New("injected: the write succeeded, its confirmation was lost")
	}
	return res, err
}

// TestAppendWroteButFailed: an Append that writes the events and
// then reports an error is retried by the sender (nothing was acknowledged); the
// retry finds them stored (duplicates), and they are still applied — once: the
// pending ones, the late ones (corrected), and a redelivery of all of them after
// that changes nothing. Compared with the model of every event counted once.
func TestAppendWroteButFailed(t *testing.T) {
	e := newEnv(t)
	var w *writeThenFail
	tr := e.open(nil, func(st *buffer.Store) Store { w = &writeThenFail{Store: st}; return w })
	rng := rand.New(rand.NewPCG(14, 5))
	// A first batch settles past the horizon, so that some of the second are late.
	early := walk(rng, 40, t0-settle+1_000, 2_000)
	if _, err := tr.Ingest(context.Background(), early); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * settle)
	e.tick()
	h := tr.Horizon()
	// The second batch: a continuation of the walk, some before the horizon (late),
	// most after it (pending).
	more := walk(rng, 60, h-20_000, 1_000)
	for i := range more {
		more[i].ID = "b" + more[i].ID
	}
	late := 0
	for _, ev := range more {
		if ev.TS < h {
			late++
		}
	}
	if late == 0 || late == len(more) {
		t.Fatalf("%d of %d late: want some of both", late, len(more))
	}
	all := append(append([]occupancy.Event(nil), early...), more...)
	want := modelAt(all, e.clock.Load())
	got := func() map[string]int64 {
		return map[string]int64{"hq": occ(tr, "hq"), "f1": occ(tr, "f1"), "r1": occ(tr, "r1")}
	}

	w.armed.Store(1)
	if _, err := tr.Ingest(context.Background(), more); err == nil {
		t.Fatal("Ingest with the injected failure: no error")
	}
	res, err := tr.Ingest(context.Background(), more) // the sender's retry
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Outcome != Duplicate {
			t.Fatalf("retry result %d: %v, want duplicate (the failed call stored it)", i, r.Outcome)
		}
	}
	if g := got(); !maps.Equal(g, want) {
		t.Errorf("after the retry: got %v, want %v (every event once)", g, want)
	}
	if _, err := tr.Ingest(context.Background(), append(more, early...)); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(1000)
	e.tick()
	if g := got(); !maps.Equal(g, want) {
		t.Errorf("after a redelivery of everything and a tick: got %v, want %v", g, want)
	}
}
