package mqtt

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The ingest connection keeps a persistent session, so paho runs resume on every
// connect and reconnect, concurrently with whatever the client publishes once its
// status reads connected. A QoS 1 publish stored in that window is sent twice: resume
// sets Dup on the very packet paho's writer is encoding (the data race of paho
// issues 657 and 703, seen here in TestE2EHostilePayloads and
// TestE2EHomeAssistantBirth while the gateway published on this connection), and
// its claimID completes the publish's token before any PUBACK. Publishing goes out
// on the output connection (clean session, no automatic reconnect, publishes only
// after its Connect token, so paho never resumes it); this test holds the ingest
// connection to publishing nothing, through events, Home Assistant's birth message,
// broker-side drops of both connections (reconnect and resume) and Close.
func TestIngestConnectionNeverPublishes(t *testing.T) {
	env := newTestEnv(t)
	px := startPublishSpy(t, env.broker.Addr())
	cfg := env.config()
	cfg.MQTT.Broker = "tcp://" + px.addr()
	st := env.open(cfg)
	defer st.Close()
	g := env.start(cfg, st, nil)
	ingestID, outputID := g.client.names.clientID, g.client.names.clientID+"-pub"

	pub := env.client("pub") // straight to the broker
	now := time.Now().UnixMilli()
	send := func(id int, space string, want int64) {
		t.Helper()
		p := fmt.Sprintf(`{"id":"%d","ts":%d,"direction":1}`, id, now+int64(id))
		if tok := pub.Publish("dpu/d1/events", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		waitOccupancy(t, 10*time.Second, "event counted", g, space, want)
	}
	send(1, "f1", 1)
	pub.Publish("homeassistant/status", 1, false, "online").Wait()
	waitFor(t, 10*time.Second, "discovery and occupancy on the output connection", func() string {
		if n := px.published(outputID); n < 3 {
			return fmt.Sprintf("%d publishes from %s", n, outputID)
		}
		return ""
	})
	for round := 0; round < 3; round++ {
		px.drop()
		waitFor(t, 30*time.Second, "ready after the drop", func() string {
			if px.connects(ingestID) < round+2 {
				return fmt.Sprintf("%d connects of %s", px.connects(ingestID), ingestID)
			}
			if err := g.client.Ready(); err != nil {
				return err.Error()
			}
			return ""
		})
		send(2+round, "f1", int64(2+round))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	if topics := px.topics(ingestID); len(topics) != 0 {
		t.Errorf("the ingest connection (%s, persistent session) published %q, want nothing", ingestID, topics)
	}
	if n := px.connects(outputID); n < 2 {
		t.Errorf("%d connects of the output connection, want at least 2 (it reconnects after a drop)", n)
	}
}

// publishSpy is a TCP proxy in front of the broker that reads what clients send,
// packet by packet, and remembers each client's connects and published topics.
type publishSpy struct {
	ln     net.Listener
	broker string
	mu     sync.Mutex
	conns  []net.Conn
	conn   map[string]int      // client id -> CONNECTs
	pubs   map[string][]string // client id -> topics published
}

func startPublishSpy(t *testing.T, brokerAddr string) *publishSpy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &publishSpy{ln: ln, broker: brokerAddr, conn: map[string]int{}, pubs: map[string][]string{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		p.drop()
	})
	return p
}

func (p *publishSpy) addr() string { return p.ln.Addr().String() }

func (p *publishSpy) serve(c net.Conn) {
	b, err := net.Dial("tcp", p.broker)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, b)
	p.mu.Unlock()
	defer c.Close()
	defer b.Close()
	go func() {
		_, _ = io.Copy(c, b)
		c.Close()
	}()
	id := ""
	for {
		pk, err := packets.ReadPacket(c) // ends with the connection (or a drop)
		if err != nil {
			return
		}
		p.mu.Lock()
		switch pk := pk.(type) {
		case *packets.ConnectPacket:
			id = pk.ClientIdentifier
			p.conn[id]++
		case *packets.PublishPacket:
			p.pubs[id] = append(p.pubs[id], pk.TopicName)
		}
		p.mu.Unlock()
		if err := pk.Write(b); err != nil {
			return
		}
	}
}

// drop closes every connection through the proxy, as a broker restart would.
func (p *publishSpy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *publishSpy) connects(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn[id]
}

func (p *publishSpy) published(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pubs[id])
}

func (p *publishSpy) topics(id string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.pubs[id]...)
}
