// Package device is the pure model of an app's device registrations: the
// device's platform and vendor tokens, its user alias, tags, logout and token
// invalidation. No I/O, no clock: time is passed in.
package device

import (
	"errors"
	"fmt"
	"github.com/pushledger/pushledger/domain/event"
	"maps"
	"slices"
	"sort"
	"time"
)

// Persisted event type names (see schema/events/). Never change one.
const (
	TypeRegistered       = "device.registered.v1"
	TypeUpdated          = "device.updated.v1"
	TypeAliasBound       = "device.alias_bound.v1"
	TypeAliasUnbound     = "device.alias_unbound.v1"
	TypeTagsAdded        = "device.tags_added.v1"
	TypeTagsRemoved      = "device.tags_removed.v1"
	TypeLoggedOut        = "device.logged_out.v1"
	TypeTokenInvalidated = "device.token_invalidated.v1"
)

// EventTypes lists every persisted device event type.
func EventTypes() []string {
	return []string{TypeRegistered, TypeUpdated, TypeAliasBound, TypeAliasUnbound, TypeTagsAdded, TypeTagsRemoved, TypeLoggedOut, TypeTokenInvalidated}
}

// StreamPrefix is the ledger stream category of devices.
const StreamPrefix = "device-"

// Stream names the ledger stream of device id of app appID.
func Stream(appID, id string) string { return StreamPrefix + appID + "-" + id }

// Platforms.
const (
	PlatformAndroid = "android"
	PlatformIOS     = "ios"
	PlatformHarmony = "harmony"
	PlatformWeb     = "web"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("device: not registered")
	ErrInvalid  = errors.New("device: invalid command")
	// ErrInvalidTransition: an event does not apply to the device in its
	// state. The error is a *TransitionError.
	ErrInvalidTransition = errors.New("device: invalid transition")
)

// State is a device's registration state, as a TransitionError reports it.
type State string

// States.
const (
	StateNotRegistered State = "not registered" // never registered
	StateActive        State = "active"         // registered and not logged out
	StateLoggedOut     State = "logged out"     // registered, then logged out
)

// TransitionError details ErrInvalidTransition: Event (an event type) was
// refused on a device in State.
type TransitionError struct {
	Event string
	State State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("device: %s not allowed on a device that is %s", e.Event, e.State)
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// Event is a device event.
type Event interface{ EventType() string }

// Profile is what a device tells about itself at registration.
type Profile struct {
	Platform  string            `json:"platform"`
	Brand     string            `json:"brand,omitempty"`
	Model     string            `json:"model,omitempty"`
	OSVersion string            `json:"os_version,omitempty"`
	Tokens    map[string]string `json:"tokens,omitempty"` // channel -> vendor push token
}

type Registered struct {
	AppID    string    `json:"app_id"`
	DeviceID string    `json:"device_id"`
	Profile  Profile   `json:"profile"`
	At       time.Time `json:"at"`
}
type Updated struct {
	Profile Profile   `json:"profile"`
	At      time.Time `json:"at"`
}
type AliasBound struct {
	Alias string    `json:"alias"`
	At    time.Time `json:"at"`
}
type AliasUnbound struct {
	Alias string    `json:"alias"`
	At    time.Time `json:"at"`
}
type TagsAdded struct {
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
}
type TagsRemoved struct {
	Tags []string  `json:"tags"`
	At   time.Time `json:"at"`
}
type LoggedOut struct {
	At time.Time `json:"at"`
}
type TokenInvalidated struct {
	Channel string    `json:"channel"`
	Token   string    `json:"token"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

func (Registered) EventType() string       { return TypeRegistered }
func (Updated) EventType() string          { return TypeUpdated }
func (AliasBound) EventType() string       { return TypeAliasBound }
func (AliasUnbound) EventType() string     { return TypeAliasUnbound }
func (TagsAdded) EventType() string        { return TypeTagsAdded }
func (TagsRemoved) EventType() string      { return TypeTagsRemoved }
func (LoggedOut) EventType() string        { return TypeLoggedOut }
func (TokenInvalidated) EventType() string { return TypeTokenInvalidated }

// Decode parses a persisted device event.
func Decode(eventType string, data []byte) (Event, error) {
	var e Event
	var err error
	switch eventType {
	case TypeRegistered:
		e, err = event.Decode[Registered](data)
	case TypeUpdated:
		e, err = event.Decode[Updated](data)
	case TypeAliasBound:
		e, err = event.Decode[AliasBound](data)
	case TypeAliasUnbound:
		e, err = event.Decode[AliasUnbound](data)
	case TypeTagsAdded:
		e, err = event.Decode[TagsAdded](data)
	case TypeTagsRemoved:
		e, err = event.Decode[TagsRemoved](data)
	case TypeLoggedOut:
		e, err = event.Decode[LoggedOut](data)
	case TypeTokenInvalidated:
		e, err = event.Decode[TokenInvalidated](data)
	default:
		return nil, fmt.Errorf("device: unknown event type %q", eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("device: decode %s: %w", eventType, err)
	}
	return e, nil
}

// Device is the state folded from a device's events.
type Device struct {
	AppID        string
	ID           string
	Profile      Profile
	Alias        string
	Tags         map[string]struct{}
	Active       bool // registered and not logged out
	Registered   bool
	RegisteredAt time.Time
	UpdatedAt    time.Time
	Version      int
}

// TagList returns the device's tags sorted.
func (d *Device) TagList() []string {
	return slices.Sorted(maps.Keys(d.Tags))
}

// state is d's registration state.
func (d *Device) state() State {
	switch {
	case d.Active:
		return StateActive
	case d.Registered:
		return StateLoggedOut
	}
	return StateNotRegistered
}

// Evolve folds one event into d. An event that does not apply is refused
// with a *TransitionError and leaves d unchanged.
func (d *Device) Evolve(e Event) error {
	var ok bool
	switch e.(type) {
	case Registered:
		ok = !d.Active
	case TokenInvalidated:
		ok = d.Registered
	default:
		ok = d.Active
	}
	if !ok {
		return &TransitionError{Event: e.EventType(), State: d.state()}
	}
	switch e := e.(type) {
	case Registered:
		tags := d.Tags
		*d = Device{AppID: e.AppID, ID: e.DeviceID, Profile: cloneProfile(e.Profile), Tags: tags, Alias: d.Alias,
			Active: true, Registered: true, RegisteredAt: e.At, UpdatedAt: e.At, Version: d.Version}
	case Updated:
		d.Profile, d.UpdatedAt = cloneProfile(e.Profile), e.At
	case AliasBound:
		d.Alias, d.UpdatedAt = e.Alias, e.At
	case AliasUnbound:
		d.Alias, d.UpdatedAt = "", e.At
	case TagsAdded:
		// Copy on write, as for tokens: a copy of d keeps its tags.
		tags := maps.Clone(d.Tags)
		if tags == nil {
			tags = map[string]struct{}{}
		}
		for _, t := range e.Tags {
			tags[t] = struct{}{}
		}
		d.Tags, d.UpdatedAt = tags, e.At
	case TagsRemoved:
		tags := maps.Clone(d.Tags)
		for _, t := range e.Tags {
			delete(tags, t)
		}
		d.Tags, d.UpdatedAt = tags, e.At
	case LoggedOut:
		d.Active, d.Alias, d.UpdatedAt = false, "", e.At
	case TokenInvalidated:
		if d.Profile.Tokens[e.Channel] == e.Token {
			tokens := maps.Clone(d.Profile.Tokens)
			delete(tokens, e.Channel)
			d.Profile.Tokens = tokens
		}
		d.UpdatedAt = e.At
	}
	d.Version++
	return nil
}

// cloneProfile copies p's tokens; no tokens is nil, as JSON reads it back.
func cloneProfile(p Profile) Profile {
	p.Tokens = maps.Clone(p.Tokens)
	if len(p.Tokens) == 0 {
		p.Tokens = nil
	}
	return p
}

// Commands.
type Command interface{ commandName() string }

// Register registers a device or updates its profile; after a logout it
// registers it again.
type Register struct {
	AppID, DeviceID string
	Profile         Profile
}
type BindAlias struct{ Alias string }
type UnbindAlias struct{}
type AddTags struct{ Tags []string }
type RemoveTags struct{ Tags []string }
type Logout struct{}
type InvalidateToken struct{ Channel, Token, Reason string }

func (Register) commandName() string        { return "register" }
func (BindAlias) commandName() string       { return "bind alias" }
func (UnbindAlias) commandName() string     { return "unbind alias" }
func (AddTags) commandName() string         { return "add tags" }
func (RemoveTags) commandName() string      { return "remove tags" }
func (Logout) commandName() string          { return "logout" }
func (InvalidateToken) commandName() string { return "invalidate token" }

// Limits.
const (
	MaxIDLen   = 128
	MaxTagLen  = 64
	MaxTags    = 100
	MaxTagsCmd = 100
)

// Decide returns the events command c produces on d at time now. An empty
// slice and nil error means nothing changes (idempotent repeat).
func Decide(d *Device, c Command, now time.Time) ([]Event, error) {
	now = now.UTC()
	if _, reg := c.(Register); !reg && !d.Active {
		if _, ok := c.(InvalidateToken); !ok || !d.Registered {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, c.commandName())
		}
	}
	if !validText(c) {
		return nil, fmt.Errorf("%w: %s: text is not UTF-8", ErrInvalid, c.commandName())
	}
	switch c := c.(type) {
	case Register:
		if err := validateRegister(c); err != nil {
			return nil, err
		}
		if !d.Active {
			return []Event{Registered{AppID: c.AppID, DeviceID: c.DeviceID, Profile: cloneProfile(c.Profile), At: now}}, nil
		}
		if equalProfile(d.Profile, c.Profile) {
			return nil, nil
		}
		return []Event{Updated{Profile: cloneProfile(c.Profile), At: now}}, nil
	case BindAlias:
		if c.Alias == "" || len(c.Alias) > MaxIDLen {
			return nil, fmt.Errorf("%w: alias must be 1..%d bytes", ErrInvalid, MaxIDLen)
		}
		if d.Alias == c.Alias {
			return nil, nil
		}
		return []Event{AliasBound{Alias: c.Alias, At: now}}, nil
	case UnbindAlias:
		if d.Alias == "" {
			return nil, nil
		}
		return []Event{AliasUnbound{Alias: d.Alias, At: now}}, nil
	case AddTags:
		tags, err := cleanTags(c.Tags)
		if err != nil {
			return nil, err
		}
		var add []string
		for _, t := range tags {
			if _, ok := d.Tags[t]; !ok {
				add = append(add, t)
			}
		}
		if len(add) == 0 {
			return nil, nil
		}
		if len(d.Tags)+len(add) > MaxTags {
			return nil, fmt.Errorf("%w: a device has at most %d tags", ErrInvalid, MaxTags)
		}
		return []Event{TagsAdded{Tags: add, At: now}}, nil
	case RemoveTags:
		tags, err := cleanTags(c.Tags)
		if err != nil {
			return nil, err
		}
		var rm []string
		for _, t := range tags {
			if _, ok := d.Tags[t]; ok {
				rm = append(rm, t)
			}
		}
		if len(rm) == 0 {
			return nil, nil
		}
		return []Event{TagsRemoved{Tags: rm, At: now}}, nil
	case Logout:
		return []Event{LoggedOut{At: now}}, nil
	case InvalidateToken:
		if c.Channel == "" || c.Token == "" {
			return nil, fmt.Errorf("%w: channel and token are required", ErrInvalid)
		}
		if d.Profile.Tokens[c.Channel] != c.Token {
			return nil, nil // already replaced or invalidated
		}
		return []Event{TokenInvalidated{Channel: c.Channel, Token: c.Token, Reason: c.Reason, At: now}}, nil
	}
	return nil, fmt.Errorf("%w: unknown command %T", ErrInvalid, c)
}

// validText reports whether the strings c gives events are UTF-8: JSON
// holds nothing else, and a persisted event would replay differently.
func validText(c Command) bool {
	switch c := c.(type) {
	case Register:
		p := c.Profile
		if !event.ValidUTF8(c.AppID, c.DeviceID, p.Platform, p.Brand, p.Model, p.OSVersion) {
			return false
		}
		for ch, tok := range p.Tokens {
			if !event.ValidUTF8(ch, tok) {
				return false
			}
		}
	case BindAlias:
		return event.ValidUTF8(c.Alias)
	case AddTags:
		return event.ValidUTF8(c.Tags...)
	case RemoveTags:
		return event.ValidUTF8(c.Tags...)
	case InvalidateToken:
		return event.ValidUTF8(c.Channel, c.Token, c.Reason)
	}
	return true
}

func validateRegister(c Register) error {
	var errs []error
	if c.AppID == "" {
		errs = append(errs, errors.New("app id is empty"))
	}
	if !ValidID(c.DeviceID) {
		errs = append(errs, fmt.Errorf("device id must be 1..%d of [A-Za-z0-9._:-]", MaxIDLen))
	}
	switch c.Profile.Platform {
	case PlatformAndroid, PlatformIOS, PlatformHarmony, PlatformWeb:
	default:
		errs = append(errs, fmt.Errorf("platform %q is not one of android, ios, harmony, web", c.Profile.Platform))
	}
	for ch, tok := range c.Profile.Tokens {
		if ch == "" || tok == "" || len(tok) > 4096 {
			errs = append(errs, fmt.Errorf("token for channel %q is empty or too long", ch))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// ValidID reports whether s is a usable device id: 1..MaxIDLen bytes of
// [A-Za-z0-9._:-] (the id is part of a stream name).
func ValidID(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func cleanTags(tags []string) ([]string, error) {
	if len(tags) == 0 || len(tags) > MaxTagsCmd {
		return nil, fmt.Errorf("%w: 1..%d tags", ErrInvalid, MaxTagsCmd)
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if t == "" || len(t) > MaxTagLen {
			return nil, fmt.Errorf("%w: tag must be 1..%d bytes", ErrInvalid, MaxTagLen)
		}
		out = append(out, t)
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

func equalProfile(a, b Profile) bool {
	return a.Platform == b.Platform && a.Brand == b.Brand && a.Model == b.Model && a.OSVersion == b.OSVersion && maps.Equal(a.Tokens, b.Tokens)
}

// Replay folds events from the empty state.
func Replay(events []Event) (Device, error) {
	var d Device
	for i, e := range events {
		if err := d.Evolve(e); err != nil {
			return d, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return d, nil
}
