// Package config is occupancyd's configuration file (DESIGN section 7): the types with their
// defaults, strict YAML decoding (unknown keys are errors) and Validate, which reports
// every problem with its key path and line. It also builds the process logger from
// the `log` section.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

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
	Log      LogConfig                `yaml:"log"`
	Topology occupancy.TopologyConfig `yaml:"topology"`
}

type GatewayConfig struct {
	ID string `yaml:"id"`
}

type MQTTConfig struct {
	Broker        string              `yaml:"broker"` // "" = embedded broker
	Embedded      EmbeddedConfig      `yaml:"embedded"`
	ClientID      string              `yaml:"client_id"` // default occupancyd-<gateway.id>
	Username      string              `yaml:"username"`
	PasswordFile  string              `yaml:"password_file"`
	TLS           TLSConfig           `yaml:"tls"`
	EventsTopic   StringList          `yaml:"events_topic"` // one filter or a list
	MaxPayload    int                 `yaml:"max_payload"`
	OutputPrefix  string              `yaml:"output_prefix"`
	StatusTopic   string              `yaml:"status_topic"`   // default occupancyd/<gateway.id>/status
	RejectedTopic string              `yaml:"rejected_topic"` // default occupancyd/<gateway.id>/rejected
	HomeAssistant HomeAssistantConfig `yaml:"homeassistant"`
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
}

type EngineConfig struct {
	SettleAfter   time.Duration `yaml:"settle_after"`
	Tick          time.Duration `yaml:"tick"`
	LateEvents    string        `yaml:"late_events"` // apply | drop
	ClampNegative bool          `yaml:"clamp_negative"`
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
}

type HTTPConfig struct {
	Listen string `yaml:"listen"` // "" disables the HTTP API
	Token  string `yaml:"token"`
}

type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // console | json
}

// StringList decodes from a YAML string or a list of strings.
type StringList []string

// DefaultConfig returns the defaults of DESIGN section 7.
func DefaultConfig() Config {
	return Config{
		Gateway: GatewayConfig{ID: "demo"},
		MQTT: MQTTConfig{
			Embedded:      EmbeddedConfig{Listen: "127.0.0.1:1883"},
			EventsTopic:   StringList{"dpu/+/events"},
			MaxPayload:    262144,
			OutputPrefix:  "occupancy",
			HomeAssistant: HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "homeassistant"},
		},
		Storage: StorageConfig{Dir: "./data", Retention: 2160 * time.Hour, MaxParked: 1000000},
		Engine: EngineConfig{
			SettleAfter:   5 * time.Minute,
			Tick:          time.Second,
			LateEvents:    "apply",
			ClampNegative: true,
			MaxFutureSkew: time.Minute,
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:8080"},
		Log:  LogConfig{Level: "info", Format: "console"},
	}
}

// UnmarshalYAML accepts a single string or a list of strings.
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = StringList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(StringList, 0, len(n.Content))
		for i, c := range n.Content {
			if c.Kind == yaml.AliasNode && c.Alias != nil {
				c = c.Alias
			}
			if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
				return fmt.Errorf("want a string or a list of strings, got %s at [%d]", describeNode(c), i)
			}
			out = append(out, c.Value)
		}
		*l = out
		return nil
	default:
		return fmt.Errorf("want a string or a list of strings, got %s", describeNode(n))
	}
}

// MarshalYAML writes a single filter as a string and several as a list.
func (l StringList) MarshalYAML() (any, error) {
	if len(l) == 1 {
		return l[0], nil
	}
	return []string(l), nil
}

// Problem is one configuration problem: the key path (e.g. `mqtt.max_payload`,
// `topology.dpus[3].plus_space`), what is wrong, and the line of the key in the file
// when known (0 otherwise).
type Problem struct {
	Path    string
	Message string
	Line    int
}

func (p Problem) String() string {
	s := p.Message
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Line > 0 {
		if p.Path == "" {
			return fmt.Sprintf("line %d: %s", p.Line, s)
		}
		s += fmt.Sprintf(" (line %d)", p.Line)
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

// LoadConfig reads, decodes, completes and validates the configuration file at path.
// A *ConfigError (errors.As) lists every problem with its key path and line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.Source = path
	}
	return cfg, err
}

// ParseConfig decodes a YAML configuration over DefaultConfig strictly (unknown keys
// are problems), fills the defaults derived from gateway.id (ApplyDefaults) and
// validates it. On error the returned Config is what could be decoded, and the error
// is a *ConfigError with every problem found.
func ParseConfig(data []byte) (Config, error) {
	if !fastOff {
		if cfg, ok := parseFast(data); ok {
			return cfg, nil
		}
	}
	cfg := DefaultConfig()
	d := configDecoder{}
	if !d.decodeDocument(data, &cfg) {
		return cfg, &ConfigError{Problems: d.problems} // not YAML: nothing else to say
	}
	cfg.ApplyDefaults()
	decodeProblems := len(d.problems)
	for _, p := range cfg.validate() {
		if d.reported(p.Path, decodeProblems) {
			continue // a value that did not decode: already reported
		}
		if p.Line == 0 {
			p.Line = d.lineOf(p.Path)
		}
		d.problems = append(d.problems, p)
	}
	if len(d.problems) == 0 {
		return cfg, nil
	}
	// In file order, like a compiler; problems without a line (keys absent from the
	// file) last.
	sort.SliceStable(d.problems, func(i, j int) bool {
		li, lj := d.problems[i].Line, d.problems[j].Line
		return li != 0 && (lj == 0 || li < lj)
	})
	return cfg, &ConfigError{Problems: d.problems}
}

// fastOff turns the fast path off (tests compare with and without it).
var fastOff bool

// parseFast is ParseConfig for a file in fastDecode's subset without problems; false
// sends the file down the full path, which reports them.
func parseFast(data []byte) (Config, bool) {
	cfg := DefaultConfig()
	if !fastDecode(data, &cfg) {
		return Config{}, false
	}
	cfg.ApplyDefaults()
	if len(cfg.validate()) > 0 {
		return Config{}, false
	}
	return cfg, true
}

// FastConfig reports whether ParseConfig reads data without yaml.v3: data is in the
// YAML subset of its fast path and decodes there without a problem. dpusim's tests
// hold what it writes to it, so that a 100,000-DPU file keeps loading fast.
func FastConfig(data []byte) bool {
	_, ok := parseFast(data)
	return ok
}

// reported tells whether one of the first n problems is about path or a key under it.
func (d *configDecoder) reported(path string, n int) bool {
	for _, p := range d.problems[:n] {
		if p.Path == path || strings.HasPrefix(p.Path, path+".") || strings.HasPrefix(p.Path, path+"[") {
			return true
		}
	}
	return false
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

// Validate reports every problem of the configuration, each with its key path, as a
// *ConfigError; nil when the configuration is usable. Settings derived by
// ApplyDefaults may be empty.
func (c Config) Validate() error {
	if ps := c.validate(); len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

// validate collects the problems in key order.
func (c Config) validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}

	// gateway
	if c.Gateway.ID == "" {
		add("gateway.id", "required")
	} else if !occupancy.ValidID(c.Gateway.ID) {
		add("gateway.id", "%q must match [A-Za-z0-9_-]{1,64} (it appears in topics)", c.Gateway.ID)
	}

	// mqtt
	m := c.MQTT
	tlsSet := m.TLS.CAFile != "" || m.TLS.CertFile != "" || m.TLS.KeyFile != ""
	if m.Broker == "" {
		if m.Embedded.Listen == "" {
			add("mqtt.embedded.listen", "required when mqtt.broker is empty (the embedded broker)")
		} else if host, err := checkHostPort(m.Embedded.Listen); err != nil {
			add("mqtt.embedded.listen", "%v", err)
		} else if !IsLoopbackHost(host) && (m.Username == "" || m.PasswordFile == "") {
			add("mqtt.embedded.listen", "%q is not a loopback address: set mqtt.username and mqtt.password_file so the embedded broker does not accept anyone", m.Embedded.Listen)
		}
		if tlsSet {
			add("mqtt.tls", "set, but the embedded broker (mqtt.broker empty) is reached over loopback without TLS")
		}
	} else {
		u, err := url.Parse(m.Broker)
		switch {
		case err != nil:
			add("mqtt.broker", "not a URL: %v", errors.Unwrap(err))
		case !brokerSchemes[u.Scheme]:
			add("mqtt.broker", "want a tcp://, ssl://, ws:// or wss:// URL (or empty for the embedded broker), got %q", m.Broker)
		case u.Host == "" || u.Hostname() == "":
			add("mqtt.broker", "%q has no host", m.Broker)
		case tlsSet && !tlsSchemes[u.Scheme]:
			add("mqtt.tls", "set, but mqtt.broker %q does not use TLS (want ssl:// or wss://)", m.Broker)
		}
	}
	if m.ClientID != "" && (strings.ContainsAny(m.ClientID, "+#/") || len(m.ClientID) > 65535) {
		add("mqtt.client_id", "%q must not contain '+', '#' or '/'", m.ClientID)
	}
	if m.PasswordFile != "" {
		if m.Username == "" {
			add("mqtt.password_file", "set without mqtt.username")
		}
		if err := checkReadable(m.PasswordFile); err != nil {
			add("mqtt.password_file", "%v", err)
		}
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		add("mqtt.tls", "cert_file and key_file go together (client certificate)")
	}
	for _, f := range []struct{ key, file string }{
		{"mqtt.tls.ca_file", m.TLS.CAFile}, {"mqtt.tls.cert_file", m.TLS.CertFile}, {"mqtt.tls.key_file", m.TLS.KeyFile},
	} {
		if f.file != "" {
			if err := checkReadable(f.file); err != nil {
				add(f.key, "%v", err)
			}
		}
	}
	if len(m.EventsTopic) == 0 {
		add("mqtt.events_topic", "required: a topic filter such as dpu/+/events, or a list of them")
	}
	filterPath := func(i int) string {
		if len(m.EventsTopic) > 1 {
			return fmt.Sprintf("mqtt.events_topic[%d]", i)
		}
		return "mqtt.events_topic"
	}
	seen := map[string]bool{}
	for i, f := range m.EventsTopic {
		if err := CheckEventsFilter(f); err != nil {
			add(filterPath(i), "%v", err)
		} else if seen[f] {
			add(filterPath(i), "%q is listed twice", f)
		}
		seen[f] = true
	}
	// A filter that matches what occupancyd publishes would feed it its own output.
	outputs := c.outputTopics()
	for i, f := range m.EventsTopic {
		if CheckEventsFilter(f) != nil {
			continue
		}
		for _, out := range outputs {
			if topicMatches(f, out) {
				add(filterPath(i), "%q also matches %s, which occupancyd publishes", f, out)
				break
			}
		}
	}
	if m.MaxPayload <= 0 {
		add("mqtt.max_payload", "must be > 0")
	} else if m.MaxPayload > maxMQTTPayload {
		add("mqtt.max_payload", "must be <= %d (the MQTT limit)", maxMQTTPayload)
	}
	for _, t := range []struct{ key, topic string }{
		{"mqtt.output_prefix", m.OutputPrefix}, {"mqtt.status_topic", m.StatusTopic}, {"mqtt.rejected_topic", m.RejectedTopic},
	} {
		if t.topic == "" {
			if t.key == "mqtt.output_prefix" {
				add(t.key, "required")
			}
			continue // status and rejected topics derive from gateway.id
		}
		if err := checkTopicName(t.topic); err != nil {
			add(t.key, "%v", err)
		}
	}
	if m.HomeAssistant.Enabled {
		if m.HomeAssistant.DiscoveryPrefix == "" {
			add("mqtt.homeassistant.discovery_prefix", "required when mqtt.homeassistant.enabled is true")
		} else if err := checkTopicName(m.HomeAssistant.DiscoveryPrefix); err != nil {
			add("mqtt.homeassistant.discovery_prefix", "%v", err)
		}
	}

	// storage
	if c.Storage.Dir == "" {
		add("storage.dir", "required")
	}
	if c.Storage.Retention <= 0 {
		add("storage.retention", "must be > 0, got %s", c.Storage.Retention)
	}
	if c.Storage.MaxParked <= 0 {
		add("storage.max_parked", "must be > 0, got %d", c.Storage.MaxParked)
	}

	// engine
	e := c.Engine
	if e.SettleAfter <= 0 {
		add("engine.settle_after", "must be > 0, got %s", e.SettleAfter)
	}
	if e.Tick <= 0 {
		add("engine.tick", "must be > 0, got %s", e.Tick)
	} else if e.Tick < time.Millisecond {
		add("engine.tick", "must be >= 1ms, got %s", e.Tick)
	}
	if e.LateEvents != "apply" && e.LateEvents != "drop" {
		add("engine.late_events", `want "apply" or "drop", got %q`, e.LateEvents)
	}
	if e.MaxFutureSkew < 0 {
		add("engine.max_future_skew", "must be >= 0, got %s", e.MaxFutureSkew)
	}
	if e.SettleAfter > 0 && c.Storage.Retention > 0 && c.Storage.Retention <= e.SettleAfter {
		add("storage.retention", "must be longer than engine.settle_after (%s), got %s", e.SettleAfter, c.Storage.Retention)
	}

	// http
	if c.HTTP.Listen != "" {
		if _, err := checkHostPort(c.HTTP.Listen); err != nil {
			add("http.listen", "%v", err)
		}
	}

	// log
	if !logLevels[c.Log.Level] {
		add("log.level", `want "debug", "info", "warn" or "error", got %q`, c.Log.Level)
	}
	if c.Log.Format != "console" && c.Log.Format != "json" {
		add("log.format", `want "console" or "json", got %q`, c.Log.Format)
	}

	// topology
	if len(c.Topology.Spaces) == 0 {
		add("topology.spaces", "at least one space is required")
	}
	for _, p := range c.Topology.Validate() {
		path := "topology"
		if p.Path != "" {
			path += "." + p.Path
		}
		ps = append(ps, Problem{Path: path, Message: p.Message})
	}
	return ps
}

const maxMQTTPayload = 268435455

var (
	brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}
	tlsSchemes    = map[string]bool{"ssl": true, "tls": true, "mqtts": true, "wss": true}
	logLevels     = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}
)

// checkHostPort checks a listen address "host:port" and returns the host.
func checkHostPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("want host:port such as 127.0.0.1:8080, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port of %q must be a number from 0 to 65535", addr)
	}
	return host, nil
}

// IsLoopbackHost reports whether host (a name or an IP, no port) is a loopback address.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// CheckEventsFilter checks an events topic filter: a valid MQTT filter with at least
// one '+' level (the last one is the DPU id).
func CheckEventsFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	plus := false
	for i, l := range levels {
		switch {
		case l == "+":
			plus = true
		case l == "#":
			if i != len(levels)-1 {
				return fmt.Errorf("%q: '#' must be the last level", f)
			}
		case strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%q: '+' and '#' must fill a whole level", f)
		}
	}
	if !plus {
		return fmt.Errorf("%q has no '+' level for the DPU id (e.g. dpu/+/events)", f)
	}
	return nil
}

// outputTopics are examples of every topic occupancyd publishes (for a space
// "space-id"), with the derived defaults filled in.
func (c Config) outputTopics() []string {
	d := c
	d.ApplyDefaults()
	m := d.MQTT
	out := []string{
		m.OutputPrefix + "/space-id", m.OutputPrefix + "/space-id/count",
		m.StatusTopic, m.RejectedTopic,
	}
	if m.HomeAssistant.Enabled {
		out = append(out, m.HomeAssistant.DiscoveryPrefix+"/sensor/"+d.Gateway.ID+"_space-id/occupancy/config")
	}
	return out
}

// topicMatches reports whether MQTT topic filter f matches topic t.
func topicMatches(f, t string) bool {
	fl, tl := strings.Split(f, "/"), strings.Split(t, "/")
	for i, l := range fl {
		if l == "#" {
			return true
		}
		if i >= len(tl) || (l != "+" && l != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}

// checkTopicName checks a topic (or topic prefix) occupancyd publishes to.
func checkTopicName(t string) error {
	if t == "" {
		return errors.New("empty topic")
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%q must not contain the wildcards '+' or '#'", t)
	}
	if strings.HasSuffix(t, "/") {
		return fmt.Errorf("%q must not end with '/'", t)
	}
	return nil
}

// configDecoder decodes a yaml.Node tree into Config field by field, so that every
// unknown key and every value of the wrong type is reported with its key path and
// line, and the rest of the file still decodes.
type configDecoder struct {
	problems []Problem
	root     *yaml.Node          // the document's top mapping, for lineOf
	active   map[*yaml.Node]bool // anchored nodes being decoded: an alias back to one is a cycle
	steps    int                 // aliases expanded so far, bounded against alias bombs
}

// maxAliasSteps bounds the work of expanding aliases and merge keys.
const maxAliasSteps = 100_000

func (d *configDecoder) problem(path string, line int, format string, args ...any) {
	d.problems = append(d.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...), Line: line})
}

// lineOf returns the line of path (e.g. "topology.dpus[3].plus_space") in the file:
// of its key, or of the nearest ancestor present; 0 if none. It walks the document
// rather than keeping a line for every key, which a 100,000-DPU file would make costly.
func (d *configDecoder) lineOf(path string) int {
	n, line := d.root, 0
	if path == "" {
		return 0
	}
	for _, seg := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(seg, "[")
		k, v := lookupKey(n, key)
		if k == nil {
			return line
		}
		n, line = v, k.Line
		for rest != "" {
			idx, tail, _ := strings.Cut(rest, "]")
			rest = strings.TrimPrefix(tail, "[")
			n = deref(n)
			i, err := strconv.Atoi(idx)
			if err != nil || n == nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// lookupKey returns the key and value nodes of key in mapping n, merge keys included;
// nil if absent.
func lookupKey(n *yaml.Node, key string) (k, v *yaml.Node) {
	return lookupKeyDepth(n, key, 0)
}

func lookupKeyDepth(n *yaml.Node, key string, depth int) (k, v *yaml.Node) {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode || depth > 10 {
		return nil, nil
	}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn := n.Content[i]
		if kn.Value == "<<" && kn.Tag == "!!merge" {
			merges = append(merges, n.Content[i+1])
			continue
		}
		if kn.Value == key {
			return kn, n.Content[i+1]
		}
	}
	for _, m := range merges {
		m = deref(m)
		if m != nil && m.Kind == yaml.SequenceNode {
			for _, c := range m.Content {
				if k, v := lookupKeyDepth(c, key, depth+1); k != nil {
					return k, v
				}
			}
		} else if k, v := lookupKeyDepth(m, key, depth+1); k != nil {
			return k, v
		}
	}
	return nil, nil
}

// decodeDocument decodes data over cfg; false when data is not one YAML document.
func (d *configDecoder) decodeDocument(data []byte, cfg *Config) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return true // empty file: all defaults
		}
		d.problems = append(d.problems, yamlSyntaxProblem(err))
		return false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.problem("", extra.Line, "a second YAML document: a config file holds one")
		return false
	} else if !errors.Is(err, io.EOF) {
		d.problems = append(d.problems, yamlSyntaxProblem(err))
		return false
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return true
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return true
	}
	if root.Kind != yaml.MappingNode {
		d.problem("", root.Line, "want a mapping of keys (gateway, mqtt, storage, engine, http, log, topology), got %s", describeNode(root))
		return false
	}
	d.root = root
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	return true
}

// yamlSyntaxProblem turns "yaml: line 3: mapping values are not allowed ..." into a
// Problem with its line.
func yamlSyntaxProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d: ", &line); n == 1 {
		msg = msg[strings.Index(msg, ": ")+2:]
	}
	return Problem{Message: "invalid YAML: " + msg, Line: line}
}

var (
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	durationType    = reflect.TypeOf(time.Duration(0))
	stringListType  = reflect.TypeOf(StringList(nil))
)

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *configDecoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
		if d.steps++; d.steps == maxAliasSteps {
			d.problem(path, n.Line, "too many aliases and merge keys to expand")
		}
	}
	if d.steps >= maxAliasSteps {
		return
	}
	if n.Anchor != "" { // only an anchored node can be reached again through an alias
		if d.active[n] {
			d.problem(path, n.Line, "an alias refers to the mapping it is in")
			return
		}
		if d.active == nil {
			d.active = map[*yaml.Node]bool{}
		}
		d.active[n] = true
		defer delete(d.active, n)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // key present without a value: keep the default
	}
	t := v.Type()
	switch {
	case t == stringListType && n.Kind == yaml.SequenceNode:
		// element by element, so that each bad element is reported with its index
		var l StringList
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			for c.Kind == yaml.AliasNode && c.Alias != nil {
				c = c.Alias
			}
			if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
				d.problem(p, c.Line, "want a string, got %s", describeNode(c))
				continue
			}
			l = append(l, c.Value)
		}
		v.Set(reflect.ValueOf(l))
	case reflect.PointerTo(t).Implements(unmarshalerType):
		d.decodeLeaf(n, v, path)
	case t.Kind() == reflect.Struct && t != durationType:
		d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, n.Line, "want a list, got %s", describeNode(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.decode(c, s.Index(i), p)
		}
		v.Set(s)
	default:
		d.decodeLeaf(n, v, path)
	}
}

func (d *configDecoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, n.Line, "want a mapping of keys, got %s", describeNode(n))
		return
	}
	fields := yamlFields(v.Type())
	// Merge keys (<<: *anchor) first, so that explicit keys override them.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Value == "<<" && k.Tag == "!!merge" {
			m := n.Content[i+1]
			for m.Kind == yaml.AliasNode && m.Alias != nil {
				m = m.Alias
			}
			if m.Kind == yaml.SequenceNode {
				for _, c := range m.Content {
					d.decode(c, v, path)
				}
			} else {
				d.decode(m, v, path)
			}
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			continue
		}
		p := joinPath(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok || k.Kind != yaml.ScalarNode {
			d.problem(p, k.Line, "unknown key%s", suggestKey(k.Value, fields))
			continue
		}
		d.decode(val, v.Field(idx), p)
	}
}

// decodeLeaf decodes a scalar (or a StringList) through yaml, into a copy so a bad
// value leaves the default in place.
func (d *configDecoder) decodeLeaf(n *yaml.Node, v reflect.Value, path string) {
	// Fast paths for the common leaves (a 100,000-DPU topology has a million), with
	// yaml's own results; everything else goes through yaml.
	if n.Kind == yaml.ScalarNode && strings.HasPrefix(n.Tag, "!!") && n.Tag != "!!binary" && n.Tag != "!!null" &&
		!reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(n.Value) // yaml sets the text of any such scalar
			return
		case reflect.Int, reflect.Int64, reflect.Int32:
			if n.Tag == "!!int" && v.Type() != durationType && plainDecimal(n.Value) {
				if x, err := strconv.ParseInt(n.Value, 10, 64); err == nil && !v.OverflowInt(x) {
					v.SetInt(x)
					return
				}
			}
		}
	}
	tmp := reflect.New(v.Type())
	tmp.Elem().Set(v)
	if err := n.Decode(tmp.Interface()); err != nil {
		d.problem(path, n.Line, "%s", leafMessage(v.Type(), n, err))
		return
	}
	v.Set(tmp.Elem())
}

func leafMessage(t reflect.Type, n *yaml.Node, err error) string {
	got := describeNode(n)
	switch {
	case t == durationType:
		return fmt.Sprintf(`want a duration such as "90s", "5m" or "2160h", got %s`, got)
	case reflect.PointerTo(t).Implements(unmarshalerType):
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return te.Errors[0]
		}
		return err.Error()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("want an integer, got %s", got)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("want a non-negative integer, got %s", got)
	case reflect.Bool:
		return fmt.Sprintf("want true or false, got %s", got)
	case reflect.String:
		return fmt.Sprintf("want a string, got %s", got)
	}
	return fmt.Sprintf("cannot use %s: %v", got, err)
}

// plainDecimal: an optional '-' and digits without a leading zero (yaml reads "012"
// as octal, so that one is left to yaml).
func plainDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" || (s[0] == '0' && len(s) > 1) || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// yamlFields maps the yaml key of each field of a struct type to its index.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

// suggestKey returns ` (did you mean "x"?)` for a near miss, listing the valid keys
// otherwise.
func suggestKey(key string, fields map[string]int) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
		if dist := editDistance(strings.ToLower(key), name); dist < bestD {
			best, bestD = name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(names)
	return " (want one of " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// NewLogger builds the process logger: JSON lines when cfg.Format is "json", a
// human-readable console format otherwise (colours only on a terminal), at cfg.Level.
func NewLogger(cfg LogConfig, w io.Writer) (zerolog.Logger, error) {
	level := zerolog.InfoLevel
	if cfg.Level != "" {
		if !logLevels[cfg.Level] {
			return zerolog.Nop(), fmt.Errorf("log.level: want \"debug\", \"info\", \"warn\" or \"error\", got %q", cfg.Level)
		}
		l, err := zerolog.ParseLevel(cfg.Level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log.level: %w", err)
		}
		level = l
	}
	switch cfg.Format {
	case "json":
		return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
	case "console", "":
		cw := zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
		return zerolog.New(cw).Level(level).With().Timestamp().Logger(), nil
	default:
		return zerolog.Nop(), fmt.Errorf("log.format: want \"console\" or \"json\", got %q", cfg.Format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// EngineOptions are the engine's options from the engine and storage sections.
func (c Config) EngineOptions() occupancy.Options {
	return occupancy.Options{
		SettleAfter:   c.Engine.SettleAfter.Milliseconds(),
		LateEvents:    occupancy.LatePolicy(c.Engine.LateEvents),
		ClampNegative: c.Engine.ClampNegative,
		MaxParked:     c.Storage.MaxParked,
	}
}

// ---- fast path ----
//
// A 100,000-DPU configuration is ~19 MB of YAML; yaml.v3 takes most of the daemon's
// start to build its node tree. fastDecode reads the subset of YAML that
// `dpusim topology` writes and people commonly write (block mappings and sequences,
// one-line flow mappings and sequences, plain and quoted scalars on one line,
// comments) straight into the Config. It declines — and ParseConfig falls back to the
// yaml.v3 path, which reports the problems — at anything outside that subset and at
// anything the full decoder would report: an unknown or repeated key, a value of the
// wrong type, an anchor, alias, tag, block scalar, multi-line scalar or flow
// collection, a tab, a carriage return or a character yaml.v3 refuses. Where it
// accepts, it decodes exactly what the full decoder decodes (the differential tests
// and FuzzFastDecode in config_test.go hold it to that).

// fastDecode decodes data over cfg; false means "not in the subset": cfg is then
// partly decoded and must be thrown away.
func fastDecode(data []byte, cfg *Config) bool {
	if !fastChars(data) {
		return false
	}
	p := fastParser{data: data}
	p.advance()
	if p.eof || p.indent != 0 {
		return false // an empty file, or a document not at the left margin
	}
	v := reflect.ValueOf(cfg).Elem()
	if !p.mapping(v, fastStructOf(v.Type()), 0) {
		return false
	}
	return p.eof
}

// fastChars: no control character but '\n' (so no tab and no '\r'), valid UTF-8,
// and no character yaml.v3 refuses (non-printable) or reads as a line break or byte
// order mark.
func fastChars(data []byte) bool {
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			if (c < 0x20 && c != '\n') || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError || r < 0xa0 || r == 0x2028 || r == 0x2029 || r == 0xfeff ||
			(r >= 0xd800 && r < 0xe000) || r == 0xfffe || r == 0xffff {
			return false
		}
		i += size
	}
	return true
}

// fastParser walks data line by line. line is the current content line (blank and
// comment-only lines skipped) from its indentation on; indent is its column.
type fastParser struct {
	data   []byte
	next   int // offset of the line after the current one
	line   []byte
	indent int
	eof    bool
}

// advance moves to the next content line.
func (p *fastParser) advance() {
	for p.next < len(p.data) {
		rest := p.data[p.next:]
		end := bytes.IndexByte(rest, '\n')
		var l []byte
		if end < 0 {
			l, p.next = rest, len(p.data)
		} else {
			l, p.next = rest[:end], p.next+end+1
		}
		ind := 0
		for ind < len(l) && l[ind] == ' ' {
			ind++
		}
		if ind == len(l) || l[ind] == '#' {
			continue
		}
		p.line, p.indent = l[ind:], ind
		return
	}
	p.line, p.indent, p.eof = nil, -1, true
}

// seqEntry tells whether the current line is a block sequence entry ("- ...").
func (p *fastParser) seqEntry() bool {
	return len(p.line) > 0 && p.line[0] == '-' && (len(p.line) == 1 || p.line[1] == ' ')
}

// fastStruct is what fastDecode needs of a struct type: its fields' yaml keys (a
// struct has a handful: a linear search beats a map), and the fields it must leave
// to the full decoder (types with their own UnmarshalYAML, but StringList).
type fastStruct struct {
	ok    bool // false: more fields than the repeated-key mask holds
	names []string
	index []int
	leave []bool
}

func (st *fastStruct) field(key []byte) (int, bool) {
	for i, n := range st.names {
		if n == string(key) {
			return st.index[i], !st.leave[i]
		}
	}
	return 0, false
}

var fastStructs sync.Map // reflect.Type -> *fastStruct

func fastStructOf(t reflect.Type) *fastStruct {
	if s, ok := fastStructs.Load(t); ok {
		return s.(*fastStruct)
	}
	s := &fastStruct{ok: t.NumField() <= 64}
	for name, i := range yamlFields(t) {
		ft := t.Field(i).Type
		s.names = append(s.names, name)
		s.index = append(s.index, i)
		s.leave = append(s.leave, ft != stringListType && reflect.PointerTo(ft).Implements(unmarshalerType))
	}
	fastStructs.Store(t, s)
	return s
}

// mapping decodes the block mapping whose keys are at column indent, starting at the
// current line, into struct v.
func (p *fastParser) mapping(v reflect.Value, st *fastStruct, indent int) bool {
	if !st.ok {
		return false
	}
	var seen uint64
	for !p.eof && p.indent == indent && !p.seqEntry() {
		key, rest, ok := fastKey(p.line)
		if !ok {
			return false
		}
		idx, ok := st.field(key)
		if !ok || seen&(1<<idx) != 0 {
			return false // unknown or repeated: the full decoder has the words for it
		}
		seen |= 1 << idx
		f := v.Field(idx)
		if rest = trimSpaces(rest); len(rest) == 0 || rest[0] == '#' {
			// The value is the block below, or null (the default stays).
			p.advance()
			if !p.eof && (p.indent > indent || (p.indent == indent && p.seqEntry())) {
				if !p.block(f) {
					return false
				}
			}
		} else {
			if !p.inline(rest, f) {
				return false
			}
			p.advance()
		}
		if !p.eof && p.indent > indent {
			return false // a continuation line, or structure the subset does not know
		}
	}
	return true
}

// fastKey splits "key: rest" or "key:" with a key of [A-Za-z0-9_]; ok=false for
// anything else (quoted or complex keys, "key :", "key:value").
func fastKey(l []byte) (key, rest []byte, ok bool) {
	i := 0
	for i < len(l) && (l[i] == '_' || (l[i] >= 'a' && l[i] <= 'z') || (l[i] >= 'A' && l[i] <= 'Z') || (l[i] >= '0' && l[i] <= '9')) {
		i++
	}
	if i == 0 || i == len(l) || l[i] != ':' {
		return nil, nil, false
	}
	if i+1 < len(l) && l[i+1] != ' ' {
		return nil, nil, false
	}
	return l[:i], l[i+1:], true
}

func trimSpaces(b []byte) []byte {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

// block decodes the block node starting at the current line (a mapping or a
// sequence) into f.
func (p *fastParser) block(f reflect.Value) bool {
	t := f.Type()
	switch {
	case p.seqEntry():
		return p.sequence(f)
	case t.Kind() == reflect.Struct && t != durationType:
		return p.mapping(f, fastStructOf(t), p.indent)
	}
	return false
}

// sequence decodes the block sequence whose entries are at the current line's column
// into f: a slice of structs (each entry a one-line flow mapping or a block mapping
// begun on the entry's line) or a StringList (each entry a scalar).
func (p *fastParser) sequence(f reflect.Value) bool {
	t := f.Type()
	indent := p.indent
	switch {
	case t == stringListType:
		var l StringList
		for !p.eof && p.indent == indent && p.seqEntry() {
			item := trimSpaces(p.line[1:])
			s, plain, ok := fastScalar(item)
			if !ok || (plain && nullWord(s)) {
				return false
			}
			l = append(l, s)
			p.advance()
			if !p.eof && p.indent > indent {
				return false
			}
		}
		f.Set(reflect.ValueOf(l))
		return true
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && t.Elem() != durationType:
		st := fastStructOf(t.Elem())
		f.Set(reflect.MakeSlice(t, 0, 16))
		for !p.eof && p.indent == indent && p.seqEntry() {
			n := f.Len()
			f.Grow(1) // amortised, where reflect.Append would allocate at every entry
			f.SetLen(n + 1)
			e := f.Index(n)
			col := 1
			for col < len(p.line) && p.line[col] == ' ' {
				col++
			}
			item := p.line[col:]
			if len(item) == 0 || item[0] == '#' {
				return false // an entry on the lines below, or null
			}
			if item[0] == '{' {
				if !p.inline(item, e) {
					return false
				}
				p.advance()
			} else {
				// "- key: value" begins a block mapping at the column of key.
				p.line, p.indent = item, p.indent+col
				if !p.mapping(e, st, p.indent) {
					return false
				}
			}
			if !p.eof && p.indent > indent {
				return false
			}
		}
		return true
	}
	return false
}

// inline decodes the value s that follows "key: " into f; s runs to the end of the
// line and may end with a comment.
func (p *fastParser) inline(s []byte, f reflect.Value) bool {
	t := f.Type()
	switch s[0] {
	case '{':
		if t.Kind() != reflect.Struct || t == durationType {
			return false
		}
		rest, ok := flowMapping(s, f, fastStructOf(t))
		return ok && lineEnd(rest)
	case '[':
		rest, ok := flowSequence(s, f)
		return ok && lineEnd(rest)
	}
	val, plain, ok := fastScalar(s)
	return ok && setScalar(f, val, plain)
}

// lineEnd: nothing but spaces, or spaces and then a comment, is left on the line.
func lineEnd(rest []byte) bool {
	if len(rest) == 0 {
		return true
	}
	if rest[0] != ' ' {
		return false
	}
	rest = trimSpaces(rest)
	return len(rest) == 0 || rest[0] == '#'
}

// flowMapping decodes the one-line flow mapping "{k: v, ...}" at the start of s into
// struct f (scalar values only); rest is what follows the closing brace.
func flowMapping(s []byte, f reflect.Value, st *fastStruct) (rest []byte, ok bool) {
	if !st.ok {
		return nil, false
	}
	s = skipSpaces(s[1:])
	if len(s) > 0 && s[0] == '}' {
		return s[1:], true
	}
	var seen uint64
	for {
		key, after, ok := fastKey(s)
		if !ok || len(after) == 0 {
			return nil, false
		}
		idx, ok := st.field(key)
		if !ok || seen&(1<<idx) != 0 {
			return nil, false
		}
		seen |= 1 << idx
		after = skipSpaces(after)
		if len(after) == 0 || after[0] == '{' || after[0] == '[' || after[0] == ',' || after[0] == '}' {
			return nil, false
		}
		var val string
		var plain bool
		val, plain, after, ok = flowScalar(after)
		if !ok || !setScalar(f.Field(idx), val, plain) {
			return nil, false
		}
		after = skipSpaces(after)
		if len(after) == 0 {
			return nil, false
		}
		switch after[0] {
		case '}':
			return after[1:], true
		case ',':
			s = skipSpaces(after[1:])
			if len(s) == 0 || s[0] == '}' {
				return nil, false // a trailing comma, or the mapping goes on below
			}
		default:
			return nil, false
		}
	}
}

// flowSequence decodes the one-line flow sequence "[a, b]" of scalars into f, a
// StringList, or "[]" into an empty slice of structs.
func flowSequence(s []byte, f reflect.Value) (rest []byte, ok bool) {
	t := f.Type()
	s = skipSpaces(s[1:])
	if len(s) > 0 && s[0] == ']' {
		switch {
		case t == stringListType:
			f.Set(reflect.Zero(t)) // as the full decoder: nil
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			f.Set(reflect.MakeSlice(t, 0, 0))
		default:
			return nil, false
		}
		return s[1:], true
	}
	if t != stringListType {
		return nil, false
	}
	var l StringList
	for {
		if len(s) == 0 || s[0] == '{' || s[0] == '[' || s[0] == ',' || s[0] == ']' {
			return nil, false
		}
		val, plain, after, ok := flowScalar(s)
		if !ok || (plain && nullWord(val)) {
			return nil, false
		}
		l = append(l, val)
		after = skipSpaces(after)
		if len(after) == 0 {
			return nil, false
		}
		switch after[0] {
		case ']':
			f.Set(reflect.ValueOf(l))
			return after[1:], true
		case ',':
			s = skipSpaces(after[1:])
			if len(s) == 0 || s[0] == ']' {
				return nil, false
			}
		default:
			return nil, false
		}
	}
}

func skipSpaces(b []byte) []byte {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	return b
}

// flowScalar reads a quoted or plain scalar inside a flow collection; rest starts at
// what ends it. A plain scalar ends at ',', '}' or ']' and must hold none of the
// characters that would make it something else there.
func flowScalar(s []byte) (val string, plain bool, rest []byte, ok bool) {
	if s[0] == '"' || s[0] == '\'' {
		val, n, ok := quoted(s)
		return val, false, s[n:], ok
	}
	if !plainStart(s) {
		return "", false, nil, false
	}
	i := 0
	for i < len(s) && s[i] != ',' && s[i] != '}' && s[i] != ']' {
		switch s[i] {
		case '#', '?', '[', '{', '"', '\'':
			return "", false, nil, false
		case ':': // "127.0.0.1:1883" is one scalar; "a: b" and "a:," are not in the subset
			if i+1 == len(s) || !plainFlowChar(s[i+1]) {
				return "", false, nil, false
			}
		}
		i++
	}
	v := trimSpaces(s[:i])
	return string(v), true, s[i:], true
}

// plainFlowChar: c can follow ':' inside a plain scalar of a flow collection.
func plainFlowChar(c byte) bool {
	switch c {
	case ' ', ',', '[', ']', '{', '}', '?', ':', '#', '"', '\'':
		return false
	}
	return true
}

// fastScalar reads the scalar that makes up the rest of a block-context line s
// (a comment may follow it).
func fastScalar(s []byte) (val string, plain bool, ok bool) {
	if len(s) == 0 {
		return "", false, false
	}
	if s[0] == '"' || s[0] == '\'' {
		val, n, ok := quoted(s)
		return val, false, ok && lineEnd(s[n:])
	}
	if !plainStart(s) {
		return "", false, false
	}
	end := len(s)
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && s[i-1] == ' ' {
			end = i
			break
		}
	}
	v := trimSpaces(s[:end])
	if len(v) == 0 {
		return "", false, false
	}
	for i, c := range v {
		if c == ':' && (i == len(v)-1 || v[i+1] == ' ') {
			return "", false, false // "a: b" here is a mapping the subset does not take
		}
	}
	return string(v), true, true
}

// plainStart: s starts a plain scalar (no indicator character first, '-' only before
// a non-space).
func plainStart(s []byte) bool {
	switch s[0] {
	case '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', ' ':
		return false
	case '-':
		return len(s) > 1 && s[1] != ' ' && s[1] != ',' && s[1] != ']' && s[1] != '}'
	}
	return true
}

// quoted reads the one-line single- or double-quoted scalar at the start of s and
// returns its value and length. Escapes other than \" \\ \n \t and \r, and
// quoted scalars that go on to the next line, are not in the subset.
func quoted(s []byte) (val string, n int, ok bool) {
	q := s[0]
	var b []byte // nil until an escape needs a copy
	start := 1
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			if q == '\'' && i+1 < len(s) && s[i+1] == '\'' { // '' is one quote
				b = append(b, s[start:i+1]...)
				i++
				start = i + 1
				continue
			}
			if b == nil {
				return string(s[start:i]), i + 1, true
			}
			return string(append(b, s[start:i]...)), i + 1, true
		case q == '"' && c == '\\':
			if i+1 >= len(s) {
				return "", 0, false
			}
			var e byte
			switch s[i+1] {
			case '"', '\\':
				e = s[i+1]
			case 'n':
				e = '\n'
			case 't':
				e = '\t'
			case 'r':
				e = '\r'
			default:
				return "", 0, false
			}
			b = append(append(b, s[start:i]...), e)
			i++
			start = i + 1
		}
	}
	return "", 0, false
}

// nullWord: the plain scalars YAML reads as null.
func nullWord(s string) bool {
	switch s {
	case "~", "null", "Null", "NULL":
		return true
	}
	return false
}

// setScalar sets leaf f from a scalar as the full decoder would, or returns false
// where the full decoder would report a problem or the subset is not sure. (Fields
// with an UnmarshalYAML of their own never get here: fastStruct leaves them.)
func setScalar(f reflect.Value, s string, plain bool) bool {
	if plain && nullWord(s) {
		return true // null: the default stays
	}
	t := f.Type()
	switch {
	case t == stringListType:
		f.Set(reflect.ValueOf(StringList{s}))
		return true
	case t == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return false
		}
		if plain && (&yaml.Node{Kind: yaml.ScalarNode, Value: s}).ShortTag() != "!!str" {
			return false // e.g. "0": an integer to yaml, not a duration
		}
		f.SetInt(int64(d))
		return true
	}
	switch t.Kind() {
	case reflect.String:
		f.SetString(s)
		return true
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Int16, reflect.Int8:
		if !plain || !plainDecimal(s) {
			return false
		}
		x, err := strconv.ParseInt(s, 10, 64)
		if err != nil || f.OverflowInt(x) {
			return false
		}
		f.SetInt(x)
		return true
	case reflect.Bool:
		if !plain || (s != "true" && s != "false") {
			return false
		}
		f.SetBool(s == "true")
		return true
	}
	return false
}
