package buffer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/occupancyd/occupancyd/occupancy"
)

// bigTopology builds a topology of n DPUs with ids that do not compress away.
func bigTopology(n int, seed uint64) occupancy.TopologyConfig {
	r := rand.New(rand.NewPCG(seed, 1))
	var c occupancy.TopologyConfig
	for i := 0; i < n/5+1; i++ {
		c.Spaces = append(c.Spaces, occupancy.SpaceConfig{ID: fmt.Sprintf("s%d-%x", i, r.Uint64()), Name: fmt.Sprintf("Room %x", r.Uint64()), Capacity: int64(r.IntN(500))})
	}
	for i := 0; i < n; i++ {
		c.DPUs = append(c.DPUs, occupancy.DPUConfig{ID: fmt.Sprintf("d%x", r.Uint64()), Doorway: fmt.Sprintf("w%x", r.Uint64()), PlusSpace: c.Spaces[r.IntN(len(c.Spaces))].ID})
	}
	return c
}

func TestVersionsChunked(t *testing.T) {
	t.Run("many chunks, replaced at the same instant, survive reopen", func(t *testing.T) {
		old := versionChunk
		versionChunk = 512
		t.Cleanup(func() { versionChunk = old })

		s := openT(t, Options{})
		want := map[int64]occupancy.Version{}
		for i, at := range []int64{300, -5, 100, 300, 100} { // 300 and 100 replaced
			v := occupancy.Version{At: at, Topology: bigTopology(50+i*20, uint64(i))}
			if err := s.PutVersion(v); err != nil {
				t.Fatal(err)
			}
			want[at] = v
		}
		for round := 0; round < 2; round++ {
			got, err := s.Versions()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got[0].At != -5 || got[1].At != 100 || got[2].At != 300 {
				t.Fatalf("got versions at %v, want [-5 100 300]", ats(got))
			}
			for _, v := range got {
				if !reflect.DeepEqual(v, want[v.At]) {
					t.Errorf("round %d: version at %d differs from the one stored last", round, v.At)
				}
			}
			s = reopen(t, s)
		}
		// Replaced generations leave no chunks behind.
		var chunks int
		_ = s.scanOpen([]byte{pfxVersion}, nil, nil, func(k, _ []byte) (bool, error) {
			if len(k) > 9 {
				chunks++
			}
			return true, nil
		})
		var wantChunks int
		for _, at := range []int64{-5, 100, 300} {
			h, ok, err := s.versionHeader(versionKey(at))
			if err != nil || !ok {
				t.Fatalf("header at %d: ok=%v err=%v", at, ok, err)
			}
			wantChunks += int(h.chunks)
		}
		if chunks != wantChunks {
			t.Errorf("%d chunk keys stored, want %d (the current generations only)", chunks, wantChunks)
		}
	})

	t.Run("an interrupted write leaves the previous version in force", func(t *testing.T) {
		old := versionChunk
		versionChunk = 256
		t.Cleanup(func() { versionChunk = old })
		s := openT(t, Options{})
		v1 := occupancy.Version{At: 7, Topology: bigTopology(30, 1)}
		if err := s.PutVersion(v1); err != nil {
			t.Fatal(err)
		}
		// A crash after writing some chunks of the next generation, before its header.
		if err := s.update(func(txn *badger.Txn) error {
			return txn.Set(versionChunkKey(versionKey(7), 1, 0), []byte("partial"))
		}); err != nil {
			t.Fatal(err)
		}
		s = reopen(t, s)
		got, err := s.Versions()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !reflect.DeepEqual(got[0], v1) {
			t.Fatalf("got %d versions (at %v), want the first one intact", len(got), ats(got))
		}
		v2 := occupancy.Version{At: 7, Topology: bigTopology(40, 2)}
		if err := s.PutVersion(v2); err != nil {
			t.Fatal(err)
		}
		if got, err = s.Versions(); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], v2) {
			t.Fatalf("after rewrite: err=%v, versions at %v, want the second one", err, ats(got))
		}
	})

	t.Run("plain JSON of earlier stores is still read", func(t *testing.T) {
		s := openT(t, Options{})
		v := occupancy.Version{At: 42, Topology: bigTopology(3, 3)}
		b, _ := json.Marshal(v)
		if err := s.update(func(txn *badger.Txn) error { return txn.Set(versionKey(42), b) }); err != nil {
			t.Fatal(err)
		}
		got, err := s.Versions()
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], v) {
			t.Fatalf("err=%v, got %v, want the plain version", err, ats(got))
		}
	})

	t.Run("a campus topology larger than a value-log file", func(t *testing.T) {
		if testing.Short() {
			t.Skip("large")
		}
		s := openT(t, Options{})
		v := occupancy.Version{At: 1, Topology: bigTopology(140_000, 9)}
		if b, _ := json.Marshal(v); len(b) < 16<<20 {
			t.Fatalf("fixture is %d bytes of JSON, want more than a 16 MiB value-log file", len(b))
		}
		if err := s.PutVersion(v); err != nil {
			t.Fatal(err)
		}
		s = reopen(t, s)
		got, err := s.Versions()
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], v) {
			t.Fatalf("err=%v: the large version did not come back intact", err)
		}
	})
}

func ats(vs []occupancy.Version) []int64 {
	var out []int64
	for _, v := range vs {
		out = append(out, v.At)
	}
	return out
}
