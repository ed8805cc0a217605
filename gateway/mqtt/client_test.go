package mqtt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/broker"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// These tests run the client on real parts: a Badger store in t.TempDir(), the
// tracker and the ingest pipeline over it, the embedded mochi broker and paho
// clients, wired as cmd/occupancyd wires them. A store wrapper injects write
// failures where a test needs them.

var testTopology = occupancy.TopologyConfig{
	Spaces: []occupancy.SpaceConfig{
		{ID: "hq", Name: "HQ"}, {ID: "f1", Name: "Floor 1", Parent: "hq"}, {ID: "r1", Name: "Room 1", Parent: "f1", Capacity: 4},
	},
	Doorways: []occupancy.DoorwayConfig{{ID: "main", Name: "Main"}, {ID: "door", Name: "Door"}},
	DPUs: []occupancy.DPUConfig{
		{ID: "d1", Doorway: "main", PlusSpace: "f1"},
		{ID: "d2", Doorway: "door", PlusSpace: "r1", MinusSpace: "f1"},
	},
}

// failingStore fails Append while fail is set, counting the attempts.
type failingStore struct {
	*buffer.Store
	fail     atomic.Bool
	attempts atomic.Int64
}

var errInjected = errors.New("injected write failure")

func (f *failingStore) Append(ctx context.Context, evs []occupancy.Event, parked []bool) ([]buffer.AppendResult, error) {
	f.attempts.Add(1)
	if f.fail.Load() {
		return nil, errInjected
	}
	return f.Store.Append(ctx, evs, parked)
}

type testEnv struct {
	t           *testing.T
	dir         string
	broker      *broker.Broker
	url         string
	minInterval time.Duration    // mqtt.publish_min_interval (0: the default)
	window      int              // the output's in-flight window (0: the default)
	now         func() time.Time // the tracker's clock (nil: time.Now)
	info        Info
}

func newTestEnv(t *testing.T) *testEnv {
	b, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &testEnv{t: t, dir: t.TempDir(), broker: b, url: "tcp://" + b.Addr()}
}

func (e *testEnv) config() config.Config {
	c := config.DefaultConfig()
	c.Gateway.ID = "gt"
	c.MQTT.Broker = e.url
	c.Storage.Dir = filepath.Join(e.dir, "data")
	c.Engine.SettleAfter = time.Minute
	c.Topology = testTopology
	c.ApplyDefaults()
	return c
}

// client connects a paho client to the test broker; it disconnects when the test ends.
func (e *testEnv) client(id string) paho.Client {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(e.url).SetClientID(id).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		e.t.Fatalf("connect %s: %v", id, tok.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(10) })
	return c
}

// open opens the store.
func (e *testEnv) open(cfg config.Config) *buffer.Store {
	st, err := buffer.Open(buffer.Options{Dir: cfg.Storage.Dir, Logger: zerolog.Nop(), MinFreeBytes: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// gateway is the tracker, the pipeline and the client, wired as Main wires them.
type gateway struct {
	tr     *tracker.Tracker
	pipe   *ingest.Pipeline
	client *Client
	stop   context.CancelFunc
	ran    chan struct{}
}

func (e *testEnv) start(cfg config.Config, st tracker.Store, ticks chan time.Time) *gateway {
	t := e.t
	topo := cfg.Topology
	tr, err := tracker.Open(tracker.Options{Store: st, Engine: cfg.EngineOptions(), Topology: &topo,
		MaxFutureSkew: cfg.Engine.MaxFutureSkew, Tick: cfg.Engine.Tick, Ticks: ticks, QuietAfter: cfg.Health.DPUQuietAfter,
		Logger: zerolog.Nop(), Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	rec := ingest.NewRecorder(nil, nil, zerolog.Nop())
	pipe, err := ingest.New(ingest.Options{Tracker: tr, Rejects: rec, Filters: cfg.MQTT.EventsTopic.Filters(),
		MaxFutureSkew: cfg.Engine.MaxFutureSkew, MaxPayload: cfg.MQTT.MaxPayload, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Broker: cfg.MQTT.Broker, MQTT: cfg.MQTT, GatewayID: cfg.Gateway.ID,
		Tracker: tr, Events: pipe, Rejected: rec.Outgoing(), MinInterval: e.minInterval, Window: e.window,
		Info: e.info, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{tr: tr, pipe: pipe, client: c, stop: cancel, ran: make(chan struct{})}
	pipe.Start()
	go func() {
		defer close(g.ran)
		tr.Run(ctx)
	}()
	c.Start()
	waitFor(t, 10*time.Second, "ready", func() string {
		if err := c.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
	return g
}

// Close stops the gateway as Main does: intake, the tick loop, a final tick, the
// client.
func (g *gateway) Close(ctx context.Context) error {
	g.pipe.Stop(ctx)
	g.stop()
	<-g.ran
	_, _ = g.tr.Tick()
	return g.client.Close(ctx)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d := cond()
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v: %s", what, within, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func occupancyOf(g *gateway, space string) int64 {
	o, _ := g.tr.Space(space)
	return o.Occupancy
}

// waitOccupancy waits until space's occupancy in g is want.
func waitOccupancy(t *testing.T, within time.Duration, what string, g *gateway, space string, want int64) {
	t.Helper()
	waitFor(t, within, what, func() string {
		if got := occupancyOf(g, space); got != want {
			return fmt.Sprintf("%s = %d, want %d", space, got, want)
		}
		return ""
	})
}

// A store that fails: the message is not acknowledged (the gateway retries); after a
// restart with a working store the broker redelivers it to the persistent session and
// it is counted once.
func TestGatewayStoreFailureIsNotAcked(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st := env.open(cfg)
	fs := &failingStore{Store: st}
	fs.fail.Store(true)
	g1 := env.start(cfg, fs, nil)

	pub := env.client("pub")
	payload := fmt.Sprintf(`{"id":"1","ts":%d,"direction":1}`, time.Now().UnixMilli())
	if tok := pub.Publish("dpu/d1/events", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitFor(t, 10*time.Second, "retries", func() string {
		if n := fs.attempts.Load(); n < 3 {
			return fmt.Sprintf("%d append attempts", n)
		}
		return ""
	})
	if got := occupancyOf(g1, "f1"); got != 0 {
		t.Fatalf("f1 = %d while the store fails, want 0", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g1.Close(ctx); err != nil {
		t.Logf("close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := env.open(cfg)
	defer st2.Close()
	g2 := env.start(cfg, st2, nil)
	defer g2.Close(context.Background())
	waitOccupancy(t, 10*time.Second, "redelivered event counted", g2, "f1", 1)
}

// A transient failure clears: the retried append succeeds and the event counts once.
func TestGatewayTransientStoreFailure(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st := env.open(cfg)
	defer st.Close()
	fs := &failingStore{Store: st}
	fs.fail.Store(true)
	g := env.start(cfg, fs, nil)
	defer g.Close(context.Background())
	pub := env.client("pub")
	payload := fmt.Sprintf(`{"ts":%d,"direction":1}`, time.Now().UnixMilli())
	pub.Publish("dpu/d1/events", 1, false, payload).Wait()
	waitFor(t, 10*time.Second, "a failed attempt", func() string {
		if fs.attempts.Load() < 1 {
			return "none yet"
		}
		return ""
	})
	fs.fail.Store(false)
	waitOccupancy(t, 10*time.Second, "counted after the store recovers", g, "f1", 1)
}

// Occupancy goes out when it changes, not on the tick (no tick runs here): a first
// change at once, then at most once per publish_min_interval per space, the latest
// value winning; a space that did not change is not published again.
func TestGatewayPublishesOnChange(t *testing.T) {
	env := newTestEnv(t)
	env.minInterval = 400 * time.Millisecond
	cfg := env.config()
	st := env.open(cfg)
	defer st.Close()
	ticks := make(chan time.Time) // never fed: no engine tick
	g := env.start(cfg, st, ticks)
	defer g.Close(context.Background())

	type sample struct {
		v  string
		at time.Time
	}
	var mu sync.Mutex
	var got []sample
	var f1 atomic.Int64
	sub := env.client("sub")
	sub.Subscribe("occupancy/r1/count", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, sample{string(m.Payload()), time.Now()})
		mu.Unlock()
	}).Wait()
	sub.Subscribe("occupancy/f1/count", 1, func(_ paho.Client, m paho.Message) { f1.Add(1) }).Wait()
	last := func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return "", 0
		}
		return got[len(got)-1].v, len(got)
	}
	waitFor(t, 5*time.Second, "the retained value", func() string {
		if v, _ := last(); v != "0" {
			return fmt.Sprintf("r1/count = %q", v)
		}
		return ""
	})
	time.Sleep(env.minInterval) // the start's publication is past its interval
	_, before := last()
	f1Before := f1.Load()

	pub := env.client("pub")
	now := time.Now().UnixMilli()
	start := time.Now()
	pub.Publish("dpu/d2/events", 1, false, fmt.Sprintf(`{"id":0,"ts":%d,"direction":1}`, now)).Wait()
	// No tick is ever fed, so any publish of the change is one without a tick; how
	// soon is logged below, not bounded (a loaded machine takes seconds at times).
	waitFor(t, 15*time.Second, "the first change published without a tick", func() string {
		if v, _ := last(); v != "1" {
			return fmt.Sprintf("r1/count = %q", v)
		}
		return ""
	})
	first := time.Since(start)
	for i := 1; i < 8; i++ {
		pub.Publish("dpu/d2/events", 1, false, fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, i, now+int64(i))).Wait()
	}
	waitFor(t, 5*time.Second, "the latest value", func() string {
		if v, _ := last(); v != "8" {
			return fmt.Sprintf("r1/count = %q", v)
		}
		return ""
	})
	time.Sleep(2 * env.minInterval)
	mu.Lock()
	burst := append([]sample(nil), got[before:]...)
	mu.Unlock()
	t.Logf("first change after %s; %d publishes of r1/count for 8 changes: %v", first.Round(time.Millisecond), len(burst), burst)
	if len(burst) > 4 {
		t.Errorf("%d publishes of occupancy/r1/count for 8 quick changes, want at most 4 (once per %s)", len(burst), env.minInterval)
	}
	for i := 1; i < len(burst); i++ {
		// The broker's delivery jitters a little; sends are min_interval apart.
		if d := burst[i].at.Sub(burst[i-1].at); d < env.minInterval-150*time.Millisecond {
			t.Errorf("publishes %d and %d of r1 %s apart, want about %s or more", i-1, i, d, env.minInterval)
		}
	}
	// d2 moves people from f1 into r1: f1 (the floor) does not change.
	if n := f1.Load() - f1Before; n != 0 {
		t.Errorf("f1/count published %d times, want 0 (it did not change)", n)
	}
}

// Reload: engine.tick takes effect at once, and a capacity change is a new topology
// version whose capacity is published.
func TestGatewayReloadTickAndCapacity(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	cfg.Engine.Tick = time.Hour // no tick would come
	st := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, nil)
	defer g.Close(context.Background())
	var last atomic.Value
	sub := env.client("sub")
	sub.Subscribe("occupancy/r1", 1, func(_ paho.Client, m paho.Message) { last.Store(string(m.Payload())) }).Wait()

	next := append([]occupancy.SpaceConfig(nil), cfg.Topology.Spaces...)
	next[2].Capacity = 9
	g.tr.SetTick(20 * time.Millisecond)
	if _, added, err := g.tr.AddVersion(occupancy.TopologyConfig{Spaces: next, Doorways: cfg.Topology.Doorways, DPUs: cfg.Topology.DPUs}); err != nil || !added {
		t.Fatalf("AddVersion: added %v, %v", added, err)
	}
	waitFor(t, 5*time.Second, "the new capacity published", func() string {
		v, _ := last.Load().(string)
		if !strings.Contains(v, `"capacity":9`) {
			return fmt.Sprintf("occupancy/r1 = %s", v)
		}
		return ""
	})
}

// More spaces than QoS 1 publishes may be in flight: every space still reaches the
// broker at start (the publish slots are recycled as the broker acknowledges).
func TestGatewayManySpacesPublished(t *testing.T) {
	env := newTestEnv(t)
	env.window = 256
	cfg := env.config()
	const n = 3 * 256 / 2
	tc := occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "site", Name: "Site"}}}
	for i := 0; i < n; i++ {
		tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: fmt.Sprintf("room-%d", i), Name: fmt.Sprintf("Room %d", i), Parent: "site"})
	}
	cfg.Topology = tc
	st := env.open(cfg)
	defer st.Close()
	var got sync.Map
	var count atomic.Int64
	sub := env.client("sub-many")
	sub.Subscribe("occupancy/+/count", 1, func(_ paho.Client, m paho.Message) {
		if _, loaded := got.LoadOrStore(m.Topic(), true); !loaded {
			count.Add(1)
		}
	}).Wait()
	g := env.start(cfg, st, nil)
	defer g.Close(context.Background())
	waitFor(t, 20*time.Second, "every space published", func() string {
		if c := count.Load(); c != n+1 {
			return fmt.Sprintf("%d of %d spaces", c, n+1)
		}
		return ""
	})
}
