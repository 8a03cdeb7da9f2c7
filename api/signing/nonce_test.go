package signing_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

func TestMemoryNoncesUse(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Unix(1_000_000, 0))
	m := signing.NewMemoryNonces(clock.Now)
	use := func(app, nonce string, expires time.Time) bool {
		t.Helper()
		ok, err := m.Use(ctx, app, nonce, expires)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	exp := clock.Now().Add(10 * time.Second)
	if !use("a", "n1", exp) {
		t.Fatal("first use refused")
	}
	if use("a", "n1", exp) {
		t.Fatal("second use accepted")
	}
	if !use("b", "n1", exp) {
		t.Fatal("same nonce for another app refused")
	}
	// App key and nonce are not concatenated ambiguously.
	if !use("a\x00n", "1", exp) || !use("a", "\x00n1", exp) {
		t.Fatal("distinct (app, nonce) pairs collided")
	}

	clock.Advance(10 * time.Second) // now == expires: still remembered
	if use("a", "n1", exp.Add(time.Hour)) {
		t.Fatal("accepted at the expiry instant")
	}
	clock.Advance(time.Nanosecond)
	if !use("a", "n1", clock.Now().Add(10*time.Second)) {
		t.Fatal("refused after expiry")
	}
	if use("a", "n1", clock.Now().Add(10*time.Second)) {
		t.Fatal("re-recorded nonce accepted twice")
	}

	// An already expired record is not kept.
	before := m.Len()
	for range 2 { // an already expired record is accepted each time
		if !use("a", "past", clock.Now().Add(-time.Second)) {
			t.Fatal("expired use refused")
		}
	}
	// (Eviction may have removed other expired entries meanwhile.)
	if m.Len() > before {
		t.Fatalf("Len = %d after expired uses, want at most %d", m.Len(), before)
	}
}

// TestMemoryNoncesBounded inserts many nonces with an advancing clock and
// checks that the store holds about rate × lifetime entries, not all of
// them.
func TestMemoryNoncesBounded(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Unix(1_000_000, 0))
	m := signing.NewMemoryNonces(clock.Now)
	const (
		total    = 200_000
		step     = time.Millisecond // 1000 nonces/s
		lifetime = 2 * time.Second  // so about 2000 live at a time
	)
	live := int(lifetime / step)
	maxLen := 0
	for i := range total {
		// Expiries out of insertion order, as with client clock skew.
		skew := time.Duration(i%7) * 100 * time.Millisecond
		ok, err := m.Use(ctx, "app", "nonce-"+strconv.Itoa(i), clock.Now().Add(lifetime-skew))
		if err != nil || !ok {
			t.Fatalf("Use %d = %v, %v", i, ok, err)
		}
		maxLen = max(maxLen, m.Len())
		clock.Advance(step)
	}
	// Per shard, eviction trails insertion by at most a few entries.
	if limit := live + live/2; maxLen > limit {
		t.Fatalf("store grew to %d entries; want at most %d (about %d live)", maxLen, limit, live)
	}
	if maxLen < live/2 {
		t.Fatalf("store held at most %d entries; expected about %d live, is it forgetting live nonces?", maxLen, live)
	}

	// After a burst the store shrinks back once traffic continues.
	clock.Advance(time.Hour)
	for i := range 5000 {
		if _, err := m.Use(ctx, "app", "after-"+strconv.Itoa(i), clock.Now().Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Millisecond)
	}
	if n := m.Len(); n > 200 {
		t.Fatalf("Len = %d after the burst expired, want small", n)
	}
}

func TestMemoryNoncesConcurrent(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Unix(1_000_000, 0))
	m := signing.NewMemoryNonces(clock.Now)
	exp := clock.Now().Add(time.Minute)
	const nonces, workers = 500, 4
	var accepted [nonces]atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range nonces {
				ok, err := m.Use(ctx, "app", "n"+strconv.Itoa(i), exp)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					accepted[i].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for i := range accepted {
		if n := accepted[i].Load(); n != 1 {
			t.Fatalf("nonce %d accepted %d times", i, n)
		}
	}
}
