package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/pushledger/pushledger/domain/message"
)

// Reasons a Decision gives, and failure reasons the policies introduce.
const (
	// ReasonAckTimeout: the device did not acknowledge within the channel's
	// ack window. A failure reason; the resend is immediate.
	ReasonAckTimeout = "ack_timeout"
	// ReasonAttemptTimeout: the attempt stayed "sending" longer than
	// Config.AttemptTimeout (its sender died). A transient failure reason.
	ReasonAttemptTimeout = "attempt_timeout"
	// ReasonAttemptsExhausted: Config.MaxAttempts attempts of the cycle
	// failed. Give up, with an alert.
	ReasonAttemptsExhausted = "attempts_exhausted"
	// ReasonNoChannel: no channel is left to try before expiry (disabled,
	// excluded, out after a permanent or token-invalid failure, or out of
	// attempts). Give up, with an alert.
	ReasonNoChannel = "no_channel"
	// ReasonRetryAfterExpiry: the only retry left would come at or after
	// the message's expiry (the provider's Retry-After or the backoff reach
	// past it). Give up, without an alert: the message was not worth more.
	ReasonRetryAfterExpiry = "retry_after_expiry"
	// ReasonHeldInBackground: every possible resend is held by the
	// background rule (ResendAllowed) until the device's presence changes.
	ReasonHeldInBackground = "held_in_background"
	// ReasonExpired: the message's expiry has come.
	ReasonExpired = "expired"
	// ReasonNotDue: waiting for the message's send time.
	ReasonNotDue = "not_due"
	// ReasonInFlight: waiting for the current attempt's result.
	ReasonInFlight = "in_flight"
	// ReasonAwaitingAck: waiting for the device's acknowledgement.
	ReasonAwaitingAck = "awaiting_ack"
	// ReasonSettled: the message is settled (delivered, opened, failed
	// finally, expired, cancelled); nothing more is sent.
	ReasonSettled = "settled"
	// ReasonNotAccepted: there is no message.
	ReasonNotAccepted = "not_accepted"
	// ReasonResend: a manual resend starts a new cycle.
	ReasonResend = "resend"
)

// ErrResendNotAllowed: a manual resend is not possible now; the error says
// why.
var ErrResendNotAllowed = errors.New("policy: resend not allowed")

// Presence is what the runtime knows of the target device now. The zero
// value, background and offline, is the safe assumption when it knows
// nothing.
type Presence struct {
	// Foreground: the app is in the foreground (the SDK said so).
	Foreground bool
	// Online: the device holds a connection to the gateway.
	Online bool
}

// Env is the world a decision is made in.
type Env struct {
	// Now is the time of the decision.
	Now time.Time
	// Channels are the app's channels with their rolling success rates
	// (FailoverPolicy.Stats). A channel not listed, or not Enabled, is never
	// chosen.
	Channels []ChannelStat
	// Exclude names channels unusable for this delivery: the device has no
	// token there (or its token was invalidated), this node cannot reach
	// the channel, ... They are never chosen.
	Exclude map[string]bool
	// Presence is the target device's presence, for the background rule.
	// Deliveries to many devices are decided per device, or with the zero
	// value (the strictest).
	Presence Presence
}

// Action is what a Decision asks of the runtime.
type Action int

const (
	// ActionNone: nothing; the message is settled (or does not exist).
	ActionNone Action = iota
	// ActionWait: nothing until At (a timer in Timers), then ask again.
	ActionWait
	// ActionStart: start the first attempt of a cycle on Channel at At.
	ActionStart
	// ActionRetry: start the next attempt on the same Channel at At.
	ActionRetry
	// ActionFailover: start the next attempt on another Channel at At.
	ActionFailover
	// ActionHold: nothing until the device's presence changes
	// (ReasonHeldInBackground); then ask again.
	ActionHold
	// ActionGiveUp: the message fails finally (Record has Final set); raise
	// an alert when Alert is set.
	ActionGiveUp
	// ActionExpire: expire the message (message.Expire).
	ActionExpire
)

func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionWait:
		return "wait"
	case ActionStart:
		return "start"
	case ActionRetry:
		return "retry"
	case ActionFailover:
		return "failover"
	case ActionHold:
		return "hold"
	case ActionGiveUp:
		return "give_up"
	case ActionExpire:
		return "expire"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is what to do about a message. The runtime carries it out in
// this order: record Record, record the device token invalidation of
// InvalidToken, then the Action.
type Decision struct {
	Action Action
	// Channel is the channel of the attempt to start (Start, Retry,
	// Failover).
	Channel string
	// At is when to start it (Start, Retry, Failover), or when to ask again
	// (Wait). It is never before Env.Now, and never at or after the
	// message's expiry except for a Wait that ends at the expiry.
	At time.Time
	// Reason says why, for logs, alerts and the console: one of the Reason
	// constants, or for Retry and Failover the reason of the failure that
	// caused them.
	Reason string
	// Record, when set, is the failure of the current attempt to record
	// before anything else: the failure given to AfterFailure, or an ack
	// timeout or lost attempt that Next found. Its Final is set exactly when
	// the Action is GiveUp. Nil when there is nothing to record (the
	// failure is already recorded, or there was none).
	Record *message.RecordFailure
	// InvalidToken, when not empty, names the channel whose token for the
	// device the provider reported invalid: record the invalidation on the
	// device (device.InvalidateToken) and keep the channel in Env.Exclude
	// for the device from then on.
	InvalidToken string
	// Alert is set with ActionGiveUp when operators should hear of it
	// (attempts exhausted, no channel left).
	Alert bool
}

// Sends reports whether d starts an attempt (Start, Retry or Failover).
func (d Decision) Sends() bool {
	return d.Action == ActionStart || d.Action == ActionRetry || d.Action == ActionFailover
}

// StartAttempt returns the command that starts the attempt d asks for.
func (d Decision) StartAttempt() message.StartAttempt {
	return message.StartAttempt{Channel: d.Channel}
}

// Draw returns a number in [0, 1) determined by key and ns: the policies'
// source of jitter and of weighted choices, keyed by message id, cycle,
// attempt and purpose. It is deterministic, so a decision recomputed after
// a restart matches the one made before it, and well mixed (FNV-1a, then
// the SplitMix64 finaliser), so different messages draw independently.
func Draw(key string, ns ...int) float64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	var b [8]byte
	for _, n := range ns {
		binary.LittleEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// Draw purposes.
const (
	drawJitter = iota
	drawPick
)

// ResendAllowed is the background rule (the seed's iOS rule). Once a channel
// that holds in the background (APNs) accepted a push (handed), the
// device's operating system may be showing it, and an app in the background
// cannot suppress a second copy. So another attempt on target is allowed
// only when nothing was handed, when the app is in the foreground (it sees
// every push and deduplicates by message id), or when the device is online
// on the gateway and target's pushes reach the app (AppDedup).
func ResendAllowed(handed bool, target ChannelPolicy, pr Presence) bool {
	return !handed || pr.Foreground || (pr.Online && target.AppDedup)
}

// Next says what to do about the message now:
//
//   - settled or not accepted: None;
//   - at or past its expiry: Expire;
//   - a resend pending (Progress.ResendPending): Start the new cycle;
//   - accepted or scheduled: Wait until its send time, then Start on the
//     channel the failover policy chooses (GiveUp when there is none);
//   - sending: Wait for the result until Config.AttemptTimeout, then treat
//     the attempt as failed with ReasonAttemptTimeout (see AfterFailure);
//   - sent: Wait for the acknowledgement until the channel's ack window
//     ends (for ever, that is until expiry, when it has none), then treat
//     the attempt as failed with ReasonAckTimeout, resent at once; on a
//     StoreAndForward channel, when that failure would give up, Wait
//     until expiry instead (nothing is recorded);
//   - failed, not finally: Retry or Failover as AfterFailure decided when
//     the failure was recorded, from what the failed event holds (it does
//     not hold the provider's Retry-After: a recomputed retry may come
//     sooner than the one first decided), or Hold.
//
// Next uses nothing but its arguments.
func (c Config) Next(p *Progress, env Env) Decision {
	m := &p.Message
	now := env.Now
	switch {
	case m.State == message.StateNone:
		return Decision{Action: ActionNone, Reason: ReasonNotAccepted}
	case p.settled() || (m.Terminal() && expired(m, now)):
		return Decision{Action: ActionNone, Reason: ReasonSettled}
	case expired(m, now):
		return Decision{Action: ActionExpire, Reason: ReasonExpired}
	case p.ResendPending():
		d := c.start(p, env, "")
		if d.Action == ActionStart {
			d.Reason = ReasonResend
		}
		return d
	}
	switch m.State {
	case message.StateAccepted, message.StateScheduled:
		if now.Before(m.SendAt) {
			return wait(m, m.SendAt, ReasonNotDue)
		}
		return c.start(p, env, "")
	case message.StateSending:
		if dl := p.StartedAt.Add(c.AttemptTimeout); now.Before(dl) {
			return wait(m, dl, ReasonInFlight)
		}
		return c.afterFailure(p, env, Failure{Channel: m.Channel, Class: Transient, Reason: ReasonAttemptTimeout}, now, true)
	case message.StateSent:
		w := c.Channel(m.Channel).AckWindow
		if w <= 0 {
			if m.ExpiresAt.IsZero() {
				return Decision{Action: ActionNone, Reason: ReasonAwaitingAck}
			}
			return wait(m, m.ExpiresAt, ReasonAwaitingAck)
		}
		if dl := p.SentAt.Add(w); now.Before(dl) {
			return wait(m, dl, ReasonAwaitingAck)
		}
		d := c.afterFailure(p, env, Failure{Channel: m.Channel, Class: Transient, Reason: ReasonAckTimeout}, now, true)
		if d.Action == ActionGiveUp && c.Channel(m.Channel).StoreAndForward && !m.ExpiresAt.IsZero() {
			// The push waits in the channel's store until expiry: nothing
			// failed, so keep waiting for its acknowledgement.
			return wait(m, m.ExpiresAt, ReasonAwaitingAck)
		}
		return d
	case message.StateFailed:
		return c.afterFailure(p, env, p.LastFailure.failure(), p.LastFailure.At, false)
	}
	return Decision{Action: ActionNone, Reason: ReasonSettled}
}

// AfterFailure says what follows a failure of the message's current
// attempt that was just observed and is not yet recorded. In order:
//
//   - the message is settled: None (nothing to record);
//   - the message has expired: Expire;
//   - the cycle's attempts reached Config.MaxAttempts: GiveUp with an alert;
//   - a transient failure on a channel with attempts left, still usable,
//     whose retry (RetryPolicy.Delay, never sooner than f.RetryAfter) comes
//     before expiry and is allowed by the background rule: Retry;
//   - another channel chosen by the failover policy among those usable, with
//     attempts left, allowed by the background rule, and available before
//     expiry (a channel that failed before in the cycle waits out its
//     backoff): Failover;
//   - a channel is available but the background rule holds it: Hold;
//   - the retry was only late: GiveUp (ReasonRetryAfterExpiry);
//   - otherwise: GiveUp with an alert (ReasonNoChannel).
//
// A TokenInvalid failure also names its channel in InvalidToken. Record
// holds f as the message's failed event (Retryable exactly when f is
// Transient), Final exactly when the decision gives up.
func (c Config) AfterFailure(p *Progress, f Failure, env Env) Decision {
	return c.afterFailure(p, env, f, env.Now, true)
}

// afterFailure decides after failure f of the current attempt, which
// happened at failedAt; fresh says it is not recorded yet.
func (c Config) afterFailure(p *Progress, env Env, f Failure, failedAt time.Time, fresh bool) Decision {
	m := &p.Message
	if m.State == message.StateNone || m.Terminal() {
		return Decision{Action: ActionNone, Reason: ReasonSettled}
	}
	var d Decision
	switch {
	case expired(m, env.Now):
		d = Decision{Action: ActionExpire, Reason: ReasonExpired}
	case p.CycleAttempts >= c.MaxAttempts:
		d = Decision{Action: ActionGiveUp, Reason: ReasonAttemptsExhausted, Alert: true}
	default:
		d = c.next(p, env, f, failedAt)
	}
	if f.Class == TokenInvalid {
		d.InvalidToken = f.Channel
	}
	if fresh {
		reason := f.Reason
		if reason == "" {
			reason = f.Class.String()
		}
		d.Record = &message.RecordFailure{Attempt: m.Attempt, Channel: f.Channel, Reason: reason, Status: f.Status,
			Retryable: f.Class == Transient, Final: d.Action == ActionGiveUp}
	} else if d.Action == ActionGiveUp {
		// The failure is recorded but not as final: record the give-up.
		d.Record = &message.RecordFailure{Attempt: m.Attempt, Channel: f.Channel, Reason: d.Reason, Final: true}
	}
	return d
}

func (c Config) next(p *Progress, env Env, f Failure, failedAt time.Time) Decision {
	m := &p.Message
	handed := p.Handed(c)
	retryLate, held := false, false
	if f.Class == Transient && usable(p, env, f.Channel) {
		if at, ok := c.retryAt(p, f, failedAt, env.Now); ok {
			switch {
			case !beforeExpiry(m, at):
				retryLate = true
			case !ResendAllowed(handed, c.Channel(f.Channel), env.Presence):
				held = true
			default:
				return Decision{Action: ActionRetry, Channel: f.Channel, At: at, Reason: f.Reason}
			}
		}
	}
	d := c.start(p, env, f.Channel)
	switch {
	case d.Action == ActionStart:
		d.Action, d.Reason = ActionFailover, f.Reason
		return d
	case d.Action == ActionHold || held:
		return Decision{Action: ActionHold, Reason: ReasonHeldInBackground}
	case retryLate:
		return Decision{Action: ActionGiveUp, Reason: ReasonRetryAfterExpiry}
	}
	return d
}

// retryAt returns when the current attempt's channel is retried after
// failure f at failedAt (not before now), and whether it is: f is
// transient and the channel has attempts left. An ack timeout is resent at
// once.
func (c Config) retryAt(p *Progress, f Failure, failedAt, now time.Time) (time.Time, bool) {
	if f.Class != Transient {
		return time.Time{}, false
	}
	delay, ok := c.Channel(f.Channel).Retry.Next(p.Channels[f.Channel].Attempts, f, c.draw(p, drawJitter))
	if !ok {
		return time.Time{}, false
	}
	if f.Reason == ReasonAckTimeout {
		delay = 0
	}
	return later(failedAt.Add(delay), now), true
}

// start chooses the channel of the next attempt, other than leaving: Start
// on it, Hold when only the background rule stands in the way, GiveUp
// otherwise.
func (c Config) start(p *Progress, env Env, leaving string) Decision {
	m := &p.Message
	now := env.Now
	if p.CycleAttempts >= c.MaxAttempts {
		return c.giveUp(p, ReasonAttemptsExhausted)
	}
	handed := p.Handed(c)
	exclude := map[string]bool{}
	held := map[string]bool{}
	earliest := map[string]time.Time{}
	for _, s := range env.Channels {
		name := s.Name
		if _, dup := earliest[name]; dup { // the first entry counts, as in Candidates
			continue
		}
		pol, cp := c.Channel(name), p.Channels[name]
		at := now
		if cp.Failures > 0 {
			at = later(cp.LastFailure.Add(pol.Retry.Delay(cp.Attempts, Failure{}, c.draw(p, drawJitter))), now)
		}
		switch {
		case name == leaving || env.Exclude[name] || cp.Out || cp.Attempts >= pol.Retry.MaxAttempts || !beforeExpiry(m, at):
			exclude[name] = true
		case !ResendAllowed(handed, pol, env.Presence):
			held[name] = true
		}
		earliest[name] = at
	}
	for name := range held {
		exclude[name] = true
	}
	name, ok := c.Failover.Choose(env.Channels, exclude, c.draw(p, drawPick))
	if ok {
		return Decision{Action: ActionStart, Channel: name, At: earliest[name]}
	}
	for name := range held {
		delete(exclude, name)
	}
	if _, ok := c.Failover.Choose(env.Channels, exclude, 0); ok {
		return Decision{Action: ActionHold, Reason: ReasonHeldInBackground}
	}
	return c.giveUp(p, ReasonNoChannel)
}

func (c Config) giveUp(p *Progress, reason string) Decision {
	m := &p.Message
	return Decision{Action: ActionGiveUp, Reason: reason, Alert: true,
		Record: &message.RecordFailure{Attempt: m.Attempt, Channel: m.Channel, Reason: reason, Final: true}}
}

// draw is the message's draw for a purpose at its current cycle and attempt.
func (c Config) draw(p *Progress, purpose int) float64 {
	return Draw(p.Message.ID, p.Cycle, p.Message.Attempt, purpose)
}

// CanResend reports whether an operator may resend the message now: it was
// sent (and not acknowledged) or failed, it has not expired, and it was
// resent fewer than Config.MaxResends times. The error matches
// ErrResendNotAllowed.
func (c Config) CanResend(p *Progress, now time.Time) error {
	m := &p.Message
	switch {
	case m.State != message.StateSent && m.State != message.StateFailed:
		state := string(m.State)
		if state == "" {
			state = "new"
		}
		return fmt.Errorf("%w: message is %s", ErrResendNotAllowed, state)
	case expired(m, now):
		return fmt.Errorf("%w: message expired at %s", ErrResendNotAllowed, m.ExpiresAt.Format(time.RFC3339))
	case p.Cycle-1 >= c.MaxResends:
		return fmt.Errorf("%w: already resent %d times", ErrResendNotAllowed, p.Cycle-1)
	}
	return nil
}

// Resend decides a manual resend: when CanResend allows it, the Start (or,
// under the background rule, the Hold) of a new cycle, decided on a copy of
// p with the cycle started (Progress.NewCycle at Env.Now). The runtime
// carries it out by recording message.Resend at Env.Now (its
// message.ResendRequested, which Apply folds into the same NewCycle, also
// clears a final failure), then the decision. When no channel is available
// it returns an error matching ErrResendNotAllowed, and the message is left
// as it is.
func (c Config) Resend(p *Progress, env Env) (Decision, error) {
	if err := c.CanResend(p, env.Now); err != nil {
		return Decision{}, err
	}
	q := p.clone()
	q.NewCycle(env.Now)
	d := c.Next(&q, env)
	switch d.Action {
	case ActionStart, ActionHold:
		return d, nil
	}
	return Decision{}, fmt.Errorf("%w: %s", ErrResendNotAllowed, d.Reason)
}

// usable reports whether channel may carry another attempt in the cycle,
// leaving its attempt count aside.
func usable(p *Progress, env Env, channel string) bool {
	if env.Exclude[channel] || p.Channels[channel].Out {
		return false
	}
	for _, s := range env.Channels {
		if s.Name == channel {
			return s.Enabled
		}
	}
	return false
}

func (r FailureRecord) failure() Failure {
	class := Transient
	if !r.Retryable {
		class = Permanent
	}
	return Failure{Channel: r.Channel, Class: class, Reason: r.Reason, Status: r.Status}
}

// wait is a Wait until at, or until the expiry when that comes first.
func wait(m *message.Message, at time.Time, reason string) Decision {
	if !beforeExpiry(m, at) {
		at = m.ExpiresAt
	}
	return Decision{Action: ActionWait, At: at, Reason: reason}
}

func expired(m *message.Message, now time.Time) bool {
	return !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt)
}

func beforeExpiry(m *message.Message, at time.Time) bool {
	return m.ExpiresAt.IsZero() || at.Before(m.ExpiresAt)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
