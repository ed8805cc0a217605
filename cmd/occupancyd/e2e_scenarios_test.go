package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func rfc3339ms(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// (1) An out-of-order, duplicated random stream (singles and batches, every payload
// format) gives the reference model's counts on the retained topics and over HTTP.
func TestE2EOutOfOrderDuplicatedStream(t *testing.T) {
	run := func(t *testing.T, brokerURL, settle string, spanMS int64, seed int64) {
		dir := t.TempDir()
		path := filepath.Join(dir, "occupancyd.yaml")
		writeConfig(t, path, e2eConfig{broker: brokerURL, dir: filepath.Join(dir, "data"), settleAfter: settle})
		d := startMain(t, path)
		ret := watchRetained(t, d.brokerURL)

		rng := rand.New(rand.NewSource(seed))
		tp := e2eTopology()
		n := 400
		if !testing.Short() {
			n = 1500
		}
		step := max(spanMS/int64(n), 1)
		now := time.Now().UnixMilli()
		evs := tp.simulate(rng, n, now-int64(n)*step-500, step)
		msgs := messages(rng, evs, 0.25)
		want := tp.counts(evs)
		uniq := map[string]bool{}
		for _, e := range evs {
			uniq[e.identity()] = true
		}
		t.Logf("%d events (%d unique) in %d messages", len(evs), len(uniq), len(msgs))

		pub := mqttClient(t, d.brokerURL, "pub-stream")
		publishAll(t, pub, msgs)

		eventually(t, 20*time.Second, "GET /v1/spaces vs the model", func() string {
			return diffCounts(httpSpaces(t, d.httpAddr), want)
		})
		eventually(t, 10*time.Second, "retained occupancy topics vs the model", func() string {
			return ret.diff(want)
		})
		// Exactly once: the DPUs' accepted events add up to the unique events.
		eventually(t, 5*time.Second, "accepted events", func() string {
			var stats []struct {
				DPU      string `json:"dpu"`
				Accepted int64  `json:"accepted"`
			}
			httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &stats)
			var sum int64
			for _, s := range stats {
				sum += s.Accepted
			}
			if sum != int64(len(uniq)) {
				return fmt.Sprintf("sum of accepted = %d, want %d unique events", sum, len(uniq))
			}
			return ""
		})
		eventually(t, 5*time.Second, "status and discovery", func() string {
			if b, ok := ret.get("occupancyd/e2e/status"); !ok || string(b) != "online" {
				return fmt.Sprintf("status = %q", b)
			}
			for _, s := range tp.spaces {
				b, ok := ret.get("homeassistant/sensor/e2e_" + s.id + "/occupancy/config")
				var cfg struct {
					UniqueID   string `json:"unique_id"`
					StateTopic string `json:"state_topic"`
					Device     struct {
						ConfigurationURL string `json:"configuration_url"`
					} `json:"device"`
				}
				if !ok || json.Unmarshal(b, &cfg) != nil || cfg.UniqueID != "e2e_"+s.id || cfg.StateTopic != "occupancy/"+s.id ||
					cfg.Device.ConfigurationURL != "http://"+d.httpAddr+"/" {
					return fmt.Sprintf("discovery config of %s = %s", s.id, b)
				}
			}
			return ""
		})
		// Capacity and utilization ride along on the JSON topic.
		var hq struct {
			Capacity    int64   `json:"capacity"`
			Utilization float64 `json:"utilization"`
			Occupancy   int64   `json:"occupancy"`
		}
		httpGetJSON(t, "http://"+d.httpAddr+"/v1/spaces/hq", &hq)
		if hq.Capacity != 500 || hq.Occupancy != want["hq"] {
			t.Errorf("GET /v1/spaces/hq = %+v, want capacity 500, occupancy %d", hq, want["hq"])
		}
	}
	brokers(t, func(t *testing.T, brokerURL string) {
		t.Run("pending", func(t *testing.T) { run(t, brokerURL, "30s", 8000, 1) })
	})
	// Events older than the settled horizon: late, applied with a correction.
	t.Run("embedded/late", func(t *testing.T) { run(t, "", "1s", 20000, 2) })
}

// (2) The hostile payload table leaves the gateway running, the good events counted
// and each rejection published with its reason on the rejected topic.
func TestE2EHostilePayloads(t *testing.T) {
	brokers(t, func(t *testing.T, brokerURL string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "occupancyd.yaml")
		writeConfig(t, path, e2eConfig{broker: brokerURL, dir: filepath.Join(dir, "data"),
			maxParked: 1, lateEvents: "drop", settleAfter: "30s"})
		d := startMain(t, path)

		type rejected struct {
			Topic   string `json:"topic"`
			Reason  string `json:"reason"`
			Payload string `json:"payload"`
			Index   *int   `json:"index"`
		}
		var mu sync.Mutex
		var rejs []rejected
		watcher := mqttClient(t, d.brokerURL, "watch-rejected")
		tok := watcher.Subscribe("occupancyd/e2e/rejected", 0, func(_ paho.Client, m paho.Message) {
			var r rejected
			if err := json.Unmarshal(m.Payload(), &r); err != nil {
				t.Errorf("rejected payload is not JSON: %v: %q", err, m.Payload())
				return
			}
			mu.Lock()
			rejs = append(rejs, r)
			mu.Unlock()
		})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		pub := mqttClient(t, d.brokerURL, "pub-hostile")

		now := time.Now().UnixMilli()
		ev := func(id string, ts int64, dir any) string {
			return fmt.Sprintf(`{"id":%q,"ts":%q,"direction":%v}`, id, rfc3339ms(ts), dir)
		}
		tp := e2eTopology()
		var good []e2eEvent
		cases := []struct {
			name    string
			topic   string
			payload []byte
			reasons []string // rejections expected, in order
			good    []e2eEvent
			parked  string // a DPU whose parked count must reach 1
			index   []int  // batch index of each rejection (nil: not checked)
		}{
			{name: "good single", topic: "dpu/d1/events", payload: []byte(ev("1", now, 1)),
				good: []e2eEvent{{"d1", "1", now, 1}}},
			{name: "bad JSON", topic: "dpu/d1/events", payload: []byte(`{"ts": "2026-11-27T10:`), reasons: []string{"bad_json"}},
			{name: "empty", topic: "dpu/d1/events", payload: nil, reasons: []string{"bad_json"}},
			{name: "ts wrong type", topic: "dpu/d1/events", payload: []byte(`{"ts": true, "direction": 1}`), reasons: []string{"bad_ts"}},
			{name: "ts missing", topic: "dpu/d1/events", payload: []byte(`{"direction": 1}`), reasons: []string{"bad_ts"}},
			{name: "direction wrong type", topic: "dpu/d1/events", payload: []byte(ev("2", now, `"up"`)), reasons: []string{"bad_direction"}},
			{name: "direction 2", topic: "dpu/d1/events", payload: []byte(ev("3", now, 2)), reasons: []string{"bad_direction"}},
			{name: "2 MiB", topic: "dpu/d1/events", payload: bytes.Repeat([]byte(" "), 2<<20), reasons: []string{"too_large"}},
			{name: "far future", topic: "dpu/d1/events", payload: []byte(ev("4", now+3600_000, 1)), reasons: []string{"future_ts"}},
			{name: "too old", topic: "dpu/d1/events", payload: []byte(`{"ts":"2000-01-01T00:00:00Z","direction":1}`), reasons: []string{"too_old"}},
			{name: "late under drop", topic: "dpu/d1/events", payload: []byte(ev("5", now-600_000, 1)), reasons: []string{"late"}},
			{name: "bad DPU id in topic", topic: "dpu/bad.id/events", payload: []byte(ev("6", now, 1)), reasons: []string{"bad_topic"}},
			{name: "batch with one bad element", topic: "dpu/d2/events",
				payload: []byte("[" + ev("7", now+1, 1) + `,{"id":"8","ts":"x","direction":1},` + ev("9", now+2, 1) + "]"),
				reasons: []string{"bad_ts"}, index: []int{1},
				good: []e2eEvent{{"d2", "7", now + 1, 1}, {"d2", "9", now + 2, 1}}},
			{name: "unknown DPU is parked", topic: "dpu/ghost1/events", payload: []byte(ev("1", now, 1)), parked: "ghost1"},
			{name: "unknown DPU past max_parked", topic: "dpu/ghost2/events", payload: []byte(ev("1", now, 1)), reasons: []string{"unknown_dpu"}},
			{name: "good after all that", topic: "dpu/d3/events", payload: []byte(`[` + ev("10", now+3, "\"1\"") + `]`),
				good: []e2eEvent{{"d3", "10", now + 3, 1}}},
		}
		wantRejections := 0
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				mu.Lock()
				before := len(rejs)
				mu.Unlock()
				tok := pub.Publish(c.topic, 1, false, c.payload)
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
				wantRejections += len(c.reasons)
				good = append(good, c.good...)
				eventually(t, 10*time.Second, "rejections", func() string {
					mu.Lock()
					defer mu.Unlock()
					if len(rejs)-before < len(c.reasons) {
						return fmt.Sprintf("%d rejections published, want %d (%v)", len(rejs)-before, len(c.reasons), c.reasons)
					}
					for i, want := range c.reasons {
						r := rejs[before+i]
						if r.Reason != want || r.Topic != c.topic {
							return fmt.Sprintf("rejection %d = %s on %q, want %s on %q", i, r.Reason, r.Topic, want, c.topic)
						}
						if len(r.Payload) > 1024 {
							return fmt.Sprintf("rejected payload is %d bytes, want <= 1 KiB", len(r.Payload))
						}
						if c.index != nil && (r.Index == nil || *r.Index != c.index[i]) {
							return fmt.Sprintf("rejection %d index = %v, want %d", i, r.Index, c.index[i])
						}
						if want := min(len(c.payload), 1024); len(r.Payload) != want {
							return fmt.Sprintf("rejected payload is %d bytes, want %d", len(r.Payload), want)
						}
					}
					return ""
				})
				if c.parked != "" {
					eventually(t, 10*time.Second, "parked", func() string {
						var stats []struct {
							DPU    string `json:"dpu"`
							Parked int64  `json:"parked"`
						}
						httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &stats)
						for _, s := range stats {
							if s.DPU == c.parked && s.Parked == 1 {
								return ""
							}
						}
						return fmt.Sprintf("%s not parked: %+v", c.parked, stats)
					})
				}
				// The good events of this message are counted.
				want := tp.counts(good)
				eventually(t, 10*time.Second, "good events counted", func() string {
					return diffCounts(httpSpaces(t, d.httpAddr), want)
				})
			})
		}
		// Nothing else was rejected (the parked event in particular), and the gateway is
		// still healthy and ready.
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		if len(rejs) != wantRejections {
			t.Errorf("%d rejections published, want %d: %+v", len(rejs), wantRejections, rejs)
		}
		mu.Unlock()
		for _, route := range []string{"/healthz", "/readyz"} {
			if code := httpGetJSON(t, "http://"+d.httpAddr+route, nil); code != 200 {
				t.Errorf("GET %s = %d, want 200", route, code)
			}
		}
		var stats []struct {
			DPU      string `json:"dpu"`
			Parked   int64  `json:"parked"`
			Rejected int64  `json:"rejected"`
		}
		httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &stats)
		parked := map[string]int64{}
		for _, s := range stats {
			parked[s.DPU] = s.Parked
		}
		if parked["ghost1"] != 1 {
			t.Errorf("ghost1 parked = %d, want 1 (stats %+v)", parked["ghost1"], stats)
		}
	})
}

// ---- the daemon as a child process ----

const childEnv = "OCCUPANCYD_E2E_CHILD_CONFIG"

// TestE2EChildProcess is not a test: the end-to-end tests re-exec the test binary
// with OCCUPANCYD_E2E_CHILD_CONFIG set to run `occupancyd run --config FILE` in a child
// they can kill -9 or signal.
func TestE2EChildProcess(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("helper process for the kill -9 and signal tests")
	}
	if err := runCommand([]string{"--config", path}); err != nil {
		fmt.Fprintln(os.Stderr, "occupancyd run:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// daemonChildren is one occupancyd configuration, in a fresh directory with its own
// HTTP port, that a kill or stop test runs as child processes one after another; their
// shared log is dumped if the test fails.
type daemonChildren struct {
	path, httpAddr string
	logs           *syncBuf
}

// newDaemonChildren writes c with its storage and http.listen filled in.
func newDaemonChildren(t *testing.T, c e2eConfig) *daemonChildren {
	t.Helper()
	dir := t.TempDir()
	d := &daemonChildren{path: filepath.Join(dir, "occupancyd.yaml"),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), logs: new(syncBuf)}
	c.dir, c.httpListen = filepath.Join(dir, "data"), d.httpAddr
	writeConfig(t, d.path, c)
	dumpOnFailure(t, "occupancyd children", d.logs)
	return d
}

// start starts a child and waits until it is ready.
func (d *daemonChildren) start(t *testing.T) *child {
	t.Helper()
	c := startChild(t, d.path, d.logs)
	waitReady(t, d.httpAddr, 30*time.Second)
	return c
}

func startChild(t *testing.T, path string, logs *syncBuf) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestE2EChildProcess$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	return startCmd(t, cmd, logs)
}

// startCmd starts cmd with its output in logs; the test's cleanup kills it if it
// still runs.
func startCmd(t *testing.T, cmd *exec.Cmd, logs *syncBuf) *child {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// term sends SIGTERM and waits for the exit (a clean stop within `within`); it
// fails on a non-zero exit.
func (c *child) term(t *testing.T, within time.Duration) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(within):
		t.Fatalf("no exit within %s of SIGTERM", within)
	}
	if c.err != nil {
		t.Errorf("exit after SIGTERM: %v", c.err)
	}
}

func (c *child) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
}

// (3) kill -9 of the daemon under QoS 1 load: after a restart every event the
// publisher got a PUBACK for is counted exactly once.
func TestE2EKill9(t *testing.T) {
	addr := startMosquitto(t)
	d := newDaemonChildren(t, e2eConfig{broker: "tcp://" + addr, settleAfter: "1m"})
	httpAddr := d.httpAddr
	c1 := d.start(t)

	pub := mqttClient(t, "tcp://"+addr, "pub-kill9")
	tp := e2eTopology()
	// Only entries that never decrement anything, so a lost event shows as a lower
	// count and a doubled one as a higher count, space by space.
	dpus := []string{"d1", "d2", "d3", "d5"}
	total := 1500
	if !testing.Short() {
		total = 6000
	}
	var mu sync.Mutex
	var acked []e2eEvent
	seq := map[string]int{}
	rng := rand.New(rand.NewSource(3))
	publishChunk := func(n int) {
		type inflight struct {
			ev  e2eEvent
			tok paho.Token
		}
		var fl []inflight
		for i := 0; i < n; i++ {
			dpu := dpus[rng.Intn(len(dpus))]
			seq[dpu]++
			e := e2eEvent{DPU: dpu, ID: fmt.Sprint(seq[dpu]), TS: time.Now().UnixMilli(), Dir: 1}
			b, _ := json.Marshal(e.wire(rng.Intn(60)))
			fl = append(fl, inflight{e, pub.Publish("dpu/"+dpu+"/events", 1, false, b)})
			if len(fl) == 100 || i == n-1 {
				for _, f := range fl {
					if f.tok.WaitTimeout(30*time.Second) && f.tok.Error() == nil {
						mu.Lock()
						acked = append(acked, f.ev)
						mu.Unlock()
					}
				}
				fl = fl[:0]
			}
		}
	}
	// Load while the daemon runs; kill -9 in the middle of it.
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		publishChunk(total / 2)
	}()
	time.Sleep(300 * time.Millisecond)
	c1.kill9(t)
	<-loadDone
	mu.Lock()
	t.Logf("killed the daemon with %d events acknowledged by the broker", len(acked))
	mu.Unlock()
	// More load while it is down (the broker queues it for the persistent session),
	// then restart and keep publishing.
	publishChunk(total / 4)
	d.start(t)
	publishChunk(total - total/2 - total/4)

	mu.Lock()
	want := tp.counts(acked)
	n := len(acked)
	mu.Unlock()
	if n != total {
		t.Fatalf("the broker acknowledged %d of %d events", n, total)
	}
	eventually(t, 60*time.Second, "counts after kill -9 and restart vs every PUBACKed event", func() string {
		return diffCounts(httpSpaces(t, httpAddr), want)
	})
	time.Sleep(500 * time.Millisecond) // and nothing arrives twice later
	if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
		t.Errorf("counts changed after converging: %s", d)
	}
}

// (4) A reload moving a DPU to another space leaves history unchanged, while new
// events go to the new space; a removed space's retained topics are cleared; a bad
// file is refused and the running config stays. In-process (Main.Reload) on the
// embedded broker, and as a child with SIGHUP then SIGTERM on Mosquitto.
func TestE2EReloadMovesDPU(t *testing.T) {
	brokers(t, func(t *testing.T, brokerURL string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "occupancyd.yaml")
		cfg := e2eConfig{broker: brokerURL, dir: filepath.Join(dir, "data"), settleAfter: "2s"}
		var (
			httpAddr, mqttURL string
			reload            func()
			ch                *child
			m                 *Main
			logs              syncBuf
		)
		if brokerURL == "" {
			writeConfig(t, path, cfg)
			d := startMain(t, path)
			httpAddr, mqttURL, m = d.httpAddr, d.brokerURL, d.main
			reload = func() {
				if err := d.main.Reload(); err != nil {
					t.Fatalf("Reload: %v", err)
				}
			}
		} else {
			httpAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
			cfg.httpListen = httpAddr
			writeConfig(t, path, cfg)
			dumpOnFailure(t, "occupancyd child", &logs)
			ch = startChild(t, path, &logs)
			waitReady(t, httpAddr, 30*time.Second)
			mqttURL = brokerURL
			reload = func() {
				if err := ch.cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			}
		}
		ret := watchRetained(t, mqttURL)
		pub := mqttClient(t, mqttURL, "pub-reload")
		send := func(id string, ts int64) {
			b := fmt.Sprintf(`{"id":%q,"ts":%q,"direction":1}`, id, rfc3339ms(ts))
			if tok := pub.Publish("dpu/d2/events", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
		at := func(space string, ms int64) int64 {
			var doc struct {
				Occupancy int64 `json:"occupancy"`
			}
			u := "http://" + httpAddr + "/v1/spaces/" + space + "/occupancy?at=" + urlQuery(rfc3339ms(ms))
			if code := httpGetJSON(t, u, &doc); code != 200 {
				t.Fatalf("GET %s = %d", u, code)
			}
			return doc.Occupancy
		}
		// Before the move: d2 leads from f1 into r1a.
		t0 := time.Now().UnixMilli()
		for i := 1; i <= 5; i++ {
			send(fmt.Sprint(i), t0+int64(i))
		}
		eventually(t, 10*time.Second, "before the move", func() string {
			return diffCounts(httpSpaces(t, httpAddr), map[string]int64{"r1a": 5, "r1b": 0, "f1": 0})
		})
		tBefore := t0 + 10
		beforeA, beforeB := at("r1a", tBefore), at("r1b", tBefore)
		if beforeA != 5 || beforeB != 0 {
			t.Fatalf("before the move at %s: r1a=%d r1b=%d, want 5 and 0", rfc3339ms(tBefore), beforeA, beforeB)
		}
		time.Sleep(50 * time.Millisecond)

		// The move: d2 now leads into r1b; r2a and d5 are removed.
		moved := e2eTopology()
		for i := range moved.dpus {
			if moved.dpus[i].id == "d2" {
				moved.dpus[i].plus = "r1b"
			}
		}
		moved.spaces = moved.spaces[:5]
		moved.dpus = append(moved.dpus[:4], moved.dpus[5:]...)
		cfg.topology = moved.yaml()
		writeConfig(t, path, cfg)
		reload()
		eventually(t, 10*time.Second, "removed space cleared", func() string {
			ret.mu.Lock()
			defer ret.mu.Unlock()
			if _, ok := ret.json["r2a"]; ok {
				return "occupancy/r2a still retained"
			}
			if c, ok := ret.counts["r2a"]; !ok || c != "" {
				return fmt.Sprintf("occupancy/r2a/count = %q (seen %v), want an empty retained payload", c, ok)
			}
			if b := ret.other["homeassistant/sensor/e2e_r2a/occupancy/config"]; len(b) != 0 {
				return "HA config of r2a still retained"
			}
			return ""
		})
		t1 := time.Now().UnixMilli() + 5
		time.Sleep(10 * time.Millisecond)
		for i := 6; i <= 8; i++ {
			send(fmt.Sprint(i), t1+int64(i))
		}
		eventually(t, 10*time.Second, "after the move", func() string {
			return diffCounts(httpSpaces(t, httpAddr), map[string]int64{"r1a": 5, "r1b": 3, "f1": 0})
		})
		if a, b := at("r1a", tBefore), at("r1b", tBefore); a != beforeA || b != beforeB {
			t.Errorf("history at %s changed by the move: r1a=%d r1b=%d, want %d and %d", rfc3339ms(tBefore), a, b, beforeA, beforeB)
		}

		// A bad file is refused; the running config stays.
		if err := os.WriteFile(path, []byte("gateway: {id: [oops\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if ch != nil {
			reload() // SIGHUP: logged and refused
		} else if err := m.Reload(); err == nil {
			t.Error("Reload of a bad file succeeded, want an error")
		}
		send("9", time.Now().UnixMilli())
		eventually(t, 10*time.Second, "after a refused reload", func() string {
			return diffCounts(httpSpaces(t, httpAddr), map[string]int64{"r1a": 5, "r1b": 4})
		})

		if ch != nil {
			// SIGTERM: a clean stop within 10 s that publishes `offline`.
			start := time.Now()
			ch.term(t, 12*time.Second)
			t.Logf("stopped %v after SIGTERM", time.Since(start))
			eventually(t, 5*time.Second, "status offline", func() string {
				if b, _ := ret.get("occupancyd/e2e/status"); string(b) != "offline" {
					return fmt.Sprintf("status = %q", b)
				}
				return ""
			})
		}
	})
}

func urlQuery(s string) string { return url.QueryEscape(s) }
