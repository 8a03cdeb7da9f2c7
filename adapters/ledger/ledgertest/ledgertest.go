// Package ledgertest is the conformance suite of the ledger port. Every
// ledger.Store implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) ledger.Store { ... }, ledgertest.Features{...})
//	}
//
// The suite calls newStore once per subtest. Each subtest writes only to
// streams whose names start with a prefix unique to it, so a store shared
// between subtests (a server) works when Features.SharedStore is set; without
// it the suite also checks the exact contents of $all and LastPosition.
//
// Some subtests close the store themselves (to check ErrClosed), so cleanup
// registered by newStore must tolerate a store that is already closed.
//
// Waiting is done by polling a condition or by blocking in Recv under a
// context with Features.Timeout; the timeout only turns a hang into a
// failure, no assertion depends on how fast a store is.
//
// Where the port's doc leaves room, the suite pins one reading:
//   - ReadStream backwards from a revision past the last one returns nothing
//     (like forwards); only ledger.End means "from the last event".
//   - An idempotent retry is recognised when its expected state is Any, or
//     any state that held when the earlier append was made: NoStream for an
//     append that created the stream, StreamExists or Revision(first-1)
//     otherwise. A retry at another state fails with
//     ErrWrongExpectedRevision or ErrIdempotency and writes nothing.
//   - Idempotency is by event id only: a retry with changed payloads is the
//     same append.
//   - Idempotency is per stream: reusing an earlier append's ids in another
//     stream may fail with ErrIdempotency or append new events there; either
//     way the earlier append's retries still return its result.
//   - Append with a context already done fails with the context's error and
//     writes nothing.
//   - After Store.Close every method fails with ErrClosed, and blocked Recv
//     calls return ErrClosed.
//   - Recorded is UTC, within the Append call, and does not go backwards
//     along $all.
package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// Features describes what a store can do and sizes the suite.
type Features struct {
	// ContiguousPositions: the store numbers the events of $all 1, 2, 3, ...
	// with no gaps. The port only promises increasing positions.
	ContiguousPositions bool

	// BinaryPayloads: Data and Metadata may be arbitrary bytes (NUL, invalid
	// UTF-8), not only JSON. JSON payloads must round-trip byte for byte in
	// any case.
	BinaryPayloads bool

	// SharedStore: newStore may return a store that already holds events, or
	// that others append to while the suite runs. The suite then checks only
	// the events of its own streams: no exact LastPosition, no unfiltered
	// reads of $all compared as a whole.
	SharedStore bool

	// Restart, if set, closes s and returns a store reopened on the same
	// storage (registering its own cleanup); it enables the durability
	// subtest. Nil skips it.
	Restart func(t *testing.T, s ledger.Store) ledger.Store

	// ConcurrentAppenders and AppendsPerAppender size the concurrency
	// subtests. Defaults: 8 and 200; with -short, 4 and 50.
	ConcurrentAppenders int
	AppendsPerAppender  int

	// ClockTolerance widens the window that RecordedEvent.Recorded must fall
	// in (between the start and the return of the Append call), for stores
	// that take the time from another clock or store it coarsely. Default 0.
	ClockTolerance time.Duration

	// Timeout bounds every wait of the suite (a Recv that should deliver, a
	// polled condition); reaching it fails the test. Default 30s.
	Timeout time.Duration
}

func (f Features) withDefaults() Features {
	if f.ConcurrentAppenders <= 0 {
		f.ConcurrentAppenders = 8
		if testing.Short() {
			f.ConcurrentAppenders = 4
		}
	}
	if f.AppendsPerAppender <= 0 {
		f.AppendsPerAppender = 200
		if testing.Short() {
			f.AppendsPerAppender = 50
		}
	}
	if f.Timeout <= 0 {
		f.Timeout = 30 * time.Second
	}
	return f
}

// Run runs the conformance suite. newStore returns an open store, fresh for
// the subtest unless f.SharedStore is set.
func Run(t *testing.T, newStore func(t *testing.T) ledger.Store, f Features) {
	f = f.withDefaults()
	tests := []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"AppendAndReadStream", testAppendAndReadStream},
		{"ReadStreamForwards", testReadStreamForwards},
		{"ReadStreamBackwards", testReadStreamBackwards},
		{"ReadStreamNotFound", testReadStreamNotFound},
		{"ExpectedState", testExpectedState},
		{"InvalidAppend", testInvalidAppend},
		{"Idempotency", testIdempotency},
		{"IdempotencyPartialOverlap", testIdempotencyPartial},
		{"IdempotencyConcurrentRetries", testIdempotencyConcurrent},
		{"GlobalPositions", testGlobalPositions},
		{"ReadAll", testReadAll},
		{"ReadAllFilter", testReadAllFilter},
		{"LastPosition", testLastPosition},
		{"SubscribeCatchUpThenLive", testSubscribeCatchUpThenLive},
		{"SubscribeFromMiddle", testSubscribeFromMiddle},
		{"SubscribeFilter", testSubscribeFilter},
		{"SubscribeConcurrentAppenders", testSubscribeConcurrent},
		{"SubscriptionClose", testSubscriptionClose},
		{"SubscriptionContext", testSubscriptionContext},
		{"ConcurrentExpectedRevision", testConcurrentExpectedRevision},
		{"ConcurrentOptimisticLoop", testConcurrentOptimisticLoop},
		{"PayloadRoundTrip", testPayloadRoundTrip},
		{"CallerOwnsSlices", testCallerOwnsSlices},
		{"Recorded", testRecorded},
		{"CanceledContext", testCanceledContext},
		{"StoreClose", testStoreClose},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &suite{t: t, store: newStore(t), f: f, prefix: "lt" + ledger.NewID()[:8] + "-"})
		})
	}
}

// suite is the state of one subtest.
type suite struct {
	t      *testing.T
	store  ledger.Store
	f      Features
	prefix string
}

func (s *suite) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.f.Timeout)
	s.t.Cleanup(cancel)
	return ctx
}

// stream returns a stream name unique to the subtest.
func (s *suite) stream(name string) string { return s.prefix + name }

// mine is a filter for the subtest's streams.
func (s *suite) mine() ledger.Filter {
	return ledger.Filter{StreamPrefixes: []string{s.prefix}}
}

func newEvent(typ string, i int) ledger.EventData {
	return ledger.EventData{
		ID:       ledger.NewID(),
		Type:     typ,
		Data:     fmt.Appendf(nil, `{"n":%d}`, i),
		Metadata: fmt.Appendf(nil, `{"m":%d}`, i),
	}
}

func newEvents(typ string, n int) []ledger.EventData {
	evs := make([]ledger.EventData, n)
	for i := range evs {
		evs[i] = newEvent(typ, i)
	}
	return evs
}

func (s *suite) append(stream string, exp ledger.StreamState, evs ...ledger.EventData) ledger.AppendResult {
	s.t.Helper()
	res, err := s.store.Append(s.ctx(), stream, exp, evs...)
	if err != nil {
		s.t.Fatalf("Append(%q, %v, %d events): %v", stream, exp, len(evs), err)
	}
	return res
}

func (s *suite) readStream(stream string, dir ledger.Direction, from uint64, max int) []ledger.RecordedEvent {
	s.t.Helper()
	evs, err := s.store.ReadStream(s.ctx(), stream, dir, from, max)
	if err != nil {
		s.t.Fatalf("ReadStream(%q, %v, %d, %d): %v", stream, dir, from, max, err)
	}
	return evs
}

func (s *suite) readAll(from uint64, dir ledger.Direction, max int, f ledger.Filter) []ledger.RecordedEvent {
	s.t.Helper()
	evs, err := s.store.ReadAll(s.ctx(), from, dir, max, f)
	if err != nil {
		s.t.Fatalf("ReadAll(%d, %v, %d, %+v): %v", from, dir, max, f, err)
	}
	return evs
}

func (s *suite) lastPosition() uint64 {
	s.t.Helper()
	p, err := s.store.LastPosition(s.ctx())
	if err != nil {
		s.t.Fatalf("LastPosition: %v", err)
	}
	return p
}

// all returns the subtest's events of $all, in order.
func (s *suite) all() []ledger.RecordedEvent {
	s.t.Helper()
	return s.readAll(0, ledger.Forwards, 0, s.mine())
}

func (s *suite) subscribe(from uint64, f ledger.Filter) ledger.Subscription {
	s.t.Helper()
	sub, err := s.store.Subscribe(s.ctx(), from, f)
	if err != nil {
		s.t.Fatalf("Subscribe(%d): %v", from, err)
	}
	s.t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// receive calls Recv until n events arrived and returns them. It fails if
// more than n arrive in the last batch or if Timeout passes first.
func (s *suite) receive(sub ledger.Subscription, n int) []ledger.RecordedEvent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.f.Timeout)
	defer cancel()
	var got []ledger.RecordedEvent
	for len(got) < n {
		evs, err := sub.Recv(ctx)
		if err != nil {
			s.t.Fatalf("Recv after %d of %d events: %v", len(got), n, err)
		}
		if len(evs) == 0 {
			s.t.Fatalf("Recv returned no events and no error")
		}
		got = append(got, evs...)
	}
	if len(got) > n {
		s.t.Fatalf("Recv delivered %d events, want %d: extra %v", len(got), n, positions(got[n:]))
	}
	return got
}

// eventually polls cond until it holds or Timeout passes.
func (s *suite) eventually(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(s.f.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func positions(evs []ledger.RecordedEvent) []uint64 {
	ps := make([]uint64, len(evs))
	for i, e := range evs {
		ps[i] = e.Position
	}
	return ps
}

func revisions(evs []ledger.RecordedEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Revision
	}
	return out
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// sameEvent compares two recorded events field by field (nil and empty
// payloads are equal).
func sameEvent(a, b ledger.RecordedEvent) bool {
	return a.ID == b.ID && a.Stream == b.Stream && a.Revision == b.Revision &&
		a.Position == b.Position && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Metadata, b.Metadata) &&
		a.Recorded.Equal(b.Recorded)
}

func (s *suite) sameEvents(what string, got, want []ledger.RecordedEvent) {
	s.t.Helper()
	if len(got) != len(want) {
		s.t.Fatalf("%s: %d events %v, want %d %v", what, len(got), positions(got), len(want), positions(want))
	}
	for i := range got {
		if !sameEvent(got[i], want[i]) {
			s.t.Fatalf("%s: event %d = %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

func strictlyIncreasing(evs []ledger.RecordedEvent) bool {
	for i := 1; i < len(evs); i++ {
		if evs[i].Position <= evs[i-1].Position {
			return false
		}
	}
	return true
}

// checkAppended checks that stream holds exactly data at revisions 0.. with
// the fields of the appends.
func (s *suite) checkStream(stream string, data []ledger.EventData) []ledger.RecordedEvent {
	s.t.Helper()
	got := s.readStream(stream, ledger.Forwards, 0, 0)
	if len(got) != len(data) {
		s.t.Fatalf("stream %q has %d events, want %d", stream, len(got), len(data))
	}
	for i, e := range got {
		d := data[i]
		if e.ID != d.ID || e.Type != d.Type || e.Stream != stream || e.Revision != uint64(i) ||
			!bytes.Equal(e.Data, d.Data) || !bytes.Equal(e.Metadata, d.Metadata) {
			s.t.Fatalf("stream %q event %d = %+v, want revision %d of %+v", stream, i, e, i, d)
		}
	}
	if !strictlyIncreasing(got) {
		s.t.Fatalf("stream %q positions not increasing: %v", stream, positions(got))
	}
	return got
}

func testAppendAndReadStream(t *testing.T, s *suite) {
	st := s.stream("order-1")
	evs := newEvents("order.placed", 3)
	res := s.append(st, ledger.NoStream{}, evs...)
	if res.NextExpectedRevision != 2 {
		t.Fatalf("NextExpectedRevision = %d, want 2", res.NextExpectedRevision)
	}
	got := s.checkStream(st, evs)
	if res.Position != got[2].Position {
		t.Fatalf("AppendResult.Position = %d, want the last event's %d", res.Position, got[2].Position)
	}
	if got[0].Position == 0 {
		t.Fatalf("position 0 used; positions count from 1")
	}
	if s.f.ContiguousPositions && (got[1].Position != got[0].Position+1 || got[2].Position != got[1].Position+1) {
		t.Fatalf("positions %v not contiguous", positions(got))
	}

	more := newEvents("order.shipped", 2)
	res2 := s.append(st, ledger.Revision(2), more...)
	if res2.NextExpectedRevision != 4 || res2.Position <= res.Position {
		t.Fatalf("second append = %+v after %+v", res2, res)
	}
	s.checkStream(st, append(slices.Clone(evs), more...))
}

// fiveEvents appends 5 events in separate appends and returns them as read.
func (s *suite) fiveEvents(st string) []ledger.RecordedEvent {
	s.t.Helper()
	evs := newEvents("thing.happened", 5)
	for _, e := range evs {
		s.append(st, ledger.Any{}, e)
	}
	return s.checkStream(st, evs)
}

func testReadStreamForwards(t *testing.T, s *suite) {
	st := s.stream("fwd")
	all := s.fiveEvents(st)
	cases := []struct {
		from uint64
		max  int
		want []ledger.RecordedEvent
	}{
		{0, 0, all},
		{0, -1, all},
		{0, 5, all},
		{0, 100, all},
		{0, 2, all[:2]},
		{2, 0, all[2:]},
		{2, 2, all[2:4]},
		{4, 0, all[4:]},
		{4, 10, all[4:]},
		{5, 0, nil},
		{1000, 3, nil},
		{ledger.End, 0, nil},
	}
	for _, c := range cases {
		got := s.readStream(st, ledger.Forwards, c.from, c.max)
		s.sameEvents(fmt.Sprintf("forwards from %d max %d", c.from, c.max), got, c.want)
	}
}

func testReadStreamBackwards(t *testing.T, s *suite) {
	st := s.stream("bwd")
	all := s.fiveEvents(st)
	back := reversed(all)
	cases := []struct {
		from uint64
		max  int
		want []ledger.RecordedEvent
	}{
		{ledger.End, 0, back},
		{ledger.End, -1, back},
		{ledger.End, 2, back[:2]},
		{ledger.End, 5, back},
		{ledger.End, 50, back},
		{4, 0, back},
		{3, 0, back[1:]},
		{3, 2, back[1:3]},
		{0, 0, back[4:]},
		{0, 7, back[4:]},
		// Past the end: "a start past the end returns no events and no
		// error" holds in both directions; only End means "from the last".
		{5, 0, nil},
		{1000, 2, nil},
	}
	for _, c := range cases {
		got := s.readStream(st, ledger.Backwards, c.from, c.max)
		s.sameEvents(fmt.Sprintf("backwards from %d max %d", c.from, c.max), got, c.want)
	}
}

func testReadStreamNotFound(t *testing.T, s *suite) {
	for _, dir := range []ledger.Direction{ledger.Forwards, ledger.Backwards} {
		for _, from := range []uint64{0, 3, ledger.End} {
			_, err := s.store.ReadStream(s.ctx(), s.stream("nothing"), dir, from, 0)
			if !errors.Is(err, ledger.ErrStreamNotFound) {
				t.Fatalf("ReadStream of a missing stream (dir %v from %d) = %v, want ErrStreamNotFound", dir, from, err)
			}
		}
	}
	// A stream whose name is a prefix of another's is still missing.
	s.append(s.stream("nothing-more"), ledger.Any{}, newEvent("x", 0))
	if _, err := s.store.ReadStream(s.ctx(), s.stream("nothing"), ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrStreamNotFound) {
		t.Fatalf("ReadStream of a missing stream next to another = %v, want ErrStreamNotFound", err)
	}
	if evs := s.readStream(s.stream("nothing-more"), ledger.Forwards, 0, 0); len(evs) != 1 {
		t.Fatalf("read %d events, want 1", len(evs))
	}
}

func testExpectedState(t *testing.T, s *suite) {
	cases := []struct {
		name     string
		before   int
		expected ledger.StreamState
		ok       bool
	}{
		{"AnyOnMissing", 0, ledger.Any{}, true},
		{"AnyOnExisting", 2, ledger.Any{}, true},
		{"NoStreamOnMissing", 0, ledger.NoStream{}, true},
		{"NoStreamOnExisting", 1, ledger.NoStream{}, false},
		{"StreamExistsOnMissing", 0, ledger.StreamExists{}, false},
		{"StreamExistsOnExisting", 3, ledger.StreamExists{}, true},
		{"RevisionMatches", 3, ledger.Revision(2), true},
		{"RevisionZeroMatches", 1, ledger.Revision(0), true},
		{"RevisionBehind", 3, ledger.Revision(1), false},
		{"RevisionAhead", 3, ledger.Revision(3), false},
		{"RevisionFarAhead", 3, ledger.Revision(1 << 40), false},
		{"RevisionZeroOnMissing", 0, ledger.Revision(0), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &suite{t: t, store: s.store, f: s.f, prefix: s.prefix + c.name + "-"}
			st := s.stream("s")
			var before []ledger.EventData
			if c.before > 0 {
				before = newEvents("before", c.before)
				s.append(st, ledger.NoStream{}, before...)
			}
			lastBefore := s.lastPosition()
			evs := newEvents("attempt", 2)
			res, err := s.store.Append(s.ctx(), st, c.expected, evs...)
			if c.ok {
				if err != nil {
					t.Fatalf("Append with %v on %d events: %v", c.expected, c.before, err)
				}
				if want := uint64(c.before + 1); res.NextExpectedRevision != want {
					t.Fatalf("NextExpectedRevision = %d, want %d", res.NextExpectedRevision, want)
				}
				s.checkStream(st, append(before, evs...))
				return
			}
			if !errors.Is(err, ledger.ErrWrongExpectedRevision) {
				t.Fatalf("Append with %v on %d events = %v, want ErrWrongExpectedRevision", c.expected, c.before, err)
			}
			var wre *ledger.WrongRevisionError
			if !errors.As(err, &wre) {
				t.Fatalf("error %v is not a *WrongRevisionError", err)
			}
			if wre.Stream != st || wre.Expected != c.expected {
				t.Fatalf("WrongRevisionError = %+v, want stream %q expected %v", wre, st, c.expected)
			}
			if c.before == 0 {
				if wre.ActualExists {
					t.Fatalf("WrongRevisionError = %+v, want ActualExists false", wre)
				}
			} else if !wre.ActualExists || wre.Actual != uint64(c.before-1) {
				t.Fatalf("WrongRevisionError = %+v, want Actual %d", wre, c.before-1)
			}
			// Nothing written.
			if c.before == 0 {
				if _, err := s.store.ReadStream(s.ctx(), st, ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrStreamNotFound) {
					t.Fatalf("after a failed append the stream reads %v, want ErrStreamNotFound", err)
				}
			} else {
				s.checkStream(st, before)
			}
			if got := s.all(); len(got) != c.before {
				t.Fatalf("$all holds %d events of the test, want %d", len(got), c.before)
			}
			if !s.f.SharedStore {
				if p := s.lastPosition(); p != lastBefore {
					t.Fatalf("LastPosition moved from %d to %d on a failed append", lastBefore, p)
				}
			}
			// The ids were not consumed: the same events append fine now.
			res, err = s.store.Append(s.ctx(), st, ledger.Any{}, evs...)
			if err != nil {
				t.Fatalf("append after the failure: %v", err)
			}
			if res.NextExpectedRevision != uint64(c.before+1) {
				t.Fatalf("NextExpectedRevision = %d, want %d", res.NextExpectedRevision, c.before+1)
			}
		})
	}
}

func testInvalidAppend(t *testing.T, s *suite) {
	st := s.stream("inv")
	good := newEvent("ok", 0)
	dup := newEvent("ok", 1)
	cases := []struct {
		name   string
		stream string
		events []ledger.EventData
	}{
		{"NoEvents", st, nil},
		{"EmptyStream", "", []ledger.EventData{good}},
		{"EmptyID", st, []ledger.EventData{{Type: "t", Data: []byte("{}")}}},
		{"EmptyType", st, []ledger.EventData{{ID: ledger.NewID(), Data: []byte("{}")}}},
		{"EmptyIDAfterGood", st, []ledger.EventData{good, {Type: "t"}}},
		{"DuplicateIDs", st, []ledger.EventData{dup, good, dup}},
		{"DuplicateAdjacent", st, []ledger.EventData{good, good}},
	}
	before := s.lastPosition()
	for _, c := range cases {
		for _, exp := range []ledger.StreamState{ledger.Any{}, ledger.NoStream{}} {
			_, err := s.store.Append(s.ctx(), c.stream, exp, c.events...)
			if !errors.Is(err, ledger.ErrInvalidAppend) {
				t.Fatalf("%s with %v: err = %v, want ErrInvalidAppend", c.name, exp, err)
			}
		}
	}
	if _, err := s.store.ReadStream(s.ctx(), st, ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrStreamNotFound) {
		t.Fatalf("after invalid appends the stream reads %v, want ErrStreamNotFound", err)
	}
	if !s.f.SharedStore && s.lastPosition() != before {
		t.Fatalf("LastPosition moved on invalid appends")
	}
	// The valid event was not consumed by the failed appends.
	s.append(st, ledger.NoStream{}, good, dup)
	s.checkStream(st, []ledger.EventData{good, dup})
}

func testIdempotency(t *testing.T, s *suite) {
	st := s.stream("idem")
	first := newEvents("e", 2)
	r1 := s.append(st, ledger.NoStream{}, first...)
	second := newEvents("e", 3)
	r2 := s.append(st, ledger.Revision(1), second...)
	third := newEvents("e", 1)
	r3 := s.append(st, ledger.StreamExists{}, third...)
	all := append(append(slices.Clone(first), second...), third...)
	stored := s.checkStream(st, all)
	last := s.lastPosition()

	cases := []struct {
		name string
		exp  ledger.StreamState
		evs  []ledger.EventData
		want ledger.AppendResult
	}{
		{"FirstAny", ledger.Any{}, first, r1},
		{"FirstOriginalNoStream", ledger.NoStream{}, first, r1},
		{"SecondAny", ledger.Any{}, second, r2},
		{"SecondOriginalRevision", ledger.Revision(1), second, r2},
		{"ThirdAny", ledger.Any{}, third, r3},
		{"ThirdOriginalStreamExists", ledger.StreamExists{}, third, r3},
		// "The state the earlier append was made at" is the stream's state
		// then, whatever expected state the first attempt passed: a retry
		// that states it exactly is the same append.
		{"SecondStreamExists", ledger.StreamExists{}, second, r2},
		{"ThirdAtItsRevision", ledger.Revision(4), third, r3},
	}
	for _, c := range cases {
		for range 2 {
			got, err := s.store.Append(s.ctx(), st, c.exp, c.evs...)
			if err != nil {
				t.Fatalf("%s: re-append: %v", c.name, err)
			}
			if got != c.want {
				t.Fatalf("%s: re-append result %+v, want the original %+v", c.name, got, c.want)
			}
		}
	}
	// Nothing was written: the stream and $all are unchanged.
	s.sameEvents("stream after re-appends", s.readStream(st, ledger.Forwards, 0, 0), stored)
	s.sameEvents("$all after re-appends", s.all(), stored)
	if !s.f.SharedStore && s.lastPosition() != last {
		t.Fatalf("LastPosition moved on idempotent re-appends")
	}
	// A retry at a state the append was not made at is refused one way or
	// the other, and writes nothing.
	for _, exp := range []ledger.StreamState{ledger.Revision(0), ledger.Revision(3), ledger.Revision(5)} {
		_, err := s.store.Append(s.ctx(), st, exp, first...)
		if !errors.Is(err, ledger.ErrWrongExpectedRevision) && !errors.Is(err, ledger.ErrIdempotency) {
			t.Fatalf("retry of the first append at %v = %v, want ErrWrongExpectedRevision or ErrIdempotency", exp, err)
		}
	}
	s.sameEvents("stream after mismatched retries", s.readStream(st, ledger.Forwards, 0, 0), stored)
	// Re-appending with payloads changed is still the same append (by id).
	changed := slices.Clone(first)
	changed[0].Data = []byte(`{"changed":true}`)
	if got, err := s.store.Append(s.ctx(), st, ledger.Any{}, changed...); err != nil || got != r1 {
		t.Fatalf("re-append with changed payload = %+v, %v; want %+v", got, err, r1)
	}
	s.sameEvents("stream after re-append with changed payload", s.readStream(st, ledger.Forwards, 0, 0), stored)
}

func testIdempotencyPartial(t *testing.T, s *suite) {
	st := s.stream("partial")
	other := s.stream("partial-other")
	evs := newEvents("e", 3)
	s.append(st, ledger.NoStream{}, evs...)
	single := newEvent("e", 9)
	s.append(st, ledger.Any{}, single)
	stored := s.checkStream(st, append(slices.Clone(evs), single))
	fresh := newEvent("e", 7)

	cases := []struct {
		name   string
		stream string
		exp    ledger.StreamState
		evs    []ledger.EventData
	}{
		{"Prefix", st, ledger.Any{}, evs[:2]},
		{"Suffix", st, ledger.Any{}, evs[1:]},
		{"Middle", st, ledger.Any{}, evs[1:2]},
		{"Superset", st, ledger.Any{}, append(slices.Clone(evs), fresh)},
		{"NewThenOld", st, ledger.Any{}, []ledger.EventData{fresh, evs[0]}},
		{"Reordered", st, ledger.Any{}, []ledger.EventData{evs[1], evs[0], evs[2]}},
		{"TwoAppendsJoined", st, ledger.Any{}, append(slices.Clone(evs), single)},
		{"PrefixWithRevision", st, ledger.Revision(3), evs[:1]},
	}
	for _, c := range cases {
		_, err := s.store.Append(s.ctx(), c.stream, c.exp, c.evs...)
		if !errors.Is(err, ledger.ErrIdempotency) {
			t.Fatalf("%s: err = %v, want ErrIdempotency", c.name, err)
		}
	}
	s.sameEvents("stream after partial re-appends", s.readStream(st, ledger.Forwards, 0, 0), stored)
	s.sameEvents("$all after partial re-appends", s.all(), stored)
	// The fresh id was not consumed.
	s.append(st, ledger.Revision(3), fresh)
	stored = s.checkStream(st, append(append(slices.Clone(evs), single), fresh))
	s.otherStreamReuse(st, other, stored, evs, single)
}

// otherStreamReuse: ids of appends to st (evs, then single, both already in
// st as stored) reused in another stream. Idempotency is per stream, so a
// store may refuse that with ErrIdempotency or append new events there;
// either way st is unchanged and retries of its appends to st still return
// their results.
func (s *suite) otherStreamReuse(st, other string, stored []ledger.RecordedEvent, evs []ledger.EventData, single ledger.EventData) {
	t := s.t
	rEvs := ledger.AppendResult{NextExpectedRevision: stored[len(evs)-1].Revision, Position: stored[len(evs)-1].Position}
	rSingle := ledger.AppendResult{NextExpectedRevision: stored[len(evs)].Revision, Position: stored[len(evs)].Position}
	var want []ledger.EventData
	for _, c := range []struct {
		name string
		exp  ledger.StreamState
		evs  []ledger.EventData
	}{
		{"OtherStream", ledger.NoStream{}, evs},
		{"OtherStreamSingle", ledger.Any{}, []ledger.EventData{single}},
	} {
		_, err := s.store.Append(s.ctx(), other, c.exp, c.evs...)
		switch {
		case err == nil:
			want = append(want, c.evs...)
		case errors.Is(err, ledger.ErrIdempotency):
		default:
			t.Fatalf("%s: err = %v, want nil or ErrIdempotency", c.name, err)
		}
	}
	if len(want) == 0 {
		if _, err := s.store.ReadStream(s.ctx(), other, ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrStreamNotFound) {
			t.Fatalf("other stream reads %v, want ErrStreamNotFound", err)
		}
	} else {
		s.checkStream(other, want)
	}
	s.sameEvents("stream after reuse in another stream", s.readStream(st, ledger.Forwards, 0, 0), stored)
	if got, err := s.store.Append(s.ctx(), st, ledger.Any{}, evs...); err != nil || got != rEvs {
		t.Fatalf("retry after reuse in another stream = %+v, %v; want %+v", got, err, rEvs)
	}
	if got, err := s.store.Append(s.ctx(), st, ledger.Any{}, single); err != nil || got != rSingle {
		t.Fatalf("retry after reuse in another stream = %+v, %v; want %+v", got, err, rSingle)
	}
	if _, err := s.store.Append(s.ctx(), st, ledger.Any{}, evs[1:]...); !errors.Is(err, ledger.ErrIdempotency) {
		t.Fatalf("partial retry after reuse in another stream = %v, want ErrIdempotency", err)
	}
	s.sameEvents("stream after retries", s.readStream(st, ledger.Forwards, 0, 0), stored)
}

// testIdempotencyConcurrentRetries: the same append retried concurrently is
// written once and every retry gets its result.
func testIdempotencyConcurrent(t *testing.T, s *suite) {
	n := s.f.ConcurrentAppenders
	for round := range 20 {
		st := s.stream(fmt.Sprintf("retry-%d", round))
		evs := newEvents("e", 1+round%3)
		results := make([]ledger.AppendResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				var exp ledger.StreamState = ledger.Any{}
				if i%2 == 1 {
					exp = ledger.NoStream{}
				}
				results[i], errs[i] = s.store.Append(s.ctx(), st, exp, evs...)
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d appender %d: %v", round, i, errs[i])
			}
			if results[i] != results[0] {
				t.Fatalf("round %d: results differ: %+v and %+v", round, results[i], results[0])
			}
		}
		s.checkStream(st, evs)
	}
}

func testGlobalPositions(t *testing.T, s *suite) {
	type appended struct {
		stream string
		evs    []ledger.EventData
		res    ledger.AppendResult
	}
	var log []appended
	streams := []string{s.stream("a"), s.stream("b"), s.stream("c")}
	for i := range 30 {
		st := streams[i*7%len(streams)]
		evs := newEvents("e", 1+i%4)
		log = append(log, appended{st, evs, s.append(st, ledger.Any{}, evs...)})
	}
	all := s.all()
	if !strictlyIncreasing(all) {
		t.Fatalf("$all positions not strictly increasing: %v", positions(all))
	}
	// $all is the acknowledged order; each AppendResult.Position is its
	// last event's position.
	i := 0
	var prev uint64
	for _, a := range log {
		for j, d := range a.evs {
			e := all[i]
			if e.ID != d.ID || e.Stream != a.stream {
				t.Fatalf("$all[%d] = %s in %s, want %s in %s", i, e.ID, e.Stream, d.ID, a.stream)
			}
			if j == len(a.evs)-1 && e.Position != a.res.Position {
				t.Fatalf("append result position %d, last event at %d", a.res.Position, e.Position)
			}
			i++
		}
		if a.res.Position <= prev {
			t.Fatalf("append positions not increasing: %d after %d", a.res.Position, prev)
		}
		prev = a.res.Position
	}
	if i != len(all) {
		t.Fatalf("$all holds %d events, appended %d", len(all), i)
	}
	if !s.f.SharedStore {
		unfiltered := s.readAll(0, ledger.Forwards, 0, ledger.Filter{})
		s.sameEvents("unfiltered $all", unfiltered, all)
		if s.f.ContiguousPositions {
			for k, e := range all {
				if e.Position != uint64(k+1) {
					t.Fatalf("$all[%d] at position %d; want contiguous from 1", k, e.Position)
				}
			}
		}
	} else if s.f.ContiguousPositions {
		for k := 1; k < len(all); k++ {
			if all[k].Position != all[k-1].Position+1 {
				t.Fatalf("positions %d, %d not contiguous", all[k-1].Position, all[k].Position)
			}
		}
	}
	// Each stream's own events are in revision order and position order.
	for _, st := range streams {
		evs := s.readStream(st, ledger.Forwards, 0, 0)
		for k, e := range evs {
			if e.Revision != uint64(k) {
				t.Fatalf("%s revisions %v", st, revisions(evs))
			}
		}
		if !strictlyIncreasing(evs) {
			t.Fatalf("%s positions not increasing: %v", st, positions(evs))
		}
	}
}

// mixed appends 12 events to three categories with two types and returns
// them as read from $all.
func (s *suite) mixed() []ledger.RecordedEvent {
	s.t.Helper()
	for i := range 12 {
		st := s.stream([]string{"order-1", "order-2", "user-1"}[i%3])
		typ := []string{"created.v1", "updated.v1"}[i/2%2]
		if i%3 == 2 {
			typ = "user." + typ
		} else {
			typ = "order." + typ
		}
		s.append(st, ledger.Any{}, newEvent(typ, i))
	}
	all := s.all()
	if len(all) != 12 {
		s.t.Fatalf("$all holds %d events, want 12", len(all))
	}
	return all
}

func testReadAll(t *testing.T, s *suite) {
	all := s.mixed()
	mine := s.mine()
	p := positions(all)
	back := reversed(all)
	cases := []struct {
		name string
		from uint64
		dir  ledger.Direction
		max  int
		want []ledger.RecordedEvent
	}{
		{"ForwardsFromZero", 0, ledger.Forwards, 0, all},
		{"ForwardsMax", 0, ledger.Forwards, 5, all[:5]},
		{"ForwardsNegativeMax", 0, ledger.Forwards, -3, all},
		{"ForwardsFromFirst", p[0], ledger.Forwards, 0, all[1:]},
		{"ForwardsFromMiddle", p[5], ledger.Forwards, 0, all[6:]},
		{"ForwardsFromMiddleMax", p[5], ledger.Forwards, 3, all[6:9]},
		{"ForwardsFromBeforeMiddle", p[5] - 1, ledger.Forwards, 1, all[5:6]},
		{"ForwardsFromLast", p[11], ledger.Forwards, 0, nil},
		{"ForwardsFromFuture", p[11] + 1000, ledger.Forwards, 0, nil},
		{"BackwardsFromEnd", ledger.End, ledger.Backwards, 0, back},
		{"BackwardsFromEndMax", ledger.End, ledger.Backwards, 4, back[:4]},
		{"BackwardsFromLast", p[11], ledger.Backwards, 0, back[1:]},
		{"BackwardsFromMiddle", p[6], ledger.Backwards, 0, reversed(all[:6])},
		{"BackwardsFromMiddleMax", p[6], ledger.Backwards, 2, reversed(all[4:6])},
		{"BackwardsFromAfterMiddle", p[6] + 1, ledger.Backwards, 1, all[6:7]},
		{"BackwardsFromFirst", p[0], ledger.Backwards, 0, nil},
		{"BackwardsFromFuture", p[11] + 1000, ledger.Backwards, 0, back},
	}
	for _, c := range cases {
		got := s.readAll(c.from, c.dir, c.max, mine)
		s.sameEvents(c.name, got, c.want)
		if !s.f.SharedStore {
			// The suite's streams are the whole store: unfiltered reads agree.
			s.sameEvents(c.name+" unfiltered", s.readAll(c.from, c.dir, c.max, ledger.Filter{}), c.want)
		}
	}
	// A zero-position backwards read is empty (nothing is below position 1).
	if got := s.readAll(0, ledger.Backwards, 0, mine); len(got) != 0 {
		t.Fatalf("backwards from 0 read %d events", len(got))
	}
	// The records of $all and of the streams are the same.
	for _, e := range all {
		one := s.readStream(e.Stream, ledger.Forwards, e.Revision, 1)
		s.sameEvents("stream read of "+e.ID, one, []ledger.RecordedEvent{e})
	}
}

func testReadAllFilter(t *testing.T, s *suite) {
	all := s.mixed()
	sel := func(keep func(e ledger.RecordedEvent) bool) []ledger.RecordedEvent {
		var out []ledger.RecordedEvent
		for _, e := range all {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	orders := s.prefix + "order-"
	cases := []struct {
		name   string
		filter ledger.Filter
		keep   func(e ledger.RecordedEvent) bool
	}{
		{"StreamPrefix", ledger.Filter{StreamPrefixes: []string{orders}},
			func(e ledger.RecordedEvent) bool { return strings.HasPrefix(e.Stream, orders) }},
		{"ExactStreamAsPrefix", ledger.Filter{StreamPrefixes: []string{s.stream("order-2")}},
			func(e ledger.RecordedEvent) bool { return e.Stream == s.stream("order-2") }},
		{"TwoStreamPrefixes", ledger.Filter{StreamPrefixes: []string{s.stream("order-1"), s.stream("user-")}},
			func(e ledger.RecordedEvent) bool { return e.Stream != s.stream("order-2") }},
		{"TypePrefix", ledger.Filter{StreamPrefixes: []string{s.prefix}, TypePrefixes: []string{"order."}},
			func(e ledger.RecordedEvent) bool { return strings.HasPrefix(e.Type, "order.") }},
		{"TwoTypePrefixes", ledger.Filter{StreamPrefixes: []string{s.prefix}, TypePrefixes: []string{"order.created", "user.updated"}},
			func(e ledger.RecordedEvent) bool {
				return e.Type == "order.created.v1" || e.Type == "user.updated.v1"
			}},
		{"Both", ledger.Filter{StreamPrefixes: []string{orders}, TypePrefixes: []string{"order.updated"}},
			func(e ledger.RecordedEvent) bool {
				return strings.HasPrefix(e.Stream, orders) && e.Type == "order.updated.v1"
			}},
		{"BothDisjoint", ledger.Filter{StreamPrefixes: []string{orders}, TypePrefixes: []string{"user."}},
			func(e ledger.RecordedEvent) bool { return false }},
		{"NoMatch", ledger.Filter{StreamPrefixes: []string{s.prefix + "nobody"}},
			func(e ledger.RecordedEvent) bool { return false }},
	}
	for _, c := range cases {
		want := sel(c.keep)
		if len(want) == 0 && !strings.Contains(c.name, "Disjoint") && c.name != "NoMatch" {
			t.Fatalf("%s: test data selects nothing", c.name)
		}
		for _, e := range want {
			if !c.filter.Match(e.Stream, e.Type) {
				t.Fatalf("%s: Filter.Match disagrees on %s/%s", c.name, e.Stream, e.Type)
			}
		}
		s.sameEvents(c.name+" forwards", s.readAll(0, ledger.Forwards, 0, c.filter), want)
		s.sameEvents(c.name+" backwards", s.readAll(ledger.End, ledger.Backwards, 0, c.filter), reversed(want))
		// max counts matching events, not scanned ones.
		if len(want) >= 3 {
			s.sameEvents(c.name+" forwards max 2", s.readAll(0, ledger.Forwards, 2, c.filter), want[:2])
			s.sameEvents(c.name+" backwards max 2", s.readAll(ledger.End, ledger.Backwards, 2, c.filter), reversed(want)[:2])
			mid := want[1].Position
			s.sameEvents(c.name+" forwards from", s.readAll(mid, ledger.Forwards, 0, c.filter), want[2:])
			s.sameEvents(c.name+" backwards from", s.readAll(want[2].Position, ledger.Backwards, 0, c.filter), reversed(want[:2]))
		}
	}
}

func testLastPosition(t *testing.T, s *suite) {
	if !s.f.SharedStore {
		if p := s.lastPosition(); p != 0 {
			t.Fatalf("LastPosition of an empty store = %d, want 0", p)
		}
	}
	base := s.lastPosition()
	var last ledger.AppendResult
	for i := range 5 {
		last = s.append(s.stream(fmt.Sprint(i%2)), ledger.Any{}, newEvents("e", 1+i)...)
		p := s.lastPosition()
		if p < last.Position || p <= base {
			t.Fatalf("LastPosition %d before the acknowledged position %d", p, last.Position)
		}
		if !s.f.SharedStore && p != last.Position {
			t.Fatalf("LastPosition = %d, want %d", p, last.Position)
		}
	}
	all := s.all()
	if all[len(all)-1].Position != last.Position {
		t.Fatalf("last event at %d, last append at %d", all[len(all)-1].Position, last.Position)
	}
}

func testSubscribeCatchUpThenLive(t *testing.T, s *suite) {
	st := s.stream("sub")
	stored := newEvents("e", 5)
	for _, e := range stored {
		s.append(st, ledger.Any{}, e)
	}
	from := uint64(0)
	if s.f.SharedStore {
		from = s.all()[0].Position - 1
	}
	sub := s.subscribe(from, s.mine())
	got := s.receive(sub, 5)
	s.sameEvents("catch-up", got, s.all())

	live := newEvents("live", 7)
	s.append(st, ledger.Revision(4), live[:3]...)
	s.append(s.stream("sub-2"), ledger.NoStream{}, live[3])
	s.append(st, ledger.Any{}, live[4:]...)
	got = append(got, s.receive(sub, 7)...)
	s.sameEvents("catch-up and live", got, s.all())

	// A second subscription started now catches up the same history.
	sub2 := s.subscribe(from, s.mine())
	s.sameEvents("second subscription", s.receive(sub2, 12), got)

	// Live only: from the current position nothing old is delivered.
	sub3 := s.subscribe(got[len(got)-1].Position, s.mine())
	e := newEvent("later", 0)
	s.append(st, ledger.Any{}, e)
	late := s.receive(sub3, 1)
	if late[0].ID != e.ID {
		t.Fatalf("live-only subscription got %s, want %s", late[0].ID, e.ID)
	}
	if more := s.receive(sub, 1); !sameEvent(more[0], late[0]) {
		t.Fatalf("first subscription got %+v, want %+v", more[0], late[0])
	}
}

func testSubscribeFromMiddle(t *testing.T, s *suite) {
	st := s.stream("mid")
	for i := range 10 {
		s.append(st, ledger.Any{}, newEvent("e", i))
	}
	all := s.all()
	for _, k := range []int{0, 3, 9} {
		sub := s.subscribe(all[k].Position, s.mine())
		got := s.receive(sub, len(all)-k-1)
		s.sameEvents(fmt.Sprintf("from position of event %d", k), got, all[k+1:])
		_ = sub.Close()
	}
	// Between two positions (stores with gaps): from p-1 includes p.
	sub := s.subscribe(all[5].Position-1, s.mine())
	s.sameEvents("from just before event 5", s.receive(sub, 5), all[5:])
}

func testSubscribeFilter(t *testing.T, s *suite) {
	orders := s.prefix + "order-"
	f := ledger.Filter{StreamPrefixes: []string{orders}, TypePrefixes: []string{"order.updated"}}
	all := s.mixed()
	var want []ledger.RecordedEvent
	for _, e := range all {
		if f.Match(e.Stream, e.Type) {
			want = append(want, e)
		}
	}
	sub := s.subscribe(0, f)
	got := s.receive(sub, len(want))
	s.sameEvents("filtered catch-up", got, want)

	// Live: many non-matching events, then one that matches.
	for i := range 20 {
		s.append(s.stream("user-9"), ledger.Any{}, newEvent("order.updated.v1", i))
		s.append(s.stream("order-9"), ledger.Any{}, newEvent("order.created.v1", i))
	}
	hit := newEvent("order.updated.v2", 0)
	s.append(s.stream("order-9"), ledger.Any{}, hit)
	live := s.receive(sub, 1)
	if live[0].ID != hit.ID || live[0].Stream != s.stream("order-9") {
		t.Fatalf("filtered live event = %+v, want %s", live[0], hit.ID)
	}
}

// testSubscribeConcurrent: many appenders, one subscription started before
// them and one started while they run; both see exactly every acknowledged
// event, in increasing position order.
func testSubscribeConcurrent(t *testing.T, s *suite) {
	n, per := s.f.ConcurrentAppenders, s.f.AppendsPerAppender
	total := n * per
	from := s.lastPosition()
	early := s.subscribe(from, s.mine())

	var (
		mu    sync.Mutex
		acked = make(map[uint64]string, total) // position -> id
		count atomic.Int64
		half  = make(chan struct{})
		once  sync.Once
		wg    sync.WaitGroup
		errs  = make(chan error, n)
	)
	for g := range n {
		wg.Go(func() {
			for i := range per {
				st := s.stream(fmt.Sprintf("c-%d-%d", g, i%5))
				e := newEvent("e", i)
				res, err := s.store.Append(context.Background(), st, ledger.Any{}, e)
				if err != nil {
					errs <- fmt.Errorf("appender %d append %d: %w", g, i, err)
					return
				}
				mu.Lock()
				acked[res.Position] = e.ID
				mu.Unlock()
				if count.Add(1) == int64(max(total/2, 1)) {
					once.Do(func() { close(half) })
				}
			}
		})
	}
	// The late subscription starts while appends are in flight, so its
	// catch-up races the live appends.
	var late ledger.Subscription
	select {
	case <-half:
		late = s.subscribe(from, s.mine())
	case err := <-errs:
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := make([]uint64, 0, total)
	for p := range acked {
		want = append(want, p)
	}
	slices.Sort(want)
	for name, sub := range map[string]ledger.Subscription{"early": early, "late": late} {
		got := s.receive(sub, total)
		if !strictlyIncreasing(got) {
			t.Fatalf("%s subscription: positions not increasing", name)
		}
		for i, e := range got {
			if e.Position != want[i] || acked[e.Position] != e.ID {
				t.Fatalf("%s subscription: event %d at %d (%s), want %d (%s)", name, i, e.Position, e.ID, want[i], acked[want[i]])
			}
		}
	}
	// And $all agrees with the subscriptions.
	all := s.all()
	if len(all) != total {
		t.Fatalf("$all holds %d events, acknowledged %d", len(all), total)
	}
	for i, e := range all {
		if e.Position != want[i] {
			t.Fatalf("$all[%d] at %d, want %d", i, e.Position, want[i])
		}
	}
}

func testSubscriptionClose(t *testing.T, s *suite) {
	s.append(s.stream("x"), ledger.Any{}, newEvent("e", 0))
	sub := s.subscribe(0, s.mine())
	s.receive(sub, 1)

	// A blocked Recv returns ErrClosed when the subscription closes.
	done := make(chan error, 1)
	var entered atomic.Bool
	go func() {
		entered.Store(true)
		_, err := sub.Recv(context.Background())
		done <- err
	}()
	s.eventually("the Recv goroutine to start", entered.Load)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ledger.ErrClosed) {
			t.Fatalf("Recv after Close = %v, want ErrClosed", err)
		}
	case <-time.After(s.f.Timeout):
		t.Fatalf("Recv still blocked after Close")
	}
	// Recv after Close keeps failing with ErrClosed, even with events.
	s.append(s.stream("x"), ledger.Any{}, newEvent("e", 1))
	if _, err := sub.Recv(s.ctx()); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Recv on a closed subscription = %v, want ErrClosed", err)
	}
	_ = sub.Close() // a second Close does not panic
}

func testSubscriptionContext(t *testing.T, s *suite) {
	sub := s.subscribe(s.lastPosition(), s.mine())

	// Canceled while blocked.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := sub.Recv(ctx)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Recv with a canceled context = %v, want context.Canceled", err)
		}
	case <-time.After(s.f.Timeout):
		t.Fatalf("Recv still blocked after cancel")
	}
	// Already expired.
	ctx, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	if _, err := sub.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with an expired context = %v, want DeadlineExceeded", err)
	}
	// The subscription still works afterwards and lost nothing.
	e := newEvent("e", 0)
	s.append(s.stream("y"), ledger.Any{}, e)
	if got := s.receive(sub, 1); got[0].ID != e.ID {
		t.Fatalf("Recv after cancel got %s, want %s", got[0].ID, e.ID)
	}
}

// testConcurrentExpectedRevision: appenders racing on the same revision;
// exactly one wins each round and the losers see the winner's revision.
func testConcurrentExpectedRevision(t *testing.T, s *suite) {
	st := s.stream("race")
	s.append(st, ledger.NoStream{}, newEvent("init", 0))
	n := s.f.ConcurrentAppenders
	rounds := 25
	if testing.Short() {
		rounds = 10
	}
	winners := []string{""}
	for r := range rounds {
		evs := make([]ledger.EventData, n)
		errs := make([]error, n)
		results := make([]ledger.AppendResult, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			evs[i] = newEvent("try", i)
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.store.Append(context.Background(), st, ledger.Revision(r), evs[i])
			})
		}
		close(start)
		wg.Wait()
		win := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if win >= 0 {
					t.Fatalf("round %d: appenders %d and %d both won revision %d", r, win, i, r+1)
				}
				win = i
				if results[i].NextExpectedRevision != uint64(r+1) {
					t.Fatalf("round %d: winner got revision %d", r, results[i].NextExpectedRevision)
				}
			case errors.Is(err, ledger.ErrWrongExpectedRevision):
				var wre *ledger.WrongRevisionError
				if !errors.As(err, &wre) || !wre.ActualExists || wre.Actual != uint64(r+1) {
					t.Fatalf("round %d: loser's error %v, want actual revision %d", r, err, r+1)
				}
			default:
				t.Fatalf("round %d appender %d: %v", r, i, err)
			}
		}
		if win < 0 {
			t.Fatalf("round %d: nobody won", r)
		}
		winners = append(winners, evs[win].ID)
	}
	got := s.readStream(st, ledger.Forwards, 0, 0)
	if len(got) != rounds+1 {
		t.Fatalf("stream holds %d events, want %d", len(got), rounds+1)
	}
	for r := 1; r <= rounds; r++ {
		if got[r].ID != winners[r] || got[r].Revision != uint64(r) {
			t.Fatalf("revision %d holds %s, the winner was %s", r, got[r].ID, winners[r])
		}
	}
}

// testConcurrentOptimisticLoop: appenders read-then-append with
// Revision(last) and retry on conflict; the stream ends with every event
// once, at consecutive revisions, and every success had its own revision.
func testConcurrentOptimisticLoop(t *testing.T, s *suite) {
	st := s.stream("loop")
	n := s.f.ConcurrentAppenders
	per := max(s.f.AppendsPerAppender/10, 5)
	var (
		mu   sync.Mutex
		revs = map[uint64]string{}
		wg   sync.WaitGroup
		errc = make(chan error, n)
	)
	for g := range n {
		wg.Go(func() {
			for i := 0; i < per; {
				var exp ledger.StreamState = ledger.NoStream{}
				evs, err := s.store.ReadStream(context.Background(), st, ledger.Backwards, ledger.End, 1)
				switch {
				case errors.Is(err, ledger.ErrStreamNotFound):
				case err != nil:
					errc <- err
					return
				default:
					exp = ledger.Revision(evs[0].Revision)
				}
				e := newEvent(fmt.Sprintf("g%d", g), i)
				res, err := s.store.Append(context.Background(), st, exp, e)
				if errors.Is(err, ledger.ErrWrongExpectedRevision) {
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				if prev, dup := revs[res.NextExpectedRevision]; dup {
					mu.Unlock()
					errc <- fmt.Errorf("revision %d acknowledged twice (%s, %s)", res.NextExpectedRevision, prev, e.ID)
					return
				}
				revs[res.NextExpectedRevision] = e.ID
				mu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got := s.readStream(st, ledger.Forwards, 0, 0)
	if len(got) != n*per {
		t.Fatalf("stream holds %d events, want %d", len(got), n*per)
	}
	for i, e := range got {
		if e.Revision != uint64(i) || revs[e.Revision] != e.ID {
			t.Fatalf("revision %d holds %s, acknowledged %s", e.Revision, e.ID, revs[e.Revision])
		}
	}
}

func testPayloadRoundTrip(t *testing.T, s *suite) {
	big := make([]byte, 0, 300<<10)
	big = append(big, `{"blob":"`...)
	for i := 0; len(big) < 300<<10-2; i++ {
		big = append(big, "abcdefghijklmnopqrstuvwxyz0123456789"[i%36])
	}
	big = append(big, `"}`...)
	evs := []ledger.EventData{
		{ID: ledger.NewID(), Type: "json.spacing", Data: []byte("{ \"b\" : 2,\n\t\"a\":1 }"), Metadata: []byte(`{"z":[1, 2 ,3],"a":null}`)},
		{ID: ledger.NewID(), Type: "json.unicode", Data: []byte(`{"s":"héllo \u00e9 ✓ \ud83d\ude00"}`), Metadata: []byte(`{}`)},
		{ID: ledger.NewID(), Type: "no.metadata", Data: []byte(`{"x":1}`)},
		{ID: ledger.NewID(), Type: "empty.data", Data: nil, Metadata: nil},
		{ID: ledger.NewID(), Type: "big", Data: big, Metadata: []byte(`{"big":true}`)},
		{ID: ledger.NewID(), Type: "type with spaces/and.dots-ü", Data: []byte(`[]`)},
	}
	if s.f.BinaryPayloads {
		bin := make([]byte, 512)
		for i := range bin {
			bin[i] = byte(i * 7)
		}
		evs = append(evs,
			ledger.EventData{ID: ledger.NewID(), Type: "binary", Data: bin, Metadata: []byte{0, 1, 0xff, 0xfe, 0}},
			ledger.EventData{ID: ledger.NewID(), Type: "nul", Data: []byte{0}, Metadata: []byte("\xc3\x28")},
		)
	}
	st := s.stream("payload/ünïcode stream:name")
	s.append(st, ledger.NoStream{}, evs...)
	got := s.checkStream(st, evs)
	s.sameEvents("$all", s.all(), got)
	s.sameEvents("backwards", s.readStream(st, ledger.Backwards, ledger.End, 0), reversed(got))
	sub := s.subscribe(got[0].Position-1, s.mine())
	s.sameEvents("subscription", s.receive(sub, len(evs)), got)
}

func testCallerOwnsSlices(t *testing.T, s *suite) {
	st := s.stream("own")
	e := ledger.EventData{ID: ledger.NewID(), Type: "t", Data: []byte(`{"a":"aaaa"}`), Metadata: []byte(`{"m":"mmmm"}`)}
	in := ledger.EventData{ID: e.ID, Type: e.Type, Data: slices.Clone(e.Data), Metadata: slices.Clone(e.Metadata)}
	s.append(st, ledger.NoStream{}, in)
	// Changing the appended slices afterwards does not change the store.
	clear(in.Data)
	clear(in.Metadata)
	scribble := func(evs []ledger.RecordedEvent) {
		for i := range evs {
			clear(evs[i].Data)
			clear(evs[i].Metadata)
			evs[i].Data = append(evs[i].Data, "more"...)
			evs[i].Metadata = append(evs[i].Metadata, "more"...)
		}
	}
	scribble(s.readStream(st, ledger.Forwards, 0, 0))
	scribble(s.all())
	sub := s.subscribe(0, s.mine())
	scribble(s.receive(sub, 1))
	s.checkStream(st, []ledger.EventData{e})
	got := s.all()
	if !bytes.Equal(got[0].Data, e.Data) || !bytes.Equal(got[0].Metadata, e.Metadata) {
		t.Fatalf("stored payload changed through a returned slice: %q %q", got[0].Data, got[0].Metadata)
	}
}

func testRecorded(t *testing.T, s *suite) {
	st := s.stream("rec")
	tol := s.f.ClockTolerance
	for i := range 3 {
		before := time.Now()
		s.append(st, ledger.Any{}, newEvents("e", 2)...)
		after := time.Now()
		evs := s.readStream(st, ledger.Forwards, uint64(2*i), 2)
		for _, e := range evs {
			if e.Recorded.IsZero() {
				t.Fatalf("Recorded not set")
			}
			if e.Recorded.Location() != time.UTC {
				t.Fatalf("Recorded in %v, want UTC", e.Recorded.Location())
			}
			if e.Recorded.Before(before.Add(-tol).Round(0)) || e.Recorded.After(after.Add(tol).Round(0)) {
				t.Fatalf("Recorded %v not within the Append call [%v, %v] (tolerance %v)", e.Recorded, before, after, tol)
			}
		}
	}
	all := s.all()
	for i := 1; i < len(all); i++ {
		if all[i].Recorded.Before(all[i-1].Recorded.Add(-tol)) {
			t.Fatalf("Recorded goes back in time: %v after %v", all[i].Recorded, all[i-1].Recorded)
		}
	}
}

func testCanceledContext(t *testing.T, s *suite) {
	st := s.stream("ctx")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := newEvent("e", 0)
	if _, err := s.store.Append(ctx, st, ledger.Any{}, e); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.store.ReadStream(s.ctx(), st, ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrStreamNotFound) {
		t.Fatalf("stream after a canceled append reads %v, want ErrStreamNotFound", err)
	}
	// The id was not consumed.
	s.append(st, ledger.NoStream{}, e)
	s.checkStream(st, []ledger.EventData{e})
}

func testStoreClose(t *testing.T, s *suite) {
	st := s.stream("close")
	s.append(st, ledger.Any{}, newEvent("e", 0))
	sub := s.subscribe(0, s.mine())
	s.receive(sub, 1)
	done := make(chan error, 1)
	var entered atomic.Bool
	go func() {
		entered.Store(true)
		_, err := sub.Recv(context.Background())
		done <- err
	}()
	s.eventually("the Recv goroutine to start", entered.Load)
	if err := s.store.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ledger.ErrClosed) {
			t.Fatalf("Recv after the store closed = %v, want ErrClosed", err)
		}
	case <-time.After(s.f.Timeout):
		t.Fatalf("Recv still blocked after the store closed")
	}
	ctx := s.ctx()
	if _, err := s.store.Append(ctx, st, ledger.Any{}, newEvent("e", 1)); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := s.store.ReadStream(ctx, st, ledger.Forwards, 0, 0); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("ReadStream after Close = %v, want ErrClosed", err)
	}
	if _, err := s.store.ReadAll(ctx, 0, ledger.Forwards, 0, ledger.Filter{}); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("ReadAll after Close = %v, want ErrClosed", err)
	}
	if _, err := s.store.LastPosition(ctx); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("LastPosition after Close = %v, want ErrClosed", err)
	}
	if _, err := s.store.Subscribe(ctx, 0, ledger.Filter{}); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

func testRestart(t *testing.T, s *suite) {
	if s.f.Restart == nil {
		t.Skip("Features.Restart not set")
	}
	a, b := s.stream("a"), s.stream("b")
	evA := newEvents("e", 4)
	rA := s.append(a, ledger.NoStream{}, evA...)
	evB := newEvents("e", 2)
	rB := s.append(b, ledger.NoStream{}, evB...)
	before := s.all()
	last := s.lastPosition()

	s.store = s.f.Restart(t, s.store)

	s.sameEvents("$all after restart", s.all(), before)
	if p := s.lastPosition(); p != last {
		t.Fatalf("LastPosition after restart = %d, want %d", p, last)
	}
	// Idempotency survives the restart.
	if got, err := s.store.Append(s.ctx(), a, ledger.Any{}, evA...); err != nil || got != rA {
		t.Fatalf("re-append after restart = %+v, %v; want %+v", got, err, rA)
	}
	if got, err := s.store.Append(s.ctx(), b, ledger.NoStream{}, evB...); err != nil || got != rB {
		t.Fatalf("re-append after restart = %+v, %v; want %+v", got, err, rB)
	}
	if _, err := s.store.Append(s.ctx(), a, ledger.Any{}, evA[1:]...); !errors.Is(err, ledger.ErrIdempotency) {
		t.Fatalf("partial re-append after restart = %v, want ErrIdempotency", err)
	}
	// Streams continue at their revisions; positions keep increasing.
	if _, err := s.store.Append(s.ctx(), a, ledger.Revision(2), newEvent("e", 9)); !errors.Is(err, ledger.ErrWrongExpectedRevision) {
		t.Fatalf("stale revision after restart = %v, want ErrWrongExpectedRevision", err)
	}
	more := newEvent("e", 10)
	r := s.append(a, ledger.Revision(3), more)
	if r.NextExpectedRevision != 4 || r.Position <= last {
		t.Fatalf("append after restart = %+v, last position before %d", r, last)
	}
	s.checkStream(a, append(slices.Clone(evA), more))
	sub := s.subscribe(0, s.mine())
	s.sameEvents("subscription after restart", s.receive(sub, len(before)+1), s.all())
}
