package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The routes the status page (DESIGN 5a) reads beyond DESIGN 5's table. Each is
// small and of use to an integrator on its own:
//
//	GET /v1/status                 the gateway at a glance
//	GET /v1/tree?parent=&limit=&offset=   one level of the space tree, with child counts
//	GET /v1/tree?q=&limit=         spaces whose id or name contains q, with their paths
//	GET /v1/rejections?limit=      the latest rejected messages (dead letters)
//	GET /v1/dpus?space=&limit=     filters on the DPU list
//	POST|DELETE /v1/session        the page's session cookie (access.go)

// GatewayInfo is what GET /v1/status says of the gateway; fixed at start.
type GatewayInfo struct {
	ID      string
	Version string
	Commit  string
	Started time.Time
	// Broker is the broker's URL, or the embedded broker's address (Embedded set).
	Broker   string
	Embedded bool
}

// BrokerState is the MQTT client's connection.
type BrokerState struct {
	Connected, Subscribed bool
}

// PageSources feed the status page's routes; every field is optional (a nil func
// leaves its part of the answer out).
type PageSources struct {
	Gateway GatewayInfo
	Broker  func() BrokerState
	// Totals are the events accepted and rejected since start (the metrics'
	// counters); GET /v1/status turns them into rates over the last minute.
	Totals func() (accepted, rejected float64)
	// Quiet is the number of quiet DPUs and of all DPUs, once they are counted.
	Quiet func() (quiet, total int)
	// Stream is the number of stream clients and their limit.
	Stream      func() (clients, max int)
	DeadLetters func(limit int) ([]buffer.DeadLetter, error)
	// DefaultKind is the report kind (DESIGN 2a) of a DPU of the topology that sets
	// none: its events topics' kind where they all have one, "" where it depends on
	// the topic the DPU sends on (GET /v1/dpus then leaves kind out).
	DefaultKind string
}

// ---- GET /v1/status ----

type statusDoc struct {
	Gateway      string     `json:"gateway"`
	Version      string     `json:"version"`
	Commit       string     `json:"commit,omitempty"`
	Started      string     `json:"started"`
	UptimeS      float64    `json:"uptime_s"`
	Ready        bool       `json:"ready"`
	Reason       string     `json:"reason,omitempty"`
	Message      string     `json:"message,omitempty"`
	Broker       brokerDoc  `json:"broker"`
	Events       eventsDoc  `json:"events"`
	SettledUntil string     `json:"settled_until"`
	Spaces       int        `json:"spaces"`
	Doorways     int        `json:"doorways"`
	DPUs         int        `json:"dpus"`
	QuietDPUs    *int       `json:"quiet_dpus,omitempty"`
	Stream       *streamDoc `json:"stream,omitempty"`
	Access       string     `json:"access"`
}

type brokerDoc struct {
	Address    string `json:"address"`
	Embedded   bool   `json:"embedded"`
	Connected  bool   `json:"connected"`
	Subscribed bool   `json:"subscribed"`
}

type eventsDoc struct {
	WindowS       float64 `json:"window_s"`
	AcceptedPerS  float64 `json:"accepted_per_s"`
	RejectedPerS  float64 `json:"rejected_per_s"`
	AcceptedTotal float64 `json:"accepted_total"`
	RejectedTotal float64 `json:"rejected_total"`
}

type streamDoc struct {
	Clients    int `json:"clients"`
	MaxClients int `json:"max_clients"`
}

// reasoner is an error that carries a /readyz reason code.
type reasoner interface{ Reason() string }

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	now := s.now()
	p := s.page
	tc := s.q.Topology()
	d := statusDoc{
		Gateway:      p.Gateway.ID,
		Version:      p.Gateway.Version,
		Commit:       p.Gateway.Commit,
		Started:      payload.FormatMS(p.Gateway.Started.UnixMilli()),
		UptimeS:      roundTo(now.Sub(p.Gateway.Started).Seconds(), 1),
		Ready:        true,
		Broker:       brokerDoc{Address: p.Gateway.Broker, Embedded: p.Gateway.Embedded},
		SettledUntil: payload.FormatMS(s.q.Horizon()),
		Spaces:       len(tc.Spaces),
		Doorways:     len(tc.Doorways),
		DPUs:         len(tc.DPUs),
		Access:       "open",
	}
	if !s.access.openReads {
		d.Access = "token"
	}
	if p.Broker != nil {
		st := p.Broker()
		d.Broker.Connected, d.Broker.Subscribed = st.Connected, st.Subscribed
	}
	if err := s.ready(); err != nil {
		d.Ready, d.Message = false, err.Error()
		var r reasoner
		switch {
		case errors.As(err, &r):
			d.Reason = r.Reason()
		case p.Broker != nil && !d.Broker.Connected:
			d.Reason = "broker_disconnected"
		case p.Broker != nil && !d.Broker.Subscribed:
			d.Reason = "not_subscribed"
		default:
			d.Reason = "not_ready"
		}
	}
	if p.Totals != nil {
		d.Events = s.rates.rates(now, p.Totals)
	}
	if p.Quiet != nil {
		q, _ := p.Quiet()
		d.QuietDPUs = &q
	}
	if p.Stream != nil {
		n, max := p.Stream()
		d.Stream = &streamDoc{Clients: n, MaxClients: max}
	}
	WriteJSON(w, http.StatusOK, d)
}

func roundTo(v float64, digits int) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', digits, 64), 64)
	return f
}

// rateWindow keeps samples of the event totals so that GET /v1/status can say how
// many events per second were accepted and rejected over the last minute. A sample is
// taken at most every rateEvery, when the status is asked for and by Serve's sampler.
type rateWindow struct {
	mu      sync.Mutex
	samples []rateSample // oldest first, spanning at most rateSpan
}

type rateSample struct {
	at                 time.Time
	accepted, rejected float64
}

const (
	rateSpan  = time.Minute
	rateEvery = 5 * time.Second
)

func (rw *rateWindow) sample(now time.Time, totals func() (float64, float64)) rateSample {
	acc, rej := totals()
	cur := rateSample{at: now, accepted: acc, rejected: rej}
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if n := len(rw.samples); n == 0 || now.Sub(rw.samples[n-1].at) >= rateEvery {
		rw.samples = append(rw.samples, cur)
	}
	// Keep one sample at least rateSpan old, so the window spans the whole minute.
	for len(rw.samples) > 2 && now.Sub(rw.samples[1].at) >= rateSpan {
		rw.samples = rw.samples[1:]
	}
	return cur
}

// rates are the events per second since the oldest sample within the last minute
// (since start when the gateway is younger).
func (rw *rateWindow) rates(now time.Time, totals func() (float64, float64)) eventsDoc {
	cur := rw.sample(now, totals)
	rw.mu.Lock()
	first := rw.samples[0]
	rw.mu.Unlock()
	d := eventsDoc{AcceptedTotal: cur.accepted, RejectedTotal: cur.rejected}
	if span := now.Sub(first.at); span >= time.Second {
		d.WindowS = roundTo(span.Seconds(), 0)
		d.AcceptedPerS = roundTo((cur.accepted-first.accepted)/span.Seconds(), 2)
		d.RejectedPerS = roundTo((cur.rejected-first.rejected)/span.Seconds(), 2)
	}
	return d
}

// runRates samples the totals every rateEvery until ctx ends, so the first look at
// the page already has the last minute.
func (s *Server) runRates(ctx context.Context) {
	if s.page.Totals == nil {
		return
	}
	t := time.NewTicker(rateEvery)
	defer t.Stop()
	s.rates.sample(s.now(), s.page.Totals)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.rates.sample(s.now(), s.page.Totals)
		}
	}
}

// ---- GET /v1/tree ----

const (
	treePage    = 200
	treeMaxPage = 1000
	searchLimit = 50
	searchMax   = 500
)

// treeCache holds the tree of the topology version in force.
type treeCache struct {
	cur atomic.Pointer[spaceTree]
	mu  sync.Mutex // one build at a time
}

func (c *treeCache) get(tc occupancy.TopologyConfig) *spaceTree {
	if t := c.cur.Load(); t != nil && sameTopology(t.topo, tc) {
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.cur.Load(); t != nil && sameTopology(t.topo, tc) {
		return t
	}
	t := newSpaceTree(tc)
	c.cur.Store(t)
	return t
}

// intParam reads an integer query parameter within [lo, hi], def when absent.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("query parameter %s: %q is not a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

func (s *Server) tree(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tr := s.trees.get(s.q.Topology())
	if q.Has("q") {
		if q.Has("parent") || q.Has("offset") {
			WriteError(w, http.StatusBadRequest, "query parameter q (search) goes without parent and offset")
			return
		}
		limit, err := intParam(r, "limit", searchLimit, 1, searchMax)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		hits, total := tr.search(q.Get("q"), limit)
		b := append([]byte(`{"q":`), appendString(nil, q.Get("q"))...)
		b = fmt.Appendf(b, `,"total":%d,"spaces":`, total)
		WriteRaw(w, http.StatusOK, append(s.appendTreeRows(b, tr, hits, true), '}'))
		return
	}
	parent := q.Get("parent")
	ids, ok := tr.level(parent)
	if !ok {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", parent))
		return
	}
	limit, err := intParam(r, "limit", treePage, 1, treeMaxPage)
	if err == nil {
		var offset int
		offset, err = intParam(r, "offset", 0, 0, 1<<30)
		ids = ids[min(offset, len(ids)):]
		ids = ids[:min(limit, len(ids))]
		if err == nil {
			b := []byte(`{"parent":`)
			if parent == "" {
				b = append(b, "null"...)
			} else {
				b = appendString(b, parent)
			}
			total, _ := tr.level(parent)
			b = fmt.Appendf(b, `,"total":%d,"offset":%d,"spaces":`, len(total), offset)
			WriteRaw(w, http.StatusOK, append(s.appendTreeRows(b, tr, ids, false), '}'))
			return
		}
	}
	WriteError(w, http.StatusBadRequest, err.Error())
}

// appendTreeRows appends a JSON array of the spaces' occupancy objects, each with
// its number of children and, with path, its ancestors (root first).
func (s *Server) appendTreeRows(b []byte, tr *spaceTree, ids []int32, path bool) []byte {
	b = append(b, '[')
	first := true
	for _, i := range ids {
		o, ok := s.q.Space(tr.spaces[i].ID)
		if !ok {
			continue // removed by a topology version meanwhile
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = payload.AppendOccupancyJSON(b, o)
		b = fmt.Appendf(b[:len(b)-1], `,"children":%d`, len(tr.children[i]))
		if path {
			b = append(b, `,"path":[`...)
			for k, p := range tr.path(i) {
				if k > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"space":`...)
				b = appendString(b, tr.spaces[p].ID)
				b = append(b, `,"name":`...)
				b = appendString(b, tr.name(p))
				b = append(b, '}')
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// ---- GET /v1/rejections ----

type rejectionDoc struct {
	Time    string `json:"time"`
	Topic   string `json:"topic"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
	Payload string `json:"payload,omitempty"`
}

func (s *Server) rejections(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", 20, 1, 1000)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	docs := []rejectionDoc{}
	if s.page.DeadLetters != nil {
		dls, err := s.page.DeadLetters(limit)
		if err != nil {
			s.deadErr.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(err) }, "read dead letters")
			WriteError(w, http.StatusInternalServerError, "read dead letters: "+err.Error())
			return
		}
		for _, d := range dls {
			docs = append(docs, rejectionDoc{Time: payload.FormatMS(d.Time), Topic: d.Topic, Reason: d.Reason,
				Detail: d.Detail, Payload: string(d.Payload)})
		}
	}
	WriteJSON(w, http.StatusOK, docs)
}

// ---- GET /v1/dpus ----

// dpuDoc is a row of GET /v1/dpus: the DPU's statistics and where it is.
type dpuDoc struct {
	tracker.DPUStat
	Kind        string  `json:"kind,omitempty"` // how it reports: events, interval or cumulative
	Doorway     string  `json:"doorway,omitempty"`
	DoorwayName string  `json:"doorway_name,omitempty"`
	PlusSpace   *string `json:"plus_space,omitempty"`
	MinusSpace  *string `json:"minus_space,omitempty"`
}

func (s *Server) dpus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(r, "limit", 0, 1, 1<<30)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	tr := s.trees.get(s.q.Topology())
	var rows []tracker.DPUStat
	if space := q.Get("space"); space != "" {
		// The DPUs whose crossings change the space: one side inside it (or nested in
		// it), the other not. Only their statistics are read.
		root, ok := tr.idx[space]
		if !ok {
			WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", space))
			return
		}
		in := tr.subtree(root)
		within := func(id string) bool {
			i, ok := tr.idx[id]
			return ok && in[i]
		}
		var ids []string
		for _, d := range tr.topo.DPUs {
			if within(d.PlusSpace) != within(d.MinusSpace) {
				ids = append(ids, d.ID)
			}
		}
		slices.Sort(ids)
		rows = s.q.DPUsOf(slices.Compact(ids))
	} else {
		rows = s.q.DPUs()
	}
	docs := []dpuDoc{}
	for _, st := range rows {
		if limit > 0 && len(docs) >= limit {
			break
		}
		d := dpuDoc{DPUStat: st}
		if c, known := tr.dpus[st.DPU]; known {
			plus, minus := c.PlusSpace, c.MinusSpace
			d.Doorway, d.DoorwayName, d.PlusSpace, d.MinusSpace = c.Doorway, tr.doorways[c.Doorway], &plus, &minus
			d.Kind = c.Kind
			if d.Kind == "" {
				d.Kind = s.page.DefaultKind
			}
		}
		docs = append(docs, d)
	}
	total := len(rows)
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	WriteJSON(w, http.StatusOK, docs)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
