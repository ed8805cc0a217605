package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// campus is a topology of three sites, each with three floors of four rooms, and a
// root with nothing in it: an entrance per site, doors between neighbouring rooms of
// a floor and stairs between floors.
func campus() occupancy.TopologyConfig {
	var tc occupancy.TopologyConfig
	door := func(id, plus, minus string) {
		tc.Doorways = append(tc.Doorways, occupancy.DoorwayConfig{ID: id, Name: "Door " + id})
		tc.DPUs = append(tc.DPUs, occupancy.DPUConfig{ID: "d-" + id, Doorway: id, PlusSpace: plus, MinusSpace: minus})
	}
	for s := 1; s <= 3; s++ {
		site := fmt.Sprintf("site-%d", s)
		tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: site, Name: fmt.Sprintf("Site %d", s), TimeZone: []string{"Europe/Berlin", "America/New_York", ""}[s-1]})
		for f := 1; f <= 3; f++ {
			floor := fmt.Sprintf("%s-f%d", site, f)
			tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: floor, Name: fmt.Sprintf("Site %d floor %d", s, f), Parent: site})
			for r := 1; r <= 4; r++ {
				room := fmt.Sprintf("%s-r%d", floor, r)
				tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: room, Name: fmt.Sprintf("Site %d room %d.%d", s, f, r), Parent: floor, Capacity: int64(4 * r)})
				if r > 1 {
					door(room+"-w", room, fmt.Sprintf("%s-r%d", floor, r-1))
				}
			}
			if f > 1 {
				door(floor+"-stairs", floor+"-r1", fmt.Sprintf("%s-f%d-r1", site, f-1))
			}
		}
		door(site+"-entrance", site+"-f1-r1", "")
	}
	tc.DPUs[len(tc.DPUs)-1].Kind = "interval" // d-site-3-entrance reports in periods
	tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: "annex", Name: "Annex", Capacity: 12})
	return tc
}

// campusStack is the HTTP API over the real tracker and Badger with the campus.
func campusStack(t *testing.T, o Options) (*stack, string) {
	t.Helper()
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC).UnixMilli()
	st, err := buffer.Open(buffer.Options{Dir: t.TempDir(), Logger: zerolog.Nop(), MinFreeBytes: -1,
		Now: func() time.Time { return time.UnixMilli(now) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.PutVersion(occupancy.Version{At: now - 3_600_000, Topology: campus()}); err != nil {
		t.Fatal(err)
	}
	q := &stack{stats: tracker.NewDPUStats(), clock: now}
	q.open(t, st, occupancy.Options{SettleAfter: 300_000, LateEvents: occupancy.LateApply, ClampNegative: true})
	// People walk in through every entrance, some further.
	var evs []occupancy.Event
	for i, d := range []string{"d-site-1-entrance", "d-site-1-entrance", "d-site-1-f1-r2-w", "d-site-2-entrance", "d-site-2-f2-stairs"} {
		evs = append(evs, occupancy.Event{DPU: d, ID: strconv.Itoa(i + 1), TS: now - 60_000 + int64(i)*1000, Direction: 1, Received: now})
	}
	q.ingest(t, evs)
	o.Querier, o.Logger, o.Now = q, zerolog.Nop(), q.now
	s := startServerWith(t, o)
	return q, "http://" + s.Addr()
}

type treeRow struct {
	Space     string `json:"space"`
	Name      string `json:"name"`
	Occupancy int64  `json:"occupancy"`
	Capacity  int64  `json:"capacity"`
	Children  int    `json:"children"`
	Path      []struct {
		Space string `json:"space"`
		Name  string `json:"name"`
	} `json:"path"`
}

type treeDoc struct {
	Parent *string   `json:"parent"`
	Q      string    `json:"q"`
	Total  int       `json:"total"`
	Offset int       `json:"offset"`
	Spaces []treeRow `json:"spaces"`
}

func TestTreeRoute(t *testing.T) {
	q, base := campusStack(t, Options{})
	tc := campus()
	kids := map[string][]string{}
	for _, sp := range tc.Spaces {
		kids[sp.Parent] = append(kids[sp.Parent], sp.ID)
	}

	t.Run("walk", func(t *testing.T) {
		// Walking the tree level by level, two rows a page, reaches every space once,
		// with its children's count and the daemon's occupancy object.
		var walked []string
		var walk func(parent string)
		walk = func(parent string) {
			var got []string
			for offset := 0; ; offset += 2 {
				var d treeDoc
				getJSON(t, fmt.Sprintf("%s/v1/tree?parent=%s&limit=2&offset=%d", base, parent, offset), &d)
				if d.Total != len(kids[parent]) || d.Offset != offset || (parent == "") != (d.Parent == nil) {
					t.Fatalf("parent %q offset %d: total %d offset %d parent %v, want %d, %d", parent, offset, d.Total, d.Offset, d.Parent, len(kids[parent]), offset)
				}
				for _, r := range d.Spaces {
					o, _ := q.Space(r.Space)
					if r.Children != len(kids[r.Space]) || r.Occupancy != o.Occupancy || r.Name != o.Name || r.Capacity != o.Capacity {
						t.Errorf("row %+v, want %d children and %+v", r, len(kids[r.Space]), o)
					}
					got = append(got, r.Space)
				}
				if len(d.Spaces) < 2 {
					break
				}
			}
			if !slices.Equal(got, kids[parent]) {
				t.Fatalf("children of %q: %v, want %v (configuration order)", parent, got, kids[parent])
			}
			for _, id := range got {
				walked = append(walked, id)
				walk(id)
			}
		}
		walk("")
		if len(walked) != len(tc.Spaces) {
			t.Errorf("walked %d spaces, want %d", len(walked), len(tc.Spaces))
		}
		var lobby treeDoc
		getJSON(t, base+"/v1/tree?parent=site-1-f1", &lobby)
		if lobby.Spaces[0].Occupancy != 1 || lobby.Spaces[1].Occupancy != 1 {
			t.Errorf("site-1-f1's rooms show %d and %d, want 1 and 1 (two in, one on)", lobby.Spaces[0].Occupancy, lobby.Spaces[1].Occupancy)
		}
	})

	t.Run("search", func(t *testing.T) {
		var d treeDoc
		getJSON(t, base+"/v1/tree?q=ROOM%202.&limit=3", &d)
		// "Site s room 2.r": 4 rooms in each of 3 sites.
		if d.Total != 12 || len(d.Spaces) != 3 || d.Q != "ROOM 2." {
			t.Fatalf("search: total %d, %d rows, q %q; want 12, 3, %q", d.Total, len(d.Spaces), d.Q, "ROOM 2.")
		}
		r := d.Spaces[0]
		if r.Space != "site-1-f2-r1" || len(r.Path) != 2 || r.Path[0].Space != "site-1" || r.Path[0].Name != "Site 1" || r.Path[1].Space != "site-1-f2" {
			t.Errorf("first hit %+v, want site-1-f2-r1 with the path site-1 > site-1-f2", r)
		}
		getJSON(t, base+"/v1/tree?q=site-2-f2", &d)
		if d.Spaces[0].Space != "site-2-f2" || len(d.Spaces[0].Path) != 1 || d.Spaces[0].Occupancy != 1 {
			t.Errorf("exact id first: %+v", d.Spaces[0])
		}
		getJSON(t, base+"/v1/tree?q=nothing-like-it", &d)
		if d.Total != 0 || d.Spaces == nil || len(d.Spaces) != 0 {
			t.Errorf("no match: %+v, want total 0 and an empty list", d)
		}
	})

	t.Run("bad", func(t *testing.T) {
		for _, c := range []struct {
			query string
			code  int
			msg   string
		}{
			{"?parent=nope", 404, `unknown space`},
			{"?limit=0", 400, "query parameter limit"},
			{"?limit=1001", 400, "query parameter limit"},
			{"?offset=-1", 400, "query parameter offset"},
			{"?limit=x", 400, "query parameter limit"},
			{"?q=a&parent=site-1", 400, "without parent"},
			{"?q=a&limit=501", 400, "query parameter limit"},
		} {
			r := do(t, "GET", base+"/v1/tree"+c.query, "", "")
			if r.status != c.code || !strings.Contains(string(r.body), c.msg) {
				t.Errorf("GET /v1/tree%s = %d %s, want %d with %q", c.query, r.status, r.body, c.code, c.msg)
			}
		}
	})
}

func TestDPUsFilter(t *testing.T) {
	_, base := campusStack(t, Options{})
	tc := campus()
	parent := map[string]string{}
	for _, sp := range tc.Spaces {
		parent[sp.ID] = sp.Parent
	}
	within := func(s, root string) bool {
		for ; s != ""; s = parent[s] {
			if s == root {
				return true
			}
		}
		return false
	}
	type row struct {
		DPU         string  `json:"dpu"`
		Accepted    int64   `json:"accepted"`
		Doorway     string  `json:"doorway"`
		DoorwayName string  `json:"doorway_name"`
		PlusSpace   *string `json:"plus_space"`
		MinusSpace  *string `json:"minus_space"`
	}
	for _, sp := range tc.Spaces {
		// The model: a DPU is on the space's doorways when one side is in it and the
		// other is not.
		var want []string
		for _, d := range tc.DPUs {
			if within(d.PlusSpace, sp.ID) != within(d.MinusSpace, sp.ID) {
				want = append(want, d.ID)
			}
		}
		slices.Sort(want)
		var rows []row
		r := do(t, "GET", base+"/v1/dpus?space="+sp.ID, "", "")
		if err := json.Unmarshal(r.body, &rows); r.status != 200 || err != nil {
			t.Fatalf("GET /v1/dpus?space=%s = %d %s", sp.ID, r.status, r.body)
		}
		var got []string
		for _, x := range rows {
			got = append(got, x.DPU)
			if x.Doorway == "" || x.DoorwayName != "Door "+x.Doorway || x.PlusSpace == nil || x.MinusSpace == nil {
				t.Errorf("row %+v: want its doorway, the doorway's name and both spaces", x)
			}
		}
		if !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Errorf("GET /v1/dpus?space=%s: %v, want %v", sp.ID, got, want)
		}
		if n, _ := strconv.Atoi(r.header.Get("X-Total-Count")); n != len(want) {
			t.Errorf("space %s: X-Total-Count %s, want %d", sp.ID, r.header.Get("X-Total-Count"), len(want))
		}
	}
	var rows []row
	r := do(t, "GET", base+"/v1/dpus?limit=3", "", "")
	if err := json.Unmarshal(r.body, &rows); err != nil || len(rows) != 3 || r.header.Get("X-Total-Count") != strconv.Itoa(len(tc.DPUs)) {
		t.Errorf("GET /v1/dpus?limit=3: %d rows, X-Total-Count %q, want 3 of %d", len(rows), r.header.Get("X-Total-Count"), len(tc.DPUs))
	}
	for q, code := range map[string]int{"?space=nope": 404, "?limit=0": 400, "?limit=many": 400} {
		if r := do(t, "GET", base+"/v1/dpus"+q, "", ""); r.status != code {
			t.Errorf("GET /v1/dpus%s = %d, want %d", q, r.status, code)
		}
	}
}

// GET /v1/dpus says how each DPU of the topology reports: its own kind, else the
// kind of the events topics (PageSources.DefaultKind), else nothing.
func TestDPUsKind(t *testing.T) {
	own := map[string]string{}
	for _, d := range campus().DPUs {
		own[d.ID] = d.Kind
	}
	if own["d-site-3-entrance"] != "interval" {
		t.Fatalf("the campus has no DPU of its own kind: %v", own)
	}
	for _, def := range []string{"events", "cumulative", ""} {
		t.Run("default "+def, func(t *testing.T) {
			_, base := campusStack(t, Options{Page: PageSources{DefaultKind: def}})
			var rows []struct {
				DPU  string  `json:"dpu"`
				Kind *string `json:"kind"`
			}
			getJSON(t, base+"/v1/dpus", &rows)
			if len(rows) != len(own) {
				t.Fatalf("GET /v1/dpus: %d rows, want the campus's %d DPUs", len(rows), len(own))
			}
			for _, r := range rows {
				want := own[r.DPU]
				if want == "" {
					want = def
				}
				got := ""
				if r.Kind != nil {
					got = *r.Kind
					if got == "" {
						t.Errorf("DPU %s: kind \"\" sent, want it left out", r.DPU)
					}
				}
				if got != want {
					t.Errorf("DPU %s: kind %q, want %q", r.DPU, got, want)
				}
			}
		})
	}
}

func TestStatusRoute(t *testing.T) {
	var accepted, rejected atomic.Int64
	var connected atomic.Bool
	notReady := errors.New("not connected to the MQTT broker")
	started := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q, base := campusStack(t, Options{Ready: func() error {
		if !connected.Load() {
			return notReady
		}
		return nil
	}, Page: PageSources{
		Gateway: GatewayInfo{ID: "campus", Version: "1.2.3", Commit: "abc123", Started: started, Broker: "127.0.0.1:1883", Embedded: true},
		Broker:  func() BrokerState { return BrokerState{Connected: connected.Load(), Subscribed: connected.Load()} },
		Totals:  func() (float64, float64) { return float64(accepted.Load()), float64(rejected.Load()) },
		Quiet:   func() (int, int) { return 2, 40 },
		Stream:  func() (int, int) { return 3, 100 },
	}})
	var d statusDoc
	getJSON(t, base+"/v1/status", &d)
	tc := campus()
	want := statusDoc{Gateway: "campus", Version: "1.2.3", Commit: "abc123", Started: "2026-11-27T12:00:00.000Z", UptimeS: 7200,
		Ready: false, Reason: "broker_disconnected", Message: notReady.Error(),
		Broker:       brokerDoc{Address: "127.0.0.1:1883", Embedded: true},
		SettledUntil: d.SettledUntil, Spaces: len(tc.Spaces), Doorways: len(tc.Doorways), DPUs: len(tc.DPUs),
		Stream: &streamDoc{Clients: 3, MaxClients: 100}, Access: "open"}
	if h := q.Horizon(); d.SettledUntil != time.UnixMilli(h).UTC().Format("2006-01-02T15:04:05.000Z") {
		t.Errorf("settled_until %s, want the horizon %d", d.SettledUntil, h)
	}
	if d.QuietDPUs == nil || *d.QuietDPUs != 2 {
		t.Errorf("quiet_dpus %v, want 2", d.QuietDPUs)
	}
	d.QuietDPUs, d.Events = nil, eventsDoc{}
	if b1, b2 := mustJSON(d), mustJSON(want); b1 != b2 {
		t.Errorf("status\n got %s\nwant %s", b1, b2)
	}

	// Rates: the totals over the time between samples.
	connected.Store(true)
	q.setNow(q.now().Add(30 * time.Second).UnixMilli())
	accepted.Store(60)
	rejected.Store(3)
	d = statusDoc{}
	getJSON(t, base+"/v1/status", &d)
	if !d.Ready || d.Reason != "" || !d.Broker.Connected || !d.Broker.Subscribed {
		t.Errorf("connected: ready %v reason %q broker %+v", d.Ready, d.Reason, d.Broker)
	}
	if d.Events != (eventsDoc{WindowS: 30, AcceptedPerS: 2, RejectedPerS: 0.1, AcceptedTotal: 60, RejectedTotal: 3}) {
		t.Errorf("events %+v, want 2/s and 0.1/s over 30 s", d.Events)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRateWindow(t *testing.T) {
	// Against a model: the rate is the growth since the oldest sample kept, which is
	// the newest sample at least a minute old (or the first one).
	r := rand.New(rand.NewPCG(3, 4))
	var rw rateWindow
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var total float64
	type sample struct {
		at    time.Time
		total float64
	}
	var kept []sample
	now := t0
	for range 2000 {
		now = now.Add(time.Duration(r.IntN(4000)) * time.Millisecond)
		total += float64(r.IntN(50))
		got := rw.rates(now, func() (float64, float64) { return total, 0 })
		if len(kept) == 0 || now.Sub(kept[len(kept)-1].at) >= rateEvery {
			kept = append(kept, sample{now, total})
		}
		for len(kept) > 2 && now.Sub(kept[1].at) >= rateSpan {
			kept = kept[1:]
		}
		first := kept[0]
		span := now.Sub(first.at)
		if span < time.Second {
			continue
		}
		want := roundTo((total-first.total)/span.Seconds(), 2)
		if got.AcceptedPerS != want || span > rateSpan+2*rateEvery {
			t.Fatalf("at %v: %v/s over %v, want %v/s over at most %v", now.Sub(t0), got.AcceptedPerS, span, want, rateSpan+2*rateEvery)
		}
	}
}

func TestRejectionsRoute(t *testing.T) {
	st, err := buffer.Open(buffer.Options{Dir: t.TempDir(), Logger: zerolog.Nop(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC).UnixMilli()
	for i, r := range []string{"bad_json", "bad_ts", "future_ts"} {
		if err := st.PutDeadLetter(buffer.DeadLetter{Time: t0 + int64(i)*1000, Topic: "dpu/d" + strconv.Itoa(i) + "/events",
			Reason: r, Detail: "detail " + r, Payload: []byte(`{"ts":"<now>"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	s := startServerWith(t, Options{Querier: newFakeQuerier(), Page: PageSources{DeadLetters: st.DeadLetters}})
	var got []rejectionDoc
	getJSON(t, "http://"+s.Addr()+"/v1/rejections?limit=2", &got)
	want := []rejectionDoc{
		{Time: "2026-11-27T09:00:02.000Z", Topic: "dpu/d2/events", Reason: "future_ts", Detail: "detail future_ts", Payload: `{"ts":"<now>"}`},
		{Time: "2026-11-27T09:00:01.000Z", Topic: "dpu/d1/events", Reason: "bad_ts", Detail: "detail bad_ts", Payload: `{"ts":"<now>"}`},
	}
	if !slices.Equal(got, want) {
		t.Errorf("rejections %+v, want the newest two %+v", got, want)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x"} {
		if r := do(t, "GET", "http://"+s.Addr()+"/v1/rejections"+q, "", ""); r.status != 400 {
			t.Errorf("GET /v1/rejections%s = %d, want 400", q, r.status)
		}
	}
	// Without dead letters (no store given): an empty list.
	s2 := startServerWith(t, Options{Querier: newFakeQuerier()})
	if r := do(t, "GET", "http://"+s2.Addr()+"/v1/rejections", "", ""); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("no dead letters: %d %s, want 200 []", r.status, r.body)
	}
}
