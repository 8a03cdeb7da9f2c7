package pebbleledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// TestSidePowerLoss: a side record is durable once its wait returned,
// whether an append made after it synced the WAL (the wait is then free)
// or the wait had to sync it itself. Crash images (vfs.MemFS.CrashClone,
// with none, half or all of the unsynced data kept) are taken while side
// writers and appenders run; each image holds every side record whose
// wait returned before the image was taken, and the ledger's reads never
// see side keys.
func TestSidePowerLoss(t *testing.T) {
	for _, unsynced := range []int{0, 50, 100} {
		t.Run(fmt.Sprintf("unsynced%d", unsynced), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, err := Open(Config{Dir: "db", FS: fs, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var (
				mu      sync.Mutex
				durable []string
				more    = make(chan struct{}, 1)
			)
			record := func(key string, appendAfter bool) {
				b := s.Side().DB().NewBatch()
				_ = b.Set([]byte(key), nil, nil)
				wait, err := s.Side().Apply(b)
				if err != nil {
					t.Error(err)
					return
				}
				if appendAfter {
					ev := ledger.EventData{ID: "id-" + key, Type: "side.test.v1", Data: []byte("{}")}
					if _, err := s.Append(ctx, "side-"+key, ledger.NoStream{}, ev); err != nil {
						t.Error(err)
						return
					}
					if s.commits.Load() <= 0 {
						t.Error("an acknowledged append left commits at 0")
					}
				}
				if err := wait(); err != nil {
					t.Error(err)
					return
				}
				_ = b.Close()
				mu.Lock()
				durable = append(durable, key)
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
			}
			type image struct {
				fs   *vfs.MemFS
				keys []string
			}
			var images []image
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 150 {
						// Writers 0 and 1 append after each record, 2 and
						// 3 only now and then.
						record(fmt.Sprintf("n-%d-%03d", w, i), w < 2 || i%10 == 0)
					}
				}()
			}
			rng := rand.New(rand.NewPCG(uint64(unsynced), 3))
			for target := 100; target <= 500; target += 200 {
				for {
					mu.Lock()
					n := len(durable)
					mu.Unlock()
					if n >= target {
						break
					}
					<-more
				}
				mu.Lock()
				keys := append([]string(nil), durable...)
				mu.Unlock()
				images = append(images, image{fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced, RNG: rng}), keys})
			}
			wg.Wait()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i, img := range images {
				s, err := Open(Config{Dir: "db", FS: img.fs, Logger: quietLogger()})
				if err != nil {
					t.Fatalf("image %d: %v", i, err)
				}
				for _, k := range img.keys {
					_, closer, err := s.Side().DB().Get([]byte(k))
					if err != nil {
						t.Fatalf("image %d: side record %s acknowledged durable, then lost: %v", i, k, err)
					}
					_ = closer.Close()
				}
				// The ledger's reads hold ledger events only.
				events, err := s.ReadAll(ctx, 0, ledger.Forwards, 100000, ledger.Filter{})
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range events {
					if e.Type != "side.test.v1" {
						t.Fatalf("image %d: read %+v", i, e)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestSideClosed: after Close, Apply refuses and a pending wait either
// already holds or reports the store closed; neither panics.
func TestSideClosed(t *testing.T) {
	s, err := Open(Config{Dir: "db", FS: vfs.NewMem(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := s.Side().DB().NewBatch()
	_ = b.Set([]byte("n-closed"), nil, nil)
	wait, err := s.Side().Apply(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil && err != ledger.ErrClosed {
		t.Fatalf("wait after close: %v", err)
	}
	b2 := new(pebble.Batch)
	if _, err := s.Side().Apply(b2); err != ledger.ErrClosed {
		t.Fatalf("Apply after close: %v, want ErrClosed", err)
	}
}
