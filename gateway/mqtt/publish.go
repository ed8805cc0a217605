package mqtt

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// occupancyTopic is `<output_prefix>/<space>`; its value topic adds `/count`.
func occupancyTopic(prefix, space string) string { return prefix + "/" + space }

// publishLoop publishes the change feed at every engine tick until Close.
func (m *Client) publishLoop() {
	for {
		select {
		case <-m.closed:
			return
		case <-m.feed.Ticked():
			m.flush(m.closed)
		}
	}
}

// stopped reports whether stop is closed. Every pass over the spaces gives up once
// the client is closed — Close's final flush waits for a pass in progress only
// within its budget —, so a stop never waits for tens of thousands of publishes
// (68,000 spaces at start, for a 100,000-DPU campus).
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// flush publishes what the change feed holds: the changed spaces (coalesced: the
// latest value of each), cleared topics of removed spaces and, after a new topology
// version, the discovery configs. While disconnected nothing is drained: onConnect
// publishes every space anyway, and clears the spaces removed meanwhile. It gives up
// when stop is closed.
func (m *Client) flush(stop <-chan struct{}) {
	if !m.connected.Load() {
		return
	}
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	changed, removed, topology := m.feed.Drain()
	m.clearRemoved(removed, stop)
	m.publishOccupancies(changed, stop)
	if topology {
		m.publishDiscoveryAll(stop)
	}
}

// publishAll publishes every space and its discovery config (at start and after
// every reconnect), after clearing the spaces removed while disconnected.
func (m *Client) publishAll() {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	_, removed, _ := m.feed.Drain() // every space is published below
	m.clearRemoved(removed, m.closed)
	m.publishOccupancies(m.tr.Spaces(), m.closed)
	m.publishDiscoveryAll(m.closed)
}

// publishOccupancies publishes, retained with QoS 1, the JSON object and the bare
// count of each space.
func (m *Client) publishOccupancies(occs []occupancy.Occupancy, stop <-chan struct{}) {
	for _, o := range occs {
		if stopped(stop) {
			return
		}
		topic := occupancyTopic(m.names.outputPrefix, o.Space)
		m.publish(topic, 1, true, payload.AppendOccupancyJSON(make([]byte, 0, 192), o))
		m.publish(topic+"/count", 1, true, []byte(strconv.FormatInt(o.Occupancy, 10)))
	}
}

// clearRemoved removes the retained topics and the Home Assistant config of spaces
// a topology version removed (empty retained payloads), unless a later version
// added them back.
func (m *Client) clearRemoved(ids []string, stop <-chan struct{}) {
	for _, id := range ids {
		if stopped(stop) {
			return
		}
		if _, ok := m.tr.Space(id); ok {
			continue
		}
		topic := occupancyTopic(m.names.outputPrefix, id)
		m.publish(topic, 1, true, nil)
		m.publish(topic+"/count", 1, true, nil)
		if m.names.haEnabled {
			m.publish(discoveryTopic(m.names.haPrefix, m.opts.GatewayID, id), 1, true, nil)
		}
	}
}

// rejectedLoop publishes the rejections (QoS 0, not retained) while connected.
func (m *Client) rejectedLoop() {
	if m.opts.Rejected == nil {
		return
	}
	for {
		select {
		case <-m.closed:
			return
		case r := <-m.opts.Rejected:
			if m.connected.Load() {
				m.publish(m.names.rejectedTopic, 0, false, RejectionJSON(r.Topic, r.Rejection, r.Payload))
			}
		}
	}
}

// rejectionJSON is the payload on the rejected topic (DESIGN 2).
type rejectionJSON struct {
	Topic   string `json:"topic"`
	Reason  string `json:"reason"`
	Payload string `json:"payload"`
	Detail  string `json:"detail,omitempty"`
	Index   *int   `json:"index,omitempty"`
}

// RejectionJSON renders `{"topic","reason","payload"}` (plus "detail" and, for a batch
// element, "index"); payload is the message cut to 1 KiB, as a JSON string.
func RejectionJSON(topic string, r occupancy.Rejection, msg []byte) []byte {
	if len(msg) > ingest.MaxRejectedPayload {
		msg = msg[:ingest.MaxRejectedPayload]
	}
	v := rejectionJSON{
		Topic:   topic,
		Reason:  string(r.Reason),
		Payload: strings.ToValidUTF8(string(msg), "\uFFFD"),
		Detail:  r.Detail,
	}
	if r.Index >= 0 {
		idx := r.Index
		v.Index = &idx
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen with strings only
		return []byte(`{"topic":"","reason":"` + string(r.Reason) + `","payload":""}`)
	}
	return b
}
