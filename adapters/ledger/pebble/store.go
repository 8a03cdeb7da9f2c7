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
// and (for a stream that exists) the idempotency index, puts the ones that
// pass into one Pebble batch and applies it with pebble.Sync without waiting
// for the fsync (DB.ApplyNoSyncWait): the batch is in the WAL and visible to
// the writer's next lookups. A syncer goroutine then waits for the batches'
// fsyncs in order, publishes each batch's last position and answers its
// callers. So the writer builds the next batches while the WAL is being
// fsynced, and Pebble covers all the batches applied meanwhile with its next
// fsync. An append that fails its check fails alone. A batch's appends are
// answered only after its fsync, which (the WAL being sequential) covers
// every earlier batch too; when a commit fails, every success not yet
// durable fails with it.
//
// Reads, LastPosition and subscriptions see acknowledged events only: the
// syncer publishes the last position after the fsync, and readers never look
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
//	e <uvarint len> <stream> <event id>   -> idempotency entry: index of the event
//	                                         in its append, the append's event
//	                                         count, the event's revision, the
//	                                         append's last position, stream
//	i <event id>                          -> idempotency entry of layout 1 (read
//	                                         only; a store of layout 1 is
//	                                         upgraded at Open)
//	c <uvarint len> <cat> <pos BE8>       -> "" (the category index: cat is
//	                                         the stream's name up to its first
//	                                         '-'; layout 3)
//	m version                             -> "3", the layout version
//
// The idempotency index is per stream (KurrentDB's semantics, see the
// ledger package): an append to a stream that has no events yet cannot be a
// retry, so it is decided on the stream head alone, with no event-id lookup.
// Its entries are still written, for later retries.
//
// Records live once, in global order; a stream read walks the stream index
// and looks the records up by position, and so does a read or subscription
// filtered by one category ("app-", "message-", ...) with the category
// index: the app directory rebuilt at start reads the app events alone, not
// the whole ledger. A store of layout 2 gets the index built at Open. The last position is the last a key,
// found at Open. Positions are contiguous from 1.
package pebbleledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// CacheBytes is the size of Pebble's block cache. Default 256 MiB:
	// every append looks up its stream's head and event ids through the
	// tables' bloom filters, and with 64 MiB the filter blocks were evicted
	// by the data blocks subscribers read and re-read from disk on every
	// lookup (the single writer spent 9 µs per append checksumming them).
	CacheBytes int64
	// Logger receives Pebble's errors (and its informational messages at
	// Debug level). Default: slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxBatchEvents    = 4096
	defaultSubscriptionBatch = 512
	defaultCacheBytes        = 256 << 20
	// queueLen is the capacity of the append queue. Appenders beyond it wait
	// (or give up with their context) until the writer takes their append.
	queueLen = 1024
	// maxInflight bounds the batches applied to Pebble and waiting for
	// their WAL sync.
	maxInflight = 8
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

	// applying counts the batches the writer has begun to apply; commits
	// those whose fsync completed. Both count in the same order, so batch n
	// is durable once commits reaches n (see Side).
	applying atomic.Uint64
	commits  atomic.Uint64
	// failed is the first failure of a commit: the store refuses further
	// appends.
	failed atomic.Pointer[error]

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
		// 64 MiB memtables (4 MiB by default) flush a sixth as often; the
		// stream, id and head keys are random, so fewer, larger L0 tables
		// mean less compaction per event.
		MemTableSize: 64 << 20,
	}
	// Bloom filters: appends look up stream heads and event ids by key, and
	// most ids are new.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("pebbleledger: open %s: %w", cfg.Dir, err)
	}
	last, legacy, err := initialise(db)
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
		s:        s,
		lastPos:  last,
		legacy:   legacy,
		inflight: make(chan *flight, maxInflight),
		heads:    make(map[string]head),
		recent:   make(map[string]head),
		ids:      make(map[streamID]idEntry),
	}
	log.Debug("opened", "dir", cfg.Dir, "last_position", last)
	return s, nil
}

// buildCategoryIndex writes the category key of every stored event (the
// upgrade to layout 3), synced, in batches.
func buildCategoryIndex(db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAll}, UpperBound: []byte{prefixAll + 1}})
	if err != nil {
		return fmt.Errorf("pebbleledger: build category index: %w", err)
	}
	b := db.NewBatch()
	var key []byte
	for ok := it.First(); ok; ok = it.Next() {
		pos, r, err := decodeEntry(it)
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("pebbleledger: build category index: %w", err)
		}
		if cat := category(string(r.stream)); cat != "" {
			key = categoryKey(key[:0], cat, pos)
			_ = b.Set(key, nil, nil)
		}
		if b.Count() >= 10000 {
			if err := b.Commit(pebble.NoSync); err != nil {
				_ = it.Close()
				return fmt.Errorf("pebbleledger: build category index: %w", err)
			}
			b = db.NewBatch()
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("pebbleledger: build category index: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebbleledger: build category index: %w", err)
	}
	return nil
}

// initialise checks or writes the layout version (upgrading layout 1 to 2)
// and returns the last position and whether layout-1 idempotency entries
// (i keys) exist.
func initialise(db *pebble.DB) (last uint64, legacy bool, err error) {
	v, closer, err := db.Get(metaKey("version"))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(metaKey("version"), []byte(layoutVersion), pebble.Sync); err != nil {
			return 0, false, fmt.Errorf("pebbleledger: write layout version: %w", err)
		}
	case err != nil:
		return 0, false, fmt.Errorf("pebbleledger: read layout version: %w", err)
	default:
		got := string(v)
		_ = closer.Close()
		switch got {
		case layoutVersion:
		case layoutVersion1, layoutVersion2:
			// Layout 2 added the e keys (the i keys of layout 1 are still
			// read); layout 3 adds the category index, built here.
			if err := buildCategoryIndex(db); err != nil {
				return 0, false, err
			}
			if err := db.Set(metaKey("version"), []byte(layoutVersion), pebble.Sync); err != nil {
				return 0, false, fmt.Errorf("pebbleledger: upgrade layout version: %w", err)
			}
		default:
			return 0, false, fmt.Errorf("pebbleledger: layout version %q, this code reads %q", got, layoutVersion)
		}
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAll}, UpperBound: []byte{prefixAll + 1}})
	if err != nil {
		return 0, false, fmt.Errorf("pebbleledger: find last position: %w", err)
	}
	if it.Last() {
		last, err = allKeyPos(it.Key())
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return 0, false, err
	}
	it, err = db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixID}, UpperBound: []byte{prefixID + 1}})
	if err != nil {
		return 0, false, fmt.Errorf("pebbleledger: find layout-1 entries: %w", err)
	}
	legacy = it.First()
	return last, legacy, errors.Join(it.Error(), it.Close())
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
	res ledger.AppendResult
	err error
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
	req := reqPool.Get().(*appendReq)
	req.ctx, req.stream, req.expected, req.exp, req.events = ctx, stream, expected, exp, events
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		req.release()
		return ledger.AppendResult{}, ctx.Err()
	}
	r := <-req.done
	// The writer and the syncer are done with req once it is answered.
	req.release()
	return r.res, r.err
}

// reqPool recycles appendReqs and their done channels.
var reqPool = sync.Pool{New: func() any { return &appendReq{done: make(chan appendResp, 1)} }}

// release returns an answered (or never sent) request to reqPool.
func (r *appendReq) release() {
	done := r.done
	*r = appendReq{done: done}
	reqPool.Put(r)
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
	// Duplicate ids: pairwise for small appends, with a set for larger.
	const pairwise = 8
	var seen map[string]struct{}
	if len(events) > pairwise {
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
		if e.ID == "" {
			continue
		}
		dup := false
		if seen != nil {
			_, dup = seen[e.ID]
			seen[e.ID] = struct{}{}
		} else {
			for j := range i {
				if events[j].ID == e.ID {
					dup = true
					break
				}
			}
		}
		if dup {
			errs = append(errs, fmt.Errorf("event %d: duplicate id %s", i, e.ID))
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

// streamID keys the idempotency overlay.
type streamID struct{ stream, id string }

// recentHeads bounds the stream heads the writer keeps (writer.recent).
const recentHeads = 1 << 16

// writer is the state of the writer goroutine.
type writer struct {
	s       *Store
	lastPos uint64 // last position applied (in Pebble, maybe not synced)
	legacy  bool   // layout-1 idempotency entries (i keys) exist

	// inflight hands applied batches to the syncer, in order.
	inflight chan *flight

	// it reads Pebble's state for the batch being built (made for it, closed
	// after its commit): Pebble's DB.Get does not read L6 bloom filters,
	// and the heads and ids the writer looks up are mostly absent.
	it *pebble.Iterator

	// Overlays of the batch being built, cleared after each commit: heads
	// and id entries staged but not yet in Pebble.
	heads map[string]head
	ids   map[streamID]idEntry
	// recent holds the heads of the streams appended to lately, as applied
	// to Pebble: the writer is the only one to move a head, and a stream
	// is mostly appended to again within seconds (a message's lifecycle).
	// At most recentHeads entries.
	recent map[string]head

	pending  []*appendReq
	entries  []idEntry
	head     head // of the append check passed last
	key, val []byte
	num      []byte // a BE8 value (Batch.Set copies it)
	lastTime int64
}

func (w *writer) run() {
	defer close(w.s.writerDone)
	synced := make(chan struct{})
	go w.syncer(synced)
	defer func() {
		close(w.inflight)
		<-synced
	}()
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

// flight is a batch applied to Pebble (visible to the writer's lookups,
// not to readers) whose WAL sync the syncer waits for before it publishes
// pos and answers the appends. b is nil for a batch with nothing to write.
type flight struct {
	b       *pebble.Batch
	pos     uint64
	pending []*appendReq
	resps   []appendResp
}

// syncer answers the batches in order: it waits for the WAL sync of each,
// publishes its last position and answers its appends. Pebble syncs the
// WAL for all batches applied while it was syncing in one fsync, so the
// writer builds and applies the next batches while a sync is in progress.
func (w *writer) syncer(done chan<- struct{}) {
	defer close(done)
	s := w.s
	for f := range w.inflight {
		if f.b != nil {
			err := f.b.SyncWait()
			_ = f.b.Close()
			if err != nil {
				s.fail(fmt.Errorf("pebbleledger: commit (the store refuses further appends): %w", err))
			} else if s.failure() == nil {
				s.commits.Add(1)
				old := s.tip.Load()
				s.tip.Store(&tip{pos: f.pos, changed: make(chan struct{})})
				close(old.changed)
			}
		}
		if err := s.failure(); err != nil {
			// Successes that are not durable (their appends were in this
			// batch or an earlier one that failed) fail with it.
			durable := s.tip.Load().pos
			for i := range f.resps {
				if f.resps[i].err == nil && f.resps[i].res.Position > durable {
					f.resps[i] = appendResp{err: err}
				}
			}
		}
		for i, r := range f.pending {
			r.done <- f.resps[i]
		}
	}
}

// fail records the first failure of a commit: the store accepts no more
// appends.
func (s *Store) fail(err error) {
	s.failed.CompareAndSwap(nil, &err)
}

// failure is the recorded failure, nil if none.
func (s *Store) failure() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// commit validates and stages the pending appends into one batch, applies
// it to Pebble (WAL write, visible to the writer's next lookups) and hands
// it to the syncer, which answers the callers once it is fsynced.
func (w *writer) commit() {
	s := w.s
	f := &flight{pending: slices.Clone(w.pending), resps: make([]appendResp, len(w.pending))}
	clear(w.pending)
	b := s.db.NewBatch()
	pos := w.lastPos
	now := time.Now().UnixNano()
	if now < w.lastTime {
		now = w.lastTime // Recorded never goes back.
	}
	failed := s.failure()
	staged := 0
	for i, r := range f.pending {
		if failed != nil {
			f.resps[i].err = failed
			continue
		}
		if err := r.ctx.Err(); err != nil {
			f.resps[i].err = err
			continue
		}
		res, write, err := w.check(r)
		if err != nil || !write {
			// A retry of an append not yet durable succeeds only if the
			// batch holding it commits: the syncer sees to it.
			f.resps[i] = appendResp{res: res, err: err}
			continue
		}
		res, err = w.stage(b, r, &pos, now)
		f.resps[i] = appendResp{res: res, err: err}
		if err == nil {
			staged++
		} else {
			// Batch.Set fails only on misuse; do not commit a batch that
			// may hold part of an append.
			failed = fmt.Errorf("pebbleledger: build batch: %w", err)
			s.fail(failed)
		}
	}
	if w.it != nil {
		_ = w.it.Close()
		w.it = nil
	}
	clear(w.ids)
	if staged > 0 && failed == nil {
		s.applying.Add(1)
		if err := s.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
			s.fail(fmt.Errorf("pebbleledger: commit (the store refuses further appends): %w", err))
		} else {
			f.b = b
			f.pos = pos
			w.lastPos = pos
			w.lastTime = now
			// Applied: the staged heads are Pebble's now. (Should the WAL
			// sync fail, the store refuses every later append.)
			for stream, h := range w.heads {
				if _, ok := w.recent[stream]; !ok && len(w.recent) >= recentHeads {
					for k := range w.recent {
						delete(w.recent, k)
						break
					}
				}
				w.recent[stream] = h
			}
		}
	}
	clear(w.heads)
	if f.b == nil {
		_ = b.Close()
	}
	w.inflight <- f
}

// get reads key from Pebble through the batch's iterator. The value is valid
// until the next get.
func (w *writer) get(key []byte) ([]byte, bool, error) {
	if w.it == nil {
		it, err := w.s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
		if err != nil {
			return nil, false, err
		}
		w.it = it
	}
	// The default comparer's prefix is the whole key: a hit is the key.
	if !w.it.SeekPrefixGE(key) || !bytes.Equal(w.it.Key(), key) {
		return nil, false, w.it.Error()
	}
	v, err := w.it.ValueAndErr()
	return v, err == nil, err
}

// lookupHead returns the stream's head, from the batch overlay or Pebble.
func (w *writer) lookupHead(stream string) (head, error) {
	if h, ok := w.heads[stream]; ok {
		return h, nil
	}
	if h, ok := w.recent[stream]; ok {
		return h, nil
	}
	w.key = headKey(w.key[:0], stream)
	v, found, err := w.get(w.key)
	if err != nil {
		return head{}, fmt.Errorf("pebbleledger: read head of %q: %w", stream, err)
	}
	if !found {
		return head{}, nil
	}
	rev, err := decodeBE8(v)
	if err != nil {
		return head{}, fmt.Errorf("pebbleledger: head of %q: %w", stream, err)
	}
	return head{rev: rev, exists: true}, nil
}

// lookupID returns the idempotency entry of an event id in stream, if any:
// from the batch overlay, the stream's index or, in a store upgraded from
// layout 1, the global index of that layout.
func (w *writer) lookupID(stream, id string) (idEntry, bool, error) {
	if e, ok := w.ids[streamID{stream, id}]; ok {
		return e, true, nil
	}
	w.key = eventIDKey(w.key[:0], stream, id)
	v, found, err := w.get(w.key)
	if err == nil && !found && w.legacy {
		w.key = idKey(w.key[:0], id)
		v, found, err = w.get(w.key)
	}
	if err != nil {
		return idEntry{}, false, fmt.Errorf("pebbleledger: read id %s: %w", id, err)
	}
	if !found {
		return idEntry{}, false, nil
	}
	e, err := decodeIDEntry(v)
	if err != nil {
		return idEntry{}, false, fmt.Errorf("pebbleledger: id %s: %w", id, err)
	}
	return e, true, nil
}

// check decides an append: write it (write true, w.head is the stream's
// head), answer it with an earlier
// append's result (idempotent retry), or fail it.
func (w *writer) check(r *appendReq) (res ledger.AppendResult, write bool, err error) {
	h, err := w.lookupHead(r.stream)
	if err != nil {
		return res, false, err
	}
	if !h.exists {
		// No earlier append to the stream: the ids cannot be a retry's
		// (idempotency is per stream).
		if !r.exp.holds(h.rev, h.exists) {
			return res, false, &ledger.WrongRevisionError{Stream: r.stream, Expected: r.expected, Actual: h.rev, ActualExists: h.exists}
		}
		w.head = h
		return res, true, nil
	}
	w.entries = w.entries[:0]
	known := false
	for i := range r.events {
		e, ok, err := w.lookupID(r.stream, r.events[i].ID)
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
		w.head = h
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
	h := w.head // read by check
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
		w.num = binary.BigEndian.AppendUint64(w.num[:0], p)
		if err := b.Set(w.key, w.num, nil); err != nil {
			return ledger.AppendResult{}, err
		}
		if cat := category(r.stream); cat != "" {
			w.key = categoryKey(w.key[:0], cat, p)
			if err := b.Set(w.key, nil, nil); err != nil {
				return ledger.AppendResult{}, err
			}
		}
		ie := idEntry{index: uint64(i), count: n, revision: rev, lastPos: lastPos, stream: r.stream}
		w.key = eventIDKey(w.key[:0], r.stream, e.ID)
		w.val = appendIDEntry(w.val[:0], &ie)
		if err := b.Set(w.key, w.val, nil); err != nil {
			return ledger.AppendResult{}, err
		}
		w.ids[streamID{r.stream, e.ID}] = ie
		rev++
	}
	last := first + n - 1
	w.key = headKey(w.key[:0], r.stream)
	w.num = binary.BigEndian.AppendUint64(w.num[:0], last)
	if err := b.Set(w.key, w.num, nil); err != nil {
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
