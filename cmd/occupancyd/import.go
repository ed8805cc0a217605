package main

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/tracker"
	"github.com/occupancyd/occupancyd/occupancy"
)

const (
	importBatch           = 32768   // events per buffer.Append call (and per synced write)
	importDefaultProgress = 100_000 // rows between progress lines
	importMaxLine         = 1 << 20 // longest JSON line accepted
	importListRejected    = 100     // rejected rows listed in the summary
)

// importCommand is `occupancyd import --config FILE EVENTS...` (DESIGN section 6): one
// file or several (archive day files), recomputed once from the earliest event.
func importCommand(args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("import", flag.ContinueOnError)
	configPath := fset.String("config", "", "the configuration `FILE` (YAML; required): storage and topology")
	progress := fset.Int("progress", importDefaultProgress, "print a progress line to stderr every `N` rows (0: never)")
	pos, err := parseCommandFlags(fset, args)
	if err != nil {
		return err
	}
	path, err := requireConfig("import", *configPath)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return commandUsageErrorf("import", "import needs an EVENTS file (CSV with header timestamp,direction,dpu_id, or JSON lines; - for stdin), or several")
	}
	cfg, err := config.LoadConfig(path)
	if err != nil {
		return err
	}
	logCfg := cfg.Log
	if logCfg.Level != "debug" {
		logCfg.Level = "warn" // the summary is the output; storage warnings still show
	}
	log, err := newLogger(logCfg, stderr)
	if err != nil {
		return err
	}

	srcs := make([]importSource, len(pos))
	for i, name := range pos {
		srcs[i] = fileSource(name)
	}
	sums, from, err := runImportAll(context.Background(), importOptions{
		Config:   cfg,
		Logger:   log,
		Progress: *progress,
		ProgOut:  stderr,
		Now:      time.Now,
	}, srcs)
	var rows, imported, duplicates, rejected int
	for _, sum := range sums {
		fmt.Fprint(stdout, sum.String())
		rows += sum.Rows
		imported += sum.Imported
		duplicates += sum.Duplicates
		rejected += len(sum.Rejected)
	}
	if len(sums) > 1 {
		fmt.Fprintf(stdout, "total: %d files, %d rows: %d imported, %d duplicates, %d rejected\n",
			len(sums), rows, imported, duplicates, rejected)
	}
	if from != 0 {
		fmt.Fprintf(stdout, "recomputed occupancy from %s\n", time.UnixMilli(from).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	return err
}

// importSource is one EVENTS file.
type importSource struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// fileSource reads the file name, or standard input for "-".
func fileSource(name string) importSource {
	return importSource{Name: name, Open: func() (io.ReadCloser, error) {
		if name == "-" {
			return io.NopCloser(os.Stdin), nil
		}
		return os.Open(name)
	}}
}

type importOptions struct {
	Config   config.Config
	Logger   zerolog.Logger
	Progress int       // rows between progress lines; 0 = none
	ProgOut  io.Writer // progress lines
	Now      func() time.Time
}

// importSummary is what an import did.
type importSummary struct {
	Name       string
	Format     string // "csv" or "jsonl" (+ ", gzip")
	Rows       int    // data rows read (header excluded)
	Imported   int    // new events stored
	Parked     int    // of Imported: DPU not mapped by any topology version yet
	Duplicates int    // rows already stored or repeated in the file
	Rejected   []importRejection
}

type importRejection struct {
	Line   int
	Reason string
	Detail string
}

func (s importSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "import %s (%s): %d rows\n", s.Name, s.Format, s.Rows)
	fmt.Fprintf(&b, "  imported:   %d", s.Imported)
	if s.Parked > 0 {
		fmt.Fprintf(&b, " (%d parked: their DPU is in no topology version yet)", s.Parked)
	}
	fmt.Fprintf(&b, "\n  duplicates: %d\n", s.Duplicates)
	fmt.Fprintf(&b, "  rejected:   %d\n", len(s.Rejected))
	for i, r := range s.Rejected {
		if i == importListRejected {
			fmt.Fprintf(&b, "    ... and %d more\n", len(s.Rejected)-i)
			break
		}
		fmt.Fprintf(&b, "    line %d: %s: %s\n", r.Line, r.Reason, r.Detail)
	}
	return b.String()
}

// lockedError is the clear error for a store held by a running daemon.
type lockedError struct {
	dir string
	err error
}

func (e *lockedError) Error() string {
	return fmt.Sprintf("storage dir %s is in use by another process (is occupancyd running?)", e.dir)
}
func (e *lockedError) Unwrap() error { return e.err }

// importer carries one import through the tracker.
type importer struct {
	opts importOptions
	tr   *tracker.Tracker
	lim  occupancy.Limits
	sum  importSummary

	batch     []occupancy.Event
	lines     []int
	reps      []occupancy.Report // interval and cumulative report lines (archives)
	repLines  []int
	decoders  map[occupancy.ReportKind]*occupancy.Decoder
	earliest  int64 // earliest ts of a valid row
	haveValid bool
	lastProg  int
	// bufSize is the read buffer (0: 64 KiB, for large files; at least 4 KiB, the
	// format detection's look-ahead). The fuzz target's small inputs use 4 KiB.
	bufSize int
}

// runImportAll stores the events of every source, applies them and recomputes the
// history once, from the earliest of them (also after an error in a later file, so
// that what was stored is counted). It opens the store of opts.Config and closes it
// before returning. from is the instant recomputed from, 0 if none.
func runImportAll(ctx context.Context, opts importOptions, srcs []importSource) (sums []importSummary, from int64, err error) {
	cfg := opts.Config
	if opts.Now == nil {
		opts.Now = time.Now
	}
	bopts := storeOptions(cfg, opts.Logger, opts.Now)
	bopts.MaxBatch = importBatch // no one waits on an ack: fewer, larger synced writes
	store, err := buffer.Open(bopts)
	if err != nil {
		if errors.Is(err, buffer.ErrLocked) {
			return nil, 0, &lockedError{dir: cfg.Storage.Dir, err: err}
		}
		return nil, 0, fmt.Errorf("open storage %s: %w", cfg.Storage.Dir, err)
	}
	defer func() {
		if cerr := store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close storage: %w", cerr)
		}
	}()

	now := opts.Now().UnixMilli()
	// The stored topology versions stay as they are; the config's topology is stored
	// only into a store that has none yet (DESIGN 6).
	topo := cfg.Topology
	tr, err := tracker.Open(tracker.Options{
		Store:         store,
		Engine:        cfg.EngineOptions(),
		MaxParked:     cfg.Storage.MaxParked,
		Topology:      &topo,
		KeepStored:    true,
		MaxFutureSkew: cfg.Engine.MaxFutureSkew,
		Logger:        opts.Logger,
		Now:           opts.Now,
	})
	if err != nil {
		return nil, 0, err
	}
	oldest := int64(0)
	if cfg.Storage.Retention > 0 {
		oldest = now - cfg.Storage.Retention.Milliseconds()
	}
	im := &importer{
		opts: opts,
		tr:   tr,
		lim:  occupancy.Limits{Now: now, MaxFutureSkew: cfg.Engine.MaxFutureSkew.Milliseconds(), Oldest: oldest},
	}
	var readErr error
	for _, src := range srcs {
		im.sum, im.lastProg = importSummary{Name: src.Name}, 0
		readErr = im.readSource(ctx, src)
		sort.SliceStable(im.sum.Rejected, func(i, j int) bool { return im.sum.Rejected[i].Line < im.sum.Rejected[j].Line })
		sums = append(sums, im.sum)
		if readErr != nil {
			readErr = fmt.Errorf("import %s: %w", src.Name, readErr)
			break
		}
	}
	if !im.haveValid {
		return sums, 0, readErr
	}
	// Recompute from the earliest valid row, duplicates included: a re-run of an
	// import that was interrupted after storing completes its recomputation.
	if err := tr.Rewind(im.earliest); err != nil {
		return sums, 0, errors.Join(readErr, err)
	}
	return sums, im.earliest, readErr
}

// readSource reads one source to the end and stores what it holds.
func (im *importer) readSource(ctx context.Context, src importSource) error {
	rc, err := src.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := im.read(ctx, rc); err != nil {
		// keep what was read before the error
		return errors.Join(err, im.flush(ctx))
	}
	return im.flush(ctx)
}

// read detects the format (gzip-compressed or not; JSON lines when the first byte
// that is not blank is '{' or '[', CSV otherwise) and feeds every row to add.
func (im *importer) read(ctx context.Context, in io.Reader) error {
	size := max(cmp.Or(im.bufSize, 64<<10), 4<<10)
	br := bufio.NewReaderSize(in, size)
	gz := ""
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, size)
		gz = ", gzip"
	}
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
	first := byte(0)
	for i := 1; ; i++ {
		b, err := br.Peek(i)
		if len(b) < i {
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read: %w", err)
			}
			break // empty or blank input
		}
		if c := b[i-1]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			first = c
			break
		}
		if i >= 4096 {
			break
		}
	}
	switch first {
	case 0:
		im.sum.Format = "empty" + gz
		return errors.New("no events: the file is empty")
	case '{', '[':
		im.sum.Format = "jsonl" + gz
		return im.readJSONLines(ctx, br)
	default:
		im.sum.Format = "csv" + gz
		return im.readCSV(ctx, br)
	}
}

func (im *importer) readJSONLines(ctx context.Context, br *bufio.Reader) error {
	for line := 1; ; line++ {
		b, err := readLine(br)
		if len(b) > 0 || err == nil {
			if len(b) > importMaxLine {
				im.sum.Rows++
				im.reject(line, string(occupancy.ReasonTooLarge), fmt.Sprintf("line of %d bytes exceeds %d", len(b), importMaxLine))
			} else if t := bytes.TrimSpace(b); len(t) > 0 {
				im.sum.Rows++
				if err := im.addJSON(ctx, line, t); err != nil {
					return err
				}
			}
			if err := im.rowDone(ctx); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read line %d: %w", line, err)
		}
	}
}

// readLine reads one line without its newline; io.EOF with the last line.
func readLine(br *bufio.Reader) ([]byte, error) {
	b, err := br.ReadBytes('\n')
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), err
}

func (im *importer) addJSON(ctx context.Context, line int, b []byte) error {
	var head struct {
		DPU  json.RawMessage `json:"dpu"`
		Kind json.RawMessage `json:"kind"`
	}
	if b[0] != '{' {
		im.reject(line, string(occupancy.ReasonBadJSON), "want one event object a line")
		return nil
	}
	if err := json.Unmarshal(b, &head); err != nil {
		im.reject(line, string(occupancy.ReasonBadJSON), "invalid json object: "+err.Error())
		return nil
	}
	dpu, err := jsonDPU(head.DPU)
	if err != nil {
		im.reject(line, "bad_dpu", err.Error())
		return nil
	}
	kind := occupancy.ReportEvents
	if len(head.Kind) > 0 && string(head.Kind) != "null" {
		var name string
		if err := json.Unmarshal(head.Kind, &name); err != nil {
			im.reject(line, string(occupancy.ReasonBadReport), fmt.Sprintf("kind must be a string, got %.40s", head.Kind))
			return nil
		}
		if kind, err = occupancy.ParseReportKind(name); err != nil {
			im.reject(line, string(occupancy.ReasonBadReport), err.Error())
			return nil
		}
	}
	if kind != occupancy.ReportEvents {
		return im.decodeReport(line, dpu, kind, b)
	}
	return im.decode(ctx, line, dpu, b)
}

// decodeReport validates an interval or cumulative report line (as the archive
// writes them: the kind's own field names, beside dpu and kind) and queues it.
func (im *importer) decodeReport(line int, dpu string, kind occupancy.ReportKind, b []byte) error {
	d := im.decoders[kind]
	if d == nil {
		var err error
		if d, err = occupancy.NewDecoder(kind, occupancy.Mapping{}); err != nil {
			return fmt.Errorf("report decoder: %w", err)
		}
		if im.decoders == nil {
			im.decoders = map[occupancy.ReportKind]*occupancy.Decoder{}
		}
		im.decoders[kind] = d
	}
	out := d.Decode(dpu, b, im.lim)
	im.rejectAll(line, out.Rejections)
	for _, r := range out.Reports {
		r.Received, r.Late = 0, false // an import, not a receive
		if !im.haveValid || r.TS < im.earliest {
			im.earliest, im.haveValid = r.TS, true
		}
		im.reps = append(im.reps, r)
		im.repLines = append(im.repLines, line)
	}
	return nil
}

// jsonDPU reads the dpu field: a string or an integer.
func jsonDPU(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New(`"dpu" is required`)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("dpu: %w", err)
		}
		return s, nil
	}
	if _, err := strconv.ParseInt(string(raw), 10, 64); err != nil {
		return "", fmt.Errorf("dpu must be a string or an integer, got %.40s", raw)
	}
	return string(raw), nil
}

func (im *importer) readCSV(ctx context.Context, br *bufio.Reader) error {
	r := csv.NewReader(br)
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("csv header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	iTS, okTS := col["timestamp"]
	iDir, okDir := col["direction"]
	iDPU, okDPU := col["dpu_id"]
	iID, okID := col["id"]
	if !okTS || !okDir || !okDPU {
		return fmt.Errorf("csv header: want timestamp,direction,dpu_id (and optionally id), got %q",
			strings.Join(header, ","))
	}
	need := max(iTS, iDir, iDPU)
	if okID {
		need = max(need, iID)
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			im.sum.Rows++
			im.reject(pe.StartLine, "bad_csv", pe.Err.Error())
			if err := im.rowDone(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("read csv: %w", err)
		}
		im.sum.Rows++
		line, _ := r.FieldPos(0)
		if len(rec) <= need {
			im.reject(line, "bad_csv", fmt.Sprintf("want %d fields, got %d", len(header), len(rec)))
		} else {
			id := ""
			if okID {
				id = rec[iID]
			}
			payload := csvPayload(rec[iTS], rec[iDir], id)
			if err := im.decode(ctx, line, strings.TrimSpace(rec[iDPU]), payload); err != nil {
				return err
			}
		}
		if err := im.rowDone(ctx); err != nil {
			return err
		}
	}
}

// csvPayload turns the fields of a CSV row into the event object the decoder takes:
// a timestamp of digits is Unix milliseconds, anything else a string (a space between
// date and time, as some exports write, is read as the RFC 3339 'T').
func csvPayload(ts, dir, id string) []byte {
	ts, dir, id = strings.TrimSpace(ts), strings.TrimSpace(dir), strings.TrimSpace(id)
	b := make([]byte, 0, 96)
	b = append(b, `{"ts":`...)
	if isDigits(ts) {
		b = append(b, ts...)
	} else {
		if len(ts) > 10 && ts[10] == ' ' {
			ts = ts[:10] + "T" + ts[11:]
		}
		b = strconv.AppendQuote(b, ts)
	}
	b = append(b, `,"direction":`...)
	b = strconv.AppendQuote(b, dir)
	if id != "" {
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, id)
	}
	return append(b, '}')
}

func isDigits(s string) bool {
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// decode validates one row through the event decoder and queues it.
func (im *importer) decode(ctx context.Context, line int, dpu string, payload []byte) error {
	evs, rejs := occupancy.DecodePayload(dpu, payload, im.lim)
	im.rejectAll(line, rejs)
	for _, ev := range evs {
		ev.Received = 0 // an import, not a receive
		ev.Late = false
		if !im.haveValid || ev.TS < im.earliest {
			im.earliest, im.haveValid = ev.TS, true
		}
		im.batch = append(im.batch, ev)
		im.lines = append(im.lines, line)
	}
	return nil
}

// rowDone follows every row read: a full batch, or a progress line due, flushes.
func (im *importer) rowDone(ctx context.Context) error {
	progressDue := im.opts.Progress > 0 && im.sum.Rows-im.lastProg >= im.opts.Progress
	if len(im.batch)+len(im.reps) >= importBatch || progressDue {
		return im.flush(ctx)
	}
	return nil
}

// rejectAll lists a decoder's rejections of one row (a topic's bad DPU id is the
// row's bad dpu).
func (im *importer) rejectAll(line int, rejs []occupancy.Rejection) {
	for _, rj := range rejs {
		reason := string(rj.Reason)
		if rj.Reason == occupancy.ReasonBadTopic {
			reason = "bad_dpu"
		}
		im.reject(line, reason, rj.Detail)
	}
}

func (im *importer) reject(line int, reason, detail string) {
	im.sum.Rejected = append(im.sum.Rejected, importRejection{Line: line, Reason: reason, Detail: detail})
}

// flush stores the queued events (dedup against each other and the store) through
// the tracker, which applies the new pending ones, and prints progress.
func (im *importer) flush(ctx context.Context) error {
	defer func() {
		im.batch, im.lines = im.batch[:0], im.lines[:0]
		im.reps, im.repLines = im.reps[:0], im.repLines[:0]
		if p := im.opts.Progress; p > 0 && im.opts.ProgOut != nil && im.sum.Rows-im.lastProg >= p {
			im.lastProg = im.sum.Rows
			fmt.Fprintf(im.opts.ProgOut, "import: %d rows read: %d imported, %d duplicates, %d rejected\n",
				im.sum.Rows, im.sum.Imported, im.sum.Duplicates, len(im.sum.Rejected))
		}
	}()
	if len(im.batch) == 0 && len(im.reps) == 0 {
		return nil
	}
	// Backfill dedups the batch against itself and the store alike; events and
	// reports before the horizon reach the engine through the Rewind at the end.
	res, repRes, err := im.tr.BackfillMixed(ctx, im.batch, im.reps)
	if err != nil {
		return err
	}
	im.tally(res, im.lines)
	im.tally(repRes, im.repLines)
	return nil
}

// tally counts the outcomes of a flush's rows (lines[i]: the line of res[i]).
func (im *importer) tally(res []tracker.Result, lines []int) {
	for i, r := range res {
		switch r.Outcome {
		case tracker.Duplicate:
			im.sum.Duplicates++
		case tracker.Rejected:
			im.reject(lines[i], string(r.Rejection.Reason), r.Rejection.Detail)
		case tracker.Parked:
			im.sum.Imported++
			im.sum.Parked++
		default:
			im.sum.Imported++
		}
	}
}
