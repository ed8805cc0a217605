package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlock is a fenced code block of README.md.
type readmeBlock struct {
	info string // the word after the opening fence: sh, json, text, console, ...
	body string
	line int
}

// tourBlocks returns the fenced blocks of the README section headed
// "## Five-minute tour".
func tourBlocks(readme string) ([]readmeBlock, error) {
	lines := strings.Split(readme, "\n")
	in, start := false, -1
	var blocks []readmeBlock
	var cur *readmeBlock
	for i, l := range lines {
		if cur == nil && strings.HasPrefix(l, "## ") {
			if in {
				break
			}
			in = strings.TrimSpace(l) == "## Five-minute tour"
			if in {
				start = i
			}
			continue
		}
		if !in {
			continue
		}
		if strings.HasPrefix(l, "```") {
			if cur == nil {
				cur = &readmeBlock{info: strings.TrimSpace(strings.TrimPrefix(l, "```")), line: i + 1}
			} else {
				blocks = append(blocks, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.body += l + "\n"
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no \"## Five-minute tour\" section")
	}
	if cur != nil {
		return nil, fmt.Errorf("unclosed code block at line %d", cur.line)
	}
	return blocks, nil
}

// matchOutput compares a command's output with the README's expected output block:
// JSON objects key by key, where "..." stands for any value; text exactly (trimmed).
func matchOutput(info, want, got string) error {
	if info == "json" {
		var w, g map[string]any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			return fmt.Errorf("README's expected JSON: %v", err)
		}
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			return fmt.Errorf("output is not a JSON object: %v: %q", err, got)
		}
		wk, gk := keys(w), keys(g)
		if !reflect.DeepEqual(wk, gk) {
			return fmt.Errorf("keys %v, README shows %v", gk, wk)
		}
		for k, wv := range w {
			if wv == "..." {
				continue
			}
			if !reflect.DeepEqual(g[k], wv) {
				return fmt.Errorf("%s: got %v, README shows %v", k, g[k], wv)
			}
		}
		return nil
	}
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		return fmt.Errorf("got %q, README shows %q", strings.TrimSpace(got), strings.TrimSpace(want))
	}
	return nil
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestTourBlocks(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := tourBlocks(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 4 || blocks[0].info != "sh" || strings.TrimSpace(blocks[0].body) != "make run" {
		t.Fatalf("the tour must start with a sh block `make run`, got %+v", blocks[:min(1, len(blocks))])
	}
	var tools []string
	for _, b := range blocks {
		if b.info == "sh" {
			for _, tool := range []string{"mosquitto_pub", "mosquitto_sub", "curl"} {
				if strings.Contains(b.body, tool) && !strings.Contains(strings.Join(tools, " "), tool) {
					tools = append(tools, tool)
				}
			}
		}
	}
	if len(tools) != 3 {
		t.Errorf("the tour uses %v, want mosquitto_pub, mosquitto_sub and curl", tools)
	}
	if err := matchOutput("json", `{"a":1,"b":"..."}`, `{"b":"x","a":1}`); err != nil {
		t.Errorf("matchOutput: %v", err)
	}
	if err := matchOutput("json", `{"a":1,"b":"..."}`, `{"a":2,"b":"x"}`); err == nil {
		t.Errorf("matchOutput accepted a different value")
	}
	if err := matchOutput("json", `{"a":1}`, `{"a":1,"c":3}`); err == nil {
		t.Errorf("matchOutput accepted an extra key")
	}
}

// TestREADMETour clones the repository fresh and runs the README's tour as written:
// `make run` in the background, then every sh block in order, comparing each output
// with the block that follows it (retrying for a few seconds, as a reader would wait
// for the next tick), then the "more to try" commands that end (curl, and dpusim
// --verify, which must pass in the building the tour left people in). It also checks
// that the README's other make targets exist and that `make build` stamps the
// version. It needs git, make, curl and the Mosquitto clients; with CI=true a missing
// one fails.
//
// The tour's addresses (127.0.0.1:1883 and :8080) are moved to free ports, in the
// clone's configs/demo.yaml and in the commands (mosquitto_pub/sub -p, the URLs), so
// that the test passes while a reader's own `make run` holds them.
func TestREADMETour(t *testing.T) {
	if testing.Short() {
		t.Skip("clones and builds the repository")
	}
	ci := os.Getenv("CI") == "true"
	unavailable := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	for _, tool := range []string{"git", "make", "bash", "curl", "mosquitto_pub", "mosquitto_sub", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable("%s is not installed: %v", tool, err)
		}
	}
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		unavailable("not in a git work tree: %v", err)
	}
	clone := filepath.Join(t.TempDir(), "occupancyd")
	if out, err := exec.Command("git", "clone", "--quiet", "--no-hardlinks", strings.TrimSpace(string(root)), clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	readme, err := os.ReadFile(filepath.Join(clone, "README.md"))
	if err != nil {
		t.Fatalf("fresh clone: %v", err)
	}
	blocks, err := tourBlocks(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if blocks[0].info != "sh" || strings.TrimSpace(blocks[0].body) != "make run" {
		t.Fatalf("the tour must start with `make run`")
	}
	ports := newTourPorts(t)
	demo := filepath.Join(clone, "configs", "demo.yaml")
	cfg, err := os.ReadFile(demo)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(demo, []byte(ports.config(t, string(cfg))), 0o644); err != nil {
		t.Fatal(err)
	}

	// make run, in its own process group so that the daemon gets the signal.
	var runOut bytes.Buffer
	run := exec.Command("bash", "-c", blocks[0].body)
	run.Dir = clone
	run.Stdout, run.Stderr = &runOut, &runOut
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	defer func() {
		syscall.Kill(-run.Process.Pid, syscall.SIGINT)
		select {
		case <-runDone:
			// make and go run die of the SIGINT too (Ctrl-C reaches the whole
			// foreground process group); the daemon must have stopped cleanly.
			if !strings.Contains(runOut.String(), "occupancyd stopped") && !t.Failed() {
				t.Errorf("make run did not stop cleanly on SIGINT")
			}
		case <-time.After(20 * time.Second):
			syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			<-runDone
			t.Errorf("make run still running 20 s after SIGINT")
		}
		if t.Failed() {
			t.Logf("make run output:\n%s", runOut.String())
		}
	}()

	// Ready: storage open, connected and subscribed (the first run compiles).
	deadline := time.Now().Add(4 * time.Minute)
	for {
		resp, err := http.Get("http://" + ports.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-runDone:
			runDone <- err
			t.Fatalf("make run exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 4 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}

	shFor := func(body string, timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", ports.commands(t, body))
		cmd.Dir = clone
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			return out.String(), fmt.Errorf("%v: %s", err, errOut.String())
		}
		return out.String(), nil
	}
	sh := func(body string) (string, error) { return shFor(body, 30*time.Second) }
	ran := 0
	for i := 1; i < len(blocks); i++ {
		b := blocks[i]
		if b.info != "sh" {
			continue
		}
		ran++
		var want *readmeBlock
		if i+1 < len(blocks) && blocks[i+1].info != "sh" && blocks[i+1].info != "console" {
			want = &blocks[i+1]
		}
		if want == nil {
			if out, err := sh(b.body); err != nil {
				t.Fatalf("README line %d:\n%s\nfailed: %v\n%s", b.line, b.body, err, out)
			}
			continue
		}
		// An output to compare: retry for a while (coalesced per engine tick). The
		// block runs again on every try, so it must change nothing: a publish in it
		// would be sent again (a bad_ts count read before the daemon had the first
		// message would read 2 on the next try, never the 1 the README shows).
		if strings.Contains(b.body, "mosquitto_pub") {
			t.Fatalf("README line %d: a block whose output is compared publishes; it runs again until the output matches, so give the publish a block of its own:\n%s", b.line, b.body)
		}
		var lastErr error
		for end := time.Now().Add(15 * time.Second); ; {
			out, err := sh(b.body)
			if err == nil {
				err = matchOutput(want.info, want.body, out)
			}
			if err == nil {
				lastErr = nil
				break
			}
			lastErr = err
			if time.Now().After(end) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if lastErr != nil {
			t.Errorf("README line %d:\n%s\noutput does not match line %d: %v", b.line, b.body, want.line, lastErr)
		}
		i++
	}
	if ran < 5 {
		t.Errorf("ran %d tour commands, want the whole tour", ran)
	}

	// "More to try": the commands that end (mosquitto_sub -v watches until Ctrl-C),
	// in the building the tour left people in; dpusim --verify must pass there.
	more := blocks[len(blocks)-1]
	if more.info != "console" || !strings.Contains(more.body, "dpusim run") {
		t.Fatalf("the tour's last block (line %d) is not the console block of more to try with dpusim", more.line)
	}
	verified := false
	for i, l := range strings.Split(strings.TrimSpace(more.body), "\n") {
		if strings.HasPrefix(l, "mosquitto_sub ") {
			continue
		}
		out, err := shFor(l, 4*time.Minute)
		if err != nil {
			t.Errorf("README line %d:\n%s\nfailed: %v\n%s", more.line+1+i, l, err, out)
			continue
		}
		if strings.Contains(l, "--verify") {
			verified = true
		}
	}
	if !verified {
		t.Errorf("more to try has no dpusim --verify command")
	}

	// The other commands the README names.
	for _, target := range []string{"test", "lint", "bench", "chaos", "fuzz"} {
		if out, err := exec.Command("make", "-C", clone, "-n", target).CombinedOutput(); err != nil {
			t.Errorf("make -n %s: %v\n%s", target, err, out)
		}
	}
	build := exec.Command("make", "build")
	build.Dir = clone
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	head, _ := exec.Command("git", "-C", clone, "rev-parse", "HEAD").Output()
	out, err := exec.Command(filepath.Join(clone, "bin", "occupancyd"), "version").Output()
	if err != nil {
		t.Fatalf("bin/occupancyd version: %v", err)
	}
	re := regexp.MustCompile(`^occupancyd \S+ \(commit ` + regexp.QuoteMeta(strings.TrimSpace(string(head))[:12]) + `, built 20\d\d-`)
	if !re.Match(out) {
		t.Errorf("bin/occupancyd version: got %q, want it to match %s", out, re)
	}
	if _, err := os.Stat(filepath.Join(clone, "bin", "dpusim")); err != nil {
		t.Errorf("make build made no bin/dpusim: %v", err)
	}
	out, err = exec.Command(filepath.Join(clone, "bin", "occupancyd"), "check", "--config", filepath.Join(clone, "configs", "demo.yaml")).CombinedOutput()
	if err != nil {
		t.Errorf("occupancyd check configs/demo.yaml: %v\n%s", err, out)
	}
}

// tourPorts are the free ports the tour runs on instead of 1883 and 8080.
type tourPorts struct{ mqtt, http string }

func newTourPorts(t *testing.T) tourPorts {
	return tourPorts{
		mqtt: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
}

// config moves configs/demo.yaml's listeners to the ports.
func (p tourPorts) config(t *testing.T, cfg string) string {
	t.Helper()
	for _, r := range [][2]string{{"listen: 127.0.0.1:1883", "listen: " + p.mqtt}, {"listen: 127.0.0.1:8080", "listen: " + p.http}} {
		if strings.Count(cfg, r[0]) != 1 {
			t.Fatalf("configs/demo.yaml: want one %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	return cfg
}

var mosquittoHost = regexp.MustCompile(`\b(mosquitto_(?:pub|sub)) -h 127\.0\.0\.1\b`)

// commands moves a tour command to the ports: -p for the Mosquitto clients, the HTTP
// port in URLs. A command that still names 1883 or 8080 fails the test (the README
// used a form this does not know).
func (p tourPorts) commands(t *testing.T, body string) string {
	t.Helper()
	_, port, _ := strings.Cut(p.mqtt, ":")
	body = mosquittoHost.ReplaceAllString(body, "$1 -h 127.0.0.1 -p "+port)
	body = strings.ReplaceAll(body, "127.0.0.1:8080", p.http)
	if strings.Count(body, "mosquitto_") != strings.Count(body, " -p "+port) ||
		strings.Contains(body, "1883") || strings.Contains(body, "8080") {
		t.Fatalf("a tour command the test cannot move to free ports:\n%s", body)
	}
	return body
}
