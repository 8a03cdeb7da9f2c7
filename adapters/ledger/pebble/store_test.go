package pebbleledger

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/ledger"
	"github.com/pushledger/pushledger/ledger/ledgertest"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openTest opens a store and closes it at the end of the test (tolerating
// a store the test closed itself).
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ledger.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func features() ledgertest.Features {
	return ledgertest.Features{
		ContiguousPositions: true,
		BinaryPayloads:      true,
		Restart: func(t *testing.T, st ledger.Store) ledger.Store {
			s := st.(*Store)
			c := s.cfg
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openTest(t, c)
		},
	}
}

func TestConformanceDir(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledger.Store {
		return openTest(t, Config{Dir: filepath.Join(t.TempDir(), "ledger")})
	}, features())
}

func TestConformanceMemFS(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledger.Store {
		// A small batch bound exercises appends split over several commits.
		return openTest(t, Config{Dir: "ledger", FS: vfs.NewMem(), MaxBatchEvents: 3, SubscriptionBatch: 7})
	}, features())
}

func TestConfigValidation(t *testing.T) {
	_, err := Open(Config{MaxBatchEvents: -1, SubscriptionBatch: -2})
	if err == nil {
		t.Fatal("Open accepted an invalid config")
	}
	for _, want := range []string{"Dir", "MaxBatchEvents", "SubscriptionBatch"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestInvalidExpectedState(t *testing.T) {
	s := openTest(t, Config{Dir: "db", FS: vfs.NewMem()})
	e := ledger.EventData{ID: ledger.NewID(), Type: "t"}
	for _, exp := range []ledger.StreamState{nil, (*ledger.Revision)(nil), (*ledger.Any)(nil)} {
		if _, err := s.Append(context.Background(), "s", exp, e); !errors.Is(err, ledger.ErrInvalidAppend) {
			t.Errorf("Append with %#v = %v, want ErrInvalidAppend", exp, err)
		}
	}
	// Pointers to states work like the states.
	rev := ledger.Revision(0)
	if _, err := s.Append(context.Background(), "s", &ledger.NoStream{}, e); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), "s", &rev, ledger.EventData{ID: ledger.NewID(), Type: "t"}); err != nil {
		t.Fatal(err)
	}
}

// TestReopenKeepsLastPosition: the last position is found again at Open and
// new appends continue after it.
func TestReopenKeepsLastPosition(t *testing.T) {
	fs := vfs.NewMem()
	cfg := Config{Dir: "db", FS: fs, Logger: quietLogger()}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var exp ledger.StreamState = ledger.NoStream{}
	for i := range 10 {
		if _, err := s.Append(ctx, "s", exp, ledger.EventData{ID: ledger.NewID(), Type: "t"}); err != nil {
			t.Fatal(err)
		}
		exp = ledger.Revision(i)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	s = openTest(t, cfg)
	if p, _ := s.LastPosition(ctx); p != 10 {
		t.Fatalf("LastPosition after reopen = %d, want 10", p)
	}
	res, err := s.Append(ctx, "t", ledger.NoStream{}, ledger.EventData{ID: ledger.NewID(), Type: "t"})
	if err != nil || res.Position != 11 {
		t.Fatalf("append after reopen = %+v, %v; want position 11", res, err)
	}
}

func TestLayoutVersionMismatch(t *testing.T) {
	fs := vfs.NewMem()
	s := openTest(t, Config{Dir: "db", FS: fs})
	if err := s.db.Set(metaKey("version"), []byte("99"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Dir: "db", FS: fs, Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "layout version") {
		t.Fatalf("Open of a store with another layout = %v", err)
	}
}
