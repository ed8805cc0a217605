package occupancy

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// wall reads local wall-clock times of loc as instants ("2026-03-29 03:00 +02").
func wall(t testing.TB, s string) int64 {
	t.Helper()
	var tt time.Time
	var err error
	for _, layout := range []string{"2006-01-02 15:04:05 -07", "2006-01-02 15:04 -07", "2006-01-02 15:04 -07:00"} {
		if tt, err = time.Parse(layout, s); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return tt.UnixMilli()
}

func TestCalendarBounds(t *testing.T) {
	ber := mustLoc(t, "Europe/Berlin")
	ktm := mustLoc(t, "Asia/Kathmandu")
	lhi := mustLoc(t, "Australia/Lord_Howe")
	far := wall(t, "2030-01-01 00:00 +00") // now, when it does not matter
	const (
		m = int64(60_000)
		h = 60 * m
		d = 24 * h
	)
	tests := []struct {
		name               string
		loc                *time.Location
		start, end, iv, at int64
		want               []string // bounds as wall-clock times
	}{
		{"quarter hours, start not on a boundary: aligned down", ber, wall(t, "2026-11-27 00:17:05 +01"), wall(t, "2026-11-27 01:00 +01"), 15 * m, far,
			[]string{"2026-11-27 00:15 +01", "2026-11-27 00:30 +01", "2026-11-27 00:45 +01", "2026-11-27 01:00 +01"}},
		{"end not on a boundary: the bucket holding it is whole", ber, wall(t, "2026-11-27 10:00 +01"), wall(t, "2026-11-27 11:00:01 +01"), h, far,
			[]string{"2026-11-27 10:00 +01", "2026-11-27 11:00 +01", "2026-11-27 12:00 +01"}},
		{"buckets after now are left out, the current one is whole", ber, wall(t, "2026-11-27 00:00 +01"), wall(t, "2026-11-28 00:00 +01"), h, wall(t, "2026-11-27 02:10 +01"),
			[]string{"2026-11-27 00:00 +01", "2026-11-27 01:00 +01", "2026-11-27 02:00 +01", "2026-11-27 03:00 +01"}},
		{"a bucket beginning at now is returned", ber, wall(t, "2026-11-27 00:00 +01"), wall(t, "2026-11-28 00:00 +01"), h, wall(t, "2026-11-27 01:00 +01"),
			[]string{"2026-11-27 00:00 +01", "2026-11-27 01:00 +01", "2026-11-27 02:00 +01"}},
		{"spring forward: 23 hourly buckets, 02:00 does not exist", ber, wall(t, "2026-03-29 01:00 +01"), wall(t, "2026-03-29 04:00 +02"), h, far,
			[]string{"2026-03-29 01:00 +01", "2026-03-29 03:00 +02", "2026-03-29 04:00 +02"}},
		{"spring forward: the day has 23 hours", ber, wall(t, "2026-03-28 12:00 +01"), wall(t, "2026-03-30 12:00 +02"), d, far,
			[]string{"2026-03-28 00:00 +01", "2026-03-29 00:00 +01", "2026-03-30 00:00 +02", "2026-03-31 00:00 +02"}},
		{"fall back: 02:00 twice", ber, wall(t, "2026-10-25 01:00 +02"), wall(t, "2026-10-25 04:00 +01"), h, far,
			[]string{"2026-10-25 01:00 +02", "2026-10-25 02:00 +02", "2026-10-25 02:00 +01", "2026-10-25 03:00 +01", "2026-10-25 04:00 +01"}},
		{"fall back: quarter hours through the repeated hour", ber, wall(t, "2026-10-25 02:30 +02"), wall(t, "2026-10-25 02:15 +01"), 15 * m, far,
			[]string{"2026-10-25 02:30 +02", "2026-10-25 02:45 +02", "2026-10-25 02:00 +01", "2026-10-25 02:15 +01"}},
		{"fall back: the day has 25 hours", ber, wall(t, "2026-10-25 05:00 +01"), wall(t, "2026-10-25 06:00 +01"), d, far,
			[]string{"2026-10-25 00:00 +02", "2026-10-26 00:00 +01"}},
		{"a week counts from start's date", ber, wall(t, "2026-03-25 13:00 +01"), wall(t, "2026-04-02 00:00 +02"), 7 * d, far,
			[]string{"2026-03-25 00:00 +01", "2026-04-01 00:00 +02", "2026-04-08 00:00 +02"}},
		{"hours on the local hour at +05:45", ktm, wall(t, "2026-11-27 10:20 +05:45"), wall(t, "2026-11-27 12:00 +05:45"), h, far,
			[]string{"2026-11-27 10:00 +05:45", "2026-11-27 11:00 +05:45", "2026-11-27 12:00 +05:45"}},
		{"a 30-minute DST change: hours stay on the local hour", lhi, wall(t, "2026-10-04 01:00 +10:30"), wall(t, "2026-10-04 04:00 +11"), h, far,
			[]string{"2026-10-04 01:00 +10:30", "2026-10-04 03:00 +11", "2026-10-04 04:00 +11"}},
		{"a 30-minute DST change: the hour after it begins before it", lhi, wall(t, "2026-10-04 02:40 +11"), wall(t, "2026-10-04 03:10 +11"), h, far,
			[]string{"2026-10-04 01:00 +10:30", "2026-10-04 03:00 +11", "2026-10-04 04:00 +11"}},
		{"7m buckets: the day's last one ends at midnight", time.UTC, wall(t, "2026-11-27 23:50 +00"), wall(t, "2026-11-28 00:10 +00"), 7 * m, far,
			[]string{"2026-11-27 23:48 +00", "2026-11-27 23:55 +00", "2026-11-28 00:00 +00", "2026-11-28 00:07 +00", "2026-11-28 00:14 +00"}},
		{"start after now: none", ber, wall(t, "2026-11-27 10:00 +01"), wall(t, "2026-11-27 12:00 +01"), h, wall(t, "2026-11-27 09:59 +01"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []int64
			for _, s := range tc.want {
				want = append(want, wall(t, s))
			}
			got, err := CalendarBounds(tc.loc, tc.start, tc.end, tc.iv, tc.at, MaxBuckets)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v", fmtBounds(got, tc.loc), fmtBounds(want, tc.loc))
			}
			if ref := refmodel.CalendarBounds(tc.loc, tc.start, tc.end, tc.iv, tc.at); !reflect.DeepEqual(ref, want) {
				t.Errorf("the reference model disagrees: %v", fmtBounds(ref, tc.loc))
			}
		})
	}
	for _, tc := range []struct {
		name              string
		start, end, iv, n int64
		err               string
	}{
		{"36h is not whole days", 0, d, 36 * h, 10, "whole days"},
		{"zero interval", 0, d, 0, 10, "positive"},
		{"end before start", d, 0, h, 10, "after start"},
		{"over the limit", 0, d, m, 100, "more than 100 buckets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CalendarBounds(time.UTC, tc.start, tc.end, tc.iv, far, int(tc.n))
			if !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, want ErrBadQuery with %q", err, tc.err)
			}
		})
	}
}

func fmtBounds(bs []int64, loc *time.Location) []string {
	var out []string
	for _, b := range bs {
		out = append(out, time.UnixMilli(b).In(loc).Format("01-02 15:04:05.000 -07:00"))
	}
	return out
}

// TestCalendarBoundsMatchModel: random zones (DST of an hour and of 30 minutes,
// odd offsets, a midnight that a DST gap skips), intervals and ranges around DST
// changes against the reference model's minute-by-minute scan.
func TestCalendarBoundsMatchModel(t *testing.T) {
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Santiago", "America/Havana", "Pacific/Chatham"}
	ivs := []int64{60_000, 5 * 60_000, 7 * 60_000, 15 * 60_000, 3_600_000, 90 * 60_000, 2 * 3_600_000, 86_400_000, 2 * 86_400_000, 7 * 86_400_000}
	rng := rand.New(rand.NewSource(1))
	// The 2026 changes of these zones, and ordinary days.
	around := []time.Time{
		time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 6, 0, 0, 0, time.UTC),
		time.Date(2026, 4, 4, 15, 0, 0, 0, time.UTC), time.Date(2026, 10, 3, 15, 30, 0, 0, time.UTC),
		time.Date(2026, 4, 5, 3, 0, 0, 0, time.UTC), time.Date(2026, 9, 6, 4, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC),
		time.Date(2026, 4, 4, 14, 0, 0, 0, time.UTC), time.Date(2026, 9, 26, 14, 0, 0, 0, time.UTC),
		time.Date(2026, 7, 14, 12, 0, 0, 0, time.UTC),
	}
	for i := 0; i < 400; i++ {
		zone := zones[rng.Intn(len(zones))]
		loc := mustLoc(t, zone)
		iv := ivs[rng.Intn(len(ivs))]
		c := around[rng.Intn(len(around))].UnixMilli()
		start := c - rng.Int63n(2*86_400_000)
		if rng.Intn(2) == 0 {
			start = c - 3_600_000 + rng.Int63n(3*3_600_000) // close to the change
		}
		if rng.Intn(3) == 0 {
			start -= start % 60_000 // on a minute, often on a boundary
		}
		end := start + 1 + rng.Int63n(3*86_400_000)
		now := start + rng.Int63n(4*86_400_000) - 86_400_000
		name := fmt.Sprintf("%s/%s/%s+%s", zone, time.Duration(iv)*time.Millisecond, time.UnixMilli(start).In(loc).Format(time.RFC3339), time.Duration(end-start)*time.Millisecond)
		got, err := CalendarBounds(loc, start, end, iv, now, MaxBuckets)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := refmodel.CalendarBounds(loc, start, end, iv, now); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s (now %s):\n got %v\nwant %v", name, fmtMS(now), fmtBounds(got, loc), fmtBounds(want, loc))
		}
	}
}

// TestToday: today is the local day of now, 23 or 25 hours on a DST day.
func TestToday(t *testing.T) {
	ber := mustLoc(t, "Europe/Berlin")
	for _, c := range []struct {
		now, start, end string
	}{
		{"2026-11-27 00:30 +01", "2026-11-27 00:00 +01", "2026-11-28 00:00 +01"},
		{"2026-03-29 12:00 +02", "2026-03-29 00:00 +01", "2026-03-30 00:00 +02"},
		{"2026-10-25 23:59 +01", "2026-10-25 00:00 +02", "2026-10-26 00:00 +01"},
	} {
		s, e := Today(ber, wall(t, c.now))
		if s != wall(t, c.start) || e != wall(t, c.end) {
			t.Errorf("today at %s: got %v, want [%s, %s)", c.now, fmtBounds([]int64{s, e}, ber), c.start, c.end)
		}
	}
}

// TestLocationInherited: a space without time_zone has its nearest ancestor's, UTC
// at the top (DESIGN 1).
func TestLocationInherited(t *testing.T) {
	topo, err := Compile(TopologyConfig{Spaces: []SpaceConfig{
		{ID: "room", Parent: "floor"}, {ID: "floor", Parent: "hq"}, {ID: "hq", TimeZone: "Europe/Berlin"},
		{ID: "annex", Parent: "hq", TimeZone: "Asia/Kathmandu"}, {ID: "shed"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"room": "Europe/Berlin", "floor": "Europe/Berlin", "hq": "Europe/Berlin", "annex": "Asia/Kathmandu", "shed": "UTC"} {
		if loc, ok := topo.Location(id); !ok || loc.String() != want {
			t.Errorf("%s: got %v, %v, want %s", id, loc, ok, want)
		}
	}
}

func TestParseInterval(t *testing.T) {
	for s, want := range map[string]time.Duration{"15m": 15 * time.Minute, "1h": time.Hour, "1d": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "333ms": 333 * time.Millisecond} {
		if got, err := ParseInterval(s); err != nil || got != want {
			t.Errorf("%s: got %v, %v, want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "0d", "-1d", "1.5d", "fortnight"} {
		if _, err := ParseInterval(s); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%q: got %v, want ErrBadQuery", s, err)
		}
	}
}
