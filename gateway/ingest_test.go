package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
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

func TestRejectionJSON(t *testing.T) {
	t.Run("fields", func(t *testing.T) {
		b := RejectionJSON("dpu/1/events", occupancy.Rejection{Reason: occupancy.ReasonBadJSON, Detail: "unexpected end", Index: -1}, []byte(`{"ts":`))
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("not JSON: %v: %s", err, b)
		}
		want := map[string]any{"topic": "dpu/1/events", "reason": "bad_json", "payload": `{"ts":`, "detail": "unexpected end"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		if _, ok := got["index"]; ok {
			t.Errorf("index present for a whole-message rejection: %s", b)
		}
	})
	t.Run("batch element has index", func(t *testing.T) {
		b := RejectionJSON("t", occupancy.Rejection{Reason: occupancy.ReasonBadDirection, Index: 2}, []byte(`[]`))
		var got struct{ Index *int }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Index == nil || *got.Index != 2 {
			t.Errorf("index = %v, want 2", got.Index)
		}
	})
	t.Run("payload cut to 1 KiB", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 2<<20)
		b := RejectionJSON("t", occupancy.Rejection{Reason: occupancy.ReasonTooLarge, Index: -1}, big)
		var got struct{ Payload string }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Payload) != 1024 {
			t.Errorf("payload length = %d, want 1024", len(got.Payload))
		}
	})
	t.Run("binary payload stays valid JSON", func(t *testing.T) {
		b := RejectionJSON("t", occupancy.Rejection{Reason: occupancy.ReasonBadJSON, Index: -1}, []byte{0xff, 0xfe, 'a', 0})
		if !json.Valid(b) {
			t.Fatalf("not valid JSON: %q", b)
		}
	})
}

func TestRateLog(t *testing.T) {
	var buf bytes.Buffer
	r := newRateLog(zerolog.New(&buf), time.Hour)
	f := func(e *zerolog.Event) *zerolog.Event { return e.Str("k", "v") }
	for i := 0; i < 5; i++ {
		r.log(f, "rejected input")
	}
	if got := strings.Count(buf.String(), "\n"); got != 1 {
		t.Fatalf("lines after 5 calls within the interval = %d, want 1:\n%s", got, buf.String())
	}
	r.flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"suppressed":4`) {
		t.Fatalf("after flush got %q, want a second line with suppressed 4", lines)
	}
	// Next interval: the count starts again.
	r.mu.Lock()
	r.last = time.Now().Add(-2 * time.Hour)
	r.mu.Unlock()
	r.log(f, "rejected input")
	if got := strings.Count(buf.String(), "\n"); got != 3 {
		t.Errorf("lines = %d, want 3", got)
	}
}

func TestDiscoveryConfig(t *testing.T) {
	b, err := DiscoveryConfig("gw1", "occupancy", "occupancyd/gw1/status",
		occupancy.Occupancy{Space: "room-a", Name: "Room A", Occupancy: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name":                  "Room A",
		"unique_id":             "gw1_room-a",
		"state_topic":           "occupancy/room-a",
		"value_template":        "{{ value_json.occupancy }}",
		"json_attributes_topic": "occupancy/room-a",
		"unit_of_measurement":   "people",
		"state_class":           "measurement",
		"availability_topic":    "occupancyd/gw1/status",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %q", k, got[k], v)
		}
	}
	dev, ok := got["device"].(map[string]any)
	if !ok {
		t.Fatalf("device block missing: %s", b)
	}
	if ids, _ := dev["identifiers"].([]any); len(ids) != 1 || ids[0] != "occupancyd_gw1" {
		t.Errorf("device.identifiers = %v, want [occupancyd_gw1]", dev["identifiers"])
	}
	if topic := discoveryTopic("homeassistant", "gw1", "room-a"); topic != "homeassistant/sensor/gw1_room-a/occupancy/config" {
		t.Errorf("discovery topic = %q", topic)
	}
}

func TestTopologyEqual(t *testing.T) {
	a := occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "a", Name: "A"}}}
	b := occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{{ID: "a", Name: "A"}}, Doorways: []occupancy.DoorwayConfig{}}
	if !TopologyEqual(a, b) {
		t.Error("nil and empty doorways should be equal")
	}
	b.Spaces[0].Capacity = 4
	if TopologyEqual(a, b) {
		t.Error("a capacity change should differ")
	}
}

func TestRestartKeys(t *testing.T) {
	a := config.DefaultConfig()
	b := a
	b.Engine.Tick = 2 * time.Second
	b.Log.Level = "debug"
	b.Topology.Spaces = []occupancy.SpaceConfig{{ID: "x", Name: "X"}}
	if got := restartKeys(a, b); len(got) != 0 {
		t.Errorf("reloadable changes reported as needing a restart: %v", got)
	}
	b.MQTT.OutputPrefix = "occ"
	b.HTTP.Listen = "127.0.0.1:9"
	got := restartKeys(a, b)
	if strings.Join(got, ",") != "mqtt.output_prefix,http" {
		t.Errorf("restartKeys = %v, want [mqtt.output_prefix http]", got)
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

// TestIngesterQueue: submit never waits for the workers (a paho handler returns at
// once however large the backlog the broker pushes), the pump hands every message
// to the workers' channel exactly once and in arrival order, and after stop submit
// refuses (the message stays unacknowledged for the broker to redeliver).
func TestIngesterQueue(t *testing.T) {
	in := newIngester(&Gateway{}, 1, 2) // a channel of 2: the backlog is in the queue
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
			if !in.submit(inMsg{received: int64(i)}) {
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
			if m.received != int64(i) {
				t.Fatalf("message %d: got %d, want arrival order", i, m.received)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never reached the workers", i)
		}
	}
	select {
	case m := <-in.ch:
		t.Fatalf("extra message %d", m.received)
	case <-time.After(50 * time.Millisecond):
	}
	in.stopOnce.Do(func() { close(in.stopping) })
	if in.submit(inMsg{received: -1}) {
		t.Error("submit accepted a message after stop")
	}
	select {
	case <-pumped:
	case <-time.After(30 * time.Second):
		t.Fatal("pump did not stop")
	}
}

// TestEmbeddedBacklogBound: the embedded broker's hand-over waits once
// maxEmbeddedBacklog messages are waiting for the workers (so a flooding client is
// read no faster than the workers take), and goes on as soon as a worker takes one.
func TestEmbeddedBacklogBound(t *testing.T) {
	g := &Gateway{now: time.Now}
	g.ing = newIngester(g, 1, 2)
	defer g.ing.stopOnce.Do(func() { close(g.ing.stopping) })
	for i := 0; i < maxEmbeddedBacklog; i++ {
		if !g.submitEmbedded("dpu/a/events", nil, func() {}) {
			t.Fatalf("submit %d refused", i)
		}
	}
	done := make(chan bool, 1)
	go func() { done <- g.submitEmbedded("dpu/a/events", nil, func() {}) }()
	select {
	case <-done:
		t.Fatalf("submit past %d waiting messages returned at once", maxEmbeddedBacklog)
	case <-time.After(100 * time.Millisecond):
	}
	go g.ing.pump()
	taken := 0
	for taken == 0 {
		taken = len(g.ing.fill(nil)) // what a worker does (up to a batch of 2)
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
	if got, want := g.ing.backlog(), maxEmbeddedBacklog+1-taken; got != want {
		t.Errorf("backlog: got %d, want %d", got, want)
	}
}
