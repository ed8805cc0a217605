package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/config"
)

// checkCommand is `occupancyd check --config FILE`: every problem with its key path
// and exit status 1, or a summary of what the configuration sets up.
func checkCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	configPath := fs.String("config", "", "the configuration `FILE` (YAML; required)")
	pos, err := parseCommandFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return commandUsageErrorf("check", "check: unexpected argument %q", pos[0])
	}
	path, err := requireConfig("check", *configPath)
	if err != nil {
		return err
	}
	cfg, err := config.LoadConfig(path)
	var ce *config.ConfigError
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		n := len(ce.Problems)
		return &exitError{code: 1, msg: fmt.Sprintf("%s: %d %s", path, n, plural(n, "problem", "problems"))}
	}
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	fmt.Fprint(stdout, configSummary(path, cfg))
	return nil
}

// configSummary is what `check` prints for a valid configuration.
func configSummary(path string, cfg config.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: OK\n", path)
	t := cfg.Topology
	roots, capacities, resets := 0, 0, 0
	for _, s := range t.Spaces {
		if s.Parent == "" {
			roots++
		}
		if s.Capacity > 0 {
			capacities++
		}
		if s.DailyReset != "" {
			resets++
		}
	}
	fmt.Fprintf(&b, "  gateway:   %s\n", cfg.Gateway.ID)
	if cfg.TopologyFile != "" {
		fmt.Fprintf(&b, "  topology:  %s\n", cfg.TopologyFile)
	}
	fmt.Fprintf(&b, "  spaces:    %d (%d top-level, %d with a capacity, %d with a daily reset)\n",
		len(t.Spaces), roots, capacities, resets)
	fmt.Fprintf(&b, "  doorways:  %d\n", len(t.Doorways))
	kinds := map[string]int{}
	for _, d := range t.DPUs {
		if d.Kind != "" {
			kinds[d.Kind]++
		}
	}
	if len(kinds) == 0 {
		fmt.Fprintf(&b, "  DPUs:      %d\n", len(t.DPUs))
	} else {
		fmt.Fprintf(&b, "  DPUs:      %d (own kind: %d events, %d interval, %d cumulative)\n",
			len(t.DPUs), kinds["events"], kinds["interval"], kinds["cumulative"])
	}
	if cfg.MQTT.Broker == "" {
		fmt.Fprintf(&b, "  broker:    embedded, listening on %s\n", cfg.MQTT.Embedded.Listen)
	} else {
		fmt.Fprintf(&b, "  broker:    %s (client id %s)\n", cfg.MQTT.Broker, cfg.MQTT.ClientID)
	}
	filters := make([]string, len(cfg.MQTT.EventsTopic))
	for i, e := range cfg.MQTT.EventsTopic {
		filters[i] = e.Filter
		if e.Kind != "" || e.Map != nil {
			filters[i] += " (" + e.ReportKind().String() + ")"
		}
	}
	fmt.Fprintf(&b, "  events:    %s\n", strings.Join(filters, ", "))
	fmt.Fprintf(&b, "  output:    %s/<space-id>, status %s\n", cfg.MQTT.OutputPrefix, cfg.MQTT.StatusTopic)
	fmt.Fprintf(&b, "  storage:   %s (retention %s)\n", cfg.Storage.Dir, cfg.Storage.Retention)
	if cfg.HTTP.Listen == "" {
		fmt.Fprintf(&b, "  http:      disabled\n")
	} else {
		fmt.Fprintf(&b, "  http:      %s\n", cfg.HTTP.Listen)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
