package mqtt

import (
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/mqttconn"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The output: everything the gateway publishes goes out on a connection of its own
// (client id <client_id>-pub, clean session), so output never shares a connection,
// a socket buffer or a broker in-flight window with the PUBACKs of ingest, and
// never holds up ingest.
//
// What to send is decided by one goroutine (run) from:
//   - live changes, from the tracker's change feed: a space whose occupancy or
//     capacity changed is dirty, with its latest value. A dirty space is sent when
//     publish_min_interval has passed since it was last sent; among those that may
//     go, the one sent longest ago goes first. So a quiet room that changes goes out
//     at once even while busy floors change all the time, every dirty space is
//     served before any is served twice (nothing starves), and under more change
//     than the broker takes each space's latest value waits: the dirty set holds at
//     most one entry per space.
//   - the backlog: every space's topics (at start, after every reconnect of this
//     connection and after a new topology version), the Home Assistant discovery
//     configs (then, and when Home Assistant says online), the cleared topics of
//     removed spaces. At most one entry per space and kind. When live changes and
//     the backlog both wait they take turns, so neither starves the other.
//   - control messages (the status, DPU health, info; latest value per topic), which
//     go first.
//
// QoS 1 publishes are pipelined: up to Window unacknowledged (paho hands out
// packet ids by cycling through them, so a deep window costs nothing per
// publish), written through mqttconn's coalescing writer.
//
// The window adapts to the broker (delay-based, like TCP Vegas): the broker that
// takes the output also delivers the events, and on a small machine it is the
// scarce part. While acknowledgements come back within ackTarget the window grows
// by one per acknowledgement up to Window; an acknowledgement slower than that
// halves it (at most once per round trip), down to minWindow. So a broker with
// room gets the output at full speed, and a busy one is offered less output
// instead of falling behind on the events it queues for the gateway — which it
// drops past its queue limit (Mosquitto's max_queued_messages). Each space's latest
// value still wins; only the pace changes. And while ingest itself is behind (its
// backlog deep: IngestBusy), the output keeps only busyWindow publishes in flight,
// whatever the broker's pace: the events it has not delivered yet come first.
//
// Status: both connections carry the last will `offline` (retained). `online` is
// sent on this connection whenever both are up (SetUpstream reports the other).

// Subscription is the tracker's change feed as the output reads it
// (*tracker.Subscription).
type Subscription interface {
	Changed() <-chan struct{}
	Drain() (changed []occupancy.Occupancy, removed []string, topology bool)
	Close()
}

// Message is one retained QoS 1 message.
type Message struct {
	Topic   string
	Payload []byte
}

// OutputMetrics are the output's metrics; nil fields are not updated.
type OutputMetrics struct {
	Publishes   prometheus.Counter // every message sent
	Lag         prometheus.Gauge   // age of the oldest change not yet sent, seconds
	Dirty       prometheus.Gauge   // spaces with a change not yet sent
	Backlog     prometheus.Gauge   // backlog entries (full republish, discovery, clears)
	InFlight    prometheus.Gauge   // unacknowledged QoS 1 publishes
	Window      prometheus.Gauge   // the adaptive window (most unacknowledged allowed)
	Connected   prometheus.Gauge   // the output connection (0/1)
	RejectDrops prometheus.Counter // rejections not sent on the rejected topic (disconnected)
}

// OutputOptions configure an Output. Broker, ClientID, Subscribe, Spaces and Render
// are required.
type OutputOptions struct {
	Broker       string
	ClientID     string // the output connection's client id (<client_id>-pub)
	Username     string
	Password     string
	TLS          *tls.Config
	StatusTopic  string
	OutputPrefix string
	// MinInterval: a space's topics at most this often (mqtt.publish_min_interval).
	MinInterval time.Duration
	// Window is the most unacknowledged QoS 1 publishes (default 4096).
	Window int
	// Subscribe subscribes to the change feed (at Start).
	Subscribe func() Subscription
	// Spaces returns every space's current value, topology order (read after the
	// subscription was made, so a change is in it or drained later).
	Spaces func() []occupancy.Occupancy
	// Render appends a space's JSON occupancy object.
	Render func(dst []byte, o occupancy.Occupancy) []byte
	// Discovery renders a space's Home Assistant discovery messages; nil: none.
	Discovery func(o occupancy.Occupancy) []Message
	// Cleared lists the retained topics of a removed space besides its occupancy
	// topics (its discovery configs), to send empty.
	Cleared func(space string) []string
	// Rejected are the rejections for RejectedTopic (QoS 0, not retained; dropped
	// while disconnected); nil: none.
	Rejected      <-chan ingest.Outgoing
	RejectedTopic string
	// IngestBusy reports that ingest is not keeping up (its backlog is deep); the
	// output then keeps at most busyWindow publishes unacknowledged. nil: never.
	IngestBusy func() bool
	Metrics    OutputMetrics
	Logger     zerolog.Logger
	Now        func() time.Time
}

// Output is the gateway's output connection and publisher.
type Output struct {
	o   OutputOptions
	log zerolog.Logger

	// Set by the connection goroutine, read by run.
	connEvents chan connEvent
	client     atomic.Pointer[paho.Client] // the connected client, nil while down

	sub       Subscription
	upstream  atomic.Bool   // the ingest connection is up
	upChanged chan struct{} // capacity 1
	haAgain   chan struct{} // capacity 1: send every discovery config again
	control   chan Message  // status, health, info: latest per topic

	slots chan struct{} // one per unacknowledged QoS 1 publish
	toks  chan sentToken
	freed chan struct{} // capacity 1: a slot was freed
	limit atomic.Int64  // the adaptive window: at most this many unacknowledged

	closing  chan struct{} // Close: run sends the last changes, then exits
	finalBy  time.Time     // set before closing: the last changes and offline by then
	runDone  chan struct{} // run exited (after its final pass)
	done     chan struct{} // every goroutine exited
	wg       sync.WaitGroup
	started  atomic.Bool
	closeOne sync.Once

	// run's state
	spaces     map[string]*spaceOut
	live       liveHeap
	backlog    []backlogEntry
	backHead   int
	clearing   map[string]bool // clear entries waiting
	controlQ   []string
	controlVal map[string][]byte // latest payload per control topic (sent again after a reconnect)
	controlDue map[string]bool   // in controlQ
	turn       bool              // the backlog's turn next
	conn       paho.Client       // run's view of the connection (nil: down)
	statusUp   bool              // online sent (or due) on this connection
	statusDue  bool              // online goes out next
	seq        uint64
}

// sentToken is a publish's token and when it was sent.
type sentToken struct {
	tok  paho.Token
	sent time.Time
}

type connEvent struct {
	up bool
	c  paho.Client
}

// spaceOut is one space's output state.
type spaceOut struct {
	id         string
	val        occupancy.Occupancy
	dirty      bool // a live change waits (in live)
	dirtySince time.Time
	lastSent   time.Time
	sentOcc    int64
	sentCap    int64
	sentOnce   bool
	seq        uint64 // tie-break: order of becoming dirty
	idx        int    // in live, -1 when not
	needFull   bool   // a backlog entry to send its topics waits
	needDisc   bool   // a backlog entry to send its discovery config waits
	removed    bool
}

type backlogKind uint8

const (
	backFull backlogKind = iota
	backDisc
	backClear
)

type backlogEntry struct {
	kind  backlogKind
	space *spaceOut // backFull, backDisc
	id    string    // backClear
}

// liveHeap orders dirty spaces by the time they were last sent (never sent first),
// then by when they became dirty.
type liveHeap []*spaceOut

func (h liveHeap) Len() int { return len(h) }
func (h liveHeap) Less(i, j int) bool {
	if !h[i].lastSent.Equal(h[j].lastSent) {
		return h[i].lastSent.Before(h[j].lastSent)
	}
	return h[i].seq < h[j].seq
}
func (h liveHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *liveHeap) Push(x any) {
	s := x.(*spaceOut)
	s.idx = len(*h)
	*h = append(*h, s)
}
func (h *liveHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.idx = -1
	*h = old[:len(old)-1]
	return s
}

const (
	defaultWindow = 4096
	// minWindow is the least the adaptive window shrinks to.
	minWindow = 64
	// busyWindow is the window while ingest is not keeping up: the events come
	// first, and each space's latest value waits (latest wins).
	busyWindow = 8
	// ackTarget: an acknowledgement slower than this shrinks the window. On
	// loopback a broker with room acknowledges within a few milliseconds.
	ackTarget = 200 * time.Millisecond
	// connectBackoffMax bounds the wait between connection attempts.
	connectBackoffMax = 30 * time.Second
	// lagEvery is how often the lag gauges are computed (a pass over the dirty set).
	lagEvery = time.Second
)

// NewOutput checks the options; nothing connects until Start.
func NewOutput(o OutputOptions) (*Output, error) {
	if o.Broker == "" || o.ClientID == "" || o.Subscribe == nil || o.Spaces == nil || o.Render == nil {
		return nil, errors.New("mqtt output: broker, client id, subscribe, spaces and render are required")
	}
	if o.Window <= 0 {
		o.Window = defaultWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinInterval < 0 {
		o.MinInterval = 0
	}
	p := &Output{
		o:          o,
		log:        o.Logger,
		connEvents: make(chan connEvent, 4),
		upChanged:  make(chan struct{}, 1),
		haAgain:    make(chan struct{}, 1),
		control:    make(chan Message, 64),
		slots:      make(chan struct{}, o.Window),
		toks:       make(chan sentToken, o.Window),
		freed:      make(chan struct{}, 1),
		closing:    make(chan struct{}),
		runDone:    make(chan struct{}),
		done:       make(chan struct{}),
		spaces:     map[string]*spaceOut{},
		clearing:   map[string]bool{},
		controlVal: map[string][]byte{},
		controlDue: map[string]bool{},
	}
	// The window starts at a quarter of its most (or all of a small one) and grows
	// from there while the broker keeps up.
	p.limit.Store(int64(min(o.Window, max(o.Window/4, minWindow))))
	if o.Metrics.Window != nil {
		o.Metrics.Window.Set(float64(p.limit.Load())) // not 0 until the first acknowledgement
	}
	return p, nil
}

// Start connects in the background (with retries) and starts publishing.
func (p *Output) Start() {
	if !p.started.CompareAndSwap(false, true) {
		return
	}
	p.sub = p.o.Subscribe()
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.connLoop() }()
	go func() { defer p.wg.Done(); p.reap() }()
	go func() { defer p.wg.Done(); p.run() }()
	go func() { p.wg.Wait(); close(p.done) }()
}

// SetUpstream reports whether the ingest connection is up (connected and
// subscribed): `online` is sent while both connections are.
func (p *Output) SetUpstream(up bool) {
	if p.upstream.Swap(up) != up {
		select {
		case p.upChanged <- struct{}{}:
		default:
		}
	}
}

// ResendDiscovery sends every Home Assistant discovery config again (Home
// Assistant said online).
func (p *Output) ResendDiscovery() {
	select {
	case p.haAgain <- struct{}{}:
	default:
	}
}

// Publish sends a control message (retained, QoS 1) before any occupancy; for a
// topic sent again before it went out, only the latest payload is sent.
func (p *Output) Publish(topic string, payload []byte) {
	select {
	case p.control <- Message{Topic: topic, Payload: payload}:
	case <-p.closing:
	}
}

// Connected reports whether the output connection is up.
func (p *Output) Connected() bool { return p.client.Load() != nil }

// ---- the connection ----

// connLoop keeps one output connection up: a fresh paho client per connection
// (clean session, no automatic reconnect), so a message sent on a dead connection is
// never sent again after a newer value on the next one; its token completes with an
// error instead.
func (p *Output) connLoop() {
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		lost := make(chan error, 1)
		po := paho.NewClientOptions().AddBroker(p.o.Broker).SetClientID(p.o.ClientID).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(10 * time.Second).SetKeepAlive(30 * time.Second).
			SetWriteTimeout(10 * time.Second).SetOrderMatters(false).
			SetCustomOpenConnectionFn(mqttconn.Open).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		if p.o.StatusTopic != "" {
			po.SetWill(p.o.StatusTopic, "offline", 1, true)
		}
		if p.o.Username != "" {
			po.SetUsername(p.o.Username)
		}
		if p.o.Password != "" {
			po.SetPassword(p.o.Password)
		}
		if p.o.TLS != nil {
			po.SetTLSConfig(p.o.TLS)
		}
		c := paho.NewClient(po)
		tok := c.Connect()
		select {
		case <-tok.Done():
		case <-p.closing:
			// paho races when Disconnect overlaps its Connect (paho #550).
			tok.WaitTimeout(time.Second)
			c.Disconnect(0)
			return
		}
		if tok.Error() == nil {
			select {
			case <-p.closing: // connected as Close began: run's final pass may have missed it
				<-p.runDone
				c.Disconnect(250)
				return
			default:
			}
		}
		if err := tok.Error(); err != nil {
			if attempt%10 == 0 {
				p.log.Warn().Err(err).Str("broker", p.o.Broker).Str("client_id", p.o.ClientID).
					Msg("MQTT output connection attempt failed; retrying")
			}
			select {
			case <-time.After(backoff):
			case <-p.closing:
				return
			}
			backoff = min(2*backoff, connectBackoffMax)
			continue
		}
		backoff, attempt = time.Second, -1
		p.log.Info().Str("client_id", p.o.ClientID).Msg("MQTT output connection up")
		p.client.Store(&c)
		select {
		case p.connEvents <- connEvent{up: true, c: c}:
		case <-p.runDone:
		}
		select {
		case err := <-lost:
			p.client.Store(nil)
			p.log.Warn().Err(err).Msg("lost the MQTT output connection")
			select {
			case p.connEvents <- connEvent{up: false, c: c}:
			case <-p.runDone:
			}
		case <-p.closing:
			<-p.runDone // the last changes and `offline` go out first
			p.client.Store(nil)
			c.Disconnect(250)
			return
		}
	}
}

// reap frees a slot as each publish is acknowledged, oldest first (the broker
// acknowledges in order), or fails (its connection was lost).
func (p *Output) reap() {
	var lastCut time.Time
	for {
		var st sentToken
		select {
		case st = <-p.toks:
		case <-p.runDone:
			return
		}
		select {
		case <-st.tok.Done():
		case <-time.After(30 * time.Second): // paho completes it on connection loss; a safety net
		case <-p.runDone:
			return
		}
		lastCut = p.adapt(st, time.Now(), lastCut)
		<-p.slots
		if p.o.Metrics.InFlight != nil {
			p.o.Metrics.InFlight.Dec()
		}
		select {
		case p.freed <- struct{}{}:
		default:
		}
	}
}

// ---- run: what to send, and when ----

func (p *Output) run() {
	defer close(p.runDone)
	lag := time.NewTicker(lagEvery)
	defer lag.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		next := p.pump()
		if next > 0 {
			wake.Reset(next)
		}
		select {
		case <-p.sub.Changed():
			p.drain()
		case ev := <-p.connEvents:
			p.onConn(ev)
		case <-p.upChanged:
			p.checkStatus()
		case <-p.haAgain:
			p.queueDiscoveryAll()
		case m := <-p.control:
			p.queueControl(m.Topic, m.Payload)
		case r := <-p.o.Rejected:
			if p.conn != nil && p.o.RejectedTopic != "" {
				p.conn.Publish(p.o.RejectedTopic, 0, false, RejectionJSON(r))
				p.count(1)
			} else if p.o.Metrics.RejectDrops != nil {
				p.o.Metrics.RejectDrops.Inc()
			}
		case <-p.freed:
		case <-wake.C:
		case <-lag.C:
			p.updateGauges()
		case <-p.closing:
			p.final()
			p.updateGauges()
			return
		}
	}
}

func (p *Output) space(o occupancy.Occupancy) *spaceOut {
	st := p.spaces[o.Space]
	if st == nil {
		st = &spaceOut{id: o.Space, idx: -1}
		p.spaces[o.Space] = st
	}
	st.val = o
	st.removed = false
	return st
}

// drain takes the change feed: changed spaces become dirty, removed ones are
// cleared, a new topology version sends every space and discovery config again.
func (p *Output) drain() {
	changed, removed, topology := p.sub.Drain()
	now := p.o.Now()
	for _, o := range changed {
		p.markDirty(p.space(o), now)
	}
	for _, id := range removed {
		st := p.spaces[id]
		if st != nil {
			if st.idx >= 0 {
				heap.Remove(&p.live, st.idx)
			}
			st.dirty, st.removed = false, true
			delete(p.spaces, id)
		}
		if !p.clearing[id] {
			p.clearing[id] = true
			p.backlog = append(p.backlog, backlogEntry{kind: backClear, id: id})
		}
	}
	if topology {
		p.queueAll()
	}
}

func (p *Output) markDirty(st *spaceOut, now time.Time) {
	if st.dirty {
		return
	}
	p.seq++
	st.dirty, st.dirtySince, st.seq = true, now, p.seq
	heap.Push(&p.live, st)
}

// queueAll puts every space's topics and discovery config in the backlog, with
// the current values (newer than or as new as anything drained so far).
func (p *Output) queueAll() {
	for _, o := range p.o.Spaces() {
		st := p.space(o)
		if !st.needFull {
			st.needFull = true
			p.backlog = append(p.backlog, backlogEntry{kind: backFull, space: st})
		}
	}
	p.queueDiscoveryAll()
}

func (p *Output) queueDiscoveryAll() {
	if p.o.Discovery == nil {
		return
	}
	for _, o := range p.o.Spaces() {
		st := p.space(o)
		if !st.needDisc {
			st.needDisc = true
			p.backlog = append(p.backlog, backlogEntry{kind: backDisc, space: st})
		}
	}
}

func (p *Output) queueControl(topic string, payload []byte) {
	p.controlVal[topic] = payload
	if !p.controlDue[topic] {
		p.controlDue[topic] = true
		p.controlQ = append(p.controlQ, topic)
	}
}

func (p *Output) onConn(ev connEvent) {
	if ev.up {
		p.conn, p.statusUp, p.statusDue = ev.c, false, false
		if p.o.Metrics.Connected != nil {
			p.o.Metrics.Connected.Set(1)
		}
		p.drain()
		p.queueAll()
		for topic, payload := range p.controlVal {
			p.queueControl(topic, payload)
		}
		p.checkStatus()
		return
	}
	if p.conn == ev.c {
		p.conn, p.statusUp = nil, false
		if p.o.Metrics.Connected != nil {
			p.o.Metrics.Connected.Set(0)
		}
	}
}

// checkStatus sends `online` once both connections are up. When the ingest
// connection drops, the broker sends its will (`offline`); `online` follows when
// it is back.
func (p *Output) checkStatus() {
	if !p.upstream.Load() {
		p.statusUp, p.statusDue = false, false
		return
	}
	if p.conn != nil && !p.statusUp && p.o.StatusTopic != "" {
		p.statusUp, p.statusDue = true, true
	}
}

// adapt sets the window from one acknowledgement's round trip (see the package
// comment on the output); it returns when the window was last cut.
func (p *Output) adapt(st sentToken, now, lastCut time.Time) time.Time {
	rtt := now.Sub(st.sent)
	w := p.limit.Load()
	switch {
	case st.tok.Error() != nil:
		// The connection is gone; the next one starts where this one was.
	case rtt > ackTarget:
		// Once per round trip: the acknowledgements behind this one were sent
		// before the cut took effect.
		if now.Sub(lastCut) >= rtt {
			w = max(w/2, minWindow)
			lastCut = now
		}
	case w < int64(p.o.Window):
		w++
	}
	p.limit.Store(w)
	if p.o.Metrics.Window != nil {
		p.o.Metrics.Window.Set(float64(w))
	}
	return lastCut
}

// free is how many more QoS 1 publishes may go now (the reaper only frees slots
// concurrently, so this is a lower bound).
func (p *Output) free() int {
	w := int(p.limit.Load())
	if p.o.IngestBusy != nil && p.o.IngestBusy() {
		w = min(w, busyWindow)
	}
	return w - len(p.slots)
}

// send publishes one retained QoS 1 message; the caller checked free() > 0.
func (p *Output) send(topic string, payload []byte) {
	p.slots <- struct{}{}
	if p.o.Metrics.InFlight != nil {
		p.o.Metrics.InFlight.Inc()
	}
	p.toks <- sentToken{tok: p.conn.Publish(topic, 1, true, payload), sent: time.Now()}
	p.count(1)
}

func (p *Output) count(n int) {
	if p.o.Metrics.Publishes != nil {
		p.o.Metrics.Publishes.Add(float64(n))
	}
}

// sendSpace publishes a space's JSON object and count with its latest value.
func (p *Output) sendSpace(st *spaceOut, now time.Time) {
	topic := p.o.OutputPrefix + "/" + st.id
	p.send(topic, p.o.Render(make([]byte, 0, 192), st.val))
	p.send(topic+"/count", strconv.AppendInt(nil, st.val.Occupancy, 10))
	st.lastSent, st.sentOcc, st.sentCap, st.sentOnce = now, st.val.Occupancy, st.val.Capacity, true
	st.needFull = false
	if st.idx >= 0 {
		heap.Remove(&p.live, st.idx)
	}
	st.dirty = false
}

func (p *Output) eligible(st *spaceOut, now time.Time) bool {
	return st.lastSent.IsZero() || now.Sub(st.lastSent) >= p.o.MinInterval
}

// pump sends what may go now, while the window has room. It returns how long
// until the next dirty space may go (0: nothing to wait for, or it waits for a
// slot, a change or a connection).
func (p *Output) pump() time.Duration {
	if p.conn == nil {
		return 0
	}
	now := p.o.Now()
	if p.statusDue && p.free() > 0 {
		p.statusDue = false
		p.send(p.o.StatusTopic, []byte("online"))
	}
	for len(p.controlQ) > 0 && p.free() > 0 {
		topic := p.controlQ[0]
		p.controlQ = p.controlQ[1:]
		delete(p.controlDue, topic)
		p.send(topic, p.controlVal[topic])
	}
	const room = 4 // a backlog entry sends up to a few messages (discovery configs)
	for p.free() >= room {
		liveReady := p.live.Len() > 0 && p.eligible(p.live[0], now)
		backReady := p.backHead < len(p.backlog)
		switch {
		case liveReady && (!backReady || !p.turn):
			p.turn = true
			st := heap.Pop(&p.live).(*spaceOut)
			st.dirty = false
			if !st.needFull && st.sentOnce && st.val.Occupancy == st.sentOcc && st.val.Capacity == st.sentCap {
				continue // changed back to what the broker has
			}
			p.sendSpace(st, now)
		case backReady:
			p.turn = false
			p.sendBacklog(now)
		default:
			if p.live.Len() > 0 && !liveReady {
				return max(p.live[0].lastSent.Add(p.o.MinInterval).Sub(now), time.Millisecond)
			}
			return 0
		}
	}
	return 0
}

func (p *Output) sendBacklog(now time.Time) {
	e := p.backlog[p.backHead]
	p.backlog[p.backHead] = backlogEntry{}
	p.backHead++
	if p.backHead == len(p.backlog) {
		p.backlog, p.backHead = p.backlog[:0], 0
	} else if p.backHead > 1024 && p.backHead*2 > len(p.backlog) {
		n := copy(p.backlog, p.backlog[p.backHead:])
		clear(p.backlog[n:])
		p.backlog, p.backHead = p.backlog[:n], 0
	}
	switch e.kind {
	case backFull:
		st := e.space
		if !st.needFull || st.removed {
			return // sent since it was queued, or gone
		}
		if !p.eligible(st, now) {
			p.markDirty(st, now) // sent by the live path once the interval has passed
			return
		}
		p.sendSpace(st, now)
	case backDisc:
		st := e.space
		if !st.needDisc || st.removed {
			return
		}
		st.needDisc = false
		for _, m := range p.o.Discovery(st.val) {
			p.send(m.Topic, m.Payload)
		}
	case backClear:
		delete(p.clearing, e.id)
		if _, back := p.spaces[e.id]; back {
			return // added back by a later version
		}
		topic := p.o.OutputPrefix + "/" + e.id
		p.send(topic, nil)
		p.send(topic+"/count", nil)
		if p.o.Cleared != nil {
			for _, t := range p.o.Cleared(e.id) {
				p.send(t, nil)
			}
		}
	}
}

// updateGauges sets the lag, dirty-set and backlog gauges.
func (p *Output) updateGauges() {
	m := p.o.Metrics
	if m.Dirty != nil {
		m.Dirty.Set(float64(p.live.Len()))
	}
	if m.Backlog != nil {
		m.Backlog.Set(float64(len(p.backlog) - p.backHead + len(p.controlQ)))
	}
	if m.Lag != nil {
		var oldest time.Time
		for _, st := range p.live {
			if oldest.IsZero() || st.dirtySince.Before(oldest) {
				oldest = st.dirtySince
			}
		}
		lag := 0.0
		if !oldest.IsZero() {
			lag = p.o.Now().Sub(oldest).Seconds()
		}
		m.Lag.Set(lag)
	}
}

// final sends the last changes (the min interval no longer applies) for three
// quarters of the time left, then `offline`, and waits for its acknowledgement until
// finalBy: `offline` gets a share of the time of its own, however many changes wait.
// What the broker did not take in time is logged, not returned: the stop still ends
// within its bound and loses nothing (every acknowledged event is stored), the
// unsent values go out at the next start, and `offline`, once written, reaches the
// broker before the disconnect; on a dropped connection the will says it.
func (p *Output) final() {
	if p.conn == nil {
		return
	}
	p.drain()
	now := p.o.Now()
	liveBy := p.finalBy.Add(-time.Until(p.finalBy) / 4)
	for p.live.Len() > 0 && time.Now().Before(liveBy) {
		if p.free() < 2 {
			select {
			case <-p.freed:
			case <-time.After(time.Until(liveBy)):
			}
			continue
		}
		st := heap.Pop(&p.live).(*spaceOut)
		st.dirty = false
		if st.sentOnce && st.val.Occupancy == st.sentOcc && st.val.Capacity == st.sentCap {
			continue
		}
		p.sendSpace(st, now)
	}
	if p.live.Len() > 0 {
		p.log.Warn().Int("spaces", p.live.Len()).Msg("stopping: the broker did not take the last occupancy updates in time")
	}
	if p.o.StatusTopic == "" {
		return
	}
	tok := p.conn.Publish(p.o.StatusTopic, 1, true, []byte("offline"))
	p.count(1)
	if !tok.WaitTimeout(time.Until(p.finalBy)) {
		p.log.Warn().Str("topic", p.o.StatusTopic).Msg("stopping: the broker did not acknowledge offline in time; " +
			"it was sent before the disconnect (on a dropped connection, the will says offline)")
	} else if err := tok.Error(); err != nil {
		p.log.Warn().Err(err).Str("topic", p.o.StatusTopic).Msg("stopping: offline was not sent (the connection was lost: the will says offline)")
	}
}

// finalBudget bounds Close when ctx has no earlier deadline.
const finalBudget = 5 * time.Second

// Close sends the last changes and `offline` (retained) within ctx (at most
// finalBudget), then disconnects. It returns nil: what the broker did not take in
// time is logged (final).
func (p *Output) Close(ctx context.Context) error {
	p.closeOne.Do(func() {
		p.finalBy = time.Now().Add(finalBudget)
		if dl, ok := ctx.Deadline(); ok && dl.Before(p.finalBy) {
			p.finalBy = dl
		}
		close(p.closing)
		if !p.started.Load() {
			return
		}
		<-p.done
		p.sub.Close()
	})
	return nil
}
