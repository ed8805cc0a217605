package buffer

import (
	"bytes"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/occupancyd/occupancyd/occupancy"
)

// The identity key layout is the contract with occupancy.Event.Key(): same bytes.
func TestEventKeyLayout(t *testing.T) {
	tests := []struct {
		name string
		ev   occupancy.Event
		want string // hex
	}{
		{"with id", occupancy.Event{DPU: "283", ID: "000123", TS: 1, Direction: 1},
			"8000000000000001" + hex.EncodeToString([]byte("283")) + "00" + "69" + hex.EncodeToString([]byte("000123"))},
		{"no id plus", occupancy.Event{DPU: "a", TS: 0, Direction: 1}, "8000000000000000" + "61" + "00" + "64" + "01"},
		{"no id minus", occupancy.Event{DPU: "a", TS: -1, Direction: -1}, "7fffffffffffffff" + "61" + "00" + "64" + "ff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := hex.EncodeToString(tc.ev.Key())
			if got != tc.want {
				t.Errorf("eventKey = %s, want %s", got, tc.want)
			}
		})
	}
}

func randEvent(r *rand.Rand) occupancy.Event {
	e := occupancy.Event{
		DPU:       []string{"a", "ab", "b", "dpu-1", "dpu-10", "dpu-2", "Z_9"}[r.IntN(7)],
		TS:        r.Int64N(2000) - 1000,
		Direction: int8(1 - 2*r.IntN(2)),
	}
	switch r.IntN(4) {
	case 0:
		e.TS = []int64{math.MinInt64, math.MaxInt64, 0, -1}[r.IntN(4)]
	case 1:
		e.TS = r.Int64()
	}
	if r.IntN(3) > 0 {
		e.ID = []string{"1", "10", "2", "000123", "x-y_z"}[r.IntN(5)]
	}
	return e
}

// modelCompare is the identity order written out independently: (TS, DPU, events
// without id before events with id, then direction +1 before -1 or id order).
func modelCompare(a, b occupancy.Event) int {
	if a.TS != b.TS {
		if a.TS < b.TS {
			return -1
		}
		return 1
	}
	if c := strings.Compare(a.DPU, b.DPU); c != 0 {
		return c
	}
	if (a.ID == "") != (b.ID == "") {
		if a.ID == "" {
			return -1
		}
		return 1
	}
	if a.ID != "" {
		return strings.Compare(a.ID, b.ID)
	}
	return -int(a.Direction) + int(b.Direction) // +1 first
}

func TestEventKeyRoundTripAndOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		a, b := randEvent(r), randEvent(r)
		ka, kb := a.Key(), b.Key()
		got, err := occupancy.ParseKey(ka)
		if err != nil {
			t.Fatalf("ParseKey(%x): %v", ka, err)
		}
		want := a
		if want.ID != "" {
			want.Direction = 0 // not in the key
		}
		if got != want {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
		if g, w := sign(bytes.Compare(ka, kb)), sign(modelCompare(a, b)); g != w {
			t.Fatalf("order of %+v vs %+v: key says %d, model %d", a, b, g, w)
		}
	}
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

func TestParseEventKeyRejectsGarbage(t *testing.T) {
	for _, k := range [][]byte{nil, {1, 2, 3}, append(make([]byte, 8), 'a', 0, 'd', 7), append(make([]byte, 8), 'a', 0, 'q', 1), append(make([]byte, 8), 0, 'd', 1), append(make([]byte, 8), 'a', 0, 'i')} {
		if _, err := occupancy.ParseKey(k); err == nil {
			t.Errorf("ParseKey(%x) = nil error, want an error", k)
		}
	}
}

func TestEventValueRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 1000; i++ {
		e := randEvent(r)
		e.Late = r.IntN(2) == 0
		e.Received = e.TS + r.Int64N(10000) - 5000
		if r.IntN(5) == 0 {
			e.Received = 0
		}
		got, err := decodeEvent(e.Key(), eventValue(nil, e))
		if err != nil {
			t.Fatal(err)
		}
		if got != e {
			t.Fatalf("got %+v, want %+v", got, e)
		}
	}
}

func TestRowKeyOrderAndRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	type rk struct {
		space string
		ts    int64
		seq   uint32
	}
	var rows []rk
	for i := 0; i < 500; i++ {
		rows = append(rows, rk{[]string{"a", "a-b", "ab", "b"}[r.IntN(4)], r.Int64N(100) - 50, uint32(r.IntN(3)) * 0x7fffffff})
	}
	keys := make([][]byte, len(rows))
	for i, x := range rows {
		keys[i] = rowKey(x.space, x.ts, x.seq)
		row := occupancy.Row{Space: x.space, TS: x.ts, Seq: x.seq, Occupancy: r.Int64N(1000) - 10, Entrances: r.Int32N(2), Exits: r.Int32N(2), Kind: occupancy.EntryKind(r.IntN(4))}
		got, err := decodeRow(keys[i], rowValue(row))
		if err != nil || got != row {
			t.Fatalf("decodeRow = %+v, %v; want %+v", got, err, row)
		}
	}
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	byKey := slices.Clone(idx)
	slices.SortStableFunc(byKey, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	byModel := slices.Clone(idx)
	slices.SortStableFunc(byModel, func(a, b int) int {
		x, y := rows[a], rows[b]
		if c := strings.Compare(x.space, y.space); c != 0 {
			return c
		}
		if x.ts != y.ts {
			return sign(int(x.ts - y.ts))
		}
		return sign(int(int64(x.seq) - int64(y.seq)))
	})
	for i := range byKey {
		if rows[byKey[i]] != rows[byModel[i]] {
			t.Fatalf("position %d: key order %+v, model order %+v", i, rows[byKey[i]], rows[byModel[i]])
		}
	}
}

// The store's key encoding and occupancy's Event.Key/ParseKey are the same contract.
func TestEventKeyMatchesOccupancy(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 2000; i++ {
		e := randEvent(r)
		if got, want := prefixed(pfxEvent, e)[1:], e.Key(); !bytes.Equal(got, want) {
			t.Fatalf("%+v: buffer key %x, occupancy key %x", e, got, want)
		}
		a, errA := occupancy.ParseKey(prefixed(pfxEvent, e)[1:])
		b, errB := occupancy.ParseKey(e.Key())
		if errA != nil || errB != nil || a != b {
			t.Fatalf("%+v: buffer parses %+v (%v), occupancy %+v (%v)", e, a, errA, b, errB)
		}
	}
}

// Whatever bytes a damaged store holds, decoding never panics, and a key that
// parses is exactly the key of what it parsed to.
func FuzzParseEventKey(f *testing.F) {
	f.Add((occupancy.Event{DPU: "283", ID: "000123", TS: 1, Direction: 1}).Key(), []byte{1, 4})
	f.Add((occupancy.Event{DPU: "a", TS: -5, Direction: -1}).Key(), []byte{0})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		e, err := occupancy.ParseKey(k)
		if err == nil {
			if e.ID == "" {
				if e.Direction != 1 && e.Direction != -1 {
					t.Fatalf("parsed direction %d", e.Direction)
				}
			} else {
				e.Direction = 1
			}
			if got := e.Key(); !bytes.Equal(got, k) {
				t.Fatalf("key %x parses to %+v whose key is %x", k, e, got)
			}
		}
		_, _ = decodeEvent(k, v)
		_, _ = decodeRow(k, v)
		_, _, _, _ = parseRowKey(k)
	})
}
