package pgleases_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pgleases "github.com/pushledger/pushledger/adapters/leases/postgres"
	"github.com/pushledger/pushledger/adapters/servicetest"
)

// Open returns a lease table in a schema of its own on the test database
// (PUSHLEDGER_POSTGRES_URL).
func Open(t testing.TB) *pgleases.Leases {
	t.Helper()
	l, err := pgleases.New(context.Background(), servicetest.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func TestAcquireRenewRelease(t *testing.T) {
	l := Open(t)
	ctx := context.Background()
	must := func(ok bool, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !must(l.Acquire(ctx, 1, "a", time.Minute)) {
		t.Fatal("a could not take a free partition")
	}
	if must(l.Acquire(ctx, 1, "b", time.Minute)) {
		t.Fatal("b took a's live lease")
	}
	if !must(l.Acquire(ctx, 1, "a", time.Minute)) {
		t.Fatal("a could not renew")
	}
	if n, err := l.Owners(ctx); err != nil || n != 2 {
		t.Fatalf("owners %d (%v), want 2 (b asked)", n, err)
	}
	if err := l.Release(ctx, 1, "b"); err != nil { // not b's: a no-op
		t.Fatal(err)
	}
	if must(l.Acquire(ctx, 1, "b", time.Minute)) {
		t.Fatal("b's release of a's lease freed it")
	}
	if err := l.Release(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	if !must(l.Acquire(ctx, 1, "b", time.Minute)) {
		t.Fatal("b could not take a released partition")
	}
}

// TestExpiredLeaseIsTakenOver: a lease that runs out (its owner stopped
// renewing) goes to the next owner that asks; the database's clock judges.
func TestExpiredLeaseIsTakenOver(t *testing.T) {
	l := Open(t)
	ctx := context.Background()
	if ok, err := l.Acquire(ctx, 7, "a", 200*time.Millisecond); err != nil || !ok {
		t.Fatalf("a: %v %v", ok, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := l.Acquire(ctx, 7, "b", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never took the expired lease")
		}
		time.Sleep(20 * time.Millisecond) // polling the database's clock
	}
	if ok, _ := l.Acquire(ctx, 7, "a", time.Minute); ok {
		t.Fatal("a took back b's live lease")
	}
}

// TestOneHolderUnderContention: owners racing for the same partitions each
// get a disjoint share, and together all of them.
func TestOneHolderUnderContention(t *testing.T) {
	l := Open(t)
	ctx := context.Background()
	const owners, parts = 6, 32
	var mu sync.Mutex
	holders := map[int][]string{}
	var wg sync.WaitGroup
	for o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprint("owner-", o)
			for p := range parts {
				ok, err := l.Acquire(ctx, p, owner, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					holders[p] = append(holders[p], owner)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for p := range parts {
		if len(holders[p]) != 1 {
			t.Errorf("partition %d taken by %v, want exactly one owner", p, holders[p])
		}
	}
}
