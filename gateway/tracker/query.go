package tracker

import (
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Spaces returns every space's current occupancy, in topology order.
func (t *Tracker) Spaces() []occupancy.Occupancy {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eng.Spaces()
}

// Space returns one space's current occupancy.
func (t *Tracker) Space(id string) (occupancy.Occupancy, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eng.Current(id)
}

// At returns the occupancy of space id at instant ts (Unix ms). A settled instant is
// read from the store without holding the engine (see the package comment).
func (t *Tracker) At(id string, ts int64) (int64, error) {
	t.rewriteMu.RLock()
	defer t.rewriteMu.RUnlock()
	t.mu.Lock()
	q, err := t.eng.PrepareAt(id, ts)
	t.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return q.Run(t.store)
}

// Counts returns the calendar buckets of interval ms of space id (DESIGN 3
// Queries): in the space's time zone, every bucket that overlaps [start, end) (Unix
// ms) and begins by now (occupancy.CalendarBounds; a query it refuses wraps
// occupancy.ErrBadQuery). The settled rows are read from the store without holding
// the engine, so a long query never stalls ingest or the tick.
func (t *Tracker) Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error) {
	t.rewriteMu.RLock()
	defer t.rewriteMu.RUnlock()
	t.mu.Lock()
	q, err := t.eng.PrepareCalendarCounts(id, start, end, interval, t.nowMS())
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return q.Run(t.store)
}

// Location is the time zone of space id (its own or inherited, UTC at the top).
func (t *Tracker) Location(id string) *time.Location {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eng.Location(id)
}

// Horizon is the settled horizon (Unix ms).
func (t *Tracker) Horizon() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.eng.Horizon()
}

// DPUs returns the per-DPU statistics: every DPU of the topology in force (never
// seen ones with zero counters) and every DPU seen, sorted by id.
func (t *Tracker) DPUs() []DPUStat {
	t.mu.Lock()
	dpus := t.eng.Topology().Config().DPUs
	t.mu.Unlock()
	known := make([]string, len(dpus))
	for i, d := range dpus {
		known[i] = d.ID
	}
	return t.stats.Snapshot(known)
}

// DPUsOf returns the statistics of the DPUs ids, in that order (GET /v1/dpus?space=:
// a space's DPUs without a snapshot of all 100,000).
func (t *Tracker) DPUsOf(ids []string) []DPUStat { return t.stats.Of(ids) }
