// Package push is HTTP push ingest (DESIGN 5): POST /v1/dpus/{id}/events takes the
// payloads the DPU would publish on its MQTT topic — events, or interval and
// cumulative reports in its kind and map (DESIGN 2a) — through the ingest pipeline's
// synchronous entry, and answers once they are durable: the promise of a PUBACK.
//
// Answers:
//
//	200 {"accepted","duplicates","rejected":[{"index","reason","detail"}]} (detail for
//	    the first 100 rejections)
//	    every event or report stored is durable (accepted: new, parked ones
//	    included; duplicates: stored before, counted once); the bad elements of a
//	    batch are listed (index: the position in the JSON array, -1 for the whole
//	    message or its one object) and the good ones are kept
//	400 the same object with "error", when nothing could be stored: every element
//	    (or the whole message) was rejected
//	401 no or a wrong bearer token; 403 when no token could open the route
//	413 a body over mqtt.max_payload
//	503 the store did not confirm the write, or the gateway is stopping: nothing was
//	    acknowledged; send again (a repeat counts once)
//
// Access: Authorization: Bearer with http.token, or with the DPU's own ingest token
// (topology ingest_token_file), which opens that DPU's route and nothing else, so a
// sensor's leaked credential does not open the API. With neither configured the
// route answers 403, as every write route without a token.
//
// Which kind and map decode a push (the pipeline's routes): the DPU's own kind and
// map in the topology in force, else the kind and map every mqtt.events_topic entry
// shares (without a map's dpu path), else events. A DPU the topology does not know
// is not refused (DESIGN 3): its payload is decoded the same way and parked until a
// version knows the DPU.
package push

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/httpapi"
	"github.com/occupancyd/occupancyd/gateway/ingest"
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Route is the route's pattern.
const Route = "POST /v1/dpus/{id}/events"

// Ingester is what the handler needs from the ingest pipeline (*ingest.Pipeline).
type Ingester interface {
	Ingest(ctx context.Context, m ingest.Message) (ingest.Result, error)
}

// Mux is where the route is registered (*httpapi.Server, or an http.ServeMux).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Options configure a Handler. Ingester is required.
type Options struct {
	Ingester Ingester
	// Admin reports whether a request carries the bearer token of http.token
	// ((*httpapi.Server).Authorized); nil: no http.token is configured.
	Admin func(r *http.Request) bool
	// MaxPayload is mqtt.max_payload: larger bodies are answered 413.
	MaxPayload int
	// Timeout bounds one push's store (default 30 s); the client going away does not
	// cut it short, so a push that was stored is stored whole.
	Timeout time.Duration
	Logger  zerolog.Logger
}

// Handler answers POST /v1/dpus/{id}/events.
type Handler struct {
	opts   Options
	tokens atomic.Pointer[map[string][sha256.Size]byte] // DPU id -> hash of its ingest token
	// notStored logs a push the store did not take at most once a second, with the
	// number suppressed: while storage refuses writes every DPU's every push fails.
	notStored *lograte.Logger
}

// New returns the handler; Register puts it on a mux.
func New(o Options) (*Handler, error) {
	if o.Ingester == nil {
		return nil, errors.New("push: an ingester is required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	h := &Handler{opts: o, notStored: lograte.New(o.Logger, zerolog.ErrorLevel, time.Second)}
	h.tokens.Store(&map[string][sha256.Size]byte{})
	return h, nil
}

// Register registers the route on mux.
func (h *Handler) Register(mux Mux) { mux.Handle(Route, h) }

// SetTokens replaces the DPUs' ingest tokens (DPU id -> token; empty tokens open
// nothing): at start and on every reload of the topology.
func (h *Handler) SetTokens(tokens map[string]string) {
	m := make(map[string][sha256.Size]byte, len(tokens))
	for dpu, tok := range tokens {
		if tok != "" {
			m[dpu] = sha256.Sum256([]byte(tok))
		}
	}
	h.tokens.Store(&m)
}

// Rejected is one element of the answer's rejected list.
type Rejected struct {
	Index  int              `json:"index"`
	Reason occupancy.Reason `json:"reason"`
	Detail string           `json:"detail,omitempty"`
}

// Answer is the body of a 200 (and of a 400, with Error).
type Answer struct {
	Error      string     `json:"error,omitempty"`
	Accepted   int        `json:"accepted"`
	Duplicates int        `json:"duplicates"`
	Rejected   []Rejected `json:"rejected"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dpu := r.PathValue("id")
	if !h.authorize(w, r, dpu) {
		return
	}
	max := h.opts.MaxPayload
	if max <= 0 {
		max = 1 << 30
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(max)))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over mqtt.max_payload (%d bytes)", max))
			return
		}
		httpapi.WriteError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.opts.Timeout)
	defer cancel()
	res, err := h.opts.Ingester.Ingest(ctx, ingest.Message{Topic: "http:/v1/dpus/" + dpu + "/events", DPU: dpu, Payload: body})
	if err != nil {
		if !errors.Is(err, ingest.ErrStopping) {
			h.notStored.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(err).Str("dpu", dpu) },
				"HTTP push not stored; the sender is told to send again")
		}
		w.Header().Set("Retry-After", "1")
		httpapi.WriteError(w, http.StatusServiceUnavailable, "not stored, send again: "+err.Error())
		return
	}
	a := Answer{Accepted: res.Accepted, Duplicates: res.Duplicates, Rejected: make([]Rejected, len(res.Rejected))}
	for i, rj := range res.Rejected {
		a.Rejected[i] = Rejected{Index: rj.Index, Reason: rj.Reason, Detail: rj.Detail}
	}
	sortRejected(a.Rejected)
	code := http.StatusOK
	if a.Accepted+a.Duplicates == 0 && len(a.Rejected) > 0 {
		code = http.StatusBadRequest
		a.Error = fmt.Sprintf("nothing stored: %s", summary(a.Rejected))
	}
	httpapi.WriteJSON(w, code, a)
}

// authorize answers 403 or 401 unless the request carries http.token or the DPU's
// own ingest token.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, dpu string) bool {
	tokens := *h.tokens.Load()
	own, hasOwn := tokens[dpu]
	if h.opts.Admin == nil && !hasOwn {
		httpapi.WriteError(w, http.StatusForbidden, "HTTP push is disabled for this DPU: set http.token, or the DPU's ingest_token_file")
		return false
	}
	if h.opts.Admin != nil && h.opts.Admin(r) {
		return true
	}
	if tok, ok := bearer(r); ok && hasOwn {
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], own[:]) == 1 {
			return true
		}
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="occupancyd"`)
	httpapi.WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <http.token or the DPU's ingest token>)")
	return false
}

// bearer is the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// sortRejected orders the rejections by index (the pipeline lists them as found)
// and keeps the details of the first maxDetails only, so that a batch of many bad
// elements is answered in a body of bounded size per element.
func sortRejected(rs []Rejected) {
	slices.SortStableFunc(rs, func(a, b Rejected) int { return cmp.Compare(a.Index, b.Index) })
	for i := maxDetails; i < len(rs); i++ {
		rs[i].Detail = ""
	}
}

// maxDetails is how many rejections of one answer carry their detail.
const maxDetails = 100

// summary names the first rejection and how many there are.
func summary(rs []Rejected) string {
	first := string(rs[0].Reason)
	if rs[0].Detail != "" {
		first += " (" + rs[0].Detail + ")"
	}
	if len(rs) == 1 {
		return first
	}
	return fmt.Sprintf("%d rejected, the first %s", len(rs), first)
}
