package occupancy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Engine design notes.
//
// Timeline order. Within a space, entries are ordered by (ts, class, name, tail):
// at one millisecond a late-event correction comes first (it sets the value at the
// horizon), then DPU events by (DPU id, then id-less events before events with an
// id, +1 before -1 when id-less, ids as strings) — exactly the byte order of
// Event.Key — then topology moves, daily resets and manual resets (each by the id
// of the space they come from). Rows of one space at one ms get Seq 0, 1, ... in
// this order.
//
// Pending state. Each space keeps its entries with ts >= H in a chunked sorted list
// (plist.go) whose chunks carry composed value functions: in-order appends are O(1),
// an arrival k entries back costs O(log n + B + k/B) with B = 126 entries a chunk —
// never a rescan of the window. Tick settles entries with ts < new H into Rows.
// Entries are 24 bytes without pointers (event ids of up to 8 bytes packed, longer
// ones in Engine.long), so the pending window costs the garbage collector nothing
// to scan and holds no event or payload memory alive.
//
// Durability. Everything the engine cannot rebuild from the Store (the horizon,
// values at H, pending corrections, suspect intervals, moves) is in the Checkpoint
// committed with the rows. Tick returns true when that state changed even if H did
// not move (a late correction, an unparked event, a new version), so the gateway
// commits within one tick. Events before the checkpoint's horizon are not replayed
// on start, so a late event's correction would be lost by a crash before that
// commit; the store therefore keeps every event stored late in an index (Store.Late)
// until a settlement whose checkpoint includes its correction lists it in
// Corrected, and Open corrects for those again. Correcting twice is harmless: a
// correction is an absolute value, a replay of the stored events.
//
// Moves. A version moving space S to a new parent adds KindMove entries at
// max(v.At, H) on the old ancestors (-c) and the new ones (+c), c = S's value just
// before that instant; c follows later arrivals for the time before the move while
// the move is pending. A late-event replay across a settled move uses the count it
// settled with.

// LatePolicy says what happens to an event older than the settled horizon.
type LatePolicy string

const (
	LateApply LatePolicy = "apply"
	LateDrop  LatePolicy = "drop"
)

// Options configure an Engine.
type Options struct {
	SettleAfter   int64 // ms
	LateEvents    LatePolicy
	ClampNegative bool
}

// ApplyResult counts what Apply did with a batch: Applied events entered the pending
// timeline, Late ones were before the horizon (corrected under apply, ignored under
// drop), Parked ones belong to DPUs no topology version maps yet.
type ApplyResult struct{ Applied, Late, Parked int }

// VersionChange reports what a new topology version changed.
type VersionChange struct {
	Added, Removed, Moved []string
	Unparked              int
}

// Occupancy is the current state of one space.
type Occupancy struct {
	Space, Name  string
	Occupancy    int64
	Capacity     int64 // 0 = none
	Updated      int64 // Unix ms of last change
	SettledUntil int64 // Unix ms (= horizon)
}

// ErrUnknownSpace is wrapped by At, Counts and Reset for a space no version knows.
var ErrUnknownSpace = errors.New("unknown space")

// MaxBuckets bounds one Counts query.
const MaxBuckets = 100_000

type version struct {
	at   int64
	topo *Topology
	l2g  []int32 // topology space index -> global space index
}

// dpuVer is a DPU's mapping in one version: the global spaces a +1 crossing
// changes, precomputed.
type dpuVer struct {
	vi   int32
	effs []gEff
}

// dpuMap is the mapping of one event: the DPU's index (the ref of its entries)
// and the spaces it changes.
type dpuMap struct {
	ref  int32
	effs []gEff
}

type gEff struct {
	g int32
	d int32
}

// dpuSlot is one DPU in dpuTab: 64 bytes without pointers, so the lookup of an
// event's DPU (key comparison) and its mapping share one cache line. A DPU mapped by
// one version with at most dpuEffInline effects (the common case) keeps that
// mapping inline; otherwise ext indexes its mappings in Engine.dpuExt.
type dpuSlot struct {
	key  [dpuInline]byte // the id when it fits; else klen is dpuLongKey (see dpuNames)
	klen uint8
	n    uint8 // inline effects
	_    [2]byte
	vi   int32 // version of the inline mapping
	eff  [dpuEffInline]gEff
	ext  int32 // index in Engine.dpuExt, -1 when the mapping is inline
	_    [4]byte
}

const (
	dpuEffInline = 3
	dpuLongKey   = 0xFF
)

// gspace is one space's engine state, padded to 128 bytes: the fields an in-order
// append touches (updated, then the plist's tail fields) share the first cache line.
type gspace struct {
	updated int64
	pl      plist
	id      string
	cur     int   // index in the current topology, -1 when not in it
	capa    int64 // capacity in the current topology
	_       [24]byte
}

type interval struct{ Lo, Hi int64 }

type moveRec struct {
	TS     int64  `json:"ts"`
	Space  string `json:"space"`  // space whose value changes
	Origin string `json:"origin"` // the moved space
	Delta  int64  `json:"delta"`
	// Sign is -1 on the old ancestors, +1 on the new: Delta = Sign * the moved
	// space's count just before TS, kept up to date while TS is pending.
	Sign int64 `json:"sign"`
	og   int32 // global index of Origin
}

// entry is the timeline entry of m on m.Space.
func (m *moveRec) entry() entry {
	return valEntry(m.TS, m.og, int32(m.Delta), clsMove)
}

// engineState is the engine-private part of a checkpoint.
type engineState struct {
	Late        map[string][]interval `json:"late,omitempty"`
	Moves       []moveRec             `json:"moves,omitempty"`
	Corrections map[string]int64      `json:"corrections,omitempty"`
	// CorrectionCounts are the entrances and exits the corrections count.
	CorrectionCounts map[string][2]int64 `json:"correction_counts,omitempty"`
}

// Engine computes occupancy from events. It is not safe for concurrent use: the
// gateway serialises calls.
type Engine struct {
	opts  Options
	store Store

	versions []*version
	gidx     map[string]int32
	gs       []gspace
	dpuNames []string // DPU ids by index in dpuTab (the ref of their entries)
	dpuMaps  dpuIndex // DPU id -> index in dpuTab
	dpuTab   []dpuSlot
	dpuExt   [][]dpuVer // mappings of DPUs that do not fit their slot, by version
	sink     int64      // keeps the loads of Apply's look-ahead pass

	h         int64
	holdUntil int64
	lastGen   int64 // daily resets generated through this instant (inclusive)
	nextDaily int64 // earliest daily reset instant after lastGen

	parked    map[string]map[string]Event // dpu -> key -> event
	nParked   int                         // parked events and reports
	unparked  []Event
	corrected []Event // late events corrected since the last settlement

	parkedReps    map[string]map[repKey]Report // dpu -> parked reports
	unparkedReps  []Report
	correctedReps []Report          // late reports corrected since the last settlement
	cum           map[int32]*cumDPU // cumulative DPUs by index in dpuTab (engine_reports.go)

	late      map[int32][]interval
	trueCP    map[int32][]trueCP // true-value checkpoints (late.go)
	moves     []moveRec
	pendMoves int                  // moves with TS >= H
	rowsHint  int                  // rows settled by the last tick
	cpHint    int                  // values in the last checkpoint
	corr      map[int32]correction // pending corrections at the horizon
	dirty     bool                 // checkpoint state changed since the last settlement

	changedMark []bool
	changed     []int32
	reported    []int64
	reportedCap []int64

	cmp  lessFunc
	long longIDs // ids of more than 8 bytes of pending event entries
}

var errStop = errors.New("stop")

// Open rebuilds the engine from store: versions, the checkpoint, then the events,
// manual resets and daily resets after the horizon, and the parked events.
func Open(opts Options, store Store, now int64) (*Engine, error) {
	if opts.SettleAfter < 0 {
		return nil, fmt.Errorf("open engine: negative settle_after %d", opts.SettleAfter)
	}
	if opts.LateEvents == "" {
		opts.LateEvents = LateApply
	}
	if opts.LateEvents != LateApply && opts.LateEvents != LateDrop {
		return nil, fmt.Errorf("open engine: late_events %q: want apply or drop", opts.LateEvents)
	}
	e := &Engine{
		opts:   opts,
		store:  store,
		gidx:   map[string]int32{},
		parked: map[string]map[string]Event{},
		late:   map[int32][]interval{},
		trueCP: map[int32][]trueCP{},
		corr:   map[int32]correction{},
		cum:    map[int32]*cumDPU{},

		parkedReps: map[string]map[repKey]Report{},
	}
	e.cmp = e.compare
	vs, err := store.Versions()
	if err != nil {
		return nil, fmt.Errorf("open engine: read versions: %w", err)
	}
	if len(vs) == 0 {
		return nil, errors.New("open engine: no topology version stored")
	}
	for _, v := range vs {
		if _, err := e.addVersion(v); err != nil {
			return nil, fmt.Errorf("open engine: %w", err)
		}
	}
	cp, ok, err := store.Checkpoint()
	if err != nil {
		return nil, fmt.Errorf("open engine: read checkpoint: %w", err)
	}
	var st engineState
	if ok {
		e.h = cp.Horizon
		for id, v := range cp.Values {
			e.gs[e.space(id)].pl.setBase(v, opts.ClampNegative)
		}
		if len(cp.State) > 0 {
			if err := json.Unmarshal(cp.State, &st); err != nil {
				return nil, fmt.Errorf("open engine: decode checkpoint state: %w", err)
			}
		}
	} else {
		// A new store: nothing is settled yet, so the last settle_after before the
		// first start is pending (DESIGN 3: a backlog DPUs send at installation is
		// not late). Reopened before its first checkpoint, everything stored is
		// pending too: H is the earlier of that and the earliest stored event or
		// report a version maps (a parked one counts once unparked, as a late one).
		e.h = vs[0].At - opts.SettleAfter
		err := store.Events(math.MinInt64, math.MaxInt64, func(ev Event) error {
			if !e.Mappable(ev.DPU, ev.TS) {
				return nil
			}
			e.h = min(e.h, ev.TS)
			return errStop
		})
		if err != nil && !errors.Is(err, errStop) {
			return nil, fmt.Errorf("open engine: read events: %w", err)
		}
		err = store.Reports(math.MinInt64, math.MaxInt64, func(r Report) error {
			if !e.Mappable(r.DPU, r.TS) {
				return nil
			}
			e.h = min(e.h, r.TS)
			return errStop
		})
		if err != nil && !errors.Is(err, errStop) {
			return nil, fmt.Errorf("open engine: read reports: %w", err)
		}
	}
	for id, ivs := range st.Late {
		e.late[e.space(id)] = ivs
	}
	e.moves = st.Moves
	for i := range e.moves {
		m := &e.moves[i]
		m.og = e.space(m.Origin)
		if m.TS >= e.h {
			e.pendMoves++
			e.insert(e.space(m.Space), m.entry(), true, now)
		}
	}
	for id, v := range st.Corrections {
		io := st.CorrectionCounts[id]
		e.setCorrection(e.space(id), correction{V: v, In: io[0], Out: io[1]}, now)
	}
	err = store.Resets(e.h, func(r Reset) error {
		e.insertReset(r, now)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open engine: read resets: %w", err)
	}
	e.lastGen = e.h - 1
	e.genDaily(now)
	err = store.Events(e.h, math.MaxInt64, func(ev Event) error {
		e.applyOne(ev, now, nil)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open engine: read events: %w", err)
	}
	var late []Event
	err = store.Parked(func(ev Event) error {
		if _, ok := e.mapEvent(ev.DPU, ev.TS); !ok {
			e.park(ev)
			return nil
		}
		e.unparked = append(e.unparked, ev)
		e.dirty = true
		if ev.TS < e.h {
			late = append(late, ev)
			return nil
		}
		e.applyOne(ev, now, nil)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open engine: read parked events: %w", err)
	}
	// Events stored late whose corrections no checkpoint holds yet (a crash came
	// before the commit): corrected again now, forgotten at the next commit. One
	// at or after the horizon (its correction's checkpoint never came, nor H's
	// move past it) was replayed with the events above.
	err = store.Late(func(ev Event) error {
		e.corrected = append(e.corrected, ev)
		e.dirty = true
		if ev.TS < e.h {
			late = append(late, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open engine: read late events: %w", err)
	}
	if err := e.reapplyReports(e.h, now, &late); err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	if err := e.correctLate(late, now); err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	e.holdUntil = now + opts.SettleAfter
	// The change feed starts from the rebuilt state.
	e.changed = e.changed[:0]
	for i := range e.changedMark {
		e.changedMark[i] = false
	}
	e.reported = make([]int64, len(e.gs))
	e.reportedCap = make([]int64, len(e.gs))
	for g := range e.gs {
		s := &e.gs[g]
		e.reported[g] = s.pl.current()
		e.reportedCap[g] = s.capa
		if s.updated == 0 {
			s.updated = now
		}
	}
	return e, nil
}

// space returns the global index of id, registering it when new.
func (e *Engine) space(id string) int32 {
	if g, ok := e.gidx[id]; ok {
		return g
	}
	g := int32(len(e.gs))
	e.gidx[id] = g
	e.gs = append(e.gs, gspace{id: id, cur: -1})
	e.changedMark = append(e.changedMark, false)
	e.reported = append(e.reported, 0)
	e.reportedCap = append(e.reportedCap, 0)
	return g
}

func (e *Engine) current() *version { return e.versions[len(e.versions)-1] }

// compare orders two entries of one space in timeline order.
func (e *Engine) compare(a, b *entry) int {
	switch {
	case a.ts < b.ts:
		return -1
	case a.ts > b.ts:
		return 1
	case a.cls != b.cls:
		if a.cls < b.cls {
			return -1
		}
		return 1
	}
	if a.ref != b.ref {
		var an, bn string
		if a.cls == clsEvent || a.cls == clsReport {
			an, bn = e.dpuNames[a.ref], e.dpuNames[b.ref]
		} else if a.cls != clsCorrection {
			an, bn = e.gs[a.ref].id, e.gs[b.ref].id
		}
		if c := strings.Compare(an, bn); c != 0 {
			return c
		}
	}
	if a.cls != clsEvent {
		if a.cls == clsReport { // a DPU's interval report before its cumulative one
			return cmpInt(int(a.dir), int(b.dir))
		}
		return 0
	}
	// Same DPU and ms: id-less events ('d') before events with an id ('i').
	switch {
	case a.idn == 0 && b.idn == 0:
		return cmpInt(int(uint8(a.dir)), int(uint8(b.dir)))
	case a.idn == 0:
		return -1
	case b.idn == 0:
		return 1
	case a.idn != idLong && b.idn != idLong:
		return cmpPacked(a.aux, a.idn, b.aux, b.idn)
	}
	return strings.Compare(e.entryID(a), e.entryID(b))
}

// entryID is the event id of an event entry ("" when it has none).
func (e *Engine) entryID(en *entry) string {
	if en.idn == idLong {
		return e.long.ids[en.aux]
	}
	return unpackID(en.aux, en.idn)
}

// longIDs holds the ids of more than 8 bytes of pending event entries, one slot
// per entry, freed when the entry leaves the pending timeline.
type longIDs struct {
	ids  []string
	free []uint64
}

func (t *longIDs) put(id string) uint64 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		t.ids[i] = id
		return i
	}
	t.ids = append(t.ids, id)
	return uint64(len(t.ids) - 1)
}

func (t *longIDs) release(i uint64) {
	t.ids[i] = ""
	t.free = append(t.free, i)
}

// releaseID frees the side-table slot of en's id, if it has one.
func (e *Engine) releaseID(en *entry) {
	if en.idn == idLong {
		e.long.release(en.aux)
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// insert puts en into the pending timeline of space g.
func (e *Engine) insert(g int32, en entry, replace bool, now int64) {
	s := &e.gs[g]
	changed, curChanged := s.pl.upsert(en, e.cmp, e.opts.ClampNegative, replace)
	if !changed {
		e.releaseID(&en) // a duplicate event
	}
	if curChanged {
		s.updated = now
		e.markChanged(g)
	}
	if changed && e.pendMoves > 0 {
		e.refreshMoves(g, en.ts, now)
	}
}

// refreshMoves keeps the count a pending move carries equal to the moved space's
// value just before the move, when an entry before it changed that value.
func (e *Engine) refreshMoves(g int32, ts int64, now int64) {
	for i := range e.moves {
		m := &e.moves[i]
		if m.TS < e.h || ts >= m.TS || m.og != g {
			continue
		}
		c := e.gs[g].pl.valueAt(m.TS-1, e.opts.ClampNegative)
		if d := m.Sign * c; d != m.Delta {
			m.Delta = d
			e.dirty = true
			e.insert(e.space(m.Space), m.entry(), true, now)
		}
	}
}

func (e *Engine) markChanged(g int32) {
	if !e.changedMark[g] {
		e.changedMark[g] = true
		e.changed = append(e.changed, g)
	}
}

// mapEvent returns the mapping of an event of dpu at ts (DESIGN section 1: the
// version in force at ts, else the earliest later version that knows the DPU), or nil.
func (e *Engine) mapEvent(dpu string, ts int64) (dpuMap, bool) {
	i, ok := e.dpuMaps.get(dpu, e.dpuTab, e.dpuNames)
	if !ok {
		return dpuMap{}, false
	}
	return e.mapSlot(i, ts)
}

// mapSlot is mapEvent for the DPU of dpuTab[i].
func (e *Engine) mapSlot(i int32, ts int64) (dpuMap, bool) {
	slot := &e.dpuTab[i]
	k := int32(e.versionAt(ts))
	if slot.ext < 0 {
		if slot.vi >= k {
			return dpuMap{ref: i, effs: slot.eff[:slot.n]}, true
		}
		return dpuMap{}, false
	}
	vl := e.dpuExt[slot.ext]
	j := sort.Search(len(vl), func(j int) bool { return vl[j].vi >= k })
	if j == len(vl) {
		return dpuMap{}, false
	}
	return dpuMap{ref: i, effs: vl[j].effs}, true
}

// mappings calls fnc with the effects of every mapping of the DPU of dpuTab[i].
func (e *Engine) mappings(i int32, fnc func(effs []gEff)) {
	slot := &e.dpuTab[i]
	if slot.ext < 0 {
		fnc(slot.eff[:slot.n])
		return
	}
	for _, v := range e.dpuExt[slot.ext] {
		fnc(v.effs)
	}
}

// versionAt is the index of the version in force at ts (the first one before all).
func (e *Engine) versionAt(ts int64) int {
	n := len(e.versions)
	if n == 1 || ts >= e.versions[n-1].at {
		return n - 1
	}
	k := sort.Search(n, func(i int) bool { return e.versions[i].at > ts }) - 1
	if k < 0 {
		k = 0
	}
	return k
}

// Horizon is the settled horizon H (Unix ms).
func (e *Engine) Horizon() int64 { return e.h }

// LatePolicy is what the engine does with events before the horizon (Options.LateEvents).
func (e *Engine) LatePolicy() LatePolicy { return e.opts.LateEvents }

// Mappable reports whether an event of dpu at ts maps through some version; false
// means Apply would park it.
func (e *Engine) Mappable(dpu string, ts int64) bool {
	_, ok := e.mapEvent(dpu, ts)
	return ok
}

// ParkedCount is the number of parked events and reports held.
func (e *Engine) ParkedCount() int { return e.nParked }

func (e *Engine) park(ev Event) {
	m := e.parked[ev.DPU]
	if m == nil {
		m = map[string]Event{}
		e.parked[ev.DPU] = m
	}
	k := string(ev.Key())
	if _, dup := m[k]; dup {
		return
	}
	m[k] = ev
	e.nParked++
}

// eventEntries calls fn with each space an event changes and its timeline entry
// (whose long id, if any, fn must store or release).
func (e *Engine) eventEntries(m dpuMap, ev *Event, fnc func(g int32, en entry)) {
	for _, ef := range m.effs {
		fnc(ef.g, e.eventEntry(m, ev, ef))
	}
}

// eventEntry is the timeline entry of ev (mapped through m) on the space of ef.
func (e *Engine) eventEntry(m dpuMap, ev *Event, ef gEff) entry {
	en := entry{ts: ev.TS, ref: m.ref, cls: clsEvent, dir: ev.Direction, d: int8(ef.d) * ev.Direction}
	if n := len(ev.ID); n <= 8 {
		en.aux, en.idn = packID(ev.ID), uint8(n)
	} else {
		en.aux, en.idn = e.long.put(ev.ID), idLong
	}
	return en
}

// applyOne inserts a mapped, not-late event or parks it. It returns what happened:
// 'a' applied, 'p' parked, 'l' late (appended to late when non-nil), 0 rejected.
func (e *Engine) applyOne(ev Event, now int64, late *[]Event) byte {
	m, ok := e.mapEvent(ev.DPU, ev.TS)
	return e.applyMapped(&ev, m, ok, now, late)
}

// applyMapped is applyOne with the event's mapping (ok false: none) looked up.
func (e *Engine) applyMapped(ev *Event, m dpuMap, ok bool, now int64, late *[]Event) byte {
	if ev.Direction != 1 && ev.Direction != -1 {
		return 0
	}
	if !ok {
		e.park(*ev)
		return 'p'
	}
	if ev.TS < e.h {
		if late != nil {
			*late = append(*late, *ev)
		}
		return 'l'
	}
	for _, ef := range m.effs {
		e.insert(ef.g, e.eventEntry(m, ev, ef), false, now)
	}
	return 'a'
}

// tally counts what applying one event or report did ('a', 'p', 'l'); it reports
// false for one that was ignored.
func (r *ApplyResult) tally(what byte) bool {
	switch what {
	case 'a':
		r.Applied++
	case 'p':
		r.Parked++
	case 'l':
		r.Late++
	default:
		return false
	}
	return true
}

// correctLate corrects the late inputs at the horizon under late_events apply.
func (e *Engine) correctLate(late []Event, now int64) error {
	if len(late) == 0 || e.opts.LateEvents != LateApply {
		return nil
	}
	return e.correct(late, now)
}

// applyBlock events are looked up together, so that the cache misses of their
// independent loads (DPU index slot, DPU slot, each space's state and tail chunk)
// overlap instead of following one another.
const applyBlock = 32

// Apply takes events that are already durable and deduplicated (late ones included).
func (e *Engine) Apply(evs []Event, now int64) (ApplyResult, error) {
	var res ApplyResult
	var late []Event
	var bad int
	var idx [applyBlock]int32
	var maps [applyBlock]dpuMap
	var mapped [applyBlock]bool
	for len(evs) > 0 {
		blk := evs[:min(len(evs), applyBlock)]
		evs = evs[len(blk):]
		e.dpuMaps.lookup(blk, idx[:len(blk)], e.dpuTab, e.dpuNames)
		var sink int64
		for i := range blk {
			mapped[i] = false
			if idx[i] < 0 {
				continue
			}
			maps[i], mapped[i] = e.mapSlot(idx[i], blk[i].TS)
			for _, ef := range maps[i].effs {
				sink += e.gs[ef.g].pl.touch()
			}
		}
		e.sink += sink
		for i := range blk {
			if !res.tally(e.applyMapped(&blk[i], maps[i], mapped[i], now, &late)) {
				bad++
			}
		}
	}
	if err := e.correctLate(late, now); err != nil {
		return res, fmt.Errorf("apply late events: %w", err)
	}
	if e.opts.LateEvents == LateApply {
		e.corrected = append(e.corrected, late...)
	}
	if bad > 0 {
		return res, fmt.Errorf("apply: %d events with a direction other than 1 or -1 ignored", bad)
	}
	return res, nil
}

// resetTargets lists the spaces a reset of space id at ts to value sets: the space
// and every space nested in it (in the version in force at ts) for 0, the space
// alone otherwise.
func (e *Engine) resetTargets(id string, ts int64, value int64) []int32 {
	g := e.space(id)
	if value != 0 {
		return []int32{g}
	}
	v := e.versions[e.versionAt(ts)]
	li, ok := v.topo.spaceIdx[id]
	if !ok {
		return []int32{g}
	}
	return v.global(v.topo.spaces[li].desc)
}

func (e *Engine) insertReset(r Reset, now int64) {
	origin := e.space(r.Space)
	for _, g := range e.resetTargets(r.Space, r.TS, r.Occupancy) {
		e.insert(g, valEntry(r.TS, origin, int32(r.Occupancy), clsManual), true, now)
	}
}

// Reset applies a manual reset (already stored) at r.TS >= Horizon.
func (e *Engine) Reset(r Reset, now int64) error {
	g, ok := e.gidx[r.Space]
	if !ok || e.gs[g].cur < 0 {
		return fmt.Errorf("reset %q: %w", r.Space, ErrUnknownSpace)
	}
	if r.TS < e.h {
		return fmt.Errorf("reset %q: ts %s is before the settled horizon %s", r.Space, fmtMS(r.TS), fmtMS(e.h))
	}
	if r.Occupancy < 0 || r.Occupancy > math.MaxInt32 {
		return fmt.Errorf("reset %q: occupancy %d out of range", r.Space, r.Occupancy)
	}
	e.insertReset(r, now)
	return nil
}

// Hold keeps the horizon still for SettleAfter from now (broker reconnect).
func (e *Engine) Hold(now int64) {
	if t := now + e.opts.SettleAfter; t > e.holdUntil {
		e.holdUntil = t
	}
}

// Tick generates due daily resets and advances the horizon to now-SettleAfter (unless
// held). When it returns true the Settlement must be committed (buffer.Commit).
func (e *Engine) Tick(now int64) (Settlement, bool) {
	e.genDaily(now)
	newH := now - e.opts.SettleAfter
	if now < e.holdUntil || newH <= e.h {
		if !e.dirty {
			return Settlement{}, false
		}
		return e.settlement(nil), true
	}
	rows := make([]Row, 0, e.rowsHint+e.rowsHint/4)
	for b := 0; b < len(e.gs); b += applyBlock {
		blk := e.gs[b:min(b+applyBlock, len(e.gs))]
		// Look ahead: the first chunks of a block of spaces load in parallel.
		var sink int64
		for i := range blk {
			sink += blk[i].pl.touchHead()
		}
		e.sink += sink
		for i := range blk {
			s := &blk[i]
			rows = s.pl.settle(newH, e.opts.ClampNegative, s.id, rows, e.releaseID)
		}
	}
	e.h = newH
	e.rowsHint = len(rows)
	clear(e.corr)
	e.pendMoves = 0
	for _, m := range e.moves {
		if m.TS >= e.h {
			e.pendMoves++
		}
	}
	return e.settlement(rows), true
}

func (e *Engine) settlement(rows []Row) Settlement {
	st := Settlement{Rows: rows, Unparked: e.unparked, UnparkedReports: e.unparkedReps, Corrected: e.corrected,
		CorrectedReports: e.correctedReps, Checkpoint: e.checkpoint()}
	e.unparked, e.unparkedReps, e.corrected, e.correctedReps = nil, nil, nil, nil
	e.dirty = false
	return st
}

func (e *Engine) checkpoint() Checkpoint {
	cp := Checkpoint{Horizon: e.h, Values: make(map[string]int64, e.cpHint)}
	for i := range e.gs {
		if s := &e.gs[i]; s.pl.base != 0 {
			cp.Values[s.id] = s.pl.base
		}
	}
	e.cpHint = len(cp.Values)
	var st engineState
	if len(e.late) > 0 {
		st.Late = map[string][]interval{}
		for g, ivs := range e.late {
			st.Late[e.gs[g].id] = ivs
		}
	}
	st.Moves = e.moves
	if len(e.corr) > 0 {
		st.Corrections = map[string]int64{}
		st.CorrectionCounts = map[string][2]int64{}
		for g, c := range e.corr {
			st.Corrections[e.gs[g].id] = c.V
			st.CorrectionCounts[e.gs[g].id] = [2]int64{c.In, c.Out}
		}
	}
	b, err := json.Marshal(st)
	if err == nil && string(b) != "{}" {
		cp.State = b
	}
	return cp
}

// Changed returns the spaces of the current topology whose current occupancy or
// capacity changed since the last call, in topology order.
func (e *Engine) Changed() []string {
	if len(e.changed) == 0 {
		return nil
	}
	v := e.current()
	var ids []string
	if len(e.changed)*16 >= len(v.l2g) {
		// Many changes: walk the topology in order (no sort).
		for _, g := range v.l2g {
			if e.changedMark[g] && e.report(g) {
				ids = append(ids, e.gs[g].id)
			}
		}
		for _, g := range e.changed {
			if e.changedMark[g] {
				e.report(g) // not in the current topology
			}
		}
	} else {
		var out []int32
		for _, g := range e.changed {
			if e.report(g) && e.gs[g].cur >= 0 {
				out = append(out, g)
			}
		}
		slices.SortFunc(out, func(a, b int32) int { return e.gs[a].cur - e.gs[b].cur })
		ids = make([]string, len(out))
		for i, g := range out {
			ids[i] = e.gs[g].id
		}
	}
	e.changed = e.changed[:0]
	return ids
}

// report clears g's change mark and reports whether its occupancy or capacity
// differ from what was last reported.
func (e *Engine) report(g int32) bool {
	e.changedMark[g] = false
	s := &e.gs[g]
	v, c := s.pl.current(), s.capa
	if v == e.reported[g] && c == e.reportedCap[g] {
		return false
	}
	e.reported[g], e.reportedCap[g] = v, c
	return true
}

func (e *Engine) occupancy(g int32) Occupancy {
	s := &e.gs[g]
	cs := e.current().topo.spaces[s.cur].cfg
	return Occupancy{Space: s.id, Name: cs.Name, Occupancy: s.pl.current(), Capacity: cs.Capacity,
		Updated: s.updated, SettledUntil: e.h}
}

// Current returns the current occupancy of a space of the current topology.
func (e *Engine) Current(space string) (Occupancy, bool) {
	g, ok := e.gidx[space]
	if !ok || e.gs[g].cur < 0 {
		return Occupancy{}, false
	}
	return e.occupancy(g), true
}

// Spaces returns every space of the current topology, in topology order.
func (e *Engine) Spaces() []Occupancy {
	v := e.current()
	out := make([]Occupancy, len(v.l2g))
	for i, g := range v.l2g {
		out[i] = e.occupancy(g)
	}
	return out
}

// Topology returns the current topology version.
func (e *Engine) Topology() *Topology { return e.current().topo }

// Pending returns the number of pending timeline entries over all spaces (an
// event is one entry in each space it changes). For the pending-entries metric.
func (e *Engine) Pending() int {
	n := 0
	for i := range e.gs {
		n += e.gs[i].pl.len()
	}
	return n
}
