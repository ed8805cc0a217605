package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pushTopology: one space per DPU under hq, so that each kind's count is checked on
// its own; pi pushes with its own ingest token, the others with http.token.
func pushTopology(tokenFile string) string {
	return fmt.Sprintf(`topology:
  spaces:
    - {id: hq, name: HQ}
    - {id: rev, name: Events, parent: hq}
    - {id: riv, name: Intervals, parent: hq}
    - {id: rcu, name: Totals, parent: hq}
  doorways: [{id: door, name: Door}]
  dpus:
    - {id: pe, doorway: door, plus_space: rev, minus_space: ""}
    - {id: pi, doorway: door, plus_space: riv, minus_space: "", kind: interval, ingest_token_file: %q}
    - {id: pc, doorway: door, plus_space: rcu, minus_space: "", kind: cumulative}
`, tokenFile)
}

// newPushDaemon is a daemon of pushTopology (settle_after 1m), pi's token in a file.
func newPushDaemon(t *testing.T) *daemonChildren {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "pi-token")
	if err := os.WriteFile(tokenFile, []byte("pi-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return newDaemonChildren(t, e2eConfig{settleAfter: "1m", topology: pushTopology(tokenFile)})
}

// push is one POST of a test: its DPU, token and body, and what it stands for.
type pushReq struct {
	dpu, token, body string
	count            int64 // crossings into the DPU's space it brings (cumulative: its total)
}

func (p pushReq) send(client *http.Client, httpAddr string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/v1/dpus/"+p.dpu+"/events", strings.NewReader(p.body))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestE2EPushKill9: HTTP push answers 200 only once what it carries is durable, the
// promise of a PUBACK (DESIGN 5): pushes of events, interval and cumulative reports
// load the daemon (a child process) from several clients; it is killed with SIGKILL
// in the middle; after a restart every push answered 200 is counted, at most the
// unanswered ones besides; once every push is sent again (answered ones too), each
// is counted exactly once.
func TestE2EPushKill9(t *testing.T) {
	d := newPushDaemon(t)
	c1 := d.start(t)

	base := time.Now().Add(-50 * time.Second).UnixMilli()
	const batch, pushes = 5, 600 // per push, per DPU: 3,000 inputs within 6 s of ts
	// Each DPU's pushes, in order: batches of events, of consecutive 2 ms intervals,
	// of rising totals.
	gen := func(dpu string, k int) pushReq {
		var items []string
		var count int64
		for j := 0; j < batch; j++ {
			n := int64(k*batch + j)
			switch dpu {
			case "pe":
				items = append(items, fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, n, base+n))
				count++
			case "pi":
				in := 1 + n%3
				items = append(items, fmt.Sprintf(`{"start":%d,"end":%d,"in":%d,"out":0}`, base+n*2, base+n*2+2, in))
				count += in
			case "pc":
				count = 100 + 2*n // the total after this report
				items = append(items, fmt.Sprintf(`{"ts":%d,"in_total":%d,"out_total":7}`, base+n*2, count))
			}
		}
		tok := "e2e-token"
		if dpu == "pi" {
			tok = "pi-secret"
		}
		return pushReq{dpu: dpu, token: tok, body: "[" + strings.Join(items, ",") + "]", count: count}
	}
	dpus := []string{"pe", "pi", "pc"}
	var mu sync.Mutex
	answered := map[string][]pushReq{}   // 200
	unanswered := map[string][]pushReq{} // no answer, or not 200
	var wg sync.WaitGroup
	for _, dpu := range dpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for k := 0; k < pushes; k++ {
				p := gen(dpu, k)
				code, body, err := p.send(client, d.httpAddr)
				mu.Lock()
				if err == nil && code == 200 {
					answered[dpu] = append(answered[dpu], p)
				} else {
					unanswered[dpu] = append(unanswered[dpu], p)
					if err == nil {
						t.Logf("push %s %d: %d %s", dpu, k, code, body)
					}
				}
				mu.Unlock()
				if err != nil {
					// The daemon is gone: what follows was never sent.
					for k++; k < pushes; k++ {
						mu.Lock()
						unanswered[dpu] = append(unanswered[dpu], gen(dpu, k))
						mu.Unlock()
					}
					return
				}
			}
		}()
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(answered["pe"]) + len(answered["pi"]) + len(answered["pc"])
		mu.Unlock()
		if n >= 150 || time.Now().After(deadline) {
			break
		}
	}
	c1.kill9(t)
	wg.Wait()
	n := 0
	for _, dpu := range dpus {
		n += len(answered[dpu])
		if len(unanswered[dpu]) == 0 {
			t.Fatalf("%s: every push answered before the kill: it did not land in the middle", dpu)
		}
	}
	t.Logf("killed with %d pushes answered 200", n)

	d.start(t)
	space := map[string]string{"pe": "rev", "pi": "riv", "pc": "rcu"}
	sum := func(ps []pushReq) int64 {
		var s int64
		for _, p := range ps {
			s += p.count
		}
		return s
	}
	got := httpSpaces(t, d.httpAddr)
	for _, dpu := range dpus {
		acked, in := answered[dpu], unanswered[dpu]
		var lo, hi int64
		switch dpu {
		case "pc": // totals: the last one answered minus the baseline (100)
			if len(acked) > 0 {
				lo = acked[len(acked)-1].count - 100
			}
			hi = lo
			if len(in) > 0 {
				hi = in[0].count - 100 // the next push, had it been stored before the kill
			}
		default:
			lo, hi = sum(acked), sum(acked)+sum(in[:min(len(in), 1)])
		}
		if g := got[space[dpu]]; g < lo || g > hi {
			t.Errorf("after the restart: %s = %d, want %d..%d (every push answered 200, at most the one in flight)", space[dpu], g, lo, hi)
		}
	}

	// Everything again: the unanswered pushes and the answered ones; each counts once.
	client := &http.Client{Timeout: 30 * time.Second}
	for _, dpu := range dpus {
		all := append(append([]pushReq(nil), answered[dpu]...), unanswered[dpu]...)
		for i, p := range all {
			if i >= len(answered[dpu]) || i%10 == 0 {
				if code, body, err := p.send(client, d.httpAddr); err != nil || code != 200 {
					t.Fatalf("push %s again: %d %s %v", dpu, code, body, err)
				}
			}
		}
	}
	got = httpSpaces(t, d.httpAddr)
	for _, dpu := range dpus {
		want := sum(append(append([]pushReq(nil), answered[dpu]...), unanswered[dpu]...))
		if dpu == "pc" {
			want = gen("pc", pushes-1).count - 100
		}
		if g := got[space[dpu]]; g != want {
			t.Errorf("after sending everything again: %s = %d, want %d", space[dpu], g, want)
		}
	}
}
