// Command mkpackage builds occupancyd's .deb and .rpm (`make package`) with nFPM
// (github.com/goreleaser/nfpm/v2) as a library: the binary, the hardened systemd
// unit, the commented default configuration as a conffile, the sysusers.d entry of
// the system user, the docs, and maintainer scripts that make the user and enable the
// service.
//
// It is a module of its own (cmd/mkpackage/go.mod), so that nFPM and its
// dependencies stay out of the daemon's module: `go build`, `go vet ./...` and
// `go test ./...` of occupancyd never compile them.
//
//	go run . --root ../.. --binary ../../bin/linux-amd64/occupancyd --version 0.1.0 --arch amd64 --out ../../dist
package main

import (
	"embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the packagers
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)

//go:embed scripts
var scripts embed.FS

// Options are mkpackage's flags.
type Options struct {
	Root       string   // the repository: the unit, configs, docs
	Binary     string   // the occupancyd binary for Arch (linux)
	Version    string   // a semantic version (occupancyd version --short)
	Arch       string   // GOARCH
	Out        string   // output directory
	Formats    []string // deb, rpm
	Maintainer string
}

func main() {
	o := Options{Arch: runtime.GOARCH, Out: "dist", Root: ".",
		Maintainer: "occupancyd developers <occupancyd@users.noreply.github.com>"}
	fs := flag.NewFlagSet("mkpackage", flag.ExitOnError)
	fs.StringVar(&o.Root, "root", o.Root, "the repository's root `DIR`")
	fs.StringVar(&o.Binary, "binary", "", "the occupancyd `FILE` to package (built for linux/ARCH)")
	fs.StringVar(&o.Version, "version", "", "the package's semantic `VERSION` (occupancyd version --short)")
	fs.StringVar(&o.Arch, "arch", o.Arch, "the binary's `GOARCH`")
	fs.StringVar(&o.Out, "out", o.Out, "the output `DIR`")
	formats := fs.String("formats", "deb,rpm", "the package `FORMATS`, comma-separated")
	fs.StringVar(&o.Maintainer, "maintainer", o.Maintainer, "the packages' `MAINTAINER`")
	fs.Parse(os.Args[1:])
	o.Formats = strings.Split(*formats, ",")
	paths, err := Build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkpackage:", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}

// Build writes one package per format into o.Out and returns their paths.
func Build(o Options) ([]string, error) {
	if o.Binary == "" || o.Version == "" {
		return nil, errors.New("--binary and --version are required")
	}
	if _, err := os.Stat(o.Binary); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "mkpackage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var out []string
	for _, format := range o.Formats {
		info, err := packageInfo(o, format, tmp)
		if err != nil {
			return out, err
		}
		p, err := nfpm.Get(format)
		if err != nil {
			return out, err
		}
		if err := nfpm.PrepareForPackager(info, format); err != nil {
			return out, fmt.Errorf("%s: %w", format, err)
		}
		path := filepath.Join(o.Out, p.ConventionalFileName(info))
		f, err := os.Create(path)
		if err != nil {
			return out, err
		}
		err = p.Package(info, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return out, fmt.Errorf("%s: %w", format, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// DocLinked are the repository files the README and docs/*.md link to, packaged
// under /usr/share/doc/occupancyd/ at their repository paths.
var DocLinked = []string{
	"ARCHITECTURE.md", "BENCHMARKS.md",
	"configs/demo.yaml", "configs/occupancyd.yaml", "configs/vendors.yaml",
	"systemd/occupancyd.service", "cmd/occupancyd/testdata/status-page.png",
}

// packageInfo describes the package for one format.
// The maintainer scripts are written to tmp.
func packageInfo(o Options, format, tmp string) (*nfpm.Info, error) {
	root := func(p string) string { return filepath.Join(o.Root, p) }
	for _, p := range []string{"systemd/occupancyd.service", "systemd/occupancyd.sysusers", "configs/occupancyd.yaml", "LICENSE", "README.md", "CHANGELOG.md"} {
		if _, err := os.Stat(root(p)); err != nil {
			return nil, fmt.Errorf("--root %s: %w", o.Root, err)
		}
	}
	sysusers, err := sysusersLine(root("systemd/occupancyd.sysusers"))
	if err != nil {
		return nil, err
	}
	mode := func(m os.FileMode) *files.ContentFileInfo { return &files.ContentFileInfo{Mode: m} }
	contents := files.Contents{
		{Source: o.Binary, Destination: "/usr/bin/occupancyd", FileInfo: mode(0o755)},
		{Source: root("systemd/occupancyd.service"), Destination: "/usr/lib/systemd/system/occupancyd.service", FileInfo: mode(0o644)},
		{Source: root("systemd/occupancyd.sysusers"), Destination: "/usr/lib/sysusers.d/occupancyd.conf", FileInfo: mode(0o644)},
		{Destination: "/etc/occupancyd", Type: files.TypeDir, FileInfo: mode(0o755)},
		{Source: root("configs/occupancyd.yaml"), Destination: "/etc/occupancyd/occupancyd.yaml", Type: files.TypeConfigNoReplace, FileInfo: mode(0o644)},
		{Source: root("README.md"), Destination: "/usr/share/doc/occupancyd/README.md", FileInfo: mode(0o644)},
		{Source: root("CHANGELOG.md"), Destination: "/usr/share/doc/occupancyd/CHANGELOG.md", FileInfo: mode(0o644)},
	}
	// The reference, beside the README that links to it (docs/*.md).
	docs, err := filepath.Glob(root("docs/*.md"))
	if err != nil || len(docs) == 0 {
		return nil, fmt.Errorf("--root %s: no docs/*.md (%v)", o.Root, err)
	}
	for _, d := range docs {
		contents = append(contents, &files.Content{Source: d, Destination: "/usr/share/doc/occupancyd/docs/" + filepath.Base(d), FileInfo: mode(0o644)})
	}
	// What the README and the reference link to, at the same relative paths, so
	// every link of the installed documentation resolves.
	for _, p := range DocLinked {
		contents = append(contents, &files.Content{Source: root(p), Destination: "/usr/share/doc/occupancyd/" + p, FileInfo: mode(0o644)})
	}
	if format == "deb" {
		contents = append(contents, &files.Content{Source: root("LICENSE"), Destination: "/usr/share/doc/occupancyd/copyright", FileInfo: mode(0o644)})
	} else {
		contents = append(contents, &files.Content{Source: root("LICENSE"), Destination: "/usr/share/licenses/occupancyd/LICENSE", Type: files.TypeRPMLicense, FileInfo: mode(0o644)})
	}

	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          "occupancyd",
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "semver",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Vendor:        "occupancyd",
		Homepage:      "https://github.com/occupancyd/occupancyd",
		License:       "Apache-2.0",
		Description: "MQTT edge gateway for people-counting sensors\n" +
			"occupancyd subscribes to the MQTT topics of people-counting DPUs, stores every\n" +
			"event durably before acknowledging it, maps events through a building topology\n" +
			"and publishes the occupancy of every space as retained MQTT topics, Home\n" +
			"Assistant discovery and an HTTP API. It runs as the systemd service occupancyd.",
		Overridables: nfpm.Overridables{Contents: contents},
	})
	switch format {
	case "deb":
		info.Scripts.PostInstall, err = script(tmp, "deb/postinst", sysusers)
		if err == nil {
			info.Scripts.PreRemove, err = script(tmp, "deb/prerm", sysusers)
		}
		if err == nil {
			info.Scripts.PostRemove, err = script(tmp, "deb/postrm", sysusers)
		}
	case "rpm":
		info.RPM.Summary = "MQTT edge gateway for people-counting sensors"
		info.RPM.Group = "System Environment/Daemons"
		info.Scripts.PreInstall, err = script(tmp, "rpm/pre", sysusers)
		if err == nil {
			info.Scripts.PostInstall, err = script(tmp, "rpm/post", sysusers)
		}
		if err == nil {
			info.Scripts.PreRemove, err = script(tmp, "rpm/preun", sysusers)
		}
		if err == nil {
			info.Scripts.PostRemove, err = script(tmp, "rpm/postun", sysusers)
		}
	default:
		return nil, fmt.Errorf("unknown format %q (want deb or rpm)", format)
	}
	return info, err
}

// script writes the maintainer script scripts/<name>, with scripts/common.sh in place
// of its #COMMON# line and the user line of systemd/occupancyd.sysusers in place of
// #SYSUSERS#, into dir and returns its path (nFPM reads scripts from files).
func script(dir, name, sysusers string) (string, error) {
	body, err := scripts.ReadFile("scripts/" + name)
	if err != nil {
		return "", err
	}
	common, err := scripts.ReadFile("scripts/common.sh")
	if err != nil {
		return "", err
	}
	text := strings.Replace(string(body), "#COMMON#\n", string(common), 1)
	if strings.Contains(text, "#COMMON#") || !strings.HasPrefix(text, "#!/bin/sh\n") {
		return "", fmt.Errorf("scripts/%s: want #!/bin/sh and one #COMMON# line", name)
	}
	text = strings.ReplaceAll(text, "#SYSUSERS#", sysusers)
	path := filepath.Join(dir, strings.ReplaceAll(name, "/", "-"))
	return path, os.WriteFile(path, []byte(text), 0o755)
}

// sysusersLine is the user line ("u occupancyd ...") of a sysusers.d file, which the
// scripts hand to systemd-sysusers --inline in single quotes.
func sysusersLine(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "u ") {
			if strings.ContainsAny(l, "'\\") {
				return "", fmt.Errorf("%s: the user line may not hold ' or \\", path)
			}
			return l, nil
		}
	}
	return "", fmt.Errorf("%s: no user line (u ...)", path)
}
