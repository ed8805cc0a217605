package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/occupancy"
)

var update = flag.Bool("update", false, "rewrite the golden .err files of testdata/bad")

// designDefaults is DESIGN section 7 written out by hand (an independent model of
// DefaultConfig + ApplyDefaults for gateway.id "demo").
func designDefaults() Config {
	return Config{
		Gateway: GatewayConfig{ID: "demo", MemoryLimit: MemoryLimitAuto},
		MQTT: MQTTConfig{
			Broker:             "",
			Embedded:           EmbeddedConfig{Listen: "127.0.0.1:1883"},
			ClientID:           "occupancyd-demo",
			EventsTopic:        Topics("dpu/+/events"),
			MaxPayload:         262144,
			OutputPrefix:       "occupancy",
			PublishMinInterval: 250 * time.Millisecond,
			StatusTopic:        "occupancyd/demo/status",
			RejectedTopic:      "occupancyd/demo/rejected",
			HomeAssistant:      HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "homeassistant"},
		},
		Storage: StorageConfig{Dir: "./data", Retention: 2160 * time.Hour, ArchiveDir: "", MaxParked: 1000000, MinFree: 256 * 1024 * 1024},
		Engine: EngineConfig{
			SettleAfter: 5 * time.Minute, Tick: time.Second, LateEvents: "apply",
			ClampNegative: true, MaxFutureSkew: time.Minute,
		},
		HTTP:   HTTPConfig{Listen: "127.0.0.1:8080", Token: "", TokenFile: "", OpenReads: false, MaxStreamClients: 100},
		Health: HealthConfig{DPUQuietAfter: 2 * time.Hour, LastEventMetric: "quiet"},
		Log:    LogConfig{Level: "info", Format: "console"},
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
			DPUs: []occupancy.DPUConfig{{ID: "283", Doorway: "main", PlusSpace: "lobby", MinusSpace: ""},
				{ID: "vs133-7", Doorway: "main", PlusSpace: "lobby", Kind: "cumulative", Map: &occupancy.Mapping{
					TS: "time", InTotal: "line_total.in", OutTotal: "line_total.out", TSFormat: "rfc3339"}}},
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
			Gateway: GatewayConfig{ID: "site-b", MemoryLimit: 900 << 20},
			MQTT: MQTTConfig{
				Broker:       "ssl://broker.example.com:8883",
				Embedded:     EmbeddedConfig{Listen: "127.0.0.1:1883"},
				ClientID:     "gw-b",
				Username:     "occupancyd",
				PasswordFile: "testdata/secret.txt",
				TLS:          TLSConfig{CAFile: "testdata/secret.txt", CertFile: "testdata/secret.txt", KeyFile: "testdata/secret.txt"},
				EventsTopic: EventsTopics{{Filter: "site-b/dpu/+/events"}, {Filter: "legacy/+/crossings/#"},
					{Filter: "counters/+/up", Kind: "interval", Map: &occupancy.Mapping{Start: "from", End: "to", In: "fw", Out: "bw", TSFormat: "unix"}}},
				MaxPayload:         1024,
				OutputPrefix:       "site-b/occupancy",
				PublishMinInterval: time.Second,
				StatusTopic:        "gw/b/status",
				RejectedTopic:      "gw/b/rejected",
				HomeAssistant:      HomeAssistantConfig{Enabled: false, DiscoveryPrefix: "ha"},
			},
			Storage: StorageConfig{Dir: "/var/lib/occupancyd", Retention: 720 * time.Hour, ArchiveDir: "/srv/archive", MaxParked: 5000, MinFree: 1e9},
			Engine: EngineConfig{
				SettleAfter: 90 * time.Second, Tick: 250 * time.Millisecond, LateEvents: "drop",
				ClampNegative: false, MaxFutureSkew: 150 * time.Second,
			},
			HTTP:   HTTPConfig{Listen: ":9090", Token: "s3cret", OpenReads: true, MaxStreamClients: 7},
			Health: HealthConfig{DPUQuietAfter: 45 * time.Minute, LastEventMetric: "all"},
			Log:    LogConfig{Level: "debug", Format: "json"},
			Topology: occupancy.TopologyConfig{
				Spaces: []occupancy.SpaceConfig{
					{ID: "b", Name: "Building B", Capacity: 40, TimeZone: "Europe/Berlin", DailyReset: "03:30"},
					// merged from the anchor, then overridden
					{ID: "b1", Name: "Building B", Parent: "b", Capacity: 10, TimeZone: "Europe/Berlin", DailyReset: "03:30"},
				},
				Doorways: []occupancy.DoorwayConfig{{ID: "d1", Name: "Door 1"}},
				// an id that YAML would read as a number keeps its text
				DPUs: []occupancy.DPUConfig{{ID: "0283", Doorway: "d1", PlusSpace: "b1", MinusSpace: "b",
					QuietAfter: occupancy.Duration(10 * time.Minute), IngestTokenFile: "testdata/secret.txt",
					Kind: "cumulative", Map: &occupancy.Mapping{TS: "t", InTotal: "a", OutTotal: "b", TSFormat: "unix_ms"}}},
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

	t.Run("a fraction for an integer is refused, not truncated", func(t *testing.T) {
		got, err := ParseConfig([]byte("mqtt: {max_payload: 1.5}\nstorage: {max_parked: 2.0}\ntopology:\n  spaces: [{id: hq, name: HQ, capacity: 10.5}]\n"))
		assertProblems(t, err, `mqtt.max_payload: want an integer, got "1.5" (line 1)`,
			`topology.spaces[0].capacity: want an integer, got "10.5" (line 4)`)
		if got.Storage.MaxParked != 2 {
			t.Errorf("max_parked 2.0: got %d, want 2 (a whole number is one in YAML)", got.Storage.MaxParked)
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
		{"http on all interfaces without a token", func(c *Config) { c.HTTP.Listen = ":8080" },
			[]string{`http.listen: ":8080" is not a loopback address and no token is set: set http.token or http.token_file (reads then need it too), or http.open_reads: true to let anyone who reaches it read`}},
		{"http on a LAN address without a token", func(c *Config) { c.HTTP.Listen = "192.168.1.10:8080" },
			[]string{`http.listen: "192.168.1.10:8080" is not a loopback address and no token is set: set http.token or http.token_file (reads then need it too), or http.open_reads: true to let anyone who reaches it read`}},
		{"http on all interfaces with a token", func(c *Config) { c.HTTP.Listen, c.HTTP.Token = ":8080", "t" }, nil},
		{"http on all interfaces with a token file", func(c *Config) { c.HTTP.Listen, c.HTTP.TokenFile = ":8080", "testdata/secret.txt" }, nil},
		{"http on all interfaces, open reads", func(c *Config) { c.HTTP.Listen, c.HTTP.OpenReads = "[::]:8080", true }, nil},
		{"http on localhost", func(c *Config) { c.HTTP.Listen = "localhost:8080" }, nil},
		{"http on ipv6 loopback", func(c *Config) { c.HTTP.Listen = "[::1]:8080" }, nil},
		{"negative min_free", func(c *Config) { c.Storage.MinFree = -1 },
			[]string{"storage.min_free: must be >= 0 (0: no floor), got -1"}},
		{"no free-space floor", func(c *Config) { c.Storage.MinFree = 0 }, nil},
		{"zero durations", func(c *Config) { c.MQTT.PublishMinInterval, c.Health.DPUQuietAfter = 0, 0 },
			[]string{"mqtt.publish_min_interval: must be > 0, got 0s", "health.dpu_quiet_after: must be > 0, got 0s"}},
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
		{"events filter matching the occupancy output", func(c *Config) { c.MQTT.EventsTopic = Topics("dpu/+/events", "+/+/count") },
			[]string{`mqtt.events_topic[1]: "+/+/count" also matches occupancy/space-id/count, which occupancyd publishes`}},
		{"events filter matching the status topic", func(c *Config) { c.MQTT.EventsTopic = Topics("occupancyd/+/#") },
			[]string{`mqtt.events_topic: "occupancyd/+/#" also matches occupancyd/demo/status, which occupancyd publishes`}},
		{"events filter matching discovery", func(c *Config) { c.MQTT.EventsTopic = Topics("homeassistant/sensor/+/occupancy/config") },
			[]string{`mqtt.events_topic: "homeassistant/sensor/+/occupancy/config" also matches homeassistant/sensor/demo_space-id/occupancy/config, which occupancyd publishes`}},
		{"events filter beside the output", func(c *Config) { c.MQTT.EventsTopic = Topics("occupancy/+/events", "+/dpu/+/events") }, nil},
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

// TestEventsTopics: mqtt.events_topic is a filter, a list of filters, or entries
// {filter, kind, map} (DESIGN 2a, 7), each problem named by its key path.
func TestEventsTopics(t *testing.T) {
	interval := &occupancy.Mapping{Start: "from", End: "to", In: "fw", Out: "bw", TSFormat: "unix"}
	cases := []struct {
		yaml string
		want EventsTopics
		errs []string
	}{
		{"events_topic: a/+/b", Topics("a/+/b"), nil},
		{"events_topic: [a/+/b, c/+/d]", Topics("a/+/b", "c/+/d"), nil},
		{"events_topic:\n  - a/+/b\n", Topics("a/+/b"), nil},
		{"events_topic:\n  - dpu/+/events\n  - {filter: xovis/+/push, kind: interval, map: {start: from, end: to, in: fw, out: bw, ts_format: unix}}",
			EventsTopics{{Filter: "dpu/+/events"}, {Filter: "xovis/+/push", Kind: "interval", Map: interval}}, nil},
		// The DPU id in the payload: the filter needs no '+'.
		{"events_topic: {filter: irisys/counts, kind: cumulative, map: {items: CountLogs, dpu: $.Serial, ts: Timestamp, in_total: a, out_total: b}}",
			EventsTopics{{Filter: "irisys/counts", Kind: "cumulative",
				Map: &occupancy.Mapping{Items: "CountLogs", DPU: "$.Serial", TS: "Timestamp", InTotal: "a", OutTotal: "b"}}}, nil},
		{"events_topic: {filter: a/+/b}", Topics("a/+/b"), nil},
		{"events_topic: {a: b}", nil, []string{
			`mqtt.events_topic.a: unknown key (did you mean "map"?) (line 2)`}},
		{"events_topic: [[a]]", nil, []string{`mqtt.events_topic[0]: want a topic filter or {filter, kind, map}, got a list (line 2)`}},
		{"events_topic: [{filter: a/+/b, kind: counts}]", nil, []string{
			`mqtt.events_topic.kind: unknown kind "counts": want events, interval or cumulative (line 2)`}},
		{"events_topic:\n  - a/+/b\n  - filter: c/d\n    kind: interval\n    map: {start: s, ent: e, in_total: t, ts_format: yyyy}", nil, []string{
			`mqtt.events_topic[1].filter: "c/d" has no '+' level for the DPU id (e.g. dpu/+/events; or a map with dpu, the DPU id in the payload) (line 4)`,
			`mqtt.events_topic[1].map.ent: unknown key (did you mean "end"?) (line 6)`,
			`mqtt.events_topic[1].map.in_total: not a field of kind interval (it has start, end, in, out) (line 6)`,
			`mqtt.events_topic[1].map.ts_format: "yyyy" is not rfc3339, unix, unix_ms or a Go time layout with year, month, day, hour and minute (e.g. 2006/01/02 15:04:05) (line 6)`}},
	}
	for _, tc := range cases {
		t.Run(tc.yaml, func(t *testing.T) {
			doc := "mqtt:\n  " + strings.ReplaceAll(tc.yaml, "\n", "\n  ") + "\ntopology: {spaces: [{id: a, name: A}]}\n"
			got, err := ParseConfig([]byte(doc))
			if tc.errs != nil {
				assertProblems(t, err, tc.errs...)
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(got.MQTT.EventsTopic, tc.want) {
				t.Errorf("got %+v, want %+v", got.MQTT.EventsTopic, tc.want)
			}
		})
	}
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
// problem, each with a message, never a panic; a config it accepts validates. The
// seeds are the bad configs and testdata/fuzz/FuzzParseConfig (the testdata configs
// without their comments, aliases, merge keys, topology files, every scalar style):
// small, since every input that finds new coverage is minimized, and minimizing the
// commented 2-3 KB files took most of a 20 s run. They are read once, outside the
// fuzzed function, which only parses (go test -fuzz=^FuzzParseConfig$ ./gateway/config/).
func FuzzParseConfig(f *testing.F) {
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, p := range bad {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err == nil {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("ParseConfig accepted a config that Validate refuses: %v", err)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("got %v, want a *ConfigError with problems", err)
		}
		for _, p := range ce.Problems {
			if p.Message == "" {
				t.Fatalf("a problem without a message: %+v", p)
			}
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

func TestTopologyFile(t *testing.T) {
	inline, err := LoadConfig("testdata/design.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := inline
	want.TopologyFile = "topology/campus.json"
	want.Topology.DPUs[0].QuietAfter = occupancy.Duration(30 * time.Minute)
	t.Run("relative to the config's directory", func(t *testing.T) {
		got, err := LoadConfig("testdata/campus.yaml")
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})
	t.Run("loaded from elsewhere", func(t *testing.T) {
		abs, err := filepath.Abs("testdata/campus.yaml")
		if err != nil {
			t.Fatal(err)
		}
		t.Chdir(t.TempDir())
		got, err := LoadConfig(abs)
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		if !reflect.DeepEqual(got.Topology, want.Topology) {
			t.Errorf("got  %+v\nwant %+v", got.Topology, want.Topology)
		}
	})
	t.Run("ParseConfig: relative to the working directory, or absolute", func(t *testing.T) {
		abs, err := filepath.Abs("testdata/topology/campus.json")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"testdata/topology/campus.json", abs} {
			got, err := ParseConfig([]byte("topology:\n  file: " + f + "\n"))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if !reflect.DeepEqual(got.Topology, want.Topology) || got.TopologyFile != f {
				t.Errorf("%s: got %q %+v\nwant %+v", f, got.TopologyFile, got.Topology, want.Topology)
			}
		}
	})
	t.Run("a number with a point is not an integer, as in encoding/json", func(t *testing.T) {
		tf := decodeTopology([]byte("{\"spaces\": [\n{\"id\": \"a\", \"name\": \"A\", \"capacity\": 1.5},\n{\"id\": \"b\", \"name\": \"B\", \"capacity\": 2.0}]}"), "t.json")
		got := problemLines(&ConfigError{Problems: tf.problems})
		want := []string{"topology.file t.json: spaces[0].capacity: want an integer, got 1.5 (line 2 of t.json)",
			"topology.file t.json: spaces[1].capacity: want an integer, got 2.0 (line 3 of t.json)"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	})
	t.Run("not a regular file", func(t *testing.T) {
		_, err := ParseConfig([]byte("topology: {file: testdata}\n"))
		assertProblems(t, err, "topology.file: testdata is not a regular file (line 1)")
	})
	t.Run("Validate names the file", func(t *testing.T) {
		c := want
		c.Topology.DPUs = append(c.Topology.DPUs, occupancy.DPUConfig{ID: "x", PlusSpace: "nowhere"})
		assertProblems(t, c.Validate(), `topology.file topology/campus.json: dpus[2].plus_space: unknown space "nowhere"`)
	})
	t.Run("LoadTopology", func(t *testing.T) {
		got, err := LoadTopology("testdata/topology/campus.json")
		if err != nil || !reflect.DeepEqual(got, want.Topology) {
			t.Errorf("got %+v, %v\nwant %+v", got, err, want.Topology)
		}
		_, err = LoadTopology("testdata/bad/topology_file_shapes.json")
		assertProblems(t, err,
			"topology.file testdata/bad/topology_file_shapes.json: spaces: want a list, got an object (line 1 of testdata/bad/topology_file_shapes.json)")
	})
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"268435456", 268435456, true}, {"256MiB", 256 << 20, true}, {"1GB", 1e9, true}, {"1 GiB", 1 << 30, true},
		{"512kb", 512e3, true}, {"1.5KiB", 1536, true}, {"0", 0, true}, {"7B", 7, true}, {"2TiB", 2 << 40, true},
		{"", 0, false}, {"MiB", 0, false}, {"-1", 0, false}, {"256MB/s", 0, false}, {"1e3", 0, false},
		{"lots", 0, false}, {"9000000TiB", 0, false}, {"1..5MB", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var got ByteSize
			err := got.UnmarshalText([]byte(tc.in))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("got %d, %v; want %d, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	c := designDefaults()
	t.Run("HTTPToken", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "token")
		if err := os.WriteFile(file, []byte("from-file\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			token, file, want string
			err               bool
		}{
			{"", "", "", false}, {"inline", "", "inline", false}, {"", file, "from-file", false},
			{"", filepath.Join(dir, "missing"), "", true},
		} {
			c.HTTP.Token, c.HTTP.TokenFile = tc.token, tc.file
			got, err := c.HTTPToken()
			if got != tc.want || (err != nil) != tc.err {
				t.Errorf("token %q token_file %q: got %q, %v; want %q", tc.token, tc.file, got, err, tc.want)
			}
		}
	})
	t.Run("MinFreeBytes", func(t *testing.T) {
		for in, want := range map[ByteSize]int64{256 << 20: 256 << 20, 0: -1, 1: 1} {
			c.Storage.MinFree = in
			if got := c.Storage.MinFreeBytes(); got != want {
				t.Errorf("min_free %d: got %d, want %d", in, got, want)
			}
		}
	})
	t.Run("EngineOptions", func(t *testing.T) {
		got := designDefaults().EngineOptions()
		want := occupancy.Options{SettleAfter: 300000, LateEvents: occupancy.LatePolicy("apply"), ClampNegative: true}
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
}

// FuzzTopologyFile holds the topology file's element-by-element decoding to
// encoding/json's own strict decoding of the whole file: what it accepts without a
// problem, encoding/json accepts too, with the same topology; and every problem has
// a message and a line within the file.
func FuzzTopologyFile(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"spaces": [{"id": "a", "name": "A"}], "spaces": null, "dpus": [{"id": "d", "quiet_after": "1h"}, 7]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf := decodeTopology(data, "t.json")
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, p := range tf.problems {
			if p.Message == "" || p.File != "t.json" || p.Line < 1 || p.Line > lines {
				t.Fatalf("problem %+v: want a message, the file and a line in 1..%d", p, lines)
			}
		}
		if len(tf.problems) > 0 {
			return
		}
		var want occupancy.TopologyConfig
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("accepted without a problem, but encoding/json says %v", err)
		}
		if !tf.topology.Equal(want) { // nil and empty lists alike
			t.Fatalf("got %+v\nwant %+v (encoding/json)", tf.topology, want)
		}
	})
}

func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want MemoryLimit
		text string
	}{
		{"auto", MemoryLimitAuto, "auto"},
		{" AUTO ", MemoryLimitAuto, "auto"},
		{"off", MemoryLimitOff, "off"},
		{"0", MemoryLimitOff, "off"},
		{"900MiB", 900 << 20, "900MiB"},
		{"2GiB", 2 << 30, "2048MiB"},
	} {
		var m MemoryLimit
		if err := m.UnmarshalText([]byte(c.in)); err != nil || m != c.want {
			t.Errorf("%q: got %d, %v; want %d", c.in, m, err, c.want)
		}
		if b, _ := m.MarshalText(); string(b) != c.text {
			t.Errorf("%q: marshals as %q, want %q", c.in, b, c.text)
		}
	}
	for _, bad := range []string{"lots", "-5MiB", "auto2"} {
		var m MemoryLimit
		if err := m.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q: got %d, want an error", bad, m)
		}
	}
}
