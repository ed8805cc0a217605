package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
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
		// 5 s, the offline status waits 2 s for its PUBACK, the disconnect 250 ms.
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
