//go:build race

package occupancy

// raceEnabled sizes the randomized tests down under the race detector: the engine
// is single-goroutine code, the detector has little to find there and slows the
// reference models tenfold.
const raceEnabled = true
