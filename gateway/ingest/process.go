package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// msgWork is one message through the pipeline.
type msgWork struct {
	msg     Message
	dpu     string // "" where the map takes it from the payload (or the topic named none)
	events  []occupancy.Event
	reports []occupancy.Report // interval or cumulative (one message has one kind)
	// index is the position in the message of each event or report (-1: a message
	// of one).
	index      []int
	rejections []occupancy.Rejection
	accepted   int // stored for the first time (parked included)
	duplicates int
}

// items is the number of events and reports decoded.
func (w *msgWork) items() int { return len(w.events) + len(w.reports) }

// decode finds the DPU and decodes the payload in its kind and map (routes.go),
// with the receive-time checks.
func (p *Pipeline) decode(m Message) msgWork {
	w := msgWork{msg: m, dpu: m.DPU}
	var entry *entryRoute
	if w.dpu == "" {
		e, dpu, err := p.route(m.Topic)
		if err != nil {
			w.rejections = []occupancy.Rejection{{Reason: occupancy.ReasonBadTopic, Detail: err.Error(), Index: -1}}
			return w
		}
		entry, w.dpu = e, dpu
	}
	lim := occupancy.Limits{
		Now:           m.Received,
		MaxFutureSkew: p.opts.MaxFutureSkew.Milliseconds(),
		MaxPayload:    p.opts.MaxPayload,
	}
	if p.opts.Retention > 0 {
		lim.Oldest = m.Received - p.opts.Retention.Milliseconds()
	}
	if dec := p.routes.Load().decoder(entry, w.dpu); dec != nil {
		d := dec.Decode(w.dpu, m.Payload, lim)
		w.events, w.reports, w.rejections = d.Events, d.Reports, d.Rejections
		w.index = batchIndexes(w.items(), d.Rejections)
		return w
	}
	evs, rejs := occupancy.DecodePayload(w.dpu, m.Payload, lim)
	for j := range evs {
		evs[j].Received = m.Received
	}
	w.events, w.rejections = evs, rejs
	w.index = batchIndexes(len(evs), rejs)
	return w
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

// store hands the events of every message to one tracker.Ingest — so they share a
// group commit — and sorts the results back to their messages. An error means none
// of the events is known to be durable. With busy (the workers), a failing store is tried again
// with backoff until it recovers or the pipeline stops: a message is acknowledged
// only once its events are durable, and an MQTT 3.1.1 broker redelivers an
// unacknowledged message only on reconnect.
// busy, when retrying, is renewed at every answer of the store (BusySince).
func (p *Pipeline) store(ctx context.Context, work []msgWork, busy *atomic.Int64) error {
	var all []occupancy.Event
	var reps []occupancy.Report
	var owner, repOwner []int // message of each event, of each report
	for i := range work {
		all = append(all, work[i].events...)
		for range work[i].events {
			owner = append(owner, i)
		}
		if len(work[i].reports) > 0 {
			reps = append(reps, work[i].reports...)
			for range work[i].reports {
				repOwner = append(repOwner, i)
			}
		}
	}
	if len(all) == 0 && len(reps) == 0 {
		return nil
	}
	var res, repRes []tracker.Result
	var err error
	if busy != nil {
		res, repRes, err = p.ingestRetry(ctx, all, reps, busy)
	} else {
		res, repRes, err = p.ingest(ctx, all, reps)
	}
	if err != nil {
		return err
	}
	p.sortResults(work, res, owner)
	p.sortResults(work, repRes, repOwner)
	return nil
}

// ingest hands events and reports to the tracker: events alone (the hot path) to
// Ingest, with reports to IngestMixed.
func (p *Pipeline) ingest(ctx context.Context, evs []occupancy.Event, reps []occupancy.Report) ([]tracker.Result, []tracker.Result, error) {
	if len(reps) == 0 {
		res, err := p.tr.Ingest(ctx, evs)
		return res, nil, err
	}
	return p.tr.IngestMixed(ctx, evs, reps)
}

// sortResults gives each message the results of its events (or reports): owner[j]
// is the message of result j, and a message's results are in a row, in order.
func (p *Pipeline) sortResults(work []msgWork, res []tracker.Result, owner []int) {
	at := 0
	for j, r := range res {
		w := &work[owner[j]]
		if j > 0 && owner[j] != owner[j-1] {
			at = 0
		}
		switch r.Outcome {
		case tracker.Rejected:
			rj := r.Rejection
			rj.Index = w.index[at]
			w.rejections = append(w.rejections, rj)
		case tracker.Duplicate:
			w.duplicates++
		default:
			w.accepted++
		}
		at++
	}
}

// ingestRetry is tracker.Ingest, retried with backoff while the store fails.
func (p *Pipeline) ingestRetry(ctx context.Context, evs []occupancy.Event, reps []occupancy.Report, busy *atomic.Int64) ([]tracker.Result, []tracker.Result, error) {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		res, repRes, err := p.ingest(ctx, evs, reps)
		if err == nil {
			return res, repRes, nil
		}
		if errors.Is(err, buffer.ErrClosed) || ctx.Err() != nil {
			return nil, nil, err
		}
		busy.Store(time.Now().UnixNano())
		p.retry.Log(func(e *zerolog.Event) *zerolog.Event {
			return e.Err(err).Int("events", len(evs)).Int("reports", len(reps)).Int("attempt", attempt)
		}, "store events failed; retrying (not acknowledged)")
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-p.stopping:
			if attempt >= 3 {
				return nil, nil, err
			}
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// count counts a message's rejected events in the metrics (per reason) and in its
// DPU's statistics, and returns the message for the Rejects (ok false: none).
func (p *Pipeline) count(w *msgWork) (Rejected, bool) {
	if len(w.rejections) == 0 {
		return Rejected{}, false
	}
	reason, n := w.rejections[0].Reason, 0
	for _, r := range w.rejections {
		if r.Reason != reason {
			p.metrics.RejectedN(reason, n)
			reason, n = r.Reason, 0
		}
		n++
		if w.dpu != "" {
			p.tr.CountRejected(w.dpu)
		}
	}
	p.metrics.RejectedN(reason, n)
	return Rejected{Message: w.msg, DPU: w.dpu, Rejections: w.rejections}, true
}

// process takes a batch of queued messages through decode -> tracker.Ingest ->
// rejections recorded, and returns the acknowledgements of the messages whose
// events are durable (or that had none to store).
func (p *Pipeline) process(msgs []Message, busy *atomic.Int64) []func() {
	if p.ctx.Err() != nil {
		return nil // the drain was abandoned: the broker redelivers them
	}
	start := time.Now()
	work := make([]msgWork, len(msgs))
	for i, m := range msgs {
		work[i] = p.decode(m)
		p.metrics.EventsReceived.Add(float64(work[i].items() + len(work[i].rejections)))
	}
	if p.ctx.Err() != nil {
		return nil // abandoned while decoding: stored, recorded and acknowledged nothing
	}
	err := p.store(p.ctx, work, busy)
	if err != nil {
		p.storeErr.Log(func(e *zerolog.Event) *zerolog.Event {
			return e.Err(err).Int("messages", len(work))
		}, "store events failed; not acknowledged, the broker redelivers them")
	}
	acks := make([]func(), 0, len(work))
	var rejected []Rejected
	for i := range work {
		w := &work[i]
		if err != nil && w.items() > 0 {
			continue
		}
		if r, ok := p.count(w); ok {
			rejected = append(rejected, r)
		}
		if w.msg.Ack != nil {
			acks = append(acks, w.msg.Ack)
		}
	}
	// Recorded (dead letters written) before the acknowledgements are handed over.
	p.rejects.Reject(rejected)
	p.metrics.IngestBatch.Observe(time.Since(start).Seconds())
	return acks
}

// Result is what a synchronous Ingest did with one message.
type Result struct {
	Accepted   int // events or reports stored for the first time (parked ones included)
	Duplicates int // events or reports stored already
	// Rejected are the rejected events (Index: the position in a JSON array; -1:
	// the whole message, or its one event), in no particular order.
	Rejected []occupancy.Rejection
}

// Ingest takes one message synchronously, for HTTP push: decoded, stored durably
// and applied, its rejections recorded (m.Topic names the source in the rejected
// topic and the dead letter; set m.DPU, the topic is not parsed); it returns once
// the events are durable — the promise of a PUBACK. An error means nothing may be
// acknowledged (answer 503: the sender retries, and a retry counts once). m.Ack is
// not called.
func (p *Pipeline) Ingest(ctx context.Context, m Message) (Result, error) {
	select {
	case <-p.stopping:
		return Result{}, ErrStopping
	default:
	}
	if m.Received == 0 {
		m.Received = p.Now()
	}
	w := []msgWork{p.decode(m)}
	p.metrics.EventsReceived.Add(float64(w[0].items() + len(w[0].rejections)))
	if err := p.store(ctx, w, nil); err != nil {
		return Result{}, fmt.Errorf("store events: %w", err)
	}
	if r, ok := p.count(&w[0]); ok {
		p.rejects.Reject([]Rejected{r})
	}
	return Result{Accepted: w[0].accepted, Duplicates: w[0].duplicates, Rejected: w[0].rejections}, nil
}

// ErrStopping is Ingest's answer once Stop was called.
var ErrStopping = errors.New("ingest: stopping")
