package projections

import (
	"context"
	"fmt"
	"sync"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/app"
)

// Apps is the app directory: every app's current state, in memory, by id
// and by app key. Apps are few and their events rare, so the directory is
// rebuilt from the ledger at every start instead of being stored.
type Apps struct {
	ledger ledger.Store

	mu       sync.RWMutex
	byID     map[string]*app.App
	byKey    map[string]string
	progress *progress
}

// NewApps returns an empty directory fed by l (call Run).
func NewApps(l ledger.Store) *Apps {
	return &Apps{ledger: l, byID: map[string]*app.App{}, byKey: map[string]string{}, progress: newProgress(0)}
}

// Run follows the ledger's app streams from the beginning until ctx ends.
func (d *Apps) Run(ctx context.Context) error {
	sub, err := d.ledger.Subscribe(ctx, 0, ledger.Filter{StreamPrefixes: []string{app.StreamPrefix}})
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		evs, err := sub.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("app directory: %w", err)
		}
		if err := d.apply(evs); err != nil {
			return err
		}
	}
}

func (d *Apps) apply(evs []ledger.RecordedEvent) error {
	if len(evs) == 0 {
		return nil
	}
	if err := d.fold(evs); err != nil {
		return err
	}
	d.progress.set(evs[len(evs)-1].Position)
	return nil
}

func (d *Apps) fold(evs []ledger.RecordedEvent) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, re := range evs {
		e, err := app.Decode(re.Type, re.Data)
		if err != nil {
			return err
		}
		id := re.Stream[len(app.StreamPrefix):]
		old := d.byID[id]
		var next app.App
		if old != nil {
			next = *old // Evolve copies a map before changing it
		}
		if err := next.Evolve(e); err != nil {
			return fmt.Errorf("%s@%d: %w", re.Stream, re.Revision, err)
		}
		d.byID[id] = &next // readers hold the old pointer safely
		d.byKey[next.Key] = id
	}
	return nil
}

// ByID returns app id. The returned app must not be modified.
func (d *Apps) ByID(id string) (*app.App, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	a, ok := d.byID[id]
	return a, ok
}

// ByKey returns the app with app key k. The returned app must not be modified.
func (d *Apps) ByKey(k string) (*app.App, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	a, ok := d.byID[d.byKey[k]]
	return a, ok
}

// List returns every app.
func (d *Apps) List() []*app.App {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]*app.App, 0, len(d.byID))
	for _, a := range d.byID {
		out = append(out, a)
	}
	return out
}

// WaitFor blocks until the directory has folded the app events up to pos.
func (d *Apps) WaitFor(ctx context.Context, pos uint64) error {
	return d.progress.wait(ctx, pos)
}
