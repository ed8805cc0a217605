package tracker

import (
	"slices"
	"strings"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Sensor health (DESIGN 2, 5, 7): a DPU of the topology in force is quiet when it
// has not reported for its quiet_after (health.dpu_quiet_after, or the DPU's own
// quiet_after). A report is an event or report of the DPU that was stored or found
// stored already (a duplicate): rejected input does not keep a DPU from going
// quiet. A DPU that never reported is counted from when a topology version first
// knew it. Time is the tracker's clock when the report was ingested.
//
// The check is cheap at 100,000 DPUs: every DPU that is not quiet has one entry in a
// min-heap of deadlines (last report + quiet_after). A report only moves the DPU's
// last report time: its heap entry stays where it was (its deadline can only be
// earlier than the true one). A check pops the entries that are due: one whose DPU
// reported since goes back with its true deadline, the others are quiet. So a check
// costs O(1) while nothing is due, and each DPU costs O(log n) at most once per
// quiet_after. A report of a quiet DPU makes it not quiet at once and pushes its
// new deadline. A new topology version rebuilds the heap (O(n)).

// DefaultQuietAfter is health.dpu_quiet_after's default.
const DefaultQuietAfter = 2 * time.Hour

// MaxQuietIDs bounds Health.QuietIDs (the retained DPU health topic).
const MaxQuietIDs = 100

// Health is the gateway's DPU health at a glance.
type Health struct {
	DPUs     int      // DPUs of the topology in force
	Quiet    int      // of them quiet
	QuietIDs []string // the first MaxQuietIDs quiet DPUs by id
	// Seq changes whenever DPUs, Quiet or QuietIDs may have changed.
	Seq uint64
}

// health is the state of the quiet check, under DPUStats.mu.
type health struct {
	defaultAfter int64 // ms
	deadlines    deadlineHeap
	quiet        map[*dpuState]struct{}
	known        int
	seq          uint64
	cached       *Health // Health() of seq, nil when not computed
}

func newHealth() health {
	return health{defaultAfter: DefaultQuietAfter.Milliseconds(), quiet: map[*dpuState]struct{}{}}
}

type deadline struct {
	at int64
	d  *dpuState
}

// deadlineHeap is a binary min-heap of entries by deadline (typed, so that a push
// allocates nothing, unlike container/heap's interface values).
type deadlineHeap []deadline

func (h *deadlineHeap) push(e deadline) {
	*h = append(*h, e)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p].at <= a[i].at {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *deadlineHeap) pop() deadline {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a[n] = deadline{}
	a = a[:n]
	*h = a
	a.down(0)
	return top
}

func (h deadlineHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h deadlineHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// due is when d goes quiet: its last report (or, never having reported, when a
// topology version first knew it) plus its quiet_after.
func (d *dpuState) due() int64 {
	ref := d.lastRecv
	if ref == noTS {
		ref = d.firstKnown
	}
	if ref == noTS {
		return noTS
	}
	return ref + d.quietAfter
}

// TopologyDPU is a DPU of the topology in force as the health check sees it.
type TopologyDPU struct {
	ID         string
	QuietAfter time.Duration // 0: the default
	// FirstKnown is when a topology version first knew the DPU (Unix ms).
	FirstKnown int64
}

// SetTopology makes dpus the DPUs of the topology in force (the health check
// watches them alone) with defaultAfter as health.dpu_quiet_after (0: the default)
// and checks them at now. It rebuilds the deadline heap: O(n).
func (s *DPUStats) SetTopology(dpus []TopologyDPU, defaultAfter time.Duration, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.h
	if defaultAfter > 0 {
		h.defaultAfter = defaultAfter.Milliseconds()
	}
	for _, d := range s.dpus {
		d.known, d.queued = false, false
	}
	h.known = 0
	for _, td := range dpus {
		d := s.peek(td.ID)
		if d.known {
			continue // a repeated id
		}
		d.known = true
		h.known++
		d.quietAfter = h.defaultAfter
		if td.QuietAfter > 0 {
			d.quietAfter = td.QuietAfter.Milliseconds()
		}
		if d.firstKnown == noTS || td.FirstKnown < d.firstKnown {
			d.firstKnown = td.FirstKnown
		}
	}
	h.deadlines = h.deadlines[:0]
	for _, d := range s.dpus {
		switch due := d.due(); {
		case !d.known || due == noTS:
			s.setQuiet(d, noTS)
		case due <= now:
			if d.quietSince != due {
				s.setQuiet(d, noTS) // quiet_after changed: quiet since another instant
			}
			s.setQuiet(d, due)
		default:
			s.setQuiet(d, noTS)
			d.queued = true
			h.deadlines = append(h.deadlines, deadline{due, d})
		}
	}
	h.deadlines.init()
	h.seq++
	h.cached = nil
}

// setQuiet makes d quiet since `since`, or not quiet with noTS.
func (s *DPUStats) setQuiet(d *dpuState, since int64) {
	h := &s.h
	was := d.quietSince != noTS
	d.quietSince = since
	switch is := since != noTS; {
	case is && !was:
		h.quiet[d] = struct{}{}
	case !is && was:
		delete(h.quiet, d)
	default:
		return
	}
	h.seq++
	h.cached = nil
}

// reported records a report of d at now (under mu): a quiet DPU is quiet no more.
func (s *DPUStats) reported(d *dpuState, now int64) {
	if d.lastRecv != noTS && now <= d.lastRecv {
		return
	}
	d.lastRecv = now
	if !d.known {
		return
	}
	if d.quietSince != noTS {
		s.setQuiet(d, noTS)
	}
	if !d.queued {
		d.queued = true
		s.h.deadlines.push(deadline{d.due(), d})
	}
}

// Reported records a report of dpu received at now (Unix ms).
func (s *DPUStats) Reported(dpu string, now int64) {
	s.mu.Lock()
	s.reported(s.peek(dpu), now)
	s.mu.Unlock()
}

// checkChunk bounds the entries CheckQuiet pops under one hold of the lock, so
// that ingest never waits long behind a check that finds many DPUs quiet at once.
const checkChunk = 4096

// CheckQuiet marks the DPUs due by now quiet (see the top of this file) and
// reports how many entries it looked at.
func (s *DPUStats) CheckQuiet(now int64) (popped int) {
	for {
		n, more := s.checkSome(now, checkChunk)
		popped += n
		if !more {
			return popped
		}
	}
}

func (s *DPUStats) checkSome(now int64, max int) (popped int, more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.h
	for len(h.deadlines) > 0 && h.deadlines[0].at <= now {
		if popped == max {
			return popped, true
		}
		e := h.deadlines.pop()
		popped++
		d := e.d
		d.queued = false
		if !d.known {
			continue
		}
		due := d.due()
		if due > now {
			d.queued = true
			h.deadlines.push(deadline{due, d})
			continue
		}
		s.setQuiet(d, due)
	}
	return popped, false
}

// Health returns the DPU health summary; between changes it is the same value
// (computing QuietIDs costs a pass over the quiet DPUs).
func (s *DPUStats) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.h
	if h.cached == nil {
		ids := make([]string, 0, min(len(h.quiet), MaxQuietIDs))
		for d := range h.quiet {
			ids = insertCapped(ids, d.id, MaxQuietIDs)
		}
		h.cached = &Health{DPUs: h.known, Quiet: len(h.quiet), QuietIDs: ids, Seq: h.seq}
	}
	return *h.cached
}

// insertCapped inserts id into the sorted ids, keeping at most n (the first).
func insertCapped(ids []string, id string, n int) []string {
	if len(ids) == n && strings.Compare(id, ids[n-1]) > 0 {
		return ids
	}
	i, _ := slices.BinarySearch(ids, id)
	if len(ids) == n {
		ids = ids[:n-1]
	}
	return slices.Insert(ids, i, id)
}

// LastReport calls fn with the last report time (Unix ms; noTS if none) of every
// DPU of the topology in force (all) or of the quiet ones, after the lock is
// released.
func (s *DPUStats) LastReport(all bool, fn func(dpu string, ms int64, ok bool)) {
	type row struct {
		id string
		ms int64
	}
	s.mu.Lock()
	var rows []row
	if all {
		rows = make([]row, 0, s.h.known)
		for _, d := range s.dpus {
			if d.known {
				rows = append(rows, row{d.id, d.lastRecv})
			}
		}
	} else {
		rows = make([]row, 0, len(s.h.quiet))
		for d := range s.h.quiet {
			rows = append(rows, row{d.id, d.lastRecv})
		}
	}
	s.mu.Unlock()
	for _, r := range rows {
		fn(r.id, r.ms, r.ms != noTS)
	}
}

// topologyDPUs lists the DPUs of tc for SetTopology: first known at the At of the
// earliest of versions (ordered by At) that has the DPU, else at `at`.
func topologyDPUs(tc occupancy.TopologyConfig, versions []occupancy.Version, at int64) []TopologyDPU {
	first := make(map[string]int64, len(tc.DPUs))
	for _, d := range tc.DPUs {
		first[d.ID] = at
	}
	left := len(first)
	for _, v := range versions {
		if left == 0 {
			break
		}
		for _, d := range v.Topology.DPUs {
			if t, ok := first[d.ID]; ok && v.At < t {
				first[d.ID] = v.At
				left--
			}
		}
	}
	out := make([]TopologyDPU, len(tc.DPUs))
	for i, d := range tc.DPUs {
		out[i] = TopologyDPU{ID: d.ID, QuietAfter: quietAfterOf(d), FirstKnown: first[d.ID]}
	}
	return out
}

// quietAfterOf is the DPU's own quiet_after (0: the default).
func quietAfterOf(d occupancy.DPUConfig) time.Duration { return time.Duration(d.QuietAfter) }
