package main

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/httpapi"
	"github.com/occupancyd/occupancyd/gateway/httpapi/ui"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/stream"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The status page (DESIGN 5a) and its live stream (GET /v1/stream), wired to the
// tracker, the MQTT client, the metrics and the store.

// newStreamHub is the hub of GET /v1/stream over the tracker's change feed.
func newStreamHub(t *tracker.Tracker, cfg config.Config, log zerolog.Logger) (*stream.Hub, error) {
	h, err := stream.New(stream.Options{
		Feed:        trackerFeed{t},
		Source:      t,
		Render:      payload.AppendOccupancyJSON,
		MaxClients:  cfg.HTTP.MaxStreamClients,
		MinInterval: cfg.MQTT.PublishMinInterval,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	return h, nil
}

// registerPage adds the page (GET /, /ui/) and the stream to the HTTP server; the
// streams end when the server stops.
func registerPage(hs *httpapi.Server, hub *stream.Hub) error {
	page, err := ui.New()
	if err != nil {
		return err
	}
	page.Register(hs)
	hs.Handle("GET /v1/stream", hub)
	hs.OnShutdown(hub.Close)
	return nil
}

// pageSources are what GET /v1/status and /v1/rejections read.
func (m *Main) pageSources(cfg config.Config, started time.Time, hub *stream.Hub) httpapi.PageSources {
	c, _, _ := buildInfo()
	info := httpapi.GatewayInfo{ID: cfg.Gateway.ID, Version: Version(), Commit: c, Started: started, Broker: cfg.MQTT.Broker}
	if m.broker != nil {
		info.Broker, info.Embedded = m.broker.Addr(), true
	}
	client, mtr := m.client, m.metrics
	ps := httpapi.PageSources{
		Gateway: info,
		Broker: func() httpapi.BrokerState {
			conn, sub := client.State()
			return httpapi.BrokerState{Connected: conn, Subscribed: sub}
		},
		Totals: func() (float64, float64) {
			return counterSum(mtr.EventsAccepted), counterSum(mtr.EventsRejected)
		},
		Stream:      func() (int, int) { return hub.Clients(), hub.MaxClients() },
		DeadLetters: m.store.DeadLetters,
		DefaultKind: defaultKind(cfg.MQTT.EventsTopic),
	}
	if q, ok := any(m.tracker).(quietDPUs); ok {
		ps.Quiet = q.QuietDPUs
	}
	return ps
}

// trackerFeed is the tracker's change feed as the stream hub reads it.
type trackerFeed struct{ t *tracker.Tracker }

func (f trackerFeed) Subscribe() stream.Subscription { return f.t.Subscribe() }

// defaultKind is the report kind of a DPU that sets none: the kind of every events
// topic entry where they agree ("events" for plain filters), else "" (it depends on
// the topic the DPU sends on).
func defaultKind(topics config.EventsTopics) string {
	kind := occupancy.ReportEvents.String()
	for i, e := range topics {
		k := e.ReportKind().String()
		if i > 0 && k != kind {
			return ""
		}
		kind = k
	}
	return kind
}
