package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/tracker"
)

// TestE2EDPUTotalsAcrossRestarts: the /v1/dpus counters are totals kept in the
// store (real Badger, the real binary as child processes, Mosquitto): a clean stop
// (SIGTERM) and a kill -9 after the periodic save (tracker.DefaultStatsInterval)
// both carry every count over, and since_start starts from zero each time.
func TestE2EDPUTotalsAcrossRestarts(t *testing.T) {
	addr := startMosquitto(t)
	// log.level debug: the test waits for the periodic saves ("DPU statistics saved").
	d := newDaemonChildren(t, e2eConfig{broker: "tcp://" + addr, settleAfter: "1m", logLevel: "debug"})
	pub := mqttClient(t, "tcp://"+addr, "pub-dpustats")
	rng := rand.New(rand.NewSource(8))
	type counts struct{ Accepted, Duplicates, Rejected int64 }
	total := map[string]*counts{"d1": {}, "d2": {}}
	seq := map[string]int{}
	var sent []e2eEvent
	// publish sends n events of d1 and d2 (a tenth of them again: duplicates) and a
	// malformed message of d2 (rejected), counting what the gateway must count.
	publish := func(n int) map[string]*counts {
		since := map[string]*counts{"d1": {}, "d2": {}}
		var msgs []e2eMessage
		for range n {
			dpu := []string{"d1", "d2"}[rng.Intn(2)]
			var e e2eEvent
			if len(sent) > 0 && rng.Intn(10) == 0 {
				e = sent[rng.Intn(len(sent))]
				total[e.DPU].Duplicates++
				since[e.DPU].Duplicates++
			} else {
				seq[dpu]++
				e = e2eEvent{DPU: dpu, ID: fmt.Sprint(seq[dpu]), TS: time.Now().UnixMilli() - int64(rng.Intn(10_000)), Dir: 1}
				sent = append(sent, e)
				total[dpu].Accepted++
				since[dpu].Accepted++
			}
			b, _ := json.Marshal(e.wire(rng.Intn(60)))
			msgs = append(msgs, e2eMessage{"dpu/" + e.DPU + "/events", b})
		}
		msgs = append(msgs, e2eMessage{"dpu/d2/events", []byte(`{"ts": "soon", "direction": 1}`)})
		total["d2"].Rejected++
		since["d2"].Rejected++
		publishAll(t, pub, msgs)
		return since
	}
	check := func(what string, since map[string]*counts) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() string {
			var rows []tracker.DPUStat
			if st := httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &rows); st != 200 {
				return fmt.Sprintf("GET /v1/dpus: status %d", st)
			}
			got := map[string]string{}
			for _, r := range rows {
				got[r.DPU] = fmt.Sprintf("total %+v since start %+v", counts{r.Accepted, r.Duplicates, r.Rejected},
					counts{r.SinceStart.Accepted, r.SinceStart.Duplicates, r.SinceStart.Rejected})
			}
			for dpu, c := range total {
				want := fmt.Sprintf("total %+v since start %+v", *c, *since[dpu])
				if got[dpu] != want {
					return fmt.Sprintf("DPU %s: got %s, want %s", dpu, got[dpu], want)
				}
			}
			return ""
		})
	}
	zero := map[string]*counts{"d1": {}, "d2": {}}

	c1 := d.start(t)
	check("first run", publish(300))
	c1.term(t, 12*time.Second)

	c2 := d.start(t)
	check("after a clean stop", zero)
	check("second run", publish(200))
	// Past a periodic save that began after every event above was counted (the
	// second save from now: the first may have begun before), then kill -9: nothing
	// counted before it is lost. The saves come every tracker.DefaultStatsInterval.
	saves := func() int { return strings.Count(d.logs.String(), `"message":"DPU statistics saved"`) }
	n := saves()
	eventually(t, 4*tracker.DefaultStatsInterval, "two periodic saves of the DPU statistics", func() string {
		if got := saves(); got < n+2 {
			return fmt.Sprintf("%d saves since the events were counted", got-n)
		}
		return ""
	})
	c2.kill9(t)

	d.start(t)
	check("after kill -9", zero)
	check("third run", publish(100))
}
