package buffer

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

func allReports(t testing.TB, s *Store) []occupancy.Report {
	t.Helper()
	var out []occupancy.Report
	if err := s.Reports(minTS, maxTS, func(r occupancy.Report) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// reportID is a report's identity (DESIGN 2a): interval (DPU, start, end),
// cumulative (DPU, ts).
type reportID struct {
	dpu        string
	kind       occupancy.ReportKind
	start, end int64
}

func idOf(r occupancy.Report) reportID { return reportID{r.DPU, r.Kind, r.Start, r.TS} }

// genReports makes a random stream of reports of a few DPUs: intervals of random
// ranges (many overlapping, some re-sent) and cumulative totals with resets (some
// re-sent with other totals, which are still duplicates).
func genReports(rng *rand.Rand, n int) []occupancy.Report {
	var out []occupancy.Report
	tot := map[string][2]int64{}
	for i := 0; i < n; i++ {
		dpu := fmt.Sprintf("d%d", rng.IntN(4))
		if len(out) > 0 && rng.IntN(8) == 0 {
			r := out[rng.IntN(len(out))]
			if r.Kind == occupancy.ReportCumulative {
				r.In++ // same identity, other totals: a duplicate all the same
			}
			out = append(out, r)
			continue
		}
		if rng.IntN(2) == 0 {
			s := int64(rng.IntN(600)) * 1000
			out = append(out, occupancy.Report{DPU: "i" + dpu, Kind: occupancy.ReportInterval, Start: s,
				TS: s + int64(1+rng.IntN(60))*1000, In: int64(rng.IntN(5000)), Out: int64(rng.IntN(5000)), Received: s + 99})
			continue
		}
		t := tot[dpu]
		if rng.IntN(10) == 0 {
			t = [2]int64{int64(rng.IntN(3)), int64(rng.IntN(3))} // counter reset
		} else {
			t[0] += int64(rng.IntN(4))
			t[1] += int64(rng.IntN(4))
		}
		tot[dpu] = t
		ts := int64(rng.IntN(600)) * 1000
		out = append(out, occupancy.Report{DPU: "c" + dpu, Kind: occupancy.ReportCumulative, TS: ts, In: t[0], Out: t[1], Received: ts + 7})
	}
	return out
}

// TestAppendReportsModel appends random report streams from several writers at once
// (so that group commits mix them) and checks what the store answered against what
// it holds: no two stored intervals of a DPU overlap; every report answered stored is
// stored exactly once with its fields; a duplicate's identity and an overlap's
// stated range are stored; the counter resets answered add up to those of the stored
// sequences, each counted independently; CumulativeBefore and Reports agree with the
// stored set; and all of it after a reopen.
func TestAppendReportsModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			s := openT(t, Options{Linger: time.Millisecond})
			const writers = 4
			type answer struct {
				rep occupancy.Report
				res ReportResult
			}
			var mu sync.Mutex
			var answers []answer
			var wg sync.WaitGroup
			for g := 0; g < writers; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(g)))
					reps := genReports(rng, 300)
					for len(reps) > 0 {
						k := min(len(reps), 1+rng.IntN(12))
						res, err := s.AppendReports(context.Background(), reps[:k], nil)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for i := range res {
							answers = append(answers, answer{reps[i], res[i]})
						}
						mu.Unlock()
						reps = reps[k:]
					}
				}(g)
			}
			wg.Wait()
			check := func(s *Store) {
				t.Helper()
				byID, seqs, want := storedSequences(t, s)
				newCount, resets := map[reportID]int{}, map[string]int64{}
				for _, a := range answers {
					switch {
					case a.res.Overlap:
						o := occupancy.Report{DPU: a.rep.DPU, Kind: occupancy.ReportInterval, Start: a.res.OverlapStart, TS: a.res.OverlapEnd}
						if _, ok := byID[idOf(o)]; !ok || !o.Overlaps(a.rep) || idOf(o) == idOf(a.rep) {
							t.Fatalf("%+v answered overlapping [%d, %d), which is not a stored report overlapping it", a.rep, o.Start, o.TS)
						}
						if _, ok := byID[idOf(a.rep)]; ok {
							t.Fatalf("%+v answered overlapping but stored", a.rep)
						}
					case a.res.Duplicate:
						if _, ok := byID[idOf(a.rep)]; !ok {
							t.Fatalf("%+v answered duplicate, not stored", a.rep)
						}
					default:
						got, ok := byID[idOf(a.rep)]
						if !ok || got != a.rep {
							t.Fatalf("%+v answered stored: got %+v (%v)", a.rep, got, ok)
						}
						newCount[idOf(a.rep)]++
						resets[a.rep.DPU] += int64(a.res.CounterResets)
					}
				}
				if len(newCount) != len(byID) {
					t.Fatalf("%d reports answered stored, %d stored", len(newCount), len(byID))
				}
				for id, n := range newCount {
					if n != 1 {
						t.Fatalf("%+v answered stored %d times", id, n)
					}
				}
				for dpu, rs := range seqs {
					for k := 0; k < 5 && rs[0].Kind == occupancy.ReportCumulative; k++ {
						at := int64(rand.IntN(620_000)) - 10_000
						j := sort.Search(len(rs), func(j int) bool { return rs[j].TS >= at })
						got, ok, err := s.CumulativeBefore(dpu, at)
						if err != nil {
							t.Fatal(err)
						}
						if ok != (j > 0) || (ok && (got.TS != rs[j-1].TS || got.In != rs[j-1].In || got.Out != rs[j-1].Out)) {
							t.Fatalf("CumulativeBefore(%s, %d): got %+v %v, want the one before index %d of %+v", dpu, at, got, ok, j, rs)
						}
					}
				}
				for dpu, n := range want {
					if resets[dpu] != n {
						t.Errorf("%s: answered %d counter resets, the stored sequence has %d", dpu, resets[dpu], n)
					}
				}
			}
			check(s)
			check(reopen(t, s))
		})
	}
}

// storedSequences reads every stored report and checks that none is stored twice,
// that no two stored intervals of a DPU overlap, and that CounterResets holds the
// counter resets of each stored cumulative sequence, counted here pair by pair. It
// returns the reports by identity, each DPU's reports in ts order and those resets.
func storedSequences(t *testing.T, s *Store) (map[reportID]occupancy.Report, map[string][]occupancy.Report, map[string]int64) {
	t.Helper()
	byID := map[reportID]occupancy.Report{}
	seqs := map[string][]occupancy.Report{}
	all := allReports(t, s)
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.TS > b.TS || (a.TS == b.TS && (a.DPU > b.DPU || (a.DPU == b.DPU && a.Kind >= b.Kind))) {
			t.Fatalf("Reports out of (TS, DPU, kind) order: %+v before %+v", a, b)
		}
	}
	for _, r := range all {
		if _, dup := byID[idOf(r)]; dup {
			t.Fatalf("report %+v stored twice", r)
		}
		byID[idOf(r)] = r
		seqs[r.DPU] = append(seqs[r.DPU], r)
	}
	want := map[string]int64{}
	for dpu, rs := range seqs {
		sort.Slice(rs, func(i, j int) bool { return rs[i].TS < rs[j].TS })
		for i := 1; i < len(rs); i++ {
			if rs[0].Kind == occupancy.ReportInterval && rs[i-1].TS > rs[i].Start {
				t.Fatalf("stored intervals %+v and %+v overlap", rs[i-1], rs[i])
			}
			if rs[0].Kind == occupancy.ReportCumulative && occupancy.CounterReset(rs[i-1], rs[i]) {
				want[dpu]++
			}
		}
	}
	got, err := s.CounterResets()
	if err != nil {
		t.Fatal(err)
	}
	for dpu := range seqs {
		if got[dpu] != want[dpu] {
			t.Errorf("%s: counter resets %d, the stored sequence has %d", dpu, got[dpu], want[dpu])
		}
	}
	for dpu := range got {
		if _, ok := seqs[dpu]; !ok {
			t.Errorf("counter resets of %s, which has no report", dpu)
		}
	}
	return byID, seqs, want
}

func TestAppendReportsRejectsBadInput(t *testing.T) {
	s := openT(t, Options{})
	for _, r := range []occupancy.Report{
		{DPU: "", Kind: occupancy.ReportCumulative, TS: 1},
		{DPU: "a", Kind: occupancy.ReportInterval, Start: 5, TS: 5},
		{DPU: "a", Kind: occupancy.ReportCumulative, TS: 5, In: -1},
		{DPU: "a", Kind: occupancy.ReportEvents, TS: 5},
	} {
		if _, err := s.AppendReports(context.Background(), []occupancy.Report{r}, nil); err == nil {
			t.Errorf("AppendReports(%+v): want an error", r)
		}
	}
	if _, _, err := s.AppendMixed(context.Background(), nil, nil, []occupancy.Report{{DPU: "a", Kind: occupancy.ReportCumulative, TS: 1}}, []bool{true, false}); err == nil {
		t.Error("AppendMixed with a parked flag too many: want an error")
	}
	if got := allReports(t, s); len(got) != 0 {
		t.Fatalf("stored %v", got)
	}
}

// TestAppendMixed: events and reports of one call share one synced write and keep
// their own results.
func TestAppendMixed(t *testing.T) {
	s := openT(t, Options{})
	e := occupancy.Event{DPU: "e", ID: "1", TS: 10, Direction: 1}
	iv := occupancy.Report{DPU: "i", Kind: occupancy.ReportInterval, Start: 0, TS: 10, In: 3, Out: 1}
	b0 := s.Stats().Batches
	er, rr, err := s.AppendMixed(context.Background(), []occupancy.Event{e}, nil, []occupancy.Report{iv, iv}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(er) != 1 || er[0].Duplicate || len(rr) != 2 || rr[0].Duplicate || !rr[1].Duplicate {
		t.Fatalf("results %+v %+v: want the event and the first report new, the second a duplicate", er, rr)
	}
	if n := s.Stats().Batches - b0; n != 1 {
		t.Errorf("%d batches, want 1", n)
	}
	iv2 := iv
	iv2.Start = 5 // same end, other start: overlaps
	rr, err = s.AppendReports(context.Background(), []occupancy.Report{iv2}, nil)
	if err != nil || !rr[0].Overlap || rr[0].OverlapStart != 0 || rr[0].OverlapEnd != 10 {
		t.Fatalf("same end, other start: %+v %v, want overlap with [0, 10)", rr, err)
	}
	rej, ok := rr[0].Rejection(iv2, 5, 3)
	if !ok || rej.Reason != occupancy.ReasonOverlap || rej.Index != 3 || !strings.Contains(rej.Detail, "overlaps the stored report") {
		t.Errorf("Rejection: got %+v %v", rej, ok)
	}
	if _, ok := (ReportResult{Duplicate: true}).Rejection(iv, 5, 0); ok {
		t.Error("a duplicate is no rejection")
	}
}

// TestParkedReports: parked reports are listed, counted and bounded by max_parked
// with the events, and a settlement unparks them, in one transaction or in steps.
func TestParkedReports(t *testing.T) {
	for _, steps := range []bool{false, true} {
		t.Run(fmt.Sprintf("steps=%v", steps), func(t *testing.T) {
			s := openT(t, Options{MaxParked: 3})
			ev := occupancy.Event{DPU: "u", ID: "1", TS: 5, Direction: 1}
			reps := []occupancy.Report{
				{DPU: "u1", Kind: occupancy.ReportInterval, Start: 0, TS: 10, In: 1},
				{DPU: "u2", Kind: occupancy.ReportCumulative, TS: 10, In: 4, Out: 2},
				{DPU: "u2", Kind: occupancy.ReportCumulative, TS: 20, In: 5, Out: 2},
				{DPU: "k", Kind: occupancy.ReportCumulative, TS: 20, In: 5, Out: 2},
			}
			er, rr, err := s.AppendMixed(context.Background(), []occupancy.Event{ev}, []bool{true}, reps, []bool{true, true, true, false})
			if err != nil {
				t.Fatal(err)
			}
			if er[0].Rejected || rr[0].Rejected || rr[1].Rejected || !rr[2].Rejected || rr[3].Rejected {
				t.Fatalf("results %+v %+v: want the third parked report over max_parked 3", er, rr)
			}
			if s.ParkedCount() != 3 {
				t.Fatalf("ParkedCount %d, want 3", s.ParkedCount())
			}
			var parked []occupancy.Report
			if err := s.ParkedReports(func(r occupancy.Report) error { parked = append(parked, r); return nil }); err != nil {
				t.Fatal(err)
			}
			sortReports(parked)
			if !reflect.DeepEqual(parked, reps[:2]) {
				t.Fatalf("parked: got %+v, want %+v", parked, reps[:2])
			}
			s = reopen(t, s)
			if s.ParkedCount() != 3 {
				t.Fatalf("ParkedCount after reopen %d, want 3", s.ParkedCount())
			}
			if steps {
				s.opts.MemTableSize = 1 << 10 // every settlement goes in steps
			}
			if err := s.Commit(occupancy.Settlement{UnparkedReports: reps[:2], Unparked: []occupancy.Event{ev},
				Checkpoint: occupancy.Checkpoint{Horizon: 1}}); err != nil {
				t.Fatal(err)
			}
			if s.ParkedCount() != 0 {
				t.Errorf("ParkedCount after unparking %d, want 0", s.ParkedCount())
			}
			parked = nil
			_ = s.ParkedReports(func(r occupancy.Report) error { parked = append(parked, r); return nil })
			if len(parked) != 0 {
				t.Errorf("parked after unparking: %+v", parked)
			}
			if got := allReports(t, s); len(got) != 3 {
				t.Errorf("reports after unparking: %+v, want the 3 stored", got)
			}
		})
	}
}

// TestSweepReports: retention archives and removes reports before the cut, keeps
// each cumulative DPU's last report before it (its next report's baseline), and the
// archived lines decode, with their kind's default decoder, to the removed reports.
func TestSweepReports(t *testing.T) {
	for _, chunk := range []int{20_000, 1, 3} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			defer func(old int) { sweepChunk = old }(sweepChunk)
			sweepChunk = chunk
			now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
			arch := t.TempDir()
			s := openT(t, Options{Retention: 24 * time.Hour, ArchiveDir: arch, Now: func() time.Time { return now }})
			cut := now.Add(-24 * time.Hour).UnixMilli()
			day := int64(86_400_000)
			var reps []occupancy.Report
			for i := int64(0); i < 6; i++ {
				ts := cut - 3*day + i*day/2 // before and after the cut, over 3 days
				reps = append(reps,
					occupancy.Report{DPU: "a", Kind: occupancy.ReportCumulative, TS: ts, In: 10 * i, Out: i},
					occupancy.Report{DPU: "b", Kind: occupancy.ReportCumulative, TS: ts + 1, In: i, Out: 0},
					occupancy.Report{DPU: "c", Kind: occupancy.ReportInterval, Start: ts - 1000, TS: ts, In: i, Out: 2})
			}
			reps = append(reps, occupancy.Report{DPU: "a", Kind: occupancy.ReportCumulative, TS: cut + 5, In: 99, Out: 9})
			if _, err := s.AppendReports(context.Background(), reps, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Sweep(now); err != nil {
				t.Fatal(err)
			}
			var wantLeft, wantGone []occupancy.Report
			for _, r := range reps {
				keep := r.TS >= cut
				if r.Kind == occupancy.ReportCumulative && !keep {
					// the last before the cut of its DPU stays
					keep = r.TS == cut-3*day+5*day/2+map[string]int64{"a": 0, "b": 1}[r.DPU]
				}
				if keep {
					wantLeft = append(wantLeft, r)
				} else {
					wantGone = append(wantGone, r)
				}
			}
			got := allReports(t, s)
			sortReports(got)
			sortReports(wantLeft)
			if !reflect.DeepEqual(got, wantLeft) {
				t.Fatalf("left after the sweep:\n got %+v\nwant %+v", got, wantLeft)
			}
			before, ok, err := s.CumulativeBefore("b", now.UnixMilli())
			if err != nil || !ok || before.In != 5 {
				t.Errorf("CumulativeBefore(b): %+v %v %v, want the kept baseline", before, ok, err)
			}
			archived := readReportArchives(t, arch)
			sortReports(archived)
			sortReports(wantGone)
			if !reflect.DeepEqual(archived, wantGone) {
				t.Fatalf("archived:\n got %+v\nwant %+v", archived, wantGone)
			}
			if err := s.Sweep(now); err != nil {
				t.Fatal(err)
			}
			if got2 := allReports(t, s); len(got2) != len(got) {
				t.Errorf("a second sweep removed %d more", len(got)-len(got2))
			}
		})
	}
}

func sortReports(rs []occupancy.Report) {
	slices.SortFunc(rs, func(a, b occupancy.Report) int {
		if c := strings.Compare(a.DPU, b.DPU); c != 0 {
			return c
		}
		return int(a.TS - b.TS)
	})
}

// readReportArchives decodes the report lines of every events archive in dir the
// way import does: each with the default decoder of the kind it names.
func readReportArchives(t *testing.T, dir string) []occupancy.Report {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "events-*.jsonl.gz"))
	if len(files) == 0 {
		t.Fatal("no events archive")
	}
	var out []occupancy.Report
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		gz, err := gzip.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(gz)
		for sc.Scan() {
			var head struct{ DPU, Kind string }
			if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
				t.Fatal(err)
			}
			k, err := occupancy.ParseReportKind(head.Kind)
			if err != nil || k == occupancy.ReportEvents {
				t.Fatalf("line %s: kind %q", sc.Text(), head.Kind)
			}
			d, err := occupancy.NewDecoder(k, occupancy.Mapping{})
			if err != nil {
				t.Fatal(err)
			}
			dec := d.Decode(head.DPU, sc.Bytes(), occupancy.Limits{})
			if len(dec.Rejections) > 0 || len(dec.Reports) != 1 {
				t.Fatalf("line %s: %+v", sc.Text(), dec)
			}
			out = append(out, dec.Reports[0])
		}
		fh.Close()
	}
	return out
}

// TestAbandonedReportAppendIsNotLost: like events, a report whose waiter gave up
// while its batch was written counts as new when sent again, once, and its counter
// resets are counted once.
func TestAbandonedReportAppendIsNotLost(t *testing.T) {
	s := openT(t, Options{})
	base := occupancy.Report{DPU: "c", Kind: occupancy.ReportCumulative, TS: 1, In: 10, Out: 10}
	if _, err := s.AppendReports(context.Background(), []occupancy.Report{base}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gave := make(chan struct{})
	s.hookBeforeCommit = func() {
		cancel()
		<-gave
	}
	r := occupancy.Report{DPU: "c", Kind: occupancy.ReportCumulative, TS: 2, In: 1, Out: 10} // a reset
	if _, err := s.AppendReports(ctx, []occupancy.Report{r}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendReports with cancelled context: %v, want context.Canceled", err)
	}
	close(gave)
	s.hookBeforeCommit = nil
	res, err := s.AppendReports(context.Background(), []occupancy.Report{r}, nil)
	if err != nil || res[0].Duplicate {
		t.Fatalf("redelivery: %+v %v, want new", res, err)
	}
	res, err = s.AppendReports(context.Background(), []occupancy.Report{r}, nil)
	if err != nil || !res[0].Duplicate {
		t.Fatalf("second redelivery: %+v %v, want duplicate", res, err)
	}
	got, err := s.CounterResets()
	if err != nil || got["c"] != 1 {
		t.Errorf("counter resets %v %v, want c: 1", got, err)
	}
}

// TestReportKeyOrder: report keys sort by time, then DPU, so the logs stream in
// timeline order; values round-trip.
func TestReportKeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var reps []occupancy.Report
	for i := 0; i < 500; i++ {
		r := occupancy.Report{DPU: fmt.Sprintf("d%d", rng.IntN(30)), Kind: occupancy.ReportCumulative,
			TS: rng.Int64N(1<<50) - 1<<49, In: rng.Int64N(occupancy.MaxReportCount), Out: rng.Int64N(100), Received: rng.Int64N(1 << 50), Late: rng.IntN(2) == 0}
		if rng.IntN(2) == 0 {
			r.Kind, r.Start = occupancy.ReportInterval, r.TS-1-rng.Int64N(1<<40)
		}
		reps = append(reps, r)
		got, err := decodeReport(reportKey(nil, r), reportValue(nil, r))
		if err != nil || got != r {
			t.Fatalf("round trip %+v: got %+v %v", r, got, err)
		}
	}
	for i := 1; i < len(reps); i++ {
		a, b := reps[i-1], reps[i]
		if a.Kind != b.Kind {
			continue
		}
		ka, kb := string(reportKey(nil, a)), string(reportKey(nil, b))
		want := a.TS < b.TS || (a.TS == b.TS && a.DPU < b.DPU)
		if (ka < kb) != want && ka != kb {
			t.Fatalf("key order of %+v and %+v", a, b)
		}
	}
	for _, k := range [][]byte{nil, {'n'}, append([]byte{'x'}, make([]byte, 9)...)} {
		if _, err := decodeReport(k, []byte{0, 1, 1, 1, 0}); err == nil {
			t.Errorf("decodeReport(%x): want an error", k)
		}
	}
}

// TestLateReportMarks: a report stored late keeps a late mark (a parked one does
// not: it is corrected when unparked) until a settlement lists it in
// CorrectedReports, in one transaction or in steps; LateReports streams the marks.
func TestLateReportMarks(t *testing.T) {
	for _, steps := range []bool{false, true} {
		t.Run(fmt.Sprintf("steps=%v", steps), func(t *testing.T) {
			s := openT(t, Options{})
			reps := []occupancy.Report{
				{DPU: "a", Kind: occupancy.ReportInterval, Start: 0, TS: 10, In: 2, Late: true},
				{DPU: "c", Kind: occupancy.ReportCumulative, TS: 10, In: 4, Late: true},
				{DPU: "c", Kind: occupancy.ReportCumulative, TS: 20, In: 5},
				{DPU: "u", Kind: occupancy.ReportCumulative, TS: 20, In: 5, Late: true},
			}
			if _, err := s.AppendReports(context.Background(), reps, []bool{false, false, false, true}); err != nil {
				t.Fatal(err)
			}
			late := func() []occupancy.Report {
				var out []occupancy.Report
				if err := s.LateReports(func(r occupancy.Report) error { out = append(out, r); return nil }); err != nil {
					t.Fatal(err)
				}
				sortReports(out)
				return out
			}
			if got := late(); !reflect.DeepEqual(got, reps[:2]) {
				t.Fatalf("late: got %+v, want the two stored late and not parked", got)
			}
			s = reopen(t, s)
			if steps {
				s.opts.MemTableSize = 1 << 10
			}
			if err := s.Commit(occupancy.Settlement{CorrectedReports: reps[:1], Checkpoint: occupancy.Checkpoint{Horizon: 1}}); err != nil {
				t.Fatal(err)
			}
			if got := late(); !reflect.DeepEqual(got, reps[1:2]) {
				t.Fatalf("late after correcting the first: got %+v, want the second", got)
			}
		})
	}
}
