// Package broker is the embedded MQTT broker (mochi-mqtt) that runs when
// mqtt.broker is empty: listening (loopback unless users are configured), the
// username/password check, retained messages that never expire, and the event hook
// that takes event messages straight to the ingest pipeline and sends each PUBACK
// only once the events are durable. It knows the pipeline only as an EventSink.
package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/rs/zerolog"
)

// Options configure the embedded MQTT broker.
type Options struct {
	Listen   string // host:port; loopback unless Username and Password are set
	Username string // with Password: every client must present them
	Password string
	Logger   zerolog.Logger
	// Events, when set, takes every message published on an events filter from the
	// broker itself (see eventHook); the gateway's own client then does not
	// subscribe to them.
	Events *EventSink
}

// EventSink is where the embedded broker hands event messages (the ingest
// pipeline: Matches, SubmitEmbedded, Stopping).
type EventSink struct {
	// Matches reports whether a topic is an events topic.
	Matches func(topic string) bool
	// Submit queues one message for storage and returns false when the gateway is
	// stopping (the message is not taken); ack is called once it is durable (or
	// rejected and recorded).
	Submit func(topic string, payload []byte, ack func()) bool
	// Stopping is closed when the gateway stops taking messages.
	Stopping <-chan struct{}
}

// Broker is the embedded mochi-mqtt broker (mqtt.broker "").
type Broker struct {
	srv  *mochi.Server
	tcp  *listeners.TCP
	addr string
}

// ErrOpenBroker refuses an embedded broker on a non-loopback address without users.
var ErrOpenBroker = errors.New("embedded broker on a non-loopback address needs mqtt.username and mqtt.password_file")

// isLoopback reports whether a listen address only accepts local connections.
func isLoopback(listen string) (bool, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("mqtt.embedded.listen %q: %w", listen, err)
	}
	return config.IsLoopbackHost(host), nil
}

// Start starts the embedded broker and returns once it listens. Retained
// messages never expire (retained occupancy must outlive any idle period), client
// inflight and write queues are raised so a connected gateway is not dropped from.
func Start(o Options) (*Broker, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:1883"
	}
	loop, err := isLoopback(o.Listen)
	if err != nil {
		return nil, err
	}
	if !loop && (o.Username == "" || o.Password == "") {
		return nil, fmt.Errorf("mqtt.embedded.listen %q: %w", o.Listen, ErrOpenBroker)
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0 // 0: retained messages never expire
	caps.MaximumInflight = 65535          // per client; QoS messages are never dropped below it
	caps.MaximumClientWritesPending = 64 * 1024
	caps.ReceiveMaximum = 65535
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		Logger:       slog.New(&slogBridge{log: o.Logger.With().Str("component", "broker").Logger()}),
		InlineClient: o.Events != nil, // eventHook forwards what it takes to other subscribers
	})
	if err := srv.AddHook(&authHook{user: []byte(o.Username), pass: []byte(o.Password)}, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if o.Events != nil {
		if err := srv.AddHook(&eventHook{srv: srv, sink: o.Events}, nil); err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "occupancyd-tcp", Address: o.Listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("embedded broker listen on %s: %w", o.Listen, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	b := &Broker{srv: srv, tcp: tcp, addr: tcp.Address()}
	o.Logger.Info().Str("listen", b.addr).Bool("auth", o.Username != "").Msg("embedded MQTT broker started")
	return b, nil
}

// Addr is the address the broker listens on (the real port when listening on :0).
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker. It closes the listener and disconnects its clients
// itself before mochi's Close, whose way of listing them (v2.7.9
// Clients.GetByListener) takes the clients' read lock twice: a client connecting or
// leaving in between queues a writer and deadlocks Close. A CI run hung that way in
// a test's cleanup, and a daemon stopping while its own client disconnects and DPUs
// reconnect is the same race. GetAll takes the lock once; mochi's Close then finds
// the listener closed and closes nothing twice.
func (b *Broker) Close() error {
	b.srv.Listeners.CloseAll(func(listener string) {
		for _, cl := range b.srv.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
	return b.srv.Close()
}

// authHook allows every client when no user is configured (loopback only), else
// requires the configured username and password.
type authHook struct {
	mochi.HookBase
	user, pass []byte
}

func (h *authHook) ID() string { return "occupancyd-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	if len(h.user) == 0 {
		return true
	}
	u := subtle.ConstantTimeCompare(cl.Properties.Username, h.user)
	p := subtle.ConstantTimeCompare(pk.Connect.Password, h.pass)
	return u&p == 1
}

func (h *authHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// eventHook is the embedded broker's ingest. mochi acknowledges a QoS 1 PUBLISH
// as soon as its hooks return, before any subscriber has it: were the gateway a
// subscriber like any other, a kill -9 would lose every event a DPU had seen
// acknowledged but the gateway had not stored yet (hundreds in
// TestE2EKill9EmbeddedBroker). So the hook takes event messages itself, hands them
// to the gateway's ingest, and acknowledges only when the gateway calls ack:
//   - QoS 1: the hook returns at once (the client's next packets are read
//     meanwhile, so a connection keeps many events in flight and they share group
//     commits); mochi is told not to acknowledge, and ack writes the PUBACK.
//     Other subscribers of the events topics get the message from the broker's
//     inline client;
//   - QoS 2 and retained messages (no DPU sends these) wait in the hook for ack,
//     then mochi completes its usual flow;
//   - QoS 0 is handed over and forwarded as usual.
//
// A message the gateway does not take (stopping) is not acknowledged: the client
// sends it again when it reconnects, and the store drops it if it was a duplicate.
// A connection's PUBACKs leave in the order of its PUBLISHes (pubackOrder).
type eventHook struct {
	mochi.HookBase
	srv    *mochi.Server
	sink   *EventSink
	orders sync.Map // *mochi.Client -> *pubackOrder
}

// pubackOrder sends one connection's PUBACKs in the order its PUBLISHes arrived, as
// MQTT asks (3.1.1 and 5, section 4.6): the ingest workers store batches
// concurrently, so acks come back in any order, and some device MQTT stacks expect
// the oldest first. The writes happen on a goroutine that exists only while there
// are PUBACKs to write, so a client that stops reading its socket holds up its own
// PUBACKs, not the ingest's acker.
type pubackOrder struct {
	cl      *mochi.Client
	mu      sync.Mutex
	base    uint64       // sequence number of pending[0]
	pending []pubackSlot // PUBLISHes from base on, in arrival order
	ready   []uint16     // PUBACKs to write, in order
	writing bool
}

type pubackSlot struct {
	id    uint16
	state uint8 // 0 waiting, 1 acknowledge, 2 never (not taken)
}

// add registers a PUBLISH and returns its sequence number.
func (o *pubackOrder) add(id uint16) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending = append(o.pending, pubackSlot{id: id})
	return o.base + uint64(len(o.pending)-1)
}

// done settles PUBLISH seq (ack: send its PUBACK) and queues every PUBACK now due.
func (o *pubackOrder) done(seq uint64, ack bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[seq-o.base].state = 2
	if ack {
		o.pending[seq-o.base].state = 1
	}
	n := 0
	for n < len(o.pending) && o.pending[n].state != 0 {
		if o.pending[n].state == 1 {
			o.ready = append(o.ready, o.pending[n].id)
		}
		n++
	}
	if n == 0 {
		return
	}
	o.pending = append(o.pending[:0], o.pending[n:]...)
	o.base += uint64(n)
	if len(o.ready) > 0 && !o.writing {
		o.writing = true
		go o.write()
	}
}

// write sends the queued PUBACKs until none are left. A failed write means the
// client is gone: it sends the unacknowledged messages again when it reconnects.
func (o *pubackOrder) write() {
	var batch []uint16
	for {
		o.mu.Lock()
		if len(o.ready) == 0 {
			o.writing = false
			o.mu.Unlock()
			return
		}
		batch, o.ready = o.ready, batch[:0]
		o.mu.Unlock()
		for _, id := range batch {
			_ = o.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		}
	}
}

func (h *eventHook) ID() string { return "occupancyd-events" }

func (h *eventHook) Provides(b byte) bool { return b == mochi.OnPublish || b == mochi.OnDisconnect }

// order is the client's PUBACK sequencer.
func (h *eventHook) order(cl *mochi.Client) *pubackOrder {
	if o, ok := h.orders.Load(cl); ok {
		return o.(*pubackOrder)
	}
	o, _ := h.orders.LoadOrStore(cl, &pubackOrder{cl: cl})
	return o.(*pubackOrder)
}

func (h *eventHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) { h.orders.Delete(cl) }

func (h *eventHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !h.sink.Matches(pk.TopicName) {
		return pk, nil
	}
	payload := bytes.Clone(pk.Payload)
	switch qos := pk.FixedHeader.Qos; {
	case qos == 0:
		h.sink.Submit(pk.TopicName, payload, func() {})
		return pk, nil
	case qos == 1 && !pk.FixedHeader.Retain:
		o := h.order(cl)
		seq := o.add(pk.PacketID)
		var once sync.Once
		ack := func() { once.Do(func() { o.done(seq, true) }) }
		if !h.sink.Submit(pk.TopicName, payload, ack) {
			o.done(seq, false)
			return pk, packets.ErrRejectPacket
		}
		_ = h.srv.Publish(pk.TopicName, pk.Payload, false, 1)
		return pk, packets.ErrRejectPacket // acknowledged by ack, not by mochi
	default:
		done := make(chan struct{})
		var once sync.Once
		if !h.sink.Submit(pk.TopicName, payload, func() { once.Do(func() { close(done) }) }) {
			return pk, packets.ErrRejectPacket
		}
		select {
		case <-done:
			return pk, nil
		case <-h.sink.Stopping:
			select {
			case <-done:
				return pk, nil
			default:
				return pk, packets.ErrRejectPacket
			}
		}
	}
}

// slogBridge forwards mochi's slog records at warn and above to zerolog.
type slogBridge struct {
	log   zerolog.Logger
	attrs []slog.Attr
}

func (s *slogBridge) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (s *slogBridge) Handle(_ context.Context, r slog.Record) error {
	e := s.log.Warn()
	closing := false
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.String()
		for _, m := range []string{"use of closed network connection", "broken pipe", "connection reset by peer", "EOF"} {
			closing = closing || strings.Contains(v, m)
		}
		return !closing
	})
	if closing { // a client connection ending as the broker stops: not a problem
		e = s.log.Debug()
	}
	if r.Level >= slog.LevelError && !closing {
		e = s.log.Error()
	}
	for _, a := range s.attrs {
		e = e.Str(a.Key, clip(a.Value.String()))
	}
	r.Attrs(func(a slog.Attr) bool {
		e = e.Str(a.Key, clip(a.Value.String()))
		return true
	})
	e.Msg(r.Message)
	return nil
}

func (s *slogBridge) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &slogBridge{log: s.log, attrs: append(append([]slog.Attr(nil), s.attrs...), attrs...)}
}

func (s *slogBridge) WithGroup(string) slog.Handler { return s }

// clip keeps log values short (mochi logs whole packets).
func clip(v string) string {
	if len(v) > 200 {
		return v[:200] + "..."
	}
	return v
}
