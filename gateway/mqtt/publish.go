package mqtt

import (
	"encoding/json"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/occupancy"
)

// occupancyTopic is `<output_prefix>/<space>`; its value topic adds `/count`.
func occupancyTopic(prefix, space string) string { return prefix + "/" + space }

// rejectionJSON is the payload on the rejected topic (DESIGN 2).
type rejectionJSON struct {
	Topic   string `json:"topic"`
	Reason  string `json:"reason"`
	Payload string `json:"payload"`
	Detail  string `json:"detail,omitempty"`
	Index   *int   `json:"index,omitempty"`
}

// RejectionJSON renders `{"topic","reason","payload"}` (plus "detail" and, for a batch
// element, "index"); payload is the message cut to 1 KiB, as a JSON string.
func RejectionJSON(topic string, r occupancy.Rejection, msg []byte) []byte {
	if len(msg) > ingest.MaxRejectedPayload {
		msg = msg[:ingest.MaxRejectedPayload]
	}
	v := rejectionJSON{
		Topic:   topic,
		Reason:  string(r.Reason),
		Payload: strings.ToValidUTF8(string(msg), "\uFFFD"),
		Detail:  r.Detail,
	}
	if r.Index >= 0 {
		idx := r.Index
		v.Index = &idx
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen with strings only
		return []byte(`{"topic":"","reason":"` + string(r.Reason) + `","payload":""}`)
	}
	return b
}
