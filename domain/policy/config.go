package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// Limits that Validate enforces.
const (
	// MaxAttemptsLimit bounds Config.MaxAttempts, RetryPolicy.MaxAttempts
	// and Config.MaxResends.
	MaxAttemptsLimit = 100
	// MaxDelay bounds every configured duration: a message lives at most
	// 28 days (message.MaxTTL), so no wait is ever longer.
	MaxDelay = 28 * 24 * time.Hour
)

// Well-known channel names with built-in policies in DefaultConfig. They are
// the names channels report (adapters/channels.Channel.Name).
const (
	ChannelGateway = "gateway"
	ChannelAPNs    = "apns"
	ChannelFCM     = "fcm"
	ChannelWebhook = "webhook"
)

// ErrInvalidConfig is what every *ConfigError matches.
var ErrInvalidConfig = errors.New("policy: invalid config")

// ConfigError is one problem of a configuration. Path names the field by its
// JSON names ("channels[apns].retry.jitter").
type ConfigError struct {
	Path    string
	Problem string
}

func (e *ConfigError) Error() string { return "policy: " + e.Path + ": " + e.Problem }

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Config is an app's delivery policy. It is a plain value: the runtime
// records it whole in an event when an operator changes it, and every
// decision takes the Config in force when it is made. Durations are JSON
// numbers of nanoseconds, in fields named *_ns.
//
// The zero value is not valid: start from DefaultConfig (decoding JSON onto
// it keeps the defaults of fields the JSON leaves out; a channel entry in
// the JSON replaces that channel's policy whole). Treat a Config as
// immutable once shared; Clone copies it.
type Config struct {
	// MaxAttempts bounds the attempts of a message in one cycle, across
	// all channels. When the attempt that reaches it fails, the message
	// fails finally and an alert is raised. 1..100; default 6.
	MaxAttempts int `json:"max_attempts"`
	// MaxResends bounds the manual resends of a message (each starts a new
	// cycle). 0..100; default 3.
	MaxResends int `json:"max_resends"`
	// AttemptTimeout is how long an attempt may stay "sending" (started,
	// neither sent nor failed) before it is taken as lost with
	// ReasonAttemptTimeout: the node sending it died. It must exceed the
	// runtime's send timeout. (0, 1h]; default 1 min.
	AttemptTimeout time.Duration `json:"attempt_timeout_ns"`
	// Default is the policy of channels not in Channels.
	Default ChannelPolicy `json:"default"`
	// Channels holds per-channel policies by channel name.
	Channels map[string]ChannelPolicy `json:"channels,omitempty"`
	// Failover chooses among channels.
	Failover FailoverPolicy `json:"failover"`
}

// ChannelPolicy is how one channel is used.
type ChannelPolicy struct {
	// Retry is the channel's retry schedule.
	Retry RetryPolicy `json:"retry"`
	// AckWindow is how long after the channel accepted a push the device
	// has to acknowledge it before the push is resent (with the same
	// message id: devices deduplicate by it) as a new attempt. 0 means the
	// channel gets no acknowledgements to wait for: an accepted push is
	// never resent. [0, 28d].
	AckWindow time.Duration `json:"ack_window_ns"`
	// HoldInBackground marks a channel whose notifications the device's
	// operating system shows without the app (APNs): once it accepted a
	// push, no resend goes out while the app is in the background, since
	// it would show twice. See ResendAllowed.
	HoldInBackground bool `json:"hold_in_background"`
	// AppDedup marks a channel whose pushes reach the app's code, which
	// deduplicates by message id (pushledger's gateway): a resend on it is
	// allowed while the app is in the background if the device is online
	// on the gateway. See ResendAllowed.
	AppDedup bool `json:"app_dedup"`
	// StoreAndForward marks a channel that keeps a push it accepted for an
	// offline device until the message expires, and hands it over when
	// the device connects (pushledger's gateway). When its ack window ends
	// and nothing else can be tried (no channel left, the attempts spent,
	// a retry only after expiry), the message keeps waiting for the
	// acknowledgement until it expires instead of failing finally: the
	// push is still on its way.
	StoreAndForward bool `json:"store_and_forward"`
}

// DefaultConfig returns the policy of an app nobody configured:
//
//   - 6 attempts per cycle, 3 manual resends, attempts lost after 1 min;
//   - any channel: DefaultRetryPolicy, no ack window;
//   - gateway: 3 attempts 1 s doubling up to 1 min, ack window 30 s,
//     app dedup, store and forward;
//   - apns: DefaultRetryPolicy, ack window 10 min, held in background;
//   - fcm: 3 attempts 10 s doubling up to 5 min, at least 1 min after a 429
//     (FCM's documented minimum for QUOTA_EXCEEDED), ack window 10 min;
//   - webhook: DefaultRetryPolicy, no ack window (the receiver's 2xx is all
//     there is);
//   - DefaultFailoverPolicy.
func DefaultConfig() Config {
	gw := DefaultRetryPolicy()
	gw.Max = time.Minute
	fcm := DefaultRetryPolicy()
	fcm.Initial, fcm.MinThrottled = 10*time.Second, time.Minute
	return Config{
		MaxAttempts:    6,
		MaxResends:     3,
		AttemptTimeout: time.Minute,
		Default:        ChannelPolicy{Retry: DefaultRetryPolicy()},
		Channels: map[string]ChannelPolicy{
			ChannelGateway: {Retry: gw, AckWindow: 30 * time.Second, AppDedup: true, StoreAndForward: true},
			ChannelAPNs:    {Retry: DefaultRetryPolicy(), AckWindow: 10 * time.Minute, HoldInBackground: true},
			ChannelFCM:     {Retry: fcm, AckWindow: 10 * time.Minute},
			ChannelWebhook: {Retry: DefaultRetryPolicy()},
		},
		Failover: DefaultFailoverPolicy(),
	}
}

// Channel returns the policy of the named channel: its entry in Channels,
// or Default.
func (c Config) Channel(name string) ChannelPolicy {
	if p, ok := c.Channels[name]; ok {
		return p
	}
	return c.Default
}

// Clone returns a copy of c that shares nothing with it.
func (c Config) Clone() Config {
	c.Channels = maps.Clone(c.Channels)
	return c
}

// Validate reports every problem of c at once: errors.Join of one
// *ConfigError per problem (each matches ErrInvalidConfig), or nil.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: field, Problem: fmt.Sprintf(format, args...)})
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > MaxAttemptsLimit {
		bad("max_attempts", "%d not in [1, %d]", c.MaxAttempts, MaxAttemptsLimit)
	}
	if c.MaxResends < 0 || c.MaxResends > MaxAttemptsLimit {
		bad("max_resends", "%d not in [0, %d]", c.MaxResends, MaxAttemptsLimit)
	}
	if c.AttemptTimeout <= 0 || c.AttemptTimeout > time.Hour {
		bad("attempt_timeout_ns", "%s not in (0, 1h]", c.AttemptTimeout)
	}
	errs = append(errs, c.Default.problems("default")...)
	for _, name := range slices.Sorted(maps.Keys(c.Channels)) {
		path := fmt.Sprintf("channels[%s]", name)
		if name == "" || len(name) > 64 || !utf8.ValidString(name) {
			bad(fmt.Sprintf("channels[%q]", name), "channel name must be 1..64 bytes of UTF-8")
			path = fmt.Sprintf("channels[%q]", name)
		}
		errs = append(errs, c.Channels[name].problems(path)...)
	}
	errs = append(errs, c.Failover.problems("failover")...)
	return joinProblems(errs)
}

func (p ChannelPolicy) problems(path string) []error {
	errs := p.Retry.problems(join(path, "retry"))
	if p.AckWindow < 0 || p.AckWindow > MaxDelay {
		errs = append(errs, &ConfigError{Path: join(path, "ack_window_ns"), Problem: fmt.Sprintf("%s not in [0, %s]", p.AckWindow, MaxDelay)})
	}
	return errs
}

// Validate reports every problem of p at once, or nil.
func (p ChannelPolicy) Validate() error { return joinProblems(p.problems("")) }

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func joinProblems(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// Parse reads a policy's JSON onto base (fields the JSON leaves out keep
// base's values; a channel entry replaces that channel's policy whole) and
// validates the result. Unknown fields are errors.
func Parse(data []byte, base Config) (Config, error) {
	c := base.Clone()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return base, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if dec.More() {
		return base, fmt.Errorf("%w: data after the JSON object", ErrInvalidConfig)
	}
	if err := c.Validate(); err != nil {
		return base, err
	}
	return c, nil
}
