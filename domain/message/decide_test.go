package message_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/message"
)

// t0 is the fixtures' accept time; the default TTL puts expiry at t0+24h.
var t0 = time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptr[T any](v T) *T { return &v }

// accept is a valid Accept; acceptedEv is the event it yields at t0.
func accept() message.Accept {
	return message.Accept{
		MessageID: "m1", AppID: "a1",
		Audience:     message.Audience{DeviceIDs: []string{"d1", "d2"}},
		Targets:      []string{"d1", "d2"},
		TargetCount:  2,
		Notification: &message.Notification{Title: "Hi", Body: "there"},
	}
}

func acceptedEv() message.Accepted {
	return message.Accepted{
		MessageID: "m1", AppID: "a1",
		Audience:     message.Audience{DeviceIDs: []string{"d1", "d2"}},
		Targets:      []string{"d1", "d2"},
		TargetCount:  2,
		Notification: &message.Notification{Title: "Hi", Body: "there"},
		Priority:     message.PriorityNormal,
		TTLSeconds:   int64(day / time.Second),
		ExpiresAt:    at(day),
		At:           t0,
	}
}

// A message scheduled at t0 for t0+1h: it expires at t0+25h.
func scheduledAcceptedEv() message.Accepted {
	e := acceptedEv()
	e.SendAt = ptr(at(time.Hour))
	e.ExpiresAt = at(time.Hour + day)
	return e
}

var (
	scheduledEv   = message.Scheduled{SendAt: at(time.Hour), At: t0}
	sending1      = message.Sending{Attempt: 1, Channel: "apns", At: at(time.Minute)}
	sent1         = message.Sent{Attempt: 1, Channel: "apns", ProviderID: "p-1", Accepted: 2, At: at(2 * time.Minute)}
	failed1       = message.Failed{Attempt: 1, Channel: "apns", Reason: "timeout", Status: 503, Retryable: true, At: at(2 * time.Minute)}
	failed1Final  = message.Failed{Attempt: 1, Channel: "apns", Reason: "bad token", Status: 410, Final: true, At: at(2 * time.Minute)}
	deliveredD1   = message.Delivered{DeviceID: "d1", Channel: "apns", At: at(3 * time.Minute)}
	openedD1      = message.Opened{DeviceID: "d1", Channel: "apns", At: at(4 * time.Minute)}
	expiredEv     = message.Expired{At: at(day)}
	cancelledEv   = message.Cancelled{Reason: "oops", At: at(time.Minute)}
	afterExpiry   = at(day + time.Minute)
	beforeExpiry  = at(time.Hour)
	sendingAfterS = message.Sending{Attempt: 1, Channel: "apns", At: at(time.Hour)}
	// failed1Retry is failed1 as a policy records it: classified, with the
	// retry it scheduled.
	failed1Retry = message.Failed{Attempt: 1, Channel: "apns", Reason: "timeout", Status: 503, Class: message.ClassTransient, Retryable: true,
		RetryAt: ptr(at(time.Hour)), At: at(2 * time.Minute)}
	// gaveUp1 is the give-up after failed1.
	gaveUp1  = message.Failed{Attempt: 1, Channel: "apns", Reason: "attempts_exhausted", Final: true, Alert: "attempts_exhausted", At: at(3 * time.Minute)}
	resentEv = message.ResendRequested{Reason: "operator", At: at(10 * time.Minute)}
)

// history returns the events that bring a message into the named state.
func history(state string) []message.Event {
	switch state {
	case "new":
		return nil
	case "accepted":
		return []message.Event{acceptedEv()}
	case "scheduled":
		return []message.Event{scheduledAcceptedEv(), scheduledEv}
	case "sending":
		return []message.Event{acceptedEv(), sending1}
	case "sent":
		return []message.Event{acceptedEv(), sending1, sent1}
	case "failed":
		return []message.Event{acceptedEv(), sending1, failed1}
	case "failed-final":
		return []message.Event{acceptedEv(), sending1, failed1Final}
	case "gave-up":
		return []message.Event{acceptedEv(), sending1, failed1, gaveUp1}
	case "resent":
		return []message.Event{acceptedEv(), sending1, failed1Final, resentEv}
	case "resent-sent":
		return []message.Event{acceptedEv(), sending1, sent1, resentEv}
	case "delivered":
		return []message.Event{acceptedEv(), sending1, sent1, deliveredD1}
	case "opened":
		return []message.Event{acceptedEv(), sending1, sent1, openedD1}
	case "expired":
		return []message.Event{acceptedEv(), expiredEv}
	case "cancelled":
		return []message.Event{acceptedEv(), cancelledEv}
	}
	panic("unknown state " + state)
}

var allStates = []string{"new", "accepted", "scheduled", "sending", "sent", "failed", "failed-final", "gave-up", "resent", "resent-sent", "delivered", "opened", "expired", "cancelled"}

type decideCase struct {
	name  string
	given []message.Event
	when  message.Command
	now   time.Time
	then  []message.Event // nil: no events
	err   error           // sentinel the error must wrap
}

// runDecide runs given/when/then cases: fold given, decide when at now,
// expect then (or err), check that Decide left the state alone, and that
// the decided events fold without error.
func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := message.Replay(tc.given)
			if err != nil {
				t.Fatalf("given: %v", err)
			}
			before := cloneMessage(m)
			got, err := message.Decide(&m, tc.when, tc.now)
			if !reflect.DeepEqual(m, before) {
				t.Fatalf("Decide changed the state:\n got %+v\nwant %+v", m, before)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				if got != nil {
					t.Fatalf("events %v with error", got)
				}
				if errors.Is(tc.err, message.ErrInvalidTransition) {
					var te *message.TransitionError
					if !errors.As(err, &te) {
						t.Fatalf("err %T is not a *TransitionError", err)
					}
					if te.From != m.State || te.Command == "" {
						t.Fatalf("TransitionError %+v, want From %q", te, m.State)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if len(got) != 0 || len(tc.then) != 0 {
				if !reflect.DeepEqual(got, tc.then) {
					t.Fatalf("events:\n got %#v\nwant %#v", got, tc.then)
				}
			}
			for _, e := range got {
				if err := m.Evolve(e); err != nil {
					t.Fatalf("Evolve(%T) of a decided event: %v", e, err)
				}
			}
		})
	}
}

func cloneMessage(m message.Message) message.Message {
	c := m
	c.Audience = cloneAudience(m.Audience)
	c.Targets = slices.Clone(m.Targets)
	if m.Notification != nil {
		c.Notification = ptr(*m.Notification)
	}
	c.Data = bytes.Clone(m.Data)
	c.Delivered = maps.Clone(m.Delivered)
	c.Opened = maps.Clone(m.Opened)
	return c
}

func cloneAudience(a message.Audience) message.Audience {
	c := a
	c.DeviceIDs = slices.Clone(a.DeviceIDs)
	c.Aliases = slices.Clone(a.Aliases)
	if a.Tags != nil {
		c.Tags = &message.TagExpr{AllOf: slices.Clone(a.Tags.AllOf), AnyOf: slices.Clone(a.Tags.AnyOf), NoneOf: slices.Clone(a.Tags.NoneOf)}
	}
	return c
}

func with[T any](v T, f func(*T)) T {
	f(&v)
	return v
}

func TestDecideAccept(t *testing.T) {
	cases := []decideCase{
		{name: "new: defaults", when: accept(), now: t0, then: []message.Event{acceptedEv()}},
		{name: "new: now in another zone is recorded in UTC", when: accept(), now: t0.In(time.FixedZone("X", 5*3600)), then: []message.Event{acceptedEv()}},
		{name: "new: high priority, ttl, data, collapse id, idempotency key",
			when: with(accept(), func(c *message.Accept) {
				c.Priority, c.TTL, c.Data, c.CollapseID, c.IdempotencyKey = message.PriorityHigh, time.Hour, json.RawMessage(`{"k":"v"}`), "c1", "idem-1"
			}),
			now: t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) {
				e.Priority, e.TTLSeconds, e.ExpiresAt, e.Data, e.CollapseID, e.IdempotencyKey = message.PriorityHigh, 3600, at(time.Hour), json.RawMessage(`{"k":"v"}`), "c1", "idem-1"
			})}},
		{name: "new: data only, no notification",
			when: with(accept(), func(c *message.Accept) { c.Notification, c.Data = nil, json.RawMessage(`{"k":1}`) }),
			now:  t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) { e.Notification, e.Data = nil, json.RawMessage(`{"k":1}`) })}},
		{name: "new: broadcast",
			when: with(accept(), func(c *message.Accept) {
				c.Audience, c.Targets, c.TargetCount = message.Audience{Broadcast: true}, nil, 0
			}),
			now: t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) {
				e.Audience, e.Targets, e.TargetCount = message.Audience{Broadcast: true}, nil, 0
			})}},
		{name: "new: future send_at is scheduled",
			when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(at(time.Hour)) }),
			now:  t0,
			then: []message.Event{scheduledAcceptedEv(), scheduledEv}},
		{name: "new: send_at in another zone is recorded in UTC",
			when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(at(time.Hour).In(time.FixedZone("Y", -7*3600))) }),
			now:  t0,
			then: []message.Event{scheduledAcceptedEv(), scheduledEv}},
		{name: "new: send_at now is not scheduled",
			when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(t0) }),
			now:  t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) { e.SendAt = ptr(t0) })}},
		{name: "new: past send_at is not scheduled",
			when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(at(-time.Hour)) }),
			now:  t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) { e.SendAt = ptr(at(-time.Hour)) })}},
		{name: "new: send_at a max ttl ahead",
			when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(at(message.MaxTTL)) }),
			now:  t0,
			then: []message.Event{
				with(acceptedEv(), func(e *message.Accepted) { e.SendAt, e.ExpiresAt = ptr(at(message.MaxTTL)), at(message.MaxTTL+day) }),
				message.Scheduled{SendAt: at(message.MaxTTL), At: t0},
			}},
		{name: "new: ttl max", when: with(accept(), func(c *message.Accept) { c.TTL = message.MaxTTL }), now: t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) {
				e.TTLSeconds, e.ExpiresAt = int64(message.MaxTTL/time.Second), at(message.MaxTTL)
			})}},
		{name: "new: aliases audience", when: with(accept(), func(c *message.Accept) { c.Audience = message.Audience{Aliases: []string{"u1"}} }), now: t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) { e.Audience = message.Audience{Aliases: []string{"u1"}} })}},
		{name: "new: tags audience", when: with(accept(), func(c *message.Accept) {
			c.Audience = message.Audience{Tags: &message.TagExpr{AnyOf: []string{"vip"}, NoneOf: []string{"muted"}}}
		}), now: t0,
			then: []message.Event{with(acceptedEv(), func(e *message.Accepted) {
				e.Audience = message.Audience{Tags: &message.TagExpr{AnyOf: []string{"vip"}, NoneOf: []string{"muted"}}}
			})}},

		{name: "new: no message id", when: with(accept(), func(c *message.Accept) { c.MessageID = "" }), now: t0, err: message.ErrInvalid},
		{name: "new: no app id", when: with(accept(), func(c *message.Accept) { c.AppID = "" }), now: t0, err: message.ErrInvalid},
		{name: "new: neither notification nor data", when: with(accept(), func(c *message.Accept) { c.Notification = nil }), now: t0, err: message.ErrInvalid},
		{name: "new: data that is not JSON", when: with(accept(), func(c *message.Accept) { c.Data = json.RawMessage(`{"k":`) }), now: t0, err: message.ErrInvalid},
		{name: "new: data that is not UTF-8", when: with(accept(), func(c *message.Accept) { c.Data = json.RawMessage("\"\xff\"") }), now: t0, err: message.ErrInvalid},
		{name: "new: title that is not UTF-8", when: with(accept(), func(c *message.Accept) { c.Notification.Title = "\xff" }), now: t0, err: message.ErrInvalid},
		{name: "new: target that is not UTF-8", when: with(accept(), func(c *message.Accept) { c.Targets = []string{"d\xff"} }), now: t0, err: message.ErrInvalid},
		{name: "new: no audience", when: with(accept(), func(c *message.Accept) { c.Audience = message.Audience{} }), now: t0, err: message.ErrInvalid},
		{name: "new: two audiences", when: with(accept(), func(c *message.Accept) { c.Audience.Broadcast = true }), now: t0, err: message.ErrInvalid},
		{name: "new: tags with only none_of", when: with(accept(), func(c *message.Accept) {
			c.Audience = message.Audience{Tags: &message.TagExpr{NoneOf: []string{"x"}}}
		}), now: t0, err: message.ErrInvalid},
		{name: "new: bad priority", when: with(accept(), func(c *message.Accept) { c.Priority = "urgent" }), now: t0, err: message.ErrInvalid},
		{name: "new: negative ttl", when: with(accept(), func(c *message.Accept) { c.TTL = -time.Second }), now: t0, err: message.ErrInvalid},
		{name: "new: ttl above max", when: with(accept(), func(c *message.Accept) { c.TTL = message.MaxTTL + time.Second }), now: t0, err: message.ErrInvalid},
		{name: "new: send_at beyond max ttl", when: with(accept(), func(c *message.Accept) { c.SendAt = ptr(at(message.MaxTTL + time.Second)) }), now: t0, err: message.ErrInvalid},
	}
	for _, s := range allStates[1:] {
		cases = append(cases, decideCase{name: s + ": accept again", given: history(s), when: accept(), now: at(time.Hour), err: message.ErrInvalidTransition})
	}
	runDecide(t, cases)
}

// Accepting normalises what JSON would: a persisted Accepted reads back
// equal to the decided one.
func TestDecideAcceptCanonicalJSON(t *testing.T) {
	cmd := with(accept(), func(c *message.Accept) {
		c.Audience = message.Audience{Tags: &message.TagExpr{AllOf: []string{"a"}, AnyOf: []string{}, NoneOf: []string{}}, DeviceIDs: []string{}}
		c.Targets = []string{}
		c.Data = json.RawMessage("{ \"html\" : \"<b>\" }")
	})
	evs, err := message.Decide(&message.Message{}, cmd, t0)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, evs[0])
}

func TestDecideStartAttempt(t *testing.T) {
	start := message.StartAttempt{Channel: "apns"}
	runDecide(t, []decideCase{
		{name: "new", when: start, now: t0, err: message.ErrNotFound},
		{name: "accepted", given: history("accepted"), when: start, now: at(time.Minute),
			then: []message.Event{message.Sending{Attempt: 1, Channel: "apns", At: at(time.Minute)}}},
		{name: "accepted: no channel", given: history("accepted"), when: message.StartAttempt{}, now: at(time.Minute), err: message.ErrInvalid},
		{name: "accepted: just before expiry", given: history("accepted"), when: start, now: at(day - time.Nanosecond),
			then: []message.Event{message.Sending{Attempt: 1, Channel: "apns", At: at(day - time.Nanosecond)}}},
		{name: "accepted: at expiry", given: history("accepted"), when: start, now: at(day), err: message.ErrPastExpiry},
		{name: "accepted: after expiry", given: history("accepted"), when: start, now: afterExpiry, err: message.ErrPastExpiry},
		{name: "scheduled: before send_at", given: history("scheduled"), when: start, now: at(time.Hour - time.Nanosecond), err: message.ErrNotDue},
		{name: "scheduled: at send_at", given: history("scheduled"), when: start, now: at(time.Hour), then: []message.Event{sendingAfterS}},
		{name: "scheduled: after send_at", given: history("scheduled"), when: start, now: at(2 * time.Hour),
			then: []message.Event{message.Sending{Attempt: 1, Channel: "apns", At: at(2 * time.Hour)}}},
		{name: "scheduled: at its expiry", given: history("scheduled"), when: start, now: at(time.Hour + day), err: message.ErrPastExpiry},
		{name: "sending", given: history("sending"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
		{name: "sent: next attempt", given: history("sent"), when: message.StartAttempt{Channel: "fcm"}, now: beforeExpiry,
			then: []message.Event{message.Sending{Attempt: 2, Channel: "fcm", At: beforeExpiry}}},
		{name: "failed: retry", given: history("failed"), when: message.StartAttempt{Channel: "fcm"}, now: beforeExpiry,
			then: []message.Event{message.Sending{Attempt: 2, Channel: "fcm", At: beforeExpiry}}},
		{name: "failed: retry after expiry", given: history("failed"), when: start, now: afterExpiry, err: message.ErrPastExpiry},
		{name: "failed finally", given: history("failed-final"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
		{name: "gave up", given: history("gave-up"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
		{name: "resent after a final failure: next attempt", given: history("resent"), when: message.StartAttempt{Channel: "fcm"}, now: beforeExpiry,
			then: []message.Event{message.Sending{Attempt: 2, Channel: "fcm", At: beforeExpiry}}},
		{name: "resent after a final failure: after expiry", given: history("resent"), when: start, now: afterExpiry, err: message.ErrPastExpiry},
		{name: "resent after sent: next attempt", given: history("resent-sent"), when: start, now: beforeExpiry,
			then: []message.Event{message.Sending{Attempt: 2, Channel: "apns", At: beforeExpiry}}},
		{name: "delivered", given: history("delivered"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
		{name: "opened", given: history("opened"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
		{name: "expired", given: history("expired"), when: start, now: afterExpiry, err: message.ErrPastExpiry},
		{name: "cancelled", given: history("cancelled"), when: start, now: beforeExpiry, err: message.ErrInvalidTransition},
	})
}

func TestDecideRecordSent(t *testing.T) {
	sent := message.RecordSent{Attempt: 1, Channel: "apns", ProviderID: "p-1", Accepted: 2}
	runDecide(t, []decideCase{
		{name: "new", when: sent, now: t0, err: message.ErrNotFound},
		{name: "accepted: attempt 1", given: history("accepted"), when: sent, now: at(time.Minute), err: message.ErrWrongAttempt},
		{name: "accepted: attempt 0", given: history("accepted"), when: message.RecordSent{}, now: at(time.Minute), err: message.ErrInvalidTransition},
		{name: "scheduled", given: history("scheduled"), when: sent, now: at(time.Minute), err: message.ErrWrongAttempt},
		{name: "sending", given: history("sending"), when: sent, now: at(2 * time.Minute), then: []message.Event{sent1}},
		{name: "sending: provider id optional", given: history("sending"), when: message.RecordSent{Attempt: 1, Channel: "apns"}, now: at(2 * time.Minute),
			then: []message.Event{message.Sent{Attempt: 1, Channel: "apns", At: at(2 * time.Minute)}}},
		{name: "sending: after expiry still recorded", given: history("sending"), when: sent, now: afterExpiry,
			then: []message.Event{with(sent1, func(e *message.Sent) { e.At = afterExpiry })}},
		{name: "sending: next attempt", given: history("sending"), when: message.RecordSent{Attempt: 2}, now: at(2 * time.Minute), err: message.ErrWrongAttempt},
		{name: "sending: previous attempt", given: history("sending"), when: message.RecordSent{Attempt: 0}, now: at(2 * time.Minute), err: message.ErrWrongAttempt},
		{name: "sent: repeat", given: history("sent"), when: sent, now: at(3 * time.Minute), err: message.ErrInvalidTransition},
		{name: "failed", given: history("failed"), when: sent, now: at(3 * time.Minute), err: message.ErrInvalidTransition},
		{name: "failed finally", given: history("failed-final"), when: sent, now: at(3 * time.Minute), err: message.ErrInvalidTransition},
		{name: "delivered", given: history("delivered"), when: sent, now: at(5 * time.Minute), err: message.ErrInvalidTransition},
		{name: "delivered while sending", given: []message.Event{acceptedEv(), sending1, deliveredD1}, when: sent, now: at(5 * time.Minute), err: message.ErrInvalidTransition},
		{name: "opened", given: history("opened"), when: sent, now: at(5 * time.Minute), err: message.ErrInvalidTransition},
		{name: "expired", given: history("expired"), when: message.RecordSent{}, now: afterExpiry, err: message.ErrInvalidTransition},
		{name: "expired while sending", given: []message.Event{acceptedEv(), sending1, expiredEv}, when: sent, now: afterExpiry, err: message.ErrInvalidTransition},
		{name: "cancelled", given: history("cancelled"), when: message.RecordSent{}, now: beforeExpiry, err: message.ErrInvalidTransition},
	})
}

func TestDecideRecordFailure(t *testing.T) {
	fail := message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "timeout", Status: 503, Retryable: true}
	final := message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "bad token", Status: 410, Final: true}
	runDecide(t, []decideCase{
		{name: "new", when: fail, now: t0, err: message.ErrNotFound},
		{name: "accepted", given: history("accepted"), when: fail, now: at(2 * time.Minute), err: message.ErrWrongAttempt},
		{name: "accepted: attempt 0", given: history("accepted"), when: message.RecordFailure{Reason: "x"}, now: at(2 * time.Minute), err: message.ErrInvalidTransition},
		{name: "scheduled", given: history("scheduled"), when: fail, now: at(2 * time.Minute), err: message.ErrWrongAttempt},
		{name: "sending: retryable", given: history("sending"), when: fail, now: at(2 * time.Minute), then: []message.Event{failed1}},
		{name: "sending: final", given: history("sending"), when: final, now: at(2 * time.Minute), then: []message.Event{failed1Final}},
		{name: "sending: reason not UTF-8", given: history("sending"), when: message.RecordFailure{Attempt: 1, Reason: "\xff"}, now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: no reason", given: history("sending"), when: message.RecordFailure{Attempt: 1}, now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: wrong attempt", given: history("sending"), when: with(fail, func(c *message.RecordFailure) { c.Attempt = 2 }), now: at(2 * time.Minute), err: message.ErrWrongAttempt},
		{name: "sent: receipt failure", given: history("sent"), when: fail, now: at(2 * time.Minute), then: []message.Event{failed1}},
		{name: "failed: repeat", given: history("failed"), when: fail, now: at(3 * time.Minute), err: message.ErrInvalidTransition},
		{name: "failed finally: repeat", given: history("failed-final"), when: final, now: at(3 * time.Minute), err: message.ErrInvalidTransition},
		{name: "sending: classified, with the scheduled retry in another zone", given: history("sending"),
			when: with(fail, func(c *message.RecordFailure) {
				c.Class, c.RetryAt = message.ClassTransient, ptr(at(time.Hour).In(time.FixedZone("X", 3600)))
			}),
			now: at(2 * time.Minute), then: []message.Event{failed1Retry}},
		{name: "sending: token invalid, final, with an alert", given: history("sending"),
			when: with(final, func(c *message.RecordFailure) { c.Class, c.Alert = message.ClassTokenInvalid, "no_channel" }),
			now:  at(2 * time.Minute),
			then: []message.Event{with(failed1Final, func(e *message.Failed) { e.Class, e.Alert = message.ClassTokenInvalid, "no_channel" })}},
		{name: "sending: unknown class", given: history("sending"), when: with(fail, func(c *message.RecordFailure) { c.Class = "flaky" }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: transient, not retryable", given: history("sending"), when: with(final, func(c *message.RecordFailure) { c.Class = message.ClassTransient }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: permanent, retryable", given: history("sending"), when: with(fail, func(c *message.RecordFailure) { c.Class = message.ClassPermanent }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: final with a retry", given: history("sending"), when: with(final, func(c *message.RecordFailure) { c.RetryAt = ptr(at(time.Hour)) }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: alert on a failure that is not final", given: history("sending"), when: with(fail, func(c *message.RecordFailure) { c.Alert = "x" }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "sending: alert not UTF-8", given: history("sending"), when: with(final, func(c *message.RecordFailure) { c.Alert = "\xff" }), now: at(2 * time.Minute), err: message.ErrInvalid},
		{name: "failed: give up", given: history("failed"),
			when: message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "attempts_exhausted", Final: true, Alert: "attempts_exhausted"},
			now:  at(3 * time.Minute), then: []message.Event{gaveUp1}},
		{name: "failed: give up of another attempt", given: history("failed"), when: with(final, func(c *message.RecordFailure) { c.Attempt = 2 }), now: at(3 * time.Minute), err: message.ErrWrongAttempt},
		{name: "gave up: repeat", given: history("gave-up"), when: final, now: at(4 * time.Minute), err: message.ErrInvalidTransition},
		{name: "resent after a final failure: give up the new cycle", given: history("resent"), when: final, now: at(11 * time.Minute),
			then: []message.Event{with(failed1Final, func(e *message.Failed) { e.At = at(11 * time.Minute) })}},
		{name: "resent after a final failure: not final", given: history("resent"), when: fail, now: at(11 * time.Minute), err: message.ErrInvalidTransition},
		{name: "delivered", given: history("delivered"), when: fail, now: at(5 * time.Minute), err: message.ErrInvalidTransition},
		{name: "opened", given: history("opened"), when: fail, now: at(5 * time.Minute), err: message.ErrInvalidTransition},
		{name: "expired while sending", given: []message.Event{acceptedEv(), sending1, expiredEv}, when: fail, now: afterExpiry, err: message.ErrInvalidTransition},
		{name: "cancelled", given: history("cancelled"), when: message.RecordFailure{Reason: "x"}, now: beforeExpiry, err: message.ErrInvalidTransition},
	})
}

func TestDecideRecordDelivered(t *testing.T) {
	d1 := message.RecordDelivered{DeviceID: "d1", Channel: "apns"}
	d2 := message.RecordDelivered{DeviceID: "d2", Channel: "gateway"}
	now := at(5 * time.Minute)
	deliveredAt := func(id, ch string) []message.Event {
		return []message.Event{message.Delivered{DeviceID: id, Channel: ch, At: now}}
	}
	runDecide(t, []decideCase{
		{name: "new", when: d1, now: now, err: message.ErrNotFound},
		{name: "accepted", given: history("accepted"), when: d1, now: now, err: message.ErrInvalidTransition},
		{name: "scheduled", given: history("scheduled"), when: d1, now: now, err: message.ErrInvalidTransition},
		{name: "sending", given: history("sending"), when: d1, now: now, then: deliveredAt("d1", "apns")},
		{name: "sent", given: history("sent"), when: d1, now: now, then: deliveredAt("d1", "apns")},
		{name: "sent: no device", given: history("sent"), when: message.RecordDelivered{Channel: "apns"}, now: now, err: message.ErrInvalid},
		{name: "sent: device id not UTF-8", given: history("sent"), when: message.RecordDelivered{DeviceID: "d\xff"}, now: now, err: message.ErrInvalid},
		{name: "sent: after expiry", given: history("sent"), when: d1, now: afterExpiry,
			then: []message.Event{message.Delivered{DeviceID: "d1", Channel: "apns", At: afterExpiry}}},
		{name: "failed: the ack came anyway", given: history("failed"), when: d1, now: now, then: deliveredAt("d1", "apns")},
		{name: "failed finally: a late ack is still a fact", given: history("failed-final"), when: d1, now: now, then: deliveredAt("d1", "apns")},
		{name: "delivered: same device is a no-op", given: history("delivered"), when: d1, now: now},
		{name: "delivered: same device other channel is a no-op", given: history("delivered"), when: message.RecordDelivered{DeviceID: "d1", Channel: "fcm"}, now: now},
		{name: "delivered: other device", given: history("delivered"), when: d2, now: now, then: deliveredAt("d2", "gateway")},
		{name: "opened: same device is a no-op", given: history("opened"), when: d1, now: now},
		{name: "opened: other device", given: history("opened"), when: d2, now: now, then: deliveredAt("d2", "gateway")},
		{name: "expired", given: history("expired"), when: d1, now: afterExpiry, err: message.ErrInvalidTransition},
		{name: "cancelled", given: history("cancelled"), when: d1, now: now, err: message.ErrInvalidTransition},
	})
}

func TestDecideRecordOpened(t *testing.T) {
	o1 := message.RecordOpened{DeviceID: "d1", Channel: "apns"}
	o2 := message.RecordOpened{DeviceID: "d2", Channel: "gateway"}
	now := at(5 * time.Minute)
	openedAt := func(id, ch string) []message.Event {
		return []message.Event{message.Opened{DeviceID: id, Channel: ch, At: now}}
	}
	runDecide(t, []decideCase{
		{name: "new", when: o1, now: now, err: message.ErrNotFound},
		{name: "accepted", given: history("accepted"), when: o1, now: now, err: message.ErrInvalidTransition},
		{name: "scheduled", given: history("scheduled"), when: o1, now: now, err: message.ErrInvalidTransition},
		{name: "sending: the push was faster than its sent event", given: history("sending"), when: o1, now: now, then: openedAt("d1", "apns")},
		{name: "sent", given: history("sent"), when: o1, now: now, then: openedAt("d1", "apns")},
		{name: "sent: no device", given: history("sent"), when: message.RecordOpened{}, now: now, err: message.ErrInvalid},
		{name: "failed", given: history("failed"), when: o1, now: now, then: openedAt("d1", "apns")},
		{name: "failed finally", given: history("failed-final"), when: o1, now: now, then: openedAt("d1", "apns")},
		{name: "delivered: same device", given: history("delivered"), when: o1, now: now, then: openedAt("d1", "apns")},
		{name: "delivered: other device", given: history("delivered"), when: o2, now: now, then: openedAt("d2", "gateway")},
		{name: "opened: same device is a no-op", given: history("opened"), when: o1, now: now},
		{name: "opened: other device", given: history("opened"), when: o2, now: now, then: openedAt("d2", "gateway")},
		{name: "expired", given: history("expired"), when: o1, now: afterExpiry, err: message.ErrInvalidTransition},
		{name: "cancelled", given: history("cancelled"), when: o1, now: now, err: message.ErrInvalidTransition},
	})
}

func TestDecideExpire(t *testing.T) {
	exp := message.Expire{}
	expiredAt := func(t time.Time) []message.Event { return []message.Event{message.Expired{At: t}} }
	cases := []decideCase{
		{name: "new", when: exp, now: afterExpiry, err: message.ErrNotFound},
		{name: "accepted: before expiry", given: history("accepted"), when: exp, now: at(day - time.Nanosecond), err: message.ErrNotDue},
		{name: "accepted: at expiry", given: history("accepted"), when: exp, now: at(day), then: expiredAt(at(day))},
		{name: "accepted: after expiry", given: history("accepted"), when: exp, now: afterExpiry, then: expiredAt(afterExpiry)},
		{name: "scheduled: before its expiry", given: history("scheduled"), when: exp, now: at(day), err: message.ErrNotDue},
		{name: "scheduled: at its expiry", given: history("scheduled"), when: exp, now: at(day + time.Hour), then: expiredAt(at(day + time.Hour))},
		{name: "delivered: before expiry", given: history("delivered"), when: exp, now: beforeExpiry, err: message.ErrNotDue},
	}
	for _, s := range []string{"sending", "sent", "failed", "resent", "resent-sent"} {
		cases = append(cases,
			decideCase{name: s + ": before expiry", given: history(s), when: exp, now: beforeExpiry, err: message.ErrNotDue},
			decideCase{name: s + ": after expiry", given: history(s), when: exp, now: afterExpiry, then: expiredAt(afterExpiry)})
	}
	for _, s := range []string{"failed-final", "gave-up", "delivered", "opened", "expired", "cancelled"} {
		cases = append(cases, decideCase{name: s + ": after expiry", given: history(s), when: exp, now: afterExpiry, err: message.ErrInvalidTransition})
	}
	runDecide(t, cases)
}

func TestDecideCancel(t *testing.T) {
	cancel := message.Cancel{Reason: "oops"}
	now := at(time.Minute)
	cases := []decideCase{
		{name: "new", when: cancel, now: now, err: message.ErrNotFound},
		{name: "accepted", given: history("accepted"), when: cancel, now: now, then: []message.Event{cancelledEv}},
		{name: "accepted: no reason", given: history("accepted"), when: message.Cancel{}, now: now, then: []message.Event{message.Cancelled{At: now}}},
		{name: "scheduled", given: history("scheduled"), when: cancel, now: now, then: []message.Event{cancelledEv}},
	}
	for _, s := range []string{"sending", "sent", "failed", "failed-final", "gave-up", "resent", "resent-sent", "delivered", "opened", "expired", "cancelled"} {
		cases = append(cases, decideCase{name: s, given: history(s), when: cancel, now: at(10 * time.Minute), err: message.ErrInvalidTransition})
	}
	runDecide(t, cases)
}

func TestDecideResend(t *testing.T) {
	resend := message.Resend{Reason: "operator"}
	now := at(10 * time.Minute)
	cases := []decideCase{
		{name: "new", when: resend, now: now, err: message.ErrNotFound},
		{name: "sent: no reason", given: history("sent"), when: message.Resend{}, now: now, then: []message.Event{message.ResendRequested{At: now}}},
		{name: "sent: reason not UTF-8", given: history("sent"), when: message.Resend{Reason: "\xff"}, now: now, err: message.ErrInvalid},
		{name: "sent: just before expiry", given: history("sent"), when: resend, now: at(day - time.Nanosecond),
			then: []message.Event{message.ResendRequested{Reason: "operator", At: at(day - time.Nanosecond)}}},
		{name: "sent: at expiry", given: history("sent"), when: resend, now: at(day), err: message.ErrPastExpiry},
		{name: "failed finally: after expiry", given: history("failed-final"), when: resend, now: afterExpiry, err: message.ErrPastExpiry},
		{name: "expired", given: history("expired"), when: resend, now: afterExpiry, err: message.ErrPastExpiry},
	}
	for _, s := range []string{"sent", "failed", "failed-final", "gave-up", "resent", "resent-sent"} {
		cases = append(cases, decideCase{name: s, given: history(s), when: resend, now: now, then: []message.Event{resentEv}})
	}
	for _, s := range []string{"accepted", "scheduled", "sending", "delivered", "opened", "cancelled"} {
		cases = append(cases, decideCase{name: s, given: history(s), when: resend, now: now, err: message.ErrInvalidTransition})
	}
	runDecide(t, cases)
}

func TestTransitionError(t *testing.T) {
	m, _ := message.Replay(history("cancelled"))
	_, err := message.Decide(&m, message.StartAttempt{Channel: "apns"}, beforeExpiry)
	var te *message.TransitionError
	if !errors.As(err, &te) || te.From != message.StateCancelled || te.Command != "start attempt" {
		t.Fatalf("err = %#v", err)
	}
	if got, want := te.Error(), "message: start attempt not allowed in state cancelled"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got, want := (&message.TransitionError{Command: "x"}).Error(), "message: x not allowed in state new"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestEvolveState(t *testing.T) {
	for _, tc := range []struct {
		given     string
		state     message.State
		terminal  bool
		attempt   int
		delivered []string
		opened    []string
	}{
		{given: "accepted", state: message.StateAccepted},
		{given: "scheduled", state: message.StateScheduled},
		{given: "sending", state: message.StateSending, attempt: 1},
		{given: "sent", state: message.StateSent, attempt: 1},
		{given: "failed", state: message.StateFailed, attempt: 1},
		{given: "failed-final", state: message.StateFailed, attempt: 1, terminal: true},
		{given: "gave-up", state: message.StateFailed, attempt: 1, terminal: true},
		// A resend clears the final failure: the next attempt may start.
		{given: "resent", state: message.StateFailed, attempt: 1},
		{given: "resent-sent", state: message.StateSent, attempt: 1},
		{given: "delivered", state: message.StateDelivered, attempt: 1, terminal: true, delivered: []string{"d1"}},
		// An open implies delivery.
		{given: "opened", state: message.StateOpened, attempt: 1, terminal: true, delivered: []string{"d1"}, opened: []string{"d1"}},
		{given: "expired", state: message.StateExpired, terminal: true},
		{given: "cancelled", state: message.StateCancelled, terminal: true},
	} {
		t.Run(tc.given, func(t *testing.T) {
			evs := history(tc.given)
			m, err := message.Replay(evs)
			if err != nil {
				t.Fatal(err)
			}
			if m.State != tc.state || m.Terminal() != tc.terminal || m.Attempt != tc.attempt || m.Version != len(evs) {
				t.Fatalf("state %q terminal %v attempt %d version %d", m.State, m.Terminal(), m.Attempt, m.Version)
			}
			if got := slices.Sorted(maps.Keys(m.Delivered)); !slices.Equal(got, tc.delivered) {
				t.Fatalf("delivered %v, want %v", got, tc.delivered)
			}
			if got := slices.Sorted(maps.Keys(m.Opened)); !slices.Equal(got, tc.opened) {
				t.Fatalf("opened %v, want %v", got, tc.opened)
			}
		})
	}
	t.Run("a delivery after an open keeps the message opened", func(t *testing.T) {
		m, _ := message.Replay(append(history("opened"), message.Delivered{DeviceID: "d2", Channel: "apns", At: at(5 * time.Minute)}))
		if m.State != message.StateOpened || len(m.Delivered) != 2 {
			t.Fatalf("state %q delivered %v", m.State, m.Delivered)
		}
	})
	t.Run("an open keeps the first delivery time", func(t *testing.T) {
		m, _ := message.Replay(append(history("delivered"), openedD1))
		if !m.Delivered["d1"].Equal(deliveredD1.At) || !m.Opened["d1"].Equal(openedD1.At) {
			t.Fatalf("delivered %v opened %v", m.Delivered, m.Opened)
		}
	})
	t.Run("a resend is counted and clears the final failure", func(t *testing.T) {
		m, _ := message.Replay(append(history("resent"), resentEv))
		if m.Resends != 2 || m.FinalFailure || m.LastError != "bad token" || !m.UpdatedAt.Equal(resentEv.At) {
			t.Fatalf("resends %d final %v last error %q updated %v", m.Resends, m.FinalFailure, m.LastError, m.UpdatedAt)
		}
	})
	t.Run("the give-up is the last error", func(t *testing.T) {
		m, _ := message.Replay(history("gave-up"))
		if !m.FinalFailure || m.LastError != "attempts_exhausted" {
			t.Fatalf("final %v last error %q", m.FinalFailure, m.LastError)
		}
	})
	t.Run("the scheduled retry is kept until the next attempt", func(t *testing.T) {
		m, _ := message.Replay([]message.Event{acceptedEv(), sending1, failed1Retry})
		if !m.RetryAt.Equal(at(time.Hour)) {
			t.Fatalf("retry at %v", m.RetryAt)
		}
		for _, e := range []message.Event{message.Sending{Attempt: 2, Channel: "apns", At: at(time.Hour)}, resentEv} {
			m, _ := message.Replay([]message.Event{acceptedEv(), sending1, failed1Retry})
			if err := m.Evolve(e); err != nil || !m.RetryAt.IsZero() {
				t.Fatalf("after %s: retry at %v, %v", e.EventType(), m.RetryAt, err)
			}
		}
		if m, _ := message.Replay(history("failed")); !m.RetryAt.IsZero() {
			t.Fatalf("retry at %v without one recorded", m.RetryAt)
		}
	})
	t.Run("scheduled send time", func(t *testing.T) {
		m, _ := message.Replay(history("scheduled"))
		if !m.SendAt.Equal(at(time.Hour)) || !m.ExpiresAt.Equal(at(day+time.Hour)) {
			t.Fatalf("send at %v expires at %v", m.SendAt, m.ExpiresAt)
		}
	})
}

// Evolve refuses events that are not transitions from the state, and leaves
// the state as it was.
func TestEvolveRejects(t *testing.T) {
	for _, tc := range []struct {
		given string
		e     message.Event
	}{
		{"new", sending1},
		{"new", deliveredD1},
		{"accepted", acceptedEv()},
		{"accepted", message.Sending{Attempt: 2, Channel: "apns"}},
		{"accepted", sent1},
		{"scheduled", scheduledEv},
		{"sending", sending1},
		{"sending", message.Sent{Attempt: 2}},
		{"sent", message.Failed{Attempt: 2, Reason: "x"}},
		{"sent", cancelledEv},
		{"failed", message.Failed{Attempt: 1, Channel: "apns", Reason: "again"}},
		{"failed", message.Failed{Attempt: 2, Channel: "apns", Reason: "x", Final: true}},
		{"gave-up", gaveUp1},
		{"gave-up", message.Sending{Attempt: 2, Channel: "apns"}},
		{"failed-final", failed1Final},
		{"failed-final", message.Sending{Attempt: 2, Channel: "apns"}},
		{"accepted", resentEv},
		{"scheduled", resentEv},
		{"sending", resentEv},
		{"delivered", resentEv},
		{"opened", resentEv},
		{"expired", resentEv},
		{"cancelled", resentEv},
		{"resent", message.Failed{Attempt: 1, Channel: "apns", Reason: "x"}},
		{"failed-final", sending1},
		{"accepted", openedD1},
		{"scheduled", deliveredD1},
		{"cancelled", deliveredD1},
		{"cancelled", openedD1},
		{"failed-final", expiredEv},
		{"delivered", expiredEv},
		{"delivered", message.Sending{Attempt: 2, Channel: "apns"}},
		{"opened", cancelledEv},
		{"expired", deliveredD1},
		{"expired", expiredEv},
		{"cancelled", message.Sending{Attempt: 1, Channel: "apns"}},
		{"cancelled", cancelledEv},
	} {
		t.Run(tc.given+"+"+tc.e.EventType(), func(t *testing.T) {
			m, _ := message.Replay(history(tc.given))
			before := cloneMessage(m)
			err := m.Evolve(tc.e)
			var te *message.TransitionError
			if !errors.Is(err, message.ErrInvalidTransition) || !errors.As(err, &te) || te.Command != tc.e.EventType() {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(m, before) {
				t.Fatal("a refused event changed the state")
			}
		})
	}
	if _, err := message.Replay([]message.Event{sending1}); !errors.Is(err, message.ErrInvalidTransition) {
		t.Fatalf("Replay err = %v", err)
	}
}

// sampleEvents has every event type with every field set.
func sampleEvents() []message.Event {
	full := acceptedEv()
	full.Audience = message.Audience{Tags: &message.TagExpr{AllOf: []string{"a"}, AnyOf: []string{"b", "c"}, NoneOf: []string{"d"}}}
	full.Data = json.RawMessage(`{"deep":{"link":"app://x"}}`)
	full.CollapseID, full.IdempotencyKey, full.SendAt = "c1", "idem", ptr(at(time.Hour))
	return []message.Event{
		full, acceptedEv(),
		with(acceptedEv(), func(e *message.Accepted) {
			e.Audience, e.Targets, e.Notification, e.Data = message.Audience{Broadcast: true}, nil, nil, json.RawMessage(`[1,"x",null]`)
		}),
		with(acceptedEv(), func(e *message.Accepted) { e.Audience = message.Audience{Aliases: []string{"u1"}} }),
		scheduledEv, sending1, sent1, failed1, failed1Final, failed1Retry, gaveUp1, deliveredD1, openedD1, expiredEv, cancelledEv, resentEv,
		with(failed1Final, func(e *message.Failed) { e.Class = message.ClassPermanent }),
		message.ResendRequested{At: at(time.Hour).Add(123456789)},
		message.Cancelled{At: at(time.Nanosecond)},
		message.Sent{Attempt: 3, At: at(time.Hour).Add(123456789)},
		message.DeliveredBatch{DeviceIDs: []string{"d1", "d2"}, Channel: "gateway", At: at(time.Minute)},
	}
}

func TestRecordDeliveriesBatches(t *testing.T) {
	m := message.Message{}
	now := at(0)
	for _, c := range []message.Command{
		message.Accept{MessageID: "m1", AppID: "a1", Audience: message.Audience{Broadcast: true}, Data: json.RawMessage(`1`)},
		message.StartAttempt{Channel: "gateway"},
		message.RecordSent{Attempt: 1, Channel: "gateway", Accepted: 3},
	} {
		evs, err := message.Decide(&m, c, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if err := m.Evolve(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	evs, err := message.Decide(&m, message.RecordDeliveries{DeviceIDs: []string{"d3", "d1", "d3"}, Channel: "gateway"}, now)
	if err != nil || len(evs) != 1 {
		t.Fatalf("first batch: %v %v", evs, err)
	}
	if b := evs[0].(message.DeliveredBatch); !reflect.DeepEqual(b.DeviceIDs, []string{"d1", "d3"}) {
		t.Fatalf("batch devices %v, want sorted and unique", b.DeviceIDs)
	}
	if err := m.Evolve(evs[0]); err != nil {
		t.Fatal(err)
	}
	if m.State != message.StateDelivered || len(m.Delivered) != 2 {
		t.Fatalf("after the batch: %s, %v", m.State, m.Delivered)
	}
	// Devices seen before are skipped; nothing new, nothing recorded.
	evs, err = message.Decide(&m, message.RecordDeliveries{DeviceIDs: []string{"d1", "d2"}, Channel: "gateway"}, now)
	if err != nil || len(evs) != 1 || !reflect.DeepEqual(evs[0].(message.DeliveredBatch).DeviceIDs, []string{"d2"}) {
		t.Fatalf("second batch: %v %v", evs, err)
	}
	if evs, err := message.Decide(&m, message.RecordDeliveries{DeviceIDs: []string{"d1"}, Channel: "gateway"}, now); err != nil || len(evs) != 0 {
		t.Fatalf("repeat: %v %v", evs, err)
	}
	if _, err := message.Decide(&m, message.RecordDeliveries{DeviceIDs: []string{""}}, now); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("empty id: %v", err)
	}
	if _, err := message.Decide(&m, message.RecordDeliveries{DeviceIDs: make([]string, message.MaxDeliveriesPerEvent+1)}, now); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("too many: %v", err)
	}
}

func roundTrip(t *testing.T, e message.Event) {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal %T: %v", e, err)
	}
	got, err := message.Decode(e.EventType(), b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip of %s:\n got %#v\nwant %#v", e.EventType(), got, e)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range sampleEvents() {
		roundTrip(t, e)
		seen[e.EventType()] = true
	}
	for _, typ := range message.EventTypes() {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
	if len(seen) != len(message.EventTypes()) {
		t.Errorf("samples of %d types, EventTypes has %d", len(seen), len(message.EventTypes()))
	}
}

// Events recorded before class, retry_at and alert were kept decode with
// them empty.
func TestDecodeOldFailed(t *testing.T) {
	e, err := message.Decode(message.TypeFailed, []byte(`{"attempt":1,"channel":"apns","reason":"timeout","status":503,"retryable":true,"final":false,"at":"2030-01-02T12:02:00Z"}`))
	if err != nil || !reflect.DeepEqual(e, failed1) {
		t.Fatalf("got %#v, %v", e, err)
	}
	b, _ := json.Marshal(failed1)
	if want := `{"attempt":1,"channel":"apns","reason":"timeout","status":503,"retryable":true,"final":false,"at":"2030-01-02T12:02:00Z"}`; string(b) != want {
		t.Fatalf("failed1 encodes as %s, want %s", b, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	if _, err := message.Decode("message.unknown.v1", []byte(`{}`)); err == nil {
		t.Error("unknown type decoded")
	}
	for _, typ := range message.EventTypes() {
		if _, err := message.Decode(typ, []byte(`{"at":`)); err == nil {
			t.Errorf("%s: truncated JSON decoded", typ)
		}
		if _, err := message.Decode(typ, []byte(`{"at":"yesterday"}`)); err == nil {
			t.Errorf("%s: bad time decoded", typ)
		}
	}
}

func TestStream(t *testing.T) {
	if got := message.Stream("m1"); got != "message-m1" {
		t.Fatalf("Stream = %q", got)
	}
	if len(message.States()) != 9 {
		t.Fatalf("States = %v", message.States())
	}
}
