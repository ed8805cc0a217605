package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Key space. Every key starts with a one-byte type prefix; the rest is
// order-preserving so that prefix iteration yields timeline order.
//
//	e <eventKey>                          event log (value: eventValue); its own dedup index
//	p <eventKey>                          parked mark (value: eventValue)
//	l <eventKey>                          late mark: stored late, correction not committed (value: eventValue)
//	r <ts BE flipped> <space>             manual reset (value: zigzag varint occupancy)
//	v <at BE flipped>                     topology version (value: JSON occupancy.Version)
//	o <space> 0x00 <ts BE flipped> <seq BE> settled occupancy row (value: rowValue)
//	c                                     checkpoint (value: JSON occupancy.Checkpoint)
//	x <time BE flipped> <seq BE>          dead letter (value: deadLetterValue)
//	u <gen BE> <eventKey>                 unpark marker of a settlement written in steps (see Commit)
//	m <name>                              meta: "schema", "unpark-gen"
//	n N k K P R U                         interval and cumulative reports, their indexes and marks (reports.go)
//	s <chunk>                             DPUs' statistics totals, in chunks by id hash (dpustats.go)
//
// eventKey is occupancy.Event.Key() (AppendKey), parsed by occupancy.ParseKey:
//
//	<ts BE with sign bit flipped, 8 bytes> <dpu> 0x00 ('i' <id> | 'd' <0x01 for +1, 0xFF for -1>)
const (
	pfxEvent      = 'e'
	pfxParked     = 'p'
	pfxLate       = 'l'
	pfxReset      = 'r'
	pfxVersion    = 'v'
	pfxRow        = 'o'
	pfxCheckpoint = 'c'
	pfxDead       = 'x'
	pfxMeta       = 'm'
)

var (
	keyCheckpoint = []byte{pfxCheckpoint}
	keySchema     = []byte("m" + "schema")
)

const schemaVersion = "1"

// putTS appends the order-preserving 8-byte encoding of ts.
func putTS(b []byte, ts int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(ts)^(1<<63))
}

func getTS(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func prefixed(p byte, e occupancy.Event) []byte {
	return e.AppendKey(append(make([]byte, 0, 1+8+len(e.DPU)+2+len(e.ID)), p))
}

// Event value: one flags byte (bit0: direction -1, bit1: late) and the receive time
// as a zigzag varint delta from TS (usually a few bytes: clock skew is small).
const (
	flagNeg  = 1 << 0
	flagLate = 1 << 1
)

func eventValue(dst []byte, e occupancy.Event) []byte {
	var f byte
	if e.Direction < 0 {
		f |= flagNeg
	}
	if e.Late {
		f |= flagLate
	}
	dst = append(dst, f)
	return binary.AppendVarint(dst, e.Received-e.TS)
}

// decodeEvent builds the full event from a key (without prefix) and its value.
func decodeEvent(k, v []byte) (occupancy.Event, error) {
	e, err := occupancy.ParseKey(k)
	if err != nil {
		return e, err
	}
	if len(v) < 2 {
		return e, fmt.Errorf("malformed event value: %d bytes", len(v))
	}
	if v[0]&flagNeg != 0 {
		e.Direction = -1
	} else {
		e.Direction = 1
	}
	e.Late = v[0]&flagLate != 0
	d, n := binary.Varint(v[1:])
	if n <= 0 {
		return e, errors.New("malformed event value: receive time")
	}
	e.Received = e.TS + d
	return e, nil
}

// rowKey: 'o' <space> 0x00 <ts> <seq>.
func rowKey(space string, ts int64, seq uint32) []byte {
	k := make([]byte, 0, 1+len(space)+1+8+4)
	k = append(k, pfxRow)
	k = append(k, space...)
	k = append(k, 0)
	k = putTS(k, ts)
	return binary.BigEndian.AppendUint32(k, seq)
}

func rowPrefix(space string) []byte {
	k := make([]byte, 0, 2+len(space))
	k = append(k, pfxRow)
	k = append(k, space...)
	return append(k, 0)
}

// parseRowKey returns the space, ts and seq of a full row key.
func parseRowKey(k []byte) (space string, ts int64, seq uint32, err error) {
	if len(k) < 1+1+1+12 || k[0] != pfxRow || k[len(k)-13] != 0 {
		return "", 0, 0, fmt.Errorf("malformed row key of %d bytes", len(k))
	}
	space = string(k[1 : len(k)-13])
	ts = getTS(k[len(k)-12:])
	seq = binary.BigEndian.Uint32(k[len(k)-4:])
	return space, ts, seq, nil
}

// Row value: kind byte, then zigzag varints occupancy, entrances, exits.
func rowValue(r occupancy.Row) []byte {
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64)
	v = append(v, byte(r.Kind))
	v = binary.AppendVarint(v, r.Occupancy)
	v = binary.AppendVarint(v, int64(r.Entrances))
	return binary.AppendVarint(v, int64(r.Exits))
}

func decodeRow(k, v []byte) (occupancy.Row, error) {
	var r occupancy.Row
	sp, ts, seq, err := parseRowKey(k)
	if err != nil {
		return r, err
	}
	r.Space, r.TS, r.Seq = sp, ts, seq
	if len(v) < 4 {
		return r, fmt.Errorf("malformed row value of %d bytes", len(v))
	}
	r.Kind = occupancy.EntryKind(v[0])
	v = v[1:]
	var vals [3]int64
	for i := range vals {
		x, n := binary.Varint(v)
		if n <= 0 {
			return r, errors.New("malformed row value")
		}
		vals[i] = x
		v = v[n:]
	}
	if vals[1] > math.MaxInt32 || vals[1] < math.MinInt32 || vals[2] > math.MaxInt32 || vals[2] < math.MinInt32 {
		return r, errors.New("malformed row value: counter out of range")
	}
	r.Occupancy, r.Entrances, r.Exits = vals[0], int32(vals[1]), int32(vals[2])
	return r, nil
}

// resetKey: 'r' <ts> <space>.
func resetKey(r occupancy.Reset) []byte {
	k := make([]byte, 0, 1+8+len(r.Space))
	k = append(k, pfxReset)
	k = putTS(k, r.TS)
	return append(k, r.Space...)
}

func versionKey(at int64) []byte { return putTS([]byte{pfxVersion}, at) }

func deadKey(t int64, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(putTS([]byte{pfxDead}, t), seq)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xFF: no upper bound
}
