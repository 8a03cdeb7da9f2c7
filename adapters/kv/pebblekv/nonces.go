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
// also written to a NonceLog, which makes it durable before the request is
// acknowledged, and the unexpired ones are reloaded at start. When ctx
// carries a signing.Barrier, Use returns once the record is written and
// leaves the wait for its durability to the Barrier, so the request is
// handled meanwhile.
type Nonces struct {
	mem     *signing.MemoryNonces
	log     NonceLog
	now     func() time.Time
	inserts atomic.Uint64
}

var _ signing.NonceStore = (*Nonces)(nil)

// NonceLog is where Nonces keeps its records: a Pebble database whose keys
// beginning with "nn\x00" are the nonces', and how a record is made
// durable. The embedded platform keeps them beside the ledger
// (pebbleledger.Side): the fsync of the request's own append covers its
// nonce. Store.NonceLog keeps them in a Store of their own, synced.
type NonceLog interface {
	DB() *pebble.DB
	// Apply writes b and returns a wait that returns once b is durable.
	Apply(b *pebble.Batch) (wait func() error, err error)
}

// NonceLog returns s as a NonceLog whose records are fsynced (Pebble
// groups the syncs of concurrent requests).
func (s *Store) NonceLog() NonceLog { return syncedLog{s.db} }

type syncedLog struct{ db *pebble.DB }

func (l syncedLog) DB() *pebble.DB { return l.db }

// Apply uses Pebble's ApplyNoSyncWait (marked experimental by Pebble;
// CockroachDB pipelines its log writes with it).
func (l syncedLog) Apply(b *pebble.Batch) (func() error, error) {
	if err := l.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return nil, err
	}
	return b.SyncWait, nil
}

// noncePrefix begins with pebbleledger.SidePrefix ('n'): a NonceLog beside
// the ledger keeps them in the key space the ledger leaves alone.
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

// NewNonces loads the unexpired nonces of log and deletes the expired ones.
func NewNonces(log NonceLog, now func() time.Time) (*Nonces, error) {
	if now == nil {
		now = time.Now
	}
	n := &Nonces{mem: signing.NewMemoryNonces(now), log: log, now: now}
	if err := n.sweep(); err != nil {
		return nil, err
	}
	lower := nonceKey(now(), "", "")
	it, err := log.DB().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte("nn\x01")})
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
	return n.log.DB().DeleteRange([]byte(noncePrefix), nonceKey(n.now(), "", ""), pebble.NoSync)
}

// Use implements signing.NonceStore.
func (n *Nonces) Use(ctx context.Context, appKey, nonce string, expires time.Time) (bool, error) {
	fresh, err := n.mem.Use(ctx, appKey, nonce, expires)
	if err != nil || !fresh {
		return fresh, err
	}
	b := n.log.DB().NewBatch()
	_ = b.Set(nonceKey(expires, appKey, nonce), nil, nil)
	wait, err := n.log.Apply(b)
	if err != nil {
		_ = b.Close()
		return false, fmt.Errorf("pebblekv: record nonce: %w", err)
	}
	done := func() error {
		err := wait()
		_ = b.Close()
		if err != nil {
			return fmt.Errorf("pebblekv: sync nonce: %w", err)
		}
		return nil
	}
	if bar := signing.BarrierFrom(ctx); bar != nil {
		// The request is handled meanwhile and waits before it is
		// acknowledged.
		bar.Defer(done)
	} else if err := done(); err != nil {
		return false, err
	}
	if n.inserts.Add(1)%4096 == 0 {
		if err := n.sweep(); err != nil {
			return true, nil // the nonce is recorded; a failed sweep is retried later
		}
	}
	return true, nil
}

// MoveNonces moves the nonce records kept in from (by earlier releases) to
// to, durably, and deletes them from from. Call it before NewNonces on to;
// it does nothing when from holds none.
func MoveNonces(from *Store, to NonceLog) error {
	it, err := from.db.NewIter(&pebble.IterOptions{LowerBound: []byte(noncePrefix), UpperBound: []byte("nn\x01")})
	if err != nil {
		return err
	}
	b := to.DB().NewBatch()
	defer b.Close()
	for ok := it.First(); ok; ok = it.Next() {
		_ = b.Set(it.Key(), nil, nil)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebblekv: move nonces: %w", err)
	}
	if b.Empty() {
		return nil
	}
	wait, err := to.Apply(b)
	if err == nil {
		err = wait()
	}
	if err != nil {
		return fmt.Errorf("pebblekv: move nonces: %w", err)
	}
	return from.db.DeleteRange([]byte(noncePrefix), []byte("nn\x01"), pebble.Sync)
}
