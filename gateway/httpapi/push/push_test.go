package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/httpapi"
	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The tests run the handler on the real HTTP server (127.0.0.1:0) over the real
// pipeline, tracker and Badger (t.TempDir()).

var pushTopology = occupancy.TopologyConfig{
	Spaces:   []occupancy.SpaceConfig{{ID: "hq", Name: "HQ"}, {ID: "a", Name: "A", Parent: "hq"}, {ID: "b", Name: "B", Parent: "hq"}},
	Doorways: []occupancy.DoorwayConfig{{ID: "door", Name: "Door"}},
	DPUs: []occupancy.DPUConfig{
		{ID: "d1", Doorway: "door", PlusSpace: "a"},
		{ID: "iv", Doorway: "door", PlusSpace: "b", Kind: "interval",
			Map: &occupancy.Mapping{Start: "period.from", End: "period.to", In: "fw", Out: "bw", TSFormat: "unix"}},
		{ID: "cu", Doorway: "door", PlusSpace: "b", Kind: "cumulative"},
	},
}

type gw struct {
	t     *testing.T
	dir   string
	now   time.Time
	st    *buffer.Store
	tr    *tracker.Tracker
	pipe  *ingest.Pipeline
	srv   *httpapi.Server
	push  *Handler
	url   string
	token string

	// full, when set, is the store's free-space probe under a 64 MiB floor, and the
	// handler's logs and store timeout are logs and timeout.
	full    func(string) (uint64, error)
	logs    io.Writer
	timeout time.Duration
}

// start opens the store, the tracker, the pipeline and the HTTP server with the
// push route; token is http.token, tokens the DPUs' ingest tokens.
func (g *gw) start(token string, tokens map[string]string) {
	t := g.t
	clock := func() time.Time { return g.now }
	so := buffer.Options{Dir: filepath.Join(g.dir, "data"), Logger: zerolog.Nop(), MinFreeBytes: -1, Now: clock}
	if g.full != nil {
		so.MinFreeBytes, so.FreeSpace = 64<<20, g.full
	}
	st, err := buffer.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	topo := pushTopology
	tr, err := tracker.Open(tracker.Options{Store: st, Topology: &topo, Now: clock, Logger: zerolog.Nop(),
		Engine: occupancy.Options{SettleAfter: 5 * 60_000, ClampNegative: true}, MaxParked: 100})
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := ingest.New(ingest.Options{Tracker: tr, Rejects: ingest.NewRecorder(st, nil, zerolog.Nop()), Filters: []string{"dpu/+/events"},
		Topology: &topo, MaxFutureSkew: time.Minute, MaxPayload: 4096, Logger: zerolog.Nop(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(httpapi.Options{Listen: "127.0.0.1:0", Token: token, Querier: tr, Logger: zerolog.Nop(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	var admin func(*http.Request) bool
	if token != "" {
		admin = srv.Authorized
	}
	log := zerolog.Nop()
	if g.logs != nil {
		log = zerolog.New(g.logs)
	}
	h, err := New(Options{Ingester: pipe, Admin: admin, MaxPayload: 4096, Logger: log, Timeout: g.timeout})
	if err != nil {
		t.Fatal(err)
	}
	h.SetTokens(tokens)
	h.Register(srv)
	go func() { _ = srv.Serve() }()
	g.st, g.tr, g.pipe, g.srv, g.push, g.url, g.token = st, tr, pipe, srv, h, "http://"+srv.Addr(), token
	t.Cleanup(g.stop)
}

// stop shuts the server and closes the store: no tick, no commit.
func (g *gw) stop() {
	if g.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.srv.Shutdown(ctx)
	g.pipe.Stop(ctx)
	g.st.Close()
	g.srv = nil
}

func newGW(t *testing.T) *gw {
	return &gw{t: t, dir: t.TempDir(), now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
}

// post sends body to the DPU's route with the bearer token tok ("" none) and returns
// the status and the body.
func (g *gw) post(path, tok, body string) (int, string) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.url+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (g *gw) occ(space string) int64 {
	o, _ := g.tr.Space(space)
	return o.Occupancy
}

func event(ms int64, id string) string {
	return fmt.Sprintf(`{"id":%q,"ts":%d,"direction":1}`, id, ms)
}

// accessCase is one request of TestPushAccess and the status it must get.
type accessCase struct {
	name, path, tok string
	want            int
}

// checkAccess posts each case (an event, a cumulative report to cu, a reset body to
// a reset route) and compares the status.
func checkAccess(t *testing.T, g *gw, cases []accessCase) {
	t.Helper()
	ms := g.now.Add(-time.Minute).UnixMilli()
	for _, c := range cases {
		body := event(ms, c.name)
		switch {
		case strings.HasSuffix(c.path, "reset"):
			body = `{"occupancy": 0}`
		case c.path == "/v1/dpus/cu/events":
			body = fmt.Sprintf(`{"ts":%d,"in_total":3,"out_total":1}`, ms)
		}
		if got, b := g.post(c.path, c.tok, body); got != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, got, b, c.want)
		}
	}
}

// TestPushAccess: a DPU's ingest token opens its own route and nothing else;
// http.token opens every DPU's route; with neither, the route is closed (403).
func TestPushAccess(t *testing.T) {
	t.Run("DPU tokens only", func(t *testing.T) {
		g := newGW(t)
		g.start("", map[string]string{"d1": "d1-secret", "cu": "cu-secret"})
		checkAccess(t, g, []accessCase{
			{"own token", "/v1/dpus/d1/events", "d1-secret", 200},
			{"no token", "/v1/dpus/d1/events", "", 401},
			{"wrong token", "/v1/dpus/d1/events", "d1-secret2", 401},
			{"another DPU's token", "/v1/dpus/d1/events", "cu-secret", 401},
			{"a DPU without a token", "/v1/dpus/iv/events", "d1-secret", 403},
			{"an unknown DPU", "/v1/dpus/zz/events", "d1-secret", 403},
			{"a DPU token on a write route", "/v1/spaces/a/reset", "d1-secret", 403},
		})
		if got := g.occ("a"); got != 1 {
			t.Errorf("a = %d, want 1 (one push let in)", got)
		}
	})
	t.Run("http.token and DPU tokens", func(t *testing.T) {
		g := newGW(t)
		g.start("admin", map[string]string{"d1": "d1-secret"})
		checkAccess(t, g, []accessCase{
			{"admin on a DPU with a token", "/v1/dpus/d1/events", "admin", 200},
			{"own token", "/v1/dpus/d1/events", "d1-secret", 200},
			{"admin on a DPU without one", "/v1/dpus/cu/events", "admin", 200},
			{"admin on an unknown DPU (parked)", "/v1/dpus/zz/events", "admin", 200},
			{"a DPU token elsewhere", "/v1/dpus/cu/events", "d1-secret", 401},
			{"a DPU token on a write route", "/v1/spaces/a/reset", "d1-secret", 401},
			{"no token", "/v1/dpus/cu/events", "", 401},
		})
		if n := g.st.ParkedCount(); n != 1 {
			t.Errorf("parked: %d, want 1 (the unknown DPU's event)", n)
		}
	})
}

// TestPushAnswers: the answer's counts and rejections per index, in the DPU's kind
// and map; a batch keeps its good elements; nothing stored is 400, a body over
// mqtt.max_payload 413, a stopping gateway 503; and what a 200 acknowledged is in
// the store when it is closed right after (no tick, no commit) and opened again.
func TestPushAnswers(t *testing.T) {
	g := newGW(t)
	g.start("admin", nil)
	ms := g.now.UnixMilli()
	s := g.now.Unix()
	iv := func(from, to int64, fw, bw int) string {
		return fmt.Sprintf(`{"period":{"from":%d,"to":%d},"fw":%d,"bw":%d}`, from, to, fw, bw)
	}
	for _, c := range []struct {
		name, dpu, body string
		code            int
		want            string
	}{
		{"events batch with bad elements", "d1",
			fmt.Sprintf(`[%s,{"ts":%d,"direction":2},%s,%s,{"ts":%d,"direction":1}]`, event(ms-3000, "1"), ms, event(ms-2000, "2"), event(ms-3000, "1"), ms+3_600_000),
			200, `{"accepted":2,"duplicates":1,"rejected":[{"index":1,"reason":"bad_direction","detail":"direction must be 1 or -1, got 2"},{"index":4,"reason":"future_ts","detail":"ts 2026-11-27T11:00:00.000Z is 1h0m0s ahead of receive time (max_future_skew 1m0s)"}]}`},
		{"sent again", "d1", fmt.Sprintf(`[%s,%s]`, event(ms-3000, "1"), event(ms-2000, "2")), 200,
			`{"accepted":0,"duplicates":2,"rejected":[]}`},
		{"interval reports in the DPU's map", "iv", fmt.Sprintf(`[%s,%s]`, iv(s-120, s-60, 3, 1), iv(s-60, s-1, 2, 0)), 200,
			`{"accepted":2,"duplicates":0,"rejected":[]}`},
		{"an overlapping report and one missing a field", "iv", fmt.Sprintf(`[%s,{"period":{"from":%d,"to":%d},"fw":1}]`, iv(s-90, s-30, 1, 1), s-200, s-150), 400,
			`{"error":"nothing stored: 2 rejected, the first overlap (interval [2026-11-27T09:58:30.000Z, 2026-11-27T09:59:30.000Z) overlaps the stored report [2026-11-27T09:58:00.000Z, 2026-11-27T09:59:00.000Z) of DPU \"iv\")","accepted":0,"duplicates":0,"rejected":[{"index":0,"reason":"overlap","detail":"interval [2026-11-27T09:58:30.000Z, 2026-11-27T09:59:30.000Z) overlaps the stored report [2026-11-27T09:58:00.000Z, 2026-11-27T09:59:00.000Z) of DPU \"iv\""},{"index":1,"reason":"bad_report","detail":"missing out (path \"bw\")"}]}`},
		{"cumulative totals", "cu", fmt.Sprintf(`[{"ts":%d,"in_total":10,"out_total":4},{"ts":%d,"in_total":13,"out_total":5}]`, ms-50_000, ms-10_000), 200,
			`{"accepted":2,"duplicates":0,"rejected":[]}`},
		{"not JSON", "d1", `{"ts":`, 400, `{"error":"nothing stored: bad_json (invalid json object: unexpected end of JSON input)","accepted":0,"duplicates":0,"rejected":[{"index":-1,"reason":"bad_json","detail":"invalid json object: unexpected end of JSON input"}]}`},
		{"bad DPU id", "bad.id", event(ms, "x"), 400,
			`{"error":"nothing stored: bad_topic (invalid dpu id \"bad.id\": want [A-Za-z0-9_-]{1,64})","accepted":0,"duplicates":0,"rejected":[{"index":-1,"reason":"bad_topic","detail":"invalid dpu id \"bad.id\": want [A-Za-z0-9_-]{1,64}"}]}`},
		{"too large", "d1", "[" + strings.Repeat(event(ms, "x")+",", 100) + event(ms, "y") + "]", 413, `{"error":"body over mqtt.max_payload (4096 bytes)"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := g.post("/v1/dpus/"+c.dpu+"/events", "admin", c.body)
			if code != c.code || body != c.want {
				t.Errorf("got %d %s\nwant %d %s", code, body, c.code, c.want)
			}
			if code == 200 || code == 400 {
				var a Answer
				if err := json.Unmarshal([]byte(body), &a); err != nil {
					t.Errorf("answer is not an Answer: %v", err)
				}
			}
		})
	}
	// a: 2 events; b: interval 3-1 + 2-0, cumulative 3-1 after its baseline.
	want := map[string]int64{"a": 2, "b": 6, "hq": 8}
	for sp, w := range want {
		if got := g.occ(sp); got != w {
			t.Errorf("%s = %d, want %d", sp, got, w)
		}
	}
	// Closed right after the answers, without a tick: a rebuilt gateway has all.
	g.stop()
	g.start("admin", nil)
	for sp, w := range want {
		if got := g.occ(sp); got != w {
			t.Errorf("after reopening: %s = %d, want %d", sp, got, w)
		}
	}
	// A stopping gateway stores nothing and says so.
	g.pipe.Stop(context.Background())
	if code, body := g.post("/v1/dpus/d1/events", "admin", event(ms, "9")); code != 503 || !strings.Contains(body, "send again") {
		t.Errorf("stopping: got %d %s, want 503", code, body)
	}
}

// TestPushManyRejected: a body of thousands of bad elements is answered with every
// index, the details of the first 100 only.
func TestPushManyRejected(t *testing.T) {
	g := newGW(t)
	g.start("admin", nil)
	var b bytes.Buffer
	b.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("1")
	}
	b.WriteString("]")
	code, body := g.post("/v1/dpus/d1/events", "admin", b.String())
	var a Answer
	if err := json.Unmarshal([]byte(body), &a); err != nil || code != 400 {
		t.Fatalf("got %d %v", code, err)
	}
	details := 0
	for i, r := range a.Rejected {
		if r.Index != i || r.Reason != occupancy.ReasonBadJSON {
			t.Fatalf("rejection %d: %+v", i, r)
		}
		if r.Detail != "" {
			details++
		}
	}
	if len(a.Rejected) != 1000 || details != 100 {
		t.Errorf("got %d rejections, %d with details; want 1000, 100", len(a.Rejected), details)
	}
}

// TestPushNotStoredLogsRateLimited (issue 14: every error line on a hot path is
// rate-limited with a suppressed count): while the store refuses writes (its disk
// below the free-space floor) every push is answered 503 with Retry-After and
// nothing is counted, and the log says so once a second, the next line with the
// number of lines suppressed, not once per push.
func TestPushNotStoredLogsRateLimited(t *testing.T) {
	// The handler logs before it answers, and the test reads the log only after an
	// answer: the socket orders the two (as the race detector knows).
	var logs bytes.Buffer
	g := newGW(t)
	var free atomic.Uint64
	free.Store(1 << 40)
	g.full = func(string) (uint64, error) { return free.Load(), nil }
	g.logs, g.timeout = zerolog.SyncWriter(&logs), 50*time.Millisecond
	g.start("s3cret", nil)
	free.Store(1 << 20) // below the floor from now on
	if err := g.st.Health(); !errors.Is(err, buffer.ErrDiskFull) {
		t.Fatalf("store health below the floor: %v, want ErrDiskFull", err)
	}
	const pushes = 20
	ms := g.now.Add(-time.Minute).UnixMilli()
	began := time.Now()
	for i := range pushes {
		if code, body := g.post("/v1/dpus/d1/events", "s3cret", event(ms, fmt.Sprint(i))); code != http.StatusServiceUnavailable {
			t.Fatalf("push %d on a full disk: got %d %s, want 503", i, code, body)
		}
	}
	if g.occ("a") != 0 {
		t.Errorf("occupancy of a = %d with nothing stored, want 0", g.occ("a"))
	}
	lines := func() []string { return strings.Split(strings.TrimSpace(logs.String()), "\n") }
	if took := time.Since(began); took < time.Second {
		if got := lines(); len(got) != 1 || !strings.Contains(got[0], "HTTP push not stored") {
			t.Fatalf("%d pushes not stored within %v logged %d lines, want 1:\n%s", pushes, took, len(got), logs.String())
		}
	}
	time.Sleep(time.Until(began.Add(1100 * time.Millisecond)))
	if code, _ := g.post("/v1/dpus/d1/events", "s3cret", event(ms, "last")); code != http.StatusServiceUnavailable {
		t.Fatalf("push on a full disk: got %d, want 503", code)
	}
	got := lines()
	last := got[len(got)-1]
	var n struct {
		Suppressed int    `json:"suppressed"`
		DPU        string `json:"dpu"`
	}
	if err := json.Unmarshal([]byte(last), &n); err != nil || n.DPU != "d1" || n.Suppressed != pushes+1-len(got) || n.Suppressed == 0 {
		t.Errorf("last log line %q (of %d): want the DPU and the %d lines suppressed before it", last, len(got), pushes+1-len(got))
	}
}
