package occupancy

import (
	"fmt"
	"sort"
	"time"

	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

// refModel is the deliberately naive reference of the true timeline (DESIGN 1, 3):
// take every event, manual reset and daily reset, map each through the versions by
// walking parent chains, sort everything by (ts, class, name, id|direction), replay
// with clamping. No incremental state, no horizon.
type refModel struct {
	versions []Version
	events   []Event
	resets   []Reset
	daily    int64 // daily resets up to and including this instant
	clamp    bool
	// h0 is the engine's first horizon: the first version's At - settle_after on a
	// new store (DESIGN 3); daily resets are generated from it on.
	h0 int64
}

type refEntry struct {
	ts        int64
	class     int // 1 event, 2 move, 3 daily reset, 4 manual reset
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

// timelines builds every space's entries with values.
func (m *refModel) timelines() map[string][]refEntry {
	tl := map[string][]refEntry{}
	for _, ev := range m.events {
		vi := m.refVersionFor(ev.DPU, ev.TS)
		if vi < 0 {
			continue
		}
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
		tail := "i" + ev.ID
		if ev.ID == "" {
			tail = "d" + string([]byte{byte(ev.Direction)})
		}
		for _, s := range tc {
			if !refContains(fc, s) {
				tl[s] = append(tl[s], refEntry{ts: ev.TS, class: 1, name: ev.DPU, tail: tail, delta: 1, kind: KindEvent})
			}
		}
		for _, s := range fc {
			if !refContains(tc, s) {
				tl[s] = append(tl[s], refEntry{ts: ev.TS, class: 1, name: ev.DPU, tail: tail, delta: -1, kind: KindEvent})
			}
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
		sort.SliceStable(es, func(i, j int) bool { return es[i].order().Less(es[j].order()) })
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
				b.Occupancy = e.value
				b.Min = min(b.Min, e.value)
				b.Max = max(b.Max, e.value)
				b.Entrances += int64(e.in)
				b.Exits += int64(e.out)
			}
		}
		out = append(out, b)
	}
	return out
}
