package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// simConfig is the part of an occupancyd config the simulator reads. Decoding is
// lenient (other keys are the gateway's business; `occupancyd check` validates).
type simConfig struct {
	MQTT struct {
		Broker   string `yaml:"broker"`
		Embedded struct {
			Listen string `yaml:"listen"`
		} `yaml:"embedded"`
		EventsTopic yaml.Node `yaml:"events_topic"`
	} `yaml:"mqtt"`
	Engine struct {
		SettleAfter time.Duration `yaml:"settle_after"`
	} `yaml:"engine"`
	Inline struct {
		File                     string `yaml:"file"`
		occupancy.TopologyConfig `yaml:",inline"`
	} `yaml:"topology"`
	Topology occupancy.TopologyConfig `yaml:"-"` // inline, or read from topology.file

	filters []string
}

func loadSimConfig(path string) (*simConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseSimConfig(b, path)
}

func parseSimConfig(b []byte, path string) (*simConfig, error) {
	c := &simConfig{}
	c.MQTT.Embedded.Listen = "127.0.0.1:1883"
	c.Engine.SettleAfter = 5 * time.Minute
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	switch c.MQTT.EventsTopic.Kind {
	case 0:
		c.filters = []string{"dpu/+/events"}
	case yaml.ScalarNode:
		c.filters = []string{c.MQTT.EventsTopic.Value}
	case yaml.SequenceNode:
		if err := c.MQTT.EventsTopic.Decode(&c.filters); err != nil {
			return nil, fmt.Errorf("parse config %s: mqtt.events_topic: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("parse config %s: mqtt.events_topic: want a topic filter or a list of them", path)
	}
	c.Topology = c.Inline.TopologyConfig
	if f := c.Inline.File; f != "" {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(path), f)
		}
		var err error
		if c.Topology, err = config.LoadTopology(f); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if len(c.Topology.DPUs) == 0 {
		return nil, fmt.Errorf("config %s: topology.dpus is empty: nothing to simulate", path)
	}
	return c, nil
}

// brokerURL is where the gateway of this config listens: mqtt.broker, or its
// embedded broker.
func (c *simConfig) brokerURL() string {
	if c.MQTT.Broker != "" {
		return c.MQTT.Broker
	}
	return "tcp://" + c.MQTT.Embedded.Listen
}

// topicMatch reports whether an MQTT topic matches a filter (+ and #).
func topicMatch(filter, topic string) bool {
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, lv := range f {
		if lv == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if lv != "+" && lv != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// checkTopics makes sure the gateway of this config would receive what the
// simulator publishes: a clear error instead of a silent mismatch.
func (c *simConfig) checkTopics(s *Sim) error {
	n := s.DPUCount()
	step := n/200 + 1 // a sample: lists of filters times 100,000 DPUs would take long
	for i := 0; i < n; i += step {
		t := s.Topic(i)
		ok := false
		for _, f := range c.filters {
			if topicMatch(f, t) {
				ok = true
				break
			}
		}
		if !ok {
			hint := "use --site-topics for configs written with --site-topics or --shard"
			if strings.Count(t, "/") > 2 {
				hint = "drop --site-topics: this config subscribes to " + strings.Join(c.filters, ", ")
			}
			return fmt.Errorf("topic %q of DPU %q matches no mqtt.events_topic filter (%s)", t, c.Topology.DPUs[i].ID, hint)
		}
	}
	return nil
}
