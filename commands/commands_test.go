package commands_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"

	"github.com/pushledger/pushledger/adapters/ledger"
	pebbleledger "github.com/pushledger/pushledger/adapters/ledger/pebble"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a test clock that moves 1 ms forward at every reading, so that
// every decision gets its own time. Safe for concurrent use.
type clock struct{ n atomic.Int64 }

func (c *clock) Now() time.Time { return epoch.Add(time.Duration(c.n.Add(1)) * time.Millisecond) }

// fixed is a clock that never moves.
func fixed() time.Time { return epoch }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openLedger opens a real Pebble ledger on an in-memory file system.
func openLedger(t testing.TB) *pebbleledger.Store {
	t.Helper()
	s, err := pebbleledger.Open(pebbleledger.Config{Dir: "ledger", FS: vfs.NewMem(), Logger: quiet()})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ledger.ErrClosed) {
			t.Errorf("close ledger: %v", err)
		}
	})
	return s
}

func newHandler(t testing.TB, st ledger.Store, cfg commands.Config) *commands.Handler {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = new(clock).Now
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	h, err := commands.New(st, cfg)
	if err != nil {
		t.Fatalf("commands.New: %v", err)
	}
	return h
}

func lastPosition(t testing.TB, st ledger.Store) uint64 {
	t.Helper()
	p, err := st.LastPosition(context.Background())
	if err != nil {
		t.Fatalf("LastPosition: %v", err)
	}
	return p
}

func readStream(t testing.TB, st ledger.Store, stream string) []ledger.RecordedEvent {
	t.Helper()
	evs, err := st.ReadStream(context.Background(), stream, ledger.Forwards, 0, 0)
	if err != nil {
		t.Fatalf("ReadStream %s: %v", stream, err)
	}
	return evs
}

// checkContiguous fails unless the stream's revisions are 0..n-1 and its
// positions strictly increase.
func checkContiguous(t testing.TB, evs []ledger.RecordedEvent) {
	t.Helper()
	for i, e := range evs {
		if e.Revision != uint64(i) {
			t.Fatalf("event %d has revision %d", i, e.Revision)
		}
		if i > 0 && e.Position <= evs[i-1].Position {
			t.Fatalf("event %d at position %d after position %d", i, e.Position, evs[i-1].Position)
		}
	}
}

func registerCmd(appID, id string) device.Register {
	return device.Register{AppID: appID, DeviceID: id, Profile: device.Profile{
		Platform: device.PlatformIOS, Model: "iPhone", Tokens: map[string]string{"apns": "tok-" + id},
	}}
}

func acceptCmd(id string) message.Accept {
	return message.Accept{
		MessageID: id, AppID: "app1", Audience: message.Audience{DeviceIDs: []string{"d0", "d1"}},
		Targets: []string{"d0", "d1"}, TargetCount: 2, Notification: &message.Notification{Title: "hi", Body: "there"},
	}
}

func TestNewRejectsNilStore(t *testing.T) {
	if _, err := commands.New(nil, commands.Config{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

// checkResult compares a command's Result with what the ledger holds: the
// result's events are the last len(res.Events) events of the stream.
func checkResult(t testing.TB, st ledger.Store, stream string, res commands.Result) {
	t.Helper()
	evs := readStream(t, st, stream)
	checkContiguous(t, evs)
	last := evs[len(evs)-1]
	if res.Revision != int64(last.Revision) {
		t.Fatalf("Result.Revision = %d, stream is at %d", res.Revision, last.Revision)
	}
	if res.Position != last.Position {
		t.Fatalf("Result.Position = %d, last event at %d", res.Position, last.Position)
	}
	if len(res.Events) == 0 || len(res.Events) > len(evs) {
		t.Fatalf("Result has %d events, stream %d", len(res.Events), len(evs))
	}
	stored := evs[len(evs)-len(res.Events):]
	for i, got := range res.Events {
		want := stored[i]
		if got.ID != want.ID || got.Stream != stream || got.Revision != want.Revision || got.Type != want.Type ||
			string(got.Data) != string(want.Data) {
			t.Fatalf("Result.Events[%d] = %+v\nstored %+v", i, got, want)
		}
		if _, err := uuid.Parse(got.ID); err != nil {
			t.Fatalf("event id %q is not a UUID: %v", got.ID, err)
		}
	}
	if p := res.Events[len(res.Events)-1].Position; p != last.Position {
		t.Fatalf("last result event at position %d, stored at %d", p, last.Position)
	}
}

func TestDeviceCommandsAppendAtRevisions(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})
	stream := device.Stream("app1", "d1")

	steps := []struct {
		cmd   device.Command
		types []string
	}{
		{registerCmd("app1", "d1"), []string{device.TypeRegistered}},
		{device.BindAlias{Alias: "alice"}, []string{device.TypeAliasBound}},
		{device.AddTags{Tags: []string{"vip", "beta", "vip"}}, []string{device.TypeTagsAdded}},
		{device.RemoveTags{Tags: []string{"beta", "unknown"}}, []string{device.TypeTagsRemoved}},
		{device.Logout{}, []string{device.TypeLoggedOut}},
		{device.InvalidateToken{Channel: "apns", Token: "tok-d1"}, []string{device.TypeTokenInvalidated}},
	}
	for i, s := range steps {
		d, res, err := h.Device(ctx, "app1", "d1", s.cmd)
		if err != nil {
			t.Fatalf("step %d %T: %v", i, s.cmd, err)
		}
		if res.Revision != int64(i) || res.Position != uint64(i+1) {
			t.Fatalf("step %d: revision %d position %d, want %d and %d", i, res.Revision, res.Position, i, i+1)
		}
		var types []string
		for _, e := range res.Events {
			types = append(types, e.Type)
		}
		if !slices.Equal(types, s.types) {
			t.Fatalf("step %d appended %v, want %v", i, types, s.types)
		}
		checkResult(t, st, stream, res)
		// The returned state is the state folded from the ledger.
		loaded, ok, err := h.LoadDevice(ctx, "app1", "d1")
		if err != nil || !ok {
			t.Fatalf("LoadDevice: %v %v", ok, err)
		}
		if !reflect.DeepEqual(d, loaded) {
			t.Fatalf("step %d: returned %+v\nloaded %+v", i, d, loaded)
		}
	}
	d, _, _ := h.LoadDevice(ctx, "app1", "d1")
	if d.Active || d.Alias != "" || !slices.Equal(d.TagList(), []string{"vip"}) || len(d.Profile.Tokens) != 0 || d.Version != len(steps) {
		t.Fatalf("final device %+v", d)
	}
	if lastPosition(t, st) != uint64(len(steps)) {
		t.Fatalf("ledger at %d, want %d", lastPosition(t, st), len(steps))
	}
}

func TestMessageAndAppCommands(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})

	a, res, err := h.App(ctx, "app1", app.Create{AppID: "app1", Name: " Shop ", AppKey: "key1", SecretCiphertext: []byte{1}})
	if err != nil || a.Name != "Shop" || res.Revision != 0 || res.Position != 1 {
		t.Fatalf("create app: %+v %+v %v", a, res, err)
	}
	checkResult(t, st, app.Stream("app1"), res)
	a, res, err = h.App(ctx, "app1", app.ConfigureChannel{Channel: "apns", Config: app.ChannelConfig{Enabled: true, Priority: 1}})
	if err != nil || res.Revision != 1 || res.Position != 2 || !slices.Equal(a.ChannelOrder(), []string{"apns"}) {
		t.Fatalf("configure channel: %+v %+v %v", a, res, err)
	}
	checkResult(t, st, app.Stream("app1"), res)

	// A message accepted through the generic path, with a send time: two
	// events in one append.
	cmd := acceptCmd("m1")
	sendAt := epoch.Add(time.Hour)
	cmd.SendAt = &sendAt
	m, res, err := h.Message(ctx, "m1", cmd)
	if err != nil || m.State != message.StateScheduled || res.Revision != 1 || res.Position != 4 || len(res.Events) != 2 {
		t.Fatalf("accept: %+v %+v %v", m, res, err)
	}
	checkResult(t, st, message.Stream("m1"), res)
	if res.Events[0].Type != message.TypeAccepted || res.Events[1].Type != message.TypeScheduled {
		t.Fatalf("accept appended %s, %s", res.Events[0].Type, res.Events[1].Type)
	}
	m, res, err = h.Message(ctx, "m1", message.Cancel{Reason: "changed my mind"})
	if err != nil || m.State != message.StateCancelled || res.Revision != 2 || res.Position != 5 {
		t.Fatalf("cancel: %+v %+v %v", m, res, err)
	}
	checkResult(t, st, message.Stream("m1"), res)
}

// TestDeterministicIDs: the same decisions on the same state get the same
// event ids; different decisions at the same revision get different ones.
func TestDeterministicIDs(t *testing.T) {
	ctx := context.Background()
	run := func(tags ...string) []string {
		st := openLedger(t)
		h := newHandler(t, st, commands.Config{Now: fixed})
		if _, _, err := h.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); err != nil {
			t.Fatal(err)
		}
		for _, tag := range tags {
			if _, _, err := h.Device(ctx, "app1", "d1", device.AddTags{Tags: []string{tag}}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		for _, e := range readStream(t, st, device.Stream("app1", "d1")) {
			ids = append(ids, e.ID)
		}
		return ids
	}
	a, b, c := run("x", "y"), run("x", "y"), run("x", "z")
	if !slices.Equal(a, b) {
		t.Fatalf("same decisions, different ids:\n%v\n%v", a, b)
	}
	if a[0] != c[0] || a[1] != c[1] {
		t.Fatalf("same first decisions, different ids:\n%v\n%v", a, c)
	}
	if a[2] == c[2] {
		t.Fatalf("tags_added [y] and tags_added [z] at the same revision share id %s", a[2])
	}
}

// TestConcurrentCommandsOnOneStream: 16 writers with 20 commands each on
// one device stream. Every command gets through the conflict-retry loop;
// no write is lost or doubled. Writer g adds its tags g-0..g-9, keeping
// g-0..g-4 (binding an alias after each) and removing g-5..g-9 again, so a
// device never holds more than device.MaxTags tags.
func TestConcurrentCommandsOnOneStream(t *testing.T) {
	const writers, perWriter = 16, 20
	ctx := context.Background()
	st := openLedger(t)
	// A writer loses a round only to another writer's commit, so it needs at
	// most writers*perWriter retries.
	h := newHandler(t, st, commands.Config{MaxRetries: writers * perWriter})
	if _, _, err := h.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); err != nil {
		t.Fatal(err)
	}
	tag := func(w, k int) string { return fmt.Sprintf("w%02d-%d", w, k) }
	var wantTags, wantAliases []string
	for w := range writers {
		for k := range 5 {
			wantTags = append(wantTags, tag(w, k))
			wantAliases = append(wantAliases, "alias-"+tag(w, k))
		}
	}
	slices.Sort(wantTags)
	errs := make(chan error, writers*perWriter)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for k := range perWriter / 2 {
				cmds := []device.Command{device.AddTags{Tags: []string{tag(w, k)}}, device.RemoveTags{Tags: []string{tag(w, k)}}}
				if k < 5 {
					cmds[1] = device.BindAlias{Alias: "alias-" + tag(w, k)}
				}
				for j, cmd := range cmds {
					d, res, err := h.Device(ctx, "app1", "d1", cmd)
					switch {
					case err != nil:
						errs <- fmt.Errorf("%T %s: %w", cmd, tag(w, k), err)
					case len(res.Events) != 1:
						errs <- fmt.Errorf("%T %s: %d events appended", cmd, tag(w, k), len(res.Events))
					case slices.Contains(d.TagList(), tag(w, k)) != (j == 0 || k < 5):
						errs <- fmt.Errorf("%T %s: returned device has tags %v", cmd, tag(w, k), d.TagList())
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	evs := readStream(t, st, device.Stream("app1", "d1"))
	checkContiguous(t, evs)
	if len(evs) != 1+writers*perWriter {
		t.Fatalf("stream has %d events, want %d", len(evs), 1+writers*perWriter)
	}
	// Every command's event is there once, a tag's removal after its addition.
	added, removed, bound := map[string]uint64{}, map[string]uint64{}, map[string]bool{}
	for _, re := range evs[1:] {
		e, err := device.Decode(re.Type, re.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch e := e.(type) {
		case device.TagsAdded:
			if len(e.Tags) != 1 || added[e.Tags[0]] != 0 {
				t.Fatalf("revision %d adds %v", re.Revision, e.Tags)
			}
			added[e.Tags[0]] = re.Revision
		case device.TagsRemoved:
			if len(e.Tags) != 1 || removed[e.Tags[0]] != 0 || added[e.Tags[0]] == 0 {
				t.Fatalf("revision %d removes %v", re.Revision, e.Tags)
			}
			removed[e.Tags[0]] = re.Revision
		case device.AliasBound:
			if bound[e.Alias] {
				t.Fatalf("alias %s bound twice", e.Alias)
			}
			bound[e.Alias] = true
		default:
			t.Fatalf("revision %d: unexpected %T", re.Revision, e)
		}
	}
	if len(added) != writers*10 || len(removed) != writers*5 || len(bound) != writers*5 {
		t.Fatalf("%d tags added, %d removed, %d aliases bound", len(added), len(removed), len(bound))
	}
	d, _, err := h.LoadDevice(ctx, "app1", "d1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.TagList(), wantTags) {
		t.Fatalf("device has tags %v\nwant %v", d.TagList(), wantTags)
	}
	if !slices.Contains(wantAliases, d.Alias) || d.Version != len(evs) {
		t.Fatalf("device alias %q version %d", d.Alias, d.Version)
	}
}

// TestConflictGivesUpUnderContention: with a retry budget of 1, heavy
// contention makes some commands fail with ErrConflict; each either wrote
// its one event or nothing.
func TestConflictGivesUpUnderContention(t *testing.T) {
	const writers, perWriter = 16, 20
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{MaxRetries: 1})
	// Which interleavings happen is up to the scheduler: rounds repeat on
	// fresh streams until one saw a conflict (in practice the first does).
	for round := range 10 {
		id := fmt.Sprintf("d%d", round)
		if _, _, err := h.Device(ctx, "app1", id, registerCmd("app1", id)); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		ok := map[string]bool{}
		var conflicts int
		var other []error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				<-start
				for i := range perWriter {
					alias := fmt.Sprintf("w%02d-%02d", w, i)
					_, res, err := h.Device(ctx, "app1", id, device.BindAlias{Alias: alias})
					mu.Lock()
					switch {
					case err == nil && len(res.Events) == 1:
						ok[alias] = true
					case errors.Is(err, commands.ErrConflict) && errors.Is(err, ledger.ErrWrongExpectedRevision):
						if res.Position != 0 || len(res.Events) != 0 {
							other = append(other, fmt.Errorf("%s: failed with result %+v", alias, res))
						}
						conflicts++
					default:
						other = append(other, fmt.Errorf("%s: %+v, %v", alias, res, err))
					}
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		for _, err := range other {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
		evs := readStream(t, st, device.Stream("app1", id))
		checkContiguous(t, evs)
		// The stream holds the successful commands' events, each once, and
		// nothing of the failed ones.
		seen := map[string]bool{}
		for _, re := range evs[1:] {
			e, err := device.Decode(re.Type, re.Data)
			if err != nil {
				t.Fatal(err)
			}
			ab, isBind := e.(device.AliasBound)
			if !isBind || seen[ab.Alias] || !ok[ab.Alias] {
				t.Fatalf("revision %d: %#v (failed, repeated or unexpected)", re.Revision, e)
			}
			seen[ab.Alias] = true
		}
		if len(seen) != len(ok) || len(ok)+conflicts != writers*perWriter {
			t.Fatalf("%d events for %d successes; %d conflicts of %d commands", len(seen), len(ok), conflicts, writers*perWriter)
		}
		if conflicts > 0 {
			t.Logf("round %d: %d commands succeeded, %d gave up with ErrConflict", round, len(ok), conflicts)
			return
		}
	}
	t.Fatal("no command gave up in 10 rounds of 16 writers with MaxRetries 1")
}

// interfering is the real ledger with another writer that appends to the
// stream just before each of the next n appends to it: the interleaving
// that makes a command conflict, made certain.
type interfering struct {
	ledger.Store
	stream string
	n      int
	other  func() error
}

func (s *interfering) Append(ctx context.Context, stream string, exp ledger.StreamState, evs ...ledger.EventData) (ledger.AppendResult, error) {
	if stream == s.stream && s.n > 0 {
		s.n--
		if err := s.other(); err != nil {
			return ledger.AppendResult{}, err
		}
	}
	return s.Store.Append(ctx, stream, exp, evs...)
}

// TestConflictRetryBudget: a command is tried MaxRetries+1 times; when every
// try loses to another writer it fails with ErrConflict and writes nothing.
func TestConflictRetryBudget(t *testing.T) {
	const maxRetries = 3
	ctx := context.Background()
	for _, lost := range []int{maxRetries, maxRetries + 1} {
		t.Run(fmt.Sprintf("lost=%d", lost), func(t *testing.T) {
			st := openLedger(t)
			rival := newHandler(t, st, commands.Config{})
			if _, _, err := rival.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); err != nil {
				t.Fatal(err)
			}
			k := 0
			is := &interfering{Store: st, stream: device.Stream("app1", "d1"), n: lost, other: func() error {
				k++
				_, _, err := rival.Device(ctx, "app1", "d1", device.AddTags{Tags: []string{fmt.Sprint("rival-", k)}})
				return err
			}}
			h := newHandler(t, is, commands.Config{MaxRetries: maxRetries})
			d, res, err := h.Device(ctx, "app1", "d1", device.AddTags{Tags: []string{"mine"}})
			evs := readStream(t, st, device.Stream("app1", "d1"))
			checkContiguous(t, evs)
			if lost <= maxRetries {
				if err != nil || res.Revision != int64(lost+1) || !slices.Contains(d.TagList(), "mine") {
					t.Fatalf("after %d lost rounds: %+v, %v", lost, res, err)
				}
				checkResult(t, st, device.Stream("app1", "d1"), res)
				if len(evs) != lost+2 {
					t.Fatalf("stream has %d events, want %d", len(evs), lost+2)
				}
				return
			}
			if !errors.Is(err, commands.ErrConflict) || !errors.Is(err, ledger.ErrWrongExpectedRevision) {
				t.Fatalf("after %d lost rounds: %v, want ErrConflict", lost, err)
			}
			var wr *ledger.WrongRevisionError
			if !errors.As(err, &wr) || wr.Stream != device.Stream("app1", "d1") {
				t.Fatalf("error %v does not carry the ledger's WrongRevisionError", err)
			}
			if len(res.Events) != 0 || res.Position != 0 {
				t.Fatalf("failed command returned %+v", res)
			}
			if len(evs) != lost+1 {
				t.Fatalf("stream has %d events, want %d (registration and the rival's)", len(evs), lost+1)
			}
			for _, e := range evs[1:] {
				if e.Type != device.TypeTagsAdded || string(e.Data) == "" {
					t.Fatalf("unexpected event %+v", e)
				}
			}
			loaded, _, _ := h.LoadDevice(ctx, "app1", "d1")
			if slices.Contains(loaded.TagList(), "mine") {
				t.Fatal("the failed command's tag was written")
			}
		})
	}
}

// TestNoOpCommandsAppendNothing: commands that are already satisfied
// return the current revision and no events.
func TestNoOpCommandsAppendNothing(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})
	mustDevice := func(cmd device.Command) commands.Result {
		t.Helper()
		_, res, err := h.Device(ctx, "app1", "d1", cmd)
		if err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
		return res
	}
	mustDevice(registerCmd("app1", "d1"))
	mustDevice(device.BindAlias{Alias: "alice"})
	mustDevice(device.AddTags{Tags: []string{"vip"}})
	if _, _, err := h.App(ctx, "app1", app.Create{AppID: "app1", Name: "n", AppKey: "k", SecretCiphertext: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	cfg := app.ConfigureChannel{Channel: "apns", Config: app.ChannelConfig{Enabled: true, Priority: 1, Settings: map[string]string{"team": "x"}}}
	if _, _, err := h.App(ctx, "app1", cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.AcceptMessage(ctx, acceptCmd("m1")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []message.Command{message.StartAttempt{Channel: "apns"}, message.RecordSent{Attempt: 1, Channel: "apns"}, message.RecordDelivered{DeviceID: "d1", Channel: "apns"}} {
		if _, _, err := h.Message(ctx, "m1", cmd); err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	before := lastPosition(t, st)

	noop := func(name string, res commands.Result, err error, wantRev int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(res.Events) != 0 || res.Position != 0 || res.Revision != wantRev {
			t.Fatalf("%s: %+v, want no events at revision %d", name, res, wantRev)
		}
	}
	for _, cmd := range []device.Command{
		device.BindAlias{Alias: "alice"}, device.AddTags{Tags: []string{"vip", "vip"}},
		device.RemoveTags{Tags: []string{"absent"}}, registerCmd("app1", "d1"),
		device.InvalidateToken{Channel: "apns", Token: "some-old-token"},
	} {
		_, res, err := h.Device(ctx, "app1", "d1", cmd)
		noop(fmt.Sprintf("%T", cmd), res, err, 2)
	}
	_, res, err := h.App(ctx, "app1", cfg)
	noop("configure same channel", res, err, 1)
	_, res, err = h.App(ctx, "app1", app.RemoveChannel{Channel: "absent"})
	noop("remove absent channel", res, err, 1)
	_, res, err = h.Message(ctx, "m1", message.RecordDelivered{DeviceID: "d1", Channel: "apns"})
	noop("repeated delivery", res, err, 3)
	if after := lastPosition(t, st); after != before {
		t.Fatalf("no-op commands moved the ledger from %d to %d", before, after)
	}
}

// TestDomainErrorsPassThrough: a command the domain refuses fails with the
// domain's error, unchanged, and writes nothing.
func TestDomainErrorsPassThrough(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{Now: fixed})
	if _, _, err := h.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.App(ctx, "app1", app.Create{AppID: "app1", Name: "n", AppKey: "k", SecretCiphertext: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.AcceptMessage(ctx, acceptCmd("m1")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []message.Command{message.StartAttempt{Channel: "apns"}, message.RecordSent{Attempt: 1, Channel: "apns"}} {
		if _, _, err := h.Message(ctx, "m1", cmd); err != nil {
			t.Fatal(err)
		}
	}
	before := lastPosition(t, st)
	d1, _, _ := h.LoadDevice(ctx, "app1", "d1")
	a1, _, _ := h.LoadApp(ctx, "app1")
	m1, _, _ := h.LoadMessage(ctx, "m1")

	cases := []struct {
		name   string
		run    func() error
		domain func() error // the same decision, made by the domain directly
		target error
	}{
		{"device not registered",
			func() error { _, _, err := h.Device(ctx, "app1", "nobody", device.BindAlias{Alias: "a"}); return err },
			func() error {
				_, err := device.Decide(&device.Device{}, device.BindAlias{Alias: "a"}, epoch)
				return err
			},
			device.ErrNotFound},
		{"device invalid tags",
			func() error { _, _, err := h.Device(ctx, "app1", "d1", device.AddTags{}); return err },
			func() error { _, err := device.Decide(&d1, device.AddTags{}, epoch); return err },
			device.ErrInvalid},
		{"device invalid registration",
			func() error {
				_, _, err := h.Device(ctx, "app1", "d2", device.Register{AppID: "app1", DeviceID: "d2"})
				return err
			},
			func() error {
				_, err := device.Decide(&device.Device{}, device.Register{AppID: "app1", DeviceID: "d2"}, epoch)
				return err
			},
			device.ErrInvalid},
		{"app not found",
			func() error { _, _, err := h.App(ctx, "nope", app.RemoveChannel{Channel: "x"}); return err },
			func() error { _, err := app.Decide(&app.App{}, app.RemoveChannel{Channel: "x"}, epoch); return err },
			app.ErrNotFound},
		{"app exists",
			func() error {
				_, _, err := h.App(ctx, "app1", app.Create{AppID: "app1", Name: "n", AppKey: "k", SecretCiphertext: []byte{1}})
				return err
			},
			func() error {
				_, err := app.Decide(&a1, app.Create{AppID: "app1", Name: "n", AppKey: "k", SecretCiphertext: []byte{1}}, epoch)
				return err
			},
			app.ErrInvalidTransition},
		{"app invalid blacklist kind",
			func() error {
				_, _, err := h.App(ctx, "app1", app.AddToBlacklist{Kind: "planet", Values: []string{"x"}})
				return err
			},
			func() error {
				_, err := app.Decide(&a1, app.AddToBlacklist{Kind: "planet", Values: []string{"x"}}, epoch)
				return err
			},
			app.ErrInvalid},
		{"message not found",
			func() error { _, _, err := h.Message(ctx, "m404", message.Cancel{}); return err },
			func() error { _, err := message.Decide(&message.Message{}, message.Cancel{}, epoch); return err },
			message.ErrNotFound},
		{"message cancel after sent",
			func() error { _, _, err := h.Message(ctx, "m1", message.Cancel{}); return err },
			func() error { _, err := message.Decide(&m1, message.Cancel{}, epoch); return err },
			message.ErrInvalidTransition},
		{"message wrong attempt",
			func() error { _, _, err := h.Message(ctx, "m1", message.RecordSent{Attempt: 7}); return err },
			func() error { _, err := message.Decide(&m1, message.RecordSent{Attempt: 7}, epoch); return err },
			message.ErrWrongAttempt},
		{"message invalid accept",
			func() error { _, _, err := h.AcceptMessage(ctx, message.Accept{MessageID: "m2"}); return err },
			func() error {
				_, err := message.Decide(&message.Message{}, message.Accept{MessageID: "m2"}, epoch)
				return err
			},
			message.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err, want := c.run(), c.domain()
			if want == nil || !errors.Is(want, c.target) {
				t.Fatalf("test case broken: the domain says %v", want)
			}
			if !errors.Is(err, c.target) {
				t.Fatalf("error %v, want %v", err, c.target)
			}
			if err.Error() != want.Error() || reflect.TypeOf(err) != reflect.TypeOf(want) {
				t.Fatalf("error %T %q, the domain's is %T %q", err, err, want, want)
			}
		})
	}
	var te *message.TransitionError
	_, _, err := h.Message(ctx, "m1", message.Cancel{})
	if !errors.As(err, &te) || te.From != message.StateSent {
		t.Fatalf("cancel after sent: %v, want a *message.TransitionError from sent", err)
	}
	if after := lastPosition(t, st); after != before {
		t.Fatalf("refused commands moved the ledger from %d to %d", before, after)
	}
}

func TestAcceptMessage(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})

	m, res, err := h.AcceptMessage(ctx, acceptCmd("m1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "m1" || m.State != message.StateAccepted || m.Version != 1 || res.Revision != 0 || res.Position != 1 || len(res.Events) != 1 {
		t.Fatalf("accept: %+v %+v", m, res)
	}
	checkResult(t, st, message.Stream("m1"), res)
	loaded, ok, err := h.LoadMessage(ctx, "m1")
	if err != nil || !ok || !reflect.DeepEqual(loaded, m) {
		t.Fatalf("LoadMessage = %+v %v %v\nreturned %+v", loaded, ok, err, m)
	}

	t.Run("again", func(t *testing.T) {
		// The same id again, decided at a later time.
		before := lastPosition(t, st)
		again := acceptCmd("m1")
		again.Notification = &message.Notification{Title: "other", Body: "content"}
		for _, cmd := range []message.Accept{acceptCmd("m1"), again} {
			old, res, err := h.AcceptMessage(ctx, cmd)
			if !errors.Is(err, commands.ErrExists) {
				t.Fatalf("second accept: %v, want ErrExists", err)
			}
			if !reflect.DeepEqual(old, m) {
				t.Fatalf("second accept returned %+v\nwant the existing %+v", old, m)
			}
			if res.Revision != 0 || len(res.Events) != 0 || res.Position != 0 {
				t.Fatalf("second accept result %+v", res)
			}
		}
		if after := lastPosition(t, st); after != before {
			t.Fatalf("second accept moved the ledger from %d to %d", before, after)
		}
	})

	t.Run("different event count", func(t *testing.T) {
		// First accepted with a future send time (accepted + scheduled),
		// then again without one (accepted only): still ErrExists.
		cmd := acceptCmd("m2")
		sendAt := epoch.Add(time.Hour)
		cmd.SendAt = &sendAt
		first, res, err := h.AcceptMessage(ctx, cmd)
		if err != nil || first.State != message.StateScheduled || res.Revision != 1 || len(res.Events) != 2 {
			t.Fatalf("scheduled accept: %+v %+v %v", first, res, err)
		}
		checkResult(t, st, message.Stream("m2"), res)
		before := lastPosition(t, st)
		old, res, err := h.AcceptMessage(ctx, acceptCmd("m2"))
		if !errors.Is(err, commands.ErrExists) || !reflect.DeepEqual(old, first) || res.Revision != 1 {
			t.Fatalf("accept again: %+v %+v %v; want the scheduled message and ErrExists", old, res, err)
		}
		if after := lastPosition(t, st); after != before {
			t.Fatalf("second accept moved the ledger from %d to %d", before, after)
		}
	})

	t.Run("accepted through Message", func(t *testing.T) {
		if _, _, err := h.Message(ctx, "m3", acceptCmd("m3")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.AcceptMessage(ctx, acceptCmd("m3")); !errors.Is(err, commands.ErrExists) {
			t.Fatalf("AcceptMessage after Message(Accept): %v, want ErrExists", err)
		}
		// And the generic path refuses a second accept as a transition.
		var te *message.TransitionError
		if _, _, err := h.Message(ctx, "m3", acceptCmd("m3")); !errors.As(err, &te) {
			t.Fatalf("Message(Accept) again: %v, want a TransitionError", err)
		}
	})

	t.Run("ledger retry is idempotent", func(t *testing.T) {
		// The append AcceptMessage made, made again with the same ids (a
		// retry after an unknown outcome), writes nothing and answers as the
		// first did.
		_, res, err := h.AcceptMessage(ctx, acceptCmd("m4"))
		if err != nil {
			t.Fatal(err)
		}
		before := lastPosition(t, st)
		var data []ledger.EventData
		for _, e := range res.Events {
			data = append(data, ledger.EventData{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata})
		}
		for _, exp := range []ledger.StreamState{ledger.NoStream{}, ledger.Any{}} {
			ar, err := st.Append(ctx, message.Stream("m4"), exp, data...)
			if err != nil || ar.Position != res.Position || ar.NextExpectedRevision != uint64(res.Revision) {
				t.Fatalf("retried append (%v) = %+v, %v; first %+v", exp, ar, err, res)
			}
		}
		if after := lastPosition(t, st); after != before {
			t.Fatalf("retried append moved the ledger from %d to %d", before, after)
		}
		if evs := readStream(t, st, message.Stream("m4")); len(evs) != 1 {
			t.Fatalf("stream has %d events after the retry", len(evs))
		}
	})
}

// TestAcceptIdenticalRepeat: even a byte-identical repeat of an accept
// (same command, same clock reading) meets the existing stream: ErrExists,
// nothing written. Only a retry of the very append (same event ids) is
// taken by the ledger for the first.
func TestAcceptIdenticalRepeat(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{Now: fixed})
	m1, r1, err := h.AcceptMessage(ctx, acceptCmd("m1"))
	if err != nil {
		t.Fatal(err)
	}
	m2, r2, err := h.AcceptMessage(ctx, acceptCmd("m1"))
	if !errors.Is(err, commands.ErrExists) {
		t.Fatalf("identical repeat: %v, want ErrExists", err)
	}
	if !reflect.DeepEqual(m1, m2) || r2.Revision != r1.Revision || len(r2.Events) != 0 {
		t.Fatalf("identical repeat answered %+v %+v\nfirst %+v %+v", m2, r2, m1, r1)
	}
	if p := lastPosition(t, st); p != 1 {
		t.Fatalf("ledger at %d after an identical repeat, want 1", p)
	}
}

// TestConcurrentAccepts: many accepts of one id at once; exactly one
// writes, the others get ErrExists and the winner's message.
func TestConcurrentAccepts(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})
	const n = 16
	type out struct {
		m   message.Message
		err error
	}
	outs := make([]out, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := acceptCmd("m1")
			cmd.CollapseID = fmt.Sprint("c", i)
			m, _, err := h.AcceptMessage(ctx, cmd)
			outs[i] = out{m, err}
		})
	}
	wg.Wait()
	stored, _, err := h.LoadMessage(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	wins := 0
	for i, o := range outs {
		switch {
		case o.err == nil:
			wins++
			if o.m.CollapseID != fmt.Sprint("c", i) {
				t.Errorf("winner %d returned %q", i, o.m.CollapseID)
			}
		case errors.Is(o.err, commands.ErrExists):
		default:
			t.Errorf("accept %d: %v", i, o.err)
		}
		if !reflect.DeepEqual(o.m, stored) {
			t.Errorf("accept %d returned %+v, stored %+v", i, o.m, stored)
		}
	}
	if wins != 1 {
		t.Fatalf("%d accepts succeeded, want 1", wins)
	}
	if p := lastPosition(t, st); p != 1 {
		t.Fatalf("ledger at %d, want 1", p)
	}
}

func TestLoadMissing(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})
	// Another stream exists: loading a missing one is not confused by it.
	if _, _, err := h.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); err != nil {
		t.Fatal(err)
	}
	if m, ok, err := h.LoadMessage(ctx, "m404"); ok || err != nil || !reflect.DeepEqual(m, message.Message{}) {
		t.Fatalf("LoadMessage = %+v %v %v", m, ok, err)
	}
	if d, ok, err := h.LoadDevice(ctx, "app1", "d404"); ok || err != nil || !reflect.DeepEqual(d, device.Device{}) {
		t.Fatalf("LoadDevice = %+v %v %v", d, ok, err)
	}
	if a, ok, err := h.LoadApp(ctx, "a404"); ok || err != nil || !reflect.DeepEqual(a, app.App{}) {
		t.Fatalf("LoadApp = %+v %v %v", a, ok, err)
	}
	if d, ok, err := h.LoadDevice(ctx, "app1", "d1"); !ok || err != nil || d.ID != "d1" {
		t.Fatalf("LoadDevice d1 = %+v %v %v", d, ok, err)
	}
}

// TestClosedLedger: a ledger error is returned, wrapped, not hidden.
func TestClosedLedger(t *testing.T) {
	ctx := context.Background()
	st := openLedger(t)
	h := newHandler(t, st, commands.Config{})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Device(ctx, "app1", "d1", registerCmd("app1", "d1")); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Device on a closed ledger: %v", err)
	}
	if _, _, err := h.AcceptMessage(ctx, acceptCmd("m1")); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("AcceptMessage on a closed ledger: %v", err)
	}
	if _, _, err := h.LoadApp(ctx, "a"); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("LoadApp on a closed ledger: %v", err)
	}
}

// TestMessageAtLeavesTheCallersMessage: MessageAt decides and evolves a
// copy; the caller's message, maps included, is as it was whether the
// append succeeds or fails.
func TestMessageAtLeavesTheCallersMessage(t *testing.T) {
	ctx := context.Background()
	h := newHandler(t, openLedger(t), commands.Config{})
	if _, _, err := h.AcceptMessage(ctx, acceptCmd("m1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Message(ctx, "m1", message.StartAttempt{Channel: "gateway"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Message(ctx, "m1", message.RecordSent{Attempt: 1, Channel: "gateway"}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := h.LoadMessage(ctx, "m1")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	rec := func(id string) message.Command {
		return message.RecordDeliveries{DeviceIDs: []string{id}, Channel: "gateway"}
	}
	m1, res, err := h.MessageAt(ctx, "m1", &m, int64(m.Version-1), rec("d0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m1.Delivered["d0"]; !ok {
		t.Fatalf("returned message without d0: %+v", m1.Delivered)
	}
	if _, ok := m.Delivered["d0"]; ok {
		t.Fatal("the caller's message got d0")
	}
	// From a stale revision: refused, and m1 untouched.
	if _, _, err := h.MessageAt(ctx, "m1", &m1, res.Revision-1, rec("d1")); !errors.Is(err, commands.ErrStale) {
		t.Fatalf("stale MessageAt: %v, want ErrStale", err)
	}
	if _, ok := m1.Delivered["d1"]; ok {
		t.Fatal("a refused MessageAt changed the caller's message")
	}
}
