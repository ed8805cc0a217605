package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

// This file runs the HTTP API over the real stack: a buffer.Store (Badger) in
// t.TempDir() and the occupancy engine opened over it. Events go through
// buffer.Append (dedup, parking) and then engine.Apply, as the gateway does; the
// answers of every route are compared with a naive model of DESIGN 1 and 3 written
// here (ancestor chains, per-space clamping in timeline order, resets, buckets).

var stackTopology = occupancy.TopologyConfig{
	Spaces: []occupancy.SpaceConfig{
		{ID: "hq", Name: "HQ", Capacity: 50},
		{ID: "lobby", Name: "Lobby", Parent: "hq"},
		{ID: "f1", Name: "Floor 1", Parent: "hq"},
		{ID: "room-a", Name: "Room A", Parent: "f1", Capacity: 10},
		{ID: "room-b", Name: "Room B", Parent: "f1"},
		{ID: "f2", Name: "Floor 2", Parent: "hq"},
		{ID: "room-c", Name: "Room C", Parent: "f2", Capacity: 8},
	},
	Doorways: []occupancy.DoorwayConfig{
		{ID: "main", Name: "Main"}, {ID: "a", Name: "A"}, {ID: "ab", Name: "A-B"},
		{ID: "c", Name: "C"}, {ID: "fire", Name: "Fire exit"},
	},
	DPUs: []occupancy.DPUConfig{
		{ID: "d-main", Doorway: "main", PlusSpace: "lobby", MinusSpace: ""},
		{ID: "d-lobby-a", Doorway: "a", PlusSpace: "room-a", MinusSpace: "lobby"},
		{ID: "d-a-b", Doorway: "ab", PlusSpace: "room-b", MinusSpace: "room-a"},
		{ID: "d-lobby-c", Doorway: "c", PlusSpace: "room-c", MinusSpace: "lobby"},
		{ID: "d-b-out", Doorway: "fire", PlusSpace: "", MinusSpace: "room-b"},
	},
}

// ---- the naive model ----

type mEntry struct {
	ts    int64
	dpu   string // "" for a reset
	id    string
	dir   int8
	reset string // space reset
	value int64  // reset value
}

type mPoint struct {
	ts        int64
	value     int64
	in, out   int64
	fromEvent bool
}

type model struct {
	parent map[string]string
	dpus   map[string]occupancy.DPUConfig
	order  []string
	seen   map[string]bool // event identity
	ents   []mEntry
	// per-DPU statistics as the model sees them
	accepted, dups, parked map[string]int64
	ids                    map[string][]int64
	lastTS, skew           map[string]int64
	recv                   map[string]int64 // when the gateway last received an event of the DPU
}

func newModel(topo occupancy.TopologyConfig) *model {
	m := &model{parent: map[string]string{}, dpus: map[string]occupancy.DPUConfig{}, seen: map[string]bool{},
		accepted: map[string]int64{}, dups: map[string]int64{}, parked: map[string]int64{},
		ids: map[string][]int64{}, lastTS: map[string]int64{}, skew: map[string]int64{}, recv: map[string]int64{}}
	for _, s := range topo.Spaces {
		m.parent[s.ID] = s.Parent
		m.order = append(m.order, s.ID)
	}
	for _, d := range topo.DPUs {
		m.dpus[d.ID] = d
	}
	return m
}

func (m *model) chain(s string) []string {
	var c []string
	for ; s != ""; s = m.parent[s] {
		c = append(c, s)
	}
	return c
}

// deltas of one crossing (DESIGN 1 nesting).
func (m *model) deltas(e mEntry) map[string]int64 {
	d := m.dpus[e.dpu]
	from, to := d.MinusSpace, d.PlusSpace
	if e.dir < 0 {
		from, to = to, from
	}
	fc, tc := m.chain(from), m.chain(to)
	in := func(x string, c []string) bool {
		for _, y := range c {
			if y == x {
				return true
			}
		}
		return false
	}
	out := map[string]int64{}
	for _, s := range tc {
		if !in(s, fc) {
			out[s]++
		}
	}
	for _, s := range fc {
		if !in(s, tc) {
			out[s]--
		}
	}
	return out
}

// event records one delivery; it returns true the first time the identity is seen.
func (m *model) event(e occupancy.Event) {
	key := fmt.Sprintf("%s|%s|%d", e.DPU, e.ID, e.TS)
	if m.seen[key] {
		m.dups[e.DPU]++
		return
	}
	m.seen[key] = true
	m.accepted[e.DPU]++
	if _, ok := m.dpus[e.DPU]; !ok {
		m.parked[e.DPU]++
	} else {
		m.ents = append(m.ents, mEntry{ts: e.TS, dpu: e.DPU, id: e.ID, dir: e.Direction})
	}
	n, _ := strconv.ParseInt(e.ID, 10, 64)
	m.ids[e.DPU] = append(m.ids[e.DPU], n)
	if cur, ok := m.lastTS[e.DPU]; !ok || e.TS >= cur {
		m.lastTS[e.DPU], m.skew[e.DPU] = e.TS, e.TS-e.Received
	}
}

// reset adds a manual reset: to 0 the space and its descendants, to N > 0 the space.
func (m *model) reset(space string, ts, value int64) {
	m.ents = append(m.ents, mEntry{ts: ts, reset: space, value: value})
}

// timeline replays every entry in (ts, DPU) order with clamping, per space.
func (m *model) timeline() map[string][]mPoint {
	ents := append([]mEntry(nil), m.ents...)
	sort.SliceStable(ents, func(i, j int) bool {
		if ents[i].ts != ents[j].ts {
			return ents[i].ts < ents[j].ts
		}
		return ents[i].dpu < ents[j].dpu
	})
	val := map[string]int64{}
	tl := map[string][]mPoint{}
	for _, e := range ents {
		if e.reset != "" {
			targets := []string{e.reset}
			if e.value == 0 {
				for _, s := range m.order {
					for _, a := range m.chain(s)[1:] {
						if a == e.reset {
							targets = append(targets, s)
						}
					}
				}
			}
			for _, s := range targets {
				val[s] = e.value
				tl[s] = append(tl[s], mPoint{ts: e.ts, value: e.value})
			}
			continue
		}
		for s, d := range m.deltas(e) {
			p := mPoint{ts: e.ts, fromEvent: true}
			switch {
			case d > 0:
				val[s] += d
				p.in = d
			case val[s]+d >= 0:
				val[s] += d
				p.out = -d
			default: // clamped: absorbed, not an exit
			}
			p.value = val[s]
			tl[s] = append(tl[s], p)
		}
	}
	return tl
}

func valueAt(pts []mPoint, t int64) int64 {
	var v int64
	for _, p := range pts {
		if p.ts > t {
			break
		}
		v = p.value
	}
	return v
}

// modelBuckets are the buckets [bounds[i], bounds[i+1]) of pts.
func modelBuckets(pts []mPoint, bounds []int64) []bucketDoc {
	out := []bucketDoc{}
	if len(bounds) < 2 {
		return out
	}
	x := valueAt(pts, bounds[0]-1)
	for i := 0; i+1 < len(bounds); i++ {
		s, e := bounds[i], bounds[i+1]
		b := bucketDoc{Start: payload.FormatMS(s), End: payload.FormatMS(e), Occupancy: x, Min: x, Max: x}
		for _, p := range pts {
			if p.ts >= s && p.ts < e {
				b.Occupancy = p.value
				b.Min, b.Max = min(b.Min, p.value), max(b.Max, p.value)
				b.Entrances += p.in
				b.Exits += p.out
				x = p.value
			}
		}
		out = append(out, b)
	}
	return out
}

func (m *model) gaps(dpu string) int64 {
	ids := append([]int64(nil), m.ids[dpu]...)
	if len(ids) == 0 {
		return 0
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids[len(ids)-1] - ids[0] + 1 - int64(len(ids))
}

// ---- the tracker over the real engine and store ----

// stack is the tracker the server queries, on a clock the test sets; reopen
// replaces it (a restart), so the server reaches it through this indirection.
type stack struct {
	mu    sync.Mutex
	tr    *tracker.Tracker
	st    *buffer.Store
	stats *tracker.DPUStats // kept across a reopen, as the test's model is
	clock int64
}

func (q *stack) get() *tracker.Tracker {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.tr
}

func (q *stack) now() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return time.UnixMilli(q.clock)
}

func (q *stack) Spaces() []occupancy.Occupancy { return q.get().Spaces() }
func (q *stack) Space(id string) (occupancy.Occupancy, bool) {
	return q.get().Space(id)
}
func (q *stack) At(id string, t int64) (int64, error) { return q.get().At(id, t) }
func (q *stack) Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error) {
	return q.get().Counts(id, start, end, interval)
}
func (q *stack) Location(id string) *time.Location { return q.get().Location(id) }
func (q *stack) Reset(r occupancy.Reset) error     { return q.get().Reset(r) }
func (q *stack) DPUs() []tracker.DPUStat           { return q.get().DPUs() }
func (q *stack) Topology() occupancy.TopologyConfig {
	return q.get().Topology()
}
func (q *stack) Horizon() int64 { return q.get().Horizon() }
func (q *stack) DPUsOf(ids []string) []tracker.DPUStat {
	return q.get().DPUsOf(ids)
}

// open opens the tracker over st at the current clock.
func (q *stack) open(t *testing.T, st *buffer.Store, opts occupancy.Options) {
	t.Helper()
	tr, err := tracker.Open(tracker.Options{Store: st, Engine: opts, MaxFutureSkew: time.Minute,
		Stats: q.stats, Logger: zerolog.Nop(), Now: q.now})
	if err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	q.tr, q.st = tr, st
	q.mu.Unlock()
}

// ingest stores a batch and applies what was new, through the tracker.
func (q *stack) ingest(t *testing.T, evs []occupancy.Event) {
	t.Helper()
	if _, err := q.get().Ingest(context.Background(), evs); err != nil {
		t.Fatalf("ingest: %v", err)
	}
}

func (q *stack) setNow(now int64) {
	q.mu.Lock()
	q.clock = now
	q.mu.Unlock()
}

func (q *stack) tick(t *testing.T, now int64) {
	t.Helper()
	q.setNow(now)
	if _, err := q.get().Tick(); err != nil {
		t.Fatalf("tick: %v", err)
	}
}

// ---- the test ----

// people walks people through the building: every event is a real crossing, so the
// true count never goes negative; noise adds spurious crossings that clamping absorbs.
func genCrossings(rng *rand.Rand, from, n int64, seq map[string]int64) []occupancy.Event {
	type move struct {
		dpu    string
		dir    int8
		fromSp string
		toSp   string
	}
	moves := []move{
		{"d-main", 1, "", "lobby"}, {"d-main", -1, "lobby", ""},
		{"d-lobby-a", 1, "lobby", "room-a"}, {"d-lobby-a", -1, "room-a", "lobby"},
		{"d-a-b", 1, "room-a", "room-b"}, {"d-a-b", -1, "room-b", "room-a"},
		{"d-lobby-c", 1, "lobby", "room-c"}, {"d-lobby-c", -1, "room-c", "lobby"},
		{"d-b-out", 1, "room-b", ""}, {"d-b-out", -1, "", "room-b"},
	}
	where := make([]string, 25)
	var evs []occupancy.Event
	ts := from
	for int64(len(evs)) < n {
		ts += 700 + int64(rng.IntN(800))
		var mv move
		if rng.IntN(20) == 0 { // noise: a crossing nobody made
			mv = moves[rng.IntN(len(moves))]
		} else {
			p := rng.IntN(len(where))
			var opts []move
			for _, m := range moves {
				if m.fromSp == where[p] {
					opts = append(opts, m)
				}
			}
			mv = opts[rng.IntN(len(opts))]
			where[p] = mv.toSp
		}
		seq[mv.dpu]++
		if rng.IntN(25) == 0 {
			seq[mv.dpu] += int64(1 + rng.IntN(2)) // an id lost upstream: a gap
		}
		evs = append(evs, occupancy.Event{DPU: mv.dpu, ID: strconv.FormatInt(seq[mv.dpu], 10), TS: ts,
			Direction: mv.dir, Received: ts + int64(rng.IntN(3000))})
	}
	return evs
}

// deliver shuffles events within a window and re-sends some, in batches.
func deliver(t *testing.T, rng *rand.Rand, q *stack, m *model, evs []occupancy.Event) {
	t.Helper()
	out := append([]occupancy.Event(nil), evs...)
	// Bounded reordering: swap each event with one up to 30 positions later.
	for i := range out {
		j := i + rng.IntN(30)
		if j < len(out) {
			out[i], out[j] = out[j], out[i]
		}
	}
	for i := 0; i < len(out); {
		n := 1 + rng.IntN(40)
		batch := append([]occupancy.Event(nil), out[i:min(i+n, len(out))]...)
		i += n
		if rng.IntN(3) == 0 && len(batch) > 0 { // redelivery of a batch element
			batch = append(batch, batch[rng.IntN(len(batch))])
		}
		for _, e := range batch {
			m.event(e)
			m.recv[e.DPU] = q.now().UnixMilli() // stored or a duplicate: a report
		}
		q.ingest(t, batch)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	r := do(t, "GET", url, "", "")
	if r.status != 200 {
		t.Fatalf("GET %s: status %d: %s", url, r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, r.body)
	}
}

// compareAll checks every read route against the model.
func compareAll(t *testing.T, rng *rand.Rand, base string, m *model, horizon, first, last, now int64) {
	t.Helper()
	tl := m.timeline()
	caps := map[string]int64{}
	for _, s := range stackTopology.Spaces {
		caps[s.ID] = s.Capacity
	}

	var spaces []map[string]any
	getJSON(t, base+"/v1/spaces", &spaces)
	if len(spaces) != len(m.order) {
		t.Fatalf("/v1/spaces has %d spaces, want %d", len(spaces), len(m.order))
	}
	for i, id := range m.order {
		got := spaces[i]
		want := valueAt(tl[id], last+1_000_000)
		if got["space"] != id || got["occupancy"] != float64(want) {
			t.Errorf("/v1/spaces[%d] = %v, want space %s occupancy %d", i, got, id, want)
		}
		if got["settled_until"] != payload.FormatMS(horizon) {
			t.Errorf("%s settled_until = %v, want %s", id, got["settled_until"], payload.FormatMS(horizon))
		}
		if c := caps[id]; c > 0 {
			u := float64(int64(float64(want)/float64(c)*1000+0.5)) / 1000
			if got["capacity"] != float64(c) || got["utilization"] != u {
				t.Errorf("%s capacity, utilization = %v, %v; want %d, %v", id, got["capacity"], got["utilization"], c, u)
			}
		} else if _, has := got["utilization"]; has {
			t.Errorf("%s has utilization without capacity: %v", id, got)
		}
		var one map[string]any
		getJSON(t, base+"/v1/spaces/"+id, &one)
		if fmt.Sprint(one) != fmt.Sprint(got) {
			t.Errorf("/v1/spaces/%s = %v, want the list's %v", id, one, got)
		}
	}

	// Instants: random ones, every tenth entry's ts exactly and 1 ms before it, the
	// horizon itself, and before anything happened.
	instants := []int64{first - 60_000, horizon, horizon - 1, last + 5_000}
	for i := 0; i < 40; i++ {
		instants = append(instants, first-2_000+rng.Int64N(last-first+4_000))
	}
	for i, e := range m.ents {
		if i%10 == 0 {
			instants = append(instants, e.ts, e.ts-1)
		}
	}
	zones := []*time.Location{time.UTC, time.FixedZone("", 2*3600), time.FixedZone("", -5*3600-1800)}
	for i, at := range instants {
		id := m.order[i%len(m.order)]
		s := time.UnixMilli(at).In(zones[i%len(zones)]).Format(time.RFC3339Nano)
		var got atDoc
		getJSON(t, base+"/v1/spaces/"+id+"/occupancy?at="+url.QueryEscape(s), &got)
		want := atDoc{Space: id, At: payload.FormatMS(at), Occupancy: valueAt(tl[id], at)}
		if got != want {
			t.Errorf("occupancy %s at %s (H %s): got %+v, want %+v", id, s, payload.FormatMS(horizon), got, want)
		}
	}

	// Buckets over ranges that straddle the horizon, with odd intervals.
	for _, c := range []struct{ start, end, interval int64 }{
		{first - 90_000, last + 90_000, 60_000},
		{first + 1, last - 1, 7 * 60_000},
		{first - 1000, horizon + 12_345, 333},
		{horizon - 100_000, horizon + 100_000, 10_000},
		{first, first + 1, 1},
	} {
		if c.end <= c.start {
			continue
		}
		for _, id := range m.order {
			var got []bucketDoc
			q := fmt.Sprintf("%s/v1/spaces/%s/counts?start=%s&end=%s&interval=%s", base, id,
				url.QueryEscape(payload.FormatMS(c.start)), url.QueryEscape(payload.FormatMS(c.end)), time.Duration(c.interval)*time.Millisecond)
			getJSON(t, q, &got)
			// Calendar buckets (UTC: no time_zone in the topology), up to now.
			want := modelBuckets(tl[id], refmodel.CalendarBounds(time.UTC, c.start, c.end, c.interval, now))
			if len(got) != len(want) {
				t.Errorf("counts %s %v: %d buckets, want %d", id, c, len(got), len(want))
				continue
			}
			bad := 0
			for i := range got {
				if got[i] != want[i] && bad < 3 {
					bad++
					t.Errorf("counts %s %v bucket %d: got %+v, want %+v", id, c, i, got[i], want[i])
				}
			}
		}
	}

	// Per-DPU statistics.
	var dpus []tracker.DPUStat
	getJSON(t, base+"/v1/dpus", &dpus)
	var wantD []tracker.DPUStat
	names := map[string]bool{}
	for _, d := range stackTopology.DPUs {
		names[d.ID] = true
	}
	for d := range m.accepted {
		names[d] = true
	}
	for d := range names {
		st := tracker.DPUStat{DPU: d, Accepted: m.accepted[d], Duplicates: m.dups[d], Parked: m.parked[d], Gaps: m.gaps(d)}
		// The statistics are continued in memory across the reopen: all since start.
		st.SinceStart = tracker.DPUCounts{Accepted: st.Accepted, Duplicates: st.Duplicates, Parked: st.Parked, Gaps: st.Gaps}
		if ts, ok := m.lastTS[d]; ok {
			st.LastEvent, st.ClockSkewMS = payload.FormatMS(ts), m.skew[d]
		}
		if r, ok := m.recv[d]; ok {
			st.LastReceived = payload.FormatMS(r)
		}
		wantD = append(wantD, st)
	}
	sort.Slice(wantD, func(i, j int) bool { return wantD[i].DPU < wantD[j].DPU })
	if fmt.Sprint(dpus) != fmt.Sprint(wantD) {
		t.Errorf("/v1/dpus:\n got %+v\nwant %+v", dpus, wantD)
	}
}

func TestHTTPOverRealStack(t *testing.T) {
	seeds := []uint64{1, 2}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runStack(t, seed) })
	}
}

func runStack(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	const settle = 10 * 60_000
	t0 := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC).UnixMilli()
	dir := t.TempDir()
	clock := t0 - 30*60_000
	openStore := func() *buffer.Store {
		st, err := buffer.Open(buffer.Options{Dir: dir, Logger: zerolog.Nop(), MinFreeBytes: -1,
			Now: func() time.Time { return time.UnixMilli(clock) }})
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		return st
	}
	opts := occupancy.Options{SettleAfter: settle, LateEvents: occupancy.LateApply, ClampNegative: true}
	st := openStore()
	version := t0 - 60*60_000
	if err := st.PutVersion(occupancy.Version{At: version, Topology: stackTopology}); err != nil {
		t.Fatal(err)
	}
	h0 := version - settle // a new store's horizon (DESIGN 3)
	q := &stack{stats: tracker.NewDPUStats(), clock: clock}
	q.open(t, st, opts)
	s := startServer(t, "tok", q, nil, zerolog.Nop(), q.now)
	base := "http://" + s.Addr()
	m := newModel(stackTopology)
	seq := map[string]int64{}
	defer func() {
		if q.st != nil {
			q.st.Close()
		}
	}()

	// Phase 1: about 20 minutes of crossings, reordered and partly redelivered, and an
	// event of a DPU no version maps (parked: counted nowhere).
	evs := genCrossings(rng, t0, 800, seq)
	evs = append(evs, occupancy.Event{DPU: "d-new", ID: "1", TS: t0 + 5_000, Direction: 1, Received: t0 + 5_100})
	q.setNow(evs[len(evs)-2].TS + 30_000)
	deliver(t, rng, q, m, evs)
	first, last := evs[0].TS, evs[len(evs)-2].TS
	t.Run("pending", func(t *testing.T) { compareAll(t, rng, base, m, h0, first, last, q.now().UnixMilli()) })

	// Phase 2: manual resets over HTTP (a floor to 0 clears its rooms; a room to 5
	// alone), then more crossings after them.
	resetAt := evs[len(evs)-2].TS + 30_000
	post := func(space, body string, wantStatus int) {
		t.Helper()
		r := do(t, "POST", base+"/v1/spaces/"+space+"/reset", "Bearer tok", body)
		if r.status != wantStatus {
			t.Fatalf("reset %s %s: status %d, want %d: %s", space, body, r.status, wantStatus, r.body)
		}
	}
	post("f1", `{"occupancy": 0}`, 200)
	m.reset("f1", resetAt, 0)
	post("room-c", fmt.Sprintf(`{"occupancy": 5, "ts": %q}`, payload.FormatMS(resetAt+500)), 200)
	m.reset("room-c", resetAt+500, 5)
	post("nope", `{"occupancy": 0}`, 404)
	more := genCrossings(rng, resetAt+1_000, 300, seq)
	q.setNow(more[len(more)-1].TS + 10_000)
	deliver(t, rng, q, m, more)
	last = more[len(more)-1].TS
	t.Run("after resets", func(t *testing.T) { compareAll(t, rng, base, m, h0, first, last, q.now().UnixMilli()) })

	// Phase 3: the horizon moves into the middle of the data (queries straddle
	// settled rows in Badger and the pending timeline), then past all of it.
	mid := first + (last-first)/2 + 1
	q.tick(t, mid+settle)
	t.Run("half settled", func(t *testing.T) { compareAll(t, rng, base, m, mid, first, last, q.now().UnixMilli()) })
	post("hq", fmt.Sprintf(`{"occupancy": 0, "ts": %q}`, payload.FormatMS(mid-1)), 400)

	end := last + 60_000
	q.tick(t, end+settle)
	t.Run("all settled", func(t *testing.T) { compareAll(t, rng, base, m, end, first, last, q.now().UnixMilli()) })

	// Phase 4: close and reopen the store and the engine: the same answers.
	if err := q.st.Close(); err != nil {
		t.Fatal(err)
	}
	q.setNow(end + settle + 1)
	q.open(t, openStore(), opts)
	t.Run("reopened", func(t *testing.T) { compareAll(t, rng, base, m, end, first, last, q.now().UnixMilli()) })

	// The model and the gateway agree on something non-trivial.
	tl := m.timeline()
	var total, clamped int
	for _, pts := range tl {
		total += len(pts)
		for _, p := range pts {
			if p.fromEvent && p.in == 0 && p.out == 0 {
				clamped++
			}
		}
	}
	if total < 1000 || clamped == 0 {
		t.Errorf("weak scenario: %d timeline points, %d clamped", total, clamped)
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Errorf("server not on loopback: %s", base)
	}
}
