package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestE2EKill9EmbeddedBroker is TestE2EKill9 with the embedded broker: there the
// PUBACK a DPU gets comes from occupancyd's own process, so a kill -9 at any
// instant must not lose an event the DPU saw acknowledged (DESIGN 4). Several
// publishers (one connection each, as DPUs are) load the daemon; it is killed in
// the middle; after a restart every PUBACKed event is counted exactly once.
func TestE2EKill9EmbeddedBroker(t *testing.T) {
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := newDaemonChildren(t, e2eConfig{embedded: brokerAddr, settleAfter: "1m"})
	httpAddr := d.httpAddr
	c1 := d.start(t)

	// Only entries that never decrement anything: a lost event shows as a lower
	// count, a doubled one as a higher count, space by space.
	dpus := []string{"d1", "d2", "d3", "d5"}
	const per = 50_000 // round a runs until the kill
	var mu sync.Mutex
	var acked, unacked []e2eEvent
	// publish sends each DPU's events on its own connection, waiting for the
	// PUBACKs in windows of 20; a lost connection (the kill) ends that DPU's round,
	// and what it had sent without a PUBACK is noted in unacked.
	publish := func(round string, evs map[string][]e2eEvent) {
		var wg sync.WaitGroup
		for di, dpu := range dpus {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).
					SetClientID(fmt.Sprintf("pub-%s-%s", round, dpu)).SetCleanSession(true).
					SetAutoReconnect(false).SetWriteTimeout(5 * time.Second)
				c := paho.NewClient(o)
				if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("publisher %s: connect: %v", dpu, tok.Error())
					return
				}
				defer c.Disconnect(50)
				rng := rand.New(rand.NewSource(int64(di)))
				type inflight struct {
					ev  e2eEvent
					tok paho.Token
				}
				var fl []inflight
				list := evs[dpu]
				for i, e := range list {
					b, _ := json.Marshal(e.wire(rng.Intn(60)))
					fl = append(fl, inflight{e, c.Publish("dpu/"+dpu+"/events", 1, false, b)})
					if len(fl) == 20 || i == len(list)-1 {
						lost := false
						for _, f := range fl {
							ok := f.tok.WaitTimeout(10*time.Second) && f.tok.Error() == nil
							mu.Lock()
							if ok {
								acked = append(acked, f.ev)
							} else {
								unacked = append(unacked, f.ev)
								lost = true
							}
							mu.Unlock()
						}
						fl = fl[:0]
						if lost || !c.IsConnectionOpen() {
							return
						}
					}
				}
			}()
		}
		wg.Wait()
	}
	events := func(round string, n int) map[string][]e2eEvent {
		m := map[string][]e2eEvent{}
		for _, dpu := range dpus {
			for i := 0; i < n; i++ {
				m[dpu] = append(m[dpu], e2eEvent{DPU: dpu, ID: fmt.Sprintf("%s-%d", round, i), TS: time.Now().UnixMilli() + int64(i/50), Dir: 1})
			}
		}
		return m
	}

	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		publish("a", events("a", per))
	}()
	// Kill once the load is flowing (the publishers connect first).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 2000 || time.Now().After(deadline) {
			break
		}
	}
	c1.kill9(t)
	<-loadDone
	mu.Lock()
	killedAt := len(acked)
	resend := map[string][]e2eEvent{}
	for _, e := range unacked {
		resend[e.DPU] = append(resend[e.DPU], e)
	}
	t.Logf("killed the daemon with %d events acknowledged by its embedded broker, %d sent and not acknowledged", killedAt, len(unacked))
	unacked = nil
	mu.Unlock()
	if killedAt == 0 || killedAt >= per*len(dpus) {
		t.Fatalf("%d of %d events acknowledged at the kill: it did not land in the middle of the load", killedAt, per*len(dpus))
	}

	// Restart; the DPUs send what was not acknowledged again (as an MQTT client
	// does on reconnect), then more.
	d.start(t)
	publish("resend", resend)
	publish("b", events("b", 250))
	mu.Lock()
	if len(unacked) > 0 {
		t.Fatalf("%d events not acknowledged after the restart", len(unacked))
	}
	mu.Unlock()

	mu.Lock()
	want := e2eTopology().counts(acked)
	mu.Unlock()
	eventually(t, 30*time.Second, "counts after kill -9 and restart vs every PUBACKed event", func() string {
		return diffCounts(httpSpaces(t, httpAddr), want)
	})
	time.Sleep(300 * time.Millisecond) // and nothing arrives twice later
	if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
		t.Errorf("counts changed after converging: %s", d)
	}
}
