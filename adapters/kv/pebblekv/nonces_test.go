package pebblekv_test

import (
	"context"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/api/signing"
)

func TestNoncesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	ctx := context.Background()

	s, err := pebblekv.Open(pebblekv.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	n, err := pebblekv.NewNonces(s.NonceLog(), clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		app, nonce string
		ttl        time.Duration
		want       bool
	}{
		{"k1", "nonce-aaaaaaaaaaaa", 300 * time.Second, true},
		{"k1", "nonce-aaaaaaaaaaaa", 300 * time.Second, false}, // replay
		{"k2", "nonce-aaaaaaaaaaaa", 300 * time.Second, true},  // other app
		{"k1", "nonce-short-lived", 10 * time.Second, true},
	} {
		got, err := n.Use(ctx, c.app, c.nonce, now.Add(c.ttl))
		if err != nil || got != c.want {
			t.Fatalf("Use(%s, %s) = %v, %v; want %v", c.app, c.nonce, got, err, c.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart 60 s later: the long-lived nonces are still refused,
	// the expired one is forgotten.
	now = now.Add(60 * time.Second)
	s, err = pebblekv.Open(pebblekv.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err = pebblekv.NewNonces(s.NonceLog(), clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		app, nonce string
		want       bool
	}{
		{"k1", "nonce-aaaaaaaaaaaa", false},
		{"k2", "nonce-aaaaaaaaaaaa", false},
		{"k1", "nonce-short-lived", true},
		{"k3", "nonce-aaaaaaaaaaaa", true},
	} {
		got, err := n.Use(ctx, c.app, c.nonce, now.Add(300*time.Second))
		if err != nil || got != c.want {
			t.Fatalf("after reopen Use(%s, %s) = %v, %v; want %v", c.app, c.nonce, got, err, c.want)
		}
	}
}

// TestNoncesBarrier: with a signing.Barrier in the context, Use returns
// before the sync and the barrier's Wait makes the record durable.
func TestNoncesBarrier(t *testing.T) {
	dir := t.TempDir()
	s, err := pebblekv.Open(pebblekv.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	n, err := pebblekv.NewNonces(s.NonceLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, bar := signing.WithBarrier(context.Background())
	exp := time.Now().Add(time.Minute)
	if ok, err := n.Use(ctx, "k", "nonce-with-barrier", exp); !ok || err != nil {
		t.Fatalf("Use = %v, %v", ok, err)
	}
	if ok, _ := n.Use(ctx, "k", "nonce-with-barrier", exp); ok {
		t.Fatal("replay accepted before the sync")
	}
	if err := bar.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = pebblekv.Open(pebblekv.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err = pebblekv.NewNonces(s.NonceLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := n.Use(context.Background(), "k", "nonce-with-barrier", exp); ok {
		t.Fatal("nonce forgotten after reopen")
	}
}

// TestMoveNonces: nonces recorded in the read-model store (before nonces
// had a store of their own) still refuse replays after the move.
func TestMoveNonces(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	ctx := context.Background()
	old, err := pebblekv.Open(pebblekv.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	n, err := pebblekv.NewNonces(old.NonceLog(), clock)
	if err != nil {
		t.Fatal(err)
	}
	if fresh, err := n.Use(ctx, "app", "nonce-1", now.Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("first use: %v %v", fresh, err)
	}
	moved, err := pebblekv.Open(pebblekv.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer moved.Close()
	if err := pebblekv.MoveNonces(old, moved.NonceLog()); err != nil {
		t.Fatal(err)
	}
	n2, err := pebblekv.NewNonces(moved.NonceLog(), clock)
	if err != nil {
		t.Fatal(err)
	}
	if fresh, err := n2.Use(ctx, "app", "nonce-1", now.Add(time.Minute)); err != nil || fresh {
		t.Fatalf("replay after the move accepted: %v %v", fresh, err)
	}
	n3, err := pebblekv.NewNonces(old.NonceLog(), clock)
	if err != nil {
		t.Fatal(err)
	}
	if fresh, _ := n3.Use(ctx, "app", "nonce-1", now.Add(time.Minute)); !fresh {
		t.Fatal("the nonce is still in the old store")
	}
}
