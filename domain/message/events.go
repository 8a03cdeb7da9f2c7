// Package message is the pure model of a push message's lifecycle: the
// commands that may be decided on it, the events that record every state
// transition, and the fold of those events into state. It does no I/O and
// reads no clock: time and ids are passed in.
package message

import (
	"encoding/json"
	"fmt"
	"github.com/pushledger/pushledger/domain/event"
	"strings"
	"time"
)

// Persisted event type names. They are part of the ledger's format: never
// change one; add a new version instead. JSON schemas: schema/events/.
const (
	TypeAccepted        = "message.accepted.v1"
	TypeScheduled       = "message.scheduled.v1"
	TypeSending         = "message.sending.v1"
	TypeSent            = "message.sent.v1"
	TypeDelivered       = "message.delivered.v1"
	TypeDeliveredBatch  = "message.delivered.v2"
	TypeOpened          = "message.opened.v1"
	TypeFailed          = "message.failed.v1"
	TypeExpired         = "message.expired.v1"
	TypeCancelled       = "message.cancelled.v1"
	TypeResendRequested = "message.resend_requested.v1"
)

// EventTypes lists every persisted message event type.
func EventTypes() []string {
	return []string{TypeAccepted, TypeScheduled, TypeSending, TypeSent, TypeDelivered, TypeDeliveredBatch, TypeOpened, TypeFailed, TypeExpired, TypeCancelled, TypeResendRequested}
}

// StreamPrefix is the ledger stream category of messages.
const StreamPrefix = "message-"

// Stream names the ledger stream of message id.
func Stream(id string) string { return StreamPrefix + id }

// IDFromStream returns the message id of a message stream's name, or ""
// when stream is not one.
func IDFromStream(stream string) string {
	id, ok := strings.CutPrefix(stream, StreamPrefix)
	if !ok {
		return ""
	}
	return id
}

// Event is a message event.
type Event interface{ EventType() string }

// Audience selects the devices of an app a message goes to. Exactly one of
// DeviceIDs, Aliases, Tags or Broadcast is set.
type Audience struct {
	DeviceIDs []string `json:"device_ids,omitempty"`
	Aliases   []string `json:"aliases,omitempty"`
	Tags      *TagExpr `json:"tags,omitempty"`
	Broadcast bool     `json:"broadcast,omitempty"`
}

// TagExpr selects devices by tags: all of AllOf, at least one of AnyOf (when
// set), none of NoneOf.
type TagExpr struct {
	AllOf  []string `json:"all_of,omitempty"`
	AnyOf  []string `json:"any_of,omitempty"`
	NoneOf []string `json:"none_of,omitempty"`
}

// Notification is the user-visible part of a push.
type Notification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

// Accepted records a message signed in and made durable.
type Accepted struct {
	MessageID      string          `json:"message_id"`
	AppID          string          `json:"app_id"`
	Audience       Audience        `json:"audience"`
	Targets        []string        `json:"targets,omitempty"` // device ids resolved at accept time (not for broadcasts)
	TargetCount    int             `json:"target_count"`
	Notification   *Notification   `json:"notification,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	Priority       string          `json:"priority"`
	CollapseID     string          `json:"collapse_id,omitempty"`
	TTLSeconds     int64           `json:"ttl_seconds"`
	ExpiresAt      time.Time       `json:"expires_at"`
	SendAt         *time.Time      `json:"send_at,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	At             time.Time       `json:"at"`
}

// Scheduled records that the message waits for its send time.
type Scheduled struct {
	SendAt time.Time `json:"send_at"`
	At     time.Time `json:"at"`
}

// Sending records that attempt n on a channel started. It is appended before
// anything is handed to the channel: the ledger is the lock on attempt n.
type Sending struct {
	Attempt int       `json:"attempt"`
	Channel string    `json:"channel"`
	At      time.Time `json:"at"`
}

// Sent records that the channel accepted attempt n.
type Sent struct {
	Attempt    int       `json:"attempt"`
	Channel    string    `json:"channel"`
	ProviderID string    `json:"provider_id,omitempty"`
	Accepted   int       `json:"accepted"`
	At         time.Time `json:"at"`
}

// Delivered records a device's acknowledgement.
type Delivered struct {
	DeviceID string    `json:"device_id"`
	Channel  string    `json:"channel"`
	At       time.Time `json:"at"`
}

// DeliveredBatch records the acknowledgements of several devices at once
// (version 2 of delivered): a broadcast's acks are recorded in batches,
// not one event per device. DeviceIDs are sorted, unique and not
// acknowledged before.
type DeliveredBatch struct {
	DeviceIDs []string  `json:"device_ids"`
	Channel   string    `json:"channel"`
	At        time.Time `json:"at"`
}

// Opened records that a user opened the notification on a device.
type Opened struct {
	DeviceID string    `json:"device_id"`
	Channel  string    `json:"channel"`
	At       time.Time `json:"at"`
}

// Failure classes: how the channel classified a failure. They are the
// names of the delivery policy's classes (policy.Class.String).
const (
	ClassTransient    = "transient"
	ClassPermanent    = "permanent"
	ClassTokenInvalid = "token_invalid"
)

// Failed records that attempt n failed. Class is the channel's
// classification of the failure (empty in events recorded before it was
// kept, and in a give-up record); Retryable is true exactly for a transient
// failure and is kept for readers of older events. Final means no further
// attempt will be made and the message is terminally failed; a final failure
// may follow a non-final one of the same attempt, as the give-up record of a
// policy that decided later not to retry. RetryAt, only when not final, is
// when the policy scheduled the next attempt, so that a restart does not
// compute it again; Alert, only when final, is the reason operators are
// alerted, empty when they are not.
type Failed struct {
	Attempt   int        `json:"attempt"`
	Channel   string     `json:"channel"`
	Reason    string     `json:"reason"`
	Status    int        `json:"status,omitempty"`
	Class     string     `json:"class,omitempty"`
	Retryable bool       `json:"retryable"`
	Final     bool       `json:"final"`
	RetryAt   *time.Time `json:"retry_at,omitempty"`
	Alert     string     `json:"alert,omitempty"`
	At        time.Time  `json:"at"`
}

// Expired records that the message's TTL ran out before delivery.
type Expired struct {
	At time.Time `json:"at"`
}

// Cancelled records a cancellation before the message was sent.
type Cancelled struct {
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// ResendRequested records a manual resend: a new attempt cycle starts.
// It follows a message that was sent (and not acknowledged) or that failed,
// finally or not; it clears a final failure, so that the next attempt may
// start. Nothing is resent after expiry, cancellation or acknowledgement.
type ResendRequested struct {
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

func (Accepted) EventType() string        { return TypeAccepted }
func (Scheduled) EventType() string       { return TypeScheduled }
func (Sending) EventType() string         { return TypeSending }
func (Sent) EventType() string            { return TypeSent }
func (Delivered) EventType() string       { return TypeDelivered }
func (Opened) EventType() string          { return TypeOpened }
func (DeliveredBatch) EventType() string  { return TypeDeliveredBatch }
func (Failed) EventType() string          { return TypeFailed }
func (Expired) EventType() string         { return TypeExpired }
func (Cancelled) EventType() string       { return TypeCancelled }
func (ResendRequested) EventType() string { return TypeResendRequested }

// Decode parses a persisted message event.
func Decode(eventType string, data []byte) (Event, error) {
	var e Event
	var err error
	switch eventType {
	case TypeAccepted:
		e, err = event.Decode[Accepted](data)
	case TypeScheduled:
		e, err = event.Decode[Scheduled](data)
	case TypeSending:
		e, err = event.Decode[Sending](data)
	case TypeSent:
		e, err = event.Decode[Sent](data)
	case TypeDelivered:
		e, err = event.Decode[Delivered](data)
	case TypeOpened:
		e, err = event.Decode[Opened](data)
	case TypeDeliveredBatch:
		e, err = event.Decode[DeliveredBatch](data)
	case TypeFailed:
		e, err = event.Decode[Failed](data)
	case TypeExpired:
		e, err = event.Decode[Expired](data)
	case TypeCancelled:
		e, err = event.Decode[Cancelled](data)
	case TypeResendRequested:
		e, err = event.Decode[ResendRequested](data)
	default:
		return nil, fmt.Errorf("message: unknown event type %q", eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("message: decode %s: %w", eventType, err)
	}
	return e, nil
}
