package main

import (
	"bytes"
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
		{"default", func(o *TopoOptions) {}, 1},
		{"site topics", func(o *TopoOptions) { o.SiteTopics = true }, 1},
		{"shard 2 of 3", func(o *TopoOptions) { o.Shard, o.Shards = 2, 3 }, 4},
		{"probe and options", func(o *TopoOptions) {
			o.Probe, o.Broker, o.HomeAssistant, o.SettleAfter = true, "tcp://127.0.0.1:1884", false, 30*time.Second
		}, 1},
		{"one DPU", func(o *TopoOptions) { o.Sites, o.DPUsPerSite = 1, 1 }, 1},
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
			// The daemon reads it without yaml.v3 (19 MB at 100,000 DPUs: 1.6 s
			// through yaml.v3, 0.1 s through the fast path).
			if !config.FastConfig(buf.Bytes()) {
				t.Errorf("config.FastConfig: false, want the config loader's fast path to take it")
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

// BenchmarkParseConfig100k is the daemon's config load of the 100,000-DPU campus.
func BenchmarkParseConfig100k(b *testing.B) {
	data := config100k(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := config.ParseConfig(data); err != nil {
			b.Fatal(err)
		}
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
