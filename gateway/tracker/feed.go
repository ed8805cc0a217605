package tracker

import (
	"slices"
	"sync"

	"github.com/occupancyd/occupancyd/occupancy"
)

// The change feed. Outputs (the MQTT publisher, the HTTP stream, ...) subscribe and
// get a latest-wins dirty set: the spaces whose occupancy or capacity changed since
// they last drained, each with its latest value, signalled as soon as events,
// resets or topology versions are applied — not only on the tick. A subscriber
// that drains slowly never holds up ingest and never queues more than one entry per
// space: a space that changes again before the drain just gets its newer value.

// Subscription is one subscriber's dirty set. Its methods are safe for concurrent
// use.
type Subscription struct {
	f       *feed
	changed chan struct{}
	ticked  chan struct{}

	mu      sync.Mutex
	pos     map[string]int // index in spaces
	spaces  []occupancy.Occupancy
	removed map[string]bool
	topo    bool
}

// Changed is signalled (capacity 1, so it never blocks the tracker) when changes
// are waiting to be drained.
func (s *Subscription) Changed() <-chan struct{} { return s.changed }

// Ticked is signalled after every engine tick.
func (s *Subscription) Ticked() <-chan struct{} { return s.ticked }

// Drain takes everything waiting: the latest values of the spaces whose occupancy
// or capacity changed, in the order they first changed since the last drain; the
// spaces a topology version removed (and did not add back since), whose outputs are
// to be cleared; and whether a new topology version came into force (e.g. to send
// the Home Assistant discovery configs again).
func (s *Subscription) Drain() (changed []occupancy.Occupancy, removed []string, topology bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, topology = s.spaces, s.topo
	for id := range s.removed {
		removed = append(removed, id)
	}
	slices.Sort(removed)
	s.spaces, s.topo = nil, false
	clear(s.pos)
	clear(s.removed)
	return changed, removed, topology
}

// Close ends the subscription: nothing is recorded for it any more.
func (s *Subscription) Close() {
	s.f.mu.Lock()
	delete(s.f.subs, s)
	s.f.mu.Unlock()
}

func (s *Subscription) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Subscription) add(occs []occupancy.Occupancy) {
	s.mu.Lock()
	for _, o := range occs {
		delete(s.removed, o.Space)
		if i, ok := s.pos[o.Space]; ok {
			s.spaces[i] = o
			continue
		}
		s.pos[o.Space] = len(s.spaces)
		s.spaces = append(s.spaces, o)
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Subscription) version(removed []string) {
	s.mu.Lock()
	s.topo = true
	for _, id := range removed {
		s.removed[id] = true
		if i, ok := s.pos[id]; ok {
			// Keep the order of the others; the removed space is dropped from them.
			s.spaces = append(s.spaces[:i], s.spaces[i+1:]...)
			delete(s.pos, id)
			for j := i; j < len(s.spaces); j++ {
				s.pos[s.spaces[j].Space] = j
			}
		}
	}
	s.mu.Unlock()
	s.signal()
}

type feed struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

func (f *feed) each(fn func(*Subscription)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		fn(s)
	}
}

func (f *feed) any() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs) > 0
}

func (f *feed) version(removed []string) { f.each(func(s *Subscription) { s.version(removed) }) }

func (f *feed) ticked() {
	f.each(func(s *Subscription) {
		select {
		case s.ticked <- struct{}{}:
		default:
		}
	})
}

// Subscribe returns a new subscription to the change feed; it starts empty (the
// subscriber reads the current state with Spaces first, if it needs it).
func (t *Tracker) Subscribe() *Subscription {
	s := &Subscription{
		f:       &t.feed,
		changed: make(chan struct{}, 1),
		ticked:  make(chan struct{}, 1),
		pos:     map[string]int{},
		removed: map[string]bool{},
	}
	t.feed.mu.Lock()
	if t.feed.subs == nil {
		t.feed.subs = map[*Subscription]struct{}{}
	}
	t.feed.subs[s] = struct{}{}
	t.feed.mu.Unlock()
	return s
}

// changedLocked hands the spaces the engine reports as changed to the metrics and
// every subscriber. It runs under mu, after every engine call that can change
// occupancy or capacity, so subscribers see values in the order they were made.
func (t *Tracker) changedLocked() {
	ids := t.eng.Changed()
	if len(ids) == 0 {
		return
	}
	occs := make([]occupancy.Occupancy, 0, len(ids))
	for _, id := range ids {
		if o, ok := t.eng.Current(id); ok {
			occs = append(occs, o)
		}
	}
	t.metrics.SetSpaces(occs)
	if t.feed.any() {
		t.feed.each(func(s *Subscription) { s.add(occs) })
	}
}
