package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// inMsg is one MQTT message handed from the paho handler to the ingest workers.
type inMsg struct {
	topic    string
	payload  []byte
	ack      func()
	received int64 // Unix ms
}

// ingester owns the bounded hand-off channel and the worker goroutines. paho's
// handlers only push into the channel; the workers decode, store (group commit),
// acknowledge and apply.
type ingester struct {
	g       *Gateway
	ch      chan inMsg
	workers int
	batch   int

	stopping chan struct{}
	stopOnce sync.Once
	ackOnce  sync.Once
	wg       sync.WaitGroup
	ctx      context.Context // cancelled when a drain must be abandoned
	cancel   context.CancelFunc

	parkedInFlight atomic.Int64
	waiting        atomic.Int64 // submitted, not yet taken by a worker (backlog)
	// busy[i] is when worker i began the batch it is processing, or last heard back
	// from the store while retrying it (Unix ns; 0: idle), for the watchdog
	// (Gateway.IngestBusySince): a store that answers with errors is not a hang.
	busy []atomic.Int64

	// Messages paho delivered and the workers have not taken yet (see submit); the
	// pump moves them into ch.
	qmu    sync.Mutex
	queue  []inMsg
	spare  []inMsg
	queued chan struct{} // capacity 1: signalled when queue becomes non-empty

	// acks are sent by one goroutine: paho serialises them anyway, and a worker
	// goes on with the engine and its next batch meanwhile.
	acks    chan []func()
	ackDone chan struct{}
}

func newIngester(g *Gateway, workers, batch int) *ingester {
	ctx, cancel := context.WithCancel(context.Background())
	return &ingester{
		g:        g,
		ch:       make(chan inMsg, workers*batch),
		workers:  workers,
		batch:    batch,
		stopping: make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		acks:     make(chan []func(), workers*4),
		ackDone:  make(chan struct{}),
		queued:   make(chan struct{}, 1),
		busy:     make([]atomic.Int64, workers),
	}
}

// acker sends the acknowledgements handed over by the workers, in order.
func (in *ingester) acker() {
	defer close(in.ackDone)
	for batch := range in.acks {
		for _, ack := range batch {
			ack()
		}
	}
}

func (in *ingester) start() {
	go in.acker()
	go in.pump()
	for i := 0; i < in.workers; i++ {
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			in.work(&in.busy[i])
		}()
	}
}

// submit hands one message to the workers without blocking. paho runs each handler
// in its own goroutine (SetOrderMatters(false), so a handler never blocks the
// client's loop), and the broker does not hold back what the gateway has not
// acknowledged: Mosquitto 2.0 kept sending past max_inflight_messages 1000 once a
// client's queue had filled and began to drain (31,585 unacknowledged at once in a
// test). A handler that waited for the workers therefore left one parked goroutine
// per message of the backlog: 104,000 of them, 164-236 MB of stacks, at the end of
// a 100,000-DPU run at 20,000 events/s. The message is queued instead (about 56
// bytes beside what paho holds for it) and the handler returns. After stop it
// returns false and the message stays unacknowledged: the broker redelivers it to
// the persistent session.
func (in *ingester) submit(m inMsg) bool {
	select {
	case <-in.stopping:
		return false
	default:
	}
	in.waiting.Add(1)
	in.qmu.Lock()
	in.queue = append(in.queue, m)
	in.qmu.Unlock()
	select {
	case in.queued <- struct{}{}:
	default: // already signalled
	}
	return true
}

// busySince is when the oldest batch a worker is still processing began (zero when
// every worker is idle).
func (in *ingester) busySince() time.Time {
	var oldest int64
	for i := range in.busy {
		if t := in.busy[i].Load(); t != 0 && (oldest == 0 || t < oldest) {
			oldest = t
		}
	}
	if oldest == 0 {
		return time.Time{}
	}
	return time.Unix(0, oldest)
}

// backlog is the number of messages submitted that no worker has taken yet.
func (in *ingester) backlog() int { return int(in.waiting.Load()) }

// pump moves queued messages into the workers' channel, oldest first, until stop.
// Messages still queued at stop are never acknowledged (see submit).
func (in *ingester) pump() {
	var batch []inMsg
	for {
		select {
		case <-in.queued:
		case <-in.stopping:
			return
		}
		in.qmu.Lock()
		batch, in.queue = in.queue, in.spare[:0]
		in.qmu.Unlock()
		for i := range batch {
			select {
			case in.ch <- batch[i]:
				batch[i] = inMsg{} // the workers hold it now
			case <-in.stopping:
				return
			}
		}
		in.qmu.Lock()
		if cap(batch) <= 4*cap(in.ch) { // keep a small buffer; let a large backlog's go
			in.spare = batch[:0]
		} else {
			in.spare = nil
		}
		in.qmu.Unlock()
	}
}

// stop stops intake and waits for the workers to finish what they hold, or for ctx.
func (in *ingester) stop(ctx context.Context) {
	in.stopOnce.Do(func() { close(in.stopping) })
	done := make(chan struct{})
	go func() {
		in.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		in.cancel() // abandon appends in flight: they are not acknowledged
		<-done
	}
	// The workers are done: send the acknowledgements they handed over.
	in.ackOnce.Do(func() { close(in.acks) })
	select {
	case <-in.ackDone:
	case <-ctx.Done():
	}
}

func (in *ingester) work(busy *atomic.Int64) {
	msgs := make([]inMsg, 0, in.batch)
	process := func(msgs []inMsg) {
		busy.Store(time.Now().UnixNano())
		in.process(msgs, busy)
		busy.Store(0)
	}
	for {
		msgs = msgs[:0]
		select {
		case m := <-in.ch:
			in.waiting.Add(-1)
			msgs = append(msgs, m)
		case <-in.stopping:
			// Drain what was already handed over, then exit.
			for {
				msgs = in.fill(msgs[:0])
				if len(msgs) == 0 {
					return
				}
				process(msgs)
			}
		}
		process(in.fill(msgs))
	}
}

// fill adds messages already waiting in the channel, up to the batch size.
func (in *ingester) fill(msgs []inMsg) []inMsg {
	for len(msgs) < in.batch {
		select {
		case m := <-in.ch:
			in.waiting.Add(-1)
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

// msgWork is the state of one message through process.
type msgWork struct {
	msg        inMsg
	dpu        string
	events     []occupancy.Event
	parked     []bool
	index      []int // position of each event in the message's batch (-1: single)
	rejections []occupancy.Rejection
}

// batchIndexes gives each decoded event its position in the message: the positions
// not taken by the decoder's rejections, in order; -1 for a message of one element.
func batchIndexes(nEvents int, rejs []occupancy.Rejection) []int {
	idx := make([]int, 0, nEvents)
	if nEvents+len(rejs) <= 1 {
		return append(idx, -1)[:nEvents]
	}
	taken := map[int]bool{}
	for _, r := range rejs {
		taken[r.Index] = true
	}
	for p := 0; len(idx) < nEvents; p++ {
		if !taken[p] {
			idx = append(idx, p)
		}
	}
	return idx
}

// process takes a batch of messages through decode -> checks -> buffer.Append ->
// ack -> engine.Apply.
func (in *ingester) process(msgs []inMsg, busy *atomic.Int64) {
	g := in.g
	cfg := g.Config()
	start := time.Now()

	work := make([]msgWork, len(msgs))
	nEvents := 0
	for i, m := range msgs {
		w := &work[i]
		w.msg = m
		dpu, err := dpuFromTopic(g.names.filters, m.topic)
		if err != nil {
			w.rejections = []occupancy.Rejection{{Reason: occupancy.ReasonBadTopic, Detail: err.Error(), Index: -1}}
			continue
		}
		w.dpu = dpu
		lim := occupancy.Limits{
			Now:           m.received,
			MaxFutureSkew: cfg.Engine.MaxFutureSkew.Milliseconds(),
			MaxPayload:    cfg.MQTT.MaxPayload,
		}
		if cfg.Storage.Retention > 0 {
			lim.Oldest = m.received - cfg.Storage.Retention.Milliseconds()
		}
		evs, rejs := occupancy.DecodePayload(dpu, m.payload, lim)
		for j := range evs {
			evs[j].Received = m.received
		}
		w.events, w.rejections = evs, rejs
		w.index = batchIndexes(len(evs), rejs)
		nEvents += len(evs)
	}

	// Hold the topology steady from the Mappable check until the engine has the
	// events, so the parked flag stored with each event matches the engine.
	g.topoMu.RLock()
	defer g.topoMu.RUnlock()

	drop := cfg.Engine.LateEvents == "drop"
	maxParked := cfg.Storage.MaxParked
	var batchParked int64
	g.mu.Lock()
	horizon := g.eng.Horizon()
	for i := range work {
		w := &work[i]
		kept := w.events[:0]
		keptIdx := w.index[:0]
		for j, e := range w.events {
			if e.TS < horizon {
				if drop {
					w.rejections = append(w.rejections, occupancy.Rejection{
						Reason: occupancy.ReasonLate,
						Detail: fmt.Sprintf("ts %s is before the settled horizon %s", formatMS(e.TS), formatMS(horizon)),
						Index:  w.index[j],
					})
					continue
				}
				e.Late = true
			}
			parked := !g.eng.Mappable(e.DPU, e.TS)
			if parked {
				if maxParked > 0 && int64(g.store.ParkedCount())+in.parkedInFlight.Load() >= int64(maxParked) {
					w.rejections = append(w.rejections, parkedFull(e.DPU, maxParked, w.index[j]))
					continue
				}
				batchParked++
				in.parkedInFlight.Add(1) // under g.mu: other workers see it at once
			}
			kept = append(kept, e)
			keptIdx = append(keptIdx, w.index[j])
			w.parked = append(w.parked, parked)
		}
		w.events, w.index = kept, keptIdx
	}
	g.mu.Unlock()
	defer in.parkedInFlight.Add(-batchParked)

	// One Append for the whole batch: the buffer group-commits it with the batches of
	// the other workers.
	var all []occupancy.Event
	var allParked []bool
	var owner, at []int // message index of each event, and its position among that message's events
	for i := range work {
		all = append(all, work[i].events...)
		allParked = append(allParked, work[i].parked...)
		for j := range work[i].events {
			owner = append(owner, i)
			at = append(at, j)
		}
	}
	var results []buffer.AppendResult
	var storeErr error
	if len(all) > 0 {
		results, storeErr = in.appendRetry(all, allParked, busy)
	}
	if storeErr != nil {
		g.log.Error().Err(storeErr).Int("events", len(all)).
			Msg("store events failed; not acknowledged, the broker redelivers them")
	}
	counted := make([]int, len(work)) // events per message before buffer-side rejections
	for i := range work {
		counted[i] = len(work[i].events)
	}
	if storeErr == nil {
		// The buffer enforces storage.max_parked too: an event it refused to park is
		// rejected as unknown_dpu (nothing was written for it).
		for i, r := range results {
			if r.Rejected {
				w := &work[owner[i]]
				w.rejections = append(w.rejections, parkedFull(all[i].DPU, maxParked, w.index[at[i]]))
				counted[owner[i]]--
			}
		}
	}

	// Acknowledge: a message whose events are durable (or that had none to store),
	// after its rejections are recorded.
	acks := make([]func(), 0, len(work))
	for i := range work {
		w := &work[i]
		g.metrics.EventsReceived.Add(float64(counted[i] + len(w.rejections)))
		if storeErr != nil && len(w.events) > 0 {
			continue
		}
		for _, r := range w.rejections {
			g.reject(w.msg, w.dpu, r)
		}
		acks = append(acks, w.msg.ack)
	}
	// The acknowledgements go out after the engine has the events: a late event's
	// correction lives only in the engine until a tick commits it (a rebuild replays
	// stored events from the checkpoint's horizon on, never those before it), so a
	// batch with late events is committed before its messages are acknowledged.
	defer func() {
		if len(acks) > 0 {
			in.acks <- acks
		}
		g.metrics.IngestBatch.Observe(time.Since(start).Seconds())
	}()
	if storeErr != nil || len(all) == 0 {
		return
	}

	// Apply the events that were new.
	fresh := make([]occupancy.Event, 0, len(all))
	accepted := make([]occupancy.Event, 0, len(all)) // stored for the first time
	dups := 0
	for i, e := range all {
		if results[i].Rejected {
			continue
		}
		if results[i].Duplicate {
			dups++
			g.stats.Duplicate(e.DPU)
			// A late duplicate may have been stored by a process that died before its
			// correction was committed (the broker redelivers what was not
			// acknowledged), and a rebuild does not replay events before the
			// horizon. Applying a late event is idempotent (its correction is a
			// replay of the stored events), so it is applied again.
			if e.Late && !allParked[i] {
				fresh = append(fresh, e)
			}
			continue
		}
		fresh = append(fresh, e)
		accepted = append(accepted, e)
		if allParked[i] {
			g.stats.Parked(e.DPU)
		}
	}
	g.stats.AcceptedBatch(accepted)
	g.metrics.EventsDuplicate.Add(float64(dups))
	g.metrics.EventsAccepted.Add(float64(len(accepted)))
	if len(fresh) == 0 {
		return
	}
	g.mu.Lock()
	res, err := g.eng.Apply(fresh, g.nowMS())
	g.mu.Unlock()
	if err != nil {
		g.log.Error().Err(err).Int("events", len(fresh)).Msg("engine apply failed (events are stored)")
		return
	}
	g.metrics.EventsLate.Add(float64(res.Late))
	if res.Late > 0 {
		g.TickNow()
	}
}

// parkedFull rejects, as unknown_dpu, an event of a DPU no topology version maps
// while storage.max_parked events are parked.
func parkedFull(dpu string, maxParked, index int) occupancy.Rejection {
	return occupancy.Rejection{
		Reason: occupancy.ReasonUnknownDPU,
		Detail: fmt.Sprintf("DPU %q is in no topology version and storage.max_parked (%d) is reached", dpu, maxParked),
		Index:  index,
	}
}

// appendRetry appends with retries: a message is acknowledged only once its events
// are durable, and an MQTT 3.1.1 broker redelivers an unacknowledged message only on
// reconnect, so a transient store error (disk full, I/O) is retried with backoff
// until it clears or the gateway stops. Each answer from the store renews busy.
func (in *ingester) appendRetry(evs []occupancy.Event, parked []bool, busy *atomic.Int64) ([]buffer.AppendResult, error) {
	g := in.g
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		res, err := g.store.Append(in.ctx, evs, parked)
		if err == nil && len(res) != len(evs) {
			err = fmt.Errorf("buffer returned %d results for %d events", len(res), len(evs))
		}
		if err == nil {
			return res, nil
		}
		if errors.Is(err, buffer.ErrClosed) || in.ctx.Err() != nil {
			return nil, err
		}
		busy.Store(time.Now().UnixNano())
		g.rej.log(func(e *zerolog.Event) *zerolog.Event {
			return e.Err(err).Int("events", len(evs)).Int("attempt", attempt)
		}, "store events failed; retrying (not acknowledged)")
		select {
		case <-in.ctx.Done():
			return nil, err
		case <-in.stopping:
			if attempt >= 3 {
				return nil, err
			}
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// reject records one rejection: published on the rejected topic (QoS 0), kept as a
// dead letter, counted, and logged at a bounded rate.
func (g *Gateway) reject(m inMsg, dpu string, r occupancy.Rejection) {
	g.metrics.Rejected(r.Reason)
	if dpu != "" {
		g.stats.Rejected(dpu)
	}
	if g.mqtt != nil {
		payload := RejectionJSON(m.topic, r, m.payload)
		g.mqtt.publish(g.names.rejectedTopic, 0, false, payload)
	}
	dl := buffer.DeadLetter{
		Time:    m.received,
		Topic:   m.topic,
		Reason:  string(r.Reason),
		Detail:  r.Detail,
		Payload: cut(m.payload, maxDeadLetterPayload),
	}
	if err := g.store.PutDeadLetter(dl); err != nil {
		g.log.Warn().Err(err).Msg("store dead letter")
	}
	g.rej.log(func(e *zerolog.Event) *zerolog.Event {
		return e.Str("topic", m.topic).Str("reason", string(r.Reason)).Str("detail", r.Detail)
	}, "rejected input")
}

const (
	maxRejectedPayload   = 1024
	maxDeadLetterPayload = 64 * 1024
)

func cut(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}

// rejectionJSON is the payload on the rejected topic (DESIGN 2).
type rejectionJSON struct {
	Topic   string `json:"topic"`
	Reason  string `json:"reason"`
	Payload string `json:"payload"`
	Detail  string `json:"detail,omitempty"`
	Index   *int   `json:"index,omitempty"`
}

// RejectionJSON renders `{"topic","reason","payload"}` (plus "detail" and, for a batch
// element, "index"); payload is the message cut to 1 KiB, as a JSON string.
func RejectionJSON(topic string, r occupancy.Rejection, payload []byte) []byte {
	v := rejectionJSON{
		Topic:   topic,
		Reason:  string(r.Reason),
		Payload: strings.ToValidUTF8(string(cut(payload, maxRejectedPayload)), "\uFFFD"),
		Detail:  r.Detail,
	}
	if r.Index >= 0 {
		idx := r.Index
		v.Index = &idx
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen with strings only
		return []byte(`{"topic":"","reason":"` + string(r.Reason) + `","payload":""}`)
	}
	return b
}

// ---- topics ----

// dpuSegment checks filter (config.CheckEventsFilter) and returns the index of its last `+`
// level, the DPU id's level.
func dpuSegment(filter string) (int, error) {
	if err := config.CheckEventsFilter(filter); err != nil {
		return 0, err
	}
	levels := strings.Split(filter, "/")
	i := len(levels) - 1
	for levels[i] != "+" { // config.CheckEventsFilter found one
		i--
	}
	return i, nil
}

// matchTopic reports whether topic matches filter and returns the level matched by
// the filter's last `+`.
func matchTopic(filter, topic string) (string, bool) {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	last := -1
	for i, l := range fl {
		if l == "+" {
			last = i
		}
	}
	for i, l := range fl {
		if l == "#" {
			if last < 0 || last >= len(tl) {
				return "", false
			}
			return tl[last], true
		}
		if i >= len(tl) {
			return "", false
		}
		if l != "+" && l != tl[i] {
			return "", false
		}
	}
	if len(fl) != len(tl) || last < 0 {
		return "", false
	}
	return tl[last], true
}

var errNoFilter = errors.New("topic matches no mqtt.events_topic filter")

// dpuFromTopic finds the first filter matching topic and returns the DPU id (the
// level matched by its last `+`), which must be a valid id.
func dpuFromTopic(filters []string, topic string) (string, error) {
	for _, f := range filters {
		if dpu, ok := matchTopic(f, topic); ok {
			if !occupancy.ValidID(dpu) {
				return "", fmt.Errorf("DPU id %q in topic %q is not [A-Za-z0-9_-]{1,64}", dpu, topic)
			}
			return dpu, nil
		}
	}
	return "", fmt.Errorf("%w: %q", errNoFilter, topic)
}

// ---- bounded-rate logging ----

// rateLog logs at most one line per interval; lines in between are counted and the
// count is reported with the next line.
type rateLog struct {
	l          zerolog.Logger
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newRateLog(l zerolog.Logger, every time.Duration) *rateLog {
	return &rateLog{l: l, every: every}
}

func (r *rateLog) log(fields func(*zerolog.Event) *zerolog.Event, msg string) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.last = now
	r.mu.Unlock()
	e := fields(r.l.Warn())
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	e.Msg(msg)
}

// flush reports lines suppressed since the last one.
func (r *rateLog) flush() {
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.l.Warn().Int("suppressed", n).Msg("rejected input (suppressed lines)")
	}
}
