package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// A broker restart: the gateway reports not ready, reconnects with its persistent
// session, resubscribes, republishes, and counts the events published while it was
// away as well as after.
func TestE2EBrokerRestart(t *testing.T) {
	mq := newMosquitto(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(dir, "data"), settleAfter: "1m"})
	d := startMain(t, path)
	tp := e2eTopology()
	var sent []e2eEvent
	n := 0
	publish := func(c paho.Client, count int) {
		t.Helper()
		var msgs []e2eMessage
		for i := 0; i < count; i++ {
			n++
			e := e2eEvent{DPU: "d1", ID: fmt.Sprint(n), TS: time.Now().UnixMilli(), Dir: 1}
			sent = append(sent, e)
			msgs = append(msgs, e2eMessage{topic: "dpu/d1/events", payload: mustJSON(e.wire(n))})
		}
		publishAll(t, c, msgs)
	}
	pub := mqttClient(t, d.brokerURL, "pub-restart")
	publish(pub, 20)
	eventually(t, 10*time.Second, "before the restart", func() string {
		return diffCounts(httpSpaces(t, d.httpAddr), tp.counts(sent))
	})

	mq.stop()
	eventually(t, 10*time.Second, "not ready while the broker is down", func() string {
		if code := httpGetJSON(t, "http://"+d.httpAddr+"/readyz", nil); code != http.StatusServiceUnavailable {
			return fmt.Sprintf("/readyz = %d, want 503", code)
		}
		return ""
	})
	mq.start()
	// Publish at once, before the gateway has reconnected: the broker queues it for
	// the gateway's persistent session.
	pub2 := mqttClient(t, d.brokerURL, "pub-restart-2")
	publish(pub2, 30)
	waitReady(t, d.httpAddr, 40*time.Second)
	publish(pub2, 10)
	want := tp.counts(sent)
	eventually(t, 20*time.Second, "after the restart", func() string {
		return diffCounts(httpSpaces(t, d.httpAddr), want)
	})
	// Every space was republished after the reconnect (the restarted broker lost no
	// retained message, but a fresh watcher sees the current values).
	ret := watchRetained(t, d.brokerURL)
	eventually(t, 10*time.Second, "retained after the restart", func() string { return ret.diff(want) })
}

// Home Assistant discovery is sent again whenever homeassistant/status says online.
func TestE2EHomeAssistantBirth(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "data")})
	d := startMain(t, path)
	var got atomic.Int64
	c := mqttClient(t, d.brokerURL, "ha")
	tok := c.Subscribe("homeassistant/sensor/e2e_r1a/occupancy/config", 1, func(paho.Client, paho.Message) { got.Add(1) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	eventually(t, 5*time.Second, "retained discovery config", func() string {
		if got.Load() < 1 {
			return "not received"
		}
		return ""
	})
	before := got.Load()
	if tok := c.Publish("homeassistant/status", 1, false, "offline"); !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("publish timed out")
	}
	time.Sleep(200 * time.Millisecond)
	if g := got.Load(); g != before {
		t.Errorf("discovery sent again on offline: %d messages, want %d", g, before)
	}
	if tok := c.Publish("homeassistant/status", 1, false, "online"); !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("publish timed out")
	}
	eventually(t, 5*time.Second, "discovery after online", func() string {
		if g := got.Load(); g != before+1 {
			return fmt.Sprintf("%d discovery messages, want %d", g, before+1)
		}
		return ""
	})
}
