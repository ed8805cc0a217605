package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
)

// Set at build time (make build):
//
//	-ldflags "-X main.version=$(git describe --tags --long --always --dirty --match 'v[0-9]*')
//	          -X main.commit=$(git rev-parse HEAD) -X main.date=2026-11-27T10:00:00Z"
//
// version may also be a plain semantic version (a packager's); empty or "dev" is an
// untagged build.
var (
	version = ""
	commit  = ""
	date    = ""
)

// describeRE is `git describe --long` output: the tag (vMAJOR.MINOR.PATCH with an
// optional pre-release), the commits since it, the commit, and -dirty.
var describeRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+?)?-(\d+)-g([0-9a-f]+)(-dirty)?$`)

// commitRE is `git describe --always` output without a tag: the commit, -dirty.
var commitRE = regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`)

// semverRE is a semantic version (semver.org), with an optional leading v.
var semverRE = regexp.MustCompile(`^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$`)

// semVersion turns the build's version stamp into a semantic version:
//
//	v1.2.3-0-gabc1234         1.2.3            (a tagged commit)
//	v1.2.3-4-gabc1234         1.2.4-dev.4+abc1234 (4 commits after v1.2.3)
//	v1.3.0-rc.1-2-gabc1234    1.3.0-rc.1.dev.2+abc1234
//	...-dirty                 +dirty, or .dirty after the commit (uncommitted changes)
//	abc1234, "", dev          0.0.0-dev+abc1234 (no tag; the commit from the stamp or
//	                          the Go build's VCS information)
//
// A development build sorts after the tag it follows and before the next release.
func semVersion(stamp, commit string) string {
	if m := describeRE.FindStringSubmatch(stamp); m != nil {
		major, minor, patch, pre, n, hash, dirty := m[1], m[2], m[3], m[4], m[5], m[6], m[7] != ""
		base := major + "." + minor + "." + patch
		if n == "0" {
			v := base + pre
			if dirty {
				v += "+dirty"
			}
			return v
		}
		if pre != "" {
			base += pre + ".dev." + n
		} else {
			p, _ := strconv.Atoi(patch)
			base = major + "." + minor + "." + strconv.Itoa(p+1) + "-dev." + n
		}
		v := base + "+" + hash
		if dirty {
			v += ".dirty"
		}
		return v
	}
	if m := semverRE.FindStringSubmatch(stamp); m != nil {
		return m[1]
	}
	dirty := false
	if h := commitRE.FindStringSubmatch(stamp); h != nil {
		commit, dirty = h[1], h[2] != ""
	}
	if len(commit) > 12 {
		commit = commit[:12]
	}
	v := "0.0.0-dev"
	if commit != "" {
		v += "+" + commit
		if dirty {
			v += ".dirty"
		}
	}
	return v
}

// buildInfo is the commit (12 hex digits, "" unknown), the build date ("" unknown)
// and whether the work tree had changes, from the ldflags or, without them, the
// build's VCS stamp.
func buildInfo() (c, d string, modified bool) {
	c, d = commit, date
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.time":
				if d == "" {
					d = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if len(c) > 12 {
		c = c[:12]
	}
	return c, d, modified
}

// Version is the semantic version of this build (occupancyd version --short).
func Version() string {
	c, _, modified := buildInfo()
	stamp := version
	if (stamp == "" || stamp == "dev") && c != "" {
		stamp = c
		if modified {
			stamp += "-dirty"
		}
	}
	return semVersion(stamp, c)
}

// versionString is the `occupancyd version` line: the semantic version, commit,
// build date, Go version and platform.
func versionString() string {
	c, d, _ := buildInfo()
	if c == "" {
		c = "unknown"
	}
	if d == "" {
		d = "unknown"
	}
	return fmt.Sprintf("occupancyd %s (commit %s, built %s, %s %s/%s)",
		Version(), c, d, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// versionCommand is `occupancyd version [--short]`.
func versionCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	short := fs.Bool("short", false, "print the semantic version alone (for scripts)")
	pos, err := parseCommandFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return commandUsageErrorf("version", "version: unexpected argument %q", pos[0])
	}
	if *short {
		fmt.Fprintln(stdout, Version())
		return nil
	}
	fmt.Fprintln(stdout, versionString())
	return nil
}
