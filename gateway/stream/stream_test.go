package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/stream/streamtest"
	"github.com/occupancyd/occupancyd/occupancy"
)

// ---- a change feed and a source the test drives, as the tracker's behave ----

type source struct {
	mu   sync.Mutex
	topo occupancy.TopologyConfig
	vals map[string]occupancy.Occupancy
	subs map[*sub]struct{}
}

type sub struct {
	s       *source
	mu      sync.Mutex
	pending []occupancy.Occupancy
	pos     map[string]int
	topo    bool
	removed []string
	ch      chan struct{}
}

func (s *source) Subscribe() Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &sub{s: s, pos: map[string]int{}, ch: make(chan struct{}, 1)}
	s.subs[b] = struct{}{}
	return b
}

func (s *source) Spaces() []occupancy.Occupancy {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]occupancy.Occupancy, 0, len(s.topo.Spaces))
	for _, sp := range s.topo.Spaces {
		out = append(out, s.vals[sp.ID])
	}
	return out
}

func (s *source) Topology() occupancy.TopologyConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topo
}

func (s *source) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// set changes a space's occupancy and records it for every subscriber, as the
// tracker does when it applies an event.
func (s *source) set(id string, n int64) { s.setAll(id, n) }

// setAll changes a space's occupancy to each of ns in turn and records them for
// every subscriber before it signals the change: one drain sees them all, as when
// the tracker applies several events between two drains.
func (s *source) setAll(id string, ns ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range ns {
		o := s.vals[id]
		o.Occupancy = n
		o.Updated++
		s.vals[id] = o
		for b := range s.subs {
			b.add(o)
		}
	}
	for b := range s.subs {
		select {
		case b.ch <- struct{}{}:
		default:
		}
	}
}

// add records a change; the caller signals it.
func (b *sub) add(o occupancy.Occupancy) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i, ok := b.pos[o.Space]; ok {
		b.pending[i] = o
	} else {
		b.pos[o.Space] = len(b.pending)
		b.pending = append(b.pending, o)
	}
}

func (b *sub) Changed() <-chan struct{} { return b.ch }

func (b *sub) Drain() ([]occupancy.Occupancy, []string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, topo, removed := b.pending, b.topo, b.removed
	b.pending, b.topo, b.removed = nil, false, nil
	clear(b.pos)
	return p, removed, topo
}

// version brings a new topology in force: spaces added (with their values, which
// did not "change") and removed, as the tracker's feed reports a version.
func (s *source) version(add []occupancy.SpaceConfig, remove []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var spaces []occupancy.SpaceConfig
	for _, sp := range s.topo.Spaces {
		if !slices.Contains(remove, sp.ID) {
			spaces = append(spaces, sp)
		}
	}
	for _, sp := range add {
		spaces = append(spaces, sp)
		s.vals[sp.ID] = occupancy.Occupancy{Space: sp.ID, Name: sp.Name, Occupancy: 4, Updated: 1}
	}
	for _, id := range remove {
		delete(s.vals, id)
	}
	s.topo = occupancy.TopologyConfig{Spaces: spaces}
	for b := range s.subs {
		b.mu.Lock()
		b.topo = true
		b.removed = append(b.removed, remove...)
		b.mu.Unlock()
		select {
		case b.ch <- struct{}{}:
		default:
		}
	}
}

func (b *sub) Close() {
	b.s.mu.Lock()
	delete(b.s.subs, b)
	b.s.mu.Unlock()
}

// building: hq > f1 > (lobby, cafe); hq > f2 > (room-a, room-b); annex (a second
// root) with extra rooms.
func building(t testing.TB, extra int) *source {
	t.Helper()
	sp := []occupancy.SpaceConfig{
		{ID: "hq", Name: "HQ", Capacity: 100}, {ID: "f1", Name: "Floor 1", Parent: "hq"},
		{ID: "f2", Name: "Floor 2", Parent: "hq"}, {ID: "lobby", Name: "Lobby", Parent: "f1", Capacity: 30},
		{ID: "cafe", Name: "Cafe", Parent: "f1"}, {ID: "room-a", Name: "Room A", Parent: "f2"},
		{ID: "room-b", Name: "Room B", Parent: "f2"}, {ID: "annex", Name: "Annex"},
	}
	for i := range extra {
		sp = append(sp, occupancy.SpaceConfig{ID: fmt.Sprintf("annex-r%05d", i), Name: strings.Repeat("x", 150), Parent: "annex"})
	}
	tc := occupancy.TopologyConfig{Spaces: sp}
	if ps := tc.Validate(); len(ps) > 0 {
		t.Fatal(ps)
	}
	s := &source{topo: tc, vals: map[string]occupancy.Occupancy{}, subs: map[*sub]struct{}{}}
	for _, c := range sp {
		s.vals[c.ID] = occupancy.Occupancy{Space: c.ID, Name: c.Name, Capacity: c.Capacity, Updated: 1}
	}
	return s
}

type doc = streamtest.Occupancy

type docJSON struct {
	Space     string `json:"space"`
	Name      string `json:"name"`
	Occupancy int64  `json:"occupancy"`
	Capacity  int64  `json:"capacity,omitempty"`
}

func render(b []byte, o occupancy.Occupancy) []byte {
	j, _ := json.Marshal(docJSON{Space: o.Space, Name: o.Name, Occupancy: o.Occupancy, Capacity: o.Capacity})
	return append(b, j...)
}

func startHub(t *testing.T, src *source, opts Options) (*Hub, *httptest.Server) {
	t.Helper()
	opts.Feed, opts.Source, opts.Render = src, src, render
	if opts.MinInterval == 0 {
		opts.MinInterval = 20 * time.Millisecond
	}
	opts.Logger = zerolog.Nop()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
	})
	return h, srv
}

// ---- tests ----

func TestSnapshotThenChanges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		query string
		want  []string // the snapshot, in topology order
	}{
		{"all", "", []string{"hq", "f1", "f2", "lobby", "cafe", "room-a", "room-b", "annex"}},
		{"space", "?space=lobby,annex", []string{"lobby", "annex"}},
		{"space repeated", "?space=lobby&space=room-b,lobby", []string{"lobby", "room-b"}},
		{"under", "?under=f1", []string{"f1", "lobby", "cafe"}},
		{"under a leaf", "?under=cafe", []string{"cafe"}},
		{"under and space", "?under=f2&space=lobby", []string{"f2", "lobby", "room-a", "room-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := building(t, 0)
			src.set("lobby", 3) // a value before the client connects is in its snapshot
			_, srv := startHub(t, src, Options{})
			ch := streamtest.Open(t, srv.URL+tc.query)
			var got []string
			for range tc.want {
				o := ch.Next(t, 5*time.Second)
				got = append(got, o.Space)
				if o.Space == "lobby" && o.Occupancy != 3 {
					t.Errorf("snapshot lobby = %d, want 3", o.Occupancy)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("snapshot %v, want %v", got, tc.want)
			}
			// Then each change of a wanted space, in order; others are not sent.
			wanted := map[string]bool{}
			for _, id := range tc.want {
				wanted[id] = true
			}
			for i, id := range []string{"cafe", "lobby", "room-a", "annex", "hq", "lobby"} {
				src.set(id, int64(10+i))
				if !wanted[id] {
					continue
				}
				o := ch.Next(t, 5*time.Second)
				if o.Space != id || o.Occupancy != int64(10+i) {
					t.Fatalf("change %d: got %s=%d, want %s=%d", i, o.Space, o.Occupancy, id, 10+i)
				}
			}
			ch.Quiet(t, 100*time.Millisecond)
		})
	}
}

func TestBadFilters(t *testing.T) {
	src := building(t, 0)
	_, srv := startHub(t, src, Options{})
	for _, tc := range []struct {
		query string
		code  int
		msg   string
	}{
		{"?space=nope", 404, `unknown space "nope"`},
		{"?under=nope", 404, `unknown space "nope"`},
		{"?space=a%2Fb", 400, "not a space id"},
		{"?under=f1&under=f2", 400, "give one space"},
		{"?space=", 400, "need a space id"},
	} {
		resp, err := http.Get(srv.URL + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("GET %s = %d %s, want %d with %q", tc.query, resp.StatusCode, b, tc.code, tc.msg)
		}
	}
}

// TestCoalesced: changes faster than MinInterval reach the client at most once per
// interval, the last with the latest value; a change back to the value sent last is
// no event.
func TestCoalesced(t *testing.T) {
	src := building(t, 0)
	const interval = 200 * time.Millisecond
	_, srv := startHub(t, src, Options{MinInterval: interval})
	ch := streamtest.Open(t, srv.URL+"?space=lobby,cafe")
	ch.Next(t, 5*time.Second)
	ch.Next(t, 5*time.Second)
	start := time.Now()
	for i := 1; i <= 60; i++ { // one change every 10 ms
		src.set("lobby", int64(i))
		if i%10 == 0 {
			src.set("cafe", int64(i))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	got := map[string][]int64{}
	last := func(vs []int64) int64 {
		if len(vs) == 0 {
			return -1
		}
		return vs[len(vs)-1]
	}
	for last(got["lobby"]) != 60 || last(got["cafe"]) != 60 {
		o := ch.Next(t, 5*time.Second)
		got[o.Space] = append(got[o.Space], o.Occupancy)
	}
	// At most one drain per interval over the time the changes took, plus the first.
	if n, most := len(got["lobby"]), int(took/interval)+2; n > most {
		t.Errorf("lobby: %d events %v for 60 changes over %v, want at most %d (one per %v)", n, got["lobby"], took, most, interval)
	}
	// Back and forth between two drains: the value sent last, so nothing is sent.
	// Both changes are recorded before the hub hears of them (two separate sets
	// raced the hub: past its interval it drains at the first change at once, and a
	// drain between 7 and 60 rightly sends both).
	time.Sleep(interval + 50*time.Millisecond)
	src.setAll("lobby", 7, 60)
	ch.Quiet(t, 3*interval)
}

// TestMatchesModel: random changes on random spaces while three clients with different
// filters read; each client sees, per space, a subsequence of the values the space
// took, in order, ending with its final value; spaces it did not ask for never.
func TestMatchesModel(t *testing.T) {
	src := building(t, 20)
	_, srv := startHub(t, src, Options{MinInterval: 5 * time.Millisecond})
	parent := map[string]string{}
	var ids []string
	for _, sp := range src.Topology().Spaces {
		ids = append(ids, sp.ID)
		parent[sp.ID] = sp.Parent
	}
	queries := []string{"", "?under=f2", "?space=lobby,annex-r00003&under=f1"}
	type view struct {
		f    filter
		ch   *streamtest.Stream
		seen map[string][]int64
	}
	var views []*view
	for _, q := range queries {
		req := httptest.NewRequest("GET", "/"+q, nil)
		f, err := parseFilter(req)
		if err != nil {
			t.Fatal(err)
		}
		ch := streamtest.Open(t, srv.URL+q)
		views = append(views, &view{f: f, ch: ch, seen: map[string][]int64{}})
	}
	// The snapshot: every value is 0.
	history := map[string][]int64{}
	for _, id := range ids {
		history[id] = []int64{0}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		id := ids[r.IntN(len(ids))]
		v := history[id][len(history[id])-1] + int64(r.IntN(3)) - 1
		if v == history[id][len(history[id])-1] {
			continue
		}
		history[id] = append(history[id], v)
		src.set(id, v)
		if i%200 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	for qi, vw := range views {
		// Read until every wanted space shows its final value.
		missing := func() []string {
			var m []string
			for _, id := range ids {
				if !vw.f.wants(id, parent) {
					continue
				}
				s := vw.seen[id]
				if len(s) == 0 || s[len(s)-1] != history[id][len(history[id])-1] {
					m = append(m, id)
				}
			}
			return m
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(missing()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("client %q: no final value for %v", queries[qi], missing())
			}
			o := vw.ch.Next(t, 10*time.Second)
			vw.seen[o.Space] = append(vw.seen[o.Space], o.Occupancy)
		}
		for id, got := range vw.seen {
			if !vw.f.wants(id, parent) {
				t.Errorf("client %q got space %s it did not ask for", queries[qi], id)
				continue
			}
			if !streamtest.InOrder(got, history[id]) {
				t.Errorf("client %q, space %s: got %v, not an ordered subsequence of %v", queries[qi], id, got, history[id])
			}
			for i := 1; i < len(got); i++ {
				if got[i] == got[i-1] {
					t.Errorf("client %q, space %s: the same value twice in a row: %v", queries[qi], id, got)
					break
				}
			}
		}
	}
}

func TestClientLimit(t *testing.T) {
	src := building(t, 0)
	hub, srv := startHub(t, src, Options{MaxClients: 2})
	ch1 := streamtest.Open(t, srv.URL+"?space=hq")
	ch2 := streamtest.Open(t, srv.URL+"?space=hq")
	ch2.Next(t, 5*time.Second)
	resp, err := http.Get(srv.URL + "?space=hq")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "at most 2") || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("third client: %d %s %s, want 503 JSON saying at most 2", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if got := hub.Clients(); got != 2 {
		t.Errorf("Clients() = %d, want 2", got)
	}
	ch1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for hub.Clients() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Clients() = %d after a client left, want 1", hub.Clients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ch3 := streamtest.Open(t, srv.URL+"?space=hq")
	if o := ch3.Next(t, 5*time.Second); o.Space != "hq" {
		t.Errorf("a client after one left: got %s, want hq", o.Space)
	}
	if n := src.subscribers(); n != 1 {
		t.Errorf("feed subscriptions with clients: %d, want 1 (the hub's)", n)
	}
	// The last client gone, the hub stops its subscription; the next one starts it.
	ch2.Close()
	ch3.Close()
	for src.subscribers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("feed subscriptions with no client: %d, want 0", src.subscribers())
		}
		time.Sleep(10 * time.Millisecond)
	}
	src.set("hq", 5) // while nobody listens
	ch4 := streamtest.Open(t, srv.URL+"?space=hq")
	if o := ch4.Next(t, 5*time.Second); o.Space != "hq" || o.Occupancy != 5 {
		t.Errorf("a client after all left: got %s=%d, want hq=5", o.Space, o.Occupancy)
	}
	src.set("hq", 6)
	if o := ch4.Next(t, 5*time.Second); o.Space != "hq" || o.Occupancy != 6 {
		t.Errorf("a change after the hub restarted: got %s=%d, want hq=6", o.Space, o.Occupancy)
	}
}

func TestHeartbeat(t *testing.T) {
	src := building(t, 0)
	_, srv := startHub(t, src, Options{Heartbeat: 50 * time.Millisecond})
	ch := streamtest.Open(t, srv.URL+"?space=hq")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ev := ch.Event(t, time.Until(deadline)); ev.Name == "" && ev.Data == "heartbeat" {
			return
		}
	}
}

// TestSlowClientDropped: a client that stops reading is dropped after WriteTimeout,
// while the feed goes on being taken and another client gets every change.
func TestSlowClientDropped(t *testing.T) {
	src := building(t, 20000) // a snapshot of ~4 MB: more than the socket buffers hold
	hub, srv := startHub(t, src, Options{WriteTimeout: 300 * time.Millisecond, MinInterval: 5 * time.Millisecond})

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// ... and never reads.

	ch := streamtest.Open(t, srv.URL+"?space=lobby")
	ch.Next(t, 5*time.Second)
	start := time.Now()
	for i := 1; i <= 40; i++ {
		src.set("lobby", int64(i))
		if o := ch.Next(t, 5*time.Second); o.Occupancy != int64(i) {
			t.Fatalf("reading client: lobby = %d, want %d", o.Occupancy, i)
		}
	}
	t.Logf("40 changes to the reading client in %v while the other stalls", time.Since(start))
	deadline := time.Now().Add(10 * time.Second)
	for hub.Clients() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the client that does not read is still served after 10s (%d clients)", hub.Clients())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClose: Close ends the streams being served and refuses new ones.
func TestClose(t *testing.T) {
	src := building(t, 0)
	hub, srv := startHub(t, src, Options{})
	ch := streamtest.Open(t, srv.URL+"?space=hq")
	ch.Next(t, 5*time.Second)
	hub.Close()
	ch.Ended(t, 5*time.Second)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a client after Close: %d, want 503", resp.StatusCode)
	}
}

// TestTopologyVersion: a space a new version adds is sent to the clients that want it
// (with the value it has) and is in later snapshots; a removed one is in neither.
func TestTopologyVersion(t *testing.T) {
	src := building(t, 0)
	_, srv := startHub(t, src, Options{})
	under := streamtest.Open(t, srv.URL+"?under=f2")
	for range 3 {
		under.Next(t, 5*time.Second)
	}
	src.version([]occupancy.SpaceConfig{{ID: "room-c", Name: "Room C", Parent: "f2"}}, []string{"room-b"})
	if o := under.Next(t, 5*time.Second); o.Space != "room-c" || o.Occupancy != 4 {
		t.Errorf("after the version: %s=%d, want the new room-c=4", o.Space, o.Occupancy)
	}
	all := streamtest.Open(t, srv.URL)
	var got []string
	for range 8 {
		got = append(got, all.Next(t, 5*time.Second).Space)
	}
	want := []string{"hq", "f1", "f2", "lobby", "cafe", "room-a", "annex", "room-c"}
	if !slices.Equal(got, want) {
		t.Errorf("snapshot after the version: %v, want %v", got, want)
	}
	all.Quiet(t, 200*time.Millisecond)
}
