package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// realPipeline is a pipeline over a tracker over Badger in t.TempDir(), with the
// daemon's Recorder keeping dead letters in the same store.
func realPipeline(t testing.TB, now time.Time) (*Pipeline, *Recorder, *buffer.Store, *tracker.Tracker) {
	return realPipelineOpts(t, now, rigOptions{maxPayload: 1 << 16})
}

// rigOptions vary realPipeline: mqtt.max_payload, the store's options, the
// metrics and the logger of the Recorder.
type rigOptions struct {
	maxPayload int
	store      func(*buffer.Options)
	metrics    *metrics.Metrics
	log        zerolog.Logger
}

// realPipelineOpts is realPipeline with o.
func realPipelineOpts(t testing.TB, now time.Time, o rigOptions) (*Pipeline, *Recorder, *buffer.Store, *tracker.Tracker) {
	t.Helper()
	clock := func() time.Time { return now }
	bo := buffer.Options{Dir: filepath.Join(t.TempDir(), "data"), Logger: zerolog.Nop(), MinFreeBytes: -1, Now: clock}
	if o.store != nil {
		o.store(&bo)
	}
	st, err := buffer.Open(bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	topo := occupancy.TopologyConfig{
		Spaces:   []occupancy.SpaceConfig{{ID: "room", Name: "Room"}},
		Doorways: []occupancy.DoorwayConfig{{ID: "door", Name: "Door"}},
		DPUs:     []occupancy.DPUConfig{{ID: "d1", Doorway: "door", PlusSpace: "room"}},
	}
	tr, err := tracker.Open(tracker.Options{Store: st, Topology: &topo, Now: clock, Logger: zerolog.Nop(),
		Engine: occupancy.Options{SettleAfter: 60_000, ClampNegative: true}, MaxParked: 100})
	if err != nil {
		t.Fatal(err)
	}
	rec := NewRecorder(st, o.metrics, o.log)
	p, err := New(Options{Tracker: tr, Rejects: rec, Filters: []string{"dpu/+/events"}, MaxFutureSkew: time.Minute,
		MaxPayload: o.maxPayload, Metrics: o.metrics, Logger: zerolog.Nop(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return p, rec, st, tr
}

func clock(now time.Time) func() time.Time { return func() time.Time { return now } }

// openTracker opens a store in t.TempDir() (closed when the test ends) and a tracker
// over it with topo, at the fixed time now, parking at most 100; m nil: fresh metrics.
func openTracker(t *testing.T, now time.Time, topo occupancy.TopologyConfig, eng occupancy.Options, m *metrics.Metrics) (*buffer.Store, *tracker.Tracker) {
	t.Helper()
	st, err := buffer.Open(buffer.Options{Dir: filepath.Join(t.TempDir(), "data"), Logger: zerolog.Nop(), MinFreeBytes: -1, Now: clock(now)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tr, err := tracker.Open(tracker.Options{Store: st, Topology: &topo, Now: clock(now), Logger: zerolog.Nop(), Metrics: m, Engine: eng, MaxParked: 100})
	if err != nil {
		t.Fatal(err)
	}
	return st, tr
}

// TestIngestSync: the synchronous entry (HTTP push) answers per index once durable:
// accepted, duplicates (within the message and of what was stored before) and
// rejected elements with their positions; each rejection is recorded (a dead letter,
// the rejected topic's queue), and the accepted events count.
func TestIngestSync(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p, rec, st, tr := realPipeline(t, now)
	ms := now.UnixMilli()
	ev := func(id string, ts int64, dir any) string {
		return fmt.Sprintf(`{"id":%q,"ts":%d,"direction":%v}`, id, ts, dir)
	}
	first := fmt.Sprintf("[%s,%s]", ev("1", ms-2000, 1), ev("2", ms-1000, 1))
	res, err := p.Ingest(context.Background(), Message{Topic: "http:/v1/dpus/d1/events", DPU: "d1", Payload: []byte(first)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 2 || res.Duplicates != 0 || len(res.Rejected) != 0 {
		t.Fatalf("first push: got %+v, want 2 accepted", res)
	}
	// Again, with one new event, one bad direction, one from the far future and the
	// new one repeated.
	second := fmt.Sprintf("[%s,%s,%s,%s,%s,%s]", ev("1", ms-2000, 1), ev("3", ms-500, 1), ev("4", ms, 2),
		ev("5", ms+3_600_000, 1), ev("2", ms-1000, 1), ev("3", ms-500, 1))
	res, err = p.Ingest(context.Background(), Message{Topic: "http:/v1/dpus/d1/events", DPU: "d1", Payload: []byte(second)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Rejected {
		got = append(got, fmt.Sprintf("%d:%s", r.Index, r.Reason))
	}
	slices.Sort(got)
	if res.Accepted != 1 || res.Duplicates != 3 || fmt.Sprint(got) != "[2:bad_direction 3:future_ts]" {
		t.Errorf("second push: got accepted %d, duplicates %d, rejected %v; want 1, 3, [2:bad_direction 3:future_ts]",
			res.Accepted, res.Duplicates, got)
	}
	if o, _ := tr.Space("room"); o.Occupancy != 3 {
		t.Errorf("room = %d, want 3", o.Occupancy)
	}
	// One message with two rejected events: one dead letter and one entry for the
	// rejected topic, each with the count and a sample of both.
	dls, err := st.DeadLetters(10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %d, %v; want 1", len(dls), err)
	}
	if d := dls[0]; d.Count != 2 || len(d.Sample) != 2 || d.Reasons["bad_direction"] != 1 || d.Reasons["future_ts"] != 1 ||
		d.Reason != "bad_direction" || d.Topic != "http:/v1/dpus/d1/events" {
		t.Errorf("dead letter: got %+v, want bad_direction first, count 2, both reasons, a sample of 2", d)
	}
	select {
	case o := <-rec.Outgoing():
		if o.Topic != "http:/v1/dpus/d1/events" || len(o.Payload) > MaxRejectedPayload || o.Count != 2 || len(o.Sample) != 2 {
			t.Errorf("outgoing rejection: %+v, want the message's topic, count 2, a sample of 2", o)
		}
	default:
		t.Errorf("outgoing rejection missing")
	}
	select {
	case o := <-rec.Outgoing():
		t.Errorf("a second outgoing rejection for one message: %+v", o)
	default:
	}
	if d := tr.DPUs(); len(d) != 1 || d[0].Accepted != 3 || d[0].Duplicates != 3 || d[0].Rejected != 2 {
		t.Errorf("DPU stats: got %+v, want d1 with 3 accepted, 3 duplicates, 2 rejected", d)
	}
	p.Stop(context.Background())
	if _, err := p.Ingest(context.Background(), Message{DPU: "d1", Payload: []byte(first)}); err != ErrStopping {
		t.Errorf("after Stop: got %v, want ErrStopping", err)
	}
}

// TestPipelineQueued: a queued message from an events topic is stored, applied and
// acknowledged; a message with nothing to store (a topic naming no valid DPU) is
// acknowledged after its rejection is recorded. (A message whose store fails is
// not acknowledged: gateway/mqtt's TestGatewayStoreFailureIsNotAcked, end to end.)
func TestPipelineQueued(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p, rec, _, tr := realPipeline(t, now)
	p.Start()
	acked := make(chan string, 8)
	submit := func(topic, payload string) {
		if !p.Submit(Message{Topic: topic, Payload: []byte(payload), Received: now.UnixMilli(), Ack: func() { acked <- topic }}) {
			t.Fatalf("submit %s refused", topic)
		}
	}
	submit("dpu/d1/events", fmt.Sprintf(`{"ts":%d,"direction":1}`, now.UnixMilli()-10))
	submit("dpu/bad.id/events", `{"ts":1,"direction":1}`)
	for range 2 {
		select {
		case <-acked:
		case <-time.After(10 * time.Second):
			t.Fatal("not acknowledged")
		}
	}
	if o, _ := tr.Space("room"); o.Occupancy != 1 {
		t.Errorf("room = %d, want 1", o.Occupancy)
	}
	select {
	case o := <-rec.Outgoing():
		if o.Rejection.Reason != occupancy.ReasonBadTopic {
			t.Errorf("rejection: %+v, want bad_topic", o)
		}
	case <-time.After(time.Second):
		t.Error("the bad topic's rejection was not recorded")
	}
	p.Stop(context.Background())
	if p.Submit(Message{Topic: "dpu/d1/events"}) {
		t.Error("submit accepted after Stop")
	}
}

// TestDeadLettersOnFullDisk (issue 14 item 3): while the store refuses writes (free
// space below the floor, through the store's free-space probe), a rejected message
// is still acknowledged and published on the rejected topic, its dead letter is
// counted in occupancyd_dead_letters_dropped_total, and the failure is logged at a
// bounded rate; once space returns, dead letters are stored again.
func TestDeadLettersOnFullDisk(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var free atomic.Uint64
	free.Store(1 << 40)
	m := metrics.New()
	var logs bytes.Buffer // the Recorder logs on Ingest's goroutine only
	p, rec, st, _ := realPipelineOpts(t, now, rigOptions{
		maxPayload: 1 << 16,
		store: func(o *buffer.Options) {
			o.MinFreeBytes = 1 << 20
			o.FreeSpace = func(string) (uint64, error) { return free.Load(), nil }
		},
		metrics: m,
		log:     zerolog.New(&logs),
	})
	bad := fmt.Sprintf(`[{"id":"a","ts":%d,"direction":1},{"id":"b","ts":"x","direction":1}]`, now.Add(time.Hour).UnixMilli())
	push := func() Result {
		t.Helper()
		res, err := p.Ingest(context.Background(), Message{Topic: "http:/v1/dpus/d1/events", DPU: "d1", Payload: []byte(bad)})
		if err != nil {
			t.Fatalf("a message with nothing to store: %v, want it acknowledged", err)
		}
		return res
	}
	outgoing := func() int {
		n := 0
		for {
			select {
			case <-rec.Outgoing():
				n++
			default:
				return n
			}
		}
	}
	dropped := func() float64 { return value(t, m.DeadLettersDropped) }

	free.Store(0)
	if err := st.Health(); !errors.Is(err, buffer.ErrDiskFull) {
		t.Fatalf("store health with no space: %v, want ErrDiskFull", err)
	}
	const full = 50
	for range full {
		if res := push(); len(res.Rejected) != 2 {
			t.Fatalf("rejected %v, want both events", res.Rejected)
		}
	}
	if got := outgoing(); got != full {
		t.Errorf("published on the rejected topic: %d, want %d (one per message)", got, full)
	}
	if got := dropped(); got != full {
		t.Errorf("occupancyd_dead_letters_dropped_total = %v, want %d", got, full)
	}
	if got := rec.DeadLettersDropped(); got != full {
		t.Errorf("DeadLettersDropped() = %d, want %d", got, full)
	}
	if got := value(t, m.EventsRejected.WithLabelValues("future_ts")); got != full {
		t.Errorf("rejected future_ts events = %v, want %d (events, not messages)", got, full)
	}
	if dls, err := st.DeadLetters(0); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters on a full disk: %d (%v), want none", len(dls), err)
	}
	if n := strings.Count(logs.String(), "dead letters not stored"); n != 1 {
		t.Errorf("%d log lines for %d lost dead letters within a second, want 1:\n%s", n, full, logs.String())
	}

	free.Store(1 << 40)
	push()
	if dls, err := st.DeadLetters(0); err != nil || len(dls) != 1 || dls[0].Count != 2 {
		t.Errorf("dead letters once space returned: %d (%v), want one with count 2", len(dls), err)
	}
	if got := dropped(); got != full {
		t.Errorf("occupancyd_dead_letters_dropped_total = %v after space returned, want still %d", got, full)
	}
	rec.Flush()
	if !strings.Contains(logs.String(), fmt.Sprintf(`"suppressed":%d`, full-1)) {
		t.Errorf("the suppressed lines are not counted in the log:\n%s", logs.String())
	}
}

// value reads a counter or gauge.
func value(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
