package message

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// State is a message's lifecycle state.
type State string

const (
	StateNone      State = ""
	StateAccepted  State = "accepted"
	StateScheduled State = "scheduled"
	StateSending   State = "sending"
	StateSent      State = "sent"
	StateDelivered State = "delivered"
	StateOpened    State = "opened"
	StateFailed    State = "failed"
	StateExpired   State = "expired"
	StateCancelled State = "cancelled"
)

// States lists every state a message can be in, in lifecycle order.
func States() []State {
	return []State{StateAccepted, StateScheduled, StateSending, StateSent, StateDelivered, StateOpened, StateFailed, StateExpired, StateCancelled}
}

// Sentinel errors.
var (
	// ErrInvalidTransition: the command is not allowed in the message's state.
	// The error is a *TransitionError.
	ErrInvalidTransition = errors.New("message: invalid transition")
	// ErrNotFound: the command needs an accepted message.
	ErrNotFound = errors.New("message: not found")
	// ErrInvalid: the command's fields are invalid.
	ErrInvalid = errors.New("message: invalid command")
	// ErrNotDue: a scheduled message cannot be sent before its send time.
	ErrNotDue = errors.New("message: not due")
	// ErrWrongAttempt: a result names an attempt that is not the current one.
	ErrWrongAttempt = errors.New("message: wrong attempt")
	// ErrPastExpiry: nothing is sent after a message's expiry.
	ErrPastExpiry = errors.New("message: past expiry")
	// ErrNotTarget: an acknowledgement or open from a device the message
	// was not sent to.
	ErrNotTarget = errors.New("message: device is not a target")
)

// TransitionError details ErrInvalidTransition.
type TransitionError struct {
	From    State
	Command string
}

func (e *TransitionError) Error() string {
	from := string(e.From)
	if from == "" {
		from = "new"
	}
	return fmt.Sprintf("message: %s not allowed in state %s", e.Command, from)
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// Message is the state folded from a message's events.
type Message struct {
	ID          string
	AppID       string
	State       State
	Audience    Audience
	Targets     []string
	TargetCount int
	// sortedTargets is Targets sorted (the same slice when it is), for
	// checking that an acknowledging device is a target.
	sortedTargets  []string
	Notification   *Notification
	Data           []byte
	Priority       string
	CollapseID     string
	TTLSeconds     int64
	ExpiresAt      time.Time
	SendAt         time.Time // zero when sent at once
	IdempotencyKey string
	AcceptedAt     time.Time
	UpdatedAt      time.Time

	// Attempt is the number of the current (last started) attempt, 0 before
	// the first; Channel is its channel.
	Attempt int
	Channel string
	// FinalFailure is set when the message failed terminally (a resend
	// clears it).
	FinalFailure bool
	LastError    string
	// RetryAt is when the policy scheduled the next attempt after the last
	// failure, zero when it did not say or an attempt started since.
	RetryAt time.Time
	// Resends counts the manual resends requested (ResendRequested).
	Resends int
	// Delivered and Opened hold the devices that acknowledged / opened.
	Delivered map[string]time.Time
	Opened    map[string]time.Time
	Version   int // number of events folded
}

// Clone returns a copy of m that shares nothing Evolve changes: folding
// events into the copy leaves m as it was.
func (m *Message) Clone() Message {
	c := *m
	c.Delivered = maps.Clone(m.Delivered)
	c.Opened = maps.Clone(m.Opened)
	return c
}

// Terminal reports whether no further sending will happen: delivered,
// opened, finally failed, expired or cancelled. A delivered or opened
// message still records acknowledgements and opens of other devices.
func (m *Message) Terminal() bool {
	switch m.State {
	case StateDelivered, StateOpened, StateExpired, StateCancelled:
		return true
	case StateFailed:
		return m.FinalFailure
	}
	return false
}

// Evolve folds one event into m. It returns an error if the event is not a
// valid transition from m's state; Decide never produces such an event.
func (m *Message) Evolve(e Event) error {
	if err := m.allows(e); err != nil {
		return err
	}
	switch e := e.(type) {
	case Accepted:
		*m = Message{
			ID: e.MessageID, AppID: e.AppID, State: StateAccepted, Audience: e.Audience,
			Targets: e.Targets, TargetCount: e.TargetCount, Notification: e.Notification, Data: e.Data,
			Priority: e.Priority, CollapseID: e.CollapseID, TTLSeconds: e.TTLSeconds, ExpiresAt: e.ExpiresAt,
			IdempotencyKey: e.IdempotencyKey, AcceptedAt: e.At, UpdatedAt: e.At,
		}
		if e.SendAt != nil {
			m.SendAt = *e.SendAt
		}
		m.sortedTargets = e.Targets
		if !slices.IsSorted(e.Targets) {
			m.sortedTargets = slices.Sorted(slices.Values(e.Targets))
		}
	case Scheduled:
		m.State, m.SendAt, m.UpdatedAt = StateScheduled, e.SendAt, e.At
	case Sending:
		m.State, m.Attempt, m.Channel, m.RetryAt, m.UpdatedAt = StateSending, e.Attempt, e.Channel, time.Time{}, e.At
	case Sent:
		m.State, m.UpdatedAt = StateSent, e.At
	case Delivered:
		if m.Delivered == nil {
			m.Delivered = map[string]time.Time{}
		}
		m.Delivered[e.DeviceID] = e.At
		if m.State != StateOpened {
			m.State = StateDelivered
		}
		m.FinalFailure, m.UpdatedAt = false, e.At
	case DeliveredBatch:
		// In place, as for Delivered: a broadcast's stream folds many
		// batches, and copying the map for each would be quadratic.
		if m.Delivered == nil {
			m.Delivered = make(map[string]time.Time, len(e.DeviceIDs))
		}
		for _, id := range e.DeviceIDs {
			m.Delivered[id] = e.At
		}
		if m.State != StateOpened {
			m.State = StateDelivered
		}
		m.FinalFailure, m.UpdatedAt = false, e.At
	case Opened:
		if m.Opened == nil {
			m.Opened = map[string]time.Time{}
		}
		if m.Delivered == nil {
			m.Delivered = map[string]time.Time{}
		}
		if _, ok := m.Delivered[e.DeviceID]; !ok {
			m.Delivered[e.DeviceID] = e.At // an open implies delivery
		}
		m.Opened[e.DeviceID] = e.At
		m.State, m.FinalFailure, m.UpdatedAt = StateOpened, false, e.At
	case Failed:
		m.State, m.FinalFailure, m.LastError, m.RetryAt, m.UpdatedAt = StateFailed, e.Final, e.Reason, time.Time{}, e.At
		if e.RetryAt != nil && !e.Final {
			m.RetryAt = *e.RetryAt
		}
	case ResendRequested:
		// A new cycle: the state stays sent or failed, now not final, so
		// that the next attempt may start.
		m.FinalFailure, m.RetryAt, m.UpdatedAt = false, time.Time{}, e.At
		m.Resends++
	case Expired:
		m.State, m.UpdatedAt = StateExpired, e.At
	case Cancelled:
		m.State, m.UpdatedAt = StateCancelled, e.At
	}
	m.Version++
	return nil
}

// allows is the transition table: which events may follow m's state.
func (m *Message) allows(e Event) error {
	ok := false
	switch e := e.(type) {
	case Accepted:
		ok = m.State == StateNone
	case Scheduled:
		ok = m.State == StateAccepted
	case Sending:
		ok = (m.State == StateAccepted || m.State == StateScheduled || m.State == StateSent ||
			(m.State == StateFailed && !m.FinalFailure)) && e.Attempt == m.Attempt+1
	case Sent:
		ok = m.State == StateSending && e.Attempt == m.Attempt
	case Delivered, DeliveredBatch, Opened:
		// A device's acknowledgement or open is a fact, recorded in every
		// state after an attempt started: a final failure and an expiry
		// included (a device offline past every attempt's ack window gets
		// the push from the gateway's outbox when it connects), so that
		// the ledger still tells that it was delivered, and when.
		ok = m.Attempt > 0 && m.State != StateCancelled
	case Failed:
		// A failure closes the current attempt; with no attempt yet (no
		// usable channel) only a final failure is possible. A failure that
		// was not final may be followed by the final one of the same
		// attempt: the give-up record.
		ok = ((m.State == StateSending || m.State == StateSent) && e.Attempt == m.Attempt) ||
			((m.State == StateAccepted || m.State == StateScheduled) && e.Attempt == 0 && m.Attempt == 0 && e.Final) ||
			(m.State == StateFailed && !m.FinalFailure && e.Final && e.Attempt == m.Attempt)
	case ResendRequested:
		ok = m.State == StateSent || m.State == StateFailed
	case Expired:
		ok = m.State != StateNone && !m.Terminal()
	case Cancelled:
		ok = m.State == StateAccepted || m.State == StateScheduled
	}
	if !ok {
		return &TransitionError{From: m.State, Command: e.EventType()}
	}
	return nil
}

// Replay folds events from the empty state.
func Replay(events []Event) (Message, error) {
	var m Message
	for i, e := range events {
		if err := m.Evolve(e); err != nil {
			return m, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return m, nil
}
