package buffer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// AppendResult is the outcome of one event of an Append call.
type AppendResult struct {
	// Duplicate: an event with the same identity was already stored (now or in an
	// earlier acknowledged call); nothing was written for it.
	Duplicate bool
	// Rejected: the event was to be parked but storage.max_parked parked events are
	// stored already; nothing was written for it (reason unknown_dpu). It may be
	// acknowledged as rejected.
	Rejected bool
}

// request states: a waiter that gives up (context done) marks its request
// abandoned; the committer then treats its written events as unconfirmed.
const (
	reqPending int32 = iota
	reqDone
	reqAbandoned
)

type request struct {
	evs       []occupancy.Event
	parked    []bool
	reps      []occupancy.Report
	repParked []bool
	dead      []DeadLetter

	res    []AppendResult
	repRes []ReportResult
	err    error
	done   chan struct{}
	state  atomic.Int32

	keys [][]byte // event and report keys written (or confirmed) by this request, for bookkeeping
}

// size is how many events and reports r carries (batches are bounded by it).
func (r *request) size() int { return len(r.evs) + len(r.reps) }

// maxIDLen bounds DPU ids and event ids (the contract allows 64 characters): an
// oversized key would fail the whole shared batch inside Badger, so it is refused
// up front, for its own caller only.
const maxIDLen = 256

func validEvent(e occupancy.Event) error {
	if e.DPU == "" || strings.IndexByte(e.DPU, 0) >= 0 {
		return fmt.Errorf("dpu id %q is empty or holds a NUL byte", e.DPU)
	}
	if len(e.DPU) > maxIDLen || len(e.ID) > maxIDLen {
		return fmt.Errorf("dpu id of %d bytes or event id of %d bytes: at most %d", len(e.DPU), len(e.ID), maxIDLen)
	}
	if e.Direction != 1 && e.Direction != -1 {
		return fmt.Errorf("direction must be 1 or -1, got %d", e.Direction)
	}
	return nil
}

// Append group-commits evs (synced) with dedup by their identity key. parked[i]
// (parked may be nil) stores a parked mark with event i in the same write; an
// event marked Late (and not parked) gets a late mark in the same write, which
// stays until a Commit lists the event in Settlement.Corrected: until then Late
// streams it, and the engine corrects for it again at start. It
// returns only once the batch holding these events is durable; res[i].Duplicate
// reports an event stored before. An error means none of this call's events may be
// acknowledged (some may be stored: a later Append of them is then reported as new,
// once, so the caller's redelivery is still counted).
func (s *Store) Append(ctx context.Context, evs []occupancy.Event, parked []bool) ([]AppendResult, error) {
	res, _, err := s.AppendMixed(ctx, evs, parked, nil, nil)
	return res, err
}

// submit hands r to the committer and waits for its result.
func (s *Store) submit(ctx context.Context, r *request) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			return ctx.Err()
		}
		<-r.done
		return r.err
	}
}

// committer is the single writer of events and dead letters. It forms batches by
// size and a short linger and commits each with one synced write.
func (s *Store) committer() {
	defer close(s.stopped)
	c := &committerState{
		unconfirmed: map[string]struct{}{},
	}
	prevReqs := 1
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *request
		select {
		case first = <-s.reqs:
		case <-s.stop:
			s.failPending()
			return
		}
		batch := []*request{first}
		n := first.size()
	drain:
		for n < s.opts.MaxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				n += r.size()
			default:
				break drain
			}
		}
		// Linger only while fewer writers than last time have come back: one writer
		// alone never waits.
		if s.opts.Linger > 0 && n < s.opts.MaxBatch && len(batch) < prevReqs {
			timer.Reset(s.opts.Linger)
		linger:
			for n < s.opts.MaxBatch && len(batch) < prevReqs {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					n += r.size()
				case <-timer.C:
					break linger
				}
			}
			// Go >= 1.23 timers: after Stop no stale tick is delivered, so no drain
			// (draining after a tick that raced with Stop would block forever).
			timer.Stop()
		}
		prevReqs = len(batch)
		s.commitBatch(c, batch)
	}
}

// closing reports whether Close has begun.
func (s *Store) closing() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *Store) failPending() {
	for {
		select {
		case r := <-s.reqs:
			r.err = ErrClosed
			close(r.done)
		default:
			return
		}
	}
}

type committerState struct {
	// unconfirmed holds event keys that may have been written by a batch whose
	// waiters were told it failed (or gave up waiting). Found again in the store,
	// such a key is reported as new once: its sender never got an ack.
	unconfirmed   map[string]struct{}
	recountParked bool
}

// commitBatch dedups and writes the batch in one synced transaction (split only
// if Badger says it is too big) and releases every waiter with its result.
func (s *Store) commitBatch(c *committerState, batch []*request) {
	err := s.writeBatch(c, batch)
	if err != nil {
		s.writeFailed(err)
		for _, r := range batch {
			for _, k := range r.keys {
				c.unconfirmed[string(k)] = struct{}{}
			}
			r.res, r.repRes = nil, nil
			r.err = err
			close(r.done)
		}
		c.recountParked = true
		return
	}
	s.writeOK()
	s.batches.Add(1)
	for _, r := range batch {
		s.batchedEvents.Add(int64(r.size()))
	}
	// Logged when trimming starts and stops failing, not at every batch.
	if err := s.trimDeadLetters(0); err != nil {
		if s.trimErr.CompareAndSwap(false, true) {
			s.log.Warn().Err(err).Msg("trimming dead letters failed (logged again once it succeeds)")
		}
	} else if s.trimErr.CompareAndSwap(true, false) {
		s.log.Info().Msg("trimming dead letters succeeds again")
	}
	for _, r := range batch {
		if r.state.CompareAndSwap(reqPending, reqDone) {
			for _, k := range r.keys {
				delete(c.unconfirmed, string(k))
			}
		} else {
			// The waiter gave up: it will not ack, the broker redelivers.
			for _, k := range r.keys {
				c.unconfirmed[string(k)] = struct{}{}
			}
			r.res, r.repRes, r.err = nil, nil, context.Canceled
		}
		close(r.done)
	}
	if c.recountParked {
		if err := s.db.View(func(txn *badger.Txn) error {
			s.parked.Store(countParked(txn))
			return nil
		}); err == nil {
			c.recountParked = false
		}
	}
}

func (s *Store) writeBatch(c *committerState, batch []*request) error {
	if err := s.space.check(); err != nil {
		return err
	}
	w := &splitTxn{db: s.db}
	w.txn = s.db.NewTransaction(true)
	defer func() { w.txn.Discard() }()

	var seen map[string]struct{}
	if len(batch) > 1 || len(batch[0].evs) > 1 {
		seen = make(map[string]struct{}, 64)
	}
	parkedNew := int64(0)
	parkedNow := s.parked.Load()
	now := s.opts.Now().UnixMilli()
	var deadNew int64
	var rb *reportBatch // made at the first report of the batch
	defer func() {
		if rb != nil {
			rb.close()
		}
	}()
	for _, r := range batch {
		r.keys = r.keys[:0]
		if r.dead != nil {
			for _, d := range r.dead {
				if d.Time == 0 {
					d.Time = now
				}
				k := deadKey(d.Time, s.deadSeq.Add(1))
				if err := w.set(k, encodeDeadLetter(d)); err != nil {
					return fmt.Errorf("write dead letter: %w", err)
				}
				deadNew++
			}
			continue
		}
		r.res = make([]AppendResult, len(r.evs))
		for i, e := range r.evs {
			if i%1024 == 1023 && s.closing() {
				// Close gives up a large batch in progress (a message of 100,000
				// events): nobody is told it is stored, and what part of it was
				// committed already is found again at the next open.
				return fmt.Errorf("write events: %w", ErrClosed)
			}
			k := prefixed(pfxEvent, e)
			if seen != nil {
				if _, dup := seen[string(k)]; dup {
					r.res[i].Duplicate = true
					continue
				}
				seen[string(k)] = struct{}{}
			}
			_, err := w.txn.Get(k)
			switch {
			case err == nil:
				if _, ok := c.unconfirmed[string(k)]; !ok {
					r.res[i].Duplicate = true
					continue
				}
				// Written by a batch whose senders were told it failed: new to
				// them, and written again so that this batch's sync covers it.
			case errors.Is(err, badger.ErrKeyNotFound):
			default:
				return fmt.Errorf("dedup lookup: %w", err)
			}
			park := r.parked != nil && r.parked[i]
			if park && s.opts.MaxParked >= 0 && parkedNow+parkedNew >= int64(s.opts.MaxParked) {
				r.res[i].Rejected = true
				continue
			}
			v := eventValue(make([]byte, 0, 8), e)
			if err := w.set(k, v); err != nil {
				return fmt.Errorf("write event: %w", err)
			}
			r.keys = append(r.keys, k)
			if park {
				pk := append([]byte{pfxParked}, k[1:]...)
				if err := w.set(pk, v); err != nil {
					return fmt.Errorf("write parked mark: %w", err)
				}
				parkedNew++
			} else if e.Late {
				if err := w.set(append([]byte{pfxLate}, k[1:]...), v); err != nil {
					return fmt.Errorf("write late mark: %w", err)
				}
			}
		}
		if len(r.reps) > 0 {
			if rb == nil {
				rb = s.newReportBatch()
			}
			if err := s.writeReports(c, w, rb, r, &parkedNew, parkedNow); err != nil {
				return err
			}
		}
	}
	if rb != nil {
		if err := rb.finish(w); err != nil {
			return err
		}
	}
	if s.hookBeforeCommit != nil {
		s.hookBeforeCommit()
	}
	if err := w.txn.Commit(); err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	s.parked.Add(parkedNew)
	s.deadN.Add(deadNew)
	return nil
}

// splitTxn is an update transaction that commits and starts over when Badger
// reports ErrTxnTooBig.
type splitTxn struct {
	db  *badger.DB
	txn *badger.Txn
}

func (w *splitTxn) set(k, v []byte) error {
	err := w.txn.Set(k, v)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.txn.Commit(); err != nil {
			return err
		}
		w.txn = w.db.NewTransaction(true)
		err = w.txn.Set(k, v)
	}
	return err
}

func (w *splitTxn) delete(k []byte) error {
	err := w.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := w.txn.Commit(); err != nil {
			return err
		}
		w.txn = w.db.NewTransaction(true)
		err = w.txn.Delete(k)
	}
	return err
}

// deleteIfPresent deletes k if it is stored and reports 1 if it was.
func (w *splitTxn) deleteIfPresent(k []byte) (int64, error) {
	_, err := w.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return 1, w.delete(k)
}

// ---- write errors and free space ----

// ErrWriteFailed is wrapped by Health while the last write failed (other than for
// lack of space) and no write has succeeded since.
var ErrWriteFailed = errors.New("storage write failed")

func (s *Store) writeFailed(err error) {
	if errors.Is(err, ErrDiskFull) || errors.Is(err, ErrClosed) {
		return // the space guard logs its own transitions; a stop is no failure
	}
	s.lastErr.Store(&err)
	if s.writeErr.CompareAndSwap(false, true) {
		s.log.Error().Err(err).Msg("storage write failed: events are not acknowledged until writes succeed again")
	}
}

func (s *Store) writeOK() {
	if s.writeErr.CompareAndSwap(true, false) {
		s.log.Info().Msg("storage writes succeed again")
	}
}

// healthProbeEvery bounds how often Health tries a write while writes fail.
const healthProbeEvery = time.Second

var keyHealthProbe = []byte("m" + "health-probe")

// Health reports whether the store accepts writes now: nil, or an error wrapping
// ErrClosed, ErrDiskFull (free space below Options.MinFreeBytes, probed afresh) or
// ErrWriteFailed (the last write failed and none succeeded since). While writes
// fail, Health tries a small synced write at most once a second, so a store that
// recovers says so without waiting for the next event.
func (s *Store) Health() error {
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := s.space.probe(true); err != nil {
		return err
	}
	if !s.writeErr.Load() {
		return nil
	}
	s.probeMu.Lock()
	if time.Since(s.probed) >= healthProbeEvery {
		s.probed = time.Now()
		if s.update(func(txn *badger.Txn) error {
			return txn.Set(keyHealthProbe, []byte(strconv.FormatInt(time.Now().UnixMilli(), 10)))
		}) == nil {
			s.writeOK()
		}
	}
	s.probeMu.Unlock()
	if !s.writeErr.Load() {
		return nil
	}
	last := errors.New("unknown error")
	if p := s.lastErr.Load(); p != nil {
		last = *p
	}
	return fmt.Errorf("%w: %w", ErrWriteFailed, last)
}

// spaceGuard refuses writes while the store's file system has less than min bytes
// free, so a full disk stops acceptance cleanly instead of failing inside Badger's
// memory-mapped files. It re-checks at most every 250ms while space is fine and on
// every write while it is short, so acceptance resumes by itself.
type spaceGuard struct {
	dir    string
	min    int64
	log    zerolog.Logger
	statfs func(dir string) (uint64, error)

	mu      sync.Mutex
	checked time.Time
	full    bool
}

func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func (g *spaceGuard) check() error { return g.probe(false) }

// probe is check; fresh probes the free space even when it was fine less than
// 250ms ago.
func (g *spaceGuard) probe(fresh bool) error {
	if g.min < 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !fresh && !g.full && time.Since(g.checked) < 250*time.Millisecond {
		return nil
	}
	free, err := g.statfs(g.dir)
	g.checked = time.Now()
	if err != nil {
		return nil // cannot tell: let the write itself report any error
	}
	if free < uint64(g.min) {
		if !g.full {
			g.full = true
			g.log.Error().Str("dir", g.dir).Uint64("free_bytes", free).Int64("min_free_bytes", g.min).
				Msg("disk is full: storage stops accepting events until space returns")
		}
		return fmt.Errorf("%w: %d bytes free in %s, need %d", ErrDiskFull, free, g.dir, g.min)
	}
	if g.full {
		g.full = false
		g.log.Info().Str("dir", g.dir).Uint64("free_bytes", free).Msg("disk space returned: storage accepts events again")
	}
	return nil
}
