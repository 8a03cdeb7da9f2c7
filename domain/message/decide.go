package message

import (
	"encoding/json"
	"fmt"
	"github.com/pushledger/pushledger/domain/event"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Priorities.
const (
	PriorityNormal = "normal"
	PriorityHigh   = "high"
)

// Limits of a message.
const (
	// MaxTTL bounds a message's time to live.
	MaxTTL = 28 * 24 * time.Hour
	// DefaultTTL applies when a message names none.
	DefaultTTL = 24 * time.Hour
)

// Command is something asked of a message. The set is closed.
type Command interface{ commandName() string }

// Accept signs a message in.
type Accept struct {
	MessageID      string
	AppID          string
	Audience       Audience
	Targets        []string
	TargetCount    int
	Notification   *Notification
	Data           json.RawMessage
	Priority       string
	CollapseID     string
	TTL            time.Duration // 0 means DefaultTTL
	SendAt         *time.Time
	IdempotencyKey string
}

// StartAttempt starts the next delivery attempt on a channel.
type StartAttempt struct{ Channel string }

// RecordSent records that the channel accepted the current attempt.
type RecordSent struct {
	Attempt    int
	Channel    string
	ProviderID string
	Accepted   int
}

// RecordFailure records that the current attempt failed. Class, when set,
// is one of the Class constants and agrees with Retryable (true exactly for
// ClassTransient). RetryAt, only when not Final, is when the next attempt
// is scheduled; Alert, only when Final, is why operators are alerted. With
// Final set it may also follow a failure of the current attempt that was
// not final: the give-up.
type RecordFailure struct {
	Attempt   int
	Channel   string
	Reason    string
	Status    int
	Class     string
	Retryable bool
	Final     bool
	RetryAt   *time.Time
	Alert     string
}

// RecordDelivered records a device acknowledgement (idempotent per device).
//
// AppID, when set, is the app of the acknowledging device: the message of
// another app is ErrNotFound to it. A device that is not one of a targeted
// message's resolved devices is ErrNotTarget (a broadcast targets every
// device of its app).
type RecordDelivered struct{ DeviceID, Channel, AppID string }

// RecordDeliveries records the acknowledgements of several devices in one
// event (message.delivered.v2); devices that acknowledged before are
// skipped, and nothing is recorded when none is new. At most
// MaxDeliveriesPerEvent devices. AppID is checked as for RecordDelivered;
// devices that are not targets are skipped.
type RecordDeliveries struct {
	DeviceIDs []string
	Channel   string
	AppID     string
}

// MaxDeliveriesPerEvent bounds RecordDeliveries.
const MaxDeliveriesPerEvent = 10000

// RecordOpened records an open on a device (idempotent per device; an open
// implies delivery). AppID and the device are checked as for
// RecordDelivered.
type RecordOpened struct{ DeviceID, Channel, AppID string }

// Expire ends a message whose TTL ran out.
type Expire struct{}

// Cancel ends a message that was not yet sent.
type Cancel struct{ Reason string }

// Resend starts a new attempt cycle of a message that was sent and not
// acknowledged, or that failed (finally or not), before its expiry.
type Resend struct{ Reason string }

func (Accept) commandName() string           { return "accept" }
func (StartAttempt) commandName() string     { return "start attempt" }
func (RecordSent) commandName() string       { return "record sent" }
func (RecordFailure) commandName() string    { return "record failure" }
func (RecordDelivered) commandName() string  { return "record delivered" }
func (RecordOpened) commandName() string     { return "record opened" }
func (RecordDeliveries) commandName() string { return "record deliveries" }
func (Expire) commandName() string           { return "expire" }
func (Cancel) commandName() string           { return "cancel" }
func (Resend) commandName() string           { return "resend" }

// Decide returns the events that command c produces on m at time now, or a
// typed error. An empty slice and nil error means the command is already
// satisfied (idempotent repeats of acknowledgements and opens).
func Decide(m *Message, c Command, now time.Time) ([]Event, error) {
	now = now.UTC()
	if _, isAccept := c.(Accept); !isAccept && m.State == StateNone {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, c.commandName())
	}
	if !validText(c) {
		return nil, fmt.Errorf("%w: %s: text is not UTF-8", ErrInvalid, c.commandName())
	}
	var out []Event
	switch c := c.(type) {
	case Accept:
		if m.State != StateNone {
			return nil, &TransitionError{From: m.State, Command: c.commandName()}
		}
		ev, err := accept(c, now)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
		if c.SendAt != nil && c.SendAt.After(now) {
			out = append(out, Scheduled{SendAt: c.SendAt.UTC(), At: now})
		}
	case StartAttempt:
		if c.Channel == "" {
			return nil, fmt.Errorf("%w: channel is empty", ErrInvalid)
		}
		if !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt) {
			return nil, ErrPastExpiry
		}
		if m.State == StateScheduled && now.Before(m.SendAt) {
			return nil, fmt.Errorf("%w: send at %s", ErrNotDue, m.SendAt.Format(time.RFC3339))
		}
		out = append(out, Sending{Attempt: m.Attempt + 1, Channel: c.Channel, At: now})
	case RecordSent:
		if c.Attempt != m.Attempt {
			return nil, fmt.Errorf("%w: %d, current %d", ErrWrongAttempt, c.Attempt, m.Attempt)
		}
		out = append(out, Sent{Attempt: c.Attempt, Channel: c.Channel, ProviderID: c.ProviderID, Accepted: c.Accepted, At: now})
	case RecordFailure:
		if c.Attempt != m.Attempt {
			return nil, fmt.Errorf("%w: %d, current %d", ErrWrongAttempt, c.Attempt, m.Attempt)
		}
		if c.Reason == "" {
			return nil, fmt.Errorf("%w: failure reason is empty", ErrInvalid)
		}
		if err := c.validate(); err != nil {
			return nil, err
		}
		var retryAt *time.Time
		if c.RetryAt != nil {
			r := c.RetryAt.UTC()
			retryAt = &r
		}
		out = append(out, Failed{Attempt: c.Attempt, Channel: c.Channel, Reason: c.Reason, Status: c.Status, Class: c.Class,
			Retryable: c.Retryable, Final: c.Final, RetryAt: retryAt, Alert: c.Alert, At: now})
	case RecordDelivered:
		if c.DeviceID == "" {
			return nil, fmt.Errorf("%w: device id is empty", ErrInvalid)
		}
		if err := m.acknowledgeable(c.AppID, c.DeviceID); err != nil {
			return nil, err
		}
		if _, done := m.Delivered[c.DeviceID]; done {
			return nil, nil
		}
		out = append(out, Delivered{DeviceID: c.DeviceID, Channel: c.Channel, At: now})
	case RecordDeliveries:
		if len(c.DeviceIDs) > MaxDeliveriesPerEvent {
			return nil, fmt.Errorf("%w: more than %d devices", ErrInvalid, MaxDeliveriesPerEvent)
		}
		if err := m.ofApp(c.AppID); err != nil {
			return nil, err
		}
		var ids []string
		for _, id := range c.DeviceIDs {
			if id == "" {
				return nil, fmt.Errorf("%w: device id is empty", ErrInvalid)
			}
			if !m.targets(id) {
				continue
			}
			if _, done := m.Delivered[id]; !done {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil, nil
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		out = append(out, DeliveredBatch{DeviceIDs: ids, Channel: c.Channel, At: now})
	case RecordOpened:
		if c.DeviceID == "" {
			return nil, fmt.Errorf("%w: device id is empty", ErrInvalid)
		}
		if err := m.acknowledgeable(c.AppID, c.DeviceID); err != nil {
			return nil, err
		}
		if _, done := m.Opened[c.DeviceID]; done {
			return nil, nil
		}
		out = append(out, Opened{DeviceID: c.DeviceID, Channel: c.Channel, At: now})
	case Expire:
		if m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt) {
			return nil, fmt.Errorf("%w: expires at %s", ErrNotDue, m.ExpiresAt.Format(time.RFC3339))
		}
		out = append(out, Expired{At: now})
	case Cancel:
		out = append(out, Cancelled{Reason: c.Reason, At: now})
	case Resend:
		if !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt) {
			return nil, ErrPastExpiry
		}
		out = append(out, ResendRequested{Reason: c.Reason, At: now})
	default:
		return nil, fmt.Errorf("%w: unknown command %T", ErrInvalid, c)
	}
	// Every decided event must be a valid transition: check on a copy.
	probe := m.shallowCopy()
	for _, e := range out {
		if err := probe.Evolve(e); err != nil {
			return nil, &TransitionError{From: m.State, Command: c.commandName()}
		}
	}
	return out, nil
}

// targets reports whether device id is one of the message's resolved
// targets. A message with none resolved (a broadcast) targets every device
// of its app.
func (m *Message) targets(id string) bool {
	if len(m.sortedTargets) == 0 {
		return true
	}
	_, ok := slices.BinarySearch(m.sortedTargets, id)
	return ok
}

// ofApp checks that m is app's (when app is given): another app's message
// is not found.
func (m *Message) ofApp(app string) error {
	if app != "" && app != m.AppID {
		return fmt.Errorf("%w: message of another app", ErrNotFound)
	}
	return nil
}

// acknowledgeable checks that a device of app (when given) may record an
// acknowledgement or open of m.
func (m *Message) acknowledgeable(app, device string) error {
	if err := m.ofApp(app); err != nil {
		return err
	}
	if !m.targets(device) {
		return fmt.Errorf("%w: %s", ErrNotTarget, device)
	}
	return nil
}

// shallowCopy copies m for probing transitions; the delivery maps are
// dropped so that probing never writes to m's.
func (m *Message) shallowCopy() *Message {
	c := *m
	c.Delivered, c.Opened = nil, nil
	return &c
}

func accept(c Accept, now time.Time) (Accepted, error) {
	var errs []string
	if c.MessageID == "" {
		errs = append(errs, "message id is empty")
	}
	if c.AppID == "" {
		errs = append(errs, "app id is empty")
	}
	if c.Notification == nil && len(c.Data) == 0 {
		errs = append(errs, "neither notification nor data")
	}
	data, err := canonicalJSON(c.Data)
	if err != nil {
		errs = append(errs, "data is not valid JSON")
	}
	if err := c.Audience.Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	prio := c.Priority
	switch prio {
	case "":
		prio = PriorityNormal
	case PriorityNormal, PriorityHigh:
	default:
		errs = append(errs, fmt.Sprintf("priority %q is not normal or high", prio))
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		errs = append(errs, fmt.Sprintf("ttl %s outside (0, %s]", ttl, MaxTTL))
	}
	start := now
	var sendAt *time.Time
	if c.SendAt != nil {
		s := c.SendAt.UTC()
		sendAt = &s
		if s.After(now) {
			start = s
		}
		if s.Sub(now) > MaxTTL {
			errs = append(errs, "send_at is more than the maximum ttl ahead")
		}
	}
	if len(errs) > 0 {
		return Accepted{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	var notif *Notification
	if c.Notification != nil {
		n := *c.Notification
		notif = &n
	}
	// The event holds copies in the form JSON reads back (no empty
	// slices, canonical data): the persisted event folds to the same state.
	return Accepted{
		MessageID: c.MessageID, AppID: c.AppID, Audience: c.Audience.canonical(), Targets: cloneStrings(c.Targets), TargetCount: c.TargetCount,
		Notification: notif, Data: data, Priority: prio, CollapseID: c.CollapseID,
		TTLSeconds: int64(ttl / time.Second), ExpiresAt: start.Add(ttl), SendAt: sendAt,
		IdempotencyKey: c.IdempotencyKey, At: now,
	}, nil
}

// validText reports whether the strings c gives events are UTF-8: JSON
// holds nothing else, and a persisted event would replay differently.
func validText(c Command) bool {
	switch c := c.(type) {
	case Accept:
		a := c.Audience
		ok := event.ValidUTF8(c.MessageID, c.AppID, c.Priority, c.CollapseID, c.IdempotencyKey) && utf8.Valid(c.Data) &&
			event.ValidUTF8(c.Targets...) && event.ValidUTF8(a.DeviceIDs...) && event.ValidUTF8(a.Aliases...)
		if a.Tags != nil {
			ok = ok && event.ValidUTF8(a.Tags.AllOf...) && event.ValidUTF8(a.Tags.AnyOf...) && event.ValidUTF8(a.Tags.NoneOf...)
		}
		if c.Notification != nil {
			ok = ok && event.ValidUTF8(c.Notification.Title, c.Notification.Body)
		}
		return ok
	case StartAttempt:
		return event.ValidUTF8(c.Channel)
	case RecordSent:
		return event.ValidUTF8(c.Channel, c.ProviderID)
	case RecordFailure:
		return event.ValidUTF8(c.Channel, c.Reason, c.Class, c.Alert)
	case RecordDelivered:
		return event.ValidUTF8(c.DeviceID, c.Channel)
	case RecordDeliveries:
		return event.ValidUTF8(c.Channel) && event.ValidUTF8(c.DeviceIDs...)
	case RecordOpened:
		return event.ValidUTF8(c.DeviceID, c.Channel)
	case Cancel:
		return event.ValidUTF8(c.Reason)
	case Resend:
		return event.ValidUTF8(c.Reason)
	}
	return true
}

// validate checks the classification fields of a failure.
func (c RecordFailure) validate() error {
	switch c.Class {
	case "":
	case ClassTransient, ClassPermanent, ClassTokenInvalid:
		if c.Retryable != (c.Class == ClassTransient) {
			return fmt.Errorf("%w: class %s with retryable %v", ErrInvalid, c.Class, c.Retryable)
		}
	default:
		return fmt.Errorf("%w: unknown failure class %q", ErrInvalid, c.Class)
	}
	if c.Final && c.RetryAt != nil {
		return fmt.Errorf("%w: a final failure schedules no retry", ErrInvalid)
	}
	if !c.Final && c.Alert != "" {
		return fmt.Errorf("%w: only a final failure raises an alert", ErrInvalid)
	}
	return nil
}

// canonicalJSON returns data as encoding/json writes it (compact, HTML
// escaped), nil when empty, and an error when data is not JSON.
func canonicalJSON(data json.RawMessage) (json.RawMessage, error) {
	if len(data) == 0 {
		return nil, nil
	}
	return json.Marshal(data)
}

// canonical returns a copy of a with empty lists as nil.
func (a Audience) canonical() Audience {
	c := Audience{DeviceIDs: cloneStrings(a.DeviceIDs), Aliases: cloneStrings(a.Aliases), Broadcast: a.Broadcast}
	if a.Tags != nil {
		c.Tags = &TagExpr{AllOf: cloneStrings(a.Tags.AllOf), AnyOf: cloneStrings(a.Tags.AnyOf), NoneOf: cloneStrings(a.Tags.NoneOf)}
	}
	return c
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// Validate checks that exactly one kind of audience is chosen and non-empty.
func (a Audience) Validate() error {
	kinds := 0
	if len(a.DeviceIDs) > 0 {
		kinds++
	}
	if len(a.Aliases) > 0 {
		kinds++
	}
	if a.Tags != nil {
		kinds++
		if len(a.Tags.AllOf) == 0 && len(a.Tags.AnyOf) == 0 {
			return fmt.Errorf("%w: tags audience needs all_of or any_of", ErrInvalid)
		}
	}
	if a.Broadcast {
		kinds++
	}
	if kinds != 1 {
		return fmt.Errorf("%w: audience needs exactly one of device_ids, aliases, tags, broadcast", ErrInvalid)
	}
	return nil
}
