package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/mqtt"
)

// readyState is what /readyz and the readiness gauges on /metrics say.
type readyState struct {
	status  int
	doc     string // /readyz's status and reason, e.g. "not_ready/storage_full"
	ready   string // occupancyd_ready
	reasons string // the reasons at 1 in occupancyd_not_ready_reason
}

func (s readyState) String() string {
	return fmt.Sprintf("/readyz %d %s, occupancyd_ready %s, reasons at 1 [%s]", s.status, s.doc, s.ready, s.reasons)
}

func readReady(t testing.TB, httpAddr string) readyState {
	t.Helper()
	var st readyState
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Status, Reason string }
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	st.status, st.doc = resp.StatusCode, doc.Status+"/"+doc.Reason
	resp, err = http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var on []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "occupancyd_ready "); ok {
			st.ready = v
		}
		if rest, ok := strings.CutPrefix(line, `occupancyd_not_ready_reason{reason="`); ok && strings.HasSuffix(rest, `"} 1`) {
			on = append(on, strings.TrimSuffix(rest, `"} 1`))
		}
	}
	st.reasons = strings.Join(on, ",")
	_, _ = io.Copy(io.Discard, resp.Body)
	return st
}

// TestE2EReadiness (issue 14 item 2, DESIGN 5): /readyz and the gauges on /metrics
// tell the truth while the gateway cannot accept events — the store's free space
// below its floor (the store's free-space probe says so), the real broker stopped —
// and come back by themselves once it can again.
func TestE2EReadiness(t *testing.T) {
	mq := newMosquitto(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(dir, "data")})
	var free atomic.Uint64
	free.Store(1 << 40)
	var logs syncBuf
	dumpOnFailure(t, "occupancyd", &logs)
	m := NewMain()
	m.ConfigPath = path
	m.Logger = zerolog.New(&logs).Level(zerolog.InfoLevel)
	m.storeHook = func(o *buffer.Options) {
		o.MinFreeBytes = 64 << 20
		o.FreeSpace = func(string) (uint64, error) { return free.Load(), nil }
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	addr := m.HTTPAddr()
	waitReady(t, addr, 30*time.Second)

	want := func(t *testing.T, status int, reason string) {
		t.Helper()
		doc, ready, reasons := "ready/", "1", ""
		if status != 200 {
			doc, ready, reasons = "not_ready/"+reason, "0", reason
		}
		eventually(t, 30*time.Second, "readiness", func() string {
			if got := readReady(t, addr); got.status != status || got.doc != doc || got.ready != ready || got.reasons != reasons {
				return fmt.Sprintf("got %v, want /readyz %d %s, occupancyd_ready %s, reasons at 1 [%s]", got, status, doc, ready, reasons)
			}
			return ""
		})
	}
	t.Run("ready", func(t *testing.T) { want(t, 200, "") })
	t.Run("storage_full", func(t *testing.T) {
		free.Store(1 << 20)
		want(t, 503, metrics.NotReadyStorageFull)
	})
	t.Run("space returns", func(t *testing.T) {
		free.Store(1 << 40)
		want(t, 200, "")
	})
	t.Run("broker_disconnected", func(t *testing.T) {
		mq.stop()
		want(t, 503, metrics.NotReadyBrokerDisconnected)
	})
	t.Run("broker back", func(t *testing.T) {
		mq.start()
		want(t, 200, "")
	})
	t.Run("storage_error once stopped", func(t *testing.T) {
		// Close stops the HTTP API too: ask the check itself.
		rd := m.ready
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if got := metrics.NotReadyReason(rd.check()); got != metrics.NotReadyStorageError {
			t.Errorf("reason after Close = %q, want storage_error (the store is closed)", got)
		}
	})
}

type healthFunc func() error

func (f healthFunc) Health() error { return f() }

type readyFunc func() error

func (f readyFunc) Ready() error { return f() }

// TestReadinessReasons: the first reason that holds, in the order of DESIGN 5.
func TestReadinessReasons(t *testing.T) {
	full := fmt.Errorf("put: %w: 10 bytes free", buffer.ErrDiskFull)
	failed := fmt.Errorf("%w: %w", buffer.ErrWriteFailed, errors.New("input/output error"))
	cases := []struct {
		name          string
		started       bool
		store, client error
		want          string
	}{
		{"starting", false, full, mqtt.ErrNotConnected, metrics.NotReadyStarting},
		{"storage_full before the broker", true, full, mqtt.ErrNotConnected, metrics.NotReadyStorageFull},
		{"storage_error", true, failed, nil, metrics.NotReadyStorageError},
		{"store closed", true, buffer.ErrClosed, nil, metrics.NotReadyStorageError},
		{"broker_disconnected", true, nil, mqtt.ErrNotConnected, metrics.NotReadyBrokerDisconnected},
		{"not_subscribed", true, nil, mqtt.ErrNotSubscribed, metrics.NotReadyNotSubscribed},
		{"ready", true, nil, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &readiness{store: healthFunc(func() error { return c.store }), client: readyFunc(func() error { return c.client })}
			r.started.Store(c.started)
			err := r.check()
			if got := metrics.NotReadyReason(err); got != c.want {
				t.Errorf("reason = %q (%v), want %q", got, err, c.want)
			}
			if c.want != "" && c.want != metrics.NotReadyStarting && !errors.Is(err, c.store) && !errors.Is(err, c.client) {
				t.Errorf("%v does not wrap the cause", err)
			}
		})
	}
}
