package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/broker"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/httpapi"
	"github.com/occupancyd/occupancyd/gateway/httpapi/push"
	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/mqtt"
	"github.com/occupancyd/occupancyd/gateway/sdnotify"
	"github.com/occupancyd/occupancyd/gateway/stream"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// closeTimeout bounds a clean stop (DESIGN 6: within 10 s); drainTimeout bounds its
// first step, the ingest pipeline's drain; hardStop is when runUntilSignal exits
// even if Close has not returned.
const (
	closeTimeout = 10 * time.Second
	drainTimeout = 4 * time.Second
	hardStop     = closeTimeout - 500*time.Millisecond
)

// Main is the running daemon and the one place that knows every part: it opens the
// store and the tracker over it, and wires the ingest pipeline, the embedded broker,
// the MQTT client and the HTTP API, each through its constructor. Set ConfigPath (or
// Config) and Logger, then Run; Close stops it; Reload re-reads ConfigPath (SIGHUP).
type Main struct {
	ConfigPath string
	Config     config.Config
	Logger     zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu       sync.Mutex
	store    *buffer.Store
	metrics  *metrics.Metrics
	tracker  *tracker.Tracker
	rejects  *ingest.Recorder
	pipe     *ingest.Pipeline
	broker   *broker.Broker
	client   *mqtt.Client
	http     *httpapi.Server
	push     *push.Handler // HTTP push (POST /v1/dpus/{id}/events); nil without HTTP
	httpDone chan error
	runStop  context.CancelFunc // the tracker's ticks and the store's maintenance
	runDone  sync.WaitGroup
	ready    *readiness           // /readyz, the readiness gauges, READY=1 (ready.go)
	sd       *sdnotify.Supervisor // systemd notifications (systemd.go)
	// checked is a copy of the topology that LoadConfig validated for Config (nil if
	// none): Run does not validate it a second time before storing it.
	checked *occupancy.TopologyConfig
	// storeHook, when set (tests), adjusts the store's options before it opens (e.g.
	// its free-space probe).
	storeHook func(*buffer.Options)
	// stage is the step a stop is at (the hard stop names it).
	stage atomic.Pointer[string]
}

// NewMain returns a Main with the default configuration and a logger on stderr.
func NewMain() *Main {
	cfg := config.DefaultConfig()
	cfg.ApplyDefaults()
	return &Main{
		Config: cfg,
		Logger: zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339}).With().Timestamp().Logger(),
		Now:    time.Now,
	}
}

// HTTPAddr is the HTTP API's address ("" when disabled or not running).
func (m *Main) HTTPAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.http == nil {
		return ""
	}
	return m.http.Addr()
}

// HTTPRoutes are the patterns the HTTP API serves (nil when disabled or not
// running), for the test that holds GET /v1/openapi.json to them.
func (m *Main) HTTPRoutes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.http == nil {
		return nil
	}
	return m.http.Routes()
}

// BrokerAddr is the embedded broker's address ("" with an external broker).
func (m *Main) BrokerAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broker == nil {
		return ""
	}
	return m.broker.Addr()
}

// Metrics returns the running daemon's metrics (nil before Run).
func (m *Main) Metrics() *metrics.Metrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metrics
}

// Tracker returns the running daemon's tracker (nil before Run).
func (m *Main) Tracker() *tracker.Tracker {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tracker
}

// Run opens storage, stores the configured topology as a new version (unless it is
// the latest stored already), rebuilds the engine, starts the embedded broker, the
// HTTP API and the MQTT client, and returns once all are started. Readiness (MQTT
// connected and subscribed) follows shortly; see /readyz.
func (m *Main) Run(ctx context.Context) (err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.store != nil {
		return errors.New("already running")
	}
	started := time.Now()
	// Load ConfigPath unless the caller already did (newMainFromFile sets Config
	// from it: a large topology is parsed once).
	if m.ConfigPath != "" && isDefaultConfig(m.Config) {
		cfg, err := config.LoadConfig(m.ConfigPath)
		if err != nil {
			return err
		}
		m.setLoaded(cfg)
	}
	cfg := m.Config
	cfg.ApplyDefaults()
	m.Config = cfg
	log := m.Logger
	component := func(name string) zerolog.Logger { return log.With().Str("component", name).Logger() }

	defer func() {
		if err != nil {
			m.cleanupLocked()
		}
	}()

	bo := storeOptions(cfg, component("buffer"), m.Now)
	if m.storeHook != nil {
		m.storeHook(&bo)
	}
	store, err := buffer.Open(bo)
	if err != nil {
		return fmt.Errorf("open storage %s: %w", cfg.Storage.Dir, err)
	}
	m.store = store
	m.metrics = metrics.New()
	m.ready = &readiness{store: store}
	m.metrics.SetReadiness(m.ready.check)
	c, _, _ := buildInfo()
	m.metrics.SetBuildInfo(Version(), c, runtime.Version())
	if err := m.metrics.DPULastEvent.SetMode(cfg.Health.LastEventMetric); err != nil {
		return fmt.Errorf("health.last_event_metric: %w", err)
	}
	topo := cfg.Topology
	m.tracker, err = tracker.Open(tracker.Options{
		Store:         store,
		Engine:        cfg.EngineOptions(),
		MaxParked:     cfg.Storage.MaxParked,
		Topology:      &topo,
		TopologyValid: m.checkedTopology(cfg.Topology),
		MaxFutureSkew: cfg.Engine.MaxFutureSkew,
		Tick:          cfg.Engine.Tick,
		StatsStore:    store,
		QuietAfter:    cfg.Health.DPUQuietAfter,
		Metrics:       m.metrics,
		Logger:        component("tracker"),
		Now:           m.Now,
	})
	m.checked = nil
	if err != nil {
		return err
	}
	m.rejects = ingest.NewRecorder(store, m.metrics, component("ingest"))
	m.pipe, err = ingest.New(ingest.Options{
		Tracker:       m.tracker,
		Rejects:       m.rejects,
		Topics:        cfg.MQTT.EventsTopic,
		Topology:      &topo,
		MaxFutureSkew: cfg.Engine.MaxFutureSkew,
		MaxPayload:    cfg.MQTT.MaxPayload,
		Retention:     cfg.Storage.Retention,
		Metrics:       m.metrics,
		Logger:        component("ingest"),
		Now:           m.Now,
	})
	if err != nil {
		return err
	}
	brokerURL := cfg.MQTT.Broker
	if brokerURL == "" {
		password, err := mqtt.ReadPasswordFile(cfg.MQTT.PasswordFile)
		if err != nil {
			return err
		}
		m.broker, err = broker.Start(broker.Options{
			Listen:   cfg.MQTT.Embedded.Listen,
			Username: cfg.MQTT.Username,
			Password: password,
			Logger:   log,
			Events: &broker.EventSink{
				Matches:  m.pipe.Matches,
				Submit:   m.pipe.SubmitEmbedded,
				Stopping: m.pipe.Stopping(),
			},
		})
		if err != nil {
			return err
		}
		brokerURL = "tcp://" + m.broker.Addr()
	}
	m.client, err = mqtt.New(mqtt.Options{
		Broker:          brokerURL,
		MQTT:            cfg.MQTT,
		GatewayID:       cfg.Gateway.ID,
		EventsViaBroker: m.broker != nil,
		Tracker:         m.tracker,
		Events:          m.pipe,
		Rejected:        m.rejects.Outgoing(),
		Info:            mqtt.Info{Version: Version(), Commit: c, Started: started, SettleAfter: cfg.Engine.SettleAfter},
		Metrics:         m.metrics,
		Logger:          component("mqtt"),
	})
	if err != nil {
		return err
	}
	client := m.client
	m.ready.client = client
	ready := m.ready.check
	var hub *stream.Hub
	if cfg.HTTP.Listen != "" {
		token, err := cfg.HTTPToken()
		if err != nil {
			return err
		}
		hub, err = newStreamHub(m.tracker, cfg, component("stream"))
		if err != nil {
			return err
		}
		hs, err := httpapi.New(httpapi.Options{
			Listen:    cfg.HTTP.Listen,
			Token:     token,
			OpenReads: cfg.HTTP.OpenReads,
			Querier:   m.tracker,
			Ready:     ready,
			Metrics:   m.metrics,
			Logger:    component("http"),
			Page:      m.pageSources(cfg, started, hub),
		})
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
		if err := registerPage(hs, hub); err != nil {
			return err
		}
		var admin func(*http.Request) bool
		if token != "" {
			admin = hs.Authorized
		}
		m.push, err = push.New(push.Options{Ingester: m.pipe, Admin: admin, MaxPayload: cfg.MQTT.MaxPayload, Logger: component("push")})
		if err != nil {
			return err
		}
		if err := m.setIngestTokens(cfg.Topology); err != nil {
			return err
		}
		m.push.Register(hs)
		m.http = hs
		m.httpDone = make(chan error, 1)
		go func() { m.httpDone <- hs.Serve() }()
		page := statusPageURL(cfg.HTTP.Listen, hs.Addr(), os.Hostname)
		m.client.SetStatusPage(page)
		log.Info().Str("listen", hs.Addr()).Str("status_page", page).Msg("HTTP API listening")
	}

	m.pipe.Start()
	runCtx, stop := context.WithCancel(context.Background())
	m.runStop = stop
	m.runDone.Add(2)
	go func() {
		defer m.runDone.Done()
		m.tracker.Run(runCtx)
	}()
	if hub != nil {
		m.runDone.Add(1)
		go func() {
			defer m.runDone.Done()
			hub.Run(runCtx)
		}()
	}
	go func() {
		defer m.runDone.Done()
		if err := store.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error().Err(err).Msg("storage maintenance stopped")
		}
	}()
	m.client.Start()
	m.ready.started.Store(true)
	log.Info().Str("gateway", cfg.Gateway.ID).Dur("startup", time.Since(started)).
		Str("storage", cfg.Storage.Dir).Msg("occupancyd started")
	m.sd = startSystemd(watched{ready: ready, tracker: m.tracker, pipe: m.pipe}, m.metrics, log)
	return nil
}

// setIngestTokens reads the DPUs' ingest tokens (ingest_token_file) for HTTP push.
func (m *Main) setIngestTokens(tc occupancy.TopologyConfig) error {
	if m.push == nil {
		return nil
	}
	tokens, err := config.IngestTokens(tc)
	if err != nil {
		return err
	}
	m.push.SetTokens(tokens)
	return nil
}

// watched is what the systemd notifications watch (systemd.go): readiness, the
// tick loop and the ingest workers.
type watched struct {
	ready   func() error
	tracker *tracker.Tracker
	pipe    *ingest.Pipeline
}

func (w watched) Ready() error                  { return w.ready() }
func (w watched) LastTick() time.Time           { return w.tracker.LastTick() }
func (w watched) TickInterval() time.Duration   { return w.tracker.TickInterval() }
func (w watched) IngestBusySince() time.Time    { return w.pipe.BusySince() }
func (w watched) QuietDPUs() (quiet, total int) { return w.tracker.QuietDPUs() }

// statusPageURL is the status page's URL for Home Assistant's configuration_url,
// from http.listen and the address the server bound (its port, for port 0): the
// listen host as it is, or, on every interface (0.0.0.0, [::] or no host), this
// machine's host name, which a browser elsewhere can reach where the network
// resolves it ("" without one). A loopback listen gives a loopback URL: right where
// Home Assistant runs on the gateway's machine, and the only address that serves.
func statusPageURL(listen, bound string, hostname func() (string, error)) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	_, port, err := net.SplitHostPort(bound)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if host, err = hostname(); err != nil || host == "" {
			return ""
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// storeOptions maps the storage settings of cfg to the buffer's options, for run and
// import alike.
func storeOptions(cfg config.Config, log zerolog.Logger, now func() time.Time) buffer.Options {
	return buffer.Options{
		Dir:          cfg.Storage.Dir,
		Retention:    cfg.Storage.Retention,
		ArchiveDir:   cfg.Storage.ArchiveDir,
		MaxParked:    cfg.Storage.MaxParked,
		MinFreeBytes: cfg.Storage.MinFreeBytes(),
		Logger:       log,
		Now:          now,
	}
}

// isDefaultConfig reports whether c is still NewMain's default configuration.
func isDefaultConfig(c config.Config) bool {
	d := config.DefaultConfig()
	d.ApplyDefaults()
	return reflect.DeepEqual(c, d)
}

// setLoaded makes cfg, just returned by LoadConfig (so validated), the configuration,
// and keeps a copy of its topology so that Run can tell it is still the one validated.
func (m *Main) setLoaded(cfg config.Config) {
	m.Config = cfg
	t := cfg.Topology
	m.checked = &occupancy.TopologyConfig{
		Spaces: slices.Clone(t.Spaces), Doorways: slices.Clone(t.Doorways), DPUs: slices.Clone(t.DPUs),
	}
}

// checkedTopology reports whether tc equals the topology LoadConfig validated.
func (m *Main) checkedTopology(tc occupancy.TopologyConfig) bool {
	return m.checked != nil && m.checked.Equal(tc)
}

// Close stops intake, finishes in-flight appends and acks, runs a final tick and
// commit, publishes `offline`, disconnects, stops the broker and the HTTP API and
// closes Badger, within 10 s.
func (m *Main) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cleanupLocked() // a no-op once stopped: it clears what it stopped
}

// cleanupLocked stops what runs, in the order data flows: intake first (messages not
// yet taken stay unacknowledged: the broker redelivers them to the persistent
// session), then the ticks, a final tick (commit), the last publishes and
// `offline`, the broker, the HTTP API, storage.
func (m *Main) cleanupLocked() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout-time.Second)
	defer cancel()
	// The drain gets less than half of it: a batch in flight may be a message of
	// 100,000 events, and what the drain leaves unacknowledged the broker redelivers.
	drainCtx, cancelDrain := context.WithTimeout(ctx, drainTimeout)
	defer cancelDrain()
	if m.sd != nil {
		m.sd.Stopping()
		m.sd = nil
	}
	var errs []error
	running := m.runStop != nil
	m.setStage("drain ingest")
	if m.pipe != nil {
		m.pipe.Stop(drainCtx)
	}
	drained := time.Since(start)
	m.setStage("stop ticks")
	if m.runStop != nil {
		m.runStop()
		m.runDone.Wait()
	}
	m.setStage("final tick")
	if m.tracker != nil && running {
		_, _ = m.tracker.Tick() // logged
	}
	m.setStage("mqtt close")
	if m.client != nil {
		if err := m.client.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop mqtt: %w", err))
		}
	}
	m.setStage("broker close")
	if m.broker != nil {
		if err := m.broker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop broker: %w", err))
		}
	}
	if m.rejects != nil {
		m.rejects.Flush()
	}
	m.setStage("http shutdown")
	if m.http != nil {
		if err := m.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
		select {
		case <-m.httpDone:
		case <-ctx.Done():
		}
	}
	m.setStage("save dpu statistics")
	if m.tracker != nil && running {
		// Nothing is ingested any more: the statistics are complete.
		if err := m.tracker.SaveStats(true); err != nil {
			errs = append(errs, err)
		}
	}
	m.setStage("storage close")
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close storage: %w", err))
		}
	}
	if len(errs) == 0 && running {
		m.Logger.Info().Dur("took", time.Since(start)).Dur("drain", drained).Msg("occupancyd stopped")
	}
	m.store, m.tracker, m.rejects, m.pipe, m.broker, m.client, m.http, m.runStop = nil, nil, nil, nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

func (m *Main) setStage(s string) { m.stage.Store(&s) }

// Stage is the step a stop is at ("" before one began).
func (m *Main) Stage() string {
	if p := m.stage.Load(); p != nil {
		return *p
	}
	return ""
}

// Reload re-reads ConfigPath (SIGHUP): topology (a new version from now), capacities,
// resets, engine.tick and log.level take effect; other changes are logged as needing a
// restart. A bad file is refused and the running config stays.
func (m *Main) Reload() error {
	m.mu.Lock()
	tr, sd, path := m.tracker, m.sd, m.ConfigPath
	m.mu.Unlock()
	if tr == nil {
		return errors.New("reload: not running")
	}
	if path == "" {
		return errors.New("reload: no config file (run --config FILE)")
	}
	sd.Reloading()
	err := m.reload(tr, path)
	sd.Reloaded(err)
	return err
}

func (m *Main) reload(tr *tracker.Tracker, path string) error {
	cfg, err := config.LoadConfig(path)
	if err != nil {
		m.Logger.Error().Err(err).Msg("reload refused; the running config stays")
		return fmt.Errorf("reload: %w", err)
	}
	m.mu.Lock()
	old := m.Config
	m.mu.Unlock()
	restart := config.RestartKeys(old, cfg)
	if _, _, err := tr.AddVersion(cfg.Topology); err != nil {
		m.Logger.Error().Err(err).Msg("reload failed")
		return fmt.Errorf("reload: %w", err)
	}
	m.mu.Lock()
	pipe := m.pipe
	m.mu.Unlock()
	if pipe != nil {
		// The DPUs' kinds and maps are part of the topology: they decode from now on.
		if err := pipe.SetTopology(&cfg.Topology); err != nil {
			m.Logger.Error().Err(err).Msg("reload: the DPUs' kinds and maps are not in force")
		}
	}
	if err := m.setIngestTokens(cfg.Topology); err != nil {
		m.Logger.Error().Err(err).Msg("reload: the DPUs' ingest tokens stay as they were")
	}
	tr.SetTick(cfg.Engine.Tick)
	setLogLevel(cfg.Log.Level)
	m.mu.Lock()
	// Keep everything that needs a restart as it was; take the reloadable parts.
	m.Config.Topology = cfg.Topology
	m.Config.Engine.Tick = cfg.Engine.Tick
	m.Config.Log = cfg.Log
	m.mu.Unlock()
	if len(restart) > 0 {
		m.Logger.Warn().Strs("keys", restart).Msg("config changes that need a restart to take effect")
	}
	m.Logger.Info().Str("config", path).Msg("config reloaded")
	return nil
}

// runCommand is `occupancyd run [--config FILE]`.
func runCommand(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	configPath := fs.String("config", "", "the configuration `FILE` (YAML; without it, the built-in defaults)")
	pos, err := parseCommandFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return commandUsageErrorf("run", "run: unexpected argument %q", pos[0])
	}
	m, err := newMainFromFile(*configPath, os.Stderr)
	if err != nil {
		return err
	}
	logMemoryLimit(m)
	return runUntilSignal(m)
}

// newMainFromFile is the Main that `run` and the service program start: the
// configuration of configPath (the defaults if empty) and a logger on w from its log
// settings. The logger itself passes everything; the level is the global one so that
// a reload can change it.
func newMainFromFile(configPath string, w io.Writer) (*Main, error) {
	m := NewMain()
	if configPath != "" {
		cfg, err := config.LoadConfig(configPath)
		if err != nil {
			return nil, err
		}
		m.setLoaded(cfg)
		m.ConfigPath = configPath
	}
	logCfg := m.Config.Log
	logCfg.Level = "debug"
	log, err := newLogger(logCfg, w)
	if err != nil {
		return nil, err
	}
	setLogLevel(m.Config.Log.Level)
	m.Logger = log
	return m, nil
}

// setLogLevel makes log.level the global zerolog level (the process logger passes
// everything, so that a reload can change the level); "" keeps the current one.
func setLogLevel(level string) {
	if lvl, err := zerolog.ParseLevel(level); err == nil && level != "" {
		zerolog.SetGlobalLevel(lvl)
	}
}

// runUntilSignal runs m until SIGINT/SIGTERM (a second one aborts the drain: exit at
// once); SIGHUP reloads.
func runUntilSignal(m *Main) error {
	log := m.Logger
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := m.Run(context.Background()); err != nil {
		return err
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			_ = m.Reload() // logged; the running config stays on error
			continue
		}
		log.Info().Str("signal", sig.String()).Msg("stopping (a second signal exits at once)")
		stopping := time.Now()
		done := make(chan error, 1)
		go func() { done <- m.Close() }()
		// DESIGN 6: stopped within 10 s, whatever is in flight. Close bounds each of
		// its steps; should one still hang, the process exits anyway: everything it
		// acknowledged is durable already (synced before the ack), what it did not
		// the broker redelivers, and Badger recovers its files at the next open.
		hard := time.AfterFunc(hardStop, func() {
			log.Error().Dur("after", time.Since(stopping)).Str("stage", m.Stage()).
				Msg("stop did not finish within 10 s: exiting without finishing it")
			os.Exit(1)
		})
		defer hard.Stop()
		for {
			select {
			case err := <-done:
				return err
			case s := <-sigs:
				if s == syscall.SIGHUP {
					continue
				}
				log.Warn().Str("signal", s.String()).Msg("second signal: exiting without draining")
				os.Exit(1)
			}
		}
	}
	return nil
}
