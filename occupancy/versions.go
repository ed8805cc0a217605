package occupancy

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// addVersion registers a version (no timeline effects): global space indices, the
// DPU mappings and the current-topology marks.
func (e *Engine) addVersion(v Version) (*version, error) {
	if n := len(e.versions); n > 0 && v.At < e.versions[n-1].at {
		return nil, fmt.Errorf("topology version at %s is before the latest version at %s", fmtMS(v.At), fmtMS(e.versions[n-1].at))
	}
	topo, err := Compile(v.Topology)
	if err != nil {
		return nil, fmt.Errorf("topology version at %s: %w", fmtMS(v.At), err)
	}
	ver := &version{at: v.At, topo: topo, l2g: make([]int32, len(topo.spaces))}
	for i := range topo.spaces {
		ver.l2g[i] = e.space(topo.spaces[i].cfg.ID)
	}
	vi := len(e.versions)
	e.versions = append(e.versions, ver)
	for _, d := range topo.cfg.DPUs {
		cd := topo.dpus[d.ID]
		dv := dpuVer{vi: int32(vi), effs: make([]gEff, len(cd.plus))}
		for k, ef := range cd.plus {
			dv.effs[k] = gEff{g: ver.l2g[ef.space], d: int32(ef.delta)}
		}
		i, ok := e.dpuMaps.get(d.ID, e.dpuTab, e.dpuNames)
		if !ok {
			i = int32(len(e.dpuTab))
			slot := dpuSlot{vi: dv.vi, ext: -1}
			if len(d.ID) <= dpuInline {
				slot.klen = uint8(copy(slot.key[:], d.ID))
			} else {
				slot.klen = dpuLongKey
			}
			if len(dv.effs) <= dpuEffInline {
				slot.n = uint8(copy(slot.eff[:], dv.effs))
			} else {
				slot.ext = int32(len(e.dpuExt))
				e.dpuExt = append(e.dpuExt, []dpuVer{dv})
			}
			e.dpuTab = append(e.dpuTab, slot)
			e.dpuNames = append(e.dpuNames, d.ID)
			e.dpuMaps.put(d.ID, i, e.dpuNames)
			continue
		}
		slot := &e.dpuTab[i]
		if slot.ext < 0 {
			first := dpuVer{vi: slot.vi, effs: append([]gEff(nil), slot.eff[:slot.n]...)}
			slot.ext = int32(len(e.dpuExt))
			e.dpuExt = append(e.dpuExt, []dpuVer{first})
		}
		e.dpuExt[slot.ext] = append(e.dpuExt[slot.ext], dv)
	}
	for i := range e.gs {
		e.gs[i].cur, e.gs[i].capa = -1, 0
	}
	for i, g := range ver.l2g {
		e.gs[g].cur, e.gs[g].capa = i, topo.spaces[i].cfg.Capacity
	}
	e.nextDaily = math.MinInt64 // recompute on the next genDaily
	return ver, nil
}

// AddVersion makes a stored topology version part of the engine. A space moved to a
// new parent carries its current count (KindMove entries at max(v.At, H) on the old
// and new ancestors); parked events the version maps are applied (late handling for
// those before H) and listed in the next Settlement's Unparked.
func (e *Engine) AddVersion(v Version, now int64) (VersionChange, error) {
	prev := e.current()
	ver, err := e.addVersion(v)
	if err != nil {
		return VersionChange{}, fmt.Errorf("add version: %w", err)
	}
	var ch VersionChange
	for _, s := range ver.topo.spaces {
		if _, ok := prev.topo.spaceIdx[s.cfg.ID]; !ok {
			ch.Added = append(ch.Added, s.cfg.ID)
		}
	}
	for _, s := range prev.topo.spaces {
		if _, ok := ver.topo.spaceIdx[s.cfg.ID]; !ok {
			ch.Removed = append(ch.Removed, s.cfg.ID)
		}
	}
	if err := e.remapFrom(v.At, now); err != nil {
		return VersionChange{}, fmt.Errorf("add version: %w", err)
	}
	at := max(v.At, e.h)
	for li, s := range ver.topo.spaces {
		pi, ok := prev.topo.spaceIdx[s.cfg.ID]
		if !ok {
			continue
		}
		g := ver.l2g[li]
		e.markChanged(g) // capacity or name may have changed
		if prev.topo.spaces[pi].cfg.Parent == s.cfg.Parent {
			continue
		}
		ch.Moved = append(ch.Moved, s.cfg.ID)
		// The count carried is the space's value just before the version instant
		// (events at or after it map through the new parents); it follows events
		// that arrive later for the time before the move (refreshMoves).
		c := e.gs[g].pl.valueAt(at-1, e.opts.ClampNegative)
		oldChain := prev.global(prev.topo.spaces[pi].chain)[1:]
		newChain := ver.global(ver.topo.spaces[li].chain)[1:]
		for _, a := range oldChain {
			if !slices.Contains(newChain, a) {
				e.addMove(moveRec{TS: at, Space: e.gs[a].id, Origin: s.cfg.ID, Delta: -c, Sign: -1, og: g}, now)
			}
		}
		for _, a := range newChain {
			if !slices.Contains(oldChain, a) {
				e.addMove(moveRec{TS: at, Space: e.gs[a].id, Origin: s.cfg.ID, Delta: c, Sign: 1, og: g}, now)
			}
		}
	}
	// Parked events of DPUs this version knows.
	var late []Event
	for dpu, m := range e.parked {
		if !ver.topo.HasDPU(dpu) {
			continue
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ev := m[k]
			e.unparked = append(e.unparked, ev)
			ch.Unparked++
			e.applyOne(ev, now, &late)
		}
		e.nParked -= len(m)
		delete(e.parked, dpu)
	}
	n, err := e.unparkReports(ver.topo, now, &late)
	ch.Unparked += n
	if err != nil {
		return ch, fmt.Errorf("add version: %w", err)
	}
	if err := e.correctLate(late, now); err != nil {
		return ch, fmt.Errorf("add version: %w", err)
	}
	e.dirty = true
	return ch, nil
}

// remapFrom maps the pending events with ts >= at again (a new version is in force
// for them). Normally only events slightly ahead of the clock are there.
func (e *Engine) remapFrom(at int64, now int64) error {
	type evKey struct {
		ref int32
		id  string
		ts  int64
		dir int8
	}
	seen, seenRep := map[evKey]bool{}, map[evKey]bool{}
	var evs []Event
	var reps []Report
	for g := range e.gs {
		pl := &e.gs[g].pl
		if len(pl.chunks) == 0 {
			continue
		}
		last := pl.chunks[len(pl.chunks)-1]
		if last.lastTS() < at {
			continue
		}
		rest := pl.truncateFrom(at, e.opts.ClampNegative)
		e.markChanged(int32(g))
		for _, en := range rest {
			if en.cls == clsReport {
				if k := (evKey{ref: en.ref, ts: en.ts, dir: en.dir}); !seenRep[k] {
					seenRep[k] = true
					reps = append(reps, e.reportAt(&en))
				}
				continue
			}
			if en.cls != clsEvent {
				e.insert(int32(g), en, true, now)
				continue
			}
			id := e.entryID(&en)
			e.releaseID(&en)
			k := evKey{en.ref, id, en.ts, en.dir}
			if !seen[k] {
				seen[k] = true
				evs = append(evs, Event{DPU: e.dpuNames[en.ref], ID: id, TS: en.ts, Direction: en.dir})
			}
		}
	}
	for _, ev := range evs {
		e.applyOne(ev, now, nil)
	}
	var late []Event // none: pending entries are not late
	for _, r := range reps {
		if _, err := e.applyReport(r, now, &late); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) addMove(m moveRec, now int64) {
	e.moves = append(e.moves, m)
	e.pendMoves++
	e.insert(e.space(m.Space), m.entry(), true, now)
}

// global maps indices of v's topology spaces to global space indices.
func (v *version) global(ls []int) []int32 {
	out := make([]int32, len(ls))
	for i, l := range ls {
		out[i] = v.l2g[l]
	}
	return out
}

// dailyReset is one generated daily reset: space origin reset to 0 at ts.
type dailyReset struct {
	ts     int64
	origin int32
	vi     int
}

// dailyIn lists the daily resets with from <= ts < to, each from the version in
// force at its instant, ordered by ts.
func (e *Engine) dailyIn(from, to int64) []dailyReset {
	var out []dailyReset
	for vi, v := range e.versions {
		segFrom, segTo := int64(math.MinInt64), int64(math.MaxInt64)
		if vi > 0 {
			segFrom = v.at
		}
		if vi+1 < len(e.versions) {
			segTo = e.versions[vi+1].at
		}
		lo, hi := max(from, segFrom), min(to, segTo)
		if lo >= hi {
			continue
		}
		for li := range v.topo.spaces {
			s := &v.topo.spaces[li]
			if s.resetMin < 0 {
				continue
			}
			for _, ts := range dailyInstants(s.resetMin, s.loc, lo, hi) {
				out = append(out, dailyReset{ts: ts, origin: v.l2g[li], vi: vi})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ts < out[j].ts })
	return out
}

// dailyTargets are the spaces a daily reset zeroes: the space and all nested in it.
func (e *Engine) dailyTargets(d dailyReset) []int32 {
	v := e.versions[d.vi]
	return v.global(v.topo.spaces[v.topo.spaceIdx[e.gs[d.origin].id]].desc)
}

// genDaily inserts the daily resets with lastGen < ts <= now.
func (e *Engine) genDaily(now int64) {
	if now <= e.lastGen {
		return
	}
	if e.nextDaily != math.MinInt64 && now < e.nextDaily {
		e.lastGen = now
		return
	}
	e.insertDaily(e.lastGen+1, now+1, now)
	e.lastGen = now
	// Next instant: look ahead two days (every space resets at least daily).
	e.nextDaily = math.MaxInt64
	if ds := e.dailyIn(now+1, now+1+2*86_400_000); len(ds) > 0 {
		e.nextDaily = ds[0].ts
	}
}

// insertDaily inserts the daily resets with from <= ts < to.
func (e *Engine) insertDaily(from, to, now int64) {
	for _, d := range e.dailyIn(from, to) {
		for _, g := range e.dailyTargets(d) {
			e.insert(g, valEntry(d.ts, d.origin, 0, clsDaily), true, now)
		}
	}
}

// dailyInstants returns the instants (Unix ms) in [from, to) at which local time in
// loc reads minute-of-day m: in a DST gap the end of the gap, in a repeated hour the
// first occurrence only.
func dailyInstants(m int, loc *time.Location, from, to int64) []int64 {
	const day = 86_400_000
	// Bound the walk: history further back than the data is pointless, and callers
	// pass finite ranges; guard against absurd spans anyway.
	if to-from > 400*365*day {
		from = to - 400*365*day
	}
	start := time.UnixMilli(from).In(loc)
	y, mo, d := start.Date()
	cur := time.Date(y, mo, d-1, 12, 0, 0, 0, time.UTC)
	var out []int64
	for {
		yy, mm, dd := cur.Date()
		t := localInstant(yy, mm, dd, m, loc)
		if t >= to {
			break
		}
		if t >= from {
			out = append(out, t)
		}
		cur = cur.AddDate(0, 0, 1)
	}
	return out
}

// localInstant is the first instant at which the wall clock of loc reads y-mo-d at
// minute m, or the end of the gap when that wall time does not exist.
func localInstant(y int, mo time.Month, d, m int, loc *time.Location) int64 {
	wall := time.Date(y, mo, d, m/60, m%60, 0, 0, time.UTC).Unix()
	best := int64(math.MaxInt64)
	for _, probe := range []int64{wall - 86400, wall, wall + 86400} {
		_, off := time.Unix(probe, 0).In(loc).Zone()
		u := wall - int64(off)
		if _, off2 := time.Unix(u, 0).In(loc).Zone(); off2 == off && u < best {
			best = u
		}
	}
	if best != math.MaxInt64 {
		return best * 1000
	}
	_, offBefore := time.Unix(wall-86400, 0).In(loc).Zone()
	hi := wall - int64(offBefore)
	lo := hi - 86400
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if _, o := time.Unix(mid, 0).In(loc).Zone(); o == offBefore {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi * 1000
}
