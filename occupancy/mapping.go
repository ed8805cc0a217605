package occupancy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Mapping says where a vendor's payload keeps each field (DESIGN 2a: the `map` of a
// DPU or of a topic filter). Every field is a GJSON path (github.com/tidwall/gjson:
// `a.b`, `list.0`, `list.#(name=="fw").value`, modifiers such as `|@flatten`)
// evaluated against each report object of the payload; a path beginning with `$.`
// is evaluated against the whole payload instead (a device id or time zone kept once
// beside a list of reports). An empty field takes the field's own name, the payload
// shape DESIGN 2a gives for the kind. Only the fields of the DPU's kind may be set.
type Mapping struct {
	// Items is where the list of report objects is (e.g. `CountLogs`); empty: the
	// payload itself, one object or an array of them.
	Items string `yaml:"items,omitempty" json:"items,omitempty"`
	// DPU is where the DPU id is, when the payload carries it; empty: the DPU id is
	// the topic's (or the HTTP route's).
	DPU string `yaml:"dpu,omitempty" json:"dpu,omitempty"`

	TS        string `yaml:"ts,omitempty" json:"ts,omitempty"`               // events, cumulative
	Direction string `yaml:"direction,omitempty" json:"direction,omitempty"` // events
	ID        string `yaml:"id,omitempty" json:"id,omitempty"`               // events (optional field)
	Start     string `yaml:"start,omitempty" json:"start,omitempty"`         // interval
	End       string `yaml:"end,omitempty" json:"end,omitempty"`             // interval
	In        string `yaml:"in,omitempty" json:"in,omitempty"`               // interval
	Out       string `yaml:"out,omitempty" json:"out,omitempty"`             // interval
	InTotal   string `yaml:"in_total,omitempty" json:"in_total,omitempty"`   // cumulative
	OutTotal  string `yaml:"out_total,omitempty" json:"out_total,omitempty"` // cumulative

	// TSFormat is how times (ts, start, end) are written: empty for an RFC 3339
	// string or an integer of Unix milliseconds (as event objects have them);
	// `rfc3339`; `unix` (seconds, a number or a string, fractions allowed);
	// `unix_ms`; or a Go time layout such as `2006/01/02 15:04:05`.
	TSFormat string `yaml:"ts_format,omitempty" json:"ts_format,omitempty"`
	// TSZone is where the time zone of layout times without one is: a field holding
	// an IANA name (`Europe/Berlin`) or a UTC offset (`+08:00`, `-0530`, `UTC+8:00`,
	// `GMT-3`, a number of hours).
	TSZone string `yaml:"ts_zone,omitempty" json:"ts_zone,omitempty"`
	// TimeZone is the fixed zone of layout times without one (an IANA name or a UTC
	// offset as for TSZone). Neither set: UTC.
	TimeZone string `yaml:"time_zone,omitempty" json:"time_zone,omitempty"`
}

// IsZero reports whether m sets nothing (every field takes its default).
func (m Mapping) IsZero() bool { return m == Mapping{} }

// Time formats of Mapping.TSFormat.
const (
	FormatAuto    = ""
	FormatRFC3339 = "rfc3339"
	FormatUnix    = "unix"
	FormatUnixMS  = "unix_ms"
)

// mapField is one field of a mapping: its configuration key, the Mapping field and
// the kinds it belongs to.
type mapField struct {
	key   string
	get   func(*Mapping) string
	kinds [3]bool // by ReportKind
}

var mapFields = []mapField{
	{key: "ts", get: func(m *Mapping) string { return m.TS }, kinds: [3]bool{ReportEvents: true, ReportCumulative: true}},
	{key: "direction", get: func(m *Mapping) string { return m.Direction }, kinds: [3]bool{ReportEvents: true}},
	{key: "id", get: func(m *Mapping) string { return m.ID }, kinds: [3]bool{ReportEvents: true}},
	{key: "start", get: func(m *Mapping) string { return m.Start }, kinds: [3]bool{ReportInterval: true}},
	{key: "end", get: func(m *Mapping) string { return m.End }, kinds: [3]bool{ReportInterval: true}},
	{key: "in", get: func(m *Mapping) string { return m.In }, kinds: [3]bool{ReportInterval: true}},
	{key: "out", get: func(m *Mapping) string { return m.Out }, kinds: [3]bool{ReportInterval: true}},
	{key: "in_total", get: func(m *Mapping) string { return m.InTotal }, kinds: [3]bool{ReportCumulative: true}},
	{key: "out_total", get: func(m *Mapping) string { return m.OutTotal }, kinds: [3]bool{ReportCumulative: true}},
}

// kindFields lists the field keys of kind k, for messages.
func kindFields(k ReportKind) string {
	var ks []string
	for _, f := range mapFields {
		if f.kinds[k] {
			ks = append(ks, f.key)
		}
	}
	return strings.Join(ks, ", ")
}

const maxPathLen = 512

// Validate reports every problem of m for a DPU of kind k, each with its key path
// relative to the map (e.g. {Path: "ts_format", ...}); the caller prefixes the
// map's own path (`topology.dpus[3].map`).
func (m Mapping) Validate(k ReportKind) []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if k > ReportCumulative {
		add("", "unknown kind %d", k)
		return ps
	}
	checkPath := func(key, p string) {
		switch {
		case p == "":
		case len(p) > maxPathLen:
			add(key, "path of %d bytes: at most %d", len(p), maxPathLen)
		case !utf8.ValidString(p) || strings.TrimSpace(p) != p:
			add(key, "path %q has blanks at its ends or is not UTF-8", truncate(p, 60))
		case p == "$." || p == "$":
			add(key, "path %q names no field", p)
		}
	}
	checkPath("items", m.Items)
	if strings.HasPrefix(m.Items, "$.") {
		add("items", "items is taken from the whole payload already: drop the $.")
	}
	checkPath("dpu", m.DPU)
	for _, f := range mapFields {
		p := f.get(&m)
		if p != "" && !f.kinds[k] {
			add(f.key, "not a field of kind %s (it has %s)", k, kindFields(k))
			continue
		}
		checkPath(f.key, p)
	}
	tf, err := parseTimeFormat(m.TSFormat)
	if err != nil {
		add("ts_format", "%v", err)
	}
	checkPath("ts_zone", m.TSZone)
	if m.TimeZone != "" {
		if _, err := parseZone(m.TimeZone); err != nil {
			add("time_zone", "%v", err)
		}
	}
	if m.TSZone != "" || m.TimeZone != "" {
		key := "time_zone"
		if m.TSZone != "" {
			key = "ts_zone"
		}
		switch {
		case m.TSZone != "" && m.TimeZone != "":
			add("time_zone", "set ts_zone or time_zone, not both")
		case err != nil:
		case !tf.layout:
			add(key, "only a ts_format layout without a zone takes one (ts_format is %q)", m.TSFormat)
		case tf.hasZone:
			add(key, "the ts_format layout %q carries its own zone", m.TSFormat)
		}
	}
	return ps
}

// timeFormat is a parsed Mapping.TSFormat.
type timeFormat struct {
	name    string // FormatAuto, FormatRFC3339, FormatUnix, FormatUnixMS or the layout
	layout  bool
	hasZone bool // the layout carries a zone or offset
}

func parseTimeFormat(s string) (timeFormat, error) {
	switch s {
	case FormatAuto, FormatRFC3339, FormatUnix, FormatUnixMS:
		return timeFormat{name: s}, nil
	}
	// A layout must write and read back year, month, day, hour and minute.
	ref := time.Date(2017, 11, 23, 19, 41, 27, 0, time.UTC)
	got, err := time.Parse(s, ref.Format(s))
	if err != nil || !got.Truncate(time.Minute).Equal(ref.Truncate(time.Minute)) {
		return timeFormat{}, fmt.Errorf("%q is not rfc3339, unix, unix_ms or a Go time layout with year, month, day, hour and minute (e.g. 2006/01/02 15:04:05)", truncate(s, 60))
	}
	// It carries a zone when a time in another zone reads back with its offset.
	off := time.FixedZone("", 5*3600+1800)
	z, err := time.Parse(s, ref.In(off).Format(s))
	_, o := z.Zone()
	return timeFormat{name: s, layout: true, hasZone: err == nil && o == 5*3600+1800}, nil
}

// Decoded is what one payload decodes to: events (kind events) or reports (interval,
// cumulative), and the rejections of what did not decode. Index of a rejection is the
// element's position in the payload's list (-1 for the whole message or a payload of
// one object); the decoded items are the other positions, in order.
type Decoded struct {
	Events     []Event
	Reports    []Report
	Rejections []Rejection
}

// Decoder decodes the payloads of one kind and mapping. Build it once per DPU or
// topic filter (NewDecoder) and use it for every message; it is safe for concurrent
// use.
type Decoder struct {
	kind ReportKind
	fast bool // events without a map: DecodePayload

	items string
	dpu   fieldPath // path "": the DPU id is the caller's
	// f are the kind's fields: events ts, direction, id; interval start, end, in
	// (and out in out); cumulative ts, in_total, out_total.
	f    [3]fieldPath
	out  fieldPath
	tf   timeFormat
	zone fieldPath      // path "": loc
	loc  *time.Location // zone of layout times without one
}

// fieldPath is a compiled path: its key (for details), the GJSON path, and whether it
// is taken from the whole payload ($.), then once per payload into rootVals[slot].
type fieldPath struct {
	key  string
	path string
	root bool
	slot int
}

// Slots of the decoder's paths in rootVals.
const (
	slotDPU = iota
	slotF0
	slotF1
	slotF2
	slotOut
	slotZone
	nSlots
)

type rootVals [nSlots]gjson.Result

func newFieldPath(key, p, def string, slot int) fieldPath {
	if p == "" {
		p = def
	}
	if rest, ok := strings.CutPrefix(p, "$."); ok {
		return fieldPath{key: key, path: rest, root: true, slot: slot}
	}
	return fieldPath{key: key, path: p, slot: slot}
}

// NewDecoder returns the decoder of kind k with mapping m (the zero Mapping: the
// default payload shape of the kind). A mapping that does not validate is an error
// listing its problems.
func NewDecoder(k ReportKind, m Mapping) (*Decoder, error) {
	if ps := m.Validate(k); len(ps) > 0 {
		msgs := make([]string, len(ps))
		for i, p := range ps {
			msgs[i] = p.String()
			if p.Path == "" {
				msgs[i] = p.Message
			}
		}
		return nil, fmt.Errorf("invalid map for kind %s: %s", k, strings.Join(msgs, "; "))
	}
	d := &Decoder{kind: k, fast: k == ReportEvents && m.IsZero(), items: m.Items}
	d.tf, _ = parseTimeFormat(m.TSFormat)
	if m.DPU != "" {
		d.dpu = newFieldPath("dpu", m.DPU, "", slotDPU)
	}
	switch k {
	case ReportEvents:
		d.f = [3]fieldPath{newFieldPath("ts", m.TS, "ts", slotF0), newFieldPath("direction", m.Direction, "direction", slotF1),
			newFieldPath("id", m.ID, "id", slotF2)}
	case ReportInterval:
		d.f = [3]fieldPath{newFieldPath("start", m.Start, "start", slotF0), newFieldPath("end", m.End, "end", slotF1),
			newFieldPath("in", m.In, "in", slotF2)}
		d.out = newFieldPath("out", m.Out, "out", slotOut)
	case ReportCumulative:
		d.f = [3]fieldPath{newFieldPath("ts", m.TS, "ts", slotF0), newFieldPath("in_total", m.InTotal, "in_total", slotF1),
			newFieldPath("out_total", m.OutTotal, "out_total", slotF2)}
	}
	if m.TSZone != "" {
		d.zone = newFieldPath("ts_zone", m.TSZone, "", slotZone)
	}
	d.loc = time.UTC
	if m.TimeZone != "" {
		d.loc, _ = parseZone(m.TimeZone)
	}
	return d, nil
}

// Kind is the kind the decoder decodes.
func (d *Decoder) Kind() ReportKind { return d.kind }

// Decode decodes one payload of DPU dpu (the topic's or the route's; where the
// mapping takes the DPU id from the payload, dpu may be empty and is ignored). Good
// items of a list survive bad neighbours. A kind of events without a map decodes
// exactly as DecodePayload.
func (d *Decoder) Decode(dpu string, payload []byte, lim Limits) Decoded {
	if d.fast {
		evs, rejs := DecodePayload(dpu, payload, lim)
		return Decoded{Events: evs, Rejections: rejs}
	}
	var out Decoded
	whole := func(r Reason, format string, args ...any) Decoded {
		out.Rejections = []Rejection{{Reason: r, Index: -1, Detail: fmt.Sprintf(format, args...)}}
		return out
	}
	if lim.MaxPayload > 0 && len(payload) > lim.MaxPayload {
		return whole(ReasonTooLarge, "payload of %d bytes exceeds max_payload %d", len(payload), lim.MaxPayload)
	}
	if d.dpu.path == "" && !ValidID(dpu) {
		return whole(ReasonBadTopic, "invalid dpu id %q: want [A-Za-z0-9_-]{1,64}", truncate(dpu, 80))
	}
	body := bytes.TrimSpace(payload)
	if len(body) == 0 {
		return whole(ReasonBadJSON, "empty payload")
	}
	if !gjson.ValidBytes(body) {
		return whole(ReasonBadJSON, "invalid json")
	}
	root := gjson.ParseBytes(body)
	// $. paths once per payload, not once per item.
	var rv rootVals
	for _, p := range []*fieldPath{&d.dpu, &d.f[0], &d.f[1], &d.f[2], &d.out, &d.zone} {
		if p.root {
			rv[p.slot] = root.Get(p.path)
		}
	}
	list := root
	if d.items != "" {
		list = root.Get(d.items)
		if !list.Exists() {
			return whole(ReasonBadReport, "missing items (path %q)", d.items)
		}
	}
	if !list.IsArray() {
		if !list.IsObject() {
			return whole(ReasonBadJSON, "want a json object or an array of them")
		}
		rej, ok := d.decodeItem(&out, dpu, &rv, list, lim)
		if !ok {
			rej.Index = -1
			out.Rejections = append(out.Rejections, rej)
		}
		return out
	}
	i := 0
	list.ForEach(func(_, item gjson.Result) bool {
		if rej, ok := d.decodeItem(&out, dpu, &rv, item, lim); !ok {
			rej.Index = i
			out.Rejections = append(out.Rejections, rej)
		}
		i++
		return true
	})
	return out
}

// get evaluates p on the item or, for a $. path, takes its value in the payload.
func (p fieldPath) get(rv *rootVals, item gjson.Result) gjson.Result {
	if p.root {
		return rv[p.slot]
	}
	return item.Get(p.path)
}

// present is p's value, or a bad_report rejection naming the missing field.
func (p fieldPath) present(rv *rootVals, item gjson.Result) (gjson.Result, Rejection, bool) {
	v := p.get(rv, item)
	if !v.Exists() || v.Type == gjson.Null {
		path := p.path
		if p.root {
			path = "$." + path
		}
		if path == p.key {
			return v, Rejection{Reason: ReasonBadReport, Detail: fmt.Sprintf("missing %s", p.key)}, false
		}
		return v, Rejection{Reason: ReasonBadReport, Detail: fmt.Sprintf("missing %s (path %q)", p.key, path)}, false
	}
	return v, Rejection{}, true
}

// decodeItem decodes one report object into out.
func (d *Decoder) decodeItem(out *Decoded, dpu string, root *rootVals, item gjson.Result, lim Limits) (Rejection, bool) {
	if !item.IsObject() {
		return Rejection{Reason: ReasonBadJSON, Detail: "report must be a json object"}, false
	}
	if d.dpu.path != "" {
		v, rej, ok := d.dpu.present(root, item)
		if !ok {
			return rej, false
		}
		dpu = v.String()
		if v.Type == gjson.JSON || !ValidID(dpu) {
			return Rejection{Reason: ReasonBadReport, Detail: fmt.Sprintf("dpu %s: want an id of [A-Za-z0-9_-]{1,64}", truncate(v.Raw, 80))}, false
		}
	}
	// Fields are read in order; the first that fails is the item's rejection.
	var fail *Rejection
	failed := func(r Rejection) { fail = &r }
	value := func(p fieldPath) (gjson.Result, bool) {
		if fail != nil {
			return gjson.Result{}, false
		}
		v, rej, ok := p.present(root, item)
		if !ok {
			failed(rej)
		}
		return v, ok
	}
	var loc *time.Location
	zone := func() (*time.Location, Rejection, bool) {
		if loc == nil && d.zone.path == "" {
			loc = d.loc
		}
		if loc != nil {
			return loc, Rejection{}, true
		}
		v, rej, ok := d.zone.present(root, item)
		if !ok {
			return nil, rej, false
		}
		l, err := parseZone(zoneText(v))
		if err != nil {
			return nil, Rejection{Reason: ReasonBadTS, Detail: "ts_zone: " + err.Error()}, false
		}
		loc = l
		return loc, Rejection{}, true
	}
	timeField := func(p fieldPath) int64 {
		v, ok := value(p)
		if !ok {
			return 0
		}
		ms, err := d.parseTime(v, zone)
		var zr zoneError
		switch {
		case err == nil:
			return ms
		case errors.As(err, &zr):
			failed(zr.rej)
		default:
			detail := err.Error()
			if rest, ok := strings.CutPrefix(detail, "ts"); ok && d.tf.name == FormatAuto {
				detail = p.key + rest // decodeTS names the field ts
			} else {
				detail = p.key + ": " + detail
			}
			failed(Rejection{Reason: ReasonBadTS, Detail: detail})
		}
		return 0
	}
	countField := func(p fieldPath) int64 {
		v, ok := value(p)
		if !ok {
			return 0
		}
		n, err := parseCount(v)
		if err != nil {
			failed(Rejection{Reason: ReasonBadReport, Detail: p.key + ": " + err.Error()})
		}
		return n
	}
	switch d.kind {
	case ReportEvents:
		ts := timeField(d.f[0])
		dv, ok := value(d.f[1])
		if !ok {
			return *fail, false
		}
		dir, err := decodeDirection(json.RawMessage(dv.Raw))
		if err != nil {
			return Rejection{Reason: ReasonBadDirection, Detail: err.Error()}, false
		}
		var id string
		if iv := d.f[2].get(root, item); iv.Exists() {
			if id, err = decodeID(json.RawMessage(iv.Raw)); err != nil {
				return Rejection{Reason: ReasonBadID, Detail: err.Error()}, false
			}
		}
		if rej, ok := receiveChecks(ts, lim); !ok {
			return rej, false
		}
		out.Events = append(out.Events, Event{DPU: dpu, ID: id, TS: ts, Direction: dir, Received: lim.Now})
	case ReportInterval:
		start, end := timeField(d.f[0]), timeField(d.f[1])
		in, o := countField(d.f[2]), countField(d.out)
		switch {
		case fail != nil:
			return *fail, false
		case end <= start:
			return Rejection{Reason: ReasonBadReport, Detail: fmt.Sprintf("end %s is not after start %s", fmtMS(end), fmtMS(start))}, false
		case in > maxWeight || o > maxWeight:
			return Rejection{Reason: ReasonBadReport, Detail: fmt.Sprintf("in %d or out %d above %d", in, o, maxWeight)}, false
		}
		if rej, ok := receiveChecks(end, lim); !ok {
			return rej, false
		}
		out.Reports = append(out.Reports, Report{DPU: dpu, Kind: ReportInterval, Start: start, TS: end, In: in, Out: o, Received: lim.Now})
	case ReportCumulative:
		ts, in, o := timeField(d.f[0]), countField(d.f[1]), countField(d.f[2])
		if fail != nil {
			return *fail, false
		}
		if rej, ok := receiveChecks(ts, lim); !ok {
			return rej, false
		}
		out.Reports = append(out.Reports, Report{DPU: dpu, Kind: ReportCumulative, TS: ts, In: in, Out: o, Received: lim.Now})
	}
	return Rejection{}, true
}

// zoneError carries the rejection of a missing or bad ts_zone out of parseTime.
type zoneError struct{ rej Rejection }

func (z zoneError) Error() string { return z.rej.Detail }

// parseTime reads a time field in the decoder's format; zone gives the zone of
// layout times without one.
func (d *Decoder) parseTime(v gjson.Result, zone func() (*time.Location, Rejection, bool)) (int64, error) {
	switch d.tf.name {
	case FormatAuto:
		return decodeTS(json.RawMessage(v.Raw))
	case FormatRFC3339:
		if v.Type != gjson.String {
			return 0, fmt.Errorf("want an RFC 3339 string, got %s", truncate(v.Raw, 40))
		}
		t, err := time.Parse(time.RFC3339Nano, v.Str)
		if err != nil {
			return 0, fmt.Errorf("%q is not RFC 3339", truncate(v.Str, 60))
		}
		return checkRange(t.UnixMilli())
	case FormatUnix, FormatUnixMS:
		s := v.Raw
		if v.Type == gjson.String {
			s = strings.TrimSpace(v.Str)
		} else if v.Type != gjson.Number {
			return 0, fmt.Errorf("want a number, got %s", truncate(v.Raw, 40))
		}
		if d.tf.name == FormatUnixMS {
			ms, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("want integer Unix milliseconds, got %s", truncate(s, 40))
			}
			return checkRange(ms)
		}
		return parseUnixSeconds(s)
	}
	if v.Type != gjson.String {
		return 0, fmt.Errorf("want a string in the layout %q, got %s", d.tf.name, truncate(v.Raw, 40))
	}
	loc := time.UTC
	if !d.tf.hasZone {
		l, rej, ok := zone()
		if !ok {
			return 0, zoneError{rej}
		}
		loc = l
	}
	t, err := time.ParseInLocation(d.tf.name, strings.TrimSpace(v.Str), loc)
	if err != nil {
		return 0, fmt.Errorf("%q is not in the layout %q", truncate(v.Str, 60), d.tf.name)
	}
	return checkRange(t.UnixMilli())
}

// tsBound keeps times within what time.Time and the key encoding render sensibly.
const tsBound = int64(1) << 50

func checkRange(ms int64) (int64, error) {
	if ms > tsBound || ms < -tsBound {
		return 0, fmt.Errorf("time %d ms out of range", ms)
	}
	return ms, nil
}

// parseUnixSeconds reads decimal seconds ("1700000000", "1700000000.25") exactly, to
// the millisecond (further digits are cut).
func parseUnixSeconds(s string) (int64, error) {
	bad := fmt.Errorf("want Unix seconds, got %s", truncate(s, 40))
	ip, fp, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(ip, 10, 64)
	if err != nil || sec > tsBound/1000 || sec < -tsBound/1000 {
		return 0, bad
	}
	var ms int64
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		if c < '0' || c > '9' {
			return 0, bad
		}
		if i < 3 {
			ms = ms*10 + int64(c-'0')
		}
	}
	for i := len(fp); i < 3; i++ {
		ms *= 10
	}
	if strings.HasPrefix(ip, "-") {
		return sec*1000 - ms, nil
	}
	return sec*1000 + ms, nil
}

// parseCount reads a count or total: a non-negative integer, as a JSON number
// without fraction or exponent or as a string of digits.
func parseCount(v gjson.Result) (int64, error) {
	s := v.Raw
	switch v.Type {
	case gjson.String:
		s = strings.TrimSpace(v.Str)
	case gjson.Number:
	default:
		return 0, fmt.Errorf("want a non-negative integer, got %s", truncate(v.Raw, 40))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("want a non-negative integer, got %s", truncate(v.Raw, 40))
	case n < 0:
		return 0, fmt.Errorf("must be >= 0, got %d", n)
	case n > MaxReportCount:
		return 0, fmt.Errorf("%d above 2^53", n)
	}
	return n, nil
}

// zoneText is the text of a zone field: a string, or a number of hours.
func zoneText(v gjson.Result) string {
	if v.Type == gjson.Number {
		s := v.Raw
		if !strings.HasPrefix(s, "-") {
			s = "+" + s
		}
		return s
	}
	return v.String()
}

var zoneCache sync.Map // string -> *time.Location

// parseZone reads a zone: an IANA name, UTC/GMT/Z, or a UTC offset written
// [UTC|GMT]±H[H][[:]MM] (`+08:00`, `-0530`, `UTC+8:00`, `GMT-3`, `+8`).
func parseZone(s string) (*time.Location, error) {
	if l, ok := zoneCache.Load(s); ok {
		return l.(*time.Location), nil
	}
	l, err := parseZone1(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if len(s) <= 64 {
		zoneCache.Store(s, l)
	}
	return l, nil
}

func parseZone1(s string) (*time.Location, error) {
	bad := fmt.Errorf("zone %q is not an IANA name or a UTC offset such as +08:00", truncate(s, 40))
	if s == "" {
		return nil, bad
	}
	u := strings.ToUpper(s)
	switch u {
	case "Z", "UTC", "GMT":
		return time.UTC, nil
	}
	rest, ok := strings.CutPrefix(u, "UTC")
	if !ok {
		rest, ok = strings.CutPrefix(u, "GMT")
	}
	if !ok && (s == "" || (s[0] != '+' && s[0] != '-')) {
		l, err := loadLocation(s)
		if err != nil {
			return nil, bad
		}
		return l, nil
	}
	if len(rest) < 2 || (rest[0] != '+' && rest[0] != '-') {
		return nil, bad
	}
	sign := 1
	if rest[0] == '-' {
		sign = -1
	}
	hs, ms, colon := strings.Cut(rest[1:], ":")
	if !colon && len(hs) == 4 {
		hs, ms = hs[:2], hs[2:]
	}
	h, err1 := strconv.Atoi(hs)
	m := 0
	var err2 error
	if ms != "" || colon {
		m, err2 = strconv.Atoi(ms)
		if len(ms) != 2 {
			err2 = bad
		}
	}
	if err1 != nil || err2 != nil || len(hs) == 0 || len(hs) > 2 || h > 14 || m > 59 {
		return nil, bad
	}
	off := sign * (h*3600 + m*60)
	if off == 0 {
		return time.UTC, nil
	}
	return time.FixedZone(s, off), nil
}
