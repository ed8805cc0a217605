package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
)

var updateGolden = os.Getenv("UPDATE_GOLDEN") != ""

func runDispatch(args ...string) (code int, stdout, stderr string) {
	var so, se bytes.Buffer
	code = dispatch(args, &so, &se)
	return code, so.String(), se.String()
}

func TestDispatch(t *testing.T) {
	t.Run("version", func(t *testing.T) {
		code, out, _ := runDispatch("version")
		re := regexp.MustCompile(`^occupancyd 0\.0\.0-dev(\+[0-9a-f]{12}(\.dirty)?)? \(commit \S+, built \S+, go1\.\S+ \S+/\S+\)\n$`)
		if code != 0 || !re.MatchString(out) {
			t.Errorf("got exit %d %q, want 0 and a line matching %s", code, out, re)
		}
	})
	t.Run("help", func(t *testing.T) {
		code, out, _ := runDispatch("help")
		for _, cmd := range []string{"run", "check", "import", "install", "uninstall", "start|stop|restart", "status", "version"} {
			if !strings.Contains(out, "occupancyd "+cmd) {
				t.Errorf("usage lacks %q", cmd)
			}
		}
		if code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"no command", nil, 2, ""},
		{"unknown command", []string{"frobnicate"}, 2, `occupancyd: unknown command "frobnicate" (see occupancyd help)`},
		{"check without config", []string{"check"}, 2, "occupancyd: check needs --config FILE (see occupancyd check --help)"},
		{"check with an argument", []string{"check", "--config", "x.yaml", "extra"}, 2, `occupancyd: check: unexpected argument "extra" (see occupancyd check --help)`},
		{"check unknown flag", []string{"check", "--confg", "x.yaml"}, 2, "occupancyd: check: flag provided but not defined: -confg (see occupancyd check --help)"},
		{"check missing file", []string{"check", "--config", "testdata/none.yaml"}, 1, "occupancyd: read config: open testdata/none.yaml: no such file or directory"},
		{"version with an argument", []string{"version", "x"}, 2, `occupancyd: version: unexpected argument "x" (see occupancyd version --help)`},
		// install validates the configuration before it touches the system
		{"install with a missing config", []string{"install", "--config", "testdata/none.yaml"}, 1, "no such file or directory"},
		{"install with a bad config", []string{"install", "--config", "../../gateway/config/testdata/bad/unknown_key.yaml"}, 1, `mqtt.brokr: unknown key`},
		{"status with an argument", []string{"status", "now"}, 2, `occupancyd: status: unexpected argument "now"`},
		// DESIGN 5 Access: off loopback, no token and closed reads, run and check refuse
		{"run with open HTTP", []string{"run", "--config", "../../gateway/config/testdata/bad/http_public.yaml"}, 1,
			`http.listen: "0.0.0.0:8080" is not a loopback address and no token is set: set http.token or http.token_file`},
		{"check with open HTTP", []string{"check", "--config", "../../gateway/config/testdata/bad/http_public.yaml"}, 1, "1 problem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runDispatch(tc.args...)
			if code != tc.code {
				t.Errorf("exit: got %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if tc.err != "" && !strings.Contains(stderr, tc.err) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr, tc.err)
			}
		})
	}
}

func TestCheckCommand(t *testing.T) {
	t.Run("demo summary", func(t *testing.T) {
		code, out, stderr := runDispatch("check", "--config", "../../configs/demo.yaml")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		golden := "testdata/check_demo.golden"
		if updateGolden {
			os.WriteFile(golden, []byte(out), 0o644)
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("every problem", func(t *testing.T) {
		// The problems are gateway's golden file, each prefixed with the file name.
		cfg := "../../gateway/config/testdata/bad/many_problems.yaml"
		golden, err := os.ReadFile("../../gateway/config/testdata/bad/many_problems.err")
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		lines := strings.Split(strings.TrimSpace(string(golden)), "\n")
		for _, l := range lines {
			want.WriteString(cfg + ": " + l + "\n")
		}
		code, out, stderr := runDispatch("check", "--config", cfg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if out != want.String() {
			t.Errorf("stdout:\n%s\nwant\n%s", out, want.String())
		}
		if w := fmt.Sprintf("occupancyd: %s: %d problems\n", cfg, len(lines)); stderr != w {
			t.Errorf("stderr: got %q, want %q", stderr, w)
		}
	})
	t.Run("open HTTP says why", func(t *testing.T) {
		// DESIGN 5 Access, issue 14 item 5: off loopback with no token, check refuses
		// and says what to set.
		cfg := "../../gateway/config/testdata/bad/http_public.yaml"
		golden, err := os.ReadFile("../../gateway/config/testdata/bad/http_public.err")
		if err != nil {
			t.Fatal(err)
		}
		code, out, stderr := runDispatch("check", "--config", cfg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if want := cfg + ": " + string(golden); out != want || !strings.Contains(out, "http.open_reads: true") {
			t.Errorf("stdout: got %q, want %q", out, want)
		}
		if w := "occupancyd: " + cfg + ": 1 problem\n"; stderr != w {
			t.Errorf("stderr: got %q, want %q", stderr, w)
		}
	})
}

func TestServiceConfig(t *testing.T) {
	c := serviceConfig("/etc/occupancyd/occupancyd.yaml", "/var/lib/occupancyd")
	if c.Name != "occupancyd" {
		t.Errorf("name: got %q", c.Name)
	}
	if got, want := strings.Join(c.Arguments, " "), "run --config /etc/occupancyd/occupancyd.yaml"; got != want {
		t.Errorf("arguments: got %q, want %q", got, want)
	}
	if c.WorkingDirectory != "/var/lib/occupancyd" {
		t.Errorf("working directory: got %q", c.WorkingDirectory)
	}
	for k, want := range map[string]any{"Restart": "on-failure", "ReloadSignal": "HUP"} {
		if c.Option[k] != want {
			t.Errorf("option %s: got %v, want %v", k, c.Option[k], want)
		}
	}
}

// TestServiceProgram runs the kardianos program as a service manager would: Start
// runs a real Main (embedded broker, Badger, HTTP), SIGHUP reloads the file, Stop
// closes it and releases the store.
func TestServiceProgram(t *testing.T) {
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	dir := t.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeCfg := func(capacity int) {
		doc := fmt.Sprintf(`gateway: {id: svctest}
mqtt: {embedded: {listen: "127.0.0.1:0"}}
storage: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: info, format: json}
topology:
  spaces: [{id: hq, name: HQ, capacity: %d}]
`, filepath.Join(dir, "data"), capacity)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(10)
	logs := &syncBuf{}
	p := &serviceProgram{configPath: path, stderr: logs}
	if err := p.Start(nil); err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop(nil)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	}()
	addr := p.main.HTTPAddr()
	capacity := func() (int64, error) {
		resp, err := http.Get("http://" + addr + "/v1/spaces/hq")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var v struct {
			Capacity int64 `json:"capacity"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return 0, err
		}
		return v.Capacity, nil
	}
	if got, err := capacity(); err != nil || got != 10 {
		t.Fatalf("capacity: got %d, %v, want 10", got, err)
	}

	writeCfg(25)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := capacity()
		if err == nil && got == 25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: capacity %d (%v), want 25", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := p.Stop(nil); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Errorf("HTTP still answers after Stop")
	}
	store, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "data"), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("store not released after Stop: %v", err)
	}
	store.Close()
}

// TestBuiltBinary builds occupancyd as make build does (version ldflags) and runs it.
func TestBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "occupancyd")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version=v1.2.3-4-g0123456 -X main.commit=0123456789abcdef -X main.date=2026-11-27T10:00:00Z", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	// The stamp is make build's git describe: 4 commits after v1.2.3.
	want := regexp.MustCompile(`^occupancyd 1\.2\.4-dev\.4\+0123456 \(commit 0123456789ab, built 2026-11-27T10:00:00Z, go1\.\S+ \S+/\S+\)\n$`)
	if !want.Match(out) {
		t.Errorf("version: got %q, want %s", out, want)
	}
	if out, err := exec.Command(bin, "version", "--short").Output(); err != nil || string(out) != "1.2.4-dev.4+0123456\n" {
		t.Errorf("version --short: got %q, %v; want 1.2.4-dev.4+0123456", out, err)
	}
	cmd := exec.Command(bin, "check", "--config", "../../gateway/config/testdata/bad/late_events_keep.yaml")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("check of a bad config: got %v, want exit status 1", err)
	}
	if w := `engine.late_events: want "apply" or "drop", got "keep" (line 3)`; !strings.Contains(so.String(), w) {
		t.Errorf("check output %q lacks %q", so.String(), w)
	}
}
