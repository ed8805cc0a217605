// Package refmodel is a deliberately naive model of what occupancyd answers about
// occupancy over time (DESIGN 1 and 3): the true timeline, the settled horizon and
// how it starts, holds and moves, late-event corrections, and the At and Counts
// queries over settled history and the pending window.
//
// It shares no code with the engine (package occupancy) and imports none of it, so
// the tests of the engine, of the engine over the real store and of the daemon over
// MQTT and HTTP compare with one model. Every answer is recomputed from scratch by
// a sorted replay of everything received: O(events) per question, for tests only.
package refmodel

import (
	"fmt"
	"slices"
	"sort"
)

// Space is a space of the topology; Parent "" is the top.
type Space struct{ ID, Parent string }

// DPU counts crossings between Minus and Plus ("" = outside): direction +1 moves a
// person from Minus into Plus.
type DPU struct{ ID, Plus, Minus string }

// Event is one crossing as a DPU reports it.
type Event struct {
	DPU string
	ID  string // "" = none: the identity is then (DPU, TS, Dir)
	TS  int64  // Unix ms
	Dir int    // +1 or -1
}

// Reset is a manual reset: to 0 it sets the space and every space nested in it, to
// N > 0 the space alone.
type Reset struct {
	Space string
	TS    int64
	Value int64
}

// Bucket is one [Start, End) of a counts query.
type Bucket struct {
	Start, End int64
	Occupancy  int64 // after the bucket's last entry (carried in if none)
	Min, Max   int64 // over the value carried in and every value inside
	Entrances  int64
	Exits      int64
	CarriedIn  int64 // the value just before Start
	HasReset   bool  // a reset is inside
}

// Config is the gateway as the model sees it.
type Config struct {
	Spaces      []Space
	DPUs        []DPU
	SettleAfter int64 // ms
	Clamp       bool  // engine.clamp_negative
}

// correction is a late-event correction entry at a horizon: the true timeline's
// value there and the crossings it counts.
type correction struct{ value, in, out int64 }

// Model follows one gateway: call Start at every start (the first one makes the
// store), Hold at every broker reconnect, Tick where the gateway ticks, Receive
// with every batch the gateway applies, Reset with every manual reset.
type Model struct {
	c         Config
	started   bool
	h         int64
	holdUntil int64
	seen      map[string]bool
	all       []Event // every distinct event received: the true timeline
	onTime    []Event // those received while their ts was at or after H
	resets    []Reset
	corr      map[int64]map[string]correction // horizon -> space -> correction
	memo      map[string][]entry              // timelines since the last change
}

// New returns the model of a gateway with a new store.
func New(c Config) *Model {
	return &Model{c: c, seen: map[string]bool{}, corr: map[int64]map[string]correction{}, memo: map[string][]entry{}}
}

// Start is a start of the gateway at now. On a new store nothing is settled: H
// starts at now - settle_after. At every start H then holds still for settle_after.
func (m *Model) Start(now int64) {
	if !m.started {
		m.started = true
		m.h = now - m.c.SettleAfter
	}
	m.Hold(now)
}

// Hold is a broker reconnect at now: H holds still for settle_after.
func (m *Model) Hold(now int64) { m.holdUntil = max(m.holdUntil, now+m.c.SettleAfter) }

// Tick moves H to now - settle_after unless it is held; H never moves back.
func (m *Model) Tick(now int64) {
	if now >= m.holdUntil && now-m.c.SettleAfter > m.h {
		m.h = now - m.c.SettleAfter
	}
}

// Horizon is the settled horizon H.
func (m *Model) Horizon() int64 { return m.h }

func (e Event) identity() string {
	if e.ID == "" {
		return fmt.Sprintf("%s\x00d%d@%d", e.DPU, e.Dir, e.TS)
	}
	return fmt.Sprintf("%s\x00i%s@%d", e.DPU, e.ID, e.TS)
}

// Receive takes a batch the gateway applies at the current H: an event seen before
// is a duplicate and changes nothing; a new one at or after H is pending; a new one
// before H is late, and every space a late event changes gets a correction at H
// (replacing one already there) that sets it to the true timeline's value at H and
// counts the crossings the true timeline counts before H that the rows before H do
// not. It returns how many events were late.
func (m *Model) Receive(evs []Event) (late int) {
	touched := map[string]bool{}
	for _, e := range evs {
		k := e.identity()
		if m.seen[k] {
			continue
		}
		m.seen[k] = true
		clear(m.memo)
		m.all = append(m.all, e)
		if e.TS >= m.h {
			m.onTime = append(m.onTime, e)
			continue
		}
		late++
		for s := range m.changes(e) {
			touched[s] = true
		}
	}
	if len(touched) == 0 {
		return late
	}
	if m.corr[m.h] == nil {
		m.corr[m.h] = map[string]correction{}
	}
	for s := range touched {
		truth := m.truth(s)
		known := m.timeline(s, m.onTime, func(at int64) bool { return at != m.h })
		v, tin, tout := upTo(truth, m.h)
		_, kin, kout := upTo(known, m.h)
		m.corr[m.h][s] = correction{value: v, in: tin - kin, out: tout - kout}
	}
	clear(m.memo)
	return late
}

// Reset records a manual reset (its TS at or after H).
func (m *Model) Reset(r Reset) {
	m.resets = append(m.resets, r)
	clear(m.memo)
}

// At is the occupancy of space at t (every entry with ts <= t): the rows as they
// were settled before H, the true timeline from H on.
func (m *Model) At(space string, t int64) int64 { return valueAt(m.history(space), t) }

// Current is the occupancy after everything received.
func (m *Model) Current(space string) int64 { return m.At(space, 1<<62) }

// TrueAt is the true timeline's value of space at t (late events at their ts).
func (m *Model) TrueAt(space string, t int64) int64 { return valueAt(m.truth(space), t) }

// TrueTotals are the crossings into and out of space the true timeline counts.
func (m *Model) TrueTotals(space string) (in, out int64) {
	_, in, out = upTo(m.truth(space), 1<<62)
	return in, out
}

// Counts answers the buckets [bounds[i], bounds[i+1]) of space.
func (m *Model) Counts(space string, bounds []int64) []Bucket {
	es := m.history(space)
	var out []Bucket
	for i := 0; i+1 < len(bounds); i++ {
		b := Bucket{Start: bounds[i], End: bounds[i+1]}
		x := valueAt(es, b.Start-1)
		b.CarriedIn, b.Occupancy, b.Min, b.Max = x, x, x, x
		for _, e := range es {
			if e.TS < b.Start || e.TS >= b.End {
				continue
			}
			b.Occupancy = e.value
			b.Min, b.Max = min(b.Min, e.value), max(b.Max, e.value)
			b.Entrances += e.in
			b.Exits += e.out
			b.HasReset = b.HasReset || e.Class == classReset
		}
		out = append(out, b)
	}
	return out
}

// Uniform is the bounds of buckets of interval from start, the last one cut at end.
func Uniform(start, end, interval int64) []int64 {
	var b []int64
	for s := start; s < end; s += interval {
		b = append(b, s)
	}
	return append(b, end)
}

// Entry classes at one millisecond: a correction first, then events (by DPU, then
// id-less before id, +1 before -1, ids byte by byte), then resets (by space).
const (
	classCorrection = iota
	classEvent
	classReset
)

// Order is the position of an entry in a space's timeline (DESIGN 3): by TS, then
// class, then Name (the DPU of an event, the space a reset comes from), then Tail
// (an event's 'd'+direction byte, 0x01 for +1 and 0xFF for -1, or 'i'+id), byte
// by byte.
type Order struct {
	TS         int64
	Class      int
	Name, Tail string
}

// Less reports whether a comes before b.
func (a Order) Less(b Order) bool {
	if a.TS != b.TS {
		return a.TS < b.TS
	}
	if a.Class != b.Class {
		return a.Class < b.Class
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Tail < b.Tail
}

type entry struct {
	Order
	delta   int64 // event: +1/-1 on this space
	set     int64 // reset, correction: the value set
	in, out int64 // counted crossings (computed for events, given for corrections)
	value   int64 // after this entry
}

// history is the timeline the gateway answers from: the events received on time,
// the resets and every correction.
func (m *Model) history(space string) []entry {
	return m.memoized("h"+space, func() []entry {
		return m.timeline(space, m.onTime, func(int64) bool { return true })
	})
}

// truth is the true timeline: every event at its ts, the resets, no corrections.
func (m *Model) truth(space string) []entry {
	return m.memoized("t"+space, func() []entry { return m.timeline(space, m.all, nil) })
}

func (m *Model) memoized(k string, f func() []entry) []entry {
	es, ok := m.memo[k]
	if !ok {
		es = f()
		m.memo[k] = es
	}
	return es
}

// timeline sorts and replays the entries of space: evs, the resets, and the
// corrections at horizons keep accepts (none when keep is nil).
func (m *Model) timeline(space string, evs []Event, keep func(at int64) bool) []entry {
	var es []entry
	for _, e := range evs {
		d, ok := m.changes(e)[space]
		if !ok {
			continue
		}
		tail := "i" + e.ID
		if e.ID == "" {
			tail = "d\x01"
			if e.Dir < 0 {
				tail = "d\xff"
			}
		}
		es = append(es, entry{Order: Order{TS: e.TS, Class: classEvent, Name: e.DPU, Tail: tail}, delta: d})
	}
	for _, r := range m.resets {
		if r.Space == space || (r.Value == 0 && m.within(space, r.Space)) {
			es = append(es, entry{Order: Order{TS: r.TS, Class: classReset, Name: r.Space}, set: r.Value})
		}
	}
	if keep != nil {
		for at, cs := range m.corr {
			if c, ok := cs[space]; ok && keep(at) {
				es = append(es, entry{Order: Order{TS: at, Class: classCorrection}, set: c.value, in: c.in, out: c.out})
			}
		}
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Less(es[j].Order) })
	x := int64(0)
	for i := range es {
		e := &es[i]
		switch e.Class {
		case classEvent:
			v := x + e.delta
			if m.c.Clamp && v < 0 {
				v = 0
			}
			if e.delta > 0 && v > x {
				e.in = 1
			}
			if e.delta < 0 && v < x {
				e.out = 1
			}
			x = v
		default:
			x = e.set
		}
		e.value = x
	}
	return es
}

// valueAt is the value after every entry at or before t.
func valueAt(es []entry, t int64) int64 {
	x := int64(0)
	for _, e := range es {
		if e.TS > t {
			break
		}
		x = e.value
	}
	return x
}

// upTo is the value after every entry before t and the crossings they count.
func upTo(es []entry, t int64) (v, in, out int64) {
	for _, e := range es {
		if e.TS >= t {
			break
		}
		v, in, out = e.value, in+e.in, out+e.out
	}
	return v, in, out
}

// chain is id and its ancestors.
func (m *Model) chain(id string) []string {
	var c []string
	for id != "" {
		c = append(c, id)
		p := ""
		for _, s := range m.c.Spaces {
			if s.ID == id {
				p = s.Parent
			}
		}
		id = p
	}
	return c
}

// within reports whether space is anc or nested in it.
func (m *Model) within(space, anc string) bool { return slices.Contains(m.chain(space), anc) }

// changes is what a crossing does to each space: +1 on the destination's chain
// outside the origin's, -1 on the origin's chain outside the destination's.
func (m *Model) changes(e Event) map[string]int64 {
	out := map[string]int64{}
	for _, d := range m.c.DPUs {
		if d.ID != e.DPU {
			continue
		}
		from, to := d.Minus, d.Plus
		if e.Dir < 0 {
			from, to = to, from
		}
		fc, tc := m.chain(from), m.chain(to)
		for _, s := range tc {
			if !slices.Contains(fc, s) {
				out[s] = 1
			}
		}
		for _, s := range fc {
			if !slices.Contains(tc, s) {
				out[s] = -1
			}
		}
	}
	return out
}
