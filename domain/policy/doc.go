// Package policy holds the pure delivery policies the delivery sagas call:
// when to retry a failed attempt and on which channel, when an unacknowledged
// push is resent, when a resend must wait for the device (the iOS rule), which
// channel to fail over to, when to give up, and which timers a message needs.
// It does no I/O, reads no clock and draws no random numbers of its own: time
// comes in through Env.Now, and the jitter and weighted choices come from
// Draw, a hash of the message id, cycle and attempt number. The same inputs always
// give the same decision, so a decision recomputed after a restart is the
// decision made before it.
//
// # Pieces
//
//   - Config is an app's policy: a plain value with JSON tags that the runtime
//     records as an event when an operator changes it. It holds a
//     ChannelPolicy per channel (RetryPolicy, ack window, background rule),
//     a FailoverPolicy, and the per-message limits. Validate reports every
//     problem at once.
//   - RetryPolicy is a channel's backoff: min(Max, Initial·Multiplier^(n-1))
//     with ±Jitter, never below the provider's Retry-After or the channel's
//     documented minimums, for at most MaxAttempts attempts on the channel.
//   - FailoverPolicy chooses a channel: the best available priority first,
//     then weighted by each channel's rolling success rate (RollingRate).
//   - Progress is a message's state (message.Message) plus what the policies
//     need about its current attempt cycle, folded from the message's events.
//   - Config.Next says what to do about a message now (start, retry, fail
//     over, hold, give up, expire, or wait); Config.AfterFailure says it for
//     a failure that was just observed; Config.Resend starts a manual resend;
//     Config.Timers lists the durable timers a message needs.
//
// # How the sagas use it
//
// The runtime keeps, per message, the Progress folded from its stream, and
// per app and channel a RollingRate. Whenever something happens to a message
// (an event appended, a timer fired, the device's presence changed) it calls
// Next with an Env describing the world now and carries out the Decision:
//
//	ActionStart, ActionRetry, ActionFailover  at d.At: message.StartAttempt{Channel: d.Channel}
//	ActionWait      arm a timer at d.At (it is also in Timers)
//	ActionHold      nothing until the device's presence changes
//	ActionGiveUp    nothing more (d.Record, final, ended it); an alert when d.Alert
//	ActionExpire    message.Expire{}
//	ActionNone      nothing: the message is settled
//
// Every decision is carried out in the same order: record d.Record when set
// (the failure of the current attempt, Final exactly when the decision
// gives up), record the device token's invalidation when d.InvalidToken
// names a channel, then the action above. When a channel send fails the
// runtime calls AfterFailure, before recording anything, and carries out
// its decision the same way; when Next finds an attempt lost or an
// acknowledgement overdue, its decision's Record is that failure.
// At start it rebuilds its timers from Timers; a fired timer is removed, and
// Next decides what it means.
//
// # Attempts, cycles and exactly one outcome
//
// Attempts are counted per cycle: the first cycle starts when the message is
// accepted, and each manual resend (message.Resend, recorded as
// message.ResendRequested and folded by Progress.Apply into NewCycle)
// starts another. In a cycle at most Config.MaxAttempts attempts start, at
// most RetryPolicy.MaxAttempts of them on any one channel. A decision never
// starts an attempt at or after the message's expiry, never on a channel
// that is disabled, excluded by the Env, or out of the cycle after a
// permanent or token-invalid failure, and a give-up is final for its cycle:
// each cycle ends at most once and the message's last exactly once,
// delivered, failed, expired or cancelled. Only an operator's resend starts
// a new cycle after a final failure; the message domain allows none after
// expiry, cancellation or acknowledgement.
package policy
