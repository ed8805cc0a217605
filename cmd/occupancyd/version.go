package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time (make build):
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=abc1234 -X main.date=2026-11-27T10:00:00Z"
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// versionString is the `occupancyd version` line: version, commit, build date, Go
// version and platform. Without ldflags the commit comes from the build's VCS
// stamp, when there is one.
func versionString() string {
	c, d := commit, date
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					c = s.Value
				case "vcs.time":
					if d == "" {
						d = s.Value
					}
				}
			}
		}
	}
	if len(c) > 12 {
		c = c[:12]
	}
	if c == "" {
		c = "unknown"
	}
	if d == "" {
		d = "unknown"
	}
	return fmt.Sprintf("occupancyd %s (commit %s, built %s, %s %s/%s)",
		version, c, d, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
