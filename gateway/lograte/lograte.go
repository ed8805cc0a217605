// Package lograte bounds the rate of a log line on a hot path: a line that would
// repeat (a store that fails every write, a flood of rejected input) is written at
// most once per interval, and the next one written says how many were suppressed
// in between, so nothing is lost from the count and the log does not flood.
package lograte

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Logger writes one line per interval at its level; lines in between are counted
// and the count goes out as "suppressed" with the next line (or Flush). Safe for
// concurrent use. The zero Logger is not usable: use New.
type Logger struct {
	l     zerolog.Logger
	level zerolog.Level
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time
	msg        string // the last message written or suppressed
	suppressed int
}

// New returns a Logger writing to l at level, at most one line per every.
func New(l zerolog.Logger, level zerolog.Level, every time.Duration) *Logger {
	return &Logger{l: l, level: level, every: every, now: time.Now}
}

// Log writes msg with the fields that fields adds (fields may be nil), unless a
// line was written less than the interval ago: then it only counts it. fields runs
// only for a line that is written.
func (r *Logger) Log(fields func(*zerolog.Event) *zerolog.Event, msg string) {
	r.mu.Lock()
	now := r.now()
	r.msg = msg
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.last = now
	r.mu.Unlock()
	e := r.l.WithLevel(r.level)
	if e == nil {
		return
	}
	if fields != nil {
		e = fields(e)
	}
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	e.Msg(msg)
}

// Suppressed is the number of lines counted since the last one written.
func (r *Logger) Suppressed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suppressed
}

// Flush writes the count of the lines suppressed since the last one written, if any
// (at a stop, so that a count is not lost).
func (r *Logger) Flush() {
	r.mu.Lock()
	n, msg := r.suppressed, r.msg
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		if e := r.l.WithLevel(r.level); e != nil {
			e.Int("suppressed", n).Msg(msg + " (suppressed lines)")
		}
	}
}
