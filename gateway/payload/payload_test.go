package payload

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/occupancy")

const tFake = 1_795_000_000_000

func TestOccupancyJSONGolden(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 1, 0, time.UTC).UnixMilli()
	cases := []struct {
		name string
		o    occupancy.Occupancy
	}{
		{"design_example", occupancy.Occupancy{Space: "room-a", Name: "Room A", Occupancy: 7, Capacity: 12, Updated: ts, SettledUntil: ts - 300_000}},
		{"no_capacity", occupancy.Occupancy{Space: "lobby", Name: "Lobby", Occupancy: 3, Updated: ts + 123, SettledUntil: ts - 300_000}},
		{"empty_with_capacity", occupancy.Occupancy{Space: "hq", Name: "HQ", Occupancy: 0, Capacity: 300, Updated: ts, SettledUntil: ts}},
		{"rounding", occupancy.Occupancy{Space: "r", Name: "R", Occupancy: 2, Capacity: 3, Updated: ts, SettledUntil: ts}},
		{"over_capacity", occupancy.Occupancy{Space: "r", Name: "R \"quoted\" <&>", Occupancy: 15, Capacity: 12, Updated: ts, SettledUntil: ts}},
		{"never_updated", occupancy.Occupancy{Space: "new", Name: "New"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := OccupancyJSON(c.o)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "occupancy", c.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if string(got) != strings.TrimSuffix(string(want), "\n") {
				t.Errorf("OccupancyJSON:\n got %s\nwant %s", got, want)
			}
		})
	}
	t.Run("independent checks", func(t *testing.T) {
		// Independent of the golden files: field set and values from DESIGN 2.
		for _, c := range []struct {
			occ, capy int64
			util      any // nil = omitted
		}{{7, 12, 0.583}, {0, 300, 0.0}, {2, 3, 0.667}, {1, 3, 0.333}, {15, 12, 1.25}, {3, 0, nil}} {
			b, _ := OccupancyJSON(occupancy.Occupancy{Space: "s", Name: "S", Occupancy: c.occ, Capacity: c.capy, Updated: 1, SettledUntil: 2})
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if got := m["utilization"]; got != c.util {
				t.Errorf("%d/%d: utilization = %v, want %v", c.occ, c.capy, got, c.util)
			}
			_, hasCap := m["capacity"]
			if hasCap != (c.capy > 0) {
				t.Errorf("%d/%d: capacity present = %v", c.occ, c.capy, hasCap)
			}
			if m["updated"] != "1970-01-01T00:00:00.001Z" || m["settled_until"] != "1970-01-01T00:00:00.002Z" {
				t.Errorf("times = %v, %v", m["updated"], m["settled_until"])
			}
		}
	})
}

func BenchmarkOccupancyJSON(b *testing.B) {
	o := occupancy.Occupancy{Space: "room-a", Name: "Room A", Occupancy: 7, Capacity: 12, Updated: tFake, SettledUntil: tFake - 300_000}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := OccupancyJSON(o); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOccupancyJSONMatchesEncodingJSON checks the hand-written encoder against
// encoding/json over the documented struct, on random and hostile inputs.
func TestOccupancyJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"", "Room A", "Ünïcödé räum", "tab\there", "quote\"back\\slash", "<script>&amp;",
		"line\u2028sep", "bad utf8 \xff\xfe", "ctrl \x01\x1f", "emoji 🏢", strings.Repeat("x", 300)}
	for i := 0; i < 2000; i++ {
		o := occupancy.Occupancy{
			Space:        fmt.Sprintf("s-%d", rng.IntN(1000)),
			Name:         names[rng.IntN(len(names))],
			Occupancy:    rng.Int64N(1_000_000) - 10,
			Capacity:     []int64{0, 1, 3, 7, 12, 300, 1 << 40}[rng.IntN(7)],
			Updated:      rng.Int64N(4_000_000_000_000) - 1_000_000_000_000,
			SettledUntil: rng.Int64N(4_000_000_000_000),
		}
		got, err := OccupancyJSON(o)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(newOccupancyDoc(o))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("OccupancyJSON(%+v):\n got %s\nwant %s", o, got, want)
		}
	}
}
