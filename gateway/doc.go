// Package gateway is the running side of occupancyd: the MQTT client (events in,
// occupancy, Home Assistant discovery and status out), the optional embedded mochi
// broker, the ingest pipeline (decode -> group-committed durable append -> ack ->
// engine), the engine wrapper that serialises every engine call and answers the HTTP
// API (Querier), the HTTP server, metrics and the configuration.
//
// Data flows one way: MQTT -> buffer -> engine -> MQTT/HTTP. An event is acknowledged
// to the broker only after buffer.Append reported it durable; the client keeps a
// persistent session (fixed client id, clean session off), so whatever was not
// acknowledged is redelivered and deduplicated by the event log.
package gateway
