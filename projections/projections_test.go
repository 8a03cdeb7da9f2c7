package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/adapters/ledger"
	pebbleledger "github.com/pushledger/pushledger/adapters/ledger/pebble"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock moves 1 ms forward at every reading. Safe for concurrent use.
type clock struct{ n atomic.Int64 }

func (c *clock) Now() time.Time { return epoch.Add(time.Duration(c.n.Add(1)) * time.Millisecond) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// env is a real Pebble ledger and a real pebblekv read-model store, both on
// in-memory file systems, and the command handler writing to the ledger.
type env struct {
	led  *pebbleledger.Store
	kvFS vfs.FS
	kv   *pebblekv.Store
	h    *commands.Handler
	// closeKV closes the store last opened by openKV (once).
	closeKV func() error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	led, err := pebbleledger.Open(pebbleledger.Config{Dir: "ledger", FS: vfs.NewMem(), Logger: quiet()})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() {
		if err := led.Close(); err != nil && !errors.Is(err, ledger.ErrClosed) {
			t.Errorf("close ledger: %v", err)
		}
	})
	h, err := commands.New(led, commands.Config{Now: new(clock).Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{led: led, kvFS: vfs.NewMem(), h: h}
	e.kv = e.openKV(t)
	return e
}

// openKV opens the read-model store (again) and closes it at the end of
// the test unless the test closed it.
func (e *env) openKV(t *testing.T) *pebblekv.Store {
	t.Helper()
	kv, err := pebblekv.Open(pebblekv.Config{Dir: "kv", FS: e.kvFS})
	if err != nil {
		t.Fatalf("open kv: %v", err)
	}
	closeKV := sync.OnceValue(kv.Close)
	e.closeKV = closeKV
	t.Cleanup(func() { _ = closeKV() })
	return kv
}

func (e *env) runner(t *testing.T, p projections.Projection, st projections.Store) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(p, st, e.led, quiet())
	if err != nil {
		t.Fatalf("NewRunner %s: %v", p.Name(), err)
	}
	return r
}

func (e *env) last(t *testing.T) uint64 {
	t.Helper()
	p, err := e.led.LastPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func catchUp(t *testing.T, r *projections.Runner) {
	t.Helper()
	if err := r.CatchUp(context.Background(), nil); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
}

func (e *env) device(t *testing.T, appID, id string, cmd device.Command) commands.Result {
	t.Helper()
	_, res, err := e.h.Device(context.Background(), appID, id, cmd)
	if err != nil {
		t.Fatalf("device %s/%s %T: %v", appID, id, cmd, err)
	}
	return res
}

func (e *env) message(t *testing.T, id string, cmd message.Command) commands.Result {
	t.Helper()
	_, res, err := e.h.Message(context.Background(), id, cmd)
	if err != nil {
		t.Fatalf("message %s %T: %v", id, cmd, err)
	}
	return res
}

func (e *env) accept(t *testing.T, appID, id string) commands.Result {
	t.Helper()
	_, res, err := e.h.AcceptMessage(context.Background(), message.Accept{
		MessageID: id, AppID: appID, Audience: message.Audience{DeviceIDs: []string{"d1", "d2", "d3", "d4", "d5"}},
		Targets: []string{"d1", "d2", "d3", "d4", "d5"}, TargetCount: 5, Data: json.RawMessage(`{"n":1}`),
	})
	if err != nil {
		t.Fatalf("accept %s: %v", id, err)
	}
	return res
}

func register(appID, id string, tokens map[string]string) device.Register {
	return device.Register{AppID: appID, DeviceID: id, Profile: device.Profile{Platform: device.PlatformAndroid, Tokens: tokens}}
}

func readStream(t *testing.T, e *env, stream string) []ledger.RecordedEvent {
	t.Helper()
	evs, err := e.led.ReadStream(context.Background(), stream, ledger.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// dump returns every key and value of st under prefix (all when nil).
func dump(t *testing.T, st projections.Store, prefix []byte) map[string]string {
	t.Helper()
	var upper []byte
	if prefix != nil {
		upper = projections.PrefixEnd(prefix)
	}
	out := map[string]string{}
	if err := st.Scan(prefix, upper, false, func(k, v []byte) bool {
		out[string(k)] = string(v)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// counting wraps a projection and counts the events it is given.
type counting struct {
	projections.Projection
	mu   sync.Mutex
	seen []uint64 // positions
}

func (c *counting) Apply(w projections.Writer, evs []ledger.RecordedEvent) error {
	c.mu.Lock()
	for _, e := range evs {
		c.seen = append(c.seen, e.Position)
	}
	c.mu.Unlock()
	return c.Projection.Apply(w, evs)
}

func (c *counting) positions() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

// positionsOf returns the positions of the ledger's events that pass f
// and lie in (from, to].
func (e *env) positionsOf(t *testing.T, f ledger.Filter, from, to uint64) []uint64 {
	t.Helper()
	evs, err := e.led.ReadAll(context.Background(), from, ledger.Forwards, 0, f)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, ev := range evs {
		if ev.Position <= to {
			out = append(out, ev.Position)
		}
	}
	return out
}

// TestCatchUpReachesLastPosition: the checkpoint reaches the ledger's last
// position even when the last events are not the projection's.
func TestCatchUpReachesLastPosition(t *testing.T) {
	e := newEnv(t)
	e.device(t, "app1", "d1", register("app1", "d1", nil))
	e.device(t, "app1", "d1", device.AddTags{Tags: []string{"vip"}})
	e.accept(t, "app1", "m1")
	e.message(t, "m1", message.StartAttempt{Channel: "fcm"})

	c := &counting{Projection: projections.Devices{}}
	r := e.runner(t, c, e.kv)
	var progress [][2]uint64
	if err := r.CatchUp(context.Background(), func(pos, last uint64) { progress = append(progress, [2]uint64{pos, last}) }); err != nil {
		t.Fatal(err)
	}
	last := e.last(t)
	if r.Position() != last {
		t.Fatalf("Position %d after CatchUp, ledger at %d", r.Position(), last)
	}
	if cp, err := r.Checkpoint(); err != nil || cp != last {
		t.Fatalf("Checkpoint = %d, %v; want %d", cp, err, last)
	}
	if got := c.positions(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("folded positions %v, want [1 2]", got)
	}
	for _, p := range progress {
		if p[1] != last || p[0] > p[1] {
			t.Fatalf("progress %v with last %d", progress, last)
		}
	}
	// Nothing new: CatchUp is a no-op; only foreign events: the checkpoint
	// still moves.
	catchUp(t, r)
	e.message(t, "m1", message.RecordSent{Attempt: 1, Channel: "fcm"})
	before := dump(t, e.kv, projections.Devices{}.Prefix())
	catchUp(t, r)
	if r.Position() != e.last(t) || len(c.positions()) != 2 {
		t.Fatalf("Position %d (ledger %d), %d events folded", r.Position(), e.last(t), len(c.positions()))
	}
	if after := dump(t, e.kv, projections.Devices{}.Prefix()); !maps.Equal(before, after) {
		t.Fatal("foreign events changed the device registry")
	}
	// An empty ledger: nothing to do.
	e2 := newEnv(t)
	r2 := e2.runner(t, projections.Devices{}, e2.kv)
	catchUp(t, r2)
	if r2.Position() != 0 {
		t.Fatalf("Position %d on an empty ledger", r2.Position())
	}
}

// TestCatchUpInBatches: a catch-up longer than one read batch folds every
// event once, in order, and reports progress per batch.
func TestCatchUpInBatches(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// 1+1500 events of one device in one append: registration, then a tag
	// added and removed in turn.
	const n = 1500
	evs := []device.Event{device.Registered{AppID: "app1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformWeb}, At: epoch}}
	for i := range n {
		at := epoch.Add(time.Duration(i+1) * time.Millisecond)
		if i%2 == 0 {
			evs = append(evs, device.TagsAdded{Tags: []string{fmt.Sprint("t", i)}, At: at})
		} else {
			evs = append(evs, device.TagsRemoved{Tags: []string{fmt.Sprint("t", i-1)}, At: at})
		}
	}
	data := make([]ledger.EventData, len(evs))
	for i, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		data[i] = ledger.EventData{ID: ledger.NewID(), Type: ev.EventType(), Data: b}
	}
	if _, err := e.led.Append(ctx, device.Stream("app1", "d1"), ledger.NoStream{}, data...); err != nil {
		t.Fatal(err)
	}
	e.device(t, "app1", "d1", device.AddTags{Tags: []string{"last"}})
	e.accept(t, "app1", "m1")

	c := &counting{Projection: projections.Devices{}}
	r := e.runner(t, c, e.kv)
	calls := 0
	if err := r.CatchUp(ctx, func(pos, last uint64) { calls++ }); err != nil {
		t.Fatal(err)
	}
	want := e.positionsOf(t, projections.Devices{}.Filter(), 0, e.last(t))
	if got := c.positions(); !slices.Equal(got, want) {
		t.Fatalf("folded %d events, want %d, in order", len(got), len(want))
	}
	if calls < 2 {
		t.Fatalf("progress reported %d times for %d events", calls, len(want))
	}
	v, err := projections.Registry{Store: e.kv}.Device("app1", "d1")
	if err != nil || !slices.Equal(v.Tags, []string{"last"}) || v.Revision != n+1 {
		t.Fatalf("device view %+v, %v", v, err)
	}
}

// TestRunFollowsLiveAppends: Run folds new events as they are appended;
// WaitFor returns once a position is folded.
func TestRunFollowsLiveAppends(t *testing.T) {
	e := newEnv(t)
	e.device(t, "app1", "d1", register("app1", "d1", map[string]string{"fcm": "f1"}))
	devs := e.runner(t, projections.Devices{}, e.kv)
	msgs := e.runner(t, projections.Messages{}, e.kv)
	catchUp(t, devs)
	catchUp(t, msgs)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	runErrs := make([]error, 2)
	for i, r := range []*projections.Runner{devs, msgs} {
		wg.Go(func() { runErrs[i] = r.Run(ctx) })
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	t.Cleanup(stop)

	reg := projections.Registry{Store: e.kv}
	wctx := t.Context()
	for i := range 20 {
		id := fmt.Sprint("d", i+2)
		res := e.device(t, "app1", id, register("app1", id, map[string]string{"fcm": "tok-" + id}))
		mres := e.accept(t, "app1", fmt.Sprint("m", i))
		if err := devs.WaitFor(wctx, res.Position); err != nil {
			t.Fatal(err)
		}
		if _, got, err := reg.ByToken("fcm", "tok-"+id); err != nil || got != id {
			t.Fatalf("after WaitFor: ByToken = %q, %v", got, err)
		}
		if err := msgs.WaitFor(wctx, mres.Position); err != nil {
			t.Fatal(err)
		}
		page, _, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1", Limit: 1})
		if err != nil || len(page) != 1 || page[0].ID != fmt.Sprint("m", i) {
			t.Fatalf("after WaitFor: newest message %+v, %v", page, err)
		}
		if devs.Position() < res.Position || msgs.Position() < mres.Position {
			t.Fatalf("positions %d, %d behind %d, %d", devs.Position(), msgs.Position(), res.Position, mres.Position)
		}
	}
	if n, err := reg.ActiveCount("app1"); err != nil || n != 21 {
		t.Fatalf("ActiveCount = %d, %v", n, err)
	}
	// A reached position returns at once; an unreached one waits for ctx.
	if err := devs.WaitFor(wctx, 1); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := devs.WaitFor(cctx, e.last(t)+100); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor an unreached position with a cancelled context = %v", err)
	}
	// The checkpoint written by Run is what a new runner starts from.
	stop()
	for i, err := range runErrs {
		if err != nil {
			t.Fatalf("Run %d returned %v after cancel", i, err)
		}
	}
	again := e.runner(t, projections.Devices{}, e.kv)
	if again.Position() != devs.Position() {
		t.Fatalf("new runner at %d, the stopped one at %d", again.Position(), devs.Position())
	}
}

// TestCheckpointSurvivesReopen: after closing and reopening the store a
// runner resumes at its checkpoint and folds only the new events.
func TestCheckpointSurvivesReopen(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		id := fmt.Sprint("d", i)
		e.device(t, "app1", id, register("app1", id, map[string]string{"fcm": "f" + id}))
		e.device(t, "app1", id, device.AddTags{Tags: []string{"t" + id}})
	}
	e.accept(t, "app1", "m1")
	c1 := &counting{Projection: projections.Devices{}}
	r1 := e.runner(t, c1, e.kv)
	catchUp(t, r1)
	cp := r1.Position()
	if len(c1.positions()) != 10 || cp != e.last(t) {
		t.Fatalf("first run folded %d events, checkpoint %d", len(c1.positions()), cp)
	}
	if err := e.closeKV(); err != nil {
		t.Fatal(err)
	}

	// More events while the store is closed.
	e.device(t, "app1", "d0", device.Logout{})
	e.device(t, "app1", "d9", register("app1", "d9", nil))
	e.accept(t, "app1", "m2")
	e.device(t, "app1", "d1", device.BindAlias{Alias: "bob"})
	e.accept(t, "app1", "m3")

	kv := e.openKV(t)
	c2 := &counting{Projection: projections.Devices{}}
	r2 := e.runner(t, c2, kv)
	if r2.Position() != cp {
		t.Fatalf("reopened runner at %d, checkpoint was %d", r2.Position(), cp)
	}
	catchUp(t, r2)
	want := e.positionsOf(t, projections.Devices{}.Filter(), cp, e.last(t))
	if got := c2.positions(); !slices.Equal(got, want) || len(want) != 3 {
		t.Fatalf("after reopen folded %v, want the 3 new events %v", got, want)
	}
	// The data equals a registry built from scratch.
	fresh, err := pebblekv.Open(pebblekv.Config{Dir: "fresh", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	catchUp(t, e.runner(t, projections.Devices{}, fresh))
	if a, b := dump(t, kv, nil), dump(t, fresh, nil); !maps.Equal(a, b) {
		t.Fatalf("resumed registry differs from a fresh one:\n%q\n%q", a, b)
	}

	// Run resumes from the checkpoint too.
	bind := e.device(t, "app1", "d2", device.BindAlias{Alias: "carol"})
	res := e.device(t, "app1", "d2", device.RemoveTags{Tags: []string{"td2"}})
	cp = r2.Position()
	c3 := &counting{Projection: projections.Devices{}}
	r3 := e.runner(t, c3, kv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r3.Run(ctx) }()
	err = r3.WaitFor(t.Context(), res.Position)
	cancel()
	if rerr := <-done; err != nil || rerr != nil {
		t.Fatalf("WaitFor: %v; Run: %v", err, rerr)
	}
	if got := c3.positions(); !slices.Equal(got, []uint64{bind.Position, res.Position}) || cp >= bind.Position {
		t.Fatalf("Run folded %v, want only %d and %d", got, bind.Position, res.Position)
	}
}

// failing writes its data, then fails: nothing of the batch may remain.
type failing struct{ projections.Devices }

var errFold = errors.New("fold failed")

func (failing) Apply(w projections.Writer, evs []ledger.RecordedEvent) error {
	if err := w.Set([]byte("dv\x00junk"), []byte("x")); err != nil {
		return err
	}
	return errFold
}

// TestCommitIsAtomic: data and checkpoint are written together or not at
// all.
func TestCommitIsAtomic(t *testing.T) {
	e := newEnv(t)
	e.device(t, "app1", "d1", register("app1", "d1", nil))
	r := e.runner(t, failing{}, e.kv)
	if err := r.CatchUp(context.Background(), nil); !errors.Is(err, errFold) {
		t.Fatalf("CatchUp = %v, want the fold's error", err)
	}
	if r.Position() != 0 {
		t.Fatalf("Position %d after a failed fold", r.Position())
	}
	if cp, err := r.Checkpoint(); err != nil || cp != 0 {
		t.Fatalf("Checkpoint %d, %v after a failed fold", cp, err)
	}
	if d := dump(t, e.kv, nil); len(d) != 0 {
		t.Fatalf("a failed fold left %q", d)
	}
}

func TestCorruptCheckpoint(t *testing.T) {
	e := newEnv(t)
	if err := e.kv.Update(func(w projections.Writer) error {
		return w.Set([]byte("cp\x00"+projections.Devices{}.Name()), []byte{1, 2, 3})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := projections.NewRunner(projections.Devices{}, e.kv, e.led, quiet()); err == nil {
		t.Fatal("NewRunner accepted a 3-byte checkpoint")
	}
}

// populate writes a realistic mix of device, message and app events.
func populate(t *testing.T, e *env) {
	t.Helper()
	for i := range 12 {
		id := fmt.Sprint("d", i)
		e.device(t, "app1", id, register("app1", id, map[string]string{"fcm": "f-" + id}))
		e.device(t, "app1", id, device.AddTags{Tags: []string{fmt.Sprint("g", i%3), "all"}})
		if i%2 == 0 {
			e.device(t, "app1", id, device.BindAlias{Alias: fmt.Sprint("u", i%4)})
		}
	}
	e.device(t, "app2", "d0", register("app2", "d0", map[string]string{"apns": "a-d0"}))
	e.device(t, "app1", "d3", device.Logout{})
	e.device(t, "app1", "d4", device.InvalidateToken{Channel: "fcm", Token: "f-d4"})
	e.device(t, "app1", "d5", device.RemoveTags{Tags: []string{"all"}})
	e.device(t, "app1", "d3", register("app1", "d3", map[string]string{"fcm": "f-d3b"}))
	e.device(t, "app1", "d6", device.Logout{})
	for i := range 15 {
		id := fmt.Sprint("m", i)
		e.accept(t, fmt.Sprint("app", 1+i%2), id)
		switch i % 5 {
		case 1:
			e.message(t, id, message.StartAttempt{Channel: "fcm"})
		case 2:
			e.message(t, id, message.StartAttempt{Channel: "fcm"})
			e.message(t, id, message.RecordSent{Attempt: 1, Channel: "fcm"})
			e.message(t, id, message.RecordDelivered{DeviceID: "d1", Channel: "fcm"})
		case 3:
			e.message(t, id, message.Cancel{})
		case 4:
			e.message(t, id, message.StartAttempt{Channel: "fcm"})
			e.message(t, id, message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "boom", Final: true})
		}
	}
}

// TestResetRebuildsIdenticalData: Reset and CatchUp replays the ledger into
// exactly the data the projections had.
func TestResetRebuildsIdenticalData(t *testing.T) {
	e := newEnv(t)
	populate(t, e)
	devs := e.runner(t, projections.Devices{}, e.kv)
	msgs := e.runner(t, projections.Messages{}, e.kv)
	catchUp(t, devs)
	catchUp(t, msgs)
	before := dump(t, e.kv, nil)
	if len(dump(t, e.kv, projections.Devices{}.Prefix())) == 0 || len(dump(t, e.kv, projections.Messages{}.Prefix())) == 0 {
		t.Fatal("projections are empty")
	}

	// Resetting one projection leaves the other alone.
	if err := devs.Reset(); err != nil {
		t.Fatal(err)
	}
	if d := dump(t, e.kv, projections.Devices{}.Prefix()); len(d) != 0 {
		t.Fatalf("Reset left %d registry keys", len(d))
	}
	if cp, err := devs.Checkpoint(); err != nil || cp != 0 || devs.Position() != 0 {
		t.Fatalf("after Reset: checkpoint %d (%v), position %d", cp, err, devs.Position())
	}
	if a, b := dump(t, e.kv, projections.Messages{}.Prefix()), filter(before, projections.Messages{}.Prefix()); !maps.Equal(a, b) {
		t.Fatal("resetting the registry changed the message projection")
	}
	if err := msgs.Reset(); err != nil {
		t.Fatal(err)
	}
	if d := dump(t, e.kv, nil); len(d) != 0 {
		t.Fatalf("after both resets %d keys remain: %q", len(d), d)
	}
	catchUp(t, devs)
	catchUp(t, msgs)
	after := dump(t, e.kv, nil)
	if !maps.Equal(before, after) {
		for k, v := range before {
			if after[k] != v {
				t.Errorf("key %q: before %q, after %q", k, v, after[k])
			}
		}
		for k := range after {
			if _, ok := before[k]; !ok {
				t.Errorf("key %q only after the rebuild", k)
			}
		}
		t.FailNow()
	}
	// Folding the same events again (a replay over existing data, as after
	// a checkpoint lost with its batch) changes nothing either.
	if err := e.kv.Update(func(w projections.Writer) error {
		return errors.Join(w.Delete([]byte("cp\x00"+projections.Devices{}.Name())), w.Delete([]byte("cp\x00"+projections.Messages{}.Name())))
	}); err != nil {
		t.Fatal(err)
	}
	catchUp(t, e.runner(t, projections.Devices{}, e.kv))
	catchUp(t, e.runner(t, projections.Messages{}, e.kv))
	if again := dump(t, e.kv, nil); !maps.Equal(before, again) {
		t.Fatal("re-folding events over existing data changed it")
	}
}

func filter(m map[string]string, prefix []byte) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if len(k) >= len(prefix) && k[:len(prefix)] == string(prefix) {
			out[k] = v
		}
	}
	return out
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte("ab"), []byte("ac")},
		{[]byte{'a', 0xff}, []byte("b")},
		{[]byte{0xff, 0xff}, nil},
		{[]byte{}, nil},
	} {
		if got := projections.PrefixEnd(c.in); string(got) != string(c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
