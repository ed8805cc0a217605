package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

// config is the topology as occupancyd's configuration holds it.
func (tp e2eTopo) config() occupancy.TopologyConfig {
	var tc occupancy.TopologyConfig
	for _, s := range tp.spaces {
		sc := occupancy.SpaceConfig{ID: s.id, Name: s.name, Parent: s.parent}
		if s.id == "hq" && s.name == "HQ" {
			sc.Capacity = 500 // as yaml writes it
		}
		tc.Spaces = append(tc.Spaces, sc)
	}
	for _, d := range tp.dpus {
		tc.Doorways = append(tc.Doorways, occupancy.DoorwayConfig{ID: "door-" + d.id, Name: "Door " + d.id})
		tc.DPUs = append(tc.DPUs, occupancy.DPUConfig{ID: d.id, Doorway: "door-" + d.id, PlusSpace: d.plus, MinusSpace: d.minus})
	}
	return tc
}

func writeTopologyFile(t testing.TB, path string, tc occupancy.TopologyConfig) {
	t.Helper()
	b, err := json.MarshalIndent(tc, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadTopologyFile: with the topology in its own file (topology.file, relative
// to the config's directory), a reload (SIGHUP: Main.Reload) reads the topology file
// again though the config file is unchanged; a bad topology file is refused, named
// with the problem's JSON path, and the running topology stays.
func TestReloadTopologyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	campus := filepath.Join(dir, "campus.json")
	writeTopologyFile(t, campus, e2eTopology().config())
	writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "data"), topology: "topology: {file: campus.json}\n"})
	d := startMain(t, path)
	spaces := func() []string {
		var ids []string
		for id := range httpSpaces(t, d.httpAddr) {
			ids = append(ids, id)
		}
		return ids
	}
	if got := len(spaces()); got != len(e2eTopology().spaces) {
		t.Fatalf("spaces at start: got %d (%v), want %d", got, spaces(), len(e2eTopology().spaces))
	}

	grown := e2eTopology()
	grown.spaces = append(grown.spaces, e2eSpace{"r2b", "Room 2B", "f2"})
	grown.dpus = append(grown.dpus, e2eDPU{"d7", "r2b", "f2"})
	writeTopologyFile(t, campus, grown.config())
	if err := d.main.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, ok := httpSpaces(t, d.httpAddr)["r2b"]; !ok {
		t.Fatalf("after the reload: spaces %v, want r2b added from the topology file", spaces())
	}

	bad := grown.config()
	bad.DPUs[6].PlusSpace = "lobby"
	writeTopologyFile(t, campus, bad)
	err := d.main.Reload()
	want := `topology.file campus.json: dpus[6].plus_space: unknown space "lobby"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reload of a bad topology file: got %v, want an error containing %q", err, want)
	}
	if got := len(spaces()); got != len(grown.spaces) {
		t.Errorf("after the refused reload: %d spaces (%v), want the running %d", got, spaces(), len(grown.spaces))
	}
}
