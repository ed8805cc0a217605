package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/occupancy"
)

var update = flag.Bool("update", false, "rewrite the golden .err files of testdata/bad")

// designDefaults is DESIGN section 7 written out by hand (an independent model of
// DefaultConfig + ApplyDefaults for gateway.id "demo").
func designDefaults() Config {
	return Config{
		Gateway: GatewayConfig{ID: "demo"},
		MQTT: MQTTConfig{
			Broker:        "",
			Embedded:      EmbeddedConfig{Listen: "127.0.0.1:1883"},
			ClientID:      "occupancyd-demo",
			EventsTopic:   StringList{"dpu/+/events"},
			MaxPayload:    262144,
			OutputPrefix:  "occupancy",
			StatusTopic:   "occupancyd/demo/status",
			RejectedTopic: "occupancyd/demo/rejected",
			HomeAssistant: HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "homeassistant"},
		},
		Storage: StorageConfig{Dir: "./data", Retention: 2160 * time.Hour, ArchiveDir: "", MaxParked: 1000000},
		Engine: EngineConfig{
			SettleAfter: 5 * time.Minute, Tick: time.Second, LateEvents: "apply",
			ClampNegative: true, MaxFutureSkew: time.Minute,
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:8080"},
		Log:  LogConfig{Level: "info", Format: "console"},
	}
}

func TestParseConfig(t *testing.T) {
	t.Run("minimal file gets every default", func(t *testing.T) {
		got, err := ParseConfig([]byte("topology:\n  spaces: [{id: hq, name: HQ}]\n"))
		if err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
		want := designDefaults()
		want.Topology = occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})

	t.Run("derived defaults follow gateway.id", func(t *testing.T) {
		got, err := ParseConfig([]byte("gateway: {id: north}\ntopology:\n  spaces: [{id: hq, name: HQ}]\n"))
		if err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
		for _, c := range []struct{ name, got, want string }{
			{"client_id", got.MQTT.ClientID, "occupancyd-north"},
			{"status_topic", got.MQTT.StatusTopic, "occupancyd/north/status"},
			{"rejected_topic", got.MQTT.RejectedTopic, "occupancyd/north/rejected"},
		} {
			if c.got != c.want {
				t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
			}
		}
	})

	t.Run("DESIGN section 7 example", func(t *testing.T) {
		got, err := LoadConfig("testdata/design.yaml")
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		want := designDefaults()
		want.Topology = occupancy.TopologyConfig{
			Spaces: []occupancy.SpaceConfig{
				{ID: "hq", Name: "HQ", Capacity: 300, TimeZone: "Europe/Berlin", DailyReset: "04:00"},
				{ID: "lobby", Name: "Lobby", Parent: "hq"},
			},
			Doorways: []occupancy.DoorwayConfig{{ID: "main", Name: "Main entrance"}},
			DPUs:     []occupancy.DPUConfig{{ID: "283", Doorway: "main", PlusSpace: "lobby", MinusSpace: ""}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})

	t.Run("every key set", func(t *testing.T) {
		got, err := LoadConfig("testdata/full.yaml")
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		want := Config{
			Gateway: GatewayConfig{ID: "site-b"},
			MQTT: MQTTConfig{
				Broker:        "ssl://broker.example.com:8883",
				Embedded:      EmbeddedConfig{Listen: "127.0.0.1:1883"},
				ClientID:      "gw-b",
				Username:      "occupancyd",
				PasswordFile:  "testdata/secret.txt",
				TLS:           TLSConfig{CAFile: "testdata/secret.txt", CertFile: "testdata/secret.txt", KeyFile: "testdata/secret.txt"},
				EventsTopic:   StringList{"site-b/dpu/+/events", "legacy/+/crossings/#"},
				MaxPayload:    1024,
				OutputPrefix:  "site-b/occupancy",
				StatusTopic:   "gw/b/status",
				RejectedTopic: "gw/b/rejected",
				HomeAssistant: HomeAssistantConfig{Enabled: false, DiscoveryPrefix: "ha"},
			},
			Storage: StorageConfig{Dir: "/var/lib/occupancyd", Retention: 720 * time.Hour, ArchiveDir: "/srv/archive", MaxParked: 5000},
			Engine: EngineConfig{
				SettleAfter: 90 * time.Second, Tick: 250 * time.Millisecond, LateEvents: "drop",
				ClampNegative: false, MaxFutureSkew: 150 * time.Second,
			},
			HTTP: HTTPConfig{Listen: ":9090", Token: "s3cret"},
			Log:  LogConfig{Level: "debug", Format: "json"},
			Topology: occupancy.TopologyConfig{
				Spaces: []occupancy.SpaceConfig{
					{ID: "b", Name: "Building B", Capacity: 40, TimeZone: "Europe/Berlin", DailyReset: "03:30"},
					// merged from the anchor, then overridden
					{ID: "b1", Name: "Building B", Parent: "b", Capacity: 10, TimeZone: "Europe/Berlin", DailyReset: "03:30"},
				},
				Doorways: []occupancy.DoorwayConfig{{ID: "d1", Name: "Door 1"}},
				// an id that YAML would read as a number keeps its text
				DPUs: []occupancy.DPUConfig{{ID: "0283", Doorway: "d1", PlusSpace: "b1", MinusSpace: "b"}},
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})

	t.Run("empty file is all defaults but needs a space", func(t *testing.T) {
		_, err := ParseConfig(nil)
		assertProblems(t, err, "topology.spaces: at least one space is required")
	})

	t.Run("key without value keeps the default", func(t *testing.T) {
		got, err := ParseConfig([]byte("mqtt:\nengine:\n  tick:\ntopology:\n  spaces: [{id: hq, name: HQ}]\n"))
		if err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
		if got.Engine.Tick != time.Second || got.MQTT.MaxPayload != 262144 {
			t.Errorf("got tick %s max_payload %d, want the defaults 1s 262144", got.Engine.Tick, got.MQTT.MaxPayload)
		}
	})

	t.Run("an alias cycle is a problem, not a hang", func(t *testing.T) {
		_, err := ParseConfig([]byte("mqtt: &x {<<: *x}\ntopology: {spaces: [{id: hq, name: HQ}]}\n"))
		assertProblems(t, err, "mqtt: an alias refers to the mapping it is in (line 1)")
	})

	t.Run("merge keys that double at every level stop", func(t *testing.T) {
		doc := "x0: &a0 {broker: tcp://h:1}\n"
		for i := 1; i <= 30; i++ {
			doc += fmt.Sprintf("x%d: &a%d {<<: [*a%d, *a%d]}\n", i, i, i-1, i-1)
		}
		doc += "mqtt: *a30\n"
		_, err := ParseConfig([]byte(doc))
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "mqtt: too many aliases and merge keys to expand") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("a bad value leaves the rest decoded", func(t *testing.T) {
		got, err := ParseConfig([]byte("mqtt: {max_payload: lots, output_prefix: occ}\ntopology:\n  spaces: [{id: hq, name: HQ}]\n"))
		assertProblems(t, err, `mqtt.max_payload: want an integer, got "lots" (line 1)`)
		if got.MQTT.OutputPrefix != "occ" || got.MQTT.MaxPayload != 262144 {
			t.Errorf("got output_prefix %q max_payload %d, want occ and the default 262144", got.MQTT.OutputPrefix, got.MQTT.MaxPayload)
		}
	})
}

func assertProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v, want a *ConfigError", err)
	}
	got := problemLines(ce)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got problems\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func problemLines(ce *ConfigError) []string {
	var out []string
	for _, p := range ce.Problems {
		out = append(out, p.String())
	}
	return out
}

// TestBadConfigs loads every testdata/bad/*.yaml and compares the problems reported,
// one a line, with the golden file of the same name ending in .err (go test -update
// rewrites them; review the diff).
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(f)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("LoadConfig: got %v, want a *ConfigError", err)
			}
			if ce.Source != f {
				t.Errorf("Source: got %q, want %q", ce.Source, f)
			}
			if !strings.HasPrefix(err.Error(), "invalid config "+f+": ") {
				t.Errorf("error %q does not name the file", err)
			}
			got := strings.Join(problemLines(ce), "\n") + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden file: %v (run go test -update and review it)", err)
			}
			if got != string(want) {
				t.Errorf("problems:\ngot\n%swant\n%s", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base := func() Config {
		c := designDefaults()
		c.Topology.Spaces = []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}}
		return c
	}
	t.Run("defaults are valid", func(t *testing.T) {
		if err := base().Validate(); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("derived settings may be empty", func(t *testing.T) {
		c := DefaultConfig()
		c.Topology.Spaces = []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}}
		if err := c.Validate(); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"every problem at once", func(c *Config) {
			c.MQTT.MaxPayload = -1
			c.Engine.LateEvents = "keep"
			c.Log.Format = "xml"
		}, []string{
			"mqtt.max_payload: must be > 0",
			`engine.late_events: want "apply" or "drop", got "keep"`,
			`log.format: want "console" or "json", got "xml"`,
		}},
		{"payload beyond MQTT", func(c *Config) { c.MQTT.MaxPayload = 1 << 30 },
			[]string{"mqtt.max_payload: must be <= 268435455 (the MQTT limit)"}},
		{"embedded on all interfaces with users", func(c *Config) {
			c.MQTT.Embedded.Listen = ":1883"
			c.MQTT.Username = "u"
			c.MQTT.PasswordFile = "testdata/secret.txt"
		}, nil},
		{"embedded on localhost", func(c *Config) { c.MQTT.Embedded.Listen = "localhost:0" }, nil},
		{"embedded on ipv6 loopback", func(c *Config) { c.MQTT.Embedded.Listen = "[::1]:1883" }, nil},
		{"embedded on all interfaces without users", func(c *Config) { c.MQTT.Embedded.Listen = ":1883" },
			[]string{`mqtt.embedded.listen: ":1883" is not a loopback address: set mqtt.username and mqtt.password_file so the embedded broker does not accept anyone`}},
		{"external broker ignores embedded", func(c *Config) {
			c.MQTT.Broker = "tcp://10.0.0.1:1883"
			c.MQTT.Embedded.Listen = "0.0.0.0:1883"
		}, nil},
		{"ws broker", func(c *Config) { c.MQTT.Broker = "ws://10.0.0.1:9001/mqtt" }, nil},
		{"broker without host", func(c *Config) { c.MQTT.Broker = "tcp://:1883" },
			[]string{`mqtt.broker: "tcp://:1883" has no host`}},
		{"http disabled", func(c *Config) { c.HTTP.Listen = "" }, nil},
		{"http port out of range", func(c *Config) { c.HTTP.Listen = "127.0.0.1:70000" },
			[]string{`http.listen: port of "127.0.0.1:70000" must be a number from 0 to 65535`}},
		{"password file without username", func(c *Config) {
			c.MQTT.Broker = "tcp://h:1883"
			c.MQTT.PasswordFile = "testdata/secret.txt"
		}, []string{"mqtt.password_file: set without mqtt.username"}},
		{"key without cert", func(c *Config) {
			c.MQTT.Broker = "ssl://h:8883"
			c.MQTT.TLS.KeyFile = "testdata/secret.txt"
		}, []string{"mqtt.tls: cert_file and key_file go together (client certificate)"}},
		{"tls with embedded broker", func(c *Config) { c.MQTT.TLS.CAFile = "testdata/secret.txt" },
			[]string{"mqtt.tls: set, but the embedded broker (mqtt.broker empty) is reached over loopback without TLS"}},
		{"zero max_parked", func(c *Config) { c.Storage.MaxParked = 0 },
			[]string{"storage.max_parked: must be > 0, got 0"}},
		{"tick below a millisecond", func(c *Config) { c.Engine.Tick = time.Microsecond },
			[]string{"engine.tick: must be >= 1ms, got 1µs"}},
		{"events filter matching the occupancy output", func(c *Config) { c.MQTT.EventsTopic = StringList{"dpu/+/events", "+/+/count"} },
			[]string{`mqtt.events_topic[1]: "+/+/count" also matches occupancy/space-id/count, which occupancyd publishes`}},
		{"events filter matching the status topic", func(c *Config) { c.MQTT.EventsTopic = StringList{"occupancyd/+/#"} },
			[]string{`mqtt.events_topic: "occupancyd/+/#" also matches occupancyd/demo/status, which occupancyd publishes`}},
		{"events filter matching discovery", func(c *Config) { c.MQTT.EventsTopic = StringList{"homeassistant/sensor/+/occupancy/config"} },
			[]string{`mqtt.events_topic: "homeassistant/sensor/+/occupancy/config" also matches homeassistant/sensor/demo_space-id/occupancy/config, which occupancyd publishes`}},
		{"events filter beside the output", func(c *Config) { c.MQTT.EventsTopic = StringList{"occupancy/+/events", "+/dpu/+/events"} }, nil},
		{"no events filter", func(c *Config) { c.MQTT.EventsTopic = nil },
			[]string{"mqtt.events_topic: required: a topic filter such as dpu/+/events, or a list of them"}},
		{"topology problems get the topology prefix", func(c *Config) {
			c.Topology.DPUs = []occupancy.DPUConfig{{ID: "x", PlusSpace: "nowhere"}}
		}, prefixedTopologyProblems(occupancy.TopologyConfig{
			Spaces: []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}},
			DPUs:   []occupancy.DPUConfig{{ID: "x", PlusSpace: "nowhere"}},
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			assertProblems(t, err, tc.want...)
		})
	}
}

// topologyProblems is what Validate must report for a topology: occupancy's own
// problems, each under "topology.".
func prefixedTopologyProblems(tc occupancy.TopologyConfig) []string {
	var out []string
	for _, p := range tc.Validate() {
		out = append(out, "topology."+p.Path+": "+p.Message)
	}
	return out
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error wrapping fs.ErrNotExist", err)
	}
	if !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("got %q, want it to start with %q", err, "read config: ")
	}
}

func TestStringList(t *testing.T) {
	cases := []struct {
		yaml string
		want StringList
		err  string
	}{
		{"events_topic: a/+/b", StringList{"a/+/b"}, ""},
		{"events_topic: [a/+/b, c/+/d]", StringList{"a/+/b", "c/+/d"}, ""},
		{"events_topic:\n  - a/+/b\n", StringList{"a/+/b"}, ""},
		{"events_topic: {a: b}", nil, `mqtt.events_topic: want a string or a list of strings, got a mapping (line 2)`},
		{"events_topic: [[a]]", nil, `mqtt.events_topic[0]: want a string, got a list (line 2)`},
	}
	for _, tc := range cases {
		t.Run(tc.yaml, func(t *testing.T) {
			doc := "mqtt:\n  " + strings.ReplaceAll(tc.yaml, "\n", "\n  ") + "\ntopology: {spaces: [{id: a, name: A}]}\n"
			got, err := ParseConfig([]byte(doc))
			if tc.err != "" {
				assertProblems(t, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(got.MQTT.EventsTopic, tc.want) {
				t.Errorf("got %q, want %q", got.MQTT.EventsTopic, tc.want)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := NewLogger(LogConfig{Level: "warn", Format: "json"}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Info().Msg("hidden")
		log.Warn().Str("space", "lobby").Msg("shown")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("got %d lines %q, want 1 (info filtered at warn)", len(lines), buf.String())
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
			t.Fatalf("not JSON: %v: %s", err, lines[0])
		}
		for k, want := range map[string]any{"level": "warn", "message": "shown", "space": "lobby"} {
			if rec[k] != want {
				t.Errorf("%s: got %v, want %v", k, rec[k], want)
			}
		}
		if _, err := time.Parse(time.RFC3339, rec["time"].(string)); err != nil {
			t.Errorf("time: %v", err)
		}
	})
	t.Run("console", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := NewLogger(LogConfig{Level: "debug", Format: "console"}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug().Str("space", "lobby").Msg("hello")
		out := buf.String()
		if json.Valid(bytes.TrimSpace(buf.Bytes())) {
			t.Errorf("console output is JSON: %s", out)
		}
		for _, want := range []string{"DBG", "hello", "space=lobby"} {
			if !strings.Contains(out, want) {
				t.Errorf("got %q, want it to contain %q", out, want)
			}
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colours written to a non-terminal: %q", out)
		}
	})
	t.Run("bad level", func(t *testing.T) {
		_, err := NewLogger(LogConfig{Level: "loud", Format: "json"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), `log.level: want "debug", "info", "warn" or "error", got "loud"`) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("bad format", func(t *testing.T) {
		_, err := NewLogger(LogConfig{Level: "info", Format: "xml"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), `log.format`) {
			t.Errorf("got %v", err)
		}
	})
	_ = zerolog.InfoLevel
}

// TestDemoConfig keeps configs/demo.yaml (used by make run and the README) valid and
// as DESIGN and the README describe it.
func TestDemoConfig(t *testing.T) {
	cfg, err := LoadConfig("../../configs/demo.yaml")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.Storage.Dir != "./data" || cfg.MQTT.Broker != "" || cfg.HTTP.Listen != "127.0.0.1:8080" {
		t.Errorf("got storage.dir %q broker %q http.listen %q, want ./data, embedded, 127.0.0.1:8080",
			cfg.Storage.Dir, cfg.MQTT.Broker, cfg.HTTP.Listen)
	}
	floors, nested, resets, capacities, tz := 0, 0, 0, 0, 0
	parent := map[string]string{}
	for _, s := range cfg.Topology.Spaces {
		parent[s.ID] = s.Parent
	}
	for _, s := range cfg.Topology.Spaces {
		if s.Parent != "" && parent[s.Parent] == "" {
			floors++
		}
		if s.Parent != "" && parent[s.Parent] != "" {
			nested++
		}
		if s.DailyReset != "" {
			resets++
		}
		if s.Capacity > 0 {
			capacities++
		}
		if s.TimeZone != "" {
			tz++
		}
	}
	if floors < 2 || nested < 2 || resets < 1 || capacities < 2 || tz < 1 || len(cfg.Topology.DPUs) < 6 {
		t.Errorf("demo building: %d floors, %d rooms, %d daily resets, %d capacities, %d time zones, %d DPUs; want >= 2, 2, 1, 2, 1, 6",
			floors, nested, resets, capacities, tz, len(cfg.Topology.DPUs))
	}
}

// FuzzParseConfig: any input gives a config or a *ConfigError with at least one
// problem, never a panic.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, p := range append(append(files, bad...), "../../configs/demo.yaml") {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("mqtt: {<<: [{broker: x}], events_topic: [*a]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := ParseConfig(data)
		if err == nil {
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("got %v, want a *ConfigError with problems", err)
		}
	})
}

// BenchmarkParseConfig decodes a 10,000-DPU topology (2,000 rooms) with ParseConfig
// (key paths, lines, every problem) beside a plain strict yaml decode of the same
// file, for comparison.
func BenchmarkParseConfig(b *testing.B) {
	var doc strings.Builder
	doc.WriteString("gateway: {id: bench}\ntopology:\n  spaces:\n    - {id: site, name: Site}\n")
	for r := 0; r < 2000; r++ {
		fmt.Fprintf(&doc, "    - {id: room-%d, name: Room %d, parent: site, capacity: %d}\n", r, r, 10+r%50)
	}
	doc.WriteString("  doorways:\n")
	for d := 0; d < 10000; d++ {
		fmt.Fprintf(&doc, "    - {id: door-%d, name: Door %d}\n", d, d)
	}
	doc.WriteString("  dpus:\n")
	for d := 0; d < 10000; d++ {
		fmt.Fprintf(&doc, "    - {id: \"%d\", doorway: door-%d, plus_space: room-%d, minus_space: \"\"}\n", 100000+d, d, d%2000)
	}
	data := []byte(doc.String())
	b.Run("ParseConfig", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := ParseConfig(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fastDecode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			c := DefaultConfig()
			if !fastDecode(data, &c) {
				b.Fatal("declined")
			}
		}
	})
	b.Run("yaml-strict", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			c := DefaultConfig()
			d := yaml.NewDecoder(bytes.NewReader(data))
			d.KnownFields(true)
			if err := d.Decode(&c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// ---- the fast path against the full decoder ----

// fullDecode is the yaml.v3 path of ParseConfig up to validation: the configuration
// and whether it decoded without a problem.
func fullDecode(data []byte) (Config, bool) {
	cfg := DefaultConfig()
	d := configDecoder{}
	ok := d.decodeDocument(data, &cfg)
	return cfg, ok && len(d.problems) == 0
}

// fullParse is ParseConfig without the fast path.
func fullParse(data []byte) (Config, error) {
	fastOff = true
	defer func() { fastOff = false }()
	return ParseConfig(data)
}

// checkFast holds fastDecode to its promise on data: where it accepts, the full
// decoder decodes the same configuration without a problem (and ParseConfig answers
// as without the fast path). It reports whether the fast path accepted.
func checkFast(t *testing.T, data []byte) bool {
	t.Helper()
	fast := DefaultConfig()
	if !fastDecode(data, &fast) {
		return false
	}
	full, ok := fullDecode(data)
	if !ok {
		_, err := fullParse(data)
		t.Fatalf("fast path accepted what the full decoder reports:\n%s\n---\n%v", data, err)
	}
	if !reflect.DeepEqual(fast, full) {
		t.Fatalf("fast path and full decoder differ on\n%s\n---\nfast %+v\nfull %+v", data, fast, full)
	}
	got, gerr := ParseConfig(data)
	want, werr := fullParse(data)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseConfig with and without the fast path differ on\n%s\n---\n%v\n%v", data, gerr, werr)
	}
	return true
}

func fastSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	files, _ := filepath.Glob("testdata/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, p := range append(append(files, bad...), "../../configs/demo.yaml") {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds[p] = b
	}
	for i, s := range fastCases {
		seeds[fmt.Sprintf("case %d", i)] = []byte(s)
	}
	// Past yaml.v3's 1024-character limit on simple keys.
	long, wide := strings.Repeat("a", 3000), strings.Repeat(" ", 1100)
	for i, s := range []string{
		"topology:\n  spaces:\n    - {id: s, name: " + long + "}\n    - {name: \"" + long + "\", id: t}\n",
		"gateway:\n  id: " + long + "\n", "topology:\n  spaces:\n    - id: s\n      name: " + long + "\n",
		"mqtt:\n  events_topic: [a/+/x, " + long + "/+/x]\n", "topology:\n  spaces:\n    - {id: s," + wide + "name: x}\n",
		"gateway:" + wide + "\n  id: a\n", "gateway:\n  id:" + wide + "a\n",
	} {
		seeds[fmt.Sprintf("long %d", i)] = []byte(s)
	}
	return seeds
}

// fastCases are the corners of the subset: what it must take, and what it must leave
// to yaml.v3 (or take with exactly yaml.v3's result).
var fastCases = []string{
	"gateway: {id: a}\ntopology:\n  spaces:\n    - {id: s, name: S}\n",
	"gateway:\n  id: a\n",
	"gateway:\n    id: a   # comment\n# comment\n\n  # comment\nlog: {level: debug}\n",
	"gateway: {id: 'it''s'}\n",
	"gateway: {id: \"a\\\"b\\\\c\\n\\t\\r\"}\n", "gateway: {id: \"a\\/b\"}\n",
	"gateway: {id: \"\\x41\"}\n",
	"gateway: {id: \"\\u00e9\"}\n",
	"gateway: {id: ~}\n", "gateway: {id: null}\n", "gateway: {id: Null}\n", "gateway: {id: NULL}\n",
	"gateway: {id: nUll}\n", "gateway: {id: \"~\"}\n", "gateway: ~\n", "gateway:\n", "gateway: \n",
	"gateway: # nothing\nlog:\n  level: warn\n",
	"gateway: {id: yes}\n", "gateway: {id: true}\n", "gateway: {id: 0x1F}\n", "gateway: {id: 012}\n",
	"gateway: {id: 1e3}\n", "gateway: {id: .inf}\n", "gateway: {id: 2001-12-14}\n",
	"gateway: {id: a b  c}\n", "gateway: {id: a#b}\n", "gateway: {id: a #b}\n",
	"gateway:\n  id: a#b\n", "gateway:\n  id: a #b\n", "gateway:\n  id: a:b\n", "gateway:\n  id: a: b\n",
	"gateway:\n  id: a:\n", "gateway:\n  id: a,b]c}d{\n", "gateway:\n  id: -a\n", "gateway:\n  id: - a\n",
	"gateway:\n  id: -\n", "gateway:\n  id: <<\n", "gateway:\n  id: ?a\n", "gateway:\n  id: :a\n",
	"gateway:\n  id: a\n    b\n", "gateway:\n  id: a\n\n    b\n", "gateway:\n  id: a\n  b\n",
	"gateway:\n  id: 'a\n  b'\n", "gateway:\n  id: \"a\n  b\"\n", "gateway:\n  id: |\n    a\n",
	"gateway:\n  id: &x a\n", "gateway: &g\n  id: a\n", "gateway:\n  id: !!str 5\n",
	"gateway:\n  id: \"a\"#b\n", "gateway:\n  id: \"a\" #b\n", "gateway:\n  id: \"a\" b\n",
	"gateway: {id: a, }\n", "gateway: {id: a,}\n", "gateway: {id: a\n  }\n", "gateway: {id: [a]}\n",
	"gateway: {id: a}}\n", "gateway: {id: a} x\n", "gateway: {id: a} #x\n", "gateway: {id:a}\n",
	"gateway: {id : a}\n", "gateway: {\"id\": a}\n", "gateway: {}\n", "gateway: { }\n", "gateway: []\n",
	"gateway: {id: a, id: b}\n", "gateway:\n  id: a\n  id: b\n", "gateway: {idd: a}\n", "gateway:\n  Id: a\n",
	"gateway: a\n", "gateway:\n  - a\n", "gateway:\n- a\n",
	"mqtt:\n  max_payload: 1024\n", "mqtt:\n  max_payload: -5\n", "mqtt:\n  max_payload: +5\n",
	"mqtt:\n  max_payload: 0\n", "mqtt:\n  max_payload: -0\n", "mqtt:\n  max_payload: 007\n",
	"mqtt:\n  max_payload: 1_000\n", "mqtt:\n  max_payload: 0x10\n", "mqtt:\n  max_payload: \"5\"\n",
	"mqtt:\n  max_payload: 99999999999999999999\n", "mqtt:\n  max_payload: 1.0\n", "mqtt:\n  max_payload: ~\n",
	"mqtt:\n  homeassistant: {enabled: false}\n", "mqtt:\n  homeassistant: {enabled: no}\n",
	"mqtt:\n  homeassistant: {enabled: True}\n", "mqtt:\n  homeassistant: {enabled: \"true\"}\n",
	"mqtt:\n  homeassistant: {enabled: 1}\n",
	"mqtt:\n  events_topic: a/+/b\n", "mqtt:\n  events_topic: [a/+/b, \"c/+/d\"]\n", "mqtt:\n  events_topic: []\n",
	"mqtt:\n  events_topic:\n    - a/+/b\n    - c/+/d\n", "mqtt:\n  events_topic:\n  - a/+/b\n  max_payload: 5\n",
	"mqtt:\n  events_topic: [a/+/b, ~]\n", "mqtt:\n  events_topic:\n    - ~\n", "mqtt:\n  events_topic: [a, ]\n",
	"mqtt:\n  events_topic: [a/+/b\n", "mqtt:\n  events_topic:\n    - [a]\n", "mqtt:\n  events_topic: {a: b}\n",
	"mqtt:\n  events_topic:\n    -\n", "mqtt:\n  events_topic:\n    - a\n   - b\n",
	"engine:\n  settle_after: 90s\n  tick: 250ms\n", "engine:\n  settle_after: 0\n", "engine:\n  settle_after: 0s\n",
	"engine:\n  settle_after: \"5m\"\n", "engine:\n  settle_after: 300\n", "engine:\n  settle_after: 1h30m\n",
	"engine:\n  settle_after: -5m\n", "engine:\n  settle_after: 1e3s\n", "engine:\n  settle_after: 5 m\n",
	"engine:\n  settle_after: .5h\n", "engine:\n  settle_after: 5µs\n", "engine:\n  settle_after: ~\n",
	"topology:\n  spaces:\n  - {id: a, name: A}\n  - id: b\n    name: B\n    parent: a\n  dpus: []\n",
	"topology:\n  spaces:\n    -   id: b\n        name: B\n",
	"topology:\n  spaces:\n    - id: b\n     name: B\n", "topology:\n  spaces:\n    - id: b\n      name: B\n",
	"topology:\n  spaces:\n    - {id: b, capacity: 5}\n    - {}\n", "topology:\n  spaces:\n    -\n      id: b\n",
	"topology:\n  spaces:\n    - ~\n", "topology:\n  spaces:\n    - # c\n", "topology:\n  spaces:\n    - a\n",
	"topology:\n  spaces:\n    - - a\n", "topology:\n  spaces: [{id: a}]\n", "topology:\n  spaces:\n    - {id: a, x: 1}\n",
	"topology:\n  spaces:\n    - {id: é, name: Café ☕}\n", "topology:\n  spaces:\n    - {id: a, name: \"\u00a0\"}\n",
	"topology:\n  spaces:\n    - {id: a}\n  spaces:\n    - {id: b}\n",
	"topology:\n  spaces:\n    - {id: a}\n    - {id: b}\n  doorways:\n",
	"---\ngateway: {id: a}\n", "gateway: {id: a}\n---\n", "gateway: {id: a}\n...\n", "%YAML 1.2\n---\ngateway: {id: a}\n",
	"  gateway: {id: a}\n", "gateway: {id: a}\n  log: {}\n", "gateway: {id: a}\r\n", "gateway: {id: a}\t\n",
	"\ufeffgateway: {id: a}\n", "gateway: {id: a\u0085b}\n", "gateway: {id: a\u2028b}\n", "", "# only a comment\n",
	"gateway: {id: a}", "gateway:\n  id: a", "- a\n", "a\n", "gateway: {id: a}\n- b\n", "? gateway\n: {id: a}\n",
	"gateway: {id: a}\nlog: {level: debug, format: json}\nhttp: {listen: \":9090\", token: s3cret}\n",
	"http: {listen: 127.0.0.1:8080}\n", "http: {listen: a:b:c}\n", "http: {listen: a:, token: b}\n", "http: {listen: a:}\n",
	"http: {listen: a::b}\n", "http: {listen: a:?b}\n", "http: {listen: a?b}\n", "http: {listen: a:é}\n",
}

// TestFastDecodeSeeds: the configurations dpusim writes and the repository's example
// files take the fast path; every corner case and every seed agrees with the full
// decoder.
func TestFastDecodeSeeds(t *testing.T) {
	accepted := map[string]bool{}
	for name, data := range fastSeeds(t) {
		accepted[name] = checkFast(t, data)
	}
	for _, name := range []string{"testdata/dpusim.yaml", "../../configs/demo.yaml",
		"case 0", "case 1", "case 2", "case 3", "case 4"} {
		if !accepted[name] {
			t.Errorf("%s: the fast path declined it", name)
		}
	}
	n := 0
	for _, ok := range accepted {
		if ok {
			n++
		}
	}
	t.Logf("fast path took %d of %d seeds", n, len(accepted))
}

// TestFastDecodeMutations mutates every seed many times (characters that matter to
// YAML inserted, deleted or replaced; lines repeated, dropped or re-indented) and
// holds the fast path to the full decoder on each variant.
func TestFastDecodeMutations(t *testing.T) {
	seeds := fastSeeds(t)
	names := make([]string, 0, len(seeds))
	for name := range seeds {
		names = append(names, name)
	}
	sort.Strings(names)
	rounds := 120 // ~23,000 variants, 0.5 s (3 s with -race); FuzzFastDecode goes further
	if testing.Short() {
		rounds = 30
	}
	rng := rand.New(rand.NewPCG(1, 2))
	accepted, total := 0, 0
	for _, name := range names {
		for r := 0; r < rounds; r++ {
			data := mutateYAML(rng, seeds[name], 1+rng.IntN(3))
			total++
			if checkFast(t, data) {
				accepted++
			}
		}
	}
	t.Logf("fast path took %d of %d variants", accepted, total)
	if accepted < total/20 {
		t.Errorf("fast path took only %d of %d variants: the test no longer exercises it", accepted, total)
	}
}

const yamlChars = " :-#{}[],'\"\n~!&*|>?%@`\\0aZ_./+\t\r" + "é"

func mutateYAML(rng *rand.Rand, data []byte, n int) []byte {
	out := append([]byte(nil), data...)
	for k := 0; k < n; k++ {
		if len(out) == 0 {
			out = append(out, yamlChars[rng.IntN(len(yamlChars))])
			continue
		}
		i := rng.IntN(len(out))
		switch rng.IntN(7) {
		case 0: // insert
			c := yamlChars[rng.IntN(len(yamlChars))]
			out = append(out[:i], append([]byte{c}, out[i:]...)...)
		case 1: // delete
			out = append(out[:i], out[i+1:]...)
		case 2: // replace
			out[i] = yamlChars[rng.IntN(len(yamlChars))]
		case 3, 4, 5: // a line repeated, dropped or re-indented
			lines := bytes.Split(out, []byte("\n"))
			j := rng.IntN(len(lines))
			switch rng.IntN(3) {
			case 0:
				lines = append(lines[:j+1], lines[j:]...)
			case 1:
				lines = append(lines[:j], lines[j+1:]...)
			default:
				d := rng.IntN(5) - 2
				if d > 0 {
					lines[j] = append(bytes.Repeat([]byte(" "), d), lines[j]...)
				} else {
					for ; d < 0 && len(lines[j]) > 0 && lines[j][0] == ' '; d++ {
						lines[j] = lines[j][1:]
					}
				}
			}
			out = bytes.Join(lines, []byte("\n"))
		default: // a value swapped for one of the corner values
			vals := []string{"~", "null", "yes", "0", "012", "-0", "1e3", "5m", "\"\"", "''", "a: b", "a#b", " #c", "{}", "[]", "- x", "&a x", "*a", "!!str 1", "true", "True"}
			j := bytes.IndexAny(out[i:], ":,")
			if j < 0 {
				continue
			}
			i += j + 1
			end := bytes.IndexAny(out[i:], ",}\n")
			if end < 0 {
				end = len(out) - i
			}
			v := " " + vals[rng.IntN(len(vals))]
			out = append(out[:i], append([]byte(v), out[i+end:]...)...)
		}
	}
	return out
}

// FuzzFastDecode: wherever the fast path accepts, the full decoder agrees
// (go test -fuzz=FuzzFastDecode ./gateway/).
func FuzzFastDecode(f *testing.F) {
	for _, data := range fastSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFast(t, data)
	})
}
