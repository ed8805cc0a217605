package tracker

import (
	"fmt"
	"time"

	"github.com/occupancyd/occupancyd/buffer"
)

// StatsStore keeps the per-DPU statistics across restarts (*buffer.Store).
type StatsStore interface {
	DPURecords() (recs []buffer.DPURecord, clean bool, err error)
	PutDPURecords(recs []buffer.DPURecord, clean bool) error
	CounterResets() (map[string]int64, error)
}

// DefaultStatsInterval is how often the per-DPU statistics of the DPUs that
// changed are written to the store: a kill -9 loses at most this much of them.
const DefaultStatsInterval = 10 * time.Second

// Load continues the totals of stored records (and the counter resets the store
// counted): they become the counts at this start. With clean (the records were
// written by a clean stop) each DPU's sequence run continues, so ids that go on
// after the restart are not restarts and a gap across the restart counts; after a
// crash the runs start afresh (an id acknowledged after the last write would look
// like a gap).
func (s *DPUStats) Load(recs []buffer.DPURecord, clean bool, resets map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		d := s.peek(r.DPU)
		d.accepted, d.dups, d.rejected, d.parked = r.Accepted, r.Duplicates, r.Rejected, r.Parked
		d.restarts, d.closed, d.skew = r.Restarts, r.Gaps, r.SkewMS
		if r.HasTS {
			d.lastTS = r.LastTS
		}
		if r.HasReceived {
			d.lastRecv = r.LastReceived
		}
		if r.Seq != nil && clean {
			d.cur = seqRun{ok: true, minSeq: r.Seq.MinSeq, maxSeq: r.Seq.MaxSeq, minTS: r.Seq.MinTS, maxTS: r.Seq.MaxTS}
		}
	}
	for dpu, n := range resets {
		s.peek(dpu).resets = n
	}
	for _, d := range s.dpus {
		c := d.counts()
		d.start = &c
	}
}

// recordsChunk bounds the records Records makes under one hold of the lock.
const recordsChunk = 4096

// Records returns the records of the DPUs that changed since the last call (and
// forgets that they did; Unsaved gives them back after a failed write). DPUs that
// are not in the topology in force and had nothing stored (only rejections) are
// not kept: a stream of made-up DPU ids cannot fill the store. The lock is taken
// for recordsChunk DPUs at a time, so ingest never waits behind 100,000 of them.
func (s *DPUStats) Records() []buffer.DPURecord {
	s.mu.Lock()
	todo := s.dirty
	s.dirty = nil // a DPU changed from now on is appended anew once made clean below
	s.mu.Unlock()
	out := make([]buffer.DPURecord, 0, len(todo))
	runs := make([]buffer.SeqRun, 0, len(todo)) // one allocation for every Seq
	for len(todo) > 0 {
		part := todo[:min(len(todo), recordsChunk)]
		todo = todo[len(part):]
		s.mu.Lock()
		for _, d := range part {
			d.dirty = false
			if !d.known && d.accepted+d.dups+d.parked == 0 {
				continue
			}
			c := d.counts()
			r := buffer.DPURecord{DPU: d.id, Accepted: c.Accepted, Duplicates: c.Duplicates, Rejected: c.Rejected,
				Parked: c.Parked, Gaps: c.Gaps, Restarts: c.Restarts, SkewMS: d.skew,
				HasTS: d.lastTS != noTS, HasReceived: d.lastRecv != noTS}
			if r.HasTS {
				r.LastTS = d.lastTS
			}
			if r.HasReceived {
				r.LastReceived = d.lastRecv
			}
			if d.cur.ok {
				runs = append(runs, buffer.SeqRun{MinSeq: d.cur.minSeq, MaxSeq: d.cur.maxSeq, MinTS: d.cur.minTS, MaxTS: d.cur.maxTS})
				r.Seq = &runs[len(runs)-1]
			}
			out = append(out, r)
		}
		s.mu.Unlock()
	}
	return out
}

// Unsaved marks the DPUs of recs changed again (their write failed).
func (s *DPUStats) Unsaved(recs []buffer.DPURecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if d := s.dpus[r.DPU]; d != nil && !d.dirty {
			d.dirty = true
			s.dirty = append(s.dirty, d)
		}
	}
}

// SaveStats writes the per-DPU statistics that changed since the last save; with
// clean (the gateway stops and nothing is ingested any more) it marks them
// complete. Without a StatsStore it does nothing.
func (t *Tracker) SaveStats(clean bool) error {
	if t.statsStore == nil {
		return nil
	}
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	recs := t.stats.Records()
	if err := t.statsStore.PutDPURecords(recs, clean); err != nil {
		t.stats.Unsaved(recs)
		return fmt.Errorf("save DPU statistics: %w", err)
	}
	t.log.Debug().Int("dpus", len(recs)).Bool("clean", clean).Msg("DPU statistics saved")
	return nil
}

// loadStats continues the stored statistics and marks them incomplete until the
// next clean stop.
func (t *Tracker) loadStats() error {
	recs, clean, err := t.statsStore.DPURecords()
	if err != nil {
		return err
	}
	resets, err := t.statsStore.CounterResets()
	if err != nil {
		return fmt.Errorf("read counter resets: %w", err)
	}
	t.stats.Load(recs, clean, resets)
	if err := t.statsStore.PutDPURecords(nil, false); err != nil {
		return err
	}
	t.log.Debug().Int("dpus", len(recs)).Bool("clean", clean).Msg("DPU statistics continued")
	return nil
}
