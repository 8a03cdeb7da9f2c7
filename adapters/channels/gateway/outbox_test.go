package gatewaych_test

import (
	"slices"
	"testing"
	"time"

	gatewaych "github.com/pushledger/pushledger/adapters/channels/gateway"
	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/gateway/wire"
)

func newOutbox(t *testing.T) *gatewaych.Outbox {
	t.Helper()
	s, err := pebblekv.Open(pebblekv.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return gatewaych.NewOutbox(s)
}

func id(n byte) wire.MessageID { return wire.MessageID{15: n} }

func pending(t *testing.T, o *gatewaych.Outbox, app, device string, now time.Time) []byte {
	t.Helper()
	var got []byte
	if err := o.Pending(app, device, now, func(e gatewaych.Entry) bool {
		got = append(got, e.ID[15])
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestOutboxOrderExpiryAndAck(t *testing.T) {
	o := newOutbox(t)
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	put := func(device string, n byte, ttl time.Duration) {
		e := gatewaych.Entry{ID: id(n), Flags: wire.PushHighPriority, Payload: []byte(`{"n":1}`)}
		if ttl > 0 {
			e.ExpiresAt = now.Add(ttl)
		}
		if err := o.Put("app", []string{device}, e); err != nil {
			t.Fatal(err)
		}
	}
	put("d1", 3, time.Hour)
	put("d1", 1, time.Minute)
	put("d1", 2, 0)         // never expires
	put("d1", 3, time.Hour) // a retry of the same message: kept once
	put("d2", 9, time.Hour)
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{3, 1, 2}) {
		t.Fatalf("pending %v, want oldest first [3 1 2]", got)
	}
	var e gatewaych.Entry
	_ = o.Pending("app", "d1", now, func(x gatewaych.Entry) bool { e = x; return false })
	if e.Flags != wire.PushHighPriority || string(e.Payload) != `{"n":1}` || !e.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("entry %+v", e)
	}
	// Two minutes later message 1 has expired and is gone for good.
	if got := pending(t, o, "app", "d1", now.Add(2*time.Minute)); !slices.Equal(got, []byte{3, 2}) {
		t.Fatalf("after expiry %v", got)
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{3, 2}) {
		t.Fatalf("expired entry not removed: %v", got)
	}
	if err := o.Ack("app", "d1", []wire.MessageID{id(3), id(7)}); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{2}) {
		t.Fatalf("after ack %v", got)
	}
	if got := pending(t, o, "app", "d2", now); !slices.Equal(got, []byte{9}) {
		t.Fatalf("another device's outbox %v", got)
	}
	if got := pending(t, o, "other-app", "d1", now); len(got) != 0 {
		t.Fatalf("another app's outbox %v", got)
	}
}

func TestOutboxBoundPerDevice(t *testing.T) {
	o := newOutbox(t)
	o.MaxPerDevice = 3
	now := time.Now()
	for n := byte(1); n <= 5; n++ {
		if err := o.Put("app", []string{"d1"}, gatewaych.Entry{ID: id(n)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{3, 4, 5}) {
		t.Fatalf("bounded outbox %v, want the newest three", got)
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{3, 4, 5}) {
		t.Fatalf("dropped entries came back: %v", got)
	}
}

func TestOutboxBroadcasts(t *testing.T) {
	o := newOutbox(t)
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	if err := o.PutBroadcast("app", gatewaych.Entry{ID: id(1), ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := o.PutBroadcast("app", gatewaych.Entry{ID: id(2), ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := o.Put("app", []string{"d1"}, gatewaych.Entry{ID: id(5)}); err != nil {
		t.Fatal(err)
	}
	// A device's own pushes first, then the broadcasts.
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{5, 1, 2}) {
		t.Fatalf("d1 %v", got)
	}
	if err := o.Ack("app", "d1", []wire.MessageID{id(1), id(5)}); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{2}) {
		t.Fatalf("d1 after its acks %v", got)
	}
	if got := pending(t, o, "app", "d2", now); !slices.Equal(got, []byte{1, 2}) {
		t.Fatalf("d2 %v: another device's ack must not hide a broadcast", got)
	}
	if got := pending(t, o, "app", "d2", now.Add(2*time.Minute)); !slices.Equal(got, []byte{2}) {
		t.Fatalf("d2 after broadcast 1 expired %v", got)
	}
}

// TestOutboxSweep: expired pushes go away even for devices that never
// connect again, with their broadcasts' acknowledgements.
func TestOutboxSweep(t *testing.T) {
	o := newOutbox(t)
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for n := byte(1); n <= 3; n++ {
		if err := o.Put("app", []string{"gone"}, gatewaych.Entry{ID: id(n), ExpiresAt: now.Add(time.Duration(n) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.PutBroadcast("app", gatewaych.Entry{ID: id(9), ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack("app", "d1", []wire.MessageID{id(9)}); err != nil {
		t.Fatal(err)
	}
	n, err := o.Sweep(now.Add(150 * time.Second))
	if err != nil || n != 3 {
		t.Fatalf("swept %d (%v), want 3 (two pushes, one broadcast)", n, err)
	}
	if got := pending(t, o, "app", "gone", now); !slices.Equal(got, []byte{3}) {
		t.Fatalf("after the sweep %v, want [3]", got)
	}
	// The broadcast is gone, and so is d1's acknowledgement of it: a new
	// broadcast reusing nothing of it is pending for d1.
	if err := o.PutBroadcast("app", gatewaych.Entry{ID: id(9)}); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, o, "app", "d1", now); !slices.Equal(got, []byte{9}) {
		t.Fatalf("d1 %v: the old acknowledgement survived the sweep", got)
	}
	if n, err := o.Sweep(now.Add(150 * time.Second)); err != nil || n != 0 {
		t.Fatalf("second sweep removed %d (%v)", n, err)
	}
}
