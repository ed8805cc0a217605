package tracker

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Outcome is what Ingest did with one event.
type Outcome uint8

const (
	// Accepted: stored for the first time and applied.
	Accepted Outcome = iota + 1
	// Parked: stored for the first time; no topology version maps its DPU yet, so it
	// waits (durably) for one that does.
	Parked
	// Duplicate: stored already (a redelivery or a re-sent event); counted once.
	Duplicate
	// Rejected: not stored; Result.Rejection says why (late under late_events: drop,
	// unknown_dpu past storage.max_parked).
	Rejected
)

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Parked:
		return "parked"
	case Duplicate:
		return "duplicate"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result is the outcome of one event. A Rejection's Index is -1: the caller knows
// where the event was in its message.
type Result struct {
	Outcome   Outcome
	Rejection occupancy.Rejection
}

// Stored reports whether the event is in the store (accepted, parked or a duplicate).
func (r Result) Stored() bool { return r.Outcome != Rejected }

// Ingest stores events durably (one buffer.Append: concurrent callers share group
// commits), then applies the new ones, and returns one Result per event. An error
// means nothing may be acknowledged: the store did not confirm the write (the
// caller retries, or lets the sender redeliver). Events before the settled horizon
// are late: rejected under late_events drop, else stored with a late mark and
// applied as a correction, which the next tick commits. An event of a DPU no topology version maps
// is parked, or rejected as unknown_dpu once storage.max_parked are parked.
func (t *Tracker) Ingest(ctx context.Context, evs []occupancy.Event) ([]Result, error) {
	return t.ingest(ctx, evs, false)
}

// Backfill is Ingest for import: events before the horizon are stored as they are
// (not marked late, never dropped) and not applied — Rewind, run after the last
// Backfill, replays them with everything stored; events at or after the horizon
// are applied. Nothing is counted in the per-DPU statistics or the metrics.
func (t *Tracker) Backfill(ctx context.Context, evs []occupancy.Event) ([]Result, error) {
	return t.ingest(ctx, evs, true)
}

// IngestMixed is Ingest for a batch of events and interval or cumulative reports
// (DESIGN 2a): all are stored in one group commit (buffer.AppendMixed), then the new
// ones applied; it returns one Result per event and one per report, in order. A
// report has an event's outcomes and may also be rejected as overlap (an interval
// report whose range overlaps a different stored report of its DPU). Without
// reports it is Ingest.
func (t *Tracker) IngestMixed(ctx context.Context, evs []occupancy.Event, reps []occupancy.Report) ([]Result, []Result, error) {
	if len(reps) == 0 {
		res, err := t.ingest(ctx, evs, false)
		return res, nil, err
	}
	return t.ingestMixed(ctx, evs, reps, false)
}

// BackfillMixed is Backfill for a batch of events and interval or cumulative
// reports (import of archived report lines): one Result per event and one per
// report, as IngestMixed; reports before the horizon are stored, not applied, and
// reach the engine through Rewind.
func (t *Tracker) BackfillMixed(ctx context.Context, evs []occupancy.Event, reps []occupancy.Report) ([]Result, []Result, error) {
	return t.ingestMixed(ctx, evs, reps, true)
}

func (t *Tracker) ingest(ctx context.Context, in []occupancy.Event, backfill bool) ([]Result, error) {
	res, _, err := t.ingestMixed(ctx, in, nil, backfill)
	return res, err
}

// ingestMixed stores and applies events and reports. The events alone (the hot
// path) cost what they did before reports: every step for reports is skipped when
// there are none.
func (t *Tracker) ingestMixed(ctx context.Context, in []occupancy.Event, inReps []occupancy.Report, backfill bool) ([]Result, []Result, error) {
	res := make([]Result, len(in))
	evs := make([]occupancy.Event, 0, len(in)) // what goes to the store
	at := make([]int, 0, len(in))              // position of each in `in`
	parked := make([]bool, 0, len(in))

	// Hold the topology steady from the Mappable check until the engine has the
	// events, so the parked flag stored with each event matches the engine.
	t.topoMu.RLock()
	topoHeld := true
	defer func() {
		if topoHeld {
			t.topoMu.RUnlock()
		}
	}()
	var inFlight int64
	t.mu.Lock()
	h := t.eng.Horizon()
	drop := !backfill && t.eng.LatePolicy() == occupancy.LateDrop
	// check decides for one input at ts of dpu: rejected (late under drop, or past
	// storage.max_parked), or stored late and/or parked.
	check := func(dpu string, ts int64) (r Result, late, park, ok bool) {
		if ts < h && !backfill {
			if drop {
				return rejected(occupancy.ReasonLate, fmt.Sprintf("ts %s is before the settled horizon %s",
					payload.FormatMS(ts), payload.FormatMS(h))), false, false, false
			}
			late = true
		}
		if park = !t.eng.Mappable(dpu, ts); park {
			if t.maxParked > 0 && int64(t.store.ParkedCount())+t.parkedInFlight.Load() >= int64(t.maxParked) {
				return parkedFull(dpu, t.maxParked), false, false, false
			}
			inFlight++
			t.parkedInFlight.Add(1) // under mu: other callers see it at once
		}
		return Result{}, late, park, true
	}
	for i, e := range in {
		r, late, p, ok := check(e.DPU, e.TS)
		if !ok {
			res[i] = r
			continue
		}
		e.Late = late
		evs = append(evs, e)
		at = append(at, i)
		parked = append(parked, p)
	}
	var rb *reportBatch
	if len(inReps) > 0 {
		rb = newReportBatch(inReps)
		for i, r := range inReps {
			rej, late, p, ok := check(r.DPU, r.TS)
			if !ok {
				rb.res[i] = rej
				continue
			}
			rb.add(i, late, p)
		}
	}
	t.mu.Unlock()
	defer t.parkedInFlight.Add(-inFlight)
	if len(evs) == 0 && (rb == nil || len(rb.reps) == 0) {
		return res, rb.results(), nil
	}

	var stored []buffer.AppendResult
	var err error
	if rb == nil {
		stored, err = t.store.Append(ctx, evs, parked)
	} else {
		stored, rb.stored, err = t.store.AppendMixed(ctx, evs, parked, rb.reps, rb.parked)
		if err == nil && len(rb.stored) != len(rb.reps) {
			err = fmt.Errorf("the store returned %d results for %d reports", len(rb.stored), len(rb.reps))
		}
	}
	if err == nil && len(stored) != len(evs) {
		err = fmt.Errorf("the store returned %d results for %d events", len(stored), len(evs))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("store events: %w", err)
	}

	fresh := make([]occupancy.Event, 0, len(evs)) // to apply
	accepted := make([]occupancy.Event, 0, len(evs))
	var dupDPUs, parkedDPUs []string // per event, for the statistics
	for j, r := range stored {
		i, e := at[j], evs[j]
		switch {
		case r.Rejected:
			// The store enforces storage.max_parked too: nothing was written for it.
			res[i] = parkedFull(e.DPU, t.maxParked)
		case r.Duplicate:
			res[i].Outcome = Duplicate
			dupDPUs = append(dupDPUs, e.DPU)
			// A duplicate may never have reached the engine: stored by a call whose
			// append reported an error after writing (the sender was not
			// acknowledged and sends it again), or by a process that died before
			// applying it or committing its correction (a rebuild replays only the
			// events after the horizon). Applying it again is idempotent — a pending
			// event equal to one in the timeline is dropped, a late one's
			// correction is a replay of the stored events — so every duplicate that
			// is not parked is applied, and one the engine lacks counts now
			// (Backfill: as for new events, Rewind takes those before the horizon).
			if !parked[j] && (!backfill || e.TS >= h) {
				fresh = append(fresh, e)
			}
		default:
			res[i].Outcome = Accepted
			if parked[j] {
				res[i].Outcome = Parked
				parkedDPUs = append(parkedDPUs, e.DPU)
			}
			accepted = append(accepted, e)
			// Backfill: events before the horizon reach the engine through Rewind;
			// applying them here would only make corrections Rewind throws away.
			if !backfill || e.TS >= h {
				fresh = append(fresh, e)
			}
		}
	}
	if rb != nil {
		rb.sort(t, h, backfill)
		dupDPUs = append(dupDPUs, rb.dupDPUs...)
		parkedDPUs = append(parkedDPUs, rb.parkedDPUs...)
		accepted = append(accepted, rb.accepted...)
	}
	if !backfill {
		t.stats.Ingested(accepted, parkedDPUs, dupDPUs, t.nowMS())
		t.metrics.EventsDuplicate.Add(float64(len(dupDPUs)))
		t.metrics.EventsAccepted.Add(float64(len(accepted)))
	}
	if len(fresh) == 0 && (rb == nil || len(rb.fresh) == 0) {
		return res, rb.results(), nil
	}
	var ar, rr occupancy.ApplyResult
	var rerr error
	t.mu.Lock()
	if len(fresh) > 0 {
		ar, err = t.eng.Apply(fresh, t.nowMS())
	}
	if rb != nil && len(rb.fresh) > 0 {
		rr, rerr = t.eng.ApplyReports(rb.fresh, t.nowMS())
	}
	t.changedLocked()
	t.mu.Unlock()
	t.topoMu.RUnlock()
	topoHeld = false
	if err = errors.Join(err, rerr); err != nil {
		// The events are stored: a restart replays them. They may be acknowledged.
		t.applyErr.Log(func(e *zerolog.Event) *zerolog.Event {
			return e.Err(err).Int("events", len(fresh)).Int("reports", rb.freshCount())
		}, "engine apply failed (events are stored)")
		return res, rb.results(), nil
	}
	if backfill {
		return res, rb.results(), nil
	}
	t.metrics.EventsLate.Add(float64(ar.Late + rr.Late))
	// Every event stored late carries a late mark until the commit of its
	// correction, and the engine corrects for the marked ones again at start, so
	// the append alone makes it safe to acknowledge them. An event the engine found
	// late that was not marked (the horizon passed it between the check above and
	// Apply) has no mark: its correction is committed before Ingest returns. The
	// same holds for reports.
	marked := 0
	for _, e := range fresh {
		if e.Late {
			marked++
		}
	}
	if rb != nil {
		for _, r := range rb.fresh {
			if r.Late {
				marked++
			}
		}
	}
	if ar.Late+rr.Late > marked {
		if _, err := t.Tick(); err != nil {
			return nil, nil, err
		}
	}
	return res, rb.results(), nil
}

// reportBatch is the reports of one ingestMixed on their way: those to store (with
// their positions in the input and parked flags), the store's answers, and what
// is applied.
type reportBatch struct {
	in     []occupancy.Report
	res    []Result
	reps   []occupancy.Report // to store
	at     []int              // position of each in `in`
	parked []bool
	stored []buffer.ReportResult

	fresh    []occupancy.Report // to apply
	accepted []occupancy.Event  // for the per-DPU statistics: DPU, TS, Received
	// The DPUs of the duplicates and of the parked reports (one entry per report),
	// for the per-DPU statistics.
	dupDPUs, parkedDPUs []string
}

func newReportBatch(in []occupancy.Report) *reportBatch {
	return &reportBatch{in: in, res: make([]Result, len(in))}
}

func (b *reportBatch) add(i int, late, parked bool) {
	r := b.in[i]
	r.Late = late
	b.reps = append(b.reps, r)
	b.at = append(b.at, i)
	b.parked = append(b.parked, parked)
}

// results are the reports' results (nil without reports).
func (b *reportBatch) results() []Result {
	if b == nil {
		return nil
	}
	return b.res
}

func (b *reportBatch) freshCount() int {
	if b == nil {
		return 0
	}
	return len(b.fresh)
}

// sort turns the store's answers into results, as ingestMixed does for events, and
// counts counter resets.
func (b *reportBatch) sort(t *Tracker, h int64, backfill bool) {
	resets := 0
	for j, sr := range b.stored {
		i, r := b.at[j], b.reps[j]
		if rej, ok := sr.Rejection(r, t.maxParked, -1); ok {
			b.res[i] = Result{Outcome: Rejected, Rejection: rej}
			continue
		}
		if sr.Duplicate {
			b.res[i].Outcome = Duplicate
			b.dupDPUs = append(b.dupDPUs, r.DPU)
			// As a duplicate event: applied again where not parked (idempotent: a
			// pending report replaces its own entries, a late one's correction is a
			// replay of the stored reports), so one stored by an append that then
			// failed counts now.
			if !b.parked[j] && (!backfill || r.TS >= h) {
				b.fresh = append(b.fresh, r)
			}
			continue
		}
		resets += sr.CounterResets
		if sr.CounterResets > 0 && !backfill {
			// Per DPU too (GET /v1/dpus counter_resets); the store's own totals
			// ('R', counted with this append) continue them at the next start.
			t.stats.CounterResets(r.DPU, int64(sr.CounterResets))
		}
		b.res[i].Outcome = Accepted
		if b.parked[j] {
			b.res[i].Outcome = Parked
			b.parkedDPUs = append(b.parkedDPUs, r.DPU)
		}
		b.accepted = append(b.accepted, occupancy.Event{DPU: r.DPU, TS: r.TS, Received: r.Received})
		// Backfill: as for events, those before the horizon reach the engine
		// through Rewind.
		if !backfill || r.TS >= h {
			b.fresh = append(b.fresh, r)
		}
	}
	if resets > 0 && !backfill {
		t.metrics.CounterResets.Add(float64(resets))
	}
}

func rejected(reason occupancy.Reason, detail string) Result {
	return Result{Outcome: Rejected, Rejection: occupancy.Rejection{Reason: reason, Detail: detail, Index: -1}}
}

// parkedFull rejects, as unknown_dpu, an event of a DPU no topology version maps
// while storage.max_parked events are parked.
func parkedFull(dpu string, maxParked int) Result {
	return rejected(occupancy.ReasonUnknownDPU,
		fmt.Sprintf("DPU %q is in no topology version and storage.max_parked (%d) is reached", dpu, maxParked))
}

// CountRejected counts an event (or message) of dpu rejected before it reached the
// tracker (bad payload, too large, ...) in the per-DPU statistics.
func (t *Tracker) CountRejected(dpu string) { t.stats.Rejected(dpu) }
