package pebbleledger

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

var benchPayload = []byte(`{"message_id":"0b6c1f0e-3c1d-4c1e-9a57-0b3d2f2f4a11","channel":"apns","device":"a1b2c3d4e5f6","priority":10,"ttl":3600,"body":{"alert":"You have a new message","badge":3}}`)

// countingFS counts the syncs of the files it opens for writing, so that
// benchmarks report real fsyncs (WAL syncs, and the few of flushes and
// manifests), whatever the store's commit pipeline does.
type countingFS struct {
	vfs.FS
	syncs *atomic.Int64
}

type countingFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f countingFile) Sync() error     { f.syncs.Add(1); return f.File.Sync() }
func (f countingFile) SyncData() error { f.syncs.Add(1); return f.File.SyncData() }
func (f countingFile) SyncTo(length int64) (bool, error) {
	f.syncs.Add(1)
	return f.File.SyncTo(length)
}

func (fs countingFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return countingFile{File: f, syncs: fs.syncs}, nil
}

func (fs countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs countingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

func (fs countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

// benchStore is a store under benchmark with its fsync counter.
type benchStore struct {
	*Store
	syncs *atomic.Int64
}

func benchStores(b *testing.B, fn func(b *testing.B, s benchStore)) {
	b.Run("disk", func(b *testing.B) {
		var n atomic.Int64
		fs := countingFS{FS: vfs.Default, syncs: &n}
		fn(b, benchStore{openTest(b, Config{Dir: filepath.Join(b.TempDir(), "db"), FS: fs}), &n})
	})
	b.Run("mem", func(b *testing.B) {
		var n atomic.Int64
		fs := countingFS{FS: vfs.NewMem(), syncs: &n}
		fn(b, benchStore{openTest(b, Config{Dir: "db", FS: fs}), &n})
	})
}

func benchEvents(n int) []ledger.EventData {
	evs := make([]ledger.EventData, n)
	for i := range evs {
		evs[i] = ledger.EventData{ID: ledger.NewID(), Type: "message.accepted.v1", Data: benchPayload}
	}
	return evs
}

// report adds events/s, fsyncs per op and events per fsync; syncs0 is the
// fsync count at the start.
func report(b *testing.B, s benchStore, syncs0 int64, events int64) {
	syncs := s.syncs.Load() - syncs0
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(syncs)/float64(b.N), "fsyncs/op")
	if syncs > 0 {
		b.ReportMetric(float64(events)/float64(syncs), "events/fsync")
	}
}

// BenchmarkAppend measures synced appends: one event per append from one
// goroutine (one fsync each), from many goroutines (group commit shares
// fsyncs), and 100 events per append.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("single", func(b *testing.B) {
		benchStores(b, func(b *testing.B, s benchStore) {
			c0 := s.syncs.Load()
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
			benchStores(b, func(b *testing.B, s benchStore) {
				c0 := s.syncs.Load()
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
		benchStores(b, func(b *testing.B, s benchStore) {
			c0 := s.syncs.Load()
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

// BenchmarkAppendNewStreams is the platform's hot path: many concurrent
// appends of one or two events, each to a new stream (message-<uuid>) with
// NoStream and fresh random ids, as when a REST batch of 1000 messages is
// accepted or 64 clients send one message each. The streams and events are
// made before the timer starts.
func BenchmarkAppendNewStreams(b *testing.B) {
	ctx := context.Background()
	type op struct {
		stream string
		events []ledger.EventData
	}
	for _, appenders := range []int{64, 1000} {
		for _, events := range []int{1, 2} {
			b.Run(fmt.Sprintf("appenders=%d/events=%d", appenders, events), func(b *testing.B) {
				benchStores(b, func(b *testing.B, s benchStore) {
					ops := make([]op, b.N)
					for i := range ops {
						ops[i] = op{stream: "message-" + ledger.NewID(), events: benchEvents(events)}
					}
					c0 := s.syncs.Load()
					var next atomic.Int64
					var wg sync.WaitGroup
					b.ResetTimer()
					for range appenders {
						wg.Go(func() {
							for {
								i := next.Add(1) - 1
								if i >= int64(len(ops)) {
									return
								}
								if _, err := s.Append(ctx, ops[i].stream, ledger.NoStream{}, ops[i].events...); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					b.StopTimer()
					report(b, s, c0, int64(b.N*events))
				})
			})
		}
	}
}

// BenchmarkReadAll measures reading $all forwards, 1000 events per op.
func BenchmarkReadAll(b *testing.B) {
	ctx := context.Background()
	benchStores(b, func(b *testing.B, s benchStore) {
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
