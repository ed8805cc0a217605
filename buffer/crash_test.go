package buffer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

const (
	crashChildEnv = "OCCUPANCYD_BUFFER_CRASH_CHILD"
	crashRoundEnv = "OCCUPANCYD_BUFFER_CRASH_ROUND"
)

// crashChild runs in the re-executed test binary: it appends as fast as it can
// from many goroutines and prints one line per event once Append has returned
// (the event is acknowledged durable), until it is killed.
func crashChild(dir string) {
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	fmt.Fprintln(os.Stdout, "S") // started: the parent may count its kill delay from here (Open, recovery)
	// A small memtable makes large settlements go in several transactions.
	s, err := Open(Options{Dir: dir, MemTableSize: 8 << 20, Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "O") // opened: or from here (appends, commits)
	var outMu sync.Mutex
	fail := func(format string, a ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stderr, format+"\n", a...)
		os.Exit(3)
	}
	const writers = 32
	var wg sync.WaitGroup
	// The engine's side: settlements of rows for space "s", one per ms, each with
	// the checkpoint after them; "CP h" is printed once the commit returned.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(uint64(round), 1000))
		cp, _, err := s.Checkpoint()
		if err != nil {
			fail("checkpoint: %v", err)
		}
		h := cp.Horizon
		for {
			n := 1 + r.IntN(200)
			if r.IntN(40) == 0 {
				n = 30_000 // more than one transaction takes
			}
			rows := make([]occupancy.Row, n)
			for i := range rows {
				rows[i] = occupancy.Row{Space: "s", TS: h + int64(i), Occupancy: h + int64(i)}
			}
			h += int64(n)
			if err := s.Commit(occupancy.Settlement{Rows: rows, Checkpoint: occupancy.Checkpoint{Horizon: h}}); err != nil {
				fail("commit: %v", err)
			}
			outMu.Lock()
			fmt.Fprintf(os.Stdout, "CP %d\n", h)
			outMu.Unlock()
			time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond) // ticks, faster than the engine's
		}
	}()
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), uint64(g)))
			var acked []occupancy.Event
			var line bytes.Buffer
			for i := 0; ; {
				n := 1 + r.IntN(6)
				evs := make([]occupancy.Event, 0, n+1)
				for j := 0; j < n; j++ {
					e := occupancy.Event{TS: int64(round)*1e9 + int64(i), Direction: int8(1 - 2*r.IntN(2)), Received: int64(round)*1e9 + int64(i) + 5}
					if r.IntN(4) == 0 { // identity without id: (dpu, ts, direction)
						e.DPU = fmt.Sprintf("n%d-%d", round, g)
					} else {
						e.DPU = fmt.Sprintf("d%d", g)
						e.ID = fmt.Sprintf("%d-%d", round, i)
					}
					evs = append(evs, e)
					i++
				}
				var old int = -1
				if len(acked) > 0 && r.IntN(8) == 0 {
					old = len(evs)
					evs = append(evs, acked[r.IntN(len(acked))])
				}
				res, err := s.Append(context.Background(), evs, nil)
				if err != nil {
					fail("append: %v", err)
				}
				line.Reset()
				for j, e := range evs {
					if j == old {
						if !res[j].Duplicate {
							fail("re-sent acknowledged event %+v was not reported duplicate", e)
						}
						continue
					}
					if res[j].Duplicate {
						fail("new event %+v reported duplicate", e)
					}
					fmt.Fprintf(&line, "%s %s %d %d\n", e.DPU, e.ID, e.TS, e.Direction)
					acked = append(acked, e)
				}
				outMu.Lock()
				_, _ = os.Stdout.Write(line.Bytes())
				outMu.Unlock()
			}
		}(g)
	}
	// Reports: interval (many overlapping) and cumulative (with counter resets) of
	// a few DPUs shared by the writers, so checks race with the group commit. "R"
	// lines are the reports acknowledged as stored.
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), uint64(100+g)))
			var line bytes.Buffer
			for {
				reps := genReports(r, 1+r.IntN(8))
				for i := range reps {
					reps[i].TS += int64(round) * 1e9
					if reps[i].Kind == occupancy.ReportInterval {
						reps[i].Start += int64(round) * 1e9
					}
				}
				res, err := s.AppendReports(context.Background(), reps, nil)
				if err != nil {
					fail("append reports: %v", err)
				}
				line.Reset()
				for i, rep := range reps {
					if !res[i].Duplicate && !res[i].Overlap {
						fmt.Fprintf(&line, "R %d %s %d %d %d %d %d\n", rep.Kind, rep.DPU, rep.Start, rep.TS, rep.In, rep.Out, rep.Received)
					}
				}
				outMu.Lock()
				_, _ = os.Stdout.Write(line.Bytes())
				outMu.Unlock()
			}
		}(g)
	}
	wg.Wait()
}

// parseReportLine reads an "R kind dpu start ts in out received" line.
func parseReportLine(l string) (occupancy.Report, error) {
	var r occupancy.Report
	var kind int
	if _, err := fmt.Sscanf(l, "R %d %s %d %d %d %d %d", &kind, &r.DPU, &r.Start, &r.TS, &r.In, &r.Out, &r.Received); err != nil {
		return r, fmt.Errorf("bad line %q: %w", l, err)
	}
	r.Kind = occupancy.ReportKind(kind)
	return r, nil
}

func parseAckLine(l string) (occupancy.Event, error) {
	f := strings.Split(l, " ")
	if len(f) != 4 {
		return occupancy.Event{}, fmt.Errorf("bad line %q", l)
	}
	ts, err1 := strconv.ParseInt(f[2], 10, 64)
	dir, err2 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2); err != nil {
		return occupancy.Event{}, fmt.Errorf("bad line %q: %w", l, err)
	}
	return occupancy.Event{DPU: f[0], ID: f[1], TS: ts, Direction: int8(dir)}, nil
}

// TestCrashRecovery SIGKILLs a child that appends as fast as it can at random
// moments (also during Open and recovery), 20 times over one store, and then
// checks that every event the child saw acknowledged is stored exactly once.
//
// The kill delay counts from the child's own marks, not from exec: starting a
// -race test binary and opening the store take 0.7-1.3 s at load 18 here (first
// acknowledgement 0.7-1.7 s after exec), so a delay from exec killed every child of
// a loaded run before its first acknowledgement. A quarter of the rounds count from
// "S" (before Open: kills during Open and recovery), the rest from "O" (opened).
func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	rounds := 20
	if n, err := strconv.Atoi(os.Getenv("OCCUPANCYD_BUFFER_CRASH_ROUNDS")); err == nil && n > 0 {
		rounds = n // longer soak runs by hand
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	acked := map[occupancy.Event]int{}
	ackedReports := map[reportID][]occupancy.Report{}
	var lastCP int64
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
		// A child that never says it started is killed too, and fails the round.
		hung := time.AfterFunc(2*time.Minute, kill)
		from := "O"
		if r.IntN(4) == 0 {
			from = "S"
		}
		delay := time.Duration(5+r.IntN(600)) * time.Millisecond
		var timer *time.Timer
		br := bufio.NewReader(out)
		lines := 0
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break // a line cut by the kill has no newline: not acknowledged
			}
			if mark := strings.TrimSuffix(l, "\n"); mark == "S" || mark == "O" {
				if mark == from {
					hung.Stop()
					timer = time.AfterFunc(delay, kill)
				}
				continue
			}
			if h, ok := strings.CutPrefix(strings.TrimSuffix(l, "\n"), "CP "); ok {
				v, err := strconv.ParseInt(h, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				if v > lastCP {
					lastCP = v
				}
				continue
			}
			if strings.HasPrefix(l, "R ") {
				rep, err := parseReportLine(strings.TrimSuffix(l, "\n"))
				if err != nil {
					t.Fatal(err)
				}
				ackedReports[idOf(rep)] = append(ackedReports[idOf(rep)], rep)
				continue
			}
			e, perr := parseAckLine(strings.TrimSuffix(l, "\n"))
			if perr != nil {
				t.Fatal(perr)
			}
			acked[e]++
			lines++
		}
		werr := cmd.Wait()
		if timer == nil {
			hung.Stop()
			t.Fatalf("round %d: child ended (%v) before it printed %q; stderr:\n%s", round, werr, from, stderr.String())
		}
		timer.Stop()
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, want killed; stderr:\n%s", round, werr, stderr.String())
		}
		t.Logf("round %d: killed %v after %q, %d events acknowledged", round, delay, from, lines)
	}
	s := openT(t, Options{Dir: dir})
	stored := map[occupancy.Event]int{}
	if err := s.Events(minTS, maxTS, func(e occupancy.Event) error {
		if e.Received != e.TS+5 {
			t.Errorf("event %+v: received %d, want ts+5", e, e.Received)
		}
		e.Received = 0
		stored[e]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for e, n := range acked {
		if n != 1 {
			t.Errorf("%+v acknowledged %d times, want once", e, n)
		}
		if stored[e] != 1 {
			missing++
			if missing <= 10 {
				t.Errorf("acknowledged %+v stored %d times, want exactly once", e, stored[e])
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged events not stored exactly once", missing, len(acked))
	}
	if len(acked) < rounds {
		t.Errorf("only %d events acknowledged over %d rounds: the child barely ran", len(acked), rounds)
	}
	cp, _, err := s.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if cp.Horizon < lastCP {
		t.Errorf("checkpoint horizon %d, but %d was acknowledged", cp.Horizon, lastCP)
	}
	var next int64
	if err := s.Rows("s", minTS, cp.Horizon, func(r occupancy.Row) error {
		if r.TS != next || r.Occupancy != next {
			return fmt.Errorf("row %+v, want ts and occupancy %d", r, next)
		}
		next++
		return nil
	}); err != nil {
		t.Error(err)
	}
	if next != cp.Horizon {
		t.Errorf("rows before the checkpoint's horizon %d: %d, want every ms", cp.Horizon, next)
	}
	t.Logf("checkpoint horizon %d (last acknowledged %d)", cp.Horizon, lastCP)
	t.Logf("%d acknowledged events, %d stored (the rest were written but killed before their ack)", len(acked), len(stored))
	checkReportsAfterCrashes(t, s, ackedReports)
}

// checkReportsAfterCrashes: every report acknowledged stored is stored once with its
// fields, stored intervals of a DPU never overlap, and the counter resets kept equal
// those of the stored cumulative sequences (their updates are atomic with the
// reports, through every kill).
func checkReportsAfterCrashes(t *testing.T, s *Store, acked map[reportID][]occupancy.Report) {
	stored, _, _ := storedSequences(t, s)
	for id, rs := range acked {
		if len(rs) != 1 {
			t.Errorf("%+v acknowledged as stored %d times", id, len(rs))
		}
		if got, ok := stored[id]; !ok || got != rs[0] {
			t.Errorf("acknowledged %+v: stored %+v (%v)", rs[0], got, ok)
		}
	}
	if len(acked) == 0 {
		t.Error("no report acknowledged: the child barely ran")
	}
	t.Logf("%d reports acknowledged, %d stored", len(acked), len(stored))
}
