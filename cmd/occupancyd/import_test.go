package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The import tests use this building: hq > lobby, room; DPUs d-main (street <->
// lobby), d-room (lobby <-> room) and "283" (street <-> room); iv-room (lobby <->
// room) reports intervals and cu-main (street <-> lobby) cumulative totals.
const impTopologyYAML = `topology:
  spaces:
    - {id: hq, name: HQ, capacity: 100}
    - {id: lobby, name: Lobby, parent: hq}
    - {id: room, name: Room, parent: hq, capacity: 10}
  doorways:
    - {id: main, name: Main}
    - {id: inner, name: Inner}
  dpus:
    - {id: d-main, doorway: main, plus_space: lobby, minus_space: ""}
    - {id: d-room, doorway: inner, plus_space: room, minus_space: lobby}
    - {id: "283", doorway: main, plus_space: room, minus_space: ""}
    - {id: iv-room, doorway: inner, plus_space: room, minus_space: lobby, kind: interval}
    - {id: cu-main, doorway: main, plus_space: lobby, minus_space: "", kind: cumulative}
`

var impSpaces = []string{"hq", "lobby", "room"}

// impEffects is the nesting rule of DESIGN 1 worked out by hand for this building:
// the change of each space for a crossing with direction +1 (-1 negates it).
var impEffects = map[string]map[string]int64{
	"d-main":  {"lobby": 1, "hq": 1},
	"d-room":  {"room": 1, "lobby": -1},
	"283":     {"room": 1, "hq": 1},
	"iv-room": {"room": 1, "lobby": -1},
	"cu-main": {"lobby": 1, "hq": 1},
}

// impEvent is a row as the model sees it.
type impEvent struct {
	dpu string
	id  string
	ts  int64
	dir int8
}

func (e impEvent) identity() string {
	if e.id != "" {
		return fmt.Sprintf("%s|id=%s|%d", e.dpu, e.id, e.ts)
	}
	return fmt.Sprintf("%s|%d|%d", e.dpu, e.ts, e.dir)
}

// impModel is an independent model of the true timeline: unique events (by identity,
// DPU known), sorted by (ts, dpu, id), applied with clamping at 0 per space.
type impModel struct {
	evs []impEvent // unique, known DPU, in timeline order
}

func newImpModel(evs []impEvent) impModel {
	seen := map[string]bool{}
	var uniq []impEvent
	for _, e := range evs {
		if _, known := impEffects[e.dpu]; !known || seen[e.identity()] {
			continue
		}
		seen[e.identity()] = true
		uniq = append(uniq, e)
	}
	sort.Slice(uniq, func(i, j int) bool {
		a, b := uniq[i], uniq[j]
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		if a.dpu != b.dpu {
			return a.dpu < b.dpu
		}
		return a.id < b.id
	})
	return impModel{evs: uniq}
}

// values returns the occupancy of space at each of the ascending instants.
func (m impModel) values(space string, instants []int64) []int64 {
	out := make([]int64, len(instants))
	var v int64
	j := 0
	for i, at := range instants {
		for ; j < len(m.evs) && m.evs[j].ts <= at; j++ {
			e := m.evs[j]
			v += impEffects[e.dpu][space] * int64(e.dir)
			if v < 0 {
				v = 0
			}
		}
		out[i] = v
	}
	return out
}

// impSetup writes a config with its storage in a temp dir and returns it loaded.
func impSetup(t *testing.T) (config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	doc := fmt.Sprintf("gateway: {id: imptest}\nstorage: {dir: %q}\nhttp: {listen: \"\"}\n%s", filepath.Join(dir, "data"), impTopologyYAML)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return cfg, path
}

func impRun(t *testing.T, cfg config.Config, name string, data []byte) imported {
	t.Helper()
	sum, err := runImport(context.Background(), importOptions{Config: cfg, Logger: zerolog.Nop()}, name, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("runImport %s: %v", name, err)
	}
	return sum
}

// impCheckAt reopens the store as the daemon would and compares engine.At with the
// model at every event instant (and just before it) and now.
func impCheckAt(t *testing.T, cfg config.Config, evs []impEvent) {
	t.Helper()
	store, err := buffer.Open(buffer.Options{Dir: cfg.Storage.Dir, Retention: cfg.Storage.Retention, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("reopen store: %v", err)
	}
	defer store.Close()
	now := time.Now().UnixMilli()
	eng, err := occupancy.Open(occupancy.Options{
		SettleAfter:   cfg.Engine.SettleAfter.Milliseconds(),
		LateEvents:    occupancy.LatePolicy(cfg.Engine.LateEvents),
		ClampNegative: cfg.Engine.ClampNegative,
	}, store, now)
	if err != nil {
		t.Fatalf("occupancy.Open: %v", err)
	}
	instants := map[int64]bool{now: true}
	for _, e := range evs {
		instants[e.ts] = true
		instants[e.ts-1] = true
	}
	var ts []int64
	for x := range instants {
		ts = append(ts, x)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	model := newImpModel(evs)
	bad := 0
	for _, sp := range impSpaces {
		want := model.values(sp, ts)
		for i, at := range ts {
			got, err := eng.At(sp, at)
			if err != nil {
				t.Fatalf("At(%s, %d): %v", sp, at, err)
			}
			if got != want[i] {
				bad++
				if bad <= 10 {
					t.Errorf("At(%s, %s): got %d, want %d", sp, time.UnixMilli(at).UTC().Format(time.RFC3339Nano), got, want[i])
				}
			}
		}
		cur, ok := eng.Current(sp)
		if !ok {
			t.Fatalf("Current(%s): unknown space", sp)
		}
		if w := want[len(want)-1]; cur.Occupancy != w {
			t.Errorf("Current(%s): got %d, want %d", sp, cur.Occupancy, w)
		}
	}
	if bad > 10 {
		t.Errorf("... %d mismatches in all", bad)
	}
}

func impRFC(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z") }

func TestImportCSV(t *testing.T) {
	cfg, _ := impSetup(t)
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UnixMilli()
	at := func(min int) int64 { return base + int64(min)*60_000 }
	ms := func(min int) string { return fmt.Sprint(at(min)) }
	csv := "\ufeff" + strings.Join([]string{
		`timestamp,direction,dpu_id`,
		`"` + impRFC(at(0)) + `","1","d-main"`,                                        // line 2
		`"` + impRFC(at(1)) + `","1","d-main"`,                                        // 3
		`"` + impRFC(at(1)) + `","1","d-main"`,                                        // 4: duplicate of line 3
		impRFC(at(1)) + `,1,d-main`,                                                   // 5: the same again, unquoted
		`"` + impRFC(at(2)) + `","1","d-room"`,                                        // 6
		`"` + impRFC(at(3)) + `","2","d-room"`,                                        // 7: bad direction
		`"yesterday","1","d-room"`,                                                    // 8: bad ts
		`"` + ms(4) + `","-1","283"`,                                                  // 9: Unix ms, 283 leaves the room
		`"` + ms(5) + `", "1", "283"`,                                                 // 10: spaces after commas
		`"` + impRFC(at(6)) + `","1"`,                                                 // 11: missing field
		`"` + impRFC(at(7)) + `","1","bad dpu"`,                                       // 12: invalid DPU id
		`"` + impRFC(at(8)) + `","1","ghost"`,                                         // 13: unknown DPU: parked
		`"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `","1","d-main"`, // 14: future
		`"` + strings.Replace(impRFC(at(9)), "T", " ", 1) + `","-1","d-main"`,         // 15: space separator
		`"` + impRFC(at(10)) + `","+1","d-main"`,                                      // 16
		`"` + impRFC(at(11)) + `","1","d-main"`,                                       // 17
		`"` + impRFC(at(11)) + `","-1","d-main"`,                                      // 18: same ts, other direction: not a duplicate
		``,
	}, "\r\n")
	sum := impRun(t, cfg, "events.csv", []byte(csv))

	if sum.Format != "csv" || sum.Rows != 17 || sum.Imported != 10 || sum.Duplicates != 2 || sum.Parked != 1 {
		t.Errorf("got format %q rows %d imported %d duplicates %d parked %d, want csv 17 10 2 1",
			sum.Format, sum.Rows, sum.Imported, sum.Duplicates, sum.Parked)
	}
	var gotRej []string
	for _, r := range sum.Rejected {
		gotRej = append(gotRej, fmt.Sprintf("%d %s", r.Line, r.Reason))
	}
	wantRej := []string{"7 bad_direction", "8 bad_ts", "11 bad_csv", "12 bad_dpu", "14 future_ts"}
	if !reflect.DeepEqual(gotRej, wantRej) {
		t.Errorf("rejected: got %q, want %q", gotRej, wantRej)
	}
	if sum.From != at(0) {
		t.Errorf("recomputed from %d, want %d", sum.From, at(0))
	}
	out := sum.String()
	for _, want := range []string{"imported:   10 (1 parked", "duplicates: 2", "rejected:   5", "line 7: bad_direction: direction must be 1 or -1"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary %q lacks %q", out, want)
		}
	}

	model := []impEvent{
		{"d-main", "", at(0), 1}, {"d-main", "", at(1), 1}, {"d-room", "", at(2), 1},
		{"283", "", at(4), -1}, {"283", "", at(5), 1}, {"d-main", "", at(9), -1},
		{"d-main", "", at(10), 1}, {"d-main", "", at(11), 1}, {"d-main", "", at(11), -1},
	}
	impCheckAt(t, cfg, model)
}

func TestImportJSONLines(t *testing.T) {
	cfg, _ := impSetup(t)
	base := time.Now().Add(-90 * time.Minute).Truncate(time.Millisecond).UnixMilli()
	var evs []impEvent
	var plain bytes.Buffer
	for i := 0; i < 40; i++ {
		e := impEvent{dpu: []string{"d-main", "d-room", "283"}[i%3], id: fmt.Sprint(1000 + i), ts: base + int64(i)*61_000, dir: 1}
		if i%4 == 3 {
			e.dir = -1
		}
		evs = append(evs, e)
		// the buffer's archive format, and the DESIGN event object with an integer id
		if i%2 == 0 {
			b, _ := json.Marshal(buffer.ArchivedEvent{DPU: e.dpu, ID: e.id, TS: impRFC(e.ts), Direction: e.dir})
			plain.Write(append(b, '\n'))
		} else {
			fmt.Fprintf(&plain, `{"dpu": %q, "id": %s, "ts": %d, "direction": "%d"}`+"\n", e.dpu, e.id, e.ts, e.dir)
		}
	}
	// an id that restarts (same id, later ts) is a new event
	evs = append(evs, impEvent{"d-main", "1000", base + 41*61_000, 1})
	fmt.Fprintf(&plain, `{"dpu":"d-main","id":"1000","ts":%d,"direction":1}`+"\n", base+41*61_000)
	plain.WriteString("\n")                                                 // blank line: skipped
	plain.WriteString(`{"dpu":"d-main","ts":"x","direction":1}` + "\n")     // line 43: bad_ts
	plain.WriteString(`{"ts":"` + impRFC(base) + `","direction":1}` + "\n") // 44: no dpu
	plain.WriteString(`{"dpu":"d-main",` + "\n")                            // 45: bad json
	plain.WriteString(`[{"dpu":"d-main"}]` + "\n")                          // 46: not an object

	// As the archive writes it: gzip, in two members.
	var gz bytes.Buffer
	half := bytes.Index(plain.Bytes()[plain.Len()/2:], []byte("\n")) + plain.Len()/2 + 1
	for _, part := range [][]byte{plain.Bytes()[:half], plain.Bytes()[half:]} {
		zw := gzip.NewWriter(&gz)
		zw.Write(part)
		zw.Close()
	}
	sum := impRun(t, cfg, "events-2026-11-27.jsonl.gz", gz.Bytes())
	if sum.Format != "jsonl, gzip" || sum.Rows != 45 || sum.Imported != 41 || sum.Duplicates != 0 {
		t.Errorf("got format %q rows %d imported %d duplicates %d, want \"jsonl, gzip\" 45 41 0", sum.Format, sum.Rows, sum.Imported, sum.Duplicates)
	}
	var gotRej []string
	for _, r := range sum.Rejected {
		gotRej = append(gotRej, fmt.Sprintf("%d %s", r.Line, r.Reason))
	}
	if want := []string{"43 bad_ts", "44 bad_dpu", "45 bad_json", "46 bad_json"}; !reflect.DeepEqual(gotRej, want) {
		t.Errorf("rejected: got %q, want %q", gotRej, want)
	}
	impCheckAt(t, cfg, evs)

	t.Run("re-import counts nothing new", func(t *testing.T) {
		again := impRun(t, cfg, "again.jsonl", plain.Bytes())
		if again.Imported != 0 || again.Duplicates != 41 || len(again.Rejected) != 4 {
			t.Errorf("got imported %d duplicates %d rejected %d, want 0 41 4", again.Imported, again.Duplicates, len(again.Rejected))
		}
		impCheckAt(t, cfg, evs)
	})
}

// TestImportRandom imports a random, shuffled stream with duplicates in two files
// whose times overlap (the second rewrites history before the first's end) and
// compares every instant with the model.
func TestImportRandom(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	n := 1500
	if testing.Short() {
		n = 400
	}
	cfg, _ := impSetup(t)
	start := time.Now().Add(-3 * time.Hour).UnixMilli()
	dpus := []string{"d-main", "d-room", "283"}
	var evs []impEvent
	used := map[int64]bool{}
	for i := 0; i < n; i++ {
		ts := start + rng.Int63n(3*3600_000-30_000)
		for used[ts] {
			ts++
		}
		used[ts] = true
		e := impEvent{dpu: dpus[rng.Intn(3)], ts: ts, dir: int8(1 - 2*rng.Intn(2))}
		if rng.Intn(2) == 0 {
			e.id = fmt.Sprint(rng.Intn(1 << 20))
		}
		evs = append(evs, e)
	}
	rows := append([]impEvent(nil), evs...)
	for i := 0; i < n/10; i++ {
		rows = append(rows, evs[rng.Intn(n)])
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	// file 1: events of the last two hours; file 2: everything else, earlier
	cut := start + 3600_000
	var f1, f2 bytes.Buffer
	f1.WriteString("timestamp,direction,dpu_id,id\n")
	f2.WriteString("\"timestamp\",\"direction\",\"dpu_id\",\"id\"\n")
	for _, r := range rows {
		w := &f2
		if r.ts >= cut {
			w = &f1
		}
		if rng.Intn(2) == 0 {
			fmt.Fprintf(w, "%q,%q,%q,%q\n", impRFC(r.ts), fmt.Sprint(r.dir), r.dpu, r.id)
		} else {
			fmt.Fprintf(w, "%d,%d,%s,%s\n", r.ts, r.dir, r.dpu, r.id)
		}
	}
	s1 := impRun(t, cfg, "late.csv", f1.Bytes())
	s2 := impRun(t, cfg, "early.csv", f2.Bytes())
	if got := s1.Imported + s2.Imported; got != n {
		t.Errorf("imported %d, want %d", got, n)
	}
	if got := s1.Duplicates + s2.Duplicates; got != len(rows)-n {
		t.Errorf("duplicates %d, want %d", got, len(rows)-n)
	}
	if len(s1.Rejected)+len(s2.Rejected) != 0 {
		t.Errorf("rejected %v %v, want none", s1.Rejected, s2.Rejected)
	}
	impCheckAt(t, cfg, evs)
}

func TestImportErrors(t *testing.T) {
	t.Run("store in use", func(t *testing.T) {
		cfg, _ := impSetup(t)
		held, err := buffer.Open(buffer.Options{Dir: cfg.Storage.Dir, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		_, err = runImport(context.Background(), importOptions{Config: cfg, Logger: zerolog.Nop()}, "x.csv",
			strings.NewReader("timestamp,direction,dpu_id\n"))
		want := "storage dir " + cfg.Storage.Dir + " is in use by another process (is occupancyd running?)"
		if err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		if !errors.Is(err, buffer.ErrLocked) {
			t.Errorf("error does not wrap buffer.ErrLocked")
		}
	})
	for _, tc := range []struct{ name, data, want string }{
		{"bad header", "time,dir,dpu\n1,1,d-main\n", `import x: csv header: want timestamp,direction,dpu_id (and optionally id), got "time,dir,dpu"`},
		{"empty", "  \n\n", "import x: no events: the file is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := impSetup(t)
			_, err := runImport(context.Background(), importOptions{Config: cfg, Logger: zerolog.Nop()}, "x", strings.NewReader(tc.data))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			store, err := buffer.Open(buffer.Options{Dir: cfg.Storage.Dir, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			n := 0
			store.Events(0, 1<<62, func(occupancy.Event) error { n++; return nil })
			if n != 0 {
				t.Errorf("%d events stored, want 0", n)
			}
		})
	}
}

func TestImportCommand(t *testing.T) {
	cfg, cfgPath := impSetup(t)
	base := time.Now().Add(-time.Hour).UnixMilli()
	var b strings.Builder
	b.WriteString("timestamp,direction,dpu_id\n")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&b, "%d,1,d-main\n", base+int64(i)*1000)
	}
	events := filepath.Join(t.TempDir(), "events.csv")
	if err := os.WriteFile(events, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	// flags after the file work too
	code := dispatch([]string{"import", events, "--config", cfgPath, "--progress", "2"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	if want := fmt.Sprintf("import %s (csv): 5 rows\n  imported:   5\n  duplicates: 0\n  rejected:   0\n", events); !strings.HasPrefix(stdout.String(), want) {
		t.Errorf("stdout:\n%s\nwant it to start with\n%s", stdout.String(), want)
	}
	wantProgress := "import: 2 rows read: 2 imported, 0 duplicates, 0 rejected\n" +
		"import: 4 rows read: 4 imported, 0 duplicates, 0 rejected\n"
	if stderr.String() != wantProgress {
		t.Errorf("progress: got %q, want %q", stderr.String(), wantProgress)
	}
	impCheckAt(t, cfg, []impEvent{
		{"d-main", "", base, 1}, {"d-main", "", base + 1000, 1}, {"d-main", "", base + 2000, 1},
		{"d-main", "", base + 3000, 1}, {"d-main", "", base + 4000, 1},
	})

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import", events}, 2, "import needs --config FILE"},
		{[]string{"import", "--config", cfgPath}, 2, "import needs an EVENTS file"},
		{[]string{"import", "--config", cfgPath, filepath.Join(t.TempDir(), "none.csv")}, 1, "no such file"},
	} {
		var so, se bytes.Buffer
		if code := dispatch(tc.args, &so, &se); code != tc.code || !strings.Contains(se.String(), tc.want) {
			t.Errorf("%q: got exit %d stderr %q, want %d and %q", tc.args, code, se.String(), tc.code, tc.want)
		}
	}
}

// BenchmarkImportCSV imports a 20,000-row CSV (quoted fields, 5% duplicates, three
// hours of history) into a fresh store per iteration, recomputation included.
func BenchmarkImportCSV(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	const n = 20000
	start := time.Now().Add(-3 * time.Hour).UnixMilli()
	var buf bytes.Buffer
	buf.WriteString("timestamp,direction,dpu_id,id\n")
	dpus := []string{"d-main", "d-room", "283"}
	for i := 0; i < n; i++ {
		j := i
		if rng.Intn(20) == 0 && i > 0 {
			j = rng.Intn(i) // a duplicate of an earlier row
		}
		ts := start + int64(j)*500
		fmt.Fprintf(&buf, "%q,%q,%q,%q\n", impRFC(ts), fmt.Sprint(1-2*(j%2)), dpus[j%3], fmt.Sprint(j))
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		cfg, err := config.ParseConfig([]byte(fmt.Sprintf("storage: {dir: %q}\n%s", filepath.Join(dir, "data"), impTopologyYAML)))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		sum, err := runImport(context.Background(), importOptions{Config: cfg, Logger: zerolog.Nop()}, "bench.csv", bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if sum.Rows != n || sum.Imported+sum.Duplicates != n {
			b.Fatalf("rows %d imported %d duplicates %d", sum.Rows, sum.Imported, sum.Duplicates)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestImportArchive imports the day files that buffer's retention sweep writes to
// storage.archive_dir (DESIGN 4: "import takes the event files back").
func TestImportArchive(t *testing.T) {
	now := time.Now()
	arch := t.TempDir()
	old, err := buffer.Open(buffer.Options{
		Dir: t.TempDir(), Retention: time.Hour, ArchiveDir: arch, Logger: zerolog.Nop(),
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	// 19:00 UTC the day before yesterday to 05:00 yesterday: two day files.
	base := now.UTC().Truncate(24 * time.Hour).Add(-29 * time.Hour).UnixMilli()
	var evs []occupancy.Event
	var model []impEvent
	for i := 0; i < 300; i++ {
		e := occupancy.Event{DPU: []string{"d-main", "d-room", "283"}[rng.Intn(3)], TS: base + int64(i)*120_000 + rng.Int63n(1000), Direction: int8(1 - 2*rng.Intn(2))}
		if i%3 != 0 {
			e.ID = fmt.Sprint(i)
		}
		evs = append(evs, e)
		model = append(model, impEvent{e.DPU, e.ID, e.TS, e.Direction})
	}
	if _, err := old.Append(context.Background(), evs, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.Sweep(now); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(arch, "events-*.jsonl.gz"))
	if len(files) != 2 {
		t.Fatalf("the sweep archived %d day files in %s, want 2", len(files), arch)
	}
	// All day files in one import: one recomputation.
	cfg, cfgPath := impSetup(t)
	code, stdout, stderr := runDispatch(append([]string{"import", "--config", cfgPath}, files...)...)
	if code != 0 {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	total := fmt.Sprintf("total: 2 files, %d rows: %d imported, 0 duplicates, 0 rejected\n", len(evs), len(evs))
	if !strings.Contains(stdout, total) || strings.Count(stdout, "recomputed occupancy from") != 1 ||
		strings.Count(stdout, "(jsonl, gzip)") != len(files) {
		t.Errorf("stdout:\n%s\nwant %d gzip JSON-lines files, %q and one recomputation", stdout, len(files), total)
	}
	impCheckAt(t, cfg, model)
}

// TestImportFiles: several files in one import, the second one broken: the first
// one's events are stored and counted, the error names the second.
func TestImportFiles(t *testing.T) {
	cfg, cfgPath := impSetup(t)
	dir := t.TempDir()
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	good := filepath.Join(dir, "good.csv")
	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(good, []byte(fmt.Sprintf("timestamp,direction,dpu_id\n%d,1,d-main\n%d,1,d-room\n", base, base+1000)), 0o644)
	os.WriteFile(bad, []byte("when,which,who\n"), 0o644)
	code, stdout, stderr := runDispatch("import", "--config", cfgPath, good, bad)
	if code != 1 || !strings.Contains(stderr, "occupancyd: import "+bad+": csv header: want timestamp,direction,dpu_id") {
		t.Errorf("got exit %d stderr %q, want 1 and the bad file's header named", code, stderr)
	}
	if !strings.Contains(stdout, "import "+good+" (csv): 2 rows\n  imported:   2\n") || !strings.Contains(stdout, "recomputed occupancy from") {
		t.Errorf("stdout:\n%s\nwant the good file imported and recomputed", stdout)
	}
	impCheckAt(t, cfg, []impEvent{{"d-main", "", base, 1}, {"d-room", "", base + 1000, 1}})
}

// imported is the summary of one imported stream and where the history was
// recomputed from.
type imported struct {
	importSummary
	From int64 // earliest ts recomputed from (Unix ms); 0 = none
}

// runImport imports one EVENTS stream (runImportAll).
func runImport(ctx context.Context, opts importOptions, name string, in io.Reader) (imported, error) {
	sums, from, err := runImportAll(ctx, opts, []importSource{{Name: name, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(in), nil
	}}})
	sum := imported{importSummary: importSummary{Name: name}, From: from}
	if len(sums) > 0 {
		sum.importSummary = sums[0]
	}
	return sum, err
}

// TestImportReports: interval and cumulative report lines as the retention sweep
// archives them (buffer.ArchivedInterval, ArchivedCumulative: the kind's own field
// names beside dpu and kind), mixed with event lines, shuffled, some twice, one
// cumulative report lost, a counter reset and an interval overlapping a stored one,
// are imported (the overlap rejected with its line) and recomputed: the history
// equals the model of the crossings the reports stand for (an interval's ins then
// outs at its end; a cumulative report's increase over the one before it in ts
// order, its new value where a counter dropped, the first one the baseline).
func TestImportReports(t *testing.T) {
	cfg, _ := impSetup(t)
	rng := rand.New(rand.NewSource(17))
	now := time.Now().UnixMilli()
	base := now - 3*time.Hour.Milliseconds()
	type line struct {
		text  string
		model []impEvent // the crossings it stands for; nil: none (or a rejected line)
	}
	var lines []line
	jsonLine := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// crossings expands a report's counts at ts: ins (+1) before outs (-1), ordered
	// by id within the millisecond as the model sorts them.
	crossings := func(dpu string, ts, in, out int64) []impEvent {
		var evs []impEvent
		for j := int64(0); j < in+out; j++ {
			dir := int8(1)
			if j >= in {
				dir = -1
			}
			evs = append(evs, impEvent{dpu, fmt.Sprintf("x%06d", j), ts, dir})
		}
		return evs
	}
	// Events: every 2 minutes, within the first second.
	for ts := base; ts < now-time.Minute.Milliseconds(); ts += 120_000 {
		e := impEvent{[]string{"d-main", "d-room", "283"}[rng.Intn(3)], "", ts + rng.Int63n(1000), int8(1 - 2*rng.Intn(2))}
		if rng.Intn(3) == 0 {
			e.dir = 1 // people mostly come in
		}
		lines = append(lines, line{fmt.Sprintf(`{"dpu":%q,"ts":%d,"direction":%d}`, e.dpu, e.ts, e.dir), []impEvent{e}})
	}
	// Intervals of 5 minutes ending 30 s or 90 s past an event slot: never an event's
	// millisecond.
	var lastIv buffer.ArchivedInterval
	var lastStart int64
	for start := base + 30_000 - 300_000; start+300_000 < now; start += 300_000 {
		in, out := int64(rng.Intn(5)), int64(rng.Intn(4))
		iv := buffer.ArchivedInterval{DPU: "iv-room", Kind: "interval", Start: impRFC(start), End: impRFC(start + 300_000), In: in, Out: out}
		lines = append(lines, line{jsonLine(iv), crossings("iv-room", start+300_000, in, out)})
		lastIv, lastStart = iv, start
	}
	// Totals every 4 minutes at 30.5 s past an event slot; one lost, one reset.
	var cum []buffer.ArchivedCumulative
	var cumTS []int64
	inT, outT := int64(1000+rng.Intn(100)), int64(900+rng.Intn(100))
	for k, ts := 0, base+30_500; ts < now; k, ts = k+1, ts+240_000 {
		if k == 20 {
			inT, outT = 2, 1 // the sensor restarted: both counters from 0
		} else {
			inT += int64(rng.Intn(6))
			outT += int64(rng.Intn(5))
		}
		if k == 10 {
			continue // lost: the next report carries its crossings
		}
		cum = append(cum, buffer.ArchivedCumulative{DPU: "cu-main", Kind: "cumulative", TS: impRFC(ts), InTotal: inT, OutTotal: outT})
		cumTS = append(cumTS, ts)
	}
	resets := 0
	for i, c := range cum {
		var model []impEvent
		if i > 0 {
			p := cum[i-1]
			d := func(prev, next int64) int64 {
				if next < prev {
					return next
				}
				return next - prev
			}
			if c.InTotal < p.InTotal || c.OutTotal < p.OutTotal {
				resets++
			}
			model = crossings("cu-main", cumTS[i], d(p.InTotal, c.InTotal), d(p.OutTotal, c.OutTotal))
		}
		lines = append(lines, line{jsonLine(c), model})
	}
	if resets != 1 {
		t.Fatalf("the scenario has %d counter resets, want 1", resets)
	}
	unique := len(lines)
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	for i := 0; i < 10; i++ { // re-sent: counted once
		lines = append(lines, line{text: lines[rng.Intn(unique)].text})
	}
	// A different report overlapping the last interval: refused, its line named.
	over := lastIv
	over.Start, over.In = impRFC(lastStart+60_000), 9
	lines = append(lines, line{text: jsonLine(over)})

	var data bytes.Buffer
	var model []impEvent
	for _, l := range lines {
		data.WriteString(l.text + "\n")
		model = append(model, l.model...)
	}
	sum := impRun(t, cfg, "reports.jsonl", data.Bytes())
	if sum.Rows != len(lines) || sum.Imported != unique || sum.Duplicates != 10 || len(sum.Rejected) != 1 {
		t.Fatalf("summary: got %d rows, %d imported, %d duplicates, %d rejected (%+v); want %d, %d, 10, 1",
			sum.Rows, sum.Imported, sum.Duplicates, len(sum.Rejected), sum.Rejected, len(lines), unique)
	}
	if r := sum.Rejected[0]; r.Line != len(lines) || r.Reason != string(occupancy.ReasonOverlap) {
		t.Errorf("rejected: got line %d %s, want line %d overlap", r.Line, r.Reason, len(lines))
	}
	impCheckAt(t, cfg, model)
	// Imported again: every line a duplicate, the history unchanged.
	again := impRun(t, cfg, "reports.jsonl", data.Bytes())
	if again.Imported != 0 || again.Duplicates != len(lines)-1 {
		t.Errorf("second import: got %d imported, %d duplicates; want 0, %d", again.Imported, again.Duplicates, len(lines)-1)
	}
	impCheckAt(t, cfg, model)
}
