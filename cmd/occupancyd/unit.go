package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/systemd"
)

// packagedUnits are where a .deb or .rpm puts the unit.
var packagedUnits = []string{"/usr/lib/systemd/system/occupancyd.service", "/lib/systemd/system/occupancyd.service"}

// packagedUnit is the unit a package installed, or "".
func packagedUnit() string {
	for _, p := range packagedUnits {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// topologyFile is where topology.file is: a relative path is from the config's
// directory.
func topologyFile(configPath, file string) string {
	if file == "" || filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(filepath.Dir(configPath), file)
}

// hiddenDirs are the directories the hardened unit hides from the service:
// ProtectHome=yes (/home, /root, /run/user) and PrivateTmp=yes (/tmp, /var/tmp).
var hiddenDirs = []string{"/home", "/root", "/run/user", "/tmp", "/var/tmp"}

// systemdUnit is the unit `occupancyd install` writes on systemd:
// systemd/occupancyd.service itself, with exe and configPath in its command lines
// (ExecStart=, ExecReload=) instead of /usr/bin/occupancyd and
// /etc/occupancyd/occupancyd.yaml, and ReadWritePaths= for storage.dir and
// storage.archive_dir where they lie outside /var/lib/occupancyd (a relative one
// lies inside: the unit's working directory is /var/lib/occupancyd). It refuses
// paths the hardened service could not reach. notes are what install should tell.
func systemdUnit(exe, configPath string, cfg config.Config) (unit string, notes []string, err error) {
	files := []struct{ what, path, instead string }{
		{"the binary", exe, "/usr/local/bin"},
		{"the configuration", configPath, "/etc/occupancyd"},
		{"mqtt.password_file", cfg.MQTT.PasswordFile, "/etc/occupancyd"},
		{"mqtt.tls.ca_file", cfg.MQTT.TLS.CAFile, "/etc/occupancyd"},
		{"mqtt.tls.cert_file", cfg.MQTT.TLS.CertFile, "/etc/occupancyd"},
		{"mqtt.tls.key_file", cfg.MQTT.TLS.KeyFile, "/etc/occupancyd"},
		{"http.token_file", cfg.HTTP.TokenFile, "/etc/occupancyd"},
		{"topology.file", topologyFile(configPath, cfg.TopologyFile), "/etc/occupancyd"},
	}
	for i, f := range files {
		if f.path == "" {
			continue
		}
		if i < 2 && !filepath.IsAbs(f.path) {
			return "", nil, fmt.Errorf("%s %q: want an absolute path", f.what, f.path)
		}
		if d := hiddenIn(serviceAbs(f.path)); d != "" {
			return "", nil, fmt.Errorf("%s %s is in %s, which the hardened service cannot see (ProtectHome=, PrivateTmp=): put it in %s",
				f.what, f.path, d, f.instead)
		}
	}
	var writable []string
	for _, d := range []struct{ key, dir string }{{"storage.dir", cfg.Storage.Dir}, {"storage.archive_dir", cfg.Storage.ArchiveDir}} {
		if d.dir == "" {
			continue
		}
		abs := serviceAbs(d.dir)
		if hd := hiddenIn(abs); hd != "" {
			return "", nil, fmt.Errorf("%s %s is in %s, which the hardened service cannot see: use a directory below %s", d.key, d.dir, hd, systemd.StateDir)
		}
		if !within(abs, systemd.StateDir) {
			writable = append(writable, abs)
			notes = append(notes, fmt.Sprintf("%s %s is outside %s: the unit lets the service write there (ReadWritePaths=); the directory must belong to user occupancyd", d.key, abs, systemd.StateDir))
		}
	}
	for _, p := range append([]string{exe, configPath}, writable...) {
		if strings.ContainsAny(p, "\"\\$%\n\t") {
			return "", nil, fmt.Errorf("%q: a path with quotes, backslashes, $, %% or control characters cannot go into a unit: move it", p)
		}
	}

	var b strings.Builder
	for _, line := range strings.SplitAfter(systemd.Unit, "\n") {
		if strings.HasPrefix(line, "ExecStart=") || strings.HasPrefix(line, "ExecReload=") {
			line = strings.ReplaceAll(line, systemd.Binary+" ", unitArg(exe)+" ")
			line = strings.ReplaceAll(line, " "+systemd.Config+"\n", " "+unitArg(configPath)+"\n")
		}
		b.WriteString(line)
		if strings.HasPrefix(line, "UMask=") && len(writable) > 0 {
			b.WriteString("# storage outside " + systemd.StateDir + " (occupancyd install)\n")
			for _, w := range writable {
				b.WriteString("ReadWritePaths=" + unitArg(w) + "\n")
			}
		}
	}
	unit = b.String()
	if strings.Contains(unit, "{{") {
		// kardianos/service renders SystemdScript as a template; this one has no
		// actions, so it comes out as written.
		return "", nil, fmt.Errorf("the unit would contain \"{{\"")
	}
	return unit, notes, nil
}

// unitArg is a path as one word of a unit's command line: quoted if it has spaces.
func unitArg(p string) string {
	if strings.ContainsAny(p, " ") {
		return `"` + p + `"`
	}
	return p
}

// serviceAbs is p as the service sees it: relative to its working directory.
func serviceAbs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(systemd.StateDir, p)
}

// hiddenIn is the hidden directory p lies in, or "".
func hiddenIn(p string) string {
	for _, d := range hiddenDirs {
		if within(p, d) {
			return d
		}
	}
	return ""
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
