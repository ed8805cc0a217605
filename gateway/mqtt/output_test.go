package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/broker"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// feedSet is a latest-wins change set, as the tracker's subscription is, for the
// tests that drive the output's scheduling by hand.
type feedSet struct {
	mu      sync.Mutex
	ch      chan struct{}
	changed []occupancy.Occupancy
	removed []string
	topo    bool
}

func newFeedSet() *feedSet { return &feedSet{ch: make(chan struct{}, 1)} }

func (f *feedSet) Changed() <-chan struct{} { return f.ch }
func (f *feedSet) Close()                   {}
func (f *feedSet) Drain() ([]occupancy.Occupancy, []string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, r, tp := f.changed, f.removed, f.topo
	f.changed, f.removed, f.topo = nil, nil, false
	return c, r, tp
}

func (f *feedSet) add(os ...occupancy.Occupancy) {
	f.mu.Lock()
	f.changed = append(f.changed, os...)
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

// arrivals records, in order, the topics a subscriber receives.
type arrivals struct {
	mu     sync.Mutex
	topics []string
	vals   map[string]string
}

func subscribeAll(t *testing.T, env *testEnv, id, filter string) *arrivals {
	return subscribeArrivals(t, env, id, filter, false)
}

// subscribeLive records only what is sent while it is subscribed, not the broker's
// replay of retained messages to the new subscription (retain flag set): mochi sends
// that replay after the SUBACK, so under load it could come after the sends the test
// makes and repeat them all (TestOutputOrder saw its ten sends twice, the second
// time in the retained map's order).
func subscribeLive(t *testing.T, env *testEnv, id, filter string) *arrivals {
	return subscribeArrivals(t, env, id, filter, true)
}

func subscribeArrivals(t *testing.T, env *testEnv, id, filter string, live bool) *arrivals {
	a := &arrivals{vals: map[string]string{}}
	c := env.client(id)
	if tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		if live && m.Retained() {
			return
		}
		a.mu.Lock()
		a.topics = append(a.topics, m.Topic())
		a.vals[m.Topic()] = string(m.Payload())
		a.mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return a
}

func (a *arrivals) snapshot() ([]string, map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	vals := make(map[string]string, len(a.vals))
	for k, v := range a.vals {
		vals[k] = v
	}
	return append([]string(nil), a.topics...), vals
}

// handOutput makes an Output driven by hand (drain, pump) on a connected client,
// with a hand-fed change set; the min interval is an hour, the reaper runs.
func handOutput(t *testing.T, env *testEnv, id string, window int, spaces func() []occupancy.Occupancy) (*Output, *feedSet) {
	t.Helper()
	p, err := NewOutput(OutputOptions{
		Broker: env.url, ClientID: id, OutputPrefix: "occupancy", MinInterval: time.Hour, Window: window,
		Subscribe: func() Subscription { return newFeedSet() }, Spaces: spaces,
		Render: payload.AppendOccupancyJSON, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	feed := newFeedSet()
	p.sub, p.conn = feed, env.client(id)
	go p.reap() // frees the window as the broker acknowledges
	t.Cleanup(func() { close(p.runDone) })
	return p, feed
}

// Which dirty space goes first: one never sent, then the one sent longest ago (a
// quiet room before busy floors), and live changes take turns with the backlog (a
// republication of every space), so neither starves the other. Driven by hand on
// a real connection to a broker: a subscriber sees the sends in order.
func TestOutputOrder(t *testing.T) {
	env := newTestEnv(t)
	arr := subscribeLive(t, env, "watch", "occupancy/+/count")
	occ := func(id string, v int64) occupancy.Occupancy { return occupancy.Occupancy{Space: id, Occupancy: v} }
	var all []occupancy.Occupancy
	p, feed := handOutput(t, env, "out-order", 0, func() []occupancy.Occupancy { return all })
	now := time.Now()
	// busy1 and busy2 were sent 1 and 2 minutes ago, quiet an hour ago, fresh never.
	for id, ago := range map[string]time.Duration{"busy1": time.Minute, "busy2": 2 * time.Minute, "quiet": time.Hour} {
		p.space(occ(id, 0)).lastSent = now.Add(-ago)
	}
	p.o.MinInterval = time.Second // all of them may go again
	feed.add(occ("busy1", 1), occ("busy2", 1), occ("quiet", 1), occ("fresh", 1))
	p.drain()
	p.pump()

	// Then a backlog of three (a reconnect's republication) beside three live changes.
	all = []occupancy.Occupancy{occ("b1", 5), occ("b2", 5), occ("b3", 5)}
	p.queueAll()
	for _, id := range []string{"l1", "l2", "l3"} {
		p.space(occ(id, 0)).lastSent = now.Add(-time.Hour)
	}
	feed.add(occ("l1", 7), occ("l2", 7), occ("l3", 7))
	p.drain()
	p.pump()

	// The backlog's turn comes first after live sends.
	want := []string{"fresh", "quiet", "busy2", "busy1", "b1", "l1", "b2", "l2", "b3", "l3"}
	waitFor(t, 5*time.Second, "every send", func() string {
		if got, _ := arr.snapshot(); len(got) < len(want) {
			return fmt.Sprintf("%d of %d", len(got), len(want))
		}
		return ""
	})
	got, vals := arr.snapshot()
	for i := range got {
		got[i] = strings.TrimSuffix(strings.TrimPrefix(got[i], "occupancy/"), "/count")
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("send order: got %v, want %v", got, want)
	}
	if v := vals["occupancy/b2/count"]; v != "5" {
		t.Errorf("b2 republished as %q, want 5", v)
	}
	if n := p.live.Len(); n != 0 {
		t.Errorf("%d spaces still dirty, want 0", n)
	}
}

// Under more change than the window lets out, the dirty set holds one entry per
// space with its latest value (nothing queues per change), and a space is sent at
// most once per min interval.
func TestOutputLatestWins(t *testing.T) {
	env := newTestEnv(t)
	arr := subscribeLive(t, env, "watch", "occupancy/+/count")
	p, feed := handOutput(t, env, "out-latest", 8, func() []occupancy.Occupancy { return nil })
	const spaces, rounds = 50, 40
	for r := 1; r <= rounds; r++ {
		for s := 0; s < spaces; s++ {
			feed.add(occupancy.Occupancy{Space: fmt.Sprintf("s%02d", s), Occupancy: int64(r)})
		}
		p.drain()
		if p.live.Len() > spaces {
			t.Fatalf("round %d: %d dirty entries for %d spaces", r, p.live.Len(), spaces)
		}
	}
	// Nothing was sent (no pump yet): one send each now, with the latest value.
	for p.live.Len() > 0 {
		p.pump()
		select {
		case <-p.freed:
		case <-time.After(5 * time.Second):
			t.Fatal("no acknowledgement")
		}
	}
	waitFor(t, 5*time.Second, "every space", func() string {
		if got, _ := arr.snapshot(); len(got) < spaces {
			return fmt.Sprintf("%d of %d", len(got), spaces)
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond)
	got, vals := arr.snapshot()
	if len(got) != spaces {
		t.Errorf("%d sends for %d spaces changed %d times each, want one each", len(got), spaces, rounds)
	}
	for s := 0; s < spaces; s++ {
		if v := vals[fmt.Sprintf("occupancy/s%02d/count", s)]; v != fmt.Sprint(rounds) {
			t.Errorf("s%02d: got %q, want the latest, %d", s, v, rounds)
		}
	}
	// A change now waits for its interval (an hour): not sent.
	feed.add(occupancy.Occupancy{Space: "s00", Occupancy: 99})
	p.drain()
	if next := p.pump(); next < 59*time.Minute {
		t.Errorf("next send in %s, want the rest of the hour", next)
	}
	if v := vals["occupancy/s00/count"]; v != fmt.Sprint(rounds) {
		t.Errorf("s00 = %q", v)
	}
}

// After the broker restarts (losing every retained message), the output connection
// comes back and republishes every space, and `online`.
func TestOutputRepublishesAfterReconnect(t *testing.T) {
	b0, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	addr := b0.Addr()
	env := &testEnv{t: t, dir: t.TempDir(), broker: b0, url: "tcp://" + addr}
	cfg := env.config()
	st := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, nil)
	closed := false
	defer func() {
		if !closed {
			g.Close(context.Background())
		}
	}()
	waitFor(t, 5*time.Second, "the output connection", func() string {
		if !g.client.out.Connected() {
			return "not connected"
		}
		return ""
	})
	b0.Close() // every retained message is gone with it
	b, err := broker.Start(broker.Options{Listen: addr, Logger: zerolog.Nop()})
	if err != nil {
		t.Skipf("restart the broker on %s: %v", addr, err)
	}
	t.Cleanup(func() { b.Close() })
	env.broker = b
	arr := subscribeAll(t, env, "watch-after", "#")
	waitFor(t, 15*time.Second, "every space and the status on the new broker", func() string {
		_, vals := arr.snapshot()
		var missing []string
		for _, s := range cfg.Topology.Spaces {
			if _, ok := vals["occupancy/"+s.ID+"/count"]; !ok {
				missing = append(missing, s.ID)
			}
		}
		if v := vals[cfg.MQTT.StatusTopic]; v != "online" {
			missing = append(missing, "status="+v)
		}
		if len(missing) > 0 {
			return fmt.Sprint("missing ", missing)
		}
		return ""
	})
	// A clean stop says offline.
	closed = true
	if err := g.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFor(t, 5*time.Second, "offline", func() string {
		if _, vals := arr.snapshot(); vals[cfg.MQTT.StatusTopic] != "offline" {
			return "status " + vals[cfg.MQTT.StatusTopic]
		}
		return ""
	})
}

// Control messages (the gateway's own retained topics: status, info, DPU health) go
// before any occupancy, latest payload per topic, and again after a reconnect.
func TestOutputControlFirst(t *testing.T) {
	env := newTestEnv(t)
	arr := subscribeLive(t, env, "watch", "#")
	p, feed := handOutput(t, env, "out-control", 0, func() []occupancy.Occupancy { return nil })
	p.queueControl("gw/info", []byte("v1"))
	feed.add(occupancy.Occupancy{Space: "r1", Occupancy: 3})
	p.drain()
	p.queueControl("gw/dpus", []byte(`{"dpus":1}`))
	p.queueControl("gw/info", []byte("v2")) // replaces v1, keeps its place
	p.pump()
	want := []string{"gw/info", "gw/dpus", "occupancy/r1", "occupancy/r1/count"}
	waitFor(t, 5*time.Second, "every send", func() string {
		if got, _ := arr.snapshot(); len(got) < len(want) {
			return fmt.Sprintf("%v", got)
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond)
	got, vals := arr.snapshot()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("send order: got %v, want %v", got, want)
	}
	if vals["gw/info"] != "v2" {
		t.Errorf("gw/info = %q, want the latest, v2", vals["gw/info"])
	}
	// A reconnect queues every control topic again with its latest payload.
	p.onConn(connEvent{up: true, c: p.conn})
	if fmt.Sprint(p.controlQ) != "[gw/info gw/dpus]" && fmt.Sprint(p.controlQ) != "[gw/dpus gw/info]" {
		t.Errorf("after a reconnect the control queue is %v, want both topics", p.controlQ)
	}
}

// doneToken is a completed publish token, for the window's arithmetic.
type doneToken struct{ err error }

func (doneToken) Wait() bool                     { return true }
func (doneToken) WaitTimeout(time.Duration) bool { return true }
func (doneToken) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
func (t doneToken) Error() error { return t.err }

// TestOutputWindowAdapts: quick acknowledgements grow the window by one each up to
// Window; a slow one halves it, once per round trip, never below minWindow; a
// failed publish (connection lost) leaves it as it is.
func TestOutputWindowAdapts(t *testing.T) {
	p, err := NewOutput(OutputOptions{Broker: "tcp://127.0.0.1:1", ClientID: "w", Window: 256,
		Subscribe: func() Subscription { return nil }, Spaces: func() []occupancy.Occupancy { return nil },
		Render: func(dst []byte, _ occupancy.Occupancy) []byte { return dst }})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.limit.Load(), int64(64); got != want {
		t.Fatalf("start: window %d, want %d (a quarter of 256)", got, want)
	}
	t0 := time.Unix(1_800_000_000, 0)
	now, cut := t0, time.Time{}
	ack := func(rtt time.Duration, err error) int64 {
		t.Helper()
		now = now.Add(time.Millisecond)
		cut = p.adapt(sentToken{tok: doneToken{err}, sent: now.Add(-rtt)}, now, cut)
		return p.limit.Load()
	}
	t.Run("grows while quick", func(t *testing.T) {
		for i := range 100 {
			if got, want := ack(time.Millisecond, nil), min(int64(64+i+1), 256); got != want {
				t.Fatalf("after %d quick acks: window %d, want %d", i+1, got, want)
			}
		}
		for range 200 {
			ack(time.Millisecond, nil)
		}
		if got := p.limit.Load(); got != 256 {
			t.Fatalf("window %d, want the most, 256", got)
		}
	})
	t.Run("halves once per round trip", func(t *testing.T) {
		if got := ack(500*time.Millisecond, nil); got != 128 {
			t.Fatalf("after a slow ack: window %d, want 128", got)
		}
		// Acks of publishes sent before the cut: no second cut within the round trip.
		for range 50 {
			if got := ack(500*time.Millisecond, nil); got != 128 {
				t.Fatalf("a second cut within one round trip: window %d, want 128", got)
			}
		}
		now = now.Add(500 * time.Millisecond)
		if got := ack(500*time.Millisecond, nil); got != 64 {
			t.Fatalf("after a round trip more: window %d, want 64", got)
		}
		for range 20 {
			now = now.Add(time.Second)
			ack(time.Second, nil)
		}
		if got := p.limit.Load(); got != minWindow {
			t.Fatalf("window %d, want the least, %d", got, minWindow)
		}
	})
	t.Run("ingest behind caps it", func(t *testing.T) {
		for range 1000 {
			ack(time.Millisecond, nil)
		}
		busy := false
		p.o.IngestBusy = func() bool { return busy }
		if got, want := p.free(), 256; got != want {
			t.Fatalf("ingest keeping up: %d free, want the window, %d", got, want)
		}
		busy = true
		if got, want := p.free(), busyWindow; got != want {
			t.Fatalf("ingest behind: %d free, want %d", got, want)
		}
		p.slots <- struct{}{}
		if got, want := p.free(), busyWindow-1; got != want {
			t.Fatalf("ingest behind, one in flight: %d free, want %d", got, want)
		}
		<-p.slots
		busy = false
		if got, want := p.free(), 256; got != want {
			t.Fatalf("ingest caught up: %d free, want the window again, %d", got, want)
		}
		p.o.IngestBusy = nil
		for range 20 {
			now = now.Add(time.Second)
			ack(time.Second, nil)
		}
	})
	t.Run("a lost connection does not count", func(t *testing.T) {
		if got := ack(5*time.Second, errors.New("connection lost")); got != minWindow {
			t.Fatalf("window %d after a failed publish, want %d unchanged", got, minWindow)
		}
		if got := ack(time.Millisecond, errors.New("connection lost")); got != minWindow {
			t.Fatalf("window %d after a failed publish, want %d unchanged", got, minWindow)
		}
	})
}

// holdProxy forwards TCP connections to a broker; hold stops passing what the
// broker sends (its acknowledgements), as a broker that stopped keeping up would,
// while what the client sends still goes through.
type holdProxy struct {
	addr string
	held chan struct{}
	once sync.Once
}

func newHoldProxy(t *testing.T, broker string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &holdProxy{addr: ln.Addr().String(), held: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", broker)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := b.Read(buf)
					select {
					case <-px.held:
						return // the broker's side is no longer read
					default:
					}
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	return px
}

func (px *holdProxy) hold() { px.once.Do(func() { close(px.held) }) }

// syncBuffer is a log sink written by the output's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.WriteString(string(p))
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A broker that stops acknowledging while the gateway stops, with changes still
// waiting: Close ends within its deadline without an error (nothing acknowledged
// is lost), logs what it could not do, and `offline`, sent before the disconnect,
// still reaches the broker.
func TestOutputCloseBrokerNotAcknowledging(t *testing.T) {
	env := newTestEnv(t)
	status := subscribeAll(t, env, "watch", "gw/status")
	px := newHoldProxy(t, strings.TrimPrefix(env.url, "tcp://"))
	feed := newFeedSet()
	var logs syncBuffer
	p, err := NewOutput(OutputOptions{
		Broker: "tcp://" + px.addr, ClientID: "out-stop", StatusTopic: "gw/status", OutputPrefix: "occupancy",
		MinInterval: time.Hour, Window: 2, Subscribe: func() Subscription { return feed },
		Spaces: func() []occupancy.Occupancy { return nil }, Render: payload.AppendOccupancyJSON,
		Logger: zerolog.New(&logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.SetUpstream(true)
	p.Start()
	waitFor(t, 20*time.Second, "online", func() string {
		if _, vals := status.snapshot(); vals["gw/status"] != "online" {
			return fmt.Sprintf("status %q", vals["gw/status"])
		}
		return ""
	})
	px.hold()
	// More changes than the window of 2 lets out without acknowledgements.
	feed.add(occupancy.Occupancy{Space: "a", Occupancy: 1}, occupancy.Occupancy{Space: "b", Occupancy: 1},
		occupancy.Occupancy{Space: "c", Occupancy: 1})

	const budget = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	err = p.Close(ctx)
	took := time.Since(start)
	if err != nil {
		t.Errorf("Close: got %v, want nil (what did not go out is logged)", err)
	}
	// The budget, then paho's disconnect (250 ms quiesce), with room for a loaded machine.
	if took > budget+3*time.Second {
		t.Errorf("Close took %s, want about %s", took, budget)
	}
	for _, want := range []string{"did not take the last occupancy updates in time", "did not acknowledge offline in time"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q: want it to say %q", logs.String(), want)
		}
	}
	waitFor(t, 20*time.Second, "offline at the broker", func() string {
		if _, vals := status.snapshot(); vals["gw/status"] != "offline" {
			return fmt.Sprintf("status %q", vals["gw/status"])
		}
		return ""
	})
}
