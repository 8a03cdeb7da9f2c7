package sagas

import (
	"context"
	"sync"
	"time"
)

// Leases shares the partitions of the delivery work among runners. A runner
// holds a partition while its lease is live and renews it well before it
// ends; a partition whose lease ran out may be taken by another runner.
//
// A lease is an efficiency, not the lock: two runners that both believe they
// hold a partition (a paused runner whose lease ran out) still cannot both
// start attempt n of a message, because each start is appended at the
// expected revision the runner decided from.
type Leases interface {
	// Acquire takes partition part for owner until now+ttl, or renews the
	// lease owner holds. It reports whether owner holds it now.
	Acquire(ctx context.Context, part int, owner string, ttl time.Duration) (bool, error)
	// Release gives up owner's lease of part (no-op when owner does not
	// hold it).
	Release(ctx context.Context, part int, owner string) error
	// Owners counts the owners that hold at least one live lease, or that
	// asked for one within ttl (so that a newcomer gets a fair share).
	Owners(ctx context.Context) (int, error)
}

// MemoryLeases is the lease table of runners in one process (the embedded
// profile). Runners on several nodes share one on PostgreSQL
// (adapters/leases/postgres).
type MemoryLeases struct {
	now func() time.Time

	mu     sync.Mutex
	leases map[int]lease
	seen   map[string]time.Time // owner -> live until
}

type lease struct {
	owner string
	until time.Time
}

// NewMemoryLeases returns an empty table on clock now (time.Now when nil).
func NewMemoryLeases(now func() time.Time) *MemoryLeases {
	if now == nil {
		now = time.Now
	}
	return &MemoryLeases{now: now, leases: map[int]lease{}, seen: map[string]time.Time{}}
}

// Acquire implements Leases.
func (m *MemoryLeases) Acquire(_ context.Context, part int, owner string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.seen[owner] = now.Add(ttl)
	l, ok := m.leases[part]
	if ok && l.owner != owner && now.Before(l.until) {
		return false, nil
	}
	m.leases[part] = lease{owner: owner, until: now.Add(ttl)}
	return true, nil
}

// Release implements Leases.
func (m *MemoryLeases) Release(_ context.Context, part int, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[part]; ok && l.owner == owner {
		delete(m.leases, part)
	}
	return nil
}

// Owners implements Leases.
func (m *MemoryLeases) Owners(context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	n := 0
	for o, until := range m.seen {
		if now.Before(until) {
			n++
		} else {
			delete(m.seen, o)
		}
	}
	return n, nil
}
