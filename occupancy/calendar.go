package occupancy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Calendar buckets (DESIGN 3 Queries).
//
// Counts buckets lie on the calendar of the space's time zone: an interval of a day
// or more is a whole number of local days, each bucket from local midnight to local
// midnight (a local day may be 23 or 25 hours); a shorter interval divides every
// local day from its midnight on, in local wall-clock time (15m on the quarter
// hour, 1h on the hour, also after a DST change of 30 minutes), a bucket that would
// run past the next midnight ending there. A wall-clock time a DST gap skips is no
// boundary; one a fall-back repeats is a boundary each time (a 25-hour day has 25
// hourly buckets). A day whose midnight falls in a gap begins where the gap ends.
//
// The buckets of a query are the whole buckets that overlap [start, end): the first
// is the bucket containing start (start is aligned down, never clipped), the last
// the one containing end-1, and buckets that begin after now are left out.

// ErrBadQuery is wrapped by the query functions for a query that cannot be answered
// as asked (an interval that is not a whole number of days, too many buckets, ...).
var ErrBadQuery = errors.New("bad query")

const dayMS = 86_400_000

// Location returns the time zone of space: its time_zone, else its nearest
// ancestor's, UTC at the top (DESIGN 1); ok is false for a space t does not know.
func (t *Topology) Location(space string) (loc *time.Location, ok bool) {
	i, ok := t.spaceIdx[space]
	if !ok {
		return time.UTC, false
	}
	return t.spaces[i].loc, true
}

// ParseInterval reads a counts interval: a Go duration ("15m", "1h", "24h") or a
// whole number of days ("1d", "7d").
func ParseInterval(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d <= 0 || d > 3660 {
			return 0, fmt.Errorf("%w: interval %q: want a duration (15m, 1h) or a number of days (1d, 7d)", ErrBadQuery, s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w: interval %q is not a duration (e.g. 15m, 1h, 1d)", ErrBadQuery, s)
	}
	return d, nil
}

// Today is the local day of now in loc: [its start, the next day's start).
func Today(loc *time.Location, now int64) (start, end int64) {
	y, m, d := time.UnixMilli(now).In(loc).Date()
	return dayStart(loc, y, m, d), dayStart(loc, y, m, d+1)
}

// CalendarBounds returns the bounds b[0] < ... < b[n] of the calendar buckets of
// interval ms in loc that overlap [start, end) and begin at or before now: bucket i
// is [b[i], b[i+1]). With none (start's bucket begins after now) it returns nil.
// More than limit buckets is an error (ErrBadQuery).
func CalendarBounds(loc *time.Location, start, end, interval, now int64, limit int) ([]int64, error) {
	switch {
	case interval <= 0:
		return nil, fmt.Errorf("%w: interval must be positive, got %dms", ErrBadQuery, interval)
	case interval >= dayMS && interval%dayMS != 0:
		return nil, fmt.Errorf("%w: an interval of a day or more must be whole days (1d, 7d, 24h), got %s", ErrBadQuery, time.Duration(interval)*time.Millisecond)
	case end <= start:
		return nil, fmt.Errorf("%w: end must be after start", ErrBadQuery)
	}
	cal := calendar{loc: loc, iv: interval}
	b := cal.atOrBefore(start)
	var out []int64
	for b < end && b <= now {
		if len(out) == limit {
			return nil, fmt.Errorf("%w: more than %d buckets: use a larger interval or a shorter range", ErrBadQuery, limit)
		}
		out = append(out, b)
		b = cal.after(b)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return append(out, b), nil
}

// calendar finds the bucket boundaries of one interval in one zone.
type calendar struct {
	loc *time.Location
	iv  int64 // ms
}

// dayStart is the first instant of local date y-m-d (d may overflow the month).
func dayStart(loc *time.Location, y int, m time.Month, d int) int64 {
	n := time.Date(y, m, d, 12, 0, 0, 0, time.UTC) // normalised date
	return localInstant(n.Year(), n.Month(), n.Day(), 0, loc)
}

// localDay is one local date: its first instant, the next date's, its midnight
// read as UTC (wall-clock ms) and the date.
type localDay struct {
	start, end, wallMid int64
	y                   int
	m                   time.Month
	d                   int
}

// day is the local date of instant x.
func (c calendar) day(x int64) localDay {
	y, m, d := time.UnixMilli(x).In(c.loc).Date()
	return localDay{start: dayStart(c.loc, y, m, d), end: dayStart(c.loc, y, m, d+1),
		wallMid: time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli(), y: y, m: m, d: d}
}

// segment is the span around x with one UTC offset (ms), unbounded as ±MaxInt64.
func (c calendar) segment(x int64) (lo, hi, off int64) {
	t := time.UnixMilli(x).In(c.loc)
	_, o := t.Zone()
	a, b := t.ZoneBounds()
	lo, hi = math.MinInt64, int64(math.MaxInt64)
	if !a.IsZero() {
		lo = a.UnixMilli()
	}
	if !b.IsZero() {
		hi = b.UnixMilli()
	}
	return lo, hi, int64(o) * 1000
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// atOrBefore is the last boundary at or before x.
func (c calendar) atOrBefore(x int64) int64 {
	ld := c.day(x)
	if c.iv >= dayMS {
		return ld.start // multi-day buckets count from x's date
	}
	for {
		lo, _, off := c.segment(x)
		lo = max(lo, ld.start)
		// The last wall-clock multiple of the interval at or before x, in x's offset.
		t := ld.wallMid + floorDiv(x+off-ld.wallMid, c.iv)*c.iv - off
		if t >= lo {
			return t
		}
		if lo == ld.start {
			return ld.start
		}
		x = lo - 1
	}
}

// after is the first boundary after boundary b.
func (c calendar) after(b int64) int64 {
	ld := c.day(b)
	if c.iv >= dayMS {
		return dayStart(c.loc, ld.y, ld.m, ld.d+int(c.iv/dayMS))
	}
	for x := b + 1; x < ld.end; {
		_, hi, off := c.segment(x)
		hi = min(hi, ld.end)
		// The first wall-clock multiple of the interval at or after x, in x's offset.
		t := ld.wallMid + (floorDiv(x+off-ld.wallMid-1, c.iv)+1)*c.iv - off
		if t < hi {
			return t
		}
		x = hi
	}
	return ld.end
}
