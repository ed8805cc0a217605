package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

var (
	occupancydBin string
	buildErr      error
)

// TestMain builds the occupancyd binary once for the end-to-end tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dpusim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	occupancydBin, buildErr = buildOccupancyd(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needOccupancyd(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// needMosquitto returns the mosquitto binary; missing it is a failure under CI=true.
func needMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := findMosquitto()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

func startTestMosquitto(t *testing.T) string {
	t.Helper()
	bin := needMosquitto(t)
	p, url, err := startMosquitto(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.stop(5 * time.Second) })
	return url
}

func writeConfig(t *testing.T, o TopoOptions) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	var buf bytes.Buffer
	if err := WriteConfig(&buf, o); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// gateway is one occupancyd process under test.
type testGateway struct {
	p    *proc
	base string
	cfg  string
}

// startGateway starts occupancyd with a generated config; o gets free ports and a
// temporary storage dir unless set.
func startGateway(t *testing.T, o TopoOptions) *testGateway {
	t.Helper()
	needOccupancyd(t)
	var err error
	if o.HTTPListen, err = freeAddr(); err != nil {
		t.Fatal(err)
	}
	if o.Broker == "" {
		if o.EmbeddedListen, err = freeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	o.StorageDir = filepath.Join(t.TempDir(), "data")
	o.LogLevel = "warn"
	cfg := writeConfig(t, o)
	dir := t.TempDir()
	p, err := startProc("occupancyd "+o.GatewayID, filepath.Join(dir, "occupancyd.log"), occupancydBin, "run", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{p: p, base: "http://" + o.HTTPListen, cfg: cfg}
	t.Cleanup(func() {
		if err := p.stop(15 * time.Second); err != nil && !t.Failed() {
			t.Errorf("stop %s: %v\n%s", p.name, err, p.tail(30)) // a crash during the test
		}
		if t.Failed() {
			t.Logf("%s log tail:\n%s", p.name, p.tail(40))
		}
	})
	if err := waitReady(t.Context(), g.base, p, time.Minute); err != nil {
		t.Fatal(err)
	}
	return g
}

// runMain runs `dpusim args...` in-process; it returns the exit status and output.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// parseTruth reads the truth table `dpusim run` prints.
func parseTruth(t *testing.T, out string) []SpaceCount {
	t.Helper()
	var truth []SpaceCount
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		truth = append(truth, SpaceCount{Space: f[0], Occupancy: n})
	}
	return truth
}

// TestRunOverMosquitto checks `dpusim run` against a real broker without the
// gateway: every published message arrives, and replaying what arrived through the
// independent model gives the truth dpusim prints.
func TestRunOverMosquitto(t *testing.T) {
	url := startTestMosquitto(t)
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.Broker = 5, 20, url
	cfg := writeConfig(t, o)
	c, err := loadSimConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []sentEvent
	msgs, bad := 0, 0
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("test-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("dpu/+/events", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		defer mu.Unlock()
		msgs++
		if e, ok := decode(m.Topic(), m.Payload()); ok {
			got = append(got, e)
		} else {
			bad++
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	code, out, errs := runMain(t, "run", "--config", cfg, "--rate", "1500", "--duration", "3s",
		"--reorder", "0.2", "--max-delay", "500ms", "--duplicates", "0.05", "--late", "0.02",
		"--bad", "0.02", "--connections", "3", "--seed", "11", "--progress", "1s")
	if code != 0 {
		t.Fatalf("dpusim run: exit %d\n%s", code, errs)
	}
	if !strings.Contains(errs, "acks_outstanding=") {
		t.Errorf("no progress line on stderr:\n%s", errs)
	}
	truth := parseTruth(t, out)
	if len(truth) != len(c.Topology.Spaces) {
		t.Fatalf("truth lists %d spaces, want %d", len(truth), len(c.Topology.Spaces))
	}
	var published int
	if _, err := fmt.Sscanf(errs[strings.Index(errs, "published "):], "published %d messages", &published); err != nil {
		t.Fatalf("no summary line: %v\n%s", err, errs)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := msgs
		mu.Unlock()
		if n >= published || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if msgs != published {
		t.Fatalf("received %d messages, dpusim published %d", msgs, published)
	}
	if bad == 0 {
		t.Errorf("no malformed message arrived")
	}
	seen := map[sentEvent]bool{}
	var evs []sentEvent
	for _, e := range got {
		if !seen[e] {
			seen[e] = true
			evs = append(evs, e)
		}
	}
	if len(evs) == len(got) {
		t.Errorf("no duplicate arrived")
	}
	m := newModel(c.Topology)
	m.replay(evs)
	if m.clamps != 0 {
		t.Errorf("replay clamped %d times", m.clamps)
	}
	for _, s := range truth {
		if s.Occupancy != m.occ[s.Space] {
			t.Errorf("space %s: dpusim printed %d, replay of the received events gives %d", s.Space, s.Occupancy, m.occ[s.Space])
		}
	}
}

// TestEndToEnd is the scaled-down run of BENCHMARKS.md: 10,000 DPUs through the
// occupancyd binary on its embedded broker, with reordered, duplicated, late and
// malformed messages, and --verify passing.
func TestEndToEnd(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.GatewayID = 200, 50, "e2e"
	o.SettleAfter, o.Tick = 4*time.Second, 250*time.Millisecond
	if raceEnabled {
		o.Sites = 100 // 5,000 DPUs: the race detector slows dpusim's publishers
	}
	g := startGateway(t, o)
	rate, dur := "1500", "20s"
	if raceEnabled {
		rate = "600"
	}
	code, out, errs := runMain(t, "run", "--config", g.cfg, "--rate", rate, "--duration", dur,
		"--reorder", "0.05", "--max-delay", "2s", "--duplicates", "0.02", "--late", "0.01",
		"--bad", "0.005", "--connections", "4", "--seed", "5", "--verify", g.base, "--verify-timeout", "2m")
	if code != 0 {
		t.Fatalf("dpusim run --verify: exit %d\nstdout tail:\n%s\nstderr:\n%s", code, tail(out, 30), errs)
	}
	if !strings.Contains(errs, "spaces match the truth") {
		t.Errorf("no verify success line:\n%s", errs)
	}
	truth := parseTruth(t, out)
	var inside int64
	for _, s := range truth {
		if !strings.Contains(s.Space, "-") { // sites
			inside += s.Occupancy
		}
	}
	if inside == 0 {
		t.Fatalf("nobody inside at the end: verify proved nothing")
	}
	// The gateway counted each event once: duplicates and malformed messages did not count.
	acc, err := metric(g.base, "occupancyd_events_accepted_total")
	if err != nil {
		t.Fatal(err)
	}
	dups, err := metric(g.base, "occupancyd_events_duplicate_total")
	if err != nil {
		t.Fatal(err)
	}
	if acc <= 0 || dups <= 0 {
		t.Errorf("accepted %v, duplicates %v: want both > 0", acc, dups)
	}
	// A negative control: the same verifier against the same gateway with one space
	// off by one reports exactly that space.
	truth[len(truth)-1].Occupancy++
	old := verifyStable
	verifyStable = 2 * time.Second
	defer func() { verifyStable = old }()
	mism, err := Verify(t.Context(), []string{g.base}, truth, 30*time.Second, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mism) != 1 || !strings.HasPrefix(mism[0], truth[len(truth)-1].Space+":") {
		t.Errorf("verify with a wrong truth: got %v, want one mismatch for %s", mism, truth[len(truth)-1].Space)
	}
}

// TestEndToEndKinds is TestEndToEnd with DPUs of every report kind (DESIGN 2a):
// 10,000 DPUs, 60% of them events, 20% interval and 20% cumulative by their own kind
// (half of those with a vendor-like map of their own), and of the rest half again
// interval or cumulative by run --kinds on the kinds' topics (the cumulative entry
// with its map); reports every 2 s with re-sent, reordered and late ones and counter
// resets, 10% of everything pushed over HTTP; --verify passes.
func TestEndToEndKinds(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.GatewayID, o.HTTPToken = 200, 50, "kinds", "push-token"
	o.SettleAfter, o.Tick = 4*time.Second, 250*time.Millisecond
	o.Kinds = KindSpec{0.6, 0.2, 0.2}
	rate := "1500"
	if raceEnabled {
		o.Sites, rate = 100, "600"
	}
	g := startGateway(t, o)
	code, out, errs := runMain(t, "run", "--config", g.cfg, "--rate", rate, "--duration", "20s",
		"--kinds", "events=0.5,interval=0.25,cumulative=0.25", "--report-period", "2s", "--counter-resets", "0.05",
		"--http-push", "0.1", "--reorder", "0.05", "--max-delay", "2s", "--duplicates", "0.02", "--late", "0.01",
		"--bad", "0.005", "--connections", "4", "--seed", "7", "--verify", g.base, "--verify-timeout", "2m")
	if code != 0 {
		t.Fatalf("dpusim run --kinds --verify: exit %d\nstdout tail:\n%s\nstderr:\n%s", code, tail(out, 30), errs)
	}
	if !strings.Contains(errs, "spaces match the truth") {
		t.Errorf("no verify success line:\n%s", errs)
	}
	var inside int64
	for _, s := range parseTruth(t, out) {
		if !strings.Contains(s.Space, "-") {
			inside += s.Occupancy
		}
	}
	if inside == 0 {
		t.Fatalf("nobody inside at the end: verify proved nothing")
	}
	// Reports of both kinds, counter resets and HTTP pushes reached the gateway.
	for _, c := range []struct{ metric, why string }{
		{"occupancyd_counter_resets_total", "no counter reset counted"},
		{"occupancyd_events_duplicate_total", "no re-sent event or report"},
		{`occupancyd_events_rejected_total{reason="bad_report"}`, "no malformed report rejected"},
	} {
		v, err := metric(g.base, c.metric)
		if err != nil {
			t.Fatal(err)
		}
		if v <= 0 {
			t.Errorf("%s: %s = %v", c.why, c.metric, v)
		}
	}
	if !strings.Contains(errs, "pushed over HTTP") || !strings.Contains(errs, "counter resets") {
		t.Errorf("no HTTP push or report in the summary:\n%s", errs)
	}
	t.Logf("dpusim run:\n%s", errs)
}

// TestVerifyAfterTraffic: --verify against a gateway that already counts people (the
// README tour leaves some in the building) compares with the counts it found before
// the run plus the run's truth, and passes; the run's truth alone would not.
func TestVerifyAfterTraffic(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.GatewayID = 3, 6, "busy"
	o.SettleAfter, o.Tick = 4*time.Second, 100*time.Millisecond
	g := startGateway(t, o)
	c, err := loadSimConfig(g.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// People walk in from outside through every entrance, before dpusim runs.
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.brokerURL()).SetClientID("before"))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer cl.Disconnect(100)
	entrances := 0
	for _, d := range c.Topology.DPUs {
		if d.MinusSpace != "" || d.PlusSpace == "" {
			continue
		}
		entrances++
		for i := 1; i <= 3; i++ {
			payload := fmt.Sprintf(`{"id":"before-%d","ts":%d,"direction":1}`, i, time.Now().UnixMilli()-int64(i))
			if tok := cl.Publish("dpu/"+d.ID+"/events", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	if entrances == 0 {
		t.Fatal("the topology has no entrance from outside")
	}
	var before map[string]int64
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if before, err = fetchSpaces(t.Context(), []string{g.base}); err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, n := range before {
			sum += n
		}
		if sum >= int64(3*entrances) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the gateway counts %d people, want %d before the run", sum, 3*entrances)
		}
	}

	code, out, errs := runMain(t, "run", "--config", g.cfg, "--rate", "200", "--duration", "3s",
		"--reorder", "0.1", "--max-delay", "500ms", "--duplicates", "0.05", "--seed", "3",
		"--verify", g.base, "--verify-timeout", "1m")
	if code != 0 {
		t.Fatalf("dpusim run --verify after traffic: exit %d\nstdout tail:\n%s\nstderr:\n%s", code, tail(out, 20), errs)
	}
	if !strings.Contains(errs, "not empty before the run") || !strings.Contains(errs, "spaces match the truth") {
		t.Errorf("stderr lacks the starting counts or the success line:\n%s", errs)
	}
	// The control: the run's truth alone differs from the gateway where people were
	// before, so the starting counts are what made verify pass.
	old := verifyStable
	verifyStable = time.Second
	defer func() { verifyStable = old }()
	mism, err := Verify(t.Context(), []string{g.base}, parseTruth(t, out), 5*time.Second, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mism) == 0 {
		t.Errorf("the run's truth alone matches the gateway: the test proves nothing")
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestSharding runs two occupancyd instances that each own half of the sites (their
// own topic filters and topology) and a third that owns all of them, on one broker:
// the union of the shards equals the truth and the single instance.
func TestSharding(t *testing.T) {
	broker := ""
	if _, err := findMosquitto(); err == nil || os.Getenv("CI") == "true" {
		broker = startTestMosquitto(t)
	}
	base := DefaultTopoOptions()
	base.Sites, base.DPUsPerSite, base.Seed = 20, 20, 3
	base.SettleAfter, base.Tick = 5*time.Second, 250*time.Millisecond
	base.HomeAssistant = false

	full := base
	full.SiteTopics, full.GatewayID, full.Broker = true, "single", broker
	single := startGateway(t, full) // without Mosquitto its embedded broker serves all three
	if broker == "" {
		c, err := loadSimConfig(single.cfg)
		if err != nil {
			t.Fatal(err)
		}
		broker = c.brokerURL()
	}
	var shards []*testGateway
	for k := 1; k <= 2; k++ {
		o := base
		o.Shard, o.Shards, o.GatewayID, o.Broker = k, 2, fmt.Sprintf("shard%d", k), broker
		shards = append(shards, startGateway(t, o))
	}
	code, out, errs := runMain(t, "run", "--config", single.cfg, "--broker", broker, "--site-topics",
		"--rate", "800", "--duration", "8s", "--reorder", "0.1", "--max-delay", "1s",
		"--duplicates", "0.05", "--bad", "0.01", "--seed", "8",
		"--verify", shards[0].base+","+shards[1].base, "--verify-timeout", "1m")
	if code != 0 {
		t.Fatalf("dpusim run --verify shard1,shard2: exit %d\n%s\n%s", code, tail(out, 20), errs)
	}
	truth := parseTruth(t, out)
	// The single instance converges too; then it equals the union of the shards.
	if d, err := Verify(t.Context(), []string{single.base}, truth, time.Minute, &bytes.Buffer{}); err != nil || len(d) > 0 {
		t.Fatalf("single instance: %v %v", err, d)
	}
	one, err := fetchSpaces(t.Context(), []string{single.base})
	if err != nil {
		t.Fatal(err)
	}
	union, err := fetchSpaces(t.Context(), []string{shards[0].base, shards[1].base})
	if err != nil {
		t.Fatal(err)
	}
	if len(union) != len(one) {
		t.Errorf("union of shards has %d spaces, single instance %d", len(union), len(one))
	}
	for s, v := range one {
		if union[s] != v {
			t.Errorf("space %s: single %d, shards %d", s, v, union[s])
		}
	}
	// Each shard holds only its own sites.
	for k, g := range shards {
		got, err := fetchSpaces(t.Context(), []string{g.base})
		if err != nil {
			t.Fatal(err)
		}
		own := map[string]bool{}
		for _, i := range ShardSites(base.Sites, k+1, 2) {
			own[SiteID(i, base.Sites)] = true
		}
		for s := range got {
			if !own[strings.SplitN(s, "-", 2)[0]] {
				t.Errorf("shard %d reports space %s of another shard", k+1, s)
			}
		}
		if len(got) == 0 || len(got) == len(one) {
			t.Errorf("shard %d has %d of %d spaces", k+1, len(got), len(one))
		}
	}
}

// TestBenchSmoke runs a tiny `dpusim bench` end to end: both phases, the probe, the
// table in Markdown.
func TestBenchSmoke(t *testing.T) {
	needOccupancyd(t)
	mosq := needMosquitto(t)
	out := filepath.Join(t.TempDir(), "e2e.md")
	code, stdout, errs := runMain(t, "bench", "--sites", "4", "--dpus-per-site", "10", "--rate", "400",
		"--duration", "4s", "--probe-interval", "300ms", "--occupancyd", occupancydBin, "--mosquitto", mosq,
		"--out", out, "--connections", "2")
	if code != 0 {
		t.Fatalf("dpusim bench: exit %d\n%s\n%s", code, stdout, errs)
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"subscriber: events/s", "occupancyd: events/s", "ratio occupancyd / subscriber",
		"p50 / p99", "peak RSS", "CPU-s per 1,000 events", "load average", "exact: all 34 spaces"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("e2e.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(string(md), "| 0 (0 missed)") {
		t.Errorf("no latency samples:\n%s", md)
	}
}

func TestVerifyReportsDifferences(t *testing.T) {
	serve := func(body string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/spaces" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, body)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a := serve(`[{"space":"a","occupancy":1},{"space":"b","occupancy":2}]`)
	b := serve(`[{"space":"c","occupancy":3}]`)
	dup := serve(`[{"space":"a","occupancy":1}]`)
	truth := []SpaceCount{{"a", 1}, {"b", 2}, {"c", 3}}
	old := verifyStable
	verifyStable = time.Second
	defer func() { verifyStable = old }()
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		urls  []string
		truth []SpaceCount
		want  []string
		err   string
	}{
		{"union matches", []string{a.URL, b.URL}, truth, nil, ""},
		{"missing shard", []string{a.URL}, truth, []string{"c: missing from the gateway, want 3"}, ""},
		{"wrong value", []string{a.URL, b.URL}, []SpaceCount{{"a", 1}, {"b", 5}, {"c", 3}}, []string{"b: got 2, want 5"}, ""},
		{"extra space", []string{a.URL, b.URL}, truth[:2], []string{"c: got 3, not in the simulated topology"}, ""},
		{"overlapping shards", []string{a.URL, dup.URL}, truth, nil, `space "a" is reported by both`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Verify(ctx, tc.urls, tc.truth, 2*time.Second, &bytes.Buffer{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestGateway100k starts occupancyd with the 100,000-DPU campus (2,000 sites x 50
// DPUs, the topology in its own file as large campuses have it) and checks that it
// becomes ready and serves all 68,000 spaces. How long the load takes is measured by
// `dpusim bench` (start to ready) and BenchmarkParseConfig100k, not here.
func TestGateway100k(t *testing.T) {
	o := DefaultTopoOptions()
	o.Sites, o.DPUsPerSite, o.GatewayID, o.HomeAssistant = 2000, 50, "campus100k", false
	o.TopologyFile = filepath.Join(t.TempDir(), "campus.json")
	g := startGateway(t, o)
	got, err := fetchSpaces(t.Context(), []string{g.base})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, s := range o.SelectedSites() {
		want += len(s.Spaces)
	}
	if len(got) != want {
		t.Errorf("GET /v1/spaces: got %d spaces, want %d", len(got), want)
	}
}
