package ingest

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Rejected is one rejected event or message with the message it came in.
type Rejected struct {
	Message   Message
	DPU       string // "" when the topic named no valid DPU
	Rejection occupancy.Rejection
}

// Rejects records rejections (the pipeline has counted them in the metrics and the
// per-DPU statistics already). Reject must not block for long: it runs on the
// ingest path.
type Rejects interface {
	Reject(r Rejected)
}

// DeadLetters is where the Recorder keeps rejected input (*buffer.Store).
type DeadLetters interface {
	PutDeadLetter(d buffer.DeadLetter) error
}

// Outgoing is a rejection on its way to the rejected topic: the message's topic,
// the rejection and the payload cut to MaxRejectedPayload.
type Outgoing struct {
	Topic     string
	Rejection occupancy.Rejection
	Payload   []byte
}

const (
	// MaxRejectedPayload is how much of a rejected payload the rejected topic carries.
	MaxRejectedPayload = 1024
	// maxDeadLetterPayload is how much of it a dead letter keeps.
	maxDeadLetterPayload = 64 * 1024
	// outgoingQueue bounds the rejections waiting for the rejected topic; past it
	// they are dropped from the topic (still kept as dead letters, counted, logged).
	outgoingQueue = 1024
)

// Recorder is the Rejects of the daemon: each rejection is kept as a dead letter,
// logged at a bounded rate, and queued for the rejected topic (Outgoing: the MQTT
// client publishes what it reads there; a full queue drops, so a flood of bad input
// never holds up ingest on the broker).
type Recorder struct {
	dead    DeadLetters
	log     zerolog.Logger
	rate    *rateLog
	out     chan Outgoing
	dropped atomic.Int64
}

// NewRecorder returns a Recorder keeping dead letters in dead (nil: none).
func NewRecorder(dead DeadLetters, log zerolog.Logger) *Recorder {
	return &Recorder{dead: dead, log: log, rate: newRateLog(log, time.Second), out: make(chan Outgoing, outgoingQueue)}
}

// Outgoing are the rejections for the rejected topic.
func (r *Recorder) Outgoing() <-chan Outgoing { return r.out }

// Dropped is the number of rejections the rejected topic missed (queue full).
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Reject records one rejection.
func (r *Recorder) Reject(x Rejected) {
	m := x.Message
	select {
	case r.out <- Outgoing{Topic: m.Topic, Rejection: x.Rejection, Payload: cut(m.Payload, MaxRejectedPayload)}:
	default:
		r.dropped.Add(1)
	}
	if r.dead != nil {
		dl := buffer.DeadLetter{
			Time:    m.Received,
			Topic:   m.Topic,
			Reason:  string(x.Rejection.Reason),
			Detail:  x.Rejection.Detail,
			Payload: cut(m.Payload, maxDeadLetterPayload),
		}
		if err := r.dead.PutDeadLetter(dl); err != nil {
			r.log.Warn().Err(err).Msg("store dead letter")
		}
	}
	r.rate.log(func(e *zerolog.Event) *zerolog.Event {
		return e.Str("topic", m.Topic).Str("reason", string(x.Rejection.Reason)).Str("detail", x.Rejection.Detail)
	}, "rejected input")
}

// Flush logs the lines suppressed since the last one.
func (r *Recorder) Flush() { r.rate.flush() }

func cut(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}

// ---- bounded-rate logging ----

// rateLog logs at most one line per interval; lines in between are counted and the
// count is reported with the next line.
type rateLog struct {
	l          zerolog.Logger
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newRateLog(l zerolog.Logger, every time.Duration) *rateLog {
	return &rateLog{l: l, every: every}
}

func (r *rateLog) log(fields func(*zerolog.Event) *zerolog.Event, msg string) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.last = now
	r.mu.Unlock()
	e := fields(r.l.Warn())
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	e.Msg(msg)
}

// flush reports lines suppressed since the last one.
func (r *rateLog) flush() {
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.l.Warn().Int("suppressed", n).Msg("rejected input (suppressed lines)")
	}
}
