package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// acceptTracker accepts everything at once: the benchmark times the pipeline alone.
type acceptTracker struct{}

func (acceptTracker) Ingest(_ context.Context, evs []occupancy.Event) ([]tracker.Result, error) {
	res := make([]tracker.Result, len(evs))
	for i := range res {
		res[i].Outcome = tracker.Accepted
	}
	return res, nil
}

func (acceptTracker) IngestMixed(_ context.Context, evs []occupancy.Event, reps []occupancy.Report) ([]tracker.Result, []tracker.Result, error) {
	res, _ := acceptTracker{}.Ingest(context.Background(), evs)
	rr := make([]tracker.Result, len(reps))
	for i := range rr {
		rr[i].Outcome = tracker.Accepted
	}
	return res, rr, nil
}

func (acceptTracker) CountRejected(string) {}

// BenchmarkProcessEvents times the pipeline's part of the hot path — DPU from the
// topic, decode, hand over, sort the results back — for batches of 256 messages of
// one event each from 100,000 DPUs, to a tracker that accepts at once.
func BenchmarkProcessEvents(b *testing.B) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p, err := New(Options{Tracker: acceptTracker{}, Rejects: NewRecorder(nil, nil, zerolog.Nop()), Filters: []string{"dpu/+/events"},
		MaxFutureSkew: time.Minute, MaxPayload: 1 << 18, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]Message, 100_000)
	for i := range msgs {
		msgs[i] = Message{Topic: fmt.Sprintf("dpu/d%d/events", i), Received: now.UnixMilli(),
			Payload: []byte(fmt.Sprintf(`{"id":"%d","ts":"2026-11-27T09:59:59.%03dZ","direction":1}`, i, i%1000))}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		at := (i * 256) % (len(msgs) - 256)
		p.process(msgs[at:at+256], nil)
	}
	b.ReportMetric(float64(b.N*256)/b.Elapsed().Seconds(), "msgs/s")
}
