package mqtt

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
)

// The gateway's retained topics besides occupancy (DESIGN 2):
//
//	occupancyd/<gateway-id>/info  {"version","commit","started","spaces","doorways","dpus","settle_after"}
//	occupancyd/<gateway-id>/dpus  {"dpus","quiet","quiet_ids"}: DPU health, on change
//
// Both go out as control messages of the output (latest value per topic, sent again
// after every reconnect), at start and whenever their content changes: the tracker
// is looked at every healthEvery (its health changes at its ticks and with reports).

// Info is what the info topic says about this gateway that the tracker does not.
type Info struct {
	Version, Commit string
	Started         time.Time
	SettleAfter     time.Duration // engine.settle_after
}

// healthEvery is how often the tracker's health and sizes are looked at.
var healthEvery = time.Second

type infoJSON struct {
	Version     string `json:"version"`
	Commit      string `json:"commit"`
	Started     string `json:"started"`
	Spaces      int    `json:"spaces"`
	Doorways    int    `json:"doorways"`
	DPUs        int    `json:"dpus"`
	SettleAfter string `json:"settle_after"` // a duration, e.g. "5m0s"
}

// InfoJSON renders the info topic's payload.
func InfoJSON(i Info, s tracker.Sizes) []byte {
	b, _ := json.Marshal(infoJSON{Version: i.Version, Commit: i.Commit, Started: payload.FormatMS(i.Started.UnixMilli()),
		Spaces: s.Spaces, Doorways: s.Doorways, DPUs: s.DPUs, SettleAfter: i.SettleAfter.String()})
	return b
}

type dpusJSON struct {
	DPUs     int      `json:"dpus"`
	Quiet    int      `json:"quiet"`
	QuietIDs []string `json:"quiet_ids"`
}

// DPUsJSON renders the DPU health topic's payload (quiet_ids: at most
// tracker.MaxQuietIDs, by id).
func DPUsJSON(h tracker.Health) []byte {
	ids := h.QuietIDs
	if ids == nil {
		ids = []string{}
	}
	b, _ := json.Marshal(dpusJSON{DPUs: h.DPUs, Quiet: h.Quiet, QuietIDs: ids})
	return b
}

// healthLoop publishes the info and DPU health topics at start and on change,
// until Close.
func (m *Client) healthLoop() {
	tk := time.NewTicker(healthEvery)
	defer tk.Stop()
	var lastInfo, lastDPUs []byte
	for {
		if b := InfoJSON(m.opts.Info, m.tr.Sizes()); !bytes.Equal(b, lastInfo) {
			m.out.Publish(m.names.infoTopic, b)
			lastInfo = b
		}
		if b := DPUsJSON(m.tr.Health()); !bytes.Equal(b, lastDPUs) {
			m.out.Publish(m.names.dpusTopic, b)
			lastDPUs = b
		}
		select {
		case <-m.closed:
			return
		case <-tk.C:
		}
	}
}

// publishGatewayDiscovery sends the gateway's own discovery configs (control
// messages: sent again after every reconnect).
func (m *Client) publishGatewayDiscovery() {
	if m.disc == nil {
		return
	}
	for _, msg := range m.disc.Gateway() {
		m.out.Publish(msg.Topic, msg.Payload)
	}
}
