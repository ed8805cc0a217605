package main

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/sdnotify"
)

// watchedGateway is what the systemd notifications read from the running gateway.
type watchedGateway interface {
	Ready() error                // nil: storage open, connected and subscribed (/readyz)
	LastTick() time.Time         // the tick loop (settle, commit, publish) is alive
	IngestBusySince() time.Time  // no ingest batch hangs
	TickInterval() time.Duration // engine.tick, reloadable
}

// quietDPUs counts the quiet DPUs (tracker.Tracker; the gateway's watched): the
// status line and the status page show them.
type quietDPUs interface {
	QuietDPUs() (quiet, total int)
}

// startSystemd starts the systemd notifications for a started gateway when systemd
// asked for them ($NOTIFY_SOCKET; Type=notify): READY=1 once it is ready (the same
// condition as /readyz), STATUS= lines with the event rates, and WATCHDOG=1 while
// its tick loop and ingest make progress (WatchdogSec=). Without $NOTIFY_SOCKET it
// returns a Supervisor that does nothing.
func startSystemd(gw watchedGateway, metrics *metrics.Metrics, log zerolog.Logger) *sdnotify.Supervisor {
	log = log.With().Str("component", "systemd").Logger()
	n, err := sdnotify.FromEnv()
	if err != nil {
		log.Warn().Err(err).Msg("no systemd notifications")
	}
	wd, err := sdnotify.WatchdogTimeout()
	if err != nil {
		log.Warn().Err(err).Msg("no systemd watchdog")
	}
	if n == nil {
		return sdnotify.Start(nil, sdnotify.Options{})
	}
	w := &watch{gw: gw, metrics: metrics, watchdog: wd, started: time.Now()}
	log.Info().Dur("watchdog", wd).Msg("notifying systemd")
	return sdnotify.Start(n, sdnotify.Options{
		Ready:    gw.Ready,
		Alive:    w.alive,
		Status:   w.status,
		Watchdog: wd,
		Logger:   log,
	})
}

// watch turns the gateway's progress into the watchdog verdict and status line.
type watch struct {
	gw       watchedGateway
	metrics  *metrics.Metrics
	watchdog time.Duration
	started  time.Time

	lastAt                 time.Time
	lastAccepted, lastRejd float64
}

// stallAfter is how long the ingest and tick loops may show no progress before the
// watchdog pings stop: half the watchdog timeout (at least 10 s), so that systemd
// restarts a hung gateway within about 1.5 timeouts of the hang.
func (w *watch) stallAfter() time.Duration {
	return max(w.watchdog/2, 10*time.Second)
}

// alive is nil while the tick loop ticks (within engine.tick plus stallAfter of the
// last tick) and no ingest batch has been waiting on the store or the engine for
// longer than stallAfter (a store that answers with errors, e.g. while the disk is
// full, is alive).
func (w *watch) alive(now time.Time) error {
	last := w.gw.LastTick()
	if last.IsZero() {
		last = w.started
	}
	tick := w.gw.TickInterval()
	if age := now.Sub(last); age > tick+w.stallAfter() {
		return fmt.Errorf("no engine tick for %s (engine.tick %s)", age.Round(time.Second), tick)
	}
	if b := w.gw.IngestBusySince(); !b.IsZero() {
		if age := now.Sub(b); age > w.stallAfter() {
			return fmt.Errorf("an ingest batch has waited %s on the store or engine", age.Round(time.Second))
		}
	}
	return nil
}

// status is the line `systemctl status` shows while ready: the rates of accepted and
// rejected events since the last line, and the quiet DPUs once the gateway counts
// them.
func (w *watch) status(now time.Time) string {
	acc := counterSum(w.metrics.EventsAccepted)
	rej := counterSum(w.metrics.EventsRejected)
	var s string
	if w.lastAt.IsZero() {
		s = fmt.Sprintf("ready: %.0f events accepted, %.0f rejected", acc, rej)
	} else {
		dt := now.Sub(w.lastAt).Seconds()
		s = fmt.Sprintf("ready: %s events/s accepted, %s/s rejected",
			rate(acc-w.lastAccepted, dt), rate(rej-w.lastRejd, dt))
	}
	w.lastAt, w.lastAccepted, w.lastRejd = now, acc, rej
	if q, ok := w.gw.(quietDPUs); ok {
		quiet, total := q.QuietDPUs()
		s += fmt.Sprintf("; %d of %d DPUs quiet", quiet, total)
	}
	return s
}

func rate(n, seconds float64) string {
	if seconds <= 0 {
		return "0"
	}
	r := n / seconds
	if r >= 100 || r == 0 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

// counterSum is the sum of every counter series of c.
func counterSum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil && d.Counter != nil {
			sum += d.Counter.GetValue()
		}
	}
	return sum
}
