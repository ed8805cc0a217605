package tracker

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

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

func (t *Tracker) ingest(ctx context.Context, in []occupancy.Event, backfill bool) ([]Result, error) {
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
	for i, e := range in {
		e.Late = false
		if e.TS < h && !backfill {
			if drop {
				res[i] = rejected(occupancy.ReasonLate, fmt.Sprintf("ts %s is before the settled horizon %s",
					payload.FormatMS(e.TS), payload.FormatMS(h)))
				continue
			}
			e.Late = true
		}
		p := !t.eng.Mappable(e.DPU, e.TS)
		if p {
			if t.maxParked > 0 && int64(t.store.ParkedCount())+t.parkedInFlight.Load() >= int64(t.maxParked) {
				res[i] = parkedFull(e.DPU, t.maxParked)
				continue
			}
			inFlight++
			t.parkedInFlight.Add(1) // under mu: other callers see it at once
		}
		evs = append(evs, e)
		at = append(at, i)
		parked = append(parked, p)
	}
	t.mu.Unlock()
	defer t.parkedInFlight.Add(-inFlight)
	if len(evs) == 0 {
		return res, nil
	}

	stored, err := t.store.Append(ctx, evs, parked)
	if err == nil && len(stored) != len(evs) {
		err = fmt.Errorf("the store returned %d results for %d events", len(stored), len(evs))
	}
	if err != nil {
		return nil, fmt.Errorf("store events: %w", err)
	}

	fresh := make([]occupancy.Event, 0, len(evs)) // to apply
	accepted := make([]occupancy.Event, 0, len(evs))
	dups := 0
	for j, r := range stored {
		i, e := at[j], evs[j]
		switch {
		case r.Rejected:
			// The store enforces storage.max_parked too: nothing was written for it.
			res[i] = parkedFull(e.DPU, t.maxParked)
		case r.Duplicate:
			res[i].Outcome = Duplicate
			dups++
			if !backfill {
				t.stats.Duplicate(e.DPU)
			}
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
				if !backfill {
					t.stats.Parked(e.DPU)
				}
			}
			accepted = append(accepted, e)
			// Backfill: events before the horizon reach the engine through Rewind;
			// applying them here would only make corrections Rewind throws away.
			if !backfill || e.TS >= h {
				fresh = append(fresh, e)
			}
		}
	}
	if !backfill {
		t.stats.AcceptedBatch(accepted)
		t.metrics.EventsDuplicate.Add(float64(dups))
		t.metrics.EventsAccepted.Add(float64(len(accepted)))
	}
	if len(fresh) == 0 {
		return res, nil
	}
	t.mu.Lock()
	ar, err := t.eng.Apply(fresh, t.nowMS())
	t.changedLocked()
	t.mu.Unlock()
	t.topoMu.RUnlock()
	topoHeld = false
	if err != nil {
		// The events are stored: a restart replays them. They may be acknowledged.
		t.applyErr.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(err).Int("events", len(fresh)) },
			"engine apply failed (events are stored)")
		return res, nil
	}
	if backfill {
		return res, nil
	}
	t.metrics.EventsLate.Add(float64(ar.Late))
	// Every event stored late carries a late mark until the commit of its
	// correction, and the engine corrects for the marked ones again at start, so
	// the append alone makes it safe to acknowledge them. An event the engine found
	// late that was not marked (the horizon passed it between the check above and
	// Apply) has no mark: its correction is committed before Ingest returns.
	marked := 0
	for _, e := range fresh {
		if e.Late {
			marked++
		}
	}
	if ar.Late > marked {
		if _, err := t.Tick(); err != nil {
			return nil, err
		}
	}
	return res, nil
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
