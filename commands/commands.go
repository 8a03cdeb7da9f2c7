// Package commands is pushledger's one write path. Every change — from the
// REST API, the gateway or a saga — goes through it: load the aggregate's
// stream, fold it, decide, append the new events at the expected revision,
// and retry from the load when another writer got there first.
package commands

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/domain/settings"
)

// ErrConflict: the stream kept changing under the command; it was retried
// Config.MaxRetries times and gave up.
var ErrConflict = errors.New("commands: too many concurrent writers")

// Config of a Handler.
type Config struct {
	// MaxRetries bounds the reload-and-retry loop on an expected-revision
	// conflict. Default 8.
	MaxRetries int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger, default slog.Default().
	Logger *slog.Logger
}

// Handler executes commands against the ledger. Safe for concurrent use.
type Handler struct {
	store ledger.Store
	cfg   Config
	// messages holds the recently used messages' states: a message is
	// changed several times within seconds (attempts, results,
	// acknowledgements, a broadcast's batches of them), and its stream
	// grows with each.
	messages *Cache[message.Message]
}

// messageCacheSize bounds the messages a Handler keeps folded.
const messageCacheSize = 4096

// New returns a Handler writing to store.
func New(store ledger.Store, cfg Config) (*Handler, error) {
	if store == nil {
		return nil, errors.New("commands: nil store")
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handler{store: store, cfg: cfg, messages: NewCache[message.Message](messageCacheSize)}, nil
}

// Result of a command.
type Result struct {
	// Events appended (none when the command was already satisfied).
	Events []ledger.RecordedEvent
	// Position is the global position of the last appended event, or 0.
	Position uint64
	// Revision is the stream's last revision after the command; -1 when the
	// stream has no events.
	Revision int64
}

// aggregate adapts a domain model to the generic loop.
type aggregate[S any, E interface{ EventType() string }] struct {
	decode func(string, []byte) (E, error)
	evolve func(*S, E) error
	// clone copies a state so that evolving the copy leaves it as it was;
	// nil for aggregates that are not cached.
	clone func(*S) S
}

var (
	messages = aggregate[message.Message, message.Event]{decode: message.Decode, evolve: (*message.Message).Evolve, clone: (*message.Message).Clone}
	devices  = aggregate[device.Device, device.Event]{decode: device.Decode, evolve: (*device.Device).Evolve}
	apps     = aggregate[app.App, app.Event]{decode: app.Decode, evolve: (*app.App).Evolve}
	settingz = aggregate[settings.Settings, settings.Event]{decode: settings.Decode, evolve: (*settings.Settings).Evolve}
)

// load folds a stream. rev is -1 when the stream has no events.
func load[S any, E interface{ EventType() string }](ctx context.Context, st ledger.Store, agg aggregate[S, E], stream string) (s S, rev int64, err error) {
	return fold(ctx, st, agg, stream, s, -1)
}

// loadCached is load through cache (nil: none): a cached state is taken
// and only the events after its revision are read. The caller owns the
// state and puts it back (remember).
func loadCached[S any, E interface{ EventType() string }](ctx context.Context, st ledger.Store, agg aggregate[S, E], c *Cache[S], stream string) (s S, rev int64, err error) {
	if e, ok := c.Take(stream); ok {
		return fold(ctx, st, agg, stream, e.State, e.Rev)
	}
	return load(ctx, st, agg, stream)
}

// remember puts a copy of s, the stream's state at rev, in cache c.
func remember[S any, E interface{ EventType() string }](c *Cache[S], agg aggregate[S, E], stream string, s *S, rev int64) {
	if c != nil && rev >= 0 {
		c.Put(stream, Cached[S]{State: agg.clone(s), Rev: rev})
	}
}

// fold reads the stream's events after revision rev and folds them into s
// (the state at rev; the zero state at -1).
func fold[S any, E interface{ EventType() string }](ctx context.Context, st ledger.Store, agg aggregate[S, E], stream string, s S, rev int64) (S, int64, error) {
	evs, err := st.ReadStream(ctx, stream, ledger.Forwards, uint64(rev+1), 0)
	if errors.Is(err, ledger.ErrStreamNotFound) && rev < 0 {
		return s, rev, nil
	}
	if err != nil {
		return s, rev, fmt.Errorf("load %s: %w", stream, err)
	}
	for _, re := range evs {
		e, err := agg.decode(re.Type, re.Data)
		if err != nil {
			return s, rev, fmt.Errorf("load %s@%d: %w", stream, re.Revision, err)
		}
		if err := agg.evolve(&s, e); err != nil {
			return s, rev, fmt.Errorf("load %s@%d: %w", stream, re.Revision, err)
		}
		rev = int64(re.Revision)
	}
	return s, rev, nil
}

// execute is the write loop: load, decide, append at the expected revision,
// retry on conflict. decide must be pure: it is called again on a retry.
//
// With a cache (c, nil for none), the state is loaded through it and put
// back after a decision that appended nothing or whose append succeeded.
func execute[S any, E interface{ EventType() string }](ctx context.Context, h *Handler, agg aggregate[S, E], c *Cache[S], stream string, decide func(*S, time.Time) ([]E, error)) (S, Result, error) {
	for attempt := 0; ; attempt++ {
		s, rev, err := loadCached(ctx, h.store, agg, c, stream)
		if err != nil {
			return s, Result{}, err
		}
		evs, err := decide(&s, h.cfg.Now())
		if err != nil || len(evs) == 0 {
			if err == nil {
				remember(c, agg, stream, &s, rev)
			}
			return s, Result{Revision: rev}, err
		}
		data, err := encode(stream, rev, evs)
		if err != nil {
			return s, Result{}, err
		}
		var expected ledger.StreamState = ledger.NoStream{}
		if rev >= 0 {
			expected = ledger.Revision(uint64(rev))
		}
		res, err := h.store.Append(ctx, stream, expected, data...)
		if errors.Is(err, ledger.ErrWrongExpectedRevision) && attempt < h.cfg.MaxRetries {
			continue
		}
		if errors.Is(err, ledger.ErrWrongExpectedRevision) {
			return s, Result{}, fmt.Errorf("%w: %s: %w", ErrConflict, stream, err)
		}
		if err != nil {
			return s, Result{}, fmt.Errorf("append %s: %w", stream, err)
		}
		for _, e := range evs {
			if err := agg.evolve(&s, e); err != nil {
				return s, Result{}, fmt.Errorf("evolve %s: %w", stream, err)
			}
		}
		remember(c, agg, stream, &s, int64(res.NextExpectedRevision))
		return s, Result{Events: recorded(stream, res, data), Position: res.Position, Revision: int64(res.NextExpectedRevision)}, nil
	}
}

// encode turns domain events into ledger events with deterministic ids.
// An id is derived from the stream, the event's revision and type, and a
// digest of the whole decision (every event's type and data): the same
// decision at the same revision gets the same ids, so an append retried
// after an unknown outcome is idempotent; a different decision at that
// revision (another writer's) gets other ids, so it meets the
// expected-revision check instead of being taken by the ledger for a retry
// of the append that got there first.
func encode[E interface{ EventType() string }](stream string, rev int64, evs []E) ([]ledger.EventData, error) {
	out, err := marshal(evs)
	if err != nil {
		return nil, err
	}
	sum := sha256.New()
	for _, d := range out {
		fmt.Fprintf(sum, "%d:%s%d:", len(d.Type), d.Type, len(d.Data))
		sum.Write(d.Data)
	}
	digest := hex.EncodeToString(sum.Sum(nil))
	for i := range out {
		r := strconv.FormatInt(rev+1+int64(i), 10)
		out[i].ID = ledger.DeterministicID(stream, r, out[i].Type, digest)
	}
	return out, nil
}

// encodeFresh turns domain events into ledger events with fresh ids, for
// appends that are never retried as such (see AppendAccept, MessageAt).
func encodeFresh[E interface{ EventType() string }](evs []E) ([]ledger.EventData, error) {
	out, err := marshal(evs)
	for i := range out {
		out[i].ID = ledger.NewID()
	}
	return out, err
}

func marshal[E interface{ EventType() string }](evs []E) ([]ledger.EventData, error) {
	out := make([]ledger.EventData, len(evs))
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		out[i] = ledger.EventData{Type: e.EventType(), Data: b}
	}
	return out, nil
}

func recorded(stream string, res ledger.AppendResult, data []ledger.EventData) []ledger.RecordedEvent {
	out := make([]ledger.RecordedEvent, len(data))
	first := res.NextExpectedRevision + 1 - uint64(len(data))
	for i, d := range data {
		out[i] = ledger.RecordedEvent{ID: d.ID, Stream: stream, Revision: first + uint64(i), Type: d.Type, Data: d.Data, Metadata: d.Metadata}
	}
	if len(out) > 0 {
		out[len(out)-1].Position = res.Position
	}
	return out
}

// Message executes cmd on message id.
func (h *Handler) Message(ctx context.Context, id string, cmd message.Command) (message.Message, Result, error) {
	return execute(ctx, h, messages, h.messages, message.Stream(id), func(m *message.Message, now time.Time) ([]message.Event, error) {
		return message.Decide(m, cmd, now)
	})
}

// LoadMessage folds message id; ok is false when it does not exist.
func (h *Handler) LoadMessage(ctx context.Context, id string) (m message.Message, ok bool, err error) {
	stream := message.Stream(id)
	m, rev, err := loadCached(ctx, h.store, messages, h.messages, stream)
	if err == nil {
		remember(h.messages, messages, stream, &m, rev)
	}
	return m, rev >= 0, err
}

// Device executes cmd on device id of app appID.
func (h *Handler) Device(ctx context.Context, appID, id string, cmd device.Command) (device.Device, Result, error) {
	return execute(ctx, h, devices, nil, device.Stream(appID, id), func(d *device.Device, now time.Time) ([]device.Event, error) {
		return device.Decide(d, cmd, now)
	})
}

// LoadDevice folds a device; ok is false when it does not exist.
func (h *Handler) LoadDevice(ctx context.Context, appID, id string) (d device.Device, ok bool, err error) {
	d, rev, err := load(ctx, h.store, devices, device.Stream(appID, id))
	return d, rev >= 0, err
}

// App executes cmd on app id.
func (h *Handler) App(ctx context.Context, id string, cmd app.Command) (app.App, Result, error) {
	return execute(ctx, h, apps, nil, app.Stream(id), func(a *app.App, now time.Time) ([]app.Event, error) {
		return app.Decide(a, cmd, now)
	})
}

// LoadApp folds app id; ok is false when it does not exist.
func (h *Handler) LoadApp(ctx context.Context, id string) (a app.App, ok bool, err error) {
	a, rev, err := load(ctx, h.store, apps, app.Stream(id))
	return a, rev >= 0, err
}

// Settings executes cmd on the platform's delivery settings.
func (h *Handler) Settings(ctx context.Context, cmd settings.SetDeliveryPolicy) (settings.Settings, Result, error) {
	return execute(ctx, h, settingz, nil, settings.Stream, func(s *settings.Settings, now time.Time) ([]settings.Event, error) {
		return settings.Decide(s, cmd, now)
	})
}

// ErrExists: a message with the id was already accepted.
var ErrExists = errors.New("commands: message exists")

// AcceptMessage signs a new message in: DecideAccept, then AppendAccept.
func (h *Handler) AcceptMessage(ctx context.Context, cmd message.Accept) (message.Message, Result, error) {
	evs, err := h.DecideAccept(cmd)
	if err != nil {
		return message.Message{}, Result{}, err
	}
	return h.AppendAccept(ctx, cmd.MessageID, evs)
}

// DecideAccept decides the acceptance of a new message (no I/O), so that a
// caller can check a whole batch before appending any of it.
func (h *Handler) DecideAccept(cmd message.Accept) ([]message.Event, error) {
	return message.Decide(&message.Message{}, cmd, h.cfg.Now())
}

// AppendAccept appends the acceptance events of new message id, as decided
// by DecideAccept. It is the hot path of the API, so it skips the load: a
// new message's stream must not exist (expected NoStream). When it does,
// the existing message is returned with an error wrapping ErrExists. It
// returns only after the ledger acknowledged the append.
func (h *Handler) AppendAccept(ctx context.Context, id string, evs []message.Event) (message.Message, Result, error) {
	var m message.Message
	stream := message.Stream(id)
	// Fresh event ids: a second accept of the same message id must meet the
	// existing stream (ErrExists), never the ledger's idempotent success —
	// the caller decides what a repeat means (idempotency-key windows).
	data, err := encodeFresh(evs)
	if err != nil {
		return m, Result{}, err
	}
	res, err := h.store.Append(ctx, stream, ledger.NoStream{}, data...)
	if errors.Is(err, ledger.ErrWrongExpectedRevision) {
		old, rev, lerr := load(ctx, h.store, messages, stream)
		if lerr != nil {
			return old, Result{}, lerr
		}
		return old, Result{Revision: rev}, fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err != nil {
		return m, Result{}, fmt.Errorf("append %s: %w", stream, err)
	}
	for _, e := range evs {
		if err := m.Evolve(e); err != nil {
			return m, Result{}, err
		}
	}
	remember(h.messages, messages, stream, &m, int64(res.NextExpectedRevision))
	return m, Result{Events: recorded(stream, res, data), Position: res.Position, Revision: int64(res.NextExpectedRevision)}, nil
}

// ErrStale: the message moved on since the state a MessageAt caller decided
// on (another writer appended first). Nothing was appended; the caller
// decides again from the newer state.
var ErrStale = errors.New("commands: state is stale")

// MessageAt executes cmds, in order, on message id as it was at revision
// rev (state m, folded by the caller from the stream up to rev), and
// appends the resulting events at expected revision rev in one append. It
// does not reload or retry: when the stream moved on it returns an error
// matching ErrStale and appends nothing. This is how a saga acts on the
// exact state it decided from: the ledger is the lock, so of two runners
// deciding from the same revision only one can, say, start attempt n.
// A command with nothing to do is skipped; m is not changed.
func (h *Handler) MessageAt(ctx context.Context, id string, m *message.Message, rev int64, cmds ...message.Command) (message.Message, Result, error) {
	s := m.Clone() // deciding must not change the caller's message
	stream := message.Stream(id)
	now := h.cfg.Now()
	var evs []message.Event
	for _, c := range cmds {
		out, err := message.Decide(&s, c, now)
		if err != nil {
			return *m, Result{Revision: rev}, err
		}
		for _, e := range out {
			if err := s.Evolve(e); err != nil {
				return *m, Result{Revision: rev}, fmt.Errorf("evolve %s: %w", stream, err)
			}
		}
		evs = append(evs, out...)
	}
	if len(evs) == 0 {
		return s, Result{Revision: rev}, nil
	}
	// Fresh event ids: two writers that make byte-identical decisions from
	// the same revision (the same clock reading) must not both succeed, the
	// second as an "idempotent retry" of the first: for a saga that would
	// mean two senders of one attempt. MessageAt never retries an append,
	// so it has no use for deterministic ids.
	data, err := encodeFresh(evs)
	if err != nil {
		return *m, Result{}, err
	}
	var expected ledger.StreamState = ledger.NoStream{}
	if rev >= 0 {
		expected = ledger.Revision(uint64(rev))
	}
	res, err := h.store.Append(ctx, stream, expected, data...)
	if errors.Is(err, ledger.ErrWrongExpectedRevision) {
		return *m, Result{Revision: rev}, fmt.Errorf("%w: %s: %w", ErrStale, stream, err)
	}
	if err != nil {
		return *m, Result{}, fmt.Errorf("append %s: %w", stream, err)
	}
	remember(h.messages, messages, stream, &s, int64(res.NextExpectedRevision))
	return s, Result{Events: recorded(stream, res, data), Position: res.Position, Revision: int64(res.NextExpectedRevision)}, nil
}

// FoldProgress folds recorded message events, in order, into p: the
// delivery policy's view of the message (its state and attempt history).
func FoldProgress(p *policy.Progress, evs []ledger.RecordedEvent) error {
	for _, re := range evs {
		e, err := message.Decode(re.Type, re.Data)
		if err == nil {
			err = p.Apply(e)
		}
		if err != nil {
			return fmt.Errorf("%s@%d: %w", re.Stream, re.Revision, err)
		}
	}
	return nil
}

// Now is the handler's clock.
func (h *Handler) Now() time.Time { return h.cfg.Now() }
