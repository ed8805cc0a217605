package httpapi

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

// randomTopology is a forest of n spaces with random nesting (a parent always comes
// before its children, as any order is allowed but this keeps it a forest) and
// names from a small vocabulary, so that searches hit many.
func randomTopology(r *rand.Rand, n int) []occupancy.SpaceConfig {
	words := []string{"Lobby", "Floor", "Room", "Cafe", "lab", "Annex", "ROOM", "hall"}
	out := make([]occupancy.SpaceConfig, n)
	for i := range out {
		sp := occupancy.SpaceConfig{ID: fmt.Sprintf("s%d-%s", i, strings.ToLower(words[r.IntN(len(words))]))}
		if r.IntN(3) > 0 {
			sp.Name = words[r.IntN(len(words))] + fmt.Sprintf(" %d", r.IntN(50))
		}
		if i > 0 && r.IntN(5) > 0 {
			sp.Parent = out[r.IntN(i)].ID
		}
		out[i] = sp
	}
	// Shuffled: children may come before their parents in a configuration.
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestSpaceTreeMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 30 {
		spaces := randomTopology(r, 1+r.IntN(300))
		tr := newSpaceTree(occupancy.TopologyConfig{Spaces: spaces})
		ids := func(is []int32) []string {
			out := make([]string, len(is))
			for k, i := range is {
				out[k] = spaces[i].ID
			}
			return out
		}
		// Levels: the model scans the configuration for each parent.
		parents := append([]string{""}, ids(tr.roots)...)
		for _, sp := range spaces {
			parents = append(parents, sp.ID)
		}
		for _, p := range parents {
			var want []string
			for _, sp := range spaces {
				if sp.Parent == p {
					want = append(want, sp.ID)
				}
			}
			got, ok := tr.level(p)
			if !ok || !slices.Equal(ids(got), want) {
				t.Fatalf("round %d: level(%q) = %v %v, want %v", round, p, ids(got), ok, want)
			}
		}
		if _, ok := tr.level("nope"); ok {
			t.Fatalf("level of an unknown space: ok")
		}
		// Paths: the model follows Parent by id.
		byID := map[string]occupancy.SpaceConfig{}
		for _, sp := range spaces {
			byID[sp.ID] = sp
		}
		for i, sp := range spaces {
			var want []string
			for p := sp.Parent; p != ""; p = byID[p].Parent {
				want = append([]string{p}, want...)
			}
			if got := ids(tr.path(int32(i))); !slices.Equal(got, want) {
				t.Fatalf("round %d: path(%s) = %v, want %v", round, sp.ID, got, want)
			}
		}
		// Search: the model sorts every match by group, then configuration order.
		for _, q := range []string{"room", "ROOM 1", "s1", spaces[0].ID, "lobby 4", "zzz", "  Lab ", "-"} {
			limit := 1 + r.IntN(40)
			type m struct{ group, i int }
			var all []m
			lq := strings.ToLower(strings.TrimSpace(q))
			for i, sp := range spaces {
				id, name := strings.ToLower(sp.ID), strings.ToLower(sp.Name)
				if name == "" {
					name = id
				}
				switch {
				case id == lq:
					all = append(all, m{0, i})
				case strings.HasPrefix(id, lq) || strings.HasPrefix(name, lq):
					all = append(all, m{1, i})
				case strings.Contains(id, lq) || strings.Contains(name, lq):
					all = append(all, m{2, i})
				}
			}
			slices.SortStableFunc(all, func(a, b m) int { return a.group - b.group })
			var want []string
			for _, x := range all[:min(limit, len(all))] {
				want = append(want, spaces[x.i].ID)
			}
			hits, total := tr.search(q, limit)
			if got := ids(hits); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) || total != len(all) {
				t.Fatalf("round %d: search(%q, %d) = %v (%d in all), want %v (%d)", round, q, limit, ids(hits), total, want, len(all))
			}
		}
	}
}

func BenchmarkSpaceTree68k(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	spaces := randomTopology(r, 68000)
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			newSpaceTree(occupancy.TopologyConfig{Spaces: spaces})
		}
	})
	tr := newSpaceTree(occupancy.TopologyConfig{Spaces: spaces})
	b.Run("search", func(b *testing.B) {
		for b.Loop() {
			tr.search("room 4", 50)
		}
	})
}
