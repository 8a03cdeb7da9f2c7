package pebblekv

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pushledger/pushledger/api/signing"
)

// Nonces is a signing.NonceStore that remembers nonces across restarts, so
// that a request captured before a crash cannot be replayed after it within
// the timestamp window. Decisions are made in memory; each accepted nonce is
// also written to Pebble with fsync (Pebble groups the syncs of concurrent
// requests; without the sync a kill -9 can lose the record, as Pebble's log
// is written by a background flusher), and the unexpired ones are reloaded
// at start. When ctx carries a signing.Barrier, Use returns once the record
// is applied and leaves the wait for its sync to the Barrier (Pebble's
// ApplyNoSyncWait, marked experimental by Pebble; CockroachDB pipelines its
// log writes with it).
type Nonces struct {
	mem     *signing.MemoryNonces
	db      *pebble.DB
	now     func() time.Time
	inserts atomic.Uint64
}

var _ signing.NonceStore = (*Nonces)(nil)

const noncePrefix = "nn\x00"

// nonceKey sorts by expiry, so expired nonces are one range to delete.
func nonceKey(expires time.Time, appKey, nonce string) []byte {
	k := make([]byte, 0, len(noncePrefix)+8+len(appKey)+1+len(nonce))
	k = append(k, noncePrefix...)
	k = binary.BigEndian.AppendUint64(k, uint64(expires.UnixNano()))
	k = append(k, appKey...)
	k = append(k, 0)
	return append(k, nonce...)
}

// NewNonces loads the unexpired nonces of s and deletes the expired ones.
func NewNonces(s *Store, now func() time.Time) (*Nonces, error) {
	if now == nil {
		now = time.Now
	}
	n := &Nonces{mem: signing.NewMemoryNonces(now), db: s.db, now: now}
	if err := n.sweep(); err != nil {
		return nil, err
	}
	lower := nonceKey(now(), "", "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte("nn\x01")})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(noncePrefix):]
		if len(k) < 9 {
			continue
		}
		exp := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
		rest := k[8:]
		for i, c := range rest {
			if c == 0 {
				if _, err := n.mem.Use(ctx, string(rest[:i]), string(rest[i+1:]), exp); err != nil {
					_ = it.Close()
					return nil, err
				}
				break
			}
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("pebblekv: load nonces: %w", err)
	}
	return n, nil
}

// sweep deletes the records of expired nonces.
func (n *Nonces) sweep() error {
	return n.db.DeleteRange([]byte(noncePrefix), nonceKey(n.now(), "", ""), pebble.NoSync)
}

// Use implements signing.NonceStore.
func (n *Nonces) Use(ctx context.Context, appKey, nonce string, expires time.Time) (bool, error) {
	fresh, err := n.mem.Use(ctx, appKey, nonce, expires)
	if err != nil || !fresh {
		return fresh, err
	}
	b := n.db.NewBatch()
	_ = b.Set(nonceKey(expires, appKey, nonce), nil, nil)
	if bar := signing.BarrierFrom(ctx); bar != nil {
		// The sync runs while the request is handled; the request waits
		// for it before it is acknowledged.
		if err := n.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
			_ = b.Close()
			return false, fmt.Errorf("pebblekv: record nonce: %w", err)
		}
		bar.Defer(func() error {
			err := b.SyncWait()
			_ = b.Close()
			if err != nil {
				return fmt.Errorf("pebblekv: sync nonce: %w", err)
			}
			return nil
		})
	} else {
		err := n.db.Apply(b, pebble.Sync)
		_ = b.Close()
		if err != nil {
			return false, fmt.Errorf("pebblekv: record nonce: %w", err)
		}
	}
	if n.inserts.Add(1)%4096 == 0 {
		if err := n.sweep(); err != nil {
			return true, nil // the nonce is recorded; a failed sweep is retried later
		}
	}
	return true, nil
}

// MoveNonces moves the nonce records kept in from (before nonces had a
// store of their own) to to, synced, and deletes them from from. Call it
// before NewNonces on to; it does nothing when from holds none.
func MoveNonces(from, to *Store) error {
	it, err := from.db.NewIter(&pebble.IterOptions{LowerBound: []byte(noncePrefix), UpperBound: []byte("nn\x01")})
	if err != nil {
		return err
	}
	b := to.db.NewBatch()
	for ok := it.First(); ok; ok = it.Next() {
		_ = b.Set(it.Key(), nil, nil)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebblekv: move nonces: %w", err)
	}
	if b.Empty() {
		return nil
	}
	if err := to.db.Apply(b, pebble.Sync); err != nil {
		return fmt.Errorf("pebblekv: move nonces: %w", err)
	}
	return from.db.DeleteRange([]byte(noncePrefix), []byte("nn\x01"), pebble.Sync)
}
