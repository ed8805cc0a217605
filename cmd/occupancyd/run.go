package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/sdnotify"
	"github.com/occupancyd/occupancyd/occupancy"
)

// closeTimeout bounds a clean stop (DESIGN 6: within 10 s).
const closeTimeout = 10 * time.Second

// Main is the running daemon: storage, engine, embedded broker, HTTP API and MQTT.
// Set ConfigPath (or Config) and Logger, then Run; Close stops it; Reload re-reads
// ConfigPath (SIGHUP).
type Main struct {
	ConfigPath string
	Config     config.Config
	Logger     zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu       sync.Mutex
	store    *buffer.Store
	gw       *gateway.Gateway
	http     *gateway.HTTPServer
	httpDone chan error
	runStop  context.CancelFunc
	runDone  chan struct{}
	sd       *sdnotify.Supervisor // systemd notifications (systemd.go)
	// checked is a copy of the topology that LoadConfig validated for Config (nil if
	// none): Run does not validate it a second time before storing it.
	checked *occupancy.TopologyConfig
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

func (m *Main) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
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

// BrokerAddr is the embedded broker's address ("" with an external broker).
func (m *Main) BrokerAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gw == nil {
		return ""
	}
	return m.gw.BrokerAddr()
}

// Gateway returns the running gateway (nil before Run).
func (m *Main) Gateway() *gateway.Gateway {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gw
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

	defer func() {
		if err != nil {
			m.cleanupLocked()
		}
	}()

	store, err := buffer.Open(storeOptions(cfg, log.With().Str("component", "buffer").Logger(), m.Now))
	if err != nil {
		return fmt.Errorf("open storage %s: %w", cfg.Storage.Dir, err)
	}
	m.store = store

	now := m.now().UnixMilli()
	versions, added, err := newVersion(store, cfg.Topology, now, m.checkedTopology(cfg.Topology))
	m.checked = nil
	if err != nil {
		return err
	}
	// A new version is stored while the engine is rebuilt (it only reads the store),
	// and before the gateway takes any event that could refer to it.
	var stored chan error
	if added {
		stored = make(chan error, 1)
		go func() { stored <- store.PutVersion(versions[len(versions)-1]) }()
	}
	eng, err := occupancy.Open(cfg.EngineOptions(), withVersions(store, versions), now)
	if stored != nil {
		if perr := <-stored; perr != nil {
			return fmt.Errorf("store topology version: %w", perr)
		}
	}
	if err != nil {
		return fmt.Errorf("rebuild engine from storage: %w", err)
	}

	metrics := gateway.NewMetrics()
	gw, err := gateway.New(gateway.Options{
		Config:  cfg,
		Store:   store,
		Engine:  eng,
		Metrics: metrics,
		Stats:   gateway.NewDPUStats(),
		Logger:  log,
		Now:     m.Now,
	})
	if err != nil {
		return err
	}
	m.gw = gw
	if err := gw.StartBroker(); err != nil {
		return err
	}
	if cfg.HTTP.Listen != "" {
		hs, err := gateway.NewHTTPServer(cfg.HTTP.Listen, cfg.HTTP.Token, gw, metrics,
			log.With().Str("component", "http").Logger())
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
		m.http = hs
		m.httpDone = make(chan error, 1)
		go func() { m.httpDone <- hs.Serve() }()
		log.Info().Str("listen", hs.Addr()).Msg("HTTP API listening")
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	m.runStop = stop
	m.runDone = make(chan struct{})
	go func() {
		defer close(m.runDone)
		if err := store.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error().Err(err).Msg("storage maintenance stopped")
		}
	}()
	log.Info().Str("gateway", cfg.Gateway.ID).Dur("startup", time.Since(started)).
		Str("storage", cfg.Storage.Dir).Msg("occupancyd started")
	m.sd = startSystemd(gw, gw.Metrics(), log)
	return nil
}

// storeOptions maps the storage settings of cfg to the buffer's options, for run and
// import alike.
func storeOptions(cfg config.Config, log zerolog.Logger, now func() time.Time) buffer.Options {
	return buffer.Options{
		Dir:        cfg.Storage.Dir,
		Retention:  cfg.Storage.Retention,
		ArchiveDir: cfg.Storage.ArchiveDir,
		MaxParked:  cfg.Storage.MaxParked,
		Logger:     log,
		Now:        now,
	}
}

// isDefaultConfig reports whether c is still NewMain's default configuration.
func isDefaultConfig(c config.Config) bool {
	d := config.DefaultConfig()
	d.ApplyDefaults()
	return reflect.DeepEqual(c, d)
}

// newVersion returns the stored topology versions and, unless tc equals the latest
// of them, tc as a new version in force from now appended to them (added; the caller
// stores it). tc is validated first unless valid says it was already: a topology
// that does not compile must never be stored. Only the validation runs here, not a
// compile: the engine compiles every version when it opens.
func newVersion(store *buffer.Store, tc occupancy.TopologyConfig, now int64, valid bool) (versions []occupancy.Version, added bool, err error) {
	versions, err = store.Versions()
	if err != nil {
		return nil, false, fmt.Errorf("read topology versions: %w", err)
	}
	at := now
	if n := len(versions); n > 0 {
		last := versions[n-1]
		if gateway.TopologyEqual(last.Topology, tc) {
			return versions, false, nil
		}
		if at <= last.At {
			at = last.At + 1
		}
	}
	if !valid {
		if ps := tc.Validate(); len(ps) > 0 {
			return nil, false, fmt.Errorf("topology: %w", &occupancy.ProblemsError{Problems: ps})
		}
	}
	return append(versions, occupancy.Version{At: at, Topology: tc}), true, nil
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
	return m.checked != nil && gateway.TopologyEqual(*m.checked, tc)
}

// versionsRead is a store whose first Versions call answers with the versions start-up
// has just read, so that occupancy.Open does not decode them all again (~0.3 s for a
// 100,000-DPU topology); every later call reads the store.
type versionsRead struct {
	*buffer.Store
	first atomic.Pointer[[]occupancy.Version]
}

func withVersions(store *buffer.Store, vs []occupancy.Version) *versionsRead {
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

// Close stops intake, finishes in-flight appends and acks, runs a final tick and
// commit, publishes `offline`, disconnects, stops the broker and the HTTP API and
// closes Badger, within 10 s.
func (m *Main) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cleanupLocked() // a no-op once stopped: it clears what it stopped
}

func (m *Main) cleanupLocked() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout-time.Second)
	defer cancel()
	if m.sd != nil {
		m.sd.Stopping()
		m.sd = nil
	}
	var errs []error
	if m.gw != nil {
		if err := m.gw.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop gateway: %w", err))
		}
		m.gw.SetStorageClosed()
	}
	if m.http != nil {
		if err := m.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
		select {
		case <-m.httpDone:
		case <-ctx.Done():
		}
	}
	if m.runStop != nil {
		m.runStop()
		select {
		case <-m.runDone:
		case <-ctx.Done():
		}
	}
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close storage: %w", err))
		}
	}
	if len(errs) == 0 && m.gw != nil {
		m.Logger.Info().Msg("occupancyd stopped")
	}
	m.gw, m.http, m.store, m.runStop = nil, nil, nil, nil
	return errors.Join(errs...)
}

// Reload re-reads ConfigPath (SIGHUP): topology (a new version from now), capacities,
// resets, engine.tick and log.level take effect; other changes are logged as needing a
// restart. A bad file is refused and the running config stays.
func (m *Main) Reload() error {
	m.mu.Lock()
	gw, sd := m.gw, m.sd
	path := m.ConfigPath
	m.mu.Unlock()
	if gw == nil {
		return errors.New("reload: not running")
	}
	if path == "" {
		return errors.New("reload: no config file (run --config FILE)")
	}
	sd.Reloading()
	err := m.reload(gw, path)
	sd.Reloaded(err)
	return err
}

func (m *Main) reload(gw *gateway.Gateway, path string) error {
	cfg, err := config.LoadConfig(path)
	if err != nil {
		m.Logger.Error().Err(err).Msg("reload refused; the running config stays")
		return fmt.Errorf("reload: %w", err)
	}
	restart, err := gw.Reload(cfg)
	if err != nil {
		m.Logger.Error().Err(err).Msg("reload failed")
		return fmt.Errorf("reload: %w", err)
	}
	setLogLevel(cfg.Log.Level)
	m.mu.Lock()
	m.Config = gw.Config()
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
	log, err := config.NewLogger(logCfg, w)
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
		done := make(chan error, 1)
		go func() { done <- m.Close() }()
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
