package ingest

import (
	"fmt"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Report kinds (DESIGN 2a): which decoder takes a message.
//
// A message on an mqtt.events_topic entry is decoded in
//   - the kind: the DPU's own kind in the topology in force, else the entry's kind,
//     else events;
//   - the map: the DPU's own map, else the entry's map when the entry's kind is the
//     DPU's kind, else the kind's own field names.
//
// An entry whose map takes the DPU id from the payload (map.dpu) decodes every
// message on its filter with its own kind and map: the DPU is not known before.
// HTTP push names its DPU and has no topic: it takes the entries' kind and map where
// every entry has the same kind and the same map (a fleet of one vendor, also the
// kind GET /v1/dpus shows), without the map's dpu path (the route names the DPU, and
// a payload must not speak for another), else events; then as on a topic: the DPU's
// own kind and map win, and an entry's map serves a DPU of its kind. A DPU the
// topology does not know (its reports are parked) is decoded as its entry says, or
// as the entries' shared kind and map when pushed.
//
// Events without a map — the default, and the hot path — decode through
// occupancy.DecodePayload exactly as before kinds: their decoder is nil here.

// entryRoute is one mqtt.events_topic entry.
type entryRoute struct {
	filter       string
	kind         occupancy.ReportKind
	dec          *occupancy.Decoder // nil: events without a map
	dpuInPayload bool
	m            occupancy.Mapping // the entry's map (zero: none)
}

// pushRoute is the route an HTTP push takes where its DPU sets no kind: the
// entries' kind and map where they all have the same (without the map's dpu path:
// the route names the DPU), else events without a map.
func pushRoute(entries []entryRoute) (*entryRoute, error) {
	if len(entries) == 0 {
		return &entryRoute{}, nil
	}
	first := entries[0]
	for _, e := range entries[1:] {
		if e.kind != first.kind || e.m != first.m {
			return &entryRoute{}, nil
		}
	}
	r := &entryRoute{kind: first.kind, m: first.m}
	r.m.DPU = ""
	if r.kind == occupancy.ReportEvents && r.m.IsZero() {
		return r, nil
	}
	var err error
	if r.dec, err = occupancy.NewDecoder(r.kind, r.m); err != nil {
		return nil, fmt.Errorf("mqtt.events_topic map for HTTP push: %w", err)
	}
	return r, nil
}

// dpuRoute is a DPU of the topology that sets its own kind.
type dpuRoute struct {
	kind occupancy.ReportKind
	dec  *occupancy.Decoder // its own map; nil: the entry's or the kind's default
}

// routes are the decoders of one topology version; replaced whole by SetTopology.
type routes struct {
	entries  []entryRoute
	push     *entryRoute         // what an HTTP push takes where its DPU sets no kind (pushRoute)
	dpus     map[string]dpuRoute // only DPUs with a kind of their own
	defaults [3]*occupancy.Decoder
}

// newEntries builds the routes of the events topic entries.
func newEntries(topics config.EventsTopics) ([]entryRoute, error) {
	out := make([]entryRoute, len(topics))
	for i, e := range topics {
		if err := config.CheckTopicFilter(e.Filter, !e.DPUInPayload()); err != nil {
			return nil, fmt.Errorf("mqtt.events_topic[%d]: %w", i, err)
		}
		k, err := occupancy.ParseReportKind(e.Kind)
		if err != nil {
			return nil, fmt.Errorf("mqtt.events_topic[%d].kind: %w", i, err)
		}
		r := entryRoute{filter: e.Filter, kind: k, dpuInPayload: e.DPUInPayload()}
		if e.Map != nil {
			r.m = *e.Map
		}
		if e.Map != nil || k != occupancy.ReportEvents {
			var m occupancy.Mapping
			if e.Map != nil {
				m = *e.Map
			}
			if r.dec, err = occupancy.NewDecoder(k, m); err != nil {
				return nil, fmt.Errorf("mqtt.events_topic[%d].map: %w", i, err)
			}
		}
		out[i] = r
	}
	return out, nil
}

// newRoutes builds the routes of entries for the DPUs of tc.
func newRoutes(entries []entryRoute, tc *occupancy.TopologyConfig) (*routes, error) {
	push, err := pushRoute(entries)
	if err != nil {
		return nil, err
	}
	r := &routes{entries: entries, push: push}
	for _, k := range []occupancy.ReportKind{occupancy.ReportInterval, occupancy.ReportCumulative} {
		d, err := occupancy.NewDecoder(k, occupancy.Mapping{})
		if err != nil {
			return nil, err
		}
		r.defaults[k] = d
	}
	if tc == nil {
		return r, nil
	}
	for i, d := range tc.DPUs {
		if d.Kind == "" && d.Map == nil {
			continue
		}
		k, err := occupancy.ParseReportKind(d.Kind)
		if err != nil {
			return nil, fmt.Errorf("topology.dpus[%d].kind: %w", i, err)
		}
		dr := dpuRoute{kind: k}
		if d.Map != nil {
			if dr.dec, err = occupancy.NewDecoder(k, *d.Map); err != nil {
				return nil, fmt.Errorf("topology.dpus[%d].map: %w", i, err)
			}
		}
		if r.dpus == nil {
			r.dpus = map[string]dpuRoute{}
		}
		r.dpus[d.ID] = dr
	}
	return r, nil
}

// decoder is the decoder of a message of dpu on entry (nil: HTTP push); nil means
// events without a map (occupancy.DecodePayload).
func (r *routes) decoder(entry *entryRoute, dpu string) *occupancy.Decoder {
	if entry != nil && entry.dpuInPayload {
		return entry.dec
	}
	if entry == nil {
		entry = r.push
	}
	own, ok := r.dpus[dpu]
	switch {
	case !ok && entry != nil:
		return entry.dec
	case !ok:
		return nil
	case own.dec != nil:
		return own.dec
	case entry != nil && entry.kind == own.kind:
		return entry.dec
	}
	return r.defaults[own.kind] // nil for events
}

// Kind is the report kind a message of dpu takes: on the topic's entry (topic ""
// for HTTP push). It is the kind of the decoder decode uses.
func (p *Pipeline) Kind(topic, dpu string) occupancy.ReportKind {
	var entry *entryRoute
	if topic != "" {
		e, d, err := p.route(topic)
		if err != nil {
			return occupancy.ReportEvents
		}
		entry = e
		if d != "" {
			dpu = d
		}
	}
	if d := p.routes.Load().decoder(entry, dpu); d != nil {
		return d.Kind()
	}
	return occupancy.ReportEvents
}

// SetTopology makes the kinds and maps of tc's DPUs decide how their messages are
// decoded (at start and on every topology version: SIGHUP).
func (p *Pipeline) SetTopology(tc *occupancy.TopologyConfig) error {
	r, err := newRoutes(p.entries, tc)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	p.routes.Store(r)
	return nil
}
