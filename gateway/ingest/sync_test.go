package ingest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// realPipeline is a pipeline over a tracker over Badger in t.TempDir(), with the
// daemon's Recorder keeping dead letters in the same store.
func realPipeline(t *testing.T, now time.Time) (*Pipeline, *Recorder, *buffer.Store, *tracker.Tracker) {
	t.Helper()
	clock := func() time.Time { return now }
	st, err := buffer.Open(buffer.Options{Dir: filepath.Join(t.TempDir(), "data"), Logger: zerolog.Nop(), MinFreeBytes: -1, Now: clock})
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
	rec := NewRecorder(st, zerolog.Nop())
	p, err := New(Options{Tracker: tr, Rejects: rec, Filters: []string{"dpu/+/events"}, MaxFutureSkew: time.Minute,
		MaxPayload: 1 << 16, Logger: zerolog.Nop(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return p, rec, st, tr
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
	dls, err := st.DeadLetters(10)
	if err != nil || len(dls) != 2 {
		t.Errorf("dead letters: %d, %v; want 2", len(dls), err)
	}
	for i := range 2 {
		select {
		case o := <-rec.Outgoing():
			if o.Topic != "http:/v1/dpus/d1/events" || len(o.Payload) > MaxRejectedPayload {
				t.Errorf("outgoing rejection %d: %+v", i, o)
			}
		default:
			t.Errorf("outgoing rejection %d missing", i)
		}
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
