package ingest

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Rejected is a message with its rejected events (or its one rejection as a whole:
// bad JSON, too large, a bad topic).
type Rejected struct {
	Message    Message
	DPU        string                // "" when the topic named no valid DPU
	Rejections []occupancy.Rejection // at least one
}

// Rejects records the rejections of a batch of messages (the pipeline has counted
// them in the metrics and the per-DPU statistics already), one call per batch.
// Reject must not block for long: it runs on the ingest path, before the batch is
// acknowledged.
type Rejects interface {
	Reject(batch []Rejected)
}

// DeadLetters is where the Recorder keeps rejected input (*buffer.Store).
type DeadLetters interface {
	PutDeadLetters(ds []buffer.DeadLetter) error
}

// Outgoing is a rejected message on its way to the rejected topic: the message's
// topic and payload (cut to MaxRejectedPayload) and a summary of its rejected
// events (one or many).
type Outgoing struct {
	Topic   string
	Payload []byte
	Summary
}

// Summary sums up the rejected events of one message: the first rejection (Reason,
// Detail and Index of a single event), how many there are, how many per reason
// (when more than one reason) and a sample.
type Summary struct {
	Rejection occupancy.Rejection // the first rejected event
	Count     int                 // rejected events in the message (>= 1)
	Reasons   map[occupancy.Reason]int
	Sample    []occupancy.Rejection // at most MaxRejectedSample; nil for a single rejection
}

const (
	// MaxRejectedPayload is how much of a rejected payload the rejected topic carries.
	MaxRejectedPayload = 1024
	// MaxRejectedSample is how many rejected events of one message the rejected
	// topic and the dead letter list.
	MaxRejectedSample = 10
	// outgoingQueue bounds the rejected messages waiting for the rejected topic; past
	// it they are dropped from the topic (still kept as dead letters, counted).
	outgoingQueue = 1024
)

// Summarize sums up the rejections of one message (rejs must not be empty). The
// sample holds the first rejection of each reason, then the earliest others, up to
// MaxRejectedSample, in the order of rejs.
func Summarize(rejs []occupancy.Rejection) Summary {
	s := Summary{Rejection: rejs[0], Count: len(rejs)}
	if len(rejs) == 1 {
		return s
	}
	s.Reasons = map[occupancy.Reason]int{}
	picked := make([]int, 0, MaxRejectedSample) // positions in rejs
	for i, r := range rejs {
		n := s.Reasons[r.Reason]
		s.Reasons[r.Reason] = n + 1
		if n == 0 && len(picked) < MaxRejectedSample {
			picked = append(picked, i)
		}
	}
	for i := 0; i < len(rejs) && len(picked) < MaxRejectedSample; i++ {
		if !slices.Contains(picked, i) {
			picked = append(picked, i)
		}
	}
	slices.Sort(picked)
	s.Sample = make([]occupancy.Rejection, len(picked))
	for j, i := range picked {
		s.Sample[j] = rejs[i]
	}
	if len(s.Reasons) == 1 {
		s.Reasons = nil
	}
	return s
}

// Recorder is the Rejects of the daemon. Per message, not per event: one dead
// letter (a batch's dead letters in one write), one line in the log at a bounded
// rate, and one entry queued for the rejected topic (Outgoing: the MQTT client
// publishes what it reads there; a full queue drops, so a flood of bad input never
// holds up ingest on the broker). A dead letter the store refuses (a full disk) is
// counted in occupancyd_dead_letters_dropped_total; its message is still published.
type Recorder struct {
	dead     DeadLetters
	metrics  *metrics.Metrics
	rate     *lograte.Logger
	deadRate *lograte.Logger
	out      chan Outgoing
	dropped  atomic.Int64
	deadLost atomic.Int64
}

// NewRecorder returns a Recorder keeping dead letters in dead (nil: none), counting
// in m (nil: a fresh set nobody reads) and logging to log.
func NewRecorder(dead DeadLetters, m *metrics.Metrics, log zerolog.Logger) *Recorder {
	if m == nil {
		m = metrics.New()
	}
	return &Recorder{
		dead:     dead,
		metrics:  m,
		rate:     lograte.New(log, zerolog.WarnLevel, time.Second),
		deadRate: lograte.New(log, zerolog.ErrorLevel, 10*time.Second),
		out:      make(chan Outgoing, outgoingQueue),
	}
}

// Outgoing are the rejected messages for the rejected topic.
func (r *Recorder) Outgoing() <-chan Outgoing { return r.out }

// Dropped is the number of rejected messages the rejected topic missed (queue full).
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// DeadLettersDropped is the number of dead letters the store refused.
func (r *Recorder) DeadLettersDropped() int64 { return r.deadLost.Load() }

// Reject records a batch of rejected messages.
func (r *Recorder) Reject(batch []Rejected) {
	if len(batch) == 0 {
		return
	}
	var dls []buffer.DeadLetter
	if r.dead != nil {
		dls = make([]buffer.DeadLetter, 0, len(batch))
	}
	for _, x := range batch {
		if len(x.Rejections) == 0 {
			continue
		}
		m, sum := x.Message, Summarize(x.Rejections)
		r.metrics.RejectedMessages.Inc()
		select {
		case r.out <- Outgoing{Topic: m.Topic, Payload: cut(m.Payload, MaxRejectedPayload), Summary: sum}:
		default:
			r.dropped.Add(1)
			r.metrics.RejectedNotPublished.Inc()
		}
		if r.dead != nil {
			dls = append(dls, deadLetter(m, sum))
		}
		r.rate.Log(func(e *zerolog.Event) *zerolog.Event {
			return e.Str("topic", m.Topic).Str("reason", string(sum.Rejection.Reason)).
				Str("detail", sum.Rejection.Detail).Int("events", sum.Count)
		}, "rejected input")
	}
	if len(dls) == 0 {
		return
	}
	if err := r.dead.PutDeadLetters(dls); err != nil {
		r.deadLost.Add(int64(len(dls)))
		r.metrics.DeadLettersDropped.Add(float64(len(dls)))
		r.deadRate.Log(func(e *zerolog.Event) *zerolog.Event {
			return e.Err(err).Int("dead_letters", len(dls))
		}, "dead letters not stored (counted in occupancyd_dead_letters_dropped_total; still published on the rejected topic)")
	}
}

// deadLetter is the dead letter of a rejected message.
func deadLetter(m Message, s Summary) buffer.DeadLetter {
	d := buffer.DeadLetter{
		Time:    m.Received,
		Topic:   m.Topic,
		Reason:  string(s.Rejection.Reason),
		Detail:  s.Rejection.Detail,
		Payload: cut(m.Payload, buffer.MaxDeadPayload),
	}
	if s.Count > 1 {
		d.Count = s.Count
		if s.Reasons != nil {
			d.Reasons = make(map[string]int, len(s.Reasons))
			for k, v := range s.Reasons {
				d.Reasons[string(k)] = v
			}
		}
		for _, x := range s.Sample {
			d.Sample = append(d.Sample, buffer.DeadSample{Index: x.Index, Reason: string(x.Reason), Detail: x.Detail})
		}
	}
	return d
}

// Flush logs the lines suppressed since the last one.
func (r *Recorder) Flush() {
	r.rate.Flush()
	r.deadRate.Flush()
}

func cut(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}
