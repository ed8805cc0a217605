package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

// ---- harness: brokers, configs, the daemon in-process and as a child ----

// syncBuf is a goroutine-safe log sink; its tail is printed when a test fails.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func dumpOnFailure(t testing.TB, name string, b *syncBuf) {
	t.Cleanup(func() {
		if t.Failed() {
			out := b.String()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("---- %s ----\n%s", name, out)
		}
	})
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mosquitto is a Mosquitto the test started, configured as DESIGN 4 says for a
// gateway (max_inflight_messages 1000, max_queued_messages 1000000, persistence).
type mosquitto struct {
	t    testing.TB
	bin  string
	conf string
	addr string
	logs *syncBuf
	cmd  *exec.Cmd
	done chan struct{}
}

// startMosquitto starts a Mosquitto on a free port and returns its address. Without
// mosquitto on PATH the test is skipped, unless CI=true.
func startMosquitto(t testing.TB) string { return newMosquitto(t).addr }

func newMosquitto(t testing.TB) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto not found on PATH (required with CI=true): %v", err)
		}
		t.Skip("mosquitto not on PATH")
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 1000000
persistence true
persistence_location %s/
log_dest stderr
log_type error
log_type warning
`, port, dir)
	if u, err := user.Current(); err == nil {
		conf += "user " + u.Username + "\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	mq := &mosquitto{t: t, bin: bin, conf: path, addr: fmt.Sprintf("127.0.0.1:%d", port), logs: &syncBuf{}}
	dumpOnFailure(t, "mosquitto", mq.logs)
	mq.start()
	t.Cleanup(func() {
		if mq.cmd != nil {
			_ = mq.cmd.Process.Kill()
			<-mq.done
		}
	})
	return mq
}

func (mq *mosquitto) start() {
	t := mq.t
	t.Helper()
	cmd := exec.Command(mq.bin, "-c", mq.conf)
	cmd.Stdout, cmd.Stderr = mq.logs, mq.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	mq.cmd, mq.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", mq.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("mosquitto exited: %s", mq.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %s", mq.addr, mq.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops Mosquitto cleanly (SIGTERM: it saves its persistent sessions).
func (mq *mosquitto) stop() {
	_ = mq.cmd.Process.Signal(syscall.SIGTERM)
	<-mq.done
	mq.cmd = nil
}

// e2eConfig are the knobs of a test config.
type e2eConfig struct {
	broker      string // "" = embedded on 127.0.0.1:0
	dir         string // storage
	httpListen  string // default 127.0.0.1:0
	settleAfter string // default 30s
	maxParked   int    // default 1000
	lateEvents  string // default apply
	topology    string // default e2eTopology().yaml()
	clientID    string
	tick        string // default 50ms
	embedded    string // embedded broker listen address, default 127.0.0.1:0
	maxPayload  int    // mqtt.max_payload, default 256 KiB
	logLevel    string // log.level, default info
}

func (c e2eConfig) yaml() string {
	if c.httpListen == "" {
		c.httpListen = "127.0.0.1:0"
	}
	if c.settleAfter == "" {
		c.settleAfter = "30s"
	}
	if c.maxParked == 0 {
		c.maxParked = 1000
	}
	if c.tick == "" {
		c.tick = "50ms"
	}
	if c.lateEvents == "" {
		c.lateEvents = "apply"
	}
	if c.topology == "" {
		c.topology = e2eTopology().yaml()
	}
	if c.embedded == "" {
		c.embedded = "127.0.0.1:0"
	}
	if c.logLevel == "" {
		c.logLevel = "info"
	}
	s := fmt.Sprintf(`gateway: {id: e2e}
mqtt:
  broker: %q
  embedded: {listen: %q}
  events_topic: dpu/+/events
`, c.broker, c.embedded)
	if c.clientID != "" {
		s += fmt.Sprintf("  client_id: %q\n", c.clientID)
	}
	if c.maxPayload != 0 {
		s += fmt.Sprintf("  max_payload: %d\n", c.maxPayload)
	}
	s += fmt.Sprintf(`storage: {dir: %q, max_parked: %d}
engine: {settle_after: %s, tick: %s, late_events: %s, max_future_skew: 1m}
http: {listen: %q, token: e2e-token}
log: {level: %s, format: json}
`, c.dir, c.maxParked, c.settleAfter, c.tick, c.lateEvents, c.httpListen, c.logLevel)
	return s + c.topology
}

func writeConfig(t testing.TB, path string, c e2eConfig) {
	t.Helper()
	if err := os.WriteFile(path, []byte(c.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// daemon is a running occupancyd: in-process (Main) or a child process.
type daemon struct {
	main      *Main
	httpAddr  string
	brokerURL string // what publishers connect to
}

// startMain runs Main in-process with the config file at path and waits for /readyz.
func startMain(t testing.TB, path string) *daemon {
	t.Helper()
	var logs syncBuf
	dumpOnFailure(t, "occupancyd", &logs)
	m := NewMain()
	m.ConfigPath = path
	m.Logger = zerolog.New(&logs).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	start := time.Now()
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Main.Close: %v", err)
		}
	})
	d := &daemon{main: m, httpAddr: m.HTTPAddr()}
	if m.Config.MQTT.Broker == "" {
		d.brokerURL = "tcp://" + m.BrokerAddr()
	} else {
		d.brokerURL = m.Config.MQTT.Broker
	}
	waitReady(t, d.httpAddr, 10*time.Second)
	t.Logf("start to ready: %v", time.Since(start))
	return d
}

func waitReady(t testing.TB, httpAddr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %s after %v", resp.StatusCode, body, within)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("/readyz: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mqttClient connects a test client (clean session) to url.
func mqttClient(t testing.TB, url, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).SetWriteTimeout(5 * time.Second).
		SetOrderMatters(false)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("test client %s connect to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func publishAll(t testing.TB, c paho.Client, msgs []e2eMessage) {
	t.Helper()
	toks := make([]paho.Token, 0, len(msgs))
	for _, m := range msgs {
		toks = append(toks, c.Publish(m.topic, 1, false, m.payload))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d (%s): %v", i, msgs[i].topic, tok.Error())
		}
	}
}

// retained collects the latest value of the occupancy topics.
type retained struct {
	mu     sync.Mutex
	json   map[string]map[string]any // space -> occupancy object
	counts map[string]string         // space -> /count payload
	other  map[string][]byte         // any other topic
}

func watchRetained(t testing.TB, url string) *retained {
	t.Helper()
	r := &retained{json: map[string]map[string]any{}, counts: map[string]string{}, other: map[string][]byte{}}
	c := mqttClient(t, url, fmt.Sprintf("watch-%d", time.Now().UnixNano()))
	tok := c.SubscribeMultiple(map[string]byte{"occupancy/#": 1, "homeassistant/#": 1, "occupancyd/#": 1},
		func(_ paho.Client, m paho.Message) {
			r.mu.Lock()
			defer r.mu.Unlock()
			topic := m.Topic()
			rest, ok := strings.CutPrefix(topic, "occupancy/")
			switch {
			case ok && strings.HasSuffix(rest, "/count"):
				r.counts[strings.TrimSuffix(rest, "/count")] = string(m.Payload())
			case ok && !strings.Contains(rest, "/"):
				if len(m.Payload()) == 0 {
					delete(r.json, rest)
					return
				}
				var o map[string]any
				if err := json.Unmarshal(m.Payload(), &o); err == nil {
					r.json[rest] = o
				}
			default:
				r.other[topic] = append([]byte(nil), m.Payload()...)
			}
		})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return r
}

// diff compares the retained topics with want; "" when equal.
func (r *retained) diff(want map[string]int64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d []string
	for space, n := range want {
		o := r.json[space]
		got, _ := o["occupancy"].(float64)
		if o == nil || int64(got) != n {
			d = append(d, fmt.Sprintf("occupancy/%s: got %v, want %d", space, o["occupancy"], n))
		}
		if c := r.counts[space]; c != fmt.Sprint(n) {
			d = append(d, fmt.Sprintf("occupancy/%s/count: got %q, want %d", space, c, n))
		}
	}
	return strings.Join(d, "; ")
}

func (r *retained) get(topic string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.other[topic]
	return b, ok
}

func httpGetJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// httpSpaces returns GET /v1/spaces as space -> occupancy.
func httpSpaces(t testing.TB, httpAddr string) map[string]int64 {
	t.Helper()
	var docs []struct {
		Space     string `json:"space"`
		Occupancy int64  `json:"occupancy"`
	}
	if code := httpGetJSON(t, "http://"+httpAddr+"/v1/spaces", &docs); code != 200 {
		t.Fatalf("GET /v1/spaces = %d", code)
	}
	got := map[string]int64{}
	for _, d := range docs {
		got[d.Space] = d.Occupancy
	}
	return got
}

func diffCounts(got, want map[string]int64) string {
	var d []string
	for s, n := range want {
		if g, ok := got[s]; !ok || g != n {
			d = append(d, fmt.Sprintf("%s: got %d (present %v), want %d", s, g, ok, n))
		}
	}
	return strings.Join(d, "; ")
}

// eventually polls cond until it returns "" or the time is up.
func eventually(t testing.TB, within time.Duration, what string, cond func() string) {
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
		time.Sleep(50 * time.Millisecond)
	}
}

// brokers runs fn against the embedded broker and against a Mosquitto.
func brokers(t *testing.T, fn func(t *testing.T, brokerURL string)) {
	t.Run("embedded", func(t *testing.T) { fn(t, "") })
	t.Run("mosquitto", func(t *testing.T) {
		addr := startMosquitto(t)
		fn(t, "tcp://"+addr)
	})
}
