package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/sdnotify/sdnotifytest"
)

func TestNotify(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd runs on Linux")
	}
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			sd := sdnotifytest.Listen(t, abstract)
			n, err := New(sd.Addr)
			if err != nil || !n.Enabled() {
				t.Fatalf("New(%q) = %v, %v", sd.Addr, n, err)
			}
			if err := n.Notify(Ready, Status("ready: 3 events/s\nsecond line")); err != nil {
				t.Fatal(err)
			}
			if got, want := sd.Next(time.Second), "READY=1\nSTATUS=ready: 3 events/s\n"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	t.Run("FromEnv", func(t *testing.T) {
		sd := sdnotifytest.Listen(t, false)
		t.Setenv("NOTIFY_SOCKET", sd.Addr)
		n, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Notify(Stopping); err != nil {
			t.Fatal(err)
		}
		if got := sd.Next(time.Second); got != "STOPPING=1\n" {
			t.Errorf("got %q, want STOPPING=1", got)
		}
	})
	t.Run("reloading carries the monotonic clock", func(t *testing.T) {
		sd := sdnotifytest.Listen(t, false)
		n, _ := New(sd.Addr)
		var last uint64
		for i := 0; i < 2; i++ {
			if err := n.Notify(Reloading()...); err != nil {
				t.Fatal(err)
			}
			got := sd.Next(time.Second)
			lines := strings.Split(strings.TrimSpace(got), "\n")
			if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
				t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC=", got)
			}
			us, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
			if err != nil || us == 0 || us < last {
				t.Errorf("MONOTONIC_USEC %q after %d: want a growing positive number", lines[1], last)
			}
			last = us
		}
	})
	t.Run("no socket", func(t *testing.T) {
		n, err := New("")
		if err != nil || n != nil || n.Enabled() {
			t.Fatalf("New(\"\") = %v, %v; want the nil Notifier", n, err)
		}
		if err := n.Notify(Ready); err != nil {
			t.Errorf("nil Notifier: %v", err)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		if _, err := New("relative/path"); err == nil {
			t.Error("New(relative/path): no error")
		}
		n, err := New(filepath.Join(t.TempDir(), "nobody-listens"))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Notify(Ready); err == nil {
			t.Error("Notify to a socket nobody listens on: no error")
		}
	})
}

func TestWatchdogTimeout(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, false},
		{"30000000", "42", 30 * time.Second, false}, // our pid
		{"30000000", "43", 0, false},                // another process's watchdog
		{"abc", "", 0, true},
		{"0", "", 0, true},
		{"30000000", "x", 0, true},
	} {
		got, err := watchdogTimeout(tc.usec, tc.pid, 42)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("watchdogTimeout(%q, %q) = %v, %v; want %v, error %v", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
	t.Setenv("WATCHDOG_USEC", "2500000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got, err := WatchdogTimeout(); got != 2500*time.Millisecond || err != nil {
		t.Errorf("WatchdogTimeout() = %v, %v; want 2.5s", got, err)
	}
}

// TestSupervisor drives a Supervisor through start-up, a hang, a reload and a stop,
// checking every datagram it sends.
func TestSupervisor(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd runs on Linux")
	}
	sd := sdnotifytest.Listen(t, false)
	n, _ := New(sd.Addr)
	var ready, hung atomic.Bool
	var readyCalls atomic.Int64
	s := Start(n, Options{
		Ready: func() error {
			readyCalls.Add(1)
			if !ready.Load() {
				return errors.New("not subscribed yet")
			}
			return nil
		},
		Alive: func(time.Time) error {
			if hung.Load() {
				return errors.New("no engine tick for 40s")
			}
			return nil
		},
		Status:    func(time.Time) string { return "ready: 5 events/s" },
		Watchdog:  90 * time.Millisecond, // pings every 30 ms
		Every:     time.Hour,             // capped at Watchdog/3
		PollReady: 5 * time.Millisecond,
	})

	// Starting: the reason, no READY=1, watchdog pings (the loops are alive).
	first := sd.Next(time.Second)
	if !strings.Contains(first, "STATUS=starting: not subscribed yet") || strings.Contains(first, Ready) {
		t.Fatalf("first notification %q, want the starting status and no READY=1", first)
	}
	sd.None(100*time.Millisecond, Ready)
	// Ready: READY=1 once, with the status line.
	ready.Store(true)
	sd.Until("READY=1\n", time.Second)
	pings := sd.None(150*time.Millisecond, Ready)
	if len(pings) < 2 {
		t.Errorf("%d notifications in 150 ms, want watchdog pings every 30 ms", len(pings))
	}
	for _, m := range pings {
		if m != "WATCHDOG=1\nSTATUS=ready: 5 events/s\n" {
			t.Errorf("got %q, want watchdog pings with the status", m)
		}
	}
	// A hang: no pings while Alive fails, and the status says why.
	hung.Store(true)
	sd.Until("STATUS=not responding: no engine tick for 40s", time.Second)
	sd.None(150*time.Millisecond, Watchdog)
	hung.Store(false)
	sd.Until(Watchdog, time.Second)
	// Not ready again (broker lost): still alive, so still pinging.
	ready.Store(false)
	sd.Until("WATCHDOG=1\nSTATUS=not ready: not subscribed yet", time.Second)
	ready.Store(true)
	// A reload: RELOADING=1, then READY=1 with its outcome.
	s.Reloading()
	sd.Until("RELOADING=1\nMONOTONIC_USEC=", time.Second)
	s.Reloaded(errors.New("topology.dpus[0].doorway: unknown doorway"))
	sd.Until("READY=1\nSTATUS=reload refused, the running configuration stays: topology.dpus[0].doorway: unknown doorway", time.Second)
	// Stopping: STOPPING=1, and then silence.
	s.Stopping()
	sd.Until("STOPPING=1\nSTATUS=stopping", time.Second)
	calls := readyCalls.Load()
	if m := sd.Next(150 * time.Millisecond); m != "" {
		t.Errorf("after STOPPING=1: %q", m)
	}
	if c := readyCalls.Load(); c != calls {
		t.Errorf("the loop still runs after Stopping (%d more Ready calls)", c-calls)
	}
	s.Stopping() // twice is fine
	s.Reloading()
	s.Reloaded(nil)
	if m := sd.Next(50 * time.Millisecond); m != "" {
		t.Errorf("after STOPPING=1: %q", m)
	}
}

// TestSupervisorOff: without a socket nothing runs and every method is safe.
func TestSupervisorOff(t *testing.T) {
	called := false
	s := Start(nil, Options{Ready: func() error { called = true; return nil }})
	s.Reloading()
	s.Reloaded(nil)
	s.Stopping()
	var nilSup *Supervisor
	nilSup.Reloading()
	nilSup.Reloaded(nil)
	nilSup.Stopping()
	if called {
		t.Error("a Supervisor without a Notifier polled Ready")
	}
}
