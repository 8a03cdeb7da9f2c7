package sagas_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/sagas"
)

// rapidChecks makes rapid run n checks in this test, unless -rapid.checks
// or RAPID_CHECKS says otherwise: each check boots a world and runs
// deliveries in real time, so rapid's default of 100 would take a minute.
func rapidChecks(t *testing.T, n int) {
	f := flag.Lookup("rapid.checks")
	if f == nil || os.Getenv("RAPID_CHECKS") != "" {
		return
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if set {
		return
	}
	old := f.Value.String()
	if err := f.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}

// plannedMessage is a message of a property check and what happens to it.
type plannedMessage struct {
	id     string
	ttl    time.Duration // 0: the default (a day)
	sendIn time.Duration // > 0: scheduled that far ahead
	cancel bool          // cancelled right after acceptance
}

func outcomeOf(t *rapid.T, label string) outcome {
	switch rapid.IntRange(0, 3).Draw(t, label+" kind") {
	case 1:
		return transient(time.Duration(rapid.IntRange(0, 40).Draw(t, label+" retry after ms")) * time.Millisecond)
	case 2:
		return permanent()
	case 3:
		return tokenInvalid()
	}
	return accepted
}

// TestPropertyDeliveries drives random deliveries: messages with random
// lifetimes, send times and cancellations, on two channels whose answers to
// each call are drawn (accepted, transient with a random Retry-After,
// permanent, token invalid), with the runner stopped and replaced by a new
// one on the same stores after random numbers of sends. Whatever happens,
// every message ends settled exactly once, within the policy's attempts;
// no attempt starts after the message settled, expired or was cancelled,
// or before its send time; the channels are asked at most once for each
// attempt and only for attempts started in the ledger; every alert
// recorded is raised once.
func TestPropertyDeliveries(t *testing.T) {
	rapidChecks(t, 30)
	rapid.Check(t, func(rt *rapid.T) {
		pol := fastPolicy()
		pol.MaxAttempts = rapid.IntRange(2, 6).Draw(rt, "max attempts")
		pol.AttemptTimeout = 250 * time.Millisecond
		pol.Default.Retry.Initial, pol.Default.Retry.Max = 5*time.Millisecond, 20*time.Millisecond
		polf := func() policy.Config { return pol }

		plans := make([]plannedMessage, rapid.IntRange(1, 4).Draw(rt, "messages"))
		alpha, beta := newChannel("alpha", nil), newChannel("beta", nil)
		for i := range plans {
			p := &plans[i]
			p.id = fmt.Sprintf("m-%d", i)
			if rapid.Bool().Draw(rt, "short ttl") {
				p.ttl = time.Duration(rapid.IntRange(100, 800).Draw(rt, "ttl ms")) * time.Millisecond
			}
			if rapid.Bool().Draw(rt, "scheduled") {
				p.sendIn = time.Duration(rapid.IntRange(1, 150).Draw(rt, "send in ms")) * time.Millisecond
				p.cancel = rapid.Bool().Draw(rt, "cancel")
			}
			for _, ch := range []*testChannel{alpha, beta} {
				n := rapid.IntRange(0, 6).Draw(rt, "answers")
				for j := range n {
					ch.Script(p.id, outcomeOf(rt, fmt.Sprintf("%s %s answer %d", p.id, ch.name, j)))
				}
			}
		}
		restarts := rapid.SliceOfN(rapid.IntRange(1, 10), 0, 3).Draw(rt, "restart after sends")
		slices.Sort(restarts)

		w := newWorld(rt, worldOptions{channels: map[string]int{"alpha": 0, "beta": 1}})
		gen := 0
		start := func() *runner {
			gen++
			return w.start(rt, sagas.Config{Owner: fmt.Sprint("runner-", gen), Policy: polf, SendTimeout: 100 * time.Millisecond}, nil, alpha, beta)
		}
		r := start()
		acc := map[string]message.Message{}
		for i := range plans {
			p := &plans[i]
			m := w.accept(rt, p.id, func(c *message.Accept) {
				c.TTL = p.ttl
				if p.sendIn > 0 {
					at := time.Now().Add(p.sendIn)
					c.SendAt = &at
				}
			})
			acc[p.id] = m
			if p.cancel {
				_, _, err := w.cmd.Message(context.Background(), p.id, message.Cancel{Reason: "test"})
				switch {
				case errors.Is(err, message.ErrInvalidTransition):
					p.cancel = false // its send time came first: too late to cancel
				case err != nil:
					rt.Fatalf("cancel %s: %v", p.id, err)
				}
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if len(restarts) > 0 && len(alpha.Calls())+len(beta.Calls()) >= restarts[0] {
				restarts = restarts[1:]
				r.stop(rt)
				r = start()
			}
			done := true
			for _, p := range plans {
				if !settled(w.message(rt, p.id)) {
					done = false
				}
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				for _, p := range plans {
					rt.Logf("%s: %v", p.id, types(w.history(rt, p.id)))
				}
				rt.Fatalf("messages not settled within 10 s")
			}
			time.Sleep(2 * time.Millisecond) // a poll interval
		}
		r.stop(rt) // freeze: nothing moves while we look

		calls := append(alpha.Calls(), beta.Calls()...)
		for _, p := range plans {
			checkDelivery(rt, w, p, acc[p.id], pol.MaxAttempts, calls)
		}
		if errs := w.log.errors(); len(errs) > 0 {
			rt.Errorf("runners logged %d errors, first: %s", len(errs), errs[0])
		}
	})
}

// checkDelivery checks the invariants of one message of a property check.
func checkDelivery(t *rapid.T, w *world, p plannedMessage, m0 message.Message, maxAttempts int, calls []sendCall) {
	h := w.history(t, p.id)
	final := w.message(t, p.id)
	if !settled(final) {
		t.Fatalf("%s: %s, not settled: %v", p.id, final.State, types(h))
	}
	if p.cancel && final.State != message.StateCancelled {
		t.Errorf("%s: cancelled before its send time, but %s: %v", p.id, final.State, types(h))
	}
	sendings := map[int]message.Sending{}
	var sent, finals, cancels, alerted int
	var settledAt time.Time
	for _, e := range h {
		switch e := e.Event.(type) {
		case message.Sending:
			if !settledAt.IsZero() {
				t.Errorf("%s: attempt %d started after it settled: %v", p.id, e.Attempt, types(h))
			}
			if !e.At.Before(m0.ExpiresAt) {
				t.Errorf("%s: attempt %d started at %s, at or after the expiry %s", p.id, e.Attempt, e.At, m0.ExpiresAt)
			}
			if !m0.SendAt.IsZero() && e.At.Before(m0.SendAt) {
				t.Errorf("%s: attempt %d started at %s, before the send time %s", p.id, e.Attempt, e.At, m0.SendAt)
			}
			sendings[e.Attempt] = e
		case message.Sent:
			sent++
			settledAt = e.At
		case message.Failed:
			if e.Final {
				finals++
				settledAt = e.At
				if e.Alert != "" {
					alerted++
				}
			}
		case message.Cancelled:
			cancels++
			settledAt = e.At
		case message.Expired:
			if settledAt.IsZero() {
				settledAt = e.At
			}
		}
	}
	if sent+finals+cancels > 1 {
		t.Errorf("%s: settled more than once: %v", p.id, types(h))
	}
	if len(sendings) > maxAttempts {
		t.Errorf("%s: %d attempts, at most %d allowed", p.id, len(sendings), maxAttempts)
	}
	if n := len(w.alertsFor(p.id)); n != alerted {
		t.Errorf("%s: %d alerts raised, %d recorded: %v", p.id, n, alerted, types(h))
	}
	seen := map[int]bool{}
	for _, c := range calls {
		if c.MessageID != p.id {
			continue
		}
		s, ok := sendings[c.Attempt]
		switch {
		case seen[c.Attempt]:
			t.Errorf("%s: attempt %d sent twice", p.id, c.Attempt)
		case !ok:
			t.Errorf("%s: attempt %d sent, never started: %v", p.id, c.Attempt, types(h))
		case s.Channel != c.Channel:
			t.Errorf("%s: attempt %d started on %s, sent on %s", p.id, c.Attempt, s.Channel, c.Channel)
		case !c.At.Before(m0.ExpiresAt) && !errors.Is(c.Err, channels.ErrExpired):
			t.Errorf("%s: attempt %d reached the provider at %s, after the expiry %s", p.id, c.Attempt, c.At, m0.ExpiresAt)
		}
		seen[c.Attempt] = true
	}
}
