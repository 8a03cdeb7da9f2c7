package signing

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestMemoryNoncesShrinkAfterBurst checks that a shard's map and heap are
// reallocated once a burst has expired, so the burst's peak memory is not
// kept forever.
func TestMemoryNoncesShrinkAfterBurst(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	m := NewMemoryNonces(func() time.Time { return now })
	const burst = nonceShards * 2 * shrinkMin
	for i := range burst {
		if _, err := m.Use(ctx, "app", "burst-"+strconv.Itoa(i), now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	maxCap := 0
	for i := range m.shards {
		maxCap = max(maxCap, cap(m.shards[i].heap))
	}
	if maxCap < shrinkMin {
		t.Fatalf("burst did not fill the shards (max heap cap %d)", maxCap)
	}

	now = now.Add(time.Hour)
	for i := range burst / 2 {
		if _, err := m.Use(ctx, "app", "after-"+strconv.Itoa(i), now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Microsecond)
	}
	for i := range m.shards {
		s := &m.shards[i]
		if c := cap(s.heap); c >= shrinkMin {
			t.Errorf("shard %d: heap cap %d (len %d, map %d) not shrunk", i, c, len(s.heap), len(s.live))
		}
		if len(s.live) != len(s.heap) {
			t.Errorf("shard %d: map %d entries, heap %d", i, len(s.live), len(s.heap))
		}
	}
}
