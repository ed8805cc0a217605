package config

import (
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

func TestRestartKeys(t *testing.T) {
	a := DefaultConfig()
	b := a
	b.Engine.Tick = 2 * time.Second
	b.Log.Level = "debug"
	b.Topology.Spaces = []occupancy.SpaceConfig{{ID: "x", Name: "X", Capacity: 3, DailyReset: "04:00"}}
	b.TopologyFile = "campus.json"
	if got := RestartKeys(a, b); len(got) != 0 {
		t.Errorf("reloadable changes reported as needing a restart: %v", got)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.MQTT.OutputPrefix = "occ"; c.HTTP.Listen = "127.0.0.1:9" }, "mqtt.output_prefix,http.listen"},
		{func(c *Config) { c.Gateway.ID = "b" }, "gateway.id"},
		{func(c *Config) { c.MQTT.TLS.CAFile = "ca.pem"; c.MQTT.EventsTopic = Topics("a/+") }, "mqtt.tls.ca_file,mqtt.events_topic"},
		{func(c *Config) { c.MQTT.PublishMinInterval = time.Second }, "mqtt.publish_min_interval"},
		{func(c *Config) { c.Storage.MinFree = 1 }, "storage.min_free"},
		{func(c *Config) { c.HTTP.TokenFile, c.HTTP.OpenReads, c.HTTP.MaxStreamClients = "t", true, 5 }, "http.token_file,http.open_reads,http.max_stream_clients"},
		{func(c *Config) { c.Health.DPUQuietAfter = time.Hour }, "health.dpu_quiet_after"},
		{func(c *Config) { c.Engine.SettleAfter, c.Log.Format = time.Hour, "json" }, "engine.settle_after,log.format"},
	} {
		b := a
		tc.change(&b)
		if got := strings.Join(RestartKeys(a, b), ","); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}
