package sagas_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/sagas"
)

// TestHappyPath: accepted → sending → sent; the channel is asked once, for
// attempt 1, with the message, the app's settings and its opened secret.
func TestHappyPath(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if s := of[message.Sending](h)[0]; s.Attempt != 1 || s.Channel != "alpha" {
		t.Errorf("sending %+v, want attempt 1 on alpha", s)
	}
	if s := of[message.Sent](h)[0]; s.Attempt != 1 || s.Channel != "alpha" || s.ProviderID != "provider-m-1" || s.Accepted != 1 {
		t.Errorf("sent %+v, want attempt 1 on alpha, provider-m-1, 1 accepted", s)
	}
	calls := ch.Calls()
	if len(calls) != 1 || calls[0].MessageID != "m-1" || calls[0].Attempt != 1 {
		t.Fatalf("channel calls %+v, want m-1 attempt 1 once", calls)
	}
	p := calls[0].Push
	if p.AppID != appID || string(p.Secret) != "app secret" || p.Settings["url"] != "https://example.test/alpha" ||
		len(p.Targets) != 1 || p.Targets[0].DeviceID != "device-1" || p.Title != "hello" || string(p.Data) != `{"k":"v"}` ||
		p.ExpiresAt.IsZero() {
		t.Errorf("push %+v", p)
	}
	w.noErrors(t)
}

// TestTransientFailuresThenSuccess: every failure is recorded with the time
// of the retry, within the backoff's bounds, and the retry does not start
// before it.
func TestTransientFailuresThenSuccess(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	ch.Script("m-1", transient(0), transient(0), transient(0), accepted)
	w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	want := []string{"accepted", "sending", "failed", "sending", "failed", "sending", "failed", "sending", "sent"}
	if got := types(h); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	pol := fastPolicy()
	sendings, fails := of[message.Sending](h), of[message.Failed](h)
	for i, f := range fails {
		if f.Attempt != i+1 || f.Final || !f.Retryable || f.Class != message.ClassTransient || f.Reason != "http_503" || f.Status != 503 || f.RetryAt == nil {
			t.Fatalf("failed event %d: %+v, want attempt %d, transient, not final, http_503, with retry_at", i, f, i+1)
		}
		// The backoff after the n-th attempt, jittered, measured from the
		// decision (a little before the event's time).
		lo := time.Duration(float64(pol.Default.Retry.Base(i+1))*(1-pol.Default.Retry.Jitter)) - 5*time.Millisecond
		hi := time.Duration(float64(pol.Default.Retry.Base(i+1)) * (1 + pol.Default.Retry.Jitter))
		if d := f.RetryAt.Sub(f.At); d < lo || d > hi {
			t.Errorf("failed event %d: retry %s after the failure, want within [%s, %s]", i, d, lo, hi)
		}
		if next := sendings[i+1]; next.At.Before(*f.RetryAt) {
			t.Errorf("attempt %d started at %s, before the retry time %s of attempt %d", next.Attempt, next.At, *f.RetryAt, f.Attempt)
		}
	}
	if n := len(sendings); n > pol.MaxAttempts {
		t.Errorf("%d attempts, policy allows %d", n, pol.MaxAttempts)
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1, 2, 3, 4}})
	w.noErrors(t)
}

// TestRetryAfterHonoured: the provider's Retry-After (300 ms, far above the
// policy's backoff) delays the next call to the provider, also after the
// failure is recorded and decided on again.
func TestRetryAfterHonoured(t *testing.T) {
	const retryAfter = 300 * time.Millisecond
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	ch.Script("m-1", transient(retryAfter), accepted)
	w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	calls := ch.Calls("m-1")
	if len(calls) != 2 {
		t.Fatalf("calls %+v, want 2", calls)
	}
	if gap := calls[1].At.Sub(calls[0].Answered); gap < retryAfter {
		t.Errorf("provider called again %s after it asked for %s", gap, retryAfter)
	}
	f := of[message.Failed](h)[0]
	if f.RetryAt == nil || f.RetryAt.Before(calls[0].Answered.Add(retryAfter)) {
		t.Errorf("failed %+v: retry_at before the answer + Retry-After (%s)", f, calls[0].Answered.Add(retryAfter))
	}
	if s := of[message.Sending](h)[1]; f.RetryAt != nil && s.At.Before(*f.RetryAt) {
		t.Errorf("attempt 2 started at %s, before retry_at %s", s.At, *f.RetryAt)
	}
	w.noErrors(t)
}

// TestFailover: a permanent failure on the first channel moves the next
// attempt to the second, at once.
func TestFailover(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0, "beta": 1}})
	alpha, beta := newChannel("alpha", nil), newChannel("beta", nil)
	alpha.Script("m-1", permanent())
	w.start(t, sagas.Config{}, nil, alpha, beta)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	s := of[message.Sending](h)
	f := of[message.Failed](h)[0]
	sent := of[message.Sent](h)[0]
	if s[0].Channel != "alpha" || s[1].Channel != "beta" || s[1].Attempt != 2 {
		t.Errorf("attempts %+v, want 1 on alpha then 2 on beta", s)
	}
	if f.Channel != "alpha" || f.Retryable || f.Class != message.ClassPermanent || f.Final || f.Reason != "http_400" {
		t.Errorf("failure %+v, want alpha, permanent, not final", f)
	}
	if sent.Channel != "beta" || sent.Attempt != 2 {
		t.Errorf("sent %+v, want attempt 2 on beta", sent)
	}
	checkCallsOnce(t, alpha.Calls(), map[string][]int{"m-1": {1}})
	checkCallsOnce(t, beta.Calls(), map[string][]int{"m-1": {2}})
	w.noErrors(t)
}

// TestAppAttemptTimeoutBelowSendTimeout: an app's own policy may set an
// attempt timeout (here 500 ms) below the runner's send timeout (1 s here,
// 15 s by default); its policy is valid, so its messages must still go out,
// each send bounded so that it ends before its attempt times out.
func TestAppAttemptTimeoutBelowSendTimeout(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}, policy: []byte(`{"attempt_timeout_ns":500000000}`)})
	ch := newChannel("alpha", nil)
	ch.Script("m-2", blocked) // the provider hangs on m-2's first attempt
	w.start(t, sagas.Config{SendTimeout: time.Second}, nil, ch)
	w.accept(t, "m-1", nil)
	w.accept(t, "m-2", nil)
	w.waitSettled(t, 5*time.Second, "m-1", "m-2")
	if got, want := types(w.history(t, "m-1")), []string{"accepted", "sending", "sent"}; !slices.Equal(got, want) {
		t.Errorf("m-1: history %v, want %v", got, want)
	}
	h := w.history(t, "m-2")
	if got, want := types(h), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("m-2: history %v, want %v", got, want)
	}
	// The hung send was cut before the attempt timed out: its failure is
	// the channel's (a timeout), not a lost attempt.
	if f := of[message.Failed](h)[0]; f.Reason != channels.ReasonTimeout {
		t.Errorf("m-2: attempt 1 failed with %q, want %q", f.Reason, channels.ReasonTimeout)
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1}, "m-2": {1, 2}})
	w.noErrors(t)
}

// TestTokenInvalid: the provider says the device's token is invalid. The
// runner records the invalidation on the device, and the message fails over
// to the next channel.
func TestTokenInvalid(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0, "beta": 1}})
	ctx := context.Background()
	if _, _, err := w.cmd.Device(ctx, appID, "device-1", device.Register{AppID: appID, DeviceID: "device-1",
		Profile: device.Profile{Platform: "ios", Tokens: map[string]string{"alpha": "token-a", "beta": "token-b"}}}); err != nil {
		t.Fatalf("register: %v", err)
	}
	alpha, beta := newChannel("alpha", nil), newChannel("beta", nil)
	alpha.Script("m-1", tokenInvalid())
	w.start(t, sagas.Config{}, nil, alpha, beta)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if f := of[message.Failed](h)[0]; f.Channel != "alpha" || f.Retryable || f.Reason != "unregistered" || f.Class != message.ClassTokenInvalid {
		t.Errorf("failure %+v, want alpha, token_invalid, not retryable, unregistered", f)
	}
	if s := of[message.Sent](h)[0]; s.Channel != "beta" {
		t.Errorf("sent on %s, want beta", s.Channel)
	}
	d, _, err := w.cmd.LoadDevice(ctx, appID, "device-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok, ok := d.Profile.Tokens["alpha"]; ok || d.Profile.Tokens["beta"] != "token-b" {
		t.Errorf("device tokens %v: alpha's (%q) should be invalidated, beta's kept", d.Profile.Tokens, tok)
	}
	w.noErrors(t)
}

// TestAckTimeoutResends: on a channel with an ack window, a push the device
// does not acknowledge in time is resent at once as a new attempt; an
// acknowledged one settles the message.
func TestAckTimeoutResends(t *testing.T) {
	const window = 150 * time.Millisecond
	pol := fastPolicy()
	pol.Channels["alpha"] = policy.ChannelPolicy{Retry: pol.Default.Retry, AckWindow: window}
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	w.start(t, sagas.Config{Policy: func() policy.Config { return pol }}, nil, ch)
	w.accept(t, "m-1", nil)
	eventually(t, 5*time.Second, func() (bool, string) {
		m := w.message(t, "m-1")
		return m.Attempt == 2 && m.State == message.StateSent, fmt.Sprintf("attempt %d %s", m.Attempt, m.State)
	})
	if _, _, err := w.cmd.Message(context.Background(), "m-1", message.RecordDelivered{DeviceID: "device-1", Channel: "alpha"}); err != nil {
		t.Fatal(err)
	}
	w.waitSettled(t, 5*time.Second, "m-1")
	h := w.history(t, "m-1")
	want := []string{"accepted", "sending", "sent", "failed", "sending", "sent", "delivered"}
	if got := types(h); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	f, sent := of[message.Failed](h)[0], of[message.Sent](h)[0]
	if f.Reason != policy.ReasonAckTimeout || !f.Retryable || f.At.Before(sent.At.Add(window)) {
		t.Errorf("failure %+v, want ack_timeout at or after %s", f, sent.At.Add(window))
	}
	if s := of[message.Sending](h)[1]; s.At.Sub(f.At) > 100*time.Millisecond {
		t.Errorf("resent %s after the ack timeout, want at once", s.At.Sub(f.At))
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1, 2}})
	w.noErrors(t)
}

// TestResendAfterFinalFailure: a manual resend of a message that failed
// finally starts a new cycle with the policy's attempts.
func TestResendAfterFinalFailure(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}, policy: []byte(`{"max_attempts":2}`)})
	ch := newChannel("alpha", nil)
	ch.Script("m-1", transient(0), transient(0))
	w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	eventually(t, 5*time.Second, func() (bool, string) {
		m := w.message(t, "m-1")
		return m.FinalFailure, fmt.Sprintf("%s at attempt %d", m.State, m.Attempt)
	})
	if _, _, err := w.cmd.Message(context.Background(), "m-1", message.Resend{Reason: "operator"}); err != nil {
		t.Fatal(err)
	}
	w.waitSettled(t, 5*time.Second, "m-1")
	want := []string{"accepted", "sending", "failed", "sending", "failed", "resend_requested", "sending", "sent"}
	if got := types(w.history(t, "m-1")); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1, 2, 3}})
	w.noErrors(t)
}

// TestNoUsableChannel: the app's only channel is not one this runner can
// reach; the message fails finally at once, with the no_channel alert.
func TestNoUsableChannel(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	other := newChannel("beta", nil)
	w.start(t, sagas.Config{}, nil, other)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")
	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "failed"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if f := of[message.Failed](h)[0]; !f.Final || f.Attempt != 0 || f.Alert != policy.ReasonNoChannel {
		t.Errorf("failure %+v, want final, attempt 0, alert no_channel", f)
	}
	if a := w.waitAlerts(t, "m-1"); len(a) != 1 || a[0].Reason != policy.ReasonNoChannel {
		t.Errorf("alerts %+v, want one no_channel", a)
	}
	if calls := other.Calls(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
	w.noErrors(t)
}

// TestAttemptsExhausted: with the app's own policy of 3 attempts and a
// channel that always fails, the third failure is final, carries the alert
// and raises it once.
func TestAttemptsExhausted(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}, policy: []byte(`{"max_attempts":3}`)})
	ch := newChannel("alpha", func(channels.Push) outcome { return transient(0) })
	w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	want := []string{"accepted", "sending", "failed", "sending", "failed", "sending", "failed"}
	if got := types(h); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	fails := of[message.Failed](h)
	last := fails[len(fails)-1]
	if !last.Final || last.Attempt != 3 || last.Alert != policy.ReasonAttemptsExhausted || last.RetryAt != nil {
		t.Errorf("last failure %+v, want final attempt 3 with alert %s", last, policy.ReasonAttemptsExhausted)
	}
	for _, f := range fails[:len(fails)-1] {
		if f.Final || f.Alert != "" {
			t.Errorf("failure %+v before the last is final or alerts", f)
		}
	}
	alerts := w.waitAlerts(t, "m-1")
	if len(alerts) != 1 || alerts[0].Reason != policy.ReasonAttemptsExhausted || alerts[0].Attempt != 3 || alerts[0].AppID != appID {
		t.Errorf("alerts %+v, want one attempts_exhausted at attempt 3", alerts)
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1, 2, 3}})
	w.noErrors(t)
}

// TestScheduledSend: nothing goes out before send_at, the message goes out
// after it; a message cancelled before its send_at never goes out.
func TestScheduledSend(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	w.start(t, sagas.Config{}, nil, ch)
	sendAt := time.Now().Add(300 * time.Millisecond)
	at := func(c *message.Accept) { c.SendAt = &sendAt }
	w.accept(t, "m-later", at)
	w.accept(t, "m-cancelled", at)
	if _, _, err := w.cmd.Message(context.Background(), "m-cancelled", message.Cancel{Reason: "test"}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	w.waitSettled(t, 5*time.Second, "m-later", "m-cancelled")

	h := w.history(t, "m-later")
	if got, want := types(h), []string{"accepted", "scheduled", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if s := of[message.Sending](h)[0]; s.At.Before(sendAt) {
		t.Errorf("attempt started at %s, before send_at %s", s.At, sendAt)
	}
	calls := ch.Calls("m-later")
	if len(calls) != 1 || calls[0].At.Before(sendAt) {
		t.Errorf("calls %+v, want one after %s", calls, sendAt)
	}
	// m-later was sent after send_at, so m-cancelled's send time is past
	// too: it would have gone out by now.
	if got, want := types(w.history(t, "m-cancelled")), []string{"accepted", "scheduled", "cancelled"}; !slices.Equal(got, want) {
		t.Errorf("cancelled message: history %v, want %v", got, want)
	}
	if calls := ch.Calls("m-cancelled"); len(calls) != 0 {
		t.Errorf("cancelled message sent: %+v", calls)
	}
	w.noErrors(t)
}

// TestExpiryWhileInFlight: a message whose attempt hangs at the provider
// expires at its expiry (the domain's TTL has no minimum, so 300 ms will
// do), and nothing is recorded or sent for it afterwards, not even when the
// hung send finally answers.
func TestExpiryWhileInFlight(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	ch.Script("m-1", blocked)
	pol := fastPolicy()
	pol.AttemptTimeout = time.Second
	r := w.start(t, sagas.Config{Policy: func() policy.Config { return pol }, SendTimeout: 500 * time.Millisecond}, nil, ch)
	m := w.accept(t, "m-1", func(c *message.Accept) { c.TTL = 300 * time.Millisecond })
	w.waitSettled(t, 5*time.Second, "m-1")
	// The hung send times out (SendTimeout) and the runner decides on its
	// result: it has nothing to do any more, and holds no timer.
	eventually(t, 5*time.Second, func() (bool, string) {
		calls := ch.Calls("m-1")
		return len(calls) == 1 && !calls[0].Answered.IsZero() && r.Stats().Timers == 0,
			fmt.Sprintf("calls %+v, runner %+v", calls, r.Stats())
	})

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "expired"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if e := of[message.Expired](h)[0]; e.At.Before(m.ExpiresAt) {
		t.Errorf("expired at %s, before the expiry %s", e.At, m.ExpiresAt)
	}
	w.noErrors(t)
}

// TestExpiryWithTransientFailures: a channel that keeps failing with a
// Retry-After that soon reaches past the expiry. The domain gives up then
// (a final failure without alert, policy.ReasonRetryAfterExpiry) or, when
// the expiry comes first, expires the message; either way no attempt
// starts at or after the expiry and the provider never gets it then.
func TestExpiryWithTransientFailures(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", func(channels.Push) outcome { return transient(120 * time.Millisecond) })
	w.start(t, sagas.Config{}, nil, ch)
	m := w.accept(t, "m-1", func(c *message.Accept) { c.TTL = 400 * time.Millisecond })
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	final := w.message(t, "m-1")
	switch {
	case final.State == message.StateExpired:
	case final.State == message.StateFailed && final.FinalFailure:
		last := of[message.Failed](h)
		if f := last[len(last)-1]; f.Alert != "" {
			t.Errorf("gave up with alert %q; a retry past the expiry gives up without one", f.Alert)
		}
	default:
		t.Fatalf("message %s, want expired or failed finally; history %v", final.State, types(h))
	}
	for _, s := range of[message.Sending](h) {
		if !s.At.Before(m.ExpiresAt) {
			t.Errorf("attempt %d started at %s, at or after the expiry %s", s.Attempt, s.At, m.ExpiresAt)
		}
	}
	for _, c := range ch.Calls() {
		// An attempt started just before the expiry may reach the channel
		// just after it, which refuses it (the channel contract).
		if !c.At.Before(m.ExpiresAt) && !errors.Is(c.Err, channels.ErrExpired) {
			t.Errorf("attempt %d reached the provider at %s, at or after the expiry %s", c.Attempt, c.At, m.ExpiresAt)
		}
	}
	if len(ch.Calls()) < 2 {
		t.Errorf("only %d attempts before the expiry", len(ch.Calls()))
	}
	w.noErrors(t)
}

// TestExpiredBeforeRunnerStarts: a message whose expiry passed while no
// runner ran is expired without any send.
func TestExpiredBeforeRunnerStarts(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	m := w.accept(t, "m-1", func(c *message.Accept) { c.TTL = 100 * time.Millisecond })
	eventually(t, time.Second, func() (bool, string) { return time.Now().After(m.ExpiresAt), "the expiry is not past" })
	ch := newChannel("alpha", nil)
	w.start(t, sagas.Config{}, nil, ch)
	w.waitSettled(t, 5*time.Second, "m-1")
	if got, want := types(w.history(t, "m-1")), []string{"accepted", "expired"}; !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	if calls := ch.Calls(); len(calls) != 0 {
		t.Errorf("calls %+v, want none", calls)
	}
	w.noErrors(t)
}

// TestAckBeforeResult: the device acknowledges the push (the gateway
// records its delivery) before the channel's answer is recorded. The
// runner finds the message moved on, records nothing more, holds no timer
// and logs no error.
func TestAckBeforeResult(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	hold := make(chan struct{})
	ch.Script("m-1", outcome{hold: hold})
	r := w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	eventually(t, 5*time.Second, func() (bool, string) { return len(ch.Calls("m-1")) == 1, "no call yet" })
	if _, _, err := w.cmd.Message(context.Background(), "m-1", message.RecordDelivered{DeviceID: "device-1", Channel: "alpha"}); err != nil {
		t.Fatalf("record delivered: %v", err)
	}
	// The runner reads the delivery: the message is settled, its attempt
	// timeout is dropped.
	eventually(t, 5*time.Second, func() (bool, string) { return r.Stats().Timers == 0, fmt.Sprintf("runner %+v", r.Stats()) })
	before := r.Stats().Decisions
	close(hold)
	// Then it decides on the answer: the attempt is no longer open, so the
	// answer is dropped (one round) and the message found settled
	// (another), with no error and no timer.
	eventually(t, time.Second, func() (bool, string) {
		st := r.Stats()
		return st.Decisions >= before+2 && st.Timers == 0, fmt.Sprintf("runner %+v, %d decisions before the answer", st, before)
	})
	if got, want := types(w.history(t, "m-1")), []string{"accepted", "sending", "delivered"}; !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	w.noErrors(t)
}

// TestRunWaitsForSends: Run returns only after the sends it started have
// returned, even from a channel slow to give up once its context ends, so
// that nothing of the runner touches the stores after Run (they are closed
// right after it here).
func TestRunWaitsForSends(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", nil)
	ch.Script("m-1", outcome{block: true, linger: 50 * time.Millisecond})
	r := w.start(t, sagas.Config{}, nil, ch)
	w.accept(t, "m-1", nil)
	eventually(t, 5*time.Second, func() (bool, string) { return len(ch.Calls("m-1")) == 1, "no call yet" })
	r.stop(t)
	if c := ch.Calls("m-1")[0]; c.Answered.IsZero() {
		t.Errorf("Run returned while a send was still in flight")
	}
	w.noErrors(t)
}

// TestAttemptTimeout: an attempt started (its sending event appended) by a
// runner that died before the channel answered is failed with
// attempt_timeout after the policy's attempt timeout and retried as attempt
// 2; attempt 1 is never handed to a channel.
func TestAttemptTimeout(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	w.accept(t, "m-1", nil)
	if _, _, err := w.cmd.Message(context.Background(), "m-1", message.StartAttempt{Channel: "alpha"}); err != nil {
		t.Fatalf("start attempt: %v", err)
	}
	pol := fastPolicy()
	pol.AttemptTimeout = 300 * time.Millisecond
	ch := newChannel("alpha", nil)
	w.start(t, sagas.Config{Policy: func() policy.Config { return pol }, SendTimeout: 100 * time.Millisecond}, nil, ch)
	w.waitSettled(t, 5*time.Second, "m-1")

	h := w.history(t, "m-1")
	if got, want := types(h), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	s, f := of[message.Sending](h), of[message.Failed](h)[0]
	if f.Attempt != 1 || f.Reason != policy.ReasonAttemptTimeout || !f.Retryable || f.Final {
		t.Errorf("failure %+v, want attempt 1 attempt_timeout, retryable", f)
	}
	if f.At.Before(s[0].At.Add(pol.AttemptTimeout)) {
		t.Errorf("attempt 1 (started %s) timed out at %s, before the attempt timeout", s[0].At, f.At)
	}
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {2}})
	w.noErrors(t)
}

// TestBackgroundRuleHoldsUntilOnline: a push handed to a channel whose
// notifications the OS shows (APNs-like) and not acknowledged is not sent
// again while the device is in the background and offline; once the device
// is online on the gateway, the resend goes through the channel whose
// pushes reach the app (which deduplicates), with the same message id.
func TestBackgroundRuleHoldsUntilOnline(t *testing.T) {
	pol := fastPolicy()
	pol.Channels["alpha"] = policy.ChannelPolicy{Retry: pol.Default.Retry, AckWindow: 100 * time.Millisecond, HoldInBackground: true}
	pol.Channels["beta"] = policy.ChannelPolicy{Retry: pol.Default.Retry, AckWindow: time.Minute, AppDedup: true}
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0, "beta": 1}})
	alpha, beta := newChannel("alpha", nil), newChannel("beta", nil)
	var online atomic.Bool
	rn := w.start(t, sagas.Config{Policy: func() policy.Config { return pol }, HoldRecheck: 30 * time.Millisecond,
		Presence: func(_ *app.App, device string) policy.Presence {
			return policy.Presence{Online: device == "device-1" && online.Load()}
		}}, nil, alpha, beta)
	w.accept(t, "m-1", nil)
	// The ack window ends, and the hold is looked at again a few times.
	eventually(t, 5*time.Second, func() (bool, string) {
		s := rn.Stats()
		return s.Fired >= 4, fmt.Sprintf("%d timers fired", s.Fired)
	})
	if got := types(w.history(t, "m-1")); !slices.Equal(got, []string{"accepted", "sending", "sent"}) {
		t.Fatalf("held message history %v: nothing may be resent while the device is in the background and offline", got)
	}
	if len(beta.Calls()) != 0 {
		t.Fatal("beta was called while the message was held")
	}
	online.Store(true)
	eventually(t, 5*time.Second, func() (bool, string) {
		m := w.message(t, "m-1")
		return m.Attempt == 2 && m.State == message.StateSent && m.Channel == "beta", fmt.Sprintf("attempt %d %s on %s", m.Attempt, m.State, m.Channel)
	})
	h := w.history(t, "m-1")
	if got := types(h); !slices.Equal(got, []string{"accepted", "sending", "sent", "failed", "sending", "sent"}) {
		t.Fatalf("history %v", got)
	}
	if f := of[message.Failed](h)[0]; f.Reason != policy.ReasonAckTimeout {
		t.Errorf("failure %+v, want the ack timeout", f)
	}
	if c := beta.Calls(); len(c) != 1 || c[0].MessageID != "m-1" || c[0].Attempt != 2 {
		t.Errorf("beta calls %+v", c)
	}
	w.noErrors(t)
}

// TestLaterAcknowledgementsAreNotDecided: once a message is delivered and
// nothing waits on it, the acknowledgements recorded after (a broadcast's
// later batches) are read past without a decision.
func TestLaterAcknowledgementsAreNotDecided(t *testing.T) {
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	r := w.start(t, sagas.Config{}, nil, newChannel("alpha", nil))
	w.accept(t, "m-1", func(c *message.Accept) { // a broadcast: every device of the app is a target
		c.Audience, c.Targets = message.Audience{Broadcast: true}, nil
	})
	w.waitSettled(t, 5*time.Second, "m-1")
	ctx := context.Background()
	if _, _, err := w.cmd.Message(ctx, "m-1", message.RecordDeliveries{DeviceIDs: []string{"device-1"}, Channel: "alpha"}); err != nil {
		t.Fatal(err)
	}
	// The first acknowledgement ends the wait for it: decided, no timer.
	eventually(t, 5*time.Second, func() (bool, string) { return r.Stats().Timers == 0, fmt.Sprintf("runner %+v", r.Stats()) })
	before := r.Stats().Decisions
	_, res, err := w.cmd.Message(ctx, "m-1", message.RecordDeliveries{DeviceIDs: []string{"device-2", "device-3"}, Channel: "alpha"})
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("later acknowledgements: %d events, %v", len(res.Events), err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		st := r.Stats()
		return st.Checkpoint >= res.Position, fmt.Sprintf("runner %+v, want the checkpoint at %d", st, res.Position)
	})
	if st := r.Stats(); st.Decisions != before || st.Timers != 0 {
		t.Fatalf("runner %+v after the later acknowledgements, want %d decisions and no timer", st, before)
	}
	w.noErrors(t)
}
