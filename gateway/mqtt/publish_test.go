package mqtt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/occupancy"
)

// one is the Outgoing of a message with one rejection.
func one(topic string, r occupancy.Rejection, payload []byte) ingest.Outgoing {
	return ingest.Outgoing{Topic: topic, Payload: payload, Summary: ingest.Summarize([]occupancy.Rejection{r})}
}

func TestRejectionJSON(t *testing.T) {
	t.Run("fields", func(t *testing.T) {
		b := RejectionJSON(one("dpu/1/events", occupancy.Rejection{Reason: occupancy.ReasonBadJSON, Detail: "unexpected end", Index: -1}, []byte(`{"ts":`)))
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("not JSON: %v: %s", err, b)
		}
		want := map[string]any{"topic": "dpu/1/events", "reason": "bad_json", "payload": `{"ts":`, "detail": "unexpected end", "count": 1.0}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		for _, k := range []string{"index", "sample", "reasons"} {
			if _, ok := got[k]; ok {
				t.Errorf("%s present for a whole-message rejection: %s", k, b)
			}
		}
	})
	t.Run("batch element has index", func(t *testing.T) {
		b := RejectionJSON(one("t", occupancy.Rejection{Reason: occupancy.ReasonBadDirection, Index: 2}, []byte(`[]`)))
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
		b := RejectionJSON(one("t", occupancy.Rejection{Reason: occupancy.ReasonTooLarge, Index: -1}, big))
		var got struct{ Payload string }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Payload) != 1024 {
			t.Errorf("payload length = %d, want 1024", len(got.Payload))
		}
	})
	t.Run("binary payload stays valid JSON", func(t *testing.T) {
		b := RejectionJSON(one("t", occupancy.Rejection{Reason: occupancy.ReasonBadJSON, Index: -1}, []byte{0xff, 0xfe, 'a', 0}))
		if !json.Valid(b) {
			t.Fatalf("not valid JSON: %q", b)
		}
	})
	t.Run("many rejected events: first, count, reasons, sample", func(t *testing.T) {
		var rejs []occupancy.Rejection
		for i := range 100_000 {
			r := occupancy.Rejection{Reason: occupancy.ReasonFutureTS, Detail: fmt.Sprintf("e%d", i), Index: i}
			if i%1000 == 999 {
				r.Reason = occupancy.ReasonBadDirection
			}
			rejs = append(rejs, r)
		}
		b := RejectionJSON(ingest.Outgoing{Topic: "dpu/d0/events", Payload: bytes.Repeat([]byte("["), 5000),
			Summary: ingest.Summarize(rejs)})
		if len(b) > 4096 {
			t.Errorf("payload of %d bytes for 100,000 rejected events, want a bounded one (<= 4 KiB)", len(b))
		}
		var got struct {
			Reason  string
			Index   *int
			Count   int
			Reasons map[string]int
			Sample  []struct {
				Index  int
				Reason string
				Detail string
			}
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Reason != "future_ts" || got.Index == nil || *got.Index != 0 || got.Count != 100_000 {
			t.Errorf("reason, index, count = %s, %v, %d; want future_ts, 0, 100000", got.Reason, got.Index, got.Count)
		}
		if got.Reasons["future_ts"] != 99_900 || got.Reasons["bad_direction"] != 100 {
			t.Errorf("reasons = %v, want future_ts 99900, bad_direction 100", got.Reasons)
		}
		var idx []int
		for _, s := range got.Sample {
			idx = append(idx, s.Index)
		}
		// Every reason is in the sample (the first bad_direction is element 999),
		// then the earliest others, in order.
		if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 999}; fmt.Sprint(idx) != fmt.Sprint(want) {
			t.Errorf("sample indexes = %v, want %v", idx, want)
		}
	})
}
