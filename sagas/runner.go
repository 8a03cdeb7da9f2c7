// Package sagas holds pushledger's process managers: ledger-driven loops
// that decide what happens after each transition of a message and record
// every decision in the ledger. The decisions are the domain's
// (domain/policy); this package owns the runtime: the subscription and its
// checkpoints, the durable timers, the partition leases, the sends.
package sagas

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
)

// Apps gives the runner an app's channels, policy and secret.
type Apps interface {
	ByID(id string) (*app.App, bool)
	WaitFor(ctx context.Context, pos uint64) error
}

// Secrets opens an app's sealed secret.
type Secrets interface {
	Open(sealed, associated []byte) ([]byte, error)
}

// Alert is a message that failed finally in a way operators should hear
// of (attempts exhausted, no channel left). The ledger holds it too: the
// final failed event's alert field.
type Alert struct {
	MessageID, AppID string
	Attempt          int
	Reason           string
	At               time.Time
}

// Config of a Runner.
type Config struct {
	// Owner names the runner in the lease table; unique among the runners
	// sharing it. Default: random.
	Owner string
	// Partitions splits the messages among runners (by a hash of the
	// message id). Every runner sharing a store must use the same number.
	// Default 64.
	Partitions int
	// Concurrency bounds the decisions made at once. Default 32.
	Concurrency int
	// Senders bounds the channel sends in flight. Default 64.
	Senders int
	// SendTimeout bounds one channel send. It should stay below every
	// policy's attempt timeout; under a policy (an app's own) whose attempt
	// timeout is not above it, a send is bounded by half the attempt
	// timeout instead. Default 15 s.
	SendTimeout time.Duration
	// LeaseTTL is how long a partition lease lasts; it is renewed every
	// third of it. Default 10 s.
	LeaseTTL time.Duration
	// Policy returns the platform's default delivery policy, onto which an
	// app's own policy is read. It is called for every decision, so a
	// reloaded configuration applies at once. Default policy.DefaultConfig.
	Policy func() policy.Config
	// Presence tells what is known of a device now (online on the
	// gateway, app in the foreground), for the background rule. Default:
	// nothing known (the zero value, the strictest).
	Presence func(a *app.App, deviceID string) policy.Presence
	// HoldRecheck is how often a message held by the background rule is
	// looked at again (the device may have come online). Default 15 s.
	HoldRecheck time.Duration
	// OnAlert is called for every alert. Default: a warning in the log.
	OnAlert func(Alert)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger, default slog.Default().
	Logger *slog.Logger
}

// Runner is the delivery saga's runtime. It follows the message streams of
// the partitions it holds a lease on and, after every transition and when
// every timer fires, asks the app's policy what to do (policy.Config.Next)
// and does it: it records the decision in the ledger at the expected
// revision it decided from, starts attempts and hands them to channels,
// records their results, and keeps one durable wake-up time per open
// message (retry, ack timeout, attempt timeout, send time, expiry).
//
// Crash safety: the ledger is the state; a partition's wake-up times are
// written with its checkpoint, and everything after the checkpoint is
// decided again at start, so after any restart every message that is not
// settled resumes where it was. An attempt is sent only by the runner whose
// "sending" event was appended at the expected revision: two runners can
// never both send attempt n. A runner that dies between that event and the
// channel's answer leaves the attempt "sending" until the policy's attempt
// timeout retries it.
type Runner struct {
	cfg      Config
	ledger   ledger.Store
	cmd      *commands.Handler
	apps     Apps
	secrets  Secrets
	store    projections.Store
	leases   Leases
	channels map[string]channels.Channel
	rates    *rates
	policies *policy.Resolver

	mu    sync.Mutex
	owned map[int]uint64 // partition -> checkpoint
	// checkpointed is when handleBatch last wrote every partition's
	// checkpoint (its goroutine's alone).
	checkpointed time.Time
	// decided holds, for each message with a timer, the stream revision
	// its latest decision was made at: the subscription skips the events
	// up to it (the runner's own appends, mostly), already decided upon.
	decided map[string]int64
	timers  *timerQueue
	nudge   chan struct{}
	changed chan struct{}

	// known holds the progress of messages decided recently, so that a
	// decision reads only the events appended since (see load).
	known *commands.Cache[progressAt]

	stripes [512]sync.Mutex
	// deciders and senders run decisions and sends on goroutines that
	// live on between tasks, made by Run: a decision or a send goes deep
	// into the ledger and the stores, and on a new goroutine the stack
	// grew (copied) every time.
	deciders, senders *ants.Pool
	sendSem           chan struct{}
	pending           atomic.Int64
	room              chan struct{}
	inflight          sync.WaitGroup // the send goroutines, which Run waits for

	decisions, fired, sends atomic.Int64
}

// NewRunner returns a runner over the given channels (by Name()). Its
// checkpoints and durable timers live in store; leases share the
// partitions with other runners (NewMemoryLeases for runners in one
// process).
func NewRunner(cfg Config, l ledger.Store, cmd *commands.Handler, apps Apps, secrets Secrets, store projections.Store, leases Leases, chans ...channels.Channel) (*Runner, error) {
	if l == nil || cmd == nil || apps == nil || secrets == nil || store == nil || leases == nil {
		return nil, errors.New("sagas: runner needs a ledger, commands, apps, secrets, a store and leases")
	}
	if cfg.Owner == "" {
		b := make([]byte, 8)
		rand.Read(b)
		cfg.Owner = "runner-" + hex.EncodeToString(b)
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 64
	}
	if cfg.Partitions > 4096 {
		return nil, errors.New("sagas: at most 4096 partitions")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Senders <= 0 {
		cfg.Senders = 64
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 15 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.DefaultConfig
	}
	if cfg.HoldRecheck <= 0 {
		cfg.HoldRecheck = 15 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnAlert == nil {
		log := cfg.Logger
		cfg.OnAlert = func(a Alert) {
			log.Warn("delivery alert", "message", a.MessageID, "app", a.AppID, "attempt", a.Attempt, "reason", a.Reason)
		}
	}
	m := map[string]channels.Channel{}
	for _, c := range chans {
		m[c.Name()] = c
	}
	return &Runner{
		cfg: cfg, ledger: l, cmd: cmd, apps: apps, secrets: secrets, store: store, leases: leases, channels: m,
		policies: policy.NewResolver(cfg.Policy, func(id string, err error) {
			cfg.Logger.Error("sagas: app policy invalid; using the defaults", "app", id, "err", err)
		}),
		rates: newRates(), owned: map[int]uint64{}, timers: newTimerQueue(), decided: map[string]int64{}, known: commands.NewCache[progressAt](progressCacheSize),
		nudge: make(chan struct{}, 1), changed: make(chan struct{}, 1),
		sendSem: make(chan struct{}, cfg.Senders), room: make(chan struct{}, 1),
	}, nil
}

// Stats are a runner's counters.
type Stats struct {
	// Partitions held and Timers held now.
	Partitions, Timers int
	// Decisions made, Fired timers and Sends started since start.
	Decisions, Fired, Sends int64
	// Checkpoint is the lowest checkpoint among the partitions held.
	Checkpoint uint64
}

// Stats returns the runner's counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Partitions: len(r.owned), Timers: r.timers.Len(), Decisions: r.decisions.Load(), Fired: r.fired.Load(), Sends: r.sends.Load()}
	first := true
	for _, cp := range r.owned {
		if first || cp < s.Checkpoint {
			s.Checkpoint, first = cp, false
		}
	}
	return s
}

// Run works until ctx ends, then releases its leases. Sends in flight are
// cancelled and waited for; their results are not recorded (their attempts
// time out and are retried).
func (r *Runner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A panic in a task is the process's, as on a goroutine of its own.
	repanic := ants.WithPanicHandler(func(p any) { panic(p) })
	var err error
	if r.deciders, err = ants.NewPool(r.cfg.Concurrency, repanic); err != nil {
		return err
	}
	defer r.deciders.Release()
	if r.senders, err = ants.NewPool(r.cfg.Senders, repanic, ants.WithNonblocking(true)); err != nil {
		return err
	}
	defer r.senders.Release()
	if err := r.rebalance(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for _, loop := range []func(context.Context) error{r.leaseLoop, r.timerLoop, r.followLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(ctx); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel() // stop the other loops
	wg.Wait()
	r.inflight.Wait() // the sends end with ctx
	r.mu.Lock()
	parts := make([]int, 0, len(r.owned))
	for p := range r.owned {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	for _, p := range parts {
		_ = r.leases.Release(context.WithoutCancel(ctx), p, r.cfg.Owner)
	}
	return err
}

// leaseLoop renews and rebalances the leases every third of their TTL.
func (r *Runner) leaseLoop(ctx context.Context) error {
	t := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.rebalance(ctx); err != nil {
			r.cfg.Logger.Error("sagas: leases", "owner", r.cfg.Owner, "err", err)
		}
	}
}

// rebalance renews the leases held and takes or gives up partitions so
// that each live runner holds its fair share.
func (r *Runner) rebalance(ctx context.Context) error {
	r.mu.Lock()
	held := make([]int, 0, len(r.owned))
	for p := range r.owned {
		held = append(held, p)
	}
	r.mu.Unlock()
	slices.Sort(held)
	for _, p := range held {
		ok, err := r.leases.Acquire(ctx, p, r.cfg.Owner, r.cfg.LeaseTTL)
		if err != nil {
			return err
		}
		if !ok {
			r.drop(p)
		}
	}
	owners, err := r.leases.Owners(ctx)
	if err != nil {
		return err
	}
	owners = max(owners, 1)
	share := (r.cfg.Partitions + owners - 1) / owners
	r.mu.Lock()
	n := len(r.owned)
	r.mu.Unlock()
	for i := len(held) - 1; n > share && i >= 0; i-- {
		if err := r.leases.Release(ctx, held[i], r.cfg.Owner); err != nil {
			return err
		}
		r.drop(held[i])
		n--
	}
	for p := 0; p < r.cfg.Partitions && n < share; p++ {
		if r.holds(p) {
			continue
		}
		ok, err := r.leases.Acquire(ctx, p, r.cfg.Owner, r.cfg.LeaseTTL)
		if err != nil {
			return err
		}
		if ok {
			if err := r.adopt(p); err != nil {
				_ = r.leases.Release(ctx, p, r.cfg.Owner)
				return err
			}
			n++
		}
	}
	return nil
}

func (r *Runner) holds(p int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.owned[p]
	return ok
}

// adopt starts work on partition p: its checkpoint and durable timers.
func (r *Runner) adopt(p int) error {
	cp, err := projections.LoadCheckpoint(r.store, checkpointName(p))
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := loadWakes(r.store, p, func(id string, at time.Time) { r.timers.Set(id, at) }); err != nil {
		return err
	}
	r.owned[p] = cp
	r.signal(r.changed)
	r.signal(r.nudge)
	return nil
}

// drop stops work on partition p.
func (r *Runner) drop(p int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.owned[p]; !ok {
		return
	}
	delete(r.owned, p)
	var ids []string
	for _, e := range r.timers.h.items {
		if partitionOf(e.id, r.cfg.Partitions) == p {
			ids = append(ids, e.id)
		}
	}
	for _, id := range ids {
		r.timers.Remove(id)
	}
	for id := range r.decided {
		if partitionOf(id, r.cfg.Partitions) == p {
			delete(r.decided, id)
		}
	}
	r.signal(r.changed)
}

func (r *Runner) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// followLoop follows the message streams from the lowest checkpoint of the
// partitions held, starting over when they change.
func (r *Runner) followLoop(ctx context.Context) error {
	for ctx.Err() == nil {
		r.mu.Lock()
		var from uint64
		first := true
		for _, cp := range r.owned {
			if first || cp < from {
				from, first = cp, false
			}
		}
		r.mu.Unlock()
		if first { // nothing held
			select {
			case <-ctx.Done():
			case <-r.changed:
			}
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-r.changed:
				cancel()
			case <-sctx.Done():
			}
		}()
		err := r.follow(ctx, sctx, from)
		cancel()
		if err != nil && sctx.Err() == nil {
			return err
		}
	}
	return nil
}

// follow reads the message streams from position from until sctx ends
// (the partitions held changed, or ctx ended). The decisions about a batch,
// and the sends they start, run under ctx, the runner's: a change of
// partitions restarts the subscription, it must not abandon the sends in
// flight (their attempts would wait for the attempt timeout).
func (r *Runner) follow(ctx, sctx context.Context, from uint64) error {
	sub, err := r.ledger.Subscribe(sctx, from, ledger.Filter{StreamPrefixes: []string{message.StreamPrefix}})
	if err != nil {
		return err
	}
	defer sub.Close()
	read := from // the subscription has delivered everything up to read
	for {
		evs, err := sub.Recv(sctx)
		if err != nil {
			if sctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sagas: %w", err)
		}
		// A partition adopted with a checkpoint behind what the
		// subscription has delivered needs those events again: start
		// over from it. The signal on r.changed normally restarts the
		// subscription first; this does not depend on it (under load in
		// TestRunnersShareTheWorkOnPostgres a runner once went on
		// without, and never decided a message of the adopted partition).
		if r.behind(read) {
			return nil
		}
		if err := r.handleBatch(ctx, evs); err != nil {
			return err
		}
		if len(evs) > 0 {
			read = evs[len(evs)-1].Position
		}
	}
}

// behind reports whether a partition held has its checkpoint before pos.
func (r *Runner) behind(pos uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cp := range r.owned {
		if cp < pos {
			return true
		}
	}
	return false
}

// checkpointEvery bounds how long the durable checkpoint of a partition
// with no new events lags behind.
const checkpointEvery = time.Second

// handleBatch decides, once each, about the messages of the batch in the
// partitions held, then writes their wake-up times and moves every held
// partition's checkpoint past the batch: in memory, and in the store for
// the partitions the batch had events of (the others every
// checkpointEvery).
func (r *Runner) handleBatch(ctx context.Context, evs []ledger.RecordedEvent) error {
	if len(evs) == 0 {
		return nil
	}
	if err := r.waitForRoom(ctx); err != nil {
		return nil
	}
	r.mu.Lock()
	cps := make(map[int]uint64, len(r.owned))
	for p, cp := range r.owned {
		cps[p] = cp
	}
	r.mu.Unlock()
	// seen holds each message's events in the batch, which its decision
	// folds instead of reading them again.
	seen := map[string][]ledger.RecordedEvent{}
	deciding := map[string]bool{}
	var ids []string
	touched := map[int]bool{}
	r.mu.Lock()
	for _, re := range evs {
		id := message.IDFromStream(re.Stream)
		p := partitionOf(id, r.cfg.Partitions)
		cp, ok := cps[p]
		if id == "" || !ok {
			continue
		}
		seen[id] = append(seen[id], re)
		if re.Position <= cp || deciding[id] {
			continue
		}
		touched[p] = true
		if rev, ok := r.decided[id]; ok && int64(re.Revision) <= rev {
			continue // this runner decided from a state that held it
		}
		if _, timed := r.timers.At(id); !timed && acknowledges(re.Type) {
			// Nothing waits on the message (it was delivered, or settled
			// otherwise): a broadcast's later batches of acknowledgements
			// change nothing to decide.
			continue
		}
		deciding[id] = true
		ids = append(ids, id)
	}
	r.mu.Unlock()
	ops, err := r.decideAll(ctx, ids, seen)
	if err != nil {
		return err
	}
	last := evs[len(evs)-1].Position
	// The checkpoints of the partitions this batch had events of are
	// written with their wake-ups; the others' at most every
	// checkpointEvery: a partition with no events in between has nothing
	// to decide again from an older checkpoint, it only reads further.
	all := time.Since(r.checkpointed) >= checkpointEvery
	if all {
		r.checkpointed = time.Now()
	}
	err = r.store.Update(func(w projections.Writer) error {
		if err := writeWakes(w, r.cfg.Partitions, ops); err != nil {
			return err
		}
		for p, cp := range cps {
			if last > cp && (all || touched[p]) {
				if err := projections.SetCheckpoint(w, checkpointName(p), last); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	for p := range cps {
		if cp, ok := r.owned[p]; ok && last > cp {
			r.owned[p] = last
		}
	}
	r.mu.Unlock()
	return nil
}

// acknowledges reports whether events of type t record a device's
// acknowledgement or open: they can end a wait (for the acknowledgement,
// for the attempt) but never start a send.
func acknowledges(t string) bool {
	return t == message.TypeDelivered || t == message.TypeDeliveredBatch || t == message.TypeOpened
}

// decideAll decides about ids concurrently and returns their wake-up
// changes. A decision that fails is logged and retried by its timer: its
// message keeps (or gets) a wake-up soon.
func (r *Runner) decideAll(ctx context.Context, ids []string, seen map[string][]ledger.RecordedEvent) ([]wakeOp, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ops := make([]wakeOp, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		err := r.deciders.Submit(func() {
			defer wg.Done()
			op, err := r.decide(ctx, id, nil, seen[id])
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Error("sagas: decide", "message", id, "err", err)
				}
				op = r.retryLater(id)
			}
			ops[i] = op
		})
		if err != nil { // the pool is released: Run is ending
			wg.Done()
			ops[i] = r.retryLater(id)
		}
	}
	wg.Wait()
	return ops, ctx.Err()
}

// retryLater gives a message whose decision failed a wake-up in a few
// seconds.
func (r *Runner) retryLater(id string) wakeOp {
	at := r.cfg.Now().Add(2 * time.Second)
	r.mu.Lock()
	r.timers.Set(id, at)
	r.mu.Unlock()
	r.signal(r.nudge)
	return wakeOp{id: id, at: at}
}

// timerLoop fires due timers.
func (r *Runner) timerLoop(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []string
	for {
		r.mu.Lock()
		next, ok := r.timers.Next()
		r.mu.Unlock()
		if ok {
			if d := next.Sub(r.cfg.Now()); d > 0 {
				t.Reset(d)
			} else {
				r.mu.Lock()
				due = r.timers.PopDue(r.cfg.Now(), 1024, due[:0])
				r.mu.Unlock()
				r.fired.Add(int64(len(due)))
				ops, err := r.decideAll(ctx, slices.Clone(due), nil)
				if err != nil {
					return nil
				}
				if err := r.store.Update(func(w projections.Writer) error { return writeWakes(w, r.cfg.Partitions, ops) }); err != nil {
					return err
				}
				continue
			}
		} else {
			t.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.nudge:
		case <-t.C:
		}
	}
}

func (r *Runner) stripe(id string) *sync.Mutex {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &r.stripes[h%uint32(len(r.stripes))]
}

// sendResult is the outcome of an attempt this runner sent.
type sendResult struct {
	attempt int
	channel string
	result  channels.Result
	err     error
}

// decide settles what to do about message id now and does it, repeating
// until the message waits (for a timer, a result, an ack) or is settled,
// and returns its wake-up change. With sr it first records the result of
// the attempt this runner sent.
func (r *Runner) decide(ctx context.Context, id string, sr *sendResult, seen []ledger.RecordedEvent) (wakeOp, error) {
	mu := r.stripe(id)
	mu.Lock()
	op, sends, err := r.decideLocked(ctx, id, sr, seen)
	if err == nil {
		r.mu.Lock()
		if op.at.IsZero() {
			r.timers.Remove(id)
			delete(r.decided, id)
		} else {
			r.timers.Set(id, op.at)
			r.decided[id] = op.rev
		}
		r.mu.Unlock()
		r.signal(r.nudge)
	}
	mu.Unlock()
	for _, j := range sends {
		r.startSend(ctx, j)
	}
	return op, err
}

func (r *Runner) decideLocked(ctx context.Context, id string, sr *sendResult, seen []ledger.RecordedEvent) (op wakeOp, sends []sendJob, err error) {
	op.id = id
	p, rev, first, err := r.load(ctx, id, seen, sr != nil)
	if err != nil || rev < 0 {
		return op, nil, err
	}
	// The progress decided from goes back to the cache when the decision
	// ends without an error: at rev, it is the stream's state (apply folds
	// only what was appended).
	defer func() {
		if err == nil {
			r.known.Put(id, commands.Cached[progressAt]{State: progressAt{p: p, first: first}, Rev: rev})
		}
	}()
	a, ok := r.apps.ByID(p.Message.AppID)
	if !ok {
		// The directory may not have caught up with the app's creation,
		// which came before the message.
		if err := r.apps.WaitFor(ctx, first); err != nil {
			return op, nil, err
		}
		if a, ok = r.apps.ByID(p.Message.AppID); !ok {
			a = &app.App{ID: p.Message.AppID}
		}
	}
	cfg := r.policies.For(a)
	for range 8 {
		r.decisions.Add(1)
		now := r.cfg.Now()
		env := r.env(a, cfg, &p.Message, now)
		var d policy.Decision
		switch {
		case sr != nil && (p.Message.State != message.StateSending || p.Message.Attempt != sr.attempt):
			sr = nil // the attempt was settled without us (timed out): decide afresh
			continue
		case sr != nil && sr.err == nil:
			rec := message.RecordSent{Attempt: sr.attempt, Channel: sr.channel, ProviderID: sr.result.ProviderMessageID, Accepted: sr.result.Accepted}
			sr = nil
			if p, rev, err = r.apply(ctx, id, p, rev, rec); err != nil {
				return op, sends, err
			}
			continue
		case sr != nil:
			f := failureOf(sr)
			d = cfg.AfterFailure(&p, f, env)
			if d.Record != nil { // the failure itself: keep the channel's class
				rec := *d.Record
				rec.Class = f.Class.String()
				d.Record = &rec
			}
			sr = nil
		default:
			d = cfg.Next(&p, env)
			// Next recomputes the retry from the failed event, which does
			// not hold the provider's Retry-After; the event's retry_at is
			// the time decided with it: never start sooner.
			if m := &p.Message; d.Sends() && m.State == message.StateFailed && m.RetryAt.After(d.At) {
				d.At = m.RetryAt
			}
		}
		cmds, wake := plan(d, now, p.Message.ExpiresAt, r.cfg.HoldRecheck)
		if len(cmds) == 0 {
			op.at, op.rev = wake, rev
			return op, sends, nil
		}
		before := p.Message.Attempt
		p, rev, err = r.apply(ctx, id, p, rev, cmds...)
		if errors.Is(err, commands.ErrStale) {
			// Another writer moved the message on; decide from its state.
			if p, rev, _, err = r.load(ctx, id, nil, false); err != nil {
				return op, sends, err
			}
			continue
		}
		if err != nil {
			return op, sends, err
		}
		if d.Alert {
			r.cfg.OnAlert(Alert{MessageID: id, AppID: p.Message.AppID, Attempt: p.Message.Attempt, Reason: d.Reason, At: now})
		}
		if d.InvalidToken != "" {
			r.invalidateTokens(ctx, &p.Message, d.InvalidToken)
		}
		if p.Message.State == message.StateSending && p.Message.Attempt > before {
			j, err := r.job(a, cfg, &p)
			if err != nil {
				return op, sends, err
			}
			sends = append(sends, j)
		}
	}
	return op, sends, fmt.Errorf("sagas: message %s: no settled decision after 8 rounds", id)
}

// plan turns a decision into the commands to record now, or the time to
// decide again when there are none (zero: no timer).
//
// A hold (the background rule) is looked at again every hold interval,
// until expiry: the device's presence may have changed meanwhile.
func plan(d policy.Decision, now, expires time.Time, hold time.Duration) ([]message.Command, time.Time) {
	switch d.Action {
	case policy.ActionWait:
		return nil, d.At
	case policy.ActionExpire:
		return []message.Command{message.Expire{}}, time.Time{}
	case policy.ActionGiveUp:
		rec := *d.Record
		if d.Alert {
			rec.Alert = d.Reason
		}
		return []message.Command{rec}, time.Time{}
	case policy.ActionStart, policy.ActionRetry, policy.ActionFailover:
		var cmds []message.Command
		later := d.At.After(now)
		if d.Record != nil {
			rec := *d.Record
			if later {
				at := d.At
				rec.RetryAt = &at
			}
			cmds = append(cmds, rec)
		}
		if later {
			if len(cmds) == 0 {
				return nil, d.At
			}
			return cmds, time.Time{}
		}
		return append(cmds, d.StartAttempt()), time.Time{}
	}
	if d.Action == policy.ActionHold {
		at := now.Add(hold)
		if !expires.IsZero() && expires.Before(at) {
			at = expires
		}
		return nil, at
	}
	return nil, time.Time{} // none
}

// apply records cmds on the message at revision rev and folds the result.
func (r *Runner) apply(ctx context.Context, id string, p policy.Progress, rev int64, cmds ...message.Command) (policy.Progress, int64, error) {
	_, res, err := r.cmd.MessageAt(ctx, id, &p.Message, rev, cmds...)
	if err != nil {
		return p, rev, err
	}
	if err := commands.FoldProgress(&p, res.Events); err != nil {
		return p, rev, err
	}
	return p, res.Revision, nil
}

// progressCacheSize bounds the messages whose progress a runner keeps.
const progressCacheSize = 4096

// progressAt is a message's folded progress; first is the position of its
// first event.
type progressAt struct {
	p     policy.Progress
	first uint64
}

// load folds message id's stream; rev is -1 when it does not exist, first
// the position of its first event. The caller, holding the message's
// stripe, owns the state and puts it back in r.known when its decision
// ends well.
//
// A message decided recently is taken from r.known; seen, the message's
// events the subscription delivered for this decision (in order), are
// folded into it, and a new message's state is folded from them alone.
// The stream is read only for what they do not cover: the events since
// the cached state, unless seen reach as far, or trust is set. trust is
// for a send's result: what it records is appended at the revision
// decided from, and the ledger refuses it (ErrStale) if the stream moved
// on meanwhile.
func (r *Runner) load(ctx context.Context, id string, seen []ledger.RecordedEvent, trust bool) (p policy.Progress, rev int64, first uint64, err error) {
	c, cached := r.known.Take(id)
	if !cached {
		c.Rev = -1 // nothing folded
	}
	for _, re := range seen {
		if int64(re.Revision) <= c.Rev {
			continue
		}
		if int64(re.Revision) != c.Rev+1 {
			break // a gap: read on from the stream
		}
		if c.Rev < 0 {
			c.State.first = re.Position
		}
		if err := commands.FoldProgress(&c.State.p, []ledger.RecordedEvent{re}); err != nil {
			return p, -1, 0, err
		}
		c.Rev++
	}
	if c.Rev >= 0 && (trust || (len(seen) > 0 && c.Rev >= int64(seen[len(seen)-1].Revision))) {
		return c.State.p, c.Rev, c.State.first, nil
	}
	evs, err := r.ledger.ReadStream(ctx, message.Stream(id), ledger.Forwards, uint64(c.Rev+1), 0)
	if errors.Is(err, ledger.ErrStreamNotFound) && c.Rev < 0 {
		return p, -1, 0, nil
	}
	if err != nil {
		return p, -1, 0, err
	}
	if len(evs) > 0 && c.Rev < 0 {
		c.State.first = evs[0].Position
	}
	if err := commands.FoldProgress(&c.State.p, evs); err != nil {
		return p, -1, 0, err
	}
	if len(evs) > 0 {
		c.Rev = int64(evs[len(evs)-1].Revision)
	}
	return c.State.p, c.Rev, c.State.first, nil
}

// env is the world of a decision about a message of app a.
func (r *Runner) env(a *app.App, cfg policy.Config, m *message.Message, now time.Time) policy.Env {
	env := policy.Env{Now: now, Channels: cfg.Failover.Stats(a.Channels, r.rates.of(a.ID), now)}
	// Presence is known per device: a message to one device gets its
	// device's; others get the zero value, the strictest.
	if r.cfg.Presence != nil && len(m.Targets) == 1 {
		env.Presence = r.cfg.Presence(a, m.Targets[0])
	}
	for name := range a.Channels {
		if _, ok := r.channels[name]; !ok {
			if env.Exclude == nil {
				env.Exclude = map[string]bool{}
			}
			env.Exclude[name] = true
		}
	}
	return env
}

func failureOf(sr *sendResult) policy.Failure {
	class, se := channels.Classify(sr.err)
	f := policy.Failure{Channel: sr.channel, Class: class, Reason: "error"}
	if se != nil {
		f.Reason, f.Status, f.RetryAfter = se.Reason, se.Status, se.RetryAfter
	}
	if errors.Is(sr.err, context.DeadlineExceeded) && se == nil {
		f.Reason = "timeout"
	}
	return f
}

// invalidateTokens records, on every target device, that its token on
// channel is invalid.
func (r *Runner) invalidateTokens(ctx context.Context, m *message.Message, channel string) {
	for _, dev := range m.Targets {
		d, ok, err := r.cmd.LoadDevice(ctx, m.AppID, dev)
		if err != nil || !ok {
			continue
		}
		tok := d.Profile.Tokens[channel]
		if tok == "" {
			continue
		}
		if _, _, err := r.cmd.Device(ctx, m.AppID, dev, device.InvalidateToken{Channel: channel, Token: tok, Reason: "token_invalid"}); err != nil {
			r.cfg.Logger.Error("sagas: invalidate token", "device", dev, "channel", channel, "err", err)
		}
	}
}

// sendJob is an attempt to hand to its channel.
type sendJob struct {
	id        string
	attempt   int
	channel   string
	startedAt time.Time
	timeout   time.Duration // bounds the send
	deadline  time.Time     // the attempt would time out mid-send: do not start it after
	halfLife  time.Duration // of the channel's success rate (the app's failover policy)
	push      channels.Push
}

func (r *Runner) job(a *app.App, cfg policy.Config, p *policy.Progress) (sendJob, error) {
	m := &p.Message
	// A send ends before its attempt times out. An app's own policy may
	// allow less than SendTimeout: half its attempt timeout then.
	attempt := cfg.AttemptTimeout
	timeout := r.cfg.SendTimeout
	if timeout >= attempt {
		timeout = attempt / 2
	}
	j := sendJob{id: m.ID, attempt: m.Attempt, channel: m.Channel, startedAt: p.StartedAt, halfLife: cfg.Failover.HalfLife,
		timeout: timeout, deadline: p.StartedAt.Add(attempt - timeout)}
	secret, err := r.secrets.Open(a.SecretCiphertext, []byte(a.ID))
	if err != nil {
		return j, fmt.Errorf("sagas: app %s secret: %w", a.ID, err)
	}
	j.push = channels.Push{
		MessageID: m.ID, AppID: m.AppID, Attempt: m.Attempt, Priority: m.Priority, CollapseID: m.CollapseID,
		ExpiresAt: m.ExpiresAt, Settings: a.Channels[m.Channel].Settings, Secret: secret, Data: m.Data,
	}
	if m.Notification != nil {
		j.push.Title, j.push.Body = m.Notification.Title, m.Notification.Body
	}
	for _, id := range m.Targets {
		j.push.Targets = append(j.push.Targets, channels.Target{DeviceID: id})
	}
	return j, nil
}

// startSend sends j in the background, at most Senders at once, and
// records its result. The sends beyond Senders wait on goroutines of their
// own: they must not wait in startSend, which a send's own goroutine calls
// when its result starts the next attempt.
func (r *Runner) startSend(ctx context.Context, j sendJob) {
	r.pending.Add(1)
	r.inflight.Add(1)
	send := func() { r.send(ctx, j) }
	if r.senders.Submit(send) != nil {
		go send()
	}
}

// send is startSend's task.
func (r *Runner) send(ctx context.Context, j sendJob) {
	defer r.inflight.Done()
	defer r.sendDone()
	select {
	case r.sendSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-r.sendSem }()
	if r.cfg.Now().After(j.deadline) {
		// Queued too long: the attempt would time out mid-send. Leave it
		// to the attempt timeout, which retries it.
		return
	}
	ch, ok := r.channels[j.channel]
	if !ok {
		return
	}
	r.sends.Add(1)
	sctx, cancel := context.WithTimeout(ctx, j.timeout)
	res, err := ch.Send(sctx, j.push)
	cancel()
	if ctx.Err() != nil {
		return
	}
	r.rates.observe(j.push.AppID, j.channel, err == nil, r.cfg.Now(), j.halfLife)
	op, derr := r.decide(ctx, j.id, &sendResult{attempt: j.attempt, channel: j.channel, result: res, err: err}, nil)
	if derr != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.Error("sagas: record result", "message", j.id, "attempt", j.attempt, "err", derr)
		}
		op = r.retryLater(j.id)
	}
	if err := r.store.Update(func(w projections.Writer) error { return writeWakes(w, r.cfg.Partitions, []wakeOp{op}) }); err != nil {
		r.cfg.Logger.Error("sagas: write timer", "message", j.id, "err", err)
	}
}

// highWater bounds the sends queued or in flight, in units of Senders,
// before the subscription waits: decisions must not outrun the channels.
const highWater = 8

func (r *Runner) sendDone() {
	if r.pending.Add(-1) < int64(highWater*r.cfg.Senders) {
		r.signal(r.room)
	}
}

func (r *Runner) waitForRoom(ctx context.Context) error {
	for r.pending.Load() >= int64(highWater*r.cfg.Senders) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.room:
		}
	}
	return nil
}

// rates holds each app's rolling success rate per channel, observed from
// the sends of this runner. They start empty at each start (the failover
// policy's neutral prior covers the time until they fill again).
type rates struct {
	mu sync.Mutex
	m  map[string]map[string]policy.RollingRate
}

func newRates() *rates { return &rates{m: map[string]map[string]policy.RollingRate{}} }

func (r *rates) observe(appID, channel string, ok bool, at time.Time, halfLife time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.m[appID]
	if m == nil {
		m = map[string]policy.RollingRate{}
		r.m[appID] = m
	}
	m[channel] = m[channel].Observe(ok, at, halfLife)
}

func (r *rates) of(appID string) map[string]policy.RollingRate {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]policy.RollingRate, len(r.m[appID]))
	for k, v := range r.m[appID] {
		out[k] = v
	}
	return out
}
