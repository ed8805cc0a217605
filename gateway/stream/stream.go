// Package stream serves GET /v1/stream (DESIGN 5): every change of a space's occupancy
// or capacity as a Server-Sent Event `occupancy` carrying the occupancy object of
// DESIGN 2, for apps that want changes as they happen (a lobby screen, the status
// page).
//
// While it has clients, a Hub holds one subscription to the tracker's change feed
// and a copy of every space's latest value. Each round it drains the feed into that
// copy and marks the changed spaces in the set of every client that wants them; each
// client's request goroutine then writes the marked spaces' values from the copy.
// So:
//
//   - a client gets a snapshot of its spaces first, then every change, each value
//     newer than the one before it;
//   - changes are coalesced like the retained topics: the hub drains the feed at most
//     once per MinInterval, and a space that changed several times meanwhile is
//     written once, with its latest value; a value whose occupancy and capacity equal
//     what the client was sent last is not written again;
//   - nothing waits on a client: the feed is drained whatever the clients do, clients
//     never take the engine's lock, a client's set holds at most one mark per space
//     (bounded by the spaces it asked for), and a client whose connection takes no
//     data for WriteTimeout is dropped;
//   - at most MaxClients clients; past it the answer is 503.
//
// Filters: ?space=a,b (those spaces) and ?under=id (that space and every space nested
// in it, in the topology in force); both together: either.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Feed is the tracker's change feed.
type Feed interface {
	// Subscribe starts recording changes; the hub reads the current state (Source)
	// after it, so a change is either in that state or drained later.
	Subscribe() Subscription
}

// Subscription is one latest-wins set of changes.
type Subscription interface {
	// Changed is signalled when there is something to drain.
	Changed() <-chan struct{}
	// Drain takes the spaces whose occupancy or capacity changed (their latest
	// values), the spaces a topology version removed, and whether a new topology
	// version came into force.
	Drain() (changed []occupancy.Occupancy, removed []string, topology bool)
	Close()
}

// Source answers the current state.
type Source interface {
	Spaces() []occupancy.Occupancy // every space, in topology order
	Topology() occupancy.TopologyConfig
}

// Options configure a Hub. Feed, Source and Render are required.
type Options struct {
	Feed   Feed
	Source Source
	// Render appends the occupancy object of DESIGN 2 (the retained payload).
	Render      func(dst []byte, o occupancy.Occupancy) []byte
	MaxClients  int           // default 100 (http.max_stream_clients)
	MinInterval time.Duration // default 250ms (mqtt.publish_min_interval)
	Heartbeat   time.Duration // default 15s
	// WriteTimeout drops a client whose connection takes no data for this long
	// (default 10s).
	WriteTimeout time.Duration
	Logger       zerolog.Logger
}

// Hub fans the change feed out to stream clients.
type Hub struct {
	opts   Options
	active atomic.Int64  // clients being served, for the limit
	wake   chan struct{} // a subscription started: Run picks it up
	done   chan struct{} // closed by Close: every stream ends
	closer sync.Once

	mu      sync.Mutex
	clients map[*client]struct{}
	sub     Subscription // nil while there are no clients
	latest  map[string]occupancy.Occupancy
	order   []string          // space ids in topology order
	parent  map[string]string // space id -> parent id ("" for a root)
}

// readBatch is how many spaces a client copies from the hub under one lock.
const readBatch = 512

// New returns a Hub; Run drains the feed.
func New(opts Options) (*Hub, error) {
	if opts.Feed == nil || opts.Source == nil || opts.Render == nil {
		return nil, errors.New("stream: feed, source and render are required")
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 100
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 250 * time.Millisecond
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &Hub{opts: opts, clients: map[*client]struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// Close ends every stream (a stopping server waits for its requests to end, and a
// stream would not) and refuses new ones with 503.
func (h *Hub) Close() { h.closer.Do(func() { close(h.done) }) }

// Clients is the number of clients being served.
func (h *Hub) Clients() int { return int(h.active.Load()) }

// MaxClients is the client limit.
func (h *Hub) MaxClients() int { return h.opts.MaxClients }

// Run drains the feed until ctx ends: at most once per MinInterval, it takes the
// changes into the hub's copy and marks each changed space for every client that
// wants it.
func (h *Hub) Run(ctx context.Context) {
	var last time.Time
	for {
		h.mu.Lock()
		sub := h.sub
		h.mu.Unlock()
		var changed <-chan struct{}
		if sub != nil {
			changed = sub.Changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
			continue
		case <-changed:
		}
		if wait := h.opts.MinInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		occs, removed, topo := sub.Drain()
		h.mu.Lock()
		if h.sub != sub { // the last client left meanwhile
			h.mu.Unlock()
			continue
		}
		for _, id := range removed {
			delete(h.latest, id)
		}
		ids := make([]string, len(occs))
		for i, o := range occs {
			h.latest[o.Space] = o
			ids[i] = o.Space
		}
		if topo {
			// A new version: its order and nesting, and the values of spaces it added
			// that did not change (so they are in later snapshots and get sent).
			h.indexTopology()
			if added := h.addMissing(); len(added) > 0 {
				ids = append(ids, added...)
			}
		}
		for c := range h.clients {
			c.mark(ids, h.parent)
		}
		h.mu.Unlock()
	}
}

// start subscribes and copies the current state; called with mu held, for the
// first client.
func (h *Hub) start() {
	h.sub = h.opts.Feed.Subscribe()
	spaces := h.opts.Source.Spaces()
	h.latest = make(map[string]occupancy.Occupancy, len(spaces))
	for _, o := range spaces {
		h.latest[o.Space] = o
	}
	h.indexTopology()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// stop ends the subscription and drops the copy; called with mu held, when the last
// client leaves.
func (h *Hub) stop() {
	h.sub.Close()
	h.sub, h.latest, h.order, h.parent = nil, nil, nil, nil
}

// addMissing copies the current values of the spaces the topology has and the copy
// lacks, and returns their ids; called with mu held.
func (h *Hub) addMissing() []string {
	missing := false
	for _, id := range h.order {
		if _, ok := h.latest[id]; !ok {
			missing = true
			break
		}
	}
	if !missing {
		return nil
	}
	var added []string
	for _, o := range h.opts.Source.Spaces() {
		if _, ok := h.latest[o.Space]; !ok {
			h.latest[o.Space] = o
			added = append(added, o.Space)
		}
	}
	return added
}

// indexTopology reads the topology's order and nesting; called with mu held.
func (h *Hub) indexTopology() {
	tc := h.opts.Source.Topology()
	h.order = make([]string, len(tc.Spaces))
	h.parent = make(map[string]string, len(tc.Spaces))
	for i, sp := range tc.Spaces {
		h.order[i] = sp.ID
		h.parent[sp.ID] = sp.Parent
	}
}

// filter is what a client asked for; the zero filter is every space.
type filter struct {
	spaces map[string]bool
	under  string
}

func (f filter) all() bool { return f.spaces == nil && f.under == "" }

// wants reports whether the client asked for space id; parent is the topology's
// nesting.
func (f filter) wants(id string, parent map[string]string) bool {
	if f.all() || f.spaces[id] {
		return true
	}
	if f.under == "" {
		return false
	}
	for cur, n := id, 0; cur != "" && n <= len(parent); n++ {
		if cur == f.under {
			return true
		}
		cur = parent[cur]
	}
	return false
}

// parseFilter reads ?space= and ?under=.
func parseFilter(r *http.Request) (filter, error) {
	var f filter
	q := r.URL.Query()
	for _, v := range q["space"] {
		for _, id := range strings.Split(v, ",") {
			if id == "" {
				continue
			}
			if !occupancy.ValidID(id) {
				return f, fmt.Errorf("query parameter space: %q is not a space id", id)
			}
			if f.spaces == nil {
				f.spaces = map[string]bool{}
			}
			f.spaces[id] = true
		}
	}
	if vs := q["under"]; len(vs) > 0 {
		if len(vs) > 1 {
			return f, errors.New("query parameter under: give one space")
		}
		if !occupancy.ValidID(vs[0]) {
			return f, fmt.Errorf("query parameter under: %q is not a space id", vs[0])
		}
		f.under = vs[0]
	}
	if f.all() && (q.Has("space") || q.Has("under")) {
		return f, errors.New("query parameters space and under need a space id")
	}
	return f, nil
}

// unknown returns the first space of f the topology does not know ("" if none);
// called with mu held.
func (h *Hub) unknown(f filter) string {
	if _, ok := h.parent[f.under]; f.under != "" && !ok {
		return f.under
	}
	for id := range f.spaces {
		if _, ok := h.parent[id]; !ok {
			return id
		}
	}
	return ""
}

// client is one stream connection.
type client struct {
	f      filter
	mu     sync.Mutex
	marked map[string]struct{} // latest wins: one mark per space
	signal chan struct{}       // capacity 1
	sent   map[string][2]int64 // occupancy and capacity last written per space
	vals   []occupancy.Occupancy
}

func (c *client) mark(ids []string, parent map[string]string) {
	c.mu.Lock()
	n := 0
	for _, id := range ids {
		if c.f.wants(id, parent) {
			c.marked[id] = struct{}{}
			n++
		}
	}
	c.mu.Unlock()
	if n > 0 {
		select {
		case c.signal <- struct{}{}:
		default:
		}
	}
}

// take empties the client's marks.
func (c *client) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.marked) == 0 {
		return nil
	}
	ids := make([]string, 0, len(c.marked))
	for id := range c.marked {
		ids = append(ids, id)
	}
	clear(c.marked)
	return ids
}

// ServeHTTP streams the filtered spaces: a snapshot, then every change.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	select {
	case <-h.done:
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "the gateway is stopping")
		return
	default:
	}
	if n := h.active.Add(1); n > int64(h.opts.MaxClients) {
		h.active.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many stream clients: at most %d (http.max_stream_clients)", h.opts.MaxClients))
		return
	}
	defer h.active.Add(-1)

	// Registered, and the snapshot's spaces chosen, under the lock the rounds take:
	// a change drained from here on is marked and written after the snapshot.
	c := &client{f: f, marked: map[string]struct{}{}, signal: make(chan struct{}, 1), sent: map[string][2]int64{}}
	h.mu.Lock()
	if h.sub == nil {
		h.start()
	}
	h.clients[c] = struct{}{}
	bad := h.unknown(f)
	var snapshot []string
	if bad == "" {
		snapshot = make([]string, 0, len(h.order))
		for _, id := range h.order {
			if f.wants(id, h.parent) {
				snapshot = append(snapshot, id)
			}
		}
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.clients, c)
		if len(h.clients) == 0 {
			h.stop()
		}
		h.mu.Unlock()
	}()
	if bad != "" {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", bad))
		return
	}

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // a proxy in front must not hold events back
	hd.Set("X-Content-Type-Options", "nosniff")
	out := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: h.opts.WriteTimeout}
	w.WriteHeader(http.StatusOK)
	if err := out.flush(); err != nil {
		return
	}
	if err := h.write(out, c, snapshot); err != nil {
		h.drop(r, err)
		return
	}
	beat := time.NewTicker(h.opts.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-c.signal:
			err = h.write(out, c, c.take())
		case <-beat.C:
			out.buf = append(out.buf, ": heartbeat\n\n"...)
			err = out.flush()
		}
		if err != nil {
			h.drop(r, err)
			return
		}
	}
}

func (h *Hub) drop(r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left
	}
	h.opts.Logger.Info().Err(err).Str("remote", r.RemoteAddr).Msg("stream client dropped: it did not take its data in time")
}

// write writes the latest values of ids, those that changed since this client was
// last sent them.
func (h *Hub) write(out *sseWriter, c *client, ids []string) error {
	for len(ids) > 0 {
		n := min(len(ids), readBatch)
		c.vals = c.vals[:0]
		h.mu.Lock()
		for _, id := range ids[:n] {
			if o, ok := h.latest[id]; ok {
				c.vals = append(c.vals, o)
			}
		}
		h.mu.Unlock()
		ids = ids[n:]
		for _, o := range c.vals {
			v := [2]int64{o.Occupancy, o.Capacity}
			if last, ok := c.sent[o.Space]; ok && last == v {
				continue
			}
			c.sent[o.Space] = v
			out.buf = append(out.buf, "event: occupancy\ndata: "...)
			out.buf = h.opts.Render(out.buf, o)
			out.buf = append(out.buf, "\n\n"...)
		}
		if len(out.buf) >= 32<<10 || len(ids) == 0 {
			if err := out.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// sseWriter buffers events and writes them with a deadline.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

func (s *sseWriter) flush() error {
	// The server's own WriteTimeout is for whole answers; a stream sets its own
	// deadline for every write instead.
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if len(s.buf) > 0 {
		if _, err := s.w.Write(s.buf); err != nil {
			return err
		}
		s.buf = s.buf[:0]
	}
	return s.rc.Flush()
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
