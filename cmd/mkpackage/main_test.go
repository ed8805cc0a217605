package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// build packages the repository around a stand-in binary.
func build(t *testing.T, version string, formats ...string) (paths []string, binary string) {
	t.Helper()
	dir := t.TempDir()
	binary = filepath.Join(dir, "occupancyd")
	if err := os.WriteFile(binary, []byte("#!/bin/sh\necho occupancyd stand-in\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	paths, err := Build(Options{Root: "../..", Binary: binary, Version: version, Arch: "amd64",
		Out: filepath.Join(dir, "dist"), Formats: formats, Maintainer: "test <test@example.com>"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(formats) {
		t.Fatalf("got %v for formats %v", paths, formats)
	}
	return paths, binary
}

func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" { // .ci/run installs dpkg-deb and rpm
			t.Fatalf("CI=true: %s is needed: %v", tool, err)
		}
		t.Skipf("%s not installed", tool)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// repoDocs are the packaged paths of the repository's docs/*.md.
func repoDocs(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = "/usr/share/doc/occupancyd/docs/" + filepath.Base(d)
	}
	for _, l := range DocLinked {
		out = append(out, "/usr/share/doc/occupancyd/"+l)
	}
	return out
}

func repoFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../..", p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDeb: the .deb holds the binary, the unit, the sysusers entry, the config as its
// one conffile, the docs, and maintainer scripts that are valid sh; the version is
// the semantic version in Debian's ordering (a pre-release sorts before its release).
func TestDeb(t *testing.T) {
	need(t, "dpkg-deb")
	paths, binary := build(t, "0.1.1-dev.3+abc1234", "deb")
	deb := paths[0]
	if got, want := filepath.Base(deb), "occupancyd_0.1.1~dev.3+abc1234-1_amd64.deb"; got != want {
		t.Errorf("file name: got %s, want %s", got, want)
	}
	fields := run(t, "dpkg-deb", "--field", deb, "Package", "Version", "Architecture", "Section")
	for _, want := range []string{"Package: occupancyd", "Version: 0.1.1~dev.3+abc1234-1", "Architecture: amd64", "Section: net"} {
		if !strings.Contains(fields, want+"\n") {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	var files []string
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(l)
		if name := strings.TrimPrefix(f[len(f)-1], "."); !strings.HasSuffix(name, "/") {
			files = append(files, f[0]+" "+name)
		}
	}
	sort.Strings(files)
	want := []string{
		"-rw-r--r-- /etc/occupancyd/occupancyd.yaml",
		"-rw-r--r-- /usr/lib/systemd/system/occupancyd.service",
		"-rw-r--r-- /usr/lib/sysusers.d/occupancyd.conf",
		"-rw-r--r-- /usr/share/doc/occupancyd/CHANGELOG.md",
		"-rw-r--r-- /usr/share/doc/occupancyd/README.md",
		"-rw-r--r-- /usr/share/doc/occupancyd/copyright",
		"-rwxr-xr-x /usr/bin/occupancyd",
	}
	for _, d := range repoDocs(t) {
		want = append(want, "-rw-r--r-- "+d)
	}
	sort.Strings(want)
	if strings.Join(files, "\n") != strings.Join(want, "\n") {
		t.Errorf("files:\n%s\nwant\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}

	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	run(t, "dpkg-deb", "-e", deb, filepath.Join(dir, "DEBIAN"))
	for path, src := range map[string]string{
		"usr/lib/systemd/system/occupancyd.service": repoFile(t, "systemd/occupancyd.service"),
		"etc/occupancyd/occupancyd.yaml":            repoFile(t, "configs/occupancyd.yaml"),
		"usr/lib/sysusers.d/occupancyd.conf":        repoFile(t, "systemd/occupancyd.sysusers"),
		"usr/share/doc/occupancyd/copyright":        repoFile(t, "LICENSE"),
	} {
		got, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || string(got) != src {
			t.Errorf("/%s differs from the repository's file (%v)", path, err)
		}
	}
	// Every relative link of the installed Markdown resolves inside the package.
	doc := filepath.Join(dir, "usr/share/doc/occupancyd")
	link := regexp.MustCompile(`\]\(([^)#\s]+)`)
	mds, _ := filepath.Glob(filepath.Join(doc, "*.md"))
	more, _ := filepath.Glob(filepath.Join(doc, "docs", "*.md"))
	for _, md := range append(mds, more...) {
		for _, m := range link.FindAllStringSubmatch(string(must(os.ReadFile(md))), -1) {
			if strings.Contains(m[1], "://") || strings.HasPrefix(m[1], "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(md), m[1])); err != nil {
				t.Errorf("%s links to %s, not in the package", strings.TrimPrefix(md, dir), m[1])
			}
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "usr/bin/occupancyd")); string(got) != string(must(os.ReadFile(binary))) {
		t.Errorf("/usr/bin/occupancyd is not the binary given")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "DEBIAN/conffiles")); strings.TrimSpace(string(got)) != "/etc/occupancyd/occupancyd.yaml" {
		t.Errorf("conffiles: %q, want /etc/occupancyd/occupancyd.yaml", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(dir, "DEBIAN", s)
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("no %s: %v", s, err)
		}
		run(t, "sh", "-n", p)
		if strings.Contains(string(body), "#COMMON#") || strings.Contains(string(body), "#SYSUSERS#") {
			t.Errorf("%s: a placeholder is left", s)
		}
		// Without a running systemd (CI, containers) nothing may block or fail:
		// every systemctl call that needs systemd is behind occupancyd_systemd_running
		// or || true.
		for _, l := range strings.Split(string(body), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "#") {
				continue
			}
			if strings.Contains(l, "systemctl ") && !strings.Contains(l, "command -v systemctl") &&
				!strings.Contains(l, "|| true") {
				t.Errorf("%s: %q may fail without systemd", s, l)
			}
		}
	}
	if postinst := string(must(os.ReadFile(filepath.Join(dir, "DEBIAN/postinst")))); !strings.Contains(postinst, "--no-block start") {
		t.Errorf("postinst does not start the service without waiting for READY=1")
	}
}

// TestRPM: the .rpm holds the same files, the config as %config(noreplace), and
// scriptlets that are valid sh.
func TestRPM(t *testing.T) {
	need(t, "rpm")
	paths, _ := build(t, "0.1.0", "rpm")
	rpm := paths[0]
	if got, want := filepath.Base(rpm), "occupancyd-0.1.0-1.x86_64.rpm"; got != want {
		t.Errorf("file name: got %s, want %s", got, want)
	}
	list := strings.Fields(run(t, "rpm", "-qpl", rpm))
	want := []string{"/etc/occupancyd", "/etc/occupancyd/occupancyd.yaml", "/usr/bin/occupancyd",
		"/usr/lib/systemd/system/occupancyd.service", "/usr/lib/sysusers.d/occupancyd.conf",
		"/usr/share/doc/occupancyd/CHANGELOG.md", "/usr/share/doc/occupancyd/README.md",
		"/usr/share/licenses/occupancyd/LICENSE"}
	want = append(want, repoDocs(t)...)
	sort.Strings(want)
	if strings.Join(list, " ") != strings.Join(want, " ") {
		t.Errorf("files:\n%s\nwant\n%s", strings.Join(list, "\n"), strings.Join(want, "\n"))
	}
	if got := strings.TrimSpace(run(t, "rpm", "-qpc", rpm)); got != "/etc/occupancyd/occupancyd.yaml" {
		t.Errorf("config files: %q", got)
	}
	scripts := run(t, "rpm", "-qp", "--scripts", rpm)
	for _, s := range []string{"preinstall", "postinstall", "preuninstall", "postuninstall"} {
		if !strings.Contains(scripts, s+" scriptlet") {
			t.Errorf("no %s scriptlet", s)
		}
	}
}

func TestScriptsNeedNoSystemd(t *testing.T) {
	// Every script's text, as packaged, is valid sh (without dpkg-deb or rpm).
	tmp := t.TempDir()
	line, err := sysusersLine("../../systemd/occupancyd.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"deb/postinst", "deb/prerm", "deb/postrm", "rpm/pre", "rpm/post", "rpm/preun", "rpm/postun"} {
		p, err := script(tmp, name, line)
		if err != nil {
			t.Fatal(err)
		}
		run(t, "sh", "-n", p)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
