package gateway

import (
	"strconv"

	"github.com/occupancyd/occupancyd/occupancy"
)

// occupancyTopic is `<output_prefix>/<space>`; its value topic adds `/count`.
func occupancyTopic(prefix, space string) string { return prefix + "/" + space }

// publishOccupancies publishes, retained with QoS 1, the JSON object and the bare
// count of each space.
func (g *Gateway) publishOccupancies(occs []occupancy.Occupancy) {
	if g.mqtt == nil {
		return
	}
	for _, o := range occs {
		topic := occupancyTopic(g.names.outputPrefix, o.Space)
		g.mqtt.publish(topic, 1, true, appendOccupancyJSON(make([]byte, 0, 192), o))
		g.mqtt.publish(topic+"/count", 1, true, []byte(strconv.FormatInt(o.Occupancy, 10)))
	}
}

// publishAllSpaces publishes every space (at start and after every reconnect).
func (g *Gateway) publishAllSpaces() {
	occs := g.Spaces()
	g.publishOccupancies(occs)
	g.metrics.SetSpaces(occs)
}

// clearSpace removes a deleted space's retained topics and its Home Assistant config
// (empty retained payloads).
func (g *Gateway) clearSpace(id string) {
	if g.mqtt == nil {
		return
	}
	names := g.names
	topic := occupancyTopic(names.outputPrefix, id)
	g.mqtt.publish(topic, 1, true, nil)
	g.mqtt.publish(topic+"/count", 1, true, nil)
	if names.haEnabled {
		g.mqtt.publish(discoveryTopic(names.haPrefix, g.Config().Gateway.ID, id), 1, true, nil)
	}
	g.metrics.RemoveSpaces([]string{id})
}
