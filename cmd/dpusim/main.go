// Command dpusim is a DPU simulator and load generator for occupancyd (DESIGN 10):
// it writes synthetic campus configs, publishes realistic DPU traffic with a known
// truth and verifies a gateway against it, and runs the end-to-end benchmark.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `dpusim: a DPU simulator and load generator for occupancyd

Usage:
  dpusim topology --sites N --dpus-per-site M [--seed S] [--site-topics] [--shard K/N]
                  [--topology-file FILE] [--kinds SHARES] [--http-token T] [...]
  dpusim run --config FILE [--broker URL] [--rate EVENTS_PER_S] [--duration D]
             [--reorder FRACTION] [--max-delay D] [--duplicates FRACTION]
             [--late FRACTION] [--bad FRACTION] [--connections N] [--seed S]
             [--verify HTTP_URL[,HTTP_URL...]] [--site-topics]
             [--kinds SHARES] [--report-period D] [--counter-resets FRACTION]
             [--http-push FRACTION] [--http-url URL] [--http-token T]
  dpusim bench [--sites N] [--dpus-per-site M] [--rate R] [--duration D] [...]

topology writes a complete occupancyd config (YAML) for a synthetic campus to stdout:
  sites > floors (up to 10 rooms each) > rooms; an entrance from the outside into each
  site's lobby, doorways between neighbouring rooms, stairs between floors, and the
  remaining DPUs as extra entrances or doorways between random rooms; one DPU per
  doorway, capacities on rooms, sites and most floors. Deterministic per --seed.
  Ids: site s0001, floor s0001-f1, room s0001-f1-r01, doorway s0001-w01, DPU s0001-d01.
  By default DPUs publish to dpu/<id>/events. Sharding by site (DESIGN 9):
    --site-topics   DPUs publish under their site, <site>/dpu/<id>/events; the config
                    subscribes to +/dpu/+/events
    --shard K/N     only the sites of shard K of N (a contiguous block of sites), with
                    mqtt.events_topic listing <site>/dpu/+/events for each (implies
                    site topics); shards of one --sites/--seed are disjoint and their
                    union is the full campus
  --topology-file FILE writes the topology to FILE as JSON and the config refers to
  it (topology: {file: FILE}), for large campuses: a 100,000-DPU config loads in a
  fraction of the time. occupancyd reads a relative FILE from the config file's
  directory: write both to one directory (--topology-file campus.json > campus.yaml).
  --kinds events=0.6,interval=0.2,cumulative=0.2 gives each DPU a report kind by
  those shares (DESIGN 2a; drawn from the seed and the DPU id), written as its kind;
  half the interval and cumulative DPUs also get a map of their own. Configs other
  than shards subscribe beside dpu/+/events to dpu/+/interval and dpu/+/cumulative
  (entries of those kinds, the second with a map), where run --kinds sends.
  --http-token sets http.token (HTTP push needs a token).
  Also: --gateway-id, --broker, --embedded-listen, --http-listen, --storage-dir,
  --settle-after, --tick, --log-level, --homeassistant, --probe.

run publishes the traffic of simulated people (enter, move, leave; the true count is
  never negative) for the config's DPUs over --connections QoS 1 connections, at --rate
  events/s (0 = as fast as possible) for --duration. Every event has the DPU's integer
  sequence number as id and an RFC 3339 ms ts. --reorder holds an event back by up to
  --max-delay; --duplicates publishes it again; --late dates an entrance before the
  settle window (engine.settle_after); --bad publishes malformed payloads. A progress
  line goes to stderr every 5s; at the end the true occupancy of every space goes to
  stdout. --verify URL[,URL...] reads GET URL/v1/spaces (the union over all URLs, for
  shards) before the run, and after it polls until every space equals its count
  before the run plus the truth, or its values stop changing for 20s, or
  --verify-timeout passes, prints the differing spaces and exits 1 on any difference
  (so a gateway need not start empty; a daily reset during the run spoils it).
  --site-topics publishes to <site>/dpu/<id>/events (configs written with
  --site-topics or --shard). The broker defaults to the config's (mqtt.broker, else
  its embedded listener). Same --seed, same traffic.
  Report kinds: each DPU reports in its kind (the topology's; else the one --kinds
  draws for it, published on dpu/<id>/<kind>; else its topic entry's), in its map.
  An interval or cumulative DPU reports at the end of every --report-period in which
  someone crossed (the crossings count then: the truth is the crossings the reports
  stand for); a cumulative DPU first sends its baseline, and after a report restarts
  its counters with the chance --counter-resets; reports are reordered, re-sent and
  (interval) late like events; every open period reports when the run ends.
  --http-push FRACTION sends that share of messages as HTTP pushes to
  POST /v1/dpus/{id}/events (of DPUs the gateway decodes alike there: a kind of
  their own in the topology, or events), with http.token unless --http-token.

bench starts Mosquitto on a free 127.0.0.1 port (max_inflight_messages 1000,
  max_queued_messages 1000000, persistence true) and puts the same dpusim load through
  (a) a do-nothing QoS 1 subscriber and (b) occupancyd, and reports events/s of each,
  their ratio, publish-to-retained-update latency p50/p99, occupancyd's peak RSS and
  CPU. It prints a table and writes it as Markdown to bench-out/e2e.md.
  See dpusim bench --help.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs one dpusim command and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "topology":
		err = topologyCommand(args[1:], stdout, stderr)
	case "run":
		err = runCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dpusim: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "dpusim: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "dpusim: %v\n", err)
		return 1
	}
}

var errUsage = errors.New("usage")

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dpusim "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

func topoFlags(fs *flag.FlagSet, o *TopoOptions) *string {
	fs.IntVar(&o.Sites, "sites", o.Sites, "number of sites")
	fs.IntVar(&o.DPUsPerSite, "dpus-per-site", o.DPUsPerSite, "DPUs per site")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	fs.BoolVar(&o.SiteTopics, "site-topics", o.SiteTopics, "subscribe to +/dpu/+/events (DPUs publish under their site)")
	shard := fs.String("shard", "", "K/N: only the sites of shard K of N, with one <site>/dpu/+/events filter per site")
	fs.StringVar(&o.GatewayID, "gateway-id", o.GatewayID, "gateway.id")
	fs.StringVar(&o.Broker, "broker", o.Broker, `mqtt.broker ("" = embedded broker)`)
	fs.StringVar(&o.EmbeddedListen, "embedded-listen", o.EmbeddedListen, "mqtt.embedded.listen")
	fs.StringVar(&o.HTTPListen, "http-listen", o.HTTPListen, "http.listen")
	fs.StringVar(&o.StorageDir, "storage-dir", o.StorageDir, "storage.dir")
	fs.DurationVar(&o.SettleAfter, "settle-after", o.SettleAfter, "engine.settle_after")
	fs.DurationVar(&o.Tick, "tick", o.Tick, "engine.tick")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "log.level")
	fs.BoolVar(&o.HomeAssistant, "homeassistant", o.HomeAssistant, "mqtt.homeassistant.enabled")
	fs.BoolVar(&o.Probe, "probe", o.Probe, `add the quiet latency-probe site "probe" (DPU probe-d1)`)
	fs.Func("kinds", "report kinds of the DPUs by shares, e.g. events=0.6,interval=0.2,cumulative=0.2 (written as each DPU's kind)", func(v string) error {
		k, err := ParseKindSpec(v)
		o.Kinds = k
		return err
	})
	fs.StringVar(&o.HTTPToken, "http-token", o.HTTPToken, "http.token (HTTP push and the write routes need one)")
	return shard
}

func topologyCommand(args []string, stdout, stderr io.Writer) error {
	o := DefaultTopoOptions()
	fs := newFlagSet("topology", stderr)
	shard := topoFlags(fs, &o)
	fs.StringVar(&o.TopologyFile, "topology-file", "", "write the topology to this file as JSON and refer to it from the config\n(named as given: write the config to the same directory, e.g. --topology-file campus.json > campus.yaml)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *shard != "" {
		k, n, err := parseShard(*shard)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		o.Shard, o.Shards = k, n
	}
	if err := o.check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return WriteConfig(stdout, o)
}

func runFlags(fs *flag.FlagSet, o *RunOptions) *string {
	fs.StringVar(&o.Config, "config", o.Config, "occupancyd config whose topology to simulate (required)")
	fs.StringVar(&o.Broker, "broker", o.Broker, "MQTT broker URL (default: the config's mqtt.broker or embedded listener)")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "events per second over all connections (0 = as fast as possible)")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to publish")
	fs.Float64Var(&o.Reorder, "reorder", o.Reorder, "fraction of events held back by up to --max-delay")
	fs.DurationVar(&o.MaxDelay, "max-delay", o.MaxDelay, "longest hold-back of a reordered or duplicated event")
	fs.Float64Var(&o.Duplicates, "duplicates", o.Duplicates, "fraction of events published twice")
	fs.Float64Var(&o.Late, "late", o.Late, "fraction of events dated before the settle window")
	fs.Float64Var(&o.Bad, "bad", o.Bad, "fraction of malformed messages")
	fs.IntVar(&o.Connections, "connections", o.Connections, "MQTT connections the DPUs are spread over")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed (same seed, same traffic)")
	verify := fs.String("verify", "", "gateway HTTP base URL(s), comma-separated: compare GET /v1/spaces with the counts before the run plus the truth")
	fs.DurationVar(&o.VerifyTimeout, "verify-timeout", o.VerifyTimeout, "longest wait for --verify")
	fs.BoolVar(&o.SiteTopics, "site-topics", o.SiteTopics, "publish to <site>/dpu/<id>/events")
	fs.DurationVar(&o.Progress, "progress", o.Progress, "interval of the progress line")
	fs.BoolVar(&o.Quiet, "quiet", o.Quiet, "do not print the true occupancy table")
	fs.Func("kinds", "report kinds of the DPUs without one in the topology, by shares, e.g. events=0.6,interval=0.2,cumulative=0.2", func(v string) error {
		k, err := ParseKindSpec(v)
		o.Kinds = k
		return err
	})
	fs.DurationVar(&o.ReportPeriod, "report-period", o.ReportPeriod, "period of interval and cumulative reports")
	fs.Float64Var(&o.CounterResets, "counter-resets", o.CounterResets, "chance that a cumulative DPU restarts its counters after a report")
	fs.Float64Var(&o.HTTPPush, "http-push", o.HTTPPush, "fraction of messages sent as HTTP pushes (POST /v1/dpus/{id}/events) instead of MQTT")
	fs.StringVar(&o.HTTPURL, "http-url", o.HTTPURL, "gateway HTTP base URL for --http-push (default: the config's http.listen)")
	fs.StringVar(&o.HTTPToken, "http-token", o.HTTPToken, "bearer token for --http-push (default: the config's http.token)")
	return verify
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := DefaultRunOptions()
	fs := newFlagSet("run", stderr)
	verify := runFlags(fs, &o)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Config == "" {
		return fmt.Errorf("%w: run: --config FILE is required", errUsage)
	}
	o.Verify = splitList(*verify)
	_, err := Run(ctx, o, stdout, stderr)
	return err
}
