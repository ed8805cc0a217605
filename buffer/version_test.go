package buffer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

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

// campusVersion is a topology of the 100,000-DPU campus's shape: 2,000 sites of one
// site space, 3 floors and 30 rooms (68,000 spaces), 50 doorways and 50 DPUs each.
func campusVersion(at int64) occupancy.Version {
	var c occupancy.TopologyConfig
	for s := 1; s <= 2000; s++ {
		site := fmt.Sprintf("s%04d", s)
		c.Spaces = append(c.Spaces, occupancy.SpaceConfig{ID: site, Name: "Site " + site, Capacity: 900})
		for f := 1; f <= 3; f++ {
			floor := fmt.Sprintf("%s-f%d", site, f)
			c.Spaces = append(c.Spaces, occupancy.SpaceConfig{ID: floor, Name: "Floor " + floor, Parent: site})
			for r := 1; r <= 10; r++ {
				c.Spaces = append(c.Spaces, occupancy.SpaceConfig{ID: fmt.Sprintf("%s-r%02d", floor, r),
					Name: fmt.Sprintf("Room %d.%d of %s", f, r, site), Parent: floor, Capacity: 12})
			}
		}
		for d := 1; d <= 50; d++ {
			w := fmt.Sprintf("%s-w%02d", site, d)
			c.Doorways = append(c.Doorways, occupancy.DoorwayConfig{ID: w, Name: "Doorway " + w})
			c.DPUs = append(c.DPUs, occupancy.DPUConfig{ID: fmt.Sprintf("%s-d%02d", site, d), Doorway: w,
				PlusSpace: fmt.Sprintf("%s-f%d-r%02d", site, d%3+1, d%10+1), MinusSpace: fmt.Sprintf("%s-f%d-r%02d", site, d%3+1, (d+3)%10+1)})
		}
	}
	return occupancy.Version{At: at, Topology: c}
}

// BenchmarkPutVersion100k stores the 100,000-DPU campus's topology version (what a
// first start and every reload of it do) and reads it back (what every start does),
// at the gzip level PutVersion uses and at the default level it used before.
func BenchmarkPutVersion100k(b *testing.B) {
	v := campusVersion(1_795_000_000_000)
	for _, lv := range []struct {
		name  string
		level int
	}{{"default", gzip.DefaultCompression}, {"bestspeed", gzip.BestSpeed}} {
		b.Run("gzip="+lv.name, func(b *testing.B) {
			old := versionGzipLevel
			versionGzipLevel = lv.level
			defer func() { versionGzipLevel = old }()
			s := openT(b, Options{MinFreeBytes: -1})
			var put, get time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := s.PutVersion(v); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				vs, err := s.Versions()
				if err != nil || len(vs) != 1 || len(vs[0].Topology.DPUs) != len(v.Topology.DPUs) {
					b.Fatalf("Versions: %d versions, %v", len(vs), err)
				}
				put, get = put+t1.Sub(t0), get+time.Since(t1)
			}
			b.ReportMetric(put.Seconds()/float64(b.N), "put-s/op")
			b.ReportMetric(get.Seconds()/float64(b.N), "get-s/op")
		})
	}
}

// TestEncodeVersion: what PutVersion stores decodes to exactly what json.Marshal's
// output decodes to, for nil, empty and full lists and strings JSON escapes; and
// encodeVersion knows every field of Version and TopologyConfig (a new field must be
// added there, or it would not be stored).
func TestEncodeVersion(t *testing.T) {
	if n := reflect.TypeOf(occupancy.Version{}).NumField(); n != 2 {
		t.Fatalf("occupancy.Version has %d fields; encodeVersion writes 2 (at, topology)", n)
	}
	if n := reflect.TypeOf(occupancy.TopologyConfig{}).NumField(); n != 3 {
		t.Fatalf("occupancy.TopologyConfig has %d fields; encodeVersion writes 3 (spaces, doorways, dpus)", n)
	}
	full := campusVersion(-42)
	full.Topology.Spaces = full.Topology.Spaces[:40]
	full.Topology.Spaces[3].Name = `Café "<Lobby>" & \ co` + "\u2028\x01"
	full.Topology.Spaces[4].TimeZone, full.Topology.Spaces[4].DailyReset = "Europe/Berlin", "04:00"
	// A DPU's kind and map are part of its topology version (DESIGN 2a).
	full.Topology.DPUs[1].Kind, full.Topology.DPUs[1].Map = "interval", &occupancy.Mapping{Items: `logics.#(name=="Main").records`,
		Start: "from", End: "to", In: `counts.#(name=="fw").value`, Out: "bw", TSFormat: "2006/01/02 15:04:05", TSZone: "tz"}
	full.Topology.DPUs[2].Kind = "cumulative"
	cases := map[string]occupancy.Version{
		"zero":  {},
		"empty": {At: 1, Topology: occupancy.TopologyConfig{Spaces: []occupancy.SpaceConfig{}, Doorways: []occupancy.DoorwayConfig{}, DPUs: []occupancy.DPUConfig{}}},
		"full":  full,
	}
	for name, v := range cases {
		var b bytes.Buffer
		if err := encodeVersion(&b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got, want occupancy.Version
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("%s: decode %q: %v", name, b.String(), err)
		}
		m, _ := json.Marshal(v)
		if err := json.Unmarshal(m, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got, v) {
			t.Errorf("%s: round trip differs:\n got  %+v\n want %+v", name, got, want)
		}
	}
	// And through the store, chunked.
	s := openT(t, Options{})
	defer func(n int) { versionChunk = n }(versionChunk)
	versionChunk = 512
	if err := s.PutVersion(full); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions()
	if err != nil || len(vs) != 1 || !reflect.DeepEqual(vs[0], full) {
		t.Fatalf("Versions = %d versions, %v; want the stored one back", len(vs), err)
	}
}
