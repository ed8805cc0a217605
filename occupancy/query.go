package occupancy

import (
	"fmt"
	"time"
)

// Queries, split at the settled horizon.
//
// A query over time reads two parts: the pending entries (ts >= H), which live in
// the engine, and the settled rows (ts < H), which live in the Store. Rows leave the
// engine only once committed (the caller commits every Tick's Settlement before it
// lets go of the engine), and settled rows are never rewritten except by Rewind
// (import). So a query can be prepared under the caller's engine lock —
// PrepareAt/PrepareCounts snapshot H and fold the pending part — and run after the
// lock is released: Run reads the rows before the snapshot's H from the store, which
// later ticks only add to at or after that H. A long history query then never holds
// the engine, and ingest and ticks go on meanwhile. Whoever runs Rewind must keep
// prepared queries from running across it.

// RowReader is the part of Store a query reads: the settled rows.
type RowReader interface {
	RowAt(space string, t int64) (r Row, ok bool, err error)
	Rows(space string, from, to int64, fn func(Row) error) error
}

// AtQuery is an At query prepared under the engine lock; Run answers it.
type AtQuery struct {
	space   string
	t       int64
	value   int64
	settled bool // t < H: the value is read from the store
}

// PrepareAt prepares the occupancy of space at instant t (every entry with ts <= t
// counts). The engine is not touched again: Run may be called without the lock.
func (e *Engine) PrepareAt(space string, t int64) (AtQuery, error) {
	g, ok := e.gidx[space]
	if !ok {
		return AtQuery{}, fmt.Errorf("occupancy at: %q: %w", space, ErrUnknownSpace)
	}
	if t >= e.h {
		return AtQuery{space: space, t: t, value: e.gs[g].pl.valueAt(t, e.opts.ClampNegative)}, nil
	}
	return AtQuery{space: space, t: t, settled: true}, nil
}

// Run answers the query, reading the settled row at t from rows when t is before
// the horizon the query was prepared at.
func (q AtQuery) Run(rows RowReader) (int64, error) {
	if !q.settled {
		return q.value, nil
	}
	r, ok, err := rows.RowAt(q.space, q.t)
	if err != nil {
		return 0, fmt.Errorf("occupancy at: %w", err)
	}
	if !ok {
		return 0, nil
	}
	return r.Occupancy, nil
}

// At returns the occupancy of space at instant t: every entry with ts <= t counts.
func (e *Engine) At(space string, t int64) (int64, error) {
	q, err := e.PrepareAt(space, t)
	if err != nil {
		return 0, err
	}
	return q.Run(e.store)
}

// CountsQuery is a Counts query prepared under the engine lock: the horizon it saw,
// the value carried into the first bucket when that is pending, and the pending
// entries already folded into per-bucket aggregates. Run reads the settled rows and
// merges.
type CountsQuery struct {
	space  string
	bounds []int64 // bucket i is [bounds[i], bounds[i+1])
	h      int64
	carry  AtQuery   // value just before the first bucket
	pend   []pendAgg // pending entries by bucket, in bucket order
}

// pendAgg is what the pending entries of one bucket contribute: the value after the
// last of them, the least and greatest value after any, and their crossings.
type pendAgg struct {
	bucket          int
	last, min, max  int64
	entrances, exit int64
}

// Horizon is the settled horizon the query was prepared at.
func (q *CountsQuery) Horizon() int64 { return q.h }

// PrepareCounts prepares the buckets [start+i*interval, start+(i+1)*interval) up to
// end of space (see Counts).
func (e *Engine) PrepareCounts(space string, start, end, interval int64) (*CountsQuery, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("counts: %w: interval must be > 0, got %d", ErrBadQuery, interval)
	}
	if end <= start {
		return nil, fmt.Errorf("counts: %w: end must be after start", ErrBadQuery)
	}
	nb := (end - start + interval - 1) / interval
	if nb > MaxBuckets {
		return nil, fmt.Errorf("counts: %w: %d buckets exceed the limit of %d", ErrBadQuery, nb, MaxBuckets)
	}
	bounds := make([]int64, nb+1)
	for i := range bounds {
		bounds[i] = min(start+int64(i)*interval, end)
	}
	return e.PrepareBuckets(space, bounds)
}

// PrepareCalendarCounts prepares a counts query as DESIGN 3 gives it: the calendar
// buckets of interval (ms) in the space's time zone that overlap [start, end) and
// begin at or before now (CalendarBounds). Its buckets may be none.
func (e *Engine) PrepareCalendarCounts(space string, start, end, interval, now int64) (*CountsQuery, error) {
	bounds, err := CalendarBounds(e.Location(space), start, end, interval, now, MaxBuckets)
	if err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return e.PrepareBuckets(space, bounds)
}

// Location is the time zone of space in the latest version that knows it (UTC for
// an unknown space).
func (e *Engine) Location(space string) *time.Location {
	for i := len(e.versions) - 1; i >= 0; i-- {
		if loc, ok := e.versions[i].topo.Location(space); ok {
			return loc
		}
	}
	return time.UTC
}

// PrepareBuckets prepares the buckets [bounds[i], bounds[i+1]) of space; bounds
// must increase. With fewer than two bounds there are no buckets.
func (e *Engine) PrepareBuckets(space string, bounds []int64) (*CountsQuery, error) {
	g, ok := e.gidx[space]
	if !ok {
		return nil, fmt.Errorf("counts: %q: %w", space, ErrUnknownSpace)
	}
	q := &CountsQuery{space: space, bounds: bounds, h: e.h}
	if len(bounds) < 2 {
		return q, nil
	}
	start, end := bounds[0], bounds[len(bounds)-1]
	carry, err := e.PrepareAt(space, start-1)
	if err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	q.carry = carry
	if end > e.h {
		var a *pendAgg
		b := 0
		e.gs[g].pl.each(max(start, e.h), end, e.opts.ClampNegative, func(en *entry, v int64, in, out int32) {
			for en.ts >= bounds[b+1] {
				b++
			}
			if a == nil || a.bucket != b {
				q.pend = append(q.pend, pendAgg{bucket: b, min: v, max: v})
				a = &q.pend[len(q.pend)-1]
			}
			a.last = v
			a.min = min(a.min, v)
			a.max = max(a.max, v)
			a.entrances += int64(in)
			a.exit += int64(out)
		})
	}
	return q, nil
}

// Run answers the query: the settled rows before the prepared horizon are read
// from rows, then the pending aggregates are merged in.
//
// A bucket's Occupancy is the value after its last entry (the value at its start if
// it has none); Min and Max span the value carried in and every value inside.
func (q *CountsQuery) Run(rows RowReader) ([]Bucket, error) {
	if len(q.bounds) < 2 {
		return []Bucket{}, nil
	}
	x, err := q.carry.Run(rows)
	if err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	bs := make([]Bucket, len(q.bounds)-1)
	for i := range bs {
		bs[i] = Bucket{Start: q.bounds[i], End: q.bounds[i+1]}
	}
	cur := 0
	bs[0].Occupancy, bs[0].Min, bs[0].Max = x, x, x
	// advance moves to bucket i, carrying x into the buckets passed over.
	advance := func(i int) *Bucket {
		for cur < i {
			cur++
			bs[cur].Occupancy, bs[cur].Min, bs[cur].Max = x, x, x
		}
		return &bs[cur]
	}
	start, end := q.bounds[0], q.bounds[len(q.bounds)-1]
	if start < q.h {
		b := &bs[cur]
		err := rows.Rows(q.space, start, min(end, q.h), func(r Row) error {
			// This loop runs once per settled row: the bucket changes rarely.
			if r.TS >= b.End {
				i := cur
				for r.TS >= bs[i].End {
					i++
				}
				b = advance(i)
			}
			v := r.Occupancy
			b.Occupancy = v
			if v < b.Min {
				b.Min = v
			}
			if v > b.Max {
				b.Max = v
			}
			b.Entrances += int64(r.Entrances)
			b.Exits += int64(r.Exits)
			x = v
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("counts: %w", err)
		}
	}
	for _, a := range q.pend {
		b := advance(a.bucket)
		b.Occupancy = a.last
		b.Min = min(b.Min, a.min)
		b.Max = max(b.Max, a.max)
		b.Entrances += a.entrances
		b.Exits += a.exit
		x = a.last
	}
	advance(len(bs) - 1)
	return bs, nil
}

// Counts returns the buckets [start+i*interval, start+(i+1)*interval) up to end.
// A bucket's Occupancy is the value after its last entry (the value at its start if
// it has none); Min and Max span the value carried in and every value inside.
func (e *Engine) Counts(space string, start, end, interval int64) ([]Bucket, error) {
	q, err := e.PrepareCounts(space, start, end, interval)
	if err != nil {
		return nil, err
	}
	return q.Run(e.store)
}

// CalendarCounts answers PrepareCalendarCounts.
func (e *Engine) CalendarCounts(space string, start, end, interval, now int64) ([]Bucket, error) {
	q, err := e.PrepareCalendarCounts(space, start, end, interval, now)
	if err != nil {
		return nil, err
	}
	return q.Run(e.store)
}
