package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"

	"github.com/occupancyd/occupancyd/occupancy"
)

// PutReset stores a manual reset (synced). A reset of the same space at the same
// instant replaces the earlier one.
func (s *Store) PutReset(r occupancy.Reset) error {
	if r.Space == "" {
		return errors.New("put reset: empty space id")
	}
	if err := s.update(func(txn *badger.Txn) error {
		return txn.Set(resetKey(r), binary.AppendVarint(nil, r.Occupancy))
	}); err != nil {
		return fmt.Errorf("put reset of %s: %w", r.Space, err)
	}
	return nil
}

// update runs fn in one synced transaction, serialised with the other non-event
// writers and refused while the disk is full.
func (s *Store) update(fn func(*badger.Txn) error) error {
	return s.write(func() error { return s.db.Update(fn) })
}

// write runs fn serialised with the other non-event writers, unless the store is
// closed or the disk is full; fn's error is logged as a failed write.
func (s *Store) write(fn func() error) error {
	return s.writeAside(func() error {
		s.commitMu.Lock()
		defer s.commitMu.Unlock()
		return fn()
	})
}

// writeAside runs fn unless the store is closed or the disk is full, not
// serialised with the other writers (fn writes keys no other writer touches); fn's
// error is logged as a failed write.
func (s *Store) writeAside(fn func() error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.space.check(); err != nil {
		return err
	}
	if err := fn(); err != nil {
		s.writeFailed(err)
		return err
	}
	s.writeOK()
	return nil
}

var keyUnparkGen = []byte("m" + "unpark-gen")

// Commit writes a settlement: it deletes rows from st.RewriteFrom on when set,
// writes st.Rows, removes the parked marks of st.Unparked and the late marks of
// st.Corrected (and st.CorrectedReports) and stores the checkpoint, all in one synced transaction when
// Badger takes it whole.
//
// When it is too big for one transaction (a tick that settles very many rows, a
// large unpark, an import rewrite) it is written in steps that keep the same
// outcome after a crash at any point:
//  1. rows with TS >= RewriteFrom are deleted (import only; the daemon is stopped);
//  2. rows are written: idempotent, the engine writes the same rows again after
//     a restart from the previous checkpoint;
//  3. each unparked event gets an unpark marker tagged with a new generation;
//  4. one transaction stores the checkpoint and the generation: the commit point;
//  5. the parked marks and markers are removed. Open finishes step 5 after a
//     crash (generation committed) or drops the markers (not committed), so
//     parked events are never lost and never applied twice;
//  6. the late marks of st.Corrected are removed. A crash before leaves them: the
//     engine corrects for them again at start, which changes nothing (a
//     correction is absolute).
func (s *Store) Commit(st occupancy.Settlement) error {
	cp, err := json.Marshal(st.Checkpoint)
	if err != nil {
		return fmt.Errorf("commit settlement: %w", err)
	}
	var unparked int64
	err = s.write(func() error {
		if len(st.Rows)+len(st.Unparked)+len(st.UnparkedReports)+len(st.Corrected)+len(st.CorrectedReports)+1 > s.txnEntries() {
			// Certainly too big for one transaction: no need to try.
			var err error
			unparked, err = s.commitInSteps(st, cp)
			return err
		}
		err := s.db.Update(func(txn *badger.Txn) error {
			unparked = 0
			if st.RewriteFrom > 0 {
				if err := deleteRowsFrom(txn, st.RewriteFrom); err != nil {
					return err
				}
			}
			for _, r := range st.Rows {
				if err := txn.Set(rowKey(r.Space, r.TS, r.Seq), rowValue(r)); err != nil {
					return err
				}
			}
			for _, e := range st.Unparked {
				n, err := unpark(txn, e)
				if err != nil {
					return err
				}
				unparked += n
			}
			for _, r := range st.UnparkedReports {
				n, err := unparkReport(txn, r)
				if err != nil {
					return err
				}
				unparked += n
			}
			for _, e := range st.Corrected {
				if err := txn.Delete(prefixed(pfxLate, e)); err != nil {
					return err
				}
			}
			for _, r := range st.CorrectedReports {
				if err := txn.Delete(reportKey([]byte{pfxLateReport}, r)); err != nil {
					return err
				}
			}
			return txn.Set(keyCheckpoint, cp)
		})
		if errors.Is(err, badger.ErrTxnTooBig) {
			unparked, err = s.commitInSteps(st, cp)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("commit settlement: %w", err)
	}
	s.parked.Add(-unparked)
	return nil
}

// txnEntries is about how many entries Badger takes in one transaction (it allows
// 15% of a memtable, counted in skiplist nodes), with a margin.
func (s *Store) txnEntries() int {
	return int(s.opts.MemTableSize*15/100) / skl.MaxNodeSize * 9 / 10
}

// unpark deletes the parked mark of e if present and reports 1 if it was.
func unpark(txn *badger.Txn, e occupancy.Event) (int64, error) {
	return deleteMark(txn, prefixed(pfxParked, e))
}

// deleteMark deletes the parked mark pk if present and reports 1 if it was.
func deleteMark(txn *badger.Txn, pk []byte) (int64, error) {
	_, err := txn.Get(pk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return 1, txn.Delete(pk)
}

// deleteRowsFrom deletes every settled row with TS >= from (all spaces) in txn.
func deleteRowsFrom(txn *badger.Txn, from int64) error {
	keys, err := rowKeysFrom(txn, from)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func rowKeysFrom(txn *badger.Txn, from int64) ([][]byte, error) {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = []byte{pfxRow}
	it := txn.NewIterator(o)
	defer it.Close()
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		_, ts, _, err := parseRowKey(k)
		if err != nil {
			return nil, err
		}
		if ts >= from {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
	}
	return keys, nil
}

func (s *Store) commitInSteps(st occupancy.Settlement, cp []byte) (int64, error) {
	s.steppedCommits.Add(1)
	if st.RewriteFrom > 0 {
		var keys [][]byte
		if err := s.db.View(func(txn *badger.Txn) error {
			var err error
			keys, err = rowKeysFrom(txn, st.RewriteFrom)
			return err
		}); err != nil {
			return 0, fmt.Errorf("list rows to rewrite: %w", err)
		}
		if err := s.chunked(len(keys), func(w *splitTxn, i int) error { return w.delete(keys[i]) }); err != nil {
			return 0, fmt.Errorf("delete rows to rewrite: %w", err)
		}
	}
	if err := s.chunked(len(st.Rows), func(w *splitTxn, i int) error {
		r := st.Rows[i]
		return w.set(rowKey(r.Space, r.TS, r.Seq), rowValue(r))
	}); err != nil {
		return 0, fmt.Errorf("write rows: %w", err)
	}
	gen, err := s.unparkGen()
	if err != nil {
		return 0, err
	}
	gen++
	genb := binary.BigEndian.AppendUint64(nil, gen)
	if err := s.chunked(len(st.Unparked)+len(st.UnparkedReports), func(w *splitTxn, i int) error {
		if i >= len(st.Unparked) {
			return w.set(unparkReportMarker(gen, st.UnparkedReports[i-len(st.Unparked)]), nil)
		}
		return w.set(unparkMarker(gen, st.Unparked[i]), nil)
	}); err != nil {
		return 0, fmt.Errorf("write unpark markers: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(keyUnparkGen, genb); err != nil {
			return err
		}
		return txn.Set(keyCheckpoint, cp)
	}); err != nil {
		return 0, fmt.Errorf("write checkpoint: %w", err)
	}
	n, err := s.finishUnpark(gen)
	if err != nil {
		// The checkpoint is committed: the caller must not retry it. Open finishes.
		s.log.Error().Err(err).Msg("removing unparked marks failed; it is finished at the next start")
	}
	if err := s.chunked(len(st.Corrected)+len(st.CorrectedReports), func(w *splitTxn, i int) error {
		if i >= len(st.Corrected) {
			return w.delete(reportKey([]byte{pfxLateReport}, st.CorrectedReports[i-len(st.Corrected)]))
		}
		return w.delete(prefixed(pfxLate, st.Corrected[i]))
	}); err != nil {
		s.log.Error().Err(err).Msg("removing late marks failed; the engine corrects for them again at the next start")
	}
	return n, nil
}

// unparkMarker: 'u' <gen BE> <eventKey>.
func unparkMarker(gen uint64, e occupancy.Event) []byte {
	k := binary.BigEndian.AppendUint64([]byte{'u'}, gen)
	return e.AppendKey(k)
}

func (s *Store) unparkGen() (uint64, error) {
	var gen uint64
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := get(txn, keyUnparkGen, func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("malformed unpark generation of %d bytes", len(v))
			}
			gen = binary.BigEndian.Uint64(v)
			return nil
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read unpark generation: %w", err)
	}
	return gen, nil
}

// finishUnpark resolves every unpark marker: generations up to committed delete
// their parked mark; later (uncommitted) ones are dropped. It returns how many
// parked marks it removed.
func (s *Store) finishUnpark(committed uint64) (int64, error) {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		for _, p := range []byte{'u', pfxUnparkReport} {
			o := badger.DefaultIteratorOptions
			o.PrefetchValues = false
			o.Prefix = []byte{p}
			it := txn.NewIterator(o)
			for it.Rewind(); it.Valid(); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	var removed int64
	err = s.chunked(len(keys), func(w *splitTxn, i int) error {
		k := keys[i]
		if len(k) < 9 {
			return w.delete(k)
		}
		if binary.BigEndian.Uint64(k[1:9]) <= committed {
			mark := pfxParked // 'u' markers: events; 'U': reports, whose keys carry their prefix
			if k[0] == pfxUnparkReport {
				mark = pfxParkedReport
			}
			n, err := w.deleteIfPresent(append([]byte{byte(mark)}, k[9:]...))
			if err != nil {
				return err
			}
			removed += n
		}
		return w.delete(k)
	})
	return removed, err
}

// chunked runs n steps in as few synced transactions as Badger allows.
func (s *Store) chunked(n int, step func(w *splitTxn, i int) error) error {
	if n == 0 {
		return nil
	}
	w := &splitTxn{db: s.db, txn: s.db.NewTransaction(true)}
	defer func() { w.txn.Discard() }()
	for i := 0; i < n; i++ {
		if err := step(w, i); err != nil {
			return err
		}
	}
	return w.txn.Commit()
}

// ---- dead letters ----

// DeadLetter is one rejected message, kept for the API. A message of many rejected
// events is one dead letter: Reason and Detail are its first rejection's, Count
// the rejected events, Reasons their number per reason, Sample a few of them.
type DeadLetter struct {
	Time    int64          `json:"time"` // Unix ms; 0 = now
	Topic   string         `json:"topic"`
	Reason  string         `json:"reason"`
	Detail  string         `json:"detail,omitempty"`
	Payload []byte         `json:"payload,omitempty"` // cut to 1 KiB
	Count   int            `json:"count,omitempty"`   // rejected events (0: one)
	Reasons map[string]int `json:"reasons,omitempty"` // rejected events per reason, when more than one reason
	Sample  []DeadSample   `json:"sample,omitempty"`  // a few of the rejected events
}

// DeadSample is one rejected event of a dead letter: its position in the message's
// JSON array (-1: the message or its one event), reason and detail.
type DeadSample struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// MaxDeadPayload is how much of a rejected payload is kept.
const MaxDeadPayload = 1024

func encodeDeadLetter(d DeadLetter) []byte {
	b, _ := json.Marshal(d) // plain strings, numbers and bytes: cannot fail
	return b
}

// PutDeadLetter stores one dead letter (PutDeadLetters).
func (s *Store) PutDeadLetter(d DeadLetter) error { return s.PutDeadLetters([]DeadLetter{d}) }

// PutDeadLetters stores dead letters in one synced write (through the group
// committer, beside the events). Payloads are cut to 1 KiB. Dead letters are
// bounded by count (oldest go first) and by age.
func (s *Store) PutDeadLetters(ds []DeadLetter) error {
	if len(ds) == 0 {
		return nil
	}
	own := make([]DeadLetter, len(ds))
	for i, d := range ds {
		if len(d.Payload) > MaxDeadPayload {
			d.Payload = d.Payload[:MaxDeadPayload]
		}
		d.Payload = bytes.Clone(d.Payload)
		own[i] = d
	}
	r := &request{dead: own, done: make(chan struct{})}
	if err := s.submit(context.Background(), r); err != nil {
		return fmt.Errorf("put dead letters: %w", err)
	}
	return nil
}

// DeadLetters returns up to limit dead letters, newest first (limit <= 0: all).
func (s *Store) DeadLetters(limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.view(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Reverse = true
		o.Prefix = []byte{pfxDead}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek([]byte{pfxDead + 1}); it.Valid(); it.Next() {
			if limit > 0 && len(out) >= limit {
				return nil
			}
			var d DeadLetter
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				return fmt.Errorf("decode dead letter %x: %w", it.Item().Key(), err)
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return out, nil
}

// trimDeadLetters deletes dead letters over the count bound (oldest first) and,
// with before > 0, those older than before (Unix ms).
func (s *Store) trimDeadLetters(before int64) error {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	excess := s.deadN.Load() - int64(s.opts.MaxDeadLetters)
	if excess <= 0 && before <= 0 {
		return nil
	}
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte{pfxDead}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if int64(len(keys)) < excess || (before > 0 && len(k) >= 9 && getTS(k[1:]) < before) {
				keys = append(keys, it.Item().KeyCopy(nil))
				continue
			}
			break
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list dead letters to trim: %w", err)
	}
	if err := s.chunked(len(keys), func(w *splitTxn, i int) error { return w.delete(keys[i]) }); err != nil {
		return fmt.Errorf("trim dead letters: %w", err)
	}
	s.deadN.Add(-int64(len(keys)))
	return nil
}
