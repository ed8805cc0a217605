package buffer

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/occupancyd/occupancyd/occupancy"
)

// sweepChunk is how many entries one sweep step archives and deletes (a variable
// for tests).
var sweepChunk = 20_000

// Run runs the retention sweeper (at once, then every SweepEvery) and value-log
// GC (every GCEvery) until ctx is done. Cancel ctx and wait for Run to return
// before Close.
func (s *Store) Run(ctx context.Context) error {
	sweep := time.NewTicker(s.opts.SweepEvery)
	defer sweep.Stop()
	gc := time.NewTicker(s.opts.GCEvery)
	defer gc.Stop()
	doSweep := func() {
		if err := s.Sweep(s.opts.Now()); err != nil && !errors.Is(err, ErrClosed) {
			s.log.Error().Err(err).Msg("retention sweep failed; retrying at the next sweep")
		}
	}
	doSweep()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			doSweep()
		case <-gc.C:
			s.valueLogGC(ctx)
		}
	}
}

// valueLogGC rewrites value-log files until Badger finds nothing worth rewriting.
func (s *Store) valueLogGC(ctx context.Context) {
	for ctx.Err() == nil {
		var err error
		if cerr := s.alive(func() error { err = s.db.RunValueLogGC(0.5); return nil }); cerr != nil {
			return
		}
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn().Err(err).Msg("value-log GC failed")
			}
			return
		}
	}
}

// alive runs fn unless the store is closed; Close waits for it.
func (s *Store) alive(fn func() error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return fn()
}

// Sweep applies retention as of now: events and reports (parked ones included),
// occupancy rows and manual resets with ts < now - Retention are removed, events,
// reports and rows first appended to the day files in ArchiveDir when it is set
// (reports to the events files, beside the events). For each space the last
// row before the cut is kept: it holds the value the space had at the cut, which
// queries from the cut on start from; likewise each cumulative DPU's last
// report before the cut, which its next report counts from. Dead letters older than
// DeadLetterAge go too.
//
// A crash between archiving and deleting archives those entries again at the next
// sweep; `occupancyd import` counts such repeats once.
func (s *Store) Sweep(now time.Time) error {
	if err := s.alive(func() error {
		return s.trimDeadLetters(now.Add(-s.opts.DeadLetterAge).UnixMilli())
	}); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if s.opts.Retention <= 0 {
		return nil
	}
	cut := now.Add(-s.opts.Retention).UnixMilli()
	if err := s.sweepEvents(cut); err != nil {
		return fmt.Errorf("sweep events: %w", err)
	}
	if err := s.sweepReports(cut); err != nil {
		return fmt.Errorf("sweep reports: %w", err)
	}
	if err := s.sweepRows(cut); err != nil {
		return fmt.Errorf("sweep rows: %w", err)
	}
	if err := s.sweepResets(cut); err != nil {
		return fmt.Errorf("sweep resets: %w", err)
	}
	return nil
}

func (s *Store) sweepEvents(cut int64) error {
	end := putTS([]byte{pfxEvent}, cut)
	var from []byte // resume after the last chunk: no walking over its tombstones
	for {
		var evs []occupancy.Event
		var keys [][]byte
		err := s.alive(func() error {
			return s.scan([]byte{pfxEvent}, from, end, func(k, v []byte) (bool, error) {
				e, err := decodeEvent(k[1:], v)
				if err != nil {
					return false, fmt.Errorf("key %x: %w", k, err)
				}
				evs = append(evs, e)
				keys = append(keys, append([]byte(nil), k...))
				return len(keys) < sweepChunk, nil
			})
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		from = append(append([]byte(nil), keys[len(keys)-1]...), 0)
		if s.opts.ArchiveDir != "" {
			if err := archive(s.opts.ArchiveDir, "events", evs, func(e occupancy.Event) int64 { return e.TS }, eventLine); err != nil {
				return err
			}
		}
		unparked, err := s.deleteWithMarks(keys, func(k []byte) []byte { return append([]byte{pfxParked}, k[1:]...) }, nil)
		if err != nil {
			return err
		}
		s.log.Info().Int("events", len(keys)).Int64("parked", unparked).Msg("retention removed old events")
	}
}

// deleteWithMarks deletes keys, with the parked mark mark(k) of each (counted off
// the parked total) and, when index is set, its index key index(k), serialised with
// the other non-event writers. It returns how many parked marks went.
func (s *Store) deleteWithMarks(keys [][]byte, mark, index func(k []byte) []byte) (int64, error) {
	var unparked int64
	err := s.alive(func() error {
		s.commitMu.Lock()
		defer s.commitMu.Unlock()
		unparked = 0
		return s.chunked(len(keys), func(w *splitTxn, i int) error {
			n, err := w.deleteIfPresent(mark(keys[i]))
			if err != nil {
				return err
			}
			unparked += n
			if index != nil {
				if err := w.delete(index(keys[i])); err != nil {
					return err
				}
			}
			return w.delete(keys[i])
		})
	})
	if err != nil {
		return 0, err
	}
	s.parked.Add(-unparked)
	return unparked, nil
}

func (s *Store) sweepRows(cut int64) error {
	from := []byte{pfxRow} // resume where the last chunk stopped
	for {
		var rows []occupancy.Row
		var keys [][]byte
		err := s.alive(func() error {
			return s.db.View(func(txn *badger.Txn) error {
				o := badger.DefaultIteratorOptions
				o.PrefetchValues = false
				o.Prefix = []byte{pfxRow}
				it := txn.NewIterator(o)
				defer it.Close()
				it.Seek(from)
				for it.Valid() && len(keys) < sweepChunk {
					k := it.Item().Key()
					sp, ts, _, err := parseRowKey(k)
					if err != nil {
						return err
					}
					if ts >= cut {
						it.Seek(prefixEnd(rowPrefix(sp)))
						continue
					}
					// Keep the space's last row before the cut: peek at the next one.
					cur := it.Item().KeyCopy(nil)
					var r occupancy.Row
					if err := it.Item().Value(func(v []byte) error {
						var err error
						r, err = decodeRow(cur, v)
						return err
					}); err != nil {
						return err
					}
					it.Next()
					if !it.Valid() {
						break
					}
					nsp, nts, _, err := parseRowKey(it.Item().Key())
					if err != nil {
						return err
					}
					if nsp == sp && nts < cut {
						rows = append(rows, r)
						keys = append(keys, cur)
					}
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		// The last deleted key's successor: the rows after it (its space's anchor
		// included) are looked at again by the next chunk.
		from = append(append([]byte(nil), keys[len(keys)-1]...), 0)
		if s.opts.ArchiveDir != "" {
			if err := archive(s.opts.ArchiveDir, "occupancy", rows, func(r occupancy.Row) int64 { return r.TS }, rowLine); err != nil {
				return err
			}
		}
		if err := s.sweepDelete(keys); err != nil {
			return err
		}
		s.log.Info().Int("rows", len(keys)).Msg("retention removed old occupancy rows")
	}
}

func (s *Store) sweepResets(cut int64) error {
	var keys [][]byte
	end := putTS([]byte{pfxReset}, cut)
	err := s.alive(func() error {
		return s.scan([]byte{pfxReset}, nil, end, func(k, _ []byte) (bool, error) {
			keys = append(keys, append([]byte(nil), k...))
			return true, nil
		})
	})
	if err != nil || len(keys) == 0 {
		return err
	}
	return s.sweepDelete(keys)
}

// sweepDelete deletes keys, serialised with the other non-event writers (no
// free-space check: the sweep only removes).
func (s *Store) sweepDelete(keys [][]byte) error {
	return s.alive(func() error {
		s.commitMu.Lock()
		defer s.commitMu.Unlock()
		return s.chunked(len(keys), func(w *splitTxn, i int) error { return w.delete(keys[i]) })
	})
}

const tsLayout = "2006-01-02T15:04:05.000Z07:00"

func fmtTS(ms int64) string { return time.UnixMilli(ms).UTC().Format(tsLayout) }

// ArchivedEvent is one line of an events-YYYY-MM-DD.jsonl.gz archive: the DESIGN
// event object plus its DPU, as `occupancyd import` reads it.
type ArchivedEvent struct {
	DPU       string `json:"dpu"`
	ID        string `json:"id,omitempty"`
	TS        string `json:"ts"`
	Direction int8   `json:"direction"`
}

// ArchivedRow is one line of an occupancy-YYYY-MM-DD.jsonl.gz archive.
type ArchivedRow struct {
	Space     string `json:"space"`
	TS        string `json:"ts"`
	Seq       uint32 `json:"seq"`
	Occupancy int64  `json:"occupancy"`
	Entrances int32  `json:"entrances"`
	Exits     int32  `json:"exits"`
	Kind      string `json:"kind"`
}

func eventLine(e occupancy.Event) any {
	return ArchivedEvent{DPU: e.DPU, ID: e.ID, TS: fmtTS(e.TS), Direction: e.Direction}
}

// KindName is the archive name of an entry kind.
func KindName(k occupancy.EntryKind) string {
	switch k {
	case occupancy.KindEvent:
		return "event"
	case occupancy.KindReset:
		return "reset"
	case occupancy.KindCorrection:
		return "correction"
	case occupancy.KindMove:
		return "move"
	case occupancy.KindReport:
		return "report"
	}
	return fmt.Sprintf("kind-%d", k)
}

func rowLine(r occupancy.Row) any {
	return ArchivedRow{Space: r.Space, TS: fmtTS(r.TS), Seq: r.Seq, Occupancy: r.Occupancy,
		Entrances: r.Entrances, Exits: r.Exits, Kind: KindName(r.Kind)}
}

// archive appends items, grouped by the UTC day of their ts, to
// <dir>/<name>-YYYY-MM-DD.jsonl.gz, each write as a new gzip member, synced.
func archive[T any](dir, name string, items []T, ts func(T) int64, line func(T) any) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	byDay := map[string][]T{}
	for _, it := range items {
		d := time.UnixMilli(ts(it)).UTC().Format("2006-01-02")
		byDay[d] = append(byDay[d], it)
	}
	days := make([]string, 0, len(byDay))
	for d := range byDay {
		days = append(days, d)
	}
	sort.Strings(days)
	for _, d := range days {
		p := filepath.Join(dir, name+"-"+d+".jsonl.gz")
		if err := appendGzipLines(p, byDay[d], line); err != nil {
			return fmt.Errorf("archive %s: %w", p, err)
		}
	}
	return nil
}

func appendGzipLines[T any](path string, items []T, line func(T) any) (err error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 64<<10)
	gz := gzip.NewWriter(bw)
	enc := json.NewEncoder(gz)
	for _, it := range items {
		if err := enc.Encode(line(it)); err != nil {
			return err
		}
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if created {
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			_ = d.Close()
		}
	}
	return nil
}
