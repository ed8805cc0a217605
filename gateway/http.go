package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Querier is what the HTTP API needs from the running gateway. The gateway implements
// it over its engine wrapper, which serialises engine access.
type Querier interface {
	Spaces() []occupancy.Occupancy
	Space(id string) (occupancy.Occupancy, bool)
	At(id string, t int64) (int64, error) // wraps occupancy.ErrUnknownSpace -> 404
	Counts(id string, start, end, interval int64) ([]occupancy.Bucket, error)
	Reset(r occupancy.Reset) error // stores then applies; ErrBadReset-wrapped -> 400
	DPUs() []DPUStat
	Ready() error // nil when storage open AND connected AND subscribed
}

// ErrBadReset is wrapped by Querier.Reset for a reset the engine refuses (ts before the
// settled horizon, negative occupancy, ...): the API answers 400 with the message.
var ErrBadReset = errors.New("bad reset")

// MaxBuckets bounds the buckets one counts query may ask for.
const MaxBuckets = 10000

// DefaultInterval is the counts query's interval when none is given.
const DefaultInterval = 15 * time.Minute

const maxResetBody = 64 << 10

// HTTPServer serves the HTTP API of DESIGN section 5.
type HTTPServer struct {
	ln      net.Listener
	srv     *http.Server
	mux     *http.ServeMux
	q       Querier
	m       *Metrics
	log     zerolog.Logger
	tokenH  [sha256.Size]byte
	hasTok  bool
	now     func() time.Time
	metrics http.Handler
}

// NewHTTPServer listens on listen at once (so a busy or bad address is an error here,
// at start) and prepares the routes. token is http.token: "" disables the write routes
// (403). log is used as given (the caller tags it). Serve starts answering.
func NewHTTPServer(listen, token string, q Querier, m *Metrics, log zerolog.Logger) (*HTTPServer, error) {
	if q == nil {
		return nil, errors.New("http: nil querier")
	}
	if m == nil {
		m = NewMetrics()
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("http server: %w", err) // the net error names the address
	}
	s := &HTTPServer{
		ln:  ln,
		q:   q,
		m:   m,
		log: log, // the caller tags it (component=http)
		now: time.Now,
	}
	if token != "" {
		s.tokenH = sha256.Sum256([]byte(token))
		s.hasTok = true
	}
	s.metrics = promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		ErrorLog: promLogger{s.log},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metrics)
	mux.HandleFunc("GET /v1/spaces", s.spaces)
	mux.HandleFunc("GET /v1/spaces/{id}", s.space)
	mux.HandleFunc("GET /v1/spaces/{id}/occupancy", s.occupancyAt)
	mux.HandleFunc("GET /v1/spaces/{id}/counts", s.counts)
	mux.HandleFunc("POST /v1/spaces/{id}/reset", s.reset)
	mux.HandleFunc("GET /v1/dpus", s.dpus)
	s.mux = mux
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

// Addr is the address the server listens on (the real port when listen had port 0).
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Serve answers requests until Shutdown; it returns nil after Shutdown.
func (s *HTTPServer) Serve() error {
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
func (s *HTTPServer) Shutdown(ctx context.Context) error {
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
func (s *HTTPServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error().Interface("panic", p).Str("method", r.Method).Str("path", r.URL.Path).Msg("http handler panicked")
			if !sw.wrote {
				writeError(sw, http.StatusInternalServerError, "internal error")
			}
		}
		s.log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Str("query", r.URL.RawQuery).
			Str("remote", r.RemoteAddr).Int("status", sw.code()).Dur("took", time.Since(start)).Msg("http request")
	}()
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// No route matched (404) or the path matched with another method (405, with
		// Allow set), or a redirect: keep the mux's status and headers, answer JSON.
		c := &captureWriter{header: sw.Header()}
		h.ServeHTTP(c, r)
		switch c.status {
		case http.StatusNotFound:
			writeError(sw, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
		case http.StatusMethodNotAllowed:
			writeError(sw, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, sw.Header().Get("Allow")))
		default:
			sw.WriteHeader(c.status)
			_, _ = sw.Write(c.body.Bytes())
		}
		return
	}
	s.mux.ServeHTTP(sw, r)
}

func (s *HTTPServer) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *HTTPServer) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.q.Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *HTTPServer) spaces(w http.ResponseWriter, _ *http.Request) {
	all := s.q.Spaces()
	writeRaw(w, http.StatusOK, appendOccupancyList(make([]byte, 0, 64+len(all)*192), all))
}

func (s *HTTPServer) space(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	o, ok := s.q.Space(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	writeRaw(w, http.StatusOK, appendOccupancyJSON(make([]byte, 0, 192), o))
}

type atDoc struct {
	Space     string `json:"space"`
	At        string `json:"at"`
	Occupancy int64  `json:"occupancy"`
}

func (s *HTTPServer) occupancyAt(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	at := s.now().UnixMilli()
	if v := q.Get("at"); v != "" {
		t, err := parseInstant(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "query parameter at: "+err.Error())
			return
		}
		at = t
	}
	n, err := s.q.At(id, at)
	if err != nil {
		s.queryError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, atDoc{Space: id, At: formatMS(at), Occupancy: n})
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

func (s *HTTPServer) counts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	var start, end int64
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"start", &start}, {"end", &end}} {
		v := q.Get(p.name)
		if v == "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s is required (RFC 3339, e.g. 2026-11-27T10:00:00Z)", p.name))
			return
		}
		t, err := parseInstant(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s: %v", p.name, err))
			return
		}
		*p.dst = t
	}
	interval := DefaultInterval
	if v := q.Get("interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter interval: %q is not a duration (e.g. 15m, 1h)", v))
			return
		}
		if d < time.Millisecond {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter interval: %s is below the minimum of 1ms", v))
			return
		}
		interval = d
	}
	if end <= start {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter end (%s) must be after start (%s)", formatMS(end), formatMS(start)))
		return
	}
	iv := interval.Milliseconds()
	// Overflow-safe ceil((end-start)/iv); end-start fits: both come from parsed times.
	span := uint64(end) - uint64(start)
	if n := (span + uint64(iv) - 1) / uint64(iv); n > MaxBuckets {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d buckets asked for, at most %d: use a larger interval or a shorter range", n, MaxBuckets))
		return
	}
	if _, ok := s.q.Space(id); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	bs, err := s.q.Counts(id, start, end, iv)
	if err != nil {
		s.queryError(w, id, err)
		return
	}
	docs := make([]bucketDoc, len(bs))
	for i, b := range bs {
		docs[i] = bucketDoc{
			Start: formatMS(b.Start), End: formatMS(b.End), Occupancy: b.Occupancy,
			Min: b.Min, Max: b.Max, Entrances: b.Entrances, Exits: b.Exits,
		}
	}
	writeJSON(w, http.StatusOK, docs)
}

type resetBody struct {
	Occupancy *int64          `json:"occupancy"`
	TS        json.RawMessage `json:"ts"`
}

func (s *HTTPServer) reset(w http.ResponseWriter, r *http.Request) {
	if !s.hasTok {
		writeError(w, http.StatusForbidden, "write routes are disabled: set http.token to enable them")
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="occupancyd"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <http.token>)")
		return
	}
	id := r.PathValue("id")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxResetBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxResetBody))
			return
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var rb resetBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		writeError(w, http.StatusBadRequest, `body must be JSON {"occupancy": N, "ts": optional RFC 3339}: `+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "body must hold one JSON object")
		return
	}
	if rb.Occupancy == nil {
		writeError(w, http.StatusBadRequest, `body field "occupancy" is required`)
		return
	}
	if *rb.Occupancy < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`body field "occupancy" must be >= 0, got %d`, *rb.Occupancy))
		return
	}
	ts := s.now().UnixMilli()
	if len(rb.TS) > 0 && string(rb.TS) != "null" {
		t, err := parseJSONInstant(rb.TS)
		if err != nil {
			writeError(w, http.StatusBadRequest, `body field "ts": `+err.Error())
			return
		}
		ts = t
	}
	if _, ok := s.q.Space(id); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	if err := s.q.Reset(occupancy.Reset{Space: id, TS: ts, Occupancy: *rb.Occupancy}); err != nil {
		s.queryError(w, id, err)
		return
	}
	s.log.Info().Str("space", id).Int64("occupancy", *rb.Occupancy).Str("ts", formatMS(ts)).
		Str("remote", r.RemoteAddr).Msg("manual reset")
	o, ok := s.q.Space(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
		return
	}
	writeRaw(w, http.StatusOK, appendOccupancyJSON(make([]byte, 0, 192), o))
}

func (s *HTTPServer) dpus(w http.ResponseWriter, _ *http.Request) {
	ds := s.q.DPUs()
	if ds == nil {
		ds = []DPUStat{}
	}
	writeJSON(w, http.StatusOK, ds)
}

// authorized compares the bearer token in constant time (over hashes, so neither the
// content nor the length of the configured token leaks through timing).
func (s *HTTPServer) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], s.tokenH[:]) == 1
}

// queryError maps a Querier error to a status.
func (s *HTTPServer) queryError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, occupancy.ErrUnknownSpace):
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown space %q", id))
	case errors.Is(err, ErrBadReset):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		s.log.Error().Err(err).Str("space", id).Msg("http query failed")
		writeError(w, http.StatusInternalServerError, err.Error())
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

// occupancyDoc is the occupancy payload of DESIGN 2.
type occupancyDoc struct {
	Space        string   `json:"space"`
	Name         string   `json:"name"`
	Occupancy    int64    `json:"occupancy"`
	Capacity     int64    `json:"capacity,omitempty"`
	Utilization  *float64 `json:"utilization,omitempty"`
	Updated      string   `json:"updated"`
	SettledUntil string   `json:"settled_until"`
}

func newOccupancyDoc(o occupancy.Occupancy) occupancyDoc {
	d := occupancyDoc{
		Space:        o.Space,
		Name:         o.Name,
		Occupancy:    o.Occupancy,
		Updated:      formatMS(o.Updated),
		SettledUntil: formatMS(o.SettledUntil),
	}
	if o.Capacity > 0 {
		d.Capacity = o.Capacity
		u := utilization(o)
		d.Utilization = &u
	}
	return d
}

// OccupancyJSON renders a space's occupancy as the JSON of DESIGN 2 (the retained
// MQTT payload and the HTTP API's object).
func OccupancyJSON(o occupancy.Occupancy) ([]byte, error) {
	return appendOccupancyJSON(make([]byte, 0, 192), o), nil
}

// appendOccupancyJSON appends exactly what json.Marshal(newOccupancyDoc(o)) gives,
// without reflection (it runs for every retained publish).
func appendOccupancyJSON(b []byte, o occupancy.Occupancy) []byte {
	b = append(b, `{"space":`...)
	b = appendJSONString(b, o.Space)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, o.Name)
	b = append(b, `,"occupancy":`...)
	b = strconv.AppendInt(b, o.Occupancy, 10)
	if o.Capacity > 0 {
		b = append(b, `,"capacity":`...)
		b = strconv.AppendInt(b, o.Capacity, 10)
		b = append(b, `,"utilization":`...)
		b = strconv.AppendFloat(b, utilization(o), 'f', -1, 64)
	}
	b = append(b, `,"updated":"`...)
	b = time.UnixMilli(o.Updated).UTC().AppendFormat(b, timeLayoutMS)
	b = append(b, `","settled_until":"`...)
	b = time.UnixMilli(o.SettledUntil).UTC().AppendFormat(b, timeLayoutMS)
	return append(b, `"}`...)
}

func utilization(o occupancy.Occupancy) float64 {
	return math.Round(float64(o.Occupancy)/float64(o.Capacity)*1000) / 1000
}

// appendJSONString appends s as a JSON string, escaped as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendOccupancyList appends a JSON array of occupancy objects.
func appendOccupancyList(b []byte, os []occupancy.Occupancy) []byte {
	b = append(b, '[')
	for i, o := range os {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOccupancyJSON(b, o)
	}
	return append(b, ']')
}

type errorDoc struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorDoc{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorDoc{Error: "encode response: " + err.Error()})
	}
	writeRaw(w, code, b)
}

// writeRaw answers with b, JSON already encoded.
func writeRaw(w http.ResponseWriter, code int, b []byte) {
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

// promLogger sends promhttp's errors to zerolog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error().Msg(fmt.Sprint(v...)) }
