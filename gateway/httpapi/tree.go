package httpapi

import (
	"strings"

	"github.com/occupancyd/occupancyd/occupancy"
)

// spaceTree indexes one topology version for GET /v1/tree and /v1/dpus: every
// space's children in configuration order, its parent, lower-cased ids and names for
// search, and the DPUs and doorways by id. It is built once per topology version (68,000 spaces: ~75 ms of CPU here)
// and read without a lock; a search scans it (68,000 spaces: under 1 ms).
type spaceTree struct {
	topo     occupancy.TopologyConfig
	spaces   []occupancy.SpaceConfig // topo.Spaces
	dpus     map[string]occupancy.DPUConfig
	doorways map[string]string // doorway id -> name
	idx      map[string]int32
	parent   []int32 // -1 for a root
	children [][]int32
	roots    []int32
	lower    []string // lower-cased id and name, for search
}

func newSpaceTree(tc occupancy.TopologyConfig) *spaceTree {
	spaces := tc.Spaces
	t := &spaceTree{
		topo:     tc,
		spaces:   spaces,
		dpus:     make(map[string]occupancy.DPUConfig, len(tc.DPUs)),
		doorways: make(map[string]string, len(tc.Doorways)),
		idx:      make(map[string]int32, len(spaces)),
		parent:   make([]int32, len(spaces)),
		children: make([][]int32, len(spaces)),
		lower:    make([]string, len(spaces)),
	}
	for i, sp := range spaces {
		t.idx[sp.ID] = int32(i)
	}
	for _, d := range tc.DPUs {
		t.dpus[d.ID] = d
	}
	for _, d := range tc.Doorways {
		t.doorways[d.ID] = d.Name
	}
	for i, sp := range spaces {
		p, ok := t.idx[sp.Parent]
		if sp.Parent == "" || !ok {
			p = -1
			t.roots = append(t.roots, int32(i))
		} else {
			t.children[p] = append(t.children[p], int32(i))
		}
		t.parent[i] = p
		t.lower[i] = strings.ToLower(sp.ID + "\x00" + t.name(int32(i)))
	}
	return t
}

// sameTopology reports whether a and b hold the same slices (a topology version's
// lists are shared, not copied, by whoever hands them out): then the index stands.
func sameTopology(a, b occupancy.TopologyConfig) bool {
	return sameSlice(a.Spaces, b.Spaces) && sameSlice(a.DPUs, b.DPUs) && sameSlice(a.Doorways, b.Doorways)
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// subtree marks root and every space nested in it.
func (t *spaceTree) subtree(root int32) []bool {
	in := make([]bool, len(t.spaces))
	stack := []int32{root}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !in[i] {
			in[i] = true
			stack = append(stack, t.children[i]...)
		}
	}
	return in
}

// name is the space's name (its id when none is configured).
func (t *spaceTree) name(i int32) string {
	if n := t.spaces[i].Name; n != "" {
		return n
	}
	return t.spaces[i].ID
}

// level returns the top level (parent "") or the children of parent; ok is false for
// an unknown parent.
func (t *spaceTree) level(parent string) (_ []int32, ok bool) {
	if parent == "" {
		return t.roots, true
	}
	p, ok := t.idx[parent]
	if !ok {
		return nil, false
	}
	return t.children[p], true
}

// path returns the ancestors of i, the root first.
func (t *spaceTree) path(i int32) []int32 {
	var out []int32
	for p := t.parent[i]; p >= 0 && len(out) <= len(t.spaces); p = t.parent[p] {
		out = append(out, p)
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out
}

// search returns the spaces whose id or name contains q (case-insensitive): an exact
// id first, then ids and names that start with q, then the others, each group in
// configuration order; at most limit of them, and how many match in all.
func (t *spaceTree) search(q string, limit int) (hits []int32, total int) {
	q = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(q, "\x00", "")))
	if q == "" {
		return nil, 0
	}
	var exact, prefix, other []int32
	for i, s := range t.lower {
		at := strings.Index(s, q)
		if at < 0 {
			continue
		}
		total++
		id, name, _ := strings.Cut(s, "\x00")
		switch {
		case id == q:
			exact = append(exact, int32(i))
		case len(exact)+len(prefix) >= limit:
			// The first groups are full: only the count matters now.
		case strings.HasPrefix(id, q) || strings.HasPrefix(name, q):
			prefix = append(prefix, int32(i))
		case len(exact)+len(prefix)+len(other) < limit:
			other = append(other, int32(i))
		}
	}
	hits = append(append(exact, prefix...), other...)
	if len(hits) > limit {
		hits = hits[:limit]
	}
	return hits, total
}
