// Package mqtt is the gateway's MQTT side (paho), for the embedded broker and an
// external one alike, on two connections:
//
//   - ingest (Client): a persistent session (fixed client id, clean session off)
//     with manual acknowledgements; it subscribes the events filters and hands every
//     event message to the ingest pipeline (which acknowledges once durable),
//     reconnects (the tracker's horizon holds still meanwhile) and listens for Home
//     Assistant's status;
//   - output (Output, client id <client_id>-pub, clean session): everything
//     published — the occupancy topics of the spaces the tracker's change feed
//     reports, as soon as they change and at most once per publish_min_interval per
//     space, every space at start and after every reconnect, the Home Assistant
//     discovery configs (homeassistant.go), cleared topics of removed spaces, the
//     status, the retained gateway info and DPU health topics (health.go) and the
//     rejected topic. Output never holds up ingest (see output.go).
//
// Both connections read through a buffer and coalesce their writes (mqttconn), and
// both carry the last will `offline` on the status topic; `online` is sent while
// both are up, `offline` on a clean stop.
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
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/mqttconn"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Tracker is what the client needs from the tracker (*tracker.Tracker).
type Tracker interface {
	Spaces() []occupancy.Occupancy
	Space(id string) (occupancy.Occupancy, bool)
	Hold()
	Subscribe() *tracker.Subscription
	Health() tracker.Health // DPU health (the dpus topic)
	Sizes() tracker.Sizes   // the topology's sizes (the info topic)
}

// Events takes the event messages the client receives (*ingest.Pipeline).
type Events interface {
	Submit(m ingest.Message) bool
	Now() int64
	Backlog() int // messages waiting for a worker
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
	// MinInterval overrides MQTT.PublishMinInterval (a space's topics at most this
	// often); both 0: DefaultMinInterval.
	MinInterval time.Duration
	// Window: the most unacknowledged QoS 1 publishes of the output (0: 4096).
	Window int
	// Info is what the retained info topic says about this gateway; Info.Version is
	// also the sw_version of Home Assistant's device and origin blocks.
	Info Info
	// StatusPage is the status page's URL, Home Assistant's configuration_url (""
	// with HTTP off); SetStatusPage may set it later, before Start.
	StatusPage string
	Metrics    *metrics.Metrics // nil: a fresh set nobody reads
	Logger     zerolog.Logger
}

// busyBacklog: with this many event messages waiting for a worker, ingest is not
// keeping up (a broker holds at most its in-flight limit, Mosquitto's
// max_inflight_messages, 1000 as DESIGN 4 sets it, unacknowledged; a keeping-up
// gateway has a few batches' worth waiting), and the output yields the broker to it.
const busyBacklog = 500

// DefaultMinInterval is mqtt.publish_min_interval's default.
const DefaultMinInterval = 250 * time.Millisecond

// names are the topics that follow from the config.
type names struct {
	clientID      string
	statusTopic   string
	rejectedTopic string
	outputPrefix  string
	haPrefix      string
	haEnabled     bool
	filters       []string
	infoTopic     string // occupancyd/<gateway-id>/info
	dpusTopic     string // occupancyd/<gateway-id>/dpus
}

func deriveNames(c config.MQTTConfig) names {
	n := names{
		clientID:      c.ClientID,
		statusTopic:   c.StatusTopic,
		rejectedTopic: c.RejectedTopic,
		outputPrefix:  c.OutputPrefix,
		haPrefix:      c.HomeAssistant.DiscoveryPrefix,
		haEnabled:     c.HomeAssistant.Enabled,
		filters:       c.EventsTopic.Filters(),
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

// Client is the gateway's MQTT client: the ingest connection, and the output.
type Client struct {
	opts    Options
	names   names
	tr      Tracker
	metrics *metrics.Metrics
	log     zerolog.Logger
	out     *Output
	disc    *Discovery // nil: Home Assistant discovery off

	c       paho.Client
	connTok paho.Token // the initial Connect; waited for before Disconnect (paho #550)

	connected  atomic.Bool
	subscribed atomic.Bool

	closed   chan struct{} // Close: resubscription attempts end
	started  atomic.Bool
	closeOne sync.Once

	subMu sync.Mutex // one (re)subscription at a time
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
	names := deriveNames(o.MQTT)
	gw := config.Config{Gateway: config.GatewayConfig{ID: o.GatewayID}}
	names.infoTopic, names.dpusTopic = gw.InfoTopic(), gw.DPUsTopic()
	m := &Client{
		opts:    o,
		names:   names,
		tr:      o.Tracker,
		metrics: o.Metrics,
		log:     o.Logger,
		closed:  make(chan struct{}),
	}
	po := paho.NewClientOptions()
	po.AddBroker(o.Broker)
	po.SetClientID(names.clientID)
	po.SetCleanSession(false)
	po.SetAutoAckDisabled(true)
	// Handlers run on paho's message loop, one after another: they only queue the
	// message (Events.Submit never blocks) or signal the output, so a goroutine
	// per message (SetOrderMatters(false)) would cost more than it spares.
	po.SetOrderMatters(true)
	po.SetResumeSubs(false) // onConnect subscribes every filter itself
	po.SetAutoReconnect(true)
	po.SetConnectRetry(true)
	po.SetConnectRetryInterval(time.Second)
	po.SetMaxReconnectInterval(30 * time.Second)
	po.SetConnectTimeout(10 * time.Second)
	po.SetKeepAlive(30 * time.Second)
	// A broker under a heavy load (Mosquitto with a deep queue for this session)
	// can go quiet for tens of seconds and take as long to read. Dropping the
	// connection then only makes it worse — the broker sends the whole in-flight
	// window again and queues everything behind a new SUBSCRIBE — so the ping and
	// the writes get 30 s each (paho's defaults: 10 s). A broker that is gone
	// usually closes the socket long before.
	po.SetPingTimeout(30 * time.Second)
	po.SetWriteTimeout(30 * time.Second)
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
	// Reconnects and failed attempts (refused credentials, TLS, broker down) are
	// logged at most once per 10 s, with the number suppressed: with retries on,
	// paho reports them nowhere else, and a broker down for an hour must not flood.
	reconnLog := lograte.New(m.log, zerolog.InfoLevel, 10*time.Second)
	po.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		reconnLog.Log(func(e *zerolog.Event) *zerolog.Event { return e.Str("broker", o.Broker) }, "reconnecting to the MQTT broker")
	})
	connLog := lograte.New(m.log, zerolog.WarnLevel, 10*time.Second)
	po.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationFailed); ok {
			connLog.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(f.Reason).Str("broker", o.Broker) },
				"MQTT connection attempt failed; retrying")
		}
	})
	m.c = paho.NewClient(po)
	for _, f := range names.filters {
		m.c.AddRoute(f, m.onMessage)
	}
	if names.haEnabled {
		m.c.AddRoute(names.haPrefix+"/status", m.onHAStatus)
	}
	minInterval := o.MinInterval
	if minInterval <= 0 {
		minInterval = o.MQTT.PublishMinInterval
	}
	if minInterval <= 0 {
		minInterval = DefaultMinInterval
	}
	mt := m.metrics
	oo := OutputOptions{
		Broker:        o.Broker,
		ClientID:      names.clientID + "-pub",
		Username:      o.MQTT.Username,
		Password:      password,
		TLS:           tc,
		StatusTopic:   names.statusTopic,
		OutputPrefix:  names.outputPrefix,
		MinInterval:   minInterval,
		Window:        o.Window,
		Subscribe:     func() Subscription { return o.Tracker.Subscribe() },
		Spaces:        o.Tracker.Spaces,
		Render:        payload.AppendOccupancyJSON,
		Rejected:      o.Rejected,
		RejectedTopic: names.rejectedTopic,
		IngestBusy:    func() bool { return o.Events.Backlog() >= busyBacklog },
		Metrics: OutputMetrics{
			Publishes: mt.Publishes, Lag: mt.PublishLag, Dirty: mt.PublishPending,
			Backlog: mt.PublishBacklog, InFlight: mt.PublishInFlight, Window: mt.PublishWindow,
			Connected: mt.MQTTOutputConnected, RejectDrops: mt.RejectedNotPublished,
		},
		Logger: m.log.With().Str("connection", "output").Logger(),
	}
	if names.haEnabled {
		m.disc = &Discovery{Prefix: names.haPrefix, GatewayID: o.GatewayID, OutputPrefix: names.outputPrefix,
			StatusTopic: names.statusTopic, DPUsTopic: names.dpusTopic, Version: o.Info.Version,
			ConfigurationURL: o.StatusPage}
		oo.Discovery, oo.Cleared = m.disc.Space, m.disc.Cleared
	}
	if m.out, err = NewOutput(oo); err != nil {
		return nil, err
	}
	m.log.Info().Str("broker", o.Broker).Str("client_id", names.clientID).
		Str("output_client_id", oo.ClientID).Strs("events_topic", names.filters).
		Dur("publish_min_interval", minInterval).Msg("mqtt client configured")
	return m, nil
}

// SetStatusPage sets the status page's URL (Home Assistant's configuration_url)
// once the HTTP server listens; call it before Start.
func (m *Client) SetStatusPage(url string) {
	if m.disc != nil && !m.started.Load() {
		m.disc.ConfigurationURL = url
	}
}

// Start starts the output (which subscribes to the tracker's change feed) and
// connects both connections in the background (with retries); Ready says when the
// ingest connection is connected and subscribed.
func (m *Client) Start() {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	m.out.Start()
	m.publishGatewayDiscovery()
	go m.healthLoop()
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

// State says whether the client is connected to the broker and subscribed to the
// events topics (the status page shows both).
func (m *Client) State() (connected, subscribed bool) {
	connected = m.connOpen()
	return connected, connected && m.subscribed.Load()
}

// connOpen: connected as far as the callbacks said, and as far as paho's own
// status says. paho marks a lost connection at once but calls the lost handler only
// after its workers stopped, which took more than 10 s once (a broker stopped in
// the second the client had connected after a restart).
func (m *Client) connOpen() bool {
	return m.connected.Load() && m.c.IsConnectionOpen()
}

// Ready's answers while the client cannot take events.
var (
	ErrNotConnected  = errors.New("not connected to the MQTT broker")
	ErrNotSubscribed = errors.New("not subscribed to the events topics yet")
)

// Ready is nil once the client is connected and subscribed, else ErrNotConnected or
// ErrNotSubscribed.
func (m *Client) Ready() error {
	switch {
	case !m.connOpen():
		return ErrNotConnected
	case !m.subscribed.Load():
		return ErrNotSubscribed
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
		m.out.ResendDiscovery()
		m.publishGatewayDiscovery()
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
	m.out.SetUpstream(true) // online, once the output connection is up too
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
		// One SUBSCRIBE per attempt, waited for while the connection is up: a busy
		// broker answers late (its SUBACK queued behind the backlog it sends), and
		// sending the same SUBSCRIBE again only adds to its work.
		waited := time.Duration(0)
		for !tok.WaitTimeout(10 * time.Second) {
			waited += 10 * time.Second
			if !c.IsConnectionOpen() {
				return false
			}
			select {
			case <-m.closed:
				return false
			default:
			}
			m.log.Warn().Dur("waited", waited).Msg("subscribe: still waiting for the broker's SUBACK")
		}
		err := tok.Error()
		if err == nil {
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
	m.out.SetUpstream(false) // the broker sends this connection's will, offline
	m.metrics.MQTTConnected.Set(0)
	m.log.Warn().Err(err).Msg("lost the MQTT connection")
}

// Close sends the last changes (the caller ran the final tick) and `offline`
// (retained) on the output connection, within ctx (and at most 5 s), then
// disconnects both. Subscriptions stay with the persistent session so the broker
// queues events while the gateway is stopped.
func (m *Client) Close(ctx context.Context) error {
	var err error
	m.closeOne.Do(func() { err = m.close(ctx) })
	return err
}

func (m *Client) close(ctx context.Context) error {
	err := m.out.Close(ctx)
	close(m.closed)
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
