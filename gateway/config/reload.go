package config

import "slices"

// RestartKeys lists the keys whose change between the running configuration a and
// a reloaded b only takes effect after a restart (SIGHUP reloads the topology —
// capacities and daily resets included —, engine.tick and log.level; DESIGN 6).
func RestartKeys(a, b Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(a.Gateway != b.Gateway, "gateway")
	add(a.MQTT.Broker != b.MQTT.Broker, "mqtt.broker")
	add(a.MQTT.Embedded != b.MQTT.Embedded, "mqtt.embedded")
	add(a.MQTT.ClientID != b.MQTT.ClientID, "mqtt.client_id")
	add(a.MQTT.Username != b.MQTT.Username, "mqtt.username")
	add(a.MQTT.PasswordFile != b.MQTT.PasswordFile, "mqtt.password_file")
	add(a.MQTT.TLS != b.MQTT.TLS, "mqtt.tls")
	add(!slices.Equal(a.MQTT.EventsTopic, b.MQTT.EventsTopic), "mqtt.events_topic")
	add(a.MQTT.MaxPayload != b.MQTT.MaxPayload, "mqtt.max_payload")
	add(a.MQTT.OutputPrefix != b.MQTT.OutputPrefix, "mqtt.output_prefix")
	add(a.MQTT.StatusTopic != b.MQTT.StatusTopic, "mqtt.status_topic")
	add(a.MQTT.RejectedTopic != b.MQTT.RejectedTopic, "mqtt.rejected_topic")
	add(a.MQTT.HomeAssistant != b.MQTT.HomeAssistant, "mqtt.homeassistant")
	add(a.Storage != b.Storage, "storage")
	add(a.Engine.SettleAfter != b.Engine.SettleAfter, "engine.settle_after")
	add(a.Engine.LateEvents != b.Engine.LateEvents, "engine.late_events")
	add(a.Engine.ClampNegative != b.Engine.ClampNegative, "engine.clamp_negative")
	add(a.Engine.MaxFutureSkew != b.Engine.MaxFutureSkew, "engine.max_future_skew")
	add(a.HTTP != b.HTTP, "http")
	add(a.Log.Format != b.Log.Format, "log.format")
	return keys
}
