package gateway

import (
	"errors"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

func testBroker(t *testing.T, o BrokerOptions) *Broker {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	o.Logger = zerolog.Nop()
	b, err := StartBroker(o)
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
			_, err := StartBroker(BrokerOptions{Listen: listen, Logger: zerolog.Nop()})
			if !errors.Is(err, ErrOpenBroker) {
				t.Fatalf("StartBroker(%q) error = %v, want ErrOpenBroker", listen, err)
			}
		})
	}
	t.Run("bad address", func(t *testing.T) {
		if _, err := StartBroker(BrokerOptions{Listen: "nonsense", Logger: zerolog.Nop()}); err == nil {
			t.Fatal("want an error for a listen address without a port")
		}
	})
}

func TestBrokerAuth(t *testing.T) {
	t.Run("loopback without users allows anyone", func(t *testing.T) {
		b := testBroker(t, BrokerOptions{})
		c, err := connectTo(b.Addr(), "anon", "", "")
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		c.Disconnect(10)
	})
	t.Run("with a user the password is required", func(t *testing.T) {
		b := testBroker(t, BrokerOptions{Username: "gw", Password: "s3cret"})
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
		b := testBroker(t, BrokerOptions{Listen: "0.0.0.0:0", Username: "gw", Password: "pw"})
		if b.Addr() == "" {
			t.Fatal("no address")
		}
	})
}

func TestBrokerRetainedNeverExpires(t *testing.T) {
	b := testBroker(t, BrokerOptions{})
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
