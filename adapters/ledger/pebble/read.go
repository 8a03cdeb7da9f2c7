package pebbleledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// ctxCheckEvery is how many keys a scan visits between context checks.
const ctxCheckEvery = 256

// ReadStream implements ledger.Store. Backwards from a revision past the
// stream's last one reads nothing, like forwards; only ledger.End means
// "from the last event".
func (s *Store) ReadStream(ctx context.Context, stream string, dir ledger.Direction, from uint64, max int) ([]ledger.RecordedEvent, error) {
	if !s.enter() {
		return nil, ledger.ErrClosed
	}
	defer s.ops.Done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	committed := s.tip.Load().pos
	prefix := streamPrefix(nil, stream)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: prefix, UpperBound: upperBound(prefix)})
	if err != nil {
		return nil, fmt.Errorf("pebbleledger: read stream %q: %w", stream, err)
	}
	poss, err := streamPositions(it, prefix, committed, dir, from, max)
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("pebbleledger: read stream %q: %w", stream, err)
	}
	if poss == nil {
		return nil, fmt.Errorf("%w: %q", ledger.ErrStreamNotFound, stream)
	}
	return s.records(ctx, poss)
}

// streamPositions returns the positions of the events to read, in read
// order; nil if the stream has no acknowledged event.
func streamPositions(it *pebble.Iterator, prefix []byte, committed uint64, dir ledger.Direction, from uint64, max int) ([]uint64, error) {
	entry := func() (rev, pos uint64, err error) {
		k := it.Key()
		if len(k) != len(prefix)+8 {
			return 0, 0, fmt.Errorf("%w: stream key %x", errCorrupt, k)
		}
		rev, _ = decodeBE8(k[len(prefix):])
		pos, err = decodeBE8(it.Value())
		return rev, pos, err
	}
	// The last acknowledged revision: skip events of a commit in flight.
	ok := it.Last()
	var last uint64
	for ; ok; ok = it.Prev() {
		rev, pos, err := entry()
		if err != nil {
			return nil, err
		}
		if pos <= committed {
			last = rev
			break
		}
	}
	if !ok {
		return nil, it.Error()
	}
	poss := []uint64{}
	limit := func() bool { return max > 0 && len(poss) >= max }
	switch dir {
	case ledger.Forwards:
		if from > last {
			return poss, nil
		}
		for ok = it.SeekGE(append(slices.Clip(prefix), be8(from)...)); ok && !limit(); ok = it.Next() {
			rev, pos, err := entry()
			if err != nil {
				return nil, err
			}
			if rev > last {
				break
			}
			poss = append(poss, pos)
		}
	case ledger.Backwards:
		start := from
		if from == ledger.End {
			start = last
		} else if from > last {
			return poss, nil
		}
		for ok = it.SeekLT(append(slices.Clip(prefix), be8(start+1)...)); ok && !limit(); ok = it.Prev() {
			_, pos, err := entry()
			if err != nil {
				return nil, err
			}
			poss = append(poss, pos)
		}
	default:
		return nil, fmt.Errorf("unknown direction %d", dir)
	}
	return poss, it.Error()
}

// records reads the records at the given positions.
func (s *Store) records(ctx context.Context, poss []uint64) ([]ledger.RecordedEvent, error) {
	if len(poss) == 0 {
		return nil, nil
	}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{prefixAll}, UpperBound: []byte{prefixAll + 1}})
	if err != nil {
		return nil, fmt.Errorf("pebbleledger: read records: %w", err)
	}
	out := make([]ledger.RecordedEvent, 0, len(poss))
	var key []byte
	for i, pos := range poss {
		if i%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return nil, err
			}
		}
		key = allKey(key[:0], pos)
		if !it.SeekGE(key) || string(it.Key()) != string(key) {
			err = fmt.Errorf("%w: no record at position %d", errCorrupt, pos)
			break
		}
		r, derr := decodeRecord(it.Value())
		if derr != nil {
			err = fmt.Errorf("position %d: %w", pos, derr)
			break
		}
		out = append(out, r.event(pos))
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("pebbleledger: read records: %w", err)
	}
	return out, nil
}

// ReadAll implements ledger.Store.
func (s *Store) ReadAll(ctx context.Context, from uint64, dir ledger.Direction, max int, filter ledger.Filter) ([]ledger.RecordedEvent, error) {
	if !s.enter() {
		return nil, ledger.ErrClosed
	}
	defer s.ops.Done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	committed := s.tip.Load().pos
	switch dir {
	case ledger.Forwards:
		evs, _, err := s.scan(ctx, from, committed, max, &filter)
		return evs, err
	case ledger.Backwards:
		below := from // read positions < below
		if below > committed {
			below = committed + 1
		}
		return s.scanBackwards(ctx, below, max, &filter)
	default:
		return nil, fmt.Errorf("pebbleledger: unknown direction %d", dir)
	}
}

// scan reads forwards the events with after < position <= upto that pass
// filter, at most max of them (max <= 0: no limit). next is the position
// scanned up to: upto, or the last event returned when max was reached.
func (s *Store) scan(ctx context.Context, after, upto uint64, max int, filter *ledger.Filter) (evs []ledger.RecordedEvent, next uint64, err error) {
	if after >= upto {
		return nil, after, nil
	}
	if cat, ok := filterCategory(filter); ok && s.sparse(ctx, cat, after+1, upto+1) {
		evs, last, full, err := s.scanCategory(ctx, cat, after+1, upto+1, max, filter, false)
		if err != nil {
			return nil, after, err
		}
		if full {
			return evs, last, nil
		}
		return evs, upto, nil
	}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: allKey(nil, after+1),
		UpperBound: allKey(nil, upto+1),
	})
	if err != nil {
		return nil, after, fmt.Errorf("pebbleledger: read $all: %w", err)
	}
	next = upto
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err = ctx.Err(); err != nil {
				break
			}
		}
		var pos uint64
		var r recordView
		if pos, r, err = decodeEntry(it); err != nil {
			break
		}
		if !r.matches(filter) {
			continue
		}
		evs = append(evs, r.event(pos))
		if max > 0 && len(evs) >= max {
			next = pos
			break
		}
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return nil, after, fmt.Errorf("pebbleledger: read $all: %w", err)
	}
	return evs, next, nil
}

// scanBackwards reads backwards the events with position < below that pass
// filter, at most max of them.
func (s *Store) scanBackwards(ctx context.Context, below uint64, max int, filter *ledger.Filter) (evs []ledger.RecordedEvent, err error) {
	if below <= 1 {
		return nil, nil
	}
	if cat, ok := filterCategory(filter); ok && s.sparse(ctx, cat, 1, below) {
		evs, _, _, err := s.scanCategory(ctx, cat, 1, below, max, filter, true)
		return evs, err
	}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: allKey(nil, 1),
		UpperBound: allKey(nil, below),
	})
	if err != nil {
		return nil, fmt.Errorf("pebbleledger: read $all: %w", err)
	}
	n := 0
	for ok := it.Last(); ok; ok = it.Prev() {
		if n++; n%ctxCheckEvery == 0 {
			if err = ctx.Err(); err != nil {
				break
			}
		}
		var pos uint64
		var r recordView
		if pos, r, err = decodeEntry(it); err != nil {
			break
		}
		if !r.matches(filter) {
			continue
		}
		evs = append(evs, r.event(pos))
		if max > 0 && len(evs) >= max {
			break
		}
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("pebbleledger: read $all: %w", err)
	}
	return evs, nil
}

// sparse reports whether category cat is sparse in positions [from, to):
// whether its index is worth walking instead of reading every event. A
// walk looks each event up by position, about three times the cost of
// reading it in sequence, so it pays when fewer than a quarter of the
// events are the category's. It samples the index's first entries.
func (s *Store) sparse(ctx context.Context, cat string, from, to uint64) bool {
	const sample = 64
	if to-from <= 4*sample {
		return false // a short range: a scan is as cheap
	}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: categoryKey(nil, cat, from),
		UpperBound: categoryKey(nil, cat, to),
	})
	if err != nil {
		return false
	}
	defer it.Close()
	n, first, last := 0, uint64(0), uint64(0)
	for ok := it.First(); ok && n < sample; ok = it.Next() {
		k := it.Key()
		if len(k) < 8 {
			return false
		}
		last = binary.BigEndian.Uint64(k[len(k)-8:])
		if n == 0 {
			first = last
		}
		n++
	}
	if n < sample {
		return true // fewer than sample events in the whole range
	}
	return last-first+1 > 4*uint64(n)
}

// scanCategory reads the events of one category with positions in
// [from, to), forwards or backwards, through the category index: it walks
// the index and reads each event by its position, so a category whose
// events are rare among all is read without reading the others. It
// returns at most max events (0: no limit); full reports that it stopped
// at max, last is then the position of the last event returned.
func (s *Store) scanCategory(ctx context.Context, cat string, from, to uint64, max int, filter *ledger.Filter, backwards bool) (evs []ledger.RecordedEvent, last uint64, full bool, err error) {
	idx, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: categoryKey(nil, cat, from),
		UpperBound: categoryKey(nil, cat, to),
	})
	if err != nil {
		return nil, 0, false, fmt.Errorf("pebbleledger: read category %s: %w", cat, err)
	}
	all, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: allKey(nil, from), UpperBound: allKey(nil, to)})
	if err != nil {
		_ = idx.Close()
		return nil, 0, false, fmt.Errorf("pebbleledger: read category %s: %w", cat, err)
	}
	step, start := idx.Next, idx.First
	if backwards {
		step, start = idx.Prev, idx.Last
	}
	var key []byte
	n := 0
	for ok := start(); ok; ok = step() {
		if n++; n%ctxCheckEvery == 0 {
			if err = ctx.Err(); err != nil {
				break
			}
		}
		k := idx.Key()
		if len(k) < 8 {
			err = fmt.Errorf("%w: category key %x", errCorrupt, k)
			break
		}
		pos := binary.BigEndian.Uint64(k[len(k)-8:])
		key = allKey(key[:0], pos)
		if !all.SeekGE(key) || !bytes.Equal(all.Key(), key) {
			err = fmt.Errorf("%w: category %s lists position %d, which holds no event", errCorrupt, cat, pos)
			break
		}
		var r recordView
		if _, r, err = decodeEntry(all); err != nil {
			break
		}
		if !r.matches(filter) {
			continue
		}
		evs = append(evs, r.event(pos))
		if max > 0 && len(evs) >= max {
			last, full = pos, true
			break
		}
	}
	if err = errors.Join(err, idx.Error(), idx.Close(), all.Error(), all.Close()); err != nil {
		return nil, 0, false, fmt.Errorf("pebbleledger: read category %s: %w", cat, err)
	}
	return evs, last, full, nil
}

func decodeEntry(it *pebble.Iterator) (uint64, recordView, error) {
	pos, err := allKeyPos(it.Key())
	if err != nil {
		return 0, recordView{}, err
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, recordView{}, err
	}
	r, err := decodeRecord(v)
	if err != nil {
		return 0, recordView{}, fmt.Errorf("position %d: %w", pos, err)
	}
	return pos, r, nil
}

// Subscribe implements ledger.Store. ctx bounds only the call; the
// subscription lives until it or the store is closed.
func (s *Store) Subscribe(ctx context.Context, from uint64, filter ledger.Filter) (ledger.Subscription, error) {
	if !s.enter() {
		return nil, ledger.ErrClosed
	}
	defer s.ops.Done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &subscription{
		s:   s,
		pos: from,
		filter: ledger.Filter{
			StreamPrefixes: slices.Clone(filter.StreamPrefixes),
			TypePrefixes:   slices.Clone(filter.TypePrefixes),
		},
		done: make(chan struct{}),
	}, nil
}

// subscription is a catch-up subscription: Recv reads acknowledged events
// after pos from Pebble; when there are none it waits for the writer to
// publish a new tip. It starts no goroutine.
type subscription struct {
	s      *Store
	pos    uint64 // last position scanned
	filter ledger.Filter
	done   chan struct{}
	once   sync.Once
}

// maxScan bounds the keys one Recv scans before it rechecks for Close, when
// the filter lets few events through.
const maxScan = 1 << 16

// Recv implements ledger.Subscription. The events returned are the
// caller's.
func (sub *subscription) Recv(ctx context.Context) ([]ledger.RecordedEvent, error) {
	s := sub.s
	for {
		select {
		case <-sub.done:
			return nil, ledger.ErrClosed
		case <-s.closing:
			return nil, ledger.ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Load the tip before reading: if nothing is new, its channel is
		// closed by the next commit, so no commit goes unnoticed.
		t := s.tip.Load()
		if t.pos > sub.pos {
			evs, err := sub.read(ctx, min(t.pos, sub.pos+maxScan))
			if err != nil || len(evs) > 0 {
				return evs, err
			}
			continue
		}
		select {
		case <-t.changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sub.done:
			return nil, ledger.ErrClosed
		case <-s.closing:
			return nil, ledger.ErrClosed
		}
	}
}

func (sub *subscription) read(ctx context.Context, upto uint64) ([]ledger.RecordedEvent, error) {
	if !sub.s.enter() {
		return nil, ledger.ErrClosed
	}
	defer sub.s.ops.Done()
	evs, next, err := sub.s.scan(ctx, sub.pos, upto, sub.s.subBatch, &sub.filter)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	sub.pos = next
	return evs, nil
}

// Close implements ledger.Subscription.
func (sub *subscription) Close() error {
	sub.once.Do(func() { close(sub.done) })
	return nil
}
