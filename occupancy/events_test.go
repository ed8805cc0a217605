package occupancy

import (
	"bytes"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var testNow = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixMilli()

func testLimits() Limits {
	return Limits{Now: testNow, MaxFutureSkew: 60_000, Oldest: testNow - 90*86_400_000, MaxPayload: 256}
}

func TestDecodePayload(t *testing.T) {
	ts := testNow - 1000
	tests := []struct {
		name    string
		dpu     string
		payload string
		want    []Event
		reasons []Reason // one per rejection, in order
		indexes []int
		big     bool // no max_payload
	}{
		{name: "object rfc3339", dpu: "283", payload: `{"id":"000123","ts":"2026-11-27T09:59:59Z","direction":1}`,
			want: []Event{{DPU: "283", ID: "000123", TS: ts, Direction: 1, Received: testNow}}},
		{name: "object offset and fraction", dpu: "283", payload: `{"ts":"2026-11-27T10:59:58.5+01:00","direction":-1}`,
			want: []Event{{DPU: "283", TS: testNow - 1500, Direction: -1, Received: testNow}}},
		{name: "unix ms and string direction and integer id", dpu: "a", payload: ` {"id": 42, "ts": 1795773599000, "direction": "-1"} `,
			want: []Event{{DPU: "a", ID: "42", TS: ts, Direction: -1, Received: testNow}}},
		{name: "batch keeps good neighbours", dpu: "d", payload: `[{"ts":1795773599000,"direction":1},{"ts":1795773599000,"direction":2},{"ts":"x","direction":1},7,{"ts":1795773599000,"direction":-1,"id":"b"}]`,
			want:    []Event{{DPU: "d", TS: ts, Direction: 1, Received: testNow}, {DPU: "d", ID: "b", TS: ts, Direction: -1, Received: testNow}},
			reasons: []Reason{ReasonBadDirection, ReasonBadTS, ReasonBadJSON}, indexes: []int{1, 2, 3}},
		{name: "empty batch", dpu: "d", payload: `[]`},
		{name: "bad json", dpu: "d", payload: `{"ts":`, reasons: []Reason{ReasonBadJSON}, indexes: []int{-1}},
		{name: "not an object", dpu: "d", payload: `"hello"`, reasons: []Reason{ReasonBadJSON}, indexes: []int{-1}},
		{name: "empty payload", dpu: "d", payload: ``, reasons: []Reason{ReasonBadJSON}, indexes: []int{-1}},
		{name: "bad array", dpu: "d", payload: `[{"ts":1}`, reasons: []Reason{ReasonBadJSON}, indexes: []int{-1}},
		{name: "float id", dpu: "d", payload: `{"id":1.5,"ts":1795773599000,"direction":1}`, reasons: []Reason{ReasonBadID}, indexes: []int{-1}},
		{name: "exponent id", dpu: "d", payload: `{"id":1e3,"ts":1795773599000,"direction":1}`, reasons: []Reason{ReasonBadID}, indexes: []int{-1}},
		{name: "object id", dpu: "d", payload: `{"id":{"n":1},"ts":1795773599000,"direction":1}`, reasons: []Reason{ReasonBadID}, indexes: []int{-1}},
		{name: "boolean id", dpu: "d", payload: `{"id":true,"ts":1795773599000,"direction":1}`, reasons: []Reason{ReasonBadID}, indexes: []int{-1}},
		{name: "invalid UTF-8 ids are rejected, not merged", dpu: "d", payload: "[{\"id\":\"x\xff\",\"ts\":1795773599000,\"direction\":1},{\"id\":\"x\xfe\",\"ts\":1795773599000,\"direction\":1}]",
			reasons: []Reason{ReasonBadID, ReasonBadID}, indexes: []int{0, 1}},
		{name: "escaped lone surrogate id", dpu: "d", payload: `[{"id":"x\ud800","ts":1795773599000,"direction":1},{"id":"x\udc00\u0041","ts":1795773599000,"direction":1},{"id":"\ud83d","ts":1795773599000,"direction":1}]`,
			reasons: []Reason{ReasonBadID, ReasonBadID, ReasonBadID}, indexes: []int{0, 1, 2}},
		{name: "escaped ids are their characters", dpu: "d", payload: `[{"id":"caf\u00e9\ud83d\ude00\n\"\/","ts":1795773599000,"direction":1},{"id":"x\ufffd","ts":1795773599000,"direction":1}]`,
			want: []Event{{DPU: "d", ID: "café😀\n\"/", TS: ts, Direction: 1, Received: testNow}, {DPU: "d", ID: "x\ufffd", TS: ts, Direction: 1, Received: testNow}}},
		{name: "128-byte ids", dpu: "d", big: true, payload: `[{"id":"` + strings.Repeat("é", 64) + `","ts":1795773599000,"direction":1},{"id":` + "1" + strings.Repeat("0", 127) + `,"ts":1795773599000,"direction":1}]`,
			want: []Event{{DPU: "d", ID: strings.Repeat("é", 64), TS: ts, Direction: 1, Received: testNow}, {DPU: "d", ID: "1" + strings.Repeat("0", 127), TS: ts, Direction: 1, Received: testNow}}},
		{name: "129-byte ids", dpu: "d", big: true, payload: `[{"id":"` + strings.Repeat("x", 129) + `","ts":1795773599000,"direction":1},{"id":"` + strings.Repeat("é", 64) + `x","ts":1795773599000,"direction":1},{"id":` + "1" + strings.Repeat("0", 128) + `,"ts":1795773599000,"direction":1},{"id":"` + strings.Repeat(`\u0041`, 129) + `","ts":1795773599000,"direction":1}]`,
			reasons: []Reason{ReasonBadID, ReasonBadID, ReasonBadID, ReasonBadID}, indexes: []int{0, 1, 2, 3}},
		{name: "an integer id beyond int64 is its decimal string", dpu: "d", payload: `{"id":-18446744073709551616,"ts":1795773599000,"direction":1}`,
			want: []Event{{DPU: "d", ID: "-18446744073709551616", TS: ts, Direction: 1, Received: testNow}}},
		{name: "lower case t and z", dpu: "d", payload: `{"ts":"2026-11-27t09:59:59.000z","direction":1}`,
			want: []Event{{DPU: "d", TS: ts, Direction: 1, Received: testNow}}},
		{name: "offset -00:00 and 23:59", dpu: "d", payload: `[{"ts":"2026-11-27T09:59:59-00:00","direction":1},{"ts":"2026-11-28T09:58:59+23:59","direction":1}]`,
			want: []Event{{DPU: "d", TS: ts, Direction: 1, Received: testNow}, {DPU: "d", TS: ts, Direction: 1, Received: testNow}}},
		{name: "offsets beyond 23:59", dpu: "d", payload: `[{"ts":"2026-11-28T09:59:59+24:00","direction":1},{"ts":"2026-11-28T09:59:59+23:60","direction":1}]`,
			reasons: []Reason{ReasonBadTS, ReasonBadTS}, indexes: []int{0, 1}},
		{name: "direction as numeric strings", dpu: "d", payload: `[{"ts":1795773599000,"direction":"1"},{"ts":1795773599000,"direction":" -1 "},{"ts":1795773599000,"direction":"+1"}]`,
			want: []Event{{DPU: "d", TS: ts, Direction: 1, Received: testNow}, {DPU: "d", TS: ts, Direction: -1, Received: testNow}, {DPU: "d", TS: ts, Direction: 1, Received: testNow}}},
		{name: "direction zero", dpu: "d", payload: `{"ts":1795773599000,"direction":0}`, reasons: []Reason{ReasonBadDirection}, indexes: []int{-1}},
		{name: "direction missing", dpu: "d", payload: `{"ts":1795773599000}`, reasons: []Reason{ReasonBadDirection}, indexes: []int{-1}},
		{name: "direction word", dpu: "d", payload: `{"ts":1795773599000,"direction":"in"}`, reasons: []Reason{ReasonBadDirection}, indexes: []int{-1}},
		{name: "direction float", dpu: "d", payload: `{"ts":1795773599000,"direction":1.0}`, reasons: []Reason{ReasonBadDirection}, indexes: []int{-1}},
		{name: "ts missing", dpu: "d", payload: `{"direction":1}`, reasons: []Reason{ReasonBadTS}, indexes: []int{-1}},
		{name: "ts not rfc3339", dpu: "d", payload: `{"ts":"27.11.2026 10:00","direction":1}`, reasons: []Reason{ReasonBadTS}, indexes: []int{-1}},
		{name: "ts float", dpu: "d", payload: `{"ts":1795773599000.5,"direction":1}`, reasons: []Reason{ReasonBadTS}, indexes: []int{-1}},
		{name: "future ts", dpu: "d", payload: `{"ts":1795773661000,"direction":1}`, reasons: []Reason{ReasonFutureTS}, indexes: []int{-1}},
		{name: "ts at the skew bound", dpu: "d", payload: `{"ts":1795773660000,"direction":1}`,
			want: []Event{{DPU: "d", TS: testNow + 60_000, Direction: 1, Received: testNow}}},
		{name: "too old", dpu: "d", payload: `{"ts":"2020-01-01T00:00:00Z","direction":1}`, reasons: []Reason{ReasonTooOld}, indexes: []int{-1}},
		{name: "too large", dpu: "d", payload: `[` + strings.Repeat(`{"ts":1,"direction":1},`, 20) + `]`, reasons: []Reason{ReasonTooLarge}, indexes: []int{-1}},
		{name: "bad topic dpu", dpu: "a b", payload: `{"ts":1795773599000,"direction":1}`, reasons: []Reason{ReasonBadTopic}, indexes: []int{-1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := testLimits()
			if tc.big {
				lim.MaxPayload = 0
			}
			got, rejs := DecodePayload(tc.dpu, []byte(tc.payload), lim)
			if len(got) != len(tc.want) {
				t.Fatalf("events: got %+v, want %+v (rejections %+v)", got, tc.want, rejs)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if len(rejs) != len(tc.reasons) {
				t.Fatalf("rejections: got %+v, want reasons %v", rejs, tc.reasons)
			}
			for i, r := range rejs {
				if r.Reason != tc.reasons[i] || r.Index != tc.indexes[i] {
					t.Errorf("rejection %d: got %s@%d (%s), want %s@%d", i, r.Reason, r.Index, r.Detail, tc.reasons[i], tc.indexes[i])
				}
				if r.Detail == "" {
					t.Errorf("rejection %d: empty detail", i)
				}
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{{"283", true}, {"a-B_9", true}, {strings.Repeat("x", 64), true}, {strings.Repeat("x", 65), false}, {"", false}, {"a b", false}, {"a/b", false}, {"ä", false}, {"a+", false}} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q): got %v, want %v", tc.id, got, tc.want)
		}
	}
}

// TestKeyOrder: byte order of keys is the documented timeline order, and ParseKey
// inverts Key.
func TestKeyOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	dpus := []string{"a", "ab", "b", "a-1", "Z", "0"}
	ids := []string{"", "", "1", "10", "9", "x"}
	var evs []Event
	for i := 0; i < 2000; i++ {
		ev := Event{DPU: dpus[rng.Intn(len(dpus))], ID: ids[rng.Intn(len(ids))], TS: int64(rng.Intn(7) - 3), Direction: int8(rng.Intn(2)*2 - 1)}
		if rng.Intn(4) == 0 {
			ev.TS = rng.Int63() - rng.Int63()
		}
		evs = append(evs, ev)
	}
	// Independent model of the order.
	tail := func(e Event) string {
		if e.ID == "" {
			if e.Direction == 1 {
				return "d\x01"
			}
			return "d\xff"
		}
		return "i" + e.ID
	}
	model := func(a, b Event) bool {
		if a.TS != b.TS {
			return a.TS < b.TS
		}
		if a.DPU != b.DPU {
			return a.DPU < b.DPU
		}
		return tail(a) < tail(b)
	}
	byKey := append([]Event(nil), evs...)
	sort.SliceStable(byKey, func(i, j int) bool { return bytes.Compare(byKey[i].Key(), byKey[j].Key()) < 0 })
	byModel := append([]Event(nil), evs...)
	sort.SliceStable(byModel, func(i, j int) bool { return model(byModel[i], byModel[j]) })
	for i := range byKey {
		if bytes.Compare(byKey[i].Key(), byModel[i].Key()) != 0 {
			t.Fatalf("position %d: key order %+v, model order %+v", i, byKey[i], byModel[i])
		}
	}
	for _, ev := range evs {
		got, err := ParseKey(ev.Key())
		if err != nil {
			t.Fatalf("ParseKey(%+v): %v", ev, err)
		}
		want := Event{DPU: ev.DPU, ID: ev.ID, TS: ev.TS}
		if ev.ID == "" {
			want.Direction = ev.Direction
		}
		if got != want {
			t.Fatalf("ParseKey: got %+v, want %+v", got, want)
		}
	}
	for _, bad := range [][]byte{nil, []byte("short"), append(make([]byte, 8), "dpu"...), append(make([]byte, 8), "d\x00x1"...), append(make([]byte, 8), "d\x00d\x05"...)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q): want an error", bad)
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{`{"id":"1","ts":"2026-11-27T09:59:59Z","direction":1}`, `[{"ts":1795773599000,"direction":"-1"},{"ts":1}]`, `[]`, `{`, `null`, `[1,2,"x",{}]`, `{"ts":-99999999999999999999,"direction":1}`} {
		f.Add("dpu1", []byte(s))
	}
	f.Fuzz(func(t *testing.T, dpu string, payload []byte) {
		lim := testLimits()
		lim.MaxPayload = 4096
		evs, rejs := DecodePayload(dpu, payload, lim)
		if len(evs) == 0 && len(rejs) == 0 {
			trimmed := bytes.TrimSpace(payload)
			if len(trimmed) == 0 || trimmed[0] != '[' {
				t.Fatalf("no events and no rejections for %q", payload)
			}
		}
		for _, ev := range evs {
			if ev.Direction != 1 && ev.Direction != -1 {
				t.Fatalf("event with direction %d", ev.Direction)
			}
			if ev.TS > lim.Now+lim.MaxFutureSkew || ev.TS < lim.Oldest {
				t.Fatalf("event ts %d outside limits", ev.TS)
			}
			if ev.DPU != dpu || !ValidID(ev.DPU) {
				t.Fatalf("event dpu %q", ev.DPU)
			}
			if _, err := ParseKey(ev.Key()); err != nil && ev.ID != "" {
				t.Fatalf("key of %+v does not parse: %v", ev, err)
			}
			if !utf8.ValidString(ev.ID) || len(ev.ID) > MaxIDLen {
				t.Fatalf("event id %q: want at most %d bytes of valid UTF-8 (else bad_id)", ev.ID, MaxIDLen)
			}
		}
		for _, r := range rejs {
			if r.Reason == "" || r.Detail == "" {
				t.Fatalf("rejection without reason or detail: %+v", r)
			}
		}
	})
}

// FuzzEventID: an id is its bytes (DESIGN 2). Two events whose ids are the raw
// bytes a and b (only '"', '\\' and control bytes escaped, everything else, invalid
// UTF-8 included, as it is) decode to exactly those bytes when they are at most 128
// bytes of valid UTF-8 and are rejected as bad_id otherwise: two different ids never
// become one (encoding/json turned "x\xff" and "x\xfe" both into "x\ufffd").
func FuzzEventID(f *testing.F) {
	f.Add([]byte("x\xff"), []byte("x\xfe"))
	f.Add([]byte("caf\xc3"), []byte("caf\xc3\xa9"))
	f.Add([]byte("x\ufffd"), []byte("x\xed\xa0\x80")) // U+FFFD and an encoded surrogate
	f.Add([]byte(strings.Repeat("é", 64)), []byte(strings.Repeat("é", 64)+"x"))
	f.Add([]byte("a\"b\\c\n"), []byte("a\"b\\c\r"))
	lit := func(id []byte) string {
		var b strings.Builder
		b.WriteByte('"')
		for _, c := range id {
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20:
				fmt.Fprintf(&b, "\\u%04x", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
		return b.String()
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		payload := `[{"id":` + lit(a) + `,"ts":1795773599000,"direction":1},{"id":` + lit(b) + `,"ts":1795773599000,"direction":1}]`
		lim := testLimits()
		lim.MaxPayload = 0
		evs, rejs := DecodePayload("d", []byte(payload), lim)
		rejected := map[int]Reason{}
		for _, r := range rejs {
			rejected[r.Index] = r.Reason
		}
		k := 0
		for i, id := range [][]byte{a, b} {
			ok := utf8.Valid(id) && len(id) <= MaxIDLen
			if !ok {
				if rejected[i] != ReasonBadID {
					t.Fatalf("id %q: got %+v (rejections %+v), want bad_id", id, evs, rejs)
				}
				continue
			}
			if _, r := rejected[i]; r || k >= len(evs) || evs[k].ID != string(id) {
				t.Fatalf("id %q: got events %+v, rejections %+v; want it accepted as its bytes", id, evs, rejs)
			}
			k++
		}
		if len(evs) == 2 && !bytes.Equal(a, b) && bytes.Equal(evs[0].Key(), evs[1].Key()) {
			t.Fatalf("ids %q and %q share a key", a, b)
		}
	})
}
