package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/occupancyd/occupancyd/gateway/config"
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

// TestInstallUnit: the unit `occupancyd install` writes on systemd is
// systemd/occupancyd.service, byte for byte, for the packaged paths; for other paths
// only the command lines differ, plus ReadWritePaths= for storage outside the state
// directory; paths the hardened service cannot see are refused.
func TestInstallUnit(t *testing.T) {
	file, err := os.ReadFile("../../systemd/occupancyd.service")
	if err != nil {
		t.Fatal(err)
	}
	packaged, err := config.LoadConfig("../../configs/occupancyd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("packaged paths: the file itself", func(t *testing.T) {
		unit, notes, err := systemdUnit("/usr/bin/occupancyd", "/etc/occupancyd/occupancyd.yaml", packaged)
		if err != nil {
			t.Fatal(err)
		}
		if unit != string(file) {
			t.Errorf("generated unit differs from systemd/occupancyd.service:\n%s", lineDiff(string(file), unit))
		}
		if len(notes) != 0 {
			t.Errorf("notes %q, want none", notes)
		}
	})
	withStorage := func(dir, archive string) config.Config {
		c := packaged
		c.Storage.Dir, c.Storage.ArchiveDir = dir, archive
		return c
	}
	for _, tc := range []struct {
		name, exe, cfg string
		conf           config.Config
		changed        []string // the lines that differ from the file (ReadWritePaths added)
		notes          int
	}{
		{"elsewhere", "/usr/local/bin/occupancyd", "/etc/occ/gw-2.yaml", packaged, []string{
			"ExecStart=/usr/local/bin/occupancyd run --config /etc/occ/gw-2.yaml",
			"ExecReload=/usr/local/bin/occupancyd check --config /etc/occ/gw-2.yaml",
		}, 0},
		{"spaces in paths", "/opt/occupancy gateway/occupancyd", "/etc/occ/my gw.yaml", packaged, []string{
			`ExecStart="/opt/occupancy gateway/occupancyd" run --config "/etc/occ/my gw.yaml"`,
			`ExecReload="/opt/occupancy gateway/occupancyd" check --config "/etc/occ/my gw.yaml"`,
		}, 0},
		{"relative storage is in the state directory", systemdBinary, systemdConfig, withStorage("data", "archive"), nil, 0},
		{"storage below the state directory", systemdBinary, systemdConfig, withStorage("/var/lib/occupancyd/db", "/var/lib/occupancyd/archive"), nil, 0},
		{"storage elsewhere", systemdBinary, systemdConfig, withStorage("/srv/occupancyd", "/mnt/archive"), []string{
			"# storage outside /var/lib/occupancyd (occupancyd install)",
			"ReadWritePaths=/srv/occupancyd",
			"ReadWritePaths=/mnt/archive",
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unit, notes, err := systemdUnit(tc.exe, tc.cfg, tc.conf)
			if err != nil {
				t.Fatal(err)
			}
			if got := changedLines(string(file), unit); strings.Join(got, "\n") != strings.Join(tc.changed, "\n") {
				t.Errorf("lines not in the file: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.changed, "\n"))
			}
			if len(notes) != tc.notes {
				t.Errorf("notes %q, want %d", notes, tc.notes)
			}
			if strings.Contains(unit, "{{") {
				t.Errorf("the unit has a template action for kardianos/service to expand")
			}
		})
	}
	for _, tc := range []struct {
		name, exe, cfg string
		conf           config.Config
		want           string
	}{
		{"config in a home", systemdBinary, "/home/ops/occupancyd.yaml", packaged, "is in /home, which the hardened service cannot see"},
		{"binary in /root", "/root/go/bin/occupancyd", systemdConfig, packaged, "is in /root"},
		{"config in /tmp", systemdBinary, "/tmp/x.yaml", packaged, "is in /tmp"},
		{"storage in /var/tmp", systemdBinary, systemdConfig, withStorage("/var/tmp/db", ""), "storage.dir /var/tmp/db is in /var/tmp"},
		{"password file in a home", systemdBinary, systemdConfig, func() config.Config {
			c := packaged
			c.MQTT.PasswordFile = "/home/ops/pw"
			return c
		}(), "mqtt.password_file /home/ops/pw is in /home"},
		{"token file in /tmp", systemdBinary, systemdConfig, func() config.Config {
			c := packaged
			c.HTTP.TokenFile = "/tmp/token"
			return c
		}(), "http.token_file /tmp/token is in /tmp"},
		{"topology file in a home", systemdBinary, systemdConfig, func() config.Config {
			c := packaged
			c.TopologyFile = "../../home/ops/campus.json"
			return c
		}(), "topology.file /home/ops/campus.json is in /home"},
		{"relative config", systemdBinary, "occupancyd.yaml", packaged, "want an absolute path"},
		{"a dollar", "/opt/$x/occupancyd", systemdConfig, packaged, "cannot go into a unit"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			_, _, err := systemdUnit(tc.exe, tc.cfg, tc.conf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	t.Run("systemd-analyze verify", func(t *testing.T) {
		path, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("no systemd-analyze")
		}
		exe, err := exec.LookPath("true") // an executable outside the hidden directories
		if err != nil {
			t.Fatal(err)
		}
		unit, _, err := systemdUnit(exe, systemdConfig, withStorage("/srv/occupancyd", ""))
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "occupancyd.service")
		if err := os.WriteFile(f, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command(path, "verify", f).CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "Unknown") || strings.Contains(l, "Invalid") || strings.Contains(l, "Failed to parse") || strings.Contains(l, "is not executable") {
				t.Errorf("systemd-analyze verify: %s", l)
			}
		}
	})
}

const (
	systemdBinary = "/usr/bin/occupancyd"
	systemdConfig = "/etc/occupancyd/occupancyd.yaml"
)

// changedLines are the lines of b that a does not have.
func changedLines(a, b string) []string {
	have := map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		have[l] = true
	}
	var out []string
	for _, l := range strings.Split(b, "\n") {
		if !have[l] {
			out = append(out, l)
		}
	}
	return out
}

// lineDiff shows the lines only one of a and b has.
func lineDiff(a, b string) string {
	return "only in the file:\n" + strings.Join(changedLines(b, a), "\n") +
		"\nonly in the generated unit:\n" + strings.Join(changedLines(a, b), "\n")
}
