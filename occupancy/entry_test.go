package occupancy

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"unsafe"
)

// TestLayout pins the sizes the hot path's cache-line budget assumes.
func TestLayout(t *testing.T) {
	if s := unsafe.Sizeof(entry{}); s != 24 {
		t.Errorf("entry: %d bytes, want 24", s)
	}
	if s := unsafe.Sizeof([chunkSize]entry{}); s > 3072 {
		t.Errorf("chunk array: %d bytes, over the 3072-byte size class", s)
	}
	if s := unsafe.Sizeof(chunk{}); s > 64 {
		t.Errorf("chunk header: %d bytes, want one cache line", s)
	}
	if s := unsafe.Sizeof(dpuSlot{}); s != 64 {
		t.Errorf("dpuSlot: %d bytes, want one cache line", s)
	}
	if s, o := unsafe.Sizeof(gspace{}), unsafe.Offsetof(gspace{}.pl)+unsafe.Offsetof(plist{}.n); s != 128 || o >= 56 {
		t.Errorf("gspace: %d bytes, plist tail fields end at %d: want 128, within the first line", s, o+8)
	}
}

// randID returns a random string of 0..max bytes over an alphabet that stresses
// padding (0x00), the top byte value and shared prefixes.
func randID(rng *rand.Rand, max int) string {
	const alpha = "\x00\x01az09-_\xfe\xff"
	b := make([]byte, rng.Intn(max+1))
	for i := range b {
		b[i] = alpha[rng.Intn(len(alpha))]
	}
	return string(b)
}

func checkPacked(t *testing.T, a, b string) {
	t.Helper()
	pa, pb := packID(a), packID(b)
	if got, want := cmpPacked(pa, uint8(len(a)), pb, uint8(len(b))), strings.Compare(a, b); got != want {
		t.Fatalf("cmpPacked(%q, %q) = %d, strings.Compare = %d", a, b, got, want)
	}
	if u := unpackID(pa, uint8(len(a))); u != a {
		t.Fatalf("unpackID(packID(%q)) = %q", a, u)
	}
}

// TestPackedIDOrder: comparing packed ids of up to 8 bytes (padded word, length) is
// string comparison, and unpacking restores the id.
func TestPackedIDOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200_000; i++ {
		a := randID(rng, 8)
		b := randID(rng, 8)
		if rng.Intn(4) == 0 && len(a) > 0 { // a prefix of b or b of a
			b = a[:rng.Intn(len(a)+1)] + b[:min(len(b), 8-len(a[:0]))]
			b = b[:min(len(b), 8)]
		}
		checkPacked(t, a, b)
	}
	for _, p := range [][2]string{{"", "\x00"}, {"a", "a\x00"}, {"a\x00", "a\x00\x00"}, {"12345678", "12345679"}, {"9", "10"}, {"\xff", "\xff\xff\xff\xff\xff\xff\xff\xff"}} {
		checkPacked(t, p[0], p[1])
		checkPacked(t, p[1], p[0])
	}
}

func FuzzPackedIDOrder(f *testing.F) {
	f.Add("a", "a\x00")
	f.Add("123", "1234")
	f.Add("", "z")
	f.Fuzz(func(t *testing.T, a, b string) {
		if len(a) > 8 || len(b) > 8 {
			t.Skip()
		}
		checkPacked(t, a, b)
	})
}

// longify rewrites the event ids of a scenario into ids of every length class:
// none, packed (<= 8 bytes) and side-table (> 8 bytes), with shared prefixes across
// the classes. The mapping is injective (prefixes have no digits, ids are digits).
func longify(sc *scenario) {
	// DPU ids too: some longer than a dpuSlot holds inline.
	dpu := func(id string) string {
		if id[len(id)-1]%2 == 0 {
			return "a-dpu-id-longer-than-the-inline-key-" + id
		}
		return id
	}
	for i := range sc.topo.DPUs {
		sc.topo.DPUs[i].ID = dpu(sc.topo.DPUs[i].ID)
	}
	for _, v := range sc.versions {
		for i := range v.Topology.DPUs {
			v.Topology.DPUs[i].ID = dpu(v.Topology.DPUs[i].ID)
		}
	}
	for i := range sc.stream {
		sc.stream[i].ev.DPU = dpu(sc.stream[i].ev.DPU)
	}
	prefixes := []string{"", "x", "longprefix", "longprefi", "\x00", "zzzzzzzz", "a\x00\x00", "evt-0000-0000-"}
	for i := range sc.stream {
		ev := &sc.stream[i].ev
		if ev.ID == "" {
			continue
		}
		h := 0
		for _, c := range ev.DPU + ev.ID {
			h = h*31 + int(c)
		}
		ev.ID = prefixes[(h&0x7fffffff)%len(prefixes)] + ev.ID
	}
}

// TestEngineLongIDs: the reference and rebuild properties with event ids of every
// length (packed and side-table ids, ordered against each other), late events,
// moves and reopens included.
func TestEngineLongIDs(t *testing.T) {
	for run := 0; run < testRuns()/2; run++ {
		seed := int64(12000 + run)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genScenario(rng, false)
			longify(&sc)
			runReference(t, rng, sc)
		})
		t.Run(fmt.Sprintf("rebuild%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			sc := genScenarioMoves(rng, run%2 == 0, run%3 != 0)
			longify(&sc)
			a, b, _ := runRebuild(t, rng, sc)
			// Every side-table slot in use belongs to a pending entry.
			for _, d := range []*driver{a, b} {
				inUse := len(d.eng.long.ids) - len(d.eng.long.free)
				n := 0
				for g := range d.eng.gs {
					for _, c := range d.eng.gs[g].pl.chunks {
						for _, en := range c.s() {
							if en.idn == idLong {
								n++
							}
						}
					}
				}
				if inUse != n {
					t.Fatalf("side table: %d slots in use, %d long-id entries pending", inUse, n)
				}
			}
		})
	}
}

// TestPlistModel: random in-order, out-of-order and duplicate insertions (splits,
// repacks), settles and truncations of one plist against a sorted slice: order,
// values at every instant, settled values and crossings, and every chunk's cached
// function, end value and count.
func TestPlistModel(t *testing.T) {
	for seed := int64(0); seed < 40; seed++ {
		rng := rand.New(rand.NewSource(seed))
		clamp := seed%2 == 0
		cmp := func(a, b *entry) int {
			switch {
			case a.ts != b.ts:
				return cmpInt(int(a.ts), int(b.ts))
			case a.cls != b.cls:
				return cmpInt(int(a.cls), int(b.cls))
			case a.cls != clsEvent:
				return cmpInt(int(a.ref), int(b.ref)) // a reset replaces one of the same origin
			}
			return cmpPacked(a.aux, a.idn, b.aux, b.idn)
		}
		var p plist
		var model []entry
		var base int64
		ts, h := int64(1000), int64(0)
		// Some seeds mostly insert far back and rarely settle: long lists, many
		// splits and repacks.
		back, insertP, settleP := 3, 85, 97
		if seed%4 >= 2 {
			back, insertP, settleP = 1, 97, 98
		}
		nextID := uint64(0)
		for op := 0; op < 6000; op++ {
			switch r := rng.Intn(100); {
			case r < insertP: // insert: mostly near the end, some far back, some duplicates
				var en entry
				if r < 3 && len(model) > 0 {
					en = model[rng.Intn(len(model))]
					if en.cls != clsEvent && rng.Intn(2) == 0 {
						en.aux = uint64(rng.Intn(10)) // replaces the reset's value
					}
				} else {
					t0 := ts
					if rng.Intn(back) == 0 {
						t0 = max(h, ts-rng.Int63n(2000))
					}
					ts += rng.Int63n(3)
					nextID++
					en = entry{ts: t0, aux: nextID, idn: 8, cls: clsEvent, d: int8(rng.Intn(2)*2 - 1)}
					en.dir = en.d
					if rng.Intn(40) == 0 {
						en = valEntry(t0, int32(rng.Intn(3)), int32(rng.Intn(10)), clsManual)
					}
				}
				k := sort.Search(len(model), func(i int) bool { return cmp(&model[i], &en) >= 0 })
				dup := k < len(model) && cmp(&model[k], &en) == 0
				changed, _ := p.upsert(en, cmp, clamp, en.cls != clsEvent)
				if dup {
					if en.cls == clsEvent && changed {
						t.Fatalf("seed %d: duplicate inserted", seed)
					}
					model[k] = en
				} else {
					model = append(model, entry{})
					copy(model[k+1:], model[k:])
					model[k] = en
				}
			case r < settleP: // settle
				h = max(h, ts-rng.Int63n(3000))
				k := sort.Search(len(model), func(i int) bool { return model[i].ts >= h })
				var rows []Row
				rows = p.settle(h, clamp, "s", rows, func(*entry) {})
				if len(rows) != k {
					t.Fatalf("seed %d: settled %d rows, want %d", seed, len(rows), k)
				}
				x := base
				for i := 0; i < k; i++ {
					v, in, out := step(&model[i], x, clamp)
					if rw := rows[i]; rw.TS != model[i].ts || rw.Occupancy != v || rw.Entrances != in || rw.Exits != out {
						t.Fatalf("seed %d: row %d: got %+v, want ts %d v %d in %d out %d", seed, i, rw, model[i].ts, v, in, out)
					}
					x = v
				}
				base = x
				model = append(model[:0:0], model[k:]...)
			case r < settleP+1: // a new base equal to the old: recomposes a stale first chunk
				p.setBase(p.base, clamp)
			default: // truncate
				t0 := max(h, ts-rng.Int63n(100))
				k := sort.Search(len(model), func(i int) bool { return model[i].ts >= t0 })
				out := p.truncateFrom(t0, clamp)
				if len(out) != len(model)-k {
					t.Fatalf("seed %d: truncated %d, want %d", seed, len(out), len(model)-k)
				}
				for i := range out {
					if out[i] != model[k+i] {
						t.Fatalf("seed %d: truncated entry %d differs", seed, i)
					}
				}
				model = model[:k]
			}
			// Invariants.
			if p.len() != len(model) || p.base != base {
				t.Fatalf("seed %d op %d: len %d base %d, want %d %d", seed, op, p.len(), p.base, len(model), base)
			}
			i, x := 0, base
			for ci, c := range p.chunks {
				if c.count() <= 0 || int(c.n) > len(c.es) || len(c.es) > chunkSize || (ci > 0 && (c.lo != 0 || c.stale)) {
					t.Fatalf("seed %d op %d: chunk %d holds es[%d:%d] (stale %v)", seed, op, ci, c.lo, c.n, c.stale)
				}
				f := identity
				for _, en := range c.s() {
					if en != model[i] {
						t.Fatalf("seed %d op %d: entry %d: got %+v, want %+v", seed, op, i, en, model[i])
					}
					f = f.then(entryFn(&en, clamp))
					x, _, _ = step(&en, x, clamp)
					i++
				}
				if (!c.stale && f != c.f) || c.end != x {
					t.Fatalf("seed %d op %d: chunk %d: f %v end %d, want %v %d", seed, op, ci, c.f, c.end, f, x)
				}
			}
			if p.current() != x {
				t.Fatalf("seed %d op %d: current %d, want %d", seed, op, p.current(), x)
			}
			if n := len(p.chunks); n > 0 && (p.last != p.chunks[n-1] || p.lastTS != model[len(model)-1].ts) {
				t.Fatalf("seed %d op %d: tail cache stale", seed, op)
			}
			if len(model) > 0 {
				q := model[rng.Intn(len(model))].ts + int64(rng.Intn(3)) - 1
				x := base
				for i := range model {
					if model[i].ts > q {
						break
					}
					x, _, _ = step(&model[i], x, clamp)
				}
				if v := p.valueAt(q, clamp); v != x {
					t.Fatalf("seed %d op %d: valueAt(%d) = %d, want %d", seed, op, q, v, x)
				}
			}
		}
	}
}

// TestVersionRemapsPending: a version whose instant is inside the pending window
// maps the pending events at or after it again (here more than a chunk of them, in
// both the tail chunk and earlier ones).
func TestVersionRemapsPending(t *testing.T) {
	t0 := testNow
	d := newDriver(t, Options{SettleAfter: 5 * minute, ClampNegative: true}, smallTopo(), t0)
	c := newChecker(t, d.eng, true)
	var evs []Event
	for i := 0; i < 300; i++ {
		evs = append(evs, Event{DPU: "door", ID: fmt.Sprint(i), TS: t0 + 1000 + int64(i)*100, Direction: 1})
	}
	now := t0 + 40_000
	d.apply(evs, now)
	v2 := smallTopo()
	v2.DPUs[0].PlusSpace = "f2"
	d.addVersion(Version{At: t0 + 16_000, Topology: v2}, now)
	wantOcc(t, d.eng, map[string]int64{"bldg": 300, "f1": 150, "room": 150, "f2": 150})
	c.check(d, rand.New(rand.NewSource(1)), now, t0)
}
