package gateway

// wheel is an event loop's timing wheel: every session of the loop is in
// exactly one slot, the one of its deadline (in ticks), at most len(slots)-1
// ticks ahead. Deadlines move lazily: a frame only updates the session's
// lastSeen; when the sweep reaches the slot it recomputes the deadline and
// moves the session if it lies further. So a connection costs no timer
// and no work per frame, and about one move per idle period.
//
// A wheel belongs to one event loop and is not safe for concurrent use.
type wheel struct {
	slots []*session // heads of doubly linked lists
	mask  int64
	swept int64 // last tick swept
}

func newWheel(slots int, now int64) wheel {
	return wheel{slots: make([]*session, slots), mask: int64(slots - 1), swept: now}
}

// add places s in the slot of deadline, clamped to (swept, swept+len(slots)).
func (w *wheel) add(s *session, deadline int64) {
	if deadline <= w.swept {
		deadline = w.swept + 1
	}
	if deadline > w.swept+w.mask {
		deadline = w.swept + w.mask
	}
	i := deadline & w.mask
	s.slot = int32(i)
	s.prev = nil
	s.next = w.slots[i]
	if s.next != nil {
		s.next.prev = s
	}
	w.slots[i] = s
}

func (w *wheel) remove(s *session) {
	if s.slot < 0 {
		return
	}
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		w.slots[s.slot] = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.prev, s.next, s.slot = nil, nil, -1
}

// advance sweeps the slots of the ticks after the last sweep up to now,
// detaching each session and passing it to visit, which re-adds it or
// closes it. After a long pause every slot is swept once.
func (w *wheel) advance(now int64, visit func(*session)) {
	from := w.swept + 1
	if now-from >= int64(len(w.slots)) {
		from = now - int64(len(w.slots)) + 1
	}
	w.swept = now
	for t := from; t <= now; t++ {
		i := t & w.mask
		s := w.slots[i]
		w.slots[i] = nil
		for s != nil {
			next := s.next
			s.prev, s.next, s.slot = nil, nil, -1
			visit(s)
			s = next
		}
	}
}

// each calls f for every session in the wheel; f must not add or remove.
func (w *wheel) each(f func(*session)) {
	for _, s := range w.slots {
		for ; s != nil; s = s.next {
			f(s)
		}
	}
}
