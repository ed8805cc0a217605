package main

import (
	"fmt"
	"math/rand"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/occupancy/refmodel"
)

// History over HTTP (issue 10): a new daemon's horizon starts at start -
// settle_after, so a backlog dated in the minutes before the start is pending and
// one dated before that is corrected at the horizon; after a restart (the engine
// rebuilt from Badger) the horizon holds and late events are corrected there. At
// every stage GET /v1/spaces/{id}/occupancy?at= and /counts answer what the
// independent model (occupancy/refmodel) answers, for every space, at settled and
// pending instants, at the horizon and in the future, over ranges straddling it,
// and every counted crossing is in the buckets exactly once.
func TestE2EHistoryMatchesModel(t *testing.T) {
	const settle = 6_000
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "data"), settleAfter: "6s"})
	tp := e2eTopology()
	cfg := refmodel.Config{SettleAfter: settle, Clamp: true}
	for _, s := range tp.spaces {
		cfg.Spaces = append(cfg.Spaces, refmodel.Space{ID: s.id, Parent: s.parent})
	}
	for _, d := range tp.dpus {
		cfg.DPUs = append(cfg.DPUs, refmodel.DPU{ID: d.id, Plus: d.plus, Minus: d.minus})
	}
	m := refmodel.New(cfg)
	rng := rand.New(rand.NewSource(7))
	seq := map[string]int{}
	gen := func(n int, lo, hi int64) []e2eEvent {
		var evs []e2eEvent
		for i := 0; i < n; i++ {
			d := tp.dpus[rng.Intn(len(tp.dpus))].id
			e := e2eEvent{DPU: d, TS: lo + rng.Int63n(hi-lo), Dir: 1}
			if rng.Intn(3) == 0 {
				e.Dir = -1
			}
			if rng.Intn(4) != 0 {
				seq[d]++
				e.ID = strconv.Itoa(seq[d])
			}
			evs = append(evs, e)
		}
		return evs
	}
	toModel := func(evs []e2eEvent) []refmodel.Event {
		out := make([]refmodel.Event, len(evs))
		for i, e := range evs {
			out[i] = refmodel.Event{DPU: e.DPU, ID: e.ID, TS: e.TS, Dir: e.Dir}
		}
		return out
	}
	var first int64 // the earliest ts sent

	// A new store: H = start - settle_after, held for settle_after.
	before := time.Now().UnixMilli()
	d := startMain(t, path)
	after := time.Now().UnixMilli()
	h0 := settledUntil(t, d.httpAddr)
	if h0 < before-settle || h0 > after-settle {
		t.Fatalf("horizon of a new store: got %s, want start - settle_after, within [%s, %s]", rfc3339ms(h0), rfc3339ms(before-settle), rfc3339ms(after-settle))
	}
	m.Start(h0 + settle)
	now := time.Now().UnixMilli()
	first = h0 - 3*settle
	// Late at the start (before H), a backlog from before the start (pending), and
	// crossings since the start.
	evs := append(gen(40, first, h0), gen(60, h0, now)...)
	evs = append(evs, gen(40, now-1000, now)...)
	pub := mqttClient(t, d.brokerURL, "pub-history")
	publishAll(t, pub, messages(rng, evs, 0.2))
	if h := settledUntil(t, d.httpAddr); h != h0 {
		t.Fatalf("the horizon moved while the backlog was published (%s -> %s): the machine is too slow for settle_after 6s", rfc3339ms(h0), rfc3339ms(h))
	}
	m.Receive(toModel(evs))
	compareHistory(t, rng, d.httpAddr, m, "pending", first, h0)
	last := maxTS(evs)
	waitSettled(t, d.httpAddr, last+1)
	compareHistory(t, rng, d.httpAddr, m, "settled", first, settledUntil(t, d.httpAddr))

	// A restart rebuilds the engine from the store; H holds at the stored one, and
	// events before it are late: corrected at H, counted there.
	if err := d.main.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	d = startMain(t, path)
	h1 := settledUntil(t, d.httpAddr)
	m.Tick(h1 + settle)
	if m.Horizon() != h1 {
		t.Fatalf("horizon after the restart: %s, before it the model had %s", rfc3339ms(h1), rfc3339ms(m.Horizon()))
	}
	m.Start(0)
	now = time.Now().UnixMilli()
	evs2 := append(gen(40, h0, h1), gen(40, h1, now)...)
	evs2 = append(evs2, evs[:10]...) // redelivered
	pub = mqttClient(t, d.brokerURL, "pub-history-2")
	publishAll(t, pub, messages(rng, evs2, 0.2))
	if h := settledUntil(t, d.httpAddr); h != h1 {
		t.Fatalf("the horizon moved while late events were published (%s -> %s): the machine is too slow for settle_after 6s", rfc3339ms(h1), rfc3339ms(h))
	}
	if late := m.Receive(toModel(evs2)); late == 0 {
		t.Fatalf("no late events after the restart")
	}
	compareHistory(t, rng, d.httpAddr, m, "late, pending", first, h1)
	waitSettled(t, d.httpAddr, max(last, maxTS(evs2))+1)
	compareHistory(t, rng, d.httpAddr, m, "late, settled", first, settledUntil(t, d.httpAddr))
}

func maxTS(evs []e2eEvent) int64 {
	x := int64(0)
	for _, e := range evs {
		x = max(x, e.TS)
	}
	return x
}

// settledUntil is the horizon the daemon reports (settled_until of a space).
func settledUntil(t *testing.T, httpAddr string) int64 {
	t.Helper()
	var o struct {
		SettledUntil string `json:"settled_until"`
	}
	if code := httpGetJSON(t, "http://"+httpAddr+"/v1/spaces/hq", &o); code != 200 {
		t.Fatalf("GET /v1/spaces/hq = %d", code)
	}
	ts, err := time.Parse(time.RFC3339Nano, o.SettledUntil)
	if err != nil {
		t.Fatalf("settled_until %q: %v", o.SettledUntil, err)
	}
	return ts.UnixMilli()
}

func waitSettled(t *testing.T, httpAddr string, h int64) {
	t.Helper()
	eventually(t, 30*time.Second, "the horizon past the events", func() string {
		if got := settledUntil(t, httpAddr); got < h {
			return fmt.Sprintf("settled_until %s, want at least %s", rfc3339ms(got), rfc3339ms(h))
		}
		return ""
	})
}

// compareHistory compares the current values, At at instants around the horizon h
// and Counts over ranges from first on, for every space, with the model.
func compareHistory(t *testing.T, rng *rand.Rand, httpAddr string, m *refmodel.Model, stage string, first, h int64) {
	t.Helper()
	base := "http://" + httpAddr + "/v1/spaces/"
	now := time.Now().UnixMilli()
	got := httpSpaces(t, httpAddr)
	for _, sp := range e2eTopology().spaces {
		id := sp.id
		if want := m.Current(id); got[id] != want {
			t.Errorf("%s: GET /v1/spaces %s: got %d, want %d", stage, id, got[id], want)
		}
		ats := []int64{h - 1, h, h + 1, now, now + 60_000, first - 1}
		for i := 0; i < 12; i++ {
			ats = append(ats, first+rng.Int63n(now-first))
		}
		for _, at := range ats {
			var o struct {
				Occupancy int64 `json:"occupancy"`
			}
			u := base + id + "/occupancy?at=" + url.QueryEscape(rfc3339ms(at))
			if code := httpGetJSON(t, u, &o); code != 200 {
				t.Fatalf("GET %s = %d", u, code)
			}
			if want := m.At(id, at); o.Occupancy != want {
				t.Errorf("%s: %s at %s (H %s): got %d, want %d", stage, id, rfc3339ms(at), rfc3339ms(h), o.Occupancy, want)
			}
		}
		// Whole intervals in UTC (the topology's time zone), the last one beginning
		// before now.
		lo := first - first%1000 - 1000
		for _, iv := range []int64{1000, 2000, 5000} {
			start := lo + rng.Int63n((h-lo)/iv+1)*iv
			if iv == 1000 {
				start = lo
			}
			start -= start % iv
			end := now - now%iv + iv
			u := fmt.Sprintf("%s%s/counts?start=%s&end=%s&interval=%dms", base, id, url.QueryEscape(rfc3339ms(start)), url.QueryEscape(rfc3339ms(end)), iv)
			type bucket struct {
				Start, End          string
				Occupancy, Min, Max int64
				Entrances, Exits    int64
			}
			var bs []bucket
			if code := httpGetJSON(t, u, &bs); code != 200 {
				t.Fatalf("GET %s = %d", u, code)
			}
			want := m.Counts(id, refmodel.Uniform(start, end, iv))
			if len(bs) != len(want) {
				t.Fatalf("%s: GET %s: %d buckets, want %d", stage, u, len(bs), len(want))
			}
			var in, out int64
			for i, w := range want {
				b := bs[i]
				in, out = in+b.Entrances, out+b.Exits
				if wb := (bucket{rfc3339ms(w.Start), rfc3339ms(w.End), w.Occupancy, w.Min, w.Max, w.Entrances, w.Exits}); b != wb {
					t.Errorf("%s: %s counts bucket %d (H %s): got %+v, want %+v", stage, id, i, rfc3339ms(h), b, wb)
					break
				}
			}
			if iv == 1000 {
				// Every crossing counted once: the buckets from before the first
				// event to now hold the true timeline's entrances and exits.
				if wi, wo := m.TrueTotals(id); in != wi || out != wo {
					t.Errorf("%s: %s entrances/exits of all buckets: got %d/%d, want %d/%d", stage, id, in, out, wi, wo)
				}
			}
		}
	}
}
