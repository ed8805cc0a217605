package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// SimOptions shape the traffic of the simulator.
type SimOptions struct {
	Seed        uint64
	Reorder     float64       // fraction of events held back by up to MaxDelay
	MaxDelay    time.Duration // reorder / duplicate delay bound
	Duplicates  float64       // fraction of events published twice
	Late        float64       // fraction of events whose ts is older than the settle window
	Bad         float64       // fraction of messages that are malformed
	SettleAfter time.Duration // engine.settle_after of the gateway's config
	SiteTopics  bool          // publish to <site>/dpu/<id>/events instead of dpu/<id>/events
	Exclude     map[string]bool
}

// MsgKind says what a simulated message is.
type MsgKind uint8

const (
	KindNormal    MsgKind = iota // a crossing, published on time or reordered
	KindLate                     // a crossing whose ts is older than the settle window
	KindDuplicate                // a re-sent copy of an earlier crossing
	KindBad                      // a malformed payload: not counted by the gateway
)

// SimEvent is one crossing as the gateway should count it.
type SimEvent struct {
	DPU       string
	Seq       uint64
	TS        int64 // Unix ms
	Direction int8
}

// Msg is one MQTT message to publish.
type Msg struct {
	Kind      MsgKind
	DPU       int // index of the DPU in the simulator's list (connection affinity)
	Topic     string
	Payload   []byte
	PublishAt int64    // Unix ms: not before
	Ev        SimEvent // zero for KindBad
}

type simDPU struct {
	id          string
	topic       string
	plus, minus int // space index; -1 = outside
	seq         uint64
}

// SpaceCount is one space's occupancy.
type SpaceCount struct {
	Space     string
	Occupancy int64
}

// Sim is the people simulation. People enter through DPUs that face the outside,
// walk through doorways and leave; a crossing only starts from a space that holds a
// person who arrived there in an earlier millisecond, so the true timeline sorted by
// (ts, DPU, id) never goes below zero in any space (and the gateway's clamping
// never triggers). Sim is deterministic for a seed and a sequence of Next times.
type Sim struct {
	opt       SimOptions
	rng       *rand.Rand
	dpus      []simDPU
	active    []int // DPUs the simulator drives (not excluded)
	entrances []int // active DPUs with one side outside
	spaceIDs  []string
	parent    []int
	count     []int64 // people whose location is exactly this space
	lastArr   []int64 // ms of the latest arrival into the space
	nArr      []int64 // arrivals in that ms

	Stats SimStats
}

// SimStats counts the messages a Sim generated, by kind (Reordered are Normal ones held back).
type SimStats struct{ Normal, Reordered, Late, Duplicates, Bad int64 }

// NewSim builds a simulator over a topology.
func NewSim(topo occupancy.TopologyConfig, opt SimOptions) (*Sim, error) {
	s := &Sim{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x5EED))}
	idx := make(map[string]int, len(topo.Spaces))
	for i, sp := range topo.Spaces {
		if _, dup := idx[sp.ID]; dup {
			return nil, fmt.Errorf("topology.spaces[%d]: duplicate space %q", i, sp.ID)
		}
		idx[sp.ID] = i
		s.spaceIDs = append(s.spaceIDs, sp.ID)
	}
	s.parent = make([]int, len(topo.Spaces))
	for i, sp := range topo.Spaces {
		s.parent[i] = -1
		if sp.Parent != "" {
			p, ok := idx[sp.Parent]
			if !ok {
				return nil, fmt.Errorf("topology.spaces[%d].parent: unknown space %q", i, sp.Parent)
			}
			s.parent[i] = p
		}
	}
	for i := range s.parent { // refuse cycles: the chain walks below must end
		for p, n := s.parent[i], 0; p >= 0; p, n = s.parent[p], n+1 {
			if n > len(s.parent) {
				return nil, fmt.Errorf("topology.spaces[%d].parent: cycle through %q", i, s.spaceIDs[i])
			}
		}
	}
	space := func(i int, field, id string) (int, error) {
		if id == "" {
			return -1, nil
		}
		k, ok := idx[id]
		if !ok {
			return 0, fmt.Errorf("topology.dpus[%d].%s: unknown space %q", i, field, id)
		}
		return k, nil
	}
	for i, d := range topo.DPUs {
		plus, err := space(i, "plus_space", d.PlusSpace)
		if err != nil {
			return nil, err
		}
		minus, err := space(i, "minus_space", d.MinusSpace)
		if err != nil {
			return nil, err
		}
		sd := simDPU{id: d.ID, plus: plus, minus: minus, topic: "dpu/" + d.ID + "/events"}
		if opt.SiteTopics {
			site := "none"
			if plus >= 0 {
				site = s.spaceIDs[s.root(plus)]
			} else if minus >= 0 {
				site = s.spaceIDs[s.root(minus)]
			}
			sd.topic = site + "/dpu/" + d.ID + "/events"
		}
		s.dpus = append(s.dpus, sd)
		if opt.Exclude[d.ID] {
			continue
		}
		s.active = append(s.active, i)
		if (plus < 0) != (minus < 0) {
			s.entrances = append(s.entrances, i)
		}
	}
	if len(s.entrances) == 0 {
		return nil, fmt.Errorf("topology has no DPU between a space and the outside: nobody could enter")
	}
	s.count = make([]int64, len(s.spaceIDs))
	s.lastArr = make([]int64, len(s.spaceIDs))
	s.nArr = make([]int64, len(s.spaceIDs))
	return s, nil
}

func (s *Sim) root(i int) int {
	for s.parent[i] >= 0 {
		i = s.parent[i]
	}
	return i
}

// DPUCount is the number of DPUs (all, including excluded ones).
func (s *Sim) DPUCount() int { return len(s.dpus) }

// available reports whether someone can leave space sp at ms ts.
func (s *Sim) available(sp int, ts int64) bool {
	if sp < 0 {
		return true
	}
	n := s.count[sp]
	if s.lastArr[sp] == ts {
		n -= s.nArr[sp]
	}
	return n > 0
}

func (s *Sim) move(from, to int, ts int64, arrivedNow bool) {
	if from >= 0 {
		s.count[from]--
	}
	if to >= 0 {
		s.count[to]++
		if arrivedNow {
			if s.lastArr[to] == ts {
				s.nArr[to]++
			} else {
				s.lastArr[to], s.nArr[to] = ts, 1
			}
		}
	}
}

func (s *Sim) chance(p float64) bool { return p > 0 && s.rng.Float64() < p }

func (s *Sim) delay() int64 {
	max := s.opt.MaxDelay.Milliseconds()
	if max <= 0 {
		return 0
	}
	return 1 + s.rng.Int64N(max)
}

// Next generates the messages of one event slot at time ts (Unix ms): one crossing
// (possibly late and/or reordered, possibly followed by a duplicate) or one malformed
// message. Successive calls must not go back in time.
func (s *Sim) Next(ts int64) []Msg {
	if s.chance(s.opt.Bad) {
		s.Stats.Bad++
		d := s.active[s.rng.IntN(len(s.active))]
		return []Msg{{Kind: KindBad, DPU: d, Topic: s.dpus[d].topic, Payload: s.badPayload(ts), PublishAt: ts}}
	}
	var m Msg
	if s.chance(s.opt.Late) {
		d := s.entrances[s.rng.IntN(len(s.entrances))]
		dpu := &s.dpus[d]
		old := ts - s.opt.SettleAfter.Milliseconds() - 1000 - s.rng.Int64N(30000)
		dir := int8(1)
		if dpu.plus < 0 {
			dir = -1
		}
		to := dpu.plus
		if dir < 0 {
			to = dpu.minus
		}
		s.move(-1, to, old, false) // arrived long ago: free to leave now
		m = s.msg(KindLate, d, dir, old, ts)
		s.Stats.Late++
	} else {
		d, dir := s.pick(ts)
		dpu := &s.dpus[d]
		from, to := dpu.minus, dpu.plus
		if dir < 0 {
			from, to = to, from
		}
		s.move(from, to, ts, true)
		pub := ts
		if s.chance(s.opt.Reorder) {
			pub += s.delay()
			s.Stats.Reordered++
		}
		m = s.msg(KindNormal, d, dir, ts, pub)
		s.Stats.Normal++
	}
	out := []Msg{m}
	if s.chance(s.opt.Duplicates) {
		dup := m
		dup.Kind = KindDuplicate
		dup.PublishAt = m.PublishAt + s.delay()
		out = append(out, dup)
		s.Stats.Duplicates++
	}
	return out
}

// pick chooses a DPU and a direction whose crossing starts where someone is.
func (s *Sim) pick(ts int64) (int, int8) {
	for try := 0; try < 4; try++ {
		d := s.active[s.rng.IntN(len(s.active))]
		dir := int8(1)
		if s.rng.IntN(2) == 0 {
			dir = -1
		}
		for flip := 0; flip < 2; flip++ {
			from := s.dpus[d].minus
			if dir < 0 {
				from = s.dpus[d].plus
			}
			if s.available(from, ts) {
				return d, dir
			}
			dir = -dir
		}
	}
	d := s.entrances[s.rng.IntN(len(s.entrances))]
	if s.dpus[d].minus < 0 {
		return d, 1
	}
	return d, -1
}

func (s *Sim) msg(kind MsgKind, d int, dir int8, ts, pub int64) Msg {
	dpu := &s.dpus[d]
	dpu.seq++
	ev := SimEvent{DPU: dpu.id, Seq: dpu.seq, TS: ts, Direction: dir}
	return Msg{Kind: kind, DPU: d, Topic: dpu.topic, Payload: EventPayload(nil, ev), PublishAt: pub, Ev: ev}
}

// EventPayload appends the DPU's JSON event object: {"id":7,"ts":"...Z","direction":1}.
func EventPayload(b []byte, ev SimEvent) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, ev.Seq, 10)
	b = append(b, `,"ts":"`...)
	b = time.UnixMilli(ev.TS).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","direction":`...)
	b = strconv.AppendInt(b, int64(ev.Direction), 10)
	return append(b, '}')
}

func (s *Sim) badPayload(ts int64) []byte {
	ev := SimEvent{Seq: 0, TS: ts, Direction: 1}
	switch s.rng.IntN(3) {
	case 0: // bad_direction
		ev.Direction = 2
		return EventPayload(nil, ev)
	case 1: // bad_ts
		return []byte(`{"ts":"yesterday at noon","direction":1}`)
	default: // bad_json: cut short
		p := EventPayload(nil, ev)
		return p[:len(p)-5]
	}
}

// Truth is the true occupancy of every space (topology order): the people whose
// location is the space or a space nested in it.
func (s *Sim) Truth() []SpaceCount {
	tot := make([]int64, len(s.spaceIDs))
	for i, c := range s.count {
		if c == 0 {
			continue
		}
		for p := i; p >= 0; p = s.parent[p] {
			tot[p] += c
		}
	}
	out := make([]SpaceCount, len(tot))
	for i, v := range tot {
		out[i] = SpaceCount{Space: s.spaceIDs[i], Occupancy: v}
	}
	return out
}

// Topic is the topic DPU i publishes to.
func (s *Sim) Topic(i int) string { return s.dpus[i].topic }
