//go:build pprof

package main

// Built with -tags pprof, occupancyd serves net/http/pprof on $OCCUPANCYD_PPROF
// (e.g. 127.0.0.1:6060) for profiling under load. Not in release builds.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("OCCUPANCYD_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
