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

const dpuInline = 24

// dpuKey is a DPU id stored inline when short (the common case) to spare the
// comparison a pointer chase.
type dpuKey struct {
	inl [dpuInline]byte
	n   uint8 // length when inline; 0xFF when long
	str string
}

func makeDPUKey(s string) dpuKey {
	var k dpuKey
	if len(s) <= dpuInline {
		k.n = uint8(len(s))
		copy(k.inl[:], s)
		return k
	}
	k.n, k.str = 0xFF, s
	return k
}

func (k *dpuKey) equal(s string) bool {
	if k.n == 0xFF {
		return k.str == s
	}
	return int(k.n) == len(s) && string(k.inl[:k.n]) == s
}

func (k *dpuKey) String() string {
	if k.n == 0xFF {
		return k.str
	}
	return string(k.inl[:k.n])
}

func (x *dpuIndex) hash(s string) uint64 { return maphash.String(x.seed, s) }

func (x *dpuIndex) get(s string, tab []dpuSlot) (int32, bool) {
	if x.n == 0 {
		return -1, false
	}
	h := x.hash(s)
	tag := h >> 32
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		v := x.slots[i]
		if v == 0 {
			return -1, false
		}
		if v>>32 == tag {
			idx := int32(uint32(v)) - 1
			if tab[idx].key.equal(s) {
				return idx, true
			}
		}
	}
}

// put adds s -> idx (s must not be present).
func (x *dpuIndex) put(s string, idx int32, tab []dpuSlot) {
	if (x.n+1)*2 > len(x.slots) {
		x.grow(tab)
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

func (x *dpuIndex) grow(tab []dpuSlot) {
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
			x.insert(x.hash(tab[idx].key.String()), idx)
		}
	}
}
