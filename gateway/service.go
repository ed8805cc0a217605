package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Engine is what the gateway needs from the occupancy engine (*occupancy.Engine).
// The engine is not goroutine-safe; the Gateway serialises every call.
type Engine interface {
	Horizon() int64
	Mappable(dpu string, ts int64) bool
	Pending() int
	Apply(evs []occupancy.Event, now int64) (occupancy.ApplyResult, error)
	Reset(r occupancy.Reset, now int64) error
	AddVersion(v occupancy.Version, now int64) (occupancy.VersionChange, error)
	Hold(now int64)
	Tick(now int64) (occupancy.Settlement, bool)
	Changed() []string
	Current(space string) (occupancy.Occupancy, bool)
	Spaces() []occupancy.Occupancy
	At(space string, t int64) (int64, error)
	Counts(space string, start, end, interval int64) ([]occupancy.Bucket, error)
}

// Store is what the gateway needs from durable storage (*buffer.Store).
type Store interface {
	Append(ctx context.Context, evs []occupancy.Event, parked []bool) ([]buffer.AppendResult, error)
	ParkedCount() int
	PutReset(r occupancy.Reset) error
	PutVersion(v occupancy.Version) error
	Commit(st occupancy.Settlement) error
	PutDeadLetter(d buffer.DeadLetter) error
}

// Options wire a Gateway. Config, Store and Engine are required.
type Options struct {
	Config  config.Config
	Store   Store
	Engine  Engine
	Metrics *Metrics  // nil: a fresh NewMetrics()
	Stats   *DPUStats // nil: a fresh NewDPUStats()
	Logger  zerolog.Logger
	// Now is the clock (default time.Now). Tests inject one to drive the engine.
	Now func() time.Time
	// Ticks, when set, replaces the engine.tick ticker: every value received runs one
	// engine tick (tests drive ticks this way).
	Ticks <-chan time.Time
	// Workers is the number of ingest workers (default 8); each hands up to
	// BatchMessages messages to one buffer.Append.
	Workers       int
	BatchMessages int
}

// Gateway is the running MQTT side of occupancyd: the embedded broker (optional),
// the paho client (MQTT in and out), the ingest workers and the engine wrapper that
// serialises every engine call. It implements Querier for the HTTP API.
type Gateway struct {
	opts    Options
	store   Store
	metrics *Metrics
	stats   *DPUStats
	log     zerolog.Logger
	now     func() time.Time

	// mu serialises every engine call.
	mu  sync.Mutex
	eng Engine

	// topoMu: ingest holds it shared from the Mappable check to engine.Apply, a
	// topology version change holds it exclusively, so the parked flag stored with an
	// event always agrees with the engine's view.
	topoMu sync.RWMutex

	cfgMu        sync.RWMutex
	cfg          config.Config // current config (topology, capacities, tick, ... after reloads)
	names        derivedNames  // fixed by New: the keys they derive from need a restart
	pendingClear []string      // spaces removed while disconnected

	broker *Broker
	mqtt   *mqttClient
	ing    *ingester
	rej    *rateLog

	storageOpen atomic.Bool
	connected   atomic.Bool
	subscribed  atomic.Bool

	tickReset chan time.Duration
	tickMu    sync.Mutex   // one tick at a time
	lastTick  atomic.Int64 // Unix ns when the last tick ended (LastTick)

	runCtx    context.Context
	runCancel context.CancelFunc
	wg        sync.WaitGroup
	started   atomic.Bool
	closed    atomic.Bool
}

// derivedNames are the topic names that follow from the config.
type derivedNames struct {
	clientID      string
	statusTopic   string
	rejectedTopic string
	outputPrefix  string
	haPrefix      string
	haEnabled     bool
	filters       []string
}

func deriveNames(c config.Config) derivedNames {
	c.ApplyDefaults() // client id, status and rejected topics
	n := derivedNames{
		clientID:      c.MQTT.ClientID,
		statusTopic:   c.MQTT.StatusTopic,
		rejectedTopic: c.MQTT.RejectedTopic,
		outputPrefix:  c.MQTT.OutputPrefix,
		haPrefix:      c.MQTT.HomeAssistant.DiscoveryPrefix,
		haEnabled:     c.MQTT.HomeAssistant.Enabled,
		filters:       append([]string(nil), c.MQTT.EventsTopic...),
	}
	if n.outputPrefix == "" {
		n.outputPrefix = "occupancy"
	}
	if n.haPrefix == "" {
		n.haPrefix = "homeassistant"
	}
	if len(n.filters) == 0 {
		n.filters = []string{"dpu/+/events"}
	}
	return n
}

// New checks the options and builds a Gateway; nothing runs until Start.
func New(opts Options) (*Gateway, error) {
	if opts.Store == nil || opts.Engine == nil {
		return nil, errors.New("gateway: store and engine are required")
	}
	for i, f := range deriveNames(opts.Config).filters {
		if _, err := dpuSegment(f); err != nil {
			return nil, fmt.Errorf("mqtt.events_topic[%d]: %w", i, err)
		}
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Stats == nil {
		opts.Stats = NewDPUStats()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.BatchMessages <= 0 {
		opts.BatchMessages = 256
	}
	g := &Gateway{
		opts:      opts,
		store:     opts.Store,
		eng:       opts.Engine,
		metrics:   opts.Metrics,
		stats:     opts.Stats,
		log:       opts.Logger,
		now:       opts.Now,
		cfg:       opts.Config,
		names:     deriveNames(opts.Config),
		tickReset: make(chan time.Duration, 1),
		rej:       newRateLog(opts.Logger, time.Second),
	}
	g.storageOpen.Store(true)
	g.ing = newIngester(g, opts.Workers, opts.BatchMessages)
	return g, nil
}

func (g *Gateway) nowMS() int64 { return g.now().UnixMilli() }

// Config returns the config currently in force.
func (g *Gateway) Config() config.Config {
	g.cfgMu.RLock()
	defer g.cfgMu.RUnlock()
	return g.cfg
}

// Metrics returns the gateway's metrics (for the HTTP server).
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// StartBroker starts the embedded MQTT broker when mqtt.broker is empty; it is a
// no-op otherwise. Call it before Start.
func (g *Gateway) StartBroker() error {
	cfg := g.Config()
	if cfg.MQTT.Broker != "" || g.broker != nil {
		return nil
	}
	password, err := readPassword(cfg.MQTT.PasswordFile)
	if err != nil {
		return err
	}
	b, err := StartBroker(BrokerOptions{
		Listen:   cfg.MQTT.Embedded.Listen,
		Username: cfg.MQTT.Username,
		Password: password,
		Logger:   g.log,
		Events: &EventSink{
			Filters:  g.names.filters,
			Submit:   g.submitEmbedded,
			Stopping: g.ing.stopping,
		},
	})
	if err != nil {
		return err
	}
	g.broker = b
	return nil
}

// maxEmbeddedBacklog bounds the messages the embedded broker hands over that no
// worker has taken yet. submit never blocks (an external broker sends regardless),
// but here the broker is ours: past the bound, the hook waits, which stops reading
// from that client's connection until the workers catch up, so a client flooding
// unacknowledged messages cannot grow the queue without end.
const maxEmbeddedBacklog = 1 << 16

// submitEmbedded takes an event message from the embedded broker (eventHook).
func (g *Gateway) submitEmbedded(topic string, payload []byte, ack func()) bool {
	for g.ing.backlog() >= maxEmbeddedBacklog {
		select {
		case <-g.ing.stopping:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return g.ing.submit(inMsg{topic: topic, payload: payload, ack: ack, received: g.nowMS()})
}

// BrokerAddr is the embedded broker's listen address ("" without one).
func (g *Gateway) BrokerAddr() string {
	if g.broker == nil {
		return ""
	}
	return g.broker.Addr()
}

// Start starts the ingest workers, the tick loop and the MQTT client (connecting in
// the background with retries; Ready reports when it is connected and subscribed).
// It returns once everything is started.
func (g *Gateway) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: already started")
	}
	if err := g.StartBroker(); err != nil {
		return err
	}
	g.runCtx, g.runCancel = context.WithCancel(context.Background())
	g.ing.start()
	c, err := newMQTTClient(g)
	if err != nil {
		g.ing.stop(ctx)
		return err
	}
	g.mqtt = c
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.tickLoop()
	}()
	c.connect()
	return nil
}

// Close stops intake (messages not yet handed to the workers stay unacknowledged:
// the broker redelivers them to the persistent session), finishes in-flight appends
// and acks, runs a final tick and commit, publishes `offline`, disconnects and stops
// the embedded broker. The subscriptions are kept: with a persistent session the
// broker queues events for the gateway while it is stopped.
func (g *Gateway) Close(ctx context.Context) error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	if !g.started.Load() {
		if g.broker != nil {
			return g.broker.Close()
		}
		return nil
	}
	var errs []error
	g.ing.stop(ctx)
	g.runCancel()
	g.wg.Wait()
	g.finalTick(ctx)
	if g.mqtt != nil {
		if err := g.mqtt.close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	g.connected.Store(false)
	g.subscribed.Store(false)
	if g.broker != nil {
		if err := g.broker.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	g.rej.flush()
	return errors.Join(errs...)
}

// finalTickBudget bounds the last tick of a drain: its commit is quick, but its
// publishes can each wait on a broker that stopped reading (paho's write timeout).
const finalTickBudget = 5 * time.Second

// finalTick commits and publishes what settled since the last tick, giving up on
// the publishes when the broker does not take them in time, so a stop stays
// within its deadline. The commit comes first in TickNow, under the engine lock; a
// tick still publishing when the store closes finds it closed and says so.
func (g *Gateway) finalTick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, finalTickBudget)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.TickNow()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		g.log.Warn().Msg("final tick: the broker did not take the last occupancy updates in time; stopping without them")
	}
}

// tickLoop runs engine ticks at engine.tick (or from Options.Ticks).
func (g *Gateway) tickLoop() {
	if g.opts.Ticks != nil {
		for {
			select {
			case <-g.runCtx.Done():
				return
			case <-g.opts.Ticks:
				g.TickNow()
			}
		}
	}
	interval := g.Config().Engine.Tick
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-g.runCtx.Done():
			return
		case d := <-g.tickReset:
			if d > 0 {
				t.Reset(d)
			}
		case <-t.C:
			g.TickNow()
		}
	}
}

// TickNow runs one engine tick: engine.Tick -> buffer.Commit, then publishes the
// spaces whose occupancy or capacity changed (coalesced: one publish per space).
func (g *Gateway) TickNow() {
	g.tickMu.Lock()
	defer g.tickMu.Unlock()
	now := g.nowMS()
	g.mu.Lock()
	st, ok := g.eng.Tick(now)
	// The commit stays under the engine lock: queries before the horizon read the
	// settled rows from storage, so rows leaving the engine must be there first.
	if ok {
		if err := g.store.Commit(st); err != nil {
			g.log.Error().Err(err).Msg("commit settlement")
		}
	}
	changed := g.eng.Changed()
	occs := make([]occupancy.Occupancy, 0, len(changed))
	for _, id := range changed {
		if o, ok := g.eng.Current(id); ok {
			occs = append(occs, o)
		}
	}
	horizon := g.eng.Horizon()
	pending := g.eng.Pending()
	g.mu.Unlock()

	g.metrics.SettleLag.Set(float64(now-horizon) / 1000)
	g.metrics.PendingEntries.Set(float64(pending))
	g.metrics.EventsParked.Set(float64(g.store.ParkedCount()))
	g.metrics.SetSpaces(occs)
	if g.mqtt != nil && g.connected.Load() {
		g.publishOccupancies(occs)
	}
	g.lastTick.Store(time.Now().UnixNano())
}

// LastTick is when the last engine tick (settle, commit, publish) ended; zero before
// the first. With IngestBusySince it is what a watchdog watches: a tick loop that
// stops ticking, or an ingest batch that never ends, is a hung gateway.
func (g *Gateway) LastTick() time.Time {
	if ns := g.lastTick.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// IngestBusySince is when the oldest ingest batch still in progress (decode, store,
// apply) began; zero while every worker waits for messages.
func (g *Gateway) IngestBusySince() time.Time { return g.ing.busySince() }

// hold is called on every (re)connect: the settled horizon holds still.
func (g *Gateway) hold() {
	g.mu.Lock()
	g.eng.Hold(g.nowMS())
	g.mu.Unlock()
}

// ---- Querier ----

// Spaces returns every space's current occupancy, topology order.
func (g *Gateway) Spaces() []occupancy.Occupancy {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng.Spaces()
}

// Space returns one space's current occupancy.
func (g *Gateway) Space(id string) (occupancy.Occupancy, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng.Current(id)
}

// At returns the occupancy of space id at instant t (Unix ms).
func (g *Gateway) At(id string, t int64) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng.At(id, t)
}

// Counts returns the buckets of space id over [start, end).
func (g *Gateway) Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng.Counts(id, start, end, interval)
}

// Reset stores a manual reset, then applies it. r.TS 0 means now. A reset before the
// settled horizon, for an unknown space or with a negative occupancy is ErrBadReset.
func (g *Gateway) Reset(r occupancy.Reset) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.nowMS()
	if r.TS == 0 {
		r.TS = now
	}
	if r.Occupancy < 0 {
		return fmt.Errorf("%w: occupancy must be >= 0, got %d", ErrBadReset, r.Occupancy)
	}
	if _, ok := g.eng.Current(r.Space); !ok {
		return fmt.Errorf("%w: %q", occupancy.ErrUnknownSpace, r.Space)
	}
	if h := g.eng.Horizon(); r.TS < h {
		return fmt.Errorf("%w: ts %s is before the settled horizon %s", ErrBadReset,
			formatMS(r.TS), formatMS(h))
	}
	if r.TS > now+g.Config().Engine.MaxFutureSkew.Milliseconds() {
		return fmt.Errorf("%w: ts %s is in the future", ErrBadReset, formatMS(r.TS))
	}
	if err := g.store.PutReset(r); err != nil {
		return fmt.Errorf("store reset: %w", err)
	}
	if err := g.eng.Reset(r, now); err != nil {
		if errors.Is(err, occupancy.ErrUnknownSpace) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrBadReset, err)
	}
	return nil
}

// DPUs returns the per-DPU statistics: every DPU of the current topology plus any
// seen on the wire.
func (g *Gateway) DPUs() []DPUStat {
	cfg := g.Config()
	known := make([]string, 0, len(cfg.Topology.DPUs))
	for _, d := range cfg.Topology.DPUs {
		known = append(known, d.ID)
	}
	sort.Strings(known)
	return g.stats.Snapshot(known)
}

// Ready is nil once storage is open and the MQTT client is connected and subscribed.
func (g *Gateway) Ready() error {
	switch {
	case !g.storageOpen.Load():
		return errors.New("storage is not open")
	case !g.connected.Load():
		return errors.New("not connected to the MQTT broker")
	case !g.subscribed.Load():
		return errors.New("not subscribed to the events topics yet")
	}
	return nil
}

// SetStorageClosed marks storage as closed (readiness fails from now on).
func (g *Gateway) SetStorageClosed() { g.storageOpen.Store(false) }

// ---- reload ----

// Reload applies the reloadable parts of a new, already validated config: a topology
// change becomes a new topology version in force from now (capacities and daily
// resets are part of the topology), engine.tick restarts the ticker. It returns the
// names of changed keys that need a restart to take effect (the caller logs them).
func (g *Gateway) Reload(newCfg config.Config) (needsRestart []string, err error) {
	old := g.Config()
	needsRestart = restartKeys(old, newCfg)
	if !TopologyEqual(old.Topology, newCfg.Topology) {
		if err := g.addVersion(newCfg.Topology); err != nil {
			return needsRestart, err
		}
	}
	g.cfgMu.Lock()
	// Keep everything that needs a restart as it was; take the reloadable parts.
	g.cfg.Topology = newCfg.Topology
	g.cfg.Engine.Tick = newCfg.Engine.Tick
	g.cfg.Log = newCfg.Log
	g.cfgMu.Unlock()
	if newCfg.Engine.Tick != old.Engine.Tick && newCfg.Engine.Tick > 0 {
		select {
		case g.tickReset <- newCfg.Engine.Tick:
		default:
		}
	}
	return needsRestart, nil
}

// addVersion stores topology tc as a new version in force from now and hands it to
// the engine; removed spaces get their retained topics and HA config cleared.
func (g *Gateway) addVersion(tc occupancy.TopologyConfig) error {
	// A topology the engine cannot compile is refused before it is stored: a stored
	// version is loaded again at every start.
	if _, err := occupancy.Compile(tc); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	g.topoMu.Lock()
	g.mu.Lock()
	now := g.nowMS()
	v := occupancy.Version{At: now, Topology: tc}
	if err := g.store.PutVersion(v); err != nil {
		g.mu.Unlock()
		g.topoMu.Unlock()
		return fmt.Errorf("store topology version: %w", err)
	}
	change, err := g.eng.AddVersion(v, now)
	g.mu.Unlock()
	g.topoMu.Unlock() // ingest goes on while the changes are published
	if err != nil {
		return fmt.Errorf("apply topology version: %w", err)
	}
	g.log.Info().Strs("added", change.Added).Strs("removed", change.Removed).
		Strs("moved", change.Moved).Int("unparked", change.Unparked).
		Msg("new topology version in force")
	if g.mqtt != nil && g.connected.Load() {
		for _, id := range change.Removed {
			g.clearSpace(id)
		}
		g.publishDiscoveryAll()
	} else if len(change.Removed) > 0 {
		// Cleared on the next connect instead.
		g.cfgMu.Lock()
		g.pendingClear = append(g.pendingClear, change.Removed...)
		g.cfgMu.Unlock()
	}
	return nil
}

// clearPending clears the retained topics of spaces removed while disconnected.
func (g *Gateway) clearPending() {
	g.cfgMu.Lock()
	ids := g.pendingClear
	g.pendingClear = nil
	g.cfgMu.Unlock()
	for _, id := range ids {
		if _, ok := g.Space(id); !ok { // not added back meanwhile
			g.clearSpace(id)
		}
	}
}

// restartKeys lists config keys whose change only takes effect after a restart.
func restartKeys(a, b config.Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(a.Gateway != b.Gateway, "gateway")
	add(a.MQTT.Broker != b.MQTT.Broker, "mqtt.broker")
	add(a.MQTT.Embedded != b.MQTT.Embedded, "mqtt.embedded")
	add(a.MQTT.ClientID != b.MQTT.ClientID, "mqtt.client_id")
	add(a.MQTT.Username != b.MQTT.Username, "mqtt.username")
	add(a.MQTT.PasswordFile != b.MQTT.PasswordFile, "mqtt.password_file")
	add(a.MQTT.TLS != b.MQTT.TLS, "mqtt.tls")
	add(!slices.Equal(a.MQTT.EventsTopic, b.MQTT.EventsTopic), "mqtt.events_topic")
	add(a.MQTT.MaxPayload != b.MQTT.MaxPayload, "mqtt.max_payload")
	add(a.MQTT.OutputPrefix != b.MQTT.OutputPrefix, "mqtt.output_prefix")
	add(a.MQTT.StatusTopic != b.MQTT.StatusTopic, "mqtt.status_topic")
	add(a.MQTT.RejectedTopic != b.MQTT.RejectedTopic, "mqtt.rejected_topic")
	add(a.MQTT.HomeAssistant != b.MQTT.HomeAssistant, "mqtt.homeassistant")
	add(a.Storage != b.Storage, "storage")
	add(a.Engine.SettleAfter != b.Engine.SettleAfter, "engine.settle_after")
	add(a.Engine.LateEvents != b.Engine.LateEvents, "engine.late_events")
	add(a.Engine.ClampNegative != b.Engine.ClampNegative, "engine.clamp_negative")
	add(a.Engine.MaxFutureSkew != b.Engine.MaxFutureSkew, "engine.max_future_skew")
	add(a.HTTP != b.HTTP, "http")
	add(a.Log.Format != b.Log.Format, "log.format")
	return keys
}

// TopologyEqual reports whether two topologies are the same (nil and empty lists
// are equal).
func TopologyEqual(a, b occupancy.TopologyConfig) bool {
	return slices.Equal(a.Spaces, b.Spaces) && slices.Equal(a.Doorways, b.Doorways) &&
		slices.Equal(a.DPUs, b.DPUs)
}
