// Package tracker owns "store durably, then apply": it holds the occupancy engine
// and the event store and the locks around them, and is the one way in for every
// path that changes occupancy — the MQTT and embedded-broker ingest, HTTP push,
// import, manual resets, topology versions (start, SIGHUP, import) and the engine
// tick. It answers the queries (current occupancy, occupancy at an instant, counts
// buckets), keeps the per-DPU statistics, and runs the change feed that the outputs
// (MQTT, the HTTP stream, metrics) subscribe to.
//
// Locks. mu serialises every engine call. topoMu is held shared by Ingest from the
// Mappable check to engine.Apply and exclusively by AddVersion, so the parked flag
// stored with an event always agrees with the engine. rewriteMu is held shared by a
// query while it reads settled rows from the store outside mu, and exclusively by
// Rewind, the only operation that rewrites settled rows (import). A query prepares
// under mu (it snapshots the horizon H and folds the pending part) and reads the
// rows before H after releasing it: every Tick commits the rows it settles before
// it releases mu, so those rows are in the store before any query can see the H
// that excludes them from the engine (occupancy/query.go).
//
// Durability. Ingest returns only once the events are durable (buffer.Append, a
// synced group commit) and applied. A late event's correction lives only in the
// engine until the next tick commits it, and a rebuild does not replay events
// before the horizon, so the store keeps a late mark with every event stored late
// (written in the same append) until that commit, and the engine corrects for the
// marked events again at start. An event that became late after the check, and so
// has no mark, is committed (Tick) before Ingest returns. The caller acknowledges
// after Ingest returned without error, never before.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Store is what the tracker needs from durable storage (*buffer.Store): the
// engine's reads, the durable append with dedup, and the writes of resets, topology
// versions and settlements.
type Store interface {
	occupancy.Store
	Append(ctx context.Context, evs []occupancy.Event, parked []bool) ([]buffer.AppendResult, error)
	// AppendMixed stores events and reports (DESIGN 2a) in one group commit, with
	// Append's promise; the overlap and counter-reset checks of the reports are
	// atomic with it.
	AppendMixed(ctx context.Context, evs []occupancy.Event, evParked []bool,
		reps []occupancy.Report, repParked []bool) ([]buffer.AppendResult, []buffer.ReportResult, error)
	ParkedCount() int
	PutReset(r occupancy.Reset) error
	PutVersion(v occupancy.Version) error
	Commit(st occupancy.Settlement) error
}

// Options configure a Tracker. Store is required.
type Options struct {
	Store  Store
	Engine occupancy.Options
	// MaxParked is storage.max_parked: an event of a DPU no topology version maps is
	// rejected (unknown_dpu) once this many are parked, counting those on their way
	// to the store; 0: left to the store, which enforces its own bound
	// (buffer.Options.MaxParked) in the same write.
	MaxParked int
	// Topology is the configured topology. Open stores it as a new version in force
	// from now unless it equals the latest stored version; with KeepStored (import)
	// only into a store that has no version yet. Nil: the stored versions only.
	Topology   *occupancy.TopologyConfig
	KeepStored bool
	// TopologyValid says Topology was validated already (config.LoadConfig does):
	// Open does not validate a 100,000-DPU topology a second time.
	TopologyValid bool
	// MaxFutureSkew bounds how far in the future a manual reset may be dated.
	MaxFutureSkew time.Duration
	// Tick is the engine tick of Run (engine.tick; default 1s). Ticks, when set,
	// replaces the ticker: every value received runs one tick (tests).
	Tick  time.Duration
	Ticks <-chan time.Time
	// Stats are the per-DPU statistics to continue (nil: new ones).
	Stats *DPUStats
	// StatsStore, when set, keeps the per-DPU statistics across restarts: Open
	// continues the stored ones, Run saves those that changed every StatsInterval
	// (default DefaultStatsInterval), SaveStats(true) at a clean stop.
	StatsStore    StatsStore
	StatsInterval time.Duration
	// QuietAfter is health.dpu_quiet_after (0: DefaultQuietAfter); a DPU's own
	// quiet_after overrides it.
	QuietAfter time.Duration
	// Metrics (nil: a fresh set nobody reads) and Logger.
	Metrics *metrics.Metrics
	Logger  zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Tracker holds the engine and the store; every method is safe for concurrent use.
type Tracker struct {
	store   Store
	log     zerolog.Logger
	now     func() time.Time
	metrics *metrics.Metrics
	stats   *DPUStats
	skew    int64 // ms
	ticks   <-chan time.Time

	topoMu    sync.RWMutex
	mu        sync.Mutex // the engine, lastAt and the feed's order
	eng       *occupancy.Engine
	lastAt    int64 // At of the latest stored version
	maxParked int
	rewriteMu sync.RWMutex

	parkedInFlight atomic.Int64 // parked events between the check and the store

	statsStore StatsStore
	statsEvery time.Duration
	saveMu     sync.Mutex // one SaveStats at a time
	quietAfter time.Duration
	sizes      atomic.Pointer[Sizes]

	tickMu    sync.Mutex // one tick at a time
	tick      atomic.Int64
	tickReset chan time.Duration
	lastTick  atomic.Int64 // Unix ns when the last tick ended

	feed feed

	// Errors of the tick and of Apply, once per 10 s each, with a suppressed count.
	tickErr, applyErr *lograte.Logger
}

// ErrBadReset is wrapped by Reset for a reset the engine refuses (ts before the
// settled horizon or too far in the future, negative occupancy, ...).
var ErrBadReset = errors.New("bad reset")

// Open rebuilds the engine from the store (storing the configured topology as a new
// version first when it is one) and returns the tracker. Nothing runs until Run.
func Open(opts Options) (*Tracker, error) {
	if opts.Store == nil {
		return nil, errors.New("tracker: a store is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Stats == nil {
		opts.Stats = NewDPUStats()
	}
	t := &Tracker{
		store:     opts.Store,
		log:       opts.Logger,
		now:       opts.Now,
		metrics:   opts.Metrics,
		stats:     opts.Stats,
		skew:      opts.MaxFutureSkew.Milliseconds(),
		ticks:     opts.Ticks,
		maxParked: opts.MaxParked,
		tickReset: make(chan time.Duration, 1),
		tickErr:   lograte.New(opts.Logger, zerolog.ErrorLevel, 10*time.Second),
		applyErr:  lograte.New(opts.Logger, zerolog.ErrorLevel, 10*time.Second),

		statsStore: opts.StatsStore,
		statsEvery: opts.StatsInterval,
		quietAfter: opts.QuietAfter,
	}
	if t.statsEvery <= 0 {
		t.statsEvery = DefaultStatsInterval
	}
	t.tick.Store(int64(opts.Tick))
	now := t.nowMS()
	versions, err := opts.Store.Versions()
	if err != nil {
		return nil, fmt.Errorf("read topology versions: %w", err)
	}
	var added *occupancy.Version
	if opts.Topology != nil && (!opts.KeepStored || len(versions) == 0) {
		if v, ok := nextVersion(versions, *opts.Topology, now); ok {
			if !opts.TopologyValid {
				if err := validate(*opts.Topology); err != nil {
					return nil, err
				}
			}
			added = &v
			versions = append(versions, v)
		}
	}
	if len(versions) > 0 {
		t.lastAt = versions[len(versions)-1].At
	}
	// A new version is stored while the engine is rebuilt (it only reads the store),
	// and before anything can refer to it.
	var stored chan error
	if added != nil {
		stored = make(chan error, 1)
		go func() { stored <- opts.Store.PutVersion(*added) }()
	}
	eng, err := occupancy.Open(opts.Engine, withVersions(opts.Store, versions), now)
	if stored != nil {
		if perr := <-stored; perr != nil {
			return nil, fmt.Errorf("store topology version: %w", perr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("rebuild engine from storage: %w", err)
	}
	t.eng = eng
	t.metrics.SetSpaces(eng.Spaces())
	if t.statsStore != nil {
		if err := t.loadStats(); err != nil {
			return nil, fmt.Errorf("continue DPU statistics: %w", err)
		}
	}
	tc := eng.Topology().Config()
	t.stats.SetTopology(topologyDPUs(tc, versions, t.lastAt), t.quietAfter, now)
	t.setSizes(tc)
	t.metrics.LastEventSource(t.stats.LastReport)
	return t, nil
}

func (t *Tracker) nowMS() int64 { return t.now().UnixMilli() }

// nextVersion returns tc as a new version in force from now (after the latest
// stored one), or ok false when tc equals the latest stored version.
func nextVersion(versions []occupancy.Version, tc occupancy.TopologyConfig, now int64) (occupancy.Version, bool) {
	at := now
	if n := len(versions); n > 0 {
		last := versions[n-1]
		if last.Topology.Equal(tc) {
			return occupancy.Version{}, false
		}
		at = max(at, last.At+1)
	}
	return occupancy.Version{At: at, Topology: tc}, true
}

// validate refuses a topology the engine could not compile: a stored version is
// loaded again at every start.
func validate(tc occupancy.TopologyConfig) error {
	if ps := tc.Validate(); len(ps) > 0 {
		return fmt.Errorf("topology: %w", &occupancy.ProblemsError{Problems: ps})
	}
	return nil
}

// versionsRead is a store whose first Versions call answers with the versions Open
// has just read, so that occupancy.Open does not decode them all again (~0.3 s for a
// 100,000-DPU topology); every later call reads the store.
type versionsRead struct {
	Store
	first atomic.Pointer[[]occupancy.Version]
}

func withVersions(store Store, vs []occupancy.Version) *versionsRead {
	s := &versionsRead{Store: store}
	s.first.Store(&vs)
	return s
}

func (s *versionsRead) Versions() ([]occupancy.Version, error) {
	if vs := s.first.Swap(nil); vs != nil {
		return *vs, nil
	}
	return s.Store.Versions()
}

// ---- topology versions ----

// AddVersion makes tc the topology in force from now: validated, stored, then
// applied (DESIGN 1: a version moving a space carries its count; a removed space's
// outputs are cleared through the change feed). A topology equal to the one in force
// changes nothing (added false). This is the one place a running gateway stores a
// version: the start (through Open), SIGHUP and import all come here.
func (t *Tracker) AddVersion(tc occupancy.TopologyConfig) (change occupancy.VersionChange, added bool, err error) {
	if err := validate(tc); err != nil {
		return change, false, err
	}
	t.topoMu.Lock()
	defer t.topoMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.eng.Topology().Config().Equal(tc) {
		return change, false, nil
	}
	now := t.nowMS()
	v := occupancy.Version{At: max(now, t.lastAt+1), Topology: tc}
	if err := t.store.PutVersion(v); err != nil {
		return change, false, fmt.Errorf("store topology version: %w", err)
	}
	t.lastAt = v.At
	change, err = t.eng.AddVersion(v, now)
	if err != nil {
		return change, true, fmt.Errorf("apply topology version: %w", err)
	}
	t.changedLocked()
	t.stats.SetTopology(topologyDPUs(tc, nil, v.At), t.quietAfter, now)
	t.setSizes(tc)
	t.feed.version(change.Removed)
	t.metrics.RemoveSpaces(change.Removed)
	t.log.Info().Strs("added", change.Added).Strs("removed", change.Removed).
		Strs("moved", change.Moved).Int("unparked", change.Unparked).
		Msg("new topology version in force")
	return change, true, nil
}

// Topology returns the topology in force.
func (t *Tracker) Topology() occupancy.TopologyConfig {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eng.Topology().Config()
}

// ---- resets, hold, rewind ----

// Reset stores a manual reset, then applies it. r.TS 0 means now. A reset before the
// settled horizon, too far in the future or with a negative occupancy is
// ErrBadReset; an unknown space is occupancy.ErrUnknownSpace.
func (t *Tracker) Reset(r occupancy.Reset) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.nowMS()
	if r.TS == 0 {
		r.TS = now
	}
	if r.Occupancy < 0 {
		return fmt.Errorf("%w: occupancy must be >= 0, got %d", ErrBadReset, r.Occupancy)
	}
	if _, ok := t.eng.Current(r.Space); !ok {
		return fmt.Errorf("%w: %q", occupancy.ErrUnknownSpace, r.Space)
	}
	if h := t.eng.Horizon(); r.TS < h {
		return fmt.Errorf("%w: ts %s is before the settled horizon %s", ErrBadReset,
			payload.FormatMS(r.TS), payload.FormatMS(h))
	}
	if r.TS > now+t.skew {
		return fmt.Errorf("%w: ts %s is in the future", ErrBadReset, payload.FormatMS(r.TS))
	}
	if err := t.store.PutReset(r); err != nil {
		return fmt.Errorf("store reset: %w", err)
	}
	if err := t.eng.Reset(r, now); err != nil {
		if errors.Is(err, occupancy.ErrUnknownSpace) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrBadReset, err)
	}
	t.changedLocked()
	return nil
}

// Hold keeps the settled horizon still for settle_after from now: called on every
// broker (re)connect, so a backlog the broker delivers now is pending, not late.
func (t *Tracker) Hold() {
	t.mu.Lock()
	t.eng.Hold(t.nowMS())
	t.mu.Unlock()
}

// Rewind recomputes the true timeline and the settled rows from `from` on and
// commits them (import, after Backfill: the one way to rewrite history). Queries
// reading settled rows wait for it.
func (t *Tracker) Rewind(from int64) error {
	t.rewriteMu.Lock()
	defer t.rewriteMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.eng.Rewind(from, t.nowMS())
	if err != nil {
		return fmt.Errorf("recompute occupancy: %w", err)
	}
	if err := t.store.Commit(st); err != nil {
		return fmt.Errorf("store recomputed occupancy: %w", err)
	}
	t.changedLocked()
	return nil
}

// ---- tick ----

// TickStats is what one tick left: the settled horizon, the pending entries and the
// parked events.
type TickStats struct {
	Now, Horizon int64
	Pending      int
	Parked       int
}

// Tick runs one engine tick: due daily resets, the horizon moves to now -
// settle_after (unless held), and what settled is committed (rows, checkpoint,
// unparked events in one write) before the engine lock is released. Subscribers of
// the change feed are told (Subscription.Ticked).
func (t *Tracker) Tick() (TickStats, error) {
	t.tickMu.Lock()
	defer t.tickMu.Unlock()
	now := t.nowMS()
	var err error
	t.mu.Lock()
	st, ok := t.eng.Tick(now)
	if ok {
		if err = t.store.Commit(st); err != nil {
			err = fmt.Errorf("commit settlement: %w", err)
			t.tickErr.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(err) }, "tick")
		}
	}
	t.changedLocked()
	ts := TickStats{Now: now, Horizon: t.eng.Horizon(), Pending: t.eng.Pending()}
	t.mu.Unlock()
	ts.Parked = t.store.ParkedCount()
	t.stats.CheckQuiet(now)
	h := t.stats.Health()
	t.metrics.DPUs.Set(float64(h.DPUs))
	t.metrics.DPUsQuiet.Set(float64(h.Quiet))
	t.metrics.SettleLag.Set(float64(now-ts.Horizon) / 1000)
	t.metrics.PendingEntries.Set(float64(ts.Pending))
	t.metrics.EventsParked.Set(float64(ts.Parked))
	t.feed.ticked()
	t.lastTick.Store(time.Now().UnixNano())
	return ts, err
}

// LastTick is when the last tick ended (zero before the first): a watchdog's proof
// that the tick loop is alive.
func (t *Tracker) LastTick() time.Time {
	if ns := t.lastTick.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// TickInterval is the interval of Run's ticker (engine.tick, as reloaded).
func (t *Tracker) TickInterval() time.Duration {
	if d := time.Duration(t.tick.Load()); d > 0 {
		return d
	}
	return time.Second
}

// SetTick changes the interval of Run's ticker (SIGHUP: engine.tick).
func (t *Tracker) SetTick(d time.Duration) {
	if d <= 0 || time.Duration(t.tick.Swap(int64(d))) == d {
		return
	}
	select {
	case t.tickReset <- d:
	default:
	}
}

// Run ticks at the engine tick (or at every value of Options.Ticks) and saves the
// per-DPU statistics every StatsInterval until ctx ends.
func (t *Tracker) Run(ctx context.Context) {
	if t.statsStore != nil {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.saveLoop(ctx)
		}()
		defer wg.Wait()
	}
	if t.ticks != nil {
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.ticks:
				_, _ = t.Tick()
			}
		}
	}
	tk := time.NewTicker(t.TickInterval())
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-t.tickReset:
			tk.Reset(d)
		case <-tk.C:
			_, _ = t.Tick()
		}
	}
}

// saveLoop saves the per-DPU statistics every statsEvery until ctx ends.
func (t *Tracker) saveLoop(ctx context.Context) {
	tk := time.NewTicker(t.statsEvery)
	defer tk.Stop()
	failed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			err := t.SaveStats(false)
			switch {
			case err != nil && !failed:
				t.log.Warn().Err(err).Msg("saving DPU statistics failed; retrying")
			case err == nil && failed:
				t.log.Info().Msg("DPU statistics saved again")
			}
			failed = err != nil
		}
	}
}

// Sizes are the sizes of the topology in force.
type Sizes struct{ Spaces, Doorways, DPUs int }

func (t *Tracker) setSizes(tc occupancy.TopologyConfig) {
	t.sizes.Store(&Sizes{Spaces: len(tc.Spaces), Doorways: len(tc.Doorways), DPUs: len(tc.DPUs)})
}

// Sizes returns the sizes of the topology in force.
func (t *Tracker) Sizes() Sizes { return *t.sizes.Load() }

// Health returns the DPU health summary (quiet DPUs), as of the last tick.
func (t *Tracker) Health() Health { return t.stats.Health() }

// QuietDPUs returns the number of quiet DPUs and of the DPUs of the topology in
// force, as of the last tick.
func (t *Tracker) QuietDPUs() (quiet, total int) {
	h := t.stats.Health()
	return h.Quiet, h.DPUs
}
