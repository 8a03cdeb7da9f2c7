package pebblekv_test

import (
	"context"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
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
	n, err := pebblekv.NewNonces(s, clock)
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
	n, err = pebblekv.NewNonces(s, clock)
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
