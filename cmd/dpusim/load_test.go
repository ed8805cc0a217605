package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// TestGeneratedConfigsLoad loads generated configs with the daemon's own config
// loader: strict keys, every id and reference valid.
func TestGeneratedConfigsLoad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*TopoOptions)
		topics int
	}{
		{"default", func(o *TopoOptions) {}, 3}, // dpu/+/events and the kinds' entries
		{"site topics", func(o *TopoOptions) { o.SiteTopics = true }, 3},
		{"shard 2 of 3", func(o *TopoOptions) { o.Shard, o.Shards = 2, 3 }, 4},
		{"probe and options", func(o *TopoOptions) {
			o.Probe, o.Broker, o.HomeAssistant, o.SettleAfter = true, "tcp://127.0.0.1:1884", false, 30*time.Second
		}, 3},
		{"one DPU", func(o *TopoOptions) { o.Sites, o.DPUsPerSite = 1, 1 }, 3},
		{"kinds and a token", func(o *TopoOptions) {
			o.Kinds, o.HTTPToken = KindSpec{0.5, 0.25, 0.25}, "push-token"
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultTopoOptions()
			o.Sites, o.DPUsPerSite = 11, 23
			tc.mod(&o)
			var buf bytes.Buffer
			if err := WriteConfig(&buf, o); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.ParseConfig(buf.Bytes())
			if err != nil {
				t.Fatalf("config.ParseConfig: %v", err)
			}
			// The same campus with the topology in its own file (--topology-file) is
			// the same configuration.
			dir := t.TempDir()
			o.TopologyFile = "campus.json"
			fileCfg := loadWithTopologyFile(t, dir, o)
			if fileCfg.TopologyFile != "campus.json" {
				t.Errorf("TopologyFile: got %q, want campus.json", fileCfg.TopologyFile)
			}
			fileCfg.TopologyFile = ""
			if !reflect.DeepEqual(fileCfg, cfg) {
				t.Errorf("with --topology-file:\n got %+v\nwant %+v", fileCfg, cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if _, err := occupancy.Compile(cfg.Topology); err != nil {
				t.Fatalf("occupancy.Compile: %v", err)
			}
			want := 0
			for _, s := range o.SelectedSites() {
				want += len(s.DPUs)
			}
			if got := len(cfg.Topology.DPUs); got != want {
				t.Errorf("DPUs: got %d, want %d", got, want)
			}
			if got := len(cfg.MQTT.EventsTopic); got != tc.topics {
				t.Errorf("events_topic filters: got %d, want %d", got, tc.topics)
			}
			if got, want := cfg.Engine.SettleAfter, o.SettleAfter; got != want {
				t.Errorf("settle_after: got %s, want %s", got, want)
			}
			if got, want := cfg.MQTT.Broker, o.Broker; got != want {
				t.Errorf("broker: got %q, want %q", got, want)
			}
		})
	}
}

// loadWithTopologyFile writes the config of o (o.TopologyFile relative) and its
// topology file into dir, as `dpusim topology --topology-file` run in dir does, and
// loads it with the daemon's loader, and with the simulator's.
func loadWithTopologyFile(t *testing.T, dir string, o TopoOptions) config.Config {
	t.Helper()
	t.Chdir(dir) // WriteConfig writes the topology file where dpusim runs
	var buf bytes.Buffer
	if err := WriteConfig(&buf, o); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "campus.yaml")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // read from elsewhere: relative to the config's directory
	cfg, err := config.LoadConfig(path)
	if err != nil {
		t.Fatalf("config.LoadConfig: %v", err)
	}
	sc, err := loadSimConfig(path)
	if err != nil {
		t.Fatalf("loadSimConfig: %v", err)
	}
	if !reflect.DeepEqual(sc.Topology, cfg.Topology) {
		t.Errorf("dpusim read another topology than occupancyd")
	}
	return cfg
}

var big100k []byte

func config100k(b *testing.B) []byte {
	if big100k == nil {
		o := DefaultTopoOptions()
		o.Sites, o.DPUsPerSite = 2000, 50
		var buf bytes.Buffer
		if err := WriteConfig(&buf, o); err != nil {
			b.Fatal(err)
		}
		big100k = buf.Bytes()
	}
	return big100k
}

// BenchmarkParseConfig100k is the daemon's config load of the 100,000-DPU campus:
// with the topology inline (19 MB of YAML) and in its own file (dpusim topology
// --topology-file: 1 KB of YAML and 14 MB of JSON), from the files.
func BenchmarkParseConfig100k(b *testing.B) {
	dir := b.TempDir()
	inline := filepath.Join(dir, "inline.yaml")
	if err := os.WriteFile(inline, config100k(b), 0o644); err != nil {
		b.Fatal(err)
	}
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.TopologyFile = 2000, 50, filepath.Join(dir, "campus.json")
	var buf bytes.Buffer
	if err := WriteConfig(&buf, o); err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "file.yaml")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, path := range []string{inline, file} {
		b.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(b *testing.B) {
			b.ReportAllocs()
			var cpu0 time.Duration // of the process: load-independent beside the wall time
			for b.Loop() {
				if cpu0 == 0 {
					cpu0 = processCPU(b)
				}
				if _, err := config.LoadConfig(path); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((processCPU(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// BenchmarkCompile100k is compiling the 100,000-DPU topology.
func BenchmarkCompile100k(b *testing.B) {
	cfg, err := config.ParseConfig(config100k(b))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := occupancy.Compile(cfg.Topology); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteConfig100k is `dpusim topology --sites 2000 --dpus-per-site 50`.
func BenchmarkWriteConfig100k(b *testing.B) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite = 2000, 50
	for b.Loop() {
		var buf bytes.Buffer
		if err := WriteConfig(&buf, o); err != nil {
			b.Fatal(err)
		}
	}
}

// processCPU is the CPU time (user and system) the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
