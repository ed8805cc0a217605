package tracker

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"testing"

	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// ev builds an accepted event: integer-looking id, ts and receive time in ms.
func ev(dpu, id string, ts, recv int64) occupancy.Event {
	return occupancy.Event{DPU: dpu, ID: id, TS: ts, Direction: 1, Received: recv}
}

func statOf(t *testing.T, s *DPUStats, dpu string) DPUStat {
	t.Helper()
	for _, st := range s.Snapshot(nil) {
		if st.DPU == dpu {
			return st
		}
	}
	t.Fatalf("no stats for DPU %q", dpu)
	return DPUStat{}
}

func TestDPUStatsSequences(t *testing.T) {
	type step struct {
		id string
		ts int64
	}
	cases := []struct {
		name         string
		steps        []step
		gaps, starts int64
	}{
		{"in order", []step{{"1", 1}, {"2", 2}, {"3", 3}}, 0, 0},
		{"leading zeros are integers", []step{{"0007", 1}, {"0008", 2}, {"10", 3}}, 1, 0},
		{"forward jump counts skipped ids", []step{{"5", 1}, {"8", 2}}, 2, 0},
		{"reordered delivery is no gap", []step{{"1", 1}, {"3", 3}, {"2", 2}}, 0, 0},
		{"reordered below the first seen", []step{{"3", 3}, {"1", 1}, {"2", 2}}, 0, 0},
		{"hole below the first seen", []step{{"3", 3}, {"1", 1}}, 1, 0},
		{"restart to a lower id with later ts", []step{{"100", 1}, {"101", 2}, {"1", 3}, {"2", 4}}, 0, 1},
		{"restart keeps the old run's gaps", []step{{"100", 1}, {"102", 2}, {"0", 3}, {"1", 4}}, 1, 1},
		{"same id with later ts is a restart", []step{{"7", 1}, {"7", 2}}, 0, 1},
		{"late events of the old run after a restart", []step{{"100", 1}, {"102", 3}, {"1", 5}, {"101", 2}, {"103", 4}, {"2", 6}}, 0, 1},
		{"reordered first events of the new run", []step{{"100", 1}, {"101", 2}, {"3", 6}, {"2", 5}, {"1", 4}, {"4", 7}}, 0, 1},
		{"two restarts", []step{{"50", 1}, {"52", 2}, {"10", 3}, {"13", 4}, {"0", 5}, {"1", 6}}, 3, 2},
		{"clock stepped back, sequence goes on", []step{{"1", 10}, {"2", 11}, {"3", 5}, {"4", 6}}, 0, 0},
		{"huge jump is counted, not remembered", []step{{"1", 1}, {"1000001", 2}}, 999999, 0},
		{"huge jump then late fill stays counted", []step{{"1", 1}, {"1000", 3}, {"500", 2}}, 998, 0},
		{"non-integer ids are not tracked", []step{{"a1", 1}, {"a5", 2}, {"", 3}, {"-4", 4}, {"1e3", 5}}, 0, 0},
		{"too long to be an integer", []step{{"1234567890123456789", 1}, {"9", 2}}, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewDPUStats()
			for _, st := range c.steps {
				s.Accepted(ev("d", st.id, st.ts, 0))
			}
			got := statOf(t, s, "d")
			if got.Gaps != c.gaps || got.Restarts != c.starts {
				t.Errorf("gaps, restarts = %d, %d; want %d, %d", got.Gaps, got.Restarts, c.gaps, c.starts)
			}
			if got.Accepted != int64(len(c.steps)) {
				t.Errorf("accepted = %d, want %d", got.Accepted, len(c.steps))
			}
		})
	}
}

func TestDPUStatsCountersAndSnapshot(t *testing.T) {
	s := NewDPUStats()
	// DPU b: events out of ts order; last event is the max ts, skew from its receipt.
	s.Accepted(ev("b", "1", 1_000_000, 1_000_500))
	s.Accepted(ev("b", "3", 3_000_000, 2_999_000))
	s.Accepted(ev("b", "2", 2_000_000, 3_500_000)) // delayed, older ts
	s.Duplicate("b")
	s.Duplicate("b")
	s.Rejected("b")
	s.Parked("z") // parked before any accepted: a row still appears
	s.Accepted(ev("z", "", 5_000, 0))
	s.Rejected("unknown-only")
	// Import (Received 0) moves the last event but keeps the skew.
	s.Accepted(ev("b", "4", 4_000_000, 0))

	got := s.Snapshot([]string{"c", "b", "a", "c"})
	want := []DPUStat{
		{DPU: "a"},
		{DPU: "b", LastEvent: "1970-01-01T01:06:40.000Z", ClockSkewMS: 1000, Accepted: 4, Duplicates: 2, Rejected: 1,
			SinceStart: DPUCounts{Accepted: 4, Duplicates: 2, Rejected: 1}},
		{DPU: "c"},
		{DPU: "unknown-only", Rejected: 1, SinceStart: DPUCounts{Rejected: 1}},
		{DPU: "z", LastEvent: "1970-01-01T00:00:05.000Z", Accepted: 1, Parked: 1, SinceStart: DPUCounts{Accepted: 1, Parked: 1}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("snapshot:\n got %+v\nwant %+v", got, want)
	}

	t.Run("of", func(t *testing.T) {
		// The rows of some DPUs, in the order asked, equal their snapshot rows.
		byID := map[string]DPUStat{}
		for _, r := range got {
			byID[r.DPU] = r
		}
		ids := []string{"z", "never-seen", "b", "unknown-only"}
		of := s.Of(ids)
		for i, id := range ids {
			want, ok := byID[id]
			if !ok {
				want = DPUStat{DPU: id}
			}
			if of[i] != want {
				t.Errorf("Of: row %d = %+v, want %+v", i, of[i], want)
			}
		}
	})

	t.Run("empty", func(t *testing.T) {
		got := NewDPUStats().Snapshot(nil)
		if got == nil || len(got) != 0 {
			t.Errorf("got %#v, want an empty non-nil slice", got)
		}
	})
}

// seqModel is an independent model of a DPU's sequence: runs of increasing ids (with
// omissions) and increasing ts; every new run starts below the previous run's ids and
// after its ts. Gaps are the ids missing within each run's [min, max]; restarts are
// runs - 1.
type seqModel struct {
	events          []occupancy.Event
	gaps, restarts  int64
	lastTS, skew    int64
	accepted        int64
	dpu             string
	deliveryOrdered []occupancy.Event
}

func genDPU(rng *rand.Rand, dpu string, maxDelay int64) *seqModel {
	m := &seqModel{dpu: dpu}
	runs := 1 + rng.IntN(3)
	next := int64(1_000_000 + rng.IntN(1_000_000)) // first run's first id
	ts := int64(1_000_000 + rng.IntN(1000))
	type del struct {
		at int64
		e  occupancy.Event
	}
	var ds []del
	for r := 0; r < runs; r++ {
		if r > 0 {
			// A reboot: ids restart below the previous run (disjoint ranges), time goes
			// on at once, so late events of the old run cross the restart.
			m.restarts++
			next = next/4 + int64(rng.IntN(int(next/4)))
			ts++
		}
		first := next
		seq := next
		var count int64
		n := 20 + rng.IntN(40)
		for i := 0; i < n; i++ {
			// Every run lasts over twice the reordering window.
			ts += maxDelay/10 + int64(rng.IntN(int(maxDelay/8)+1))
			recv := ts + int64(rng.IntN(int(maxDelay)))
			e := occupancy.Event{DPU: dpu, ID: strconv.FormatInt(seq, 10), TS: ts, Direction: 1, Received: recv}
			ds = append(ds, del{recv, e})
			count++
			if ts >= m.lastTS {
				m.lastTS, m.skew = ts, ts-recv
			}
			if i < n-1 && rng.IntN(15) == 0 {
				seq += int64(1 + rng.IntN(3)) // ids the broker lost
			}
			seq++
		}
		m.gaps += (seq - 1 - first + 1) - count
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].at < ds[j].at })
	for _, d := range ds {
		m.deliveryOrdered = append(m.deliveryOrdered, d.e)
	}
	m.accepted = int64(len(ds))
	return m
}

func TestDPUStatsRandomizedAgainstModel(t *testing.T) {
	seeds := 20
	if testing.Short() {
		seeds = 5
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			const maxDelay = 4000 // ms of reordering, shorter than any run
			s := NewDPUStats()
			var models []*seqModel
			for i := 0; i < 40; i++ {
				models = append(models, genDPU(rng, fmt.Sprintf("dpu-%02d", i), maxDelay))
			}
			// Feed DPUs concurrently (each DPU's own events in delivery order).
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g; i < len(models); i += 4 {
						evs := models[i].deliveryOrdered
						half := len(evs) / 2
						s.AcceptedBatch(evs[:half])
						for _, e := range evs[half:] {
							s.Accepted(e)
						}
					}
				}()
			}
			wg.Wait()
			snap := s.Snapshot(nil)
			if len(snap) != len(models) {
				t.Fatalf("snapshot has %d DPUs, want %d", len(snap), len(models))
			}
			for i, m := range models {
				got := snap[i]
				want := DPUStat{DPU: m.dpu, LastEvent: payload.FormatMS(m.lastTS), ClockSkewMS: m.skew,
					Accepted: m.accepted, Gaps: m.gaps, Restarts: m.restarts,
					SinceStart: DPUCounts{Accepted: m.accepted, Gaps: m.gaps, Restarts: m.restarts}}
				if got != want {
					t.Errorf("DPU %s:\n got %+v\nwant %+v", m.dpu, got, want)
				}
			}
		})
	}
}

func TestDPUStatsHoleBound(t *testing.T) {
	s := NewDPUStats()
	// 300 single-id holes: more than maxHoles are remembered; all stay counted.
	for i := int64(0); i <= 600; i += 2 {
		s.Accepted(ev("d", strconv.FormatInt(i, 10), i, 0))
	}
	if got := statOf(t, s, "d").Gaps; got != 300 {
		t.Fatalf("gaps = %d, want 300", got)
	}
	// Filling the newest holes (still remembered) lowers the count; the oldest ones
	// were forgotten and stay counted.
	for i := int64(1); i < 600; i += 2 {
		s.Accepted(ev("d", strconv.FormatInt(i, 10), i, 0))
	}
	if got, want := statOf(t, s, "d").Gaps, int64(300-maxHoles); got != want {
		t.Fatalf("gaps after filling = %d, want %d", got, want)
	}
}

func BenchmarkDPUStatsAccepted(b *testing.B) {
	s := NewDPUStats()
	const dpus = 100_000
	names := make([]string, dpus)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := i % dpus
		seq := int64(i / dpus)
		s.Accepted(occupancy.Event{DPU: names[d], ID: strconv.FormatInt(seq, 10), TS: seq * 1000, Received: seq*1000 + 5})
	}
}

func BenchmarkDPUStatsSnapshot(b *testing.B) {
	s := NewDPUStats()
	const dpus = 100_000
	known := make([]string, dpus)
	for i := range known {
		known[i] = fmt.Sprintf("dpu-%06d", i)
		s.Accepted(occupancy.Event{DPU: known[i], ID: "1", TS: 1000, Received: 1005})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got := s.Snapshot(known); len(got) != dpus {
			b.Fatalf("%d rows", len(got))
		}
	}
}
