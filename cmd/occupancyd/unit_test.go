package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSystemdUnit checks systemd/occupancyd.service: the hardening DESIGN asks for and
// command lines this binary accepts (and systemd-analyze verify where it exists).
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("../../systemd/occupancyd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string][]string{} // key -> values, every section
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("not key=value: %q", l)
			continue
		}
		unit[k] = append(unit[k], v)
	}
	want := map[string]string{
		"DynamicUser":            "yes",
		"StateDirectory":         "occupancyd",
		"ConfigurationDirectory": "occupancyd",
		"WorkingDirectory":       "/var/lib/occupancyd",
		"ProtectSystem":          "strict",
		"ProtectHome":            "yes",
		"PrivateTmp":             "yes",
		"NoNewPrivileges":        "yes",
		"Restart":                "on-failure",
		"CapabilityBoundingSet":  "",
		// READY=1 once ready, WATCHDOG=1 while alive (systemd.go)
		"Type":            "notify",
		"NotifyAccess":    "main",
		"WatchdogSec":     "30s",
		"TimeoutStartSec": "5min",
	}
	for k, v := range want {
		if got := unit[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	// A start runs the daemon alone (run validates the file itself; a check before
	// it would parse a 19 MB topology twice); a reload checks the file, then sends
	// SIGHUP, so that a bad file fails `systemctl reload` with its problems.
	if got := unit["ExecStart"]; len(got) != 1 || got[0] != "/usr/bin/occupancyd run --config /etc/occupancyd/occupancyd.yaml" {
		t.Errorf("ExecStart: got %q", got)
	}
	if got := unit["ExecStartPre"]; len(got) != 0 {
		t.Errorf("ExecStartPre: got %q, want none", got)
	}
	wantReload := []string{"/usr/bin/occupancyd check --config /etc/occupancyd/occupancyd.yaml", "/bin/kill -HUP $MAINPID"}
	if got := unit["ExecReload"]; strings.Join(got, "\n") != strings.Join(wantReload, "\n") {
		t.Errorf("ExecReload: got %q, want %q", got, wantReload)
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		// Unknown directives and syntax errors; the missing binary is expected.
		out, _ := exec.Command(path, "verify", "../../systemd/occupancyd.service").CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "Unknown") || strings.Contains(l, "Invalid") || strings.Contains(l, "Failed to parse") {
				t.Errorf("systemd-analyze verify: %s", l)
			}
		}
	}
}
