package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// fakeQuerier is a tiny in-memory Querier for the HTTP layer's own tests: it records
// what the server asked for and answers from fixed data. The real-stack test
// (http_stack_test.go) runs the API over the real engine and store.
type fakeQuerier struct {
	mu       sync.Mutex
	spaces   []occupancy.Occupancy
	horizon  int64
	notReady error
	atCalls  [][2]int64
	counts   [][3]int64
	resets   []occupancy.Reset
	dpus     []tracker.DPUStat
	failAll  error
	panicky  bool
	loc      *time.Location // every space's time zone (nil: UTC)
}

func newFakeQuerier() *fakeQuerier {
	return &fakeQuerier{
		spaces: []occupancy.Occupancy{
			{Space: "hq", Name: "HQ", Occupancy: 9, Capacity: 300, Updated: 1_795_000_000_000, SettledUntil: 1_794_999_700_000},
			{Space: "lobby", Name: "Lobby", Occupancy: 7, Updated: 1_795_000_000_000, SettledUntil: 1_794_999_700_000},
		},
		horizon: 1_794_999_700_000,
		dpus:    []tracker.DPUStat{{DPU: "283", LastEvent: "2026-11-27T10:00:00.123Z", ClockSkewMS: -40, Accepted: 12, Gaps: 1}},
	}
}

func (f *fakeQuerier) Spaces() []occupancy.Occupancy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]occupancy.Occupancy(nil), f.spaces...)
}

func (f *fakeQuerier) Space(id string) (occupancy.Occupancy, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.spaces {
		if o.Space == id {
			return o, true
		}
	}
	return occupancy.Occupancy{}, false
}

func (f *fakeQuerier) DPUsOf(ids []string) []tracker.DPUStat {
	var out []tracker.DPUStat
	for _, id := range ids {
		st := tracker.DPUStat{DPU: id}
		for _, d := range f.DPUs() {
			if d.DPU == id {
				st = d
			}
		}
		out = append(out, st)
	}
	return out
}

func (f *fakeQuerier) Horizon() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.horizon
}

// Topology nests every space of the fake under hq, in Berlin's time.
func (f *fakeQuerier) Topology() occupancy.TopologyConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	var tc occupancy.TopologyConfig
	for _, o := range f.spaces {
		sp := occupancy.SpaceConfig{ID: o.Space, Name: o.Name, Capacity: o.Capacity}
		if o.Space == "hq" {
			sp.TimeZone = "Europe/Berlin"
		} else {
			sp.Parent = "hq"
		}
		tc.Spaces = append(tc.Spaces, sp)
	}
	tc.DPUs = []occupancy.DPUConfig{{ID: "283", Doorway: "main", PlusSpace: "lobby"}}
	tc.Doorways = []occupancy.DoorwayConfig{{ID: "main", Name: "Main entrance"}}
	return tc
}

func (f *fakeQuerier) known(id string) bool { _, ok := f.Space(id); return ok }

func (f *fakeQuerier) At(id string, t int64) (int64, error) {
	if !f.known(id) {
		return 0, fmt.Errorf("at: %w %q", occupancy.ErrUnknownSpace, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.atCalls = append(f.atCalls, [2]int64{t})
	return t % 100, nil // a value derived from t, so the test sees which t arrived
}

func (f *fakeQuerier) Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error) {
	if !f.known(id) {
		return nil, fmt.Errorf("counts: %w %q", occupancy.ErrUnknownSpace, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll != nil {
		return nil, f.failAll
	}
	f.counts = append(f.counts, [3]int64{start, end, interval})
	var bs []occupancy.Bucket
	for s := start; s < end; s += interval {
		bs = append(bs, occupancy.Bucket{Start: s, End: min(s+interval, end), Occupancy: 2, Min: 1, Max: 3, Entrances: 4, Exits: 5})
	}
	return bs, nil
}

func (f *fakeQuerier) Location(string) *time.Location {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loc == nil {
		return time.UTC
	}
	return f.loc
}

func (f *fakeQuerier) Reset(r occupancy.Reset) error {
	if !f.known(r.Space) {
		return fmt.Errorf("reset: %w %q", occupancy.ErrUnknownSpace, r.Space)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.TS < f.horizon {
		return fmt.Errorf("%w: ts %d is before the settled horizon %d", tracker.ErrBadReset, r.TS, f.horizon)
	}
	f.resets = append(f.resets, r)
	for i := range f.spaces {
		if f.spaces[i].Space == r.Space {
			f.spaces[i].Occupancy = r.Occupancy
			f.spaces[i].Updated = r.TS
		}
	}
	return nil
}

func (f *fakeQuerier) DPUs() []tracker.DPUStat {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicky {
		panic("boom")
	}
	return f.dpus
}

func (f *fakeQuerier) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notReady
}

// startServer runs a real Server on 127.0.0.1:0 until the test ends, then checks
// that Shutdown works and Serve returned nil.
func startServer(t *testing.T, token string, q Querier, m *metrics.Metrics, log zerolog.Logger, now ...func() time.Time) *Server {
	t.Helper()
	o := Options{Token: token, Querier: q, Metrics: m, Logger: log}
	if r, ok := q.(interface{ Ready() error }); ok {
		o.Ready = r.Ready
	}
	if len(now) > 0 {
		o.Now = now[0]
	}
	return startServerWith(t, o)
}

// startServerWith serves o (on 127.0.0.1:0 unless o.Listen says otherwise) until the
// test ends; Serve must return nil after Shutdown.
func startServerWith(t *testing.T, o Options) *Server {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return s
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, auth, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// jsonEqual compares a JSON body with the expected JSON text structurally.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body:\n got %s\nwant %s", bytes.TrimSpace(got), want)
	}
}

const (
	tFake = int64(1_795_000_000_000) // 2026-11-18T11:06:40Z
)

func TestHTTPReadRoutes(t *testing.T) {
	q := newFakeQuerier()
	s := startServer(t, "", q, nil, zerolog.Nop(), func() time.Time { return time.UnixMilli(tFake + 42) })
	base := "http://" + s.Addr()

	hqJSON := `{"space":"hq","name":"HQ","occupancy":9,"capacity":300,"utilization":0.03,"updated":"2026-11-18T11:06:40.000Z","settled_until":"2026-11-18T11:01:40.000Z"}`
	lobbyJSON := `{"space":"lobby","name":"Lobby","occupancy":7,"updated":"2026-11-18T11:06:40.000Z","settled_until":"2026-11-18T11:01:40.000Z"}`
	cases := []struct {
		name   string
		path   string
		status int
		want   string // exact JSON, or "" to check errSub
		errSub string
	}{
		{"healthz", "/healthz", 200, `{"status":"ok"}`, ""},
		{"readyz", "/readyz", 200, `{"status":"ready"}`, ""},
		{"all spaces", "/v1/spaces", 200, "[" + hqJSON + "," + lobbyJSON + "]", ""},
		{"one space", "/v1/spaces/lobby", 200, lobbyJSON, ""},
		{"unknown space", "/v1/spaces/nope", 404, "", `unknown space "nope"`},
		{"occupancy at offset time", "/v1/spaces/hq/occupancy?at=2026-11-27T10:00:00.123%2B01:00", 200,
			`{"space":"hq","at":"2026-11-27T09:00:00.123Z","occupancy":23}`, ""},
		{"occupancy at unescaped plus", "/v1/spaces/hq/occupancy?at=2026-11-27T10:00:00.123+01:00", 200,
			`{"space":"hq","at":"2026-11-27T09:00:00.123Z","occupancy":23}`, ""},
		{"occupancy at Z without fraction", "/v1/spaces/hq/occupancy?at=2026-11-27T09:00:00Z", 200,
			`{"space":"hq","at":"2026-11-27T09:00:00.000Z","occupancy":0}`, ""},
		{"occupancy at defaults to now", "/v1/spaces/hq/occupancy", 200,
			`{"space":"hq","at":"2026-11-18T11:06:40.042Z","occupancy":42}`, ""},
		{"occupancy bad at", "/v1/spaces/hq/occupancy?at=yesterday", 400, "", "query parameter at"},
		{"occupancy at past year 9999", "/v1/spaces/hq/occupancy?at=9999-12-31T23:59:59-01:00", 400, "", "out of range"},
		{"occupancy at ms out of range", "/v1/spaces/hq/occupancy?at=999999999999999999", 400, "", "out of range"},
		{"occupancy at Unix ms", "/v1/spaces/hq/occupancy?at=1795770000123", 200,
			`{"space":"hq","at":"2026-11-27T09:00:00.123Z","occupancy":23}`, ""},
		{"occupancy unknown space", "/v1/spaces/nope/occupancy?at=2026-11-27T09:00:00Z", 404, "", `unknown space "nope"`},
		{"counts", "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T09:40:00Z&interval=20m", 200,
			`[{"start":"2026-11-27T09:00:00.000Z","end":"2026-11-27T09:20:00.000Z","occupancy":2,"min":1,"max":3,"entrances":4,"exits":5},
			  {"start":"2026-11-27T09:20:00.000Z","end":"2026-11-27T09:40:00.000Z","occupancy":2,"min":1,"max":3,"entrances":4,"exits":5}]`, ""},
		{"counts default interval", "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T09:15:00Z", 200,
			`[{"start":"2026-11-27T09:00:00.000Z","end":"2026-11-27T09:15:00.000Z","occupancy":2,"min":1,"max":3,"entrances":4,"exits":5}]`, ""},
		{"counts interval of days", "/v1/spaces/hq/counts?start=2026-11-27T00:00:00Z&end=2026-11-29T00:00:00Z&interval=1d", 200,
			`[{"start":"2026-11-27T00:00:00.000Z","end":"2026-11-28T00:00:00.000Z","occupancy":2,"min":1,"max":3,"entrances":4,"exits":5},
			  {"start":"2026-11-28T00:00:00.000Z","end":"2026-11-29T00:00:00.000Z","occupancy":2,"min":1,"max":3,"entrances":4,"exits":5}]`, ""},
		{"counts bad end", "/v1/spaces/hq/counts?start=2026-11-27T09:15:00Z&end=soon", 400, "", "query parameter end"},
		{"counts end before start", "/v1/spaces/hq/counts?start=2026-11-27T09:15:00Z&end=2026-11-27T09:00:00Z", 400, "", "must be after start"},
		{"counts end equals start", "/v1/spaces/hq/counts?start=2026-11-27T09:15:00Z&end=2026-11-27T09:15:00Z", 400, "", "must be after start"},
		{"counts bad interval", "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z&interval=often", 400, "", "query parameter interval"},
		{"counts zero interval", "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z&interval=0s", 400, "", "query parameter interval"},
		{"counts negative interval", "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z&interval=-5m", 400, "", "query parameter interval"},
		{"counts too many buckets", "/v1/spaces/hq/counts?start=2026-11-27T00:00:00Z&end=2026-11-28T00:00:00Z&interval=1s", 400, "", "86400 buckets asked for, at most 10000"},
		{"counts huge range", "/v1/spaces/hq/counts?start=0001-01-01T00:00:00Z&end=9999-12-31T00:00:00Z&interval=1ms", 400, "", "at most 10000"},
		{"counts unknown space", "/v1/spaces/nope/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z", 404, "", `unknown space "nope"`},
		{"dpus", "/v1/dpus", 200,
			`[{"dpu":"283","last_event":"2026-11-27T10:00:00.123Z","clock_skew_ms":-40,"quiet":false,"accepted":12,"duplicates":0,"rejected":0,"parked":0,"gaps":1,"counter_resets":0,"restarts":0,
			   "since_start":{"accepted":0,"duplicates":0,"rejected":0,"parked":0,"gaps":0,"counter_resets":0,"restarts":0},
			   "doorway":"main","doorway_name":"Main entrance","plus_space":"lobby","minus_space":""}]`, ""},
		{"unknown route", "/v2/nothing", 404, "", "no route GET /v2/nothing"},
		{"trailing slash is no route", "/v1/spaces/lobby/occupancy/extra", 404, "", "no route"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, "GET", base+c.path, "", "")
			if r.status != c.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, c.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type = %q, want application/json", ct)
			}
			if c.want != "" {
				jsonEqual(t, r.body, c.want)
				return
			}
			var e map[string]string
			if err := json.Unmarshal(r.body, &e); err != nil || len(e) != 1 {
				t.Fatalf("error body %q is not {\"error\": ...}: %v", r.body, err)
			}
			if !strings.Contains(e["error"], c.errSub) {
				t.Errorf("error = %q, want it to contain %q", e["error"], c.errSub)
			}
		})
	}

	t.Run("counts arguments in ms", func(t *testing.T) {
		q.mu.Lock()
		defer q.mu.Unlock()
		want := [][3]int64{
			{1_795_770_000_000, 1_795_772_400_000, 1_200_000},
			{1_795_770_000_000, 1_795_770_900_000, 900_000},
			{1_795_737_600_000, 1_795_910_400_000, 86_400_000},
		}
		if !reflect.DeepEqual(q.counts, want) {
			t.Errorf("Counts calls = %v, want %v", q.counts, want)
		}
	})
	t.Run("counts default to today in the space's time zone", func(t *testing.T) {
		q.mu.Lock()
		q.counts, q.loc = nil, time.FixedZone("CET", 3600)
		q.mu.Unlock()
		defer func() { q.mu.Lock(); q.loc = nil; q.mu.Unlock() }()
		// The server's clock reads 2026-11-18T11:06:40.042Z: today in CET is
		// [2026-11-17T23:00Z, 2026-11-18T23:00Z).
		for _, p := range []string{"", "?start=2026-11-18T06:00:00Z", "?end=2026-11-18T12:00:00Z"} {
			if r := do(t, "GET", base+"/v1/spaces/hq/counts"+p, "", ""); r.status != 200 {
				t.Fatalf("counts%s: status %d: %s", p, r.status, r.body)
			}
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		want := [][3]int64{
			{1_794_956_400_000, 1_795_042_800_000, 900_000},
			{1_794_981_600_000, 1_795_042_800_000, 900_000},
			{1_794_956_400_000, 1_795_003_200_000, 900_000},
		}
		if !reflect.DeepEqual(q.counts, want) {
			t.Errorf("Counts calls = %v, want %v", q.counts, want)
		}
	})
	t.Run("largest bucket count allowed", func(t *testing.T) {
		// 10,000 one-second buckets exactly.
		r := do(t, "GET", base+"/v1/spaces/hq/counts?start=2026-11-27T00:00:00Z&end=2026-11-27T02:46:40Z&interval=1s", "", "")
		var bs []bucketDoc
		if err := json.Unmarshal(r.body, &bs); r.status != 200 || err != nil || len(bs) != MaxBuckets {
			t.Errorf("status %d, %d buckets, %v; want 200, %d buckets", r.status, len(bs), err, MaxBuckets)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		q.mu.Lock()
		q.notReady = &metrics.NotReady{Code: metrics.NotReadyNotSubscribed, Err: errors.New("events topics not subscribed yet")}
		q.mu.Unlock()
		defer func() { q.mu.Lock(); q.notReady = nil; q.mu.Unlock() }()
		r := do(t, "GET", base+"/readyz", "", "")
		if r.status != 503 {
			t.Fatalf("status = %d, want 503", r.status)
		}
		jsonEqual(t, r.body, `{"status":"not_ready","reason":"not_subscribed","error":"not ready: not_subscribed: events topics not subscribed yet"}`)
		// An error that does not say why is "starting" (the check cannot tell).
		q.mu.Lock()
		q.notReady = errors.New("no idea")
		q.mu.Unlock()
		r = do(t, "GET", base+"/readyz", "", "")
		jsonEqual(t, r.body, `{"status":"not_ready","reason":"starting","error":"not ready: no idea"}`)
		if r := do(t, "GET", base+"/healthz", "", ""); r.status != 200 {
			t.Errorf("healthz status = %d while not ready, want 200", r.status)
		}
	})
	t.Run("empty lists are arrays", func(t *testing.T) {
		q.mu.Lock()
		saved, savedD := q.spaces, q.dpus
		q.spaces, q.dpus = nil, nil
		q.mu.Unlock()
		defer func() { q.mu.Lock(); q.spaces, q.dpus = saved, savedD; q.mu.Unlock() }()
		for _, p := range []string{"/v1/spaces", "/v1/dpus"} {
			r := do(t, "GET", base+p, "", "")
			if r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
				t.Errorf("%s: %d %q, want 200 []", p, r.status, r.body)
			}
		}
	})
	t.Run("internal error", func(t *testing.T) {
		q.mu.Lock()
		q.failAll = errors.New("store: disk on fire")
		q.mu.Unlock()
		defer func() { q.mu.Lock(); q.failAll = nil; q.mu.Unlock() }()
		r := do(t, "GET", base+"/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z", "", "")
		if r.status != 500 {
			t.Fatalf("status = %d, want 500", r.status)
		}
		jsonEqual(t, r.body, `{"error":"store: disk on fire"}`)
	})
	t.Run("handler panic", func(t *testing.T) {
		q.mu.Lock()
		q.panicky = true
		q.mu.Unlock()
		defer func() { q.mu.Lock(); q.panicky = false; q.mu.Unlock() }()
		r := do(t, "GET", base+"/v1/dpus", "", "")
		if r.status != 500 {
			t.Fatalf("status = %d, want 500", r.status)
		}
		jsonEqual(t, r.body, `{"error":"internal error"}`)
		if r := do(t, "GET", base+"/healthz", "", ""); r.status != 200 {
			t.Errorf("server unhealthy after a panic: %d", r.status)
		}
	})
}

func TestHTTPMethods(t *testing.T) {
	s := startServer(t, "secret", newFakeQuerier(), nil, zerolog.Nop())
	base := "http://" + s.Addr()
	cases := []struct {
		method, path, allow string
	}{
		{"GET", "/v1/spaces/hq/reset", "POST"},
		{"POST", "/v1/spaces", "GET, HEAD"},
		{"DELETE", "/v1/spaces/hq", "GET, HEAD"},
		{"PUT", "/healthz", "GET, HEAD"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := do(t, c.method, base+c.path, "Bearer secret", "")
			if r.status != http.StatusMethodNotAllowed {
				t.Fatalf("status = %d, want 405 (body %s)", r.status, r.body)
			}
			if got := r.header.Get("Allow"); got != c.allow {
				t.Errorf("Allow = %q, want %q", got, c.allow)
			}
			var e map[string]string
			if err := json.Unmarshal(r.body, &e); err != nil || !strings.Contains(e["error"], "not allowed") {
				t.Errorf("body %q, want a JSON error about the method", r.body)
			}
		})
	}
	t.Run("HEAD healthz", func(t *testing.T) {
		if r := do(t, "HEAD", base+"/healthz", "", ""); r.status != 200 {
			t.Errorf("status = %d, want 200", r.status)
		}
	})
}

func TestHTTPReset(t *testing.T) {
	t.Run("no token configured", func(t *testing.T) {
		q := newFakeQuerier()
		s := startServer(t, "", q, nil, zerolog.Nop())
		for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
			r := do(t, "POST", "http://"+s.Addr()+"/v1/spaces/hq/reset", auth, `{"occupancy":0}`)
			if r.status != http.StatusForbidden {
				t.Errorf("auth %q: status = %d, want 403", auth, r.status)
			}
			if !strings.Contains(string(r.body), "http.token") {
				t.Errorf("body %s does not say how to enable writes", r.body)
			}
		}
		if len(q.resets) != 0 {
			t.Errorf("resets applied without a token: %v", q.resets)
		}
	})

	q := newFakeQuerier()
	now := tFake + 5_000
	s := startServer(t, "s3cret-token", q, nil, zerolog.Nop(), func() time.Time { return time.UnixMilli(now) })
	url := "http://" + s.Addr() + "/v1/spaces/%s/reset"
	const good = "Bearer s3cret-token"
	cases := []struct {
		name, space, auth, body string
		status                  int
		errSub                  string
		reset                   *occupancy.Reset
	}{
		{"missing token", "hq", "", `{"occupancy":0}`, 401, "bearer token", nil},
		{"wrong token", "hq", "Bearer s3cret-tokem", `{"occupancy":0}`, 401, "bearer token", nil},
		{"token prefix only", "hq", "Bearer s3cret", `{"occupancy":0}`, 401, "bearer token", nil},
		{"token with suffix", "hq", "Bearer s3cret-token2", `{"occupancy":0}`, 401, "bearer token", nil},
		{"basic scheme", "hq", "Basic s3cret-token", `{"occupancy":0}`, 401, "bearer token", nil},
		{"raw token", "hq", "s3cret-token", `{"occupancy":0}`, 401, "bearer token", nil},
		{"reset to zero now", "hq", good, `{"occupancy":0}`, 200, "",
			&occupancy.Reset{Space: "hq", TS: now, Occupancy: 0}},
		{"lowercase scheme, explicit ts", "lobby", "bearer s3cret-token", `{"occupancy": 4, "ts": "2026-11-18T12:06:41.5+01:00"}`, 200, "",
			&occupancy.Reset{Space: "lobby", TS: tFake + 1_500, Occupancy: 4}},
		{"ts as Unix ms", "lobby", good, `{"occupancy": 3, "ts": 1795000002000}`, 200, "",
			&occupancy.Reset{Space: "lobby", TS: tFake + 2_000, Occupancy: 3}},
		{"null ts is now", "hq", good, `{"occupancy": 1, "ts": null}`, 200, "",
			&occupancy.Reset{Space: "hq", TS: now, Occupancy: 1}},
		{"ts before horizon", "hq", good, `{"occupancy": 0, "ts": "2020-01-01T00:00:00Z"}`, 400, "before the settled horizon", nil},
		{"negative occupancy", "hq", good, `{"occupancy": -1}`, 400, "must be >= 0", nil},
		{"missing occupancy", "hq", good, `{"ts": "2026-11-18T11:06:41Z"}`, 400, `"occupancy" is required`, nil},
		{"fractional occupancy", "hq", good, `{"occupancy": 1.5}`, 400, "body must be JSON", nil},
		{"string occupancy", "hq", good, `{"occupancy": "3"}`, 400, "body must be JSON", nil},
		{"unknown field", "hq", good, `{"occupancy": 0, "space": "lobby"}`, 400, `unknown field "space"`, nil},
		{"bad ts", "hq", good, `{"occupancy": 0, "ts": "noon"}`, 400, `"ts"`, nil},
		{"bad ts type", "hq", good, `{"occupancy": 0, "ts": true}`, 400, `"ts"`, nil},
		{"empty body", "hq", good, ``, 400, "body must be JSON", nil},
		{"not JSON", "hq", good, `occupancy=0`, 400, "body must be JSON", nil},
		{"two objects", "hq", good, `{"occupancy":0}{"occupancy":1}`, 400, "one JSON object", nil},
		{"too large", "hq", good, `{"occupancy":0,"ts":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "body over", nil},
		{"unknown space", "nope", good, `{"occupancy":0}`, 404, `unknown space "nope"`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q.mu.Lock()
			before := len(q.resets)
			q.mu.Unlock()
			r := do(t, "POST", fmt.Sprintf(url, c.space), c.auth, c.body)
			if r.status != c.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, c.status, r.body)
			}
			q.mu.Lock()
			got := q.resets[before:]
			q.mu.Unlock()
			if c.reset == nil {
				if len(got) != 0 {
					t.Errorf("resets applied: %v, want none", got)
				}
				if c.status == 401 && r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				var e map[string]string
				if err := json.Unmarshal(r.body, &e); err != nil || !strings.Contains(e["error"], c.errSub) {
					t.Errorf("error body %s, want it to contain %q", r.body, c.errSub)
				}
				return
			}
			if len(got) != 1 || got[0] != *c.reset {
				t.Fatalf("resets = %v, want [%v]", got, *c.reset)
			}
			// The answer is the space's occupancy object after the reset.
			o, _ := q.Space(c.space)
			want, _ := payload.OccupancyJSON(o)
			jsonEqual(t, r.body, string(want))
			var doc map[string]any
			_ = json.Unmarshal(r.body, &doc)
			if doc["occupancy"] != float64(c.reset.Occupancy) {
				t.Errorf("occupancy after reset = %v, want %d", doc["occupancy"], c.reset.Occupancy)
			}
		})
	}
}

func TestHTTPListen(t *testing.T) {
	t.Run("busy port", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = New(Options{Listen: ln.Addr().String(), Querier: newFakeQuerier(), Logger: zerolog.Nop()})
		if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("err = %v, want a listen error", err)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		_, err := New(Options{Listen: "127.0.0.1:99999", Querier: newFakeQuerier(), Logger: zerolog.Nop()})
		if err == nil {
			t.Fatal("no error for port 99999")
		}
	})
	t.Run("nil querier", func(t *testing.T) {
		if _, err := New(Options{Listen: "127.0.0.1:0", Querier: nil, Logger: zerolog.Nop()}); err == nil {
			t.Fatal("no error for a nil querier")
		}
	})
	t.Run("shutdown before serve frees the port", func(t *testing.T) {
		s, err := New(Options{Listen: "127.0.0.1:0", Querier: newFakeQuerier(), Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		addr := s.Addr()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if err := s.Serve(); err != nil {
			t.Fatalf("Serve after Shutdown = %v, want nil", err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port still held after Shutdown: %v", err)
		}
		ln.Close()
	})
	t.Run("shutdown waits for a running request", func(t *testing.T) {
		q := &slowQuerier{fakeQuerier: newFakeQuerier(), entered: make(chan struct{}), release: make(chan struct{})}
		s, err := New(Options{Listen: "127.0.0.1:0", Querier: q, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve() }()
		got := make(chan int, 1)
		go func() {
			resp, err := http.Get("http://" + s.Addr() + "/v1/spaces")
			if err != nil {
				got <- -1
				return
			}
			resp.Body.Close()
			got <- resp.StatusCode
		}()
		<-q.entered
		shut := make(chan error, 1)
		go func() { shut <- s.Shutdown(context.Background()) }()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v while a request was running", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(q.release)
		if code := <-got; code != 200 {
			t.Errorf("in-flight request status = %d, want 200", code)
		}
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

type slowQuerier struct {
	*fakeQuerier
	entered, release chan struct{}
}

func (q *slowQuerier) Spaces() []occupancy.Occupancy {
	close(q.entered)
	<-q.release
	return q.fakeQuerier.Spaces()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestHTTPRequestLog(t *testing.T) {
	for _, lvl := range []zerolog.Level{zerolog.DebugLevel, zerolog.InfoLevel} {
		t.Run(lvl.String(), func(t *testing.T) {
			var buf syncBuffer
			s := startServer(t, "", newFakeQuerier(), nil, zerolog.New(&buf).Level(lvl).With().Str("component", "http").Logger())
			do(t, "GET", "http://"+s.Addr()+"/v1/spaces/nope?x=1", "", "")
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if strings.Contains(l, `"http request"`) {
					_ = json.Unmarshal([]byte(l), &line)
				}
			}
			if lvl > zerolog.DebugLevel {
				if line != nil {
					t.Errorf("request logged at %s: %v", lvl, line)
				}
				return
			}
			want := map[string]any{"level": "debug", "component": "http", "method": "GET", "path": "/v1/spaces/nope", "query": "x=1", "status": float64(404)}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("log %s = %v, want %v (line %v)", k, line[k], v, line)
				}
			}
		})
	}
}

// TestHTTPQueryErrorLogRateLimited (issue 14: every error line on a hot path is
// rate-limited with a suppressed count): while the querier fails, every read is a
// 500 with the error, and the log says so once a second, the next line with the
// number of lines suppressed, not once per request.
func TestHTTPQueryErrorLogRateLimited(t *testing.T) {
	var buf syncBuffer
	q := newFakeQuerier()
	q.failAll = errors.New("store: disk on fire")
	s := startServer(t, "", q, nil, zerolog.New(&buf))
	url := "http://" + s.Addr() + "/v1/spaces/hq/counts?start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z"
	failed := func() []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if strings.Contains(l, `"http query failed"`) {
				out = append(out, l)
			}
		}
		return out
	}
	const reads = 20
	began := time.Now()
	for i := range reads {
		if r := do(t, "GET", url, "", ""); r.status != 500 || !strings.Contains(string(r.body), "disk on fire") {
			t.Fatalf("read %d: %d %s, want 500 with the error", i, r.status, r.body)
		}
	}
	if took := time.Since(began); took < time.Second {
		if got := failed(); len(got) != 1 {
			t.Fatalf("%d failed reads within %v logged %d lines, want 1:\n%s", reads, took, len(got), buf.String())
		}
	}
	time.Sleep(time.Until(began.Add(1100 * time.Millisecond)))
	do(t, "GET", url, "", "")
	got := failed()
	var last struct {
		Suppressed int    `json:"suppressed"`
		Space      string `json:"space"`
		Error      string `json:"error"`
	}
	if err := json.Unmarshal([]byte(got[len(got)-1]), &last); err != nil || last.Space != "hq" || last.Error != "store: disk on fire" ||
		last.Suppressed == 0 || last.Suppressed != reads+1-len(got) {
		t.Errorf("last line %q (of %d): want space hq, the error and the %d lines suppressed before it", got[len(got)-1], len(got), reads+1-len(got))
	}
}

// BenchmarkHTTPSpaces measures GET /v1/spaces for 10,000 spaces over loopback.
func BenchmarkHTTPSpaces(b *testing.B) {
	q := newFakeQuerier()
	q.spaces = nil
	for i := 0; i < 10_000; i++ {
		q.spaces = append(q.spaces, occupancy.Occupancy{Space: fmt.Sprintf("room-%05d", i), Name: "Room", Occupancy: int64(i % 40), Capacity: 40, Updated: tFake, SettledUntil: tFake})
	}
	s, err := New(Options{Listen: "127.0.0.1:0", Querier: q, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	url := "http://" + s.Addr() + "/v1/spaces"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < 1_000_000 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// FuzzParseInstant: any input gives a value or an error, never a panic, and an
// accepted RFC 3339 time renders back to the same instant.
func FuzzParseInstant(f *testing.F) {
	for _, s := range []string{"2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123+01:00", "2026-11-27T10:00:00 01:00",
		"1795000000000", "-5", "", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "253402300800000", "-62135596800001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := parseInstant(s)
		if err != nil {
			return
		}
		if n, perr := strconv.ParseInt(s, 10, 64); perr == nil && n != ms {
			t.Errorf("%q -> %d", s, ms)
		}
		back, err := parseInstant(payload.FormatMS(ms))
		if err != nil || back != ms {
			t.Errorf("%q -> %d -> %s -> %d, %v", s, ms, payload.FormatMS(ms), back, err)
		}
	})
}

// TestMetricsExposition scrapes /metrics of a real server and checks every metric of
// the contract is there in the Prometheus text format, with the Go/process collectors.
func TestMetricsExposition(t *testing.T) {
	m := metrics.New()
	m.EventsAccepted.Add(42)
	m.SetSpaces([]occupancy.Occupancy{{Space: "room-a", Occupancy: 3}})
	s := startServer(t, "", newFakeQuerier(), m, zerolog.Nop())
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type = %q, want text/plain exposition", ct)
	}
	text := string(body)
	for _, want := range []string{
		"occupancyd_events_received_total 0",
		"occupancyd_events_accepted_total 42",
		"occupancyd_events_duplicate_total 0",
		`occupancyd_events_rejected_total{reason="bad_json"} 0`,
		`occupancyd_events_rejected_total{reason="unknown_dpu"} 0`,
		"occupancyd_events_late_total 0",
		"occupancyd_events_parked 0",
		"occupancyd_ingest_batch_seconds_bucket",
		"occupancyd_publishes_total 0",
		"occupancyd_pending_entries 0",
		"occupancyd_settle_lag_seconds 0",
		"occupancyd_mqtt_connected 0",
		`occupancyd_space_occupancy{space="room-a"} 3`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want+"{") && !strings.Contains(text, want+" ") {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
