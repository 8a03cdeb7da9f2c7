package pebbleledger

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

var benchPayload = []byte(`{"message_id":"0b6c1f0e-3c1d-4c1e-9a57-0b3d2f2f4a11","channel":"apns","device":"a1b2c3d4e5f6","priority":10,"ttl":3600,"body":{"alert":"You have a new message","badge":3}}`)

func benchStores(b *testing.B, fn func(b *testing.B, s *Store)) {
	b.Run("disk", func(b *testing.B) {
		fn(b, openTest(b, Config{Dir: filepath.Join(b.TempDir(), "db")}))
	})
	b.Run("mem", func(b *testing.B) {
		fn(b, openTest(b, Config{Dir: "db", FS: vfs.NewMem()}))
	})
}

func benchEvents(n int) []ledger.EventData {
	evs := make([]ledger.EventData, n)
	for i := range evs {
		evs[i] = ledger.EventData{ID: ledger.NewID(), Type: "message.accepted.v1", Data: benchPayload}
	}
	return evs
}

// report adds events/s, synced commits per op and events per commit.
func report(b *testing.B, s *Store, commits0 uint64, events int64) {
	commits := s.commits.Load() - commits0
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(commits)/float64(b.N), "fsyncs/op")
	if commits > 0 {
		b.ReportMetric(float64(events)/float64(commits), "events/fsync")
	}
}

// BenchmarkAppend measures synced appends: one event per append from one
// goroutine (one fsync each), from many goroutines (group commit shares
// fsyncs), and 100 events per append.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("single", func(b *testing.B) {
		benchStores(b, func(b *testing.B, s *Store) {
			c0 := s.commits.Load()
			var n int64
			for b.Loop() {
				if _, err := s.Append(ctx, fmt.Sprint("bench-", n%100), ledger.Any{}, benchEvents(1)...); err != nil {
					b.Fatal(err)
				}
				n++
			}
			report(b, s, c0, n)
		})
	})
	for _, par := range []int{8, 32} {
		b.Run(fmt.Sprintf("parallel=%dxGOMAXPROCS", par), func(b *testing.B) {
			benchStores(b, func(b *testing.B, s *Store) {
				c0 := s.commits.Load()
				var n, g atomic.Int64
				b.SetParallelism(par)
				b.RunParallel(func(pb *testing.PB) {
					st := fmt.Sprint("bench-", g.Add(1))
					for pb.Next() {
						if _, err := s.Append(ctx, st, ledger.Any{}, benchEvents(1)...); err != nil {
							b.Error(err)
							return
						}
						n.Add(1)
					}
				})
				report(b, s, c0, n.Load())
			})
		})
	}
	b.Run("batch=100", func(b *testing.B) {
		benchStores(b, func(b *testing.B, s *Store) {
			c0 := s.commits.Load()
			var n int64
			for b.Loop() {
				if _, err := s.Append(ctx, fmt.Sprint("bench-", n%100), ledger.Any{}, benchEvents(100)...); err != nil {
					b.Fatal(err)
				}
				n += 100
			}
			report(b, s, c0, n)
		})
	})
}

// BenchmarkReadAll measures reading $all forwards, 1000 events per op.
func BenchmarkReadAll(b *testing.B) {
	ctx := context.Background()
	benchStores(b, func(b *testing.B, s *Store) {
		for range 20 {
			if _, err := s.Append(ctx, "bench", ledger.Any{}, benchEvents(500)...); err != nil {
				b.Fatal(err)
			}
		}
		var n int64
		from := uint64(0)
		for b.Loop() {
			evs, err := s.ReadAll(ctx, from, ledger.Forwards, 1000, ledger.Filter{})
			if err != nil || len(evs) != 1000 {
				b.Fatalf("read %d events: %v", len(evs), err)
			}
			from = (from + 1000) % 9000
			n += int64(len(evs))
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	})
}
