package message_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/message"
)

var sentinels = []error{message.ErrInvalidTransition, message.ErrNotFound, message.ErrInvalid, message.ErrNotDue, message.ErrWrongAttempt, message.ErrPastExpiry, message.ErrNotTarget}

var zones = []*time.Location{time.UTC, time.FixedZone("E", 5*3600+1800), time.FixedZone("W", -8*3600)}

// drawNow advances the clock by a random step, now and then past a TTL,
// and shows it in a random zone.
func drawNow(t *rapid.T, now time.Time) time.Time {
	step := rapid.SampledFrom([]time.Duration{0, time.Nanosecond, time.Second, time.Minute, time.Hour, 6 * time.Hour, 25 * time.Hour}).Draw(t, "step")
	now = now.Add(step + time.Duration(rapid.IntRange(0, 999).Draw(t, "ms"))*time.Millisecond)
	return now.In(rapid.SampledFrom(zones).Draw(t, "zone"))
}

func drawStrings(t *rapid.T, label string) []string {
	return rapid.SampledFrom([][]string{nil, {}, {"x"}, {"x", "y", "x"}, {"d3", "d1"}, {"\xff"}}).Draw(t, label)
}

func drawAudience(t *rapid.T) message.Audience {
	switch rapid.IntRange(0, 5).Draw(t, "audience") {
	case 0:
		return message.Audience{DeviceIDs: []string{"d1", "d2"}, Aliases: drawStrings(t, "empty")[:0]}
	case 1:
		return message.Audience{Aliases: []string{"u1"}}
	case 2:
		return message.Audience{Tags: &message.TagExpr{AllOf: drawStrings(t, "all"), AnyOf: drawStrings(t, "any"), NoneOf: drawStrings(t, "none")}}
	case 3:
		return message.Audience{Broadcast: true}
	case 4:
		return message.Audience{} // invalid: none
	default:
		return message.Audience{Broadcast: true, DeviceIDs: []string{"d1"}} // invalid: two
	}
}

// drawAccept draws an Accept that is valid about half of the time.
func drawAccept(t *rapid.T, now time.Time) message.Accept {
	c := message.Accept{
		MessageID:      "m1",
		AppID:          "a1",
		Audience:       drawAudience(t),
		Targets:        drawStrings(t, "targets"),
		TargetCount:    rapid.IntRange(0, 3).Draw(t, "target_count"),
		Notification:   &message.Notification{Title: rapid.SampledFrom([]string{"", "Hi"}).Draw(t, "title"), Body: "b"},
		Data:           rapid.SampledFrom([]json.RawMessage{nil, {}, json.RawMessage(`{"k":"v"}`), json.RawMessage("{ \"k\" : [1, 2] }\n"), json.RawMessage(`"<b>&"`), json.RawMessage(`null`), json.RawMessage("\"\xff\"")}).Draw(t, "data"),
		Priority:       rapid.SampledFrom([]string{"", message.PriorityNormal, message.PriorityHigh}).Draw(t, "priority"),
		CollapseID:     rapid.SampledFrom([]string{"", "c", "\xfe"}).Draw(t, "collapse"),
		TTL:            rapid.SampledFrom([]time.Duration{0, 1500 * time.Millisecond, time.Hour, 24 * time.Hour, message.MaxTTL}).Draw(t, "ttl"),
		IdempotencyKey: rapid.SampledFrom([]string{"", "k"}).Draw(t, "idem"),
	}
	if rapid.Bool().Draw(t, "send_at?") {
		d := rapid.SampledFrom([]time.Duration{-time.Hour, 0, time.Second, time.Hour, 30 * time.Hour, message.MaxTTL}).Draw(t, "send_at")
		c.SendAt = ptr(now.Add(d).In(rapid.SampledFrom(zones).Draw(t, "send_at zone")))
	}
	switch rapid.IntRange(0, 15).Draw(t, "break") {
	case 0:
		c.MessageID = ""
	case 1:
		c.AppID = ""
	case 2:
		c.Notification, c.Data = nil, nil
	case 3:
		c.Data = json.RawMessage(rapid.SampledFrom([]string{`{"k":`, `nope`, ` `}).Draw(t, "bad data"))
	case 4:
		c.Priority = "urgent"
	case 5:
		c.TTL = rapid.SampledFrom([]time.Duration{-time.Second, message.MaxTTL + time.Nanosecond}).Draw(t, "bad ttl")
	case 6:
		c.SendAt = ptr(now.Add(message.MaxTTL + time.Second))
	}
	return c
}

func drawCommand(t *rapid.T, m *message.Message, now time.Time) message.Command {
	if m.State == message.StateNone && rapid.IntRange(0, 3).Draw(t, "accept first") > 0 {
		return drawAccept(t, now)
	}
	attempt := func() int { return m.Attempt + rapid.IntRange(-1, 1).Draw(t, "attempt delta") }
	channel := func() string {
		return rapid.SampledFrom([]string{"apns", "fcm", "gateway", "", "\xfe"}).Draw(t, "channel")
	}
	device := func() string {
		return rapid.SampledFrom([]string{"d1", "d2", "d3", "", "d\xff", "d\xfe"}).Draw(t, "device")
	}
	app := func() string { return rapid.SampledFrom([]string{"", "a1", "a2"}).Draw(t, "app") }
	switch rapid.IntRange(0, 11).Draw(t, "command") {
	case 0:
		return drawAccept(t, now)
	case 1, 2:
		return message.StartAttempt{Channel: channel()}
	case 3:
		return message.RecordSent{Attempt: attempt(), Channel: channel(), ProviderID: rapid.SampledFrom([]string{"", "p"}).Draw(t, "provider"), Accepted: rapid.IntRange(0, 2).Draw(t, "accepted")}
	case 4:
		c := message.RecordFailure{Attempt: attempt(), Channel: channel(), Reason: rapid.SampledFrom([]string{"timeout", "gave_up", ""}).Draw(t, "reason"),
			Status: rapid.SampledFrom([]int{0, 410, 503}).Draw(t, "status"), Retryable: rapid.Bool().Draw(t, "retryable"), Final: rapid.Bool().Draw(t, "final"),
			Class: rapid.SampledFrom([]string{"", message.ClassTransient, message.ClassPermanent, message.ClassTokenInvalid, "bogus"}).Draw(t, "class"),
			Alert: rapid.SampledFrom([]string{"", "", "attempts_exhausted", "\xff"}).Draw(t, "alert")}
		if c.Class != "" && rapid.Bool().Draw(t, "consistent class") {
			c.Retryable = c.Class == message.ClassTransient
		}
		if rapid.Bool().Draw(t, "retry_at?") {
			c.RetryAt = ptr(now.Add(rapid.SampledFrom([]time.Duration{0, time.Second, time.Hour}).Draw(t, "retry in")).In(rapid.SampledFrom(zones).Draw(t, "retry zone")))
		}
		return c
	case 5:
		return message.RecordDelivered{DeviceID: device(), Channel: channel(), AppID: app()}
	case 6:
		return message.RecordDeliveries{DeviceIDs: rapid.SliceOfN(rapid.Custom(func(t *rapid.T) string { return device() }), 0, 4).Draw(t, "devices"), Channel: channel(), AppID: app()}
	case 7:
		return message.RecordOpened{DeviceID: device(), Channel: channel(), AppID: app()}
	case 8, 9:
		return message.Expire{}
	case 10:
		return message.Cancel{Reason: rapid.SampledFrom([]string{"", "why", "\xff"}).Draw(t, "cancel reason")}
	default:
		return message.Resend{Reason: rapid.SampledFrom([]string{"", "operator", "\xff"}).Draw(t, "resend reason")}
	}
}

// TestPropertyReplayEqualsIncremental drives random command sequences and
// checks Decide against Evolve, Replay and the JSON codec, and the
// lifecycle invariants.
func TestPropertyReplayEqualsIncremental(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var m message.Message
		var log []message.Event
		now := t0
		attempts := 0     // last Sending attempt in the log
		ended := false    // expired or cancelled: nothing follows
		failed := false   // finally failed: only a resend follows
		acksOnly := false // delivered or opened: only acks and opens follow
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for range steps {
			now = drawNow(t, now)
			cmd := drawCommand(t, &m, now)
			before := cloneMessage(m)
			evs, err := message.Decide(&m, cmd, now)
			if !reflect.DeepEqual(m, before) {
				t.Fatalf("Decide(%#v) changed the state", cmd)
			}
			if err != nil {
				if evs != nil {
					t.Fatalf("Decide(%#v) returned events and %v", cmd, err)
				}
				if !isSentinel(err) {
					t.Fatalf("Decide(%#v): %v wraps no sentinel", cmd, err)
				}
				continue
			}
			for _, e := range evs {
				if ack := acknowledgement(e); ack != "" {
					// A device's acknowledgement is recorded in any state
					// after an attempt started (a late one included), only
					// from the message's app and one of its targets.
					if attempts == 0 || m.State == message.StateCancelled {
						t.Fatalf("%s before any attempt, in state %s", e.EventType(), m.State)
					}
					if a := commandApp(cmd); a != "" && a != m.AppID {
						t.Fatalf("%s from app %s", e.EventType(), a)
					}
					for _, id := range strings.Split(ack, ",") {
						if len(m.Targets) > 0 && !slices.Contains(m.Targets, id) {
							t.Fatalf("%s of %s, not a target of %v", e.EventType(), id, m.Targets)
						}
					}
				} else {
					if ended {
						t.Fatalf("%s after the message ended", e.EventType())
					}
					if _, resend := e.(message.ResendRequested); failed && !resend {
						t.Fatalf("%s after a final failure", e.EventType())
					}
				}
				switch e := e.(type) {
				case message.Sending:
					if m.Terminal() {
						t.Fatalf("Sending in terminal state %s", m.State)
					}
					if e.Attempt != attempts+1 {
						t.Fatalf("Sending attempt %d after %d", e.Attempt, attempts)
					}
					attempts = e.Attempt
					if !e.At.Before(m.ExpiresAt) {
						t.Fatalf("Sending at %v, expires at %v", e.At, m.ExpiresAt)
					}
				case message.Expired:
					if e.At.Before(m.ExpiresAt) {
						t.Fatalf("Expired at %v, expires at %v", e.At, m.ExpiresAt)
					}
				case message.ResendRequested:
					if m.State != message.StateSent && m.State != message.StateFailed {
						t.Fatalf("resend in state %s", m.State)
					}
					if !e.At.Before(m.ExpiresAt) {
						t.Fatalf("resend at %v, expires at %v", e.At, m.ExpiresAt)
					}
					if acksOnly {
						t.Fatal("resend after delivery")
					}
				case message.Failed:
					if m.State == message.StateFailed && (!e.Final || e.Attempt != m.Attempt) {
						t.Fatalf("%#v after a failure of attempt %d", e, m.Attempt)
					}
					if (e.Final && e.RetryAt != nil) || (!e.Final && e.Alert != "") {
						t.Fatalf("retry_at or alert on the wrong failure: %#v", e)
					}
					if e.Class != "" && e.Retryable != (e.Class == message.ClassTransient) {
						t.Fatalf("class %s, retryable %v", e.Class, e.Retryable)
					}
					if acksOnly {
						t.Fatal("failure after delivery")
					}
				case message.Delivered, message.DeliveredBatch, message.Opened:
				default:
					if acksOnly {
						t.Fatalf("%s after delivery", e.EventType())
					}
				}
				if e.EventType() != message.TypeAccepted && e.EventType() != message.TypeScheduled && m.State == message.StateNone {
					t.Fatalf("%s before Accepted", e.EventType())
				}
				checkRoundTrip(t, e)
				if err := m.Evolve(e); err != nil {
					t.Fatalf("Evolve rejects decided %#v: %v", e, err)
				}
				log = append(log, e)
				switch e := e.(type) {
				case message.Expired, message.Cancelled:
					ended = true
				case message.Failed:
					failed = e.Final
				case message.ResendRequested:
					failed = false
					if m.FinalFailure || m.Terminal() {
						t.Fatalf("state after a resend: %+v", m)
					}
				case message.Delivered, message.DeliveredBatch, message.Opened:
					acksOnly, failed = true, false
				}
				if m.FinalFailure != failed {
					t.Fatalf("final failure %v after %s", m.FinalFailure, e.EventType())
				}
				if (m.State == message.StateOpened || m.State == message.StateDelivered) != acksOnly {
					t.Fatalf("state %s after %s", m.State, e.EventType())
				}
			}
			if m.Version != len(log) {
				t.Fatalf("version %d, %d events", m.Version, len(log))
			}
			for id := range m.Opened {
				if _, ok := m.Delivered[id]; !ok {
					t.Fatalf("%s opened, not delivered", id)
				}
			}
			// Acknowledgements are idempotent.
			switch cmd.(type) {
			case message.RecordDelivered, message.RecordDeliveries, message.RecordOpened:
				again, err := message.Decide(&m, cmd, drawNow(t, now))
				if err != nil || len(again) != 0 {
					t.Fatalf("repeated %#v: %v, %v", cmd, again, err)
				}
			}
		}
		replayed, err := message.Replay(log)
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
		if !reflect.DeepEqual(replayed, m) {
			t.Fatalf("replay differs:\n got %#v\nwant %#v", replayed, m)
		}
		decoded := make([]message.Event, len(log))
		for i, e := range log {
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal %#v: %v", e, err)
			}
			if decoded[i], err = message.Decode(e.EventType(), b); err != nil {
				t.Fatalf("decode %s %s: %v", e.EventType(), b, err)
			}
		}
		replayed, err = message.Replay(decoded)
		if err != nil {
			t.Fatalf("Replay of decoded: %v", err)
		}
		if !reflect.DeepEqual(replayed, m) {
			t.Fatalf("replay of decoded events differs:\n got %#v\nwant %#v", replayed, m)
		}
	})
}

// acknowledgement returns the devices an acknowledgement or open names
// (comma-separated), or "" for any other event.
func acknowledgement(e message.Event) string {
	switch e := e.(type) {
	case message.Delivered:
		return e.DeviceID
	case message.DeliveredBatch:
		return strings.Join(e.DeviceIDs, ",")
	case message.Opened:
		return e.DeviceID
	}
	return ""
}

// commandApp is the app an acknowledging command names.
func commandApp(c message.Command) string {
	switch c := c.(type) {
	case message.RecordDelivered:
		return c.AppID
	case message.RecordDeliveries:
		return c.AppID
	case message.RecordOpened:
		return c.AppID
	}
	return ""
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func checkRoundTrip(t *rapid.T, e message.Event) {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal %#v: %v", e, err)
	}
	got, err := message.Decode(e.EventType(), b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("JSON round trip of %s:\n got %#v\nwant %#v", e.EventType(), got, e)
	}
}

// FuzzDecode: Decode never panics; what it accepts encodes and decodes
// again to the same JSON.
func FuzzDecode(f *testing.F) {
	types := append(message.EventTypes(), "message.unknown.v1")
	index := map[string]uint8{}
	for i, typ := range types {
		index[typ] = uint8(i)
	}
	for _, e := range sampleEvents() {
		b, _ := json.Marshal(e)
		f.Add(index[e.EventType()], b)
	}
	f.Add(uint8(0), []byte(`{"audience":{"tags":null},"data":null,"send_at":null}`))
	f.Add(uint8(1), []byte(`null`))
	f.Add(uint8(2), []byte(`{"attempt":1e400}`))
	f.Add(uint8(3), []byte(`{"at":"0000-01-01T00:00:00+23:59"}`))
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		typ := types[int(sel)%len(types)]
		e, err := message.Decode(typ, data)
		if err != nil {
			if e != nil {
				t.Fatalf("event %#v with error %v", e, err)
			}
			return
		}
		if e.EventType() != typ {
			t.Fatalf("Decode(%s) = %s", typ, e.EventType())
		}
		b, err := json.Marshal(e)
		if err != nil {
			return // e.g. a time JSON reads but cannot write; Decide never makes one
		}
		e2, err := message.Decode(typ, b)
		if err != nil {
			t.Fatalf("decode of encoded %s: %v", b, err)
		}
		b2, err := json.Marshal(e2)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %s vs %s (%v)", b, b2, err)
		}
	})
}
