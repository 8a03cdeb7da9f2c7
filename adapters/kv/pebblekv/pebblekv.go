// Package pebblekv stores pushledger's read models (and other rebuildable
// state) in a Pebble database. Read-model updates are not fsynced: a crash
// may lose the last batches, whole (data and checkpoint together), and the
// projection folds them again from the ledger. Nonces (nonces.go) are the
// exception: they are synced.
package pebblekv

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/projections"
)

// Config of a Store.
type Config struct {
	// Dir is the database directory (required).
	Dir string
	// FS is the file system; default the operating system's (tests pass an
	// in-memory one).
	FS vfs.FS
	// Sync makes every Update fsync. Default false (see the package doc).
	Sync bool
	// CacheBytes is the block cache size. Default 64 MiB.
	CacheBytes int64
}

// Store is a projections.Store on Pebble.
type Store struct {
	db   *pebble.DB
	opts *pebble.WriteOptions
}

var _ projections.Store = (*Store)(nil)

// Open opens (creating if needed) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("pebblekv: Dir is required")
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	// 16 MiB memtables (4 MiB by default): the read models' keys are
	// random, and fewer, larger L0 tables mean less compaction per write.
	// Not larger: this store takes most of the writes, and flushing a
	// 64 MiB memtable took one of two cores for long enough to triple the
	// gateway's unicast p99 (BenchmarkGateway/unicast at 2,000/s).
	opts := &pebble.Options{FS: cfg.FS, Logger: quietLogger{}, CacheSize: cfg.CacheBytes, FormatMajorVersion: pebble.FormatNewest, MemTableSize: 16 << 20}
	// Bloom filters on every level: projections look up keys of new
	// messages and devices, which are mostly absent.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("pebblekv: open %s: %w", cfg.Dir, err)
	}
	w := pebble.NoSync
	if cfg.Sync {
		w = pebble.Sync
	}
	return &Store{db: db, opts: w}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Get implements projections.Store.
func (s *Store) Get(key []byte) ([]byte, error) {
	return get(s.db, key)
}

func get(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, projections.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	return out, closer.Close()
}

// Scan implements projections.Store.
func (s *Store) Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	if reverse {
		for ok := it.Last(); ok && fn(it.Key(), it.Value()); ok = it.Prev() {
		}
	} else {
		for ok := it.First(); ok && fn(it.Key(), it.Value()); ok = it.Next() {
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// Update implements projections.Store.
func (s *Store) Update(fn func(w projections.Writer) error) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	if err := fn(writer{b}); err != nil {
		return err
	}
	return b.Commit(s.opts)
}

// DeletePrefix implements projections.Store.
func (s *Store) DeletePrefix(prefix []byte) error {
	return s.db.DeleteRange(prefix, projections.PrefixEnd(prefix), s.opts)
}

type writer struct{ b *pebble.Batch }

func (w writer) Get(key []byte) ([]byte, error) { return get(w.b, key) }
func (w writer) Set(k, v []byte) error          { return w.b.Set(k, v, nil) }
func (w writer) Delete(k []byte) error          { return w.b.Delete(k, nil) }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
