package ingest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/occupancyd/occupancyd/occupancy"
)

// matchTopic reports whether topic matches filter and returns the level matched by
// the filter's last `+` ("" for a filter without one).
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
			switch {
			case last < 0:
				return "", len(tl) >= i
			case last >= len(tl):
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
	if len(fl) != len(tl) {
		return "", false
	}
	if last < 0 {
		return "", true
	}
	return tl[last], true
}

var errNoFilter = errors.New("topic matches no mqtt.events_topic filter")

// route finds the first entry whose filter matches topic and returns it with the
// DPU id (the level matched by its last `+`), which must be a valid id; "" for an
// entry whose map takes the DPU id from the payload.
func (p *Pipeline) route(topic string) (*entryRoute, string, error) {
	for i := range p.entries {
		e := &p.entries[i]
		if dpu, ok := matchTopic(e.filter, topic); ok {
			if e.dpuInPayload {
				return e, "", nil
			}
			if !occupancy.ValidID(dpu) {
				return nil, "", fmt.Errorf("DPU id %q in topic %q is not [A-Za-z0-9_-]{1,64}", dpu, topic)
			}
			return e, dpu, nil
		}
	}
	return nil, "", fmt.Errorf("%w: %q", errNoFilter, topic)
}
