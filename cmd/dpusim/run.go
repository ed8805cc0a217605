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
}

// DefaultRunOptions are the flag defaults.
func DefaultRunOptions() RunOptions {
	return RunOptions{
		Rate: 1000, Duration: 30 * time.Second, MaxDelay: 2 * time.Second,
		Connections: 4, Seed: 1, VerifyTimeout: 10 * time.Minute, Progress: 5 * time.Second,
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

// publisher spreads QoS 1 publishes over N paho connections and counts broker acks.
type publisher struct {
	clients []mqtt.Client
	toks    []chan mqtt.Token
	abandon chan struct{} // closed: stop waiting for acknowledgements
	sent    atomic.Int64
	acked   atomic.Int64
	failed  atomic.Int64
	errMu   sync.Mutex
	err     error
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
				if err := tok.Error(); err != nil {
					p.failed.Add(1)
					p.errMu.Lock()
					if p.err == nil {
						p.err = err
					}
					p.errMu.Unlock()
				}
				p.acked.Add(1)
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

func (p *publisher) outstanding() int64 { return p.sent.Load() - p.acked.Load() }

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

func (p *publisher) firstErr() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// Run publishes the simulated traffic, prints the truth to out and, with Verify,
// compares it with the gateways. Progress goes to logw.
func Run(ctx context.Context, o RunOptions, out, logw io.Writer) (*RunResult, error) {
	if o.Config == "" {
		return nil, errors.New("run: --config FILE is required")
	}
	for name, f := range map[string]float64{"--reorder": o.Reorder, "--duplicates": o.Duplicates, "--late": o.Late, "--bad": o.Bad} {
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
	sim, err := NewSim(cfg.Topology, SimOptions{
		Seed: o.Seed, Reorder: o.Reorder, MaxDelay: o.MaxDelay, Duplicates: o.Duplicates,
		Late: o.Late, Bad: o.Bad, SettleAfter: cfg.Engine.SettleAfter, SiteTopics: o.SiteTopics,
		Exclude: o.Exclude,
	})
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
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
	res, err := drive(ctx, o, sim, pub, logw)
	pub.close(ctx.Err() != nil)
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
		return res, fmt.Errorf("run: %d publishes failed, first: %w", res.PublishFails, pub.firstErr())
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

// drive is the pacing loop: event slot i is due at start + i/rate, delayed messages
// wait in a heap until their publish time; then every ack is awaited.
func drive(ctx context.Context, o RunOptions, sim *Sim, pub *publisher, logw io.Writer) (*RunResult, error) {
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
				s := pub.sent.Load()
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
				for _, m := range sim.Next(ts) {
					if m.PublishAt <= now {
						pub.publish(ctx, m.DPU, m.Topic, m.Payload)
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
			}
		}
		flushDue(ctx, &h, pub, time.Now().UnixMilli())
		if o.Rate > 0 || !generating {
			time.Sleep(time.Millisecond)
		}
	}
	res.End = time.Now()
	stopProgress() // logw is not goroutine-safe
	res.Messages = pub.sent.Load()
	res.Events = sim.Stats.Normal + sim.Stats.Late
	fmt.Fprintf(logw, "dpusim: published %d messages in %s (%.0f/s); waiting for %d acks\n",
		res.Messages, res.End.Sub(res.Start).Round(time.Millisecond),
		float64(res.Messages)/res.End.Sub(res.Start).Seconds(), pub.outstanding())
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
	res.PublishFails = pub.failed.Load()
	return res, nil
}

func flushDue(ctx context.Context, h *delayed, pub *publisher, now int64) {
	for h.Len() > 0 && (*h)[0].PublishAt <= now {
		m := heap.Pop(h).(Msg)
		pub.publish(ctx, m.DPU, m.Topic, m.Payload)
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
