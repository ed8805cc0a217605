package main

import (
	"bufio"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/occupancyd/occupancyd/gateway/mqttconn"
)

// RunOptions are the flags of `dpusim run`.
type RunOptions struct {
	Config        string
	Broker        string // default: the config's broker (mqtt.broker or the embedded listener)
	Rate          float64
	Duration      time.Duration
	Reorder       float64
	MaxDelay      time.Duration
	Duplicates    float64
	Late          float64
	Bad           float64
	Connections   int
	Seed          uint64
	Verify        []string // base URLs of gateways; the union of their spaces is compared
	VerifyTimeout time.Duration
	SiteTopics    bool
	Exclude       map[string]bool
	Progress      time.Duration
	Quiet         bool // do not print the truth table

	// Report kinds (DESIGN 2a, kinds.go): Kinds gives the DPUs without a kind in the
	// topology one; ReportPeriod and CounterResets shape interval and cumulative
	// reports; HTTPPush is the share of messages sent as HTTP pushes to HTTPURL
	// (default: the config's http.listen) with HTTPToken (default: its http.token).
	Kinds         KindSpec
	ReportPeriod  time.Duration
	CounterResets float64
	HTTPPush      float64
	HTTPURL       string
	HTTPToken     string
}

// DefaultRunOptions are the flag defaults.
func DefaultRunOptions() RunOptions {
	return RunOptions{
		Rate: 1000, Duration: 30 * time.Second, MaxDelay: 2 * time.Second,
		Connections: 4, Seed: 1, VerifyTimeout: 10 * time.Minute, Progress: 5 * time.Second,
		ReportPeriod: 10 * time.Second, CounterResets: 0.02,
	}
}

// RunResult is what a run did.
type RunResult struct {
	Messages     int64     // published (all kinds)
	Events       int64     // distinct crossings (normal + late)
	Start, End   time.Time // first publish; last publish (delayed messages included)
	GenEnd       time.Time // every event slot generated (the offered load ends)
	AllAcked     time.Time // when the broker had acked every message
	Truth        []SpaceCount
	Stats        SimStats
	PublishFails int64
	Baseline     map[string]int64 // --verify: the gateways' counts before the run
	Mismatches   []string         // from --verify
}

// offeredRate is the event slots generated (crossings and malformed messages) per
// second of generation: the load actually offered.
func (r *RunResult) offeredRate() float64 {
	return float64(r.Events+r.Stats.Bad) / r.GenEnd.Sub(r.Start).Seconds()
}

// errMismatch is returned when --verify finds differing spaces (exit status 1).
var errMismatch = errors.New("verify: gateway occupancy differs from the truth")

type delayed []Msg

func (h delayed) Len() int           { return len(h) }
func (h delayed) Less(i, j int) bool { return h[i].PublishAt < h[j].PublishAt }
func (h delayed) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayed) Push(x any)        { *h = append(*h, x.(Msg)) }
func (h *delayed) Pop() any {
	old := *h
	m := old[len(old)-1]
	*h = old[:len(old)-1]
	return m
}

// acks counts messages sent and their acknowledgements (PUBACKs, or 200s of HTTP
// pushes), the failed ones and the first failure.
type acks struct {
	sent   atomic.Int64
	acked  atomic.Int64
	failed atomic.Int64
	errMu  sync.Mutex
	err    error
}

// done records the answer to one message: err nil is an acknowledgement.
func (a *acks) done(err error) {
	if err != nil {
		a.failed.Add(1)
		a.errMu.Lock()
		if a.err == nil {
			a.err = err
		}
		a.errMu.Unlock()
	}
	a.acked.Add(1)
}

func (a *acks) outstanding() int64 { return a.sent.Load() - a.acked.Load() }

func (a *acks) firstErr() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.err
}

// publisher spreads QoS 1 publishes over N paho connections and counts broker acks.
type publisher struct {
	acks
	clients []mqtt.Client
	toks    []chan mqtt.Token
	abandon chan struct{} // closed: stop waiting for acknowledgements
	wg      sync.WaitGroup
}

// maxInflightPerConn bounds unacked publishes per connection (paho has 65535 ids).
const maxInflightPerConn = 20000

func newPublisher(broker string, n int, idPrefix string) (*publisher, error) {
	p := &publisher{abandon: make(chan struct{})}
	for i := 0; i < n; i++ {
		// Through occupancyd's buffered, coalescing connection: paho alone writes one
		// packet per system call, and the load generator shares the machine.
		o := mqtt.NewClientOptions().AddBroker(broker).SetCustomOpenConnectionFn(mqttconn.Open).
			SetClientID(fmt.Sprintf("%s-%d", idPrefix, i)).
			SetCleanSession(true).
			SetAutoReconnect(true).
			SetConnectTimeout(10 * time.Second).
			SetWriteTimeout(30 * time.Second).
			SetKeepAlive(30 * time.Second)
		c := mqtt.NewClient(o)
		t := c.Connect()
		if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
			p.close(true)
			err := t.Error()
			if err == nil {
				err = errors.New("timed out")
			}
			return nil, fmt.Errorf("connect to broker %s: %w", broker, err)
		}
		p.clients = append(p.clients, c)
		ch := make(chan mqtt.Token, maxInflightPerConn)
		p.toks = append(p.toks, ch)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for tok := range ch {
				select {
				case <-tok.Done():
				case <-p.abandon: // the run was cancelled: the broker may never ack
					return
				}
				p.done(tok.Error())
			}
		}()
	}
	return p, nil
}

// publish blocks while the connection has maxInflightPerConn unacked messages, or
// until ctx is done (the run is cancelled: the broker may never ack).
func (p *publisher) publish(ctx context.Context, conn int, topic string, payload []byte) {
	c := conn % len(p.clients)
	tok := p.clients[c].Publish(topic, 1, false, payload)
	p.sent.Add(1)
	select {
	case p.toks[c] <- tok:
	case <-ctx.Done():
	}
}

// close waits for the outstanding acknowledgements, or for none when abandon is
// set (a cancelled run), and disconnects.
func (p *publisher) close(abandon bool) {
	if abandon {
		close(p.abandon)
	}
	for _, ch := range p.toks {
		close(ch)
	}
	p.wg.Wait()
	for _, c := range p.clients {
		c.Disconnect(250)
	}
	p.toks = nil
}

// Run publishes the simulated traffic, prints the truth to out and, with Verify,
// compares it with the gateways. Progress goes to logw.
func Run(ctx context.Context, o RunOptions, out, logw io.Writer) (*RunResult, error) {
	if o.Config == "" {
		return nil, errors.New("run: --config FILE is required")
	}
	for name, f := range map[string]float64{"--reorder": o.Reorder, "--duplicates": o.Duplicates, "--late": o.Late, "--bad": o.Bad,
		"--counter-resets": o.CounterResets, "--http-push": o.HTTPPush} {
		if f < 0 || f > 1 {
			return nil, fmt.Errorf("run: %s must be a fraction in [0, 1], got %g", name, f)
		}
	}
	if o.Rate < 0 {
		return nil, fmt.Errorf("run: --rate must be >= 0 (0 = as fast as possible), got %g", o.Rate)
	}
	if o.Connections < 1 {
		return nil, fmt.Errorf("run: --connections must be at least 1, got %d", o.Connections)
	}
	if o.Duration <= 0 {
		return nil, fmt.Errorf("run: --duration must be positive, got %s", o.Duration)
	}
	if o.Progress <= 0 {
		o.Progress = DefaultRunOptions().Progress
	}
	cfg, err := loadSimConfig(o.Config)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if o.ReportPeriod <= 0 {
		return nil, fmt.Errorf("run: --report-period must be positive, got %s", o.ReportPeriod)
	}
	sim, err := NewSim(cfg.Topology, SimOptions{
		Seed: o.Seed, Reorder: o.Reorder, MaxDelay: o.MaxDelay, Duplicates: o.Duplicates,
		Late: o.Late, Bad: o.Bad, SettleAfter: cfg.Engine.SettleAfter, SiteTopics: o.SiteTopics,
		Exclude: o.Exclude, Kinds: o.Kinds, Entries: cfg.entries, ReportPeriod: o.ReportPeriod,
		CounterResets: o.CounterResets, HTTPPush: o.HTTPPush,
	})
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	var push *pusher
	if o.HTTPPush > 0 {
		base, token := o.HTTPURL, o.HTTPToken
		if base == "" {
			base = cfg.httpBase()
		}
		if token == "" {
			if token, err = cfg.httpToken(); err != nil {
				return nil, fmt.Errorf("run: http.token_file: %w", err)
			}
		}
		if token == "" {
			return nil, fmt.Errorf("run: --http-push needs a bearer token: http.token in the config (dpusim topology --http-token) or --http-token")
		}
		push = newPusher(base, token, max(64, 16*o.Connections)) // each push waits for a synced write
	}
	if err := cfg.checkTopics(sim); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	for _, sp := range cfg.Topology.Spaces {
		if sp.DailyReset != "" {
			fmt.Fprintf(logw, "dpusim: warning: space %q has daily_reset %s: the truth does not model resets, a reset during the run makes --verify differ\n", sp.ID, sp.DailyReset)
		}
	}
	var baseline map[string]int64
	if len(o.Verify) > 0 {
		if baseline, err = startingCounts(ctx, o.Verify, logw); err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
	}
	broker := o.Broker
	if broker == "" {
		broker = cfg.brokerURL()
	}
	pub, err := newPublisher(broker, o.Connections, fmt.Sprintf("dpusim-%d-%d", o.Seed, time.Now().UnixNano()%1e6))
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	way := outlet{pub: pub, push: push}
	res, err := drive(ctx, o, sim, way, logw)
	way.close(ctx.Err() != nil)
	if err != nil {
		return res, err
	}
	res.Truth = sim.Truth()
	res.Stats = sim.Stats
	res.Baseline = baseline
	if !o.Quiet {
		if err := printTruth(out, res.Truth); err != nil {
			return res, err
		}
	}
	if res.PublishFails > 0 {
		return res, fmt.Errorf("run: %d publishes or pushes failed, first: %w", res.PublishFails, way.firstErr())
	}
	if len(o.Verify) > 0 {
		res.Mismatches, err = Verify(ctx, o.Verify, plusBaseline(res.Truth, baseline), o.VerifyTimeout, logw)
		if err != nil {
			return res, err
		}
		if len(res.Mismatches) > 0 {
			for _, m := range res.Mismatches {
				fmt.Fprintln(out, m)
			}
			return res, fmt.Errorf("%w: %d spaces differ", errMismatch, len(res.Mismatches))
		}
	}
	return res, nil
}

// outlet sends a message its way: MQTT (publisher) or HTTP push (pusher, nil
// without --http-push).
type outlet struct {
	pub  *publisher
	push *pusher
}

func (o outlet) send(ctx context.Context, m Msg) {
	if m.HTTP {
		o.push.push(ctx, m)
		return
	}
	o.pub.publish(ctx, m.DPU, m.Topic, m.Payload)
}

func (o outlet) sent() int64 {
	n := o.pub.sent.Load()
	if o.push != nil {
		n += o.push.sent.Load()
	}
	return n
}

func (o outlet) outstanding() int64 {
	n := o.pub.outstanding()
	if o.push != nil {
		n += o.push.outstanding()
	}
	return n
}

func (o outlet) failed() int64 {
	n := o.pub.failed.Load()
	if o.push != nil {
		n += o.push.failed.Load()
	}
	return n
}

func (o outlet) firstErr() error {
	if err := o.pub.firstErr(); err != nil {
		return err
	}
	if o.push != nil {
		return o.push.firstErr()
	}
	return nil
}

func (o outlet) close(abandon bool) {
	if o.push != nil {
		o.push.close(abandon)
	}
	o.pub.close(abandon)
}

// drive is the pacing loop: event slot i is due at start + i/rate, delayed messages
// wait in a heap until their publish time; at the end the report periods still
// open report (Sim.Finish); then every ack is awaited.
func drive(ctx context.Context, o RunOptions, sim *Sim, pub outlet, logw io.Writer) (*RunResult, error) {
	res := &RunResult{Start: time.Now()}
	startMs := res.Start.UnixMilli()
	endMs := startMs + o.Duration.Milliseconds()
	var h delayed
	var slots int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // progress line
		defer wg.Done()
		t := time.NewTicker(o.Progress)
		defer t.Stop()
		last, lastT := int64(0), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				s := pub.sent()
				fmt.Fprintf(logw, "dpusim: %s sent=%d rate=%.0f/s acks_outstanding=%d\n",
					now.Sub(res.Start).Truncate(time.Second), s, float64(s-last)/now.Sub(lastT).Seconds(), pub.outstanding())
				last, lastT = s, now
			}
		}
	}()
	var once sync.Once
	stopProgress := func() { once.Do(func() { close(done); wg.Wait() }) }
	defer stopProgress()

	generating := true
	var lastTS int64
	for generating || h.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run: %w", err)
		}
		now := time.Now().UnixMilli()
		if generating {
			var due int64
			if o.Rate > 0 {
				due = int64(float64(now-startMs) * o.Rate / 1000)
				if max := int64(float64(endMs-startMs) * o.Rate / 1000); due >= max {
					due, generating = max, false
				}
			} else {
				due = slots + 512
				if now >= endMs {
					due, generating = slots, false
				}
			}
			for ; slots < due; slots++ {
				ts := now
				if o.Rate > 0 {
					ts = startMs + int64(float64(slots)*1000/o.Rate)
				}
				lastTS = ts
				for _, m := range sim.Next(ts) {
					if m.PublishAt <= now {
						pub.send(ctx, m)
					} else {
						heap.Push(&h, m)
					}
				}
				if slots%4096 == 4095 { // keep delayed messages on time under a backlog
					flushDue(ctx, &h, pub, time.Now().UnixMilli())
				}
			}
			if !generating {
				res.GenEnd = time.Now()
				for _, m := range sim.Finish(lastTS) {
					if m.PublishAt <= now {
						pub.send(ctx, m)
					} else {
						heap.Push(&h, m)
					}
				}
			}
		}
		flushDue(ctx, &h, pub, time.Now().UnixMilli())
		if o.Rate > 0 || !generating {
			time.Sleep(time.Millisecond)
		}
	}
	res.End = time.Now()
	stopProgress() // logw is not goroutine-safe
	res.Messages = pub.sent()
	res.Events = sim.Stats.Normal + sim.Stats.Late
	pushed := ""
	if pub.push != nil {
		pushed = fmt.Sprintf(", %d of them pushed over HTTP", pub.push.sent.Load())
	}
	fmt.Fprintf(logw, "dpusim: published %d messages in %s (%.0f/s)%s; waiting for %d acks\n",
		res.Messages, res.End.Sub(res.Start).Round(time.Millisecond),
		float64(res.Messages)/res.End.Sub(res.Start).Seconds(), pushed, pub.outstanding())
	if st := sim.Stats; st.Reports > 0 {
		fmt.Fprintf(logw, "dpusim: %d interval and cumulative reports, %d counter resets\n", st.Reports, st.CounterResets)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for pub.outstanding() > 0 {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("run: %d publishes not acked by the broker after 2m", pub.outstanding())
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.AllAcked = time.Now()
	res.PublishFails = pub.failed()
	return res, nil
}

func flushDue(ctx context.Context, h *delayed, pub outlet, now int64) {
	for h.Len() > 0 && (*h)[0].PublishAt <= now {
		pub.send(ctx, heap.Pop(h).(Msg))
	}
}

func printTruth(w io.Writer, truth []SpaceCount) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	fmt.Fprintf(bw, "# true occupancy of %d spaces\n", len(truth))
	for _, t := range truth {
		fmt.Fprintf(bw, "%s %d\n", t.Space, t.Occupancy)
	}
	return bw.Flush()
}
