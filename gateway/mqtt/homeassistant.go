package mqtt

import (
	"encoding/json"

	"github.com/occupancyd/occupancyd/occupancy"
)

// discoveryTopic is `<discovery_prefix>/sensor/<gateway-id>_<space-id>/occupancy/config`.
func discoveryTopic(prefix, gatewayID, space string) string {
	return prefix + "/sensor/" + gatewayID + "_" + space + "/occupancy/config"
}

// haDevice is the device block: the gateway.
type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Manufacturer string   `json:"manufacturer"`
	Model        string   `json:"model"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

// haConfig is one Home Assistant MQTT discovery config (sensor component).
type haConfig struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	ObjectID            string   `json:"object_id"`
	StateTopic          string   `json:"state_topic"`
	ValueTemplate       string   `json:"value_template"`
	JSONAttributesTopic string   `json:"json_attributes_topic"`
	UnitOfMeasurement   string   `json:"unit_of_measurement"`
	StateClass          string   `json:"state_class"`
	Icon                string   `json:"icon"`
	AvailabilityTopic   string   `json:"availability_topic"`
	PayloadAvailable    string   `json:"payload_available"`
	PayloadNotAvailable string   `json:"payload_not_available"`
	Device              haDevice `json:"device"`
}

// SoftwareVersion is the occupancyd version reported in the Home Assistant device block; the
// command sets it at start.
var SoftwareVersion = "dev"

// DiscoveryConfig renders the Home Assistant discovery config of one space.
func DiscoveryConfig(gatewayID, outputPrefix, statusTopic string, o occupancy.Occupancy) ([]byte, error) {
	name := o.Name
	if name == "" {
		name = o.Space
	}
	uid := gatewayID + "_" + o.Space
	state := occupancyTopic(outputPrefix, o.Space)
	return json.Marshal(haConfig{
		Name:                name,
		UniqueID:            uid,
		ObjectID:            uid + "_occupancy",
		StateTopic:          state,
		ValueTemplate:       "{{ value_json.occupancy }}",
		JSONAttributesTopic: state,
		UnitOfMeasurement:   "people",
		StateClass:          "measurement",
		Icon:                "mdi:account-group",
		AvailabilityTopic:   statusTopic,
		PayloadAvailable:    "online",
		PayloadNotAvailable: "offline",
		Device: haDevice{
			Identifiers:  []string{"occupancyd_" + gatewayID},
			Name:         "occupancyd " + gatewayID,
			Manufacturer: "occupancyd",
			Model:        "occupancyd gateway",
			SWVersion:    SoftwareVersion,
		},
	})
}
