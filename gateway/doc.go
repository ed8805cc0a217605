// Package gateway is the running side of occupancyd. It holds no code: each job
// is a package beneath it, and cmd/occupancyd wires them (Main). The packages, in
// layers — a package imports only occupancy/, buffer/ and packages of the layers
// below its own (layers_test.go checks it):
//
//	layer 0  metrics   the Prometheus metrics (every counter and gauge, one registry)
//	         payload   the occupancy JSON object and the time format the outputs share
//	         sdnotify  systemd readiness, status and watchdog notifications
//	         mqttconn  the MQTT connection under paho: buffered reads, coalesced writes
//	         mqtttopic MQTT topic syntax: filters checked, topics matched (the DPU's '+')
//	         lograte   hot-path log lines at a bounded rate, with a suppressed count
//	layer 1  config    the configuration file: types, defaults, decoding, validation
//	         tracker   "store durably, then apply": the engine and the store behind
//	                   their locks, ingest outcomes, resets, topology versions, the
//	                   tick, the queries, per-DPU statistics and the change feed
//	layer 2  ingest    the message pipeline of every path in: DPU from topic, decode
//	                   in the DPU's kind and map, tracker.Ingest, rejections
//	                   recorded, ack once durable
//	layer 3  broker    the embedded MQTT broker and its event hook (PUBACK once durable)
//	         mqtt      the paho client: events in, occupancy/discovery/status/rejected out
//	         httpapi   the HTTP server, its routes over the tracker, route registration
//	         httpapi/ui  the status page (embedded assets), routes registered by Main
//	         httpapi/push  POST /v1/dpus/{id}/events: HTTP push into the ingest
//	                   pipeline, answered once durable; per-DPU ingest tokens
//	         stream    GET /v1/stream: the change feed as Server-Sent Events
//
// Data flows one way: MQTT/HTTP in -> ingest -> tracker (buffer, then engine) ->
// change feed -> MQTT/HTTP out. A new feature has one room: a new output subscribes
// to the tracker's change feed, a new way in hands messages to the ingest pipeline,
// a new route registers on the httpapi server (and is described in
// httpapi/openapi.json), and cmd/occupancyd wires it.
package gateway
