// Package projections builds pushledger's read models from the ledger: each
// projection folds a filtered catch-up subscription into a Store, writing
// its checkpoint in the same atomic batch as its data, so that after any
// crash it resumes exactly where its data stands. Read models are
// disposable: Rebuild replays them from position 0.
package projections

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// ErrNotFound is returned by Store.Get and by queries for missing keys.
var ErrNotFound = errors.New("projections: not found")

// Store holds read models. Implementations: adapters/kv/pebblekv.
type Store interface {
	// Get returns a copy of the value of key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Scan calls fn for keys in [lower, upper) in order (reverse: descending)
	// until fn returns false. k and v are valid only during the call.
	Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error
	// Update runs fn on a batch that reads its own writes and commits it
	// atomically when fn returns nil. Durability may be weaker than the
	// ledger's (read models are rebuildable), but a batch is all or nothing.
	Update(fn func(w Writer) error) error
	// DeletePrefix removes every key starting with prefix.
	DeletePrefix(prefix []byte) error
}

// Writer is a batch of a Store.Update.
type Writer interface {
	Get(key []byte) ([]byte, error)
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Projection folds events into a Store under its own key prefix.
type Projection interface {
	// Name identifies the projection and its checkpoint.
	Name() string
	// Prefix is the key prefix of all of its data (cleared by Rebuild).
	Prefix() []byte
	// Filter selects the events it folds.
	Filter() ledger.Filter
	// Apply folds events (in position order) into w.
	Apply(w Writer, events []ledger.RecordedEvent) error
}

// Runner keeps one projection up to date.
type Runner struct {
	p      Projection
	store  Store
	ledger ledger.Store
	log    *slog.Logger

	progress *progress
}

// NewRunner returns a runner of p over st, fed by l.
func NewRunner(p Projection, st Store, l ledger.Store, log *slog.Logger) (*Runner, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{p: p, store: st, ledger: l, log: log}
	pos, err := r.Checkpoint()
	if err != nil {
		return nil, err
	}
	r.progress = newProgress(pos)
	return r, nil
}

func checkpointKey(name string) []byte { return []byte("cp\x00" + name) }

// LoadCheckpoint reads the checkpoint named name from st (0 if none). Every
// ledger follower that keeps its position in a Store (projections, sagas)
// stores it this way.
func LoadCheckpoint(st Store, name string) (uint64, error) {
	v, err := st.Get(checkpointKey(name))
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("checkpoint %s: corrupt", name)
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetCheckpoint writes the checkpoint named name in w's batch.
func SetCheckpoint(w Writer, name string, pos uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], pos)
	return w.Set(checkpointKey(name), b[:])
}

// Checkpoint reads the projection's stored checkpoint (0 if none).
func (r *Runner) Checkpoint() (uint64, error) { return LoadCheckpoint(r.store, r.p.Name()) }

// Position is the position of the last event folded (or skipped by the
// filter up to the last batch).
func (r *Runner) Position() uint64 { return r.progress.get() }

// WaitFor blocks until the projection has folded every event up to pos.
func (r *Runner) WaitFor(ctx context.Context, pos uint64) error {
	return r.progress.wait(ctx, pos)
}

// CatchUp folds stored events until the projection has reached the ledger's
// last position at the time of the call, calling progress after each batch
// and once at the end with pos == last.
// It must not run concurrently with Run.
func (r *Runner) CatchUp(ctx context.Context, progress func(pos, last uint64)) error {
	last, err := r.ledger.LastPosition(ctx)
	if err != nil {
		return err
	}
	for r.Position() < last {
		evs, err := r.ledger.ReadAll(ctx, r.Position(), ledger.Forwards, catchUpBatch, r.p.Filter())
		if err != nil {
			return fmt.Errorf("projection %s: %w", r.p.Name(), err)
		}
		evs = trimAfter(evs, last)
		if len(evs) == 0 {
			// Nothing more of ours up to last: the checkpoint moves to last.
			if err := r.commit(nil, last); err != nil {
				return err
			}
			break
		}
		if err := r.commit(evs, evs[len(evs)-1].Position); err != nil {
			return err
		}
		if progress != nil && r.Position() < last {
			progress(r.Position(), last)
		}
	}
	if progress != nil {
		progress(last, last)
	}
	return nil
}

const catchUpBatch = 1024

func trimAfter(evs []ledger.RecordedEvent, last uint64) []ledger.RecordedEvent {
	for i, e := range evs {
		if e.Position > last {
			return evs[:i]
		}
	}
	return evs
}

// Run folds events as they are appended, until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	sub, err := r.ledger.Subscribe(ctx, r.Position(), r.p.Filter())
	if err != nil {
		return fmt.Errorf("projection %s: subscribe: %w", r.p.Name(), err)
	}
	defer sub.Close()
	for {
		evs, err := sub.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("projection %s: %w", r.p.Name(), err)
		}
		if len(evs) == 0 {
			continue
		}
		if err := r.commit(evs, evs[len(evs)-1].Position); err != nil {
			return err
		}
	}
}

// commit folds evs and moves the checkpoint to pos in one atomic batch.
func (r *Runner) commit(evs []ledger.RecordedEvent, pos uint64) error {
	err := r.store.Update(func(w Writer) error {
		if err := r.p.Apply(w, evs); err != nil {
			return err
		}
		return SetCheckpoint(w, r.p.Name(), pos)
	})
	if err != nil {
		return fmt.Errorf("projection %s at %d: %w", r.p.Name(), pos, err)
	}
	r.progress.set(pos)
	return nil
}

// Reset deletes the projection's data and checkpoint, for a rebuild. The
// runner must not be running.
func (r *Runner) Reset() error {
	if err := r.store.DeletePrefix(r.p.Prefix()); err != nil {
		return err
	}
	if err := r.store.Update(func(w Writer) error { return w.Delete(checkpointKey(r.p.Name())) }); err != nil {
		return err
	}
	r.progress.set(0)
	return nil
}
