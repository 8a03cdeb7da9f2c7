package policy

import (
	"slices"
	"time"

	"github.com/pushledger/pushledger/domain/message"
)

// TimerKind says what a timer is for. Whatever the kind, when a timer fires
// the runtime calls Config.Next, which decides from the state what it means.
type TimerKind string

const (
	// TimerSend starts the first attempt: at the send time of a scheduled
	// message, at acceptance otherwise.
	TimerSend TimerKind = "send"
	// TimerAttempt ends the wait for the current attempt's result
	// (Config.AttemptTimeout).
	TimerAttempt TimerKind = "attempt_timeout"
	// TimerAck ends the wait for the device's acknowledgement (the channel's
	// ack window).
	TimerAck TimerKind = "ack_timeout"
	// TimerRetry is the earliest time the next attempt after a failure may
	// start.
	TimerRetry TimerKind = "retry"
	// TimerExpiry is the message's expiry.
	TimerExpiry TimerKind = "expiry"
)

// Timer is a durable timer a message needs.
type Timer struct {
	Kind TimerKind `json:"kind"`
	At   time.Time `json:"at"`
}

// Timers returns the timers the message needs in its current state, ordered
// by time (the expiry last among equals): none when it is settled; else
// its expiry and, by state, the send time (accepted, scheduled, a resend
// pending), the
// attempt timeout (sending), the end of the ack window (sent, on a channel
// with one), or the earliest retry (failed, not finally). No timer but the
// expiry is at or after the expiry. Timers may be in the past: the runtime
// rebuilding its timers at start fires them at once.
//
// A timer is not a decision: Next decides when it fires. A Hold or a Wait
// for the device's presence leaves no timer; one that fired is not
// returned again until the state changes, except that Timers, asked
// after a restart, cannot know it fired (Next then decides the same again).
// The retry time after a failure is recomputed from the failed event, which
// does not hold the provider's Retry-After: it may be sooner than the time
// first decided (Next then says so).
func (c Config) Timers(p *Progress) []Timer {
	m := &p.Message
	if m.State == message.StateNone || p.settled() {
		return nil
	}
	var ts []Timer
	add := func(k TimerKind, at time.Time) {
		if beforeExpiry(m, at) {
			ts = append(ts, Timer{Kind: k, At: at})
		}
	}
	switch {
	case p.ResendPending():
		add(TimerSend, p.CycleStartedAt)
	case m.State == message.StateAccepted:
		add(TimerSend, later(m.AcceptedAt, m.SendAt))
	case m.State == message.StateScheduled:
		add(TimerSend, m.SendAt)
	case m.State == message.StateSending:
		add(TimerAttempt, p.StartedAt.Add(c.AttemptTimeout))
	case m.State == message.StateSent:
		if w := c.Channel(m.Channel).AckWindow; w > 0 {
			add(TimerAck, p.SentAt.Add(w))
		}
	case m.State == message.StateFailed:
		f := p.LastFailure
		at, ok := c.retryAt(p, f.failure(), f.At, f.At)
		if !ok || !beforeExpiry(m, at) {
			at = f.At // fail over (or give up) at once
		}
		add(TimerRetry, at)
	}
	if !m.ExpiresAt.IsZero() {
		ts = append(ts, Timer{Kind: TimerExpiry, At: m.ExpiresAt})
	}
	slices.SortStableFunc(ts, func(a, b Timer) int { return a.At.Compare(b.At) })
	return ts
}
