package commands_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/message"
)

// TestCachedMessagesSeeOtherWriters: two handlers on one ledger, each with
// its own cache of messages. What one appends, the other's next load and
// command see, although it holds the message cached from before.
func TestCachedMessagesSeeOtherWriters(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h1, h2 := newHandler(t, st, commands.Config{}), newHandler(t, st, commands.Config{})
	if _, _, err := h1.AcceptMessage(ctx, acceptCmd("m1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h2.Message(ctx, "m1", message.StartAttempt{Channel: "gateway"}); err != nil {
		t.Fatal(err)
	}
	// Refused from h1's cached state (accepted), allowed from the stream's.
	if _, _, err := h1.Message(ctx, "m1", message.RecordSent{Attempt: 1, Channel: "gateway"}); err != nil {
		t.Fatalf("h1 after h2 started the attempt: %v", err)
	}
	if _, _, err := h2.Message(ctx, "m1", message.RecordDeliveries{DeviceIDs: []string{"d0"}, Channel: "gateway"}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := h1.LoadMessage(ctx, "m1")
	if _, got := m.Delivered["d0"]; err != nil || !ok || m.State != message.StateDelivered || m.Version != 4 || !got {
		t.Fatalf("h1 after h2's delivery: %s v%d %v %v %v, want delivered to d0, v4", m.State, m.Version, m.Delivered, ok, err)
	}
}

// TestCachedMessagesAreNotShared: what a command returns is the caller's;
// changing it changes nothing the next command decides from.
func TestCachedMessagesAreNotShared(t *testing.T) {
	ctx := context.Background()
	h := newHandler(t, openLedger(t), commands.Config{})
	for _, c := range []message.Command{acceptCmd("m1"), message.StartAttempt{Channel: "gateway"}, message.RecordSent{Attempt: 1, Channel: "gateway"}} {
		if _, _, err := h.Message(ctx, "m1", c); err != nil {
			t.Fatal(err)
		}
	}
	m, _, err := h.Message(ctx, "m1", message.RecordDeliveries{DeviceIDs: []string{"d0"}, Channel: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	m.Delivered["d1"] = time.Now() // the caller's copy only
	m, res, err := h.Message(ctx, "m1", message.RecordDeliveries{DeviceIDs: []string{"d1"}, Channel: "gateway"})
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("delivery to d1: %d events, %v; want it recorded", len(res.Events), err)
	}
	if len(m.Delivered) != 2 {
		t.Fatalf("delivered %v, want d0 and d1", m.Delivered)
	}
}

func TestCacheKeepsTheLaterRevisionAndItsSize(t *testing.T) {
	c := commands.NewCache[string](3)
	c.Put("a", commands.Cached[string]{State: "a5", Rev: 5})
	c.Put("a", commands.Cached[string]{State: "a4", Rev: 4})
	if e, ok := c.Take("a"); !ok || e.State != "a5" {
		t.Fatalf("take a: %+v %v, want a5", e, ok)
	}
	if _, ok := c.Take("a"); ok {
		t.Fatal("a taken twice")
	}
	for i := range 10 {
		c.Put(fmt.Sprint(i), commands.Cached[string]{Rev: int64(i)})
		if c.Len() > 3 {
			t.Fatalf("%d entries, want at most 3", c.Len())
		}
	}
}
