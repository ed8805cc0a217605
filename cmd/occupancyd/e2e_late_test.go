package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// A late event's correction is durable once its message is acknowledged. Ticks
// commit a checkpoint whose horizon is past the late events' ts, then engine.tick
// is reloaded to an hour so nothing is committed between the late events and a
// kill -9 right after they are acknowledged; the restarted daemon counts every one.
// A rebuild replays stored events only from the checkpoint's horizon on, so this
// holds because each late event is stored with a late mark that only the commit of
// its correction removes, and the engine corrects for the marked events at start.
// The broker's session is dropped before the restart, so no redelivery (a
// duplicate the gateway would apply again) can stand in for the marks.
func TestE2ELateEventSurvivesKill9(t *testing.T) {
	addr := startMosquitto(t)
	cfg := e2eConfig{broker: "tcp://" + addr, settleAfter: "1s", tick: "200ms"}
	d := newDaemonChildren(t, cfg)
	httpAddr := d.httpAddr
	c1 := d.start(t)
	// The horizon holds for settle_after after the start, then ticks move it.
	h0 := settledUntil(t, httpAddr)
	eventually(t, 10*time.Second, "a tick past the hold", func() string {
		if h := settledUntil(t, httpAddr); h == h0 {
			return fmt.Sprintf("settled_until still %d", h)
		}
		return ""
	})
	cfg.tick = "1h"
	cfg.dir, cfg.httpListen = filepath.Join(filepath.Dir(d.path), "data"), httpAddr
	writeConfig(t, d.path, cfg)
	if err := c1.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ticks stopped by the reload", func() string {
		h := settledUntil(t, httpAddr)
		time.Sleep(600 * time.Millisecond)
		if h2 := settledUntil(t, httpAddr); h2 != h {
			return fmt.Sprintf("settled_until still moving: %d", h2)
		}
		return ""
	})

	pub := mqttClient(t, "tcp://"+addr, "pub-late")
	tp := e2eTopology()
	var sent []e2eEvent
	base := time.Now().Add(-time.Minute).UnixMilli() // before the horizon: late
	batches := [][]string{{"d1"}, {"d2", "d5"}, {"d5", "d1", "d2"}, {"d2"}}
	seq := 0
	for bi, dpus := range batches {
		var toks []paho.Token
		for _, dpu := range dpus {
			seq++
			e := e2eEvent{DPU: dpu, ID: strconv.Itoa(seq), TS: base + int64(seq*1000) - int64(bi), Dir: 1}
			sent = append(sent, e)
			b, _ := json.Marshal([]any{e.wire(0)})
			toks = append(toks, pub.Publish("dpu/"+dpu+"/events", 1, false, b))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	want := tp.counts(sent)
	eventually(t, 10*time.Second, "late events counted before the kill", func() string {
		return diffCounts(httpSpaces(t, httpAddr), want)
	})
	time.Sleep(300 * time.Millisecond) // the acknowledgements follow the apply at once
	c1.kill9(t)
	// Drop the gateway's persistent session: what it did not acknowledge is gone.
	drop := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID("occupancyd-e2e").SetCleanSession(true))
	if tok := drop.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("drop the session: %v", tok.Error())
	}
	drop.Disconnect(100)

	d.start(t)
	if d := diffCounts(httpSpaces(t, httpAddr), want); d != "" {
		t.Errorf("after kill -9 and restart: %s", d)
	}
}
