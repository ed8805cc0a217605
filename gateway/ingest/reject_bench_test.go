package ingest

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// bigMessage is a JSON array of n events of DPU d1 with ids <prefix><i>: dated ts(i)
// and direction +1/-1 in turn.
func bigMessage(prefix string, n int, ts func(i int) string) []byte {
	b := make([]byte, 0, n*64)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		dir := 1
		if i%2 == 1 {
			dir = -1
		}
		b = fmt.Appendf(b, `{"id":"%s%d","ts":%s,"direction":%d}`, prefix, i, ts(i), dir)
	}
	return append(b, ']')
}

// BenchmarkRejectVsAccept puts one QoS 1 message of 100,000 events through the
// queued pipeline (Submit, as the MQTT client does, to its acknowledgement), over the
// real tracker and Badger store with the daemon's Recorder: first 100,000 good
// events (stored, applied), then 100,000 dated in 2100 (future_ts: a dead letter, an
// entry for the rejected topic), each iteration with new ids. It reports the seconds
// of each side by side and their ratio (DESIGN 3: rejecting costs no more than
// accepting; issue 14 asks for reject <= 2x accept).
func BenchmarkRejectVsAccept(b *testing.B) {
	const n = 100_000
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p, rec, st, tr := realPipelineOpts(b, now, rigOptions{maxPayload: 16 << 20})
	p.Start()
	b.Cleanup(func() { p.Stop(b.Context()) })
	go func() { // the MQTT client's side of the rejected topic
		for range rec.Outgoing() {
		}
	}()
	ms := now.UnixMilli()
	run := func(payload []byte) time.Duration {
		acked := make(chan struct{})
		start := time.Now()
		if !p.Submit(Message{Topic: "dpu/d1/events", Payload: payload, Received: ms, Ack: func() { close(acked) }}) {
			b.Fatal("submit refused")
		}
		select {
		case <-acked:
		case <-time.After(5 * time.Minute):
			b.Fatal("not acknowledged within 5 minutes")
		}
		return time.Since(start)
	}
	var acc, rej []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		good := bigMessage("a"+strconv.Itoa(i)+"-", n, func(j int) string { return strconv.FormatInt(ms-int64(j%50_000), 10) })
		bad := bigMessage("f"+strconv.Itoa(i)+"-", n, func(j int) string { return fmt.Sprintf(`"2100-01-01T00:00:00.%03dZ"`, j%1000) })
		b.StartTimer()
		acc = append(acc, run(good))
		rej = append(rej, run(bad))
	}
	b.StopTimer()
	a, r := median(acc), median(rej)
	b.ReportMetric(a.Seconds(), "accept_s")
	b.ReportMetric(r.Seconds(), "reject_s")
	b.ReportMetric(r.Seconds()/a.Seconds(), "reject/accept")
	if got := tr.DPUs(); len(got) == 0 || got[0].Rejected < int64(n) {
		b.Fatalf("DPU stats %+v: want %d rejected", got, n)
	}
	dls, err := st.DeadLetters(0)
	if err != nil || len(dls) != len(rej) || dls[0].Count != n || dls[0].Reason != string(occupancy.ReasonFutureTS) {
		b.Fatalf("dead letters: %d (%v), want %d with count %d", len(dls), err, len(rej), n)
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
