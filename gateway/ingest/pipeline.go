// Package ingest is the message pipeline every path in shares — the paho client of
// an external broker, the embedded broker's hook and HTTP push: a raw message (its
// topic or DPU id, payload, receive time and acknowledgement) goes DPU from topic ->
// decode in the DPU's kind and map (routes.go: events, or interval and cumulative
// reports) -> tracker.Ingest or IngestMixed (stored durably, then applied) ->
// rejections recorded -> acknowledged, only once its events and reports are durable.
//
// Queued messages (Submit) are taken by a pool of workers, each handing up to
// BatchMessages messages to one Ingest, so concurrent batches share the store's
// group commits. Submit never blocks (an external broker sends regardless of what
// is unacknowledged); SubmitEmbedded, for the embedded broker, waits while the
// backlog is at its bound, which slows that client's connection instead. Ingest is
// the synchronous entry for HTTP push: it returns the per-index result once durable.
// Stop stops intake and drains: a message not yet taken stays unacknowledged, and
// the broker redelivers it to the persistent session.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Message is one message in: an MQTT PUBLISH (Topic set; the DPU id is taken from
// it) or an HTTP push (DPU set).
type Message struct {
	Topic    string
	DPU      string
	Payload  []byte
	Received int64  // Unix ms
	Ack      func() // called once the message may be acknowledged (nil: none)
}

// Tracker is what the pipeline needs from the tracker (*tracker.Tracker).
type Tracker interface {
	Ingest(ctx context.Context, evs []occupancy.Event) ([]tracker.Result, error)
	// IngestMixed stores events and interval or cumulative reports in one group
	// commit (DESIGN 2a).
	IngestMixed(ctx context.Context, evs []occupancy.Event, reps []occupancy.Report) ([]tracker.Result, []tracker.Result, error)
	CountRejected(dpu string)
}

// Options configure a Pipeline. Tracker and Rejects are required.
type Options struct {
	Tracker Tracker
	Rejects Rejects
	// Topics are the mqtt.events_topic entries: the first whose filter matches a
	// topic takes the message, the last `+` of its filter is the DPU id, and its kind
	// and map decode it unless the DPU's own do (routes.go). Filters, when Topics is
	// empty, are bare filters (events).
	Topics  config.EventsTopics
	Filters []string
	// Topology is the topology in force at start: its DPUs' kinds and maps
	// (SetTopology replaces it). Nil: every DPU reports as its entry says.
	Topology *occupancy.TopologyConfig
	// Receive-time checks (engine.max_future_skew, mqtt.max_payload,
	// storage.retention: 0 = no bound).
	MaxFutureSkew time.Duration
	MaxPayload    int
	Retention     time.Duration
	Metrics       *metrics.Metrics // nil: a fresh set nobody reads
	Logger        zerolog.Logger
	Now           func() time.Time // default time.Now
	// Workers is the number of workers (default 8); each hands up to BatchMessages
	// (default 256) messages to one tracker.Ingest.
	Workers       int
	BatchMessages int
}

// Pipeline takes messages to the tracker and acknowledges them once durable.
type Pipeline struct {
	opts     Options
	tr       Tracker
	rejects  Rejects
	metrics  *metrics.Metrics
	log      zerolog.Logger
	retry    *lograte.Logger        // a failing store, retried
	storeErr *lograte.Logger        // a batch given up (not acknowledged)
	entries  []entryRoute           // mqtt.events_topic
	routes   atomic.Pointer[routes] // the decoders of the topology in force

	ch       chan Message
	stopping chan struct{}
	stopOnce sync.Once
	ackOnce  sync.Once
	started  atomic.Bool
	wg       sync.WaitGroup
	ctx      context.Context // cancelled when a drain must be abandoned
	cancel   context.CancelFunc

	waiting atomic.Int64 // submitted, not yet taken by a worker (backlog)
	// busy[i] is when worker i began the batch it is processing, or last heard back
	// from the store while retrying it (Unix ns; 0: idle): a store that answers with
	// errors is not a hang.
	busy []atomic.Int64

	// Messages submitted that the workers have not taken yet (see Submit); the pump
	// moves them into ch.
	qmu    sync.Mutex
	queue  []Message
	spare  []Message
	queued chan struct{} // capacity 1: signalled when queue becomes non-empty

	// acks are sent by one goroutine: paho serialises them anyway, and a worker
	// goes on with its next batch meanwhile.
	acks    chan []func()
	ackDone chan struct{}
}

// New checks the options and builds a Pipeline; no worker runs until Start.
func New(opts Options) (*Pipeline, error) {
	if opts.Tracker == nil || opts.Rejects == nil {
		return nil, errors.New("ingest: a tracker and a rejection recorder are required")
	}
	if len(opts.Topics) == 0 {
		opts.Topics = config.Topics(opts.Filters...)
	}
	entries, err := newEntries(opts.Topics)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	rts, err := newRoutes(entries, opts.Topology)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.BatchMessages <= 0 {
		opts.BatchMessages = 256
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipeline{
		opts:     opts,
		tr:       opts.Tracker,
		rejects:  opts.Rejects,
		metrics:  opts.Metrics,
		log:      opts.Logger,
		retry:    lograte.New(opts.Logger, zerolog.WarnLevel, time.Second),
		storeErr: lograte.New(opts.Logger, zerolog.ErrorLevel, time.Second),
		ch:       make(chan Message, opts.Workers*opts.BatchMessages),
		stopping: make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		busy:     make([]atomic.Int64, opts.Workers),
		queued:   make(chan struct{}, 1),
		acks:     make(chan []func(), opts.Workers*4),
		ackDone:  make(chan struct{}),
		entries:  entries,
	}
	p.routes.Store(rts)
	return p, nil
}

// Start starts the workers, the pump and the acknowledger.
func (p *Pipeline) Start() {
	if !p.started.CompareAndSwap(false, true) {
		return
	}
	go p.acker()
	go p.pump()
	for i := 0; i < p.opts.Workers; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.work(&p.busy[i])
		}()
	}
}

// abandonGrace is how long Stop waits for the workers once its ctx is done.
const abandonGrace = time.Second

// Stop stops intake and waits for the workers to finish what they hold (stored and
// acknowledged), or for ctx: then appends in flight are abandoned, unacknowledged,
// and a worker still decoding after abandonGrace is left behind (it stores and
// acknowledges nothing more).
func (p *Pipeline) Stop(ctx context.Context) {
	p.stopOnce.Do(func() { close(p.stopping) })
	if !p.started.Load() {
		return
	}
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.cancel()
		select {
		case <-done:
		case <-time.After(abandonGrace):
			// A worker is still decoding a large message (seconds for 100,000
			// events); it stores and acknowledges nothing once it sees the drain
			// abandoned, so the stop goes on without it.
			p.log.Warn().Msg("ingest drain abandoned with a message still being decoded; it stays unacknowledged")
			p.retry.Flush()
			p.storeErr.Flush()
			return
		}
	}
	// The workers are done: send the acknowledgements they handed over.
	p.ackOnce.Do(func() { close(p.acks) })
	select {
	case <-p.ackDone:
	case <-ctx.Done():
	}
	p.retry.Flush()
	p.storeErr.Flush()
}

// Stopping is closed once Stop was called: the pipeline takes no more messages.
func (p *Pipeline) Stopping() <-chan struct{} { return p.stopping }

// Now is the pipeline's clock in Unix ms (a message's receive time).
func (p *Pipeline) Now() int64 { return p.opts.Now().UnixMilli() }

// Matches reports whether topic is on an events filter; one whose DPU level is not
// a valid id is too (it is rejected as bad_topic, with a record).
func (p *Pipeline) Matches(topic string) bool {
	_, _, err := p.route(topic)
	return !errors.Is(err, errNoFilter)
}

// BusySince is when the oldest batch a worker is still processing began (zero when
// every worker is idle): a watchdog's proof that ingest is not stuck.
func (p *Pipeline) BusySince() time.Time {
	var oldest int64
	for i := range p.busy {
		if t := p.busy[i].Load(); t != 0 && (oldest == 0 || t < oldest) {
			oldest = t
		}
	}
	if oldest == 0 {
		return time.Time{}
	}
	return time.Unix(0, oldest)
}

// Submit queues one message for the workers without blocking: paho calls it on its
// message loop (SetOrderMatters(true): no goroutine per message), which it must never
// hold up, and the broker does not hold back what the gateway has not
// acknowledged: Mosquitto 2.0 kept sending past max_inflight_messages 1000 once a
// client's queue had filled and began to drain (31,585 unacknowledged at once in a
// test). A handler that waited for the workers therefore left one parked goroutine
// per message of the backlog: 104,000 of them, 164-236 MB of stacks, at the end of
// a 100,000-DPU run at 20,000 events/s. The message is queued instead (about 56
// bytes beside what paho holds for it) and the handler returns. After Stop it
// returns false and the message stays unacknowledged: the broker redelivers it to
// the persistent session.
func (p *Pipeline) Submit(m Message) bool {
	select {
	case <-p.stopping:
		return false
	default:
	}
	p.waiting.Add(1)
	p.qmu.Lock()
	p.queue = append(p.queue, m)
	p.qmu.Unlock()
	select {
	case p.queued <- struct{}{}:
	default: // already signalled
	}
	return true
}

// MaxEmbeddedBacklog bounds the messages the embedded broker hands over that no
// worker has taken yet. Submit never blocks (an external broker sends regardless),
// but the embedded broker is ours: past the bound, SubmitEmbedded waits, which stops
// reading from that client's connection until the workers catch up, so a client
// flooding unacknowledged messages cannot grow the queue without end.
const MaxEmbeddedBacklog = 1 << 16

// SubmitEmbedded takes an event message from the embedded broker's hook: Submit,
// after waiting while MaxEmbeddedBacklog messages wait for the workers.
func (p *Pipeline) SubmitEmbedded(topic string, payload []byte, ack func()) bool {
	for p.backlog() >= MaxEmbeddedBacklog {
		select {
		case <-p.stopping:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return p.Submit(Message{Topic: topic, Payload: payload, Ack: ack, Received: p.Now()})
}

// backlog is the number of messages submitted that no worker has taken yet.
func (p *Pipeline) backlog() int { return int(p.waiting.Load()) }

// Backlog is the number of messages submitted that no worker has taken yet: near
// the broker's in-flight limit (Mosquitto's max_inflight_messages) while ingest does
// not keep up, a few batches' worth while it does.
func (p *Pipeline) Backlog() int { return p.backlog() }

// pump moves queued messages into the workers' channel, oldest first, until Stop.
// Messages still queued at Stop are never acknowledged (see Submit).
func (p *Pipeline) pump() {
	var batch []Message
	for {
		select {
		case <-p.queued:
		case <-p.stopping:
			return
		}
		p.qmu.Lock()
		batch, p.queue = p.queue, p.spare[:0]
		p.qmu.Unlock()
		for i := range batch {
			select {
			case p.ch <- batch[i]:
				batch[i] = Message{} // the workers hold it now
			case <-p.stopping:
				return
			}
		}
		p.qmu.Lock()
		if cap(batch) <= 4*cap(p.ch) { // keep a small buffer; let a large backlog's go
			p.spare = batch[:0]
		} else {
			p.spare = nil
		}
		p.qmu.Unlock()
	}
}

// acker sends the acknowledgements handed over by the workers, in order.
func (p *Pipeline) acker() {
	defer close(p.ackDone)
	for batch := range p.acks {
		for _, ack := range batch {
			ack()
		}
	}
}

func (p *Pipeline) work(busy *atomic.Int64) {
	msgs := make([]Message, 0, p.opts.BatchMessages)
	process := func(msgs []Message) {
		busy.Store(time.Now().UnixNano())
		if acks := p.process(msgs, busy); len(acks) > 0 {
			p.acks <- acks
		}
		busy.Store(0)
	}
	for {
		msgs = msgs[:0]
		select {
		case m := <-p.ch:
			p.waiting.Add(-1)
			msgs = append(msgs, m)
		case <-p.stopping:
			// Drain what was already handed over, then exit; once the drain is
			// abandoned (Stop's ctx), the rest stays unacknowledged.
			for p.ctx.Err() == nil {
				msgs = p.fill(msgs[:0])
				if len(msgs) == 0 {
					return
				}
				process(msgs)
			}
			return
		}
		process(p.fill(msgs))
	}
}

// fill adds messages already waiting in the channel, up to the batch size.
func (p *Pipeline) fill(msgs []Message) []Message {
	for len(msgs) < p.opts.BatchMessages {
		select {
		case m := <-p.ch:
			p.waiting.Add(-1)
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}
