//go:build race

package main

// raceEnabled sizes the end-to-end tests down under the race detector.
const raceEnabled = true
