package main

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/gateway/mqtttopic"
	"github.com/occupancyd/occupancyd/occupancy"
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func genConfig(t testing.TB, o TopoOptions) (*simConfig, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteConfig(&buf, o); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	c, err := parseSimConfig(buf.Bytes(), "generated")
	if err != nil {
		t.Fatalf("parse generated config: %v\n%s", err, head(buf.String(), 40))
	}
	return c, buf.Bytes()
}

func head(s string, lines int) string {
	l := strings.SplitN(s, "\n", lines+1)
	if len(l) > lines {
		l = l[:lines]
	}
	return strings.Join(l, "\n")
}

// checkTopology is an independent validity check of a generated topology: ids,
// references, the site > floor > room tree, and that every room can be reached
// from the outside through doorways.
func checkTopology(t *testing.T, topo occupancy.TopologyConfig) {
	t.Helper()
	spaces := map[string]occupancy.SpaceConfig{}
	for i, s := range topo.Spaces {
		if !idRE.MatchString(s.ID) {
			t.Errorf("spaces[%d].id %q is not a valid id", i, s.ID)
		}
		if _, dup := spaces[s.ID]; dup {
			t.Errorf("spaces[%d]: duplicate id %q", i, s.ID)
		}
		if s.Name == "" {
			t.Errorf("spaces[%d]: empty name", i)
		}
		spaces[s.ID] = s
	}
	depth := func(id string) int {
		d := 0
		for s := spaces[id]; s.Parent != ""; s = spaces[s.Parent] {
			if _, ok := spaces[s.Parent]; !ok {
				t.Fatalf("space %q: unknown parent %q", s.ID, s.Parent)
			}
			d++
			if d > 10 {
				t.Fatalf("space %q: parent cycle", id)
			}
		}
		return d
	}
	for id := range spaces {
		if d := depth(id); d > 2 && !strings.HasPrefix(id, probeSite) {
			t.Errorf("space %q nested %d deep, want sites > floors > rooms", id, d)
		}
	}
	doors := map[string]bool{}
	for i, d := range topo.Doorways {
		if !idRE.MatchString(d.ID) || doors[d.ID] {
			t.Errorf("doorways[%d]: bad or duplicate id %q", i, d.ID)
		}
		doors[d.ID] = true
	}
	dpus := map[string]bool{}
	adj := map[string][]string{}
	for i, d := range topo.DPUs {
		if !idRE.MatchString(d.ID) || dpus[d.ID] {
			t.Errorf("dpus[%d]: bad or duplicate id %q", i, d.ID)
		}
		dpus[d.ID] = true
		if !doors[d.Doorway] {
			t.Errorf("dpus[%d].doorway: unknown doorway %q", i, d.Doorway)
		}
		for _, s := range []string{d.PlusSpace, d.MinusSpace} {
			if s == "" {
				continue
			}
			if _, ok := spaces[s]; !ok {
				t.Errorf("dpus[%d]: unknown space %q", i, s)
			}
			if depth(s) != 2 && !strings.HasPrefix(s, probeSite) {
				t.Errorf("dpus[%d]: %q is not a room", i, s)
			}
		}
		if d.PlusSpace == d.MinusSpace {
			t.Errorf("dpus[%d]: plus and minus are both %q", i, d.PlusSpace)
		}
		adj[d.PlusSpace] = append(adj[d.PlusSpace], d.MinusSpace)
		adj[d.MinusSpace] = append(adj[d.MinusSpace], d.PlusSpace)
	}
	seen := map[string]bool{"": true}
	queue := []string{""}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, n := range adj[s] {
			if !seen[n] {
				seen[n] = true
				queue = append(queue, n)
			}
		}
	}
	for id := range spaces {
		if depth(id) == 2 && !seen[id] {
			t.Errorf("room %q cannot be reached from the outside", id)
		}
	}
}

func TestTopology(t *testing.T) {
	for _, tc := range []struct{ sites, m int }{{1, 1}, {1, 2}, {3, 7}, {7, 50}, {2, 123}} {
		t.Run(fmt.Sprintf("%dx%d", tc.sites, tc.m), func(t *testing.T) {
			o := DefaultTopoOptions()
			o.Sites, o.DPUsPerSite, o.Seed = tc.sites, tc.m, 42
			c, _ := genConfig(t, o)
			if got, want := len(c.Topology.DPUs), tc.sites*tc.m; got != want {
				t.Errorf("DPUs: got %d, want %d", got, want)
			}
			if got, want := len(c.Topology.Doorways), tc.sites*tc.m; got != want {
				t.Errorf("doorways: got %d, want %d", got, want)
			}
			roots := 0
			for _, s := range c.Topology.Spaces {
				if s.Parent == "" {
					roots++
				}
			}
			if roots != tc.sites {
				t.Errorf("sites (root spaces): got %d, want %d", roots, tc.sites)
			}
			checkTopology(t, c.Topology)
			if got, want := c.filters, []string{"dpu/+/events", "dpu/+/interval", "dpu/+/cumulative"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("events_topic: got %v, want %v", got, want)
			}
		})
	}
}

func TestTopologyDeterministic(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.Seed = 5, 20, 7
	_, a := genConfig(t, o)
	_, b := genConfig(t, o)
	if !bytes.Equal(a, b) {
		t.Errorf("same seed gave different configs")
	}
	o.Seed = 8
	_, c := genConfig(t, o)
	if bytes.Equal(a, c) {
		t.Errorf("seeds 7 and 8 gave the same config")
	}
}

// The 100,000-DPU campus of BENCHMARKS.md. Under the race detector parsing 21 MB
// of YAML takes a minute: there the sites are checked as generated, not parsed.
func TestTopology100k(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite = 2000, 50
	var topo occupancy.TopologyConfig
	if raceEnabled || testing.Short() {
		for _, s := range o.SelectedSites() {
			topo.Spaces = append(topo.Spaces, s.Spaces...)
			topo.Doorways = append(topo.Doorways, s.Doorways...)
			topo.DPUs = append(topo.DPUs, s.DPUs...)
		}
	} else {
		c, _ := genConfig(t, o)
		topo = c.Topology
	}
	if got, want := len(topo.DPUs), 100000; got != want {
		t.Fatalf("DPUs: got %d, want %d", got, want)
	}
	checkTopology(t, topo)
}

func TestTopologyShards(t *testing.T) {
	full := DefaultTopoOptions()
	full.Sites, full.DPUsPerSite, full.SiteTopics = 9, 12, true
	fc, _ := genConfig(t, full)
	if got, want := fmt.Sprint(fc.filters), "[+/dpu/+/events +/dpu/+/interval +/dpu/+/cumulative]"; got != want {
		t.Errorf("site-topics events_topic: got %s, want %s", got, want)
	}
	var union occupancy.TopologyConfig
	var filters []string
	for k := 1; k <= 4; k++ {
		o := full
		o.Shard, o.Shards = k, 4
		c, _ := genConfig(t, o)
		checkTopology(t, c.Topology)
		union.Spaces = append(union.Spaces, c.Topology.Spaces...)
		union.Doorways = append(union.Doorways, c.Topology.Doorways...)
		union.DPUs = append(union.DPUs, c.Topology.DPUs...)
		var roots []string
		for _, s := range c.Topology.Spaces {
			if s.Parent == "" {
				roots = append(roots, s.ID+"/dpu/+/events")
			}
		}
		if fmt.Sprint(c.filters) != fmt.Sprint(roots) {
			t.Errorf("shard %d/4 events_topic: got %v, want one filter per owned site %v", k, c.filters, roots)
		}
		filters = append(filters, c.filters...)
	}
	// Disjoint shards whose union is the full campus, in the same order.
	if a, b := mustYAML(t, union), mustYAML(t, fc.Topology); a != b {
		t.Errorf("union of the shards differs from the full campus")
	}
	sort.Strings(filters)
	for i := 1; i < len(filters); i++ {
		if filters[i] == filters[i-1] {
			t.Errorf("site filter %q is in two shards", filters[i])
		}
	}
	// Every DPU's site topic is matched by exactly one shard's filters.
	sim, err := NewSim(fc.Topology, SimOptions{SiteTopics: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < sim.DPUCount(); i++ {
		n := 0
		for _, f := range filters {
			if _, ok := mqtttopic.Match(f, sim.Topic(i)); ok {
				n++
			}
		}
		if n != 1 {
			t.Errorf("topic %q matched by %d shard filters, want 1", sim.Topic(i), n)
		}
	}
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTopologyFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"topology", "--sites", "0"}, 2, "--sites must be at least 1"},
		{[]string{"topology", "--dpus-per-site", "-1"}, 2, "--dpus-per-site must be at least 1"},
		{[]string{"topology", "--shard", "3/2"}, 2, "--shard wants K/N"},
		{[]string{"topology", "--shard", "x"}, 2, "--shard wants K/N"},
		{[]string{"topology", "--sites", "2", "--shard", "1/3"}, 2, "more shards than sites"},
		{[]string{"topology", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"run"}, 2, "--config FILE is required"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(t.Context(), tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit: got %d, want %d", code, tc.code)
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr: got %q, want it to contain %q", errb.String(), tc.want)
			}
		})
	}
}

func TestYAMLStringRoundTrip(t *testing.T) {
	for _, s := range []string{"", "a", "s0001-f1-r01", "Site 1 room 1.01", "yes", "No", "null", "~", "1", "1e3",
		"0x1F", "a: b", "a #b", "trailing ", " leading", "x,y", "{x}", "[x]", "a\"b", "Ünïcode", "true", "Y", "-", "a-", "_x", ".5"} {
		t.Run(s, func(t *testing.T) {
			var got map[string]string
			doc := "{k: " + yamlString(s) + "}"
			if err := yaml.Unmarshal([]byte(doc), &got); err != nil {
				t.Fatalf("%s: %v", doc, err)
			}
			if got["k"] != s {
				t.Errorf("%s: got %q, want %q", doc, got["k"], s)
			}
		})
	}
}
