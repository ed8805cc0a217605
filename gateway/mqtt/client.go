// Package mqtt is the gateway's one MQTT client (paho), for the embedded broker and
// an external one alike: connect with a persistent session (fixed client id, clean
// session off) and manual acknowledgements, subscribe the events filters and hand
// every event message to the ingest pipeline (which acknowledges once durable),
// reconnect (the tracker's horizon holds still meanwhile), the retained status
// (online, offline as last will and on a clean stop), and everything published:
// the occupancy topics of the spaces the tracker's change feed reports, the Home
// Assistant discovery configs, cleared topics of removed spaces and the rejected
// topic.
//
// For now the occupancy topics go out once per engine tick (the feed is drained
// when the tracker signals a tick), coalesced: one publish per changed space.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/mqttconn"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Tracker is what the client needs from the tracker (*tracker.Tracker).
type Tracker interface {
	Spaces() []occupancy.Occupancy
	Space(id string) (occupancy.Occupancy, bool)
	Hold()
	Subscribe() *tracker.Subscription
}

// Events takes the event messages the client receives (*ingest.Pipeline).
type Events interface {
	Submit(m ingest.Message) bool
	Now() int64
}

// Options configure a Client. Broker, Tracker and Events are required.
type Options struct {
	// Broker is the broker's URL (tcp://, ssl://, ws://; the embedded broker's
	// tcp://address).
	Broker string
	// MQTT is the mqtt section, its derived defaults applied (config.ApplyDefaults);
	// GatewayID is gateway.id.
	MQTT      config.MQTTConfig
	GatewayID string
	// EventsViaBroker: the embedded broker hands event messages to the pipeline
	// itself (its event hook), so the client does not subscribe to them.
	EventsViaBroker bool
	Tracker         Tracker
	Events          Events
	// Rejected are the rejections to publish on the rejected topic (QoS 0, dropped
	// while disconnected); nil: none.
	Rejected <-chan ingest.Outgoing
	Metrics  *metrics.Metrics // nil: a fresh set nobody reads
	Logger   zerolog.Logger
}

// names are the topics that follow from the config.
type names struct {
	clientID      string
	statusTopic   string
	rejectedTopic string
	outputPrefix  string
	haPrefix      string
	haEnabled     bool
	filters       []string
}

func deriveNames(c config.MQTTConfig) names {
	n := names{
		clientID:      c.ClientID,
		statusTopic:   c.StatusTopic,
		rejectedTopic: c.RejectedTopic,
		outputPrefix:  c.OutputPrefix,
		haPrefix:      c.HomeAssistant.DiscoveryPrefix,
		haEnabled:     c.HomeAssistant.Enabled,
		filters:       append([]string(nil), c.EventsTopic...),
	}
	if n.outputPrefix == "" {
		n.outputPrefix = "occupancy"
	}
	if n.haPrefix == "" {
		n.haPrefix = "homeassistant"
	}
	if len(n.filters) == 0 {
		n.filters = []string{"dpu/+/events"}
	}
	return n
}

// Client is the gateway's MQTT client.
type Client struct {
	opts    Options
	names   names
	tr      Tracker
	feed    *tracker.Subscription
	metrics *metrics.Metrics
	log     zerolog.Logger

	c       paho.Client
	connTok paho.Token // the initial Connect; waited for before Disconnect (paho #550)

	connected  atomic.Bool
	subscribed atomic.Bool

	closed   chan struct{} // Close: the loops end
	final    chan struct{} // the final flush: publishes no longer wait for slots
	finalMu  sync.Once
	loops    sync.WaitGroup
	started  atomic.Bool
	closeOne sync.Once

	// QoS 1 publishes in flight are bounded: paho finds a free packet id by scanning
	// the ids in use, so tens of thousands outstanding (every space of a campus each
	// tick, while the broker is busy) made each publish O(n) and the gateway
	// CPU-bound. A slot is freed when the broker acknowledges (or after a timeout).
	slots   chan struct{}
	pending chan paho.Token

	subMu sync.Mutex // one (re)subscription at a time
	pubMu sync.Mutex // one pass over the occupancy topics at a time
}

// ReadPasswordFile reads mqtt.password_file ("" = no password), trimming one
// trailing newline.
func ReadPasswordFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("mqtt.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// tlsConfig builds the client TLS config from mqtt.tls (nil when nothing is set).
func tlsConfig(c config.TLSConfig) (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca_file: no PEM certificate in %s", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("mqtt.tls: cert_file and key_file go together")
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// New configures the client (credentials and TLS files are read here, so a bad
// one is an error at start); nothing connects until Start.
func New(o Options) (*Client, error) {
	if o.Broker == "" || o.Tracker == nil || o.Events == nil {
		return nil, errors.New("mqtt: a broker URL, a tracker and an events pipeline are required")
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	m := &Client{
		opts:    o,
		names:   deriveNames(o.MQTT),
		tr:      o.Tracker,
		metrics: o.Metrics,
		log:     o.Logger,
		closed:  make(chan struct{}),
		final:   make(chan struct{}),
		slots:   make(chan struct{}, maxPublishInFlight),
		pending: make(chan paho.Token, maxPublishInFlight),
	}
	names := m.names
	po := paho.NewClientOptions()
	po.AddBroker(o.Broker)
	po.SetClientID(names.clientID)
	po.SetCleanSession(false)
	po.SetAutoAckDisabled(true)
	po.SetOrderMatters(false)
	po.SetResumeSubs(false) // onConnect subscribes every filter itself
	po.SetAutoReconnect(true)
	po.SetConnectRetry(true)
	po.SetConnectRetryInterval(time.Second)
	po.SetMaxReconnectInterval(30 * time.Second)
	po.SetConnectTimeout(10 * time.Second)
	po.SetKeepAlive(30 * time.Second)
	po.SetWriteTimeout(10 * time.Second)
	po.SetWill(names.statusTopic, "offline", 1, true)
	if o.MQTT.Username != "" {
		po.SetUsername(o.MQTT.Username)
	}
	password, err := ReadPasswordFile(o.MQTT.PasswordFile)
	if err != nil {
		return nil, err
	}
	if password != "" {
		po.SetPassword(password)
	}
	tc, err := tlsConfig(o.MQTT.TLS)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		po.SetTLSConfig(tc)
	}
	// paho reads a packet in about three system calls and writes each PUBACK with
	// one; the connection is read through a buffer and small writes are coalesced.
	po.SetCustomOpenConnectionFn(mqttconn.Open)
	// Routes and the default handler are registered before Connect: with a persistent
	// session the broker may deliver queued messages right after CONNACK, before
	// onConnect has subscribed (paho issue 637).
	po.SetDefaultPublishHandler(m.onMessage)
	po.SetOnConnectHandler(m.onConnect)
	po.SetConnectionLostHandler(m.onLost)
	po.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		m.log.Info().Str("broker", o.Broker).Msg("reconnecting to the MQTT broker")
	})
	// Failed attempts (refused credentials, TLS, broker down) are logged at most
	// once per 10 s: with retries on, paho reports them nowhere else.
	connLog := m.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 10 * time.Second})
	po.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationFailed); ok {
			connLog.Warn().Err(f.Reason).Str("broker", o.Broker).Msg("MQTT connection attempt failed; retrying")
		}
	})
	m.c = paho.NewClient(po)
	for _, f := range names.filters {
		m.c.AddRoute(f, m.onMessage)
	}
	if names.haEnabled {
		m.c.AddRoute(names.haPrefix+"/status", m.onHAStatus)
	}
	m.log.Info().Str("broker", o.Broker).Str("client_id", names.clientID).
		Strs("events_topic", names.filters).Msg("mqtt client configured")
	return m, nil
}

// Start subscribes to the tracker's change feed, starts the publishing loops and
// connects in the background (with retries); Ready says when it is connected and
// subscribed.
func (m *Client) Start() {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	m.feed = m.tr.Subscribe()
	go m.reap()
	m.loops.Add(2)
	go func() {
		defer m.loops.Done()
		m.publishLoop()
	}()
	go func() {
		defer m.loops.Done()
		m.rejectedLoop()
	}()
	tok := m.c.Connect()
	m.connTok = tok
	go func() {
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				m.log.Error().Err(err).Msg("mqtt connect")
			}
		case <-m.closed:
		}
	}()
}

// Ready is nil once the client is connected and subscribed.
func (m *Client) Ready() error {
	switch {
	case !m.connected.Load():
		return errors.New("not connected to the MQTT broker")
	case !m.subscribed.Load():
		return errors.New("not subscribed to the events topics yet")
	}
	return nil
}

// onMessage receives an event message and hands it to the ingest pipeline.
func (m *Client) onMessage(_ paho.Client, msg paho.Message) {
	m.opts.Events.Submit(ingest.Message{
		Topic:    msg.Topic(),
		Payload:  msg.Payload(),
		Ack:      msg.Ack,
		Received: m.opts.Events.Now(),
	})
}

// onHAStatus republishes the discovery configs when Home Assistant comes online.
func (m *Client) onHAStatus(_ paho.Client, msg paho.Message) {
	defer msg.Ack()
	if strings.TrimSpace(string(msg.Payload())) == "online" {
		m.log.Info().Msg("home assistant online: sending discovery")
		m.publishDiscoveryAll(m.closed)
	}
}

func (m *Client) onConnect(c paho.Client) {
	m.connected.Store(true)
	m.metrics.MQTTConnected.Set(1)
	m.log.Info().Msg("connected to the MQTT broker")
	// The horizon holds still: a backlog the broker delivers now is pending, not late.
	m.tr.Hold()
	if !m.subscribe(c) {
		return
	}
	m.publish(m.names.statusTopic, 1, true, []byte("online"))
	m.publishAll()
}

// subscribe subscribes every events filter (and the HA status topic) with QoS 1 and
// marks the client subscribed once the SUBACK grants them all. It retries while
// connected.
func (m *Client) subscribe(c paho.Client) bool {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	filters := map[string]byte{}
	if !m.opts.EventsViaBroker {
		for _, f := range m.names.filters {
			filters[f] = 1
		}
	}
	if m.names.haEnabled {
		filters[m.names.haPrefix+"/status"] = 1
	}
	if len(filters) == 0 {
		m.subscribed.Store(true)
		return true
	}
	for attempt := 0; ; attempt++ {
		select {
		case <-m.closed:
			return false
		default:
		}
		if !c.IsConnectionOpen() {
			return false
		}
		tok := c.SubscribeMultiple(filters, nil)
		var err error
		if !tok.WaitTimeout(10 * time.Second) {
			err = errors.New("timed out waiting for SUBACK")
		} else if err = tok.Error(); err == nil {
			if st, ok := tok.(*paho.SubscribeToken); ok {
				for f, code := range st.Result() {
					switch {
					case code <= 2:
					case f == m.names.haPrefix+"/status" && m.names.haEnabled:
						// Not needed for events: discovery is still sent on connect.
						m.log.Warn().Str("topic", f).Msg("broker refused the Home Assistant status subscription")
					default:
						err = fmt.Errorf("broker refused subscription %q (code %#x)", f, code)
					}
				}
			}
		}
		if err == nil {
			m.subscribed.Store(true)
			m.log.Info().Strs("filters", m.names.filters).Msg("subscribed")
			return true
		}
		m.log.Error().Err(err).Int("attempt", attempt+1).Msg("subscribe")
		select {
		case <-m.closed:
			return false
		case <-time.After(time.Second):
		}
	}
}

func (m *Client) onLost(_ paho.Client, err error) {
	m.connected.Store(false)
	m.subscribed.Store(false)
	m.metrics.MQTTConnected.Set(0)
	m.log.Warn().Err(err).Msg("lost the MQTT connection")
}

// maxPublishInFlight bounds the gateway's unacknowledged QoS 1 publishes.
const maxPublishInFlight = 1024

// publish sends one message without waiting for its acknowledgement; a QoS 1 publish
// waits for a slot while maxPublishInFlight are unacknowledged.
func (m *Client) publish(topic string, qos byte, retained bool, payload []byte) paho.Token {
	m.metrics.Publishes.Inc()
	if qos == 0 {
		return m.c.Publish(topic, qos, retained, payload)
	}
	select {
	case m.slots <- struct{}{}:
	case <-m.closed: // stopping: the offline status goes out untracked
		return m.c.Publish(topic, qos, retained, payload)
	case <-m.final: // the final flush must not wait for a gone broker
		return m.c.Publish(topic, qos, retained, payload)
	}
	tok := m.c.Publish(topic, qos, retained, payload)
	m.pending <- tok // never blocks: as many places as slots
	return tok
}

// reap frees a publish slot as each tracked publish completes, oldest first (the
// broker acknowledges in order).
func (m *Client) reap() {
	for {
		select {
		case tok := <-m.pending:
			select {
			case <-tok.Done():
			case <-time.After(10 * time.Second):
			case <-m.closed:
				return
			}
			<-m.slots
		case <-m.closed:
			return
		}
	}
}

// finalFlushBudget bounds the last publish of a stop: each publish can wait on a
// broker that stopped reading (paho's write timeout).
const finalFlushBudget = 5 * time.Second

// Close publishes what changed since the last tick (within finalFlushBudget and
// ctx: the caller runs the final tick first), then `offline` (retained), and
// disconnects. Subscriptions stay with the persistent session so the broker queues
// events while the gateway is stopped.
func (m *Client) Close(ctx context.Context) error {
	var err error
	m.closeOne.Do(func() { err = m.close(ctx) })
	return err
}

func (m *Client) close(ctx context.Context) error {
	if m.started.Load() {
		m.finalMu.Do(func() { close(m.final) })
		fctx, cancel := context.WithTimeout(ctx, finalFlushBudget)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.flush(m.closed)
		}()
		select {
		case <-done:
		case <-fctx.Done():
			m.log.Warn().Msg("final publish: the broker did not take the last occupancy updates in time; stopping without them")
		}
		cancel()
	}
	close(m.closed)
	m.loops.Wait()
	if m.feed != nil {
		m.feed.Close()
	}
	var err error
	if m.c.IsConnectionOpen() {
		tok := m.publish(m.names.statusTopic, 1, true, []byte("offline"))
		wait := 2 * time.Second
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = max(time.Until(dl), 0)
		}
		if !tok.WaitTimeout(wait) {
			err = errors.New("mqtt: timed out publishing offline status")
		} else if tok.Error() != nil {
			err = fmt.Errorf("mqtt: publish offline status: %w", tok.Error())
		}
	}
	// paho races when Disconnect overlaps the tail of its Connect goroutine (resume
	// of the persistent session); let that finish first when it is about to.
	if m.connTok != nil {
		m.connTok.WaitTimeout(time.Second)
	}
	if m.started.Load() {
		m.c.Disconnect(250)
	}
	m.connected.Store(false)
	m.subscribed.Store(false)
	return err
}
