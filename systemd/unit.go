// Package systemd holds the hardened systemd unit of occupancyd, occupancyd.service:
// the packages install the file, and `occupancyd install` writes the same unit from
// the copy embedded here.
package systemd

import _ "embed"

// Unit is occupancyd.service as it is in the repository.
//
//go:embed occupancyd.service
var Unit string

// Paths the unit names: the binary, the configuration and the state directory.
const (
	Binary   = "/usr/bin/occupancyd"
	Config   = "/etc/occupancyd/occupancyd.yaml"
	StateDir = "/var/lib/occupancyd"
)
