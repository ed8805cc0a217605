package main

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/occupancyd/occupancyd/gateway/config"
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

	// Report kinds (kinds.go). Kinds gives DPUs without a kind in the topology one;
	// Entries are the config's mqtt.events_topic (how the gateway decodes a topic).
	Kinds   KindSpec
	Entries config.EventsTopics
	// ReportPeriod is the period of interval and cumulative reports (default 10s):
	// a DPU reports at the end of every period in which someone crossed.
	ReportPeriod time.Duration
	// CounterResets is the chance that a cumulative DPU restarts its counters after
	// a report (a reboot): its next totals count from 0.
	CounterResets float64
	// HTTPPush is the share of the messages of DPUs the gateway decodes alike over
	// HTTP that go through POST /v1/dpus/{id}/events instead of MQTT.
	HTTPPush float64
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

// Msg is one message to publish: over MQTT on Topic, or with HTTP set as an HTTP
// push to the DPU's route.
type Msg struct {
	Kind      MsgKind
	DPU       int // index of the DPU in the simulator's list (connection affinity)
	DPUID     string
	Topic     string
	Payload   []byte
	PublishAt int64    // Unix ms: not before
	Ev        SimEvent // an event's; zero for KindBad and reports
	// Report is an interval or cumulative report's (nil for events).
	Report *occupancy.Report
	HTTP   bool
}

type simDPU struct {
	id          string
	topic       string
	plus, minus int // space index; -1 = outside
	seq         uint64

	kind          occupancy.ReportKind
	enc, httpEnc  *encoder // nil: the default event payload (EventPayload)
	push          bool     // may push over HTTP
	open          bool     // a report period is open
	pStart, pEnd  int64    // the open period [pStart, pEnd)
	in, out       int64    // crossings of the open period in the +1 and -1 direction
	totIn, totOut int64    // a cumulative DPU's counters
	baseline      bool     // a cumulative DPU's first report (its baseline) is out
	reboot        bool     // counters restart from 0 at the next report
	lowest        int64    // lowest start of an interval report so far (late reports go before)
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
	count     []int64 // people whose location is exactly this space, as the gateway counts them
	lastArr   []int64 // ms of the latest arrival into the space
	nArr      []int64 // arrivals in that ms
	periods   periodHeap
	period    int64 // ms

	Stats SimStats
}

// SimStats counts the messages a Sim generated, by kind (Reordered are Normal ones
// held back; Reports and CounterResets are among Normal and Late; HTTP are sent as
// HTTP pushes).
type SimStats struct {
	Normal, Reordered, Late, Duplicates, Bad int64
	Reports, CounterResets, HTTP             int64
}

// NewSim builds a simulator over a topology.
func NewSim(topo occupancy.TopologyConfig, opt SimOptions) (*Sim, error) {
	s := &Sim{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x5EED)), period: opt.ReportPeriod.Milliseconds()}
	if s.period <= 0 {
		s.period = 10_000
	}
	entries := opt.Entries
	if len(entries) == 0 {
		entries = config.Topics("dpu/+/events", "+/dpu/+/events")
	}
	encoders := map[encKey]*encoder{}
	enc := func(k occupancy.ReportKind, m *occupancy.Mapping) (*encoder, error) {
		if k == occupancy.ReportEvents && m == nil {
			return nil, nil
		}
		key := encKey{k, m}
		if e, ok := encoders[key]; ok {
			return e, nil
		}
		e, err := newEncoder(k, m)
		encoders[key] = e
		return e, err
	}
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
		plan, err := planDPU(d, sd.topic, entries, opt.Kinds, opt.Seed)
		if err != nil {
			return nil, err
		}
		sd.kind, sd.topic, sd.push, sd.lowest = plan.kind, plan.topic, plan.push, math.MaxInt64
		if sd.enc, err = enc(plan.kind, plan.m); err != nil {
			return nil, fmt.Errorf("DPU %q: %w", d.ID, err)
		}
		if sd.httpEnc, err = enc(plan.kind, plan.httpM); err != nil {
			return nil, fmt.Errorf("DPU %q: %w", d.ID, err)
		}
		s.dpus = append(s.dpus, sd)
		if opt.Exclude[d.ID] {
			continue
		}
		s.active = append(s.active, i)
		if (plus < 0) != (minus < 0) && sd.kind != occupancy.ReportCumulative {
			s.entrances = append(s.entrances, i) // (a late cumulative report would rewrite its baseline)
		}
	}
	if len(s.entrances) == 0 {
		return nil, fmt.Errorf("topology has no DPU between a space and the outside (of kind events or interval): nobody could enter")
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

// Next generates the messages of one event slot at time ts (Unix ms): the reports
// of the periods that ended by ts, then one crossing (an event, possibly late and/or
// reordered, possibly followed by a duplicate; or a crossing a report will count) or
// one malformed message. Successive calls must not go back in time.
func (s *Sim) Next(ts int64) []Msg {
	out := s.flushReports(ts, false)
	if s.chance(s.opt.Bad) {
		s.Stats.Bad++
		d := s.active[s.rng.IntN(len(s.active))]
		dpu := &s.dpus[d]
		return append(out, Msg{Kind: KindBad, DPU: d, DPUID: dpu.id, Topic: dpu.topic, Payload: s.badPayload(ts), PublishAt: ts})
	}
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
		s.Stats.Late++
		if dpu.kind == occupancy.ReportInterval {
			// A report of a past period of its own, before any other of the DPU's,
			// counting this one crossing.
			end := min(old-s.period, dpu.lowest)
			r := occupancy.Report{DPU: dpu.id, Kind: occupancy.ReportInterval, Start: end - 1, TS: end}
			dpu.lowest = r.Start
			if dir > 0 {
				r.In = 1
			} else {
				r.Out = 1
			}
			return append(out, s.sendReport(KindLate, d, r, ts)...)
		}
		return append(out, s.send(s.msg(KindLate, d, dir, old, ts))...)
	}
	d, dir := s.pick(ts)
	dpu := &s.dpus[d]
	from, to := dpu.minus, dpu.plus
	if dir < 0 {
		from, to = to, from
	}
	if dpu.kind != occupancy.ReportEvents {
		// The gateway counts the crossing at the end of the period: the person leaves
		// `from` now (no one else can take them) and arrives in `to` then.
		s.move(from, -1, ts, false)
		s.cross(d, dir, ts)
		return out
	}
	s.move(from, to, ts, true)
	pub := ts
	if s.chance(s.opt.Reorder) {
		pub += s.delay()
		s.Stats.Reordered++
	}
	s.Stats.Normal++
	return append(out, s.send(s.msg(KindNormal, d, dir, ts, pub))...)
}

// send decides a message's way (HTTP push or MQTT) and adds its duplicate, if any.
func (s *Sim) send(m Msg) []Msg {
	dpu := &s.dpus[m.DPU]
	if dpu.push && s.chance(s.opt.HTTPPush) {
		m.HTTP = true
		s.Stats.HTTP++
		if dpu.httpEnc != dpu.enc {
			m.Payload = s.payload(dpu.httpEnc, m.Ev, m.Report)
		}
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

// payload encodes an event or a report with enc (nil: the default event payload).
func (s *Sim) payload(enc *encoder, ev SimEvent, r *occupancy.Report) []byte {
	if enc == nil {
		return EventPayload(nil, ev)
	}
	var rr occupancy.Report
	if r != nil {
		rr = *r
	}
	return enc.encode(ev, rr)
}

// cross counts a crossing of report DPU d at ts in its open period, opening the
// period that holds ts (and, for a cumulative DPU's first, sending its baseline).
func (s *Sim) cross(d int, dir int8, ts int64) {
	dpu := &s.dpus[d]
	if !dpu.open {
		dpu.open = true
		dpu.pStart = ts - ((ts%s.period)+s.period)%s.period
		dpu.pEnd = dpu.pStart + s.period
		dpu.lowest = min(dpu.lowest, dpu.pStart)
		heap.Push(&s.periods, periodEnd{end: dpu.pEnd, dpu: d})
	}
	if dir > 0 {
		dpu.in++
	} else {
		dpu.out++
	}
}

// Finish ends the run at ts: every open period reports now (its end cut to ts+1),
// and Truth then counts every crossing.
func (s *Sim) Finish(ts int64) []Msg { return s.flushReports(ts, true) }

// flushReports sends the reports of the periods ending by ts (all open ones when
// final, cut to end at ts+1) and moves their crossings' people into their spaces.
func (s *Sim) flushReports(ts int64, final bool) []Msg {
	var out []Msg
	for s.periods.Len() > 0 && (final || s.periods[0].end <= ts) {
		pe := heap.Pop(&s.periods).(periodEnd)
		dpu := &s.dpus[pe.dpu]
		end := pe.end
		if final {
			end = min(end, ts+1)
		}
		dpu.open = false
		// The people arrive at end, when the gateway counts them (ins before outs:
		// its view held none of them until then, so nothing counts below zero).
		s.arrive(dpu.plus, dpu.in, end, ts)
		s.arrive(dpu.minus, dpu.out, end, ts)
		r := occupancy.Report{DPU: dpu.id, Kind: dpu.kind, TS: end, In: dpu.in, Out: dpu.out}
		if dpu.kind == occupancy.ReportInterval {
			r.Start = dpu.pStart
		} else {
			if !dpu.baseline {
				// The counters since the sensor's origin, before anyone crossed.
				dpu.baseline = true
				dpu.totIn, dpu.totOut = s.rng.Int64N(10_000), s.rng.Int64N(10_000)
				base := occupancy.Report{DPU: dpu.id, Kind: occupancy.ReportCumulative, TS: dpu.pStart, In: dpu.totIn, Out: dpu.totOut}
				out = append(out, s.sendReport(KindNormal, pe.dpu, base, ts)...)
			}
			// A reboot counts from 0, unless a counter would not drop (then the
			// gateway could not tell it from growth: the reboot waits).
			restart := dpu.reboot && (dpu.totIn == 0 || r.In < dpu.totIn) && (dpu.totOut == 0 || r.Out < dpu.totOut)
			if restart {
				dpu.reboot = false
				s.Stats.CounterResets++
			} else {
				r.In, r.Out = r.In+dpu.totIn, r.Out+dpu.totOut
			}
			dpu.totIn, dpu.totOut = r.In, r.Out
			if s.chance(s.opt.CounterResets) {
				dpu.reboot = true
			}
		}
		dpu.in, dpu.out = 0, 0
		out = append(out, s.sendReport(KindNormal, pe.dpu, r, ts)...)
	}
	return out
}

// sendReport makes the message(s) of report r of DPU d at ts: reordered, pushed
// and duplicated like events.
func (s *Sim) sendReport(kind MsgKind, d int, r occupancy.Report, ts int64) []Msg {
	dpu := &s.dpus[d]
	pub := ts
	if kind == KindNormal && s.chance(s.opt.Reorder) {
		pub += s.delay()
		s.Stats.Reordered++
	}
	if kind == KindNormal {
		s.Stats.Normal++
	}
	s.Stats.Reports++
	rep := r
	m := Msg{Kind: kind, DPU: d, DPUID: dpu.id, Topic: dpu.topic, Payload: dpu.enc.encode(SimEvent{}, r), PublishAt: pub, Report: &rep}
	return s.send(m)
}

// arrive counts n people into space sp at end, when the clock is at ts: arrivals at
// the current instant may not leave within it.
func (s *Sim) arrive(sp int, n, end, ts int64) {
	if sp < 0 || n == 0 {
		return
	}
	s.count[sp] += n
	if end != ts {
		return // in the past: no crossing to come shares its instant
	}
	if s.lastArr[sp] == ts {
		s.nArr[sp] += n
	} else {
		s.lastArr[sp], s.nArr[sp] = ts, n
	}
}

// periodEnd is an open report period's end, in the heap of open periods.
type periodEnd struct {
	end int64
	dpu int
}

type periodHeap []periodEnd

func (h periodHeap) Len() int { return len(h) }
func (h periodHeap) Less(i, j int) bool {
	return h[i].end < h[j].end || h[i].end == h[j].end && h[i].dpu < h[j].dpu
}
func (h periodHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *periodHeap) Push(x any)   { *h = append(*h, x.(periodEnd)) }
func (h *periodHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}

// encKey identifies an encoder: a kind and a map (maps are shared by pointer).
type encKey struct {
	k occupancy.ReportKind
	m *occupancy.Mapping
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
	return Msg{Kind: kind, DPU: d, DPUID: dpu.id, Topic: dpu.topic, Payload: s.payload(dpu.enc, ev, nil), PublishAt: pub, Ev: ev}
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
// location is the space or a space nested in it. Call Finish first where DPUs
// report in periods: until their reports are out, their crossings are not counted.
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
