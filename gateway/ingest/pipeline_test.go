package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

func TestDPUFromTopic(t *testing.T) {
	tests := []struct {
		name    string
		filters []string
		topic   string
		want    string
		wantErr bool
	}{
		{"default filter", []string{"dpu/+/events"}, "dpu/283/events", "283", false},
		{"last plus is the dpu", []string{"+/dpu/+/events"}, "site-a/dpu/17/events", "17", false},
		{"second filter of a list", []string{"a/+/events", "b/+/ev"}, "b/x_1/ev", "x_1", false},
		{"first matching filter wins", []string{"+/+/events", "dpu/+/x"}, "s1/d1/events", "d1", false},
		{"plus before hash", []string{"site/+/#"}, "site/d9/events/extra", "d9", false},
		{"no filter matches", []string{"dpu/+/events"}, "dpu/283/other", "", true},
		{"too short", []string{"dpu/+/events"}, "dpu/283", "", true},
		{"too long", []string{"dpu/+/events"}, "dpu/283/events/x", "", true},
		{"invalid dpu id", []string{"dpu/+/events"}, "dpu/bad.id/events", "", true},
		{"empty dpu id", []string{"dpu/+/events"}, "dpu//events", "", true},
		{"id over 64 chars", []string{"dpu/+/events"}, "dpu/" + strings.Repeat("a", 65) + "/events", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dpuFromTopic(tt.filters, tt.topic)
			if (err != nil) != tt.wantErr {
				t.Fatalf("dpuFromTopic(%v, %q) error = %v, want error %v", tt.filters, tt.topic, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("dpuFromTopic(%v, %q) = %q, want %q", tt.filters, tt.topic, got, tt.want)
			}
		})
	}
	t.Run("no filter error is errNoFilter", func(t *testing.T) {
		_, err := dpuFromTopic([]string{"dpu/+/events"}, "x/y")
		if !errors.Is(err, errNoFilter) {
			t.Errorf("got %v, want errNoFilter", err)
		}
	})
}

func TestDPUSegment(t *testing.T) {
	tests := []struct {
		filter  string
		want    int
		wantErr bool
	}{
		{"dpu/+/events", 1, false},
		{"+/dpu/+/events", 2, false},
		{"+/#", 0, false},
		{"dpu/events", 0, true},
		{"dpu/#/x", 0, true},
		{"dpu/a+/events", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			got, err := dpuSegment(tt.filter)
			if (err != nil) != tt.wantErr {
				t.Fatalf("dpuSegment(%q) error = %v, want error %v", tt.filter, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("dpuSegment(%q) = %d, want %d", tt.filter, got, tt.want)
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
