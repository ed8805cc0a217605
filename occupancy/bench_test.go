package occupancy

import (
	"container/heap"
	"fmt"
	"math/rand"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"testing"
)

// Benchmark scale (DESIGN section 10): 100,000 DPUs over ~20,000 spaces, event time
// advancing at 20,000 events/s, a 5-minute window (~6M pending events).
const (
	benchSites         = 20
	benchFloors        = 20 // per site
	benchRooms         = 49 // per floor
	benchDPUsPerRoom   = 5
	benchEventsPerSec  = 20_000
	benchSettle        = 5 * minute
	benchChunk         = 100_000
	benchReorderFrac   = 0.10
	benchMaxReorderMs  = 30_000
	benchStart         = int64(1_795_000_000_000)
	benchEventSpacingU = 1_000_000 / benchEventsPerSec // µs of event time between events
)

// benchTopology is the test-only generator of the 100,000-DPU topology: sites >
// floors > rooms; per room one door to the outside (changes room, floor, site), two
// to the floor's corridor (room only), one to the next room (two rooms) and one
// corridor door to the outside (floor and site).
func benchTopology() TopologyConfig {
	var c TopologyConfig
	c.Doorways = []DoorwayConfig{{ID: "door", Name: "Door"}}
	for s := 0; s < benchSites; s++ {
		site := fmt.Sprintf("site%d", s)
		c.Spaces = append(c.Spaces, SpaceConfig{ID: site, Name: site, Capacity: 5000, TimeZone: "Europe/Berlin", DailyReset: "04:00"})
		for f := 0; f < benchFloors; f++ {
			floor := fmt.Sprintf("%s-f%d", site, f)
			c.Spaces = append(c.Spaces, SpaceConfig{ID: floor, Name: floor, Parent: site})
			for r := 0; r < benchRooms; r++ {
				room := fmt.Sprintf("%s-r%d", floor, r)
				next := fmt.Sprintf("%s-r%d", floor, (r+1)%benchRooms)
				c.Spaces = append(c.Spaces, SpaceConfig{ID: room, Name: room, Parent: floor, Capacity: 20})
				c.DPUs = append(c.DPUs,
					DPUConfig{ID: room + "-0", Doorway: "door", PlusSpace: room},
					DPUConfig{ID: room + "-1", Doorway: "door", PlusSpace: room, MinusSpace: floor},
					DPUConfig{ID: room + "-2", Doorway: "door", PlusSpace: room, MinusSpace: floor},
					DPUConfig{ID: room + "-3", Doorway: "door", PlusSpace: next, MinusSpace: room},
					DPUConfig{ID: room + "-4", Doorway: "door", PlusSpace: floor},
				)
			}
		}
	}
	return c
}

// benchStream generates the event stream: event i at benchStart + i/20 ms, from a
// pseudo-random DPU with a per-DPU sequence id; with reorder, 10% of events are
// delivered up to 30 s late (still inside the window).
type benchStream struct {
	rng     *rand.Rand
	dpus    []string
	seq     []int32
	i       int64
	reorder bool
	delayed delayHeap
}

type delayed struct {
	at int64
	ev Event
}
type delayHeap []delayed

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayed)) }
func (h *delayHeap) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

func newBenchStream(c TopologyConfig, reorder bool, seed int64) *benchStream {
	s := &benchStream{rng: rand.New(rand.NewSource(seed)), reorder: reorder}
	for _, d := range c.DPUs {
		s.dpus = append(s.dpus, d.ID)
	}
	s.seq = make([]int32, len(s.dpus))
	return s
}

func (s *benchStream) now() int64 { return benchStart + s.i*benchEventSpacingU/1000 }

// next fills buf with the next delivered events.
func (s *benchStream) next(buf []Event) []Event {
	buf = buf[:0]
	for len(buf) < cap(buf) {
		ts := s.now()
		for s.delayed.Len() > 0 && s.delayed[0].at <= ts {
			buf = append(buf, heap.Pop(&s.delayed).(delayed).ev)
			if len(buf) == cap(buf) {
				return buf
			}
		}
		k := s.rng.Intn(len(s.dpus))
		s.seq[k]++
		dir := int8(1)
		if s.rng.Intn(2) == 0 {
			dir = -1
		}
		ev := Event{DPU: s.dpus[k], ID: strconv.Itoa(int(s.seq[k])), TS: ts, Direction: dir, Received: ts}
		s.i++
		if s.reorder && s.rng.Float64() < benchReorderFrac {
			heap.Push(&s.delayed, delayed{at: ts + 1 + s.rng.Int63n(benchMaxReorderMs), ev: ev})
			continue
		}
		buf = append(buf, ev)
	}
	return buf
}

// ingester is the engine or the naive baseline.
type ingester interface {
	apply(evs []Event, now int64)
	tick(now int64)
	pending() int
}

type engineIngester struct{ e *Engine }

func (g engineIngester) apply(evs []Event, now int64) {
	if _, err := g.e.Apply(evs, now); err != nil {
		panic(err)
	}
}
func (g engineIngester) tick(now int64) {
	if st, ok := g.e.Tick(now); ok {
		_ = st
	}
	g.e.Changed()
}
func (g engineIngester) pending() int {
	n := 0
	for _, s := range g.e.gs {
		n += s.pl.len()
	}
	return n
}

func newBenchEngine(tb testing.TB, c TopologyConfig) *Engine {
	st := newMemStore()
	st.noEvents = true
	st.PutVersion(Version{At: benchStart - benchSettle, Topology: c})
	e, err := Open(Options{SettleAfter: benchSettle, LateEvents: LateApply, ClampNegative: true}, st, benchStart)
	if err != nil {
		tb.Fatal(err)
	}
	e.holdUntil = 0
	return e
}

type benchRun struct {
	ing    ingester
	stream *benchStream
	buf    []Event
	full   []Event
	lastT  int64
}

var benchRuns = map[string]*benchRun{}

// feed delivers n events (ticking once per second of event time).
func (r *benchRun) feed(n int) {
	for n > 0 {
		k := min(n, 1000)
		r.buf = r.stream.next(r.full[:0:k])
		now := r.stream.now()
		r.ing.apply(r.buf, now)
		if now-r.lastT >= 1000 {
			r.ing.tick(now)
			r.lastT = now
		}
		n -= len(r.buf)
	}
}

// setupRun prefills (once per benchmark name) a 5-minute window in order.
func setupRun(b *testing.B, name string, reorder bool, mk func(TopologyConfig) ingester) *benchRun {
	if r, ok := benchRuns[name]; ok {
		return r
	}
	// One full window at a time: drop the other benchmarks' engines (~1.5 GB each).
	clear(benchRuns)
	runtime.GC()
	c := benchTopology()
	r := &benchRun{ing: mk(c), full: make([]Event, 1000)}
	r.stream = newBenchStream(c, false, 1)
	if nv, ok := r.ing.(*naive); ok {
		nv.bulk = true
		defer func() { nv.bulk = false }()
	}
	r.feed(int(benchSettle / 1000 * benchEventsPerSec))
	r.stream.reorder = reorder
	benchRuns[name] = r
	return r
}

func benchIngest(b *testing.B, name string, reorder bool, mk func(TopologyConfig) ingester) {
	r := setupRun(b, name, reorder, mk)
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuSeconds()
	r.feed(b.N)
	cpu := cpuSeconds() - c0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	// The machine is shared: process CPU time (all threads, GC included) is the
	// steadier measure of events per core-second.
	b.ReportMetric(float64(b.N)/cpu, "events/cpu-s")
	b.ReportMetric(float64(r.ing.pending()), "pending-entries")
}

func mkEngine(b testing.TB) func(TopologyConfig) ingester {
	return func(c TopologyConfig) ingester { return engineIngester{newBenchEngine(b, c)} }
}

func BenchmarkIngestInOrder(b *testing.B) {
	benchIngest(b, "inorder", false, mkEngine(b))
}

func BenchmarkIngestReordered(b *testing.B) {
	benchIngest(b, "reordered", true, mkEngine(b))
}

func BenchmarkIngestReorderedNaive(b *testing.B) {
	benchIngest(b, "naive", true, func(c TopologyConfig) ingester { return newNaive(b, c) })
}

// BenchmarkPendingMemory reports the heap bytes per pending event of a full
// 5-minute window (6M events) and per space or DPU of the topology.
func BenchmarkPendingMemory(b *testing.B) {
	clear(benchRuns)
	for i := 0; i < b.N; i++ {
		c := benchTopology()
		m0 := heapNow()
		e := newBenchEngine(b, c)
		m1 := heapNow()
		r := &benchRun{ing: engineIngester{e}, full: make([]Event, 1000), stream: newBenchStream(c, true, 2)}
		n := int(benchSettle / 1000 * benchEventsPerSec)
		r.feed(n)
		m2 := heapNow()
		b.ReportMetric(float64(m1-m0)/float64(len(c.Spaces)+len(c.DPUs)), "B/topology-item")
		b.ReportMetric(float64(m2-m1)/float64(n), "B/pending-event")
		b.ReportMetric(float64(r.ing.pending())/float64(n), "entries/event")
		runtime.KeepAlive(e)
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// naive is the original design's record_dpu_event: pending rows per space in a
// sorted slice; every event recomputes every pending row of each affected space.
type naive struct {
	e      *Engine // for mapping and ordering only
	spaces map[int32]*naiveSpace
	bulk   bool // prefill: in-order appends computed incrementally (not timed)
}

type naiveSpace struct {
	base int64
	es   []entry
	vals []int64
}

func newNaive(tb testing.TB, c TopologyConfig) *naive {
	return &naive{e: newBenchEngine(tb, c), spaces: map[int32]*naiveSpace{}}
}

func (n *naive) apply(evs []Event, now int64) {
	for i := range evs {
		m, _ := n.e.mapEvent(evs[i].DPU, evs[i].TS)
		n.e.eventEntries(m, &evs[i], func(g int32, en entry) {
			s := n.spaces[g]
			if s == nil {
				s = &naiveSpace{}
				n.spaces[g] = s
			}
			j := sort.Search(len(s.es), func(k int) bool { return n.e.compare(&s.es[k], &en) >= 0 })
			s.es = append(s.es, entry{})
			copy(s.es[j+1:], s.es[j:])
			s.es[j] = en
			s.vals = append(s.vals, 0)
			if n.bulk && j == len(s.es)-1 {
				x := s.base
				if j > 0 {
					x = s.vals[j-1]
				}
				s.vals[j], _, _ = step(&s.es[j], x, true)
				return
			}
			x := s.base
			for k := range s.es {
				x, _, _ = step(&s.es[k], x, true)
				s.vals[k] = x
			}
		})
	}
}

func (n *naive) tick(now int64) {
	h := now - benchSettle
	for _, s := range n.spaces {
		k := sort.Search(len(s.es), func(i int) bool { return s.es[i].ts >= h })
		if k > 0 {
			s.base = s.vals[k-1]
			s.es = append(s.es[:0:0], s.es[k:]...)
			s.vals = append(s.vals[:0:0], s.vals[k:]...)
		}
	}
}

func (n *naive) pending() int {
	t := 0
	for _, s := range n.spaces {
		t += len(s.es)
	}
	return t
}

// BenchmarkAt: occupancy at an instant inside the pending window of the busiest
// space (a site: ~48,000 pending entries) of the full 5-minute window.
func BenchmarkAt(b *testing.B) {
	r := setupRun(b, "inorder", false, mkEngine(b))
	e := r.ing.(engineIngester).e
	h, now := e.Horizon(), r.stream.now()
	rng := rand.New(rand.NewSource(3))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.At("site3", h+rng.Int63n(now-h)); err != nil {
			b.Fatal(err)
		}
	}
}

// historyEngine runs 30 days of a space with one event per second (plus a floor
// and a building above it) through an engine whose settlements are committed to a
// memstore; benchmarks then query it.
var historyEng *Engine

func historyEngine(b *testing.B) *Engine {
	if historyEng != nil {
		return historyEng
	}
	c := TopologyConfig{
		Spaces: []SpaceConfig{{ID: "bldg", TimeZone: "Europe/Berlin", DailyReset: "04:00"}, {ID: "floor", Parent: "bldg"}, {ID: "busy", Parent: "floor"}},
		DPUs:   []DPUConfig{{ID: "in", PlusSpace: "busy"}, {ID: "mid", PlusSpace: "busy", MinusSpace: "floor"}},
	}
	st := newMemStore()
	st.noEvents = true
	t0 := benchStart - 30*86_400_000
	st.PutVersion(Version{At: t0, Topology: c})
	e, err := Open(Options{SettleAfter: benchSettle, LateEvents: LateApply, ClampNegative: true}, st, t0)
	if err != nil {
		b.Fatal(err)
	}
	e.holdUntil = 0
	rng := rand.New(rand.NewSource(4))
	buf := make([]Event, 0, 60)
	for ts := t0; ts < benchStart; ts += 60_000 {
		buf = buf[:0]
		for k := int64(0); k < 60; k++ {
			dir := int8(1)
			if rng.Intn(2) == 0 {
				dir = -1
			}
			dpu := "in"
			if k%3 == 0 {
				dpu = "mid"
			}
			buf = append(buf, Event{DPU: dpu, TS: ts + k*1000 + rng.Int63n(1000), Direction: dir})
		}
		if _, err := e.Apply(buf, ts+60_000); err != nil {
			b.Fatal(err)
		}
		if s, ok := e.Tick(ts + 60_000); ok {
			if err := st.Commit(s); err != nil {
				b.Fatal(err)
			}
		}
	}
	historyEng = e
	return e
}

// BenchmarkCountsDay: a day of 15-minute buckets (96) over 30 days of history of a
// space with one event per second: from settled rows, and the last day (which
// includes the pending window).
func BenchmarkCountsDay(b *testing.B) {
	e := historyEngine(b)
	const day = 86_400_000
	for _, tc := range []struct {
		name  string
		start int64
	}{{"settled", benchStart - 10*day}, {"latest", benchStart - day}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				bs, err := e.Counts("busy", tc.start, tc.start+day, 15*60_000)
				if err != nil || len(bs) != 96 {
					b.Fatalf("got %d buckets, %v", len(bs), err)
				}
			}
		})
	}
}

// BenchmarkAtSettled: occupancy at an instant of the 30-day settled history (one
// store lookup).
func BenchmarkAtSettled(b *testing.B) {
	e := historyEngine(b)
	rng := rand.New(rand.NewSource(5))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.At("busy", benchStart-rng.Int63n(29*86_400_000)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLateEvent: one late event (30 s before the horizon) at the 100,000-DPU
// peak, with the stored events in a memstore: the cost is the replay of every
// stored event between the replay start and H (see late.go).
func BenchmarkLateEvent(b *testing.B) {
	clear(benchRuns)
	runtime.GC()
	c := benchTopology()
	st := newMemStore()
	st.PutVersion(Version{At: benchStart - benchSettle, Topology: c})
	e, err := Open(Options{SettleAfter: benchSettle, LateEvents: LateApply, ClampNegative: true}, st, benchStart)
	if err != nil {
		b.Fatal(err)
	}
	e.holdUntil = 0
	stream := newBenchStream(c, false, 7)
	buf := make([]Event, 1000)
	var lastT int64
	// Six minutes of events: one minute settled, five pending.
	for n := int(6 * 60 * benchEventsPerSec); n > 0; n -= 1000 {
		evs := stream.next(buf[:0])
		st.Append(evs, nil)
		if _, err := e.Apply(evs, stream.now()); err != nil {
			b.Fatal(err)
		}
		if now := stream.now(); now-lastT >= 1000 {
			if s, ok := e.Tick(now); ok {
				s.Rows = nil // rows are not needed here; keep memory down
				st.cp, st.hasCP = s.Checkpoint, true
			}
			lastT = now
		}
	}
	rng := rand.New(rand.NewSource(8))
	h := e.Horizon()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev := Event{DPU: stream.dpus[rng.Intn(len(stream.dpus))], ID: "late" + strconv.Itoa(i), TS: h - 30_000 - rng.Int63n(1000), Direction: 1}
		st.Append([]Event{ev}, nil)
		res, err := e.Apply([]Event{ev}, stream.now())
		if err != nil || res.Late != 1 {
			b.Fatalf("got %+v, %v", res, err)
		}
	}
}
