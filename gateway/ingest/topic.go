package ingest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// dpuSegment checks filter (config.CheckEventsFilter) and returns the index of its
// last `+` level, the DPU id's level.
func dpuSegment(filter string) (int, error) {
	if err := config.CheckEventsFilter(filter); err != nil {
		return 0, err
	}
	levels := strings.Split(filter, "/")
	i := len(levels) - 1
	for levels[i] != "+" { // config.CheckEventsFilter found one
		i--
	}
	return i, nil
}

// matchTopic reports whether topic matches filter and returns the level matched by
// the filter's last `+`.
func matchTopic(filter, topic string) (string, bool) {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	last := -1
	for i, l := range fl {
		if l == "+" {
			last = i
		}
	}
	for i, l := range fl {
		if l == "#" {
			if last < 0 || last >= len(tl) {
				return "", false
			}
			return tl[last], true
		}
		if i >= len(tl) {
			return "", false
		}
		if l != "+" && l != tl[i] {
			return "", false
		}
	}
	if len(fl) != len(tl) || last < 0 {
		return "", false
	}
	return tl[last], true
}

var errNoFilter = errors.New("topic matches no mqtt.events_topic filter")

// dpuFromTopic finds the first filter matching topic and returns the DPU id (the
// level matched by its last `+`), which must be a valid id.
func dpuFromTopic(filters []string, topic string) (string, error) {
	for _, f := range filters {
		if dpu, ok := matchTopic(f, topic); ok {
			if !occupancy.ValidID(dpu) {
				return "", fmt.Errorf("DPU id %q in topic %q is not [A-Za-z0-9_-]{1,64}", dpu, topic)
			}
			return dpu, nil
		}
	}
	return "", fmt.Errorf("%w: %q", errNoFilter, topic)
}
