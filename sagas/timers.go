package sagas

import (
	"container/heap"
	"time"
)

// timerQueue holds at most one wake-up time per message, ordered by time: a
// binary heap with an index by message id, so that setting, moving and
// removing a message's timer are O(log n). It is not safe for concurrent
// use.
type timerQueue struct {
	h timerHeap
}

type timerEntry struct {
	at int64 // unix nanoseconds
	id string
}

type timerHeap struct {
	items []timerEntry
	index map[string]int
}

func newTimerQueue() *timerQueue {
	return &timerQueue{h: timerHeap{index: map[string]int{}}}
}

// Set makes id's timer fire at at, replacing any timer it had.
func (q *timerQueue) Set(id string, at time.Time) {
	ns := at.UnixNano()
	if i, ok := q.h.index[id]; ok {
		q.h.items[i].at = ns
		heap.Fix(&q.h, i)
		return
	}
	heap.Push(&q.h, timerEntry{at: ns, id: id})
}

// Remove drops id's timer, if it has one.
func (q *timerQueue) Remove(id string) {
	if i, ok := q.h.index[id]; ok {
		heap.Remove(&q.h, i)
	}
}

// At returns id's timer.
func (q *timerQueue) At(id string) (time.Time, bool) {
	i, ok := q.h.index[id]
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, q.h.items[i].at), true
}

// Len is the number of timers held.
func (q *timerQueue) Len() int { return len(q.h.items) }

// Next returns the earliest timer's time; ok is false when there is none.
func (q *timerQueue) Next() (time.Time, bool) {
	if len(q.h.items) == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, q.h.items[0].at), true
}

// PopDue removes and returns up to max ids whose timers are at or before
// now, earliest first.
func (q *timerQueue) PopDue(now time.Time, max int, out []string) []string {
	ns := now.UnixNano()
	for len(q.h.items) > 0 && len(out) < max && q.h.items[0].at <= ns {
		e := heap.Pop(&q.h).(timerEntry)
		out = append(out, e.id)
	}
	return out
}

func (h *timerHeap) Len() int { return len(h.items) }
func (h *timerHeap) Less(i, j int) bool {
	if h.items[i].at != h.items[j].at {
		return h.items[i].at < h.items[j].at
	}
	return h.items[i].id < h.items[j].id
}
func (h *timerHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.index[h.items[i].id] = i
	h.index[h.items[j].id] = j
}
func (h *timerHeap) Push(x any) {
	e := x.(timerEntry)
	h.index[e.id] = len(h.items)
	h.items = append(h.items, e)
}
func (h *timerHeap) Pop() any {
	n := len(h.items) - 1
	e := h.items[n]
	h.items[n] = timerEntry{}
	h.items = h.items[:n]
	delete(h.index, e.id)
	return e
}
