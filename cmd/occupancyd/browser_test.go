package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// ---- harness: a headless Chromium driven by chromedp ----

// browserPaths are the names Debian, Ubuntu and others give Chromium or Chrome.
var browserPaths = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// findBrowser returns the browser to drive. Without one the test is skipped, unless
// CI=true (.ci/run installs Debian's chromium).
func findBrowser(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OCCUPANCYD_BROWSER"); p != "" {
		return p
	}
	for _, name := range browserPaths {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no browser found (%s; required with CI=true: apt-get install chromium)", strings.Join(browserPaths, ", "))
	}
	t.Skipf("no browser found (%s): the browser test needs one (apt-get install chromium)", strings.Join(browserPaths, ", "))
	return ""
}

// browser is one headless browser tab and what its page said on the console.
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string // console errors, uncaught exceptions, failed loads
}

// newBrowser starts a fresh headless browser (its own profile in a temp dir) with a
// tab of width x height CSS pixels. Flags: no sandbox (containers), no GPU, and none
// of the background traffic (QUIC, component updates, sync, first-run) that stalls it
// on a closed network.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	return newBrowserEnv(t, width, height, "", false)
}

// newBrowserEnv is newBrowser with the page's time zone (IANA name; "" keeps the
// browser's) and, with dark, prefers-color-scheme: dark.
func newBrowserEnv(t *testing.T, width, height int, zone string, dark bool) *browser {
	t.Helper()
	path := findBrowser(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(width, height),
	}
	// Chromium now and then exits at start with nothing said ("chrome failed to
	// start:"), seen on a quiet machine right after another test's browser closed; a
	// fresh profile and a second try start it.
	var ctx context.Context
	start := time.Now()
	for attempt := 1; ; attempt++ {
		o := append(opts[:len(opts):len(opts)], chromedp.UserDataDir(t.TempDir()))
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), o...)
		tctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
		// The first action starts the browser; it runs on the tab's context itself (a
		// timeout on it would end the browser), so it is bounded by a watchdog instead.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(tctx, chromedp.EmulateViewport(int64(width), int64(height))) }()
		var err error
		select {
		case err = <-started:
		case <-time.After(60 * time.Second):
			err = errors.New("no answer within 60s")
		}
		if err == nil {
			t.Cleanup(func() {
				cancelTab()
				cancelAlloc()
			})
			ctx = tctx
			break
		}
		cancelTab()
		cancelAlloc()
		if attempt == 3 {
			t.Fatalf("start browser %s (%d tries): %v", path, attempt, err)
		}
		t.Logf("start browser %s: %v; trying again", path, err)
		time.Sleep(time.Second)
	}
	b := &browser{ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.problem("%s (%s:%d)", m, m.URL, m.Line+1)
			}
		}
	}()
	if zone != "" {
		if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: zone}); err != nil {
			t.Fatalf("browser time zone %s: %v", zone, err)
		}
	}
	if dark {
		p := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
			t.Fatalf("browser dark mode: %v", err)
		}
	}
	t.Logf("browser %s started in %v", path, time.Since(start).Round(time.Millisecond))
	return b
}

func (b *browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// consoleProblems returns what went wrong on the page so far.
func (b *browser) consoleProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// run runs actions with a deadline.
func (b *browser) run(within time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// eval evaluates a JavaScript expression in the page.
func evalJS[T any](b *browser, within time.Duration, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// waitJS waits until a JavaScript expression is true in the page.
func waitJS(b *browser, within time.Duration, expr string) error {
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(0)))
	return err
}
