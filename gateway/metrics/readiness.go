package metrics

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The reasons /readyz gives for not being ready (DESIGN 5), in the order they are
// checked: the first that holds is the one reported.
const (
	NotReadyStarting           = "starting"            // the daemon has not finished starting
	NotReadyStorageFull        = "storage_full"        // free space below storage.min_free
	NotReadyStorageError       = "storage_error"       // storage is closed or its last write failed
	NotReadyBrokerDisconnected = "broker_disconnected" // the MQTT client is not connected
	NotReadyNotSubscribed      = "not_subscribed"      // connected, the events topics not subscribed yet
)

// NotReadyReasons are every reason, each a series of occupancyd_not_ready_reason.
var NotReadyReasons = []string{
	NotReadyStarting, NotReadyStorageFull, NotReadyStorageError,
	NotReadyBrokerDisconnected, NotReadyNotSubscribed,
}

// NotReady is the error of a readiness check that says why (Reason: one of
// NotReadyReasons) and what (Err).
type NotReady struct {
	Code string
	Err  error
}

func (e *NotReady) Error() string {
	if e.Err == nil {
		return e.Code
	}
	return e.Code + ": " + e.Err.Error()
}

func (e *NotReady) Unwrap() error { return e.Err }

// Reason is the /readyz reason code.
func (e *NotReady) Reason() string { return e.Code }

// NotReadyReason is the reason code of a readiness check's error: its Reason() where
// it has one, else "starting" (a check that cannot tell why), "" for nil.
func NotReadyReason(err error) string {
	if err == nil {
		return ""
	}
	var r interface{ Reason() string }
	if errors.As(err, &r) && r.Reason() != "" {
		return r.Reason()
	}
	return NotReadyStarting
}

// SetReadiness makes check the source of occupancyd_ready (1 when check returns
// nil, else 0) and occupancyd_not_ready_reason{reason} (1 for the reason of check's
// error, 0 for the others). The check runs at every scrape, so the gauges say what
// /readyz says at that instant. Before SetReadiness, the gateway is reported as
// starting.
func (m *Metrics) SetReadiness(check func() error) { m.readiness.check.Store(&check) }

type readinessCollector struct {
	check  atomic.Pointer[func() error]
	ready  *prometheus.Desc
	reason *prometheus.Desc
}

func newReadinessCollector() *readinessCollector {
	return &readinessCollector{
		ready: prometheus.NewDesc("occupancyd_ready",
			"1 while the gateway accepts events (GET /readyz answers 200), else 0.", nil, nil),
		reason: prometheus.NewDesc("occupancyd_not_ready_reason",
			"1 for the reason GET /readyz gives for not being ready, 0 for the other reasons.", []string{"reason"}, nil),
	}
}

func (c *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.reason
}

func (c *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	reason := NotReadyStarting
	if f := c.check.Load(); f != nil {
		reason = NotReadyReason((*f)())
	}
	ready := 0.0
	if reason == "" {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready)
	for _, r := range NotReadyReasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.reason, prometheus.GaugeValue, v, r)
	}
}
