package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Config is pushledger's configuration: defaults, then the file named by
// --config (or PUSHLEDGER_CONFIG), then PUSHLEDGER_* environment variables
// (PUSHLEDGER_HTTP_ADDR sets http.addr), then flags.
type Config struct {
	DataDir    string         `koanf:"data_dir"`
	AdminToken string         `koanf:"admin_token"`
	SecretKey  string         `koanf:"secret_key"`
	HTTP       HTTPConfig     `koanf:"http"`
	Log        LogConfig      `koanf:"log"`
	Webhook    WebhookConfig  `koanf:"webhook"`
	Delivery   DeliveryConfig `koanf:"delivery"`
	Gateway    GatewayConfig  `koanf:"gateway"`
	// Client settings of the CLI.
	URL       string `koanf:"url"`
	AppKey    string `koanf:"app_key"`
	AppSecret string `koanf:"app_secret"`
}

type HTTPConfig struct {
	Addr string `koanf:"addr"`
}

type LogConfig struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

type WebhookConfig struct {
	Timeout time.Duration `koanf:"timeout"`
}

// GatewayConfig configures the device gateway.
type GatewayConfig struct {
	// Addr is the listen address (host:port), or "off".
	Addr string `koanf:"addr"`
	// Plain turns the Noise encryption off.
	Plain bool `koanf:"plain"`
	// ProxyProtocol expects a PROXY protocol v2 header on every connection.
	ProxyProtocol bool `koanf:"proxy_protocol"`
	// Heartbeat and IdleTimeout are announced to devices; reloaded on
	// SIGHUP.
	Heartbeat   time.Duration `koanf:"heartbeat"`
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// CredentialTTL is the validity of the device credentials issued (0:
	// they do not expire).
	CredentialTTL time.Duration `koanf:"credential_ttl"`
}

// DeliveryConfig configures the delivery sagas.
type DeliveryConfig struct {
	// Runners is the number of delivery runners (goroutines sharing the
	// message partitions).
	Runners int `koanf:"runners"`
	// Policy is the platform's default delivery policy, read onto the
	// built-in one: a mapping in the file, or a JSON object in
	// PUSHLEDGER_DELIVERY_POLICY. Reloaded on SIGHUP.
	Policy any `koanf:"policy"`
}

// PolicyJSON returns the configured policy as JSON, or nil.
func (d DeliveryConfig) PolicyJSON() (json.RawMessage, error) {
	switch v := d.Policy.(type) {
	case nil:
		return nil, nil
	case string:
		if strings.TrimSpace(v) == "" {
			return nil, nil
		}
		if !json.Valid([]byte(v)) {
			return nil, errors.New("delivery.policy is not valid JSON")
		}
		return json.RawMessage(v), nil
	case map[string]any:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("delivery.policy: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("delivery.policy must be a mapping (or a JSON object in the environment), not %T", d.Policy)
}

func defaults() map[string]any {
	return map[string]any{
		"data_dir":             "data",
		"http.addr":            "127.0.0.1:8080",
		"log.level":            "info",
		"log.format":           "text",
		"webhook.timeout":      "10s",
		"delivery.runners":     1,
		"gateway.addr":         "127.0.0.1:7100",
		"gateway.heartbeat":    "240s",
		"gateway.idle_timeout": "540s",
		"url":                  "http://127.0.0.1:8080",
	}
}

// envKeys maps PUSHLEDGER_* variables to config keys.
var envKeys = map[string]string{
	"DATA_DIR": "data_dir", "ADMIN_TOKEN": "admin_token", "SECRET_KEY": "secret_key",
	"HTTP_ADDR": "http.addr", "LOG_LEVEL": "log.level", "LOG_FORMAT": "log.format",
	"WEBHOOK_TIMEOUT": "webhook.timeout", "URL": "url", "APP_KEY": "app_key", "APP_SECRET": "app_secret",
	"RUNNERS": "delivery.runners", "DELIVERY_POLICY": "delivery.policy",
	"GATEWAY_ADDR": "gateway.addr", "GATEWAY_PLAIN": "gateway.plain", "GATEWAY_PROXY_PROTOCOL": "gateway.proxy_protocol",
	"GATEWAY_HEARTBEAT": "gateway.heartbeat", "GATEWAY_IDLE_TIMEOUT": "gateway.idle_timeout",
	"GATEWAY_CREDENTIAL_TTL": "gateway.credential_ttl",
}

// flagKeys maps flag names to config keys.
var flagKeys = map[string]string{
	"data-dir": "data_dir", "http-addr": "http.addr", "log-level": "log.level", "url": "url",
	"app-key": "app_key", "app-secret": "app_secret", "admin-token": "admin_token", "gateway-addr": "gateway.addr",
}

func loadConfig(flags *pflag.FlagSet) (Config, error) {
	k := koanf.New(".")
	for key, v := range defaults() {
		if err := k.Set(key, v); err != nil {
			return Config{}, err
		}
	}
	path, _ := flags.GetString("config")
	if path == "" {
		path = os.Getenv("PUSHLEDGER_CONFIG")
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	err := k.Load(env.ProviderWithValue("PUSHLEDGER_", ".", func(key, value string) (string, any) {
		if mapped, ok := envKeys[strings.TrimPrefix(key, "PUSHLEDGER_")]; ok {
			return mapped, value
		}
		return "", nil
	}), nil)
	if err != nil {
		return Config{}, err
	}
	var ferr error
	flags.Visit(func(f *pflag.Flag) {
		if key, ok := flagKeys[f.Name]; ok {
			ferr = errors.Join(ferr, k.Set(key, f.Value.String()))
		}
	})
	if ferr != nil {
		return Config{}, ferr
	}
	var c Config
	// koanf's decoding (it sets the result and the tag), plus ErrorUnused: a
	// mistyped key in the file (say datadir) is an error, not a setting
	// silently left at its default.
	dc := &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToTimeDurationHookFunc(),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
	}
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc}); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q is not debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q is not text or json", c.Log.Format))
	}
	if c.Delivery.Runners < 1 || c.Delivery.Runners > 64 {
		errs = append(errs, fmt.Errorf("delivery.runners %d is not in 1..64", c.Delivery.Runners))
	}
	if _, err := c.Delivery.PolicyJSON(); err != nil {
		errs = append(errs, err)
	}
	if g := c.Gateway; g.Heartbeat < time.Second || g.IdleTimeout <= g.Heartbeat || g.IdleTimeout > 24*time.Hour {
		errs = append(errs, fmt.Errorf("gateway.heartbeat %s and gateway.idle_timeout %s: want a heartbeat of at least 1s and an idle timeout above it, at most 24h", g.Heartbeat, g.IdleTimeout))
	}
	if ttl := c.Gateway.CredentialTTL; ttl != 0 && ttl < time.Minute {
		errs = append(errs, fmt.Errorf("gateway.credential_ttl %s: want 0 (no expiry) or at least 1m", ttl))
	}
	return errors.Join(errs...)
}

func (g GatewayConfig) heartbeat() wire.Heartbeat {
	return wire.Heartbeat{Interval: g.Heartbeat, IdleTimeout: g.IdleTimeout}
}
