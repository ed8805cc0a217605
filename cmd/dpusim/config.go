package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/mqtttopic"
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
	HTTP struct {
		Listen    string `yaml:"listen"`
		Token     string `yaml:"token"`
		TokenFile string `yaml:"token_file"`
	} `yaml:"http"`
	Inline struct {
		File                     string `yaml:"file"`
		occupancy.TopologyConfig `yaml:",inline"`
	} `yaml:"topology"`
	Topology occupancy.TopologyConfig `yaml:"-"` // inline, or read from topology.file

	filters []string
	entries config.EventsTopics // mqtt.events_topic with the entries' kinds and maps
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
	c.HTTP.Listen = "127.0.0.1:8080"
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	entry := func(n *yaml.Node) (config.EventsTopic, error) {
		var e config.EventsTopic
		switch n.Kind {
		case yaml.ScalarNode:
			e.Filter = n.Value
		case yaml.MappingNode:
			if err := n.Decode(&e); err != nil {
				return e, err
			}
		default:
			return e, fmt.Errorf("want a topic filter or {filter, kind, map}")
		}
		return e, nil
	}
	switch n := &c.MQTT.EventsTopic; n.Kind {
	case 0:
		c.entries = config.Topics("dpu/+/events")
	case yaml.SequenceNode:
		for _, el := range n.Content {
			e, err := entry(el)
			if err != nil {
				return nil, fmt.Errorf("parse config %s: mqtt.events_topic: %w", path, err)
			}
			c.entries = append(c.entries, e)
		}
	default:
		e, err := entry(n)
		if err != nil {
			return nil, fmt.Errorf("parse config %s: mqtt.events_topic: %w", path, err)
		}
		c.entries = config.EventsTopics{e}
	}
	c.filters = c.entries.Filters()
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

// httpBase is the gateway's HTTP API of this config (http.listen), for pushes.
func (c *simConfig) httpBase() string {
	return "http://" + c.HTTP.Listen
}

// httpToken is the config's http.token (or the content of http.token_file).
func (c *simConfig) httpToken() (string, error) {
	if c.HTTP.TokenFile != "" {
		return config.ReadSecret(c.HTTP.TokenFile)
	}
	return c.HTTP.Token, nil
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
			if _, ok = mqtttopic.Match(f, t); ok {
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
