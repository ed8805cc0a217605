package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/sdnotify/sdnotifytest"
)

// TestSystemdNotify runs the daemon (Main) as systemd would, with $NOTIFY_SOCKET and
// $WATCHDOG_USEC set, against a Mosquitto that is down at first: no READY=1 while
// /readyz says 503, READY=1 once it says 200, watchdog pings and a status line with
// the event rate while it runs, RELOADING=1 and READY=1 around a reload, and
// STOPPING=1 on Close, after which nothing more.
func TestSystemdNotify(t *testing.T) {
	mq := newMosquitto(t)
	mq.stop()
	sock := sdnotifytest.Listen(t, false)
	t.Setenv("NOTIFY_SOCKET", sock.Addr)
	t.Setenv("WATCHDOG_USEC", "3000000") // pings every second
	t.Setenv("WATCHDOG_PID", "")

	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(dir, "data")})
	var logs syncBuf
	dumpOnFailure(t, "occupancyd", &logs)
	m := NewMain()
	m.ConfigPath = path
	m.Logger = zerolog.New(&logs).With().Timestamp().Logger()
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			m.Close()
		}
	})
	// Main read them in Run. Mosquitto, started again below, speaks sd_notify too:
	// it must not inherit them.
	os.Unsetenv("NOTIFY_SOCKET")
	os.Unsetenv("WATCHDOG_USEC")
	readyz := func() int { return httpGetJSON(t, "http://"+m.HTTPAddr()+"/readyz", nil) }

	// The broker is down: starting, with the reason, and no READY=1.
	starting, _ := sock.Until("STATUS=starting: ", 5*time.Second)
	if !strings.Contains(starting, "broker") {
		t.Errorf("starting status %q does not name the broker", starting)
	}
	sock.None(time.Second, "READY=1")
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with the broker down, want 503", code)
	}

	// The broker comes up: READY=1, and /readyz said 200 by then.
	mq.start()
	sock.Until("READY=1", 40*time.Second)
	if code := readyz(); code != http.StatusOK {
		t.Errorf("/readyz = %d when READY=1 arrived, want 200", code)
	}

	// Running: watchdog pings, and the rate of accepted events on the status line.
	c := mqttClient(t, "tcp://"+mq.addr, "pub-systemd")
	var msgs []e2eMessage
	for i := 1; i <= 50; i++ {
		e := e2eEvent{DPU: "d1", ID: fmt.Sprint(i), TS: time.Now().UnixMilli(), Dir: 1}
		msgs = append(msgs, e2eMessage{topic: "dpu/d1/events", payload: mustJSON(e.wire(i))})
	}
	publishAll(t, c, msgs)
	sock.Until("WATCHDOG=1", 3*time.Second)
	status, _ := sock.Until("events/s accepted", 5*time.Second)
	if !strings.Contains(status, "WATCHDOG=1") {
		t.Errorf("status %q came without a watchdog ping", status)
	}

	// A reload: RELOADING=1, then READY=1 with the outcome.
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	sock.Until("RELOADING=1", 3*time.Second)
	sock.Until("READY=1\nSTATUS=configuration reloaded", 3*time.Second)

	// Close: STOPPING=1 first, then silence.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	sock.Until("STOPPING=1", 3*time.Second)
	sock.None(1500*time.Millisecond, "")
}

// fakeWatched is a gateway whose progress the test sets.
type fakeWatched struct {
	lastTick, busy time.Time
	tick           time.Duration
}

func (f *fakeWatched) Ready() error                  { return nil }
func (f *fakeWatched) LastTick() time.Time           { return f.lastTick }
func (f *fakeWatched) IngestBusySince() time.Time    { return f.busy }
func (f *fakeWatched) TickInterval() time.Duration   { return f.tick }
func (f *fakeWatched) QuietDPUs() (quiet, total int) { return 2, 7 }

// TestWatchVerdict: the watchdog's verdict from the tick loop's and the ingest
// workers' progress.
func TestWatchVerdict(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name           string
		lastTick, busy time.Duration // before now; -1: never / idle
		tick, watchdog time.Duration
		want           string // "" alive, else part of the error
	}{
		{"ticking, idle", time.Second, -1, time.Second, 30 * time.Second, ""},
		{"no tick yet, just started", -1, -1, time.Second, 30 * time.Second, ""},
		{"tick loop stalled", 17 * time.Second, -1, time.Second, 30 * time.Second, "no engine tick for 17s"},
		{"slow ticks are not a stall", 40 * time.Second, -1, 30 * time.Second, 30 * time.Second, ""},
		{"batch in progress", time.Second, 14 * time.Second, time.Second, 30 * time.Second, ""},
		{"batch hangs", time.Second, 16 * time.Second, time.Second, 30 * time.Second, "ingest batch has waited 16s"},
		{"short watchdog: at least 10 s", time.Second, 9 * time.Second, time.Second, 3 * time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeWatched{tick: tc.tick}
			w := &watch{gw: f, watchdog: tc.watchdog, started: now.Add(-5 * time.Second)}
			if tc.lastTick >= 0 {
				f.lastTick = now.Add(-tc.lastTick)
			}
			if tc.busy >= 0 {
				f.busy = now.Add(-tc.busy)
			}
			err := w.alive(now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want alive", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
