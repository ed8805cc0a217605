package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Per-DPU statistics records (DESIGN 5, GET /v1/dpus: totals kept across restarts).
//
//	s <chunk BE uint16>  the records of the DPUs whose id hashes to the chunk (value:
//	                     dpuChunkValue: id and record of each, ordered by id)
//	m "dpu-stats"        1 byte: 1 when the records were last written by a clean stop
//
// The tracker owns the counters and writes the records of the DPUs that changed
// periodically and once more at a clean stop (PutDPURecords); a kill -9 loses the
// changes since the last write. The counter resets of cumulative DPUs are not here:
// they are counted atomically with the append that finds them ('R', reports.go).
//
// Records are kept in dpuChunks chunks, not one key per DPU: a key costs Badger
// about as much as a small one as a large one (a skiplist insert, its share of the
// flushes and compactions), and at 100,000 DPUs every DPU changes between two saves
// at the peak, so a save writes 1,024 keys, not 100,000. A save rewrites the chunks
// of the DPUs that changed (read, merge, write) in the same transaction.
//
// The marker says whether the records are complete: a clean stop writes every
// change and sets it; the tracker clears it at start, before anything changes, so
// after a crash it is clear. Sequence runs (where a DPU's integer ids had got to)
// are only trustworthy from a clean stop: after a crash, events acknowledged after
// the last write would make the next id look like a gap.
const (
	pfxDPUStats = 's'
	dpuChunks   = 1024 // a power of two
	dpuChunkV1  = 1
)

var keyDPUStatsMeta = []byte("m" + "dpu-stats")

// DPURecord is one DPU's durable counters.
type DPURecord struct {
	DPU                                                    string
	Accepted, Duplicates, Rejected, Parked, Gaps, Restarts int64
	// LastTS is the latest event ts, LastReceived when the gateway last received a
	// report of the DPU (Unix ms); HasTS, HasReceived say whether there was one.
	LastTS, LastReceived int64
	HasTS, HasReceived   bool
	SkewMS               int64 // the latest event's ts minus its receive time
	// Seq is where the DPU's integer sequence had got to (nil: no integer ids).
	Seq *SeqRun
}

// SeqRun is the current run of a DPU's integer sequence ids: its lowest and
// highest id and the ts range of its events.
type SeqRun struct {
	MinSeq, MaxSeq, MinTS, MaxTS int64
}

const (
	dpuRecordV1 = 1

	dpuHasTS       = 1 << 0
	dpuHasReceived = 1 << 1
	dpuHasSeq      = 1 << 2
)

// appendDPURecord encodes r's value: version, flags, then varints.
func appendDPURecord(b []byte, r DPURecord) []byte {
	var f byte
	if r.HasTS {
		f |= dpuHasTS
	}
	if r.HasReceived {
		f |= dpuHasReceived
	}
	if r.Seq != nil {
		f |= dpuHasSeq
	}
	b = append(b, dpuRecordV1, f)
	for _, v := range [...]int64{r.Accepted, r.Duplicates, r.Rejected, r.Parked, r.Gaps, r.Restarts, r.SkewMS} {
		b = binary.AppendVarint(b, v)
	}
	if r.HasTS {
		b = binary.AppendVarint(b, r.LastTS)
	}
	if r.HasReceived {
		b = binary.AppendVarint(b, r.LastReceived)
	}
	if s := r.Seq; s != nil {
		b = binary.AppendVarint(b, s.MinSeq)
		b = binary.AppendVarint(b, s.MaxSeq)
		b = binary.AppendVarint(b, s.MinTS)
		b = binary.AppendVarint(b, s.MaxTS)
	}
	return b
}

var errDPURecord = errors.New("malformed DPU statistics record")

// decodeDPURecord reads a value of appendDPURecord; bytes after the known fields
// are ignored (a later version may add fields).
func decodeDPURecord(dpu string, v []byte) (DPURecord, error) {
	r := DPURecord{DPU: dpu}
	if len(v) < 2 || v[0] != dpuRecordV1 {
		return r, errDPURecord
	}
	f := v[1]
	v = v[2:]
	next := func(dst *int64) bool {
		x, n := binary.Varint(v)
		if n <= 0 {
			return false
		}
		*dst, v = x, v[n:]
		return true
	}
	for _, p := range [...]*int64{&r.Accepted, &r.Duplicates, &r.Rejected, &r.Parked, &r.Gaps, &r.Restarts, &r.SkewMS} {
		if !next(p) {
			return r, errDPURecord
		}
	}
	if r.HasTS = f&dpuHasTS != 0; r.HasTS && !next(&r.LastTS) {
		return r, errDPURecord
	}
	if r.HasReceived = f&dpuHasReceived != 0; r.HasReceived && !next(&r.LastReceived) {
		return r, errDPURecord
	}
	if f&dpuHasSeq != 0 {
		s := &SeqRun{}
		if !next(&s.MinSeq) || !next(&s.MaxSeq) || !next(&s.MinTS) || !next(&s.MaxTS) {
			return r, errDPURecord
		}
		r.Seq = s
	}
	return r, nil
}

// dpuChunk is the chunk key of a DPU: FNV-1a of its id.
func dpuChunk(dpu string) []byte {
	h := uint32(2166136261)
	for i := 0; i < len(dpu); i++ {
		h = (h ^ uint32(dpu[i])) * 16777619
	}
	return binary.BigEndian.AppendUint16([]byte{pfxDPUStats}, uint16(h&(dpuChunks-1)))
}

// decodeChunk calls fn with each DPU id and record value of a chunk value, in
// id order (the id string is valid only during the call unless copied).
func decodeChunk(v []byte, fn func(dpu string, rec []byte) error) error {
	if len(v) < 1 || v[0] != dpuChunkV1 {
		return errDPURecord
	}
	v = v[1:]
	for len(v) > 0 {
		var parts [2][]byte
		for i := range parts {
			n, m := binary.Uvarint(v)
			if m <= 0 || n > uint64(len(v)-m) {
				return errDPURecord
			}
			parts[i], v = v[m:m+int(n)], v[m+int(n):]
		}
		if err := fn(string(parts[0]), parts[1]); err != nil {
			return err
		}
	}
	return nil
}

// mergeChunk appends to dst the chunk value of old (a chunk value, or nil) with
// recs (ordered by DPU id) put in: a merge of two ordered lists.
func mergeChunk(dst, old []byte, recs []DPURecord) ([]byte, error) {
	dst = append(dst, dpuChunkV1)
	add := func(id string, rec []byte) {
		dst = binary.AppendUvarint(dst, uint64(len(id)))
		dst = append(dst, id...)
		dst = binary.AppendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
	}
	var buf []byte
	put := func(r DPURecord) {
		buf = appendDPURecord(buf[:0], r)
		add(r.DPU, buf)
	}
	i := 0
	if old != nil {
		err := decodeChunk(old, func(id string, rec []byte) error {
			for i < len(recs) && recs[i].DPU < id {
				put(recs[i])
				i++
			}
			if i < len(recs) && recs[i].DPU == id {
				return nil // replaced
			}
			add(id, rec)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for ; i < len(recs); i++ {
		put(recs[i])
	}
	return dst, nil
}

// PutDPURecords stores recs (each replaces its DPU's record) and the marker clean,
// synced. Very many records are written in several transactions: each chunk is
// whole, and the marker is written last. It does not wait for the settlement
// commits (the records are keys of their own): a tick never waits behind a save.
func (s *Store) PutDPURecords(recs []DPURecord, clean bool) error {
	byChunk := map[string][]DPURecord{}
	for _, r := range recs {
		if err := validID(r.DPU); err != nil {
			return fmt.Errorf("put DPU statistics: %w", err)
		}
		k := string(dpuChunk(r.DPU))
		byChunk[k] = append(byChunk[k], r)
	}
	err := s.writeAside(func() error {
		w := &splitTxn{db: s.db, txn: s.db.NewTransaction(true)}
		defer func() { w.txn.Discard() }()
		for k, rs := range byChunk {
			rs = lastByDPU(rs)
			var v []byte
			_, err := get(w.txn, []byte(k), func(old []byte) error {
				var err error
				v, err = mergeChunk(make([]byte, 0, len(old)+64*len(rs)), old, rs)
				return err
			})
			if err == nil && v == nil {
				v, err = mergeChunk(make([]byte, 0, 64*len(rs)), nil, rs)
			}
			if err != nil {
				return fmt.Errorf("chunk %x: %w", k, err)
			}
			if err := w.set([]byte(k), v); err != nil {
				return err
			}
		}
		m := byte(0)
		if clean {
			m = 1
		}
		if err := w.set(keyDPUStatsMeta, []byte{m}); err != nil {
			return err
		}
		return w.txn.Commit()
	})
	if err != nil {
		return fmt.Errorf("put DPU statistics: %w", err)
	}
	return nil
}

// DPURecords returns every stored DPU record, ordered by DPU id, and whether the
// last write was a clean stop's.
func (s *Store) DPURecords() (recs []DPURecord, clean bool, err error) {
	err = s.scanOpen([]byte{pfxDPUStats}, nil, nil, func(k, v []byte) (bool, error) {
		err := decodeChunk(v, func(dpu string, rec []byte) error {
			r, err := decodeDPURecord(dpu, rec)
			recs = append(recs, r)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("key %x: %w", k, err)
		}
		return true, nil
	})
	if err == nil {
		err = s.view(func(txn *badger.Txn) error {
			_, err := get(txn, keyDPUStatsMeta, func(v []byte) error {
				clean = len(v) == 1 && v[0] == 1
				return nil
			})
			return err
		})
	}
	if err != nil {
		return nil, false, fmt.Errorf("read DPU statistics: %w", err)
	}
	slices.SortFunc(recs, func(a, b DPURecord) int { return strings.Compare(a.DPU, b.DPU) })
	return recs, clean, nil
}

// lastByDPU orders rs by DPU id, keeping the last record of each DPU.
func lastByDPU(rs []DPURecord) []DPURecord {
	slices.SortStableFunc(rs, func(a, b DPURecord) int { return strings.Compare(a.DPU, b.DPU) })
	out := rs[:0]
	for i, r := range rs {
		if i+1 < len(rs) && rs[i+1].DPU == r.DPU {
			continue
		}
		out = append(out, r)
	}
	return out
}

// validID refuses a DPU id that cannot be a key of ours.
func validID(dpu string) error {
	if dpu == "" || len(dpu) > maxIDLen {
		return fmt.Errorf("dpu id %q: want 1 to %d bytes", dpu, maxIDLen)
	}
	return nil
}
