package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"
)

var update = flag.Bool("update", false, "rewrite testdata/status-page.png, the reference screenshot the README shows")

// afternoonZone is a fixed-offset zone (Etc/GMT-N) where it is now about 15:00, so
// that a test day has a morning and a lunch behind it whenever the test runs.
func afternoonZone(now time.Time) string {
	n := (15 - now.UTC().Hour() + 48) % 24
	if n > 14 {
		n -= 24
	}
	switch {
	case n > 0:
		return fmt.Sprintf("Etc/GMT-%d", n)
	case n < 0:
		return fmt.Sprintf("Etc/GMT+%d", -n)
	}
	return "UTC"
}

// demoDay is a CSV (timestamp,direction,dpu_id) of a working day in the demo
// building (configs/demo.yaml) from midnight in loc up to now: people arrive through
// the main entrance, most go up to the open office, some have a meeting, many lunch in
// the cafe, visitors come through the garden door, everyone leaves in the evening.
// Every walk goes through doors that exist, in order, so no count goes below zero.
func demoDay(loc *time.Location, now time.Time, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, seed))
	y, m, d := now.In(loc).Date()
	midnight := time.Date(y, m, d, 0, 0, 0, 0, loc)
	at := func(h float64) time.Time { return midnight.Add(time.Duration(h * float64(time.Hour))) }
	norm := func(mu, sd float64) time.Time { return at(mu + r.NormFloat64()*sd) }
	mins := func(a, b int) time.Duration { return time.Duration(a+r.IntN(b-a+1)) * time.Minute }
	type row struct {
		t   time.Time
		dpu string
		dir int
	}
	var rows []row
	walk := func(t time.Time, steps ...any) { // dpu, dir, dpu, dir, ... one minute apart
		for i := 0; i+1 < len(steps); i += 2 {
			if t.Before(now.Add(-time.Minute)) {
				rows = append(rows, row{t, steps[i].(string), steps[i+1].(int)})
			}
			t = t.Add(time.Minute)
		}
	}
	for range 56 {
		arrive, leave := norm(8.6, 0.7), norm(17.2, 0.8)
		switch k := r.IntN(10); {
		case k == 0: // a visitor through the garden, to the cafe
			t := norm(12.5, 1.5)
			walk(t, "dpu-garden", 1)
			walk(t.Add(mins(20, 70)), "dpu-garden", -1)
		case k < 4: // works on the ground floor, in the cafe
			walk(arrive, "dpu-main", 1, "dpu-cafe", 1)
			walk(leave, "dpu-cafe", -1, "dpu-main", -1)
		default: // the first floor
			walk(arrive, "dpu-main", 1, "dpu-stairs", 1, "dpu-office", 1)
			if r.IntN(2) == 0 {
				room := []string{"dpu-meeting-a", "dpu-meeting-b"}[r.IntN(2)]
				t := at(float64(9 + r.IntN(7)))
				if t.After(arrive.Add(10*time.Minute)) && t.Add(2*time.Hour).Before(leave) {
					walk(t, "dpu-office", -1, room, 1)
					walk(t.Add(mins(30, 80)), room, -1, "dpu-office", 1)
				}
			}
			if r.IntN(4) > 0 {
				t := norm(12.4, 0.45)
				if t.After(arrive.Add(10*time.Minute)) && t.Add(2*time.Hour).Before(leave) {
					walk(t, "dpu-office", -1, "dpu-stairs", -1, "dpu-cafe", 1)
					walk(t.Add(mins(25, 60)), "dpu-cafe", -1, "dpu-stairs", 1, "dpu-office", 1)
				}
			}
			walk(leave, "dpu-office", -1, "dpu-stairs", -1, "dpu-main", -1)
		}
	}
	slices.SortStableFunc(rows, func(a, b row) int { return a.t.Compare(b.t) })
	var sb strings.Builder
	sb.WriteString("timestamp,direction,dpu_id\n")
	for i, x := range rows {
		// A millisecond apart: no two crossings of one DPU share an instant.
		fmt.Fprintf(&sb, "%s,%d,%s\n", x.t.Add(time.Duration(i)*time.Millisecond).UTC().Format("2006-01-02T15:04:05.000Z"), x.dir, x.dpu)
	}
	return sb.String()
}

// demoDaemon is the daemon on configs/demo.yaml with its storage, broker and HTTP on
// fresh addresses; edit may change the YAML further.
type demoDaemon struct {
	*daemon
	logs   *syncBuf
	zone   string
	config string
}

// startDemo writes the demo config (the time zone of hq set to one where it is
// afternoon), imports a day of traffic when day is set, and starts Main.
func startDemo(t *testing.T, day bool, edit func(string) string) *demoDaemon {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	zone := afternoonZone(time.Now())
	y := strings.NewReplacer(
		"dir: ./data", "dir: "+filepath.Join(dir, "data"),
		"listen: 127.0.0.1:8080", "listen: 127.0.0.1:0",
		"listen: 127.0.0.1:1883", "listen: 127.0.0.1:0",
		"Europe/Berlin", zone,
	).Replace(string(src))
	if edit != nil {
		y = edit(y)
	}
	path := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if day {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		csv := filepath.Join(dir, "day.csv")
		if err := os.WriteFile(csv, []byte(demoDay(loc, time.Now(), 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := importCommand([]string{"--config", path, "--progress", "0", csv}, &out, &out); err != nil {
			t.Fatalf("import a day: %v\n%s", err, out.String())
		}
	}
	logs := &syncBuf{}
	dumpOnFailure(t, "occupancyd", logs)
	m := NewMain()
	m.ConfigPath = path
	m.Logger = zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Main.Close: %v", err)
		}
	})
	d := &daemon{main: m, httpAddr: m.HTTPAddr(), brokerURL: "tcp://" + m.BrokerAddr()}
	return &demoDaemon{daemon: d, logs: logs, zone: zone, config: y}
}

// pageCounts reads the numbers the page's tree shows, by space.
func pageCounts(t *testing.T, b *browser) map[string]int64 {
	t.Helper()
	raw, err := evalJS[map[string]string](b, 5*time.Second, `Object.fromEntries([...document.querySelectorAll('#tree li[data-space]')]
		.map(li => [li.dataset.space, li.querySelector(':scope > .row .count b').textContent]))`)
	if err != nil {
		t.Fatalf("read the tree: %v", err)
	}
	out := map[string]int64{}
	for id, s := range raw {
		n, err := strconv.ParseInt(regexp.MustCompile(`[^0-9-]`).ReplaceAllString(s, ""), 10, 64)
		if err != nil {
			t.Fatalf("space %s shows %q, not a number", id, s)
		}
		out[id] = n
	}
	return out
}

// TestE2EStatusPage drives the status page in a real browser against the real daemon
// and its embedded broker: the page loads with no console errors, the demo tree shows
// the daemon's counts, an event published over MQTT changes the lobby's number within
// 2 s without a reload, opening a space draws the day's curve, and on a phone the page
// fits the screen. It writes screenshots to the temp dir (the paths are logged); with
// -update it rewrites testdata/status-page.png, which the README shows.
func TestE2EStatusPage(t *testing.T) {
	d := startDemo(t, true, nil)
	waitReady(t, d.httpAddr, 10*time.Second)
	base := "http://" + d.httpAddr + "/"

	t.Run("desktop", func(t *testing.T) {
		b := newBrowserEnv(t, 1280, 900, d.zone, false)
		if err := b.run(30*time.Second, chromedp.Navigate(base), chromedp.WaitVisible(`#tree li[data-space="meeting-b"]`)); err != nil {
			t.Fatalf("load the page: %v (console: %v)", err, b.consoleProblems())
		}

		// The tree shows every space of the demo with the daemon's count.
		want := httpSpaces(t, d.httpAddr)
		if len(want) != 8 {
			t.Fatalf("GET /v1/spaces has %d spaces, want the demo's 8", len(want))
		}
		eventually(t, 15*time.Second, "the tree shows the daemon's counts", func() string {
			return diffCounts(pageCounts(t, b), want)
		})

		// A person walks in: the lobby's number changes on the page, without a reload.
		before := pageCounts(t, b)["lobby"]
		if _, err := evalJS[bool](b, 5*time.Second, `window.__sameDocument = true`); err != nil {
			t.Fatal(err)
		}
		c := mqttClient(t, d.brokerURL, "page-test")
		start := time.Now()
		publishAll(t, c, []e2eMessage{{topic: "dpu/dpu-main/events",
			payload: fmt.Appendf(nil, `{"id": 90001, "ts": %d, "direction": 1}`, time.Now().UnixMilli())}})
		expr := fmt.Sprintf(`document.querySelector('#tree li[data-space="lobby"] > .row .count b').textContent.replace(/[^0-9]/g, '') === '%d'`, before+1)
		// Without a reload is what is checked; how soon is logged, not bounded (a
		// -race daemon and Chromium on a loaded machine take seconds at times).
		if err := waitJS(b, 15*time.Second, expr); err != nil {
			t.Fatalf("the lobby did not show %d within 15 s of the publish (%v): %v", before+1, pageCounts(t, b)["lobby"], err)
		}
		t.Logf("publish to the number on the page: %v", time.Since(start).Round(time.Millisecond))
		if same, err := evalJS[bool](b, 5*time.Second, `window.__sameDocument === true`); err != nil || !same {
			t.Errorf("the page was reloaded to show the change (%v)", err)
		}

		// Opening a space draws its day: the curve has points, today's figures are there.
		if err := b.run(10*time.Second, chromedp.Click(`#tree li[data-space="open-office"] > .row`), chromedp.WaitVisible(`#chart polyline`)); err != nil {
			t.Fatalf("open a space: %v", err)
		}
		points, err := evalJS[int](b, 5*time.Second, `document.querySelector('#chart polyline').getAttribute('points').trim().split(/\s+/).length`)
		if err != nil || points < 2 {
			t.Errorf("the curve has %d points (%v), want a day's worth", points, err)
		}
		name, _ := evalJS[string](b, 5*time.Second, `document.getElementById('d-name').textContent`)
		entrances, _ := evalJS[string](b, 5*time.Second, `document.getElementById('d-in').textContent`)
		if name != "Open office" || entrances == "" || entrances == "0" || entrances == "–" {
			t.Errorf("detail shows %q with %q entrances, want Open office with today's imported entrances", name, entrances)
		}
		dpus, _ := evalJS[string](b, 5*time.Second, `document.getElementById('d-dpus').textContent`)
		if !strings.Contains(dpus, "dpu-office") {
			t.Errorf("the detail lists sensors %q, want dpu-office (the open office's doorway)", dpus)
		}
		// A message that is no event: the latest rejections show it with its reason,
		// and the sensor list the event of before, without a reload.
		publishAll(t, c, []e2eMessage{{topic: "dpu/dpu-main/events", payload: []byte(`{"ts": "now", "direction": 1}`)}})
		if err := waitJS(b, 15*time.Second, `document.getElementById('rejections').textContent.includes('bad_ts') &&
			!document.querySelector('#dpus tr:nth-child(3) .c-last').textContent.includes('never')`); err != nil {
			rej, _ := evalJS[string](b, 5*time.Second, `document.getElementById('rejections').textContent + ' | ' + document.getElementById('dpus').textContent`)
			t.Errorf("the rejection and dpu-main's event do not show within 15 s: %v (%q)", err, rej)
		}
		// Let the stream settle before the picture.
		_ = b.run(5*time.Second, chromedp.Sleep(700*time.Millisecond))
		shot := screenshot(t, b, "status-page.png", true)
		compareReference(t, shot, filepath.Join("testdata", "status-page.png"))
		if p := b.consoleProblems(); len(p) > 0 {
			t.Errorf("console errors on the page: %q", p)
		}
	})

	t.Run("phone", func(t *testing.T) {
		b := newBrowserEnv(t, 390, 844, d.zone, false)
		if err := b.run(30*time.Second, chromedp.Navigate(base+"#space=lobby"), chromedp.WaitVisible(`#chart polyline`)); err != nil {
			t.Fatalf("load the page with a space: %v (console: %v)", err, b.consoleProblems())
		}
		over, err := evalJS[int](b, 5*time.Second, `document.documentElement.scrollWidth - window.innerWidth`)
		if err != nil || over > 0 {
			t.Errorf("on a 390 px phone the page is %d px wider than the screen (%v)", over, err)
		}
		screenshot(t, b, "status-page-phone.png", false)
		if p := b.consoleProblems(); len(p) > 0 {
			t.Errorf("console errors on the page: %q", p)
		}
	})
}

// screenshot writes the page (full, or the viewport) to the temp dir and logs where.
func screenshot(t *testing.T, b *browser, name string, full bool) []byte {
	t.Helper()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	img, err := chromedp.Run(ctx, shot)
	cancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(os.TempDir(), "occupancyd-"+name)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return img
}

// compareReference compares a screenshot with the reference loosely: fonts and
// anti-aliasing differ between machines, so only the width (the layout's) and the
// height within a third (the same sections, no more, no fewer) count. -update
// rewrites the reference.
func compareReference(t *testing.T, shot []byte, ref string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(ref, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", ref)
		return
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatalf("reference screenshot: %v (go test -run TestE2EStatusPage -update writes it)", err)
	}
	g, err1 := png.DecodeConfig(bytes.NewReader(shot))
	w, err2 := png.DecodeConfig(bytes.NewReader(want))
	if err1 != nil || err2 != nil {
		t.Fatalf("decode screenshots: %v %v", err1, err2)
	}
	if g.Width != w.Width || g.Height*3 < w.Height*2 || g.Height*2 > w.Height*3 {
		t.Errorf("screenshot %dx%d, reference %s %dx%d: same width and a height within a third expected", g.Width, g.Height, ref, w.Width, w.Height)
	}
}

// TestE2EStatusPageToken: where reads need the token, the page asks for it once, the
// server keeps it in an HttpOnly, SameSite=Strict cookie, and the token shows in no
// URL and no log line.
func TestE2EStatusPageToken(t *testing.T) {
	const token = "page-test-token-7f3a9c"
	d := startDemo(t, false, func(y string) string {
		return strings.NewReplacer("listen: 127.0.0.1:0\n  token: \"\"", "listen: 0.0.0.0:0\n  token: "+token).Replace(y)
	})
	_, port, _ := strings.Cut(d.httpAddr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(d.httpAddr, ":")
	}
	addr := "127.0.0.1:" + port
	waitReady(t, addr, 10*time.Second)
	base := "http://" + addr + "/"

	// Without the token, reads answer 401; the page itself and the probes do not.
	for path, want := range map[string]int{"/v1/spaces": 401, "/v1/stream": 401, "/v1/status": 401, "/v1/tree": 401, "/": 200, "/healthz": 200} {
		if code := httpStatus(t, "http://"+addr+path); code != want {
			t.Errorf("GET %s without the token = %d, want %d", path, code, want)
		}
	}

	b := newBrowserEnv(t, 1280, 900, d.zone, false)
	if err := b.run(30*time.Second, chromedp.Navigate(base), chromedp.WaitVisible(`#token`)); err != nil {
		t.Fatalf("the page does not ask for the token: %v", err)
	}
	if err := b.run(10*time.Second, chromedp.SendKeys(`#token`, "a wrong one"), chromedp.Click(`#login-form button`), chromedp.WaitVisible(`#login-error`)); err != nil {
		t.Fatalf("a wrong token: %v", err)
	}
	if err := b.run(10*time.Second, chromedp.SetValue(`#token`, token), chromedp.Click(`#login-form button`),
		chromedp.WaitVisible(`#tree li[data-space="lobby"]`)); err != nil {
		t.Fatalf("the right token does not open the page: %v", err)
	}
	// Once: a reload keeps the session.
	if err := b.run(20*time.Second, chromedp.Reload(), chromedp.WaitVisible(`#tree li[data-space="lobby"]`)); err != nil {
		t.Fatalf("after a reload the page asks again: %v", err)
	}
	loginShown, _ := evalJS[bool](b, 5*time.Second, `!document.getElementById('login').hidden`)
	jsCookies, _ := evalJS[string](b, 5*time.Second, `document.cookie`)
	href, _ := evalJS[string](b, 5*time.Second, `location.href`)
	if loginShown || strings.Contains(jsCookies, "occupancyd_session") || strings.Contains(href, token) {
		t.Errorf("after login: form shown %v, cookie visible to scripts %q, address %q", loginShown, jsCookies, href)
	}
	// The page is live with the cookie: the stream answered (the page opens it
	// 150 ms after the tree is drawn, so wait for it).
	if err := waitJS(b, 10*time.Second, `document.getElementById('live-text').textContent === 'live'`); err != nil {
		live, _ := evalJS[string](b, 5*time.Second, `document.getElementById('live-text').textContent`)
		t.Errorf("stream indicator %q after 10 s, want live", live)
	}
	if strings.Contains(d.logs.String(), token) {
		t.Error("the token appears in the daemon's log")
	}
	// The only console errors are the answers 401 before the token was given.
	for _, p := range b.consoleProblems() {
		if !strings.Contains(p, "status of 401") {
			t.Errorf("console error: %s", p)
		}
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestE2EStatusPageCampus: at a campus the page stays light: the tree shows its top
// level only and a level on request, a search finds a room deep in it and opens the
// tree down to it, the room's count changes live (the stream follows the spaces on
// screen), and the sensor list waits to be asked for.
func TestE2EStatusPageCampus(t *testing.T) {
	const sites, floors, rooms = 40, 10, 10 // 4,440 spaces, 440 DPUs
	var tc struct {
		Spaces   []map[string]any `json:"spaces"`
		Doorways []map[string]any `json:"doorways"`
		DPUs     []map[string]any `json:"dpus"`
	}
	for s := 1; s <= sites; s++ {
		site := fmt.Sprintf("s%02d", s)
		tc.Spaces = append(tc.Spaces, map[string]any{"id": site, "name": fmt.Sprintf("Site %d", s)})
		for f := 1; f <= floors; f++ {
			floor := fmt.Sprintf("%s-f%02d", site, f)
			tc.Spaces = append(tc.Spaces, map[string]any{"id": floor, "name": fmt.Sprintf("Site %d floor %d", s, f), "parent": site})
			for r := 1; r <= rooms; r++ {
				room := fmt.Sprintf("%s-r%02d", floor, r)
				tc.Spaces = append(tc.Spaces, map[string]any{"id": room, "name": fmt.Sprintf("Site %d room %d.%02d", s, f, r), "parent": floor, "capacity": 20})
				if r == 1 {
					door := room + "-in"
					tc.Doorways = append(tc.Doorways, map[string]any{"id": door, "name": "Into " + room})
					tc.DPUs = append(tc.DPUs, map[string]any{"id": "d-" + door, "doorway": door, "plus_space": room, "minus_space": ""})
				}
			}
		}
		door := site + "-gate"
		tc.Doorways = append(tc.Doorways, map[string]any{"id": door, "name": "Gate of " + site})
		tc.DPUs = append(tc.DPUs, map[string]any{"id": "d-" + door, "doorway": door, "plus_space": site + "-f07-r07", "minus_space": ""})
	}
	dir := t.TempDir()
	b, _ := json.Marshal(tc)
	if err := os.WriteFile(filepath.Join(dir, "campus.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDemo(t, false, func(y string) string {
		return y[:strings.Index(y, "\ntopology:")] + "\ntopology: {file: " + filepath.Join(dir, "campus.json") + "}\n"
	})
	waitReady(t, d.httpAddr, 20*time.Second)

	br := newBrowserEnv(t, 1280, 900, d.zone, false)
	if err := br.run(30*time.Second, chromedp.Navigate("http://"+d.httpAddr+"/"), chromedp.WaitVisible(`#tree li[data-space="s40"]`)); err != nil {
		t.Fatalf("load the page: %v (console: %v)", err, br.consoleProblems())
	}
	rows := func() int {
		n, err := evalJS[int](br, 5*time.Second, `document.querySelectorAll('#tree li[data-space]').length`)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != sites {
		t.Errorf("the tree shows %d rows at first, want the %d sites alone", n, sites)
	}
	if err := br.run(10*time.Second, chromedp.Click(`#tree li[data-space="s02"] > .row .twisty`), chromedp.WaitVisible(`#tree li[data-space="s02-f10"]`)); err != nil {
		t.Fatalf("expand a site: %v", err)
	}
	if n := rows(); n != sites+floors {
		t.Errorf("after expanding a site the tree shows %d rows, want %d", n, sites+floors)
	}

	// Search a room deep in site 13 and open it.
	if err := br.run(10*time.Second, chromedp.SendKeys(`#search`, "room 7.07")); err != nil {
		t.Fatal(err)
	}
	if err := waitJS(br, 10*time.Second, `document.querySelectorAll('#results .result').length === 40`); err != nil {
		t.Fatalf("search: %v", err)
	}
	if err := br.run(20*time.Second, chromedp.Click(`#results .result:nth-child(13)`),
		chromedp.WaitVisible(`#tree li[data-space="s13-f07-r07"] > .row.selected`),
		chromedp.WaitVisible(`#chart polyline`)); err != nil {
		t.Fatalf("search and open a room: %v (console: %v)", err, br.consoleProblems())
	}
	name, _ := evalJS[string](br, 5*time.Second, `document.getElementById('d-name').textContent + ' | ' + document.getElementById('crumbs').textContent`)
	if name != "Site 13 room 7.07 | Site 13›Site 13 floor 7" {
		t.Errorf("detail %q, want Site 13 room 7.07 under Site 13 › Site 13 floor 7", name)
	}
	if n := rows(); n != sites+floors+floors+rooms {
		t.Errorf("after the search the tree shows %d rows, want the sites, two sites' floors and a floor's rooms (%d)", n, sites+floors+floors+rooms)
	}
	results, _ := evalJS[bool](br, 5*time.Second, `document.getElementById('results').hidden`)
	if !results {
		t.Error("the search results stay open after a result was picked")
	}

	// Someone walks through the gate into that room: its row and the detail follow.
	c := mqttClient(t, d.brokerURL, "campus-test")
	publishAll(t, c, []e2eMessage{{topic: "dpu/d-s13-gate/events", payload: fmt.Appendf(nil, `{"ts": %d, "direction": 1}`, time.Now().UnixMilli())}})
	if err := waitJS(br, 15*time.Second, `document.querySelector('#tree li[data-space="s13-f07-r07"] > .row .count b').textContent === '1' &&
		document.getElementById('d-occ').textContent === '1'`); err != nil {
		t.Errorf("the room's count did not follow the crossing within 15 s: %v", err)
	}

	// 440 sensors: listed when asked for; the room's own in its detail.
	sensors, _ := evalJS[string](br, 5*time.Second, `document.getElementById('dpus').textContent + ' | ' + document.getElementById('d-dpus').textContent`)
	if !strings.Contains(sensors, "Too many to list here") || !strings.Contains(sensors, "d-s13-gate") {
		t.Errorf("sensors %q, want the campus list held back and the room's gate sensor in its detail", sensors)
	}
	if p := br.consoleProblems(); len(p) > 0 {
		t.Errorf("console errors on the page: %q", p)
	}
}

// TestE2EQuietDPU: a sensor that stops reporting is seen on every channel an
// operator watches, and so is its return. The demo's dpu-garden has quiet_after 3s
// and never reports; the others keep the default 2h. The model: a DPU is quiet once
// its quiet_after has passed since its last report, or, never having reported,
// since the topology first knew it (this start, on a fresh store). Checked through
// the real daemon: GET /v1/dpus (quiet, quiet_since), GET /v1/status, /metrics, the
// retained occupancyd/demo/dpus topic and Home Assistant's quiet-DPU sensor, and the
// status page in a browser (the sensor marked quiet with since when, the header's
// count); then dpu-garden reports again and every channel says it is healthy.
func TestE2EQuietDPU(t *testing.T) {
	const quietAfter = 3 * time.Second
	before := time.Now()
	d := startDemo(t, false, func(y string) string {
		return strings.Replace(y, `{id: dpu-garden, doorway: garden, plus_space: cafe, minus_space: ""}`,
			`{id: dpu-garden, doorway: garden, plus_space: cafe, minus_space: "", quiet_after: 3s}`, 1)
	})
	after := time.Now()
	waitReady(t, d.httpAddr, 20*time.Second)
	ret := watchRetained(t, d.brokerURL)
	c := mqttClient(t, d.brokerURL, "quiet-test")
	// Every other DPU reports once: last_received is set, they stay healthy.
	others := []string{"dpu-main", "dpu-cafe", "dpu-stairs", "dpu-meeting-a", "dpu-meeting-b", "dpu-office"}
	var msgs []e2eMessage
	for i, dpu := range others {
		msgs = append(msgs, e2eMessage{topic: "dpu/" + dpu + "/events",
			payload: fmt.Appendf(nil, `{"id": %d, "ts": %d, "direction": 1}`, i+1, time.Now().UnixMilli())})
	}
	publishAll(t, c, msgs)

	type dpuRow struct {
		DPU          string `json:"dpu"`
		Quiet        bool   `json:"quiet"`
		QuietSince   string `json:"quiet_since"`
		LastReceived string `json:"last_received"`
	}
	// channels compares every channel with the model: quiet (the garden's
	// quiet_since, or "" when it is healthy).
	channels := func(quiet bool) func() string {
		return func() string {
			var rows []dpuRow
			if code := httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &rows); code != 200 {
				return fmt.Sprintf("GET /v1/dpus = %d", code)
			}
			if len(rows) != 7 {
				return fmt.Sprintf("GET /v1/dpus: %d rows, want the demo's 7", len(rows))
			}
			for _, r := range rows {
				wantQuiet := quiet && r.DPU == "dpu-garden"
				if r.Quiet != wantQuiet || (r.QuietSince != "") != wantQuiet {
					return fmt.Sprintf("GET /v1/dpus %s: quiet %v since %q, want quiet %v", r.DPU, r.Quiet, r.QuietSince, wantQuiet)
				}
				if r.DPU != "dpu-garden" && r.LastReceived == "" {
					return fmt.Sprintf("GET /v1/dpus %s: no last_received after its event", r.DPU)
				}
			}
			var st struct {
				QuietDPUs *int `json:"quiet_dpus"`
			}
			n := 0
			if quiet {
				n = 1
			}
			if httpGetJSON(t, "http://"+d.httpAddr+"/v1/status", &st); st.QuietDPUs == nil || *st.QuietDPUs != n {
				return fmt.Sprintf("GET /v1/status quiet_dpus %v, want %d", st.QuietDPUs, n)
			}
			for series, want := range map[string]string{"occupancyd_dpus_quiet": fmt.Sprint(n), "occupancyd_dpus": "7",
				`occupancyd_dpu_last_event_timestamp_seconds{dpu="dpu-garden"}`: map[bool]string{true: "0", false: ""}[quiet],
				`occupancyd_dpu_last_event_timestamp_seconds{dpu="dpu-main"}`:   ""} { // health.last_event_metric: quiet
				if got := metricLine(t, d.httpAddr, series); got != want {
					return fmt.Sprintf("/metrics %s = %q, want %q", series, got, want)
				}
			}
			ids := `[]`
			if quiet {
				ids = `["dpu-garden"]`
			}
			want := fmt.Sprintf(`{"dpus":7,"quiet":%d,"quiet_ids":%s}`, n, ids)
			if got, _ := ret.get("occupancyd/demo/dpus"); string(got) != want {
				return fmt.Sprintf("retained occupancyd/demo/dpus %s, want %s", got, want)
			}
			return ""
		}
	}
	eventually(t, 30*time.Second, "dpu-garden quiet on every channel", channels(true))
	var rows []dpuRow
	httpGetJSON(t, "http://"+d.httpAddr+"/v1/dpus", &rows)
	var since string
	for _, r := range rows {
		if r.DPU == "dpu-garden" {
			since = r.QuietSince
		}
	}
	at, err := time.Parse(time.RFC3339Nano, since)
	if lo, hi := before.Add(quietAfter).Truncate(time.Millisecond), after.Add(quietAfter); err != nil || at.Before(lo) || at.After(hi) {
		t.Errorf("dpu-garden quiet_since %q, want between %v and %v (its quiet_after after this start)", since, lo, hi)
	}
	if cfg, ok := ret.get("homeassistant/sensor/demo/quiet_dpus/config"); !ok || !strings.Contains(string(cfg), `"state_topic":"occupancyd/demo/dpus"`) {
		t.Errorf("Home Assistant's quiet-DPU sensor config: %s", cfg)
	}
	if info, _ := ret.get("occupancyd/demo/info"); !strings.Contains(string(info), `"dpus":7`) {
		t.Errorf("retained occupancyd/demo/info %s, want the demo's 7 DPUs", info)
	}

	b := newBrowserEnv(t, 1280, 900, d.zone, false)
	if err := b.run(30*time.Second, chromedp.Navigate("http://"+d.httpAddr+"/"),
		chromedp.WaitVisible(`#dpus tr[data-dpu="dpu-garden"] .quiet-since`)); err != nil {
		t.Fatalf("the page does not mark dpu-garden quiet: %v (console: %v)", err, b.consoleProblems())
	}
	page, err := evalJS[map[string]string](b, 5*time.Second, `(() => {
		const row = document.querySelector('#dpus tr[data-dpu="dpu-garden"]');
		return {since: row.querySelector('.quiet-since').dataset.since, text: row.querySelector('.quiet-since').textContent,
			tag: row.querySelector('.tag.quiet').textContent, quietRows: String(document.querySelectorAll('#dpus tr.quiet').length),
			header: document.getElementById('f-size-sub').textContent};
	})()`)
	if err != nil {
		t.Fatal(err)
	}
	if page["since"] != since || !strings.HasPrefix(page["text"], "quiet since ") || page["tag"] != "quiet" ||
		page["quietRows"] != "1" || !strings.Contains(page["header"], "1 quiet") {
		t.Errorf("the page shows %v, want dpu-garden alone marked quiet since %s and the header's 1 quiet", page, since)
	}

	// dpu-garden reports again (and keeps reporting, quicker than its quiet_after):
	// healthy on every channel, and on the page without a reload.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			tok := c.Publish("dpu/dpu-garden/events", 1, false, fmt.Appendf(nil, `{"id": %d, "ts": %d, "direction": %d}`, i, time.Now().UnixMilli(), 1-2*((i+1)%2)))
			tok.WaitTimeout(5 * time.Second)
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	eventually(t, 30*time.Second, "dpu-garden healthy again on every channel", channels(false))
	if err := waitJS(b, 20*time.Second, `!document.querySelector('#dpus tr.quiet, #dpus .quiet-since') &&
		!document.getElementById('f-size-sub').textContent.includes('quiet')`); err != nil {
		dpus, _ := evalJS[string](b, 5*time.Second, `document.getElementById('dpus').textContent`)
		t.Errorf("the page still shows a quiet sensor 20 s after dpu-garden reported again: %v (%q)", err, dpus)
	}
	if p := b.consoleProblems(); len(p) > 0 {
		t.Errorf("console errors on the page: %q", p)
	}
}
