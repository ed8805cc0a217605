package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2EPushCounterResets: a cumulative DPU's counter resets, pushed over HTTP out
// of ts order, are counted as DESIGN 2a says (a report whose counter drops below the
// one before it in ts order; a report that slots in between moves the reset, it does
// not add one) and shown where DESIGN 2a and 5 say: GET /v1/dpus (kind and
// counter_resets, a total kept across a restart; since_start from the restart) and
// occupancyd_counter_resets_total; the space counts the crossings the totals stand
// for (a dropped counter's new value counted from 0).
func TestE2EPushCounterResets(t *testing.T) {
	d := newPushDaemon(t)
	c := d.start(t)
	client := &http.Client{Timeout: 30 * time.Second}
	b := time.Now().Add(-30 * time.Second).UnixMilli()
	tot := func(ts, in, out int64) string {
		return fmt.Sprintf(`{"ts":%d,"in_total":%d,"out_total":%d}`, ts, in, out)
	}
	steps := []struct {
		body        string
		space       int64 // rcu after it
		resets      int64 // pc's counter_resets after it
		accepted    int
		description string
	}{
		{"[" + tot(b, 10, 3) + "," + tot(b+1000, 15, 4) + "]", 5 - 1, 0, 2, "baseline 10/3, then 15/4: 5 in, 1 out"},
		{tot(b+2000, 2, 5), 4 + 2 - 1, 1, 1, "in drops 15 -> 2: a reset, 2 in; out 4 -> 5: 1 out"},
		{tot(b+1500, 20, 4), 4 + 5 + 2 - 1, 1, 1, "20/4 slots in before 2/5: 5 more in, the reset moves to 20 -> 2"},
		{tot(b+2000, 2, 5), 10, 1, 0, "re-sent: a duplicate, nothing changes"},
		{tot(b+3000, 1, 0), 10 + 1, 2, 1, "both drop: one more reset, 1 in, 0 out"},
	}
	for i, s := range steps {
		p := pushReq{dpu: "pc", token: "e2e-token", body: s.body}
		code, body, err := p.send(client, d.httpAddr)
		if err != nil || code != http.StatusOK {
			t.Fatalf("step %d (%s): push answered %d %s %v", i, s.description, code, body, err)
		}
		if want := fmt.Sprintf(`"accepted":%d,`, s.accepted); !strings.Contains(body, want) {
			t.Errorf("step %d (%s): answer %s, want %s", i, s.description, body, want)
		}
		if got := httpSpaces(t, d.httpAddr)["rcu"]; got != s.space {
			t.Errorf("step %d (%s): rcu = %d, want %d", i, s.description, got, s.space)
		}
		if got := dpuOf(t, d.httpAddr, "pc"); got.CounterResets != s.resets {
			t.Errorf("step %d (%s): /v1/dpus pc counter_resets = %d, want %d", i, s.description, got.CounterResets, s.resets)
		}
	}
	if got := metricOf(t, d.httpAddr, "occupancyd_counter_resets_total"); got != 2 {
		t.Errorf("occupancyd_counter_resets_total = %v, want 2", got)
	}
	for dpu, kind := range map[string]string{"pe": "events", "pi": "interval", "pc": "cumulative"} {
		if got := dpuOf(t, d.httpAddr, dpu); got.Kind != kind {
			t.Errorf("/v1/dpus %s kind = %q, want %q", dpu, got.Kind, kind)
		}
	}

	c.term(t, 15*time.Second)
	d.start(t)
	pc := dpuOf(t, d.httpAddr, "pc")
	if pc.CounterResets != 2 || pc.SinceStart.CounterResets != 0 {
		t.Errorf("after a restart: pc counter_resets = %d (since_start %d), want 2 (0): a total kept across restarts",
			pc.CounterResets, pc.SinceStart.CounterResets)
	}
	if got := httpSpaces(t, d.httpAddr)["rcu"]; got != 11 {
		t.Errorf("after a restart: rcu = %d, want 11", got)
	}
}

// dpuStat is the part of a GET /v1/dpus element this test reads.
type dpuStat struct {
	DPU           string `json:"dpu"`
	Kind          string `json:"kind"`
	CounterResets int64  `json:"counter_resets"`
	SinceStart    struct {
		CounterResets int64 `json:"counter_resets"`
	} `json:"since_start"`
}

// dpuOf reads one DPU's element of GET /v1/dpus.
func dpuOf(t *testing.T, httpAddr, dpu string) dpuStat {
	t.Helper()
	var all []dpuStat
	if code := httpGetJSON(t, "http://"+httpAddr+"/v1/dpus", &all); code != http.StatusOK {
		t.Fatalf("GET /v1/dpus: %d", code)
	}
	for _, s := range all {
		if s.DPU == dpu {
			return s
		}
	}
	t.Fatalf("GET /v1/dpus has no %s", dpu)
	return dpuStat{}
}

// metricOf reads an unlabelled metric from /metrics.
func metricOf(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s value %q: %v", name, v, err)
			}
			return f
		}
	}
	t.Fatalf("%s not in /metrics", name)
	return 0
}
