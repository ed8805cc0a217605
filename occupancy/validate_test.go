package occupancy

import (
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// TestValidateEqualsOld: Validate reports exactly what the earlier implementation
// (validateOld, kept verbatim below as the model) reports, in the same order, on
// random topologies full of duplicates, invalid ids, unknown references and parent
// cycles.
func TestValidateEqualsOld(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "bad id", "", "h"}
	pick := func() string { return ids[rng.Intn(len(ids))] }
	cycles := 0
	for run := 0; run < 3000; run++ {
		var c TopologyConfig
		for i := rng.Intn(9); i >= 0; i-- {
			s := SpaceConfig{ID: pick()}
			if rng.Intn(4) != 0 {
				s.Parent = pick()
			}
			if rng.Intn(10) == 0 {
				s.Capacity = -1
			}
			c.Spaces = append(c.Spaces, s)
		}
		for i := rng.Intn(3); i > 0; i-- {
			c.Doorways = append(c.Doorways, DoorwayConfig{ID: pick()})
		}
		for i := rng.Intn(4); i > 0; i-- {
			c.DPUs = append(c.DPUs, DPUConfig{ID: pick(), Doorway: pick(), PlusSpace: pick(), MinusSpace: pick()})
		}
		got, want := c.Validate(), validateOld(c)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d: %+v\ngot  %v\nwant %v", run, c, got, want)
		}
		for _, p := range want {
			if strings.Contains(p.Message, "cycle through") {
				cycles++
			}
		}
	}
	if cycles < 300 {
		t.Fatalf("only %d cycles generated", cycles)
	}
}

// BenchmarkValidate100k: Validate of the 100,000-DPU benchmark topology, and the
// earlier implementation beside it.
func BenchmarkValidate100k(b *testing.B) {
	c := benchTopology()
	for _, v := range []struct {
		name string
		fn   func(TopologyConfig) []Problem
	}{{"new", TopologyConfig.Validate}, {"old", validateOld}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if ps := v.fn(c); len(ps) != 0 {
					b.Fatal(ps)
				}
			}
		})
	}
}

func validateOld(c TopologyConfig) []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	checkID := func(path, id string, seen map[string]string) {
		if !ValidID(id) {
			add(path, "invalid id %q: want [A-Za-z0-9_-]{1,64}", id)
			return
		}
		if first, dup := seen[id]; dup {
			add(path, "duplicate id %q (first at %s)", id, first)
			return
		}
		seen[id] = strings.TrimSuffix(path, ".id")
	}
	spaces := map[string]string{}
	spaceIdx := map[string]int{}
	for i, s := range c.Spaces {
		p := fmt.Sprintf("spaces[%d]", i)
		checkID(p+".id", s.ID, spaces)
		if _, ok := spaceIdx[s.ID]; !ok && ValidID(s.ID) {
			spaceIdx[s.ID] = i
		}
	}
	for i, s := range c.Spaces {
		p := fmt.Sprintf("spaces[%d]", i)
		if s.Parent != "" {
			if _, ok := spaceIdx[s.Parent]; !ok {
				add(p+".parent", "unknown space %q", s.Parent)
			}
		}
		if s.Capacity < 0 {
			add(p+".capacity", "must be >= 0, got %d", s.Capacity)
		}
		if s.TimeZone != "" {
			if _, err := loadLocation(s.TimeZone); err != nil {
				add(p+".time_zone", "unknown time zone %q", s.TimeZone)
			}
		}
		if s.DailyReset != "" {
			if _, ok := parseHHMM(s.DailyReset); !ok {
				add(p+".daily_reset", "want \"HH:MM\", got %q", s.DailyReset)
			}
		}
	}
	// Parent cycles: each cycle reported once, at its member listed first.
	reported := map[int]bool{}
	for i := range c.Spaces {
		if _, ok := spaceIdx[c.Spaces[i].ID]; !ok || spaceIdx[c.Spaces[i].ID] != i {
			continue
		}
		// Walk up from i; if we come back to i, i is on a cycle.
		var chain []string
		cur := i
		seen := map[int]bool{}
		onCycle := false
		for {
			if seen[cur] {
				onCycle = cur == i
				break
			}
			seen[cur] = true
			chain = append(chain, c.Spaces[cur].ID)
			par := c.Spaces[cur].Parent
			j, ok := spaceIdx[par]
			if par == "" || !ok {
				break
			}
			cur = j
		}
		if !onCycle || reported[i] {
			continue
		}
		// Mark every member so the cycle is reported once, at the first member.
		members := []int{i}
		for cur = spaceIdx[c.Spaces[i].Parent]; cur != i; cur = spaceIdx[c.Spaces[cur].Parent] {
			members = append(members, cur)
		}
		for _, m := range members {
			reported[m] = true
		}
		chain = append(chain, c.Spaces[i].ID)
		quoted := make([]string, len(chain))
		for k, id := range chain {
			quoted[k] = fmt.Sprintf("%q", id)
		}
		add(fmt.Sprintf("spaces[%d].parent", i), "cycle through %s", strings.Join(quoted, " -> "))
	}
	doorways := map[string]string{}
	for i, d := range c.Doorways {
		checkID(fmt.Sprintf("doorways[%d].id", i), d.ID, doorways)
	}
	dpus := map[string]string{}
	for i, d := range c.DPUs {
		p := fmt.Sprintf("dpus[%d]", i)
		checkID(p+".id", d.ID, dpus)
		if d.Doorway != "" {
			if _, ok := doorways[d.Doorway]; !ok {
				add(p+".doorway", "unknown doorway %q", d.Doorway)
			}
		}
		if d.PlusSpace != "" {
			if _, ok := spaceIdx[d.PlusSpace]; !ok {
				add(p+".plus_space", "unknown space %q", d.PlusSpace)
			}
		}
		if d.MinusSpace != "" {
			if _, ok := spaceIdx[d.MinusSpace]; !ok {
				add(p+".minus_space", "unknown space %q", d.MinusSpace)
			}
		}
		switch {
		case d.PlusSpace == "" && d.MinusSpace == "":
			add(p, "plus_space and minus_space are both empty")
		case d.PlusSpace == d.MinusSpace:
			add(p+".minus_space", "same as plus_space %q", d.PlusSpace)
		}
	}
	return ps
}
