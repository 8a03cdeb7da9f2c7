// Package channeltest is the conformance suite for channels.Channel adapters.
//
// An adapter's test wires the adapter to a local fake of its provider (an
// httptest.Server, for example) and hands the suite a Harness that can make
// the fake answer with each Outcome:
//
//	func TestConformance(t *testing.T) {
//		channeltest.Run(t, func(t *testing.T) channeltest.Harness {
//			fake := newFakeProvider(t) // closed with t.Cleanup
//			ch, err := mychannel.New(mychannel.Config{...})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return channeltest.Harness{
//				Channel:  ch,
//				Push:     channels.Push{Settings: map[string]string{"url": fake.URL}, ...},
//				Respond:  fake.Respond,
//				Requests: fake.Requests,
//			}
//		}, channeltest.Features{})
//	}
package channeltest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
)

// Outcome is how the fake provider answers the requests that follow.
type Outcome int

const (
	// Accept: the provider accepts the push.
	Accept Outcome = iota
	// FailTransient: a failure worth retrying (an HTTP 503, for example).
	FailTransient
	// FailPermanent: a rejection that retrying cannot fix (an HTTP 400).
	FailPermanent
	// FailTokenInvalid: the provider says the device token is invalid or
	// unregistered. Only used when Features.TokenInvalid is set.
	FailTokenInvalid
)

func (o Outcome) String() string {
	switch o {
	case Accept:
		return "accept"
	case FailTransient:
		return "transient"
	case FailPermanent:
		return "permanent"
	case FailTokenInvalid:
		return "token_invalid"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Harness is a channel wired to a fresh fake provider.
type Harness struct {
	// Channel is the adapter under test, sending to the fake provider.
	Channel channels.Channel
	// Push is a push the adapter can deliver to the fake: Settings point at
	// the fake, Secret is set if the adapter needs one, Targets are whatever
	// the provider needs (at least one for device-level channels). The
	// suite sets MessageID, Attempt and ExpiresAt itself.
	Push channels.Push
	// Respond makes the fake answer every following request with o. The
	// fake accepts until it is first called.
	Respond func(o Outcome)
	// Requests returns how many requests the fake has received so far.
	Requests func() int
	// Now is the adapter's clock, when the harness gives it one; the suite
	// builds expired and unexpired pushes relative to it. Default time.Now.
	Now func() time.Time
}

// Features says which optional behaviour the channel has.
type Features struct {
	// TokenInvalid: the provider can report invalid tokens, and the adapter
	// maps them to channels.TokenInvalid. Device-level channels (APNs, FCM,
	// ...) have it; the webhook does not.
	TokenInvalid bool
}

// Run runs the suite. newHarness is called once per subtest and must give a
// channel wired to a new fake provider, cleaned up with t.Cleanup.
func Run(t *testing.T, newHarness func(t *testing.T) Harness, f Features) {
	t.Helper()
	h := func(t *testing.T) Harness {
		t.Helper()
		h := newHarness(t)
		if h.Channel == nil || h.Respond == nil || h.Requests == nil {
			t.Fatal("channeltest: Harness needs Channel, Respond and Requests")
		}
		if h.Now == nil {
			h.Now = time.Now
		}
		return h
	}

	t.Run("Name", func(t *testing.T) {
		h := h(t)
		name := h.Channel.Name()
		if name == "" {
			t.Fatal("Name() is empty")
		}
		if again := h.Channel.Name(); again != name {
			t.Fatalf("Name() changed from %q to %q", name, again)
		}
	})

	t.Run("Accept", func(t *testing.T) {
		h := h(t)
		h.Respond(Accept)
		res, err := h.Channel.Send(context.Background(), push(h, "accept", time.Time{}))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		checkAccepted(t, h, res)
	})

	t.Run("AcceptBeforeExpiry", func(t *testing.T) {
		h := h(t)
		h.Respond(Accept)
		res, err := h.Channel.Send(context.Background(), push(h, "unexpired", h.Now().Add(time.Hour)))
		if err != nil {
			t.Fatalf("Send of a push expiring in an hour: %v", err)
		}
		checkAccepted(t, h, res)
	})

	t.Run("RepeatedAttempt", func(t *testing.T) {
		// After a crash the caller may send the same MessageID and Attempt
		// again; that is not an error.
		h := h(t)
		h.Respond(Accept)
		p := push(h, "repeat", time.Time{})
		for i := range 2 {
			if _, err := h.Channel.Send(context.Background(), p); err != nil {
				t.Fatalf("Send #%d of the same MessageID and Attempt: %v", i+1, err)
			}
		}
	})

	failures := []struct {
		outcome Outcome
		want    channels.Class
	}{
		{FailTransient, channels.Transient},
		{FailPermanent, channels.Permanent},
		{FailTokenInvalid, channels.TokenInvalid},
	}
	for _, tc := range failures {
		t.Run("Fail/"+tc.outcome.String(), func(t *testing.T) {
			if tc.outcome == FailTokenInvalid && !f.TokenInvalid {
				t.Skip("channel does not report invalid tokens (Features.TokenInvalid is false)")
			}
			h := h(t)
			h.Respond(tc.outcome)
			_, err := h.Channel.Send(context.Background(), push(h, "fail-"+tc.outcome.String(), time.Time{}))
			checkClass(t, err, tc.want)
			if h.Requests() == 0 {
				t.Error("the fake provider saw no request")
			}
		})
	}

	t.Run("Expired", func(t *testing.T) {
		h := h(t)
		h.Respond(Accept)
		for _, at := range []time.Time{h.Now().Add(-time.Hour), h.Now().Add(-time.Nanosecond)} {
			_, err := h.Channel.Send(context.Background(), push(h, "expired", at))
			if !errors.Is(err, channels.ErrExpired) {
				t.Fatalf("Send of a push that expired at %v: error %v, want ErrExpired", at, err)
			}
			if class, _ := channels.Classify(err); class != channels.Permanent {
				t.Errorf("expired: class %v, want permanent", class)
			}
		}
		if n := h.Requests(); n != 0 {
			t.Fatalf("the fake provider saw %d requests for expired pushes, want 0", n)
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		h := h(t)
		h.Respond(Accept)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := h.Channel.Send(ctx, push(h, "canceled", time.Time{}))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send with a canceled context: error %v, want one matching context.Canceled", err)
		}
		checkClass(t, err, channels.Transient)
	})

	t.Run("Concurrent", func(t *testing.T) {
		h := h(t)
		h.Respond(Accept)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = h.Channel.Send(context.Background(), push(h, fmt.Sprintf("concurrent-%d", i), time.Time{}))
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Send: %v", err)
		}
		if got := h.Requests(); got < n {
			t.Errorf("the fake provider saw %d requests for %d pushes", got, n)
		}
	})
}

// push copies the harness's push with a fresh identity and expiry. The
// harness's slices and maps are shared, which is safe because channels must
// not modify them.
func push(h Harness, id string, expiresAt time.Time) channels.Push {
	p := h.Push
	p.MessageID = "channeltest-" + id
	p.Attempt = 1
	p.ExpiresAt = expiresAt
	return p
}

func checkAccepted(t *testing.T, h Harness, res channels.Result) {
	t.Helper()
	want := max(len(h.Push.Targets), 1)
	if res.Accepted != want {
		t.Errorf("Result.Accepted = %d, want %d", res.Accepted, want)
	}
	if h.Requests() == 0 {
		t.Error("Send succeeded but the fake provider saw no request")
	}
}

func checkClass(t *testing.T, err error, want channels.Class) {
	t.Helper()
	if err == nil {
		t.Fatalf("Send succeeded, want a %v error", want)
	}
	class, se := channels.Classify(err)
	if se == nil {
		t.Fatalf("error %v (%T) is not a *channels.SendError", err, err)
	}
	if class != want {
		t.Fatalf("class %v, want %v (error: %v)", class, want, err)
	}
	if se.Reason == "" {
		t.Errorf("SendError has no Reason: %v", err)
	}
}
