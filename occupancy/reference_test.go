package occupancy

import (
	"fmt"
	"sort"
	"time"

	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

// refModel is the deliberately naive reference of the true timeline (DESIGN 1, 2a, 3):
// take every event, manual reset and daily reset, and every crossing the stored
// reports stand for (refCrossings: each report expanded into single crossings), map
// each through the versions by walking parent chains, sort everything by (ts, class,
// name, id|direction), replay one step at a time with clamping. No incremental
// state, no horizon, no weighted entries.
type refModel struct {
	versions []Version
	events   []Event
	reports  []Report // stored reports, parked ones included
	resets   []Reset
	daily    int64 // daily resets up to and including this instant
	clamp    bool
	// h0 is the engine's first horizon: the first version's At - settle_after on a
	// new store (DESIGN 3); daily resets are generated from it on.
	h0 int64
}

type refEntry struct {
	ts    int64
	class int // 1 event, 2 a report's crossing, 3 daily reset, 4 manual reset (moves are not modelled)
	// group names the report a crossing belongs to: the crossings of one report on a
	// space are one timeline entry, whose value is the one after all of them (inner
	// marks the others: bucket min and max do not see them).
	group     string
	seq       int64 // a report's crossings: ins, then outs
	inner     bool
	name      string
	tail      string
	delta     int64
	set       int64
	isSet     bool
	kind      EntryKind
	value     int64
	in, out   int32
	entrySpan bool
}

func (e refEntry) order() refmodel.Order {
	return refmodel.Order{TS: e.ts, Class: e.class, Name: e.name, Tail: e.tail}
}

func refParentChain(c TopologyConfig, id string) []string {
	par := map[string]string{}
	for _, s := range c.Spaces {
		par[s.ID] = s.Parent
	}
	var out []string
	for cur := id; cur != ""; cur = par[cur] {
		out = append(out, cur)
	}
	return out
}

func refContains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// refVersionFor: the version in force at ts if it knows the DPU, else the earliest
// later one that does; -1 when none does.
func (m *refModel) refVersionFor(dpu string, ts int64) int {
	inForce := 0
	for i, v := range m.versions {
		if v.At <= ts {
			inForce = i
		}
	}
	for i := inForce; i < len(m.versions); i++ {
		for _, d := range m.versions[i].Topology.DPUs {
			if d.ID == dpu {
				return i
			}
		}
	}
	return -1
}

func (m *refModel) inForce(ts int64) TopologyConfig {
	c := m.versions[0].Topology
	for _, v := range m.versions {
		if v.At <= ts {
			c = v.Topology
		}
	}
	return c
}

// refTimeZone is the time_zone of space id or of its nearest ancestor that has
// one ("" = UTC).
func refTimeZone(c TopologyConfig, id string) string {
	for _, a := range refParentChain(c, id) {
		for _, s := range c.Spaces {
			if s.ID == a && s.TimeZone != "" {
				return s.TimeZone
			}
		}
	}
	return ""
}

func refDescendants(c TopologyConfig, id string) []string {
	var out []string
	for _, s := range c.Spaces {
		if refContains(refParentChain(c, s.ID), id) {
			out = append(out, s.ID)
		}
	}
	return out
}

// refDailyInstants scans minute by minute: a daily reset fires at the first minute
// whose local wall clock is at or past HH:MM on its local date (DST gap: the end of
// the gap; repeated hour: once).
func refDailyInstants(hhmm string, tz string, from, to int64) []int64 {
	loc, err := time.LoadLocation(tz)
	if tz == "" {
		loc = time.UTC
	} else if err != nil {
		panic(err)
	}
	var hh, mm int
	fmt.Sscanf(hhmm, "%d:%d", &hh, &mm)
	target := hh*60 + mm
	var out []int64
	fired := map[string]bool{}
	start := from - from%60_000
	if start < from {
		start += 60_000
	}
	for t := start - 60_000; t < to; t += 60_000 {
		lt := time.UnixMilli(t).In(loc)
		date := lt.Format("2006-01-02")
		if lt.Hour()*60+lt.Minute() >= target && !fired[date] {
			fired[date] = true
			if t >= from {
				out = append(out, t)
			}
		}
	}
	return out
}

// refCrossing is one single crossing: an event's or one of a report's.
type refCrossing struct {
	Event
	class int
	tail  string // order within a DPU's crossings at one ms (then seq)
	seq   int64
	group string
}

// refCrossings expands the stored reports into the single crossings they stand for
// (DESIGN 2a): an interval report's In crossings in the +1 direction and then its
// Out crossings in the -1 direction at its end; a cumulative report's increase of
// each total over the DPU's report before it in ts order, or the whole total where
// it dropped (a reset), at its ts; a DPU's first report counts nothing.
func refCrossings(reports []Report) []refCrossing {
	var out []refCrossing
	emit := func(r Report, in, outN int64) {
		group := fmt.Sprintf("%s/%d/%d", r.DPU, r.Kind, r.TS)
		tail := fmt.Sprint(r.Kind)
		for j := int64(0); j < in+outN; j++ {
			dir := int8(1)
			if j >= in {
				dir = -1
			}
			out = append(out, refCrossing{Event: Event{DPU: r.DPU, TS: r.TS, Direction: dir}, class: 2,
				tail: tail, seq: j, group: group})
		}
	}
	byDPU := map[string][]Report{}
	for _, r := range reports {
		if r.Kind == ReportInterval {
			emit(r, r.In, r.Out)
			continue
		}
		byDPU[r.DPU] = append(byDPU[r.DPU], r)
	}
	for _, rs := range byDPU {
		sort.Slice(rs, func(i, j int) bool { return rs[i].TS < rs[j].TS })
		for i := 1; i < len(rs); i++ {
			counts := [2]int64{}
			for c, pair := range [2][2]int64{{rs[i-1].In, rs[i].In}, {rs[i-1].Out, rs[i].Out}} {
				if pair[1] >= pair[0] {
					counts[c] = pair[1] - pair[0]
				} else {
					counts[c] = pair[1] // the counter restarted from 0
				}
			}
			emit(rs[i], counts[0], counts[1])
		}
	}
	return out
}

// timelines builds every space's entries with values.
func (m *refModel) timelines() map[string][]refEntry {
	tl := map[string][]refEntry{}
	var all []refCrossing
	for _, ev := range m.events {
		tail := "i" + ev.ID
		if ev.ID == "" {
			tail = "d" + string([]byte{byte(ev.Direction)})
		}
		all = append(all, refCrossing{Event: ev, class: 1, tail: tail})
	}
	all = append(all, refCrossings(m.reports)...)
	// The spaces a crossing changes, by DPU, version in force and direction (the
	// walk is the same for every crossing of a report).
	type target struct {
		space string
		delta int64
	}
	type mapKey struct {
		dpu     string
		inForce int
		dir     int8
	}
	memo := map[mapKey][]target{}
	targets := func(ev Event) []target {
		k := mapKey{ev.DPU, 0, ev.Direction}
		for i, v := range m.versions {
			if v.At <= ev.TS {
				k.inForce = i
			}
		}
		if ts, ok := memo[k]; ok {
			return ts
		}
		var out []target
		if vi := m.refVersionFor(ev.DPU, ev.TS); vi >= 0 {
			c := m.versions[vi].Topology
			var d DPUConfig
			for _, x := range c.DPUs {
				if x.ID == ev.DPU {
					d = x
				}
			}
			from, to := d.MinusSpace, d.PlusSpace
			if ev.Direction < 0 {
				from, to = to, from
			}
			var fc, tc []string
			if from != "" {
				fc = refParentChain(c, from)
			}
			if to != "" {
				tc = refParentChain(c, to)
			}
			for _, s := range tc {
				if !refContains(fc, s) {
					out = append(out, target{s, 1})
				}
			}
			for _, s := range fc {
				if !refContains(tc, s) {
					out = append(out, target{s, -1})
				}
			}
		}
		memo[k] = out
		return out
	}
	for _, cr := range all {
		ev := cr.Event
		for _, tg := range targets(ev) {
			tl[tg.space] = append(tl[tg.space], refEntry{ts: ev.TS, class: cr.class, name: ev.DPU, tail: cr.tail, seq: cr.seq,
				group: cr.group, delta: tg.delta, kind: KindEvent})
		}
	}
	for _, r := range m.resets {
		targets := []string{r.Space}
		if r.Occupancy == 0 {
			targets = refDescendants(m.inForce(r.TS), r.Space)
		}
		for _, s := range targets {
			tl[s] = append(tl[s], refEntry{ts: r.TS, class: 4, name: r.Space, isSet: true, set: r.Occupancy, kind: KindReset})
		}
	}
	for vi, v := range m.versions {
		lo, hi := int64(-1)<<62, m.daily+1
		if vi > 0 {
			lo = v.At
		}
		if vi+1 < len(m.versions) {
			hi = min(hi, m.versions[vi+1].At)
		}
		lo = max(lo, m.h0)

		for _, s := range v.Topology.Spaces {
			if s.DailyReset == "" {
				continue
			}
			// Scan from the first horizon so that a version boundary inside a
			// repeated hour does not fire the reset twice; keep this segment's.
			for _, ts := range refDailyInstants(s.DailyReset, refTimeZone(v.Topology, s.ID), m.h0, hi) {
				if ts < lo {
					continue
				}
				for _, d := range refDescendants(v.Topology, s.ID) {
					tl[d] = append(tl[d], refEntry{ts: ts, class: 3, name: s.ID, isSet: true, set: 0, kind: KindReset})
				}
			}
		}
	}
	for sp, es := range tl {
		sort.SliceStable(es, func(i, j int) bool {
			if a, b := es[i].order(), es[j].order(); a != b {
				return a.Less(b)
			}
			return es[i].seq < es[j].seq // a report's crossings
		})
		x := int64(0)
		for i := range es {
			e := &es[i]
			nx := x + e.delta
			if e.isSet {
				nx = e.set
			}
			if m.clamp && nx < 0 {
				nx = 0
			}
			if e.kind == KindEvent {
				if e.delta > 0 && nx > x {
					e.in = 1
				}
				if e.delta < 0 && nx < x {
					e.out = 1
				}
			}
			e.value = nx
			x = nx
			e.inner = e.group != "" && i+1 < len(es) && es[i+1].group == e.group
		}
		tl[sp] = es
	}
	return tl
}

func refAt(es []refEntry, t int64) int64 {
	x := int64(0)
	for _, e := range es {
		if e.ts > t {
			break
		}
		x = e.value
	}
	return x
}

func refCurrent(es []refEntry) int64 {
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].value
}

// refRows are the rows of entries before h, Seq per (space, ts).
func refRows(space string, es []refEntry, h int64) []Row {
	var out []Row
	for i, e := range es {
		if e.ts >= h {
			break
		}
		seq := uint32(0)
		if i > 0 && es[i-1].ts == e.ts {
			seq = out[len(out)-1].Seq + 1
		}
		out = append(out, Row{Space: space, TS: e.ts, Seq: seq, Occupancy: e.value, Entrances: e.in, Exits: e.out, Kind: e.kind})
	}
	return out
}

func refCounts(es []refEntry, start, end, interval int64) []Bucket {
	var out []Bucket
	for s := start; s < end; s += interval {
		b := Bucket{Start: s, End: min(s+interval, end)}
		x := refAt(es, s-1)
		b.Occupancy, b.Min, b.Max = x, x, x
		for _, e := range es {
			if e.ts >= b.Start && e.ts < b.End {
				b.Entrances += int64(e.in)
				b.Exits += int64(e.out)
				if e.inner {
					continue // inside a report: the entry's value is the one after it
				}
				b.Occupancy = e.value
				b.Min = min(b.Min, e.value)
				b.Max = max(b.Max, e.value)
			}
		}
		out = append(out, b)
	}
	return out
}
