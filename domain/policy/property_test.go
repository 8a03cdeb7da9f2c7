package policy_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
)

var simChannels = []string{policy.ChannelGateway, policy.ChannelAPNs, policy.ChannelFCM, policy.ChannelWebhook, "xiaomi"}

// drawConfig draws a valid config with small limits, so that every path
// (exhaustion, failover, holds, late retries) is reached.
func drawConfig(t *rapid.T) policy.Config {
	c := policy.DefaultConfig()
	c.MaxAttempts = rapid.IntRange(1, 8).Draw(t, "max_attempts")
	c.MaxResends = rapid.IntRange(0, 2).Draw(t, "max_resends")
	c.AttemptTimeout = rapid.SampledFrom([]time.Duration{30 * time.Second, time.Minute, 5 * time.Minute}).Draw(t, "attempt_timeout")
	c.Failover.PrioritySpread = rapid.IntRange(0, 1).Draw(t, "spread")
	for _, name := range simChannels[:4] { // xiaomi gets Default
		initial := rapid.SampledFrom([]time.Duration{100 * time.Millisecond, time.Second, 10 * time.Second}).Draw(t, "initial")
		c.Channels[name] = policy.ChannelPolicy{
			Retry: policy.RetryPolicy{
				MaxAttempts:   rapid.IntRange(1, 4).Draw(t, "channel max_attempts"),
				Initial:       initial,
				Max:           initial * rapid.SampledFrom([]time.Duration{1, 10, 100}).Draw(t, "max/initial"),
				Multiplier:    rapid.SampledFrom([]float64{1, 2, 3}).Draw(t, "multiplier"),
				Jitter:        rapid.SampledFrom([]float64{0, 0.2, 1}).Draw(t, "jitter"),
				MinRetryAfter: rapid.SampledFrom([]time.Duration{0, 5 * time.Second}).Draw(t, "min_retry_after"),
				MinThrottled:  rapid.SampledFrom([]time.Duration{0, time.Minute}).Draw(t, "min_throttled"),
			},
			AckWindow:        rapid.SampledFrom([]time.Duration{0, 30 * time.Second, 10 * time.Minute}).Draw(t, "ack_window"),
			HoldInBackground: rapid.Bool().Draw(t, "hold"),
			AppDedup:         rapid.Bool().Draw(t, "app_dedup"),
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("drawn config invalid: %v", err)
	}
	return c
}

func drawSimChannels(t *rapid.T) []policy.ChannelStat {
	var out []policy.ChannelStat
	for _, name := range simChannels {
		out = append(out, policy.ChannelStat{
			Name:        name,
			Enabled:     rapid.IntRange(0, 4).Draw(t, "enabled") > 0,
			Priority:    rapid.IntRange(0, 2).Draw(t, "priority"),
			SuccessRate: rapid.SampledFrom([]float64{0, 0.3, 0.9, 1}).Draw(t, "rate"),
			Samples:     rapid.SampledFrom([]float64{0, 100}).Draw(t, "samples"),
		})
	}
	return out
}

func drawPresence(t *rapid.T) policy.Presence {
	return policy.Presence{Foreground: rapid.Bool().Draw(t, "foreground"), Online: rapid.Bool().Draw(t, "online")}
}

// The delivery of one message to one device, driven by random channel
// outcomes, acknowledgements, cancellations, presence changes, manual
// resends and restarts (a decision recomputed by Next instead of carried
// out), with every decision carried out through the message domain:
//
//   - the message domain accepts every decision (none is refused);
//   - attempts never exceed Config.MaxAttempts in a cycle, nor a channel's
//     RetryPolicy.MaxAttempts;
//   - nothing is started at or after the expiry, and no timer but the
//     expiry is at or after it;
//   - a disabled, excluded, out or token-invalid channel is never chosen,
//     and never one the background rule holds;
//   - a Wait ends at a timer Timers lists;
//   - the message ends, with exactly one terminal event in its last cycle
//     and at most one in each earlier one (a resend may follow a final
//     failure), after which Next says None and Timers nothing;
//   - Progress replayed from the ledger equals the incremental one.
func TestPropertyDeliverySimulation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := drawConfig(t)
		chans := drawSimChannels(t)
		enabled := map[string]bool{}
		for _, s := range chans {
			enabled[s.Name] = s.Enabled
		}
		now := t0
		var p policy.Progress
		var events []message.Event
		do := func(c message.Command, at time.Time) {
			evs, err := message.Decide(&p.Message, c, at)
			if err != nil {
				t.Fatalf("the message domain refuses %T%+v at %s in state %s: %v", c, c, at.Format(time.StampMilli), p.Message.State, err)
			}
			for _, e := range evs {
				if err := p.Apply(e); err != nil {
					t.Fatal(err)
				}
				events = append(events, e)
			}
		}
		accept := message.Accept{MessageID: rapid.SampledFrom([]string{"m1", "m2", "m3"}).Draw(t, "id"), AppID: "a1",
			Audience: message.Audience{DeviceIDs: []string{"d1"}}, Targets: []string{"d1"}, TargetCount: 1,
			Notification: &message.Notification{Title: "t", Body: "b"},
			TTL:          rapid.SampledFrom([]time.Duration{30 * time.Second, 5 * time.Minute, time.Hour, 6 * time.Hour}).Draw(t, "ttl")}
		if rapid.Bool().Draw(t, "scheduled") {
			accept.SendAt = ptr(now.Add(rapid.SampledFrom([]time.Duration{time.Minute, time.Hour}).Draw(t, "send_at")))
		}
		do(accept, now)
		expiresAt := p.Message.ExpiresAt

		invalid := map[string]bool{} // the device's invalidated tokens
		presence := policy.Presence{}
		resends := 0
		envNow := func() policy.Env {
			return policy.Env{Now: now, Channels: chans, Exclude: invalid, Presence: presence}
		}
		checkTimers := func() {
			ts := cfg.Timers(&p)
			if p.Message.Terminal() && ts != nil {
				t.Fatalf("timers %v of a settled message", ts)
			}
			for _, tm := range ts {
				if tm.Kind != policy.TimerExpiry && !tm.At.Before(expiresAt) {
					t.Fatalf("timer %v at or after the expiry %s", tm, expiresAt)
				}
			}
			if !slices.IsSortedFunc(ts, func(a, b policy.Timer) int { return a.At.Compare(b.At) }) {
				t.Fatalf("timers out of order: %v", ts)
			}
		}
		check := func(d policy.Decision, e policy.Env) {
			m := &p.Message
			if d.InvalidToken != "" && (d.Record == nil || d.Record.Retryable || d.InvalidToken != d.Record.Channel) {
				t.Fatalf("token invalidation without a non-retryable failure: %+v", d)
			}
			if d.Record != nil && d.Record.Final != (d.Action == policy.ActionGiveUp) {
				t.Fatalf("Final %v with %s", d.Record.Final, d.Action)
			}
			switch d.Action {
			case policy.ActionStart, policy.ActionRetry, policy.ActionFailover:
				ch := d.Channel
				switch {
				case d.At.Before(e.Now) || !d.At.Before(expiresAt):
					t.Fatalf("%s at %s: now %s, expiry %s", d.Action, d.At, e.Now, expiresAt)
				case !enabled[ch]:
					t.Fatalf("chose %q, disabled", ch)
				case invalid[ch]:
					t.Fatalf("chose %q again after its token was invalidated", ch)
				case p.Channels[ch].Out:
					t.Fatalf("chose %q, out of the cycle", ch)
				case p.Handed(cfg) && !policy.ResendAllowed(true, cfg.Channel(ch), e.Presence):
					t.Fatalf("chose %q against the background rule (presence %+v)", ch, e.Presence)
				case d.Action == policy.ActionRetry && ch != m.Channel:
					t.Fatalf("retry on %q, the attempt was on %q", ch, m.Channel)
				case d.Action == policy.ActionFailover && ch == m.Channel:
					t.Fatalf("failover to the same channel %q", ch)
				}
			case policy.ActionWait:
				if !d.At.After(e.Now) {
					t.Fatalf("wait until %s at %s", d.At, e.Now)
				}
				if !slices.ContainsFunc(cfg.Timers(&p), func(tm policy.Timer) bool { return tm.At.Equal(d.At) }) {
					t.Fatalf("wait until %s: no such timer in %v", d.At, cfg.Timers(&p))
				}
			case policy.ActionGiveUp:
				wantAlert := d.Reason == policy.ReasonAttemptsExhausted || d.Reason == policy.ReasonNoChannel
				if d.Alert != wantAlert || d.Record == nil {
					t.Fatalf("give up %+v", d)
				}
			}
		}

		var carry func(d policy.Decision, e policy.Env)
		carry = func(d policy.Decision, e policy.Env) {
			check(d, e)
			if d.Record != nil {
				if p.Message.State == message.StateFailed && (!d.Record.Final || d.Record.Attempt != p.Message.Attempt) {
					t.Fatalf("after a recorded failure, a record that is not the give-up of its attempt: %+v", d)
				}
				do(*d.Record, now)
			}
			if d.InvalidToken != "" {
				invalid[d.InvalidToken] = true
			}
			switch d.Action {
			case policy.ActionNone:
				if !p.Message.Terminal() {
					t.Fatalf("none, but the message is %s", p.Message.State)
				}
			case policy.ActionWait:
				now = d.At.Add(rapid.SampledFrom([]time.Duration{0, 0, time.Millisecond, time.Second, time.Minute}).Draw(t, "late"))
			case policy.ActionHold:
				if rapid.IntRange(0, 2).Draw(t, "give up waiting") == 0 {
					now = expiresAt
				} else {
					presence = drawPresence(t)
					now = now.Add(rapid.SampledFrom([]time.Duration{time.Second, time.Minute, 10 * time.Minute}).Draw(t, "held for"))
				}
			case policy.ActionExpire:
				do(message.Expire{}, now)
			case policy.ActionGiveUp:
				if !p.Message.Terminal() || !p.Message.FinalFailure {
					t.Fatalf("gave up, message %s", p.Message.State)
				}
			case policy.ActionStart, policy.ActionRetry, policy.ActionFailover:
				now = d.At
				if rapid.IntRange(0, 3).Draw(t, "restart") == 0 {
					return // the runtime restarts: Next decides again at d.At
				}
				do(d.StartAttempt(), now)
				ch := d.Channel
				if p.CycleAttempts > cfg.MaxAttempts || p.Channels[ch].Attempts > cfg.Channel(ch).Retry.MaxAttempts {
					t.Fatalf("attempts: %d in the cycle (max %d), %d on %s (max %d)", p.CycleAttempts, cfg.MaxAttempts,
						p.Channels[ch].Attempts, ch, cfg.Channel(ch).Retry.MaxAttempts)
				}
				now = now.Add(rapid.SampledFrom([]time.Duration{time.Millisecond, 200 * time.Millisecond, 3 * time.Second}).Draw(t, "send time"))
				switch rapid.IntRange(0, 9).Draw(t, "outcome") {
				case 0, 1, 2, 3, 4:
					do(message.RecordSent{Attempt: p.Message.Attempt, Channel: ch, Accepted: 1}, now)
				case 5, 6, 7, 8:
					f := policy.Failure{
						Channel:    ch,
						Class:      rapid.SampledFrom([]policy.Class{policy.Transient, policy.Transient, policy.Transient, policy.Permanent, policy.TokenInvalid}).Draw(t, "class"),
						Reason:     rapid.SampledFrom([]string{"", "http_503"}).Draw(t, "reason"),
						Status:     rapid.SampledFrom([]int{0, 429, 503}).Draw(t, "status"),
						RetryAfter: rapid.SampledFrom([]time.Duration{0, 0, time.Second, time.Minute, 2 * time.Hour}).Draw(t, "retry_after"),
					}
					e := envNow()
					d2 := cfg.AfterFailure(&p, f, e)
					if d2.Record == nil && !p.Message.Terminal() {
						t.Fatalf("a fresh failure not recorded: %+v", d2)
					}
					if (d2.InvalidToken != "") != (f.Class == policy.TokenInvalid) {
						t.Fatalf("InvalidToken %q for a %s failure", d2.InvalidToken, f.Class)
					}
					if d2.Action == policy.ActionRetry && d2.At.Before(now.Add(f.RetryAfter)) {
						t.Fatalf("retry at %s, sooner than Retry-After %s from %s", d2.At, f.RetryAfter, now)
					}
					carry(d2, e)
				default: // lost: no result ever comes
				}
			}
		}

		// resend carries out a manual resend when the policy allows one now
		// (the message domain records it, Apply starts the new cycle) and
		// reports whether it did.
		resend := func() bool {
			e := envNow()
			d, err := cfg.Resend(&p, e)
			if err != nil || d.Action != policy.ActionStart {
				return false
			}
			cycle := p.Cycle
			do(message.Resend{Reason: "operator"}, now)
			if p.Cycle != cycle+1 || !p.ResendPending() || p.Message.Terminal() {
				t.Fatalf("after a resend: %+v", p)
			}
			resends++
			carry(d, e)
			return true
		}

		for step := 0; !p.Message.Terminal(); step++ {
			if step > 2000 {
				t.Fatalf("no outcome after %d steps: %+v", step, p)
			}
			checkTimers()
			m := &p.Message
			switch rapid.IntRange(0, 15).Draw(t, "event") {
			case 0: // the device acknowledges a push some channel carried
				if len(p.HandedToOS) > 0 && (m.State == message.StateSending || m.State == message.StateSent || m.State == message.StateFailed) {
					do(message.RecordDelivered{DeviceID: "d1", Channel: m.Channel}, now)
					continue
				}
			case 1:
				if m.State == message.StateAccepted || m.State == message.StateScheduled {
					do(message.Cancel{Reason: "operator"}, now)
					continue
				}
			case 2:
				presence = drawPresence(t)
			case 3: // an operator resends
				if resend() {
					continue
				}
			}
			carry(cfg.Next(&p, envNow()), envNow())
			// An operator may resend a message that failed finally.
			if p.Message.FinalFailure && rapid.IntRange(0, 2).Draw(t, "resend after a final failure") == 0 {
				resend()
			}
		}

		checkTimers()
		if d := cfg.Next(&p, envNow()); d.Action != policy.ActionNone {
			t.Fatalf("settled, yet Next = %+v", d)
		}
		// Each cycle ends at most once, the last exactly once.
		terminal, cycles := 0, 0
		for _, e := range events {
			switch e := e.(type) {
			case message.ResendRequested:
				cycles++
				if terminal > 1 {
					t.Fatalf("%d terminal events in cycle %d of %v", terminal, cycles, events)
				}
				terminal = 0
			case message.Failed:
				if e.Final {
					terminal++
				}
			case message.Expired, message.Cancelled, message.Delivered:
				terminal++
			case message.Sending:
				if !e.At.Before(expiresAt) {
					t.Fatalf("attempt %d started at %s, expiry %s", e.Attempt, e.At, expiresAt)
				}
			}
		}
		if terminal != 1 {
			t.Fatalf("%d terminal events in %v", terminal, events)
		}
		if cycles != resends || p.Cycle != resends+1 {
			t.Fatalf("%d resends, %d resend events, cycle %d", resends, cycles, p.Cycle)
		}
		// The resends are in the ledger: the progress replays.
		back, err := policy.Replay(events)
		if err != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("replay differs: %v\n%+v\n%+v", err, back, p)
		}
	})
}
