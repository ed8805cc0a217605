package buffer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

func readArchive[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f) // multistream: every appended member
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	sc := bufio.NewScanner(gz)
	for sc.Scan() {
		var x T
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&x); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, x)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSweepArchivesAndRemoves(t *testing.T) {
	for _, chunk := range []int{20_000, 1, 2} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			defer func(old int) { sweepChunk = old }(sweepChunk)
			sweepChunk = chunk
			testSweep(t)
		})
	}
}

func testSweep(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	arch := t.TempDir()
	s := openT(t, Options{Retention: 24 * time.Hour, ArchiveDir: arch, Now: func() time.Time { return now }})
	cut := now.Add(-24 * time.Hour).UnixMilli()
	h := time.Hour.Milliseconds()

	// Events at -60h, -40h, -30h (two UTC days: 25th and 26th), -24h-1ms, and kept ones at the cut and after.
	evs := []occupancy.Event{
		{DPU: "a", ID: "1", TS: cut - 36*h, Direction: 1},
		{DPU: "a", ID: "2", TS: cut - 16*h, Direction: -1},
		{DPU: "b", TS: cut - 6*h, Direction: 1},
		{DPU: "b", TS: cut - 1, Direction: -1},
		{DPU: "a", ID: "3", TS: cut, Direction: 1},
		{DPU: "a", ID: "4", TS: cut + h, Direction: 1},
	}
	park := []bool{false, true, false, false, false, true}
	mustAppend(t, s, evs, park)

	var rows []occupancy.Row
	for _, sp := range []string{"x", "y"} {
		for i, off := range []int64{-30 * h, -20 * h, -2 * h, 0, 3 * h} {
			rows = append(rows, occupancy.Row{Space: sp, TS: cut + off, Seq: uint32(i), Occupancy: int64(i), Entrances: 1, Kind: occupancy.KindEvent})
		}
	}
	rows = append(rows, occupancy.Row{Space: "z", TS: cut - 5*h, Occupancy: 9, Kind: occupancy.KindReset}, occupancy.Row{Space: "z", TS: cut - 4*h, Occupancy: 8, Kind: occupancy.KindCorrection})
	if err := s.Commit(occupancy.Settlement{Rows: rows, Checkpoint: occupancy.Checkpoint{Horizon: cut + 4*h}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []occupancy.Reset{{Space: "x", TS: cut - h, Occupancy: 0}, {Space: "x", TS: cut + h, Occupancy: 2}} {
		if err := s.PutReset(r); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.Sweep(now); err != nil {
		t.Fatal(err)
	}

	t.Run("events", func(t *testing.T) {
		if got, want := allEvents(t, s), evs[4:]; !slices.Equal(got, want) {
			t.Errorf("events left %v, want %v", got, want)
		}
		if got := s.ParkedCount(); got != 1 {
			t.Errorf("ParkedCount = %d, want 1 (the old parked event went with retention)", got)
		}
		var got []ArchivedEvent
		for _, day := range []string{"2026-11-25", "2026-11-26"} {
			got = append(got, readArchive[ArchivedEvent](t, filepath.Join(arch, "events-"+day+".jsonl.gz"))...)
		}
		var want []ArchivedEvent
		for _, e := range evs[:4] {
			want = append(want, ArchivedEvent{DPU: e.DPU, ID: e.ID, TS: time.UnixMilli(e.TS).UTC().Format(time.RFC3339Nano), Direction: e.Direction})
		}
		for i := range got {
			// normalise the archive's fixed-ms form to RFC3339Nano for comparison
			ts, err := time.Parse(time.RFC3339, got[i].TS)
			if err != nil {
				t.Fatalf("archived ts %q: %v", got[i].TS, err)
			}
			got[i].TS = ts.UTC().Format(time.RFC3339Nano)
		}
		if !slices.Equal(got, want) {
			t.Errorf("archived events %v, want %v", got, want)
		}
	})

	t.Run("rows", func(t *testing.T) {
		var left, removed []occupancy.Row
		for _, sp := range []string{"x", "y", "z"} {
			_ = s.Rows(sp, minTS, maxTS, func(r occupancy.Row) error { left = append(left, r); return nil })
		}
		for _, r := range rows {
			anchor := (r.Space != "z" && r.TS == cut-2*h) || (r.Space == "z" && r.TS == cut-4*h)
			if r.TS >= cut || anchor {
				continue
			}
			removed = append(removed, r)
		}
		var wantLeft []occupancy.Row
		for _, r := range rows {
			if !slices.Contains(removed, r) {
				wantLeft = append(wantLeft, r)
			}
		}
		if !slices.Equal(left, wantLeft) {
			t.Errorf("rows left %v, want %v (each space keeps its last row before the cut)", left, wantLeft)
		}
		if r, ok, _ := s.RowAt("x", cut); !ok || r.TS != cut {
			t.Errorf("RowAt(x, cut) = %+v %v", r, ok)
		}
		if r, ok, _ := s.RowAt("z", cut); !ok || r.Occupancy != 8 {
			t.Errorf("RowAt(z, cut) = %+v %v, want the kept anchor with 8", r, ok)
		}
		files, _ := filepath.Glob(filepath.Join(arch, "occupancy-*.jsonl.gz"))
		sort.Strings(files)
		var got []ArchivedRow
		for _, f := range files {
			got = append(got, readArchive[ArchivedRow](t, f)...)
		}
		var want []ArchivedRow
		for _, r := range removed {
			want = append(want, ArchivedRow{Space: r.Space, TS: fmtTS(r.TS), Seq: r.Seq, Occupancy: r.Occupancy, Entrances: r.Entrances, Exits: r.Exits, Kind: KindName(r.Kind)})
		}
		sort.Slice(got, func(i, j int) bool { return got[i].Space+got[i].TS < got[j].Space+got[j].TS })
		sort.Slice(want, func(i, j int) bool { return want[i].Space+want[i].TS < want[j].Space+want[j].TS })
		if !slices.Equal(got, want) {
			t.Errorf("archived rows %v, want %v", got, want)
		}
	})

	t.Run("resets", func(t *testing.T) {
		var got []occupancy.Reset
		_ = s.Resets(minTS, func(r occupancy.Reset) error { got = append(got, r); return nil })
		if len(got) != 1 || got[0].TS != cut+h {
			t.Errorf("resets left %v, want only the one after the cut", got)
		}
	})

	t.Run("second sweep appends a gzip member", func(t *testing.T) {
		late := occupancy.Event{DPU: "c", ID: "9", TS: cut - 2*h, Direction: 1} // UTC day 2026-11-26
		mustAppend(t, s, []occupancy.Event{late}, nil)
		if err := s.Sweep(now); err != nil {
			t.Fatal(err)
		}
		got := readArchive[ArchivedEvent](t, filepath.Join(arch, "events-2026-11-26.jsonl.gz"))
		if len(got) != 3 || got[2].DPU != "c" {
			t.Errorf("day file after second sweep: %v, want the 2 earlier lines and c", got)
		}
	})
}

func TestRunSweepsAndStops(t *testing.T) {
	now := time.Now()
	s := openT(t, Options{Retention: time.Hour, SweepEvery: 10 * time.Millisecond, GCEvery: 10 * time.Millisecond})
	mustAppend(t, s, []occupancy.Event{{DPU: "a", TS: now.Add(-2 * time.Hour).UnixMilli(), Direction: 1}, {DPU: "a", TS: now.UnixMilli(), Direction: 1}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(allEvents(t, s)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not sweep the old event within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond) // let a GC tick run too
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop within 5s of cancel")
	}
}
