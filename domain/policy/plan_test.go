package policy_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const ttl = time.Hour

func ptr[T any](v T) *T { return &v }

// accepted is the acceptance of m1 at t0, due at sendAt when it is set.
func accepted(sendAt *time.Time) message.Accepted {
	start := t0
	if sendAt != nil {
		start = *sendAt
	}
	return message.Accepted{MessageID: "m1", AppID: "a1", Audience: message.Audience{DeviceIDs: []string{"d1"}}, Targets: []string{"d1"},
		TargetCount: 1, Notification: &message.Notification{Title: "t", Body: "b"}, Priority: message.PriorityNormal,
		TTLSeconds: int64(ttl / time.Second), ExpiresAt: start.Add(ttl), SendAt: sendAt, At: t0}
}

func sending(n int, ch string, at time.Duration) message.Sending {
	return message.Sending{Attempt: n, Channel: ch, At: t0.Add(at)}
}
func sent(n int, ch string, at time.Duration) message.Sent {
	return message.Sent{Attempt: n, Channel: ch, Accepted: 1, At: t0.Add(at)}
}
func failed(n int, ch string, at time.Duration, reason string, retryable bool) message.Failed {
	return message.Failed{Attempt: n, Channel: ch, Reason: reason, Retryable: retryable, At: t0.Add(at)}
}

func replay(t *testing.T, events ...message.Event) *policy.Progress {
	t.Helper()
	p, err := policy.Replay(events)
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

// channels: the gateway first, then APNs, then FCM; the webhook is
// disabled. Every rate is equal, so that choices are by priority.
func channels() []policy.ChannelStat {
	return []policy.ChannelStat{
		stat(policy.ChannelGateway, 0, 0.9, 100),
		stat(policy.ChannelAPNs, 1, 0.9, 100),
		stat(policy.ChannelFCM, 2, 0.9, 100),
		{Name: policy.ChannelWebhook, Enabled: false, Priority: 0, SuccessRate: 1, Samples: 100},
	}
}

func env(at time.Duration) policy.Env {
	return policy.Env{Now: t0.Add(at), Channels: channels()}
}

func jitterOf(p *policy.Progress) float64 {
	return policy.Draw(p.Message.ID, p.Cycle, p.Message.Attempt, 0)
}

func TestNext(t *testing.T) {
	cfg := policy.DefaultConfig()
	gwRetry := cfg.Channel(policy.ChannelGateway).Retry
	sendAt := t0.Add(10 * time.Minute)
	// retry1 is the gateway's retry after a failure of attempt 1 at t0+1s.
	retry1 := func(p *policy.Progress) time.Time {
		return t0.Add(time.Second + gwRetry.Delay(1, policy.Failure{}, jitterOf(p)))
	}
	for _, tc := range []struct {
		name   string
		events []message.Event
		env    policy.Env
		want   func(p *policy.Progress) policy.Decision
	}{
		{"nothing", nil, env(0), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionNone, Reason: policy.ReasonNotAccepted}
		}},
		{"accepted: start on the best priority", []message.Event{accepted(nil)}, env(0), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionStart, Channel: "gateway", At: t0}
		}},
		{"accepted, device has no gateway token: the next priority", []message.Event{accepted(nil)},
			policy.Env{Now: t0, Channels: channels(), Exclude: map[string]bool{"gateway": true}}, func(*policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionStart, Channel: "apns", At: t0}
			}},
		{"accepted, no channel at all: give up at attempt 0", []message.Event{accepted(nil)},
			policy.Env{Now: t0, Channels: channels()[3:]}, func(*policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionGiveUp, Reason: policy.ReasonNoChannel, Alert: true,
					Record: &message.RecordFailure{Reason: policy.ReasonNoChannel, Final: true}}
			}},
		{"scheduled, not due", []message.Event{accepted(&sendAt), message.Scheduled{SendAt: sendAt, At: t0}}, env(time.Minute), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionWait, At: sendAt, Reason: policy.ReasonNotDue}
		}},
		{"scheduled, due", []message.Event{accepted(&sendAt), message.Scheduled{SendAt: sendAt, At: t0}}, env(10 * time.Minute), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionStart, Channel: "gateway", At: sendAt}
		}},
		{"sending: wait for the result", []message.Event{accepted(nil), sending(1, "gateway", 0)}, env(time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionWait, At: t0.Add(time.Minute), Reason: policy.ReasonInFlight}
		}},
		{"sending too long: the attempt is lost, retried", []message.Event{accepted(nil), sending(1, "gateway", 0)}, env(time.Minute), func(p *policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(time.Minute + gwRetry.Delay(1, policy.Failure{}, jitterOf(p))),
				Reason: policy.ReasonAttemptTimeout, Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: policy.ReasonAttemptTimeout, Retryable: true}}
		}},
		{"sent: wait for the ack", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", time.Second)}, env(2 * time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionWait, At: t0.Add(31 * time.Second), Reason: policy.ReasonAwaitingAck}
		}},
		{"sent, no ack in the window: resent at once", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", time.Second)}, env(40 * time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(40 * time.Second), Reason: policy.ReasonAckTimeout,
				Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: policy.ReasonAckTimeout, Retryable: true}}
		}},
		{"sent on a channel without acks: wait for expiry", []message.Event{accepted(nil), sending(1, "xiaomi", 0), sent(1, "xiaomi", time.Second)}, env(50 * time.Minute), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionWait, At: t0.Add(ttl), Reason: policy.ReasonAwaitingAck}
		}},
		{"failed, retryable: retry after the backoff", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "http_503", true)}, env(time.Second), func(p *policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: retry1(p), Reason: "http_503"}
		}},
		{"failed, retryable, timer fired late: retry now", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "http_503", true)}, env(5 * time.Minute), func(p *policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(5 * time.Minute), Reason: "http_503"}
		}},
		{"failed, not retryable: fail over", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "bad_request", false)}, env(2 * time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionFailover, Channel: "apns", At: t0.Add(2 * time.Second), Reason: "bad_request"}
		}},
		{"failed after an ack timeout: resend at once", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0), failed(1, "gateway", 30*time.Second, policy.ReasonAckTimeout, true)}, env(30 * time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(30 * time.Second), Reason: policy.ReasonAckTimeout}
		}},
		{"failed, channel out of attempts: fail over", []message.Event{accepted(nil),
			sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true),
			sending(2, "gateway", 2*time.Second), failed(2, "gateway", 3*time.Second, "x", true),
			sending(3, "gateway", 10*time.Second), failed(3, "gateway", 11*time.Second, "x", true)}, env(11 * time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionFailover, Channel: "apns", At: t0.Add(11 * time.Second), Reason: "x"}
		}},
		{"failed and the channel was since disabled: give up, recording it",
			[]message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true)},
			policy.Env{Now: t0.Add(time.Minute), Channels: channels()[3:]}, func(*policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionGiveUp, Reason: policy.ReasonNoChannel, Alert: true,
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: policy.ReasonNoChannel, Final: true}}
			}},
		{"expired", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", time.Second)}, env(ttl), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionExpire, Reason: policy.ReasonExpired}
		}},
		{"delivered: settled", []message.Event{accepted(nil), sending(1, "gateway", 0), message.Delivered{DeviceID: "d1", Channel: "gateway", At: t0}}, env(time.Second), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionNone, Reason: policy.ReasonSettled}
		}},
		{"cancelled: settled", []message.Event{accepted(&sendAt), message.Cancelled{At: t0}}, env(ttl + time.Hour), func(*policy.Progress) policy.Decision {
			return policy.Decision{Action: policy.ActionNone, Reason: policy.ReasonSettled}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := replay(t, tc.events...)
			got := cfg.Next(p, tc.env)
			if want := tc.want(p); !reflect.DeepEqual(got, want) {
				t.Fatalf("Next =\n%+v\nwant\n%+v", got, want)
			}
			checkAgainstDomain(t, p, got, tc.env.Now)
		})
	}
}

// checkAgainstDomain checks that the message domain accepts what d asks
// for, the give-up after a recorded failure included.
func checkAgainstDomain(t *testing.T, p *policy.Progress, d policy.Decision, now time.Time) {
	t.Helper()
	m := p.Message
	m.Delivered, m.Opened = nil, nil
	do := func(c message.Command, at time.Time) {
		evs, err := message.Decide(&m, c, at)
		if err != nil {
			t.Fatalf("the message domain refuses %+v: %v", c, err)
		}
		for _, e := range evs {
			if err := m.Evolve(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if d.Record != nil {
		if m.State == message.StateFailed && (!d.Record.Final || d.Record.Attempt != m.Attempt) {
			t.Fatalf("after a recorded failure, a record that is not its give-up: %+v", d.Record)
		}
		do(*d.Record, now)
	}
	switch d.Action {
	case policy.ActionStart, policy.ActionRetry, policy.ActionFailover:
		if d.At.Before(now) || !d.At.Before(m.ExpiresAt) {
			t.Fatalf("attempt at %s: now %s, expiry %s", d.At, now, m.ExpiresAt)
		}
		do(d.StartAttempt(), d.At)
	case policy.ActionExpire:
		do(message.Expire{}, now)
	case policy.ActionGiveUp:
		if !m.Terminal() {
			t.Fatal("gave up but the message is not settled")
		}
	}
}

func TestAfterFailure(t *testing.T) {
	cfg := policy.DefaultConfig()
	base := []message.Event{accepted(nil), sending(1, "gateway", 0)}
	for _, tc := range []struct {
		name   string
		cfg    func(*policy.Config)
		events []message.Event
		f      policy.Failure
		env    policy.Env
		want   func(p *policy.Progress) policy.Decision
	}{
		{"transient: retry on the same channel after the backoff", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "http_503", Status: 503}, env(time.Second),
			func(p *policy.Progress) policy.Decision {
				d := cfg.Channel("gateway").Retry.Delay(1, policy.Failure{Status: 503}, jitterOf(p))
				return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(time.Second + d), Reason: "http_503",
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "http_503", Status: 503, Retryable: true}}
			}},
		{"transient with Retry-After: not sooner", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "http_429", Status: 429, RetryAfter: 7 * time.Minute}, env(time.Second),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionRetry, Channel: "gateway", At: t0.Add(time.Second + 7*time.Minute), Reason: "http_429",
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "http_429", Status: 429, Retryable: true}}
			}},
		{"Retry-After past expiry: fail over now", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "http_503", RetryAfter: 2 * time.Hour}, env(time.Second),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionFailover, Channel: "apns", At: t0.Add(time.Second), Reason: "http_503",
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "http_503", Retryable: true}}
			}},
		{"Retry-After past expiry, nothing else: give up without alert", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "http_503", RetryAfter: 2 * time.Hour},
			policy.Env{Now: t0.Add(time.Second), Channels: channels()[:1]},
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionGiveUp, Reason: policy.ReasonRetryAfterExpiry,
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "http_503", Retryable: true, Final: true}}
			}},
		{"transient, but the device lost its token there meanwhile: fail over", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "timeout"},
			policy.Env{Now: t0.Add(time.Second), Channels: append(channels(), stat("gateway", 9, 0, 0)), Exclude: map[string]bool{"gateway": true}},
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionFailover, Channel: "apns", At: t0.Add(time.Second), Reason: "timeout",
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "timeout", Retryable: true}}
			}},
		{"permanent: fail over at once", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Permanent, Reason: "config_missing_url"}, env(time.Second),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionFailover, Channel: "apns", At: t0.Add(time.Second), Reason: "config_missing_url",
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "config_missing_url"}}
			}},
		{"token invalid: record it, fail over", nil, []message.Event{accepted(nil), sending(1, "apns", 0)},
			policy.Failure{Channel: "apns", Class: policy.TokenInvalid, Reason: "apns_BadDeviceToken", Status: 400},
			policy.Env{Now: t0.Add(time.Second), Channels: channels(), Exclude: map[string]bool{"gateway": true}},
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionFailover, Channel: "fcm", At: t0.Add(time.Second), Reason: "apns_BadDeviceToken", InvalidToken: "apns",
					Record: &message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "apns_BadDeviceToken", Status: 400}}
			}},
		{"token invalid, nothing else: give up, still record the token", nil, []message.Event{accepted(nil), sending(1, "apns", 0)},
			policy.Failure{Channel: "apns", Class: policy.TokenInvalid},
			policy.Env{Now: t0.Add(time.Second), Channels: channels()[1:2]},
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionGiveUp, Reason: policy.ReasonNoChannel, Alert: true, InvalidToken: "apns",
					Record: &message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "token_invalid", Final: true}}
			}},
		{"the cycle's last attempt: give up with an alert", func(c *policy.Config) { c.MaxAttempts = 2 },
			[]message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true), sending(2, "gateway", 3*time.Second)},
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "timeout"}, env(4 * time.Second),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionGiveUp, Reason: policy.ReasonAttemptsExhausted, Alert: true,
					Record: &message.RecordFailure{Attempt: 2, Channel: "gateway", Reason: "timeout", Retryable: true, Final: true}}
			}},
		{"a channel tried before waits out its backoff", nil,
			[]message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true), sending(2, "apns", 1100*time.Millisecond)},
			policy.Failure{Channel: "apns", Class: policy.Permanent, Reason: "p"}, env(1200 * time.Millisecond),
			func(p *policy.Progress) policy.Decision {
				d := cfg.Channel("gateway").Retry.Delay(1, policy.Failure{}, jitterOf(p))
				return policy.Decision{Action: policy.ActionFailover, Channel: "gateway", At: t0.Add(time.Second + d), Reason: "p",
					Record: &message.RecordFailure{Attempt: 2, Channel: "apns", Reason: "p"}}
			}},
		{"after expiry: record, then expire", nil, base,
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "timeout"}, env(ttl),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionExpire, Reason: policy.ReasonExpired,
					Record: &message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "timeout", Retryable: true}}
			}},
		{"settled meanwhile: nothing", nil, append(base[:2:2], message.Delivered{DeviceID: "d1", Channel: "gateway", At: t0}),
			policy.Failure{Channel: "gateway", Class: policy.Transient, Reason: "timeout"}, env(time.Second),
			func(p *policy.Progress) policy.Decision {
				return policy.Decision{Action: policy.ActionNone, Reason: policy.ReasonSettled}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg.Clone()
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			p := replay(t, tc.events...)
			got := c.AfterFailure(p, tc.f, tc.env)
			if want := tc.want(p); !reflect.DeepEqual(got, want) {
				t.Fatalf("AfterFailure =\n%+v\nwant\n%+v", got, want)
			}
			checkAgainstDomain(t, p, got, tc.env.Now)
		})
	}
}

// The seed's iOS rule: once APNs accepted a push, no resend while the app
// is in the background; a resend when it comes to the foreground (any
// channel) or online on the gateway (the gateway only).
func TestBackgroundRule(t *testing.T) {
	cfg := policy.DefaultConfig()
	apnsSent := []message.Event{accepted(nil), sending(1, "apns", 0), sent(1, "apns", time.Second)}
	after := 11 * time.Minute // past APNs' 10 min ack window
	onlyAPNs := channels()[1:2]
	for _, tc := range []struct {
		name     string
		events   []message.Event
		chans    []policy.ChannelStat
		presence policy.Presence
		action   policy.Action
		channel  string
	}{
		{"background, offline: hold", apnsSent, channels(), policy.Presence{}, policy.ActionHold, ""},
		{"background, offline, APNs only: hold", apnsSent, onlyAPNs, policy.Presence{}, policy.ActionHold, ""},
		{"background, online on the gateway: the gateway", apnsSent, channels(), policy.Presence{Online: true}, policy.ActionFailover, "gateway"},
		{"background, online, APNs only: hold", apnsSent, onlyAPNs, policy.Presence{Online: true}, policy.ActionHold, ""},
		{"foreground: APNs again", apnsSent, channels(), policy.Presence{Foreground: true}, policy.ActionRetry, "apns"},
		{"APNs never accepted it: retried in the background",
			[]message.Event{accepted(nil), sending(1, "apns", 0), failed(1, "apns", time.Second, "timeout", true)}, onlyAPNs, policy.Presence{}, policy.ActionRetry, "apns"},
		{"held after the failure was recorded, still background: hold",
			append(slicesClone(apnsSent), failed(1, "apns", after, policy.ReasonAckTimeout, true)), channels(), policy.Presence{}, policy.ActionHold, ""},
		{"held after the failure was recorded, now foreground: resend",
			append(slicesClone(apnsSent), failed(1, "apns", after, policy.ReasonAckTimeout, true)), channels(), policy.Presence{Foreground: true}, policy.ActionRetry, "apns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := replay(t, tc.events...)
			e := policy.Env{Now: t0.Add(after), Channels: tc.chans, Presence: tc.presence}
			d := cfg.Next(p, e)
			if d.Action != tc.action || d.Channel != tc.channel {
				t.Fatalf("Next = %+v, want %s %q", d, tc.action, tc.channel)
			}
			if d.Action == policy.ActionHold && d.Reason != policy.ReasonHeldInBackground {
				t.Fatalf("hold for %q", d.Reason)
			}
			checkAgainstDomain(t, p, d, e.Now)
		})
	}
	for _, tc := range []struct {
		handed bool
		target policy.ChannelPolicy
		pr     policy.Presence
		want   bool
	}{
		{false, cfg.Channel("apns"), policy.Presence{}, true},
		{true, cfg.Channel("apns"), policy.Presence{}, false},
		{true, cfg.Channel("apns"), policy.Presence{Online: true}, false},
		{true, cfg.Channel("apns"), policy.Presence{Foreground: true}, true},
		{true, cfg.Channel("gateway"), policy.Presence{}, false},
		{true, cfg.Channel("gateway"), policy.Presence{Online: true}, true},
		{true, cfg.Channel("fcm"), policy.Presence{Online: true}, false},
	} {
		if got := policy.ResendAllowed(tc.handed, tc.target, tc.pr); got != tc.want {
			t.Errorf("ResendAllowed(%v, %+v, %+v) = %v", tc.handed, tc.target, tc.pr, got)
		}
	}
}

func slicesClone(s []message.Event) []message.Event { return append([]message.Event(nil), s...) }

func TestResend(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.MaxAttempts = 2
	exhausted := []message.Event{accepted(nil),
		sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true),
		sending(2, "gateway", 5*time.Second), failed(2, "gateway", 6*time.Second, "x", false)}
	for _, tc := range []struct {
		name    string
		events  []message.Event
		now     time.Duration
		cycles  int
		want    policy.Decision
		wantErr string
	}{
		{"after a sent attempt: a new cycle", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0)}, time.Minute, 0,
			policy.Decision{Action: policy.ActionStart, Channel: "gateway", At: t0.Add(time.Minute), Reason: policy.ReasonResend}, ""},
		{"attempts and exclusions start over", exhausted, time.Minute, 0,
			policy.Decision{Action: policy.ActionStart, Channel: "gateway", At: t0.Add(time.Minute), Reason: policy.ReasonResend}, ""},
		{"after a final failure", append(slicesClone(exhausted[:4]), message.Failed{Attempt: 2, Channel: "gateway", Reason: "x", Final: true, At: t0}), time.Minute, 0,
			policy.Decision{Action: policy.ActionStart, Channel: "gateway", At: t0.Add(time.Minute), Reason: policy.ReasonResend}, ""},
		{"not sent yet", []message.Event{accepted(nil)}, time.Minute, 0, policy.Decision{}, "message is accepted"},
		{"in flight", []message.Event{accepted(nil), sending(1, "gateway", 0)}, time.Minute, 0, policy.Decision{}, "message is sending"},
		{"delivered", []message.Event{accepted(nil), sending(1, "gateway", 0), message.Delivered{DeviceID: "d1", At: t0}}, time.Minute, 0, policy.Decision{}, "message is delivered"},
		{"nothing", nil, time.Minute, 0, policy.Decision{}, "message is new"},
		{"expired", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0)}, ttl, 0, policy.Decision{}, "expired"},
		{"too many resends", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0)}, time.Minute, 3, policy.Decision{}, "already resent 3 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := replay(t, tc.events...)
			for range tc.cycles {
				p.NewCycle(t0)
			}
			e := env(tc.now)
			d, err := cfg.Resend(p, e)
			if tc.wantErr != "" {
				if !errors.Is(err, policy.ErrResendNotAllowed) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(d, tc.want) {
				t.Fatalf("Resend = %+v, %v; want %+v", d, err, tc.want)
			}
			if p.Cycle != 1+tc.cycles {
				t.Fatal("Resend changed the progress")
			}
		})
	}
	// No channel: an error, the message left as it is.
	p := replay(t, accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0))
	if _, err := cfg.Resend(p, policy.Env{Now: t0.Add(time.Minute)}); !errors.Is(err, policy.ErrResendNotAllowed) || !strings.Contains(err.Error(), policy.ReasonNoChannel) {
		t.Fatalf("no channel: %v", err)
	}
}

func TestProgressFold(t *testing.T) {
	p := replay(t, accepted(nil),
		sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true),
		sending(2, "apns", 2*time.Second), sent(2, "apns", 3*time.Second), failed(2, "apns", 4*time.Second, policy.ReasonAckTimeout, true),
		sending(3, "fcm", 5*time.Second), failed(3, "fcm", 6*time.Second, "bad", false))
	want := map[string]policy.ChannelProgress{
		"gateway": {Attempts: 1, Failures: 1, LastFailure: t0.Add(time.Second)},
		"apns":    {Attempts: 1, Accepted: 1, Failures: 1, LastFailure: t0.Add(4 * time.Second)},
		"fcm":     {Attempts: 1, Failures: 1, Out: true, LastFailure: t0.Add(6 * time.Second)},
	}
	if p.Cycle != 1 || p.CycleStartedAt != t0 || p.CycleAttempts != 3 || !reflect.DeepEqual(p.Channels, want) || !p.HandedToOS["apns"] || len(p.HandedToOS) != 1 ||
		p.StartedAt != t0.Add(5*time.Second) || !p.SentAt.IsZero() ||
		p.LastFailure != (policy.FailureRecord{Attempt: 3, Channel: "fcm", Reason: "bad", At: t0.Add(6 * time.Second)}) {
		t.Fatalf("%+v", p)
	}
	if !p.Handed(policy.DefaultConfig()) {
		t.Fatal("APNs accepted it: handed")
	}
	q := *p
	q.NewCycle(t0.Add(time.Minute))
	if q.Cycle != 2 || q.CycleStartedAt != t0.Add(time.Minute) || q.CycleAttempts != 0 || q.Channels != nil || q.LastFailure != (policy.FailureRecord{}) || !q.HandedToOS["apns"] {
		t.Fatalf("new cycle: %+v", q)
	}
	if p.ResendPending() || !q.ResendPending() {
		t.Fatal("ResendPending")
	}
	if ts := policy.DefaultConfig().Timers(&q); len(ts) != 2 || ts[0] != (policy.Timer{Kind: policy.TimerSend, At: t0.Add(time.Minute)}) {
		t.Fatalf("timers of a pending resend: %v", ts)
	}
	// APNs accepted it before: the background rule holds, until the
	// device is online on the gateway.
	e := env(2 * time.Minute)
	if d := policy.DefaultConfig().Next(&q, e); d.Action != policy.ActionHold {
		t.Fatalf("Next of a pending resend, device in the background: %+v", d)
	}
	e.Presence.Online = true
	if d := policy.DefaultConfig().Next(&q, e); d.Action != policy.ActionStart || d.Reason != policy.ReasonResend || d.Channel != "gateway" {
		t.Fatalf("Next of a pending resend: %+v", d)
	}
	if p.CycleAttempts != 3 || p.Channels["gateway"].Attempts != 1 {
		t.Fatal("a copy's new cycle changed the original")
	}
	// Copy on write: applying to a copy leaves the original alone.
	r := *p
	if err := r.Apply(message.Expired{At: t0.Add(ttl)}); err != nil {
		t.Fatal(err)
	}
	if p.Message.State == message.StateExpired {
		t.Fatal("shared state")
	}
	// An invalid transition changes nothing.
	before := *p
	if err := p.Apply(sent(1, "gateway", 0)); err == nil || !reflect.DeepEqual(before, *p) {
		t.Fatalf("invalid event: %v, %+v", err, p)
	}
	// A final failure at attempt 0 names no channel.
	z := replay(t, accepted(nil), message.Failed{Reason: "no_channel", Final: true, At: t0})
	if z.Channels != nil || z.LastFailure.Reason != "no_channel" {
		t.Fatalf("%+v", z)
	}
	if _, err := policy.Replay([]message.Event{sent(1, "x", 0)}); err == nil {
		t.Fatal("Replay accepted an invalid history")
	}
	// The give-up after a recorded failure does not count the attempt's
	// failure again.
	lost := []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true)}
	giveUp := message.Failed{Attempt: 1, Channel: "gateway", Reason: policy.ReasonNoChannel, Final: true, Alert: policy.ReasonNoChannel, At: t0.Add(2 * time.Second)}
	g := replay(t, append(slicesClone(lost), giveUp)...)
	if g.Channels["gateway"] != (policy.ChannelProgress{Attempts: 1, Failures: 1, LastFailure: t0.Add(time.Second)}) || !g.Message.Terminal() ||
		g.LastFailure != (policy.FailureRecord{Attempt: 1, Channel: "gateway", Reason: policy.ReasonNoChannel, At: t0.Add(2 * time.Second)}) {
		t.Fatalf("give-up: %+v", g)
	}
	// A resend event is NewCycle: after a final failure too, the resend is
	// pending and Next starts it.
	resent := replay(t, append(slicesClone(lost), message.ResendRequested{Reason: "operator", At: t0.Add(time.Minute)})...)
	g2 := replay(t, append(append(slicesClone(lost), giveUp), message.ResendRequested{At: t0.Add(time.Minute)})...)
	for _, r := range []*policy.Progress{resent, g2} {
		if r.Cycle != 2 || r.CycleStartedAt != t0.Add(time.Minute) || r.CycleAttempts != 0 || r.Channels != nil || r.LastFailure != (policy.FailureRecord{}) ||
			!r.ResendPending() || r.Message.Terminal() || r.Message.Resends != 1 {
			t.Fatalf("resend event: %+v", r)
		}
		if d := policy.DefaultConfig().Next(r, env(2*time.Minute)); d.Action != policy.ActionStart || d.Reason != policy.ReasonResend {
			t.Fatalf("Next after a resend event: %+v", d)
		}
	}
}

func TestTimers(t *testing.T) {
	cfg := policy.DefaultConfig()
	sendAt := t0.Add(10 * time.Minute)
	expiry := policy.Timer{Kind: policy.TimerExpiry, At: t0.Add(ttl)}
	for _, tc := range []struct {
		name   string
		events []message.Event
		want   func(p *policy.Progress) []policy.Timer
	}{
		{"nothing", nil, func(*policy.Progress) []policy.Timer { return nil }},
		{"accepted", []message.Event{accepted(nil)}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerSend, At: t0}, expiry}
		}},
		{"scheduled", []message.Event{accepted(&sendAt), message.Scheduled{SendAt: sendAt, At: t0}}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerSend, At: sendAt}, {Kind: policy.TimerExpiry, At: sendAt.Add(ttl)}}
		}},
		{"sending", []message.Event{accepted(nil), sending(1, "gateway", time.Second)}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerAttempt, At: t0.Add(time.Second + time.Minute)}, expiry}
		}},
		{"sent on the gateway", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", time.Second)}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerAck, At: t0.Add(31 * time.Second)}, expiry}
		}},
		{"sent on a channel without acks", []message.Event{accepted(nil), sending(1, "webhook", 0), sent(1, "webhook", time.Second)}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{expiry}
		}},
		{"sent, ack window past expiry", []message.Event{accepted(nil), sending(1, "apns", 0), sent(1, "apns", 55*time.Minute)}, func(*policy.Progress) []policy.Timer {
			return []policy.Timer{expiry}
		}},
		{"failed, retryable", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", true)}, func(p *policy.Progress) []policy.Timer {
			d := cfg.Channel("gateway").Retry.Delay(1, policy.Failure{}, jitterOf(p))
			return []policy.Timer{{Kind: policy.TimerRetry, At: t0.Add(time.Second + d)}, expiry}
		}},
		{"failed after an ack timeout", []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", 0), failed(1, "gateway", 30*time.Second, policy.ReasonAckTimeout, true)}, func(p *policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerRetry, At: t0.Add(30 * time.Second)}, expiry}
		}},
		{"failed, not retryable: at once", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", time.Second, "x", false)}, func(p *policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerRetry, At: t0.Add(time.Second)}, expiry}
		}},
		{"failed, retry would be past expiry: at once", []message.Event{accepted(nil), sending(1, "gateway", 0), failed(1, "gateway", ttl-time.Millisecond, "x", true)}, func(p *policy.Progress) []policy.Timer {
			return []policy.Timer{{Kind: policy.TimerRetry, At: t0.Add(ttl - time.Millisecond)}, expiry}
		}},
		{"failed finally", []message.Event{accepted(nil), sending(1, "gateway", 0), message.Failed{Attempt: 1, Channel: "gateway", Reason: "x", Final: true, At: t0}}, func(*policy.Progress) []policy.Timer {
			return nil
		}},
		{"expired", []message.Event{accepted(nil), message.Expired{At: t0.Add(ttl)}}, func(*policy.Progress) []policy.Timer { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := replay(t, tc.events...)
			if got, want := cfg.Timers(p), tc.want(p); !reflect.DeepEqual(got, want) {
				t.Fatalf("Timers =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestDecisionHelpers(t *testing.T) {
	for a, want := range map[policy.Action]string{policy.ActionNone: "none", policy.ActionWait: "wait", policy.ActionStart: "start", policy.ActionRetry: "retry",
		policy.ActionFailover: "failover", policy.ActionHold: "hold", policy.ActionGiveUp: "give_up", policy.ActionExpire: "expire", 42: "action(42)"} {
		if a.String() != want {
			t.Errorf("%d: %q", int(a), a.String())
		}
		d := policy.Decision{Action: a, Channel: "fcm"}
		if sends := a == policy.ActionStart || a == policy.ActionRetry || a == policy.ActionFailover; d.Sends() != sends {
			t.Errorf("%s: Sends %v", a, d.Sends())
		}
	}
	if (policy.Decision{Channel: "fcm"}).StartAttempt() != (message.StartAttempt{Channel: "fcm"}) {
		t.Error("StartAttempt")
	}
}

// TestStoreAndForwardWaitsUntilExpiry: when the ack window of a push on a
// store-and-forward channel (the gateway) ends and nothing else can be
// tried, the message keeps waiting for the acknowledgement until it
// expires, recording nothing; the same channel without the flag gives up
// with an alert, and one that can still fail over does.
func TestStoreAndForwardWaitsUntilExpiry(t *testing.T) {
	onlyGateway := policy.Env{Now: t0.Add(time.Minute), Channels: []policy.ChannelStat{stat(policy.ChannelGateway, 0, 0.9, 100)}}
	events := []message.Event{accepted(nil), sending(1, "gateway", 0), sent(1, "gateway", time.Second)}
	cfg := policy.DefaultConfig()
	cfg.MaxAttempts = 1
	p := replay(t, events...)
	want := policy.Decision{Action: policy.ActionWait, At: t0.Add(ttl), Reason: policy.ReasonAwaitingAck}
	if got := cfg.Next(p, onlyGateway); !reflect.DeepEqual(got, want) {
		t.Fatalf("store and forward, attempts spent: %+v, want %+v", got, want)
	}
	// At expiry the message expires (no failure, no alert).
	atExpiry := onlyGateway
	atExpiry.Now = t0.Add(ttl)
	if got := cfg.Next(p, atExpiry); got.Action != policy.ActionExpire {
		t.Fatalf("at expiry: %+v, want Expire", got)
	}

	plain := cfg.Clone()
	gw := plain.Channels[policy.ChannelGateway]
	gw.StoreAndForward = false
	plain.Channels[policy.ChannelGateway] = gw
	if got := plain.Next(p, onlyGateway); got.Action != policy.ActionGiveUp || !got.Alert {
		t.Fatalf("without store and forward: %+v, want a give-up with an alert", got)
	}

	// With attempts and another channel left, the ack timeout fails over
	// as before: the device may never come back to the gateway, APNs can
	// reach it.
	cfg.MaxAttempts = 6
	withAPNs := onlyGateway
	withAPNs.Channels = append(withAPNs.Channels, stat(policy.ChannelAPNs, 1, 0.9, 100))
	gwOut := cfg.Clone()
	gwPol := gwOut.Channels[policy.ChannelGateway]
	gwPol.Retry.MaxAttempts = 1
	gwOut.Channels[policy.ChannelGateway] = gwPol
	if got := gwOut.Next(p, withAPNs); got.Action != policy.ActionFailover || got.Channel != policy.ChannelAPNs {
		t.Fatalf("with APNs left: %+v, want a failover to APNs", got)
	}
}
