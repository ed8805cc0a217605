package mqtt

import (
	"encoding/json"
	"strings"
	"sync"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Home Assistant MQTT discovery (DESIGN 2), one config per entity, retained:
//
//	<prefix>/sensor/<gw>_<space>/occupancy/config     a space's occupancy (people)
//	<prefix>/sensor/<gw>_<space>/utilization/config   its utilization (%), with a capacity
//	<prefix>/binary_sensor/<gw>/connectivity/config   the gateway online (diagnostic)
//	<prefix>/sensor/<gw>/quiet_dpus/config            the quiet DPUs (diagnostic)
//
// Every config has unique_id, default_entity_id (Home Assistant 2025.10 replaced
// object_id with it; 2026.4 ignores object_id), the origin block (this software) and
// the device block (the gateway; configuration_url is the status page when HTTP is
// on). The space sensors and the quiet-DPU sensor are unavailable while the status
// topic says offline; the connectivity sensor reads that topic itself.

// SupportURL is the origin's support_url.
const SupportURL = "https://github.com/occupancyd/occupancyd"

// Discovery renders the Home Assistant discovery configs of one gateway.
type Discovery struct {
	Prefix       string // mqtt.homeassistant.discovery_prefix
	GatewayID    string
	OutputPrefix string // mqtt.output_prefix
	StatusTopic  string
	DPUsTopic    string // the retained DPU health topic
	Version      string // the semantic version of this build
	// ConfigurationURL is the status page (the device's configuration_url); "" when
	// HTTP is off.
	ConfigurationURL string

	mu      sync.Mutex
	utility map[string]bool // per space: a utilization config is out (true) or was cleared (false)
}

type haDevice struct {
	Identifiers      []string `json:"identifiers"`
	Name             string   `json:"name"`
	Manufacturer     string   `json:"manufacturer"`
	Model            string   `json:"model"`
	SWVersion        string   `json:"sw_version,omitempty"`
	ConfigurationURL string   `json:"configuration_url,omitempty"`
}

type haOrigin struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw_version,omitempty"`
	SupportURL string `json:"support_url"`
}

// haEntity is one discovery config (sensor or binary_sensor); empty fields are
// left out.
type haEntity struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	DefaultEntityID     string   `json:"default_entity_id"`
	StateTopic          string   `json:"state_topic"`
	ValueTemplate       string   `json:"value_template,omitempty"`
	JSONAttributesTopic string   `json:"json_attributes_topic,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	DeviceClass         string   `json:"device_class,omitempty"`
	EntityCategory      string   `json:"entity_category,omitempty"`
	PayloadOn           string   `json:"payload_on,omitempty"`
	PayloadOff          string   `json:"payload_off,omitempty"`
	Icon                string   `json:"icon,omitempty"`
	AvailabilityTopic   string   `json:"availability_topic,omitempty"`
	PayloadAvailable    string   `json:"payload_available,omitempty"`
	PayloadNotAvailable string   `json:"payload_not_available,omitempty"`
	Device              haDevice `json:"device"`
	Origin              haOrigin `json:"origin"`
}

// EntityID makes an entity id of Home Assistant's form (VALID_ENTITY_ID) from
// domain and an object id: lower case, every character outside [a-z0-9_] as `_`,
// runs of `_` as one and none at either end (Home Assistant refuses those).
func EntityID(domain, object string) string {
	var b strings.Builder
	b.WriteString(domain)
	b.WriteByte('.')
	n := b.Len()
	under := true // no `_` first
	for i := 0; i < len(object); i++ {
		c := object[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		default:
			c = '_'
		}
		if c == '_' {
			if under {
				continue
			}
			under = true
		} else {
			under = false
		}
		b.WriteByte(c)
	}
	s := strings.TrimRight(b.String(), "_")
	if len(s) == n {
		s += "occupancyd"
	}
	return s
}

// spaceTopic is `<prefix>/sensor/<gw>_<space>/<object>/config`.
func (d *Discovery) spaceTopic(space, object string) string {
	return d.Prefix + "/sensor/" + d.GatewayID + "_" + space + "/" + object + "/config"
}

func (d *Discovery) device() haDevice {
	return haDevice{
		Identifiers:      []string{"occupancyd_" + d.GatewayID},
		Name:             "occupancyd " + d.GatewayID,
		Manufacturer:     "occupancyd",
		Model:            "occupancyd gateway",
		SWVersion:        d.Version,
		ConfigurationURL: d.ConfigurationURL,
	}
}

func (d *Discovery) entity(e haEntity) []byte {
	e.Device = d.device()
	e.Origin = haOrigin{Name: "occupancyd", SWVersion: d.Version, SupportURL: SupportURL}
	b, err := json.Marshal(e)
	if err != nil { // strings only: cannot happen
		panic(err)
	}
	return b
}

// available makes e unavailable while the status topic says offline.
func (d *Discovery) available(e haEntity) haEntity {
	e.AvailabilityTopic, e.PayloadAvailable, e.PayloadNotAvailable = d.StatusTopic, "online", "offline"
	return e
}

// Occupancy is the config of a space's occupancy sensor.
func (d *Discovery) Occupancy(o occupancy.Occupancy) Message {
	name := o.Name
	if name == "" {
		name = o.Space
	}
	state := occupancyTopic(d.OutputPrefix, o.Space)
	uid := d.GatewayID + "_" + o.Space
	return Message{Topic: d.spaceTopic(o.Space, "occupancy"), Payload: d.entity(d.available(haEntity{
		Name: name, UniqueID: uid, DefaultEntityID: EntityID("sensor", uid),
		StateTopic: state, ValueTemplate: "{{ value_json.occupancy }}", JSONAttributesTopic: state,
		UnitOfMeasurement: "people", StateClass: "measurement", Icon: "mdi:account-group",
	}))}
}

// Utilization is the config of a space's utilization sensor (a space with a
// capacity): occupancy / capacity in %.
func (d *Discovery) Utilization(o occupancy.Occupancy) Message {
	name := o.Name
	if name == "" {
		name = o.Space
	}
	uid := d.GatewayID + "_" + o.Space + "_utilization"
	return Message{Topic: d.spaceTopic(o.Space, "utilization"), Payload: d.entity(d.available(haEntity{
		Name: name + " utilization", UniqueID: uid, DefaultEntityID: EntityID("sensor", uid),
		StateTopic: occupancyTopic(d.OutputPrefix, o.Space),
		// utilization is absent from the payload without a capacity (float(0)).
		ValueTemplate:     "{{ ((value_json.utilization | float(0)) * 100) | round(1) }}",
		UnitOfMeasurement: "%", StateClass: "measurement", Icon: "mdi:percent",
	}))}
}

// Space is what a space's discovery sends: its occupancy sensor and, with a
// capacity, its utilization sensor; without one, an empty config clears a
// utilization sensor sent before (once per space and process: a capacity removed
// while the gateway was stopped is cleared too).
func (d *Discovery) Space(o occupancy.Occupancy) []Message {
	msgs := []Message{d.Occupancy(o)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.utility == nil {
		d.utility = map[string]bool{}
	}
	sent, known := d.utility[o.Space]
	switch {
	case o.Capacity > 0:
		msgs = append(msgs, d.Utilization(o))
		d.utility[o.Space] = true
	case sent || !known:
		msgs = append(msgs, Message{Topic: d.spaceTopic(o.Space, "utilization")})
		d.utility[o.Space] = false
	}
	return msgs
}

// Cleared are the discovery topics of a removed space, to send empty.
func (d *Discovery) Cleared(space string) []string {
	d.mu.Lock()
	delete(d.utility, space)
	d.mu.Unlock()
	return []string{d.spaceTopic(space, "occupancy"), d.spaceTopic(space, "utilization")}
}

// Connectivity is the config of the gateway's connectivity sensor (the status
// topic: online / offline).
func (d *Discovery) Connectivity() Message {
	uid := d.GatewayID + "_connectivity"
	return Message{Topic: d.Prefix + "/binary_sensor/" + d.GatewayID + "/connectivity/config", Payload: d.entity(haEntity{
		Name: "Connectivity", UniqueID: uid, DefaultEntityID: EntityID("binary_sensor", uid),
		StateTopic: d.StatusTopic, PayloadOn: "online", PayloadOff: "offline",
		DeviceClass: "connectivity", EntityCategory: "diagnostic",
	})}
}

// QuietDPUs is the config of the gateway's sensor of quiet DPUs (the DPU health
// topic; its attributes are the topic's fields: dpus, quiet, quiet_ids).
func (d *Discovery) QuietDPUs() Message {
	uid := d.GatewayID + "_quiet_dpus"
	return Message{Topic: d.Prefix + "/sensor/" + d.GatewayID + "/quiet_dpus/config", Payload: d.entity(d.available(haEntity{
		Name: "Quiet DPUs", UniqueID: uid, DefaultEntityID: EntityID("sensor", uid),
		StateTopic: d.DPUsTopic, ValueTemplate: "{{ value_json.quiet }}", JSONAttributesTopic: d.DPUsTopic,
		UnitOfMeasurement: "DPUs", StateClass: "measurement", EntityCategory: "diagnostic",
		Icon: "mdi:access-point-network-off",
	}))}
}

// Gateway is the gateway's own discovery configs.
func (d *Discovery) Gateway() []Message { return []Message{d.Connectivity(), d.QuietDPUs()} }
