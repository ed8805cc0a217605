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
	b.Topology.Spaces = []occupancy.SpaceConfig{{ID: "x", Name: "X"}}
	if got := RestartKeys(a, b); len(got) != 0 {
		t.Errorf("reloadable changes reported as needing a restart: %v", got)
	}
	b.MQTT.OutputPrefix = "occ"
	b.HTTP.Listen = "127.0.0.1:9"
	got := RestartKeys(a, b)
	if strings.Join(got, ",") != "mqtt.output_prefix,http" {
		t.Errorf("restartKeys = %v, want [mqtt.output_prefix http]", got)
	}
}
