package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchOptions are the flags of `dpusim bench`.
type BenchOptions struct {
	Sites, DPUsPerSite int
	Run                RunOptions // load: rate, duration, fractions, connections, seed
	SettleAfter        time.Duration
	Occupancyd         string // binary; default: go build ./cmd/occupancyd
	Mosquitto          string
	Out                string // Markdown table
	ProbeInterval      time.Duration
	Dir                string // work dir; default a temp dir, removed after
	SkipBaseline       bool
	DrainTimeout       time.Duration
}

// DefaultBenchOptions finish in about 2-3 minutes on a 2-core machine.
func DefaultBenchOptions() BenchOptions {
	r := DefaultRunOptions()
	r.Rate, r.Duration, r.Connections = 10000, 30*time.Second, 4
	r.Reorder, r.Duplicates, r.Bad, r.MaxDelay = 0.05, 0.01, 0.001, 2*time.Second
	r.Quiet = true
	return BenchOptions{
		Sites: 200, DPUsPerSite: 50, Run: r, SettleAfter: 5 * time.Minute,
		Out: "bench-out/e2e.md", ProbeInterval: 500 * time.Millisecond, DrainTimeout: 5 * time.Minute,
	}
}

// BenchResult holds the figures of one bench run.
type BenchResult struct {
	Opt            BenchOptions
	DPUs           int
	Base           phaseResult
	Gw             phaseResult
	StartToReady   time.Duration
	LatP50, LatP99 time.Duration
	LatMax         time.Duration
	LatSamples     int
	LatMissed      int
	PeakRSS        int64
	CPU            time.Duration
	CPUWall        time.Duration
	Verify         string
	Machine        string
	BatchMean      time.Duration // occupancyd_ingest_batch_seconds sum/count
	BatchEvents    float64       // accepted events per ingest batch
}

type phaseResult struct {
	Ran       bool
	Messages  int64 // published
	Consumed  int64 // received (subscriber) or accepted (occupancyd)
	PubRate   float64
	Rate      float64       // messages / (done - first publish)
	Drain     time.Duration // done - last publish
	Elapsed   time.Duration
	Completed bool
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := DefaultBenchOptions()
	fs := newFlagSet("bench", stderr)
	fs.IntVar(&o.Sites, "sites", o.Sites, "sites of the synthetic campus")
	fs.IntVar(&o.DPUsPerSite, "dpus-per-site", o.DPUsPerSite, "DPUs per site")
	fs.Float64Var(&o.Run.Rate, "rate", o.Run.Rate, "offered events per second (0 = as fast as possible)")
	fs.DurationVar(&o.Run.Duration, "duration", o.Run.Duration, "load duration of each phase")
	fs.Float64Var(&o.Run.Reorder, "reorder", o.Run.Reorder, "fraction of reordered events")
	fs.DurationVar(&o.Run.MaxDelay, "max-delay", o.Run.MaxDelay, "longest hold-back of a reordered event")
	fs.Float64Var(&o.Run.Duplicates, "duplicates", o.Run.Duplicates, "fraction of duplicated events")
	fs.Float64Var(&o.Run.Late, "late", o.Run.Late, "fraction of late events")
	fs.Float64Var(&o.Run.Bad, "bad", o.Run.Bad, "fraction of malformed messages")
	fs.IntVar(&o.Run.Connections, "connections", o.Run.Connections, "publisher connections")
	fs.Uint64Var(&o.Run.Seed, "seed", o.Run.Seed, "random seed")
	fs.DurationVar(&o.SettleAfter, "settle-after", o.SettleAfter, "engine.settle_after of occupancyd")
	fs.StringVar(&o.Occupancyd, "occupancyd", o.Occupancyd, "occupancyd binary (default: go build ./cmd/occupancyd)")
	fs.StringVar(&o.Mosquitto, "mosquitto", o.Mosquitto, "mosquitto binary (default: from PATH)")
	fs.StringVar(&o.Out, "out", o.Out, "Markdown output file")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", o.ProbeInterval, "interval of latency probes")
	fs.StringVar(&o.Dir, "dir", o.Dir, "work directory to keep (default: a temp dir, removed)")
	fs.BoolVar(&o.SkipBaseline, "skip-baseline", o.SkipBaseline, "skip the do-nothing subscriber phase")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "longest wait for a consumer to catch up")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	res, err := Bench(ctx, o, stderr)
	if res != nil {
		md := res.Markdown()
		fmt.Fprint(stdout, md)
		if o.Out != "" {
			if werr := os.MkdirAll(filepath.Dir(o.Out), 0o755); werr == nil {
				werr = os.WriteFile(o.Out, []byte(md), 0o644)
				if werr != nil && err == nil {
					err = fmt.Errorf("bench: write %s: %w", o.Out, werr)
				}
			}
			fmt.Fprintf(stderr, "dpusim: bench: wrote %s\n", o.Out)
		}
	}
	return err
}

// Bench runs both phases against one Mosquitto.
func Bench(ctx context.Context, o BenchOptions, logw io.Writer) (*BenchResult, error) {
	res := &BenchResult{Opt: o, Machine: machine()}
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
	bin := o.Occupancyd
	if bin == "" {
		logf("building occupancyd")
		var err error
		if bin, err = buildOccupancyd(dir); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	broker, brokerURL, err := startMosquitto(mosq, dir)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer broker.stop(5 * time.Second)
	logf("mosquitto on %s", brokerURL)

	httpAddr, err := freeAddr()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	topo := DefaultTopoOptions()
	topo.Sites, topo.DPUsPerSite, topo.Seed = o.Sites, o.DPUsPerSite, o.Run.Seed
	topo.Broker, topo.HTTPListen = brokerURL, httpAddr
	topo.StorageDir = filepath.Join(dir, "occupancyd-data")
	topo.GatewayID, topo.SettleAfter, topo.LogLevel, topo.Probe = "bench", o.SettleAfter, "warn", true
	cfgPath := filepath.Join(dir, "campus.yaml")
	f, err := os.Create(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	err = WriteConfig(f, topo)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("bench: write config: %w", err)
	}
	res.DPUs = o.Sites*o.DPUsPerSite + 1
	run := o.Run
	run.Config, run.Broker, run.Quiet = cfgPath, brokerURL, true
	run.Exclude = map[string]bool{probeDPU: true}

	if !o.SkipBaseline {
		logf("phase a: do-nothing QoS 1 subscriber, %g events/s for %s", run.Rate, run.Duration)
		if err := benchBaseline(ctx, run, brokerURL, o.DrainTimeout, &res.Base, logw); err != nil {
			return res, fmt.Errorf("bench: baseline: %w", err)
		}
	}

	logf("phase b: occupancyd, %d DPUs", res.DPUs)
	t0 := time.Now()
	gw, err := startProc("occupancyd", filepath.Join(dir, "occupancyd.log"), bin, "run", "--config", cfgPath)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer gw.stop(15 * time.Second)
	base := "http://" + httpAddr
	if err := waitReady(ctx, base, gw, 2*time.Minute); err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	res.StartToReady = time.Since(t0)
	logf("occupancyd ready after %s", res.StartToReady.Round(time.Millisecond))
	cpu0, wall0 := readProcStat(gw.pid()), time.Now()

	probeCtx, stopProbe := context.WithCancel(ctx)
	pr := &prober{broker: brokerURL, topic: "dpu/" + probeDPU + "/events", countTopic: "occupancy/" + probeRoom + "/count", interval: o.ProbeInterval}
	probeDone := make(chan error, 1)
	go func() { probeDone <- pr.run(probeCtx) }()

	rr, err := Run(ctx, run, io.Discard, logw)
	stopProbe()
	perr := <-probeDone
	if err != nil {
		return res, fmt.Errorf("bench: load: %w", err)
	}
	if perr != nil {
		return res, fmt.Errorf("bench: latency probe: %w", perr)
	}
	want := rr.Events + int64(pr.sent)
	p := &res.Gw
	p.Ran, p.Messages = true, rr.Messages+int64(pr.sent)
	p.PubRate = rr.offeredRate()
	deadline := time.Now().Add(o.DrainTimeout)
	lastLog := time.Now()
	// /metrics carries one gauge per space: at 100,000 DPUs it is megabytes, and
	// polling it fast would slow the gateway it measures.
	poll := 50 * time.Millisecond
	if len(rr.Truth) > 5000 {
		poll = time.Second
	}
	for {
		n, err := metric(base, "occupancyd_events_accepted_total")
		if err == nil {
			p.Consumed = int64(n)
		}
		if p.Consumed >= want {
			p.Completed = true
			break
		}
		if gw.exited() {
			return res, fmt.Errorf("bench: occupancyd exited: %v\n%s", gw.err, gw.tail(30))
		}
		if time.Now().After(deadline) {
			logf("occupancyd accepted %d of %d events within the drain timeout", p.Consumed, want)
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("occupancyd accepted %d of %d events", p.Consumed, want)
			lastLog = time.Now()
		}
		time.Sleep(poll)
	}
	done := time.Now()
	p.Elapsed = done.Sub(rr.Start)
	p.Drain = max(0, done.Sub(rr.End))
	p.Rate = float64(p.Messages) / p.Elapsed.Seconds()
	if sum, err := metric(base, "occupancyd_ingest_batch_seconds_sum"); err == nil {
		if n, err := metric(base, "occupancyd_ingest_batch_seconds_count"); err == nil && n > 0 {
			res.BatchMean = time.Duration(sum / n * float64(time.Second))
			res.BatchEvents = float64(p.Consumed) / n
		}
	}
	cpu1 := readProcStat(gw.pid())
	res.CPU, res.CPUWall = cpu1.CPU-cpu0.CPU, time.Since(wall0)

	lat := append([]time.Duration(nil), pr.lat...)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.LatSamples, res.LatMissed = len(lat), pr.missed
	if len(lat) > 0 {
		res.LatP50 = lat[len(lat)*50/100]
		res.LatP99 = lat[min(len(lat)-1, len(lat)*99/100)]
		res.LatMax = lat[len(lat)-1]
	}

	logf("verifying every space against the truth")
	mism, err := Verify(ctx, []string{base}, rr.Truth, 3*time.Minute, logw)
	switch {
	case err != nil:
		res.Verify = "error: " + err.Error()
	case len(mism) > 0:
		res.Verify = fmt.Sprintf("FAILED: %d spaces differ (first: %s)", len(mism), mism[0])
	default:
		res.Verify = fmt.Sprintf("exact: all %d spaces", len(rr.Truth))
	}
	res.PeakRSS = readProcStat(gw.pid()).HWM
	if err := gw.stop(15 * time.Second); err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	if !p.Completed {
		return res, fmt.Errorf("bench: occupancyd did not accept every event within %s", o.DrainTimeout)
	}
	if len(mism) > 0 || err != nil {
		return res, fmt.Errorf("bench: %s", res.Verify)
	}
	return res, nil
}

// benchBaseline measures a do-nothing QoS 1 subscriber (persistent session, manual
// ack right away) under the load.
func benchBaseline(ctx context.Context, run RunOptions, broker string, drainTimeout time.Duration, p *phaseResult, logw io.Writer) error {
	const id = "dpusim-bench-baseline"
	var n atomic.Int64
	var last atomic.Int64
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).
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
	p.Elapsed = done.Sub(rr.Start)
	p.Drain = max(0, done.Sub(rr.End))
	p.Rate = float64(p.Consumed) / p.Elapsed.Seconds()
	c.Disconnect(250)
	// Drop the persistent session so the broker queues nothing for it in phase b.
	c2 := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true))
	if t := c2.Connect(); t.WaitTimeout(15*time.Second) && t.Error() == nil {
		c2.Disconnect(100)
	}
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
		timeout := time.After(20 * time.Second)
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

// Markdown renders the result table.
func (r *BenchResult) Markdown() string {
	var b strings.Builder
	o := r.Opt
	fmt.Fprintf(&b, "## End-to-end benchmark (dpusim bench)\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "- Machine: %s\n", r.Machine)
	fmt.Fprintf(&b, "- Load: %d sites x %d DPUs (+1 probe DPU), offered %g events/s for %s over %d connections, reorder %g (max %s), duplicates %g, late %g, malformed %g, seed %d\n",
		o.Sites, o.DPUsPerSite, o.Run.Rate, o.Run.Duration, o.Run.Connections, o.Run.Reorder, o.Run.MaxDelay, o.Run.Duplicates, o.Run.Late, o.Run.Bad, o.Run.Seed)
	fmt.Fprintf(&b, "- Broker: Mosquitto on 127.0.0.1 (max_inflight_messages 1000, max_queued_messages 1000000, persistence true); occupancyd settle_after %s\n\n", o.SettleAfter)
	fmt.Fprintf(&b, "| | do-nothing QoS 1 subscriber | occupancyd |\n|---|---:|---:|\n")
	row := func(name string, a, g string) { fmt.Fprintf(&b, "| %s | %s | %s |\n", name, a, g) }
	ph := func(p phaseResult, f func(phaseResult) string) string {
		if !p.Ran {
			return "not run"
		}
		return f(p)
	}
	row("messages published", ph(r.Base, func(p phaseResult) string { return strconv.FormatInt(p.Messages, 10) }),
		ph(r.Gw, func(p phaseResult) string { return strconv.FormatInt(p.Messages, 10) }))
	row("offered rate achieved (events generated / generation time)", ph(r.Base, func(p phaseResult) string { return fmt.Sprintf("%.0f/s", p.PubRate) }),
		ph(r.Gw, func(p phaseResult) string { return fmt.Sprintf("%.0f/s", p.PubRate) }))
	row("consumed (received / accepted)", ph(r.Base, func(p phaseResult) string { return strconv.FormatInt(p.Consumed, 10) }),
		ph(r.Gw, func(p phaseResult) string { return strconv.FormatInt(p.Consumed, 10) }))
	row("**events/s processed** (messages / first publish to last processed)", ph(r.Base, func(p phaseResult) string { return fmt.Sprintf("**%.0f**", p.Rate) }),
		ph(r.Gw, func(p phaseResult) string { return fmt.Sprintf("**%.0f**", p.Rate) }))
	ratio := "n/a"
	if r.Base.Ran && r.Gw.Ran && r.Base.Rate > 0 {
		ratio = fmt.Sprintf("%.2f", r.Gw.Rate/r.Base.Rate)
	}
	row("ratio occupancyd / subscriber", "", ratio)
	row("drain after the last publish", ph(r.Base, func(p phaseResult) string { return p.Drain.Round(time.Millisecond).String() }),
		ph(r.Gw, func(p phaseResult) string { return p.Drain.Round(time.Millisecond).String() }))
	row("publish-to-retained latency p50 / p99 / max", "", fmt.Sprintf("%s / %s / %s (%d samples, %d missed)",
		r.LatP50.Round(time.Millisecond), r.LatP99.Round(time.Millisecond), r.LatMax.Round(time.Millisecond), r.LatSamples, r.LatMissed))
	row("ingest batch (store + ack): mean latency, events per batch", "", fmt.Sprintf("%s, %.0f", r.BatchMean.Round(100*time.Microsecond), r.BatchEvents))
	row("start to ready (topology load, storage, broker)", "", r.StartToReady.Round(time.Millisecond).String())
	row("peak RSS (VmHWM)", "", mib(r.PeakRSS))
	cores := 0.0
	if r.CPUWall > 0 {
		cores = r.CPU.Seconds() / r.CPUWall.Seconds()
	}
	row("CPU during load + drain", "", fmt.Sprintf("%.1f s over %.1f s = %.2f cores", r.CPU.Seconds(), r.CPUWall.Seconds(), cores))
	row("verify (GET /v1/spaces vs truth)", "", r.Verify)
	return b.String()
}
