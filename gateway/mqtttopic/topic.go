// Package mqtttopic is MQTT topic syntax (MQTT 3.1.1, 4.7): whether a topic filter
// is well formed, and whether a topic matches a filter, with the level its last '+'
// matched. The configuration checks its events filters with it (and that none
// matches what occupancyd publishes), ingest routes a message to the first
// mqtt.events_topic entry that matches and takes the DPU id from that level, and
// dpusim checks that a gateway would receive what it publishes.
package mqtttopic

import (
	"errors"
	"fmt"
	"strings"
)

// CheckFilter checks a topic filter: not empty, '+' and '#' each fill a whole
// level, '#' only as the last one.
func CheckFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%q: '#' must be the last level", f)
		case l != "+" && l != "#" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%q: '+' and '#' must fill a whole level", f)
		}
	}
	return nil
}

// Match reports whether topic t matches filter f ('+' one level, '#' the rest,
// the parent level included: a/# matches a) and returns the level of t matched by
// f's last '+' ("" when f has none).
func Match(f, t string) (plus string, ok bool) {
	fl, tl := strings.Split(f, "/"), strings.Split(t, "/")
	for i, l := range fl {
		if l == "#" {
			if i > len(tl) {
				return "", false
			}
			return plus, true
		}
		if i >= len(tl) || l != "+" && l != tl[i] {
			return "", false
		}
		if l == "+" {
			plus = tl[i]
		}
	}
	if len(fl) != len(tl) {
		return "", false
	}
	return plus, true
}
