package occupancy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func loadTopology(t testing.TB, path string) TopologyConfig {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c TopologyConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return c
}

// TestValidateGolden checks every problem message of the topologies under
// testdata/topology against its .want file (go test -update rewrites them).
func TestValidateGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/topology/*.yaml")
	if len(files) < 5 {
		t.Fatalf("want the topology testdata, found %v", files)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			c := loadTopology(t, f)
			var lines []string
			for _, p := range c.Validate() {
				lines = append(lines, p.String())
			}
			got := strings.Join(lines, "\n")
			if got != "" {
				got += "\n"
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden: %v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("problems:\ngot:\n%s\nwant:\n%s", got, want)
			}
			_, err = Compile(c)
			var pe *ProblemsError
			if (got == "") != (err == nil) || (err != nil && !errors.As(err, &pe)) {
				t.Errorf("Compile: got error %v, want one exactly when there are problems", err)
			}
		})
	}
}

// TestValidateMessages pins the exact messages of the contract (DESIGN, lead notes).
func TestValidateMessages(t *testing.T) {
	c := TopologyConfig{
		Spaces: []SpaceConfig{
			{ID: "x"}, {ID: "lobby"}, {ID: "a", Parent: "b"}, {ID: "b", Parent: "a"}, {ID: "lobby"},
			{ID: "m", TimeZone: "Mars/Base"}, {ID: "r", DailyReset: "25:00"},
		},
		DPUs: []DPUConfig{{ID: "a b", PlusSpace: "x"}, {ID: "1", PlusSpace: "x"}, {ID: "2", PlusSpace: "x"}, {ID: "3", PlusSpace: "nope"}},
	}
	want := []string{
		`spaces[4].id: duplicate id "lobby" (first at spaces[1])`,
		`spaces[5].time_zone: unknown time zone "Mars/Base"`,
		`spaces[6].daily_reset: want "HH:MM", got "25:00"`,
		`spaces[2].parent: cycle through "a" -> "b" -> "a"`,
		`dpus[0].id: invalid id "a b": want [A-Za-z0-9_-]{1,64}`,
		`dpus[3].plus_space: unknown space "nope"`,
	}
	var got []string
	for _, p := range c.Validate() {
		got = append(got, p.String())
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestEffects checks the ancestor-chain rule against a naive walk.
func TestEffects(t *testing.T) {
	c := TopologyConfig{
		Spaces: []SpaceConfig{{ID: "bldg"}, {ID: "f1", Parent: "bldg"}, {ID: "f2", Parent: "bldg"},
			{ID: "lobby", Parent: "f1"}, {ID: "r1", Parent: "f1"}, {ID: "r2", Parent: "f2"}},
		DPUs: []DPUConfig{
			{ID: "street", PlusSpace: "lobby"},
			{ID: "r1lobby", PlusSpace: "r1", MinusSpace: "lobby"},
			{ID: "stairs", PlusSpace: "r2", MinusSpace: "lobby"},
			{ID: "exit", MinusSpace: "bldg"},
		},
	}
	topo, err := Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dpu  string
		dir  int8
		want map[string]int
	}{
		{"street", 1, map[string]int{"lobby": 1, "f1": 1, "bldg": 1}},
		{"street", -1, map[string]int{"lobby": -1, "f1": -1, "bldg": -1}},
		{"r1lobby", 1, map[string]int{"r1": 1, "lobby": -1}},
		{"stairs", 1, map[string]int{"r2": 1, "f2": 1, "lobby": -1, "f1": -1}},
		{"exit", 1, map[string]int{"bldg": -1}},
	}
	for _, tc := range tests {
		got, ok := topo.Effects(tc.dpu, tc.dir)
		if !ok || len(got) != len(tc.want) {
			t.Errorf("%s %d: got %v, want %v", tc.dpu, tc.dir, got, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%s %d: got %v, want %v", tc.dpu, tc.dir, got, tc.want)
			}
		}
	}
}

func TestTopologyEqual(t *testing.T) {
	a := TopologyConfig{Spaces: []SpaceConfig{{ID: "a", Name: "A"}}}
	b := TopologyConfig{Spaces: []SpaceConfig{{ID: "a", Name: "A"}}, Doorways: []DoorwayConfig{}}
	if !a.Equal(b) {
		t.Error("nil and empty doorways should be equal")
	}
	b.Spaces[0].Capacity = 4
	if a.Equal(b) {
		t.Error("a capacity change should differ")
	}
	// DPU maps are compared by value, not by pointer.
	d := func(m *Mapping) TopologyConfig {
		return TopologyConfig{DPUs: []DPUConfig{{ID: "d", PlusSpace: "a", Kind: "interval", Map: m}}}
	}
	for _, c := range []struct {
		x, y *Mapping
		want bool
	}{
		{nil, nil, true},
		{&Mapping{In: "fw"}, &Mapping{In: "fw"}, true},
		{&Mapping{In: "fw"}, &Mapping{In: "bw"}, false},
		{&Mapping{}, nil, false},
		{nil, &Mapping{In: "fw"}, false},
	} {
		if got := d(c.x).Equal(d(c.y)); got != c.want {
			t.Errorf("maps %+v and %+v: got Equal %v, want %v", c.x, c.y, got, c.want)
		}
	}
	k := d(nil)
	k.DPUs[0].Kind = "cumulative"
	if k.Equal(d(nil)) {
		t.Error("a kind change should differ")
	}
}
