package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestE2EStopWithStalledBroker stops the daemon (a child process) while its broker is
// frozen (SIGSTOP: the TCP connection stays open, nothing is read or acknowledged),
// the case a drain must not hang on: SIGTERM alone ends within a bound, a second
// SIGTERM ends the drain at once, and in both cases a restart against the thawed
// broker has every event the daemon had acknowledged.
func TestE2EStopWithStalledBroker(t *testing.T) {
	cases := []struct {
		name string
		// second is the delay before a second SIGTERM; 0 = none.
		second time.Duration
		// within bounds the time from the last signal to the exit.
		within  time.Duration
		wantLog string
	}{
		// DESIGN 6: SIGTERM stops cleanly within 10 s. The final tick gives up after
		// 5 s, the last changes and the offline status share at most 5 s (offline the last
		// quarter of it), the disconnect 250 ms.
		{name: "drain is bounded", within: 10 * time.Second, wantLog: "stopping"},
		{name: "second signal exits at once", second: 300 * time.Millisecond, within: 1500 * time.Millisecond,
			wantLog: "second signal: exiting without draining"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mq := newMosquitto(t)
			t.Cleanup(func() {
				if mq.cmd != nil {
					_ = mq.cmd.Process.Signal(syscall.SIGCONT)
				}
			})
			d := newDaemonChildren(t, e2eConfig{broker: "tcp://" + mq.addr, settleAfter: "1m"})
			httpAddr := d.httpAddr
			c := d.start(t)

			// Events the daemon acknowledges (it counts them only once they are stored).
			pub := mqttClient(t, "tcp://"+mq.addr, "pub-stop")
			tp := e2eTopology()
			now := time.Now().UnixMilli()
			var evs []e2eEvent
			for i, dpu := range []string{"d1", "d2", "d2", "d3", "d5", "d1", "d6"} {
				e := e2eEvent{DPU: dpu, ID: fmt.Sprint(i + 1), TS: now - int64(1000-i), Dir: 1}
				evs = append(evs, e)
				b, _ := json.Marshal(e.wire(i))
				if tok := pub.Publish("dpu/"+dpu+"/events", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("publish %d: %v", i, tok.Error())
				}
			}
			want := tp.counts(evs)
			eventually(t, 30*time.Second, "counts before the stop", func() string {
				return diffCounts(httpSpaces(t, httpAddr), want)
			})

			if err := mq.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if tc.second > 0 {
				time.Sleep(tc.second)
				select {
				case <-c.done:
					t.Fatalf("the daemon exited within %v of SIGTERM with its broker stalled; the second signal tests nothing", tc.second)
				default:
				}
				if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			last := time.Now()
			select {
			case <-c.done:
				t.Logf("exited %v after the last signal: %v", time.Since(last).Round(time.Millisecond), c.err)
			case <-time.After(tc.within):
				t.Fatalf("the daemon did not exit within %v of the last signal with its broker stalled", tc.within)
			}
			if !strings.Contains(d.logs.String(), tc.wantLog) {
				t.Errorf("logs do not contain %q", tc.wantLog)
			}
			if tc.second > 0 && (c.err == nil || !strings.Contains(c.err.Error(), "exit status 1")) {
				t.Errorf("exit after a second signal: got %v, want exit status 1", c.err)
			}

			// Thaw the broker, restart: everything acknowledged is there, once.
			if err := mq.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			d.start(t)
			if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
				t.Errorf("counts after the stop and a restart: %s", d)
			}
		})
	}
}

// bigMessage is a JSON array of n events of DPU d1 with ids <prefix><i>, direction
// +1, dated by ts(i).
func bigMessage(prefix string, n int, ts func(i int) string) []byte {
	b := make([]byte, 0, n*64)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":"%s%d","ts":%s,"direction":1}`, prefix, i, ts(i))
	}
	return append(b, ']')
}

// TestE2EStopDuringBigMessage (issue 14 item 1, DESIGN 3 and 6): the daemon (a child
// process running `occupancyd run`) on a real Mosquitto takes one QoS 1 message of
// 100,000 events dated 2100 as one rejection (one publish on the rejected topic,
// with the count and a sample; every event counted in
// occupancyd_events_rejected_total), and SIGTERM stops it within 10 s while such a
// message, or one of 100,000 good events, is in progress. Nothing is acknowledged
// that is not stored: after a restart the 100,000 good events are counted exactly
// once, whether the stop came before or after their acknowledgement. The stop is
// clean (Close returns); under the race detector it may instead end at the
// process's hard bound of 9.5 s.
func TestE2EStopDuringBigMessage(t *testing.T) {
	const n = 100_000
	mq := newMosquitto(t)
	d := newDaemonChildren(t, e2eConfig{broker: "tcp://" + mq.addr, settleAfter: "5m", maxPayload: 16 << 20})
	c := d.start(t)
	pub := mqttClient(t, "tcp://"+mq.addr, "pub-big")
	type rejected struct {
		Reason string
		Count  int
		Sample []struct{ Index int }
		at     time.Time
	}
	rejs := make(chan rejected, 16)
	watch := mqttClient(t, "tcp://"+mq.addr, "watch-big")
	if tok := watch.Subscribe("occupancyd/e2e/rejected", 0, func(_ paho.Client, m paho.Message) {
		r := rejected{at: time.Now()}
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("rejected payload: %v", err)
		}
		rejs <- r
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	future := func(i int) string { return fmt.Sprintf(`"2100-01-01T00:00:00.%03dZ"`, i%1000) }
	publish := func(payload []byte) time.Time {
		t.Helper()
		start := time.Now()
		if tok := pub.Publish("dpu/d1/events", 1, false, payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		return start
	}
	stop := func(c *child) time.Duration {
		t.Helper()
		start := time.Now()
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("not stopped 15 s after SIGTERM")
		}
		took := time.Since(start)
		if took > 10*time.Second {
			t.Errorf("stopped %v after SIGTERM, want within 10 s", took)
		}
		// A clean stop. Under the race detector (10-20x slower here) a stop may end
		// at the hard bound instead — still within 10 s, acknowledging nothing new.
		clean := c.err == nil && strings.Contains(d.logs.String(), `"message":"occupancyd stopped"`)
		hard := strings.Contains(d.logs.String(), "stop did not finish within 10 s")
		switch {
		case clean:
		case raceEnabled && hard:
			t.Logf("stopped at the hard bound (race detector): %v", c.err)
		default:
			t.Errorf("exit after SIGTERM: %v, want a clean stop (occupancyd stopped)", c.err)
		}
		return took
	}

	t.Run("100,000 rejected events are one rejection", func(t *testing.T) {
		start := publish(bigMessage("f", n, future))
		select {
		case r := <-rejs:
			t.Logf("100,000 future_ts events: rejected-topic message %v after the publish", r.at.Sub(start).Round(time.Millisecond))
			if r.Reason != "future_ts" || r.Count != n || len(r.Sample) == 0 || r.Sample[0].Index != 0 {
				t.Errorf("rejected-topic message %+v, want future_ts with count %d and a sample from index 0", r, n)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("no rejected-topic message within 2 minutes")
		}
		select {
		case r := <-rejs:
			t.Errorf("a second rejected-topic message for one message: %+v", r)
		case <-time.After(300 * time.Millisecond):
		}
		eventually(t, 10*time.Second, "rejected events counted", func() string {
			if v := metricLine(t, d.httpAddr, `occupancyd_events_rejected_total{reason="future_ts"}`); v != fmt.Sprint(n) {
				return fmt.Sprintf("occupancyd_events_rejected_total{reason=future_ts} = %s, want %d", v, n)
			}
			return ""
		})
	})
	t.Run("SIGTERM during a 100,000-rejection message", func(t *testing.T) {
		publish(bigMessage("g", n, future))
		time.Sleep(50 * time.Millisecond) // the daemon has it, or is reading it
		t.Logf("stopped %v after SIGTERM", stop(c).Round(time.Millisecond))
	})
	t.Run("SIGTERM during 100,000 good events, then exactly once", func(t *testing.T) {
		select {
		case <-c.done: // stopped by the subtest before
			c = d.start(t)
		default:
		}
		now := time.Now().UnixMilli()
		start := publish(bigMessage("ok", n, func(i int) string { return fmt.Sprint(now - int64(i%60_000)) }))
		// SIGTERM once the daemon has decoded them: they are being stored and applied.
		eventually(t, 2*time.Minute, "the good events decoded", func() string {
			got := metricFloat(t, d.httpAddr, "occupancyd_events_received_total") -
				metricFloat(t, d.httpAddr, `occupancyd_events_rejected_total{reason="future_ts"}`)
			if got < n {
				return fmt.Sprintf("%v good events received, want %d", got, n)
			}
			return ""
		})
		t.Logf("SIGTERM %v after the publish, with the events decoded", time.Since(start).Round(time.Millisecond))
		t.Logf("stopped %v after SIGTERM", stop(c).Round(time.Millisecond))
		restart := time.Now()
		d.start(t) // the broker redelivers what was not acknowledged
		eventually(t, 3*time.Minute, "100,000 events counted once", func() string {
			return diffCounts(httpSpaces(t, d.httpAddr), map[string]int64{"hq": n, "f1": n})
		})
		t.Logf("counted %v after the restart (duplicates: %s: the events stored before the stop)",
			time.Since(restart).Round(time.Millisecond), metricLine(t, d.httpAddr, "occupancyd_events_duplicate_total"))
	})
}

// metricLine is the value of the /metrics line that starts with series ("" if none).
func metricLine(t testing.TB, httpAddr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// metricFloat is metricLine as a number (0 when absent).
func metricFloat(t testing.TB, httpAddr, series string) float64 {
	t.Helper()
	v, _ := strconv.ParseFloat(metricLine(t, httpAddr, series), 64)
	return v
}
