package occupancy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProblemsError is returned by Compile for a topology that does not validate.
type ProblemsError struct{ Problems []Problem }

func (e *ProblemsError) Error() string {
	var b strings.Builder
	b.WriteString("invalid topology:")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Validate reports every problem of the topology with its key path relative to
// `topology`, in configuration order. Paths are formatted only for problems, and
// parent cycles are found in one pass over the parent links.
func (c TopologyConfig) Validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	at := func(list string, i int, field string) string {
		return list + "[" + strconv.Itoa(i) + "]" + field
	}
	// checkID records the first index of each valid id in seen.
	checkID := func(list string, i int, id string, seen map[string]int) {
		if !ValidID(id) {
			add(at(list, i, ".id"), "invalid id %q: want [A-Za-z0-9_-]{1,64}", id)
			return
		}
		if first, dup := seen[id]; dup {
			add(at(list, i, ".id"), "duplicate id %q (first at %s)", id, at(list, first, ""))
			return
		}
		seen[id] = i
	}
	spaceIdx := make(map[string]int, len(c.Spaces))
	for i, s := range c.Spaces {
		checkID("spaces", i, s.ID, spaceIdx)
	}
	for i, s := range c.Spaces {
		if s.Parent != "" {
			if _, ok := spaceIdx[s.Parent]; !ok {
				add(at("spaces", i, ".parent"), "unknown space %q", s.Parent)
			}
		}
		if s.Capacity < 0 {
			add(at("spaces", i, ".capacity"), "must be >= 0, got %d", s.Capacity)
		}
		if s.TimeZone != "" {
			if _, err := loadLocation(s.TimeZone); err != nil {
				add(at("spaces", i, ".time_zone"), "unknown time zone %q", s.TimeZone)
			}
		}
		if s.DailyReset != "" {
			if _, ok := parseHHMM(s.DailyReset); !ok {
				add(at("spaces", i, ".daily_reset"), "want \"HH:MM\", got %q", s.DailyReset)
			}
		}
	}
	// Parent cycles, each reported once, at its member listed first. The spaces
	// indexed by their id (first occurrences) with their parent links form a graph
	// of out-degree <= 1: one walk per unvisited space finds every cycle.
	parent := func(i int) int {
		j, ok := spaceIdx[c.Spaces[i].Parent]
		if c.Spaces[i].Parent == "" || !ok {
			return -1
		}
		return j
	}
	const (
		unvisited = iota
		walking
		done
	)
	state := make([]uint8, len(c.Spaces))
	onCycle := make([]bool, len(c.Spaces))
	var path []int
	for i := range c.Spaces {
		if spaceIdx[c.Spaces[i].ID] != i || !ValidID(c.Spaces[i].ID) || state[i] != unvisited {
			continue
		}
		path = path[:0]
		cur := i
		for cur >= 0 && state[cur] == unvisited {
			state[cur] = walking
			path = append(path, cur)
			cur = parent(cur)
		}
		if cur >= 0 && state[cur] == walking {
			// cur is on a cycle made of the path from cur on.
			for k := len(path) - 1; ; k-- {
				onCycle[path[k]] = true
				if path[k] == cur {
					break
				}
			}
		}
		for _, k := range path {
			state[k] = done
		}
	}
	for i := range c.Spaces {
		if !onCycle[i] {
			continue
		}
		// i is the cycle's first member in configuration order.
		quoted := []string{fmt.Sprintf("%q", c.Spaces[i].ID)}
		for cur := parent(i); ; cur = parent(cur) {
			quoted = append(quoted, fmt.Sprintf("%q", c.Spaces[cur].ID))
			if cur == i {
				break
			}
			onCycle[cur] = false
		}
		onCycle[i] = false
		add(at("spaces", i, ".parent"), "cycle through %s", strings.Join(quoted, " -> "))
	}
	doorways := map[string]int{}
	for i, d := range c.Doorways {
		checkID("doorways", i, d.ID, doorways)
	}
	dpus := make(map[string]int, len(c.DPUs))
	for i, d := range c.DPUs {
		checkID("dpus", i, d.ID, dpus)
		if d.Doorway != "" {
			if _, ok := doorways[d.Doorway]; !ok {
				add(at("dpus", i, ".doorway"), "unknown doorway %q", d.Doorway)
			}
		}
		if d.PlusSpace != "" {
			if _, ok := spaceIdx[d.PlusSpace]; !ok {
				add(at("dpus", i, ".plus_space"), "unknown space %q", d.PlusSpace)
			}
		}
		if d.MinusSpace != "" {
			if _, ok := spaceIdx[d.MinusSpace]; !ok {
				add(at("dpus", i, ".minus_space"), "unknown space %q", d.MinusSpace)
			}
		}
		switch {
		case d.PlusSpace == "" && d.MinusSpace == "":
			add(at("dpus", i, ""), "plus_space and minus_space are both empty")
		case d.PlusSpace == d.MinusSpace:
			add(at("dpus", i, ".minus_space"), "same as plus_space %q", d.PlusSpace)
		}
		if d.QuietAfter < 0 {
			add(at("dpus", i, ".quiet_after"), "must be > 0, got %s", time.Duration(d.QuietAfter))
		}
		for _, p := range d.kindProblems() {
			add(at("dpus", i, p.Path), "%s", p.Message)
		}
	}
	return ps
}

func parseHHMM(s string) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, false
	}
	return h*60 + m, true
}

var locCache sync.Map // string -> *time.Location

func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if l, ok := locCache.Load(name); ok {
		return l.(*time.Location), nil
	}
	if strings.EqualFold(name, "local") {
		return nil, fmt.Errorf("time zone %q is not an IANA name", name)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("load time zone: %w", err)
	}
	locCache.Store(name, l)
	return l, nil
}

// Topology is one compiled, validated topology version.
type Topology struct {
	cfg      TopologyConfig
	spaces   []compiledSpace
	spaceIdx map[string]int
	dpus     map[string]*compiledDPU
}

type compiledSpace struct {
	cfg      SpaceConfig
	parent   int   // -1 for a root
	chain    []int // the space itself, then its ancestors up to the root
	desc     []int // the space itself and every space nested in it
	loc      *time.Location
	resetMin int // minutes after local midnight; -1 for no daily reset
}

type compiledDPU struct {
	plus []effect // effect of direction +1 (minus_space -> plus_space); -1 negates
}

type effect struct {
	space int32 // index in Topology.spaces
	delta int8
}

// Compile validates c and precomputes, for every DPU, the spaces a crossing changes
// (the ancestor-chain rule of DESIGN section 1) so the hot path walks no tree.
func Compile(c TopologyConfig) (*Topology, error) {
	if ps := c.Validate(); len(ps) > 0 {
		return nil, &ProblemsError{Problems: ps}
	}
	t := &Topology{cfg: c, spaceIdx: make(map[string]int, len(c.Spaces)), dpus: make(map[string]*compiledDPU, len(c.DPUs))}
	t.spaces = make([]compiledSpace, len(c.Spaces))
	for i, s := range c.Spaces {
		t.spaceIdx[s.ID] = i
	}
	for i, s := range c.Spaces {
		cs := compiledSpace{cfg: s, parent: -1, resetMin: -1}
		if cs.cfg.Name == "" {
			cs.cfg.Name = s.ID
		}
		if s.Parent != "" {
			cs.parent = t.spaceIdx[s.Parent]
		}
		cs.loc = time.UTC // or inherited, below
		if s.DailyReset != "" {
			cs.resetMin, _ = parseHHMM(s.DailyReset)
		}
		t.spaces[i] = cs
	}
	for i := range t.spaces {
		for cur := i; cur >= 0; cur = t.spaces[cur].parent {
			t.spaces[i].chain = append(t.spaces[i].chain, cur)
			t.spaces[cur].desc = append(t.spaces[cur].desc, i)
		}
		// No time_zone: the nearest ancestor's, UTC at the top (DESIGN 1).
		for _, a := range t.spaces[i].chain {
			if tz := t.spaces[a].cfg.TimeZone; tz != "" {
				t.spaces[i].loc, _ = loadLocation(tz)
				break
			}
		}
	}
	for _, d := range c.DPUs {
		cd := &compiledDPU{}
		var to, from []int
		if d.PlusSpace != "" {
			to = t.spaces[t.spaceIdx[d.PlusSpace]].chain
		}
		if d.MinusSpace != "" {
			from = t.spaces[t.spaceIdx[d.MinusSpace]].chain
		}
		for _, s := range to {
			if !slices.Contains(from, s) {
				cd.plus = append(cd.plus, effect{space: int32(s), delta: 1})
			}
		}
		for _, s := range from {
			if !slices.Contains(to, s) {
				cd.plus = append(cd.plus, effect{space: int32(s), delta: -1})
			}
		}
		t.dpus[d.ID] = cd
	}
	return t, nil
}

// Config returns the topology as configured.
func (t *Topology) Config() TopologyConfig { return t.cfg }

// Equal reports whether two topologies are the same (nil and empty lists are equal):
// a configuration equal to the version in force is not a new version.
func (c TopologyConfig) Equal(o TopologyConfig) bool {
	return slices.Equal(c.Spaces, o.Spaces) && slices.Equal(c.Doorways, o.Doorways) &&
		slices.EqualFunc(c.DPUs, o.DPUs, DPUConfig.Equal)
}

// Spaces returns the spaces in configuration order (Name defaults to the id).
func (t *Topology) Spaces() []SpaceConfig {
	out := make([]SpaceConfig, len(t.spaces))
	for i, s := range t.spaces {
		out[i] = s.cfg
	}
	return out
}

// DPUs returns the DPUs in configuration order.
func (t *Topology) DPUs() []DPUConfig { return append([]DPUConfig(nil), t.cfg.DPUs...) }

// Space returns the space with id.
func (t *Topology) Space(id string) (SpaceConfig, bool) {
	i, ok := t.spaceIdx[id]
	if !ok {
		return SpaceConfig{}, false
	}
	return t.spaces[i].cfg, true
}

// HasDPU reports whether the topology maps dpu.
func (t *Topology) HasDPU(dpu string) bool { _, ok := t.dpus[dpu]; return ok }

// Effects returns the spaces a crossing of dpu in direction dir changes, with +1/-1
// each (ancestor-chain rule), or ok=false for an unknown DPU.
func (t *Topology) Effects(dpu string, dir int8) (map[string]int, bool) {
	d, ok := t.dpus[dpu]
	if !ok {
		return nil, false
	}
	out := make(map[string]int, len(d.plus))
	for _, ef := range d.plus {
		out[t.spaces[ef.space].cfg.ID] = int(ef.delta) * int(dir)
	}
	return out, true
}

// kindProblems are the problems of a DPU's kind and map, with paths relative to the
// DPU (".kind", ".map.ts_format").
func (d DPUConfig) kindProblems() []Problem {
	var ps []Problem
	k, err := ParseReportKind(d.Kind)
	if err != nil {
		ps = append(ps, Problem{Path: ".kind", Message: err.Error()})
	}
	if d.Map == nil {
		return ps
	}
	switch {
	case d.Kind == "":
		return append(ps, Problem{Path: ".map", Message: "a map is read in its DPU's kind: set kind (events, interval or cumulative) beside it"})
	case err != nil:
		return ps
	}
	if d.Map.DPU != "" {
		ps = append(ps, Problem{Path: ".map.dpu", Message: "a DPU's own map cannot take the DPU id from the payload (the topic or the HTTP route names the DPU); give the map with dpu to an mqtt.events_topic entry instead"})
	}
	for _, p := range d.Map.Validate(k) {
		path := ".map"
		if p.Path != "" {
			path += "." + p.Path
		}
		ps = append(ps, Problem{Path: path, Message: p.Message})
	}
	return ps
}
