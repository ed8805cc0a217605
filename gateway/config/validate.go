package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/occupancyd/occupancyd/gateway/mqtttopic"
	"github.com/occupancyd/occupancyd/occupancy"
)

// Validate reports every problem of the configuration, each with its key path, as a
// *ConfigError; nil when the configuration is usable. Settings derived by
// ApplyDefaults may be empty.
func (c Config) Validate() error {
	if ps := c.validate(); len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

// validate collects the problems in key order.
func (c Config) validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			add(path, "must be > 0, got %s", d)
		}
	}
	oneOf := func(path, got string, want ...string) {
		if !slices.Contains(want, got) {
			q := make([]string, len(want))
			for i, w := range want {
				q[i] = strconv.Quote(w)
			}
			add(path, "want %s or %s, got %q", strings.Join(q[:len(q)-1], ", "), q[len(q)-1], got)
		}
	}
	readable := func(path, file string) {
		if file != "" {
			if err := checkReadable(file); err != nil {
				add(path, "%v", err)
			}
		}
	}

	// gateway
	if c.Gateway.ID == "" {
		add("gateway.id", "required")
	} else if !occupancy.ValidID(c.Gateway.ID) {
		add("gateway.id", "%q must match [A-Za-z0-9_-]{1,64} (it appears in topics)", c.Gateway.ID)
	}

	// mqtt
	m := c.MQTT
	tlsSet := m.TLS.CAFile != "" || m.TLS.CertFile != "" || m.TLS.KeyFile != ""
	if m.Broker == "" {
		if m.Embedded.Listen == "" {
			add("mqtt.embedded.listen", "required when mqtt.broker is empty (the embedded broker)")
		} else if host, err := checkHostPort(m.Embedded.Listen); err != nil {
			add("mqtt.embedded.listen", "%v", err)
		} else if !IsLoopbackHost(host) && (m.Username == "" || m.PasswordFile == "") {
			add("mqtt.embedded.listen", "%q is not a loopback address: set mqtt.username and mqtt.password_file so the embedded broker does not accept anyone", m.Embedded.Listen)
		}
		if tlsSet {
			add("mqtt.tls", "set, but the embedded broker (mqtt.broker empty) is reached over loopback without TLS")
		}
	} else {
		u, err := url.Parse(m.Broker)
		switch {
		case err != nil:
			add("mqtt.broker", "not a URL: %v", errors.Unwrap(err))
		case !brokerSchemes[u.Scheme]:
			add("mqtt.broker", "want a tcp://, ssl://, ws:// or wss:// URL (or empty for the embedded broker), got %q", m.Broker)
		case u.Host == "" || u.Hostname() == "":
			add("mqtt.broker", "%q has no host", m.Broker)
		case tlsSet && !tlsSchemes[u.Scheme]:
			add("mqtt.tls", "set, but mqtt.broker %q does not use TLS (want ssl:// or wss://)", m.Broker)
		}
	}
	if m.ClientID != "" && (strings.ContainsAny(m.ClientID, "+#/") || len(m.ClientID) > 65535) {
		add("mqtt.client_id", "%q must not contain '+', '#' or '/'", m.ClientID)
	}
	if m.PasswordFile != "" && m.Username == "" {
		add("mqtt.password_file", "set without mqtt.username")
	}
	readable("mqtt.password_file", m.PasswordFile)
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		add("mqtt.tls", "cert_file and key_file go together (client certificate)")
	}
	readable("mqtt.tls.ca_file", m.TLS.CAFile)
	readable("mqtt.tls.cert_file", m.TLS.CertFile)
	readable("mqtt.tls.key_file", m.TLS.KeyFile)
	if len(m.EventsTopic) == 0 {
		add("mqtt.events_topic", "required: a topic filter such as dpu/+/events, or a list of them")
	}
	entryPath := func(i int) string {
		if len(m.EventsTopic) > 1 {
			return fmt.Sprintf("mqtt.events_topic[%d]", i)
		}
		return "mqtt.events_topic"
	}
	seen := map[string]bool{}
	outputs := c.outputTopics()
	for i, e := range m.EventsTopic {
		at := entryPath(i)
		fp := at
		if e.Kind != "" || e.Map != nil {
			fp += ".filter" // written as {filter, kind, map}
		}
		ps = append(ps, e.problems(at)...)
		if e.Filter == "" {
			add(fp, "required: a topic filter such as dpu/+/events")
			continue
		}
		if err := CheckTopicFilter(e.Filter, !e.DPUInPayload()); err != nil {
			add(fp, "%v", err)
			continue
		} else if seen[e.Filter] {
			add(fp, "%q is listed twice", e.Filter)
		}
		seen[e.Filter] = true
		// A filter that matches what occupancyd publishes would feed it its own output.
		for _, out := range outputs {
			if _, ok := mqtttopic.Match(e.Filter, out); ok {
				add(fp, "%q also matches %s, which occupancyd publishes", e.Filter, out)
				break
			}
		}
	}
	if m.MaxPayload <= 0 {
		add("mqtt.max_payload", "must be > 0")
	} else if m.MaxPayload > maxMQTTPayload {
		add("mqtt.max_payload", "must be <= %d (the MQTT limit)", maxMQTTPayload)
	}
	for _, t := range []struct{ key, topic string }{
		{"mqtt.output_prefix", m.OutputPrefix}, {"mqtt.status_topic", m.StatusTopic}, {"mqtt.rejected_topic", m.RejectedTopic},
	} {
		if t.topic == "" {
			if t.key == "mqtt.output_prefix" {
				add(t.key, "required")
			}
			continue // status and rejected topics derive from gateway.id
		}
		if err := checkTopicName(t.topic); err != nil {
			add(t.key, "%v", err)
		}
	}
	positive("mqtt.publish_min_interval", m.PublishMinInterval)
	if m.HomeAssistant.Enabled {
		if m.HomeAssistant.DiscoveryPrefix == "" {
			add("mqtt.homeassistant.discovery_prefix", "required when mqtt.homeassistant.enabled is true")
		} else if err := checkTopicName(m.HomeAssistant.DiscoveryPrefix); err != nil {
			add("mqtt.homeassistant.discovery_prefix", "%v", err)
		}
	}

	// storage
	if c.Storage.Dir == "" {
		add("storage.dir", "required")
	}
	positive("storage.retention", c.Storage.Retention)
	if c.Storage.MaxParked <= 0 {
		add("storage.max_parked", "must be > 0, got %d", c.Storage.MaxParked)
	}
	if c.Storage.MinFree < 0 {
		add("storage.min_free", "must be >= 0 (0: no floor), got %d", c.Storage.MinFree)
	}

	// engine
	e := c.Engine
	positive("engine.settle_after", e.SettleAfter)
	if e.Tick <= 0 {
		add("engine.tick", "must be > 0, got %s", e.Tick)
	} else if e.Tick < time.Millisecond {
		add("engine.tick", "must be >= 1ms, got %s", e.Tick)
	}
	oneOf("engine.late_events", e.LateEvents, "apply", "drop")
	if e.MaxFutureSkew < 0 {
		add("engine.max_future_skew", "must be >= 0, got %s", e.MaxFutureSkew)
	}
	if e.SettleAfter > 0 && c.Storage.Retention > 0 && c.Storage.Retention <= e.SettleAfter {
		add("storage.retention", "must be longer than engine.settle_after (%s), got %s", e.SettleAfter, c.Storage.Retention)
	}

	// http
	h := c.HTTP
	if h.Listen != "" {
		if host, err := checkHostPort(h.Listen); err != nil {
			add("http.listen", "%v", err)
		} else if !IsLoopbackHost(host) && h.Token == "" && h.TokenFile == "" && !h.OpenReads {
			add("http.listen", "%q is not a loopback address and no token is set: set http.token or http.token_file (reads then need it too), or http.open_reads: true to let anyone who reaches it read", h.Listen)
		}
	}
	if h.TokenFile != "" {
		if h.Token != "" {
			add("http.token_file", "set beside http.token: give the token one way")
		}
		if tok, err := ReadSecret(h.TokenFile); err != nil {
			add("http.token_file", "%v", err)
		} else if strings.TrimSpace(tok) == "" {
			add("http.token_file", "%s is empty", h.TokenFile)
		}
	}
	if h.MaxStreamClients <= 0 {
		add("http.max_stream_clients", "must be > 0, got %d", h.MaxStreamClients)
	}

	// health
	positive("health.dpu_quiet_after", c.Health.DPUQuietAfter)
	if !slices.Contains(LastEventMetrics, c.Health.LastEventMetric) {
		add("health.last_event_metric", `want "quiet", "all" or "none", got %q`, c.Health.LastEventMetric)
	}

	// log
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "console", "json")
	return append(ps, c.topologyProblems()...)
}

// topologyProblems are the topology's problems, under `topology.` or, with a
// topology file, in that file.
func (c Config) topologyProblems() []Problem {
	t := c.Topology
	ps := t.Validate()
	if len(t.Spaces) == 0 {
		ps = append([]occupancy.Problem{{Path: "spaces", Message: "at least one space is required"}}, ps...)
	}
	for i, d := range t.DPUs {
		if d.IngestTokenFile != "" {
			path := "dpus[" + strconv.Itoa(i) + "].ingest_token_file"
			if tok, err := ReadSecret(d.IngestTokenFile); err != nil {
				ps = append(ps, occupancy.Problem{Path: path, Message: err.Error()})
			} else if strings.TrimSpace(tok) == "" {
				ps = append(ps, occupancy.Problem{Path: path, Message: d.IngestTokenFile + " is empty"})
			}
		}
	}
	out := make([]Problem, len(ps))
	for i, p := range ps {
		out[i] = Problem{Path: p.Path, Message: p.Message, File: c.TopologyFile}
		if c.TopologyFile == "" {
			out[i].Path = joinPath("topology", p.Path)
		}
	}
	return out
}

const maxMQTTPayload = 268435455

var (
	brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}
	tlsSchemes    = map[string]bool{"ssl": true, "tls": true, "mqtts": true, "wss": true}
)

// checkHostPort checks a listen address "host:port" and returns the host.
func checkHostPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("want host:port such as 127.0.0.1:8080, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port of %q must be a number from 0 to 65535", addr)
	}
	return host, nil
}

// IsLoopbackHost reports whether host (a name or an IP, no port) is a loopback
// address; "" (all interfaces) is not.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// problems are the problems of an entry's kind and map, under path at.
func (e EventsTopic) problems(at string) []Problem {
	var ps []Problem
	k, err := occupancy.ParseReportKind(e.Kind)
	if err != nil {
		ps = append(ps, Problem{Path: at + ".kind", Message: err.Error()})
	}
	if e.Map != nil && err == nil {
		for _, p := range e.Map.Validate(k) {
			ps = append(ps, Problem{Path: joinPath(at+".map", p.Path), Message: p.Message})
		}
	}
	return ps
}

// CheckTopicFilter checks an events topic filter (mqtttopic.CheckFilter); with
// dpuLevel it needs a '+' level for the DPU id (an entry whose map takes the id from
// the payload needs none).
func CheckTopicFilter(f string, dpuLevel bool) error {
	if err := mqtttopic.CheckFilter(f); err != nil {
		return err
	}
	if dpuLevel && !slices.Contains(strings.Split(f, "/"), "+") {
		return fmt.Errorf("%q has no '+' level for the DPU id (e.g. dpu/+/events; or a map with dpu, the DPU id in the payload)", f)
	}
	return nil
}

// outputTopics are examples of every topic occupancyd publishes (for a space
// "space-id"), with the derived defaults filled in.
func (c Config) outputTopics() []string {
	d := c
	d.ApplyDefaults()
	m := d.MQTT
	out := []string{
		m.OutputPrefix + "/space-id", m.OutputPrefix + "/space-id/count",
		m.StatusTopic, m.RejectedTopic, d.InfoTopic(), d.DPUsTopic(),
	}
	if p := m.HomeAssistant.DiscoveryPrefix; m.HomeAssistant.Enabled {
		out = append(out, p+"/sensor/"+d.Gateway.ID+"_space-id/occupancy/config",
			p+"/sensor/"+d.Gateway.ID+"_space-id/utilization/config",
			p+"/binary_sensor/"+d.Gateway.ID+"/connectivity/config", p+"/sensor/"+d.Gateway.ID+"/quiet_dpus/config")
	}
	return out
}

// checkTopicName checks a topic (or topic prefix) occupancyd publishes to.
func checkTopicName(t string) error {
	if t == "" {
		return errors.New("empty topic")
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%q must not contain the wildcards '+' or '#'", t)
	}
	if strings.HasSuffix(t, "/") {
		return fmt.Errorf("%q must not end with '/'", t)
	}
	return nil
}
