package main

import (
	"errors"
	"sync/atomic"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/mqtt"
)

// readiness is the one check behind GET /readyz, the occupancyd_ready gauges, the
// status page and systemd's READY=1 (DESIGN 5): nil while the gateway can accept
// events, else a *metrics.NotReady with the first reason that holds — starting,
// storage_full (free space below storage.min_free), storage_error (the store is
// closed or its last write failed), broker_disconnected, not_subscribed.
type readiness struct {
	started atomic.Bool // Run has started everything
	store   interface{ Health() error }
	client  interface{ Ready() error }
}

func (r *readiness) check() error {
	if !r.started.Load() {
		return &metrics.NotReady{Code: metrics.NotReadyStarting, Err: errors.New("the gateway is starting")}
	}
	if err := r.store.Health(); err != nil {
		code := metrics.NotReadyStorageError
		if errors.Is(err, buffer.ErrDiskFull) {
			code = metrics.NotReadyStorageFull
		}
		return &metrics.NotReady{Code: code, Err: err}
	}
	if err := r.client.Ready(); err != nil {
		code := metrics.NotReadyBrokerDisconnected
		if errors.Is(err, mqtt.ErrNotSubscribed) {
			code = metrics.NotReadyNotSubscribed
		}
		return &metrics.NotReady{Code: code, Err: err}
	}
	return nil
}
