package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The reference model of the end-to-end tests: an independent, deliberately simple
// implementation of DESIGN 1-3 (identity, nesting, timeline order, clamping) that the
// daemon's published counts are compared with.

type e2eSpace struct{ id, name, parent string }
type e2eDPU struct{ id, plus, minus string }

type e2eTopo struct {
	spaces []e2eSpace
	dpus   []e2eDPU
}

// e2eTopology is the building of the tests: a site with two floors and three rooms,
// six DPUs (one from the street, room doors, stairs, a door between two rooms).
func e2eTopology() e2eTopo {
	return e2eTopo{
		spaces: []e2eSpace{
			{"hq", "HQ", ""}, {"f1", "Floor 1", "hq"}, {"f2", "Floor 2", "hq"},
			{"r1a", "Room 1A", "f1"}, {"r1b", "Room 1B", "f1"}, {"r2a", "Room 2A", "f2"},
		},
		dpus: []e2eDPU{
			{"d1", "f1", ""}, {"d2", "r1a", "f1"}, {"d3", "r1b", "f1"},
			{"d4", "f2", "f1"}, {"d5", "r2a", "f2"}, {"d6", "r1b", "r1a"},
		},
	}
}

// yaml renders the topology section of a config.
func (tp e2eTopo) yaml() string {
	var b strings.Builder
	b.WriteString("topology:\n  spaces:\n")
	for _, sp := range tp.spaces {
		fmt.Fprintf(&b, "    - {id: %s, name: %q", sp.id, sp.name)
		if sp.parent != "" {
			b.WriteString(", parent: " + sp.parent)
		}
		if sp.id == "hq" && sp.name == "HQ" {
			b.WriteString(", capacity: 500")
		}
		b.WriteString("}\n")
	}
	b.WriteString("  doorways:\n")
	for _, d := range tp.dpus {
		fmt.Fprintf(&b, "    - {id: door-%s, name: Door %s}\n", d.id, d.id)
	}
	b.WriteString("  dpus:\n")
	for _, d := range tp.dpus {
		fmt.Fprintf(&b, "    - {id: %s, doorway: door-%s, plus_space: %q, minus_space: %q}\n", d.id, d.id, d.plus, d.minus)
	}
	return b.String()
}

func (tp e2eTopo) dpu(id string) (e2eDPU, bool) {
	for _, d := range tp.dpus {
		if d.id == id {
			return d, true
		}
	}
	return e2eDPU{}, false
}

// chain is space id and its ancestors.
func (tp e2eTopo) chain(id string) []string {
	var c []string
	for id != "" {
		c = append(c, id)
		parent := ""
		for _, s := range tp.spaces {
			if s.id == id {
				parent = s.parent
			}
		}
		id = parent
	}
	return c
}

// e2eEvent is one event as the model sees it.
type e2eEvent struct {
	DPU string
	ID  string // "" = none
	TS  int64  // Unix ms
	Dir int
}

func (e e2eEvent) identity() string {
	if e.ID == "" {
		return fmt.Sprintf("%s|ts=%d|dir=%d", e.DPU, e.TS, e.Dir)
	}
	return fmt.Sprintf("%s|id=%s|ts=%d", e.DPU, e.ID, e.TS)
}

// counts is the true timeline's value of every space after all events: identity
// dedup, (ts, dpu, id) order, nesting, clamping at 0.
func (tp e2eTopo) counts(evs []e2eEvent) map[string]int64 {
	seen := map[string]bool{}
	var uniq []e2eEvent
	for _, e := range evs {
		if k := e.identity(); !seen[k] {
			seen[k] = true
			uniq = append(uniq, e)
		}
	}
	sort.Slice(uniq, func(i, j int) bool {
		a, b := uniq[i], uniq[j]
		if a.TS != b.TS {
			return a.TS < b.TS
		}
		if a.DPU != b.DPU {
			return a.DPU < b.DPU
		}
		return a.ID < b.ID
	})
	c := map[string]int64{}
	for _, s := range tp.spaces {
		c[s.id] = 0
	}
	for _, e := range uniq {
		d, ok := tp.dpu(e.DPU)
		if !ok {
			continue
		}
		from, to := d.minus, d.plus
		if e.Dir < 0 {
			from, to = to, from
		}
		fc, tc := tp.chain(from), tp.chain(to)
		in := func(s string, ch []string) bool {
			for _, x := range ch {
				if x == s {
					return true
				}
			}
			return false
		}
		for _, s := range tc {
			if !in(s, fc) {
				c[s]++
			}
		}
		for _, s := range fc {
			if !in(s, tc) && c[s] > 0 {
				c[s]--
			}
		}
	}
	return c
}

// simulate generates n crossings of people who enter, move and leave (so the true
// count never goes negative), one event per distinct ms from start on, with integer
// sequence ids per DPU (one in eight without id).
func (tp e2eTopo) simulate(rng *rand.Rand, n int, start int64, step int64) []e2eEvent {
	people := map[string]int{} // people standing directly in a space ("" = outside)
	seq := map[string]int{}
	var evs []e2eEvent
	ts := start
	for len(evs) < n {
		d := tp.dpus[rng.Intn(len(tp.dpus))]
		var options []int
		if d.minus == "" || people[d.minus] > 0 {
			options = append(options, 1)
		}
		if d.plus == "" || people[d.plus] > 0 {
			options = append(options, -1)
		}
		if len(options) == 0 {
			continue
		}
		dir := options[rng.Intn(len(options))]
		from, to := d.minus, d.plus
		if dir < 0 {
			from, to = to, from
		}
		if from != "" {
			people[from]--
		}
		if to != "" {
			people[to]++
		}
		seq[d.id]++
		id := strconv.Itoa(seq[d.id])
		if rng.Intn(8) == 0 {
			id = "" // some DPUs send no id: identity is (dpu, ts, direction)
		}
		evs = append(evs, e2eEvent{DPU: d.id, ID: id, TS: ts, Dir: dir})
		ts += step
	}
	return evs
}

// wire renders one event object in one of the formats real DPUs send: id as string,
// integer or absent; ts as RFC 3339 (UTC or an offset) or Unix ms; direction as a
// number or a numeric string.
func (e e2eEvent) wire(variant int) map[string]any {
	m := map[string]any{}
	if e.ID != "" { // an event without id has none in every copy (identity)
		if n, err := strconv.Atoi(e.ID); err == nil && variant%2 == 1 {
			m["id"] = n
		} else {
			m["id"] = e.ID
		}
	}
	switch variant % 4 {
	case 0:
		m["ts"] = time.UnixMilli(e.TS).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	case 1:
		m["ts"] = e.TS
	case 2:
		m["ts"] = time.UnixMilli(e.TS).In(time.FixedZone("", 2*3600)).Format("2006-01-02T15:04:05.000-07:00")
	case 3:
		m["ts"] = time.UnixMilli(e.TS).UTC().Format(time.RFC3339Nano)
	}
	if variant%5 == 0 {
		m["direction"] = strconv.Itoa(e.Dir)
	} else {
		m["direction"] = e.Dir
	}
	return m
}

// e2eMessage is one MQTT message: topic and payload.
type e2eMessage struct {
	topic   string
	payload []byte
}

// messages turns events into messages: the stream is shuffled (out of order), a
// fraction dupFrac of the events is sent again (some as the same message), events of
// one DPU are partly grouped into JSON arrays.
func messages(rng *rand.Rand, evs []e2eEvent, dupFrac float64) []e2eMessage {
	all := append([]e2eEvent(nil), evs...)
	for _, e := range evs {
		if rng.Float64() < dupFrac {
			all = append(all, e)
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	byDPU := map[string][]e2eEvent{}
	var order []string
	for _, e := range all {
		if _, ok := byDPU[e.DPU]; !ok {
			order = append(order, e.DPU)
		}
		byDPU[e.DPU] = append(byDPU[e.DPU], e)
	}
	var msgs []e2eMessage
	for _, dpu := range order {
		q := byDPU[dpu]
		for len(q) > 0 {
			n := 1
			if rng.Intn(3) == 0 {
				n = 2 + rng.Intn(3)
			}
			n = min(n, len(q))
			var payload []byte
			if n == 1 {
				payload, _ = json.Marshal(q[0].wire(rng.Intn(60)))
			} else {
				var arr []map[string]any
				for _, e := range q[:n] {
					arr = append(arr, e.wire(rng.Intn(60)))
				}
				payload, _ = json.Marshal(arr)
			}
			m := e2eMessage{topic: "dpu/" + dpu + "/events", payload: payload}
			msgs = append(msgs, m)
			if rng.Float64() < dupFrac/4 {
				msgs = append(msgs, m) // the very same message again
			}
			q = q[n:]
		}
	}
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	return msgs
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
