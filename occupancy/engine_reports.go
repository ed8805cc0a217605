package occupancy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Reports in the engine (DESIGN 2a).
//
// An interval report counts In crossings in the +1 direction and then Out in the -1
// direction at its TS: one entry per space it changes (reportEntry), weighted by
// both counts, however many crossings they are; clamping applies them as that many
// single steps would (plist.go). A report that counts nothing makes no entry.
//
// A cumulative report counts the differences of its totals to the report of its
// DPU before it in ts order (CumulativeDelta). The engine keeps, per cumulative DPU,
// the totals of its reports from its last one before the horizon on (cumDPU): a
// report arriving out of order finds its neighbours there, takes its difference from
// the one before and replaces the entry of the one after it, whose difference shrinks
// accordingly. A DPU's last report before the horizon is read from the store the
// first time the DPU reports to this engine (Store.CumulativeBefore). Every
// cumulative report has an entry, counting nothing where its difference is 0, so
// that one slotting in before it can change it. Replays (late correction, Rewind)
// take the differences the same way from the stored reports, from the report before
// the replay's start on.
//
// A report's entries sort after the events of its instant, by DPU id (an interval
// report before a cumulative one of the same DPU); identity and dedup are the
// store's (AppendReports), and applying a report again changes nothing.

// cumPoint is the instant and totals of one cumulative report.
type cumPoint struct{ ts, in, out int64 }

// cumDPU is the cumulative reports of one DPU the engine knows: its last one before
// the horizon (if any) and every one applied after it, in ts order.
type cumDPU struct{ pts []cumPoint }

// cumDelta is what pts[i] counts after pts[i-1] (nothing for the first).
func (c *cumDPU) delta(i int) (in, out int64) {
	if i == 0 {
		return 0, 0
	}
	p, q := c.pts[i-1], c.pts[i]
	return counterDelta(p.in, q.in), counterDelta(p.out, q.out)
}

// repKey is a report's place among the parked ones (its storage key).
type repKey struct {
	kind ReportKind
	dpu  string
	ts   int64
}

func keyOf(r Report) repKey { return repKey{r.Kind, r.DPU, r.TS} }

// cumState returns the cumulative state of the DPU of dpuTab[ref], reading its
// last report before the horizon from the store when it is new to the engine.
func (e *Engine) cumState(ref int32) (*cumDPU, error) {
	if st := e.cum[ref]; st != nil {
		return st, nil
	}
	st := &cumDPU{}
	r, ok, err := e.store.CumulativeBefore(e.dpuNames[ref], e.h)
	if err != nil {
		return nil, fmt.Errorf("read the cumulative report of %s before the horizon: %w", e.dpuNames[ref], err)
	}
	if ok {
		st.pts = append(st.pts, cumPoint{r.TS, r.In, r.Out})
	}
	e.cum[ref] = st
	return st, nil
}

// ApplyReports takes reports that are already durable and deduplicated (late ones
// included), as Apply takes events: mapped ones enter the pending timeline, late
// ones are corrected at the horizon (late_events apply) and those of DPUs no
// version maps are parked.
func (e *Engine) ApplyReports(reps []Report, now int64) (ApplyResult, error) {
	var res ApplyResult
	var late []Event
	bad := 0
	for i := range reps {
		what, err := e.applyReport(reps[i], now, &late)
		if err != nil {
			return res, fmt.Errorf("apply reports: %w", err)
		}
		if !res.tally(what) {
			bad++
		}
		if what == 'l' && reps[i].Late && e.opts.LateEvents == LateApply {
			// Stored with a late mark: gone once a checkpoint holds its correction.
			e.correctedReps = append(e.correctedReps, reps[i])
		}
	}
	if err := e.correctLate(late, now); err != nil {
		return res, fmt.Errorf("apply late reports: %w", err)
	}
	if bad > 0 {
		return res, fmt.Errorf("apply reports: %d reports that do not validate ignored", bad)
	}
	return res, nil
}

// applyReport inserts a report's entries or parks it; like applyMapped it returns
// 'a' applied, 'p' parked, 'l' late (appended to late as the instant and DPU a
// correction starts from) or 0 for a report that does not validate.
func (e *Engine) applyReport(r Report, now int64, late *[]Event) (byte, error) {
	if r.Validate() != nil {
		return 0, nil
	}
	m, ok := e.mapEvent(r.DPU, r.TS)
	if !ok {
		e.parkReport(r)
		return 'p', nil
	}
	isLate := r.TS < e.h
	if isLate && e.opts.LateEvents != LateApply {
		return 'l', nil
	}
	if r.Kind == ReportInterval {
		switch {
		case r.In == 0 && r.Out == 0 && isLate:
			return 'l', nil // counts nothing: no correction
		case r.In == 0 && r.Out == 0:
			return 'a', nil // counts nothing: no entry
		case isLate:
			*late = append(*late, Event{DPU: r.DPU, TS: r.TS})
			return 'l', nil
		}
		e.insertReport(m, r.TS, ReportInterval, r.In, r.Out, now)
		return 'a', nil
	}
	st, err := e.cumState(m.ref)
	if err != nil {
		return 0, err
	}
	i := sort.Search(len(st.pts), func(i int) bool { return st.pts[i].ts >= r.TS })
	if i == len(st.pts) || st.pts[i].ts != r.TS {
		st.pts = slices.Insert(st.pts, i, cumPoint{r.TS, r.In, r.Out})
	}
	// Only the last report before the horizon is still a baseline of a pending one.
	if k := sort.Search(len(st.pts), func(k int) bool { return st.pts[k].ts >= e.h }) - 1; k > 0 {
		st.pts = slices.Delete(st.pts, 0, k)
		i -= k
	}
	if i >= 0 {
		if !isLate {
			e.setCumEntries(m.ref, st, i, now)
		}
		if i+1 < len(st.pts) { // pending: every point after the first is
			e.setCumEntries(m.ref, st, i+1, now)
		}
	}
	if isLate {
		*late = append(*late, Event{DPU: r.DPU, TS: r.TS})
		return 'l', nil
	}
	return 'a', nil
}

// setCumEntries sets the entries of the pending cumulative report st.pts[i] to its
// difference to the one before.
func (e *Engine) setCumEntries(ref int32, st *cumDPU, i int, now int64) {
	p := st.pts[i]
	m, ok := e.mapSlot(ref, p.ts)
	if !ok {
		return // parked by a version that dropped its DPU: its entries come back with it
	}
	in, out := st.delta(i)
	e.insertReport(m, p.ts, ReportCumulative, in, out, now)
}

// insertReport inserts (or replaces) the entries of a report of the DPU mapped by m.
func (e *Engine) insertReport(m dpuMap, ts int64, kind ReportKind, in, out int64, now int64) {
	for _, ef := range m.effs {
		e.insert(ef.g, reportEntry(ts, m.ref, kind, in, out, int8(ef.d)), true, now)
	}
}

func (e *Engine) parkReport(r Report) {
	m := e.parkedReps[r.DPU]
	if m == nil {
		m = map[repKey]Report{}
		e.parkedReps[r.DPU] = m
	}
	k := keyOf(r)
	if _, dup := m[k]; dup {
		return
	}
	m[k] = r
	e.nParked++
}

// unparkReports applies the parked reports of the DPUs topo knows, in ts order,
// and lists them for the next settlement. It returns how many.
func (e *Engine) unparkReports(topo *Topology, now int64, late *[]Event) (int, error) {
	n := 0
	for dpu, m := range e.parkedReps {
		if !topo.HasDPU(dpu) {
			continue
		}
		reps := make([]Report, 0, len(m))
		for _, r := range m {
			reps = append(reps, r)
		}
		slices.SortFunc(reps, func(a, b Report) int {
			if c := cmp.Compare(a.TS, b.TS); c != 0 {
				return c
			}
			return cmp.Compare(a.Kind, b.Kind)
		})
		for _, r := range reps {
			e.unparkedReps = append(e.unparkedReps, r)
			e.dirty = true
			if _, err := e.applyReport(r, now, late); err != nil {
				return n, err
			}
		}
		n += len(reps)
		e.nParked -= len(m)
		delete(e.parkedReps, dpu)
	}
	return n, nil
}

// storedReports reads the stored reports with TS >= from.
func (e *Engine) storedReports(from int64) ([]Report, error) {
	var reps []Report
	err := e.store.Reports(from, math.MaxInt64, func(r Report) error {
		reps = append(reps, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read reports: %w", err)
	}
	return reps, nil
}

// reapplyReports applies the stored reports with TS >= from and then the parked
// ones (Open): those a version maps now are unparked. The reports stored late whose
// corrections no checkpoint holds yet (a crash came before the commit) are
// corrected again, as the late events are.
func (e *Engine) reapplyReports(from int64, now int64, late *[]Event) error {
	err := e.store.LateReports(func(r Report) error {
		e.correctedReps = append(e.correctedReps, r)
		e.dirty = true
		if r.TS < e.h && (r.Kind == ReportCumulative || r.In+r.Out > 0) { // else it counts nothing
			*late = append(*late, Event{DPU: r.DPU, TS: r.TS})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read late reports: %w", err)
	}
	reps, err := e.storedReports(from)
	if err != nil {
		return err
	}
	for _, r := range reps {
		if _, err := e.applyReport(r, now, late); err != nil {
			return err
		}
	}
	reps = reps[:0]
	err = e.store.ParkedReports(func(r Report) error {
		reps = append(reps, r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read parked reports: %w", err)
	}
	for _, r := range reps {
		if !e.Mappable(r.DPU, r.TS) {
			e.parkReport(r)
			continue
		}
		e.unparkedReps = append(e.unparkedReps, r)
		e.dirty = true
		if _, err := e.applyReport(r, now, late); err != nil {
			return err
		}
	}
	return nil
}

// rewindReports applies the stored reports with TS >= from >= H (Rewind) and the
// unparked ones not committed yet.
func (e *Engine) rewindReports(from, now int64) error {
	reps, err := e.storedReports(from)
	if err != nil {
		return err
	}
	for _, r := range e.unparkedReps {
		if r.TS >= from {
			reps = append(reps, r)
		}
	}
	var late []Event // none: nothing is before from
	for _, r := range reps {
		if _, err := e.applyReport(r, now, &late); err != nil {
			return err
		}
	}
	return nil
}

// reportAt rebuilds the report of a pending report entry (remapFrom): its DPU, kind,
// instant and counts (a cumulative one's totals from its DPU's state).
func (e *Engine) reportAt(en *entry) Report {
	r := Report{DPU: e.dpuNames[en.ref], Kind: ReportKind(en.dir), TS: en.ts}
	r.In, r.Out = en.weights()
	if r.Kind == ReportInterval {
		r.Start = r.TS - 1 // not kept; a report is known by its end
		return r
	}
	if st := e.cum[en.ref]; st != nil {
		if i := sort.Search(len(st.pts), func(i int) bool { return st.pts[i].ts >= en.ts }); i < len(st.pts) && st.pts[i].ts == en.ts {
			r.In, r.Out = st.pts[i].in, st.pts[i].out
		}
	}
	return r
}

// replayReports adds to lists the entries of the stored reports of the relevant
// DPUs with from <= TS < to, on the spaces in starts from their start on:
// cumulative differences from each DPU's report before from.
func (e *Engine) replayReports(from, to int64, starts map[int32]int64, relevant map[string]bool, lists map[int32][]entry) error {
	var reps []Report
	err := e.store.Reports(from, to, func(r Report) error {
		if relevant[r.DPU] {
			reps = append(reps, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay reports: %w", err)
	}
	prev := map[string]*Report{}
	for i := range reps {
		r := &reps[i]
		in, out := r.In, r.Out
		if r.Kind == ReportCumulative {
			p, seen := prev[r.DPU]
			if !seen {
				b, ok, err := e.store.CumulativeBefore(r.DPU, from)
				if err != nil {
					return fmt.Errorf("replay reports: %w", err)
				}
				if ok {
					p = &b
				}
			}
			in, out = 0, 0
			if p != nil {
				in, out = CumulativeDelta(*p, *r)
			}
			prev[r.DPU] = r
		}
		m, ok := e.mapEvent(r.DPU, r.TS)
		if !ok || (in == 0 && out == 0) {
			continue
		}
		for _, ef := range m.effs {
			if s, ok := starts[ef.g]; ok && r.TS >= s {
				lists[ef.g] = append(lists[ef.g], reportEntry(r.TS, m.ref, r.Kind, in, out, int8(ef.d)))
			}
		}
	}
	return nil
}
