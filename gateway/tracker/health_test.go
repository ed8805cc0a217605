package tracker

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// healthModel is an independent model of the quiet check: a DPU of the topology in
// force is quiet at the last check when its last report (or, never having reported,
// its first knowledge) plus its quiet_after is at or before that check.
type healthModel struct {
	known      map[string]time.Duration // quiet_after per DPU of the topology (0: default)
	first      map[string]int64
	last       map[string]int64
	def        time.Duration
	checkedAt  int64
	everyoneAt map[string]bool // reported at least once
}

func (m *healthModel) due(id string) (int64, bool) {
	ref, ok := m.last[id]
	if !ok {
		ref, ok = m.first[id]
	}
	if !ok {
		return 0, false
	}
	qa := m.known[id]
	if qa == 0 {
		qa = m.def
	}
	return ref + qa.Milliseconds(), true
}

// quiet returns the quiet DPUs, sorted, with when each went quiet.
func (m *healthModel) quiet() ([]string, map[string]int64) {
	var ids []string
	since := map[string]int64{}
	for id := range m.known {
		if due, ok := m.due(id); ok && due <= m.checkedAt {
			ids = append(ids, id)
			since[id] = due
		}
	}
	slices.Sort(ids)
	return ids, since
}

func TestQuietCheckAgainstModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			runQuietModel(t, rng)
		})
	}
}

func runQuietModel(t *testing.T, rng *rand.Rand) {
	const pool = 300 // DPU ids; each version takes a random part of them
	ids := make([]string, pool)
	for i := range ids {
		ids[i] = fmt.Sprintf("dpu-%03d", i)
	}
	s := NewDPUStats()
	m := &healthModel{first: map[string]int64{}, last: map[string]int64{}, everyoneAt: map[string]bool{}}
	now := t0

	newVersion := func() {
		def := time.Duration(1+rng.IntN(60)) * time.Minute
		var tds []TopologyDPU
		m.known = map[string]time.Duration{}
		m.def = def
		for _, id := range ids {
			if rng.IntN(3) == 0 {
				continue
			}
			var qa time.Duration
			if rng.IntN(4) == 0 {
				qa = time.Duration(1+rng.IntN(90)) * time.Minute
			}
			m.known[id] = qa
			if _, ok := m.first[id]; !ok {
				m.first[id] = now
			}
			// The tracker passes when the earliest version knew the DPU.
			tds = append(tds, TopologyDPU{ID: id, QuietAfter: qa, FirstKnown: m.first[id]})
		}
		s.SetTopology(tds, def, now)
		m.checkedAt = now
	}
	newVersion()

	check := func(step int) {
		t.Helper()
		wantIDs, since := m.quiet()
		h := s.Health()
		if h.DPUs != len(m.known) || h.Quiet != len(wantIDs) {
			t.Fatalf("step %d: DPUs, quiet = %d, %d; want %d, %d", step, h.DPUs, h.Quiet, len(m.known), len(wantIDs))
		}
		capped := wantIDs[:min(len(wantIDs), MaxQuietIDs)]
		if !slices.Equal(h.QuietIDs, capped) {
			t.Fatalf("step %d: quiet ids\n got %v\nwant %v", step, h.QuietIDs, capped)
		}
		for _, st := range s.Snapshot(nil) {
			want, quiet := since[st.DPU]
			if st.Quiet != quiet || (quiet && st.QuietSince != payload.FormatMS(want)) || (!quiet && st.QuietSince != "") {
				t.Fatalf("step %d: DPU %s: quiet %v since %q; want %v since %s", step, st.DPU, st.Quiet, st.QuietSince,
					quiet, payload.FormatMS(want))
			}
			if r, ok := m.last[st.DPU]; ok != (st.LastReceived != "") || ok && st.LastReceived != payload.FormatMS(r) {
				t.Fatalf("step %d: DPU %s: last received %q, want %d (%v)", step, st.DPU, st.LastReceived, r, ok)
			}
		}
		var quietSeen []string
		s.LastReport(false, func(dpu string, ms int64, ok bool) {
			quietSeen = append(quietSeen, dpu)
			if r, had := m.last[dpu]; ok != had || ok && ms != r {
				t.Fatalf("step %d: LastReport(quiet) %s = %d, %v; want %d, %v", step, dpu, ms, ok, r, had)
			}
		})
		slices.Sort(quietSeen)
		if !slices.Equal(quietSeen, wantIDs) {
			t.Fatalf("step %d: LastReport(quiet) listed %v, want %v", step, quietSeen, wantIDs)
		}
		n := 0
		s.LastReport(true, func(string, int64, bool) { n++ })
		if n != len(m.known) {
			t.Fatalf("step %d: LastReport(all) listed %d DPUs, want %d", step, n, len(m.known))
		}
	}

	for step := range 300 {
		now += rng.Int64N(10 * 60_000) // up to 10 minutes
		switch k := rng.IntN(10); {
		case k < 6: // reports of a few DPUs (some not in the topology)
			for range 1 + rng.IntN(20) {
				id := ids[rng.IntN(pool)]
				if rng.IntN(2) == 0 {
					e := occupancy.Event{DPU: id, ID: fmt.Sprint(step), TS: now, Direction: 1, Received: now}
					s.Ingested([]occupancy.Event{e}, nil, nil, now)
				} else {
					s.Ingested(nil, nil, []string{id}, now) // a duplicate is a report too
				}
				m.last[id] = now
			}
			if rng.IntN(3) == 0 {
				s.Rejected(ids[rng.IntN(pool)]) // not a report
			}
		case k < 9:
			s.CheckQuiet(now)
			m.checkedAt = now
		default:
			newVersion()
		}
		if m.checkedAt == now {
			check(step)
		}
	}
}

func TestInsertCapped(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for n := 1; n <= 5; n++ {
		var got []string
		var all []string
		for i := range 50 {
			id := fmt.Sprintf("x%02d", rng.IntN(100)+i*100)
			all = append(all, id)
			got = insertCapped(got, id, n)
		}
		slices.Sort(all)
		if want := all[:n]; !slices.Equal(got, want) {
			t.Fatalf("n=%d: got %v, want %v", n, got, want)
		}
	}
}

// BenchmarkQuietCheck measures the quiet check of the tick at 100,000 DPUs
// (health.go) beside a full scan of every DPU, as a tick would do without the heap:
//
//	idle:         a tick where nothing is due
//	tick:         one second at the 100,000-DPU peak: 20,000 reports and the tick's
//	              check (the entries that come due move on)
//	all-quiet:    every DPU goes quiet at one tick (a site's network down), with
//	              the summary of the quiet DPUs
//	report:       one report of a DPU (what ingest pays)
//	full-scan:    the same decision taken by looking at every DPU
func BenchmarkQuietCheck(b *testing.B) {
	const n = 100_000
	qa := (2 * time.Hour).Milliseconds()
	setup := func() (*DPUStats, []string) {
		s := NewDPUStats()
		ids := make([]string, n)
		tds := make([]TopologyDPU, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("dpu-%06d", i)
			tds[i] = TopologyDPU{ID: ids[i], FirstKnown: t0}
		}
		s.SetTopology(tds, 0, t0)
		// Reports spread over the last two hours: deadlines spread too.
		for i, id := range ids {
			s.Reported(id, t0+int64(i)*qa/n)
		}
		s.SetTopology(tds, 0, t0+qa-1) // the heap as after a restart: the true deadlines
		return s, ids
	}
	b.Run("idle", func(b *testing.B) {
		s, _ := setup()
		now := t0 + qa - 1 // before the first deadline
		b.ResetTimer()
		for range b.N {
			s.CheckQuiet(now)
		}
	})
	b.Run("tick", func(b *testing.B) {
		// One second at the peak: 20,000 reports, then the tick's check.
		s, ids := setup()
		now := t0 + qa // deadlines come due, one DPU every 72 ms
		rng := rand.New(rand.NewPCG(1, 1))
		popped := 0
		var check time.Duration
		b.ResetTimer()
		for range b.N {
			now += 1000
			for range 20_000 {
				s.Reported(ids[rng.IntN(n)], now)
			}
			start := time.Now()
			popped += s.CheckQuiet(now)
			check += time.Since(start)
		}
		b.ReportMetric(float64(popped)/float64(b.N), "popped/tick")
		b.ReportMetric(float64(check.Nanoseconds())/float64(b.N), "check-ns/tick")
	})
	b.Run("all-quiet", func(b *testing.B) {
		s, ids := setup()
		now := t0 + qa
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			for _, id := range ids { // every DPU reports, then none for 3 hours
				s.Reported(id, now)
			}
			now += 3 * qa / 2
			b.StartTimer()
			s.CheckQuiet(now)
			if h := s.Health(); h.Quiet != n {
				b.Fatalf("%d quiet, want %d", h.Quiet, n)
			}
		}
	})
	b.Run("report", func(b *testing.B) {
		s, ids := setup()
		now := t0 + qa
		b.ResetTimer()
		for i := range b.N {
			s.Reported(ids[i%n], now+int64(i/n))
		}
	})
	b.Run("full-scan", func(b *testing.B) {
		s, _ := setup()
		now := t0 + qa - 1
		b.ResetTimer()
		for range b.N {
			quiet := 0
			s.mu.Lock()
			for _, d := range s.dpus {
				if d.known && d.due() <= now {
					quiet++
				}
			}
			s.mu.Unlock()
			if quiet != 0 {
				b.Fatal(quiet)
			}
		}
	})
}

// BenchmarkStatsRecords measures what the periodic save holds the statistics'
// lock for: the records of 100,000 changed DPUs.
func BenchmarkStatsRecords(b *testing.B) {
	const n = 100_000
	s := NewDPUStats()
	evs := make([]occupancy.Event, n)
	for i := range evs {
		evs[i] = occupancy.Event{DPU: fmt.Sprintf("dpu-%06d", i), ID: "1", TS: t0, Direction: 1, Received: t0}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.Ingested(evs, nil, nil, t0)
		b.StartTimer()
		if recs := s.Records(); len(recs) != n {
			b.Fatalf("%d records", len(recs))
		}
	}
}
