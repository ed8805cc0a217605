package gateway

import (
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// Config is the whole occupancyd configuration file (DESIGN section 7).
// Decoding is strict: unknown keys are errors. Defaults come from DefaultConfig,
// then the file is decoded over them, then Validate reports every problem with its
// key path.
type Config struct {
	Gateway  GatewayConfig            `yaml:"gateway"`
	MQTT     MQTTConfig               `yaml:"mqtt"`
	Storage  StorageConfig            `yaml:"storage"`
	Engine   EngineConfig             `yaml:"engine"`
	HTTP     HTTPConfig               `yaml:"http"`
	Log      LogConfig                `yaml:"log"`
	Topology occupancy.TopologyConfig `yaml:"topology"`
}

type GatewayConfig struct {
	ID string `yaml:"id"`
}

type MQTTConfig struct {
	Broker        string              `yaml:"broker"` // "" = embedded broker
	Embedded      EmbeddedConfig      `yaml:"embedded"`
	ClientID      string              `yaml:"client_id"` // default occupancyd-<gateway.id>
	Username      string              `yaml:"username"`
	PasswordFile  string              `yaml:"password_file"`
	TLS           TLSConfig           `yaml:"tls"`
	EventsTopic   StringList          `yaml:"events_topic"` // one filter or a list
	MaxPayload    int                 `yaml:"max_payload"`
	OutputPrefix  string              `yaml:"output_prefix"`
	StatusTopic   string              `yaml:"status_topic"`   // default occupancyd/<gateway.id>/status
	RejectedTopic string              `yaml:"rejected_topic"` // default occupancyd/<gateway.id>/rejected
	HomeAssistant HomeAssistantConfig `yaml:"homeassistant"`
}

type EmbeddedConfig struct {
	Listen string `yaml:"listen"`
}

type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type HomeAssistantConfig struct {
	Enabled         bool   `yaml:"enabled"`
	DiscoveryPrefix string `yaml:"discovery_prefix"`
}

type StorageConfig struct {
	Dir        string        `yaml:"dir"`
	Retention  time.Duration `yaml:"retention"`
	ArchiveDir string        `yaml:"archive_dir"`
	MaxParked  int           `yaml:"max_parked"`
}

type EngineConfig struct {
	SettleAfter   time.Duration `yaml:"settle_after"`
	Tick          time.Duration `yaml:"tick"`
	LateEvents    string        `yaml:"late_events"` // apply | drop
	ClampNegative bool          `yaml:"clamp_negative"`
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
}

type HTTPConfig struct {
	Listen string `yaml:"listen"` // "" disables the HTTP API
	Token  string `yaml:"token"`
}

type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // console | json
}

// StringList decodes from a YAML string or a list of strings.
type StringList []string

// DefaultConfig returns the defaults of DESIGN section 7.
func DefaultConfig() Config {
	return Config{
		Gateway: GatewayConfig{ID: "demo"},
		MQTT: MQTTConfig{
			Embedded:      EmbeddedConfig{Listen: "127.0.0.1:1883"},
			EventsTopic:   StringList{"dpu/+/events"},
			MaxPayload:    262144,
			OutputPrefix:  "occupancy",
			HomeAssistant: HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "homeassistant"},
		},
		Storage: StorageConfig{Dir: "./data", Retention: 2160 * time.Hour, MaxParked: 1000000},
		Engine: EngineConfig{
			SettleAfter:   5 * time.Minute,
			Tick:          time.Second,
			LateEvents:    "apply",
			ClampNegative: true,
			MaxFutureSkew: time.Minute,
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:8080"},
		Log:  LogConfig{Level: "info", Format: "console"},
	}
}
