package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

func TestRoute(t *testing.T) {
	payloadDPU := config.EventsTopic{Filter: "irisys/#", Kind: "cumulative", Map: &occupancy.Mapping{DPU: "$.serial"}}
	fixed := config.EventsTopic{Filter: "xovis/push", Kind: "interval", Map: &occupancy.Mapping{DPU: "sensor"}}
	tests := []struct {
		name    string
		topics  config.EventsTopics
		topic   string
		want    string
		entry   int
		wantErr bool
	}{
		{"default filter", config.Topics("dpu/+/events"), "dpu/283/events", "283", 0, false},
		{"last plus is the dpu", config.Topics("+/dpu/+/events"), "site-a/dpu/17/events", "17", 0, false},
		{"second filter of a list", config.Topics("a/+/events", "b/+/ev"), "b/x_1/ev", "x_1", 1, false},
		{"first matching filter wins", config.Topics("+/+/events", "dpu/+/x"), "s1/d1/events", "d1", 0, false},
		{"plus before hash", config.Topics("site/+/#"), "site/d9/events/extra", "d9", 0, false},
		{"dpu in the payload, hash", config.EventsTopics{payloadDPU}, "irisys/a/b", "", 0, false},
		{"dpu in the payload, hash matches its parent", config.EventsTopics{payloadDPU}, "irisys", "", 0, false},
		{"dpu in the payload, no wildcard", config.EventsTopics{{Filter: "dpu/+/events"}, fixed}, "xovis/push", "", 1, false},
		{"dpu in the payload, other topic", config.EventsTopics{fixed}, "xovis/push/x", "", 0, true},
		{"no filter matches", config.Topics("dpu/+/events"), "dpu/283/other", "", 0, true},
		{"too short", config.Topics("dpu/+/events"), "dpu/283", "", 0, true},
		{"too long", config.Topics("dpu/+/events"), "dpu/283/events/x", "", 0, true},
		{"invalid dpu id", config.Topics("dpu/+/events"), "dpu/bad.id/events", "", 0, true},
		{"empty dpu id", config.Topics("dpu/+/events"), "dpu//events", "", 0, true},
		{"id over 64 chars", config.Topics("dpu/+/events"), "dpu/" + strings.Repeat("a", 65) + "/events", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := newEntries(tt.topics)
			if err != nil {
				t.Fatal(err)
			}
			p := &Pipeline{entries: entries}
			e, got, err := p.route(tt.topic)
			if (err != nil) != tt.wantErr {
				t.Fatalf("route(%q) on %+v: error = %v, want error %v", tt.topic, tt.topics, err, tt.wantErr)
			}
			if got != tt.want || err == nil && e != &p.entries[tt.entry] {
				t.Errorf("route(%q) on %+v = entry %+v, %q; want entry %d, %q", tt.topic, tt.topics, e, got, tt.entry, tt.want)
			}
		})
	}
	t.Run("no filter error is errNoFilter", func(t *testing.T) {
		entries, _ := newEntries(config.Topics("dpu/+/events"))
		_, _, err := (&Pipeline{entries: entries}).route("x/y")
		if !errors.Is(err, errNoFilter) {
			t.Errorf("got %v, want errNoFilter", err)
		}
	})
}

func TestNewEntries(t *testing.T) {
	for _, tt := range []struct {
		topic   config.EventsTopic
		wantErr bool
	}{
		{config.EventsTopic{Filter: "dpu/+/events"}, false},
		{config.EventsTopic{Filter: "+/#"}, false},
		{config.EventsTopic{Filter: "dpu/events"}, true},
		{config.EventsTopic{Filter: "dpu/events", Kind: "interval", Map: &occupancy.Mapping{DPU: "sn"}}, false},
		{config.EventsTopic{Filter: "dpu/#/x"}, true},
		{config.EventsTopic{Filter: "dpu/a+/events"}, true},
		{config.EventsTopic{Filter: "dpu/+/events", Kind: "tally"}, true},
		{config.EventsTopic{Filter: "dpu/+/events", Kind: "interval", Map: &occupancy.Mapping{TS: "t"}}, true},
	} {
		t.Run(fmt.Sprintf("%+v", tt.topic), func(t *testing.T) {
			if _, err := newEntries(config.EventsTopics{tt.topic}); (err != nil) != tt.wantErr {
				t.Errorf("newEntries: error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestBatchIndexes(t *testing.T) {
	rej := func(idx ...int) []occupancy.Rejection {
		var rs []occupancy.Rejection
		for _, i := range idx {
			rs = append(rs, occupancy.Rejection{Reason: occupancy.ReasonBadTS, Index: i})
		}
		return rs
	}
	tests := []struct {
		name    string
		nEvents int
		rejs    []occupancy.Rejection
		want    []int
	}{
		{"single event", 1, nil, []int{-1}},
		{"single rejected", 0, rej(-1), []int{}},
		{"batch without rejections", 3, nil, []int{0, 1, 2}},
		{"batch with the middle rejected", 2, rej(1), []int{0, 2}},
		{"batch with the first two rejected", 2, rej(0, 1), []int{2, 3}},
		{"batch of one good one bad", 1, rej(0), []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := batchIndexes(tt.nEvents, tt.rejs)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("batchIndexes(%d, %v) = %v, want %v", tt.nEvents, tt.rejs, got, tt.want)
			}
		})
	}
}

// TestPipelineQueue: submit never waits for the workers (a paho handler returns at
// once however large the backlog the broker pushes), the pump hands every message
// to the workers' channel exactly once and in arrival order, and after stop submit
// refuses (the message stays unacknowledged for the broker to redeliver).
func TestPipelineQueue(t *testing.T) {
	in := newTestPipeline(t, 1, 2) // a channel of 2: the backlog is in the queue
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		in.pump()
	}()
	const n = 10_000
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		for i := 0; i < n; i++ {
			if !in.Submit(Message{Received: int64(i)}) {
				t.Errorf("submit %d refused before stop", i)
				return
			}
		}
	}()
	select {
	case <-submitted: // nobody has read in.ch yet
	case <-time.After(30 * time.Second):
		t.Fatal("submit blocked while the workers were busy")
	}
	for i := 0; i < n; i++ {
		select {
		case m := <-in.ch:
			if m.Received != int64(i) {
				t.Fatalf("message %d: got %d, want arrival order", i, m.Received)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never reached the workers", i)
		}
	}
	select {
	case m := <-in.ch:
		t.Fatalf("extra message %d", m.Received)
	case <-time.After(50 * time.Millisecond):
	}
	in.stopOnce.Do(func() { close(in.stopping) })
	if in.Submit(Message{Received: -1}) {
		t.Error("submit accepted a message after stop")
	}
	select {
	case <-pumped:
	case <-time.After(30 * time.Second):
		t.Fatal("pump did not stop")
	}
}

// TestEmbeddedBacklogBound: the embedded broker's hand-over waits once
// MaxEmbeddedBacklog messages are waiting for the workers (so a flooding client is
// read no faster than the workers take), and goes on as soon as a worker takes one.
func TestEmbeddedBacklogBound(t *testing.T) {
	p := newTestPipeline(t, 1, 2)
	defer p.stopOnce.Do(func() { close(p.stopping) })
	for i := 0; i < MaxEmbeddedBacklog; i++ {
		if !p.SubmitEmbedded("dpu/a/events", nil, func() {}) {
			t.Fatalf("submit %d refused", i)
		}
	}
	done := make(chan bool, 1)
	go func() { done <- p.SubmitEmbedded("dpu/a/events", nil, func() {}) }()
	select {
	case <-done:
		t.Fatalf("submit past %d waiting messages returned at once", MaxEmbeddedBacklog)
	case <-time.After(100 * time.Millisecond):
	}
	go p.pump()
	taken := 0
	for taken == 0 {
		taken = len(p.fill(nil)) // what a worker does (up to a batch of 2)
		if taken == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("submit refused after a worker took a message")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("submit still waiting after a worker took a message")
	}
	if got, want := p.backlog(), MaxEmbeddedBacklog+1-taken; got != want {
		t.Errorf("backlog: got %d, want %d", got, want)
	}
}

// nopTracker stores nothing; the queue tests never reach it.
type nopTracker struct{}

func (nopTracker) Ingest(context.Context, []occupancy.Event) ([]tracker.Result, error) {
	return nil, errors.New("not stored")
}
func (nopTracker) IngestMixed(context.Context, []occupancy.Event, []occupancy.Report) ([]tracker.Result, []tracker.Result, error) {
	return nil, nil, errors.New("not stored")
}
func (nopTracker) CountRejected(string) {}

func newTestPipeline(t *testing.T, workers, batch int) *Pipeline {
	t.Helper()
	p, err := New(Options{Tracker: nopTracker{}, Rejects: NewRecorder(nil, nil, zerolog.Nop()), Filters: []string{"dpu/+/events"},
		Workers: workers, BatchMessages: batch})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
