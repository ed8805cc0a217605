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

// DPUStat is one DPU's row of GET /v1/dpus. The counters are totals kept in the
// store across restarts (written every few seconds and at a clean stop: a kill -9
// loses the counts of the last interval, see Options.StatsInterval); SinceStart
// has the same counters since this start.
type DPUStat struct {
	DPU          string `json:"dpu"`
	LastEvent    string `json:"last_event,omitempty"`    // RFC 3339 ms UTC of the last event ts
	LastReceived string `json:"last_received,omitempty"` // when the gateway last received a report
	ClockSkewMS  int64  `json:"clock_skew_ms"`           // last ts minus its receive time
	// Quiet: a DPU of the topology in force with no report for its quiet_after
	// (health.dpu_quiet_after unless the DPU overrides it); QuietSince is when it
	// became quiet (its last report, or when a topology version first knew it, plus
	// quiet_after).
	Quiet      bool   `json:"quiet"`
	QuietSince string `json:"quiet_since,omitempty"`
	Accepted   int64  `json:"accepted"`
	Duplicates int64  `json:"duplicates"`
	Rejected   int64  `json:"rejected"`
	Parked     int64  `json:"parked"`
	Gaps       int64  `json:"gaps"` // sequence ids skipped (DESIGN 2)
	// CounterResets are the counter resets of a cumulative DPU (DESIGN 2a).
	CounterResets int64     `json:"counter_resets"`
	Restarts      int64     `json:"restarts"` // sequence restarts (the DPU rebooted)
	SinceStart    DPUCounts `json:"since_start"`
}

// DPUCounts are a DPU's counters over some time (since this start).
type DPUCounts struct {
	Accepted      int64 `json:"accepted"`
	Duplicates    int64 `json:"duplicates"`
	Rejected      int64 `json:"rejected"`
	Parked        int64 `json:"parked"`
	Gaps          int64 `json:"gaps"`
	CounterResets int64 `json:"counter_resets"`
	Restarts      int64 `json:"restarts"`
}

func (c DPUCounts) minus(o DPUCounts) DPUCounts {
	return DPUCounts{Accepted: c.Accepted - o.Accepted, Duplicates: c.Duplicates - o.Duplicates,
		Rejected: c.Rejected - o.Rejected, Parked: c.Parked - o.Parked, Gaps: c.Gaps - o.Gaps,
		CounterResets: c.CounterResets - o.CounterResets, Restarts: c.Restarts - o.Restarts}
}

// maxHoles bounds the sequence ids a DPU run remembers as missing (so that a late,
// reordered event can fill its hole again). Holes past the bound stay counted as gaps
// but can no longer be filled.
const maxHoles = 256

// DPUStats keeps per-DPU counters and health. It is goroutine-safe.
//
// Sequence tracking (DESIGN 2): where event ids are integers (decimal digits), each DPU
// has a current run of its sequence and remembers the previous one. Within a run, ids
// between the lowest and highest seen that have not arrived are gaps; a reordered event
// that arrives later fills its hole again, so reordering alone never counts as a gap.
// An id at or below the run's highest with a ts later than every event of the run is a
// restart: a new run begins. Events with a ts before the current run that fit the
// previous run (delivered late across the restart) count there.
//
// Totals (DESIGN 5): Load continues the counters of stored records; Records returns
// the records of the DPUs that changed since the last call, for the store. Health
// (quiet DPUs) is in health.go.
type DPUStats struct {
	mu    sync.Mutex
	dpus  map[string]*dpuState
	dirty []*dpuState // changed since the last Records
	h     health
}

// dpuState is kept small: 100,000 DPUs are expected.
type dpuState struct {
	id                                         string
	accepted, dups, rejected, parked, restarts int64
	resets                                     int64 // counter resets (cumulative DPUs)
	lastTS                                     int64 // max event ts seen; noTS if none
	skew                                       int64
	lastRecv                                   int64 // last report received; noTS if none
	closed                                     int64 // gaps of runs that were dropped (and of the stored total)
	cur, prv                                   seqRun
	start                                      *DPUCounts // the totals at this start (nil: all 0)
	dirty                                      bool       // in DPUStats.dirty

	// health (health.go)
	known      bool  // in the topology in force
	queued     bool  // has an entry in the deadline heap
	quietAfter int64 // ms
	firstKnown int64 // when a topology version first knew it; noTS if never
	quietSince int64 // when it went quiet; noTS while not quiet
}

func (d *dpuState) counts() DPUCounts {
	return DPUCounts{Accepted: d.accepted, Duplicates: d.dups, Rejected: d.rejected, Parked: d.parked,
		Gaps: d.closed + d.cur.gaps() + d.prv.gaps(), CounterResets: d.resets, Restarts: d.restarts}
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
	return &DPUStats{dpus: make(map[string]*dpuState), h: newHealth()}
}

// get returns dpu's state, made if new, and marks it changed.
func (s *DPUStats) get(dpu string) *dpuState {
	d := s.peek(dpu)
	if !d.dirty {
		d.dirty = true
		s.dirty = append(s.dirty, d)
	}
	return d
}

// peek returns dpu's state, made if new.
func (s *DPUStats) peek(dpu string) *dpuState {
	d := s.dpus[dpu]
	if d == nil {
		d = &dpuState{id: dpu, lastTS: noTS, lastRecv: noTS, firstKnown: noTS, quietSince: noTS}
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

// Ingested records the outcome of one ingest, received at now (Unix ms): the
// events stored for the first time (parked ones included), the DPUs of the parked
// ones and of the duplicates (one entry per event). Each of their DPUs reported at
// now (health.go).
func (s *DPUStats) Ingested(accepted []occupancy.Event, parked, dups []string, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range accepted {
		s.accepted(e)
		s.reported(s.dpus[e.DPU], now)
	}
	for _, dpu := range parked {
		s.get(dpu).parked++
	}
	for _, dpu := range dups {
		d := s.get(dpu)
		d.dups++
		s.reported(d, now)
	}
}

// CounterResets counts n counter resets of a cumulative DPU (the store counted
// them with the append that found them).
func (s *DPUStats) CounterResets(dpu string, n int64) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.get(dpu).resets += n
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
	s.mu.Lock()
	rows := make([]rawRow, 0, len(s.dpus)+len(known))
	for id, d := range s.dpus {
		rows = append(rows, d.row(id))
	}
	for _, id := range known {
		if _, seen := s.dpus[id]; !seen {
			rows = append(rows, emptyRow(id))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(rows, func(a, b rawRow) int { return strings.Compare(a.st.DPU, b.st.DPU) })
	out := make([]DPUStat, 0, len(rows))
	for _, r := range rows {
		// known may repeat an id; keep one row per DPU.
		if n := len(out); n > 0 && out[n-1].DPU == r.st.DPU {
			continue
		}
		out = append(out, r.format())
	}
	return out
}

// Of returns the rows of the DPUs ids, in that order (never seen ones with zero
// counters): a space's few DPUs without a snapshot of all of them.
func (s *DPUStats) Of(ids []string) []DPUStat {
	rows := make([]rawRow, len(ids))
	s.mu.Lock()
	for i, id := range ids {
		if d := s.dpus[id]; d != nil {
			rows[i] = d.row(id)
		} else {
			rows[i] = emptyRow(id)
		}
	}
	s.mu.Unlock()
	out := make([]DPUStat, len(rows))
	for i, r := range rows {
		out[i] = r.format()
	}
	return out
}

// rawRow is a DPU's row with its instants not yet formatted (done outside the lock).
type rawRow struct {
	st                       DPUStat
	lastTS, recv, quietSince int64
}

func emptyRow(id string) rawRow {
	return rawRow{st: DPUStat{DPU: id}, lastTS: noTS, recv: noTS, quietSince: noTS}
}

// row is the DPU's row (under mu).
func (d *dpuState) row(id string) rawRow {
	c := d.counts()
	st := DPUStat{DPU: id, ClockSkewMS: d.skew, Accepted: c.Accepted, Duplicates: c.Duplicates,
		Rejected: c.Rejected, Parked: c.Parked, Gaps: c.Gaps, CounterResets: c.CounterResets,
		Restarts: c.Restarts, SinceStart: c, Quiet: d.quietSince != noTS}
	if d.start != nil {
		st.SinceStart = c.minus(*d.start)
	}
	return rawRow{st, d.lastTS, d.lastRecv, d.quietSince}
}

func (r rawRow) format() DPUStat {
	r.st.LastEvent = formatTS(r.lastTS)
	r.st.LastReceived = formatTS(r.recv)
	r.st.QuietSince = formatTS(r.quietSince)
	return r.st
}

// formatTS formats a Unix ms instant, "" for noTS.
func formatTS(ms int64) string {
	if ms == noTS {
		return ""
	}
	return payload.FormatMS(ms)
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
