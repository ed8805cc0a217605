package gateway

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
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// These tests run the Gateway on real parts: a Badger store in t.TempDir(), the
// occupancy engine, the embedded mochi broker and paho clients. A store wrapper
// injects write failures where a test needs them.

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
	t      *testing.T
	dir    string
	broker *Broker
	url    string
}

func newTestEnv(t *testing.T) *testEnv {
	b := testBroker(t, BrokerOptions{})
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
	c, err := connectTo(e.broker.Addr(), id, "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Disconnect(10) })
	return c
}

// open opens the store and engine the way Main does.
func (e *testEnv) open(cfg config.Config) (*buffer.Store, *occupancy.Engine) {
	t := e.t
	st, err := buffer.Open(buffer.Options{Dir: cfg.Storage.Dir, Logger: zerolog.Nop(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := st.Versions()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	if len(vs) == 0 {
		if err := st.PutVersion(occupancy.Version{At: now - 1000, Topology: cfg.Topology}); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := occupancy.Open(cfg.EngineOptions(), st, now)
	if err != nil {
		t.Fatal(err)
	}
	return st, eng
}

func (e *testEnv) start(cfg config.Config, st Store, eng Engine, ticks chan time.Time) *Gateway {
	t := e.t
	g, err := New(Options{Config: cfg, Store: st, Engine: eng, Logger: zerolog.Nop(), Ticks: ticks})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ready", func() string {
		if err := g.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
	return g
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

func occupancyOf(g *Gateway, space string) int64 {
	o, _ := g.Space(space)
	return o.Occupancy
}

// waitOccupancy waits until space's occupancy in g is want.
func waitOccupancy(t *testing.T, within time.Duration, what string, g *Gateway, space string, want int64) {
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
	st, eng := env.open(cfg)
	fs := &failingStore{Store: st}
	fs.fail.Store(true)
	g1 := env.start(cfg, fs, eng, nil)

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

	st2, eng2 := env.open(cfg)
	defer st2.Close()
	g2 := env.start(cfg, st2, eng2, nil)
	defer g2.Close(context.Background())
	waitOccupancy(t, 10*time.Second, "redelivered event counted", g2, "f1", 1)
}

// A transient failure clears: the retried append succeeds and the event counts once.
func TestGatewayTransientStoreFailure(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st, eng := env.open(cfg)
	defer st.Close()
	fs := &failingStore{Store: st}
	fs.fail.Store(true)
	g := env.start(cfg, fs, eng, nil)
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

// Ticks are coalesced: many events for one space between two ticks give one publish
// of each of its topics; a tick without changes publishes nothing.
func TestGatewayTickCoalesces(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st, eng := env.open(cfg)
	defer st.Close()
	ticks := make(chan time.Time)
	g := env.start(cfg, st, eng, ticks)
	defer g.Close(context.Background())

	var counts atomic.Int64
	var last atomic.Value
	sub := env.client("sub")
	sub.Subscribe("occupancy/r1/count", 1, func(_ paho.Client, m paho.Message) {
		counts.Add(1)
		last.Store(string(m.Payload()))
	}).Wait()
	waitFor(t, 5*time.Second, "the retained value", func() string {
		if counts.Load() < 1 {
			return "nothing"
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond)
	base := counts.Load()

	pub := env.client("pub")
	now := time.Now().UnixMilli()
	for i := 0; i < 5; i++ {
		pub.Publish("dpu/d2/events", 1, false, fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, i, now+int64(i))).Wait()
	}
	waitOccupancy(t, 5*time.Second, "applied", g, "r1", 5)
	if got := counts.Load(); got != base {
		t.Fatalf("published %d updates before any tick, want 0", got-base)
	}
	ticks <- time.Now()
	waitFor(t, 5*time.Second, "one coalesced publish", func() string {
		if v, _ := last.Load().(string); v != "5" {
			return fmt.Sprintf("last /count = %q", v)
		}
		return ""
	})
	ticks <- time.Now() // nothing changed: nothing published
	time.Sleep(200 * time.Millisecond)
	if got := counts.Load() - base; got != 1 {
		t.Errorf("%d publishes of occupancy/r1/count for 5 events in one tick, want 1", got)
	}
}

// Reset: stored then applied; before the horizon or with a negative value it is a bad
// reset; an unknown space is ErrUnknownSpace.
func TestGatewayReset(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st, eng := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, eng, nil)
	defer g.Close(context.Background())
	now := time.Now().UnixMilli()
	if err := g.Reset(occupancy.Reset{Space: "r1", TS: now, Occupancy: 3}); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got := occupancyOf(g, "r1"); got != 3 {
		t.Errorf("r1 after reset to 3 = %d", got)
	}
	if err := g.Reset(occupancy.Reset{Space: "r1", TS: now - 3600_000}); !errors.Is(err, ErrBadReset) {
		t.Errorf("reset before the horizon = %v, want ErrBadReset", err)
	}
	if err := g.Reset(occupancy.Reset{Space: "r1", Occupancy: -1}); !errors.Is(err, ErrBadReset) {
		t.Errorf("negative reset = %v, want ErrBadReset", err)
	}
	if err := g.Reset(occupancy.Reset{Space: "nope"}); !errors.Is(err, occupancy.ErrUnknownSpace) {
		t.Errorf("reset of an unknown space = %v, want ErrUnknownSpace", err)
	}
}

// Reload: engine.tick takes effect at once, a capacity change is a new topology
// version (published), other changes are reported as needing a restart.
func TestGatewayReloadTickAndCapacity(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	cfg.Engine.Tick = time.Hour // no tick would come
	st, eng := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, eng, nil)
	defer g.Close(context.Background())
	var last atomic.Value
	sub := env.client("sub")
	sub.Subscribe("occupancy/r1", 1, func(_ paho.Client, m paho.Message) { last.Store(string(m.Payload())) }).Wait()

	next := cfg
	next.Engine.Tick = 20 * time.Millisecond
	next.MQTT.OutputPrefix = "elsewhere"
	next.Topology.Spaces = append([]occupancy.SpaceConfig(nil), cfg.Topology.Spaces...)
	next.Topology.Spaces[2].Capacity = 9
	restart, err := g.Reload(next)
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if fmt.Sprint(restart) != "[mqtt.output_prefix]" {
		t.Errorf("needs restart = %v, want [mqtt.output_prefix]", restart)
	}
	if got := g.Config().MQTT.OutputPrefix; got != "occupancy" {
		t.Errorf("output prefix after reload = %q, want the old one until a restart", got)
	}
	waitFor(t, 5*time.Second, "the new capacity published by the faster tick", func() string {
		v, _ := last.Load().(string)
		if !strings.Contains(v, `"capacity":9`) {
			return fmt.Sprintf("occupancy/r1 = %s", v)
		}
		return ""
	})
}

// An event for a DPU no version knows is parked (not rejected), and counts once a
// reload adds the DPU: its first mapping covers the earlier time.
func TestGatewayParkedThenMapped(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	st, eng := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, eng, nil)
	defer g.Close(context.Background())
	pub := env.client("pub")
	ts := time.Now().UnixMilli()
	pub.Publish("dpu/d9/events", 1, false, fmt.Sprintf(`{"id":"1","ts":%d,"direction":1}`, ts)).Wait()
	waitFor(t, 5*time.Second, "parked", func() string {
		if n := st.ParkedCount(); n != 1 {
			return fmt.Sprintf("parked = %d", n)
		}
		return ""
	})
	if got := occupancyOf(g, "r1"); got != 0 {
		t.Fatalf("r1 = %d before d9 is configured, want 0", got)
	}
	next := cfg
	next.Topology.Doorways = append(append([]occupancy.DoorwayConfig(nil), cfg.Topology.Doorways...), occupancy.DoorwayConfig{ID: "new", Name: "New"})
	next.Topology.DPUs = append(append([]occupancy.DPUConfig(nil), cfg.Topology.DPUs...), occupancy.DPUConfig{ID: "d9", Doorway: "new", PlusSpace: "r1", MinusSpace: "f1"})
	if _, err := g.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := occupancyOf(g, "r1"); got != 1 {
		t.Errorf("r1 = %d after d9 is configured, want 1", got)
	}
	if v, err := g.At("r1", ts); err != nil || v != 1 {
		t.Errorf("r1 at the parked event's ts = %d, %v; want 1 (the first mapping covers earlier time)", v, err)
	}
}

// More spaces than QoS 1 publishes may be in flight: every space still reaches the
// broker at start (the publish slots are recycled as the broker acknowledges).
func TestGatewayManySpacesPublished(t *testing.T) {
	env := newTestEnv(t)
	cfg := env.config()
	const n = 3 * maxPublishInFlight / 2
	tc := occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "site", Name: "Site"}}}
	for i := 0; i < n; i++ {
		tc.Spaces = append(tc.Spaces, occupancy.SpaceConfig{ID: fmt.Sprintf("room-%d", i), Name: fmt.Sprintf("Room %d", i), Parent: "site"})
	}
	cfg.Topology = tc
	st, eng := env.open(cfg)
	defer st.Close()
	var got sync.Map
	var count atomic.Int64
	sub := env.client("sub-many")
	sub.Subscribe("occupancy/+/count", 1, func(_ paho.Client, m paho.Message) {
		if _, loaded := got.LoadOrStore(m.Topic(), true); !loaded {
			count.Add(1)
		}
	}).Wait()
	g := env.start(cfg, st, eng, nil)
	defer g.Close(context.Background())
	waitFor(t, 20*time.Second, "every space published", func() string {
		if c := count.Load(); c != n+1 {
			return fmt.Sprintf("%d of %d spaces", c, n+1)
		}
		return ""
	})
}
