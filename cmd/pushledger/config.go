package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Config is pushledger's configuration: defaults, then the file named by
// --config (or PUSHLEDGER_CONFIG), then PUSHLEDGER_* environment variables
// (PUSHLEDGER_HTTP_ADDR sets http.addr), then flags.
type Config struct {
	DataDir    string        `koanf:"data_dir"`
	AdminToken string        `koanf:"admin_token"`
	SecretKey  string        `koanf:"secret_key"`
	HTTP       HTTPConfig    `koanf:"http"`
	Log        LogConfig     `koanf:"log"`
	Webhook    WebhookConfig `koanf:"webhook"`
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

func defaults() map[string]any {
	return map[string]any{
		"data_dir":        "data",
		"http.addr":       "127.0.0.1:8080",
		"log.level":       "info",
		"log.format":      "text",
		"webhook.timeout": "10s",
		"url":             "http://127.0.0.1:8080",
	}
}

// envKeys maps PUSHLEDGER_* variables to config keys.
var envKeys = map[string]string{
	"DATA_DIR": "data_dir", "ADMIN_TOKEN": "admin_token", "SECRET_KEY": "secret_key",
	"HTTP_ADDR": "http.addr", "LOG_LEVEL": "log.level", "LOG_FORMAT": "log.format",
	"WEBHOOK_TIMEOUT": "webhook.timeout", "URL": "url", "APP_KEY": "app_key", "APP_SECRET": "app_secret",
}

// flagKeys maps flag names to config keys.
var flagKeys = map[string]string{
	"data-dir": "data_dir", "http-addr": "http.addr", "log-level": "log.level", "url": "url",
	"app-key": "app_key", "app-secret": "app_secret", "admin-token": "admin_token",
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
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
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
	return errors.Join(errs...)
}
