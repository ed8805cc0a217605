// Package httpapi is the HTTP server of DESIGN 5: the routes over the tracker's
// queries (a Querier it declares), readiness, /metrics, the bearer-token check of
// the write routes, JSON errors, request logging and panic recovery. More routes
// (the status page, the stream, HTTP push) are registered with Handle and
// HandleWrite before Serve; each lives in the package of its job and gets what it
// needs through its own constructor.
package httpapi

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/lograte"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/gateway/payload"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Querier is what the HTTP API needs from the tracker (*tracker.Tracker).
type Querier interface {
	Spaces() []occupancy.Occupancy
	Space(id string) (occupancy.Occupancy, bool)
	At(id string, t int64) (int64, error) // wraps occupancy.ErrUnknownSpace -> 404
	// Counts returns the calendar buckets of interval ms in the space's time zone that
	// overlap [start, end) and begin by now (occupancy.CalendarBounds; a query it
	// cannot answer as asked wraps occupancy.ErrBadQuery -> 400).
	Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error)
	Location(id string) *time.Location // the space's time zone (inherited, UTC at the top)
	Reset(r occupancy.Reset) error     // stores then applies; tracker.ErrBadReset-wrapped -> 400
	DPUs() []tracker.DPUStat
	DPUsOf(ids []string) []tracker.DPUStat // those DPUs, in that order
	Topology() occupancy.TopologyConfig    // the version in force (the tree, the DPUs' places)
	Horizon() int64                        // settled_until of GET /v1/status
}

// MaxBuckets bounds the buckets one counts query may ask for.
const MaxBuckets = 10000

// DefaultInterval is the counts query's interval when none is given.
const DefaultInterval = 15 * time.Minute

const maxResetBody = 64 << 10

// Options configure a Server. Querier is required.
type Options struct {
	// Listen is http.listen; the server listens at once (New), so a busy or bad
	// address is an error at start.
	Listen string
	// Token is http.token: "" disables the write routes (403).
	Token string
	// OpenReads is http.open_reads: reads need no token. On a loopback Listen they
	// need none anyway; elsewhere, with a Token, a read needs it, as a bearer token
	// or the status page's session cookie (access.go).
	OpenReads bool
	Querier   Querier
	// Page feeds the status page's routes (page.go).
	Page PageSources
	// Ready is nil when the gateway is ready (/readyz); nil func: always ready. An
	// error with a Reason() method (metrics.NotReady) gives /readyz its reason.
	Ready   func() error
	Metrics *metrics.Metrics // served at /metrics; nil: a fresh set
	Logger  zerolog.Logger   // used as given (the caller tags it)
	Now     func() time.Time // default time.Now
}

// Server serves the HTTP API of DESIGN section 5.
type Server struct {
	ln      net.Listener
	srv     *http.Server
	mux     *http.ServeMux
	q       Querier
	ready   func() error
	m       *metrics.Metrics
	log     zerolog.Logger
	access  *access
	now     func() time.Time
	metrics http.Handler

	// queryErr and deadErr log a query and a read of the dead letters that failed
	// (500) at most once a second each, with the number suppressed: a failing store
	// fails every poll of every client.
	queryErr, deadErr *lograte.Logger

	routes []string // every pattern registered (Routes)

	page      PageSources
	trees     treeCache
	rates     rateWindow
	stopRates context.CancelFunc
}

// ErrOpenHTTP refuses a server on a non-loopback address with no token unless reads
// are meant to be open (Options.OpenReads, http.open_reads).
var ErrOpenHTTP = errors.New("http.listen is not a loopback address and no token is set: set http.token or http.token_file, or http.open_reads: true")

// New listens on o.Listen at once and prepares the routes; Serve starts answering.
func New(o Options) (*Server, error) {
	if o.Querier == nil {
		return nil, errors.New("http: nil querier")
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Ready == nil {
		o.Ready = func() error { return nil }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("http server: %w", err)
	}
	loopback := config.IsLoopbackHost(host)
	if !loopback && o.Token == "" && !o.OpenReads {
		// The configuration refuses this already (http.listen); the server does too,
		// as the embedded broker does, whoever builds it.
		return nil, fmt.Errorf("%w: %q", ErrOpenHTTP, o.Listen)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("http server: %w", err) // the net error names the address
	}
	s := &Server{
		ln:    ln,
		q:     o.Querier,
		ready: o.Ready,
		m:     o.Metrics,
		log:   o.Logger,
		now:   o.Now,
	}
	s.queryErr = lograte.New(o.Logger, zerolog.ErrorLevel, time.Second)
	s.deadErr = lograte.New(o.Logger, zerolog.ErrorLevel, time.Second)
	s.access = newAccess(o.Token, o.OpenReads || loopback)
	s.page = o.Page
	s.metrics = promhttp.HandlerFor(s.m.Registry, promhttp.HandlerOpts{
		ErrorLog: promLogger{s.log},
	})
	s.mux = http.NewServeMux()
	s.HandleFunc("GET /healthz", s.healthz)
	s.HandleFunc("GET /readyz", s.readyz)
	s.Handle("GET /metrics", s.metrics)
	s.HandleFunc("GET /v1/spaces", s.spaces)
	s.HandleFunc("GET /v1/spaces/{id}", s.space)
	s.HandleFunc("GET /v1/spaces/{id}/occupancy", s.occupancyAt)
	s.HandleFunc("GET /v1/spaces/{id}/counts", s.counts)
	s.HandleWrite("POST /v1/spaces/{id}/reset", http.HandlerFunc(s.reset))
	s.HandleFunc("GET /v1/dpus", s.dpus)
	s.HandleFunc("GET /v1/status", s.status)
	s.HandleFunc("GET /v1/tree", s.tree)
	s.HandleFunc("GET /v1/rejections", s.rejections)
	s.HandleFunc("POST /v1/session", s.access.startSession)
	s.HandleFunc("DELETE /v1/session", s.access.endSession)
	s.HandleFunc("GET /v1/openapi.json", serveOpenAPI)
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return s, nil
}

// Handle registers a route (a net/http ServeMux pattern, e.g. "GET /v1/stream")
// before Serve. Its errors should be JSON (WriteError). Describe it in openapi.json:
// the daemon's tests fail on a route missing there.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, h)
}

// HandleFunc is Handle for a function. Handle and HandleFunc have the signatures of
// http.ServeMux's, so a package can register its routes on either through a small
// interface it declares.
func (s *Server) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(pattern, http.HandlerFunc(h))
}

// Routes are the patterns registered so far (Handle, HandleFunc, HandleWrite), in
// order: what GET /v1/openapi.json must describe.
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// OpenAPI is the OpenAPI 3.1 description of the HTTP API (openapi.json, embedded),
// served at GET /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	WriteRaw(w, http.StatusOK, slices.Clip(bytes.TrimRight(OpenAPI, "\n"))) // Clip: WriteRaw appends
}

// HandleWrite registers a write route: it answers 403 while no http.token is
// configured and 401 without the right bearer token; h runs only when authorized.
func (s *Server) HandleWrite(pattern string, h http.Handler) {
	s.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.access.hasToken {
			WriteError(w, http.StatusForbidden, "write routes are disabled: set http.token to enable them")
			return
		}
		if !s.Authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="occupancyd"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <http.token>)")
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// OnShutdown registers f to run when Shutdown begins: long-lived answers (the stream)
// end there, as Shutdown waits for every request to finish.
func (s *Server) OnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }

// Addr is the address the server listens on (the real port when listen had port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers requests until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	ctx, stop := context.WithCancel(context.Background())
	s.stopRates = stop
	go s.runRates(ctx)
	defer stop()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("http serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests and waits (within ctx) for running ones to end.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	// Serve may never have run: close the listener ourselves.
	if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// ServeHTTP routes a request, turns the mux's own 404/405 answers into JSON errors,
// recovers panics into 500 and logs every request at debug level.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error().Interface("panic", p).Str("method", r.Method).Str("path", r.URL.Path).Msg("http handler panicked")
			if !sw.wrote {
				WriteError(sw, http.StatusInternalServerError, "internal error")
			}
		}
		s.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Str("query", redactQuery(r.URL.RawQuery)).
			Str("remote", r.RemoteAddr).Int("status", sw.code()).Dur("took", time.Since(start)).Msg("http request")
	}()
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !openRoute(r.Method, r.URL.Path) && !s.access.canRead(r) {
		sw.Header().Set("WWW-Authenticate", `Bearer realm="occupancyd"`)
		WriteError(sw, http.StatusUnauthorized, "reads on this address need the token (Authorization: Bearer <http.token>, or the status page's session)")
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// No route matched (404) or the path matched with another method (405, with
		// Allow set), or a redirect: keep the mux's status and headers, answer JSON.
		c := &captureWriter{header: sw.Header()}
		h.ServeHTTP(c, r)
		switch c.status {
		case http.StatusNotFound:
			WriteError(sw, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
		case http.StatusMethodNotAllowed:
			WriteError(sw, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, sw.Header().Get("Allow")))
		default:
			sw.WriteHeader(c.status)
			_, _ = sw.Write(c.body.Bytes())
		}
		return
	}
	s.mux.ServeHTTP(sw, r)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyDoc is GET /readyz's answer: {"status":"ready"}, or {"status":"not_ready",
// "reason"} (a code of metrics.NotReadyReasons) with the message as "error".
type readyDoc struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.ready(); err != nil {
		WriteJSON(w, http.StatusServiceUnavailable, readyDoc{Status: "not_ready",
			Reason: metrics.NotReadyReason(err), Error: "not ready: " + err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, readyDoc{Status: "ready"})
}

func (s *Server) spaces(w http.ResponseWriter, _ *http.Request) {
	all := s.q.Spaces()
	WriteRaw(w, http.StatusOK, payload.AppendOccupancyList(make([]byte, 0, 64+len(all)*192), all))
}

func (s *Server) space(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	o, ok := s.q.Space(id)
	if !ok {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	WriteRaw(w, http.StatusOK, payload.AppendOccupancyJSON(make([]byte, 0, 192), o))
}

type atDoc struct {
	Space     string `json:"space"`
	At        string `json:"at"`
	Occupancy int64  `json:"occupancy"`
}

func (s *Server) occupancyAt(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	at := s.now().UnixMilli()
	if v := q.Get("at"); v != "" {
		t, err := parseInstant(v)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "query parameter at: "+err.Error())
			return
		}
		at = t
	}
	n, err := s.q.At(id, at)
	if err != nil {
		s.queryError(w, id, err)
		return
	}
	WriteJSON(w, http.StatusOK, atDoc{Space: id, At: payload.FormatMS(at), Occupancy: n})
}

type bucketDoc struct {
	Start     string `json:"start"`
	End       string `json:"end"`
	Occupancy int64  `json:"occupancy"`
	Min       int64  `json:"min"`
	Max       int64  `json:"max"`
	Entrances int64  `json:"entrances"`
	Exits     int64  `json:"exits"`
}

func (s *Server) counts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	if _, ok := s.q.Space(id); !ok {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	// start and end default to today in the space's time zone.
	start, end := occupancy.Today(s.q.Location(id), s.now().UnixMilli())
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"start", &start}, {"end", &end}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := parseInstant(v)
		if err != nil {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s: %v", p.name, err))
			return
		}
		*p.dst = t
	}
	interval := DefaultInterval
	if v := q.Get("interval"); v != "" {
		d, err := occupancy.ParseInterval(v)
		if err != nil {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("query parameter interval: %q is not a duration (e.g. 15m, 1h, 1d)", v))
			return
		}
		if d < time.Millisecond {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("query parameter interval: %s is below the minimum of 1ms", v))
			return
		}
		interval = d
	}
	if end <= start {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("query parameter end (%s) must be after start (%s)", payload.FormatMS(end), payload.FormatMS(start)))
		return
	}
	iv := interval.Milliseconds()
	// Overflow-safe ceil((end-start)/iv); end-start fits: both come from parsed times.
	// The calendar buckets overlapping [start, end) may be one or two more (and a DST
	// day's an hour's worth): checked on the answer too.
	span := uint64(end) - uint64(start)
	if n := (span + uint64(iv) - 1) / uint64(iv); n > MaxBuckets {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("%d buckets asked for, at most %d: use a larger interval or a shorter range", n, MaxBuckets))
		return
	}
	bs, err := s.q.Counts(id, start, end, iv)
	if err == nil && len(bs) > MaxBuckets {
		err = fmt.Errorf("%w: %d buckets, at most %d: use a larger interval or a shorter range", occupancy.ErrBadQuery, len(bs), MaxBuckets)
	}
	if err != nil {
		s.queryError(w, id, err)
		return
	}
	docs := make([]bucketDoc, len(bs))
	for i, b := range bs {
		docs[i] = bucketDoc{
			Start: payload.FormatMS(b.Start), End: payload.FormatMS(b.End), Occupancy: b.Occupancy,
			Min: b.Min, Max: b.Max, Entrances: b.Entrances, Exits: b.Exits,
		}
	}
	WriteJSON(w, http.StatusOK, docs)
}

type resetBody struct {
	Occupancy *int64          `json:"occupancy"`
	TS        json.RawMessage `json:"ts"`
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxResetBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxResetBody))
			return
		}
		WriteError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var rb resetBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		WriteError(w, http.StatusBadRequest, `body must be JSON {"occupancy": N, "ts": optional RFC 3339}: `+err.Error())
		return
	}
	if dec.More() {
		WriteError(w, http.StatusBadRequest, "body must hold one JSON object")
		return
	}
	if rb.Occupancy == nil {
		WriteError(w, http.StatusBadRequest, `body field "occupancy" is required`)
		return
	}
	if *rb.Occupancy < 0 {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf(`body field "occupancy" must be >= 0, got %d`, *rb.Occupancy))
		return
	}
	ts := s.now().UnixMilli()
	if len(rb.TS) > 0 && string(rb.TS) != "null" {
		t, err := parseJSONInstant(rb.TS)
		if err != nil {
			WriteError(w, http.StatusBadRequest, `body field "ts": `+err.Error())
			return
		}
		ts = t
	}
	if _, ok := s.q.Space(id); !ok {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	if err := s.q.Reset(occupancy.Reset{Space: id, TS: ts, Occupancy: *rb.Occupancy}); err != nil {
		s.queryError(w, id, err)
		return
	}
	s.log.Info().Str("space", id).Int64("occupancy", *rb.Occupancy).Str("ts", payload.FormatMS(ts)).
		Str("remote", r.RemoteAddr).Msg("manual reset")
	o, ok := s.q.Space(id)
	if !ok {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	WriteRaw(w, http.StatusOK, payload.AppendOccupancyJSON(make([]byte, 0, 192), o))
}

// Authorized reports whether the request carries Authorization: Bearer <http.token>
// (compared in constant time, access.go).
func (s *Server) Authorized(r *http.Request) bool { return s.access.bearer(r) }

// queryError maps a Querier error to a status.
func (s *Server) queryError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, occupancy.ErrUnknownSpace):
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
	case errors.Is(err, tracker.ErrBadReset), errors.Is(err, occupancy.ErrBadQuery):
		WriteError(w, http.StatusBadRequest, err.Error())
	default:
		s.queryErr.Log(func(e *zerolog.Event) *zerolog.Event { return e.Err(err).Str("space", id) }, "http query failed")
		WriteError(w, http.StatusInternalServerError, err.Error())
	}
}

// parseInstant reads an RFC 3339 time (fractional seconds optional, any offset) or an
// integer of Unix milliseconds, as Unix ms. A '+' of an offset that arrived as a space
// (an unescaped query string) is taken back.
func parseInstant(v string) (int64, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return checkInstant(v, n)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil && strings.Contains(v, " ") {
		t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not an RFC 3339 time (e.g. 2026-11-27T10:00:00Z)", v)
	}
	if u := t.UTC(); u.Year() < 1 || u.Year() > 9999 {
		return 0, fmt.Errorf("%q is out of range (years 0001 to 9999 UTC)", v)
	}
	return t.UnixMilli(), nil
}

var (
	minInstant = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxInstant = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli()
)

func checkInstant(v string, ms int64) (int64, error) {
	if ms < minInstant || ms > maxInstant {
		return 0, fmt.Errorf("%q is out of range (years 0001 to 9999 UTC)", v)
	}
	return ms, nil
}

func parseJSONInstant(raw json.RawMessage) (int64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return parseInstant(s)
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&n); err == nil {
		if v, err := n.Int64(); err == nil {
			return checkInstant(n.String(), v)
		}
	}
	return 0, fmt.Errorf("%s is not an RFC 3339 time or Unix milliseconds", raw)
}

type errorDoc struct {
	Error string `json:"error"`
}

// WriteError answers with the JSON error object {"error": msg}.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, errorDoc{Error: msg})
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorDoc{Error: "encode response: " + err.Error()})
	}
	WriteRaw(w, code, b)
}

// WriteRaw answers with b, JSON already encoded.
func WriteRaw(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// statusWriter remembers the status written, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// captureWriter records what the mux's fallback handlers write.
type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

// redactQuery is a query string for the request log with the value of every
// parameter whose name holds "token" (or "password", "secret") replaced: a token
// put in a URL by mistake is never logged. The rest is kept as sent.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		name = strings.ToLower(name)
		if hasValue && (strings.Contains(name, "token") || strings.Contains(name, "password") || strings.Contains(name, "secret")) {
			parts[i] = p[:strings.IndexByte(p, '=')+1] + "REDACTED"
		}
	}
	return strings.Join(parts, "&")
}

// promLogger sends promhttp's errors to zerolog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error().Msg(fmt.Sprint(v...)) }
