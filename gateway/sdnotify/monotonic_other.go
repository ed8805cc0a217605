//go:build !linux

package sdnotify

// monotonicMicros: systemd runs on Linux only.
func monotonicMicros() (uint64, bool) { return 0, false }
