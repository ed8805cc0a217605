package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchPhase is one load of `dpusim bench`: a synthetic campus, an offered rate and
// a duration, put through occupancyd (and first through a do-nothing subscriber when
// Baseline is set), each against a fresh Mosquitto.
type BenchPhase struct {
	Name               string
	Sites, DPUsPerSite int
	Rate               float64 // offered events/s; 0 = as fast as dpusim publishes
	Duration           time.Duration
	Baseline           bool

	// Targets (DESIGN 10, issue 13); zero = none.
	MinRatio float64       // occupancyd / subscriber events/s
	MaxP99   time.Duration // publish-to-retained p99
	MaxRSS   int64         // peak RSS, with no GOMEMLIMIT in the environment
}

// The phases of a default `dpusim bench` (DESIGN 10): the throughput ratio on an
// unpaced stream, and publish-to-retained latency at a campus and at 100,000 DPUs.
var standardPhases = []BenchPhase{
	{Name: "throughput", Sites: 200, DPUsPerSite: 50, Rate: 0, Duration: 30 * time.Second, Baseline: true, MinRatio: 0.9},
	{Name: "campus", Sites: 200, DPUsPerSite: 50, Rate: 2000, Duration: time.Minute, MaxP99: 250 * time.Millisecond},
	{Name: "100k", Sites: 2000, DPUsPerSite: 50, Rate: 20000, Duration: 5 * time.Minute, MaxP99: time.Second, MaxRSS: 1 << 30},
}

// BenchOptions are the flags of `dpusim bench`.
type BenchOptions struct {
	Phases        []BenchPhase
	Run           RunOptions // load shape: fractions, connections, seed (rate and duration per phase)
	SettleAfter   time.Duration
	Occupancyd    []string // binaries, each run in turn per phase; default: go build ./cmd/occupancyd
	Mosquitto     string
	Out           string // Markdown table
	ProbeInterval time.Duration
	Dir           string // work dir; default a temp dir, removed after
	DrainTimeout  time.Duration
	// InlineTopology writes the topology into the config instead of a JSON file
	// beside it (occupancyd before topology.file).
	InlineTopology bool
}

// DefaultBenchOptions run the standard phases (about 9 minutes on a 2-core machine).
func DefaultBenchOptions() BenchOptions {
	r := DefaultRunOptions()
	r.Connections = 4
	r.Reorder, r.Duplicates, r.Bad, r.MaxDelay = 0.05, 0.01, 0.001, 2*time.Second
	r.Quiet = true
	return BenchOptions{
		Phases: append([]BenchPhase(nil), standardPhases...),
		Run:    r, SettleAfter: 5 * time.Minute,
		Out: "bench-out/e2e.md", ProbeInterval: 250 * time.Millisecond, DrainTimeout: 5 * time.Minute,
	}
}

// BenchResult holds the figures of one bench run.
type BenchResult struct {
	Opt        BenchOptions
	Machine    string
	GoMemLimit string // GOMEMLIMIT as occupancyd saw it ("" = unset)
	Phases     []*PhaseResult
}

// PhaseResult holds the figures of one phase.
type PhaseResult struct {
	Phase        BenchPhase
	Binary       string // which occupancyd, when several are compared
	DPUs, Spaces int
	Base         phaseResult
	Gw           phaseResult
	StartToReady time.Duration
	Lat          LatencyStats
	PeakRSS      int64
	Verify       string
	BatchMean    time.Duration // occupancyd_ingest_batch_seconds sum/count
	BatchEvents  float64       // accepted events per ingest batch
	LoadBefore   string        // /proc/loadavg when the phase started
	LoadAfter    string
	PollEvery    time.Duration // how often occupancyd's accepted count was read
	PublishRate  float64       // occupancyd's MQTT messages out per second (occupancyd_publishes_total)
	LagSampled   bool          // the build has occupancyd_publish_lag_seconds
	MaxLag       time.Duration // its highest sample during the load (every 2 s)
	MaxPending   int64         // occupancyd_publish_pending_spaces' highest sample
	Err          string
}

// phaseResult is one consumer's side of a phase.
type phaseResult struct {
	Ran       bool
	Messages  int64 // published
	Consumed  int64 // received (subscriber) or accepted (occupancyd)
	PubRate   float64
	Rate      float64       // messages / (done - first publish)
	Drain     time.Duration // done - last publish
	Elapsed   time.Duration
	Completed bool
	CPU       cpuBudget // from the first publish to done
}

// cpuBudget is the CPU time each process used over Wall.
type cpuBudget struct {
	Wall                          time.Duration
	Occupancyd, Mosquitto, Dpusim time.Duration
	// occupancyd's read and write system calls (/proc/PID/io syscr, syscw): sockets
	// and files alike
	SyscR, SyscW int64
}

func (c cpuBudget) cores(d time.Duration) float64 {
	if c.Wall <= 0 {
		return 0
	}
	return d.Seconds() / c.Wall.Seconds()
}

// LatencyStats are publish-to-retained latencies by nearest rank, a missed sample
// (never seen within the probe's timeout) ranking above every other.
type LatencyStats struct {
	P50, P99, Max time.Duration // missedLatency when the rank falls on a miss
	Samples       int           // arrived
	Missed        int
}

// missedLatency marks a percentile that falls on a missed sample.
const missedLatency = time.Duration(math.MaxInt64)

// latencyStats ranks arrived samples and counts each miss as slower than all of them.
func latencyStats(lat []time.Duration, missed int) LatencyStats {
	s := LatencyStats{Samples: len(lat), Missed: missed}
	n := len(lat) + missed
	if n == 0 {
		return s
	}
	sorted := append([]time.Duration(nil), lat...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(n))) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(sorted) {
			return missedLatency
		}
		return sorted[i]
	}
	s.P50, s.P99, s.Max = rank(0.50), rank(0.99), rank(1)
	return s
}

func fmtLatency(d time.Duration) string {
	if d == missedLatency {
		return "missed"
	}
	return d.Round(time.Millisecond).String()
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := DefaultBenchOptions()
	custom := BenchPhase{Name: "custom", Sites: 200, DPUsPerSite: 50, Rate: 10000, Duration: 30 * time.Second}
	skipBaseline := false
	phases := ""
	fs := newFlagSet("bench", stderr)
	fs.StringVar(&phases, "phases", phaseNames(standardPhases), "phases to run, comma-separated: "+phaseNames(standardPhases))
	fs.DurationVar(&o.Phases[0].Duration, "throughput-duration", o.Phases[0].Duration, "load duration of the throughput phase (unpaced)")
	fs.DurationVar(&o.Phases[1].Duration, "campus-duration", o.Phases[1].Duration, "load duration of the campus phase (10,000 DPUs, 2,000 events/s)")
	fs.DurationVar(&o.Phases[2].Duration, "100k-duration", o.Phases[2].Duration, "load duration of the 100k phase (100,000 DPUs, 20,000 events/s)")
	fs.IntVar(&custom.Sites, "sites", custom.Sites, "a custom phase instead: sites of the synthetic campus")
	fs.IntVar(&custom.DPUsPerSite, "dpus-per-site", custom.DPUsPerSite, "a custom phase instead: DPUs per site")
	fs.Float64Var(&custom.Rate, "rate", custom.Rate, "a custom phase instead: offered events/s (0 = as fast as possible)")
	fs.DurationVar(&custom.Duration, "duration", custom.Duration, "a custom phase instead: load duration")
	fs.BoolVar(&skipBaseline, "skip-baseline", skipBaseline, "custom phase: skip the do-nothing subscriber")
	fs.Float64Var(&o.Run.Reorder, "reorder", o.Run.Reorder, "fraction of reordered events")
	fs.DurationVar(&o.Run.MaxDelay, "max-delay", o.Run.MaxDelay, "longest hold-back of a reordered event")
	fs.Float64Var(&o.Run.Duplicates, "duplicates", o.Run.Duplicates, "fraction of duplicated events")
	fs.Float64Var(&o.Run.Late, "late", o.Run.Late, "fraction of late events")
	fs.Float64Var(&o.Run.Bad, "bad", o.Run.Bad, "fraction of malformed messages")
	fs.IntVar(&o.Run.Connections, "connections", o.Run.Connections, "publisher connections")
	fs.Uint64Var(&o.Run.Seed, "seed", o.Run.Seed, "random seed")
	fs.DurationVar(&o.SettleAfter, "settle-after", o.SettleAfter, "engine.settle_after of occupancyd")
	bins := fs.String("occupancyd", "", "occupancyd binary, or several comma-separated to compare them side by side (default: go build ./cmd/occupancyd)")
	fs.StringVar(&o.Mosquitto, "mosquitto", o.Mosquitto, "mosquitto binary (default: from PATH)")
	fs.StringVar(&o.Out, "out", o.Out, "Markdown output file")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", o.ProbeInterval, "pause between latency probes")
	fs.StringVar(&o.Dir, "dir", o.Dir, "work directory to keep (default: a temp dir, removed)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "longest wait for a consumer to catch up")
	fs.BoolVar(&o.InlineTopology, "inline-topology", o.InlineTopology, "write the topology into the config, not into a JSON file beside it (to compare with occupancyd before topology.file)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: dpusim bench [--phases throughput,campus,100k] [flags]

Runs occupancyd end to end through a fresh Mosquitto per phase (configured as
DESIGN 4: max_inflight_messages 1000, max_queued_messages 1000000, persistence) and
prints one table (also written as Markdown to --out):
  throughput  10,000 DPUs, unpaced for 30s: a do-nothing QoS 1 subscriber, then
              occupancyd, on the same stream; events/s of each and their ratio
              (target >= 0.9), counts verified exact
  campus      10,000 DPUs offering 2,000 events/s for 1m: publish-to-retained
              latency of a probe DPU on a quiet room (target p99 <= 250ms)
  100k        100,000 DPUs offering 20,000 events/s for 5m (target p99 <= 1s,
              peak RSS <= 1 GiB with no GOMEMLIMIT in the environment)
Every phase reports latency p50/p99/max (a sample that never arrives ranks as
missed), peak RSS, occupancyd's CPU-seconds per 1,000 events, the CPU of
occupancyd, Mosquitto and dpusim, and the load average. All three take about
9 minutes; --phases throughput,campus about 3.
--sites, --dpus-per-site, --rate or --duration run one custom phase instead (with
the subscriber unless --skip-baseline).

Example: dpusim bench --phases campus --campus-duration 2m

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o.Occupancyd = splitList(*bins)
	customSet := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "sites", "dpus-per-site", "rate", "duration", "skip-baseline":
			customSet = true
		}
	})
	if customSet {
		custom.Baseline = !skipBaseline
		o.Phases = []BenchPhase{custom}
	} else {
		sel, err := selectPhases(o.Phases, phases)
		if err != nil {
			return fmt.Errorf("%w: bench: %v", errUsage, err)
		}
		o.Phases = sel
	}
	res, err := Bench(ctx, o, stderr)
	if res != nil {
		md := res.Markdown()
		fmt.Fprint(stdout, md)
		if o.Out != "" {
			werr := os.MkdirAll(filepath.Dir(o.Out), 0o755)
			if werr == nil {
				werr = os.WriteFile(o.Out, []byte(md), 0o644)
			}
			if werr != nil && err == nil {
				err = fmt.Errorf("bench: write %s: %w", o.Out, werr)
			}
			fmt.Fprintf(stderr, "dpusim: bench: wrote %s\n", o.Out)
		}
	}
	return err
}

func phaseNames(ps []BenchPhase) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// selectPhases picks the named phases, in the standard order.
func selectPhases(all []BenchPhase, list string) ([]BenchPhase, error) {
	want := map[string]bool{}
	for _, n := range splitList(list) {
		want[n] = true
	}
	var out []BenchPhase
	for _, p := range all {
		if want[p.Name] {
			out = append(out, p)
			delete(want, p.Name)
		}
	}
	for n := range want {
		return nil, fmt.Errorf("--phases: unknown phase %q (known: %s)", n, phaseNames(all))
	}
	if len(out) == 0 {
		return nil, errors.New("--phases: no phase selected")
	}
	return out, nil
}

// Bench runs every phase; a failed phase is reported and the next one still runs.
func Bench(ctx context.Context, o BenchOptions, logw io.Writer) (*BenchResult, error) {
	res := &BenchResult{Opt: o, Machine: machine(), GoMemLimit: os.Getenv("GOMEMLIMIT")}
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "dpusim: bench: "+format+"\n", a...) }
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "dpusim-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	mosq := o.Mosquitto
	if mosq == "" {
		var err error
		if mosq, err = findMosquitto(); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	bins := o.Occupancyd
	if len(bins) == 0 {
		logf("building occupancyd")
		bin, err := buildOccupancyd(dir)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		bins = []string{bin}
	}
	var errs []error
	for _, ph := range o.Phases {
		var base phaseResult
		var baseErr error
		if ph.Baseline {
			pr := &PhaseResult{Phase: ph, LoadBefore: loadAvg()}
			baseErr = benchBaseline(ctx, o, ph, mosq, filepath.Join(dir, ph.Name+"-subscriber"), pr, logw)
			base = pr.Base
		}
		for i, bin := range bins {
			pr := &PhaseResult{Phase: ph, Base: base, LoadBefore: loadAvg()}
			if len(bins) > 1 {
				pr.Binary = bin
			}
			res.Phases = append(res.Phases, pr)
			err := baseErr
			if err == nil {
				err = benchGateway(ctx, o, ph, bin, mosq, filepath.Join(dir, fmt.Sprintf("%s-occupancyd%d", ph.Name, i+1)), pr, logw)
			}
			pr.LoadAfter = loadAvg()
			if err != nil {
				pr.Err = err.Error()
				errs = append(errs, fmt.Errorf("bench: phase %s: %w", ph.Name, err))
				logf("phase %s failed: %v", ph.Name, err)
			}
			if ctx.Err() != nil {
				return res, errors.Join(errs...)
			}
		}
	}
	return res, errors.Join(errs...)
}

// phaseSetup starts a fresh Mosquitto in dir and writes the phase's campus config
// for occupancyd; it returns the broker, the config and the load.
func phaseSetup(o BenchOptions, ph BenchPhase, mosq, dir string, res *PhaseResult) (*proc, string, RunOptions, error) {
	var run RunOptions
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", run, err
	}
	broker, brokerURL, err := startMosquitto(mosq, dir)
	if err != nil {
		return nil, "", run, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		broker.stop(5 * time.Second)
		return nil, "", run, err
	}
	topo := DefaultTopoOptions()
	topo.Sites, topo.DPUsPerSite, topo.Seed = ph.Sites, ph.DPUsPerSite, o.Run.Seed
	topo.Broker, topo.HTTPListen = brokerURL, httpAddr
	topo.StorageDir = filepath.Join(dir, "occupancyd-data")
	topo.GatewayID, topo.SettleAfter, topo.LogLevel, topo.Probe = "bench", o.SettleAfter, "warn", true
	// The topology in its own file, as large campuses have it; absolute, as it is
	// written from here and read from the config's directory.
	if !o.InlineTopology {
		if topo.TopologyFile, err = filepath.Abs(filepath.Join(dir, "campus.json")); err != nil {
			broker.stop(5 * time.Second)
			return nil, "", run, err
		}
	}
	cfgPath := filepath.Join(dir, "campus.yaml")
	f, err := os.Create(cfgPath)
	if err == nil {
		err = WriteConfig(f, topo)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		broker.stop(5 * time.Second)
		return nil, "", run, fmt.Errorf("write config: %w", err)
	}
	res.DPUs = ph.Sites*ph.DPUsPerSite + 1
	res.Spaces = 0
	for _, s := range topo.SelectedSites() {
		res.Spaces += len(s.Spaces)
	}
	run = o.Run
	run.Rate, run.Duration = ph.Rate, ph.Duration
	run.Config, run.Broker, run.Quiet = cfgPath, brokerURL, true
	run.Exclude = map[string]bool{probeDPU: true}
	return broker, "http://" + httpAddr, run, nil
}

// benchGateway runs one phase through occupancyd binary bin, against its own
// Mosquitto.
func benchGateway(ctx context.Context, o BenchOptions, ph BenchPhase, bin, mosq, dir string, res *PhaseResult, logw io.Writer) error {
	logf := func(format string, a ...any) {
		fmt.Fprintf(logw, "dpusim: bench: %s: "+format+"\n", append([]any{ph.Name}, a...)...)
	}
	broker, base, run, err := phaseSetup(o, ph, mosq, dir, res)
	if err != nil {
		return err
	}
	defer broker.stop(5 * time.Second)
	cfgPath, brokerURL := run.Config, run.Broker
	logf("occupancyd %s, %d DPUs, %s; load average %s", bin, res.DPUs, rateText(run.Rate, run.Duration), res.LoadBefore)
	t0 := time.Now()
	gw, err := startProc("occupancyd", filepath.Join(dir, "occupancyd.log"), bin, "run", "--config", cfgPath)
	if err != nil {
		return err
	}
	defer gw.stop(15 * time.Second)
	if err := waitReady(ctx, base, gw, 2*time.Minute); err != nil {
		return err
	}
	res.StartToReady = time.Since(t0)
	logf("occupancyd ready after %s", res.StartToReady.Round(time.Millisecond))

	probeCtx, stopProbe := context.WithCancel(ctx)
	pr := &prober{broker: brokerURL, topic: "dpu/" + probeDPU + "/events", countTopic: "occupancy/" + probeRoom + "/count", interval: o.ProbeInterval}
	probeDone := make(chan error, 1)
	go func() { probeDone <- pr.run(probeCtx) }()

	cpu0 := sampleCPU(gw.pid(), broker.pid())
	pub0, _ := metrics(base, "occupancyd_publishes_total")
	// The output's lag, sampled during the load (older builds lack the metrics).
	lagDone := make(chan struct{})
	lagCtx, stopLag := context.WithCancel(ctx)
	go func() {
		defer close(lagDone)
		for {
			select {
			case <-lagCtx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			m, err := metrics(base, "occupancyd_publish_lag_seconds", "occupancyd_publish_pending_spaces")
			if err != nil {
				continue
			}
			if v, ok := m["occupancyd_publish_lag_seconds"]; ok {
				res.LagSampled = true
				res.MaxLag = max(res.MaxLag, time.Duration(v*float64(time.Second)))
				res.MaxPending = max(res.MaxPending, int64(m["occupancyd_publish_pending_spaces"]))
			}
		}
	}()
	rr, err := Run(ctx, run, io.Discard, logw)
	stopProbe()
	perr := <-probeDone
	stopLag()
	<-lagDone
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("latency probe: %w", perr)
	}
	want := rr.Events + int64(pr.sent)
	p := &res.Gw
	p.Ran, p.Messages = true, rr.Messages+int64(pr.sent)
	p.PubRate = rr.offeredRate()
	// /metrics carries one gauge per space: at 100,000 DPUs it is megabytes, and
	// polling it fast would slow the gateway it measures. The moment the count
	// reached want is interpolated between the two polls around it.
	res.PollEvery = 100 * time.Millisecond
	if res.Spaces > 20000 {
		res.PollEvery = time.Second
	}
	done, err := waitAccepted(ctx, base, gw, want, res.PollEvery, o.DrainTimeout, p, logf)
	if err != nil {
		return err
	}
	cpu1 := sampleCPU(gw.pid(), broker.pid())
	p.CPU = cpu1.sub(cpu0)
	if pub1, err := metrics(base, "occupancyd_publishes_total"); err == nil && p.CPU.Wall > 0 {
		res.PublishRate = (pub1["occupancyd_publishes_total"] - pub0["occupancyd_publishes_total"]) / p.CPU.Wall.Seconds()
	}
	p.Elapsed = done.Sub(rr.Start)
	p.Drain = max(0, done.Sub(rr.End))
	p.Rate = float64(p.Messages) / p.Elapsed.Seconds()
	if sum, err := metric(base, "occupancyd_ingest_batch_seconds_sum"); err == nil {
		if n, err := metric(base, "occupancyd_ingest_batch_seconds_count"); err == nil && n > 0 {
			res.BatchMean = time.Duration(sum / n * float64(time.Second))
			res.BatchEvents = float64(p.Consumed) / n
		}
	}
	res.Lat = latencyStats(pr.lat, pr.missed)

	logf("verifying every space against the truth")
	mism, verr := Verify(ctx, []string{base}, rr.Truth, 3*time.Minute, logw)
	switch {
	case verr != nil:
		res.Verify = "error: " + verr.Error()
	case len(mism) > 0:
		res.Verify = fmt.Sprintf("FAILED: %d spaces differ (first: %s)", len(mism), mism[0])
	default:
		res.Verify = fmt.Sprintf("exact: all %d spaces", len(rr.Truth))
	}
	res.PeakRSS = readProcStat(gw.pid()).HWM
	if err := gw.stop(15 * time.Second); err != nil {
		return err
	}
	if !p.Completed {
		return fmt.Errorf("occupancyd did not accept every event within %s", o.DrainTimeout)
	}
	if verr != nil || len(mism) > 0 {
		return errors.New(res.Verify)
	}
	return nil
}

func rateText(rate float64, d time.Duration) string {
	if rate == 0 {
		return fmt.Sprintf("unpaced for %s", d)
	}
	return fmt.Sprintf("%g events/s for %s", rate, d)
}

// waitAccepted polls occupancyd's accepted count until it reaches want and returns
// the interpolated moment it did.
func waitAccepted(ctx context.Context, base string, gw *proc, want int64, every, timeout time.Duration, p *phaseResult, logf func(string, ...any)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	prevT, prevN := time.Time{}, int64(-1)
	for {
		t := time.Now()
		n, err := metric(base, "occupancyd_events_accepted_total")
		if err == nil {
			p.Consumed = int64(n)
			if p.Consumed >= want {
				p.Completed = true
				if prevN >= 0 && p.Consumed > prevN {
					frac := float64(want-prevN) / float64(p.Consumed-prevN)
					return prevT.Add(time.Duration(frac * float64(t.Sub(prevT)))), nil
				}
				return t, nil
			}
			prevT, prevN = t, p.Consumed
		}
		if gw.exited() {
			return t, fmt.Errorf("occupancyd exited: %v\n%s", gw.err, gw.tail(30))
		}
		if t.After(deadline) {
			logf("occupancyd accepted %d of %d events within the drain timeout", p.Consumed, want)
			return t, nil
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("occupancyd accepted %d of %d events", p.Consumed, want)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(every):
		}
	}
}

// cpuSample is the CPU time of occupancyd, Mosquitto and this process at one moment.
type cpuSample struct {
	at                            time.Time
	occupancyd, mosquitto, dpusim time.Duration
	syscr, syscw                  int64
}

func sampleCPU(gwPid, brokerPid int) cpuSample {
	s := cpuSample{at: time.Now(), mosquitto: readProcStat(brokerPid).CPU}
	if gwPid > 0 {
		s.occupancyd = readProcStat(gwPid).CPU
		s.syscr, s.syscw = readProcIO(gwPid)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.dpusim = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

func (s cpuSample) sub(a cpuSample) cpuBudget {
	return cpuBudget{Wall: s.at.Sub(a.at), Occupancyd: s.occupancyd - a.occupancyd,
		Mosquitto: s.mosquitto - a.mosquitto, Dpusim: s.dpusim - a.dpusim,
		SyscR: s.syscr - a.syscr, SyscW: s.syscw - a.syscw}
}

// readProcIO returns the read and write system calls of a process so far.
func readProcIO(pid int) (r, w int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			r = n
		case "syscw":
			w = n
		}
	}
	return r, w
}

// loadAvg is the 1, 5 and 15 minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// benchBaseline measures a do-nothing QoS 1 subscriber (persistent session, manual
// ack right away) under the phase's load, against its own Mosquitto.
func benchBaseline(ctx context.Context, o BenchOptions, ph BenchPhase, mosq, dir string, res *PhaseResult, logw io.Writer) error {
	broker, _, run, err := phaseSetup(o, ph, mosq, dir, res)
	if err != nil {
		return err
	}
	defer broker.stop(5 * time.Second)
	fmt.Fprintf(logw, "dpusim: bench: %s: do-nothing QoS 1 subscriber, %s; load average %s\n", ph.Name, rateText(run.Rate, run.Duration), res.LoadBefore)
	p, brokerPid, drainTimeout := &res.Base, broker.pid(), o.DrainTimeout
	const id = "dpusim-bench-baseline"
	var n atomic.Int64
	var last atomic.Int64
	opts := mqtt.NewClientOptions().AddBroker(run.Broker).SetClientID(id).
		SetCleanSession(false).SetAutoAckDisabled(true).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	t := c.Subscribe("dpu/+/events", 1, func(_ mqtt.Client, m mqtt.Message) {
		n.Add(1)
		last.Store(time.Now().UnixNano())
		m.Ack()
	})
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		c.Disconnect(100)
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	cpu0 := sampleCPU(0, brokerPid)
	rr, err := Run(ctx, run, io.Discard, logw)
	if err != nil {
		c.Disconnect(100)
		return err
	}
	p.Ran, p.Messages = true, rr.Messages
	p.PubRate = rr.offeredRate()
	deadline := time.Now().Add(drainTimeout)
	for n.Load() < rr.Messages && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	p.Consumed = n.Load()
	p.Completed = p.Consumed >= rr.Messages
	done := time.Unix(0, last.Load())
	cpu1 := sampleCPU(0, brokerPid)
	p.CPU = cpu1.sub(cpu0)
	p.Elapsed = done.Sub(rr.Start)
	p.Drain = max(0, done.Sub(rr.End))
	p.Rate = float64(p.Consumed) / p.Elapsed.Seconds()
	c.Disconnect(250)
	if !p.Completed {
		return fmt.Errorf("received %d of %d messages within %s", p.Consumed, rr.Messages, drainTimeout)
	}
	return nil
}

// prober publishes +1/-1 on the quiet probe DPU and times until the retained
// count topic shows the new value.
type prober struct {
	broker, topic, countTopic string
	interval                  time.Duration
	lat                       []time.Duration
	sent, missed              int
}

// probeTimeout is how long a probe waits for the retained count before it counts
// the sample as missed.
const probeTimeout = 20 * time.Second

func (p *prober) run(ctx context.Context) error {
	vals := make(chan string, 64)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(p.broker).SetClientID("dpusim-probe-sub").SetCleanSession(true))
	if t := sub.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer sub.Disconnect(100)
	if t := sub.Subscribe(p.countTopic, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case vals <- string(m.Payload()):
		default:
		}
	}); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(p.broker).SetClientID("dpusim-probe-pub").SetCleanSession(true))
	if t := pub.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer pub.Disconnect(100)
	occ := 0
	for seq := uint64(1); ; seq++ {
		dir := int8(1)
		if occ == 1 {
			dir = -1
		} else if ctx.Err() != nil {
			return nil // balanced: the probe room is empty again
		}
		for len(vals) > 0 {
			<-vals
		}
		now := time.Now()
		payload := EventPayload(nil, SimEvent{Seq: seq, TS: now.UnixMilli(), Direction: dir})
		if t := pub.Publish(p.topic, 1, false, payload); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			return fmt.Errorf("publish: %v", t.Error())
		}
		p.sent++
		occ += int(dir)
		want := strconv.Itoa(occ)
		timeout := time.After(probeTimeout)
	wait:
		for {
			select {
			case v := <-vals:
				if v == want {
					p.lat = append(p.lat, time.Since(now))
					break wait
				}
			case <-timeout:
				p.missed++
				break wait
			}
		}
		if occ == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(p.interval):
			}
		} else {
			time.Sleep(p.interval)
		}
	}
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
				mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// Markdown renders the results: one column per phase, then the targets.
func (r *BenchResult) Markdown() string {
	var b strings.Builder
	o := r.Opt
	fmt.Fprintf(&b, "## End-to-end benchmark (dpusim bench)\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "- Machine: %s\n", r.Machine)
	gml := "unset"
	if r.GoMemLimit != "" {
		gml = r.GoMemLimit
	}
	fmt.Fprintf(&b, "- occupancyd: default configuration (Home Assistant discovery on, engine.tick 1s), engine.settle_after %s; GOMEMLIMIT %s\n", o.SettleAfter, gml)
	fmt.Fprintf(&b, "- Load shape: reorder %g (max %s), duplicates %g, late %g, malformed %g, %d publisher connections, seed %d; a probe DPU on a quiet room publishes +1/-1 and waits for the retained `occupancy/%s/count` (pause %s, a sample not seen within %s is missed)\n",
		o.Run.Reorder, o.Run.MaxDelay, o.Run.Duplicates, o.Run.Late, o.Run.Bad, o.Run.Connections, o.Run.Seed, probeRoom, o.ProbeInterval, probeTimeout)
	fmt.Fprintf(&b, "- Broker: a fresh Mosquitto per phase on 127.0.0.1 (max_inflight_messages 1000, max_queued_messages 1000000, persistence true)\n\n")

	fmt.Fprintf(&b, "| |")
	for _, p := range r.Phases {
		if p.Binary != "" {
			fmt.Fprintf(&b, " %s: `%s` |", p.Phase.Name, p.Binary)
		} else {
			fmt.Fprintf(&b, " %s |", p.Phase.Name)
		}
	}
	fmt.Fprintf(&b, "\n|---|")
	for range r.Phases {
		fmt.Fprintf(&b, "---:|")
	}
	fmt.Fprintf(&b, "\n")
	row := func(name string, f func(p *PhaseResult) string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, p := range r.Phases {
			fmt.Fprintf(&b, " %s |", f(p))
		}
		fmt.Fprintf(&b, "\n")
	}
	gw := func(f func(p *PhaseResult) string) func(p *PhaseResult) string {
		return func(p *PhaseResult) string {
			if !p.Gw.Ran {
				return "-"
			}
			return f(p)
		}
	}
	base := func(f func(p *PhaseResult) string) func(p *PhaseResult) string {
		return func(p *PhaseResult) string {
			if !p.Base.Ran {
				return "not run"
			}
			return f(p)
		}
	}
	row("DPUs / spaces", func(p *PhaseResult) string { return fmt.Sprintf("%d / %d", p.DPUs, p.Spaces) })
	row("offered", func(p *PhaseResult) string {
		if p.Phase.Rate == 0 {
			return fmt.Sprintf("unpaced, %s", p.Phase.Duration)
		}
		return fmt.Sprintf("%g/s, %s", p.Phase.Rate, p.Phase.Duration)
	})
	row("load average before / after", func(p *PhaseResult) string { return p.LoadBefore + " / " + p.LoadAfter })
	row("subscriber: messages published, received", base(func(p *PhaseResult) string {
		return fmt.Sprintf("%d, %d", p.Base.Messages, p.Base.Consumed)
	}))
	row("subscriber: dpusim's publish rate", base(func(p *PhaseResult) string { return fmt.Sprintf("%.0f/s", p.Base.PubRate) }))
	row("**subscriber: events/s**", base(func(p *PhaseResult) string { return fmt.Sprintf("**%.0f**", p.Base.Rate) }))
	row("occupancyd: messages published, events accepted", gw(func(p *PhaseResult) string {
		return fmt.Sprintf("%d, %d", p.Gw.Messages, p.Gw.Consumed)
	}))
	row("occupancyd: dpusim's publish rate", gw(func(p *PhaseResult) string { return fmt.Sprintf("%.0f/s", p.Gw.PubRate) }))
	row("**occupancyd: events/s**", gw(func(p *PhaseResult) string { return fmt.Sprintf("**%.0f**", p.Gw.Rate) }))
	row("**ratio occupancyd / subscriber**", func(p *PhaseResult) string {
		if !p.Base.Ran || !p.Gw.Ran || p.Base.Rate <= 0 {
			return "-"
		}
		return fmt.Sprintf("**%.2f**", p.Gw.Rate/p.Base.Rate)
	})
	row("drain after the last publish (subscriber / occupancyd)", gw(func(p *PhaseResult) string {
		s := "-"
		if p.Base.Ran {
			s = p.Base.Drain.Round(time.Millisecond).String()
		}
		return s + " / " + p.Gw.Drain.Round(time.Millisecond).String()
	}))
	row("**publish-to-retained p50 / p99 / max**", gw(func(p *PhaseResult) string {
		return fmt.Sprintf("**%s / %s / %s**", fmtLatency(p.Lat.P50), fmtLatency(p.Lat.P99), fmtLatency(p.Lat.Max))
	}))
	row("latency samples (missed)", gw(func(p *PhaseResult) string {
		return fmt.Sprintf("%d (%d missed)", p.Lat.Samples+p.Lat.Missed, p.Lat.Missed)
	}))
	row("occupancyd MQTT messages published per second", gw(func(p *PhaseResult) string { return fmt.Sprintf("%.0f", p.PublishRate) }))
	row("publish lag, highest sample (spaces waiting)", gw(func(p *PhaseResult) string {
		if !p.LagSampled {
			return "not reported"
		}
		return fmt.Sprintf("%s (%d)", p.MaxLag.Round(time.Millisecond), p.MaxPending)
	}))
	row("**peak RSS (VmHWM)**", gw(func(p *PhaseResult) string { return "**" + mib(p.PeakRSS) + "**" }))
	row("**occupancyd CPU-s per 1,000 events**", gw(func(p *PhaseResult) string {
		if p.Gw.Consumed == 0 {
			return "-"
		}
		return fmt.Sprintf("**%.3f**", p.Gw.CPU.Occupancyd.Seconds()/float64(p.Gw.Consumed)*1000)
	}))
	row("occupancyd read / write system calls per event", gw(func(p *PhaseResult) string {
		if p.Gw.Consumed == 0 {
			return "-"
		}
		n := float64(p.Gw.Consumed)
		return fmt.Sprintf("%.2f / %.2f", float64(p.Gw.CPU.SyscR)/n, float64(p.Gw.CPU.SyscW)/n)
	}))
	row("CPU cores, occupancyd phase: occupancyd + Mosquitto + dpusim", gw(func(p *PhaseResult) string {
		c := p.Gw.CPU
		return fmt.Sprintf("%.2f + %.2f + %.2f = %.2f", c.cores(c.Occupancyd), c.cores(c.Mosquitto), c.cores(c.Dpusim), c.cores(c.Occupancyd+c.Mosquitto+c.Dpusim))
	}))
	row("CPU cores, subscriber phase: Mosquitto + dpusim (incl. subscriber)", base(func(p *PhaseResult) string {
		c := p.Base.CPU
		return fmt.Sprintf("%.2f + %.2f = %.2f", c.cores(c.Mosquitto), c.cores(c.Dpusim), c.cores(c.Mosquitto+c.Dpusim))
	}))
	row("ingest batch (store + ack): mean, events", gw(func(p *PhaseResult) string {
		return fmt.Sprintf("%s, %.0f", p.BatchMean.Round(100*time.Microsecond), p.BatchEvents)
	}))
	row("start to ready", gw(func(p *PhaseResult) string { return p.StartToReady.Round(time.Millisecond).String() }))
	row("verify (GET /v1/spaces vs truth)", func(p *PhaseResult) string {
		if p.Verify == "" && p.Err != "" {
			return "failed: " + strings.ReplaceAll(firstLine(p.Err), "|", "/")
		}
		return p.Verify
	})

	fmt.Fprintf(&b, "\nTargets (DESIGN 10, issue 13):\n\n")
	targets := 0
	for _, p := range r.Phases {
		ph := p.Phase
		if p.Binary != "" {
			ph.Name += " (" + p.Binary + ")"
		}
		if ph.MinRatio > 0 || ph.MaxP99 > 0 || ph.MaxRSS > 0 {
			targets++
		}
		if ph.MinRatio > 0 {
			got := "not measured"
			if p.Base.Ran && p.Gw.Ran && p.Base.Rate > 0 && p.Err == "" {
				ratio := p.Gw.Rate / p.Base.Rate
				got = fmt.Sprintf("%.2f: %s", ratio, metText(ratio >= ph.MinRatio))
			}
			fmt.Fprintf(&b, "- %s: ratio >= %.2g: %s\n", ph.Name, ph.MinRatio, got)
		}
		if ph.MaxP99 > 0 {
			got := "not measured"
			if p.Gw.Ran && p.Lat.Samples+p.Lat.Missed > 0 {
				got = fmt.Sprintf("%s: %s", fmtLatency(p.Lat.P99), metText(p.Lat.P99 <= ph.MaxP99))
			}
			fmt.Fprintf(&b, "- %s: publish-to-retained p99 <= %s: %s\n", ph.Name, ph.MaxP99, got)
		}
		if ph.MaxRSS > 0 {
			got := "not measured"
			if p.PeakRSS > 0 {
				got = fmt.Sprintf("%s: %s", mib(p.PeakRSS), metText(p.PeakRSS <= ph.MaxRSS))
				if r.GoMemLimit != "" {
					got += " (but GOMEMLIMIT was set; the target is without it)"
				}
			}
			fmt.Fprintf(&b, "- %s: peak RSS <= %s with no GOMEMLIMIT: %s\n", ph.Name, mib(ph.MaxRSS), got)
		}
		if p.Err != "" {
			fmt.Fprintf(&b, "- %s: FAILED: %s\n", ph.Name, firstLine(p.Err))
		}
	}
	if targets == 0 {
		fmt.Fprintf(&b, "- none for these phases (the standard phases carry them)\n")
	}
	return b.String()
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "**NOT met**"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
