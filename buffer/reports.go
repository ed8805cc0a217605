package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/dgraph-io/badger/v4"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Interval and cumulative reports (DESIGN 2a).
//
// Keys, beside the event log's (keys.go):
//
//	n <end> <dpu>          interval report (value: reportValue); its identity: at most one
//	                       report of a DPU ends at one instant, as two would overlap
//	N <dpu> 0x00 <end>     overlap index (value: uvarint end-start)
//	k <ts> <dpu>           cumulative report (value: reportValue); its identity (DPU, ts)
//	K <dpu> 0x00 <ts>      neighbour index (value: uvarint in_total, uvarint out_total)
//	P <n|k key>            parked mark of a report (value: reportValue)
//	L <n|k key>            late mark: stored late, correction not committed (value: reportValue)
//	R <dpu>                counter resets of a cumulative DPU (value: uvarint)
//	U <gen BE> <n|k key>   unpark marker of a settlement written in steps (see Commit)
//
// Times are 8 bytes big-endian with the sign bit flipped, as everywhere: the 'n' and
// 'k' logs stream in time order for replays, the indexes in time order per DPU.
//
// Appends are group-committed with the events (commit.go). The checks a report needs
// against the stored ones of its DPU — the overlap of an interval, the neighbours of a
// cumulative report whose counter resets are counted — run in the committer, the
// only writer of reports, against a snapshot of the store taken when the batch
// starts and the reports written by the batch itself, so each check is atomic with
// the write it guards.
const (
	pfxInterval     = 'n'
	pfxIntervalIdx  = 'N'
	pfxCumulative   = 'k'
	pfxCumulIdx     = 'K'
	pfxParkedReport = 'P'
	pfxLateReport   = 'L'
	pfxResets       = 'R'
	pfxUnparkReport = 'U'
)

// ReportResult is the outcome of one report of an append.
type ReportResult struct {
	// Duplicate: a report with the same identity was stored before (an interval
	// report with the same DPU, start and end; a cumulative one with the same DPU
	// and ts); nothing was written for it.
	Duplicate bool
	// Rejected: the report was to be parked but storage.max_parked parked events and
	// reports are stored already (reason unknown_dpu); nothing was written.
	Rejected bool
	// Overlap: an interval report whose range overlaps [OverlapStart, OverlapEnd),
	// a different report of its DPU stored before (reason overlap); nothing was
	// written.
	Overlap                  bool
	OverlapStart, OverlapEnd int64
	// CounterResets is how many counter resets this cumulative report added to its
	// DPU's total (0 to 2: CounterReset between it and each neighbour in ts order,
	// less the one between the neighbours it came between).
	CounterResets int
}

// Rejection is the rejection of a report the store refused: overlap, or
// unknown_dpu past maxParked; ok is false for a report stored or a duplicate.
func (r ReportResult) Rejection(rep occupancy.Report, maxParked int, index int) (occupancy.Rejection, bool) {
	switch {
	case r.Overlap:
		return occupancy.Rejection{Reason: occupancy.ReasonOverlap, Index: index,
			Detail: fmt.Sprintf("interval [%s, %s) overlaps the stored report [%s, %s) of DPU %q",
				fmtTS(rep.Start), fmtTS(rep.TS), fmtTS(r.OverlapStart), fmtTS(r.OverlapEnd), rep.DPU)}, true
	case r.Rejected:
		return occupancy.Rejection{Reason: occupancy.ReasonUnknownDPU, Index: index,
			Detail: fmt.Sprintf("DPU %q is in no topology version and storage.max_parked (%d) is reached", rep.DPU, maxParked)}, true
	}
	return occupancy.Rejection{}, false
}

// AppendReports group-commits reports (synced), with the same promise as Append:
// it returns once they are durable, parked[i] (parked may be nil) stores a parked
// mark with report i, and an error means none may be acknowledged.
func (s *Store) AppendReports(ctx context.Context, reps []occupancy.Report, parked []bool) ([]ReportResult, error) {
	_, res, err := s.AppendMixed(ctx, nil, nil, reps, parked)
	return res, err
}

// AppendMixed stores events and reports in one group commit (a batch of messages
// from DPUs of several kinds waits for one synced write, not two). See Append and
// AppendReports.
func (s *Store) AppendMixed(ctx context.Context, evs []occupancy.Event, evParked []bool,
	reps []occupancy.Report, repParked []bool) ([]AppendResult, []ReportResult, error) {
	if evParked != nil && len(evParked) != len(evs) {
		return nil, nil, fmt.Errorf("append: %d events but %d parked flags", len(evs), len(evParked))
	}
	if repParked != nil && len(repParked) != len(reps) {
		return nil, nil, fmt.Errorf("append: %d reports but %d parked flags", len(reps), len(repParked))
	}
	for i, e := range evs {
		if err := validEvent(e); err != nil {
			return nil, nil, fmt.Errorf("append: event %d: %w", i, err)
		}
	}
	for i, r := range reps {
		if err := r.Validate(); err != nil {
			return nil, nil, fmt.Errorf("append: report %d: %w", i, err)
		}
	}
	if len(evs)+len(reps) == 0 {
		return []AppendResult{}, []ReportResult{}, nil
	}
	r := &request{evs: evs, parked: evParked, reps: reps, repParked: repParked, done: make(chan struct{})}
	if err := s.submit(ctx, r); err != nil {
		return nil, nil, fmt.Errorf("append: %w", err)
	}
	return r.res, r.repRes, nil
}

// ---- keys and values ----

// reportKey: 'n' <end> <dpu> or 'k' <ts> <dpu>.
func reportKey(dst []byte, r occupancy.Report) []byte {
	p := byte(pfxCumulative)
	if r.Kind == occupancy.ReportInterval {
		p = pfxInterval
	}
	dst = append(dst, p)
	dst = putTS(dst, r.TS)
	return append(dst, r.DPU...)
}

// dpuTSKey: 'N'|'K' <dpu> 0x00 <ts>.
func dpuTSKey(p byte, dpu string, ts int64) []byte {
	k := make([]byte, 0, 2+len(dpu)+8)
	k = append(k, p)
	k = append(k, dpu...)
	k = append(k, 0)
	return putTS(k, ts)
}

func dpuPrefix(p byte, dpu string) []byte {
	k := make([]byte, 0, 2+len(dpu))
	k = append(k, p)
	k = append(k, dpu...)
	return append(k, 0)
}

// reportValue: flags (bit1 late), uvarint end-start (interval only), uvarint in,
// uvarint out, zigzag varint receive time - ts.
func reportValue(dst []byte, r occupancy.Report) []byte {
	var f byte
	if r.Late {
		f |= flagLate
	}
	dst = append(dst, f)
	if r.Kind == occupancy.ReportInterval {
		dst = binary.AppendUvarint(dst, uint64(r.TS-r.Start))
	}
	dst = binary.AppendUvarint(dst, uint64(r.In))
	dst = binary.AppendUvarint(dst, uint64(r.Out))
	return binary.AppendVarint(dst, r.Received-r.TS)
}

// decodeReport builds a report from its 'n' or 'k' key and value.
func decodeReport(k, v []byte) (occupancy.Report, error) {
	var r occupancy.Report
	if len(k) < 1+8+1 || (k[0] != pfxInterval && k[0] != pfxCumulative) {
		return r, fmt.Errorf("malformed report key %x", k)
	}
	r.TS, r.DPU = getTS(k[1:9]), string(k[9:])
	r.Kind = occupancy.ReportCumulative
	if len(v) < 1 {
		return r, errors.New("malformed report value")
	}
	r.Late = v[0]&flagLate != 0
	v = v[1:]
	var n int
	if k[0] == pfxInterval {
		r.Kind = occupancy.ReportInterval
		var d uint64
		if d, n = binary.Uvarint(v); n <= 0 || d == 0 || d > math.MaxInt64/2 {
			return r, errors.New("malformed report value: range")
		}
		r.Start, v = r.TS-int64(d), v[n:]
	}
	in, out, v, err := twoCounts(v)
	if err != nil {
		return r, err
	}
	r.In, r.Out = in, out
	d, n := binary.Varint(v)
	if n <= 0 {
		return r, errors.New("malformed report value: receive time")
	}
	r.Received = r.TS + d
	return r, nil
}

// twoCounts reads two uvarint counts.
func twoCounts(v []byte) (a, b int64, rest []byte, err error) {
	x, n := binary.Uvarint(v)
	if n <= 0 || x > uint64(occupancy.MaxReportCount) {
		return 0, 0, nil, errors.New("malformed report value: count")
	}
	y, m := binary.Uvarint(v[n:])
	if m <= 0 || y > uint64(occupancy.MaxReportCount) {
		return 0, 0, nil, errors.New("malformed report value: count")
	}
	return int64(x), int64(y), v[n+m:], nil
}

func cumulIdxValue(r occupancy.Report) []byte {
	v := binary.AppendUvarint(make([]byte, 0, 12), uint64(r.In))
	return binary.AppendUvarint(v, uint64(r.Out))
}

// ---- the committer's side ----

// reportBatch is the state of one batch's reports: a snapshot of the store as the
// batch began (the committer is the only writer of reports, so it holds every
// report stored before) and what the batch itself writes.
type reportBatch struct {
	snap   *badger.Txn
	its    [3]*badger.Iterator // overlap index forward, neighbour index forward and reverse
	ivs    map[string][][2]int64
	pts    map[string][]occupancy.Report // sorted by TS
	resets map[string]int64
}

func (s *Store) newReportBatch() *reportBatch {
	return &reportBatch{snap: s.db.NewTransaction(false), ivs: map[string][][2]int64{},
		pts: map[string][]occupancy.Report{}, resets: map[string]int64{}}
}

func (b *reportBatch) close() {
	for _, it := range b.its {
		if it != nil {
			it.Close()
		}
	}
	b.snap.Discard()
}

func (b *reportBatch) iter(i int, p byte, reverse bool) *badger.Iterator {
	if b.its[i] == nil {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte{p}
		o.Reverse = reverse
		b.its[i] = b.snap.NewIterator(o)
	}
	return b.its[i]
}

// storedOverlap finds the stored interval of dpu that ends first after start and
// reports it if it begins before end: the only candidate, as the stored intervals
// of a DPU do not overlap each other.
func (b *reportBatch) storedOverlap(dpu string, start, end int64) (s, e int64, ok bool, err error) {
	it := b.iter(0, pfxIntervalIdx, false)
	p := dpuPrefix(pfxIntervalIdx, dpu)
	it.Seek(dpuTSKey(pfxIntervalIdx, dpu, start+1))
	if !it.ValidForPrefix(p) {
		return 0, 0, false, nil
	}
	item := it.Item()
	e = getTS(item.Key()[len(p):])
	err = item.Value(func(v []byte) error {
		d, n := binary.Uvarint(v)
		if n <= 0 {
			return fmt.Errorf("malformed overlap index value of %q", dpu)
		}
		s = e - int64(d)
		return nil
	})
	return s, e, err == nil && s < end, err
}

// storedNeighbour is the stored cumulative report of dpu just before ts (or just
// after it, after set).
func (b *reportBatch) storedNeighbour(dpu string, ts int64, after bool) (occupancy.Report, bool, error) {
	p := dpuPrefix(pfxCumulIdx, dpu)
	var it *badger.Iterator
	if after {
		it = b.iter(1, pfxCumulIdx, false)
		it.Seek(dpuTSKey(pfxCumulIdx, dpu, ts+1))
	} else {
		it = b.iter(2, pfxCumulIdx, true)
		it.Seek(dpuTSKey(pfxCumulIdx, dpu, ts-1))
	}
	if !it.ValidForPrefix(p) {
		return occupancy.Report{}, false, nil
	}
	item := it.Item()
	r := occupancy.Report{DPU: dpu, Kind: occupancy.ReportCumulative, TS: getTS(item.Key()[len(p):])}
	err := item.Value(func(v []byte) error {
		var err error
		r.In, r.Out, _, err = twoCounts(v)
		return err
	})
	return r, err == nil, err
}

// writeReports checks and writes the reports of request r (see writeBatch).
func (s *Store) writeReports(c *committerState, w *splitTxn, b *reportBatch, r *request, parkedNew *int64, parkedNow int64) error {
	r.repRes = make([]ReportResult, len(r.reps))
	for i, rep := range r.reps {
		res := &r.repRes[i]
		k := reportKey(make([]byte, 0, 1+8+len(rep.DPU)), rep)
		item, err := w.txn.Get(k)
		switch {
		case err == nil:
			stored := rep
			if err := item.Value(func(v []byte) error {
				var err error
				stored, err = decodeReport(k, v)
				return err
			}); err != nil {
				return fmt.Errorf("dedup lookup: %w", err)
			}
			if rep.Kind == occupancy.ReportInterval && stored.Start != rep.Start {
				res.Overlap, res.OverlapStart, res.OverlapEnd = true, stored.Start, stored.TS
				continue
			}
			if _, ok := c.unconfirmed[string(k)]; !ok {
				res.Duplicate = true
				continue
			}
			// Written by a batch whose senders were told it failed: new to them, and
			// written again so that this batch's sync covers it (its checks and
			// counter resets were made when it was first written).
			if err := setReport(w, k, rep, r.repParked != nil && r.repParked[i]); err != nil {
				return err
			}
			r.keys = append(r.keys, k)
			continue
		case errors.Is(err, badger.ErrKeyNotFound):
		default:
			return fmt.Errorf("dedup lookup: %w", err)
		}
		var resets int
		if rep.Kind == occupancy.ReportInterval {
			os, oe, ok, err := b.overlap(rep)
			if err != nil {
				return fmt.Errorf("overlap lookup: %w", err)
			}
			if ok {
				res.Overlap, res.OverlapStart, res.OverlapEnd = true, os, oe
				continue
			}
		} else if resets, err = b.counterResets(rep); err != nil {
			return fmt.Errorf("neighbour lookup: %w", err)
		}
		park := r.repParked != nil && r.repParked[i]
		if park && s.opts.MaxParked >= 0 && parkedNow+*parkedNew >= int64(s.opts.MaxParked) {
			res.Rejected = true
			continue
		}
		if err := setReport(w, k, rep, park); err != nil {
			return err
		}
		if rep.Kind == occupancy.ReportInterval {
			b.ivs[rep.DPU] = append(b.ivs[rep.DPU], [2]int64{rep.Start, rep.TS})
			err = w.set(dpuTSKey(pfxIntervalIdx, rep.DPU, rep.TS), binary.AppendUvarint(nil, uint64(rep.TS-rep.Start)))
		} else {
			pts := b.pts[rep.DPU]
			j := sort.Search(len(pts), func(j int) bool { return pts[j].TS > rep.TS })
			b.pts[rep.DPU] = append(pts[:j], append([]occupancy.Report{rep}, pts[j:]...)...)
			res.CounterResets = resets
			if resets > 0 {
				b.resets[rep.DPU] += int64(resets)
			}
			err = w.set(dpuTSKey(pfxCumulIdx, rep.DPU, rep.TS), cumulIdxValue(rep))
		}
		if err != nil {
			return fmt.Errorf("write report index: %w", err)
		}
		r.keys = append(r.keys, k)
		if park {
			*parkedNew++
		}
	}
	return nil
}

// setReport writes a report and, when park is set, its parked mark, or when it is
// marked Late its late mark (as Append does for events: the mark stays until a
// Commit lists the report in Settlement.CorrectedReports, and the engine corrects
// for it again at start).
func setReport(w *splitTxn, k []byte, rep occupancy.Report, park bool) error {
	v := reportValue(make([]byte, 0, 24), rep)
	if err := w.set(k, v); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	mark := byte(0)
	switch {
	case park:
		mark = pfxParkedReport
	case rep.Late:
		mark = pfxLateReport
	}
	if mark != 0 {
		if err := w.set(append([]byte{mark}, k...), v); err != nil {
			return fmt.Errorf("write report mark: %w", err)
		}
	}
	return nil
}

// overlap is the stored or batch-written interval of rep's DPU that rep overlaps.
func (b *reportBatch) overlap(rep occupancy.Report) (s, e int64, ok bool, err error) {
	for _, iv := range b.ivs[rep.DPU] {
		if iv[0] < rep.TS && rep.Start < iv[1] {
			return iv[0], iv[1], true, nil
		}
	}
	return b.storedOverlap(rep.DPU, rep.Start, rep.TS)
}

// counterResets is how many counter resets inserting rep between its neighbours
// (stored or written by the batch) adds.
func (b *reportBatch) counterResets(rep occupancy.Report) (int, error) {
	prev, hasPrev, err := b.storedNeighbour(rep.DPU, rep.TS, false)
	if err != nil {
		return 0, err
	}
	next, hasNext, err := b.storedNeighbour(rep.DPU, rep.TS, true)
	if err != nil {
		return 0, err
	}
	pts := b.pts[rep.DPU]
	j := sort.Search(len(pts), func(j int) bool { return pts[j].TS > rep.TS })
	if j > 0 && (!hasPrev || pts[j-1].TS > prev.TS) {
		prev, hasPrev = pts[j-1], true
	}
	if j < len(pts) && (!hasNext || pts[j].TS < next.TS) {
		next, hasNext = pts[j], true
	}
	n := 0
	if hasPrev && occupancy.CounterReset(prev, rep) {
		n++
	}
	if hasNext && occupancy.CounterReset(rep, next) {
		n++
	}
	if hasPrev && hasNext && occupancy.CounterReset(prev, next) {
		n--
	}
	return n, nil
}

// finish writes the batch's counter resets.
func (b *reportBatch) finish(w *splitTxn) error {
	for dpu, n := range b.resets {
		k := append([]byte{pfxResets}, dpu...)
		var cur uint64
		if item, err := w.txn.Get(k); err == nil {
			if err := item.Value(func(v []byte) error {
				var m int
				if cur, m = binary.Uvarint(v); m <= 0 {
					return fmt.Errorf("malformed counter resets of %q", dpu)
				}
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := w.set(k, binary.AppendUvarint(nil, cur+uint64(n))); err != nil {
			return fmt.Errorf("write counter resets: %w", err)
		}
	}
	return nil
}

// ---- reads ----

// Reports streams stored reports (parked ones included) with from <= TS < to in
// (TS, DPU) order, an interval report before a cumulative one of the same DPU and TS.
func (s *Store) Reports(from, to int64, fn func(occupancy.Report) error) error {
	if from >= to {
		return nil
	}
	return s.view(func(txn *badger.Txn) error {
		// The two logs merged: each iterator stands at its next report in range.
		var its [2]*badger.Iterator
		var ends [2][]byte
		for i, p := range []byte{pfxInterval, pfxCumulative} {
			o := badger.DefaultIteratorOptions
			o.PrefetchValues = false
			o.Prefix = []byte{p}
			its[i] = txn.NewIterator(o)
			defer its[i].Close()
			its[i].Seek(putTS([]byte{p}, from))
			ends[i] = putTS([]byte{p}, to)
		}
		valid := func(i int) bool {
			return its[i].Valid() && bytes.Compare(its[i].Item().Key(), ends[i]) < 0
		}
		for {
			i := 0
			switch a, b := valid(0), valid(1); {
			case !a && !b:
				return nil
			case !a || (b && bytes.Compare(its[1].Item().Key()[1:], its[0].Item().Key()[1:]) < 0):
				i = 1
			}
			item := its[i].Item()
			err := item.Value(func(v []byte) error {
				r, err := decodeReport(item.Key(), v)
				if err != nil {
					return fmt.Errorf("read reports: key %x: %w", item.Key(), err)
				}
				return fn(r)
			})
			if err != nil {
				return err
			}
			its[i].Next()
		}
	})
}

// ParkedReports streams every parked report: the cumulative ones, then the interval
// ones, each in (TS, DPU) order.
func (s *Store) ParkedReports(fn func(occupancy.Report) error) error {
	return s.markedReports(pfxParkedReport, "parked", fn)
}

// LateReports streams, as ParkedReports, every report stored late whose correction
// no committed checkpoint includes yet.
func (s *Store) LateReports(fn func(occupancy.Report) error) error {
	return s.markedReports(pfxLateReport, "late", fn)
}

// markedReports streams the reports of the marks with prefix pfx.
func (s *Store) markedReports(pfx byte, what string, fn func(occupancy.Report) error) error {
	return s.scanOpen([]byte{pfx}, nil, nil, func(k, v []byte) (bool, error) {
		r, err := decodeReport(k[1:], v)
		if err != nil {
			return false, fmt.Errorf("read %s reports: key %x: %w", what, k, err)
		}
		return true, fn(r)
	})
}

// CumulativeBefore returns the last stored cumulative report of dpu with TS < t
// (its DPU, TS and totals).
func (s *Store) CumulativeBefore(dpu string, t int64) (occupancy.Report, bool, error) {
	var r occupancy.Report
	var ok bool
	err := s.view(func(txn *badger.Txn) error {
		b := &reportBatch{snap: txn}
		defer func() {
			for _, it := range b.its {
				if it != nil {
					it.Close()
				}
			}
		}()
		var err error
		r, ok, err = b.storedNeighbour(dpu, t, false)
		return err
	})
	if err != nil {
		return occupancy.Report{}, false, fmt.Errorf("read cumulative report of %s before %d: %w", dpu, t, err)
	}
	return r, ok, nil
}

// CounterResets returns the counter resets counted per cumulative DPU (DESIGN 2a:
// shown in /v1/dpus and a metric), totals kept across restarts.
func (s *Store) CounterResets() (map[string]int64, error) {
	out := map[string]int64{}
	err := s.scanOpen([]byte{pfxResets}, nil, nil, func(k, v []byte) (bool, error) {
		n, m := binary.Uvarint(v)
		if m <= 0 {
			return false, fmt.Errorf("read counter resets: malformed value of %x", k)
		}
		out[string(k[1:])] = int64(n)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- unparking ----

// unparkReport deletes the parked mark of r if present and reports 1 if it was.
func unparkReport(txn *badger.Txn, r occupancy.Report) (int64, error) {
	return deleteMark(txn, reportKey([]byte{pfxParkedReport}, r))
}

// unparkReportMarker: 'U' <gen BE> <report key>.
func unparkReportMarker(gen uint64, r occupancy.Report) []byte {
	return reportKey(binary.BigEndian.AppendUint64([]byte{pfxUnparkReport}, gen), r)
}

// ---- retention ----

// ArchivedInterval is one interval report line of an events-YYYY-MM-DD.jsonl.gz
// archive: the default payload of kind interval plus its DPU and kind, as `occupancyd
// import` reads it.
type ArchivedInterval struct {
	DPU   string `json:"dpu"`
	Kind  string `json:"kind"`
	Start string `json:"start"`
	End   string `json:"end"`
	In    int64  `json:"in"`
	Out   int64  `json:"out"`
}

// ArchivedCumulative is one cumulative report line of an events archive.
type ArchivedCumulative struct {
	DPU      string `json:"dpu"`
	Kind     string `json:"kind"`
	TS       string `json:"ts"`
	InTotal  int64  `json:"in_total"`
	OutTotal int64  `json:"out_total"`
}

func reportLine(r occupancy.Report) any {
	if r.Kind == occupancy.ReportInterval {
		return ArchivedInterval{DPU: r.DPU, Kind: r.Kind.String(), Start: fmtTS(r.Start), End: fmtTS(r.TS), In: r.In, Out: r.Out}
	}
	return ArchivedCumulative{DPU: r.DPU, Kind: r.Kind.String(), TS: fmtTS(r.TS), InTotal: r.In, OutTotal: r.Out}
}

// sweepReports archives (to the day's events file) and removes the reports with
// TS < cut, but keeps each cumulative DPU's last report before the cut: the
// baseline its next report counts from (a lost report loses nothing, however long
// the DPU was quiet).
func (s *Store) sweepReports(cut int64) error {
	if err := s.sweepReportLog(pfxInterval, cut, nil); err != nil {
		return err
	}
	return s.sweepReportLog(pfxCumulative, cut, map[string]anchor{})
}

// sweepReportLog removes the reports of one log ('n' or 'k') with TS < cut in
// chunks. With anchors, each DPU's latest report before the cut stays.
func (s *Store) sweepReportLog(p byte, cut int64, anchors map[string]anchor) error {
	idx := byte(pfxIntervalIdx)
	if p == pfxCumulative {
		idx = pfxCumulIdx
	}
	end := putTS([]byte{p}, cut)
	var from []byte
	for {
		var reps []occupancy.Report
		var keys [][]byte
		var last []byte
		err := s.alive(func() error {
			return s.scan([]byte{p}, from, end, func(k, v []byte) (bool, error) {
				last = append(last[:0], k...)
				r, err := decodeReport(k, v)
				if err != nil {
					return false, fmt.Errorf("key %x: %w", k, err)
				}
				key := append([]byte(nil), k...)
				if anchors != nil {
					// The DPU's previous anchor goes; this report is its anchor now.
					prev, had := anchors[r.DPU]
					anchors[r.DPU] = anchor{key: key, r: r}
					if !had {
						return true, nil
					}
					key, r = prev.key, prev.r
				}
				reps = append(reps, r)
				keys = append(keys, key)
				return len(keys) < sweepChunk, nil
			})
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		from = append(last, 0)
		if s.opts.ArchiveDir != "" {
			if err := archive(s.opts.ArchiveDir, "events", reps, func(r occupancy.Report) int64 { return r.TS }, reportLine); err != nil {
				return err
			}
		}
		unparked, err := s.deleteWithMarks(keys, func(k []byte) []byte { return append([]byte{pfxParkedReport}, k...) },
			func(k []byte) []byte { return dpuTSKey(idx, string(k[9:]), getTS(k[1:9])) })
		if err != nil {
			return err
		}
		s.log.Info().Int("reports", len(keys)).Int64("parked", unparked).Msg("retention removed old reports")
	}
}

// anchor is a cumulative DPU's latest report before a retention cut.
type anchor struct {
	key []byte
	r   occupancy.Report
}
