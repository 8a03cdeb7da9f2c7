package pebbleledger

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

var errInjected = errors.New("injected sync failure")

// failingFS fails every sync once fail is set.
type failingFS struct {
	vfs.FS
	fail *atomic.Bool
}

type failingFile struct {
	vfs.File
	fail *atomic.Bool
}

func (f failingFile) Sync() error {
	if f.fail.Load() {
		return errInjected
	}
	return f.File.Sync()
}

func (f failingFile) SyncData() error {
	if f.fail.Load() {
		return errInjected
	}
	return f.File.SyncData()
}

func (f failingFile) SyncTo(length int64) (bool, error) {
	if f.fail.Load() {
		return false, errInjected
	}
	return f.File.SyncTo(length)
}

func (fs failingFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return failingFile{File: f, fail: fs.fail}, nil
}

func (fs failingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs failingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

// TestSyncFailure: when the WAL sync fails, the appends of the batches in
// flight fail, nothing of them becomes visible, and the store refuses
// every later append.
func TestSyncFailure(t *testing.T) {
	var fail atomic.Bool
	s, err := Open(Config{Dir: "db", FS: failingFS{FS: vfs.NewMem(), fail: &fail}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Append(ctx, "ok", ledger.NoStream{}, ledger.EventData{ID: ledger.NewID(), Type: "t"}); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	var wg sync.WaitGroup
	var succeeded atomic.Int64
	for range 50 {
		wg.Go(func() {
			_, err := s.Append(ctx, "message-"+ledger.NewID(), ledger.NoStream{}, ledger.EventData{ID: ledger.NewID(), Type: "t"})
			if err == nil {
				succeeded.Add(1)
			}
		})
	}
	wg.Wait()
	if n := succeeded.Load(); n != 0 {
		t.Fatalf("%d appends succeeded after the sync failed", n)
	}
	if p, _ := s.LastPosition(ctx); p != 1 {
		t.Fatalf("LastPosition = %d after failed commits, want 1", p)
	}
	if evs, err := s.ReadAll(ctx, 0, ledger.Forwards, 0, ledger.Filter{}); err != nil || len(evs) != 1 {
		t.Fatalf("ReadAll after failed commits = %d events, %v; want 1", len(evs), err)
	}
	fail.Store(false)
	if _, err := s.Append(ctx, "later", ledger.NoStream{}, ledger.EventData{ID: ledger.NewID(), Type: "t"}); err == nil {
		t.Fatal("append after a failed commit succeeded")
	}
	_ = s.Close() // Pebble may report the failed WAL again.
}
