// Package ledger is the port of pushledger's event store: named streams with
// revisions, one global order ($all) with positions, optimistic concurrency,
// idempotent appends and catch-up subscriptions. It is shaped after KurrentDB
// (EventStoreDB) so that a KurrentDB adapter is a thin translation; the
// embedded default is adapters/ledger/pebble.
//
// Every adapter must pass the conformance suite in ledger/ledgertest.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Adapters wrap them (errors.Is) and keep the cause.
var (
	// ErrWrongExpectedRevision: the stream was not in the expected state.
	// Nothing of the append was written. The error is a *WrongRevisionError.
	ErrWrongExpectedRevision = errors.New("ledger: wrong expected revision")
	// ErrStreamNotFound: a read of a stream that has no events.
	ErrStreamNotFound = errors.New("ledger: stream not found")
	// ErrIdempotency: an append to a stream repeats some, but not all, of
	// the event IDs of an earlier append to that stream (or repeats them in
	// another order). Idempotency is per stream, as in KurrentDB: reusing
	// IDs in another stream need not be detected (a store may fail it with
	// ErrIdempotency, or append the events as new ones there).
	ErrIdempotency = errors.New("ledger: event ids partially match an earlier append")
	// ErrInvalidAppend: the append is malformed (no events, empty stream name,
	// empty or duplicate event id, empty type). Nothing was written.
	ErrInvalidAppend = errors.New("ledger: invalid append")
	// ErrClosed: the store or subscription was closed.
	ErrClosed = errors.New("ledger: closed")
)

// WrongRevisionError details ErrWrongExpectedRevision.
type WrongRevisionError struct {
	Stream   string
	Expected StreamState
	// Actual is the stream's current last revision; ActualExists is false when
	// the stream has no events.
	Actual       uint64
	ActualExists bool
}

func (e *WrongRevisionError) Error() string {
	actual := "no stream"
	if e.ActualExists {
		actual = fmt.Sprintf("revision %d", e.Actual)
	}
	return fmt.Sprintf("ledger: stream %q: expected %s, found %s", e.Stream, e.Expected, actual)
}

func (e *WrongRevisionError) Unwrap() error { return ErrWrongExpectedRevision }

// StreamState is the expected state of a stream for an append. It is sealed:
// the only values are Any, NoStream, StreamExists and Revision.
type StreamState interface {
	isStreamState()
	String() string
}

// Any appends whatever the stream's state.
type Any struct{}

// NoStream appends only if the stream has no events.
type NoStream struct{}

// StreamExists appends only if the stream has at least one event.
type StreamExists struct{}

// Revision appends only if the stream's last event has exactly this revision.
// Revisions count from 0: a stream with one event is at Revision(0).
type Revision uint64

func (Any) isStreamState()          {}
func (NoStream) isStreamState()     {}
func (StreamExists) isStreamState() {}
func (Revision) isStreamState()     {}

func (Any) String() string          { return "any" }
func (NoStream) String() string     { return "no stream" }
func (StreamExists) String() string { return "stream exists" }
func (r Revision) String() string   { return fmt.Sprintf("revision %d", uint64(r)) }

// EventData is an event to append.
type EventData struct {
	// ID identifies the event for idempotency: a UUID in canonical text form.
	// Derive it deterministically (see DeterministicID) when a retried command
	// must not append twice.
	ID string
	// Type is the persisted event type name, e.g. "message.accepted.v1".
	Type string
	// Data is the JSON payload; Metadata is optional JSON (correlation ids, ...).
	Data     []byte
	Metadata []byte
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	ID     string
	Stream string
	// Revision is the event's position within its stream, from 0.
	Revision uint64
	// Position is the event's position in the global order, from 1. Positions
	// are strictly increasing in append order; they need not be contiguous.
	Position uint64
	Type     string
	Data     []byte
	Metadata []byte
	// Recorded is when the store accepted the append (UTC).
	Recorded time.Time
}

// AppendResult describes a successful append.
type AppendResult struct {
	// NextExpectedRevision is the revision of the last event now in the stream:
	// pass Revision(NextExpectedRevision) to append after it.
	NextExpectedRevision uint64
	// Position is the global position of the last event of the append.
	Position uint64
}

// Direction of a read.
type Direction int

const (
	Forwards Direction = iota
	Backwards
)

// End, as the start of a backwards read, means "from the last event".
const End = ^uint64(0)

// Filter selects events of the $all order. The zero Filter selects every
// event. A non-empty StreamPrefixes selects events whose stream name starts
// with one of them (a category is "message-"); a non-empty TypePrefixes
// selects events whose type starts with one of them. When both are set an
// event must match both.
type Filter struct {
	StreamPrefixes []string
	TypePrefixes   []string
}

// Match reports whether e passes the filter.
func (f Filter) Match(stream, eventType string) bool {
	return matchAny(f.StreamPrefixes, stream) && matchAny(f.TypePrefixes, eventType)
}

func matchAny(prefixes []string, s string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Store is the ledger. Implementations are safe for concurrent use.
//
// Durability: when Append returns nil, the events are on stable storage (for
// the embedded store: fsynced) and survive a crash of the process or machine.
//
// Atomicity and ordering: the events of one Append are written all or none,
// with consecutive revisions in their stream, and positions in the global
// order that are increasing in the order given. Appends to one stream are
// serialised; the global order is the order appends were acknowledged.
//
// Idempotency: an Append whose events' IDs all equal, in order, the IDs of an
// earlier append to the same stream succeeds without writing anything and
// returns that earlier append's result, provided its expected state is Any
// or the state the earlier append was made at. An append that repeats only
// some of an earlier append's IDs fails with ErrIdempotency.
//
// Idempotency is per stream (KurrentDB's semantics): it covers retries of
// an append to the same stream. An event ID reused in another stream need
// not be detected: the append may fail with ErrIdempotency or succeed as a
// new append there (so an append to a stream that has no events needs no
// event-ID lookup); either way a later retry of the earlier append to its
// own stream still returns that append's result. Event IDs should be unique
// anyway (see DeterministicID).
type Store interface {
	// Append writes events to the end of stream if the stream is in the
	// expected state; otherwise it fails with a *WrongRevisionError.
	Append(ctx context.Context, stream string, expected StreamState, events ...EventData) (AppendResult, error)

	// ReadStream reads up to max events of stream, starting at revision from
	// (inclusive) in the given direction. Backwards from End starts at the
	// last event. A stream with no events fails with ErrStreamNotFound; a
	// start past the end returns no events and no error. max <= 0 means no
	// limit. The returned slices are owned by the caller.
	ReadStream(ctx context.Context, stream string, dir Direction, from uint64, max int) ([]RecordedEvent, error)

	// ReadAll reads up to max events of the global order that pass filter.
	// Forwards it returns events with Position > from (from 0 reads from the
	// beginning); backwards it returns events with Position < from (End reads
	// from the last event). max <= 0 means no limit.
	ReadAll(ctx context.Context, from uint64, dir Direction, max int, filter Filter) ([]RecordedEvent, error)

	// LastPosition is the position of the last acknowledged event, 0 if none.
	LastPosition(ctx context.Context) (uint64, error)

	// Subscribe starts a catch-up subscription to the global order: events
	// with Position > from that pass filter, first the stored ones, then new
	// ones as they are acknowledged, in position order, none skipped, none
	// repeated. Resume after a restart by passing the last position handled.
	Subscribe(ctx context.Context, from uint64, filter Filter) (Subscription, error)

	// Close releases the store. Appends in flight either complete or fail.
	Close() error
}

// Subscription delivers events in position order. It is used by one
// goroutine at a time.
type Subscription interface {
	// Recv blocks until at least one event is available and returns up to a
	// batch of them. It returns ctx.Err() when ctx ends and ErrClosed after
	// Close or when the store is closed.
	Recv(ctx context.Context) ([]RecordedEvent, error)
	// Close ends the subscription; a blocked Recv returns ErrClosed.
	Close() error
}
