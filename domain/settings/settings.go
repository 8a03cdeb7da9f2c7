// Package settings is the pure model of the platform's own settings that
// operators change at run time: today the default delivery policy, read
// from the configuration file at start and on reload. Every change is an
// event, so the ledger answers what policy was in force when.
package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/pushledger/pushledger/domain/event"
)

// Persisted event type names (see schema/events/). Never change one.
const (
	TypeDeliveryPolicySet = "settings.delivery_policy_set.v1"
)

// EventTypes lists every persisted settings event type.
func EventTypes() []string { return []string{TypeDeliveryPolicySet} }

// Stream is the ledger stream of the platform's delivery settings.
const Stream = "settings-delivery"

// ErrInvalid: a command's input is not acceptable.
var ErrInvalid = errors.New("settings: invalid command")

// Event is a settings event.
type Event interface{ EventType() string }

// DeliveryPolicySet records the platform's default delivery policy: the
// JSON object read onto the built-in defaults (domain/policy), or null for
// the built-in defaults themselves. Source says where it came from (the
// configuration file, a reload).
type DeliveryPolicySet struct {
	Policy json.RawMessage `json:"policy"`
	Source string          `json:"source"`
	At     time.Time       `json:"at"`
}

func (DeliveryPolicySet) EventType() string { return TypeDeliveryPolicySet }

// Decode parses a persisted settings event.
func Decode(eventType string, data []byte) (Event, error) {
	switch eventType {
	case TypeDeliveryPolicySet:
		e, err := event.Decode[DeliveryPolicySet](data)
		if err != nil {
			return nil, fmt.Errorf("settings: decode %s: %w", eventType, err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("settings: unknown event type %q", eventType)
}

// Settings is the state folded from the settings stream.
type Settings struct {
	// Policy is the default delivery policy in force (nil: built-in).
	Policy json.RawMessage
	// Version counts the events folded.
	Version int
}

// Evolve folds one event.
func (s *Settings) Evolve(e Event) error {
	switch e := e.(type) {
	case DeliveryPolicySet:
		s.Policy = e.Policy
	default:
		return fmt.Errorf("settings: unknown event %T", e)
	}
	s.Version++
	return nil
}

// SetDeliveryPolicy sets the default delivery policy (validated by the
// caller): a JSON object, or empty for the built-in defaults. Setting the
// policy in force records nothing.
type SetDeliveryPolicy struct {
	Policy json.RawMessage
	Source string
}

// MaxPolicySize bounds a policy's JSON.
const MaxPolicySize = 64 << 10

// Decide returns the events c produces on s at time now.
func Decide(s *Settings, c SetDeliveryPolicy, now time.Time) ([]Event, error) {
	pol := bytes.TrimSpace(c.Policy)
	if len(pol) == 0 || string(pol) == "null" {
		pol = nil
	} else {
		if len(pol) > MaxPolicySize || pol[0] != '{' || !json.Valid(pol) || !utf8.Valid(pol) {
			return nil, fmt.Errorf("%w: the policy must be a JSON object of at most %d bytes", ErrInvalid, MaxPolicySize)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, pol); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		pol = b.Bytes()
	}
	if !utf8.ValidString(c.Source) || len(c.Source) > 200 {
		return nil, fmt.Errorf("%w: source must be at most 200 bytes of UTF-8", ErrInvalid)
	}
	if s.Version > 0 && bytes.Equal(pol, s.Policy) {
		return nil, nil
	}
	return []Event{DeliveryPolicySet{Policy: pol, Source: c.Source, At: now.UTC()}}, nil
}
