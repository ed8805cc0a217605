package sdnotify

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Options are what a Supervisor watches. Every function is called from the
// Supervisor's goroutine only.
type Options struct {
	// Ready is nil once the daemon is ready; READY=1 goes out the first time it is,
	// and while it is not, the STATUS line gives its reason.
	Ready func() error
	// Alive is nil while the loops that prove the daemon works make progress. While
	// it is not, no WATCHDOG=1 goes out (systemd restarts the daemon once
	// WatchdogSec= passes) and the STATUS line says why. Nil: always alive.
	Alive func(now time.Time) error
	// Status is the STATUS line while the daemon is ready (nil: "ready").
	Status func(now time.Time) string
	// Watchdog is the watchdog timeout (WatchdogTimeout; 0: no WATCHDOG=1 pings).
	Watchdog time.Duration
	// Every is how often the status (and the watchdog) is refreshed; default 5 s,
	// at most a third of Watchdog. Before ready, readiness is polled every
	// PollReady (default 100 ms).
	Every     time.Duration
	PollReady time.Duration
	Logger    zerolog.Logger
	Now       func() time.Time // default time.Now
}

// Supervisor sends a daemon's notifications from its own goroutine: READY=1 once
// Ready is nil, STATUS= lines, and WATCHDOG=1 while Alive is nil. Stopping,
// Reloading and Reloaded are called by the daemon around its drain and reloads.
// A Supervisor on the nil Notifier runs nothing; the nil Supervisor's methods do
// nothing.
type Supervisor struct {
	n    *Notifier
	opts Options

	mu       sync.Mutex
	ready    bool // READY=1 sent (and no reload in progress)
	stopped  bool
	quit     chan struct{}
	done     chan struct{}
	lastSent string // last STATUS sent, to send changes only (and on every ping)
}

// Start starts a Supervisor for n (a no-op one when n is nil).
func Start(n *Notifier, opts Options) *Supervisor {
	s := &Supervisor{n: n, opts: opts, quit: make(chan struct{}), done: make(chan struct{})}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	if s.opts.Every <= 0 {
		s.opts.Every = 5 * time.Second
	}
	if wd := s.opts.Watchdog; wd > 0 && s.opts.Every > wd/3 {
		s.opts.Every = wd / 3
	}
	if s.opts.PollReady <= 0 {
		s.opts.PollReady = 100 * time.Millisecond
	}
	if n == nil {
		close(s.done)
		return s
	}
	go s.loop()
	return s
}

func (s *Supervisor) loop() {
	defer close(s.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if s.step() {
			t.Reset(s.opts.Every)
		} else {
			t.Reset(s.opts.PollReady)
		}
	}
}

// step sends what is due now and reports whether the daemon is ready.
func (s *Supervisor) step() bool {
	now := s.opts.Now()
	var alive error
	if s.opts.Alive != nil {
		alive = s.opts.Alive(now)
	}
	var notReady error
	if s.opts.Ready != nil {
		notReady = s.opts.Ready()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return true
	}
	var states []string
	status := ""
	switch {
	case alive != nil:
		status = "not responding: " + alive.Error()
	case notReady != nil && !s.ready:
		status = "starting: " + notReady.Error()
	case notReady != nil:
		status = "not ready: " + notReady.Error()
	case s.opts.Status != nil:
		status = s.opts.Status(now)
	default:
		status = "ready"
	}
	if notReady == nil && !s.ready {
		s.ready = true
		states = append(states, Ready)
		s.opts.Logger.Debug().Msg("systemd: ready")
	}
	if alive == nil && s.opts.Watchdog > 0 {
		states = append(states, Watchdog)
	} else if alive != nil {
		s.opts.Logger.Warn().Err(alive).Msg("systemd watchdog: not pinging")
	}
	if status != s.lastSent || len(states) > 0 {
		states = append(states, Status(status))
		s.lastSent = status
	}
	s.send(states...)
	return s.ready
}

func (s *Supervisor) send(states ...string) {
	if err := s.n.Notify(states...); err != nil {
		s.opts.Logger.Warn().Err(err).Msg("systemd notification not sent")
	}
}

// Reloading says a reload began (RELOADING=1): systemd shows the unit reloading
// until Reloaded. Before the daemon was ready, it sends nothing.
func (s *Supervisor) Reloading() {
	s.sendWhileReady("reloading the configuration", Reloading()...)
}

// Reloaded says the reload is over (READY=1 again), with its outcome on the STATUS
// line until the next refresh: a refused reload leaves the running configuration
// in force, so the daemon is ready either way.
func (s *Supervisor) Reloaded(err error) {
	status := "configuration reloaded"
	if err != nil {
		status = "reload refused, the running configuration stays: " + err.Error()
	}
	s.sendWhileReady(status, Ready)
}

// sendWhileReady sends the states and the status line, unless the daemon is not
// ready yet or stopping.
func (s *Supervisor) sendWhileReady(status string, states ...string) {
	if s == nil || s.n == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready || s.stopped {
		return
	}
	s.send(append(states, Status(status))...)
	s.lastSent = status
}

// Stopping says the daemon is draining (STOPPING=1) and ends the loop: nothing but
// Status lines goes out from now on.
func (s *Supervisor) Stopping() {
	if s == nil || s.n == nil {
		return
	}
	s.mu.Lock()
	first := !s.stopped
	s.stopped = true
	if first {
		s.send(Stopping, Status("stopping: draining in-flight events"))
	}
	s.mu.Unlock()
	if first {
		close(s.quit)
	}
	<-s.done
}
