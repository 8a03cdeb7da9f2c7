package sagas_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/sagas"
)

// BenchmarkDecisions measures the delivery saga end to end: b.N messages
// are accepted (not timed), then one runner, started cold, takes each
// from accepted to sent through a channel that accepts everything. It
// reports messages delivered and decision rounds made per second, with the
// stores in memory and on disk (every ledger append fsynced).
func BenchmarkDecisions(b *testing.B) {
	for _, fs := range []string{"mem", "disk"} {
		b.Run("store="+fs, func(b *testing.B) {
			opts := worldOptions{channels: map[string]int{"alpha": 0}}
			if fs == "disk" {
				opts.dir = b.TempDir()
			}
			w := newWorld(b, opts)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			from, err := w.ledger.LastPosition(ctx)
			if err != nil {
				b.Fatal(err)
			}
			acceptAll(b, w, b.N)
			sent := countSent(ctx, b, w.ledger, from, b.N)

			b.ResetTimer()
			r := w.start(b, sagas.Config{}, nil, newChannel("alpha", nil))
			select {
			case <-sent:
			case <-time.After(5 * time.Minute):
				b.Fatalf("%d messages not sent within 5 min: %+v", b.N, r.Stats())
			}
			b.StopTimer()
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "msgs/s")
			b.ReportMetric(float64(r.Stats().Decisions)/secs, "decisions/s")
			r.stop(b)
			w.noErrors(b)
		})
	}
}

// acceptAll accepts n messages, from a few goroutines (the ledger commits
// concurrent appends together).
func acceptAll(b *testing.B, w *world, n int) {
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := g; i < n; i += writers {
				if _, _, err := w.cmd.AcceptMessage(context.Background(), acceptCmd(fmt.Sprintf("m-%08d", i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("accept: %v", err)
	}
}

// countSent closes the channel it returns once n message.sent events
// follow position from.
func countSent(ctx context.Context, b *testing.B, l ledger.Store, from uint64, n int) <-chan struct{} {
	sub, err := l.Subscribe(ctx, from, ledger.Filter{StreamPrefixes: []string{message.StreamPrefix}, TypePrefixes: []string{message.TypeSent}})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer sub.Close()
		seen := 0
		for seen < n {
			evs, err := sub.Recv(ctx)
			if err != nil {
				return
			}
			seen += len(evs)
		}
		close(done)
	}()
	return done
}
