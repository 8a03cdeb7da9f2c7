// Package pebbleledger is the embedded ledger.Store, on Pebble
// (github.com/cockroachdb/pebble/v2).
//
// # Durability
//
// Append returns nil only after the batch holding its events was committed
// with pebble.Sync, that is, written to Pebble's WAL and fsynced: an
// acknowledged append survives a crash of the process (kill -9) or of the
// machine (power loss), provided the disk honours fsync. An append that
// returns an error was not written, except when the error comes from the
// commit itself (an I/O error): then the outcome is unknown, the store
// refuses every later append, and it must be reopened.
//
// Appends are group-committed: one writer goroutine takes the queued appends
// (up to Config.MaxBatchEvents events), checks each against its stream's head
// and the idempotency index, puts the ones that pass into one Pebble batch,
// commits it with one fsync and then answers every caller. An append that
// fails its check fails alone.
//
// Reads, LastPosition and subscriptions see acknowledged events only: the
// writer publishes the last position after the fsync, and readers never look
// beyond it.
//
// # Key layout
//
// All integers BE8 are 8-byte big-endian, so keys sort numerically.
//
//	a <pos BE8>                           -> record: version 1, uvarint revision,
//	                                         varint recorded (Unix ns), then
//	                                         uvarint-length-prefixed stream, id,
//	                                         type, data, metadata
//	s <uvarint len> <stream> <rev BE8>    -> pos BE8 (the stream index)
//	h <stream>                            -> last revision BE8 (the stream head)
//	i <event id>                          -> idempotency entry: index of the event
//	                                         in its append, the append's event
//	                                         count, the event's revision, the
//	                                         append's last position, stream
//	m version                             -> "1", the layout version
//
// Records live once, in global order; a stream read walks the stream index
// and looks the records up by position. The last position is the last a key,
// found at Open. Positions are contiguous from 1.
package pebbleledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

var _ ledger.Store = (*Store)(nil)

// Config configures a Store.
type Config struct {
	// Dir is the directory of the Pebble database (created if missing).
	// Required.
	Dir string
	// FS is the file system to use. Default: the operating system's
	// (vfs.Default). Tests pass vfs.NewMem() or vfs.NewCrashableMem().
	FS vfs.FS
	// MaxBatchEvents bounds the events the writer puts into one group commit;
	// an append larger than it is committed alone. Default 4096.
	MaxBatchEvents int
	// SubscriptionBatch is the most events one Subscription.Recv returns.
	// Default 512.
	SubscriptionBatch int
	// CacheBytes is the size of Pebble's block cache. Default 64 MiB.
	CacheBytes int64
	// Logger receives Pebble's errors (and its informational messages at
	// Debug level). Default: slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxBatchEvents    = 4096
	defaultSubscriptionBatch = 512
	defaultCacheBytes        = 64 << 20
	// queueLen is the capacity of the append queue. Appenders beyond it wait
	// (or give up with their context) until the writer takes their append.
	queueLen = 1024
)

func (c Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("pebbleledger: Config.Dir is required"))
	}
	if c.MaxBatchEvents < 0 {
		errs = append(errs, fmt.Errorf("pebbleledger: Config.MaxBatchEvents %d is negative", c.MaxBatchEvents))
	}
	if c.CacheBytes < 0 {
		errs = append(errs, fmt.Errorf("pebbleledger: Config.CacheBytes %d is negative", c.CacheBytes))
	}
	if c.SubscriptionBatch < 0 {
		errs = append(errs, fmt.Errorf("pebbleledger: Config.SubscriptionBatch %d is negative", c.SubscriptionBatch))
	}
	return errors.Join(errs...)
}

// Store is the Pebble ledger. Create it with Open; it is safe for concurrent
// use.
type Store struct {
	cfg      Config // with defaults applied
	db       *pebble.DB
	maxBatch int
	subBatch int

	// reqs is the queue of appends for the writer; closed by Close once no
	// Append can send any more.
	reqs       chan *appendReq
	writerDone chan struct{}

	// tip is the last acknowledged position and a channel closed when it
	// moves: the broadcast to subscriptions.
	tip atomic.Pointer[tip]

	// mu guards closed; ops counts the calls in progress, which Close waits
	// for. An operation joins ops only under mu with closed false.
	mu      sync.RWMutex
	closed  bool
	ops     sync.WaitGroup
	closing chan struct{}

	// commits counts the synced commits (group commits) made.
	commits atomic.Uint64

	w writer // owned by the writer goroutine
}

type tip struct {
	pos     uint64
	changed chan struct{}
}

// Open opens (or creates) the store in cfg.Dir and starts its writer.
func Open(cfg Config) (*Store, error) {
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	go s.w.run()
	return s, nil
}

// open opens the store without starting the writer.
func open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatchEvents == 0 {
		cfg.MaxBatchEvents = defaultMaxBatchEvents
	}
	if cfg.SubscriptionBatch == 0 {
		cfg.SubscriptionBatch = defaultSubscriptionBatch
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = defaultCacheBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "pebbleledger")
	opts := &pebble.Options{
		FS:                 cfg.FS,
		FormatMajorVersion: pebble.FormatNewest,
		CacheSize:          cfg.CacheBytes,
		Logger:             pebbleLogger{log},
	}
	// Bloom filters: appends look up stream heads and event ids by key, and
	// most ids are new.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("pebbleledger: open %s: %w", cfg.Dir, err)
	}
	last, err := initialise(db)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	s := &Store{
		cfg:        cfg,
		db:         db,
		maxBatch:   cfg.MaxBatchEvents,
		subBatch:   cfg.SubscriptionBatch,
		reqs:       make(chan *appendReq, queueLen),
		writerDone: make(chan struct{}),
		closing:    make(chan struct{}),
	}
	s.tip.Store(&tip{pos: last, changed: make(chan struct{})})
	s.w = writer{
		s:       s,
		lastPos: last,
		heads:   make(map[string]head),
		ids:     make(map[string]idEntry),
	}
	log.Debug("opened", "dir", cfg.Dir, "last_position", last)
	return s, nil
}

// initialise checks or writes the layout version and returns the last
// position.
func initialise(db *pebble.DB) (uint64, error) {
	v, closer, err := db.Get(metaKey("version"))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(metaKey("version"), []byte(layoutVersion), pebble.Sync); err != nil {
			return 0, fmt.Errorf("pebbleledger: write layout version: %w", err)
		}
	case err != nil:
		return 0, fmt.Errorf("pebbleledger: read layout version: %w", err)
	default:
		got := string(v)
		_ = closer.Close()
		if got != layoutVersion {
			return 0, fmt.Errorf("pebbleledger: layout version %q, this code reads %q", got, layoutVersion)
		}
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAll}, UpperBound: []byte{prefixAll + 1}})
	if err != nil {
		return 0, fmt.Errorf("pebbleledger: find last position: %w", err)
	}
	var last uint64
	if it.Last() {
		last, err = allKeyPos(it.Key())
	}
	return last, errors.Join(err, it.Error(), it.Close())
}

// enter registers an operation; false if the store is closed. A true result
// must be paired with s.ops.Done().
func (s *Store) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.ops.Add(1)
	return true
}

// Close stops accepting calls, waits for the calls in progress (appends
// already queued are committed and answered), ends the subscriptions
// (their Recv returns ledger.ErrClosed), stops the writer and closes Pebble.
// A second Close returns ledger.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ledger.ErrClosed
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	s.ops.Wait()
	close(s.reqs)
	<-s.writerDone
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebbleledger: close: %w", err)
	}
	return nil
}

// LastPosition implements ledger.Store.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	if !s.enter() {
		return 0, ledger.ErrClosed
	}
	defer s.ops.Done()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.tip.Load().pos, nil
}

// appendReq is one Append waiting for the writer.
type appendReq struct {
	ctx      context.Context
	stream   string
	expected ledger.StreamState
	exp      expectation
	events   []ledger.EventData
	done     chan appendResp // buffered 1
}

type appendResp struct {
	res    ledger.AppendResult
	err    error
	staged bool // success depends on the batch being built
}

// Append implements ledger.Store. It returns after the events are fsynced,
// or with an error and nothing written. ctx is checked until the writer
// takes the append into a batch; after that the call waits for the commit.
// The events' slices are read until Append returns.
func (s *Store) Append(ctx context.Context, stream string, expected ledger.StreamState, events ...ledger.EventData) (ledger.AppendResult, error) {
	exp, err := validateAppend(stream, expected, events)
	if err != nil {
		return ledger.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return ledger.AppendResult{}, err
	}
	if !s.enter() {
		return ledger.AppendResult{}, ledger.ErrClosed
	}
	defer s.ops.Done()
	req := &appendReq{ctx: ctx, stream: stream, expected: expected, exp: exp, events: events, done: make(chan appendResp, 1)}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		return ledger.AppendResult{}, ctx.Err()
	}
	r := <-req.done
	return r.res, r.err
}

func validateAppend(stream string, expected ledger.StreamState, events []ledger.EventData) (expectation, error) {
	var errs []error
	exp, ok := expectationOf(expected)
	if !ok {
		errs = append(errs, fmt.Errorf("unknown expected state %T", expected))
	}
	if stream == "" {
		errs = append(errs, errors.New("empty stream name"))
	}
	if len(events) == 0 {
		errs = append(errs, errors.New("no events"))
	}
	var seen map[string]struct{}
	if len(events) > 1 {
		seen = make(map[string]struct{}, len(events))
	}
	for i := range events {
		e := &events[i]
		if e.ID == "" {
			errs = append(errs, fmt.Errorf("event %d: empty id", i))
		}
		if e.Type == "" {
			errs = append(errs, fmt.Errorf("event %d: empty type", i))
		}
		if seen != nil && e.ID != "" {
			if _, dup := seen[e.ID]; dup {
				errs = append(errs, fmt.Errorf("event %d: duplicate id %s", i, e.ID))
			}
			seen[e.ID] = struct{}{}
		}
	}
	if len(errs) > 0 {
		return exp, fmt.Errorf("%w: %w", ledger.ErrInvalidAppend, errors.Join(errs...))
	}
	return exp, nil
}

// head is a stream's state as the writer sees it.
type head struct {
	rev    uint64
	exists bool
}

// writer is the state of the writer goroutine.
type writer struct {
	s       *Store
	lastPos uint64 // last position committed
	failed  error  // a commit failed: the store accepts no more appends

	// Overlays of the batch being built, cleared after each commit: heads
	// and id entries staged but not yet in Pebble.
	heads map[string]head
	ids   map[string]idEntry

	pending  []*appendReq
	resps    []appendResp
	entries  []idEntry
	key, val []byte
	lastTime int64
}

func (w *writer) run() {
	defer close(w.s.writerDone)
	for {
		req, ok := <-w.s.reqs
		if !ok {
			return
		}
		w.pending = append(w.pending[:0], req)
		n := len(req.events)
	drain:
		for n < w.s.maxBatch {
			select {
			case r, ok := <-w.s.reqs:
				if !ok {
					break drain
				}
				w.pending = append(w.pending, r)
				n += len(r.events)
			default:
				break drain
			}
		}
		w.commit()
	}
}

// commit validates and stages the pending appends into one batch, commits
// it with fsync, publishes the new position and answers the callers.
func (w *writer) commit() {
	s := w.s
	w.resps = append(w.resps[:0], make([]appendResp, len(w.pending))...)
	b := s.db.NewBatch()
	pos := w.lastPos
	now := time.Now().UnixNano()
	if now < w.lastTime {
		now = w.lastTime // Recorded never goes back.
	}
	staged := 0
	for i, r := range w.pending {
		if w.failed != nil {
			w.resps[i].err = w.failed
			continue
		}
		if err := r.ctx.Err(); err != nil {
			w.resps[i].err = err
			continue
		}
		res, write, err := w.check(r)
		if err != nil || !write {
			// A retry of an append staged in this batch succeeds only if
			// the batch commits.
			w.resps[i] = appendResp{res: res, err: err, staged: err == nil && res.Position > w.lastPos}
			continue
		}
		res, err = w.stage(b, r, &pos, now)
		w.resps[i] = appendResp{res: res, err: err, staged: err == nil}
		if err == nil {
			staged++
		} else {
			// Batch.Set fails only on misuse; do not commit a batch that
			// may hold part of an append.
			w.failed = fmt.Errorf("pebbleledger: build batch: %w", err)
		}
	}
	if staged > 0 && w.failed == nil {
		if err := b.Commit(pebble.Sync); err != nil {
			w.failed = fmt.Errorf("pebbleledger: commit (the store refuses further appends): %w", err)
		} else {
			s.commits.Add(1)
			w.lastPos = pos
			w.lastTime = now
			old := s.tip.Load()
			s.tip.Store(&tip{pos: pos, changed: make(chan struct{})})
			close(old.changed)
		}
	}
	if w.failed != nil {
		for i := range w.resps {
			if w.resps[i].staged {
				w.resps[i] = appendResp{err: w.failed}
			}
		}
	}
	_ = b.Close()
	clear(w.heads)
	clear(w.ids)
	for i, r := range w.pending {
		r.done <- w.resps[i]
		w.pending[i] = nil
	}
}

// lookupHead returns the stream's head, from the batch overlay or Pebble.
func (w *writer) lookupHead(stream string) (head, error) {
	if h, ok := w.heads[stream]; ok {
		return h, nil
	}
	w.key = headKey(w.key[:0], stream)
	v, closer, err := w.s.db.Get(w.key)
	if errors.Is(err, pebble.ErrNotFound) {
		return head{}, nil
	}
	if err != nil {
		return head{}, fmt.Errorf("pebbleledger: read head of %q: %w", stream, err)
	}
	rev, err := decodeBE8(v)
	_ = closer.Close()
	if err != nil {
		return head{}, fmt.Errorf("pebbleledger: head of %q: %w", stream, err)
	}
	return head{rev: rev, exists: true}, nil
}

// lookupID returns the idempotency entry of an event id, if any.
func (w *writer) lookupID(id string) (idEntry, bool, error) {
	if e, ok := w.ids[id]; ok {
		return e, true, nil
	}
	w.key = idKey(w.key[:0], id)
	v, closer, err := w.s.db.Get(w.key)
	if errors.Is(err, pebble.ErrNotFound) {
		return idEntry{}, false, nil
	}
	if err != nil {
		return idEntry{}, false, fmt.Errorf("pebbleledger: read id %s: %w", id, err)
	}
	e, err := decodeIDEntry(v)
	_ = closer.Close()
	if err != nil {
		return idEntry{}, false, fmt.Errorf("pebbleledger: id %s: %w", id, err)
	}
	return e, true, nil
}

// check decides an append: write it (write true), answer it with an earlier
// append's result (idempotent retry), or fail it.
func (w *writer) check(r *appendReq) (res ledger.AppendResult, write bool, err error) {
	h, err := w.lookupHead(r.stream)
	if err != nil {
		return res, false, err
	}
	w.entries = w.entries[:0]
	known := false
	for i := range r.events {
		e, ok, err := w.lookupID(r.events[i].ID)
		if err != nil {
			return res, false, err
		}
		if i == 0 {
			known = ok
		} else if ok != known {
			// Some ids known, some not.
			known, unknown := r.events[0].ID, r.events[i].ID
			if ok {
				known, unknown = unknown, known
			}
			return res, false, fmt.Errorf("%w: event %s was appended before, event %s was not",
				ledger.ErrIdempotency, known, unknown)
		}
		w.entries = append(w.entries, e)
	}
	if !known {
		if !r.exp.holds(h.rev, h.exists) {
			return res, false, &ledger.WrongRevisionError{Stream: r.stream, Expected: r.expected, Actual: h.rev, ActualExists: h.exists}
		}
		return res, true, nil
	}
	// Every id is known: a retry if they are exactly one earlier append, in
	// order, to this stream.
	first := &w.entries[0]
	for i := range w.entries {
		e := &w.entries[i]
		if e.stream != r.stream || e.count != uint64(len(r.events)) || e.index != uint64(i) ||
			e.firstRevision() != first.firstRevision() || e.lastPos != first.lastPos {
			return res, false, fmt.Errorf("%w: event %s was appended as event %d of %d at revision %d of %q",
				ledger.ErrIdempotency, r.events[i].ID, e.index, e.count, e.revision, e.stream)
		}
	}
	if first.madeAt(r.exp) {
		return first.result(), false, nil
	}
	if !r.exp.holds(h.rev, h.exists) {
		return res, false, &ledger.WrongRevisionError{Stream: r.stream, Expected: r.expected, Actual: h.rev, ActualExists: h.exists}
	}
	return res, false, fmt.Errorf("%w: the events were appended at revision %d, retried with expected %v",
		ledger.ErrIdempotency, first.firstRevision(), r.expected)
}

// stage puts an append into the batch and the overlays.
func (w *writer) stage(b *pebble.Batch, r *appendReq, pos *uint64, now int64) (ledger.AppendResult, error) {
	h, _ := w.lookupHead(r.stream) // in the overlay or read by check
	rev := uint64(0)
	if h.exists {
		rev = h.rev + 1
	}
	first := rev
	p := *pos
	n := uint64(len(r.events))
	lastPos := p + n
	for i := range r.events {
		e := &r.events[i]
		p++
		w.key = allKey(w.key[:0], p)
		w.val = appendRecord(w.val[:0], r.stream, rev, now, e)
		if err := b.Set(w.key, w.val, nil); err != nil {
			return ledger.AppendResult{}, err
		}
		w.key = streamKey(w.key[:0], r.stream, rev)
		if err := b.Set(w.key, be8(p), nil); err != nil {
			return ledger.AppendResult{}, err
		}
		ie := idEntry{index: uint64(i), count: n, revision: rev, lastPos: lastPos, stream: r.stream}
		w.key = idKey(w.key[:0], e.ID)
		w.val = appendIDEntry(w.val[:0], &ie)
		if err := b.Set(w.key, w.val, nil); err != nil {
			return ledger.AppendResult{}, err
		}
		w.ids[e.ID] = ie
		rev++
	}
	last := first + n - 1
	w.key = headKey(w.key[:0], r.stream)
	if err := b.Set(w.key, be8(last), nil); err != nil {
		return ledger.AppendResult{}, err
	}
	w.heads[r.stream] = head{rev: last, exists: true}
	*pos = p
	return ledger.AppendResult{NextExpectedRevision: last, Position: lastPos}, nil
}

// pebbleLogger adapts slog to Pebble's logger.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "source", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

// Fatalf is called by Pebble on unrecoverable errors; it expects not to
// return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "source", "pebble", "fatal", true)
	panic("pebble: " + msg)
}
