package signing

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// NonceStore remembers used nonces. It is declared here, where it is used.
type NonceStore interface {
	// Use records nonce for appKey until expires; returns false if it was
	// already recorded and not yet expired.
	//
	// Contract:
	//   - check-and-record is atomic: of concurrent calls with the same
	//     (appKey, nonce) at most one returns true while a record is live;
	//   - a record is live until the store's clock is after expires (a
	//     request whose timestamp is exactly on the window edge is still
	//     accepted by Verify, so the record must cover that instant too);
	//   - nonces of different app keys are independent;
	//   - an error means "could not decide" (the store is unavailable);
	//     Verify returns it wrapped, and the API answers 5xx.
	//   - it is called concurrently and must not retain its arguments beyond
	//     the strings it stores.
	Use(ctx context.Context, appKey, nonce string, expires time.Time) (bool, error)
}

var _ NonceStore = (*MemoryNonces)(nil)

const (
	nonceShards = 64 // power of two
	// evictPerUse bounds the expired entries one Use removes from its shard,
	// so no call pays for a large backlog at once (a clock jump, say) while
	// the backlog still drains faster than entries arrive.
	evictPerUse = 8
	// shrinkMin is the size below which a shard never rebuilds its map.
	shrinkMin = 1024
)

// MemoryNonces is an in-process NonceStore for a single API instance.
//
// Entries live in 64 shards chosen by a seeded hash of (app key, nonce),
// each guarded by its own mutex and holding a map plus a min-heap ordered
// by expiry. Every Use removes up to a few expired entries from the top of
// its shard's heap, so memory stays proportional to the number of live
// nonces (request rate × the time a nonce is remembered, at most twice the
// window) without a background goroutine. When a shard has shrunk to a
// quarter of its peak its map and heap are reallocated, so a burst does not
// pin memory forever. The zero value is not usable; call NewMemoryNonces.
type MemoryNonces struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [nonceShards]nonceShard
}

type nonceKey struct{ app, nonce string }

type nonceEntry struct {
	expires time.Time
	key     nonceKey
}

type nonceShard struct {
	mu   sync.Mutex
	live map[nonceKey]time.Time // -> expires; may hold expired entries until evicted
	heap []nonceEntry           // min-heap on expires; one entry per map insertion
	peak int                    // largest len(live) since the last rebuild
	_    [64]byte               // keep neighbouring shards' locks off one cache line
}

// NewMemoryNonces returns an empty store that reads the time from now
// (time.Now when nil). Use the same clock as the Verifier.
func NewMemoryNonces(now func() time.Time) *MemoryNonces {
	if now == nil {
		now = time.Now
	}
	m := &MemoryNonces{now: now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].live = make(map[nonceKey]time.Time)
	}
	return m
}

// Use implements NonceStore. It never returns an error and ignores ctx
// (it does not block beyond a shard mutex).
func (m *MemoryNonces) Use(_ context.Context, appKey, nonce string, expires time.Time) (bool, error) {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(appKey)
	h.WriteByte(0)
	h.WriteString(nonce)
	s := &m.shards[h.Sum64()&(nonceShards-1)]
	key := nonceKey{appKey, nonce}

	now := m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evict(now, evictPerUse)
	if exp, ok := s.live[key]; ok && !now.After(exp) {
		return false, nil
	}
	if now.After(expires) {
		// Already outside its life: nothing to remember. (Any stale entry
		// for key is left for eviction.)
		return true, nil
	}
	s.live[key] = expires
	s.push(nonceEntry{expires: expires, key: key})
	if len(s.live) > s.peak {
		s.peak = len(s.live)
	}
	return true, nil
}

// Len returns the number of remembered nonces, including expired ones not
// yet evicted.
func (m *MemoryNonces) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.live)
		s.mu.Unlock()
	}
	return n
}

// evict pops up to max expired heap entries and deletes the map entries they
// still own (a key re-used after expiry owns a newer heap entry).
func (s *nonceShard) evict(now time.Time, max int) {
	for range max {
		if len(s.heap) == 0 || !now.After(s.heap[0].expires) {
			break
		}
		e := s.pop()
		if exp, ok := s.live[e.key]; ok && exp.Equal(e.expires) {
			delete(s.live, e.key)
		}
	}
	if s.peak >= shrinkMin && len(s.live) < s.peak/4 {
		s.rebuild(now)
	}
}

// rebuild reallocates the map and heap at the current size, dropping every
// expired entry; it runs after at least 3/4 of the peak has been deleted, so
// its cost is amortised over those deletions.
func (s *nonceShard) rebuild(now time.Time) {
	n := 0
	for _, exp := range s.live {
		if !now.After(exp) {
			n++
		}
	}
	live := make(map[nonceKey]time.Time, 2*n)
	heap := make([]nonceEntry, 0, 2*n)
	for k, exp := range s.live {
		if now.After(exp) {
			continue
		}
		live[k] = exp
		heap = append(heap, nonceEntry{expires: exp, key: k})
	}
	s.live, s.heap, s.peak = live, heap, len(live)
	for i := len(s.heap)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}

func (s *nonceShard) push(e nonceEntry) {
	s.heap = append(s.heap, e)
	i := len(s.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s.heap[i].expires.Before(s.heap[p].expires) {
			break
		}
		s.heap[i], s.heap[p] = s.heap[p], s.heap[i]
		i = p
	}
}

func (s *nonceShard) pop() nonceEntry {
	top := s.heap[0]
	last := len(s.heap) - 1
	s.heap[0] = s.heap[last]
	s.heap[last] = nonceEntry{} // release the strings
	s.heap = s.heap[:last]
	if last > 0 {
		s.down(0)
	}
	return top
}

func (s *nonceShard) down(i int) {
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && s.heap[r].expires.Before(s.heap[l].expires) {
			c = r
		}
		if !s.heap[c].expires.Before(s.heap[i].expires) {
			return
		}
		s.heap[i], s.heap[c] = s.heap[c], s.heap[i]
		i = c
	}
}
