package mqtt

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

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
