package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/mqttconn"
	"github.com/rs/zerolog"
)

// mqttClient is the one paho client of the gateway, used for the embedded broker and
// for an external one alike.
type mqttClient struct {
	g       *Gateway
	c       paho.Client
	closed  chan struct{}
	connTok paho.Token // the initial Connect; waited for before Disconnect (paho #550)

	// QoS 1 publishes in flight are bounded: paho finds a free packet id by scanning
	// the ids in use, so tens of thousands outstanding (every space of a campus each
	// tick, while the broker is busy) made each publish O(n) and the gateway
	// CPU-bound. A slot is freed when the broker acknowledges (or after a timeout).
	slots   chan struct{}
	pending chan paho.Token

	subMu sync.Mutex // one (re)subscription at a time
}

// readPassword reads mqtt.password_file ("" = no password), trimming one trailing
// newline.
func readPassword(path string) (string, error) {
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

func newMQTTClient(g *Gateway) (*mqttClient, error) {
	cfg := g.Config()
	names := g.names
	m := &mqttClient{g: g, closed: make(chan struct{}),
		slots: make(chan struct{}, maxPublishInFlight), pending: make(chan paho.Token, maxPublishInFlight)}
	go m.reap()

	broker := cfg.MQTT.Broker
	if broker == "" {
		if g.broker == nil {
			return nil, errors.New("mqtt: no broker URL and no embedded broker")
		}
		broker = "tcp://" + g.broker.Addr()
	}
	o := paho.NewClientOptions()
	o.AddBroker(broker)
	o.SetClientID(names.clientID)
	o.SetCleanSession(false)
	o.SetAutoAckDisabled(true)
	o.SetOrderMatters(false)
	o.SetResumeSubs(false) // OnConnect subscribes every filter itself
	o.SetAutoReconnect(true)
	o.SetConnectRetry(true)
	o.SetConnectRetryInterval(time.Second)
	o.SetMaxReconnectInterval(30 * time.Second)
	o.SetConnectTimeout(10 * time.Second)
	o.SetKeepAlive(30 * time.Second)
	o.SetWriteTimeout(10 * time.Second)
	o.SetWill(names.statusTopic, "offline", 1, true)
	if cfg.MQTT.Username != "" {
		o.SetUsername(cfg.MQTT.Username)
	}
	password, err := readPassword(cfg.MQTT.PasswordFile)
	if err != nil {
		return nil, err
	}
	if password != "" {
		o.SetPassword(password)
	}
	tc, err := tlsConfig(cfg.MQTT.TLS)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	// paho reads a packet in about three system calls and writes each PUBACK with
	// one; the connection is read through a buffer and small writes are coalesced.
	o.SetCustomOpenConnectionFn(mqttconn.Open)
	// Routes and the default handler are registered before Connect: with a persistent
	// session the broker may deliver queued messages right after CONNACK, before
	// OnConnect has subscribed (paho issue 637).
	o.SetDefaultPublishHandler(m.onMessage)
	o.SetOnConnectHandler(m.onConnect)
	o.SetConnectionLostHandler(m.onLost)
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		g.log.Info().Str("broker", broker).Msg("reconnecting to the MQTT broker")
	})
	// Failed attempts (refused credentials, TLS, broker down) are logged at a bounded
	// rate: with retries on, paho reports them nowhere else.
	connLog := newRateLog(g.log, 10*time.Second)
	o.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationFailed); ok {
			connLog.log(func(e *zerolog.Event) *zerolog.Event {
				return e.Err(f.Reason).Str("broker", broker)
			}, "MQTT connection attempt failed; retrying")
		}
	})
	m.c = paho.NewClient(o)
	for _, f := range names.filters {
		m.c.AddRoute(f, m.onMessage)
	}
	if names.haEnabled {
		m.c.AddRoute(names.haPrefix+"/status", m.onHAStatus)
	}
	g.log.Info().Str("broker", broker).Str("client_id", names.clientID).
		Strs("events_topic", names.filters).Msg("mqtt client configured")
	return m, nil
}

// connect starts connecting in the background (with retries).
func (m *mqttClient) connect() {
	tok := m.c.Connect()
	m.connTok = tok
	go func() {
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				m.g.log.Error().Err(err).Msg("mqtt connect")
			}
		case <-m.closed:
		}
	}()
}

// onMessage receives an event message and hands it to the ingest workers.
func (m *mqttClient) onMessage(_ paho.Client, msg paho.Message) {
	in := inMsg{
		topic:    msg.Topic(),
		payload:  msg.Payload(),
		ack:      msg.Ack,
		received: m.g.nowMS(),
	}
	m.g.ing.submit(in)
}

// onHAStatus republishes the discovery configs when Home Assistant comes online.
func (m *mqttClient) onHAStatus(_ paho.Client, msg paho.Message) {
	defer msg.Ack()
	if strings.TrimSpace(string(msg.Payload())) == "online" {
		m.g.log.Info().Msg("home assistant online: sending discovery")
		m.g.publishDiscoveryAll()
	}
}

func (m *mqttClient) onConnect(c paho.Client) {
	g := m.g
	g.connected.Store(true)
	g.metrics.MQTTConnected.Set(1)
	g.log.Info().Msg("connected to the MQTT broker")
	// The horizon holds still: a backlog the broker delivers now is pending, not late.
	g.hold()
	if !m.subscribe(c) {
		return
	}
	m.publish(m.g.names.statusTopic, 1, true, []byte("online"))
	g.clearPending()
	g.publishAllSpaces()
	g.publishDiscoveryAll()
}

// subscribe subscribes every events filter (and the HA status topic) with QoS 1 and
// marks the gateway subscribed once the SUBACK grants them all. It retries while
// connected.
func (m *mqttClient) subscribe(c paho.Client) bool {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	filters := map[string]byte{}
	if m.g.broker == nil { // the embedded broker hands events over itself (eventHook)
		for _, f := range m.g.names.filters {
			filters[f] = 1
		}
	}
	if m.g.names.haEnabled {
		filters[m.g.names.haPrefix+"/status"] = 1
	}
	if len(filters) == 0 {
		m.g.subscribed.Store(true)
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
					case f == m.g.names.haPrefix+"/status" && m.g.names.haEnabled:
						// Not needed for events: discovery is still sent on connect.
						m.g.log.Warn().Str("topic", f).Msg("broker refused the Home Assistant status subscription")
					default:
						err = fmt.Errorf("broker refused subscription %q (code %#x)", f, code)
					}
				}
			}
		}
		if err == nil {
			m.g.subscribed.Store(true)
			m.g.log.Info().Strs("filters", m.g.names.filters).Msg("subscribed")
			return true
		}
		m.g.log.Error().Err(err).Int("attempt", attempt+1).Msg("subscribe")
		select {
		case <-m.closed:
			return false
		case <-time.After(time.Second):
		}
	}
}

func (m *mqttClient) onLost(_ paho.Client, err error) {
	m.g.connected.Store(false)
	m.g.subscribed.Store(false)
	m.g.metrics.MQTTConnected.Set(0)
	m.g.log.Warn().Err(err).Msg("lost the MQTT connection")
}

// maxPublishInFlight bounds the gateway's unacknowledged QoS 1 publishes.
const maxPublishInFlight = 1024

// publish sends one message without waiting for its acknowledgement; a QoS 1 publish
// waits for a slot while maxPublishInFlight are unacknowledged.
func (m *mqttClient) publish(topic string, qos byte, retained bool, payload []byte) paho.Token {
	m.g.metrics.Publishes.Inc()
	if qos == 0 {
		return m.c.Publish(topic, qos, retained, payload)
	}
	var stopping <-chan struct{}
	if m.g.runCtx != nil {
		stopping = m.g.runCtx.Done()
	}
	select {
	case m.slots <- struct{}{}:
	case <-m.closed: // stopping: the offline status goes out untracked
		return m.c.Publish(topic, qos, retained, payload)
	case <-stopping: // Close's final tick must not wait for a gone broker
		return m.c.Publish(topic, qos, retained, payload)
	}
	tok := m.c.Publish(topic, qos, retained, payload)
	m.pending <- tok // never blocks: as many places as slots
	return tok
}

// reap frees a publish slot as each tracked publish completes, oldest first (the
// broker acknowledges in order).
func (m *mqttClient) reap() {
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

// close publishes `offline` (retained) and disconnects. Subscriptions stay with the
// persistent session so the broker queues events while the gateway is stopped.
func (m *mqttClient) close(ctx context.Context) error {
	select {
	case <-m.closed:
		return nil
	default:
	}
	close(m.closed)
	var err error
	if m.c.IsConnectionOpen() {
		tok := m.publish(m.g.names.statusTopic, 1, true, []byte("offline"))
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
	m.c.Disconnect(250)
	return err
}
