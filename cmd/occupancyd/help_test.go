package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// commandFlags are the flags each command accepts (beside -h/--help).
var commandFlags = map[string][]string{
	"run":       {"config"},
	"check":     {"config"},
	"import":    {"config", "progress"},
	"install":   {"config"},
	"uninstall": {"config"},
	"start":     {"config"},
	"stop":      {"config"},
	"restart":   {"config"},
	"status":    {"config"},
	"version":   {"short"},
}

// TestCommandHelp: every command answers --help and -h with its usage, its flags
// with their defaults and an example, on stdout with exit status 0 (golden files in
// testdata/help, UPDATE_GOLDEN=1 rewrites them); `help CMD` says the same.
func TestCommandHelp(t *testing.T) {
	flagRE := regexp.MustCompile(`(?m)^  --([a-z-]+)`)
	for cmd, flags := range commandFlags {
		t.Run(cmd, func(t *testing.T) {
			code, out, stderr := runDispatch(cmd, "--help")
			if code != 0 || stderr != "" {
				t.Fatalf("%s --help: exit %d, stderr %q; want 0 and nothing", cmd, code, stderr)
			}
			golden := filepath.Join("testdata", "help", cmd+".golden")
			if updateGolden {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				os.WriteFile(golden, []byte(out), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("%s --help:\n%s\nwant (%s):\n%s", cmd, out, golden, want)
			}
			for _, alt := range [][]string{{cmd, "-h"}, {"help", cmd}, {cmd, "--config", "x.yaml", "-help"}} {
				if cmd == "version" && alt[1] == "--config" {
					alt = []string{cmd, "--short", "-help"}
				}
				if c, o, _ := runDispatch(alt...); c != 0 || o != out {
					t.Errorf("%q: exit %d, output differs from %s --help:\n%s", alt, c, cmd, o)
				}
			}
			if !strings.HasPrefix(out, "Usage: occupancyd "+cmd) || !strings.Contains(out, "\nExample:\n  ") {
				t.Errorf("%s --help lacks the usage line or an example", cmd)
			}
			// The help lists exactly the flags the command accepts.
			var listed []string
			for _, m := range flagRE.FindAllStringSubmatch(out, -1) {
				listed = append(listed, m[1])
			}
			if strings.Join(listed, " ") != strings.Join(flags, " ") {
				t.Errorf("%s --help lists %v, want %v", cmd, listed, flags)
			}
			for _, f := range listed {
				// A listed flag is accepted (an undefined one would fail before --help).
				if c, _, e := runDispatch(cmd, "--"+f+"=1", "--help"); c != 0 && !strings.Contains(e, "invalid") {
					t.Errorf("%s --%s: exit %d %q", cmd, f, c, e)
				}
			}
			// Defaults: every flag with one shows it.
			for _, d := range []string{"(default /etc/occupancyd/occupancyd.yaml)", "(default 100000)"} {
				if (cmd == "install" || cmd == "import") && strings.Contains(string(want), d) != strings.Contains(out, d) {
					t.Errorf("%s --help: default %s", cmd, d)
				}
			}
		})
	}
	t.Run("import mentions --progress and its default", func(t *testing.T) {
		_, out, _ := runDispatch("import", "--help")
		if !strings.Contains(out, "--progress N") || !strings.Contains(out, "(default 100000)") {
			t.Errorf("import --help:\n%s", out)
		}
	})
	t.Run("install shows the default config", func(t *testing.T) {
		_, out, _ := runDispatch("install", "--help")
		if !strings.Contains(out, "(default "+defaultServiceConfig+")") {
			t.Errorf("install --help:\n%s", out)
		}
	})
}

// TestUnknownFlag: an unknown flag is a usage error (exit 2) that names the
// command's help, for every command.
func TestUnknownFlag(t *testing.T) {
	for cmd := range commandFlags {
		t.Run(cmd, func(t *testing.T) {
			code, out, stderr := runDispatch(cmd, "--frobnicate")
			want := "occupancyd: " + cmd + ": flag provided but not defined: -frobnicate (see occupancyd " + cmd + " --help)\n"
			if code != 2 || stderr != want || out != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want 2 and %q", code, stderr, out, want)
			}
		})
	}
	t.Run("help of an unknown command", func(t *testing.T) {
		code, _, stderr := runDispatch("help", "frobnicate")
		if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestSemVersion(t *testing.T) {
	for _, tc := range []struct{ stamp, commit, want string }{
		{"v0.1.0-0-gabc1234", "", "0.1.0"},
		{"v0.1.0-0-gabc1234-dirty", "", "0.1.0+dirty"},
		{"v0.1.0-3-gabc1234", "", "0.1.1-dev.3+abc1234"},
		{"v0.1.0-3-gabc1234-dirty", "", "0.1.1-dev.3+abc1234.dirty"},
		{"v1.9.19-12-g0123456789ab", "", "1.9.20-dev.12+0123456789ab"},
		{"v2.0.0-rc.1-0-gabc1234", "", "2.0.0-rc.1"},
		{"v2.0.0-rc.1-5-gabc1234", "", "2.0.0-rc.1.dev.5+abc1234"},
		{"abc1234", "", "0.0.0-dev+abc1234"},             // no tag: git describe --always
		{"abc1234-dirty", "", "0.0.0-dev+abc1234.dirty"}, // no tag, changes
		{"", "0123456789abcdef", "0.0.0-dev+0123456789ab"},
		{"dev", "", "0.0.0-dev"},
		{"", "", "0.0.0-dev"},
		{"1.4.2", "", "1.4.2"}, // a packager's plain version
		{"v1.4.2+deb12", "", "1.4.2+deb12"},
	} {
		if got := semVersion(tc.stamp, tc.commit); got != tc.want {
			t.Errorf("semVersion(%q, %q) = %q, want %q", tc.stamp, tc.commit, got, tc.want)
		}
	}
	// Every result is a semantic version (semver.org's regular expression).
	semver := regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
	for _, stamp := range []string{"v0.1.0-3-gabc1234-dirty", "v2.0.0-rc.1-5-gabc1234", "abc1234-dirty", ""} {
		if v := semVersion(stamp, "abcdef0"); !semver.MatchString(v) {
			t.Errorf("semVersion(%q) = %q: not a semantic version", stamp, v)
		}
	}
}
