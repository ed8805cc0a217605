package occupancy

import (
	"fmt"
	"math"
)

// Report kinds (DESIGN 2a). A DPU reports in one kind: one event per crossing (the
// default), or counts.
//
//   - interval: "N in and M out during [start, end)". The crossings count at end:
//     N in the +1 direction, then M in the -1 direction. Identity (DPU, start, end);
//     two reports of a DPU whose ranges overlap cannot both be stored (overlap).
//   - cumulative: "N in and M out in total since the counter's origin, as of ts".
//     Counted as the differences to the previous report of the DPU in ts order, at
//     the later report's ts (ins before outs); the earliest report is the baseline
//     and counts nothing. Each counter is taken on its own: a counter lower than
//     before was reset, and its new value counts from 0. Identity (DPU, ts).
//
// A report of N crossings is one timeline entry per space it changes, weighted by
// N and M (see engine.go), not N entries.

// ReportKind is how a DPU reports (DPU `kind`).
type ReportKind uint8

const (
	ReportEvents     ReportKind = iota // one event object per crossing (section 2)
	ReportInterval                     // {start, end, in, out}
	ReportCumulative                   // {ts, in_total, out_total}
)

// String is the configuration name of k.
func (k ReportKind) String() string {
	switch k {
	case ReportEvents:
		return "events"
	case ReportInterval:
		return "interval"
	case ReportCumulative:
		return "cumulative"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// ParseReportKind reads a configured kind; "" is events.
func ParseReportKind(s string) (ReportKind, error) {
	switch s {
	case "", "events":
		return ReportEvents, nil
	case "interval":
		return ReportInterval, nil
	case "cumulative":
		return ReportCumulative, nil
	}
	return 0, fmt.Errorf("unknown kind %q: want events, interval or cumulative", truncate(s, 40))
}

// Report is one interval or cumulative report of a DPU, after decoding and
// validation.
type Report struct {
	DPU  string
	Kind ReportKind // ReportInterval or ReportCumulative
	// Start is the start of an interval report's range [Start, TS) (Unix ms); 0 for
	// a cumulative report.
	Start int64
	// TS is the instant the report counts at (Unix ms): an interval report's end, a
	// cumulative report's ts.
	TS int64
	// In and Out: an interval report's crossings in the +1 and the -1 direction; a
	// cumulative report's totals. Never negative.
	In, Out  int64
	Received int64 // receive time, Unix ms (0 for imports)
	Late     bool  // TS was before the settled horizon when received
}

// MaxReportCount bounds the counts and totals a report may carry: 2^53, the
// largest integer every JSON reader keeps exact.
const MaxReportCount = int64(1) << 53

// maxWeight bounds what one report entry counts in each direction (rows keep
// entrances and exits as int32). A cumulative difference above it counts as it.
const maxWeight = math.MaxInt32

// CumulativeDelta is what a cumulative report next counts after prev (DESIGN 2a):
// each counter's increase, or its new value where it dropped (a counter reset).
func CumulativeDelta(prev, next Report) (in, out int64) {
	return counterDelta(prev.In, next.In), counterDelta(prev.Out, next.Out)
}

func counterDelta(prev, next int64) int64 {
	if next < prev {
		return next // reset: counted from 0
	}
	return next - prev
}

// CounterReset reports whether a counter of next is lower than in prev, the report
// before it in ts order: a counter reset.
func CounterReset(prev, next Report) bool {
	return next.In < prev.In || next.Out < prev.Out
}

// Overlaps reports whether the ranges [Start, TS) of two interval reports share an
// instant.
func (r Report) Overlaps(o Report) bool {
	return r.Start < o.TS && o.Start < r.TS
}

// Validate checks a decoded or imported report's fields.
func (r Report) Validate() error {
	if !ValidID(r.DPU) {
		return fmt.Errorf("invalid dpu id %q: want [A-Za-z0-9_-]{1,64}", truncate(r.DPU, 80))
	}
	switch r.Kind {
	case ReportInterval:
		if r.Start >= r.TS {
			return fmt.Errorf("interval report: end %s is not after start %s", fmtMS(r.TS), fmtMS(r.Start))
		}
	case ReportCumulative:
		if r.Start != 0 {
			return fmt.Errorf("cumulative report with a start")
		}
	default:
		return fmt.Errorf("report of kind %s: want interval or cumulative", r.Kind)
	}
	if r.In < 0 || r.Out < 0 || r.In > MaxReportCount || r.Out > MaxReportCount {
		return fmt.Errorf("%s report: counts %d and %d out of range 0..2^53", r.Kind, r.In, r.Out)
	}
	return nil
}
