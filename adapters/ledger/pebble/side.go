package pebbleledger

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// SidePrefix is the first byte of every key written through Side: the
// ledger never reads, writes or scans keys that begin with it.
const SidePrefix = 'n'

// Side is a key space beside the ledger in the ledger's Pebble database,
// for small records that must be durable before the appends made after
// them are acknowledged: the API's nonces, which must outlive a crash
// exactly when the request they came with had an effect.
//
// A record costs no fsync of its own. Apply writes it with pebble.NoSync:
// it is in the write-ahead log ahead of every batch the ledger's writer
// applies after it, and the WAL being sequential, the fsync that
// acknowledges the next append covers it. The wait Apply returns checks
// that such an fsync happened and forces one (a synced, empty WAL record)
// only when none did: a request that appended something waits for nothing
// more, one that did not pays for its own sync.
type Side struct{ s *Store }

// Side returns the store's side key space.
func (s *Store) Side() Side { return Side{s} }

// DB is the Pebble database, for reading side records (iterators bounded
// to keys that begin with SidePrefix) and deleting them (DeleteRange with
// pebble.NoSync: a deletion lost in a crash only keeps a record longer).
func (x Side) DB() *pebble.DB { return x.s.db }

// Apply writes b, whose keys must all begin with SidePrefix, and returns
// a wait that returns once b is durable (nil) or cannot be made so.
func (x Side) Apply(b *pebble.Batch) (wait func() error, err error) {
	s := x.s
	if !s.enter() {
		return nil, ledger.ErrClosed
	}
	defer s.ops.Done()
	if err := s.db.Apply(b, pebble.NoSync); err != nil {
		return nil, fmt.Errorf("pebbleledger: side record: %w", err)
	}
	// Every batch numbered above mark begins to apply after b is in the
	// WAL, so its fsync covers b.
	mark := s.applying.Load()
	return func() error {
		if s.commits.Load() > mark {
			return nil
		}
		if err := s.failure(); err != nil {
			return err
		}
		if !s.enter() {
			return ledger.ErrClosed
		}
		defer s.ops.Done()
		if err := s.db.LogData([]byte{0}, pebble.Sync); err != nil {
			return fmt.Errorf("pebbleledger: sync side record: %w", err)
		}
		return nil
	}, nil
}
