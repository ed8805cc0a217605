package refmodel

import (
	"sort"
	"time"
)

const day = 86_400_000

// CalendarBounds is the bucket layout of a counts query (DESIGN 3 Queries), found
// the slow way: every local day near the range is scanned minute by minute for its
// first instant and the UTC offsets it has; every wall-clock multiple of the
// interval from the day's midnight is tried against each of those offsets and kept
// where the zone agrees. Intervals of a day or more are whole local days counted
// from start's date. The query's buckets are the ones that overlap [start, end) and
// begin at or before now: bounds b[0] < ... < b[n], bucket i = [b[i], b[i+1]);
// nil when there are none.
func CalendarBounds(loc *time.Location, start, end, interval, now int64) []int64 {
	y, m, d := time.UnixMilli(start).In(loc).Date()
	first := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	var all []int64
	// Buckets begin before min(end, now+1), and the first one at or before start: no
	// later day is needed.
	last := max(min(end, now+1), start+1)
	if interval >= day {
		n := int(interval / day)
		for k := 0; ; k++ {
			b := firstInstant(loc, first.AddDate(0, 0, k*n))
			all = append(all, b)
			if b >= last {
				break
			}
		}
	} else {
		for date := first.AddDate(0, 0, -1); ; date = date.AddDate(0, 0, 1) {
			ds := firstInstant(loc, date)
			if ds >= last {
				all = append(all, ds)
				break
			}
			all = append(all, ds)
			offs := offsets(loc, ds)
			wallMid := date.UnixMilli()
			// Only wall times whose instants can matter: boundaries are at most an
			// interval apart, so none before start - interval or after last +
			// interval is needed.
			for _, o := range offs {
				w := wallMid
				if lo := start - interval + o; lo > w {
					w += (lo - w) / interval * interval
				}
				for ; w < wallMid+day && w-o <= last+interval; w += interval {
					t := w - o
					lt := time.UnixMilli(t).In(loc)
					_, off := lt.Zone()
					if int64(off)*1000 == o && sameDate(lt, date) {
						all = append(all, t)
					}
				}
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var uniq []int64
	for _, b := range all {
		if len(uniq) == 0 || uniq[len(uniq)-1] != b {
			uniq = append(uniq, b)
		}
	}
	i := sort.Search(len(uniq), func(i int) bool { return uniq[i] > start }) - 1
	var out []int64
	for ; uniq[i] < end && uniq[i] <= now; i++ {
		out = append(out, uniq[i])
	}
	if len(out) == 0 {
		return nil
	}
	return append(out, uniq[i])
}

func sameDate(t, date time.Time) bool {
	y, m, d := t.Date()
	y2, m2, d2 := date.Date()
	return y == y2 && m == m2 && d == d2
}

// firstInstant is the first instant whose local date in loc is date's.
func firstInstant(loc *time.Location, date time.Time) int64 {
	// The minute it falls in, then the millisecond.
	t := date.UnixMilli() - 16*3_600_000
	for !sameDate(time.UnixMilli(t).In(loc), date) {
		t += 60_000
	}
	lo, hi := t-60_000, t
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if sameDate(time.UnixMilli(mid).In(loc), date) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// offsets are the UTC offsets (ms) loc has in the 30 hours from ds.
func offsets(loc *time.Location, ds int64) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for t := ds; t < ds+30*3_600_000; t += 60_000 {
		_, o := time.UnixMilli(t).In(loc).Zone()
		if !seen[int64(o)] {
			seen[int64(o)] = true
			out = append(out, int64(o)*1000)
		}
	}
	return out
}
