package mqtt

import (
	"encoding/json"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/occupancy"
)

// occupancyTopic is `<output_prefix>/<space>`; its value topic adds `/count`.
func occupancyTopic(prefix, space string) string { return prefix + "/" + space }

// rejectionJSON is the payload on the rejected topic (DESIGN 2): one per rejected
// message, however many of its events were rejected.
type rejectionJSON struct {
	Topic   string                   `json:"topic"`
	Reason  string                   `json:"reason"`
	Detail  string                   `json:"detail,omitempty"`
	Payload string                   `json:"payload"`
	Index   *int                     `json:"index,omitempty"`
	Count   int                      `json:"count"`
	Reasons map[occupancy.Reason]int `json:"reasons,omitempty"`
	Sample  []sampleJSON             `json:"sample,omitempty"`
}

type sampleJSON struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// RejectionJSON renders a rejected message for the rejected topic:
// {"topic","reason","detail","payload","count"} — reason, detail (and, for an element
// of a JSON array, "index") of its first rejected event, the payload cut to 1 KiB as
// a JSON string, and the number of rejected events; a message with more than one
// adds "sample" (up to ingest.MaxRejectedSample of them: index, reason, detail) and,
// with more than one reason, "reasons" (events per reason).
func RejectionJSON(o ingest.Outgoing) []byte {
	msg := o.Payload
	if len(msg) > ingest.MaxRejectedPayload {
		msg = msg[:ingest.MaxRejectedPayload]
	}
	r := o.Rejection
	v := rejectionJSON{
		Topic:   o.Topic,
		Reason:  string(r.Reason),
		Payload: strings.ToValidUTF8(string(msg), "\uFFFD"),
		Detail:  r.Detail,
		Count:   max(o.Count, 1),
		Reasons: o.Reasons,
	}
	if r.Index >= 0 {
		idx := r.Index
		v.Index = &idx
	}
	for _, x := range o.Sample {
		v.Sample = append(v.Sample, sampleJSON{Index: x.Index, Reason: string(x.Reason), Detail: x.Detail})
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen with strings and numbers only
		return []byte(`{"topic":"","reason":"` + string(r.Reason) + `","payload":""}`)
	}
	return b
}
