//go:build race

package main

// raceEnabled: the test binary runs under the race detector, so the chaos test
// builds the daemon with -race too (its packages are then in the build cache).
const raceEnabled = true
