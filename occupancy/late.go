package occupancy

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Late events (DESIGN section 3, late_events: apply).
//
// The settled rows stay as they were. For every space a batch of late events
// touches, the true timeline value at H is recomputed by a replay and a correction
// entry at H sets the space to it. The replay starts from a settled row known to be
// true: rows in [lo, hi) of a space are suspect once a late event at lo was
// corrected at hi, so the replay starts before every suspect interval that covers the
// late event (the intervals are kept per space, merged, in the checkpoint state).
// Cost: one pass over the stored events (all DPUs) between that start and H, plus
// the resets and moves in that span. Corrections are absolute, so any number of late
// events in any order leave no drift.
//
// Counting. A correction counts crossings too, so that every crossing the true
// timeline counts is counted exactly once by the rows (DESIGN 3 Queries): its
// entrances (exits) are what the true timeline counts before H and the settled rows
// before H do not: the late crossings, less or more any on-time crossing whose
// clamping the late ones changed (a late entrance before an exit absorbed at 0 makes
// that exit count). Like the value, this is absolute: the replay counts both sides
// from a point where they agree (a true start: no owed crossings before it) or from
// a true-value checkpoint that remembers what was owed there.

// correct computes and sets corrections at H for the spaces late events touch.
func (e *Engine) correct(late []Event, now int64) error {
	starts := map[int32]int64{}
	for i := range late {
		m, ok := e.mapEvent(late[i].DPU, late[i].TS)
		if !ok {
			continue
		}
		ts := late[i].TS
		for _, ef := range m.effs {
			if s, ok := starts[ef.g]; !ok || ts < s {
				starts[ef.g] = ts
			}
		}
	}
	if len(starts) == 0 {
		return nil
	}
	lateTS := make(map[int32]int64, len(starts))
	known := map[int32]trueCP{}
	for g, s := range starts {
		lateTS[g] = s
		// Start from the latest true-value checkpoint at or before the late event
		// (the ones after it are no longer true), else from a settled row that is.
		cps := e.trueCP[g]
		i := sort.Search(len(cps), func(i int) bool { return cps[i].T > s })
		cps = cps[:i]
		e.trueCP[g] = cps
		if i > 0 {
			starts[g], known[g] = cps[i-1].T, cps[i-1]
			continue
		}
		starts[g] = e.trueStart(g, s)
	}
	vals, err := e.replay(starts, known, e.h)
	if err != nil {
		return err
	}
	for g, v := range vals {
		e.addInterval(g, interval{Lo: lateTS[g], Hi: e.h})
		e.setCorrection(g, correction{V: v.V, In: v.In, Out: v.Out}, now)
	}
	e.dirty = true
	return nil
}

// trueCP is a true-value checkpoint: V is the true timeline's value after every
// entry with ts < T, as of every event received so far, and In/Out are the
// crossings the true timeline counts before T that the settled rows before T do not
// (what a correction there would count). Replays record one per minute of the span
// they cover, so the next late event's replay starts at most about a minute before
// it instead of before every earlier suspect interval (which a DPU that is always a
// little late would chain back to its first late event). They live in memory only:
// after a restart the settled rows are the fallback.
type trueCP struct{ T, V, In, Out int64 }

const (
	trueCPEvery = 60_000
	trueCPMax   = 512 // per space
)

func (e *Engine) recordCPs(g int32, add []trueCP) {
	cps := e.trueCP[g]
	for _, c := range add {
		if n := len(cps); n > 0 && c.T <= cps[n-1].T {
			continue
		}
		cps = append(cps, c)
	}
	if len(cps) > trueCPMax {
		cps = append(cps[:0], cps[len(cps)-trueCPMax:]...)
	}
	e.trueCP[g] = cps
}

// trueStart moves s back before every suspect interval of g that contains s-1.
func (e *Engine) trueStart(g int32, s int64) int64 {
	ivs := e.late[g]
	for changed := true; changed; {
		changed = false
		for _, iv := range ivs {
			if iv.Lo < s && s-1 < iv.Hi {
				s = iv.Lo
				changed = true
			}
		}
	}
	return s
}

func (e *Engine) addInterval(g int32, iv interval) {
	ivs := append(e.late[g], iv)
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].Lo < ivs[j].Lo })
	out := ivs[:0]
	for _, x := range ivs {
		if n := len(out); n > 0 && x.Lo <= out[n-1].Hi {
			out[n-1].Hi = max(out[n-1].Hi, x.Hi)
			continue
		}
		out = append(out, x)
	}
	// Bound the checkpoint state: merging the two oldest intervals marks a superset
	// of rows suspect, which is safe (a replay may start earlier).
	for len(out) > maxIntervals {
		out[1].Lo = out[0].Lo
		out = out[1:]
	}
	e.late[g] = out
}

const maxIntervals = 64

// correction is a correction entry at H: the value it sets and the crossings it
// counts.
type correction struct{ V, In, Out int64 }

// setCorrection sets (or replaces) the correction entry of g at H.
func (e *Engine) setCorrection(g int32, c correction, now int64) {
	c.V, c.In, c.Out = min(c.V, math.MaxInt32), min(c.In, math.MaxInt32), min(c.Out, math.MaxInt32)
	e.corr[g] = c
	e.insert(g, corrEntry(e.h, int32(c.V), int32(c.In), int32(c.Out)), true, now)
}

type gEntry struct {
	g  int32
	en entry
}

// replay computes, for each space g in starts, the true timeline value just before
// `to` and the crossings owed there (trueCP), starting from known[g] when given
// (a true-value checkpoint at starts[g]), else from the settled row before
// starts[g] (a true start: nothing owed).
func (e *Engine) replay(starts map[int32]int64, known map[int32]trueCP, to int64) (map[int32]trueCP, error) {
	from := int64(math.MaxInt64)
	vals := make(map[int32]trueCP, len(starts))
	for g, s := range starts {
		from = min(from, s)
		if v, ok := known[g]; ok {
			vals[g] = v
			continue
		}
		r, ok, err := e.store.RowAt(e.gs[g].id, s-1)
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		vals[g] = trueCP{T: s}
		if ok {
			vals[g] = trueCP{T: s, V: r.Occupancy}
		}
	}
	// Only DPUs that change one of these spaces matter: a small set checked before
	// the (costlier) mapping of each streamed event.
	relevant := map[string]bool{}
	for i := range e.dpuTab {
		e.mappings(int32(i), func(effs []gEff) {
			for _, ef := range effs {
				if _, ok := starts[ef.g]; ok {
					relevant[e.dpuNames[i]] = true
				}
			}
		})
	}
	lists := make(map[int32][]entry, len(starts))
	addEvent := func(ev Event) {
		if !relevant[ev.DPU] {
			return
		}
		m, ok := e.mapEvent(ev.DPU, ev.TS)
		if !ok {
			return
		}
		e.eventEntries(m, &ev, func(g int32, en entry) {
			if s, ok := starts[g]; ok && en.ts >= s {
				lists[g] = append(lists[g], en)
				return
			}
			e.releaseID(&en)
		})
	}
	// Events unparked but not yet committed may not be in the event stream yet.
	extra := map[string]Event{}
	for _, ev := range e.unparked {
		if ev.TS >= from && ev.TS < to {
			extra[string(ev.Key())] = ev
		}
	}
	err := e.store.Events(from, to, func(ev Event) error {
		if len(extra) > 0 {
			delete(extra, string(ev.Key()))
		}
		addEvent(ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay events: %w", err)
	}
	for _, ev := range extra {
		addEvent(ev)
	}
	if err := e.replayReports(from, to, starts, relevant, lists); err != nil {
		return nil, err
	}
	err = e.store.Resets(from, func(r Reset) error {
		if r.TS >= to {
			return errStop
		}
		origin := e.space(r.Space)
		for _, g := range e.resetTargets(r.Space, r.TS, r.Occupancy) {
			if s, ok := starts[g]; ok && r.TS >= s {
				lists[g] = append(lists[g], valEntry(r.TS, origin, int32(r.Occupancy), clsManual))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("replay resets: %w", err)
	}
	for _, d := range e.dailyIn(from, min(to, e.lastGen+1)) {
		for _, g := range e.dailyTargets(d) {
			if s, ok := starts[g]; ok && d.ts >= s {
				lists[g] = append(lists[g], valEntry(d.ts, d.origin, 0, clsDaily))
			}
		}
	}
	for _, m := range e.moves {
		if m.TS < from || m.TS >= to {
			continue
		}
		g := e.space(m.Space)
		if s, ok := starts[g]; ok && m.TS >= s {
			lists[g] = append(lists[g], m.entry())
		}
	}
	for g := range starts {
		l := lists[g]
		sort.SliceStable(l, func(i, j int) bool { return e.compare(&l[i], &l[j]) < 0 })
		v0 := vals[g]
		x := v0.V
		// In and Out count the true timeline's crossings from the start here; the
		// settled rows' are subtracted below.
		var tin, tout int64
		cps := []trueCP{{T: starts[g], V: x}}
		for i := range l {
			if i > 0 && e.compare(&l[i-1], &l[i]) == 0 {
				if l[i].cls == clsEvent {
					continue // the same event streamed twice
				}
			}
			if t := l[i].ts; t >= cps[len(cps)-1].T+trueCPEvery && (i == 0 || l[i-1].ts < t) {
				cps = append(cps, trueCP{T: t, V: x, In: tin, Out: tout})
			}
			var in, out int32
			x, in, out = step(&l[i], x, e.opts.ClampNegative)
			tin += int64(in)
			tout += int64(out)
		}
		cps = append(cps, trueCP{T: to, V: x, In: tin, Out: tout})
		if err := e.owed(g, v0, cps); err != nil {
			return nil, err
		}
		vals[g] = cps[len(cps)-1]
		e.recordCPs(g, cps)
	}
	for _, l := range lists {
		for i := range l {
			e.releaseID(&l[i])
		}
	}
	return vals, nil
}

// owed turns the true timeline's crossings counted from cps[0].T to each cps[i].T
// into the crossings owed at cps[i].T: start's plus those, less the settled rows'
// in the same span.
func (e *Engine) owed(g int32, start trueCP, cps []trueCP) error {
	var rin, rout int64
	j := 0
	done := func(t int64) {
		for ; j < len(cps) && cps[j].T <= t; j++ {
			cps[j].In += start.In - rin
			cps[j].Out += start.Out - rout
		}
	}
	err := e.store.Rows(e.gs[g].id, cps[0].T, cps[len(cps)-1].T, func(r Row) error {
		done(r.TS)
		rin += int64(r.Entrances)
		rout += int64(r.Exits)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay rows: %w", err)
	}
	done(math.MaxInt64)
	return nil
}

// Rewind recomputes the true timeline and the settled rows from `from` (import
// only), or from earlier where from is inside the span of a late correction (it
// starts before that span): every stored event, reset, daily reset and move from
// there on is replayed from the settled rows before it, the rows up to the current
// horizon are settled again, and the returned Settlement's RewriteFrom is where it
// started.
func (e *Engine) Rewind(from, now int64) (Settlement, error) {
	if from >= e.h {
		// Nothing settled to rewrite: the pending state already holds the truth once
		// the events are applied.
		err := e.store.Events(from, math.MaxInt64, func(ev Event) error {
			e.applyOne(ev, now, nil)
			return nil
		})
		if err == nil {
			err = e.rewindReports(from, now)
		}
		if err != nil {
			return Settlement{}, fmt.Errorf("rewind: %w", err)
		}
		return e.settlement(nil), nil
	}
	h := e.h
	// Rows in a span a late correction covers miss the late event, which only the
	// correction at the span's end counts: a rewrite starting inside such a span
	// would drop the correction and keep those rows, losing the late event (value
	// and crossing). It starts before every such span instead.
	for moved := true; moved; {
		moved = false
		for g := range e.late {
			if s := e.trueStart(g, from); s < from {
				from, moved = s, true
			}
		}
	}
	// Reset the pending state to the settled rows before from.
	for g := range e.gs {
		s := &e.gs[g]
		r, ok, err := e.store.RowAt(s.id, from-1)
		if err != nil {
			return Settlement{}, fmt.Errorf("rewind: %w", err)
		}
		for _, c := range s.pl.chunks {
			freeChunk(c)
		}
		s.pl = plist{}
		if ok {
			s.pl.base = r.Occupancy
		}
		s.pl.sync()
		e.markChanged(int32(g))
	}
	e.long = longIDs{} // no pending entries are left
	e.h = from
	clear(e.corr)
	clear(e.trueCP)
	// Suspect intervals from `from` on are rewritten true.
	for g, ivs := range e.late {
		var keep []interval
		for _, iv := range ivs {
			if iv.Lo < from {
				iv.Hi = min(iv.Hi, from)
				keep = append(keep, iv)
			}
		}
		e.late[g] = keep
	}
	for _, m := range e.moves {
		if m.TS >= from {
			e.insert(e.space(m.Space), m.entry(), true, now)
		}
	}
	err := e.store.Resets(from, func(r Reset) error {
		e.insertReset(r, now)
		return nil
	})
	if err != nil {
		return Settlement{}, fmt.Errorf("rewind: %w", err)
	}
	e.insertDaily(from, e.lastGen+1, now)
	err = e.store.Events(from, math.MaxInt64, func(ev Event) error {
		e.applyOne(ev, now, nil)
		return nil
	})
	if err != nil {
		return Settlement{}, fmt.Errorf("rewind: %w", err)
	}
	for _, ev := range e.unparked {
		if ev.TS >= from {
			e.applyOne(ev, now, nil)
		}
	}
	clear(e.cum) // rebuilt from the reports before from on
	if err := e.rewindReports(from, now); err != nil {
		return Settlement{}, fmt.Errorf("rewind: %w", err)
	}
	// Settle again up to the old horizon.
	saveHold := e.holdUntil
	e.holdUntil = 0
	st, _ := e.Tick(h + e.opts.SettleAfter)
	e.holdUntil = saveHold
	st.RewriteFrom = from
	return st, nil
}
