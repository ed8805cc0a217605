package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestBackupOfStoppedStore proves the backup docs/operations.md gives: stop the
// daemon, copy the whole storage directory, and a daemon started on the copy answers
// what the original answered — current occupancy and settled history — and goes on
// counting from there.
func TestBackupOfStoppedStore(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, cfg, e2eConfig{dir: data, settleAfter: "1s"})
	d := startMain(t, cfg)

	// Five people in through d1 (outside -> f1), two of them on into r1a (d2, inside
	// f1: f1 stays 5), dated a minute back: late on a new store, so they are counted
	// by a correction, settled by the time the daemon stops.
	c := mqttClient(t, d.brokerURL, "backup-test")
	now := time.Now()
	var msgs []e2eMessage
	for i := range 7 {
		dpu := "d1"
		if i >= 5 {
			dpu = "d2"
		}
		ts := now.Add(time.Duration(i-60) * time.Second).UTC().Format(time.RFC3339Nano)
		msgs = append(msgs, e2eMessage{topic: "dpu/" + dpu + "/events",
			payload: fmt.Appendf(nil, `{"id": %d, "ts": %q, "direction": 1}`, i+1, ts)})
	}
	publishAll(t, c, msgs)
	want := map[string]float64{"hq": 5, "f1": 5, "r1a": 2}
	waitSpaces(t, d.httpAddr, want)
	// Every bucket up to end settled (the crossings are settled rows): waited for,
	// not slept on, as a tick can come late on a loaded machine.
	endT := time.Now().Truncate(time.Second)
	waitSettled(t, d.httpAddr, endT.UnixMilli())
	end := endT.UTC().Format(time.RFC3339)
	countsURL := "/v1/spaces/r1a/counts?start=" + now.Add(-2*time.Minute).UTC().Format(time.RFC3339) +
		"&end=" + end + "&interval=1s"
	before := getJSON(t, d.httpAddr, countsURL)
	if entrances(before) != 2 {
		t.Fatalf("r1a's buckets before the backup count %v entrances, want 2: %v", entrances(before), before)
	}
	spacesBefore := getJSON(t, d.httpAddr, "/v1/spaces")
	if err := d.main.Close(); err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(dir, "backup")
	if err := os.CopyFS(backup, os.DirFS(data)); err != nil {
		t.Fatalf("copy the stopped store: %v", err)
	}
	restored := filepath.Join(dir, "restored.yaml")
	writeConfig(t, restored, e2eConfig{dir: backup, settleAfter: "1s"})
	r := startMain(t, restored)
	waitSpaces(t, r.httpAddr, want)
	if got := getJSON(t, r.httpAddr, countsURL); !reflect.DeepEqual(got, before) {
		t.Errorf("settled history of f1 on the copy:\n got %v\nwant %v", got, before)
	}
	if got := getJSON(t, r.httpAddr, "/v1/spaces"); !sameOccupancy(got, spacesBefore) {
		t.Errorf("/v1/spaces on the copy:\n got %v\nwant %v", got, spacesBefore)
	}
	// It counts on: one more into r1a, and a duplicate of a stored event counts not.
	c2 := mqttClient(t, r.brokerURL, "backup-test-2")
	publishAll(t, c2, []e2eMessage{msgs[6],
		{topic: "dpu/d2/events", payload: fmt.Appendf(nil, `{"id": 8, "ts": %q, "direction": 1}`, time.Now().UTC().Format(time.RFC3339Nano))}})
	waitSpaces(t, r.httpAddr, map[string]float64{"hq": 5, "f1": 5, "r1a": 3})
}

func getJSON(t *testing.T, addr, path string) any {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}

// entrances sums the entrances of a /counts answer.
func entrances(v any) float64 {
	var n float64
	l, _ := v.([]any)
	for _, x := range l {
		b, _ := x.(map[string]any)
		e, _ := b["entrances"].(float64)
		n += e
	}
	return n
}

// sameOccupancy compares two /v1/spaces answers by space and occupancy.
func sameOccupancy(a, b any) bool {
	occ := func(v any) map[string]any {
		m := map[string]any{}
		l, _ := v.([]any)
		for _, x := range l {
			o, _ := x.(map[string]any)
			m[fmt.Sprint(o["space"])] = o["occupancy"]
		}
		return m
	}
	return len(occ(a)) > 0 && reflect.DeepEqual(occ(a), occ(b))
}

// waitSpaces waits (10 s) until GET /v1/spaces shows the wanted occupancies.
func waitSpaces(t *testing.T, addr string, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]float64{}
		l, _ := getJSON(t, addr, "/v1/spaces").([]any)
		for _, x := range l {
			o, _ := x.(map[string]any)
			if _, ok := want[fmt.Sprint(o["space"])]; ok {
				got[fmt.Sprint(o["space"])], _ = o["occupancy"].(float64)
			}
		}
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("occupancy: got %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
