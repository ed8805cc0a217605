// Package buffer is occupancyd's durable store on Badger: the event log with group
// commit and dedup, parked events, dead letters, the engine's settled rows,
// checkpoints and topology versions, and retention with archiving. It is the only
// package that imports Badger.
package buffer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// ErrLocked is returned (wrapped) by Open when another process holds the store.
var ErrLocked = errors.New("store is in use by another process")

// ErrDiskFull is returned (wrapped) by writes while free space in the store's
// directory is below Options.MinFreeBytes. Writes are accepted again as soon as
// space returns.
var ErrDiskFull = errors.New("disk is full")

// ErrClosed is returned by operations on a closed store.
var ErrClosed = errors.New("store is closed")

// Options configure a Store. Zero values take the defaults noted.
type Options struct {
	Dir        string
	Retention  time.Duration // events and rows older than this are archived and removed; 0 = keep forever
	ArchiveDir string        // "" = no archive
	MaxParked  int           // parked events at most (default 1,000,000; < 0 = unbounded)
	Logger     zerolog.Logger
	Linger     time.Duration // group-commit linger (default 1ms; < 0 = none)
	MaxBatch   int           // events per committed batch (default 4096)
	Now        func() time.Time

	MaxDeadLetters int           // dead letters kept at most (default 10,000)
	DeadLetterAge  time.Duration // dead letters older than this are removed (default 7 days)
	MinFreeBytes   int64         // writes fail with ErrDiskFull below this much free space (default 256 MiB; < 0 = no check)
	// FreeSpace is the free-space probe of the MinFreeBytes guard: the bytes free to
	// an unprivileged writer in dir (default: statfs). Tests substitute one to fill
	// the disk without filling it.
	FreeSpace    func(dir string) (uint64, error)
	SweepEvery   time.Duration // retention sweep interval of Run (default 10m)
	GCEvery      time.Duration // value-log GC interval of Run (default 5m)
	MemTableSize int64         // Badger memtable size (default 16 MiB; see Open)
}

func (o *Options) defaults() {
	if o.MaxParked == 0 {
		o.MaxParked = 1_000_000
	}
	if o.Linger == 0 {
		o.Linger = time.Millisecond
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxDeadLetters <= 0 {
		o.MaxDeadLetters = 10_000
	}
	if o.DeadLetterAge <= 0 {
		o.DeadLetterAge = 7 * 24 * time.Hour
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = 256 << 20
	}
	if o.FreeSpace == nil {
		o.FreeSpace = statfsFree
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = 10 * time.Minute
	}
	if o.GCEvery <= 0 {
		o.GCEvery = 5 * time.Minute
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 16 << 20
	}
}

// Store is the durable store. It is safe for concurrent use.
type Store struct {
	opts Options
	db   *badger.DB
	log  zerolog.Logger
	lock *os.File

	reqs     chan *request
	stop     chan struct{}
	stopped  chan struct{}
	closeMu  sync.RWMutex // held for reading by writers in flight; Close takes it for writing
	closed   bool
	parked   atomic.Int64
	deadSeq  atomic.Uint64
	deadN    atomic.Int64
	commitMu sync.Mutex // serialises Commit/PutReset/PutVersion/sweep deletes
	deadMu   sync.Mutex // serialises dead-letter trimming

	space    spaceGuard
	writeErr atomic.Bool // a write error was logged and not yet cleared
	lastErr  atomic.Pointer[error]
	trimErr  atomic.Bool // trimming dead letters failed and has not succeeded since
	probeMu  sync.Mutex  // one write probe at a time (Health)
	probed   time.Time   // when Health last probed a failing store

	batches          atomic.Int64 // committed event batches
	batchedEvents    atomic.Int64 // events in committed batches (duplicates included)
	steppedCommits   atomic.Int64 // settlements too big for one transaction (tests)
	hookBeforeCommit func()       // tests: runs in the committer before each batch's commit
}

// Open opens (creating if needed) the store in opts.Dir. A store held by another
// process fails at once with an error wrapping ErrLocked.
func Open(opts Options) (*Store, error) {
	opts.defaults()
	if opts.Dir == "" {
		return nil, errors.New("open store: storage directory is empty")
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if err := removeEmptyLogs(opts.Dir, log); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	// Badger's memory is Go heap (no jemalloc build), so under GOGC=100 it costs the
	// gateway twice its size in RSS. What it holds at its peak is the memtables (an
	// arena of 1.3x MemTableSize each), the builder of the L0 table a flush writes
	// (the whole memtable again), and the table builders and decompressed blocks of an
	// L0 -> base compaction, which merges every L0 table at once. 16 MiB memtables,
	// two of them (one filling while the other is flushed; a 16 MiB memtable fills in
	// seconds at 20,000 events/s and flushes in well under one) and compactions
	// starting at 3 L0 tables instead of 5 bring the peak live heap of 6M appended
	// events from 153 to 85 MB (BenchmarkAppendMemory) at the same throughput.
	bo := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(3).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(32 << 20). // table indexes and bloom filters cached, not all resident
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(min(1<<20, 15*opts.MemTableSize/100/2)).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithDetectConflicts(false).
		WithMetricsEnabled(false)
	db, err := badger.Open(bo)
	if err != nil {
		_ = lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open store %s: %w", opts.Dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	s := &Store{
		opts:    opts,
		db:      db,
		log:     log,
		lock:    lock,
		reqs:    make(chan *request, 1024),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	s.space = spaceGuard{dir: opts.Dir, min: opts.MinFreeBytes, log: log, statfs: opts.FreeSpace}
	if err := s.init(); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	go s.committer()
	return s, nil
}

// init checks the schema and counts parked events and dead letters.
func (s *Store) init() error {
	err := s.db.Update(func(txn *badger.Txn) error {
		ok, err := get(txn, keySchema, func(v []byte) error {
			if string(v) != schemaVersion {
				return fmt.Errorf("store schema %q, this build reads %q", v, schemaVersion)
			}
			return nil
		})
		if err != nil || ok {
			return err
		}
		return txn.Set(keySchema, []byte(schemaVersion))
	})
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	gen, err := s.unparkGen()
	if err != nil {
		return err
	}
	if _, err := s.finishUnpark(gen); err != nil {
		return fmt.Errorf("finish interrupted unpark: %w", err)
	}
	var parked, dead int64
	var lastDead uint64
	err = s.db.View(func(txn *badger.Txn) error {
		parked = countParked(txn)
		dead = countPrefix(txn, []byte{pfxDead})
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Reverse = true
		o.Prefix = []byte{pfxDead}
		it := txn.NewIterator(o)
		defer it.Close()
		it.Seek([]byte{pfxDead + 1})
		if it.Valid() {
			k := it.Item().Key()
			if len(k) == 17 {
				lastDead = binary.BigEndian.Uint64(k[9:])
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("count parked events: %w", err)
	}
	s.parked.Store(parked)
	s.deadN.Store(dead)
	// Dead-letter keys are (time, seq): seqs continue past any stored one and the
	// wall clock, so a restart never reuses a key.
	s.deadSeq.Store(max(lastDead, uint64(time.Now().UnixNano())))
	return nil
}

// countParked counts the parked marks of events and reports.
func countParked(txn *badger.Txn) int64 {
	return countPrefix(txn, []byte{pfxParked}) + countPrefix(txn, []byte{pfxParkedReport})
}

func countPrefix(txn *badger.Txn, p []byte) int64 {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = p
	it := txn.NewIterator(o)
	defer it.Close()
	var n int64
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// Close stops the committer (failing queued writes with ErrClosed) and closes Badger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.stop)
	<-s.stopped
	err := s.db.Close()
	if lerr := s.lock.Close(); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Stats are cumulative counters of the group committer since Open.
type Stats struct {
	Batches int64 // synced batches committed
	Events  int64 // events handed to those batches, duplicates included
}

// Stats returns the committer's counters (Events/Batches is the mean batch size).
func (s *Store) Stats() Stats {
	return Stats{Batches: s.batches.Load(), Events: s.batchedEvents.Load()}
}

// ParkedCount is the number of parked events stored.
func (s *Store) ParkedCount() int { return int(s.parked.Load()) }

// removeEmptyLogs deletes zero-length Badger memtable (.mem) and value-log (.vlog)
// files. A kill between a log file's creation and its first write leaves one
// behind, and Badger v4.9.6 then refuses to open the directory with "Create a new
// file" (dgraph-io/badger#2207). An empty file holds no data, so removing it is safe.
func removeEmptyLogs(dir string, log zerolog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list store: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || (filepath.Ext(name) != ".mem" && filepath.Ext(name) != ".vlog") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		if fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("remove empty log file: %w", err)
			}
			log.Warn().Str("file", name).Msg("removed an empty log file left by a crash")
		}
	}
	return nil
}

// lockDir takes an exclusive, non-blocking flock on <dir>/occupancyd.lock and
// writes our pid into it. Badger's own directory lock stays as a second guard.
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, "occupancyd.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(p)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := ""
			if o := string(bytes.TrimSpace(owner)); o != "" {
				who = " (pid " + o + ")"
			}
			return nil, fmt.Errorf("open store %s%s: %w", dir, who, ErrLocked)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// badgerLogger forwards Badger's warnings and errors to zerolog; info and debug
// chatter is dropped.
type badgerLogger struct{ l zerolog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error().Msg("badger: " + trimNL(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn().Msg("badger: " + trimNL(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

func trimNL(s string) string { return strings.TrimRight(s, "\n ") }

// ---- reads (occupancy.Store) ----

var _ occupancy.Store = (*Store)(nil)

// Checkpoint returns the last committed checkpoint, ok=false on a new store.
func (s *Store) Checkpoint() (occupancy.Checkpoint, bool, error) {
	var cp occupancy.Checkpoint
	var ok bool
	err := s.view(func(txn *badger.Txn) error {
		var err error
		ok, err = get(txn, keyCheckpoint, func(v []byte) error { return json.Unmarshal(v, &cp) })
		return err
	})
	if err != nil {
		return occupancy.Checkpoint{}, false, fmt.Errorf("read checkpoint: %w", err)
	}
	return cp, ok, nil
}

// get calls fn with the value of k (valid only during the call); ok is false
// when k is not stored.
func get(txn *badger.Txn, k []byte, fn func(v []byte) error) (ok bool, err error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, it.Value(fn)
}

// Events streams stored events with from <= TS < to in (TS, DPU, ID) order.
func (s *Store) Events(from, to int64, fn func(occupancy.Event) error) error {
	if from >= to {
		return nil
	}
	start := putTS([]byte{pfxEvent}, from)
	end := putTS([]byte{pfxEvent}, to)
	return s.scanOpen([]byte{pfxEvent}, start, end, func(k, v []byte) (bool, error) {
		e, err := decodeEvent(k[1:], v)
		if err != nil {
			return false, fmt.Errorf("read events: key %x: %w", k, err)
		}
		return true, fn(e)
	})
}

// Resets streams stored manual resets with TS >= from, ordered by TS.
func (s *Store) Resets(from int64, fn func(occupancy.Reset) error) error {
	start := putTS([]byte{pfxReset}, from)
	return s.scanOpen([]byte{pfxReset}, start, nil, func(k, v []byte) (bool, error) {
		if len(k) < 10 {
			return false, fmt.Errorf("read resets: malformed key %x", k)
		}
		occ, n := binary.Varint(v)
		if n <= 0 {
			return false, fmt.Errorf("read resets: malformed value for key %x", k)
		}
		return true, fn(occupancy.Reset{Space: string(k[9:]), TS: getTS(k[1:]), Occupancy: occ})
	})
}

// Parked streams every parked event in (TS, DPU, ID) order.
func (s *Store) Parked(fn func(occupancy.Event) error) error {
	return s.marked(pfxParked, "parked", fn)
}

// Late streams, in (TS, DPU, ID) order, every event stored late whose correction
// no committed checkpoint includes yet (see Append and Commit).
func (s *Store) Late(fn func(occupancy.Event) error) error {
	return s.marked(pfxLate, "late", fn)
}

// marked streams the events of the marks with prefix pfx.
func (s *Store) marked(pfx byte, what string, fn func(occupancy.Event) error) error {
	return s.scanOpen([]byte{pfx}, nil, nil, func(k, v []byte) (bool, error) {
		e, err := decodeEvent(k[1:], v)
		if err != nil {
			return false, fmt.Errorf("read %s events: key %x: %w", what, k, err)
		}
		return true, fn(e)
	})
}

// RowAt returns the last settled row of space with TS <= t.
func (s *Store) RowAt(space string, t int64) (occupancy.Row, bool, error) {
	var r occupancy.Row
	var ok bool
	p := rowPrefix(space)
	err := s.view(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Reverse = true
		o.Prefix = p
		it := txn.NewIterator(o)
		defer it.Close()
		it.Seek(rowKey(space, t, ^uint32(0)))
		if !it.Valid() {
			return nil
		}
		item := it.Item()
		return item.Value(func(v []byte) error {
			var err error
			r, err = decodeRow(item.Key(), v)
			ok = err == nil
			return err
		})
	})
	if err != nil {
		return occupancy.Row{}, false, fmt.Errorf("read row of %s at %d: %w", space, t, err)
	}
	return r, ok, nil
}

// Rows streams the settled rows of space with from <= TS < to, in order.
func (s *Store) Rows(space string, from, to int64, fn func(occupancy.Row) error) error {
	if from >= to {
		return nil
	}
	p := rowPrefix(space)
	start := putTS(append([]byte(nil), p...), from)
	end := putTS(append([]byte(nil), p...), to)
	return s.scanOpen(p, start, end, func(k, v []byte) (bool, error) {
		r, err := decodeRow(k, v)
		if err != nil {
			return false, fmt.Errorf("read rows of %s: %w", space, err)
		}
		return true, fn(r)
	})
}

// view runs a read transaction unless the store is closed (Close waits for it).
func (s *Store) view(fn func(*badger.Txn) error) error {
	return s.alive(func() error { return s.db.View(fn) })
}

// scanOpen is scan for the public readers: ErrClosed once the store is closed.
func (s *Store) scanOpen(p, start, end []byte, fn func(k, v []byte) (bool, error)) error {
	return s.alive(func() error { return s.scan(p, start, end, fn) })
}

// scan iterates keys with prefix p in [start, end) (nil start = the prefix's
// beginning, nil end = its end) calling fn with key and value (valid only during
// the call) until fn returns false or an error.
func (s *Store) scan(p, start, end []byte, fn func(k, v []byte) (bool, error)) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = p
		it := txn.NewIterator(o)
		defer it.Close()
		if start == nil {
			start = p
		}
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if end != nil && bytes.Compare(k, end) >= 0 {
				return nil
			}
			var more bool
			err := item.Value(func(v []byte) error {
				var err error
				more, err = fn(k, v)
				return err
			})
			if err != nil {
				return err
			}
			if !more {
				return nil
			}
		}
		return nil
	})
}
