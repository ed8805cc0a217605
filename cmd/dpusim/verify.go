package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// spaceJSON is the part of a gateway's occupancy object verify compares.
type spaceJSON struct {
	Space     string `json:"space"`
	Occupancy int64  `json:"occupancy"`
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// fetchSpaces returns the union of GET <url>/v1/spaces over the gateways; a space
// reported by two gateways is an error (shards own disjoint sites).
func fetchSpaces(ctx context.Context, urls []string) (map[string]int64, error) {
	got := make(map[string]int64)
	owner := make(map[string]string)
	for _, u := range urls {
		u = strings.TrimRight(u, "/") + "/v1/spaces"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		var spaces []spaceJSON
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("verify: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
		}
		err = json.NewDecoder(resp.Body).Decode(&spaces)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("verify: GET %s: decode: %w", u, err)
		}
		for _, s := range spaces {
			if o, dup := owner[s.Space]; dup {
				return nil, fmt.Errorf("verify: space %q is reported by both %s and %s", s.Space, o, u)
			}
			owner[s.Space] = u
			got[s.Space] = s.Occupancy
		}
	}
	return got, nil
}

// startingCounts are the gateways' counts before a run (retrying for a while: the
// gateway may still be starting). --verify compares the gateways with them plus the
// run's truth, so that a run against a building with people in it (the README tour's
// end) verifies as well as one against an empty store.
func startingCounts(ctx context.Context, urls []string, logw io.Writer) (map[string]int64, error) {
	deadline := time.Now().Add(startingCountsWait)
	for {
		got, err := fetchSpaces(ctx, urls)
		if err == nil {
			var people int64
			spaces := 0
			for _, n := range got {
				if n != 0 {
					people += n
					spaces++
				}
			}
			if spaces > 0 {
				fmt.Fprintf(logw, "dpusim: verify: %d of %d spaces are not empty before the run (%d people in all); verify expects those counts plus this run's\n",
					spaces, len(got), people)
			}
			return got, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (the counts before the run are needed for --verify)", err)
		}
		fmt.Fprintf(logw, "dpusim: verify: %v (retrying)\n", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("verify: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// startingCountsWait bounds startingCounts' retries.
var startingCountsWait = 30 * time.Second

// plusBaseline is the truth with each space's count before the run added: what the
// gateways should say at the end. (It assumes that nothing clamped at 0 between the
// two and no daily reset fell inside the run.)
func plusBaseline(truth []SpaceCount, baseline map[string]int64) []SpaceCount {
	out := make([]SpaceCount, len(truth))
	for i, t := range truth {
		out[i] = SpaceCount{Space: t.Space, Occupancy: t.Occupancy + baseline[t.Space]}
	}
	return out
}

// diff lists every space whose gateway value differs from the truth, plus spaces the
// gateways report that the truth does not know.
func diff(truth []SpaceCount, got map[string]int64) []string {
	var out []string
	known := make(map[string]bool, len(truth))
	for _, t := range truth {
		known[t.Space] = true
		g, ok := got[t.Space]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing from the gateway, want %d", t.Space, t.Occupancy))
		case g != t.Occupancy:
			out = append(out, fmt.Sprintf("%s: got %d, want %d", t.Space, g, t.Occupancy))
		}
	}
	var extra []string
	for s, g := range got {
		if !known[s] {
			extra = append(extra, fmt.Sprintf("%s: got %d, not in the simulated topology", s, g))
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

func fingerprint(got map[string]int64) uint64 {
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := fnv.New64a()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d;", k, got[k])
	}
	return h.Sum64()
}

// verifyStable is how long the gateways' values must stay unchanged, while still
// differing from the truth, before verify gives up.
var verifyStable = 20 * time.Second

// Verify waits until the gateways' spaces equal the truth (nil result), or until
// their values stop changing or the timeout passes (the differing spaces).
func Verify(ctx context.Context, urls []string, truth []SpaceCount, timeout time.Duration, logw io.Writer) ([]string, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var lastFP uint64
	lastChange := time.Now()
	lastLog := time.Time{}
	for attempt := 0; ; attempt++ {
		got, err := fetchSpaces(ctx, urls)
		if err != nil {
			if time.Now().After(deadline) {
				return nil, err
			}
			fmt.Fprintf(logw, "dpusim: verify: %v (retrying)\n", err)
		} else {
			d := diff(truth, got)
			if len(d) == 0 {
				fmt.Fprintf(logw, "dpusim: verify: all %d spaces match the truth (after %s)\n", len(truth), time.Since(start).Round(100*time.Millisecond))
				return nil, nil
			}
			fp := fingerprint(got)
			if attempt == 0 || fp != lastFP {
				lastFP, lastChange = fp, time.Now()
			}
			if time.Since(lastLog) >= 5*time.Second {
				fmt.Fprintf(logw, "dpusim: verify: %d of %d spaces differ (e.g. %s), waiting\n", len(d), len(truth), d[0])
				lastLog = time.Now()
			}
			if time.Since(lastChange) >= verifyStable {
				fmt.Fprintf(logw, "dpusim: verify: no change for %s, giving up\n", verifyStable)
				return d, nil
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(logw, "dpusim: verify: still differing after %s, giving up\n", timeout)
				return d, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("verify: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
