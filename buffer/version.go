package buffer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Topology versions are stored as gzip-compressed JSON cut into chunks, because
// a campus topology (100,000 DPUs is ~20 MB of JSON) does not fit in one Badger
// value (values must be smaller than a value-log file) nor in one transaction.
//
// Keys:
//
//	'v' <at>                     header: versionMagic, generation, chunk count
//	'v' <at> <gen u32> <idx u32> chunk idx of generation gen
//
// The chunks of a new generation are written first, each in its own synced
// transaction, and the header last: the header is the commit point, so a crash
// part-way leaves the previous version (or none) in force and only orphan chunks,
// which the next PutVersion at that instant removes. A value starting with '{' is
// the plain JSON of earlier stores and is still read.

const versionMagic = 0x01

// versionChunk is the size of one stored chunk; a variable so tests can force
// many chunks with a small topology.
var versionChunk = 1 << 20

// versionGzipLevel compresses stored versions. The 100,000-DPU campus's version is
// ~20 MB of JSON: gzip.BestSpeed stores it in about half the time of the default
// level (BenchmarkPutVersion100k), and the stored chunks are read the same way.
var versionGzipLevel = gzip.BestSpeed

// PutVersion stores a topology version (synced); a version at the same At
// replaces the earlier one.
func (s *Store) PutVersion(v occupancy.Version) error {
	if err := s.putVersion(v); err != nil {
		return fmt.Errorf("put version at %d: %w", v.At, err)
	}
	return nil
}

func (s *Store) putVersion(v occupancy.Version) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, versionGzipLevel)
	if err != nil {
		return err
	}
	if err := encodeVersion(zw, v); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	data := buf.Bytes()

	head := versionKey(v.At)
	gen := uint32(0)
	if old, ok, err := s.versionHeader(head); err != nil {
		return err
	} else if ok {
		gen = old.gen + 1
	}
	var chunks uint32
	for off := 0; off < len(data) || chunks == 0; off += versionChunk {
		end := min(off+versionChunk, len(data))
		k := versionChunkKey(head, gen, chunks)
		if err := s.update(func(txn *badger.Txn) error { return txn.Set(k, data[off:end]) }); err != nil {
			return err
		}
		chunks++
	}
	hv := []byte{versionMagic}
	hv = binary.AppendUvarint(hv, uint64(gen))
	hv = binary.AppendUvarint(hv, uint64(chunks))
	if err := s.update(func(txn *badger.Txn) error { return txn.Set(head, hv) }); err != nil {
		return err
	}
	// Drop chunks of other generations at this instant (earlier versions, or
	// orphans of an interrupted write); they are unreachable now.
	var stale [][]byte
	err = s.scanOpen(head, nil, nil, func(k, _ []byte) (bool, error) {
		if len(k) == len(head)+8 && binary.BigEndian.Uint32(k[len(head):]) != gen {
			stale = append(stale, append([]byte(nil), k...))
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if len(stale) == 0 {
		return nil
	}
	return s.write(func() error {
		return s.chunked(len(stale), func(w *splitTxn, i int) error { return w.delete(stale[i]) })
	})
}

type versionHead struct {
	gen    uint32
	chunks uint32
}

func parseVersionHeader(v []byte) (versionHead, error) {
	if len(v) == 0 || v[0] != versionMagic {
		return versionHead{}, errors.New("not a chunked version header")
	}
	gen, n := binary.Uvarint(v[1:])
	if n <= 0 || gen > 1<<32-1 {
		return versionHead{}, errors.New("malformed version header")
	}
	chunks, m := binary.Uvarint(v[1+n:])
	if m <= 0 || chunks == 0 || chunks > 1<<32-1 {
		return versionHead{}, errors.New("malformed version header")
	}
	return versionHead{gen: uint32(gen), chunks: uint32(chunks)}, nil
}

func (s *Store) versionHeader(head []byte) (versionHead, bool, error) {
	var h versionHead
	var ok bool
	err := s.view(func(txn *badger.Txn) error {
		_, err := get(txn, head, func(v []byte) error {
			if len(v) > 0 && v[0] == '{' { // plain JSON of an earlier store
				return nil
			}
			var err error
			h, err = parseVersionHeader(v)
			ok = err == nil
			return err
		})
		return err
	})
	return h, ok, err
}

func versionChunkKey(head []byte, gen, idx uint32) []byte {
	k := append(append([]byte(nil), head...), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(k[len(head):], gen)
	binary.BigEndian.PutUint32(k[len(head)+4:], idx)
	return k
}

// Versions returns every stored topology version, ordered by At.
func (s *Store) Versions() ([]occupancy.Version, error) {
	var out []occupancy.Version
	err := s.alive(func() error {
		return s.db.View(func(txn *badger.Txn) error {
			o := badger.DefaultIteratorOptions
			o.PrefetchValues = false // chunks are skipped here and read through their header
			o.Prefix = []byte{pfxVersion}
			it := txn.NewIterator(o)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				k := item.KeyCopy(nil)
				if len(k) != 9 { // a chunk: read through its header
					continue
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				ver, err := readVersion(txn, k, v)
				if err != nil {
					return fmt.Errorf("decode topology version at %d: %w", getTS(k[1:]), err)
				}
				out = append(out, ver)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read versions: %w", err)
	}
	return out, nil
}

func readVersion(txn *badger.Txn, head, v []byte) (occupancy.Version, error) {
	var ver occupancy.Version
	if len(v) > 0 && v[0] == '{' {
		return ver, json.Unmarshal(v, &ver)
	}
	h, err := parseVersionHeader(v)
	if err != nil {
		return ver, err
	}
	var data bytes.Buffer
	for i := uint32(0); i < h.chunks; i++ {
		item, err := txn.Get(versionChunkKey(head, h.gen, i))
		if err != nil {
			return ver, fmt.Errorf("chunk %d of %d: %w", i, h.chunks, err)
		}
		if err := item.Value(func(c []byte) error { _, err := data.Write(c); return err }); err != nil {
			return ver, err
		}
	}
	zr, err := gzip.NewReader(&data)
	if err != nil {
		return ver, err
	}
	if err := json.NewDecoder(zr).Decode(&ver); err != nil {
		return ver, err
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return ver, err
	}
	return ver, nil
}

// encodeVersion writes v as JSON that decodes to v, one list element at a time. One
// json.Marshal (or Encoder.Encode) of the 100,000-DPU campus's version builds a 20 MB
// buffer, grown to 32 MB, that encoding/json keeps in its pool of encode buffers; as
// every later Marshal in the process (rejection payloads, Home Assistant configs,
// HTTP answers) can take it from the pool and put it back, it stayed live for the
// whole run (32 MB of live heap, 64 MB of RSS under GOGC=100).
func encodeVersion(w io.Writer, v occupancy.Version) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	t := v.Topology
	fmt.Fprintf(bw, `{"at":%d,"topology":{"spaces":`, v.At)
	if err := encodeList(bw, enc, t.Spaces); err != nil {
		return err
	}
	_, _ = bw.WriteString(`,"doorways":`)
	if err := encodeList(bw, enc, t.Doorways); err != nil {
		return err
	}
	_, _ = bw.WriteString(`,"dpus":`)
	if err := encodeList(bw, enc, t.DPUs); err != nil {
		return err
	}
	_, _ = bw.WriteString("}}\n")
	return bw.Flush()
}

// encodeList writes list as a JSON array (null when nil, as json.Marshal does).
func encodeList[T any](bw *bufio.Writer, enc *json.Encoder, list []T) error {
	if list == nil {
		_, err := bw.WriteString("null")
		return err
	}
	_ = bw.WriteByte('[')
	for i := range list {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if err := enc.Encode(&list[i]); err != nil { // small: one element's buffer
			return err
		}
	}
	return bw.WriteByte(']')
}
