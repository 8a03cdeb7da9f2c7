package projections

import (
	"context"
	"sync"
)

// progress is a position that moves forward and can be waited for.
type progress struct {
	mu      sync.Mutex
	pos     uint64
	changed chan struct{} // closed and replaced when pos moves
}

func newProgress(pos uint64) *progress {
	return &progress{pos: pos, changed: make(chan struct{})}
}

func (p *progress) get() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// set moves the position (to 0 on a reset) and wakes the waiters.
func (p *progress) set(pos uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos = pos
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait blocks until the position is at least pos.
func (p *progress) wait(ctx context.Context, pos uint64) error {
	for {
		p.mu.Lock()
		done, ch := p.pos >= pos, p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
