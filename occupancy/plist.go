package occupancy

import (
	"sort"
	"sync"
)

// arrPool recycles full-size entry arrays: settling frees them as fast as ingest
// needs new ones. Entries hold no pointers: arrays need no clearing and the garbage
// collector never scans them.
var arrPool = sync.Pool{New: func() any { return new([chunkSize]entry) }}

// allocEntries returns an entry array of n (minCap..chunkSize) entries.
func allocEntries(n int) []entry {
	if n == chunkSize {
		return arrPool.Get().(*[chunkSize]entry)[:]
	}
	return make([]entry, n)
}

func freeEntries(es []entry) {
	if len(es) == chunkSize {
		arrPool.Put((*[chunkSize]entry)(es))
	}
}

// newChunk returns an empty chunk of n entries' room (f the identity).
func newChunk(n int) *chunk { return &chunk{f: identity, es: allocEntries(n)} }

// freeChunk recycles c's entry array; c must not be used again.
func freeChunk(c *chunk) {
	freeEntries(c.es)
	c.es = nil
}

// Pending entries of one space live in a chunked, sorted list. Each chunk carries the
// composition of its entries' value functions and the true value after it, so
//
//   - an in-order append is O(1);
//   - an out-of-order insertion is O(log n + B + n/B): a binary search for the chunk,
//     a memmove inside it (at most B entries), recomposing that chunk and re-deriving
//     the end values of the chunks after it with one composed function each;
//   - the value at any instant is a binary search plus at most B entry steps.
//
// Every entry is a function of the value before it, of the form x -> max(a, x+b):
// a clamped crossing is max(0, x+d), an unclamped one max(-inf, x+d), a reset or
// correction to c is max(c, x-inf). Such functions compose into the same form.
//
// Memory. A chunk is one pointer-free allocation (the garbage collector never scans
// the pending window). Insertions in the middle split full chunks; when a space's
// chunks average less than 7/8 full the list is repacked (amortized O(B) per split).

// chunkSize entries of 24 bytes fill the 3072-byte size class. A chunk that gets
// entries one at a time (a new tail) starts with room for minCap and doubles; the
// first chunk, as it settles, moves what is left to a smaller array. So a space
// with few pending entries does not hold two mostly empty 3 KB arrays.
const (
	chunkSize = 126
	minCap    = 16
)

// neg stands for -infinity in value functions; sums saturate at it.
const neg = int64(-1) << 61

// Entry classes: the order of entries of different kinds at the same millisecond.
// A correction sets the value at the horizon before anything else at that instant;
// events come next (by DPU id, then id/direction as in Event.Key), then reports (by
// DPU id, an interval report before a cumulative one), then topology moves, daily
// resets and manual resets (each by originating space id).
const (
	clsCorrection uint8 = iota
	clsEvent
	clsReport
	clsMove
	clsDaily
	clsManual
)

// entry is one pending timeline entry of one space (24 bytes, no pointers).
//
// An event entry keeps its event id in aux: ids of up to 8 bytes packed (idn is the
// length, see packID), longer ones as a slot of the engine's side table (idn ==
// idLong). A report entry keeps the crossings it counts in aux (reportEntry): one
// entry stands for all of them, however many. Other entries keep their value in
// the low 32 bits of aux (the value a reset or correction sets, a move's delta). A
// correction counts crossings too (the late ones; see late.go): its entrances in
// ref, its exits in aux's high 32 bits.
type entry struct {
	ts  int64
	aux uint64
	ref int32 // event, report: DPU index; move/reset: originating global space index; correction: entrances
	cls uint8
	dir int8  // event: direction (timeline order of id-less events); report: its ReportKind
	idn uint8 // event: id length (0 = no id) or idLong
	d   int8  // event: delta on this space (+1/-1); report: the sign of its +1 direction here
}

// idLong marks an event entry whose id lives in the engine's side table.
const idLong = 0xFF

// valEntry makes a non-event entry; v is kept as an int32 as before.
func valEntry(ts int64, ref int32, v int32, cls uint8) entry {
	return entry{ts: ts, aux: uint64(uint32(v)), ref: ref, cls: cls}
}

// corrEntry makes the correction entry at ts that sets the value v and counts in
// entrances and out exits.
func corrEntry(ts int64, v, in, out int32) entry {
	return entry{ts: ts, aux: uint64(uint32(v)) | uint64(uint32(out))<<32, ref: in, cls: clsCorrection}
}

// val is the value a non-event entry sets (reset, correction) or adds (move).
func (en *entry) val() int64 { return int64(int32(uint32(en.aux))) }

// packID packs an id of at most 8 bytes: its bytes big-endian, zero-padded.
// Comparing (packed, length) pairs compares the ids as strings: where the padded
// words first differ, either both ids have a byte there, or the shorter one has
// ended (padding 0 below the other's byte, and the shorter one is a prefix of the
// longer); equal words mean one id is the other plus 0 bytes, and the length decides.
func packID(id string) uint64 {
	var x uint64
	for i := 0; i < len(id); i++ {
		x |= uint64(id[i]) << (56 - 8*uint(i))
	}
	return x
}

func unpackID(x uint64, n uint8) string {
	var b [8]byte
	for i := range b {
		b[i] = byte(x >> (56 - 8*uint(i)))
	}
	return string(b[:n])
}

// cmpPacked compares two packed ids of lengths an and bn like strings.Compare.
func cmpPacked(a uint64, an uint8, b uint64, bn uint8) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	case an < bn:
		return -1
	case an > bn:
		return 1
	}
	return 0
}

// reportEntry is the entry of a report counting in crossings in the +1 direction
// and then out in the -1 direction (each at most maxWeight), on a space where +1
// counts d (+1 or -1).
func reportEntry(ts int64, ref int32, kind ReportKind, in, out int64, d int8) entry {
	return entry{ts: ts, aux: uint64(min(in, maxWeight))<<32 | uint64(min(out, maxWeight)), ref: ref, cls: clsReport, dir: int8(kind), d: d}
}

// weights are the crossings of a report entry: in then out.
func (en *entry) weights() (in, out int64) { return int64(en.aux >> 32), int64(uint32(en.aux)) }

// reportSteps are the two steps of a report entry on this space: its ins, then its
// outs, each a clamped (or unclamped) addition of many single crossings at once:
// max(0, x-M) is M clamped decrements.
func (en *entry) reportSteps(clamp bool) (first, second fn) {
	floor := neg
	if clamp {
		floor = 0
	}
	in, out := en.weights()
	d := int64(en.d)
	return fn{a: floor, b: d * in}, fn{a: floor, b: -d * out}
}

func (en *entry) kind() EntryKind {
	switch en.cls {
	case clsCorrection:
		return KindCorrection
	case clsEvent:
		return KindEvent
	case clsReport:
		return KindReport
	case clsMove:
		return KindMove
	default:
		return KindReset
	}
}

type fn struct{ a, b int64 }

var identity = fn{a: neg, b: 0}

func sat(x, y int64) int64 {
	if x <= neg || y <= neg {
		return neg
	}
	return x + y
}

func (f fn) apply(x int64) int64 {
	v := sat(x, f.b)
	if f.a > v {
		return f.a
	}
	return v
}

// then returns g∘f (f first).
func (f fn) then(g fn) fn {
	a := sat(f.a, g.b)
	if g.a > a {
		a = g.a
	}
	return fn{a: a, b: sat(f.b, g.b)}
}

func entryFn(en *entry, clamp bool) fn {
	switch en.cls {
	case clsEvent:
		if clamp {
			return fn{a: 0, b: int64(en.d)}
		}
		return fn{a: neg, b: int64(en.d)}
	case clsReport:
		f, g := en.reportSteps(clamp)
		return f.then(g)
	case clsMove:
		if clamp {
			return fn{a: 0, b: en.val()}
		}
		return fn{a: neg, b: en.val()}
	default:
		return fn{a: en.val(), b: neg}
	}
}

// step applies one entry to x and returns the new value and the crossings it counts.
func step(en *entry, x int64, clamp bool) (v int64, in, out int32) {
	if en.cls == clsEvent {
		// x -> max(0|-inf, x+d), d = +1/-1; x > neg always holds for values.
		v = x + int64(en.d)
		if x <= neg {
			v = neg
		}
		if clamp && v < 0 {
			v = 0
		}
		switch {
		case en.d > 0 && v > x:
			in = 1
		case en.d < 0 && v < x:
			out = 1
		}
		return v, in, out
	}
	if en.cls == clsReport {
		// Entrances and exits are what the steps actually changed: a decrement
		// absorbed at 0 is no exit.
		f, g := en.reportSteps(clamp)
		x1 := f.apply(x)
		v = g.apply(x1)
		if en.d > 0 {
			return v, int32(x1 - x), int32(x1 - v)
		}
		return v, int32(v - x1), int32(x - x1)
	}
	if en.cls == clsCorrection {
		return en.val(), en.ref, int32(uint32(en.aux >> 32))
	}
	return entryFn(en, clamp).apply(x), 0, 0
}

// chunk is up to chunkSize consecutive entries of one space, es[lo:n]; len(es) is
// its room (minCap, doubling up to chunkSize). Only the first chunk of a list has
// lo > 0: settling part of it moves lo and marks f stale (its end value is
// unchanged) instead of moving and recomposing what is left; propagate recomposes a
// stale f before using it.
type chunk struct {
	lo, n int32
	f     fn
	end   int64 // true value after the last entry of this chunk
	stale bool  // f is not the composition of es[lo:n]
	es    []entry
}

// room makes room for one more entry at es[n] (moving the entries to a larger
// array, or to the front of this one) and reports false when c holds chunkSize
// entries already.
func (c *chunk) room() bool {
	if int(c.n) < len(c.es) {
		return true
	}
	if c.count() >= chunkSize {
		return false
	}
	c.resize(min(chunkSize, 2*len(c.es)))
	return true
}

// resize moves the entries of c to the front of a new array of n entries.
func (c *chunk) resize(n int) {
	es := allocEntries(n)
	k := copy(es, c.es[c.lo:c.n])
	freeEntries(c.es)
	c.es, c.lo, c.n = es, 0, int32(k)
}

func (c *chunk) s() []entry    { return c.es[c.lo:c.n] }
func (c *chunk) count() int    { return int(c.n - c.lo) }
func (c *chunk) lastTS() int64 { return c.es[c.n-1].ts }

func (c *chunk) recompose(clamp bool) {
	f := identity
	for i := c.lo; i < c.n; i++ {
		f = f.then(entryFn(&c.es[i], clamp))
	}
	c.f, c.stale = f, false
}

// compact moves the entries of c to the front of its array.
func (c *chunk) compact() {
	if c.lo > 0 {
		c.n = int32(copy(c.es, c.es[c.lo:c.n]))
		c.lo = 0
	}
}

// push appends en, which follows every entry of c, keeping f (stale or not) and end.
func (c *chunk) push(en entry, clamp bool) {
	c.es[c.n] = en
	c.n++
	g := entryFn(&en, clamp)
	c.f = c.f.then(g)
	c.end = g.apply(c.end)
}

// plist is the pending timeline of one space.
type plist struct {
	// Cached from chunks so an in-order append touches only the tail chunk.
	last   *chunk
	lastTS int64
	cur    int64
	n      int   // entries
	base   int64 // value at the horizon, before the first pending entry
	chunks []*chunk
}

func (p *plist) current() int64 { return p.cur }

func (p *plist) setBase(v int64, clamp bool) {
	p.base = v
	p.propagate(0, clamp)
	p.sync()
}

// sync refreshes the cached tail fields after a structural change.
func (p *plist) sync() {
	if n := len(p.chunks); n > 0 {
		p.last = p.chunks[n-1]
		p.lastTS = p.last.lastTS()
		p.cur = p.last.end
		return
	}
	p.last, p.lastTS, p.cur = nil, 0, p.base
}

func (p *plist) len() int { return p.n }

// propagate re-derives end values from chunk i on.
func (p *plist) propagate(i int, clamp bool) {
	x := p.base
	if i > 0 {
		x = p.chunks[i-1].end
	}
	for ; i < len(p.chunks); i++ {
		c := p.chunks[i]
		if c.stale {
			c.recompose(clamp)
		}
		x = c.f.apply(x)
		c.end = x
	}
}

// less orders entries of one space; e resolves names for ties.
type lessFunc func(a, b *entry) int

// upsert inserts en in order. An entry comparing equal to an existing one replaces
// it when replace is set (resets, corrections) and is dropped otherwise (a duplicate
// event). It reports whether the list and whether the current value changed.
func (p *plist) upsert(en entry, cmp lessFunc, clamp, replace bool) (changed, curChanged bool) {
	before := p.cur
	if last := p.last; last != nil && en.ts > p.lastTS && int(last.n) < len(last.es) {
		// Fast path: in order, room in the tail chunk.
		last.push(en, clamp)
		p.n++
		p.lastTS, p.cur = en.ts, last.end
		return true, p.cur != before
	}
	if !p.upsert1(en, cmp, clamp, replace) {
		return false, false
	}
	p.sync()
	return true, p.cur != before
}

func (p *plist) upsert1(en entry, cmp lessFunc, clamp, replace bool) bool {
	n := len(p.chunks)
	if n == 0 {
		c := newChunk(minCap)
		c.push(en, clamp)
		p.chunks = append(p.chunks, c)
		p.n++
		p.propagate(0, clamp)
		return true
	}
	last := p.chunks[n-1]
	le := &last.es[last.n-1]
	if en.ts > le.ts || (en.ts == le.ts && cmp(le, &en) < 0) {
		// Fast path: append at the end.
		if !last.room() {
			c := newChunk(minCap)
			c.end = last.end
			c.push(en, clamp)
			p.chunks = append(p.chunks, c)
			p.n++
			return true
		}
		last.push(en, clamp)
		p.n++
		return true
	}
	// First chunk whose last entry is >= en.
	ci := sort.Search(n, func(i int) bool {
		c := p.chunks[i]
		return cmp(&c.es[c.n-1], &en) >= 0
	})
	c := p.chunks[ci]
	c.compact()
	j := int32(sort.Search(int(c.n), func(i int) bool { return cmp(&c.es[i], &en) >= 0 }))
	if cmp(&c.es[j], &en) == 0 {
		if !replace || c.es[j] == en {
			return false
		}
		c.es[j] = en
		c.recompose(clamp)
		p.propagate(ci, clamp)
		return true
	}
	p.n++
	if c.room() {
		copy(c.es[j+1:c.n+1], c.es[j:c.n])
		c.es[j] = en
		c.n++
		c.recompose(clamp)
		p.propagate(ci, clamp)
		return true
	}
	// The chunk is full: pass its last entry on to the next chunk or its first to
	// the previous one when that has room (keeps chunks full where late entries
	// land just before the tail)...
	if ci+1 < n {
		if nx := p.chunks[ci+1]; nx.room() {
			out := c.es[c.n-1]
			copy(c.es[j+1:c.n], c.es[j:c.n-1])
			c.es[j] = en
			copy(nx.es[1:nx.n+1], nx.es[:nx.n])
			nx.es[0] = out
			nx.n++
			c.recompose(clamp)
			nx.recompose(clamp)
			p.propagate(ci, clamp)
			return true
		}
	}
	if ci > 0 {
		if pv := p.chunks[ci-1]; pv.room() {
			if j == 0 {
				pv.es[pv.n] = en
			} else {
				pv.es[pv.n] = c.es[0]
				copy(c.es[:j-1], c.es[1:j])
				c.es[j-1] = en
				c.recompose(clamp)
			}
			pv.n++
			pv.recompose(clamp)
			p.propagate(ci-1, clamp)
			return true
		}
	}
	// ... else split it. The tail chunk splits at the insertion point (later
	// appends fill the new tail); others in half.
	k := int32(chunkSize / 2)
	if ci == n-1 && j >= k {
		k = j
	}
	nc := newChunk(chunkSize)
	nc.n = int32(copy(nc.es, c.es[k:c.n]))
	c.n = k
	if j <= k {
		copy(c.es[j+1:c.n+1], c.es[j:c.n])
		c.es[j] = en
		c.n++
	} else {
		j -= k
		copy(nc.es[j+1:nc.n+1], nc.es[j:nc.n])
		nc.es[j] = en
		nc.n++
	}
	p.chunks = append(p.chunks, nil)
	copy(p.chunks[ci+2:], p.chunks[ci+1:])
	p.chunks[ci+1] = nc
	if len(p.chunks) > p.n*8/(7*chunkSize)+2 {
		p.repack(clamp)
		return true
	}
	c.recompose(clamp)
	nc.recompose(clamp)
	p.propagate(ci, clamp)
	return true
}

// repack moves every entry into full chunks (the last one partly full).
func (p *plist) repack(clamp bool) {
	out := make([]*chunk, 0, (p.n+chunkSize-1)/chunkSize+1)
	var c *chunk
	for _, oc := range p.chunks {
		src := oc.s()
		for len(src) > 0 {
			if c == nil || c.n == chunkSize {
				c = newChunk(chunkSize)
				out = append(out, c)
			}
			k := copy(c.es[c.n:], src)
			c.n += int32(k)
			src = src[k:]
		}
		freeChunk(oc) // read completely: newChunk may hand it out again
	}
	for _, c := range out {
		c.recompose(clamp)
	}
	clear(p.chunks)
	p.chunks = out
	p.propagate(0, clamp)
}

// valueAt returns the value after every pending entry with ts <= t.
func (p *plist) valueAt(t int64, clamp bool) int64 {
	n := len(p.chunks)
	if n == 0 {
		return p.base
	}
	// First chunk whose last entry is after t.
	ci := sort.Search(n, func(i int) bool { return p.chunks[i].lastTS() > t })
	if ci == n {
		return p.chunks[n-1].end
	}
	x := p.base
	if ci > 0 {
		x = p.chunks[ci-1].end
	}
	for _, en := range p.chunks[ci].s() {
		if en.ts > t {
			break
		}
		x = entryFn(&en, clamp).apply(x)
	}
	return x
}

// each calls fn for every pending entry with from <= ts < to with the value after
// it and its crossings.
func (p *plist) each(from, to int64, clamp bool, fnc func(en *entry, v int64, in, out int32)) {
	n := len(p.chunks)
	ci := sort.Search(n, func(i int) bool { return p.chunks[i].lastTS() >= from })
	x := p.base
	if ci > 0 {
		x = p.chunks[ci-1].end
	}
	for ; ci < n; ci++ {
		es := p.chunks[ci].s()
		for i := range es {
			en := &es[i]
			if en.ts >= to {
				return
			}
			v, in, out := step(en, x, clamp)
			if en.ts >= from {
				fnc(en, v, in, out)
			}
			x = v
		}
	}
}

// settle removes every entry with ts < h, appending a row for each to rows in
// order (with Seq continuing from the previous row of the same ms, and the long ids
// of settled events released through rel), and makes the value at h the new base.
func (p *plist) settle(h int64, clamp bool, space string, rows []Row, rel func(*entry)) []Row {
	x := p.base
	var lastTS int64 = -1 << 63
	var seq uint32
	for len(p.chunks) > 0 {
		c := p.chunks[0]
		es := c.s()
		k := 0
		for ; k < len(es) && es[k].ts < h; k++ {
			en := &es[k]
			v, in, out := step(en, x, clamp)
			if en.cls == clsReport && in == 0 && out == 0 {
				continue // a report that changed nothing here leaves no row
			}
			if en.ts != lastTS {
				lastTS, seq = en.ts, 0
			} else {
				seq++
			}
			rows = append(rows, Row{Space: space, TS: en.ts, Seq: seq, Occupancy: v, Entrances: in, Exits: out, Kind: en.kind()})
			if en.idn == idLong {
				rel(en)
			}
			x = v
		}
		p.n -= k
		if k == len(es) {
			p.chunks[0] = nil
			p.chunks = p.chunks[1:]
			freeChunk(c)
			continue
		}
		if k > 0 {
			c.lo += int32(k)
			c.stale = true
			if cnt := c.count(); cnt <= len(c.es)/4 && len(c.es) > minCap {
				// Most of the array is settled: move the rest to a smaller one.
				n := minCap
				for n < 2*cnt {
					n *= 2
				}
				c.resize(min(n, len(c.es)))
			}
		}
		break
	}
	p.base = x
	if len(p.chunks) == 0 {
		p.chunks = nil
		p.sync()
	}
	// Otherwise the tail chunk, its last entry and the current value are unchanged.
	return rows
}

// truncateFrom removes and returns every entry with ts >= t, in order.
func (p *plist) truncateFrom(t int64, clamp bool) []entry {
	var out []entry
	n := len(p.chunks)
	ci := sort.Search(n, func(i int) bool { return p.chunks[i].lastTS() >= t })
	if ci == n {
		return nil
	}
	c := p.chunks[ci]
	j := c.lo + int32(sort.Search(c.count(), func(i int) bool { return c.es[c.lo+int32(i)].ts >= t }))
	out = append(out, c.es[j:c.n]...)
	for _, d := range p.chunks[ci+1:] {
		out = append(out, d.s()...)
		freeChunk(d)
	}
	clear(p.chunks[ci+1:])
	p.chunks = p.chunks[:ci+1]
	if j == c.lo {
		p.chunks[ci] = nil
		p.chunks = p.chunks[:ci]
		freeChunk(c)
	} else {
		c.n = j
		c.recompose(clamp)
	}
	p.n -= len(out)
	p.propagate(max(0, len(p.chunks)-1), clamp)
	p.sync()
	return out
}

// touch loads what an in-order append to p writes (the tail chunk's header and
// next slot) and returns something of it, for Apply's look-ahead pass.
func (p *plist) touch() int64 {
	c := p.last
	if c == nil {
		return 0
	}
	if n := c.n; int(n) < len(c.es) {
		return c.es[n].ts
	}
	return 0
}

// touchHead loads the first pending entry (and the chunk header before it), for
// Tick's look-ahead pass.
func (p *plist) touchHead() int64 {
	if len(p.chunks) == 0 {
		return 0
	}
	c := p.chunks[0]
	return c.es[c.lo].ts
}
