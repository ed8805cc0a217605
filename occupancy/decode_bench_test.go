package occupancy

import (
	"fmt"
	"strings"
	"testing"
)

// benchEventsPayload is a batch of n event objects as DPUs send them.
func benchEventsPayload(n int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%06d","ts":"2026-11-27T09:59:%02d.%03dZ","direction":%d}`, i, i%60, i%1000, 1-2*(i%2))
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// BenchmarkDecodePayload: the events hot path (a batch of 64 events).
func BenchmarkDecodePayload(b *testing.B) {
	p := benchEventsPayload(64)
	lim := testLimits()
	lim.MaxPayload = 0
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		evs, rejs := DecodePayload("d1", p, lim)
		if len(evs) != 64 || len(rejs) != 0 {
			b.Fatal(len(evs), rejs)
		}
	}
}

// BenchmarkDecoder: the same payload through a Decoder of kind events without a map
// (DecodePayload) and with one (GJSON), and cumulative reports of a vendor shape.
func BenchmarkDecoder(b *testing.B) {
	lim := testLimits()
	lim.MaxPayload = 0
	run := func(name string, k ReportKind, m Mapping, p []byte, want int) {
		d, err := NewDecoder(k, m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				got := d.Decode("d1", p, lim)
				if len(got.Events)+len(got.Reports) != want || len(got.Rejections) != 0 {
					b.Fatal(got.Rejections)
				}
			}
		})
	}
	p := benchEventsPayload(64)
	run("events", ReportEvents, Mapping{}, p, 64)
	run("events-mapped", ReportEvents, Mapping{TS: "ts"}, p, 64)
	var c strings.Builder
	c.WriteString(`{"CountLogs":[`)
	for i := 0; i < 64; i++ {
		if i > 0 {
			c.WriteByte(',')
		}
		fmt.Fprintf(&c, `{"Counts":[{"Name":"Line 1","Value":%d},{"Name":"Line 2","Value":%d}],"Timestamp":"2026-11-27T09:%02d:00Z"}`, 100+i, 90+i, i%60)
	}
	c.WriteString(`],"FriendlyDeviceSerial":"V4D-1"}`)
	run("cumulative-irisys", ReportCumulative, Mapping{Items: "CountLogs", DPU: "$.FriendlyDeviceSerial", TS: "Timestamp",
		InTotal: `Counts.#(Name=="Line 1").Value`, OutTotal: `Counts.#(Name=="Line 2").Value`}, []byte(c.String()), 64)
}
