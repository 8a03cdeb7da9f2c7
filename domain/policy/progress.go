package policy

import (
	"fmt"
	"maps"
	"time"

	"github.com/pushledger/pushledger/domain/message"
)

// Progress is a message's state together with what the policies need to
// know about its delivery that message.Message does not hold: per channel,
// the attempts, acceptances and failures of the current cycle. It is folded
// from the message's events by Apply, so it is rebuilt from the ledger like
// any other state.
//
// Copying a Progress and applying events to the copy leaves the original's
// policy fields alone (they are copied on write); the embedded
// message.Message's maps are shared as message.Message shares them.
type Progress struct {
	// Message is the message's state, folded by message.Message.Evolve.
	Message message.Message
	// Cycle numbers the current attempt cycle: 1 from acceptance, one more
	// for each manual resend; CycleStartedAt is when it started.
	Cycle          int
	CycleStartedAt time.Time
	// CycleAttempts counts the attempts started in the current cycle.
	CycleAttempts int
	// Channels holds the current cycle's record per channel.
	Channels map[string]ChannelProgress
	// StartedAt is when the current attempt started; SentAt when its
	// channel accepted it (zero while it has not).
	StartedAt, SentAt time.Time
	// LastFailure is the latest failure of the current cycle, zero when
	// there was none.
	LastFailure FailureRecord
	// HandedToOS names the channels that accepted a push of this message
	// in any cycle; with their policy's HoldInBackground it decides the
	// background rule.
	HandedToOS map[string]bool
}

// ChannelProgress is one channel's record in a cycle.
type ChannelProgress struct {
	// Attempts started on the channel; Accepted of them accepted by it;
	// Failures of them failed.
	Attempts, Accepted, Failures int
	// Out is set by a failure that was not retryable (permanent or token
	// invalid): the channel is not used again in the cycle.
	Out bool
	// LastFailure is when its latest failure was recorded.
	LastFailure time.Time
}

// FailureRecord is a failure as the message's failed event records it.
type FailureRecord struct {
	Attempt   int
	Channel   string
	Reason    string
	Status    int
	Retryable bool
	At        time.Time
}

// Apply folds one event: the message's fold first (its error, for an event
// that is not a valid transition, is returned and nothing changes), then the
// policy's.
func (p *Progress) Apply(e message.Event) error {
	// A failure that follows a failure is the give-up of the same attempt,
	// whose failure is already counted.
	giveUp := p.Message.State == message.StateFailed
	if err := p.Message.Evolve(e); err != nil {
		return err
	}
	switch e := e.(type) {
	case message.Accepted:
		*p = Progress{Message: p.Message, Cycle: 1, CycleStartedAt: e.At}
	case message.Sending:
		p.CycleAttempts++
		p.update(e.Channel, func(c *ChannelProgress) { c.Attempts++ })
		p.StartedAt, p.SentAt = e.At, time.Time{}
	case message.Sent:
		p.update(e.Channel, func(c *ChannelProgress) { c.Accepted++ })
		p.SentAt = e.At
		if !p.HandedToOS[e.Channel] {
			h := maps.Clone(p.HandedToOS)
			if h == nil {
				h = map[string]bool{}
			}
			h[e.Channel] = true
			p.HandedToOS = h
		}
	case message.ResendRequested:
		p.NewCycle(e.At)
	case message.Failed:
		if e.Attempt > 0 && !giveUp { // attempt 0: no channel was ever tried
			p.update(e.Channel, func(c *ChannelProgress) {
				c.Failures++
				c.LastFailure = e.At
				c.Out = c.Out || !e.Retryable
			})
		}
		p.LastFailure = FailureRecord{Attempt: e.Attempt, Channel: e.Channel, Reason: e.Reason, Status: e.Status, Retryable: e.Retryable, At: e.At}
	}
	return nil
}

// update changes channel's record on a copy of the map.
func (p *Progress) update(channel string, f func(*ChannelProgress)) {
	m := maps.Clone(p.Channels)
	if m == nil {
		m = map[string]ChannelProgress{}
	}
	c := m[channel]
	f(&c)
	m[channel] = c
	p.Channels = m
}

// Replay folds events from nothing.
func Replay(events []message.Event) (Progress, error) {
	var p Progress
	for i, e := range events {
		if err := p.Apply(e); err != nil {
			return p, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return p, nil
}

// NewCycle starts a new attempt cycle at a manual resend at time at:
// attempts, channel records and the last failure start over; HandedToOS is
// kept (the notification may still be on the device's screen). Until the
// cycle's first attempt starts, the resend is pending: Next starts it and
// Timers lists it. It is the fold of message.ResendRequested (Apply calls
// it), so a Progress replayed from the ledger knows the cycle; Config.Resend
// calls it on a copy to decide the resend before it is recorded.
func (p *Progress) NewCycle(at time.Time) {
	p.Cycle++
	p.CycleStartedAt = at
	p.CycleAttempts = 0
	p.Channels = nil
	p.LastFailure = FailureRecord{}
}

// ResendPending reports whether a resend started a cycle (NewCycle) whose
// first attempt has not started yet. A message that failed finally is not
// settled while a resend is pending.
func (p *Progress) ResendPending() bool {
	s := p.Message.State
	return p.Cycle > 1 && p.CycleAttempts == 0 && (s == message.StateSent || s == message.StateFailed)
}

// settled reports whether nothing more is sent: the message is terminal and
// no resend is pending.
func (p *Progress) settled() bool { return p.Message.Terminal() && !p.ResendPending() }

// Handed reports whether a channel that holds in the background (per c)
// accepted a push of this message: then ResendAllowed restricts resends.
func (p *Progress) Handed(c Config) bool {
	for ch := range p.HandedToOS {
		if c.Channel(ch).HoldInBackground {
			return true
		}
	}
	return false
}

// clone returns a copy of p whose policy maps are its own.
func (p *Progress) clone() Progress {
	q := *p
	q.Channels = maps.Clone(p.Channels)
	q.HandedToOS = maps.Clone(p.HandedToOS)
	return q
}
