package occupancy

import "hash/maphash"

// dpuIndex maps DPU ids to their index in Engine.dpuTab: an open-addressing table
// of 8-byte slots (hash tag | index+1) with the key compared in the dpuTab entry,
// so a lookup on the hot path touches one slot and the entry it needs anyway (a Go
// map of 100,000 string keys costs several more cache misses per lookup).
type dpuIndex struct {
	seed  maphash.Seed
	slots []uint64
	mask  uint64
	n     int
}

// dpuInline is the longest DPU id kept in its dpuSlot (longer ones are compared
// with Engine.dpuNames).
const dpuInline = 24

// keyIs reports whether the DPU of tab[idx] has id s.
func keyIs(tab []dpuSlot, names []string, idx int32, s string) bool {
	k := &tab[idx]
	if k.klen == dpuLongKey {
		return names[idx] == s
	}
	return int(k.klen) == len(s) && string(k.key[:k.klen]) == s
}

func (x *dpuIndex) hash(s string) uint64 { return maphash.String(x.seed, s) }

func (x *dpuIndex) get(s string, tab []dpuSlot, names []string) (int32, bool) {
	if x.n == 0 {
		return -1, false
	}
	return x.probe(s, x.hash(s), tab, names)
}

func (x *dpuIndex) probe(s string, h uint64, tab []dpuSlot, names []string) (int32, bool) {
	tag := h >> 32
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		v := x.slots[i]
		if v == 0 {
			return -1, false
		}
		if v>>32 == tag {
			idx := int32(uint32(v)) - 1
			if keyIs(tab, names, idx, s) {
				return idx, true
			}
		}
	}
}

// lookup sets out[i] to the index of evs[i].DPU (-1 when unknown) for up to
// applyBlock events, in passes whose loads are independent of each other: hashes,
// first probe slots, then the DPU slots (usually the only ones needed).
func (x *dpuIndex) lookup(evs []Event, out []int32, tab []dpuSlot, names []string) {
	if x.n == 0 {
		for i := range out {
			out[i] = -1
		}
		return
	}
	var hs, vs [applyBlock]uint64
	for i := range evs {
		hs[i] = x.hash(evs[i].DPU)
	}
	for i := range evs {
		vs[i] = x.slots[hs[i]&x.mask]
	}
	for i := range evs {
		h, v := hs[i], vs[i]
		if v>>32 == h>>32 && v != 0 {
			idx := int32(uint32(v)) - 1
			if keyIs(tab, names, idx, evs[i].DPU) {
				out[i] = idx
				continue
			}
		}
		idx, ok := x.probe(evs[i].DPU, h, tab, names)
		if !ok {
			idx = -1
		}
		out[i] = idx
	}
}

// put adds s -> idx (s must not be present).
func (x *dpuIndex) put(s string, idx int32, names []string) {
	if (x.n+1)*2 > len(x.slots) {
		x.grow(names)
	}
	x.insert(x.hash(s), idx)
	x.n++
}

func (x *dpuIndex) insert(h uint64, idx int32) {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		if x.slots[i] == 0 {
			x.slots[i] = (h>>32)<<32 | uint64(uint32(idx+1))
			return
		}
	}
}

func (x *dpuIndex) grow(names []string) {
	if x.slots == nil {
		x.seed = maphash.MakeSeed()
	}
	size := max(16, 2*len(x.slots))
	old := x.slots
	x.slots = make([]uint64, size)
	x.mask = uint64(size - 1)
	for _, v := range old {
		if v != 0 {
			idx := int32(uint32(v)) - 1
			x.insert(x.hash(names[idx]), idx)
		}
	}
}
