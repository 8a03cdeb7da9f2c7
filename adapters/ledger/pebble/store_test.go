package pebbleledger

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/adapters/ledger/ledgertest"
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
	_, err := Open(Config{MaxBatchEvents: -1, SubscriptionBatch: -2, CacheBytes: -3})
	if err == nil {
		t.Fatal("Open accepted an invalid config")
	}
	for _, want := range []string{"Dir", "MaxBatchEvents", "SubscriptionBatch", "CacheBytes"} {
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

// TestGroupCommit queues appends before the writer starts, so that they
// are decided in one batch: each is checked against the ones before it in
// the batch, a failing one fails alone, and one fsync covers them all.
func TestGroupCommit(t *testing.T) {
	s, err := open(Config{Dir: "db", FS: vfs.NewMem(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ev := func() ledger.EventData { return ledger.EventData{ID: ledger.NewID(), Type: "t"} }
	a1, a2, c1, g1, h1 := ev(), ev(), ev(), ev(), ev()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	type call struct {
		ctx    context.Context
		stream string
		exp    ledger.StreamState
		evs    []ledger.EventData
	}
	bg := context.Background()
	calls := []call{
		{bg, "s1", ledger.NoStream{}, []ledger.EventData{a1, a2}},   // 0: ok, revisions 0-1, positions 1-2
		{bg, "s1", ledger.NoStream{}, []ledger.EventData{ev()}},     // 1: wrong revision (s1 staged)
		{bg, "s1", ledger.Revision(1), []ledger.EventData{c1}},      // 2: ok, revision 2, position 3
		{bg, "s1", ledger.Any{}, []ledger.EventData{a1, a2}},        // 3: retry of 0
		{bg, "s1", ledger.NoStream{}, []ledger.EventData{a1, a2}},   // 4: retry of 0 at its state
		{bg, "s1", ledger.Any{}, []ledger.EventData{a2, ev()}},      // 5: partial
		{canceled, "s2", ledger.Any{}, []ledger.EventData{ev()}},    // 6: canceled
		{bg, "s2", ledger.StreamExists{}, []ledger.EventData{ev()}}, // 7: wrong revision (no s2)
		{bg, "s2", ledger.NoStream{}, []ledger.EventData{g1}},       // 8: ok, position 4
		{bg, "s1", ledger.Revision(2), []ledger.EventData{h1}},      // 9: ok, revision 3, position 5
	}
	var reqs []*appendReq
	for _, c := range calls {
		exp, err := validateAppend(c.stream, c.exp, c.evs)
		if err != nil {
			t.Fatal(err)
		}
		r := &appendReq{ctx: c.ctx, stream: c.stream, expected: c.exp, exp: exp, events: c.evs, done: make(chan appendResp, 1)}
		s.reqs <- r
		reqs = append(reqs, r)
	}
	go s.w.run()
	t.Cleanup(func() { _ = s.Close() })
	resps := make([]appendResp, len(reqs))
	for i, r := range reqs {
		resps[i] = <-r.done
	}
	if n := s.commits.Load(); n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
	ok := func(i int, rev, pos uint64) {
		t.Helper()
		if resps[i].err != nil || resps[i].res != (ledger.AppendResult{NextExpectedRevision: rev, Position: pos}) {
			t.Errorf("append %d = %+v, %v; want revision %d position %d", i, resps[i].res, resps[i].err, rev, pos)
		}
	}
	fails := func(i int, target error) {
		t.Helper()
		if !errors.Is(resps[i].err, target) {
			t.Errorf("append %d = %v, want %v", i, resps[i].err, target)
		}
	}
	ok(0, 1, 2)
	fails(1, ledger.ErrWrongExpectedRevision)
	ok(2, 2, 3)
	ok(3, 1, 2)
	ok(4, 1, 2)
	fails(5, ledger.ErrIdempotency)
	fails(6, context.Canceled)
	fails(7, ledger.ErrWrongExpectedRevision)
	ok(8, 0, 4)
	ok(9, 3, 5)
	evs, err := s.ReadAll(bg, 0, ledger.Forwards, 0, ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.ID)
	}
	if want := []string{a1.ID, a2.ID, c1.ID, g1.ID, h1.ID}; !slices.Equal(got, want) {
		t.Fatalf("$all = %v, want %v", got, want)
	}
}

// TestLayout1Upgrade: a store of layout 1 (idempotency entries by event id
// alone, i keys) opens as layout 2 and its entries still answer retries.
func TestLayout1Upgrade(t *testing.T) {
	fs := vfs.NewMem()
	cfg := Config{Dir: "db", FS: fs, Logger: quietLogger()}
	s := openTest(t, cfg)
	ctx := context.Background()
	evs := []ledger.EventData{{ID: ledger.NewID(), Type: "t"}, {ID: ledger.NewID(), Type: "t"}}
	r1, err := s.Append(ctx, "s", ledger.NoStream{}, evs...)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the store as layout 1 wrote it: i<id> instead of e<stream><id>.
	b := s.db.NewBatch()
	for _, e := range evs {
		k := eventIDKey(nil, "s", e.ID)
		v, closer, err := s.db.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Set(idKey(nil, e.ID), v, nil)
		_ = closer.Close()
		_ = b.Delete(k, nil)
	}
	_ = b.Set(metaKey("version"), []byte(layoutVersion1), nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	if !s.w.legacy {
		t.Fatal("layout-1 entries not found at Open")
	}
	if v, closer, err := s.db.Get(metaKey("version")); err != nil || string(v) != layoutVersion {
		t.Fatalf("layout version after upgrade = %q, %v", v, err)
	} else {
		_ = closer.Close()
	}
	if got, err := s.Append(ctx, "s", ledger.Any{}, evs...); err != nil || got != r1 {
		t.Fatalf("retry after upgrade = %+v, %v; want %+v", got, err, r1)
	}
	if _, err := s.Append(ctx, "s", ledger.Any{}, evs[1:]...); !errors.Is(err, ledger.ErrIdempotency) {
		t.Fatalf("partial retry after upgrade = %v, want ErrIdempotency", err)
	}
	e3 := ledger.EventData{ID: ledger.NewID(), Type: "t"}
	r3, err := s.Append(ctx, "s", ledger.Revision(1), e3)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Append(ctx, "s", ledger.Any{}, e3); err != nil || got != r3 {
		t.Fatalf("retry of a layout-2 append = %+v, %v; want %+v", got, err, r3)
	}
}

// TestCategoryIndex: reads and subscriptions filtered by one category go
// through the category index and return what a scan of $all returns; a
// store of layout 2 gets the index built at Open.
func TestCategoryIndex(t *testing.T) {
	fs := vfs.NewMem()
	cfg := Config{Dir: "db", FS: fs, Logger: quietLogger()}
	s := openTest(t, cfg)
	ctx := context.Background()
	for i := range 300 {
		// app- and device- are sparse (1 in 10): their reads walk the
		// index; message- is dense: its reads scan.
		stream := "message-" + strconv.Itoa(i)
		switch i % 10 {
		case 0:
			stream = "app-a"
		case 1:
			stream = "device-x-" + strconv.Itoa(i%7)
		case 2:
			stream = "nodash"
		}
		if _, err := s.Append(ctx, stream, ledger.Any{}, ledger.EventData{ID: ledger.NewID(), Type: "t" + strconv.Itoa(i%3)}); err != nil {
			t.Fatal(err)
		}
	}
	positions := func(evs []ledger.RecordedEvent) []uint64 {
		var out []uint64
		for _, e := range evs {
			out = append(out, e.Position)
		}
		return out
	}
	check := func(s *Store) {
		t.Helper()
		if !s.sparse(ctx, "app-", 1, 301) || !s.sparse(ctx, "device-", 1, 301) || s.sparse(ctx, "message-", 1, 301) {
			t.Fatal("app- and device- should be read through the index, message- by a scan")
		}
		for _, cat := range []string{"app-", "message-", "device-"} {
			for _, types := range [][]string{nil, {"t1"}} {
				indexed := ledger.Filter{StreamPrefixes: []string{cat}, TypePrefixes: types}
				scanned := ledger.Filter{StreamPrefixes: []string{cat, "no-such-category-"}, TypePrefixes: types}
				if _, ok := filterCategory(&scanned); ok {
					t.Fatal("the comparison filter takes the index path")
				}
				for _, dir := range []ledger.Direction{ledger.Forwards, ledger.Backwards} {
					from := uint64(0)
					if dir == ledger.Backwards {
						from = ledger.End
					}
					for _, max := range []int{0, 7} {
						a, err := s.ReadAll(ctx, from, dir, max, indexed)
						if err != nil {
							t.Fatal(err)
						}
						b, err := s.ReadAll(ctx, from, dir, max, scanned)
						if err != nil {
							t.Fatal(err)
						}
						if !slices.Equal(positions(a), positions(b)) || len(a) == 0 {
							t.Fatalf("%s %v %v max %d: index %v, scan %v", cat, types, dir, max, positions(a), positions(b))
						}
					}
				}
				// A subscription from the middle.
				sub, err := s.Subscribe(ctx, 150, indexed)
				if err != nil {
					t.Fatal(err)
				}
				got, err := sub.Recv(ctx)
				sub.Close()
				if err != nil {
					t.Fatal(err)
				}
				want, _ := s.ReadAll(ctx, 150, ledger.Forwards, 0, scanned)
				if !slices.Equal(positions(got), positions(want)) {
					t.Fatalf("subscription %s %v: %v, want %v", cat, types, positions(got), positions(want))
				}
			}
		}
	}
	check(s)
	// Make it a store of layout 2: no category keys.
	if err := s.db.DeleteRange([]byte{prefixCat}, []byte{prefixCat + 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(metaKey("version"), []byte(layoutVersion2), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	if v, closer, err := s.db.Get(metaKey("version")); err != nil || string(v) != layoutVersion {
		t.Fatalf("layout after upgrade %q, %v", v, err)
	} else {
		_ = closer.Close()
	}
	check(s)
}
