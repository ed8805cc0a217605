package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/gateway/stream/streamtest"
)

// demoModel is an independent model of the demo building's counts: each space's
// ancestors from the YAML, and a crossing changes the spaces on the chain of its
// destination that are not on the chain of its origin by +1, and the reverse by -1
// (DESIGN 1).
type demoModel struct {
	parent map[string]string
	dpus   map[string][2]string // minus_space, plus_space
	order  []string             // spaces in configuration order
	count  map[string]int64
}

func newDemoModel(t *testing.T, configYAML string) *demoModel {
	t.Helper()
	var c struct {
		Topology struct {
			Spaces []struct{ ID, Parent string }
			DPUs   []struct {
				ID         string
				PlusSpace  string `yaml:"plus_space"`
				MinusSpace string `yaml:"minus_space"`
			}
		}
	}
	if err := yaml.Unmarshal([]byte(configYAML), &c); err != nil {
		t.Fatal(err)
	}
	m := &demoModel{parent: map[string]string{}, dpus: map[string][2]string{}, count: map[string]int64{}}
	for _, s := range c.Topology.Spaces {
		m.parent[s.ID] = s.Parent
		m.order = append(m.order, s.ID)
	}
	for _, d := range c.Topology.DPUs {
		m.dpus[d.ID] = [2]string{d.MinusSpace, d.PlusSpace}
	}
	return m
}

func (m *demoModel) chain(s string) []string {
	var out []string
	for ; s != ""; s = m.parent[s] {
		out = append(out, s)
	}
	return out
}

// cross applies a crossing and returns the spaces it changed with their new values.
func (m *demoModel) cross(dpu string, dir int) map[string]int64 {
	from, to := m.dpus[dpu][0], m.dpus[dpu][1]
	if dir < 0 {
		from, to = to, from
	}
	fc, tc := m.chain(from), m.chain(to)
	changed := map[string]int64{}
	for _, s := range tc {
		if !slices.Contains(fc, s) {
			m.count[s]++
			changed[s] = m.count[s]
		}
	}
	for _, s := range fc {
		if !slices.Contains(tc, s) {
			m.count[s]--
			changed[s] = m.count[s]
		}
	}
	return changed
}

// within reports whether space s is root or nested in it.
func (m *demoModel) within(s, root string) bool { return slices.Contains(m.chain(s), root) }

// TestE2EStream reads GET /v1/stream of the real daemon (Main with its embedded
// broker) with a plain HTTP client: three clients with different filters get a
// snapshot of their spaces first, in topology order, then, for every event of a
// scripted sequence published over MQTT, exactly the changes of their spaces with the
// model's values; then a fast random sequence ends with every client at the model's
// values, each having seen, per space, the values in the order they were taken. Past
// http.max_stream_clients the answer is 503.
func TestE2EStream(t *testing.T) {
	const maxClients = 4
	d := startDemo(t, false, func(y string) string {
		return strings.Replace(y, "  token: \"\"", fmt.Sprintf("  token: \"\"\n  max_stream_clients: %d", maxClients), 1)
	})
	waitReady(t, d.httpAddr, 10*time.Second)
	m := newDemoModel(t, d.config)
	url := "http://" + d.httpAddr + "/v1/stream"

	type client struct {
		query string
		wants func(space string) bool
		s     *streamtest.Stream
		seen  map[string][]int64
	}
	clients := []*client{
		{query: "", wants: func(string) bool { return true }},
		{query: "?under=floor-1", wants: func(s string) bool { return m.within(s, "floor-1") }},
		{query: "?space=lobby,meeting-a", wants: func(s string) bool { return s == "lobby" || s == "meeting-a" }},
	}
	for _, c := range clients {
		c.s = streamtest.Open(t, url+c.query)
		c.seen = map[string][]int64{}
	}

	t.Run("snapshot", func(t *testing.T) {
		for _, c := range clients {
			var want, got []string
			for _, s := range m.order {
				if c.wants(s) {
					want = append(want, s)
				}
			}
			for range want {
				o := c.s.Next(t, 5*time.Second)
				got = append(got, o.Space)
				if o.Occupancy != 0 {
					t.Errorf("client %q: snapshot %s = %d, want 0 (a new store)", c.query, o.Space, o.Occupancy)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("client %q: snapshot %v, want %v (topology order)", c.query, got, want)
			}
		}
	})

	pub := mqttClient(t, d.brokerURL, "stream-test")
	// Every crossing a millisecond after the one before at least: the engine orders
	// crossings of one instant by DPU and id, the model by sending, and with a space at
	// 0 (clamping) the order matters.
	seq, last := 0, int64(0)
	send := func(dpu string, dir int) map[string]int64 {
		seq++
		last = max(time.Now().UnixMilli(), last+1)
		publishAll(t, pub, []e2eMessage{{topic: "dpu/" + dpu + "/events",
			payload: fmt.Appendf(nil, `{"id": %d, "ts": %d, "direction": %d}`, seq, last, dir)}})
		return m.cross(dpu, dir)
	}

	t.Run("scripted", func(t *testing.T) {
		script := []struct {
			dpu string
			dir int
		}{
			{"dpu-main", 1}, {"dpu-main", 1}, {"dpu-cafe", 1}, {"dpu-stairs", 1}, {"dpu-meeting-a", 1},
			{"dpu-garden", 1}, {"dpu-meeting-a", -1}, {"dpu-office", 1}, {"dpu-cafe", -1}, {"dpu-main", -1},
			{"dpu-garden", -1}, {"dpu-garden", 1}, {"dpu-stairs", -1},
		}
		for i, step := range script {
			changed := send(step.dpu, step.dir)
			for s, v := range changed {
				if v < 0 {
					t.Fatalf("step %d walks out of an empty %s: the script is wrong", i, s)
				}
			}
			for _, c := range clients {
				want := map[string]int64{}
				for s, v := range changed {
					if c.wants(s) {
						want[s] = v
					}
				}
				got := map[string]int64{}
				for len(got) < len(want) {
					o := c.s.Next(t, 5*time.Second)
					if _, dup := got[o.Space]; dup || !c.wants(o.Space) {
						t.Fatalf("step %d (%s %+d), client %q: unexpected event %s=%d (want %v)", i, step.dpu, step.dir, c.query, o.Space, o.Occupancy, want)
					}
					got[o.Space] = o.Occupancy
				}
				if !maps.Equal(got, want) {
					t.Fatalf("step %d (%s %+d), client %q: got %v, want %v", i, step.dpu, step.dir, c.query, got, want)
				}
			}
		}
		for _, c := range clients {
			c.s.Quiet(t, 400*time.Millisecond) // nothing more than the changes
		}
	})

	t.Run("random", func(t *testing.T) {
		// People walk around fast: each client ends at the model's values, and what it
		// saw of a space is the space's values in order, some skipped (coalesced).
		// Every space's history starts with the value the client holds now (the
		// count only has the spaces the scripted part touched; the others are 0).
		history := map[string][]int64{}
		for _, s := range m.order {
			history[s] = []int64{m.count[s]}
		}
		r := rand.New(rand.NewPCG(5, 6))
		doors := slices.Sorted(maps.Keys(m.dpus))
		for range 300 {
			dpu := doors[r.IntN(len(doors))]
			dir := 1
			from := m.dpus[dpu][0]
			if r.IntN(2) == 0 {
				dir, from = -1, m.dpus[dpu][1]
			}
			if from != "" && m.count[from] <= 0 { // nobody there to walk out: never below 0

				continue
			}
			for s, v := range send(dpu, dir) {
				history[s] = append(history[s], v)
			}
		}
		for _, c := range clients {
			deadline := time.Now().Add(15 * time.Second)
			for {
				var missing []string
				for _, s := range m.order {
					if !c.wants(s) {
						continue
					}
					// What the client holds: the last value it saw, else the one it
					// held before (a space back at that value within one coalescing
					// interval is, rightly, not sent again).
					h := history[s]
					holds := h[0]
					if seen := c.seen[s]; len(seen) > 0 {
						holds = seen[len(seen)-1]
					}
					if holds != h[len(h)-1] {
						missing = append(missing, s)
					}
				}
				if len(missing) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("client %q: no final value for %v", c.query, missing)
				}
				o := c.s.Next(t, 15*time.Second)
				if !c.wants(o.Space) {
					t.Fatalf("client %q: event of %s, which it did not ask for", c.query, o.Space)
				}
				c.seen[o.Space] = append(c.seen[o.Space], o.Occupancy)
			}
			for s, got := range c.seen {
				if !streamtest.InOrder(got, history[s][1:]) {
					t.Errorf("client %q, space %s: saw %v, not in the order of %v", c.query, s, got, history[s])
				}
			}
		}
		got := httpSpaces(t, d.httpAddr)
		if diff := diffCounts(got, m.count); diff != "" {
			t.Errorf("GET /v1/spaces against the model: %s", diff)
		}
	})

	t.Run("client limit", func(t *testing.T) {
		extra := streamtest.Open(t, url+"?space=hq") // the fourth
		extra.Next(t, 5*time.Second)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error string }
		if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "at most 4") {
			t.Errorf("a fifth client: %d %s, want 503 with a JSON error naming the limit of %d", resp.StatusCode, body, maxClients)
		}
		extra.Close()
	})
}
