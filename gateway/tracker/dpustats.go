package tracker

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// DPUStat is one DPU's row of GET /v1/dpus.
type DPUStat struct {
	DPU         string `json:"dpu"`
	LastEvent   string `json:"last_event,omitempty"` // RFC 3339 ms UTC of the last event ts
	ClockSkewMS int64  `json:"clock_skew_ms"`        // last ts minus its receive time
	Accepted    int64  `json:"accepted"`
	Duplicates  int64  `json:"duplicates"`
	Rejected    int64  `json:"rejected"`
	Parked      int64  `json:"parked"`
	Gaps        int64  `json:"gaps"` // sequence ids skipped (DESIGN 2)
	Restarts    int64  `json:"restarts"`
}

// maxHoles bounds the sequence ids a DPU run remembers as missing (so that a late,
// reordered event can fill its hole again). Holes past the bound stay counted as gaps
// but can no longer be filled.
const maxHoles = 256

// DPUStats keeps per-DPU counters. It is goroutine-safe.
//
// Sequence tracking (DESIGN 2): where event ids are integers (decimal digits), each DPU
// has a current run of its sequence and remembers the previous one. Within a run, ids
// between the lowest and highest seen that have not arrived are gaps; a reordered event
// that arrives later fills its hole again, so reordering alone never counts as a gap.
// An id at or below the run's highest with a ts later than every event of the run is a
// restart: a new run begins. Events with a ts before the current run that fit the
// previous run (delivered late across the restart) count there.
type DPUStats struct {
	mu   sync.Mutex
	dpus map[string]*dpuState
}

// dpuState is kept small (160 bytes): 100,000 DPUs are expected.
type dpuState struct {
	accepted, dups, rejected, parked, restarts int64
	lastTS                                     int64 // max event ts seen; noTS if none
	skew                                       int64
	closed                                     int64 // gaps of runs that were dropped
	cur, prv                                   seqRun
}

const noTS = math.MinInt64

// seqRun is one run of a DPU's integer sequence.
type seqRun struct {
	minSeq, maxSeq int64
	minTS, maxTS   int64
	miss           *missing // nil while the run has no gap
	ok             bool
}

// missing are the gaps of a run.
type missing struct {
	holes     []int64 // sorted missing ids in (minSeq, maxSeq), at most maxHoles
	untracked int64   // missing ids not remembered in holes
}

func (r *seqRun) gaps() int64 {
	if r.miss == nil {
		return 0
	}
	return int64(len(r.miss.holes)) + r.miss.untracked
}

// NewDPUStats returns empty statistics.
func NewDPUStats() *DPUStats {
	return &DPUStats{dpus: make(map[string]*dpuState)}
}

func (s *DPUStats) get(dpu string) *dpuState {
	d := s.dpus[dpu]
	if d == nil {
		d = &dpuState{lastTS: noTS}
		s.dpus[dpu] = d
	}
	return d
}

// Accepted records an event stored for the first time (call it for parked events too;
// Parked counts them additionally). It updates the last event time, the clock skew
// (from the event with the latest ts and its receive time) and the sequence tracking.
func (s *DPUStats) Accepted(e occupancy.Event) {
	s.mu.Lock()
	s.accepted(e)
	s.mu.Unlock()
}

// AcceptedBatch records several accepted events under one lock.
func (s *DPUStats) AcceptedBatch(evs []occupancy.Event) {
	s.mu.Lock()
	for _, e := range evs {
		s.accepted(e)
	}
	s.mu.Unlock()
}

func (s *DPUStats) accepted(e occupancy.Event) {
	d := s.get(e.DPU)
	d.accepted++
	if d.lastTS == noTS || e.TS >= d.lastTS {
		d.lastTS = e.TS
		if e.Received != 0 {
			d.skew = e.TS - e.Received
		}
	}
	if seq, ok := parseSeq(e.ID); ok {
		d.observe(seq, e.TS)
	}
}

// Duplicate counts an event that was already stored.
func (s *DPUStats) Duplicate(dpu string) {
	s.mu.Lock()
	s.get(dpu).dups++
	s.mu.Unlock()
}

// Rejected counts a rejected event (or message) of the DPU.
func (s *DPUStats) Rejected(dpu string) {
	s.mu.Lock()
	s.get(dpu).rejected++
	s.mu.Unlock()
}

// Parked counts an event parked because no topology version maps its DPU yet.
func (s *DPUStats) Parked(dpu string) {
	s.mu.Lock()
	s.get(dpu).parked++
	s.mu.Unlock()
}

// Snapshot returns a row for every known DPU (the topology's, never seen ones with zero
// counters) and every DPU seen, sorted by id. The lock is held only to copy counters:
// formatting and sorting (100,000 DPUs) run without blocking ingest.
func (s *DPUStats) Snapshot(known []string) []DPUStat {
	type raw struct {
		st     DPUStat
		lastTS int64
		hasTS  bool
	}
	s.mu.Lock()
	rows := make([]raw, 0, len(s.dpus)+len(known))
	for id, d := range s.dpus {
		rows = append(rows, raw{d.counters(id), d.lastTS, d.lastTS != noTS})
	}
	for _, id := range known {
		if _, seen := s.dpus[id]; !seen {
			rows = append(rows, raw{st: DPUStat{DPU: id}})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(rows, func(a, b raw) int { return strings.Compare(a.st.DPU, b.st.DPU) })
	out := make([]DPUStat, 0, len(rows))
	for _, r := range rows {
		// known may repeat an id; keep one row per DPU.
		if n := len(out); n > 0 && out[n-1].DPU == r.st.DPU {
			continue
		}
		if r.hasTS {
			r.st.LastEvent = payload.FormatMS(r.lastTS)
		}
		out = append(out, r.st)
	}
	return out
}

// Of returns the rows of the DPUs ids, in that order (never seen ones with zero
// counters): a space's few DPUs without a snapshot of all of them.
func (s *DPUStats) Of(ids []string) []DPUStat {
	out := make([]DPUStat, len(ids))
	lastTS := make([]int64, len(ids))
	s.mu.Lock()
	for i, id := range ids {
		lastTS[i] = noTS
		if d := s.dpus[id]; d != nil {
			out[i], lastTS[i] = d.counters(id), d.lastTS
		} else {
			out[i] = DPUStat{DPU: id}
		}
	}
	s.mu.Unlock()
	for i, ts := range lastTS {
		if ts != noTS {
			out[i].LastEvent = payload.FormatMS(ts)
		}
	}
	return out
}

// counters is the DPU's row but for LastEvent (formatted outside the lock).
func (d *dpuState) counters(id string) DPUStat {
	return DPUStat{DPU: id, ClockSkewMS: d.skew, Accepted: d.accepted, Duplicates: d.dups,
		Rejected: d.rejected, Parked: d.parked, Restarts: d.restarts,
		Gaps: d.closed + d.cur.gaps() + d.prv.gaps()}
}

// parseSeq reads an integer sequence id: 1 to 18 decimal digits.
func parseSeq(id string) (int64, bool) {
	if len(id) == 0 || len(id) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// observe places one integer sequence id with its ts (see DPUStats).
func (d *dpuState) observe(seq, ts int64) {
	switch {
	case !d.cur.ok:
		d.cur = newRun(seq, ts)
	case d.cur.consistent(seq, ts):
		d.cur.add(seq, ts)
	case d.prv.ok && ts < d.cur.minTS && d.prv.consistent(seq, ts):
		d.prv.add(seq, ts)
	case seq <= d.cur.maxSeq && ts > d.cur.maxTS:
		d.restarts++
		d.closed += d.prv.gaps()
		d.prv = d.cur
		d.cur = newRun(seq, ts)
	default:
		// Sequence and clock disagree (e.g. the DPU clock stepped back): follow the
		// sequence.
		d.cur.add(seq, ts)
	}
}

func newRun(seq, ts int64) seqRun {
	return seqRun{ok: true, minSeq: seq, maxSeq: seq, minTS: ts, maxTS: ts}
}

// consistent reports whether (seq, ts) fits the run's order: sequence and time move
// together.
func (r *seqRun) consistent(seq, ts int64) bool {
	switch {
	case seq > r.maxSeq:
		return ts >= r.maxTS
	case seq < r.minSeq:
		return ts <= r.minTS
	default:
		return ts >= r.minTS && ts <= r.maxTS
	}
}

func (r *seqRun) add(seq, ts int64) {
	switch {
	case seq > r.maxSeq:
		r.addHoles(r.maxSeq+1, seq-1)
		r.maxSeq = seq
	case seq < r.minSeq:
		r.addHoles(seq+1, r.minSeq-1)
		r.minSeq = seq
	default:
		if m := r.miss; m != nil {
			i := sort.Search(len(m.holes), func(i int) bool { return m.holes[i] >= seq })
			if i < len(m.holes) && m.holes[i] == seq {
				m.holes = append(m.holes[:i], m.holes[i+1:]...)
				if len(m.holes) == 0 && m.untracked == 0 {
					r.miss = nil
				}
			}
		}
	}
	r.minTS = min(r.minTS, ts)
	r.maxTS = max(r.maxTS, ts)
}

// addHoles records the ids lo..hi as missing.
func (r *seqRun) addHoles(lo, hi int64) {
	if hi < lo {
		return
	}
	if r.miss == nil {
		r.miss = &missing{}
	}
	m := r.miss
	n := hi - lo + 1
	if n > maxHoles {
		m.untracked += n
		return
	}
	at := sort.Search(len(m.holes), func(i int) bool { return m.holes[i] > lo })
	ins := make([]int64, 0, len(m.holes)+int(n))
	ins = append(ins, m.holes[:at]...)
	for v := lo; v <= hi; v++ {
		ins = append(ins, v)
	}
	ins = append(ins, m.holes[at:]...)
	if over := len(ins) - maxHoles; over > 0 {
		// Forget the oldest holes; they stay counted.
		m.untracked += int64(over)
		ins = append(ins[:0:0], ins[over:]...)
	}
	m.holes = ins
}
