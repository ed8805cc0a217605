package ingest

import (
	"errors"
	"fmt"

	"github.com/occupancyd/occupancyd/gateway/mqtttopic"
	"github.com/occupancyd/occupancyd/occupancy"
)

var errNoFilter = errors.New("topic matches no mqtt.events_topic filter")

// route finds the first entry whose filter matches topic and returns it with the
// DPU id (the level matched by its last `+`), which must be a valid id; "" for an
// entry whose map takes the DPU id from the payload.
func (p *Pipeline) route(topic string) (*entryRoute, string, error) {
	for i := range p.entries {
		e := &p.entries[i]
		if dpu, ok := mqtttopic.Match(e.filter, topic); ok {
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
