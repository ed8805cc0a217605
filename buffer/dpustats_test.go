package buffer

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func randomRecord(r *rand.Rand, dpu string) DPURecord {
	rec := DPURecord{DPU: dpu, Accepted: r.Int64N(1 << 40), Duplicates: r.Int64N(1000),
		Rejected: r.Int64N(1000), Parked: r.Int64N(10), Gaps: r.Int64N(100), Restarts: r.Int64N(5),
		SkewMS: r.Int64N(20000) - 10000}
	if r.IntN(4) > 0 {
		rec.HasTS, rec.LastTS = true, r.Int64N(1<<45)-1<<44
	}
	if r.IntN(4) > 0 {
		rec.HasReceived, rec.LastReceived = true, r.Int64N(1<<45)
	}
	if r.IntN(2) > 0 {
		rec.Seq = &SeqRun{MinSeq: r.Int64N(1000), MaxSeq: 1000 + r.Int64N(1<<50), MinTS: -r.Int64N(1 << 40), MaxTS: r.Int64N(1 << 40)}
	}
	return rec
}

func TestDPURecordsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// 1 MiB memtables: a transaction takes ~150 KB, so 4,000 records are written in
	// several.
	s := openT(t, Options{MemTableSize: 1 << 20})

	t.Run("empty store", func(t *testing.T) {
		recs, clean, err := s.DPURecords()
		if err != nil || len(recs) != 0 || clean {
			t.Fatalf("got %d records, clean %v, err %v; want none, false, nil", len(recs), clean, err)
		}
	})

	want := map[string]DPURecord{}
	var batch []DPURecord
	for i := range 4000 {
		rec := randomRecord(r, fmt.Sprintf("dpu-%05d-%s", i, "long-enough-to-fill-transactions"))
		batch = append(batch, rec)
		want[rec.DPU] = rec
	}
	if err := s.PutDPURecords(batch, false); err != nil {
		t.Fatal(err)
	}
	// A second write replaces some records and marks a clean stop.
	batch = batch[:0]
	for i := 0; i < 4000; i += 7 {
		rec := randomRecord(r, fmt.Sprintf("dpu-%05d-%s", i, "long-enough-to-fill-transactions"))
		batch = append(batch, rec)
		want[rec.DPU] = rec
	}
	if err := s.PutDPURecords(batch, true); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)

	t.Run("after reopen", func(t *testing.T) {
		recs, clean, err := s.DPURecords()
		if err != nil {
			t.Fatal(err)
		}
		if !clean {
			t.Errorf("got clean false, want true (the last write was a clean stop's)")
		}
		if len(recs) != len(want) {
			t.Fatalf("got %d records, want %d", len(recs), len(want))
		}
		for i, got := range recs {
			if i > 0 && recs[i-1].DPU >= got.DPU {
				t.Fatalf("records not ordered by DPU: %q before %q", recs[i-1].DPU, got.DPU)
			}
			if w := want[got.DPU]; !reflect.DeepEqual(got, w) {
				t.Fatalf("record %q: got %+v, want %+v", got.DPU, got, w)
			}
		}
	})

	t.Run("marker cleared", func(t *testing.T) {
		if err := s.PutDPURecords(nil, false); err != nil {
			t.Fatal(err)
		}
		recs, clean, err := s.DPURecords()
		if err != nil || clean || len(recs) != len(want) {
			t.Fatalf("got %d records, clean %v, err %v; want %d, false, nil", len(recs), clean, err, len(want))
		}
	})

	t.Run("the last record of a DPU wins", func(t *testing.T) {
		a, b := randomRecord(r, "twice"), randomRecord(r, "twice")
		if err := s.PutDPURecords([]DPURecord{a, randomRecord(r, "other"), b}, false); err != nil {
			t.Fatal(err)
		}
		recs, _, err := s.DPURecords()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(recs, func(r DPURecord) bool { return r.DPU == "twice" })
		if i < 0 || !reflect.DeepEqual(recs[i], b) {
			t.Fatalf("got %+v, want %+v", recs[i], b)
		}
	})

	t.Run("bad id", func(t *testing.T) {
		if err := s.PutDPURecords([]DPURecord{{DPU: ""}}, true); err == nil {
			t.Fatal("an empty DPU id was stored")
		}
		_, clean, _ := s.DPURecords()
		if clean {
			t.Fatal("a refused write set the clean marker")
		}
	})
}

func TestDecodeDPURecordRejectsTruncated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		rec := randomRecord(r, "d")
		rec.HasTS, rec.LastTS = true, 123
		rec.Seq = &SeqRun{1, 2, 3, 4}
		v := appendDPURecord(nil, rec)
		for n := range len(v) {
			if _, err := decodeDPURecord("d", v[:n]); err == nil {
				t.Fatalf("a value cut to %d of %d bytes decoded without error", n, len(v))
			}
		}
		got, err := decodeDPURecord("d", append(v, 0x7f, 0x01)) // fields of a later version
		if err != nil || !reflect.DeepEqual(got, rec) {
			t.Fatalf("with trailing bytes: got %+v, %v; want %+v", got, err, rec)
		}
	}
}

// BenchmarkPutDPURecords: the periodic save of 100,000 changed DPUs.
func BenchmarkPutDPURecords(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	s := openT(b, Options{MinFreeBytes: -1})
	recs := make([]DPURecord, 100_000)
	for i := range recs {
		recs[i] = randomRecord(r, fmt.Sprintf("site-%03d-dpu-%06d", i%100, i))
	}
	b.ResetTimer()
	for range b.N {
		if err := s.PutDPURecords(recs, false); err != nil {
			b.Fatal(err)
		}
	}
}
