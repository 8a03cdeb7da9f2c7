package signing

import (
	"context"
	"errors"
	"sync"
)

// Barrier collects what a request must wait for before it is acknowledged.
// A NonceStore may return from Use before its record is durable when the
// context carries a Barrier: it defers the wait to the Barrier instead, so
// that the record's sync runs while the request is being handled. Whoever
// attached the Barrier must call Wait before sending any response.
type Barrier struct {
	mu    sync.Mutex
	waits []func() error
	err   error
	done  bool
}

type barrierKey struct{}

// WithBarrier returns ctx carrying a new Barrier.
func WithBarrier(ctx context.Context) (context.Context, *Barrier) {
	b := &Barrier{}
	return context.WithValue(ctx, barrierKey{}, b), b
}

// BarrierFrom returns the Barrier of ctx, or nil.
func BarrierFrom(ctx context.Context) *Barrier {
	b, _ := ctx.Value(barrierKey{}).(*Barrier)
	return b
}

// Defer adds a wait. After Wait has run, wait runs at once, its error kept.
func (b *Barrier) Defer(wait func() error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		b.err = errors.Join(b.err, wait())
		return
	}
	b.waits = append(b.waits, wait)
}

// Wait runs every deferred wait once and returns their joined errors; later
// calls return the same result.
func (b *Barrier) Wait() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		for _, w := range b.waits {
			b.err = errors.Join(b.err, w())
		}
		b.waits = nil
	}
	return b.err
}
