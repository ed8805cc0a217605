package occupancy

import (
	"sort"
	"sync"
)

// chunkPool recycles chunks: settling frees them as fast as ingest needs new ones.
var chunkPool = sync.Pool{New: func() any { return &chunk{es: make([]entry, 0, chunkSize)} }}

func newChunk() *chunk { return chunkPool.Get().(*chunk) }

func freeChunk(c *chunk) {
	clear(c.es[:cap(c.es)])
	c.es = c.es[:0]
	c.f, c.end = fn{}, 0
	chunkPool.Put(c)
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

const chunkSize = 128

// neg stands for -infinity in value functions; sums saturate at it.
const neg = int64(-1) << 61

// Entry classes: the order of entries of different kinds at the same millisecond.
// A correction sets the value at the horizon before anything else at that instant;
// events come next (by DPU id, then id/direction as in Event.Key), then topology
// moves, daily resets and manual resets (each by originating space id).
const (
	clsCorrection uint8 = iota
	clsEvent
	clsMove
	clsDaily
	clsManual
)

// entry is one pending timeline entry of one space (40 bytes).
type entry struct {
	ts  int64
	id  string // event id ("" when absent or not an event)
	ref int32  // event: interned DPU index; move/reset: originating global space index
	val int32  // event/move: delta; reset/correction: the value set
	cls uint8
	dir int8 // event direction (timeline order of id-less events)
}

func (en *entry) kind() EntryKind {
	switch en.cls {
	case clsCorrection:
		return KindCorrection
	case clsEvent:
		return KindEvent
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
	case clsEvent, clsMove:
		if clamp {
			return fn{a: 0, b: int64(en.val)}
		}
		return fn{a: neg, b: int64(en.val)}
	default:
		return fn{a: int64(en.val), b: neg}
	}
}

// step applies one entry to x and returns the new value and the crossings it counts.
func step(en *entry, x int64, clamp bool) (v int64, in, out int32) {
	v = entryFn(en, clamp).apply(x)
	if en.cls == clsEvent {
		switch {
		case en.val > 0 && v > x:
			in = 1
		case en.val < 0 && v < x:
			out = 1
		}
	}
	return v, in, out
}

type chunk struct {
	es  []entry
	f   fn
	end int64 // true value after the last entry of this chunk
}

func (c *chunk) recompose(clamp bool) {
	f := identity
	for i := range c.es {
		f = f.then(entryFn(&c.es[i], clamp))
	}
	c.f = f
}

// push appends en, which follows every entry of c, keeping f and end.
func (c *chunk) push(en entry, clamp bool) {
	c.es = append(c.es, en)
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
	base   int64 // value at the horizon, before the first pending entry
	chunks []*chunk
}

func (p *plist) current() int64 { return p.cur }

func (p *plist) setBase(v int64) {
	p.base = v
	p.propagate(0)
	p.sync()
}

// sync refreshes the cached tail fields after a structural change.
func (p *plist) sync() {
	if n := len(p.chunks); n > 0 {
		p.last = p.chunks[n-1]
		p.lastTS = p.last.es[len(p.last.es)-1].ts
		p.cur = p.last.end
		return
	}
	p.last, p.lastTS, p.cur = nil, 0, p.base
}

func (p *plist) len() int {
	n := 0
	for _, c := range p.chunks {
		n += len(c.es)
	}
	return n
}

// propagate re-derives end values from chunk i on.
func (p *plist) propagate(i int) {
	x := p.base
	if i > 0 {
		x = p.chunks[i-1].end
	}
	for ; i < len(p.chunks); i++ {
		c := p.chunks[i]
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
	if last := p.last; last != nil && en.ts > p.lastTS && len(last.es) < chunkSize {
		// Fast path: in order, room in the tail chunk.
		last.push(en, clamp)
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
		c := newChunk()
		c.es = append(c.es, en)
		c.f = entryFn(&en, clamp)
		p.chunks = append(p.chunks, c)
		p.propagate(0)
		return true
	}
	last := p.chunks[n-1]
	le := &last.es[len(last.es)-1]
	if en.ts > le.ts || (en.ts == le.ts && cmp(le, &en) < 0) {
		// Fast path: append at the end.
		if len(last.es) >= chunkSize {
			c := newChunk()
			c.es = append(c.es, en)
			c.f = entryFn(&en, clamp)
			c.end = c.f.apply(last.end)
			p.chunks = append(p.chunks, c)
			return true
		}
		last.push(en, clamp)
		return true
	}
	// First chunk whose last entry is >= en.
	ci := sort.Search(n, func(i int) bool {
		c := p.chunks[i]
		return cmp(&c.es[len(c.es)-1], &en) >= 0
	})
	c := p.chunks[ci]
	j := sort.Search(len(c.es), func(i int) bool { return cmp(&c.es[i], &en) >= 0 })
	if cmp(&c.es[j], &en) == 0 {
		if !replace || c.es[j] == en {
			return false
		}
		c.es[j] = en
		c.recompose(clamp)
		p.propagate(ci)
		return true
	}
	c.es = append(c.es, entry{})
	copy(c.es[j+1:], c.es[j:])
	c.es[j] = en
	if len(c.es) > chunkSize {
		half := len(c.es) / 2
		nc := newChunk()
		nc.es = append(nc.es, c.es[half:]...)
		if cap(c.es) > chunkSize {
			// append grew it past the chunk size: move the first half to a pooled chunk
			fc := newChunk()
			fc.es = append(fc.es, c.es[:half]...)
			p.chunks[ci] = fc
			c = fc
		} else {
			clear(c.es[half:])
			c.es = c.es[:half]
		}
		p.chunks = append(p.chunks, nil)
		copy(p.chunks[ci+2:], p.chunks[ci+1:])
		p.chunks[ci+1] = nc
		nc.recompose(clamp)
	}
	c.recompose(clamp)
	p.propagate(ci)
	return true
}

// valueAt returns the value after every pending entry with ts <= t.
func (p *plist) valueAt(t int64, clamp bool) int64 {
	n := len(p.chunks)
	if n == 0 {
		return p.base
	}
	// First chunk whose last entry is after t.
	ci := sort.Search(n, func(i int) bool {
		c := p.chunks[i]
		return c.es[len(c.es)-1].ts > t
	})
	if ci == n {
		return p.chunks[n-1].end
	}
	x := p.base
	if ci > 0 {
		x = p.chunks[ci-1].end
	}
	c := p.chunks[ci]
	for i := range c.es {
		if c.es[i].ts > t {
			break
		}
		x = entryFn(&c.es[i], clamp).apply(x)
	}
	return x
}

// each calls fn for every pending entry with from <= ts < to with the value after
// it and its crossings.
func (p *plist) each(from, to int64, clamp bool, fnc func(en *entry, v int64, in, out int32)) {
	n := len(p.chunks)
	ci := sort.Search(n, func(i int) bool {
		c := p.chunks[i]
		return c.es[len(c.es)-1].ts >= from
	})
	x := p.base
	if ci > 0 {
		x = p.chunks[ci-1].end
	}
	for ; ci < n; ci++ {
		c := p.chunks[ci]
		for i := range c.es {
			en := &c.es[i]
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

// settle removes every entry with ts < h, calling emit for each in order with the
// value after it and its crossings, and makes the value at h the new base.
func (p *plist) settle(h int64, clamp bool, emit func(en *entry, v int64, in, out int32)) {
	x := p.base
	for len(p.chunks) > 0 {
		c := p.chunks[0]
		k := 0
		for k < len(c.es) && c.es[k].ts < h {
			v, in, out := step(&c.es[k], x, clamp)
			emit(&c.es[k], v, in, out)
			x = v
			k++
		}
		if k == len(c.es) {
			p.chunks[0] = nil
			p.chunks = p.chunks[1:]
			freeChunk(c)
			continue
		}
		if k > 0 {
			n := copy(c.es, c.es[k:])
			clear(c.es[n:])
			c.es = c.es[:n]
			c.recompose(clamp)
		}
		break
	}
	p.base = x
	if len(p.chunks) == 0 {
		p.chunks = nil
		p.sync()
	}
	// Otherwise the tail chunk, its last entry and the current value are unchanged.
}

// truncateFrom removes and returns every entry with ts >= t, in order.
func (p *plist) truncateFrom(t int64, clamp bool) []entry {
	var out []entry
	n := len(p.chunks)
	ci := sort.Search(n, func(i int) bool {
		c := p.chunks[i]
		return c.es[len(c.es)-1].ts >= t
	})
	if ci == n {
		return nil
	}
	c := p.chunks[ci]
	j := sort.Search(len(c.es), func(i int) bool { return c.es[i].ts >= t })
	out = append(out, c.es[j:]...)
	for _, d := range p.chunks[ci+1:] {
		out = append(out, d.es...)
		freeChunk(d)
	}
	clear(p.chunks[ci+1:])
	p.chunks = p.chunks[:ci+1]
	if j == 0 {
		p.chunks[ci] = nil
		p.chunks = p.chunks[:ci]
		freeChunk(c)
	} else {
		clear(c.es[j:])
		c.es = c.es[:j]
		c.recompose(clamp)
	}
	p.propagate(max(0, len(p.chunks)-1))
	p.sync()
	return out
}
