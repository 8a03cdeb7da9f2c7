package sagas

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func TestTimerQueueBasics(t *testing.T) {
	q := newTimerQueue()
	if _, ok := q.Next(); ok || q.Len() != 0 {
		t.Fatal("an empty queue has a next timer")
	}
	if got := q.PopDue(ms(1000), 10, nil); len(got) != 0 {
		t.Fatalf("empty queue popped %v", got)
	}
	q.Set("b", ms(20))
	q.Set("a", ms(30))
	q.Set("c", ms(10))
	q.Set("a", ms(5)) // moves a, does not add one
	if q.Len() != 3 {
		t.Fatalf("Len %d, want 3", q.Len())
	}
	if at, ok := q.At("a"); !ok || !at.Equal(ms(5)) {
		t.Fatalf("At(a) = %s %v, want %s", at, ok, ms(5))
	}
	if next, ok := q.Next(); !ok || !next.Equal(ms(5)) {
		t.Fatalf("Next %s %v, want %s", next, ok, ms(5))
	}
	q.Remove("c")
	q.Remove("nobody")
	if _, ok := q.At("c"); ok || q.Len() != 2 {
		t.Fatal("Remove did not remove")
	}
	if got := q.PopDue(ms(4), 10, nil); len(got) != 0 {
		t.Fatalf("popped %v before they were due", got)
	}
	if got := q.PopDue(ms(20), 10, nil); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("popped %v, want [a b]: at or before now, earliest first", got)
	}
	if q.Len() != 0 {
		t.Fatalf("Len %d after popping everything", q.Len())
	}
}

func TestTimerQueueTiesAndMax(t *testing.T) {
	q := newTimerQueue()
	for _, id := range []string{"d", "b", "a", "c", "e"} {
		q.Set(id, ms(7))
	}
	buf := make([]string, 0, 8)
	got := q.PopDue(ms(7), 2, buf)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("first pop %v, want [a b] (ties by id, at most 2)", got)
	}
	got = q.PopDue(ms(7), 10, got[:0])
	if !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Fatalf("second pop %v, want [c d e]", got)
	}
}

// TestTimerQueueModel: random Set, Remove and PopDue against a map.
func TestTimerQueueModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q := newTimerQueue()
		model := map[string]time.Time{}
		ids := rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f", "g", "h"})
		at := rapid.Custom(func(t *rapid.T) time.Time { return ms(rapid.IntRange(0, 50).Draw(t, "ms")) })
		t.Repeat(map[string]func(*rapid.T){
			"set": func(t *rapid.T) {
				id, a := ids.Draw(t, "id"), at.Draw(t, "at")
				q.Set(id, a)
				model[id] = a
			},
			"remove": func(t *rapid.T) {
				id := ids.Draw(t, "id")
				q.Remove(id)
				delete(model, id)
			},
			"pop": func(t *rapid.T) {
				now, max := at.Draw(t, "now"), rapid.IntRange(1, 4).Draw(t, "max")
				var want []string
				for id, a := range model {
					if !a.After(now) {
						want = append(want, id)
					}
				}
				slices.SortFunc(want, func(x, y string) int { return cmp.Or(model[x].Compare(model[y]), cmp.Compare(x, y)) })
				want = want[:min(len(want), max)]
				got := q.PopDue(now, max, nil)
				if !slices.Equal(got, want) {
					t.Fatalf("PopDue(%s, %d) = %v, want %v", now.Sub(t0), max, got, want)
				}
				for _, id := range got {
					delete(model, id)
				}
			},
			"": func(t *rapid.T) {
				if q.Len() != len(model) {
					t.Fatalf("Len %d, model has %d", q.Len(), len(model))
				}
				for id, a := range model {
					if got, ok := q.At(id); !ok || !got.Equal(a) {
						t.Fatalf("At(%s) = %s %v, want %s", id, got, ok, a)
					}
				}
				next, ok := q.Next()
				if ok != (len(model) > 0) {
					t.Fatalf("Next ok %v with %d timers", ok, len(model))
				}
				for _, a := range model {
					if a.Before(next) {
						t.Fatalf("Next %s, but a timer is at %s", next.Sub(t0), a.Sub(t0))
					}
				}
				for id, i := range q.h.index {
					if q.h.items[i].id != id {
						t.Fatalf("index of %s points at %s", id, q.h.items[i].id)
					}
				}
			},
		})
	})
}

// BenchmarkTimers measures the timer queue at several sizes: "set" moves
// the timers of messages already held (every decision does), "set+fire"
// adds one and fires the earliest (the queue stays at its size).
func BenchmarkTimers(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%016x", rand.Uint64())
		}
		fill := func() *timerQueue {
			q := newTimerQueue()
			for i, id := range ids {
				q.Set(id, t0.Add(time.Duration(i)*time.Microsecond))
			}
			return q
		}
		b.Run(fmt.Sprintf("set/timers=%d", n), func(b *testing.B) {
			q := fill()
			rng := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				q.Set(ids[i%n], t0.Add(time.Duration(rng.IntN(n))*time.Microsecond))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "timers/s")
		})
		b.Run(fmt.Sprintf("set+fire/timers=%d", n), func(b *testing.B) {
			q := fill()
			rng := rand.New(rand.NewPCG(1, 2))
			due := make([]string, 0, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				now, _ := q.Next() // the clock jumps to the earliest timer
				due = q.PopDue(now, 1, due[:0])
				// The fired message waits again, up to a second later.
				q.Set(due[0], now.Add(time.Duration(rng.IntN(1_000_000))*time.Microsecond))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "timers/s")
		})
	}
}
