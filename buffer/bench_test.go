package buffer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// benchEvent is event i of a 10,000-DPU stream: a DPU id, an integer sequence id
// and ms timestamps, as decoded from a ~100-byte MQTT payload such as
// {"id":"0001234","ts":"2026-11-27T10:00:00.123Z","direction":1} on dpu/dpu-004711/events.
func benchEvent(i int64) occupancy.Event {
	ts := int64(1_795_000_000_000) + i/20 // 20,000 events per second of event time
	return occupancy.Event{
		DPU:       fmt.Sprintf("dpu-%06d", i%10_000),
		ID:        fmt.Sprintf("%07d", i/10_000),
		TS:        ts,
		Direction: int8(1 - 2*(i&1)),
		Received:  ts + 40,
	}
}

func benchOpen(b *testing.B, dir string) *Store {
	s, err := Open(Options{Dir: dir, Logger: zerolog.Nop(), MinFreeBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkAppend: durable (synced) appends of one event per call from W writers
// (256: about what a gateway with many messages in flight hands over).
func BenchmarkAppend(b *testing.B) {
	for _, w := range []int{1, 8, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			benchWriters(b, w, func(s *Store, e occupancy.Event) error {
				res, err := s.Append(context.Background(), []occupancy.Event{e}, nil)
				if err == nil && res[0].Duplicate {
					err = errors.New("unexpected duplicate")
				}
				return err
			})
		})
	}
}

// BenchmarkAppendReports: durable appends of one report per call from 64 writers,
// each event i of the stream turned into a report of its DPU (an interval ending at
// its ts, or cumulative totals): the overlap or neighbour lookups on top of the dedup.
func BenchmarkAppendReports(b *testing.B) {
	for _, kind := range []occupancy.ReportKind{occupancy.ReportInterval, occupancy.ReportCumulative} {
		b.Run(kind.String(), func(b *testing.B) {
			benchWriters(b, 64, func(s *Store, e occupancy.Event) error {
				r := occupancy.Report{DPU: e.DPU, Kind: kind, TS: e.TS, In: 3, Out: 2, Received: e.Received}
				if kind == occupancy.ReportInterval {
					r.Start = e.TS - 1
				}
				res, err := s.AppendReports(context.Background(), []occupancy.Report{r}, nil)
				if err == nil && (res[0].Duplicate || res[0].Overlap) {
					err = fmt.Errorf("unexpected result %+v", res[0])
				}
				return err
			})
		})
	}
}

// BenchmarkAppendTxnPerEvent is the baseline: the same work (dedup lookup and a
// synced write) as one Badger transaction per event, same options.
func BenchmarkAppendTxnPerEvent(b *testing.B) {
	for _, w := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			benchWriters(b, w, func(s *Store, e occupancy.Event) error {
				k := prefixed(pfxEvent, e)
				return s.db.Update(func(txn *badger.Txn) error {
					if _, err := txn.Get(k); err == nil {
						return errors.New("unexpected duplicate")
					} else if !errors.Is(err, badger.ErrKeyNotFound) {
						return err
					}
					return txn.Set(k, eventValue(nil, e))
				})
			})
		})
	}
}

func benchWriters(b *testing.B, writers int, appendOne func(*Store, occupancy.Event) error) {
	s := benchOpen(b, b.TempDir())
	defer s.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := appendOne(s, benchEvent(i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	if st := s.Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.Events)/float64(st.Batches), "events/batch")
	}
}

const fixtureEvents = 1_000_000

var (
	fixtureOnce  sync.Once
	fixtureDir   string // the store, closed cleanly
	fixtureCrash string // a copy taken while it was open and idle: what kill -9 leaves
	fixtureErr   error
	fixtureOpenB int64 // disk use of the store while open after the last write (memtable log included)
)

// reopenFixture builds, once per process, a store holding 1,000,000 events: one
// closed cleanly, and a copy of its files taken while it was still open after its
// last synced write (a kill -9 image: Badger must replay its memtable log).
func reopenFixture() (clean, crash string, err error) {
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = os.MkdirTemp("", "occupancyd-buffer-bench-")
		if fixtureErr != nil {
			return
		}
		fixtureCrash = fixtureDir + "-crash"
		s, err := Open(Options{Dir: fixtureDir, Logger: zerolog.Nop(), MinFreeBytes: -1})
		if err != nil {
			fixtureErr = err
			return
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					lo := next.Add(1000) - 1000
					if lo >= fixtureEvents {
						return
					}
					evs := make([]occupancy.Event, 1000)
					for i := range evs {
						evs[i] = benchEvent(lo + int64(i))
					}
					if _, err := s.Append(context.Background(), evs, nil); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		waitIdle(fixtureDir)
		var derr error
		fixtureOpenB, derr = diskBytes(fixtureDir)
		fixtureErr = errors.Join(<-errs, derr, copyDir(fixtureDir, fixtureCrash), s.Close())
	})
	return fixtureDir, fixtureCrash, fixtureErr
}

// waitIdle waits (up to 30s) until Badger has flushed its immutable memtables
// (one .mem file left) and the file list is unchanged for 300ms.
func waitIdle(dir string) {
	list := func() string {
		ents, _ := os.ReadDir(dir)
		var names []string
		mems := 0
		for _, e := range ents {
			names = append(names, e.Name())
			if filepath.Ext(e.Name()) == ".mem" {
				mems++
			}
		}
		return fmt.Sprint(mems, names)
	}
	deadline := time.Now().Add(30 * time.Second)
	prev := list()
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		cur := list()
		if cur == prev && strings.HasPrefix(cur, "1 ") {
			return
		}
		prev = cur
	}
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o750); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" || e.Name() == "occupancyd.lock" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o640); err != nil {
			return err
		}
	}
	return nil
}

func cleanupFixtures() {
	if fixtureDir != "" {
		_ = os.RemoveAll(fixtureDir)
		_ = os.RemoveAll(fixtureCrash)
	}
}

// diskBytes is the space the directory's files take on disk (allocated blocks,
// so sparse preallocated files count for what they hold).
func diskBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile (a flushed memtable)
		}
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	return total, err
}

// BenchmarkReopen: Open (with recovery) of a store holding 1,000,000 events, after
// a clean stop and from a kill -9 image (memtable log replayed). ns/op is the
// reopen time; disk-B/event the cleanly closed store's size on disk per event.
func BenchmarkReopen(b *testing.B) {
	clean, crash, err := reopenFixture()
	if err != nil {
		b.Fatal(err)
	}
	check := func(b *testing.B, s *Store) {
		n := 0
		if err := s.Events(minTS, maxTS, func(occupancy.Event) error { n++; return nil }); err != nil || n != fixtureEvents {
			b.Fatalf("fixture holds %d events (%v), want %d", n, err, fixtureEvents)
		}
	}
	b.Run("clean", func(b *testing.B) {
		size, err := diskBytes(clean)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			s := benchOpen(b, clean)
			b.StopTimer()
			if i == 0 {
				check(b, s)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(size)/fixtureEvents, "disk-B/event")
		b.ReportMetric(float64(fixtureOpenB)/fixtureEvents, "open-disk-B/event")
	})
	b.Run("kill-image", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := b.TempDir()
			if err := copyDir(crash, dir); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			s := benchOpen(b, dir)
			b.StopTimer()
			if i == 0 {
				check(b, s)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// BenchmarkEventsScan: streaming all 1,000,000 stored events in timeline order, as
// the engine's rebuild at start does (ns/op is one full scan).
func BenchmarkEventsScan(b *testing.B) {
	clean, _, err := reopenFixture()
	if err != nil {
		b.Fatal(err)
	}
	s := benchOpen(b, clean)
	defer s.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		if err := s.Events(minTS, maxTS, func(occupancy.Event) error { n++; return nil }); err != nil || n != fixtureEvents {
			b.Fatalf("scanned %d (%v), want %d", n, err, fixtureEvents)
		}
	}
	b.ReportMetric(float64(fixtureEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendMemory measures the Go heap the store holds while it takes a
// gateway-like stream (8 writers, 16 events per Append) at several memtable sizes:
// peak-live-MB is the largest live heap any GC cycle found (Badger's memtables,
// table builders of flushes and compactions, decompressed blocks), peak-heap-MB the
// largest heap in use between cycles (what RSS follows under GOGC=100). Run with a
// fixed count of events, e.g. -benchtime=2000000x.
func BenchmarkAppendMemory(b *testing.B) {
	for _, mt := range []int64{8 << 20, 16 << 20, 32 << 20} {
		b.Run(fmt.Sprintf("memtable=%dMiB", mt>>20), func(b *testing.B) {
			runtime.GC()
			s, err := Open(Options{Dir: b.TempDir(), Logger: zerolog.Nop(), MinFreeBytes: -1, MemTableSize: mt})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			samples := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
			var peakLive, peakHeap uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				t := time.NewTicker(5 * time.Millisecond)
				defer t.Stop()
				for {
					rtmetrics.Read(samples)
					peakLive = max(peakLive, samples[0].Value.Uint64())
					peakHeap = max(peakHeap, samples[1].Value.Uint64())
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					evs := make([]occupancy.Event, 0, 16)
					for {
						lo := next.Add(16) - 16
						if lo >= int64(b.N) {
							return
						}
						evs = evs[:0]
						for i := lo; i < min(lo+16, int64(b.N)); i++ {
							evs = append(evs, benchEvent(i))
						}
						if _, err := s.Append(context.Background(), evs, nil); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			close(stop)
			<-sampled
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
			b.ReportMetric(float64(peakLive)/(1<<20), "peak-live-MB")
			b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
		})
	}
}
