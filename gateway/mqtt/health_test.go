package mqtt

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/occupancy"
)

// retainedLog keeps the latest payload and the number of messages of each topic a
// subscriber saw.
type retainedLog struct {
	mu     sync.Mutex
	latest map[string]string
	count  map[string]int
}

func (e *testEnv) watch(filters ...string) *retainedLog {
	l := &retainedLog{latest: map[string]string{}, count: map[string]int{}}
	c := e.client(fmt.Sprintf("watch-%d", time.Now().UnixNano()))
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	tok := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		l.mu.Lock()
		l.latest[m.Topic()] = string(m.Payload())
		l.count[m.Topic()]++
		l.mu.Unlock()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		e.t.Fatalf("subscribe: %v", tok.Error())
	}
	return l
}

func (l *retainedLog) get(topic string) (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latest[topic], l.count[topic]
}

// TestGatewayTopicsAndDiscovery: the retained info and DPU health topics and the
// Home Assistant discovery of every entity kind, on a running client over the
// embedded broker, with the tracker's clock driven by hand: DPUs go quiet and
// report again, Home Assistant comes online, a version removes a space.
func TestGatewayTopicsAndDiscovery(t *testing.T) {
	old := healthEvery
	healthEvery = 20 * time.Millisecond
	t.Cleanup(func() { healthEvery = old })

	env := newTestEnv(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	env.now = func() time.Time { return time.UnixMilli(clock.Load()) }
	started := time.UnixMilli(1_800_000_000_000)
	env.info = Info{Version: "9.9.9", Commit: "abc123", Started: started, SettleAfter: time.Minute}
	cfg := env.config()
	cfg.Health.DPUQuietAfter = 10 * time.Minute
	log := env.watch("occupancyd/gt/#", "homeassistant/#")
	ticks := make(chan time.Time)
	g := env.start(cfg, env.open(cfg), ticks)
	t.Cleanup(func() { _ = g.Close(t.Context()) })
	tick := func() { ticks <- time.Time{} }

	expect := func(what, topic, want string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() string {
			if got, _ := log.get(topic); got != want {
				return fmt.Sprintf("%s = %q, want %q", topic, got, want)
			}
			return ""
		})
	}
	expect("info", "occupancyd/gt/info", fmt.Sprintf(
		`{"version":"9.9.9","commit":"abc123","started":%q,"spaces":3,"doorways":2,"dpus":2,"settle_after":"1m0s"}`,
		payload.FormatMS(started.UnixMilli())))
	expect("health at start", "occupancyd/gt/dpus", `{"dpus":2,"quiet":0,"quiet_ids":[]}`)

	// Every entity kind's config, as the golden files have them (their content is
	// TestDiscoveryGolden's).
	d := &Discovery{Prefix: "homeassistant", GatewayID: "gt", OutputPrefix: "occupancy",
		StatusTopic: "occupancyd/gt/status", DPUsTopic: "occupancyd/gt/dpus", Version: "9.9.9"}
	spaces := map[string]occupancy.Occupancy{}
	for _, o := range g.tr.Spaces() {
		spaces[o.Space] = o
	}
	for _, m := range append(d.Gateway(), d.Occupancy(spaces["hq"]), d.Occupancy(spaces["r1"]), d.Utilization(spaces["r1"])) {
		expect("discovery "+m.Topic, m.Topic, string(m.Payload))
	}
	waitFor(t, 30*time.Second, "cleared utilization configs of spaces without a capacity", func() string {
		for _, s := range []string{"hq", "f1"} {
			topic := "homeassistant/sensor/gt_" + s + "/utilization/config"
			if got, n := log.get(topic); n == 0 || got != "" {
				return fmt.Sprintf("%s: %d messages, the last %q; want an empty one", topic, n, got)
			}
		}
		return ""
	})

	// Quiet after 10 minutes without a report (counted from the version's start).
	clock.Add((10 * time.Minute).Milliseconds())
	tick()
	expect("both quiet", "occupancyd/gt/dpus", `{"dpus":2,"quiet":2,"quiet_ids":["d1","d2"]}`)
	pub := env.client("pub")
	b, _ := json.Marshal(map[string]any{"id": "1", "ts": time.Now().UnixMilli(), "direction": 1})
	if tok := pub.Publish("dpu/d1/events", 1, false, b); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	expect("d1 reported", "occupancyd/gt/dpus", `{"dpus":2,"quiet":1,"quiet_ids":["d2"]}`)

	// Home Assistant comes online: every config again.
	_, before := log.get("homeassistant/binary_sensor/gt/connectivity/config")
	_, beforeSpace := log.get("homeassistant/sensor/gt_r1/utilization/config")
	if tok := pub.Publish("homeassistant/status", 1, false, "online"); !tok.WaitTimeout(30 * time.Second) {
		t.Fatal("publish homeassistant/status timed out")
	}
	waitFor(t, 30*time.Second, "discovery again after homeassistant/status online", func() string {
		_, n := log.get("homeassistant/binary_sensor/gt/connectivity/config")
		_, m := log.get("homeassistant/sensor/gt_r1/utilization/config")
		if n <= before || m <= beforeSpace {
			return fmt.Sprintf("connectivity config %d times, r1 utilization %d times (before: %d, %d)", n, m, before, beforeSpace)
		}
		return ""
	})

	// A version without r1 (and d2): its configs are cleared, info and health follow.
	topo := cfg.Topology
	topo.Spaces = topo.Spaces[:2]
	topo.DPUs = topo.DPUs[:1]
	if _, _, err := g.tr.AddVersion(topo); err != nil {
		t.Fatal(err)
	}
	tick()
	expect("r1 occupancy config cleared", "homeassistant/sensor/gt_r1/occupancy/config", "")
	expect("r1 utilization config cleared", "homeassistant/sensor/gt_r1/utilization/config", "")
	expect("info after the version", "occupancyd/gt/info", fmt.Sprintf(
		`{"version":"9.9.9","commit":"abc123","started":%q,"spaces":2,"doorways":2,"dpus":1,"settle_after":"1m0s"}`,
		payload.FormatMS(started.UnixMilli())))
	expect("health after the version", "occupancyd/gt/dpus", `{"dpus":1,"quiet":0,"quiet_ids":[]}`)
}
