package sagas_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/adapters/ledger"
	pebbleledger "github.com/pushledger/pushledger/adapters/ledger/pebble"
	"github.com/pushledger/pushledger/adapters/secretbox"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
	"github.com/pushledger/pushledger/sagas"
)

// tester is what the harness needs of *testing.T, *testing.B and *rapid.T.
type tester interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

const appID = "app-1"

// world is the embedded platform the runners work in, wired as
// cmd/pushledger/internal/platform wires it: a Pebble ledger, a Pebble
// read-model store, the commands handler, the app directory (running) and
// the secret box. It holds one app.
type world struct {
	ledger *pebbleledger.Store
	store  *pebblekv.Store
	cmd    *commands.Handler
	apps   *projections.Apps
	box    *secretbox.Box
	log    *logSink

	mu     sync.Mutex
	alerts []sagas.Alert
}

type worldOptions struct {
	// dir holds the stores; empty: an in-memory file system.
	dir string
	// channels to configure on the app, by name, with their priority.
	channels map[string]int
	// policy, when set, is recorded as the app's own delivery policy.
	policy []byte
	// now is the commands' clock; default time.Now.
	now func() time.Time
}

// newWorld opens the stores in opts.dir (an in-memory file system when
// empty), starts the app directory and creates the app with its channels.
// Everything is stopped and closed at the test's cleanup, after the
// runners started later (cleanups run last-registered first).
func newWorld(t tester, opts worldOptions) *world {
	t.Helper()
	w := &world{log: &logSink{}}
	lcfg := pebbleledger.Config{Dir: "ledger", Logger: quiet()}
	scfg := pebblekv.Config{Dir: "state"}
	if opts.dir == "" {
		lcfg.FS, scfg.FS = vfs.NewMem(), vfs.NewMem()
	} else {
		lcfg.Dir, scfg.Dir = opts.dir+"/ledger", opts.dir+"/state"
	}
	var err error
	if w.ledger, err = pebbleledger.Open(lcfg); err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() {
		if err := w.ledger.Close(); err != nil && !errors.Is(err, ledger.ErrClosed) {
			t.Errorf("close ledger: %v", err)
		}
	})
	if w.store, err = pebblekv.Open(scfg); err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := w.store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	if w.cmd, err = commands.New(w.ledger, commands.Config{Logger: quiet(), Now: opts.now}); err != nil {
		t.Fatalf("commands: %v", err)
	}
	key, err := secretbox.ParseKey(secretbox.NewKey())
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	if w.box, err = secretbox.New(key); err != nil {
		t.Fatalf("secret box: %v", err)
	}
	w.apps = projections.NewApps(w.ledger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.apps.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("app directory: %v", err)
		}
	})

	bg := context.Background()
	var res commands.Result
	if _, res, err = w.cmd.App(bg, appID, app.Create{AppID: appID, Name: "test app", AppKey: "key-1",
		SecretCiphertext: w.box.Seal([]byte("app secret"), []byte(appID))}); err != nil {
		t.Fatalf("create app: %v", err)
	}
	names := make([]string, 0, len(opts.channels))
	for name := range opts.channels {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cfg := app.ChannelConfig{Enabled: true, Priority: opts.channels[name], Settings: map[string]string{"url": "https://example.test/" + name}}
		if _, res, err = w.cmd.App(bg, appID, app.ConfigureChannel{Channel: name, Config: cfg}); err != nil {
			t.Fatalf("configure channel %s: %v", name, err)
		}
	}
	if opts.policy != nil {
		if _, err := policy.Parse(opts.policy, policy.DefaultConfig()); err != nil {
			t.Fatalf("app policy: %v", err)
		}
		if _, res, err = w.cmd.App(bg, appID, app.SetPolicy{Policy: opts.policy}); err != nil {
			t.Fatalf("set policy: %v", err)
		}
	}
	wctx, wcancel := context.WithTimeout(bg, 10*time.Second)
	defer wcancel()
	if err := w.apps.WaitFor(wctx, res.Position); err != nil {
		t.Fatalf("app directory: %v", err)
	}
	return w
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fastPolicy is the platform default with retries in milliseconds: 5
// attempts per channel 15 ms doubling up to 100 ms (±20 %), 6 per cycle.
func fastPolicy() policy.Config {
	c := policy.DefaultConfig()
	c.Default.Retry = policy.RetryPolicy{MaxAttempts: 5, Initial: 15 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.2}
	c.AttemptTimeout = 5 * time.Second
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// runner is a Runner running in the background.
type runner struct {
	*sagas.Runner
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start starts a runner over chans sharing leases (a new table when nil).
// Zero fields of cfg get test values: the fast policy, a 1 s send timeout,
// the world's error-catching logger and alert list.
func (w *world) start(t tester, cfg sagas.Config, leases sagas.Leases, chans ...channels.Channel) *runner {
	t.Helper()
	if cfg.Policy == nil {
		cfg.Policy = fastPolicy
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(w.log)
	}
	if cfg.OnAlert == nil {
		cfg.OnAlert = w.alert
	}
	if leases == nil {
		leases = sagas.NewMemoryLeases(nil)
	}
	r, err := sagas.NewRunner(cfg, w.ledger, w.cmd, w.apps, w.box, w.store, leases, chans...)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &runner{Runner: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- r.Run(ctx) }()
	t.Cleanup(func() { rn.stop(t) })
	return rn
}

// stop stops the runner and waits for Run to return (once).
func (rn *runner) stop(t tester) {
	t.Helper()
	rn.once.Do(func() {
		rn.cancel()
		select {
		case err := <-rn.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10 s after its context ended")
		}
	})
}

func (w *world) alert(a sagas.Alert) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.alerts = append(w.alerts, a)
}

func (w *world) alertsFor(id string) []sagas.Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []sagas.Alert
	for _, a := range w.alerts {
		if a.MessageID == id {
			out = append(out, a)
		}
	}
	return out
}

// waitAlerts returns message id's alerts once there is one: the runner
// raises an alert right after it recorded the final failure.
func (w *world) waitAlerts(t tester, id string) []sagas.Alert {
	t.Helper()
	eventually(t, 5*time.Second, func() (bool, string) { return len(w.alertsFor(id)) > 0, "no alert for " + id })
	return w.alertsFor(id)
}

// acceptCmd is a message to one device, as the API builds it for a
// device-id audience.
func acceptCmd(id string) message.Accept {
	return message.Accept{
		MessageID: id, AppID: appID,
		Audience: message.Audience{DeviceIDs: []string{"device-1"}}, Targets: []string{"device-1"}, TargetCount: 1,
		Notification: &message.Notification{Title: "hello", Body: "world"}, Data: []byte(`{"k":"v"}`),
	}
}

// accept accepts message id, changed by mod when not nil.
func (w *world) accept(t tester, id string, mod func(*message.Accept)) message.Message {
	t.Helper()
	cmd := acceptCmd(id)
	if mod != nil {
		mod(&cmd)
	}
	m, _, err := w.cmd.AcceptMessage(context.Background(), cmd)
	if err != nil {
		t.Fatalf("accept %s: %v", id, err)
	}
	return m
}

func (w *world) message(t tester, id string) message.Message {
	t.Helper()
	m, ok, err := w.cmd.LoadMessage(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("load message %s: ok %v, %v", id, ok, err)
	}
	return m
}

// event is a message event as recorded.
type event struct {
	Type  string
	Event message.Event
}

// history returns message id's events.
func (w *world) history(t tester, id string) []event {
	t.Helper()
	res, err := w.ledger.ReadStream(context.Background(), message.Stream(id), ledger.Forwards, 0, 0)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	out := make([]event, len(res))
	for i, re := range res {
		e, err := message.Decode(re.Type, re.Data)
		if err != nil {
			t.Fatalf("decode %s@%d: %v", id, re.Revision, err)
		}
		out[i] = event{Type: re.Type, Event: e}
	}
	return out
}

func types(h []event) []string {
	out := make([]string, len(h))
	for i, e := range h {
		out[i] = strings.TrimSuffix(strings.TrimPrefix(e.Type, "message."), ".v1")
	}
	return out
}

func of[E message.Event](h []event) []E {
	var out []E
	for _, e := range h {
		if x, ok := e.Event.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

// settled reports whether the runners are done with m: nothing more is
// sent (sent on a channel without acknowledgements, failed finally,
// expired, cancelled, delivered).
func settled(m message.Message) bool {
	return m.State == message.StateSent || m.Terminal()
}

// eventually polls cond every few milliseconds until it holds, and fails
// the test with what cond last said when it does not within d.
func eventually(t tester, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, why)
		}
		time.Sleep(2 * time.Millisecond) // a poll interval, not a wait for an outcome
	}
}

// waitSettled waits until every message of ids is settled.
func (w *world) waitSettled(t tester, d time.Duration, ids ...string) {
	t.Helper()
	eventually(t, d, func() (bool, string) {
		for _, id := range ids {
			m, ok, err := w.cmd.LoadMessage(context.Background(), id)
			if err != nil || !ok || !settled(m) {
				return false, fmt.Sprintf("message %s is %q (err %v); runners logged %q", id, m.State, err, w.log.errors())
			}
		}
		return true, ""
	})
}

// noErrors fails the test when a runner logged an error.
func (w *world) noErrors(t tester) {
	t.Helper()
	if errs := w.log.errors(); len(errs) > 0 {
		t.Errorf("runners logged %d errors, first: %s", len(errs), errs[0])
	}
}

// logSink is a slog.Handler that keeps the records at level Error.
type logSink struct {
	mu   sync.Mutex
	errs []string
}

func (s *logSink) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	s.mu.Lock()
	s.errs = append(s.errs, b.String())
	s.mu.Unlock()
	return nil
}

func (s *logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *logSink) WithGroup(string) slog.Handler      { return s }

func (s *logSink) errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// outcome is a scripted answer of a testChannel.
type outcome struct {
	err    error         // nil: accepted
	block  bool          // hold the send until its context ends
	linger time.Duration // with block: then take that long to give up
	hold   chan struct{} // when not nil, answer only once it is closed
}

var (
	accepted = outcome{}
	blocked  = outcome{block: true}
)

func transient(retryAfter time.Duration) outcome {
	return outcome{err: &channels.SendError{Class: channels.Transient, Status: 503, Reason: "http_503", RetryAfter: retryAfter}}
}

func permanent() outcome {
	return outcome{err: &channels.SendError{Class: channels.Permanent, Status: 400, Reason: "http_400"}}
}

func tokenInvalid() outcome {
	return outcome{err: &channels.SendError{Class: channels.TokenInvalid, Status: 410, Reason: "unregistered"}}
}

// sendCall is one call of Send.
type sendCall struct {
	Channel   string
	MessageID string
	Attempt   int
	At        time.Time // when Send was called
	Answered  time.Time // when it returned (zero while it has not)
	Err       error
	Push      channels.Push
}

// testChannel is a channels.Channel whose answers are scripted per call:
// the answers queued for a message (Script) in order, then def's (accepted
// when def is nil). It records every call. Like every channel it never
// sends an expired push (channels.CheckExpiry).
type testChannel struct {
	name string
	def  func(p channels.Push) outcome

	mu     sync.Mutex
	script map[string][]outcome
	calls  []sendCall
}

var _ channels.Channel = (*testChannel)(nil)

func newChannel(name string, def func(p channels.Push) outcome) *testChannel {
	return &testChannel{name: name, def: def, script: map[string][]outcome{}}
}

func (c *testChannel) Name() string { return c.name }

// Script queues the answers to message id's next calls.
func (c *testChannel) Script(id string, outs ...outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.script[id] = append(c.script[id], outs...)
}

func (c *testChannel) Send(ctx context.Context, p channels.Push) (channels.Result, error) {
	call := sendCall{Channel: c.name, MessageID: p.MessageID, Attempt: p.Attempt, At: time.Now(), Push: clonePush(p)}
	c.mu.Lock()
	o := accepted
	if q := c.script[p.MessageID]; len(q) > 0 {
		o, c.script[p.MessageID] = q[0], q[1:]
	} else if c.def != nil {
		o = c.def(p)
	}
	i := len(c.calls)
	c.calls = append(c.calls, call) // recorded at once: a blocked call is seen
	c.mu.Unlock()
	err := channels.CheckExpiry(p, call.At)
	switch {
	case err != nil:
	case o.block:
		<-ctx.Done()
		time.Sleep(o.linger) // a provider slow to let go: part of the answer, not a wait in the test
		err = &channels.SendError{Class: channels.Transient, Reason: channels.ReasonTimeout, Err: ctx.Err()}
	default:
		err = o.err
		if o.hold != nil {
			select {
			case <-o.hold:
			case <-ctx.Done():
				err = &channels.SendError{Class: channels.Transient, Reason: channels.ReasonTimeout, Err: ctx.Err()}
			}
		}
	}
	c.mu.Lock()
	c.calls[i].Answered, c.calls[i].Err = time.Now(), err
	c.mu.Unlock()
	if err != nil {
		return channels.Result{}, err
	}
	return channels.Result{ProviderMessageID: "provider-" + p.MessageID, Accepted: len(p.Targets)}, nil
}

// Calls returns the calls so far (of message id only, when given).
func (c *testChannel) Calls(id ...string) []sendCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sendCall
	for _, call := range c.calls {
		if len(id) == 0 || call.MessageID == id[0] {
			out = append(out, call)
		}
	}
	return out
}

// clonePush copies what a channel must not retain of p.
func clonePush(p channels.Push) channels.Push {
	p.Targets = slices.Clone(p.Targets)
	p.Secret = slices.Clone(p.Secret)
	p.Data = slices.Clone(p.Data)
	p.Settings = maps.Clone(p.Settings)
	return p
}

// checkSettledOnce checks that every message of ids is settled, that no
// attempt started after the message settled, that attempts are numbered
// 1..k with k at most maxAttempts, that none timed out, and that the
// channel was asked exactly once for each attempt.
func checkSettledOnce(t *testing.T, w *world, ch *testChannel, ids []string, maxAttempts int) {
	t.Helper()
	want := map[string][]int{}
	for _, id := range ids {
		h := w.history(t, id)
		settledAt := -1
		var attempts []int
		for i, e := range h {
			switch e := e.Event.(type) {
			case message.Sending:
				if settledAt >= 0 {
					t.Errorf("message %s: attempt %d started after it settled: %v", id, e.Attempt, types(h))
				}
				attempts = append(attempts, e.Attempt)
			case message.Sent:
				settledAt = i
			case message.Failed:
				if e.Final {
					settledAt = i
				}
				if e.Reason == policy.ReasonAttemptTimeout {
					t.Errorf("message %s: attempt %d timed out, but no runner died", id, e.Attempt)
				}
			}
		}
		if settledAt < 0 {
			t.Errorf("message %s not settled: %v", id, types(h))
		}
		if len(attempts) > maxAttempts {
			t.Errorf("message %s: %d attempts, at most %d allowed", id, len(attempts), maxAttempts)
		}
		want[id] = attempts
	}
	checkCallsOnce(t, ch.Calls(), want)
}

// checkCallsOnce checks that the channel was asked exactly once for each
// attempt of want (message id → attempts), and for nothing else.
func checkCallsOnce(t *testing.T, calls []sendCall, want map[string][]int) {
	t.Helper()
	type key struct {
		id      string
		attempt int
	}
	seen := map[key]int{}
	for _, c := range calls {
		seen[key{c.MessageID, c.Attempt}]++
	}
	for id, attempts := range want {
		for _, a := range attempts {
			k := key{id, a}
			if seen[k] != 1 {
				t.Errorf("message %s attempt %d sent %d times, want once", id, a, seen[k])
			}
			delete(seen, k)
		}
	}
	for k, n := range seen {
		t.Errorf("message %s attempt %d sent %d times, never started", k.id, k.attempt, n)
	}
}
