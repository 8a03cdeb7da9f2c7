package sagas

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"

	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/projections"
)

func openStore(t *testing.T) *pebblekv.Store {
	t.Helper()
	s, err := pebblekv.Open(pebblekv.Config{Dir: "state", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func loadAll(t *testing.T, s projections.Store, part int) map[string]time.Time {
	t.Helper()
	got := map[string]time.Time{}
	if err := loadWakes(s, part, func(id string, at time.Time) { got[id] = at }); err != nil {
		t.Fatalf("loadWakes(%d): %v", part, err)
	}
	return got
}

// TestWakesRoundTrip: wake-up times written per partition are read back
// exactly, by their partition only; a zero time deletes.
func TestWakesRoundTrip(t *testing.T) {
	const parts = 8
	s := openStore(t)
	want := make([]map[string]time.Time, parts)
	for p := range want {
		want[p] = map[string]time.Time{}
	}
	var ops []wakeOp
	for i := range 200 {
		id := fmt.Sprintf("m-%03d", i)
		at := time.Unix(0, int64(1_900_000_000_000_000_000+i*7919))
		ops = append(ops, wakeOp{id: id, at: at})
		want[partitionOf(id, parts)][id] = at
	}
	update := func(ops []wakeOp) {
		t.Helper()
		if err := s.Update(func(w projections.Writer) error { return writeWakes(w, parts, ops) }); err != nil {
			t.Fatal(err)
		}
	}
	update(ops)
	// Move one, delete one.
	moved, gone := ops[3].id, ops[4].id
	update([]wakeOp{{id: moved, at: ops[3].at.Add(time.Second)}, {id: gone}})
	want[partitionOf(moved, parts)][moved] = ops[3].at.Add(time.Second)
	delete(want[partitionOf(gone, parts)], gone)

	total := 0
	for p := range parts {
		got := loadAll(t, s, p)
		if !maps.EqualFunc(got, want[p], time.Time.Equal) {
			t.Errorf("partition %d: loaded %v, want %v", p, got, want[p])
		}
		total += len(got)
	}
	if total != 199 {
		t.Errorf("%d wakes in all, want 199", total)
	}
	// The last partition's range ends where the next would start.
	if got := loadAll(t, s, parts); len(got) != 0 {
		t.Errorf("partition %d (none) loaded %v", parts, got)
	}
}

// TestWakesCorrupt: a value that is not 8 bytes is an error, not a
// wake-up time.
func TestWakesCorrupt(t *testing.T) {
	s := openStore(t)
	if err := s.Update(func(w projections.Writer) error { return w.Set(wakeKey(3, "m-1"), []byte{1, 2, 3}) }); err != nil {
		t.Fatal(err)
	}
	if err := loadWakes(s, 3, func(string, time.Time) {}); err == nil {
		t.Fatal("a corrupt wake loaded without error")
	}
}

// TestPartitionOf: stable, in range, and spread over the partitions for
// the ids messages get (UUIDv7 from the API, ids derived from idempotency
// keys) and for sequential ones.
func TestPartitionOf(t *testing.T) {
	const parts, n = 64, 64_000
	ids := map[string]func(i int) string{
		"uuid7":       func(int) string { return uuid.Must(uuid.NewV7()).String() },
		"idempotency": func(i int) string { return ledger.DeterministicID("idempotency", "app-1", fmt.Sprint(i)) },
		"sequential":  func(i int) string { return fmt.Sprintf("m-%06d", i) },
	}
	for name, id := range ids {
		count := make([]int, parts)
		for i := range n {
			id := id(i)
			p := partitionOf(id, parts)
			if p < 0 || p >= parts || p != partitionOf(id, parts) {
				t.Fatalf("partitionOf(%s) = %d", id, p)
			}
			count[p]++
		}
		for p, c := range count {
			if c < n/parts*3/4 || c > n/parts*5/4 {
				t.Errorf("%s ids: partition %d holds %d of %d, want about %d", name, p, c, n, n/parts)
			}
		}
	}
}
