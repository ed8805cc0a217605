package buffer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

func openT(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Logger = testLogger(t)
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	opts := s.opts
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	return s2
}

func allEvents(t testing.TB, s *Store) []occupancy.Event {
	t.Helper()
	var out []occupancy.Event
	if err := s.Events(minTS, maxTS, func(e occupancy.Event) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("Events: %v", err)
	}
	return out
}

const (
	minTS = -1 << 63
	maxTS = 1<<63 - 1
)

func mustAppend(t testing.TB, s *Store, evs []occupancy.Event, parked []bool) []AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), evs, parked)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(res) != len(evs) {
		t.Fatalf("Append returned %d results for %d events", len(res), len(evs))
	}
	return res
}

// identity is the model's notion of "same event" (DESIGN section 2), written
// independently of the key encoding.
func identity(e occupancy.Event) string {
	if e.ID != "" {
		return fmt.Sprintf("%s|%d|id=%s", e.DPU, e.TS, e.ID)
	}
	return fmt.Sprintf("%s|%d|dir=%d", e.DPU, e.TS, e.Direction)
}

func TestAppendStoresInTimelineOrderWithDedup(t *testing.T) {
	s := openT(t, Options{})
	r := rand.New(rand.NewPCG(7, 8))
	model := map[string]occupancy.Event{} // identity -> first stored version
	for round := 0; round < 20; round++ {
		evs := make([]occupancy.Event, 1+r.IntN(50))
		for i := range evs {
			e := randEvent(r)
			e.TS = r.Int64N(500)
			e.Received = e.TS + r.Int64N(100)
			e.Late = r.IntN(10) == 0
			evs[i] = e
		}
		res := mustAppend(t, s, evs, nil)
		for i, e := range evs {
			_, seen := model[identity(e)]
			if res[i].Duplicate != seen {
				t.Fatalf("round %d event %d %+v: Duplicate = %v, want %v", round, i, e, res[i].Duplicate, seen)
			}
			if !seen {
				model[identity(e)] = e
			}
		}
	}
	want := make([]occupancy.Event, 0, len(model))
	for _, e := range model {
		want = append(want, e)
	}
	slices.SortFunc(want, modelCompare)
	got := allEvents(t, s)
	if !slices.Equal(got, want) {
		t.Fatalf("stored events differ from model:\n got %v\nwant %v", got, want)
	}

	t.Run("after reopen", func(t *testing.T) {
		s2 := reopen(t, s)
		if got := allEvents(t, s2); !slices.Equal(got, want) {
			t.Fatalf("after reopen: got %d events, want %d", len(got), len(want))
		}
		res := mustAppend(t, s2, want, nil)
		for i := range res {
			if !res[i].Duplicate {
				t.Errorf("re-append of stored %+v after restart: Duplicate = false, want true", want[i])
			}
		}
	})
}

func TestEventsRange(t *testing.T) {
	s := openT(t, Options{})
	var evs []occupancy.Event
	for ts := int64(-5); ts < 5; ts++ {
		evs = append(evs, occupancy.Event{DPU: "d", TS: ts, Direction: 1, Received: ts})
	}
	mustAppend(t, s, evs, nil)
	tests := []struct{ from, to, first, n int64 }{
		{-5, 5, -5, 10}, {-1, 1, -1, 2}, {0, 0, 0, 0}, {3, 100, 3, 2}, {minTS, -4, -5, 1}, {2, 1, 0, 0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("[%d,%d)", tc.from, tc.to), func(t *testing.T) {
			var got []int64
			if err := s.Events(tc.from, tc.to, func(e occupancy.Event) error { got = append(got, e.TS); return nil }); err != nil {
				t.Fatal(err)
			}
			if int64(len(got)) != tc.n || (tc.n > 0 && got[0] != tc.first) {
				t.Errorf("got %v, want %d events from %d", got, tc.n, tc.first)
			}
		})
	}
	t.Run("callback error stops", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := s.Events(minTS, maxTS, func(occupancy.Event) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("got err %v after %d calls, want stop after 1", err, n)
		}
	})
}

func TestAppendRejectsBadInput(t *testing.T) {
	s := openT(t, Options{})
	cases := map[string][]occupancy.Event{
		"empty dpu":    {{TS: 1, Direction: 1}},
		"nul in dpu":   {{DPU: "a\x00b", TS: 1, Direction: 1}},
		"direction 0":  {{DPU: "a", TS: 1}},
		"direction 2":  {{DPU: "a", TS: 1, Direction: 2}},
		"one bad of 2": {{DPU: "a", TS: 1, Direction: 1}, {DPU: "a", TS: 2, Direction: 3}},
		"huge dpu id":  {{DPU: strings.Repeat("d", 70_000), TS: 1, Direction: 1}},
		"huge id":      {{DPU: "a", ID: strings.Repeat("9", 70_000), TS: 1, Direction: 1}},
	}
	for name, evs := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Append(context.Background(), evs, nil); err == nil {
				t.Fatal("Append: nil error, want an error")
			}
		})
	}
	if _, err := s.Append(context.Background(), []occupancy.Event{{DPU: "a", TS: 1, Direction: 1}}, []bool{true, false}); err == nil {
		t.Error("mismatched parked flags: nil error")
	}
	if got := allEvents(t, s); len(got) != 0 {
		t.Errorf("bad input stored %v", got)
	}
}

// Racing writers append overlapping events: each identity is reported new exactly
// once in total and stored exactly once.
func TestDedupRacingWriters(t *testing.T) {
	s := openT(t, Options{MaxBatch: 64})
	const writers, perWriter, distinct = 16, 300, 1000
	var mu sync.Mutex
	newCount := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for i := 0; i < perWriter; {
				n := 1 + r.IntN(5)
				evs := make([]occupancy.Event, 0, n)
				for j := 0; j < n; j++ {
					k := r.IntN(distinct)
					e := occupancy.Event{DPU: fmt.Sprintf("d%d", k%7), TS: int64(k / 7), Direction: 1}
					if k%2 == 0 {
						e.ID = fmt.Sprint(k)
					}
					evs = append(evs, e)
				}
				i += n
				res, err := s.Append(context.Background(), evs, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for j, e := range evs {
					if !res[j].Duplicate {
						newCount[identity(e)]++
					}
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	stored := map[string]int{}
	for _, e := range allEvents(t, s) {
		stored[identity(e)]++
	}
	for id, n := range newCount {
		if n != 1 {
			t.Errorf("%s reported new %d times, want 1", id, n)
		}
		if stored[id] != 1 {
			t.Errorf("%s stored %d times, want 1", id, stored[id])
		}
	}
	if len(stored) != len(newCount) {
		t.Errorf("stored %d identities, reported new %d", len(stored), len(newCount))
	}
}

func TestParked(t *testing.T) {
	s := openT(t, Options{MaxParked: 5})
	evs := []occupancy.Event{
		{DPU: "known", TS: 1, Direction: 1},
		{DPU: "new", ID: "1", TS: 2, Direction: 1, Received: 3},
		{DPU: "new", ID: "2", TS: 3, Direction: -1, Received: 4},
		{DPU: "new", ID: "2", TS: 3, Direction: -1, Received: 4}, // duplicate in batch
	}
	res := mustAppend(t, s, evs, []bool{false, true, true, true})
	if want := []AppendResult{{}, {}, {}, {Duplicate: true}}; !slices.Equal(res, want) {
		t.Fatalf("results %v, want %v", res, want)
	}
	if got := s.ParkedCount(); got != 2 {
		t.Fatalf("ParkedCount = %d, want 2", got)
	}
	parked := func(s *Store) []occupancy.Event {
		var out []occupancy.Event
		if err := s.Parked(func(e occupancy.Event) error { out = append(out, e); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := parked(s), evs[1:3]; !slices.Equal(got, want) {
		t.Fatalf("Parked = %v, want %v", got, want)
	}

	t.Run("bound", func(t *testing.T) {
		var more []occupancy.Event
		for i := 0; i < 5; i++ {
			more = append(more, occupancy.Event{DPU: "new", ID: fmt.Sprint(10 + i), TS: 10, Direction: 1})
		}
		res := mustAppend(t, s, more, []bool{true, true, true, true, true})
		rejected := 0
		for _, r := range res {
			if r.Rejected {
				rejected++
			}
		}
		if rejected != 2 || s.ParkedCount() != 5 {
			t.Fatalf("rejected %d (want 2), ParkedCount %d (want 5)", rejected, s.ParkedCount())
		}
		// A rejected event was not stored: it is new when sent again unparked.
		last := more[4]
		res = mustAppend(t, s, []occupancy.Event{last}, nil)
		if res[0].Duplicate || res[0].Rejected {
			t.Errorf("re-sent rejected event: %+v, want new", res[0])
		}
	})

	t.Run("commit unparks", func(t *testing.T) {
		s := reopen(t, s)
		if got := s.ParkedCount(); got != 5 {
			t.Fatalf("ParkedCount after reopen = %d, want 5", got)
		}
		un := parked(s)[:3]
		un = append(un, occupancy.Event{DPU: "never", TS: 1, Direction: 1}) // not parked: ignored
		if err := s.Commit(occupancy.Settlement{Unparked: un, Checkpoint: occupancy.Checkpoint{Horizon: 5}}); err != nil {
			t.Fatal(err)
		}
		if got := s.ParkedCount(); got != 2 {
			t.Errorf("ParkedCount after unpark = %d, want 2", got)
		}
		if got := len(parked(s)); got != 2 {
			t.Errorf("Parked streams %d, want 2", got)
		}
		if got := len(allEvents(t, s)); got != 7 {
			t.Errorf("events after unpark = %d, want 7 (unparking keeps the event)", got)
		}
	})
}

// Events stored late keep a late mark, written with them, until a settlement lists
// them as corrected; parked and duplicate events get none; the mark survives a
// reopen, and a settlement too big for one transaction still removes them.
func TestLateMarks(t *testing.T) {
	s := openT(t, Options{MemTableSize: 1 << 20}) // Badger then takes ~2k entries per txn
	late := func(s *Store) []occupancy.Event {
		var out []occupancy.Event
		if err := s.Late(func(e occupancy.Event) error { out = append(out, e); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	evs := []occupancy.Event{
		{DPU: "a", ID: "1", TS: 5, Direction: 1, Late: true, Received: 100},
		{DPU: "a", ID: "2", TS: 200, Direction: 1, Received: 200}, // on time
		{DPU: "b", ID: "1", TS: 3, Direction: -1, Late: true, Received: 100},
		{DPU: "u", ID: "1", TS: 4, Direction: 1, Late: true, Received: 100}, // parked: its unpark corrects
	}
	mustAppend(t, s, evs, []bool{false, false, false, true})
	want := []occupancy.Event{evs[2], evs[0]} // (TS, DPU, ID) order
	if got := late(s); !slices.Equal(got, want) {
		t.Fatalf("Late = %v, want %v", got, want)
	}
	// Sent again (a redelivery): a duplicate, no second mark.
	if res := mustAppend(t, s, evs[:1], nil); !res[0].Duplicate {
		t.Fatalf("re-sent late event: %+v, want a duplicate", res[0])
	}
	s = reopen(t, s)
	if got := late(s); !slices.Equal(got, want) {
		t.Fatalf("Late after reopen = %v, want %v", got, want)
	}
	if err := s.Commit(occupancy.Settlement{Corrected: evs[:1], Checkpoint: occupancy.Checkpoint{Horizon: 10}}); err != nil {
		t.Fatal(err)
	}
	if got := late(s); !slices.Equal(got, evs[2:3]) {
		t.Fatalf("Late after a commit correcting %v = %v, want %v", evs[0], got, evs[2:3])
	}
	if got := len(allEvents(t, s)); got != 4 {
		t.Errorf("%d events stored, want 4 (the marks go, the events stay)", got)
	}

	t.Run("in steps", func(t *testing.T) {
		var many []occupancy.Event
		for i := 0; i < 5000; i++ {
			many = append(many, occupancy.Event{DPU: "c", ID: fmt.Sprint(i), TS: int64(i), Direction: 1, Late: true})
		}
		mustAppend(t, s, many, nil)
		if got := len(late(s)); got != 5001 {
			t.Fatalf("%d late marks, want 5001", got)
		}
		before := s.steppedCommits.Load()
		if err := s.Commit(occupancy.Settlement{Corrected: many[:4000], Checkpoint: occupancy.Checkpoint{Horizon: 11}}); err != nil {
			t.Fatal(err)
		}
		if s.steppedCommits.Load() != before+1 {
			t.Fatal("the settlement was not written in steps (the test must exceed one transaction)")
		}
		if got := len(late(s)); got != 1001 {
			t.Errorf("%d late marks after correcting 4000 of 5001, want 1001", got)
		}
		if cp, _, _ := s.Checkpoint(); cp.Horizon != 11 {
			t.Errorf("checkpoint horizon %d, want 11", cp.Horizon)
		}
	})
}

func TestCommitRowsCheckpointVersionsResets(t *testing.T) {
	s := openT(t, Options{})
	if _, ok, err := s.Checkpoint(); ok || err != nil {
		t.Fatalf("Checkpoint on a new store: ok=%v err=%v", ok, err)
	}
	var rows []occupancy.Row
	for _, sp := range []string{"a", "a-b", "ab"} {
		for ts := int64(0); ts < 10; ts++ {
			for seq := uint32(0); seq < 2; seq++ {
				rows = append(rows, occupancy.Row{Space: sp, TS: ts * 10, Seq: seq, Occupancy: ts*2 + int64(seq), Entrances: 1, Kind: occupancy.KindEvent})
			}
		}
	}
	cp := occupancy.Checkpoint{Horizon: 100, Values: map[string]int64{"a": 19}, State: []byte{1, 2, 3}}
	if err := s.Commit(occupancy.Settlement{Rows: rows, Checkpoint: cp}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	got, ok, err := s.Checkpoint()
	if err != nil || !ok || got.Horizon != 100 || got.Values["a"] != 19 || string(got.State) != "\x01\x02\x03" {
		t.Fatalf("Checkpoint = %+v %v %v", got, ok, err)
	}
	t.Run("RowAt", func(t *testing.T) {
		for _, tc := range []struct {
			space string
			t     int64
			ok    bool
			occ   int64
		}{{"a", -1, false, 0}, {"a", 0, true, 1}, {"a", 9, true, 1}, {"a", 10, true, 3}, {"a-b", 1000, true, 19}, {"ab", 55, true, 11}, {"zz", 50, false, 0}, {"a-", 50, false, 0}} {
			r, ok, err := s.RowAt(tc.space, tc.t)
			if err != nil || ok != tc.ok || (ok && (r.Occupancy != tc.occ || r.Space != tc.space)) {
				t.Errorf("RowAt(%s, %d) = %+v %v %v, want ok=%v occ=%d", tc.space, tc.t, r, ok, err, tc.ok, tc.occ)
			}
		}
	})
	t.Run("Rows", func(t *testing.T) {
		var got []occupancy.Row
		if err := s.Rows("a-b", 20, 40, func(r occupancy.Row) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		var want []occupancy.Row
		for _, r := range rows {
			if r.Space == "a-b" && r.TS >= 20 && r.TS < 40 {
				want = append(want, r)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Rows = %v, want %v", got, want)
		}
	})
	t.Run("RewriteFrom", func(t *testing.T) {
		newRows := []occupancy.Row{{Space: "a", TS: 50, Occupancy: 100, Kind: occupancy.KindCorrection}}
		if err := s.Commit(occupancy.Settlement{Rows: newRows, RewriteFrom: 45, Checkpoint: occupancy.Checkpoint{Horizon: 200}}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, sp := range []string{"a", "a-b", "ab"} {
			if err := s.Rows(sp, minTS, maxTS, func(r occupancy.Row) error {
				n++
				if r.TS >= 45 && r != newRows[0] {
					t.Errorf("row %+v survived RewriteFrom 45", r)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if want := 3*10 + 1; n != want { // ts 0..40 (5 ts x 2 seq) per space, plus the new row
			t.Errorf("%d rows after rewrite, want %d", n, want)
		}
	})
	t.Run("versions", func(t *testing.T) {
		for _, at := range []int64{30, -10, 20} {
			v := occupancy.Version{At: at, Topology: occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: fmt.Sprint("s", at), Name: "x"}}}}
			if err := s.PutVersion(v); err != nil {
				t.Fatal(err)
			}
		}
		vs, err := s.Versions()
		if err != nil {
			t.Fatal(err)
		}
		var ats []int64
		for _, v := range vs {
			ats = append(ats, v.At)
			if v.Topology.Spaces[0].ID != fmt.Sprint("s", v.At) {
				t.Errorf("version %d holds %+v", v.At, v.Topology)
			}
		}
		if !slices.Equal(ats, []int64{-10, 20, 30}) {
			t.Errorf("versions at %v, want [-10 20 30]", ats)
		}
	})
	t.Run("resets", func(t *testing.T) {
		in := []occupancy.Reset{{Space: "b", TS: 5, Occupancy: 0}, {Space: "a", TS: 5, Occupancy: 3}, {Space: "a", TS: 1, Occupancy: 1}, {Space: "a", TS: 9, Occupancy: -2}}
		for _, r := range in {
			if err := s.PutReset(r); err != nil {
				t.Fatal(err)
			}
		}
		var got []occupancy.Reset
		if err := s.Resets(5, func(r occupancy.Reset) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		want := []occupancy.Reset{in[1], in[0], in[3]}
		if !slices.Equal(got, want) {
			t.Errorf("Resets(5) = %v, want %v", got, want)
		}
	})
}

// A settlement too big for one Badger transaction is written in steps with the
// checkpoint last; an interrupted unpark is finished or dropped at Open.
func TestCommitInSteps(t *testing.T) {
	s := openT(t, Options{MemTableSize: 1 << 20}) // Badger then takes ~2k entries per txn
	var evs []occupancy.Event
	var park []bool
	for i := 0; i < 6000; i++ {
		evs = append(evs, occupancy.Event{DPU: "p", ID: fmt.Sprint(i), TS: int64(i), Direction: 1})
		park = append(park, true)
	}
	mustAppend(t, s, evs, park)
	if got := s.ParkedCount(); got != 6000 {
		t.Fatalf("ParkedCount = %d, want 6000", got)
	}
	var rows []occupancy.Row
	for i := 0; i < 10000; i++ {
		rows = append(rows, occupancy.Row{Space: "s", TS: int64(i), Occupancy: int64(i)})
	}
	if err := s.Commit(occupancy.Settlement{Rows: rows, Unparked: evs[:5000], Checkpoint: occupancy.Checkpoint{Horizon: 7}}); err != nil {
		t.Fatal(err)
	}
	if got := s.steppedCommits.Load(); got != 1 {
		t.Fatalf("%d settlements written in steps, want 1 (the test must exceed one transaction)", got)
	}
	if got := s.ParkedCount(); got != 1000 {
		t.Errorf("ParkedCount = %d, want 1000", got)
	}
	n := 0
	_ = s.Rows("s", minTS, maxTS, func(occupancy.Row) error { n++; return nil })
	if n != 10000 {
		t.Errorf("%d rows stored, want 10000", n)
	}
	if cp, _, _ := s.Checkpoint(); cp.Horizon != 7 {
		t.Errorf("checkpoint horizon %d, want 7", cp.Horizon)
	}

	t.Run("rewrite that outgrows one transaction", func(t *testing.T) {
		// Few rows but many deletions: the one-transaction attempt fails with
		// ErrTxnTooBig and the settlement is written in steps.
		before := s.steppedCommits.Load()
		st := occupancy.Settlement{RewriteFrom: 2000, Rows: []occupancy.Row{{Space: "s", TS: 2000, Occupancy: -1}}, Checkpoint: occupancy.Checkpoint{Horizon: 8}}
		if err := s.Commit(st); err != nil {
			t.Fatal(err)
		}
		if s.steppedCommits.Load() != before+1 {
			t.Fatal("the rewrite was not written in steps")
		}
		n := 0
		_ = s.Rows("s", minTS, maxTS, func(r occupancy.Row) error {
			n++
			if r.TS >= 2000 && r.Occupancy != -1 {
				t.Errorf("row %+v survived the rewrite", r)
			}
			return nil
		})
		if n != 2001 {
			t.Errorf("%d rows after rewrite, want 2001", n)
		}
		if cp, _, _ := s.Checkpoint(); cp.Horizon != 8 {
			t.Errorf("checkpoint horizon %d, want 8", cp.Horizon)
		}
	})

	t.Run("interrupted before the checkpoint", func(t *testing.T) {
		gen, _ := s.unparkGen()
		// Step 3 done, step 4 not: markers of an uncommitted generation.
		if err := s.chunked(500, func(w *splitTxn, i int) error { return w.set(unparkMarker(gen+1, evs[5000+i]), nil) }); err != nil {
			t.Fatal(err)
		}
		s := reopen(t, s)
		if got := s.ParkedCount(); got != 1000 {
			t.Errorf("ParkedCount = %d, want 1000 (uncommitted unpark dropped)", got)
		}
		t.Run("interrupted after the checkpoint", func(t *testing.T) {
			gen, _ := s.unparkGen()
			if err := s.chunked(300, func(w *splitTxn, i int) error { return w.set(unparkMarker(gen+1, evs[5000+i]), nil) }); err != nil {
				t.Fatal(err)
			}
			if err := s.update(func(txn *badgerTxn) error { return txn.Set(keyUnparkGen, beU64(gen+1)) }); err != nil {
				t.Fatal(err)
			}
			s := reopen(t, s)
			if got := s.ParkedCount(); got != 700 {
				t.Errorf("ParkedCount = %d, want 700 (committed unpark finished at open)", got)
			}
		})
	})
}

func TestDeadLetters(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s := openT(t, Options{MaxDeadLetters: 5, DeadLetterAge: time.Hour, Now: func() time.Time { return now }})
	big := make([]byte, 3000)
	for i := 0; i < 8; i++ {
		d := DeadLetter{Time: now.Add(time.Duration(i-8) * 20 * time.Minute).UnixMilli(), Topic: fmt.Sprintf("dpu/%d/events", i), Reason: "bad_json", Payload: big}
		if err := s.PutDeadLetter(d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.DeadLetters(0)
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, d := range got {
		topics = append(topics, d.Topic)
		if len(d.Payload) != MaxDeadPayload {
			t.Errorf("payload kept %d bytes, want %d", len(d.Payload), MaxDeadPayload)
		}
	}
	want := []string{"dpu/7/events", "dpu/6/events", "dpu/5/events", "dpu/4/events", "dpu/3/events"}
	if !slices.Equal(topics, want) {
		t.Fatalf("dead letters %v, want newest 5 %v", topics, want)
	}
	if got, _ := s.DeadLetters(2); len(got) != 2 || got[0].Topic != "dpu/7/events" {
		t.Errorf("DeadLetters(2) = %v", got)
	}
	s = reopen(t, s)
	if err := s.PutDeadLetter(DeadLetter{Topic: "now", Reason: "bad_ts"}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.DeadLetters(0)
	if len(got) != 5 || got[0].Topic != "now" || got[0].Time != now.UnixMilli() {
		t.Fatalf("after reopen and one more: %d letters, newest %+v", len(got), got[0])
	}
	// Age: an hour; letters at -20m, -40m, -60m, -80m... : "now" and those not older than an hour stay.
	if err := s.Sweep(now); err != nil {
		t.Fatal(err)
	}
	got, _ = s.DeadLetters(0)
	topics = topics[:0]
	for _, d := range got {
		topics = append(topics, d.Topic)
	}
	if want := []string{"now", "dpu/7/events", "dpu/6/events", "dpu/5/events"}; !slices.Equal(topics, want) {
		t.Errorf("after age sweep %v, want %v", topics, want)
	}
}

func TestLockedDirectory(t *testing.T) {
	s := openT(t, Options{})
	start := time.Now()
	_, err := Open(Options{Dir: s.opts.Dir, Logger: testLogger(t)})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v, want an immediate error", d)
	}
	t.Logf("error: %v", err)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{Dir: s.opts.Dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	_ = s2.Close()
}

const holdChildEnv = "OCCUPANCYD_BUFFER_HOLD_CHILD"

// holdChild opens the store, says so, and keeps it open until killed.
func holdChild(dir string) {
	s, err := Open(Options{Dir: dir, Logger: zerolog.Nop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer s.Close()
	fmt.Println("ready")
	select {}
}

// Another process holds the store: Open fails at once naming it; once that
// process is killed, the store opens.
func TestLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	start := time.Now()
	_, err = Open(Options{Dir: dir, Logger: testLogger(t)})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a store held by another process: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v, want an immediate error", d)
	}
	if want := fmt.Sprintf("(pid %d)", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder %s", err, want)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	s, err := Open(Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open after the holder was killed: %v", err)
	}
	_ = s.Close()
}

func TestClosed(t *testing.T) {
	s := openT(t, Options{})
	_ = s.Close()
	if _, err := s.Append(context.Background(), []occupancy.Event{{DPU: "a", TS: 1, Direction: 1}}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	reads := map[string]error{
		"Events":     s.Events(0, 10, func(occupancy.Event) error { return nil }),
		"Parked":     s.Parked(func(occupancy.Event) error { return nil }),
		"Resets":     s.Resets(0, func(occupancy.Reset) error { return nil }),
		"Rows":       s.Rows("a", 0, 10, func(occupancy.Row) error { return nil }),
		"Commit":     s.Commit(occupancy.Settlement{}),
		"PutReset":   s.PutReset(occupancy.Reset{Space: "a"}),
		"PutVersion": s.PutVersion(occupancy.Version{}),
		"DeadLetter": s.PutDeadLetter(DeadLetter{}),
		"Sweep":      s.Sweep(time.Now()),
	}
	_, _, reads["RowAt"] = s.RowAt("a", 1)
	_, _, reads["Checkpoint"] = s.Checkpoint()
	_, reads["Versions"] = s.Versions()
	_, reads["DeadLetters"] = s.DeadLetters(1)
	for name, err := range reads {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// Free space below the minimum stops acceptance with ErrDiskFull (nothing stored)
// and acceptance resumes by itself once space returns. The free space is the real
// statfs figure; the test moves the threshold around it.
func TestDiskFull(t *testing.T) {
	s := openT(t, Options{})
	free, err := statfsFree(s.opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	s.space.mu.Lock()
	s.space.min = int64(free) + 1<<40 // more than there is
	s.space.mu.Unlock()
	e := occupancy.Event{DPU: "a", TS: 1, Direction: 1}
	if _, err := s.Append(context.Background(), []occupancy.Event{e}, nil); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Append on a full disk: %v, want ErrDiskFull", err)
	}
	if err := s.Commit(occupancy.Settlement{Checkpoint: occupancy.Checkpoint{Horizon: 1}}); !errors.Is(err, ErrDiskFull) {
		t.Errorf("Commit on a full disk: %v, want ErrDiskFull", err)
	}
	if got := allEvents(t, s); len(got) != 0 {
		t.Fatalf("full disk stored %v", got)
	}
	s.space.mu.Lock()
	s.space.min = 1 << 20
	s.space.mu.Unlock()
	res, err := s.Append(context.Background(), []occupancy.Event{e}, nil)
	if err != nil || res[0].Duplicate {
		t.Fatalf("Append after space returned: %v %v, want stored as new", res, err)
	}
}

// A waiter that gives up (its context ends) while its batch is being written is
// not acked; when its event is sent again it counts as new, exactly once.
func TestAbandonedAppendIsNotLost(t *testing.T) {
	s := openT(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	gave := make(chan struct{})
	s.hookBeforeCommit = func() {
		cancel() // the waiter gives up while its batch is being written
		<-gave
	}
	e := occupancy.Event{DPU: "a", ID: "1", TS: 1, Direction: 1}
	if _, err := s.Append(ctx, []occupancy.Event{e}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with cancelled context: %v, want context.Canceled", err)
	}
	close(gave)
	// the committer may still be finishing; the next Append is queued behind it
	s.hookBeforeCommit = nil
	res := mustAppend(t, s, []occupancy.Event{e}, nil)
	if res[0].Duplicate {
		t.Errorf("redelivery of an unacknowledged but stored event: Duplicate, want new")
	}
	res = mustAppend(t, s, []occupancy.Event{e}, nil)
	if !res[0].Duplicate {
		t.Errorf("second redelivery: new, want Duplicate")
	}
}

type badgerTxn = badger.Txn

func beU64(x uint64) []byte { return binary.BigEndian.AppendUint64(nil, x) }

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if dir := os.Getenv(holdChildEnv); dir != "" {
		holdChild(dir)
		return
	}
	code := m.Run()
	cleanupFixtures()
	os.Exit(code)
}

// A kill between the creation of a Badger log file and its first write leaves an
// empty file; the store must still open (found by TestCrashRecovery).
func TestOpenAfterEmptyLogFiles(t *testing.T) {
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		t.Run(name, func(t *testing.T) {
			s := openT(t, Options{})
			mustAppend(t, s, []occupancy.Event{{DPU: "a", TS: 1, Direction: 1}}, nil)
			dir := s.opts.Dir
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o640); err != nil {
				t.Fatal(err)
			}
			s2 := openT(t, Options{Dir: dir})
			if got := allEvents(t, s2); len(got) != 1 {
				t.Errorf("after reopen: %d events, want 1", len(got))
			}
		})
	}
}

// Concurrent writers share synced batches; a writer alone never waits for the
// linger (with a one-hour linger these appends would otherwise not finish).
func TestGroupCommit(t *testing.T) {
	t.Run("one writer is not lingered", func(t *testing.T) {
		s := openT(t, Options{Linger: time.Hour})
		for i := 0; i < 20; i++ {
			mustAppend(t, s, []occupancy.Event{{DPU: "a", TS: int64(i), Direction: 1}}, nil)
		}
		if st := s.Stats(); st.Batches != 20 || st.Events != 20 {
			t.Errorf("stats %+v, want 20 batches of 1", st)
		}
	})
	t.Run("concurrent writers share batches", func(t *testing.T) {
		s := openT(t, Options{Linger: 20 * time.Millisecond})
		const writers, each = 16, 30
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if _, err := s.Append(context.Background(), []occupancy.Event{{DPU: fmt.Sprint("w", w), TS: int64(i), Direction: 1}}, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		st := s.Stats()
		if st.Events != writers*each {
			t.Fatalf("stats %+v, want %d events", st, writers*each)
		}
		if mean := float64(st.Events) / float64(st.Batches); mean < 4 {
			t.Errorf("mean batch %.1f events (%+v), want concurrent writers grouped (>= 4)", mean, st)
		}
		if got := len(allEvents(t, s)); got != writers*each {
			t.Errorf("stored %d, want %d", got, writers*each)
		}
	})
	t.Run("batches are cut at MaxBatch", func(t *testing.T) {
		s := openT(t, Options{MaxBatch: 10, Linger: 20 * time.Millisecond})
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					evs := []occupancy.Event{{DPU: fmt.Sprint("w", w), TS: int64(2 * i), Direction: 1}, {DPU: fmt.Sprint("w", w), TS: int64(2*i + 1), Direction: 1}}
					if _, err := s.Append(context.Background(), evs, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		st := s.Stats()
		if st.Events != 320 || st.Batches < 32 {
			t.Errorf("stats %+v: want 320 events in at least 32 batches of <= 10", st)
		}
	})
}

// PutDeadLetters writes a batch in one write, with each message's count, reasons and
// sample kept as given (the dead letter of a message of many rejected events), and
// past the count bound only the newest stay.
func TestPutDeadLettersBatch(t *testing.T) {
	s := openT(t, Options{MaxDeadLetters: 3})
	var ds []DeadLetter
	for i := range 5 {
		ds = append(ds, DeadLetter{Time: int64(1000 + i), Topic: fmt.Sprintf("dpu/%d/events", i), Reason: "future_ts",
			Count: 100_000, Reasons: map[string]int{"future_ts": 99_999, "bad_ts": 1},
			Sample: []DeadSample{{Index: 0, Reason: "future_ts", Detail: "ts 2100"}, {Index: 7, Reason: "bad_ts"}}})
	}
	before := s.batches.Load()
	if err := s.PutDeadLetters(ds); err != nil {
		t.Fatal(err)
	}
	if got := s.batches.Load() - before; got != 1 {
		t.Errorf("%d committed batches for 5 dead letters, want 1", got)
	}
	got, err := s.DeadLetters(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Topic != "dpu/4/events" || got[2].Topic != "dpu/2/events" {
		t.Fatalf("got %d dead letters (%+v), want the newest 3", len(got), got)
	}
	if d := got[0]; d.Count != 100_000 || d.Reasons["bad_ts"] != 1 || len(d.Sample) != 2 || d.Sample[1].Index != 7 || d.Sample[0].Detail != "ts 2100" {
		t.Errorf("dead letter read back %+v, want its count, reasons and sample", d)
	}
}

// Health: nil while writes succeed; ErrDiskFull below the free-space floor (probed
// afresh at every call, through Options.FreeSpace); ErrWriteFailed after a failed
// write until a write succeeds (Health tries one at most once a second); ErrClosed
// once closed.
func TestHealth(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	s := openT(t, Options{MinFreeBytes: 1 << 20, FreeSpace: func(string) (uint64, error) { return free.Load(), nil }})
	if err := s.Health(); err != nil {
		t.Fatalf("healthy store: %v", err)
	}
	free.Store(1 << 10)
	if err := s.Health(); !errors.Is(err, ErrDiskFull) {
		t.Errorf("below the floor: %v, want ErrDiskFull at once", err)
	}
	if _, err := s.Append(context.Background(), []occupancy.Event{{DPU: "a", TS: 1, Direction: 1}}, nil); !errors.Is(err, ErrDiskFull) {
		t.Errorf("Append below the floor: %v, want ErrDiskFull", err)
	}
	free.Store(1 << 40)
	if err := s.Health(); err != nil {
		t.Errorf("space returned: %v, want nil", err)
	}

	s.writeFailed(errors.New("input/output error"))
	s.probeMu.Lock()
	s.probed = time.Now() // probed just now: no new probe yet
	s.probeMu.Unlock()
	if err := s.Health(); !errors.Is(err, ErrWriteFailed) || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("after a failed write: %v, want ErrWriteFailed with the cause", err)
	}
	s.probeMu.Lock()
	s.probed = time.Now().Add(-2 * healthProbeEvery)
	s.probeMu.Unlock()
	if err := s.Health(); err != nil {
		t.Errorf("after a probe write succeeded: %v, want nil", err)
	}
	s.writeFailed(errors.New("input/output error"))
	mustAppend(t, s, []occupancy.Event{{DPU: "a", TS: 2, Direction: 1}}, nil)
	if err := s.Health(); err != nil {
		t.Errorf("after an append succeeded: %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v, want ErrClosed", err)
	}
}
