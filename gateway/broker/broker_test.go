package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

func testBroker(t *testing.T, o Options) *Broker {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	o.Logger = zerolog.Nop()
	b, err := Start(o)
	if err != nil {
		t.Fatalf("StartBroker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func connectTo(addr, id, user, pass string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetConnectTimeout(3 * time.Second).SetAutoReconnect(false)
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func TestBrokerRefusesOpenNonLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			_, err := Start(Options{Listen: listen, Logger: zerolog.Nop()})
			if !errors.Is(err, ErrOpenBroker) {
				t.Fatalf("Start(%q) error = %v, want ErrOpenBroker", listen, err)
			}
		})
	}
	t.Run("bad address", func(t *testing.T) {
		if _, err := Start(Options{Listen: "nonsense", Logger: zerolog.Nop()}); err == nil {
			t.Fatal("want an error for a listen address without a port")
		}
	})
}

func TestBrokerAuth(t *testing.T) {
	t.Run("loopback without users allows anyone", func(t *testing.T) {
		b := testBroker(t, Options{})
		c, err := connectTo(b.Addr(), "anon", "", "")
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		c.Disconnect(10)
	})
	t.Run("with a user the password is required", func(t *testing.T) {
		b := testBroker(t, Options{Username: "gw", Password: "s3cret"})
		if _, err := connectTo(b.Addr(), "nouser", "", ""); err == nil {
			t.Error("connect without credentials succeeded, want refused")
		}
		if _, err := connectTo(b.Addr(), "wrong", "gw", "guess"); err == nil {
			t.Error("connect with a wrong password succeeded, want refused")
		}
		c, err := connectTo(b.Addr(), "right", "gw", "s3cret")
		if err != nil {
			t.Fatalf("connect with the right password: %v", err)
		}
		c.Disconnect(10)
	})
	t.Run("non-loopback with a user starts", func(t *testing.T) {
		b := testBroker(t, Options{Listen: "0.0.0.0:0", Username: "gw", Password: "pw"})
		if b.Addr() == "" {
			t.Fatal("no address")
		}
	})
}

func TestBrokerRetainedNeverExpires(t *testing.T) {
	b := testBroker(t, Options{})
	if got := b.srv.Options.Capabilities.MaximumMessageExpiryInterval; got != 0 {
		t.Fatalf("MaximumMessageExpiryInterval = %d, want 0 (no expiry)", got)
	}
	pub, err := connectTo(b.Addr(), "pub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(10)
	if tok := pub.Publish("occupancy/x/count", 1, true, "7"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	sub, err := connectTo(b.Addr(), "sub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(10)
	got := make(chan string, 1)
	sub.Subscribe("occupancy/x/count", 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	}).WaitTimeout(5 * time.Second)
	select {
	case v := <-got:
		if v != "7" {
			t.Errorf("retained payload = %q, want 7", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message not delivered")
	}
}

// TestBrokerEventHook: the embedded broker hands event messages to its sink and
// acknowledges a QoS 1 or 2 event only when the sink calls ack (after storing);
// other subscribers still get events, and other topics pass untouched.
func TestBrokerEventHook(t *testing.T) {
	type submitted struct {
		topic, payload string
		ack            func()
	}
	subs := make(chan submitted, 16)
	stopping := make(chan struct{})
	b := testBroker(t, Options{Events: &EventSink{
		Matches: matchesEvents,
		Submit: func(topic string, payload []byte, ack func()) bool {
			subs <- submitted{topic, string(payload), ack}
			return true
		},
		Stopping: stopping,
	}})
	tap, err := connectTo(b.Addr(), "tap", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Disconnect(10)
	tapped := make(chan string, 16)
	if tok := tap.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { tapped <- m.Topic() + " " + string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub, err := connectTo(b.Addr(), "pub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(10)
	next := func(what string) submitted {
		t.Helper()
		select {
		case s := <-subs:
			return s
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not handed to the sink", what)
			return submitted{}
		}
	}
	tapGot := func(want string) {
		t.Helper()
		select {
		case got := <-tapped:
			if got != want {
				t.Errorf("tap got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("tap did not get %q", want)
		}
	}

	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos %d waits for ack", qos), func(t *testing.T) {
			payload := fmt.Sprintf(`{"ts":1,"direction":1,"q":%d}`, qos)
			tok := pub.Publish("dpu/a/events", qos, false, payload)
			s := next("event")
			if s.topic != "dpu/a/events" || s.payload != payload {
				t.Errorf("sink got %q %q, want dpu/a/events %q", s.topic, s.payload, payload)
			}
			if tok.WaitTimeout(300 * time.Millisecond) {
				t.Fatalf("acknowledged before the sink's ack (err %v)", tok.Error())
			}
			s.ack()
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("not acknowledged after the sink's ack: %v", tok.Error())
			}
			tapGot("dpu/a/events " + payload)
		})
	}
	t.Run("qos 0 and other topics", func(t *testing.T) {
		if tok := pub.Publish("dpu/b/events", 0, false, "x"); !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("qos 0 publish")
		}
		if s := next("qos 0 event"); s.topic != "dpu/b/events" || s.payload != "x" {
			t.Errorf("sink got %q %q", s.topic, s.payload)
		}
		tapGot("dpu/b/events x")
		if tok := pub.Publish("other/b", 1, false, "y"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish on another topic: %v", tok.Error())
		}
		tapGot("other/b y")
		select {
		case s := <-subs:
			t.Errorf("sink got %q, which matches no events filter", s.topic)
		default:
		}
	})
}

// TestBrokerPubackOrder: a connection's PUBACKs leave in the order its PUBLISHes
// arrived, whatever order the gateway stores them in (MQTT 4.6). A raw MQTT 3.1.1
// client, so the order on the wire is what is checked.
func TestBrokerPubackOrder(t *testing.T) {
	acks := make(chan func(), 16)
	b := testBroker(t, Options{Events: &EventSink{
		Matches:  matchesEvents,
		Submit:   func(_ string, _ []byte, ack func()) bool { acks <- ack; return true },
		Stopping: make(chan struct{}),
	}})
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	write := func(pk packets.Packet, enc func(*bytes.Buffer) error) {
		t.Helper()
		var buf bytes.Buffer
		if err := enc(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	read := func(n int, within time.Duration) ([]byte, error) {
		_ = conn.SetReadDeadline(time.Now().Add(within))
		p := make([]byte, n)
		_, err := io.ReadFull(conn, p)
		return p, err
	}
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "raw"}}
	write(connect, connect.ConnectEncode)
	if p, err := read(4, 5*time.Second); err != nil || p[0] != 0x20 || p[3] != 0 {
		t.Fatalf("CONNACK: % x, %v", p, err)
	}
	var ack []func()
	for id := uint16(1); id <= 3; id++ {
		pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4,
			TopicName: "dpu/a/events", PacketID: id, Payload: []byte(`{"ts":1,"direction":1}`)}
		write(pub, pub.PublishEncode)
		select {
		case a := <-acks:
			ack = append(ack, a)
		case <-time.After(5 * time.Second):
			t.Fatalf("PUBLISH %d not handed to the sink", id)
		}
	}
	ack[2]() // the third is stored first: its PUBACK waits for 1 and 2
	if p, err := read(4, 300*time.Millisecond); err == nil {
		t.Fatalf("PUBACK % x sent before the earlier PUBLISHes were stored", p)
	}
	ack[0]()
	ack[0]() // a second call changes nothing
	ack[1]()
	for _, want := range []uint16{1, 2, 3} {
		p, err := read(4, 5*time.Second)
		if err != nil {
			t.Fatalf("PUBACK %d: %v", want, err)
		}
		if got := uint16(p[2])<<8 | uint16(p[3]); p[0] != 0x40 || got != want {
			t.Fatalf("got packet % x, want PUBACK %d", p, want)
		}
	}
}

// matchesEvents matches dpu/+/events, the default events filter.
func matchesEvents(topic string) bool {
	l := strings.Split(topic, "/")
	return len(l) == 3 && l[0] == "dpu" && l[2] == "events"
}
