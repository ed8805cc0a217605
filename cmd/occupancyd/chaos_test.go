package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// chaosEnv set to "long" makes TestChaos the `make chaos` run: more kills, broker
// restarts and load, and quiet spells in which the horizon settles rows between them.
const chaosEnv = "OCCUPANCYD_CHAOS"

// chaosPlan is what one TestChaos run does.
type chaosPlan struct {
	kills    int           // kill -9 of occupancyd at random instants, each restarted on the same store
	restarts int           // clean stops and restarts of Mosquitto (persistence on)
	quiet    int           // spells of settle+5s with load only, so rows settle between kills
	rate     float64       // events per second over all publishers
	dpus     int           // one space each
	conns    int           // publisher connections, each for dpus/conns DPUs
	settle   time.Duration // engine.settle_after
}

func (p chaosPlan) String() string {
	return fmt.Sprintf("%d kills, %d broker restarts, %d quiet spells, %g events/s, %d DPUs on %d connections, settle_after %v",
		p.kills, p.restarts, p.quiet, p.rate, p.dpus, p.conns, p.settle)
}

// chaosMinFree is storage.min_free's default (DESIGN 7): below it the store refuses
// writes, so events are not acknowledged.
const chaosMinFree = 256 << 20

// TestChaos is the hostile world of DESIGN 4 from outside: the occupancyd binary
// (built here) on a real Mosquitto with persistence, QoS 1 load from several
// publisher connections with integer sequence ids, while occupancyd is killed with
// SIGKILL at random instants (some before it is ready, some while the broker is
// down) and restarted on the same store, Mosquitto is stopped and restarted, and the
// store's file system fills below storage.min_free and is freed again. Then every
// event is checked on its own through /counts?interval=1ms (each DPU leads from
// outside into its own space, each event has its own millisecond): an event whose
// PUBLISH was acknowledged is counted exactly once, one that never was at most once,
// and nothing else is counted. The short version runs in `make test`;
// OCCUPANCYD_CHAOS=long (`make chaos`) is the long one. OCCUPANCYD_CHAOS_SEED
// repeats a run's random choices.
func TestChaos(t *testing.T) {
	plan := chaosPlan{kills: 5, restarts: 1, rate: 300, dpus: 6, conns: 3, settle: 30 * time.Second}
	if os.Getenv(chaosEnv) == "long" {
		plan = chaosPlan{kills: 24, restarts: 4, quiet: 3, rate: 600, dpus: 8, conns: 4, settle: 20 * time.Second}
	} else if testing.Short() {
		t.Skip("chaos: builds the daemon and runs for about a minute")
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv(chaosEnv + "_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("%s_SEED: %v", chaosEnv, err)
		}
	}
	t.Logf("chaos plan: %s; seed %d (%s_SEED=%d repeats the choices)", plan, seed, chaosEnv, seed)
	began := time.Now()
	rng := rand.New(rand.NewSource(seed))

	mq := newMosquitto(t)
	bin := buildDaemon(t)
	store, mounted, why := chaosStoreDir(t)
	if !mounted {
		t.Logf("disk-full episode skipped: %s (it needs a tmpfs it can mount, as root)", why)
	}

	tp := e2eTopo{}
	for i := 0; i < plan.dpus; i++ {
		tp.spaces = append(tp.spaces, e2eSpace{id: fmt.Sprintf("c%d", i), name: fmt.Sprintf("Chaos %d", i)})
		tp.dpus = append(tp.dpus, e2eDPU{id: fmt.Sprintf("p%d", i), plus: fmt.Sprintf("c%d", i)})
	}
	dir := t.TempDir()
	d := &chaosDaemon{t: t, bin: bin, path: filepath.Join(dir, "occupancyd.yaml"),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), logs: new(syncBuf)}
	writeConfig(t, d.path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(store, "data"), httpListen: d.httpAddr,
		settleAfter: plan.settle.String(), tick: "200ms", topology: tp.yaml(), clientID: "occupancyd-chaos"})
	dumpOnFailure(t, "occupancyd (all runs)", d.logs)
	d.start()
	d.waitReady(30 * time.Second)

	m := newChaosModel(tp)
	load := startChaosLoad(t, m, "tcp://"+mq.addr, plan, rng.Int63())
	time.Sleep(time.Second)

	var actions []string
	for i := 0; i < plan.kills; i++ {
		actions = append(actions, "kill")
	}
	for i := 0; i < plan.restarts; i++ {
		actions = append(actions, "broker")
	}
	for i := 0; i < plan.quiet; i++ {
		actions = append(actions, "quiet")
	}
	if mounted {
		actions = append(actions, "disk")
	}
	rng.Shuffle(len(actions), func(i, j int) { actions[i], actions[j] = actions[j], actions[i] })

	var sum chaosSummary
	kill := func() {
		wasReady := d.ready()
		d.kill9()
		sum.kills++
		if !wasReady {
			sum.killsUnready++
		}
		d.start()
	}
	for _, a := range actions {
		switch a {
		case "kill":
			// A random instant up to 2.5 s after the last start: some land while it
			// replays its store or connects, before it is ready.
			wait := time.Until(d.started.Add(time.Duration(rng.Int63n(int64(2500 * time.Millisecond)))))
			if wait <= 0 {
				wait = time.Duration(rng.Int63n(int64(time.Second)))
			}
			time.Sleep(wait)
			kill()
		case "broker":
			d.waitReady(60 * time.Second)
			mq.stop()
			// The broker's exit closes the daemon's connections: it knows at once.
			code, body := d.readyz()
			for deadline := time.Now().Add(10 * time.Second); code != http.StatusServiceUnavailable && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				code, body = d.readyz()
			}
			if code != http.StatusServiceUnavailable {
				d.stacks()
				t.Fatalf("/readyz 10 s after the broker stopped: %d %s, want 503 (the daemon's goroutines are at the end of its log)", code, body)
			}
			if rng.Intn(2) == 0 {
				kill() // occupancyd starts while its broker is away
			}
			time.Sleep(time.Duration(200+rng.Intn(800)) * time.Millisecond)
			mq.start()
			sum.restarts++
			d.waitReady(60 * time.Second)
		case "quiet":
			d.waitReady(60 * time.Second)
			time.Sleep(plan.settle + 5*time.Second)
		case "disk":
			d.waitReady(60 * time.Second)
			sum.disk = chaosDiskFull(t, d, m, store)
		}
	}
	kill() // and one more, just before the load stops
	load.stop(2 * time.Minute)
	d.waitReady(60 * time.Second)
	caughtUp := time.Now()
	if behind := d.catchUp(m.ackedPerDPU()); behind != "" {
		t.Errorf("after the load: %s", behind) // chaosVerify says which events
	}
	t.Logf("counts settled %v after the load stopped", time.Since(caughtUp).Round(time.Millisecond))

	verifying := time.Now()
	chaosVerify(t, d, m, &sum)
	sum.verify = time.Since(verifying)

	// A last kill -9: the restarted daemon has the same counts (rebuilt from the store).
	before := d.spacesOrNil()
	kill()
	d.waitReady(60 * time.Second)
	if after := d.spacesOrNil(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("counts after a kill -9 and restart: got %v, want %v", after, before)
	}

	sum.duration = time.Since(began)
	sum.model = m.totals()
	t.Logf("chaos summary: %s", sum)
	if sum.kills < plan.kills || sum.restarts < plan.restarts {
		t.Errorf("did %d kills and %d broker restarts, want at least %d and %d", sum.kills, sum.restarts, plan.kills, plan.restarts)
	}
	if sum.model.acked == 0 || sum.model.acked*2 < sum.model.events {
		t.Errorf("%d of %d events acknowledged: the load did not get through", sum.model.acked, sum.model.events)
	}
}

// buildDaemon builds the occupancyd binary (with -race when the tests run with it:
// its packages are then in the build cache already).
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "occupancyd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	start := time.Now()
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %v (race %v)", bin, time.Since(start).Round(time.Millisecond), raceEnabled)
	return bin
}

// chaosStoreDir is where the store goes: a 640 MiB tmpfs mounted for the test when
// it can (root), so that the disk-full episode can fill it; else a plain temp dir.
func chaosStoreDir(t *testing.T) (dir string, mounted bool, why string) {
	dir = t.TempDir()
	if os.Geteuid() != 0 {
		return dir, false, "not root"
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=640m,mode=0700"); err != nil {
		return dir, false, fmt.Sprintf("mount -t tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir, true, ""
}

// ---- the daemon ----

type chaosDaemon struct {
	t        *testing.T
	bin      string
	path     string
	httpAddr string
	logs     *syncBuf
	c        *child
	started  time.Time
}

func (d *chaosDaemon) start() {
	t := d.t
	t.Helper()
	cmd := exec.Command(d.bin, "run", "--config", d.path)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all") // every goroutine in a crash's or stacks' dump
	d.c, d.started = startCmd(t, cmd, d.logs), time.Now()
}

// stacks ends the daemon with SIGQUIT, so that every goroutine's stack goes to its
// log (dumped when the test fails): what a daemon that stopped doing its job waits
// on.
func (d *chaosDaemon) stacks() {
	_ = d.c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-d.c.done:
	case <-time.After(30 * time.Second):
	}
}

func (d *chaosDaemon) kill9() {
	select {
	case <-d.c.done:
		d.t.Fatalf("occupancyd exited by itself: %v", d.c.err)
	default:
	}
	d.c.kill9(d.t)
}

// chaosHTTP bounds the polls (readiness, a space) that run inside deadlines of
// their own; chaosHTTPVerify the verification's /counts reads of 10,000 buckets
// (1.2 MB of JSON each), which a -race daemon answers in 0.3 s here when idle but in
// 1-2 s at load 15 and past 5 s in a loaded full run: a correctness read, not a
// latency bound, so its timeout only catches a daemon that no longer answers.
var (
	chaosHTTP       = &http.Client{Timeout: 5 * time.Second}
	chaosHTTPVerify = &http.Client{Timeout: time.Minute}
)

func (d *chaosDaemon) get(path string) (int, []byte, error) {
	return d.getWith(chaosHTTP, path)
}

func (d *chaosDaemon) getWith(c *http.Client, path string) (int, []byte, error) {
	resp, err := c.Get("http://" + d.httpAddr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (d *chaosDaemon) readyz() (int, string) {
	code, b, err := d.get("/readyz")
	if err != nil {
		return 0, err.Error()
	}
	return code, string(b)
}

func (d *chaosDaemon) ready() bool {
	code, _ := d.readyz()
	return code == http.StatusOK
}

func (d *chaosDaemon) waitReady(within time.Duration) {
	d.t.Helper()
	eventually(d.t, within, "occupancyd ready", func() string {
		select {
		case <-d.c.done:
			d.t.Fatalf("occupancyd exited: %v", d.c.err)
		default:
		}
		if code, body := d.readyz(); code != http.StatusOK {
			return fmt.Sprintf("/readyz = %d %s", code, body)
		}
		return ""
	})
}

// spaces is GET /v1/spaces as space -> occupancy.
func (d *chaosDaemon) spaces() (map[string]int64, error) {
	code, b, err := d.get("/v1/spaces")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/spaces = %d %s", code, b)
	}
	var docs []struct {
		Space     string `json:"space"`
		Occupancy int64  `json:"occupancy"`
	}
	if err := json.Unmarshal(b, &docs); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, doc := range docs {
		out[doc.Space] = doc.Occupancy
	}
	return out, nil
}

// settledUntil is the space's settled_until (Unix ms), 0 if it cannot be read.
func (d *chaosDaemon) settledUntil(space string) int64 {
	var doc struct {
		SettledUntil string `json:"settled_until"`
	}
	code, b, err := d.get("/v1/spaces/" + space)
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &doc) != nil {
		return 0
	}
	tm, err := time.Parse(time.RFC3339Nano, doc.SettledUntil)
	if err != nil {
		return 0
	}
	return tm.UnixMilli()
}

func (d *chaosDaemon) spacesOrNil() map[string]int64 {
	s, _ := d.spaces()
	return s
}

// total is the sum of the spaces' counts: the events stored and applied.
func (d *chaosDaemon) total() (int64, error) {
	s, err := d.spaces()
	var n int64
	for _, v := range s {
		n += v
	}
	return n, err
}

// catchUp waits until every DPU's space counts at least acked[i] events and then
// for the counts to hold still for 2 s (redeliveries of what was never acknowledged
// may still arrive). It gives up once nothing changed for 20 s and says which spaces
// are behind; "" when none is.
func (d *chaosDaemon) catchUp(acked []int) string {
	var (
		last   map[string]int64
		since  = time.Now()
		behind = "not read yet"
	)
	for {
		got, err := d.spaces()
		if err == nil && fmt.Sprint(got) != fmt.Sprint(last) {
			last, since = got, time.Now()
			var out []string
			for i, n := range acked {
				if sp := fmt.Sprintf("c%d", i); got[sp] < int64(n) {
					out = append(out, fmt.Sprintf("%s counts %d of %d acknowledged events", sp, got[sp], n))
				}
			}
			behind = strings.Join(out, "; ")
		}
		quiet := time.Since(since)
		if (behind == "" && quiet >= 2*time.Second) || quiet >= 20*time.Second {
			return behind
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- the model of what was sent and acknowledged ----

type chaosEvent struct {
	ts        int64
	sent      int  // PUBLISHes that held it
	acked     bool // a PUBACK came for one of them
	abandoned bool // a PUBLISH of it failed and its DPU did not send it again
}

type chaosModel struct {
	tp     e2eTopo
	mu     sync.Mutex
	evs    [][]chaosEvent // per DPU, by sequence id - 1
	lastTS []int64
}

func newChaosModel(tp e2eTopo) *chaosModel {
	return &chaosModel{tp: tp, evs: make([][]chaosEvent, len(tp.dpus)), lastTS: make([]int64, len(tp.dpus))}
}

// chaosMsg is one PUBLISH: events first..first+n-1 of DPU dpu.
type chaosMsg struct {
	dpu, first, n int
	payload       []byte
}

// next makes a message of n new events of DPU i, each at its own millisecond.
func (m *chaosModel) next(i, n int, variant int) chaosMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	msg := chaosMsg{dpu: i, first: len(m.evs[i]) + 1, n: n}
	var wire []map[string]any
	for k := 0; k < n; k++ {
		ts := max(time.Now().UnixMilli(), m.lastTS[i]+1)
		m.lastTS[i] = ts
		m.evs[i] = append(m.evs[i], chaosEvent{ts: ts})
		e := e2eEvent{DPU: m.tp.dpus[i].id, ID: strconv.Itoa(msg.first + k), TS: ts, Dir: 1}
		wire = append(wire, e.wire(variant+k))
	}
	if n == 1 {
		msg.payload = mustJSON(wire[0])
	} else {
		msg.payload = mustJSON(wire)
	}
	return msg
}

func (m *chaosModel) mark(msg chaosMsg, f func(e *chaosEvent)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := 0; k < msg.n; k++ {
		f(&m.evs[msg.dpu][msg.first-1+k])
	}
}

func (m *chaosModel) ackedPerDPU() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, len(m.evs))
	for i, evs := range m.evs {
		for _, e := range evs {
			if e.acked {
				out[i]++
			}
		}
	}
	return out
}

type chaosTotals struct{ events, acked, resent, abandoned, sends int }

func (m *chaosModel) totals() chaosTotals {
	m.mu.Lock()
	defer m.mu.Unlock()
	var c chaosTotals
	for _, evs := range m.evs {
		for _, e := range evs {
			c.events++
			c.sends += e.sent
			if e.acked {
				c.acked++
			}
			if e.sent > 1 {
				c.resent++
			}
			if e.abandoned && !e.acked {
				c.abandoned++
			}
		}
	}
	return c
}

// ---- the load ----

type chaosLoad struct {
	t      *testing.T
	m      *chaosModel
	url    string
	rate   float64
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu   sync.Mutex
	next time.Time // the rate limiter's next free slot
}

// startChaosLoad starts plan.conns publishers, each on its own connection for its
// share of the DPUs, sending QoS 1 messages of one to four events in windows of 40.
func startChaosLoad(t *testing.T, m *chaosModel, url string, plan chaosPlan, seed int64) *chaosLoad {
	l := &chaosLoad{t: t, m: m, url: url, rate: plan.rate, stopCh: make(chan struct{}), next: time.Now()}
	for c := 0; c < plan.conns; c++ {
		var mine []int
		for i := c; i < plan.dpus; i += plan.conns {
			mine = append(mine, i)
		}
		l.wg.Add(1)
		go l.publisher(c, mine, rand.New(rand.NewSource(seed+int64(c))))
	}
	return l
}

// wait takes n events' slots of the rate.
func (l *chaosLoad) wait(n int) {
	l.mu.Lock()
	at := l.next
	if now := time.Now(); at.Before(now.Add(-time.Second)) {
		at = now // no bursts after a stall
	}
	l.next = at.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	time.Sleep(time.Until(at))
}

func (l *chaosLoad) stopping() bool {
	select {
	case <-l.stopCh:
		return true
	default:
		return false
	}
}

// stop ends the new load; the publishers send what they still owe until it is
// acknowledged and return.
func (l *chaosLoad) stop(within time.Duration) {
	close(l.stopCh)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		l.t.Fatalf("publishers did not finish within %v of the end of the load", within)
	}
}

func (l *chaosLoad) publisher(idx int, mine []int, rng *rand.Rand) {
	defer l.wg.Done()
	const window = 40
	var (
		client paho.Client
		resend []chaosMsg // failed, to be sent again (as a DPU does)
		recent []chaosMsg // acknowledged, now and then sent again
	)
	defer func() {
		if client != nil {
			client.Disconnect(50)
		}
	}()
	for {
		if l.stopping() && len(resend) == 0 {
			return
		}
		if client == nil || !client.IsConnectionOpen() {
			if client != nil {
				client.Disconnect(0)
			}
			o := paho.NewClientOptions().AddBroker(l.url).SetClientID(fmt.Sprintf("chaos-pub-%d", idx)).
				SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
				SetWriteTimeout(5 * time.Second).SetOrderMatters(false)
			client = paho.NewClient(o)
			if tok := client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				client = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		var win []chaosMsg
		n := min(len(resend), window)
		win, resend = append(win, resend[:n]...), resend[n:]
		for !l.stopping() && len(win) < window {
			if len(recent) > 0 && rng.Intn(100) == 0 {
				win = append(win, recent[rng.Intn(len(recent))]) // a re-sent, acknowledged message
				continue
			}
			k := 1
			if rng.Intn(5) == 0 {
				k = 2 + rng.Intn(3)
			}
			l.wait(k)
			win = append(win, l.m.next(mine[rng.Intn(len(mine))], k, rng.Intn(60)))
		}
		toks := make([]paho.Token, len(win))
		for i, msg := range win {
			l.m.mark(msg, func(e *chaosEvent) { e.sent++ })
			toks[i] = client.Publish("dpu/"+l.m.tp.dpus[msg.dpu].id+"/events", 1, false, msg.payload)
		}
		broken := false
		for i, tok := range toks {
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				l.m.mark(win[i], func(e *chaosEvent) { e.acked = true })
				if len(recent) < 64 {
					recent = append(recent, win[i])
				} else {
					recent[rng.Intn(len(recent))] = win[i]
				}
				continue
			}
			broken = true
			if rng.Intn(2) == 0 {
				resend = append(resend, win[i])
			} else {
				l.m.mark(win[i], func(e *chaosEvent) { e.abandoned = true })
			}
		}
		if broken {
			client.Disconnect(0)
			client = nil
		}
	}
}

// ---- the disk-full episode ----

type chaosDisk struct {
	ran           bool
	stalledAfter  time.Duration // from the ballast to counts that stopped rising
	ackedWhile    int           // events the broker acknowledged to the publishers while the store was full
	caughtUpAfter time.Duration // from freeing the space to every event acknowledged before counted
	readyz        string        // what /readyz said while the store was full
}

// chaosDiskFull fills the store's file system below storage.min_free with a ballast
// file: the daemon must stop storing (so acknowledging) events while the broker
// keeps taking them from the publishers; once the ballast is gone, it catches up.
func chaosDiskFull(t *testing.T, d *chaosDaemon, m *chaosModel, mount string) chaosDisk {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(mount, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free < chaosMinFree {
		t.Fatalf("%s has %d bytes free before the ballast, under min_free %d", mount, free, chaosMinFree)
	}
	ballast := filepath.Join(mount, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, free-chaosMinFree/2); err != nil {
		t.Fatalf("fallocate the ballast: %v", err)
	}
	f.Close()
	res := chaosDisk{ran: true}

	// The counts stop rising: nothing is stored, so nothing is acknowledged.
	var last int64 = -1
	since := time.Now()
	for {
		n, err := d.total()
		if err != nil {
			t.Fatalf("during disk full: %v", err)
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= 1500*time.Millisecond {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("counts still rising %v after the store's file system filled below min_free", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.stalledAfter = since.Sub(start)
	ackedBefore := sumInts(m.ackedPerDPU())
	code, body := d.readyz()
	res.readyz = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
	if code != http.StatusOK && !strings.Contains(body, "storage_full") {
		t.Errorf("/readyz with the store full: %s, want 503 with reason storage_full", res.readyz)
	}
	time.Sleep(2 * time.Second)
	if n, err := d.total(); err != nil || n != last {
		t.Errorf("counts rose from %d to %d (%v) while the store was full", last, n, err)
	}
	res.ackedWhile = sumInts(m.ackedPerDPU()) - ackedBefore
	if res.ackedWhile == 0 {
		t.Errorf("the broker acknowledged no event to the publishers while the store was full: the load stopped, the check proves nothing")
	}
	if !strings.Contains(d.logs.String(), "disk is full") {
		t.Errorf("no log line says the disk is full")
	}

	// Free the space: everything acknowledged so far is counted soon after.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	want := m.ackedPerDPU()
	for {
		got, err := d.spaces()
		behind := 0
		for i, n := range want {
			if err != nil || got[fmt.Sprintf("c%d", i)] < int64(n) {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if time.Since(freed) > 60*time.Second {
			t.Errorf("60 s after the disk-full episode, %d spaces count fewer events than were acknowledged", behind)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.caughtUpAfter = time.Since(freed)
	return res
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// ---- the check, event by event ----

type chaosSummary struct {
	kills, killsUnready, restarts int
	disk                          chaosDisk
	model                         chaosTotals
	lost, doubled, phantom        int // acknowledged and not counted; counted twice; counted where no event was
	unackedCounted, unackedNot    int // never acknowledged: counted once, or not
	settled                       int // events before the settled horizon at the end: read from settled rows
	verify, duration              time.Duration
}

func (s chaosSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d events in %d PUBLISHes (%d acknowledged, %d sent more than once, %d never acknowledged: %d counted, %d not); ",
		s.model.events, s.model.sends, s.model.acked, s.model.resent, s.model.events-s.model.acked, s.unackedCounted, s.unackedNot)
	fmt.Fprintf(&b, "%d kill -9 (%d before ready), %d broker restarts; ", s.kills, s.killsUnready, s.restarts)
	if s.disk.ran {
		fmt.Fprintf(&b, "disk full: stalled after %v, %d events acknowledged by the broker meanwhile, caught up %v after freeing, /readyz said %q; ",
			s.disk.stalledAfter.Round(time.Millisecond), s.disk.ackedWhile, s.disk.caughtUpAfter.Round(time.Millisecond), s.disk.readyz)
	} else {
		b.WriteString("disk full: skipped; ")
	}
	fmt.Fprintf(&b, "%d events checked in settled rows, %d pending; lost %d, doubled %d, phantom %d; checked in %v, %v in all",
		s.settled, s.model.events-s.settled, s.lost, s.doubled, s.phantom, s.verify.Round(time.Millisecond), s.duration.Round(time.Second))
	return b.String()
}

// chaosVerify reads every DPU's space with 1 ms buckets (10,000 a query) over the
// span of its events and compares each bucket with the model.
func chaosVerify(t *testing.T, d *chaosDaemon, m *chaosModel, sum *chaosSummary) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	got, err := d.spaces()
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	report := func(format string, a ...any) {
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, a...))
		}
	}
	for i, evs := range m.evs {
		if len(evs) == 0 {
			continue
		}
		dpu, space := m.tp.dpus[i].id, m.tp.dpus[i].plus
		settled := d.settledUntil(space)
		at := make(map[int64]int, len(evs))
		for k, e := range evs {
			at[e.ts] = k
			if e.ts < settled {
				sum.settled++
			}
		}
		lo, hi := evs[0].ts, evs[len(evs)-1].ts+1
		var counted int64
		for start := lo; start < hi; start += 10_000 {
			end := min(start+10_000, hi)
			q := fmt.Sprintf("/v1/spaces/%s/counts?start=%s&end=%s&interval=1ms", space, urlQuery(rfc3339ms(start)), urlQuery(rfc3339ms(end)))
			code, body, err := d.getWith(chaosHTTPVerify, q)
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET %s: %d %v %.300s", q, code, err, body)
			}
			var bs []struct {
				Start     string `json:"start"`
				Entrances int64  `json:"entrances"`
				Exits     int64  `json:"exits"`
			}
			if err := json.Unmarshal(body, &bs); err != nil {
				t.Fatalf("GET %s: %v", q, err)
			}
			if int64(len(bs)) != end-start {
				t.Fatalf("GET %s: %d buckets, want %d", q, len(bs), end-start)
			}
			for j, b := range bs {
				ts := start + int64(j)
				if b.Start != rfc3339ms(ts) {
					t.Fatalf("GET %s: bucket %d starts at %s, want %s", q, j, b.Start, rfc3339ms(ts))
				}
				counted += b.Entrances
				if b.Exits != 0 {
					report("%s at %s: %d exits, want 0 (every event enters)", space, b.Start, b.Exits)
				}
				k, ok := at[ts]
				if !ok {
					if b.Entrances != 0 {
						sum.phantom += int(b.Entrances)
						report("%s at %s: %d entrances where no event was sent", space, b.Start, b.Entrances)
					}
					continue
				}
				e := evs[k]
				switch {
				case b.Entrances > 1:
					sum.doubled++
					report("%s id %d at %s (sent %d times, acknowledged %v): counted %d times", dpu, k+1, b.Start, e.sent, e.acked, b.Entrances)
				case e.acked && b.Entrances == 0:
					sum.lost++
					report("%s id %d at %s (sent %d times, acknowledged): not counted", dpu, k+1, b.Start, e.sent)
				case !e.acked && b.Entrances == 1:
					sum.unackedCounted++
				case !e.acked:
					sum.unackedNot++
				}
			}
		}
		if got[space] != counted {
			report("%s: occupancy %d, but its 1 ms buckets hold %d entrances", space, got[space], counted)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Errorf("%d lost, %d doubled, %d phantom:\n  %s", sum.lost, sum.doubled, sum.phantom, strings.Join(bad, "\n  "))
	}
}
