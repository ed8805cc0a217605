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
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"CapabilityBoundingSet":  "",
	}
	for k, v := range want {
		if got := unit[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	// The command lines are commands of this binary with the packaged config.
	for _, k := range []string{"ExecStart", "ExecStartPre"} {
		if len(unit[k]) != 1 {
			t.Fatalf("%s: got %q, want one", k, unit[k])
		}
		args := strings.Fields(unit[k][0])
		if args[0] != "/usr/bin/occupancyd" || len(args) != 4 || args[2] != "--config" || args[3] != "/etc/occupancyd/occupancyd.yaml" {
			t.Errorf("%s: got %q, want /usr/bin/occupancyd <cmd> --config /etc/occupancyd/occupancyd.yaml", k, unit[k][0])
		}
	}
	if unit["ExecStart"][0] != "/usr/bin/occupancyd run --config /etc/occupancyd/occupancyd.yaml" {
		t.Errorf("ExecStart: got %q", unit["ExecStart"][0])
	}
	if unit["ExecStartPre"][0] != "/usr/bin/occupancyd check --config /etc/occupancyd/occupancyd.yaml" {
		t.Errorf("ExecStartPre: got %q", unit["ExecStartPre"][0])
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
