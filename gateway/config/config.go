// Package config is occupancyd's configuration file (DESIGN section 7): the types with
// their defaults, decoding (strict YAML through yaml.v3's node tree, decode.go; a
// topology in its own JSON file, topology.go) and validation (validate.go), which
// report every problem with its key path and line, and the keys a reload cannot
// apply (reload.go). The process logger, built from the `log` section, is
// cmd/occupancyd's.
//
// A new key is a field with a yaml tag here, its default in DefaultConfig and its
// rules in validate; the decoder finds it by reflection. A value with a shape of its
// own (a string or a list, say) implements nodeDecoder, as EventsTopics does.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Config is the whole occupancyd configuration file (DESIGN section 7).
// Decoding is strict: unknown keys are errors. Defaults come from DefaultConfig,
// then the file is decoded over them, then Validate reports every problem with its
// key path.
type Config struct {
	Gateway  GatewayConfig            `yaml:"gateway"`
	MQTT     MQTTConfig               `yaml:"mqtt"`
	Storage  StorageConfig            `yaml:"storage"`
	Engine   EngineConfig             `yaml:"engine"`
	HTTP     HTTPConfig               `yaml:"http"`
	Health   HealthConfig             `yaml:"health"`
	Log      LogConfig                `yaml:"log"`
	Topology occupancy.TopologyConfig `yaml:"topology"` // inline, or read from topology.file
	// TopologyFile is topology.file as written ("" when the topology is inline); a
	// relative path is taken from the config file's directory.
	TopologyFile string `yaml:"-"`
}

type GatewayConfig struct {
	ID string `yaml:"id"`
	// MemoryLimit is how the Go runtime bounds the process's memory (applied by
	// `occupancyd run`): auto (the default), off, or a soft limit in bytes.
	MemoryLimit MemoryLimit `yaml:"memory_limit"`
}

type MQTTConfig struct {
	Broker             string              `yaml:"broker"` // "" = embedded broker
	Embedded           EmbeddedConfig      `yaml:"embedded"`
	ClientID           string              `yaml:"client_id"` // default occupancyd-<gateway.id>
	Username           string              `yaml:"username"`
	PasswordFile       string              `yaml:"password_file"`
	TLS                TLSConfig           `yaml:"tls"`
	EventsTopic        EventsTopics        `yaml:"events_topic"` // one filter or a list, of strings or {filter, kind, map}
	MaxPayload         int                 `yaml:"max_payload"`
	OutputPrefix       string              `yaml:"output_prefix"`
	PublishMinInterval time.Duration       `yaml:"publish_min_interval"` // a space's topics at most this often
	StatusTopic        string              `yaml:"status_topic"`         // default occupancyd/<gateway.id>/status
	RejectedTopic      string              `yaml:"rejected_topic"`       // default occupancyd/<gateway.id>/rejected
	HomeAssistant      HomeAssistantConfig `yaml:"homeassistant"`
}

type EmbeddedConfig struct {
	Listen string `yaml:"listen"`
}

type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type HomeAssistantConfig struct {
	Enabled         bool   `yaml:"enabled"`
	DiscoveryPrefix string `yaml:"discovery_prefix"`
}

type StorageConfig struct {
	Dir        string        `yaml:"dir"`
	Retention  time.Duration `yaml:"retention"`
	ArchiveDir string        `yaml:"archive_dir"`
	MaxParked  int           `yaml:"max_parked"`
	MinFree    ByteSize      `yaml:"min_free"` // below this, events are not acknowledged; 0 = no floor
}

type EngineConfig struct {
	SettleAfter   time.Duration `yaml:"settle_after"`
	Tick          time.Duration `yaml:"tick"`
	LateEvents    string        `yaml:"late_events"` // apply | drop
	ClampNegative bool          `yaml:"clamp_negative"`
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
}

type HTTPConfig struct {
	Listen           string `yaml:"listen"` // "" disables the HTTP API
	Token            string `yaml:"token"`
	TokenFile        string `yaml:"token_file"` // the token in a file; see Config.HTTPToken
	OpenReads        bool   `yaml:"open_reads"` // reads without the token, also off loopback
	MaxStreamClients int    `yaml:"max_stream_clients"`
}

type HealthConfig struct {
	DPUQuietAfter time.Duration `yaml:"dpu_quiet_after"` // no report for this long: quiet
	// LastEventMetric: which DPUs have a series of
	// occupancyd_dpu_last_event_timestamp_seconds: quiet (the quiet DPUs only), all
	// (every DPU of the topology) or none.
	LastEventMetric string `yaml:"last_event_metric"`
}

// LastEventMetrics are the values of health.last_event_metric.
var LastEventMetrics = []string{"quiet", "all", "none"}

type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // console | json
}

// EventsTopic is one entry of mqtt.events_topic (DESIGN 2, 2a): a topic filter, and
// the kind and map of the reports that arrive on it. Written as the filter alone or
// as {filter, kind, map}.
//
// Which kind and map decode a message (ingest): the DPU's own kind in the topology,
// else the entry's kind, else events; the DPU's own map, else the entry's map when
// the entry's kind is the DPU's kind, else the kind's own field names. An entry
// whose map takes the DPU id from the payload (map.dpu) decodes every message on
// its filter with its own kind and map, and its filter needs no '+' level.
type EventsTopic struct {
	Filter string             `yaml:"filter"`
	Kind   string             `yaml:"kind"` // "": events
	Map    *occupancy.Mapping `yaml:"map"`  // nil: the kind's own field names
}

// DPUInPayload reports whether the entry's map takes the DPU id from the payload.
func (e EventsTopic) DPUInPayload() bool { return e.Map != nil && e.Map.DPU != "" }

// ReportKind is the entry's kind (events when unset or invalid: Validate reports it).
func (e EventsTopic) ReportKind() occupancy.ReportKind {
	k, _ := occupancy.ParseReportKind(e.Kind)
	return k
}

// EventsTopics is mqtt.events_topic: one entry or a list of them; the first entry
// whose filter matches a topic takes its messages.
type EventsTopics []EventsTopic

// Filters are the entries' topic filters, in order.
func (l EventsTopics) Filters() []string {
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = e.Filter
	}
	return out
}

// Topics makes entries of bare filters (events, default map).
func Topics(filters ...string) EventsTopics {
	out := make(EventsTopics, len(filters))
	for i, f := range filters {
		out[i] = EventsTopic{Filter: f}
	}
	return out
}

// DefaultConfig returns the defaults of DESIGN section 7.
func DefaultConfig() Config {
	return Config{
		Gateway: GatewayConfig{ID: "demo", MemoryLimit: MemoryLimitAuto},
		MQTT: MQTTConfig{
			Embedded:           EmbeddedConfig{Listen: "127.0.0.1:1883"},
			EventsTopic:        Topics("dpu/+/events"),
			MaxPayload:         262144,
			OutputPrefix:       "occupancy",
			PublishMinInterval: 250 * time.Millisecond,
			HomeAssistant:      HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "homeassistant"},
		},
		Storage: StorageConfig{Dir: "./data", Retention: 2160 * time.Hour, MaxParked: 1000000, MinFree: 256 << 20},
		Engine: EngineConfig{
			SettleAfter:   5 * time.Minute,
			Tick:          time.Second,
			LateEvents:    "apply",
			ClampNegative: true,
			MaxFutureSkew: time.Minute,
		},
		HTTP:   HTTPConfig{Listen: "127.0.0.1:8080", MaxStreamClients: 100},
		Health: HealthConfig{DPUQuietAfter: 2 * time.Hour, LastEventMetric: "quiet"},
		Log:    LogConfig{Level: "info", Format: "console"},
	}
}

// ApplyDefaults fills the settings whose defaults derive from other settings:
// mqtt.client_id (occupancyd-<gateway.id>), mqtt.status_topic
// (occupancyd/<gateway.id>/status) and mqtt.rejected_topic
// (occupancyd/<gateway.id>/rejected). Settings already set are kept.
func (c *Config) ApplyDefaults() {
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "occupancyd-" + c.Gateway.ID
	}
	if c.MQTT.StatusTopic == "" {
		c.MQTT.StatusTopic = "occupancyd/" + c.Gateway.ID + "/status"
	}
	if c.MQTT.RejectedTopic == "" {
		c.MQTT.RejectedTopic = "occupancyd/" + c.Gateway.ID + "/rejected"
	}
}

// InfoTopic is the retained gateway info topic, occupancyd/<gateway.id>/info.
func (c Config) InfoTopic() string { return "occupancyd/" + c.Gateway.ID + "/info" }

// DPUsTopic is the retained DPU health topic, occupancyd/<gateway.id>/dpus.
func (c Config) DPUsTopic() string { return "occupancyd/" + c.Gateway.ID + "/dpus" }

// EngineOptions are the engine's options from the engine section.
func (c Config) EngineOptions() occupancy.Options {
	return occupancy.Options{
		SettleAfter:   c.Engine.SettleAfter.Milliseconds(),
		LateEvents:    occupancy.LatePolicy(c.Engine.LateEvents),
		ClampNegative: c.Engine.ClampNegative,
	}
}

// HTTPToken is the API's bearer token: http.token, or the content of
// http.token_file; "" when neither is set.
func (c Config) HTTPToken() (string, error) {
	if c.HTTP.TokenFile == "" {
		return c.HTTP.Token, nil
	}
	tok, err := ReadSecret(c.HTTP.TokenFile)
	if err != nil {
		return "", fmt.Errorf("http.token_file: %w", err)
	}
	return tok, nil
}

// ReadSecret reads a password or token file (mqtt.password_file, http.token_file, a
// DPU's ingest_token_file): its content without the trailing line break.
func ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// IngestTokens reads the DPUs' ingest tokens (topology ingest_token_file, HTTP
// push): DPU id -> token, for the DPUs that have one.
func IngestTokens(tc occupancy.TopologyConfig) (map[string]string, error) {
	out := map[string]string{}
	for i, d := range tc.DPUs {
		if d.IngestTokenFile == "" {
			continue
		}
		tok, err := ReadSecret(d.IngestTokenFile)
		if err != nil {
			return nil, fmt.Errorf("topology.dpus[%d].ingest_token_file: %w", i, err)
		}
		if strings.TrimSpace(tok) == "" {
			return nil, fmt.Errorf("topology.dpus[%d].ingest_token_file: %s is empty", i, d.IngestTokenFile)
		}
		out[d.ID] = tok
	}
	return out, nil
}

// MinFreeBytes is storage.min_free as buffer.Options.MinFreeBytes takes it: no
// floor (0) is -1 there.
func (s StorageConfig) MinFreeBytes() int64 {
	if s.MinFree == 0 {
		return -1
	}
	return int64(s.MinFree)
}

// ByteSize is a number of bytes written as a plain integer or with a unit: B, kB, MB,
// GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 256MiB, 1GB.
type ByteSize int64

var byteUnits = map[string]float64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}

func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	x, err := strconv.ParseFloat(s[:i], 64)
	unit, ok := byteUnits[strings.ToLower(strings.TrimSpace(s[i:]))]
	if err != nil || !ok || x*unit >= 1<<63 {
		return fmt.Errorf(`want a size such as 256MiB, 1GB or 268435456 (bytes), got %q`, text)
	}
	*b = ByteSize(x * unit)
	return nil
}

// MemoryLimit is gateway.memory_limit: MemoryLimitAuto, MemoryLimitOff, or a soft
// limit in bytes (written as a size, like ByteSize).
type MemoryLimit int64

const (
	// MemoryLimitAuto: under a cgroup memory limit (systemd MemoryMax=, a
	// container's), a soft limit of 85% of it; and in any case the collector runs
	// once the heap has grown by a quarter since the last collection (GOGC=25)
	// instead of doubling, which costs little here: the engine's pending entries,
	// most of the heap, hold no pointers to scan.
	MemoryLimitAuto MemoryLimit = -1
	// MemoryLimitOff leaves the Go runtime's defaults (GOGC=100, no limit).
	MemoryLimitOff MemoryLimit = 0
)

func (m *MemoryLimit) UnmarshalText(text []byte) error {
	switch strings.ToLower(strings.TrimSpace(string(text))) {
	case "auto":
		*m = MemoryLimitAuto
		return nil
	case "off", "0":
		*m = MemoryLimitOff
		return nil
	}
	var b ByteSize
	if err := b.UnmarshalText(text); err != nil {
		return fmt.Errorf(`want auto, off or a size such as 900MiB or 2GiB, got %q`, text)
	}
	*m = MemoryLimit(b)
	return nil
}

func (m MemoryLimit) MarshalText() ([]byte, error) {
	switch {
	case m == MemoryLimitAuto:
		return []byte("auto"), nil
	case m <= 0:
		return []byte("off"), nil
	}
	return []byte(fmt.Sprintf("%dMiB", int64(m)>>20)), nil
}

// Problem is one configuration problem: the key path (e.g. `mqtt.max_payload`,
// `topology.dpus[3].plus_space`), what is wrong, and the line of the key in the file
// when known (0 otherwise). A problem inside topology.file names that File; its Path
// and Line are then within the file.
type Problem struct {
	Path    string
	Message string
	Line    int
	File    string
}

func (p Problem) String() string {
	s := p.Message
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	switch {
	case p.File != "" && p.Line > 0:
		s += fmt.Sprintf(" (line %d of %s)", p.Line, p.File)
	case p.Line > 0 && p.Path == "":
		s = fmt.Sprintf("line %d: %s", p.Line, s)
	case p.Line > 0:
		s += fmt.Sprintf(" (line %d)", p.Line)
	}
	if p.File != "" {
		s = "topology.file " + p.File + ": " + s
	}
	return s
}

// ConfigError lists every problem found in a configuration. Source is the file name
// ("" when the configuration did not come from a file).
type ConfigError struct {
	Source   string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	prefix := "invalid config"
	if e.Source != "" {
		prefix = "invalid config " + e.Source
	}
	if len(e.Problems) == 1 {
		return prefix + ": " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", prefix, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// LoadConfig reads, decodes, completes and validates the configuration file at path,
// and the topology file it names (relative to path's directory). A *ConfigError
// (errors.As) lists every problem with its key path and line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parse(data, filepath.Dir(path))
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.Source = path
	}
	return cfg, err
}

// ParseConfig decodes a YAML configuration over DefaultConfig strictly (unknown keys
// are problems), reads topology.file (a relative path from the working directory),
// fills the defaults derived from gateway.id (ApplyDefaults) and validates it. On
// error the returned Config is what could be decoded, and the error is a
// *ConfigError with every problem found.
func ParseConfig(data []byte) (Config, error) { return parse(data, ".") }

func parse(data []byte, dir string) (Config, error) {
	cfg := DefaultConfig()
	d := decoder{}
	if !d.document(data, &cfg) {
		return cfg, &ConfigError{Problems: d.problems} // not YAML: nothing else to say
	}
	var tf *topologyFile
	if cfg.TopologyFile != "" {
		path := cfg.TopologyFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		var err error
		if tf, err = readTopologyFile(path, cfg.TopologyFile); err != nil {
			d.problem("topology.file", d.lineOf("topology.file"), "%v", err)
		} else {
			cfg.Topology = tf.topology
			d.problems = append(d.problems, tf.problems...)
		}
	}
	cfg.ApplyDefaults()
	decoded := len(d.problems)
	for _, p := range cfg.validate() {
		switch {
		case p.File != "" && (tf == nil || tf.broken):
			continue // the file could not be read: said so
		case reported(d.problems[:decoded], p):
			continue // a value that did not decode: already reported
		case p.File != "":
			p.Line = tf.lineOf(p.Path)
		case p.Line == 0:
			p.Line = d.lineOf(p.Path)
		}
		d.problems = append(d.problems, p)
	}
	if len(d.problems) == 0 {
		return cfg, nil
	}
	// In file order, like a compiler, the topology file's problems (in their order)
	// where the file is named; problems without a line (keys absent) last.
	fileLine := d.lineOf("topology.file")
	sort.SliceStable(d.problems, func(i, j int) bool {
		pi, pj := d.problems[i], d.problems[j]
		if pi.File != "" && pj.File != "" {
			return pi.Line != 0 && (pj.Line == 0 || pi.Line < pj.Line)
		}
		li, lj := pi.Line, pj.Line
		if pi.File != "" {
			li = fileLine
		}
		if pj.File != "" {
			lj = fileLine
		}
		return li != 0 && (lj == 0 || li < lj)
	})
	return cfg, &ConfigError{Problems: d.problems}
}

// reported tells whether one of ps is about p's path, a key under it or above it (in
// the same file).
func reported(ps []Problem, p Problem) bool {
	under := func(a, b string) bool { return strings.HasPrefix(a, b+".") || strings.HasPrefix(a, b+"[") }
	for _, q := range ps {
		if q.File == p.File && q.Path != "" && (q.Path == p.Path || under(q.Path, p.Path) || under(p.Path, q.Path)) {
			return true
		}
	}
	return false
}
