package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ingestBatches reads how many ingest batches have finished (stored, applied and
// acknowledged) from /metrics.
func ingestBatches(t *testing.T, httpAddr string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "occupancyd_ingest_batch_seconds_count "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("metric value %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("occupancyd_ingest_batch_seconds_count not in /metrics")
	return 0
}

// A late event's correction is durable once its message is acknowledged: kill -9
// right after the batch is acknowledged, long before the next engine tick, and the
// restarted daemon still counts it. (A rebuild replays stored events only from the
// checkpoint's horizon on, so a correction that lived only in memory would be lost.)
func TestE2ELateEventSurvivesKill9(t *testing.T) {
	addr := startMosquitto(t)
	d := newDaemonChildren(t, e2eConfig{broker: "tcp://" + addr, settleAfter: "1s", tick: "1s"})
	httpAddr := d.httpAddr
	c1 := d.start(t)
	// The horizon holds for settle_after after start, then ticks commit checkpoints
	// past the late events' ts.
	time.Sleep(3500 * time.Millisecond)

	pub := mqttClient(t, "tcp://"+addr, "pub-late")
	tp := e2eTopology()
	var sent []e2eEvent
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i, dpu := range []string{"d1", "d2", "d5"} {
		e := e2eEvent{DPU: dpu, ID: strconv.Itoa(i + 1), TS: base + int64(i), Dir: 1}
		sent = append(sent, e)
		b, _ := json.Marshal([]any{e.wire(0)})
		before := ingestBatches(t, httpAddr)
		if tok := pub.Publish("dpu/"+dpu+"/events", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		eventually(t, 10*time.Second, "the late batch acknowledged", func() string {
			if n := ingestBatches(t, httpAddr); n <= before {
				return fmt.Sprintf("%d ingest batches, want more than %d", n, before)
			}
			return ""
		})
	}
	want := tp.counts(sent)
	if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
		t.Fatalf("late events not counted before the kill: %s", d)
	}
	c1.kill9(t)

	d.start(t)
	time.Sleep(300 * time.Millisecond)
	if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
		t.Errorf("after kill -9 and restart: %s", d)
	}
}
