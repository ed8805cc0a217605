package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// demoTopology is a hand-written building unlike the generator's: deep nesting, a
// DPU between a floor and a room, a DPU into the building (not a room), DPUs facing
// both ways, and a DPU with no space at all.
func demoTopology() occupancy.TopologyConfig {
	return occupancy.TopologyConfig{
		Spaces: []occupancy.SpaceConfig{
			{ID: "hq", Name: "HQ"}, {ID: "lobby", Name: "Lobby", Parent: "hq"},
			{ID: "f1", Name: "F1", Parent: "hq"}, {ID: "a", Name: "A", Parent: "f1"},
			{ID: "b", Name: "B", Parent: "f1"}, {ID: "b2", Name: "B2", Parent: "b"},
			{ID: "annex", Name: "Annex"},
		},
		Doorways: []occupancy.DoorwayConfig{{ID: "w", Name: "W"}},
		DPUs: []occupancy.DPUConfig{
			{ID: "283", Doorway: "w", PlusSpace: "lobby"},
			{ID: "d2", Doorway: "w", PlusSpace: "f1", MinusSpace: "lobby"},
			{ID: "d3", Doorway: "w", PlusSpace: "f1", MinusSpace: "a"},
			{ID: "d4", Doorway: "w", PlusSpace: "b2", MinusSpace: "a"},
			{ID: "d5", Doorway: "w", PlusSpace: "annex", MinusSpace: "b"},
			{ID: "d6", Doorway: "w", MinusSpace: "hq"},
			{ID: "d7", Doorway: "w"},
		},
	}
}

type sentEvent struct {
	dpu string
	id  string
	ts  int64
	dir int
}

// model is an independent implementation of DESIGN 1 and 3: decode what was
// published as a gateway would, count each (DPU, id, ts) once, sort by (ts, DPU,
// id), and apply each crossing to every space on the ancestor chain of its
// destination not on its origin's chain (+1) and the reverse (-1), clamping at 0.
type model struct {
	parent map[string]string
	dpu    map[string]occupancy.DPUConfig
	occ    map[string]int64
	clamps int
}

func newModel(topo occupancy.TopologyConfig) *model {
	m := &model{parent: map[string]string{}, dpu: map[string]occupancy.DPUConfig{}, occ: map[string]int64{}}
	for _, s := range topo.Spaces {
		m.parent[s.ID] = s.Parent
		m.occ[s.ID] = 0
	}
	for _, d := range topo.DPUs {
		m.dpu[d.ID] = d
	}
	return m
}

func (m *model) chain(s string) map[string]bool {
	c := map[string]bool{}
	for ; s != ""; s = m.parent[s] {
		c[s] = true
	}
	return c
}

func (m *model) apply(e sentEvent) {
	d := m.dpu[e.dpu]
	from, to := d.MinusSpace, d.PlusSpace
	if e.dir < 0 {
		from, to = to, from
	}
	fc, tc := m.chain(from), m.chain(to)
	for s := range tc {
		if !fc[s] {
			m.occ[s]++
		}
	}
	for s := range fc {
		if !tc[s] {
			if m.occ[s] == 0 {
				m.clamps++
				continue
			}
			m.occ[s]--
		}
	}
}

// replay applies distinct events in the gateway's timeline order: (ts, DPU, id).
func (m *model) replay(evs []sentEvent) {
	sort.SliceStable(evs, func(i, j int) bool {
		a, b := evs[i], evs[j]
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		if a.dpu != b.dpu {
			return a.dpu < b.dpu
		}
		return a.id < b.id
	})
	for _, e := range evs {
		m.apply(e)
	}
}

// decode parses a published message the way DESIGN 2 describes; ok=false for a
// message a gateway must reject.
func decode(topic string, payload []byte) (sentEvent, bool) {
	parts := strings.Split(topic, "/")
	if len(parts) < 3 || parts[len(parts)-1] != "events" {
		return sentEvent{}, false
	}
	var raw struct {
		ID        json.Number `json:"id"`
		TS        string      `json:"ts"`
		Direction json.Number `json:"direction"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return sentEvent{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, raw.TS)
	if err != nil {
		return sentEvent{}, false
	}
	dir, err := strconv.Atoi(raw.Direction.String())
	if err != nil || (dir != 1 && dir != -1) {
		return sentEvent{}, false
	}
	return sentEvent{dpu: parts[len(parts)-2], id: raw.ID.String(), ts: ts.UnixMilli(), dir: dir}, true
}

type simRun struct {
	msgs  []Msg
	truth []SpaceCount
	stats SimStats
}

// runSim drives a simulator through n slots at a given rate of event time.
func runSim(t testing.TB, topo occupancy.TopologyConfig, opt SimOptions, n int, rate float64) simRun {
	t.Helper()
	s, err := NewSim(topo, opt)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixMilli()
	var r simRun
	var last int64
	for i := 0; i < n; i++ {
		last = start + int64(float64(i)*1000/rate)
		r.msgs = append(r.msgs, s.Next(last)...)
	}
	r.msgs = append(r.msgs, s.Finish(last)...)
	r.truth = s.Truth()
	r.stats = s.Stats
	return r
}

func TestSimTruthMatchesIndependentModel(t *testing.T) {
	gen := DefaultTopoOptions()
	gen.Sites, gen.DPUsPerSite, gen.Seed = 6, 17, 3
	genCfg, _ := genConfig(t, gen)
	siteGen := gen
	siteGen.SiteTopics = true
	siteCfg, _ := genConfig(t, siteGen)
	n := 60000
	if testing.Short() || raceEnabled {
		n = 20000
	}
	for _, tc := range []struct {
		name string
		topo occupancy.TopologyConfig
		opt  SimOptions
		rate float64
	}{
		{"demo clean", demoTopology(), SimOptions{Seed: 1}, 500},
		{"demo everything", demoTopology(), SimOptions{Seed: 2, Reorder: 0.3, MaxDelay: 3 * time.Second, Duplicates: 0.1, Late: 0.05, Bad: 0.05, SettleAfter: 10 * time.Second}, 20000},
		{"campus fast", genCfg.Topology, SimOptions{Seed: 3, Reorder: 0.05, MaxDelay: 2 * time.Second, Duplicates: 0.01, Late: 0.01, Bad: 0.001, SettleAfter: 5 * time.Minute}, 50000},
		{"campus site topics", siteCfg.Topology, SimOptions{Seed: 4, Reorder: 0.5, MaxDelay: 500 * time.Millisecond, Duplicates: 0.2, Bad: 0.1, SiteTopics: true}, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSim(t, tc.topo, tc.opt, n, tc.rate)
			seen := map[[3]string]bool{}
			var evs []sentEvent
			bad := 0
			for _, m := range r.msgs {
				e, ok := decode(m.Topic, m.Payload)
				if !ok {
					bad++
					if m.Kind != KindBad {
						t.Fatalf("message %q of kind %d does not decode", m.Payload, m.Kind)
					}
					continue
				}
				if m.Kind == KindBad {
					t.Fatalf("bad message %q decodes", m.Payload)
				}
				if tc.opt.SiteTopics {
					if !strings.HasPrefix(m.Topic, strings.SplitN(e.dpu, "-", 2)[0]+"/dpu/") {
						t.Fatalf("site topic %q for DPU %s", m.Topic, e.dpu)
					}
				} else if m.Topic != "dpu/"+e.dpu+"/events" {
					t.Fatalf("topic %q for DPU %s", m.Topic, e.dpu)
				}
				if m.PublishAt < e.ts {
					t.Fatalf("message published at %d before its ts %d", m.PublishAt, e.ts)
				}
				key := [3]string{e.dpu, e.id, strconv.FormatInt(e.ts, 10)}
				if seen[key] {
					if m.Kind != KindDuplicate {
						t.Fatalf("event %v sent twice but not marked duplicate", key)
					}
					continue
				}
				seen[key] = true
				evs = append(evs, e)
			}
			m := newModel(tc.topo)
			m.replay(evs)
			if m.clamps != 0 {
				t.Errorf("the true timeline clamped %d times: the simulation let someone leave an empty space", m.clamps)
			}
			if got, want := int64(len(evs)), r.stats.Normal+r.stats.Late; got != want {
				t.Errorf("distinct events: got %d, want %d", got, want)
			}
			if got, want := int64(bad), r.stats.Bad; got != want {
				t.Errorf("bad messages: got %d, want %d", got, want)
			}
			nonzero := 0
			for _, sc := range r.truth {
				if got, want := sc.Occupancy, m.occ[sc.Space]; got != want {
					t.Errorf("space %s: simulator truth %d, model %d", sc.Space, got, want)
				}
				if sc.Occupancy > 0 {
					nonzero++
				}
			}
			if nonzero == 0 {
				t.Errorf("nobody is inside at the end: the test proves nothing")
			}
			if len(r.truth) != len(tc.topo.Spaces) {
				t.Errorf("truth has %d spaces, want %d", len(r.truth), len(tc.topo.Spaces))
			}
			// The fractions are what was asked for (binomial, 5 sigma).
			for _, f := range []struct {
				name string
				got  int64
				p    float64
				of   int64
			}{
				{"bad", r.stats.Bad, tc.opt.Bad, int64(n)},
				{"late", r.stats.Late, tc.opt.Late, int64(n) - r.stats.Bad},
				{"reordered", r.stats.Reordered, tc.opt.Reorder, r.stats.Normal},
				{"duplicates", r.stats.Duplicates, tc.opt.Duplicates, r.stats.Normal + r.stats.Late},
			} {
				mean := f.p * float64(f.of)
				sd := 5*sqrt(mean*(1-f.p)) + 1
				if d := float64(f.got) - mean; d > sd || d < -sd {
					t.Errorf("%s: got %d of %d, want about %.0f", f.name, f.got, f.of, mean)
				}
			}
		})
	}
}

func sqrt(x float64) float64 {
	z := x/2 + 1
	for i := 0; i < 50; i++ {
		z = (z + x/z) / 2
	}
	return z
}

func TestSimLateAndReorderTimes(t *testing.T) {
	opt := SimOptions{Seed: 9, Reorder: 0.5, MaxDelay: 1500 * time.Millisecond, Late: 0.2, Duplicates: 0.3, SettleAfter: time.Minute}
	r := runSim(t, demoTopology(), opt, 5000, 100)
	var reordered bool
	for _, m := range r.msgs {
		switch m.Kind {
		case KindLate:
			if age := m.PublishAt - m.Ev.TS; age <= opt.SettleAfter.Milliseconds() || age > opt.SettleAfter.Milliseconds()+31000 {
				t.Fatalf("late event published %dms after its ts, want just over the %s settle window", age, opt.SettleAfter)
			}
		case KindNormal:
			d := m.PublishAt - m.Ev.TS
			if d < 0 || d > opt.MaxDelay.Milliseconds() {
				t.Fatalf("event held back %dms, want 0..%d", d, opt.MaxDelay.Milliseconds())
			}
			reordered = reordered || d > 0
		}
	}
	if !reordered {
		t.Errorf("no event was held back")
	}
}

func TestSimDeterministic(t *testing.T) {
	opt := SimOptions{Seed: 5, Reorder: 0.1, MaxDelay: time.Second, Duplicates: 0.1, Late: 0.01, Bad: 0.05, SettleAfter: time.Minute}
	a := runSim(t, demoTopology(), opt, 3000, 1000)
	b := runSim(t, demoTopology(), opt, 3000, 1000)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different traffic")
	}
	opt.Seed = 6
	c := runSim(t, demoTopology(), opt, 3000, 1000)
	if reflect.DeepEqual(a.msgs, c.msgs) {
		t.Errorf("seeds 5 and 6 gave the same traffic")
	}
}

func TestSimSequenceIDs(t *testing.T) {
	r := runSim(t, demoTopology(), SimOptions{Seed: 1, Duplicates: 0.2, Reorder: 0.2, MaxDelay: time.Second}, 5000, 1000)
	next := map[string]uint64{}
	for _, m := range r.msgs {
		if m.Kind == KindBad || m.Kind == KindDuplicate {
			continue
		}
		if got, want := m.Ev.Seq, next[m.Ev.DPU]+1; got != want {
			t.Fatalf("DPU %s: sequence id %d, want %d", m.Ev.DPU, got, want)
		}
		next[m.Ev.DPU] = m.Ev.Seq
		if want := fmt.Sprintf(`{"id":%d,`, m.Ev.Seq); !strings.HasPrefix(string(m.Payload), want) {
			t.Fatalf("payload %s: want an integer id %d", m.Payload, m.Ev.Seq)
		}
	}
}

func TestSimRefusesBadTopology(t *testing.T) {
	for _, tc := range []struct {
		name string
		topo occupancy.TopologyConfig
		want string
	}{
		{"no entrance", occupancy.TopologyConfig{
			Spaces: []occupancy.SpaceConfig{{ID: "a"}, {ID: "b"}},
			DPUs:   []occupancy.DPUConfig{{ID: "d", PlusSpace: "a", MinusSpace: "b"}}}, "no DPU between a space and the outside"},
		{"unknown space", occupancy.TopologyConfig{
			Spaces: []occupancy.SpaceConfig{{ID: "a"}},
			DPUs:   []occupancy.DPUConfig{{ID: "d", PlusSpace: "x"}}}, `topology.dpus[0].plus_space: unknown space "x"`},
		{"cycle", occupancy.TopologyConfig{
			Spaces: []occupancy.SpaceConfig{{ID: "a", Parent: "b"}, {ID: "b", Parent: "a"}},
			DPUs:   []occupancy.DPUConfig{{ID: "d", PlusSpace: "a"}}}, "cycle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSim(tc.topo, SimOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestExcludedDPUsStayQuiet(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.Probe = 2, 5, true
	c, _ := genConfig(t, o)
	r := runSim(t, c.Topology, SimOptions{Seed: 1, Exclude: map[string]bool{probeDPU: true}, Bad: 0.1, Late: 0.1, SettleAfter: time.Minute}, 5000, 1000)
	for _, m := range r.msgs {
		if strings.Contains(m.Topic, probeDPU) {
			t.Fatalf("excluded DPU published %s", m.Payload)
		}
	}

}

func TestLatencyStats(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var hundred []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		hundred = append(hundred, ms(i))
	}
	for _, tc := range []struct {
		name          string
		lat           []time.Duration
		missed        int
		p50, p99, max time.Duration
	}{
		{"none", nil, 0, 0, 0, 0},
		{"one", []time.Duration{ms(7)}, 0, ms(7), ms(7), ms(7)},
		{"hundred", hundred, 0, ms(50), ms(99), ms(100)},
		{"hundred, one missed", hundred[1:], 1, ms(50), ms(99), missedLatency},
		{"hundred, two missed", hundred[2:], 2, ms(50), missedLatency, missedLatency},
		{"all missed", nil, 3, missedLatency, missedLatency, missedLatency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := latencyStats(tc.lat, tc.missed)
			if s.P50 != tc.p50 || s.P99 != tc.p99 || s.Max != tc.max {
				t.Errorf("got p50 %s p99 %s max %s, want %s %s %s", fmtLatency(s.P50), fmtLatency(s.P99), fmtLatency(s.Max),
					fmtLatency(tc.p50), fmtLatency(tc.p99), fmtLatency(tc.max))
			}
			if s.Samples != len(tc.lat) || s.Missed != tc.missed {
				t.Errorf("got %d samples %d missed, want %d %d", s.Samples, s.Missed, len(tc.lat), tc.missed)
			}
		})
	}
}

func TestSelectPhases(t *testing.T) {
	got, err := selectPhases(standardPhases, "100k, throughput")
	if err != nil || phaseNames(got) != "throughput,100k" {
		t.Errorf("got %q, %v; want throughput,100k in the standard order", phaseNames(got), err)
	}
	if _, err := selectPhases(standardPhases, "campus,nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("got %v, want an error naming the unknown phase", err)
	}
	if _, err := selectPhases(standardPhases, ""); err == nil {
		t.Error("got no error for an empty phase list")
	}
}
