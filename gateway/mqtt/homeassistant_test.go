package mqtt

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/homeassistant")

// validEntityID is Home Assistant's VALID_ENTITY_ID (homeassistant/core.py) without
// the lookarounds Go lacks: a domain and an object id of [0-9a-z_], neither
// starting nor ending with `_`, and no `__` anywhere.
var validEntityID = regexp.MustCompile(`^[0-9a-z](?:[0-9a-z_]*[0-9a-z])?\.[0-9a-z](?:[0-9a-z_]*[0-9a-z])?$`)

func isValidEntityID(s string) bool {
	return validEntityID.MatchString(s) && !bytes.Contains([]byte(s), []byte("__"))
}

func testDiscovery(configURL string) *Discovery {
	return &Discovery{Prefix: "homeassistant", GatewayID: "North-GW", OutputPrefix: "occupancy",
		StatusTopic: "occupancyd/North-GW/status", DPUsTopic: "occupancyd/North-GW/dpus",
		Version: "1.4.0", ConfigurationURL: configURL}
}

// golden compares a message with testdata/homeassistant/<name>: its topic, then
// its payload indented (go test -update rewrites the files; review them against
// Home Assistant's MQTT discovery documentation).
func golden(t *testing.T, name string, m Message) {
	t.Helper()
	var ind bytes.Buffer
	if len(m.Payload) > 0 {
		if err := json.Indent(&ind, m.Payload, "", "  "); err != nil {
			t.Fatalf("%s: payload is not JSON: %v: %s", name, err, m.Payload)
		}
	}
	got := []byte(m.Topic + "\n" + ind.String() + "\n")
	path := filepath.Join("testdata", "homeassistant", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run go test -update and review it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", name, got, want)
	}
}

// TestDiscoveryGolden: one golden file per entity kind.
func TestDiscoveryGolden(t *testing.T) {
	d := testDiscovery("http://gw-north.example:8080/")
	room := occupancy.Occupancy{Space: "Room_A-1", Name: "Room A 1", Occupancy: 3, Capacity: 12}
	for _, c := range []struct {
		name string
		msg  Message
	}{
		{"occupancy.golden", d.Occupancy(room)},
		{"utilization.golden", d.Utilization(room)},
		{"connectivity.golden", d.Connectivity()},
		{"quiet_dpus.golden", d.QuietDPUs()},
		{"occupancy_no_http.golden", testDiscovery("").Occupancy(occupancy.Occupancy{Space: "lobby"})},
	} {
		t.Run(c.name, func(t *testing.T) {
			golden(t, c.name, c.msg)
			var cfg map[string]any
			if err := json.Unmarshal(c.msg.Payload, &cfg); err != nil {
				t.Fatal(err)
			}
			if _, ok := cfg["object_id"]; ok {
				t.Error("object_id is deprecated (Home Assistant 2025.10) and ignored from 2026.4")
			}
			if id, _ := cfg["default_entity_id"].(string); !isValidEntityID(id) {
				t.Errorf("default_entity_id %q is not a valid Home Assistant entity id", id)
			}
			for _, k := range []string{"name", "unique_id", "state_topic", "device", "origin"} {
				if _, ok := cfg[k]; !ok {
					t.Errorf("no %s", k)
				}
			}
		})
	}
}

func TestEntityID(t *testing.T) {
	for _, c := range []struct{ domain, object, want string }{
		{"sensor", "demo_lobby", "sensor.demo_lobby"},
		{"sensor", "North-GW_Room_A-1", "sensor.north_gw_room_a_1"},
		{"sensor", "gw_-weird--id_", "sensor.gw_weird_id"},
		{"sensor", "_x", "sensor.x"},
		{"binary_sensor", "GW9_connectivity", "binary_sensor.gw9_connectivity"},
		{"sensor", "---", "sensor.occupancyd"},
		{"sensor", "ÄÖ-1", "sensor.1"},
	} {
		got := EntityID(c.domain, c.object)
		if got != c.want {
			t.Errorf("EntityID(%q, %q) = %q, want %q", c.domain, c.object, got, c.want)
		}
		if !isValidEntityID(got) {
			t.Errorf("EntityID(%q, %q) = %q is not a valid entity id", c.domain, c.object, got)
		}
	}
}

// TestDiscoverySpaces: a space's discovery sends its utilization sensor with a
// capacity, clears it once when there is none (and again after it had one), and a
// removed space clears both configs.
func TestDiscoverySpaces(t *testing.T) {
	d := testDiscovery("")
	topics := func(ms []Message) []string {
		var out []string
		for _, m := range ms {
			s := m.Topic
			if len(m.Payload) == 0 {
				s += " (empty)"
			}
			out = append(out, s)
		}
		return out
	}
	occTopic := "homeassistant/sensor/North-GW_r1/occupancy/config"
	utilTopic := "homeassistant/sensor/North-GW_r1/utilization/config"
	steps := []struct {
		what string
		cap  int64
		want []string
	}{
		{"no capacity at first: clear any old utilization config", 0, []string{occTopic, utilTopic + " (empty)"}},
		{"no capacity again: nothing more to clear", 0, []string{occTopic}},
		{"a capacity: utilization", 10, []string{occTopic, utilTopic}},
		{"still a capacity", 20, []string{occTopic, utilTopic}},
		{"capacity removed: cleared", 0, []string{occTopic, utilTopic + " (empty)"}},
		{"and not again", 0, []string{occTopic}},
	}
	for _, st := range steps {
		got := topics(d.Space(occupancy.Occupancy{Space: "r1", Name: "R1", Capacity: st.cap}))
		if len(got) != len(st.want) || (len(got) > 0 && got[0] != st.want[0]) || len(got) == 2 && got[1] != st.want[1] {
			t.Errorf("%s: got %v, want %v", st.what, got, st.want)
		}
	}
	if got := d.Cleared("r1"); len(got) != 2 || got[0] != occTopic || got[1] != utilTopic {
		t.Errorf("Cleared: got %v, want both configs", got)
	}
	// A space added back after its removal starts afresh.
	if got := topics(d.Space(occupancy.Occupancy{Space: "r1"})); len(got) != 2 {
		t.Errorf("a space added back: got %v, want its utilization config cleared once", got)
	}
}
