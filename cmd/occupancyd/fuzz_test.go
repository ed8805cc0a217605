package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Fuzz targets where hostile input enters the daemon from outside MQTT: the files of
// `occupancyd import` and the query parameters of the HTTP API. Their seed corpora are
// in testdata/fuzz/<name>/; `make fuzz` runs each for FUZZTIME.

// fuzzNow is the fixed "now" of FuzzImportRead, so an input means the same every run.
var fuzzNow = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixMilli()

// FuzzImportRead feeds a file to the import reader (format detection, gzip, BOM, CSV
// with quoting, JSON lines). Every data row must end as exactly one event or one
// rejection with a line number inside the file, every event must be one the event
// decoder accepts, and a JSON line must decode to what the decoder makes of it alone.
func FuzzImportRead(f *testing.F) {
	f.Add([]byte("timestamp,direction,dpu_id\n\"2026-11-27T09:00:00.000Z\",\"1\",\"d-main\"\n"))
	f.Add([]byte("{\"dpu\":\"283\",\"id\":7,\"ts\":\"2026-11-27T09:00:00Z\",\"direction\":-1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		text := data
		if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return // the reader must say so; nothing to compare
			}
			text, _ = io.ReadAll(io.LimitReader(zr, importBatch))
		}
		// The reader flushes to storage every importBatch events; this target has none.
		if len(text) >= importBatch/2 {
			t.Skip("input could hold a full batch")
		}
		lines := bytes.Split(text, []byte("\n"))
		im := &importer{lim: occupancy.Limits{Now: fuzzNow, MaxFutureSkew: 60_000, Oldest: fuzzNow - 90*86_400_000},
			bufSize: 4 << 10} // four times the executions of 64 KiB buffers
		err := im.read(context.Background(), bytes.NewReader(data))
		if err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
		if got := len(im.batch) + len(im.sum.Rejected); got != im.sum.Rows {
			t.Fatalf("%d rows read, %d events + %d rejections", im.sum.Rows, len(im.batch), len(im.sum.Rejected))
		}
		for _, r := range im.sum.Rejected {
			if r.Line < 1 || r.Line > len(lines) || r.Reason == "" || r.Detail == "" {
				t.Fatalf("rejection %+v: line outside 1..%d or no reason or detail", r, len(lines))
			}
		}
		jsonl := strings.HasPrefix(im.sum.Format, "jsonl")
		for i, ev := range im.batch {
			line := im.lines[i]
			if line < 1 || line > len(lines) {
				t.Fatalf("event %+v on line %d, outside 1..%d", ev, line, len(lines))
			}
			if !occupancy.ValidID(ev.DPU) || (ev.Direction != 1 && ev.Direction != -1) ||
				ev.TS > im.lim.Now+im.lim.MaxFutureSkew || ev.TS < im.lim.Oldest {
				t.Fatalf("event %+v from line %d is not one the decoder accepts", ev, line)
			}
			if !jsonl {
				continue
			}
			b := bytes.TrimSpace(bytes.TrimSuffix(lines[line-1], []byte("\r")))
			if line == 1 {
				b = bytes.TrimPrefix(b, []byte("\ufeff"))
			}
			want, rejs := occupancy.DecodePayload(ev.DPU, b, im.lim)
			if len(want) != 1 || len(rejs) != 0 {
				t.Fatalf("line %d %q: the import read %+v, the decoder alone %+v %+v", line, b, ev, want, rejs)
			}
			want[0].Received = 0
			if want[0] != ev {
				t.Fatalf("line %d %q: the import read %+v, the decoder alone %+v", line, b, ev, want[0])
			}
		}
	})
}

// FuzzHTTPQuery sends hostile paths, query parameters and reset bodies to the HTTP
// API of a running daemon (in-process, started once per fuzz worker, a few events
// stored). No answer may be a 500 or a broken connection; every answer is JSON, an
// error one with its message; counts are at most 10,000 contiguous buckets of the
// asked interval with min <= occupancy <= max.
func FuzzHTTPQuery(f *testing.F) {
	f.Add(uint8(0), "hq", "2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z", "15m")
	f.Add(uint8(1), "r1a", "2026-11-27T10:00:00.123+01:00", "", "")
	f.Add(uint8(2), "f1", "", "", "")
	f.Add(uint8(3), "hq", "start=1795000000000&end=1795000001000&interval=1ms", "", "")
	f.Add(uint8(4), "r1b", `{"occupancy": 3}`, "", "")

	dir := f.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(f, path, e2eConfig{dir: filepath.Join(dir, "data"), settleAfter: "1s", tick: "1s"})
	d := startMain(f, path)
	pub := mqttClient(f, d.brokerURL, "pub-fuzz")
	now := time.Now().UnixMilli()
	var msgs []e2eMessage
	for i, dpu := range []string{"d1", "d2", "d1", "d3", "d6", "d5", "d4"} {
		e := e2eEvent{DPU: dpu, ID: fmt.Sprint(i), TS: now - int64(3000-400*i), Dir: 1}
		msgs = append(msgs, e2eMessage{"dpu/" + dpu + "/events", mustJSON(e.wire(i))})
	}
	publishAll(f, pub, msgs)
	// The requests go to the handler the daemon's listener serves, without the
	// loopback round trip: four times the executions per second.
	h := d.main.handler()
	base := "http://" + d.httpAddr
	fuzzing := flag.Lookup("test.fuzz").Value.String() != ""

	f.Fuzz(func(t *testing.T, route uint8, id, p1, p2, p3 string) {
		sp := url.PathEscape(id)
		var req *http.Request
		var err error
		switch route % 5 {
		case 0:
			q := url.Values{"start": {p1}, "end": {p2}, "interval": {p3}}
			req, err = http.NewRequest("GET", base+"/v1/spaces/"+sp+"/counts?"+q.Encode(), nil)
		case 1:
			req, err = http.NewRequest("GET", base+"/v1/spaces/"+sp+"/occupancy?at="+url.QueryEscape(p1), nil)
		case 2:
			req, err = http.NewRequest("GET", base+"/v1/spaces/"+sp, nil)
		case 3: // a raw query, as a client that does not escape sends it
			req, err = http.NewRequest("GET", base+"/v1/spaces/"+sp+"/counts?"+p1, nil)
		case 4:
			req, err = http.NewRequest("POST", base+"/v1/spaces/"+sp+"/reset", strings.NewReader(p1))
			if err == nil {
				req.Header.Set("Authorization", "Bearer e2e-token")
			}
		}
		if err != nil {
			t.Skip("not a request a client can send")
		}
		// A counts query of thousands of buckets takes 30 ms (10,000); while fuzzing,
		// those are left to the seed corpus, which has them, so that the fuzzer tries
		// a hundred other inputs in that time.
		if fuzzing && (route%5 == 0 || route%5 == 3) && manyBuckets(req.URL.Query()) {
			t.Skip("over 1,000 buckets")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp, body := rec.Result(), rec.Body.Bytes()
		switch resp.StatusCode {
		case 301, 307, 308: // ServeMux's redirect of an unclean path ("/v1/spaces/./x")
			if resp.Header.Get("Location") == "" {
				t.Fatalf("%s %s: %d without a Location", req.Method, req.URL, resp.StatusCode)
			}
			return
		case 200, 400, 404, 405, 413:
		default:
			t.Fatalf("%s %s: status %d: %s", req.Method, req.URL, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: Content-Type %q: %s", req.Method, req.URL, ct, body)
		}
		if resp.StatusCode != 200 {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s: %d with no JSON error message: %s", req.Method, req.URL, resp.StatusCode, body)
			}
			return
		}
		if route%5 == 0 || route%5 == 3 {
			checkBuckets(t, req.URL.Query().Get("interval"), body)
			return
		}
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("%s %s: %v: %s", req.Method, req.URL, err, body)
		}
		if n, ok := doc["occupancy"].(float64); !ok || n < 0 {
			t.Fatalf("%s %s: occupancy %v", req.Method, req.URL, doc["occupancy"])
		}
	})
}

// manyBuckets says whether a counts query asks for 1,001 to 10,000 buckets (more are
// refused at once), reading its parameters as DESIGN 5 has them: instants in RFC
// 3339 or Unix milliseconds, the interval a Go duration (default 15m).
func manyBuckets(q url.Values) bool {
	instant := func(v string) (int64, bool) {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n, true
		}
		tm, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
		return tm.UnixMilli(), err == nil
	}
	start, ok1 := instant(q.Get("start"))
	end, ok2 := instant(q.Get("end"))
	iv := 15 * time.Minute
	if v := q.Get("interval"); v != "" {
		d, err := occupancy.ParseInterval(v)
		if err != nil || d < time.Millisecond {
			return false
		}
		iv = d
	}
	if !ok1 || !ok2 || end <= start || end-start < 0 {
		return false
	}
	n := (end - start) / iv.Milliseconds()
	return n > 1000 && n <= 10_000
}

// handler is what the running daemon's HTTP listener serves.
func (m *Main) handler() http.Handler {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.http
}

// checkBuckets checks a 200 answer of the counts route asked with interval iv.
func checkBuckets(t *testing.T, iv string, body []byte) {
	t.Helper()
	var bs []struct {
		Start, End          string
		Occupancy, Min, Max int64
		Entrances, Exits    int64
	}
	if err := json.Unmarshal(body, &bs); err != nil {
		t.Fatalf("counts: %v: %.200s", err, body)
	}
	if len(bs) > 10_000 {
		t.Fatalf("counts: %d buckets, over the limit of 10,000", len(bs))
	}
	want := 15 * time.Minute
	if iv != "" {
		d, err := occupancy.ParseInterval(iv)
		if err != nil {
			t.Fatalf("counts answered 200 to interval %q: %v", iv, err)
		}
		want = d.Truncate(time.Millisecond)
	}
	const day = 24 * time.Hour
	parse := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("counts: bucket time %q: %v", s, err)
		}
		return tm
	}
	for i, b := range bs {
		start, end := parse(b.Start), parse(b.End)
		// The test building's spaces are in UTC: buckets lie on the calendar
		// (DESIGN 3), whole ones, each the interval long from midnight on, the day's
		// last one cut at the next midnight where the interval does not divide it.
		sinceMidnight := start.Sub(start.Truncate(day))
		aligned := sinceMidnight%want == 0
		if want >= day {
			aligned = sinceMidnight == 0
		}
		got := end.Sub(start)
		if !aligned || got <= 0 || got > want || (got != want && end.Sub(end.Truncate(day)) != 0) {
			t.Fatalf("bucket %d of %d [%s, %s) is %v long, want %v on the calendar", i, len(bs), b.Start, b.End, got, want)
		}
		if i > 0 && b.Start != bs[i-1].End {
			t.Fatalf("bucket %d starts at %s, the one before ends at %s", i, b.Start, bs[i-1].End)
		}
		if b.Min < 0 || b.Min > b.Occupancy || b.Occupancy > b.Max || b.Entrances < 0 || b.Exits < 0 {
			t.Fatalf("bucket %d: %+v", i, b)
		}
	}
}
