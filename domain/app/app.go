// Package app is the pure model of a tenant app: its name and key, its
// (encrypted) signing secret, its delivery channels with their priority and
// settings, and its blacklist of users, devices and groups.
package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pushledger/pushledger/domain/event"
)

// Persisted event type names (see schema/events/). Never change one.
const (
	TypeCreated           = "app.created.v1"
	TypeChannelConfigured = "app.channel_configured.v1"
	TypeChannelRemoved    = "app.channel_removed.v1"
	TypeBlacklistAdded    = "app.blacklist_added.v1"
	TypeBlacklistRemoved  = "app.blacklist_removed.v1"
	TypePolicySet         = "app.delivery_policy_set.v1"
)

// EventTypes lists every persisted app event type.
func EventTypes() []string {
	return []string{TypeCreated, TypeChannelConfigured, TypeChannelRemoved, TypeBlacklistAdded, TypeBlacklistRemoved, TypePolicySet}
}

// StreamPrefix is the ledger stream category of apps.
const StreamPrefix = "app-"

// Stream names the ledger stream of app id.
func Stream(id string) string { return StreamPrefix + id }

// Blacklist kinds.
const (
	KindUser   = "user"   // a user alias
	KindDevice = "device" // a device id
	KindGroup  = "group"  // a tag
)

var (
	ErrNotFound = errors.New("app: not found")
	ErrInvalid  = errors.New("app: invalid command")
	// ErrInvalidTransition: an event or command does not apply to the app
	// as it is (it exists, or it does not). The error is a *TransitionError.
	ErrInvalidTransition = errors.New("app: invalid transition")
)

// TransitionError details ErrInvalidTransition: Event (an event type, or
// the command "create") was refused because the app exists (Exists, with id
// AppID) or does not.
type TransitionError struct {
	Event  string
	Exists bool
	AppID  string // the existing app's id; empty if it does not exist
}

func (e *TransitionError) Error() string {
	switch {
	case !e.Exists:
		return fmt.Sprintf("app: %s not allowed: the app does not exist", e.Event)
	case e.AppID == "":
		return fmt.Sprintf("app: %s not allowed: the app exists", e.Event)
	}
	return fmt.Sprintf("app: %s not allowed: app %s exists", e.Event, e.AppID)
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

type Event interface{ EventType() string }

// Created records a new app. SecretCiphertext is the app secret sealed under
// the platform's secret key; the plain secret is never recorded.
type Created struct {
	AppID            string    `json:"app_id"`
	Name             string    `json:"name"`
	AppKey           string    `json:"app_key"`
	SecretCiphertext []byte    `json:"secret_ciphertext"`
	At               time.Time `json:"at"`
}

// ChannelConfig is an app's configuration of one delivery channel. Lower
// Priority is tried first.
type ChannelConfig struct {
	Enabled  bool              `json:"enabled"`
	Priority int               `json:"priority"`
	Settings map[string]string `json:"settings,omitempty"`
}

type ChannelConfigured struct {
	Channel string        `json:"channel"`
	Config  ChannelConfig `json:"config"`
	At      time.Time     `json:"at"`
}
type ChannelRemoved struct {
	Channel string    `json:"channel"`
	At      time.Time `json:"at"`
}
type BlacklistAdded struct {
	Kind   string    `json:"kind"`
	Values []string  `json:"values"`
	At     time.Time `json:"at"`
}
type BlacklistRemoved struct {
	Kind   string    `json:"kind"`
	Values []string  `json:"values"`
	At     time.Time `json:"at"`
}

// PolicySet records the app's delivery policy (retries, ack windows,
// failover): a JSON object read onto the platform's defaults by the delivery
// sagas (domain/policy.Config), or null to go back to the defaults. The app
// domain keeps it opaque; whoever sets it validates it first.
type PolicySet struct {
	Policy json.RawMessage `json:"policy"`
	At     time.Time       `json:"at"`
}

func (PolicySet) EventType() string         { return TypePolicySet }
func (Created) EventType() string           { return TypeCreated }
func (ChannelConfigured) EventType() string { return TypeChannelConfigured }
func (ChannelRemoved) EventType() string    { return TypeChannelRemoved }
func (BlacklistAdded) EventType() string    { return TypeBlacklistAdded }
func (BlacklistRemoved) EventType() string  { return TypeBlacklistRemoved }

// Decode parses a persisted app event.
func Decode(eventType string, data []byte) (Event, error) {
	var e Event
	var err error
	switch eventType {
	case TypeCreated:
		e, err = event.Decode[Created](data)
	case TypeChannelConfigured:
		e, err = event.Decode[ChannelConfigured](data)
	case TypeChannelRemoved:
		e, err = event.Decode[ChannelRemoved](data)
	case TypeBlacklistAdded:
		e, err = event.Decode[BlacklistAdded](data)
	case TypeBlacklistRemoved:
		e, err = event.Decode[BlacklistRemoved](data)
	case TypePolicySet:
		e, err = event.Decode[PolicySet](data)
	default:
		return nil, fmt.Errorf("app: unknown event type %q", eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("app: decode %s: %w", eventType, err)
	}
	return e, nil
}

// App is the state folded from an app's events.
type App struct {
	ID               string
	Name             string
	Key              string
	SecretCiphertext []byte
	Channels         map[string]ChannelConfig
	Blacklist        map[string]map[string]struct{} // kind -> values
	// Policy is the app's delivery policy as set (PolicySet), nil for the
	// platform's defaults.
	Policy    json.RawMessage
	CreatedAt time.Time
	Version   int
}

// Blacklisted reports whether value of kind is blacklisted.
func (a *App) Blacklisted(kind, value string) bool {
	_, ok := a.Blacklist[kind][value]
	return ok
}

// BlacklistValues returns the blacklisted values of kind, sorted.
func (a *App) BlacklistValues(kind string) []string {
	return slices.Sorted(maps.Keys(a.Blacklist[kind]))
}

// Excludes reports whether the blacklist excludes a device: by its id, its
// user alias, or one of its tags (groups).
func (a *App) Excludes(deviceID, alias string, tags []string) bool {
	if a.Blacklisted(KindDevice, deviceID) || (alias != "" && a.Blacklisted(KindUser, alias)) {
		return true
	}
	for _, t := range tags {
		if a.Blacklisted(KindGroup, t) {
			return true
		}
	}
	return false
}

// ChannelOrder returns the enabled channels by priority, then name.
func (a *App) ChannelOrder() []string {
	var names []string
	for n, c := range a.Channels {
		if c.Enabled {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		pi, pj := a.Channels[names[i]].Priority, a.Channels[names[j]].Priority
		if pi != pj {
			return pi < pj
		}
		return names[i] < names[j]
	})
	return names
}

// Evolve folds one event into a. An event that does not apply is refused
// with a *TransitionError and leaves a unchanged.
func (a *App) Evolve(e Event) error {
	_, create := e.(Created)
	if exists := a.ID != ""; create == exists {
		return &TransitionError{Event: e.EventType(), Exists: exists, AppID: a.ID}
	}
	switch e := e.(type) {
	case Created:
		*a = App{ID: e.AppID, Name: e.Name, Key: e.AppKey, SecretCiphertext: e.SecretCiphertext, CreatedAt: e.At}
	case ChannelConfigured:
		ch := maps.Clone(a.Channels)
		if ch == nil {
			ch = map[string]ChannelConfig{}
		}
		cfg := e.Config
		cfg.Settings = maps.Clone(cfg.Settings)
		ch[e.Channel] = cfg
		a.Channels = ch
	case ChannelRemoved:
		ch := maps.Clone(a.Channels)
		delete(ch, e.Channel)
		a.Channels = ch
	case BlacklistAdded:
		// Copy on write, as for channels: a copy of a keeps its blacklist.
		set := maps.Clone(a.Blacklist[e.Kind])
		if set == nil {
			set = map[string]struct{}{}
		}
		for _, v := range e.Values {
			set[v] = struct{}{}
		}
		a.setBlacklist(e.Kind, set)
	case PolicySet:
		a.Policy = e.Policy
	case BlacklistRemoved:
		if set, ok := a.Blacklist[e.Kind]; ok {
			set = maps.Clone(set)
			for _, v := range e.Values {
				delete(set, v)
			}
			a.setBlacklist(e.Kind, set)
		}
	}
	a.Version++
	return nil
}

func (a *App) setBlacklist(kind string, set map[string]struct{}) {
	bl := maps.Clone(a.Blacklist)
	if bl == nil {
		bl = map[string]map[string]struct{}{}
	}
	bl[kind] = set
	a.Blacklist = bl
}

// Commands.
type Command interface{ commandName() string }

type Create struct {
	AppID, Name, AppKey string
	SecretCiphertext    []byte
}
type ConfigureChannel struct {
	Channel string
	Config  ChannelConfig
}
type RemoveChannel struct{ Channel string }
type AddToBlacklist struct {
	Kind   string
	Values []string
}
type RemoveFromBlacklist struct {
	Kind   string
	Values []string
}

// SetPolicy sets the app's delivery policy: a JSON object, validated by the
// caller, or empty (or null) for the platform's defaults. At most
// MaxPolicySize bytes.
type SetPolicy struct{ Policy json.RawMessage }

// MaxPolicySize bounds a delivery policy's JSON.
const MaxPolicySize = 16 << 10

func (Create) commandName() string              { return "create" }
func (ConfigureChannel) commandName() string    { return "configure channel" }
func (RemoveChannel) commandName() string       { return "remove channel" }
func (AddToBlacklist) commandName() string      { return "add to blacklist" }
func (RemoveFromBlacklist) commandName() string { return "remove from blacklist" }
func (SetPolicy) commandName() string           { return "set policy" }

// Decide returns the events command c produces on a at time now.
func Decide(a *App, c Command, now time.Time) ([]Event, error) {
	now = now.UTC()
	if _, create := c.(Create); !create && a.ID == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, c.commandName())
	}
	if !validText(c) {
		return nil, fmt.Errorf("%w: %s: text is not UTF-8", ErrInvalid, c.commandName())
	}
	switch c := c.(type) {
	case Create:
		if a.ID != "" {
			return nil, &TransitionError{Event: c.commandName(), Exists: true, AppID: a.ID}
		}
		var errs []error
		if c.AppID == "" || c.AppKey == "" || len(c.SecretCiphertext) == 0 {
			errs = append(errs, errors.New("app id, key and secret are required"))
		}
		if n := strings.TrimSpace(c.Name); n == "" || len(n) > 200 {
			errs = append(errs, errors.New("name must be 1..200 bytes"))
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
		}
		return []Event{Created{AppID: c.AppID, Name: strings.TrimSpace(c.Name), AppKey: c.AppKey, SecretCiphertext: c.SecretCiphertext, At: now}}, nil
	case ConfigureChannel:
		if c.Channel == "" || len(c.Channel) > 64 {
			return nil, fmt.Errorf("%w: channel name must be 1..64 bytes", ErrInvalid)
		}
		if old, ok := a.Channels[c.Channel]; ok && old.Enabled == c.Config.Enabled && old.Priority == c.Config.Priority && maps.Equal(old.Settings, c.Config.Settings) {
			return nil, nil
		}
		cfg := c.Config
		cfg.Settings = maps.Clone(cfg.Settings)
		if len(cfg.Settings) == 0 {
			cfg.Settings = nil // as JSON reads it back
		}
		return []Event{ChannelConfigured{Channel: c.Channel, Config: cfg, At: now}}, nil
	case RemoveChannel:
		if _, ok := a.Channels[c.Channel]; !ok {
			return nil, nil
		}
		return []Event{ChannelRemoved{Channel: c.Channel, At: now}}, nil
	case AddToBlacklist:
		vals, err := blacklistValues(c.Kind, c.Values)
		if err != nil {
			return nil, err
		}
		vals = slices.DeleteFunc(vals, func(v string) bool { return a.Blacklisted(c.Kind, v) })
		if len(vals) == 0 {
			return nil, nil
		}
		return []Event{BlacklistAdded{Kind: c.Kind, Values: vals, At: now}}, nil
	case RemoveFromBlacklist:
		vals, err := blacklistValues(c.Kind, c.Values)
		if err != nil {
			return nil, err
		}
		vals = slices.DeleteFunc(vals, func(v string) bool { return !a.Blacklisted(c.Kind, v) })
		if len(vals) == 0 {
			return nil, nil
		}
		return []Event{BlacklistRemoved{Kind: c.Kind, Values: vals, At: now}}, nil
	case SetPolicy:
		pol, err := policyJSON(c.Policy)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(pol, a.Policy) {
			return nil, nil
		}
		return []Event{PolicySet{Policy: pol, At: now}}, nil
	}
	return nil, fmt.Errorf("%w: unknown command %T", ErrInvalid, c)
}

// validText reports whether the strings c gives events are UTF-8: JSON
// holds nothing else, and a persisted event would replay differently.
func validText(c Command) bool {
	switch c := c.(type) {
	case Create:
		return event.ValidUTF8(c.AppID, c.Name, c.AppKey)
	case ConfigureChannel:
		if !event.ValidUTF8(c.Channel) {
			return false
		}
		for k, v := range c.Config.Settings {
			if !event.ValidUTF8(k, v) {
				return false
			}
		}
	case RemoveChannel:
		return event.ValidUTF8(c.Channel)
	case AddToBlacklist:
		return event.ValidUTF8(c.Kind) && event.ValidUTF8(c.Values...)
	case RemoveFromBlacklist:
		return event.ValidUTF8(c.Kind) && event.ValidUTF8(c.Values...)
	}
	return true
}

// policyJSON returns a policy in its stored form: compact JSON of an
// object, or nil for the defaults.
func policyJSON(p json.RawMessage) (json.RawMessage, error) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || string(p) == "null" {
		return nil, nil
	}
	if len(p) > MaxPolicySize {
		return nil, fmt.Errorf("%w: policy over %d bytes", ErrInvalid, MaxPolicySize)
	}
	if p[0] != '{' || !json.Valid(p) || !utf8.Valid(p) {
		return nil, fmt.Errorf("%w: policy must be a JSON object", ErrInvalid)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		return nil, fmt.Errorf("%w: policy: %w", ErrInvalid, err)
	}
	return b.Bytes(), nil
}

func blacklistValues(kind string, values []string) ([]string, error) {
	switch kind {
	case KindUser, KindDevice, KindGroup:
	default:
		return nil, fmt.Errorf("%w: blacklist kind %q is not user, device or group", ErrInvalid, kind)
	}
	if len(values) == 0 || len(values) > 1000 {
		return nil, fmt.Errorf("%w: 1..1000 values", ErrInvalid)
	}
	out := slices.Clone(values)
	sort.Strings(out)
	out = slices.Compact(out)
	for _, v := range out {
		if v == "" || len(v) > 128 {
			return nil, fmt.Errorf("%w: blacklist values must be 1..128 bytes", ErrInvalid)
		}
	}
	return out, nil
}

// Replay folds events from the empty state.
func Replay(events []Event) (App, error) {
	var a App
	for i, e := range events {
		if err := a.Evolve(e); err != nil {
			return a, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return a, nil
}
