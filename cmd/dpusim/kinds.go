package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/mqtttopic"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Report kinds (DESIGN 2a) in the simulator.
//
// A DPU reports in its kind: the topology's kind for it, else the kind --kinds
// gives it (it then publishes on <...>/<id>/<kind>, a topic the generated configs
// subscribe with an mqtt.events_topic entry of that kind), else the kind of the
// entry its events topic matches. Its map is chosen as the gateway chooses it: its
// own, else its entry's where the entry is of its kind, else the kind's own names.

// KindSpec is the share of DPUs of each kind (--kinds events=0.6,interval=0.2,...).
type KindSpec [3]float64

// ParseKindSpec reads "events=0.6,interval=0.2,cumulative=0.2": shares of at least 0
// that add up to 1 (kinds left out have 0).
func ParseKindSpec(s string) (KindSpec, error) {
	var k KindSpec
	sum := 0.0
	for _, part := range splitList(s) {
		name, v, ok := strings.Cut(part, "=")
		kind, err := occupancy.ParseReportKind(strings.TrimSpace(name))
		f, ferr := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || name == "" || err != nil || ferr != nil || f < 0 || f > 1 {
			return k, fmt.Errorf("--kinds wants kind=share,... with kinds events, interval, cumulative and shares in [0, 1], got %q", part)
		}
		k[kind] = f
		sum += f
	}
	if sum < 0.999 || sum > 1.001 {
		return k, fmt.Errorf("--kinds: the shares add up to %g, want 1", sum)
	}
	return k, nil
}

// IsZero reports whether no spec was given.
func (k KindSpec) IsZero() bool { return k == KindSpec{} }

// Kind is the kind the spec gives DPU id: drawn from a hash of the seed and the id,
// so that `dpusim topology --kinds` and `dpusim run --kinds` of one seed agree
// whatever DPUs are selected.
func (k KindSpec) Kind(seed uint64, id string) occupancy.ReportKind {
	u := draw(seed, id)
	for kind, share := range k {
		if u < share {
			return occupancy.ReportKind(kind)
		}
		u -= share
	}
	return occupancy.ReportEvents
}

// draw is a number in [0, 1) from the seed and a DPU id: the same wherever drawn.
func draw(seed uint64, id string) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", seed, id)
	x := h.Sum64() // FNV mixes the high bits of short, similar ids poorly: splitmix64's finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// String renders the spec as --kinds takes it.
func (k KindSpec) String() string {
	var parts []string
	for kind, share := range k {
		if share > 0 {
			parts = append(parts, fmt.Sprintf("%s=%g", occupancy.ReportKind(kind), share))
		}
	}
	return strings.Join(parts, ",")
}

// Maps the generated topologies give: a share of the interval and cumulative DPUs
// (dpuMapShare) have their own map, and the cumulative entry of the events topics
// has one, so that all three ways of choosing a map are exercised.
var (
	intervalDPUMap = occupancy.Mapping{Start: "period.from", End: "period.to", In: "counts.fw", Out: "counts.bw", TSFormat: occupancy.FormatUnixMS}
	cumulDPUMap    = occupancy.Mapping{TS: "time", InTotal: "object.line_1_total_in", OutTotal: "object.line_1_total_out", TSFormat: occupancy.FormatRFC3339}
	cumulEntryMap  = occupancy.Mapping{TS: "t", InTotal: "totals.in", OutTotal: "totals.out", TSFormat: occupancy.FormatUnix}
)

// dpuMapShare is the share of a generated topology's report DPUs with a map of
// their own.
const dpuMapShare = 0.5

// kindTopic is the topic a DPU given kind k by --kinds publishes on: its events
// topic with the last level the kind's name (dpu/<id>/interval).
func kindTopic(eventsTopic string, k occupancy.ReportKind) string {
	return eventsTopic[:strings.LastIndexByte(eventsTopic, '/')+1] + k.String()
}

// encoder writes one kind's payloads in a map: each field at its path (dotted keys:
// the simulator writes no GJSON queries), times in its format.
type encoder struct {
	kind  occupancy.ReportKind
	paths [fOut + 1][]string // by field slot (fID ... fOut)
	tf    string
}

// Field slots of encoder.paths.
const (
	fID = iota
	fTS
	fDir
	fStart
	fEnd
	fIn
	fOut = fIn + 1
)

// newEncoder returns the encoder of kind k in map m (nil: the kind's own names); an
// error for a map the simulator cannot write (queries, layouts, a DPU id in the
// payload).
func newEncoder(k occupancy.ReportKind, m *occupancy.Mapping) (*encoder, error) {
	var mm occupancy.Mapping
	if m != nil {
		mm = *m
	}
	switch {
	case mm.Items != "" || mm.DPU != "" || mm.TSZone != "" || mm.TimeZone != "":
		return nil, fmt.Errorf("map %+v: dpusim writes no items, dpu, ts_zone or time_zone", mm)
	case mm.TSFormat != "" && mm.TSFormat != occupancy.FormatRFC3339 && mm.TSFormat != occupancy.FormatUnix && mm.TSFormat != occupancy.FormatUnixMS:
		return nil, fmt.Errorf("map ts_format %q: dpusim writes rfc3339, unix and unix_ms", mm.TSFormat)
	}
	e := &encoder{kind: k, tf: mm.TSFormat}
	set := func(slot int, p, def string) error {
		if p == "" {
			p = def
		}
		if strings.ContainsAny(p, `#|@*?\()[]{}"$!=<>%`) {
			return fmt.Errorf("map path %q: dpusim writes dotted keys only", p)
		}
		e.paths[slot] = strings.Split(p, ".")
		return nil
	}
	var err error
	switch k {
	case occupancy.ReportEvents:
		err = firstErr(set(fID, mm.ID, "id"), set(fTS, mm.TS, "ts"), set(fDir, mm.Direction, "direction"))
	case occupancy.ReportInterval:
		err = firstErr(set(fStart, mm.Start, "start"), set(fEnd, mm.End, "end"), set(fIn, mm.In, "in"), set(fOut, mm.Out, "out"))
	case occupancy.ReportCumulative:
		err = firstErr(set(fTS, mm.TS, "ts"), set(fIn, mm.InTotal, "in_total"), set(fOut, mm.OutTotal, "out_total"))
	}
	return e, err
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// time renders ms in the encoder's format.
func (e *encoder) time(ms int64) any {
	switch e.tf {
	case occupancy.FormatUnixMS:
		return ms
	case occupancy.FormatUnix:
		return json.Number(fmt.Sprintf("%d.%03d", ms/1000, ms%1000))
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// encode writes the payload of one event (ev) or report (r).
func (e *encoder) encode(ev SimEvent, r occupancy.Report) []byte {
	obj := map[string]any{}
	put := func(slot int, v any) {
		m := obj
		p := e.paths[slot]
		for _, k := range p[:len(p)-1] {
			sub, ok := m[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[k] = sub
			}
			m = sub
		}
		m[p[len(p)-1]] = v
	}
	switch e.kind {
	case occupancy.ReportEvents:
		put(fID, ev.Seq)
		put(fTS, e.time(ev.TS))
		put(fDir, ev.Direction)
	case occupancy.ReportInterval:
		put(fStart, e.time(r.Start))
		put(fEnd, e.time(r.TS))
		put(fIn, r.In)
		put(fOut, r.Out)
	case occupancy.ReportCumulative:
		put(fTS, e.time(r.TS))
		put(fIn, r.In)
		put(fOut, r.Out)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err) // maps of strings and numbers
	}
	return b
}

// topicEntries reads mqtt.events_topic as the gateway does: a filter, a list, or
// entries {filter, kind, map}.
func topicEntries(topics []config.EventsTopic, filters []string) config.EventsTopics {
	if len(topics) > 0 {
		return topics
	}
	return config.Topics(filters...)
}

// entryFor is the first entry whose filter matches topic (nil: none).
func entryFor(entries config.EventsTopics, topic string) *config.EventsTopic {
	for i := range entries {
		if _, ok := mqtttopic.Match(entries[i].Filter, topic); ok {
			return &entries[i]
		}
	}
	return nil
}

// dpuPlan is how one DPU reports: its kind, its topic, its map on MQTT (nil: the
// kind's own names), and whether it may push over HTTP and in which map. The
// gateway decodes a push by the DPU's own kind and map, else by the kind and map all
// entries share, else as events: a DPU whose kind is not its own (--kinds, an
// entry's) pushes nothing, nor one the entries' shared map would decode.
type dpuPlan struct {
	kind  occupancy.ReportKind
	topic string
	m     *occupancy.Mapping
	push  bool
	httpM *occupancy.Mapping
}

// planDPU decides how DPU d, whose events topic is eventsTopic, reports: see the
// comment at the top of this file. spec, when set, gives DPUs without a topology
// kind theirs.
func planDPU(d occupancy.DPUConfig, eventsTopic string, entries config.EventsTopics, spec KindSpec, seed uint64) (dpuPlan, error) {
	p := dpuPlan{topic: eventsTopic}
	own := d.Kind != ""
	switch {
	case own:
		k, err := occupancy.ParseReportKind(d.Kind)
		if err != nil {
			return p, fmt.Errorf("DPU %q: %w", d.ID, err)
		}
		p.kind = k
	case !spec.IsZero() && spec.Kind(seed, d.ID) != occupancy.ReportEvents:
		p.kind = spec.Kind(seed, d.ID)
		p.topic = kindTopic(eventsTopic, p.kind)
		if e := entryFor(entries, p.topic); e == nil || e.ReportKind() != p.kind {
			return p, fmt.Errorf("--kinds: DPU %q reports %s on %s, but the config has no mqtt.events_topic entry of kind %s for it (dpusim topology writes {filter: dpu/+/%s, kind: %s})",
				d.ID, p.kind, p.topic, p.kind, p.kind, p.kind)
		}
	}
	e := entryFor(entries, p.topic)
	if e != nil && e.DPUInPayload() {
		return p, fmt.Errorf("DPU %q: its topic %s is on the entry %q whose map takes the DPU id from the payload: dpusim does not write those", d.ID, p.topic, e.Filter)
	}
	if !own && p.kind == occupancy.ReportEvents && e != nil {
		p.kind = e.ReportKind()
	}
	switch {
	case d.Map != nil:
		p.m = d.Map
	case e != nil && e.ReportKind() == p.kind:
		p.m = e.Map
	}
	p.push, p.httpM = own || p.kind == occupancy.ReportEvents, d.Map
	// A DPU without a map of its own is pushed in the kind's own field names, which
	// the gateway decodes a push with unless every entry shares a map (it then takes
	// that one for the DPUs of the entries' kind): no push there.
	if sk, sm, ok := sharedEntry(entries); ok && d.Map == nil && !sm.IsZero() && (!own || sk == p.kind) {
		p.push = false
	}
	return p, nil
}

// sharedEntry is the kind and map (without its dpu path) every entry has, as the
// gateway decodes an HTTP push of a DPU that sets no kind; ok false where they differ.
func sharedEntry(entries config.EventsTopics) (occupancy.ReportKind, occupancy.Mapping, bool) {
	var kind occupancy.ReportKind
	var m occupancy.Mapping
	for i, e := range entries {
		var em occupancy.Mapping
		if e.Map != nil {
			em = *e.Map
		}
		if i > 0 && (e.ReportKind() != kind || em != m) {
			return 0, occupancy.Mapping{}, false
		}
		kind, m = e.ReportKind(), em
	}
	m.DPU = ""
	return kind, m, true
}
