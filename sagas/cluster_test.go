package sagas_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	pgleases "github.com/pushledger/pushledger/adapters/leases/postgres"
	"github.com/pushledger/pushledger/adapters/servicetest"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/sagas"
)

// TestRestartReloadsWakes: a runner stopped while its messages wait for
// their retries, after it checkpointed past their last events; a new runner
// on the same store has no event left to read, and only the durable
// wake-up times bring the messages back: every one completes.
func TestRestartReloadsWakes(t *testing.T) {
	const n = 20
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	pol := fastPolicy()
	pol.Default.Retry.Initial, pol.Default.Retry.Max, pol.Default.Retry.Jitter = 800*time.Millisecond, 800*time.Millisecond, 0
	cfg := sagas.Config{Owner: "first", Policy: func() policy.Config { return pol }}
	ch := newChannel("alpha", nil)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%02d", i)
		ch.Script(ids[i], transient(0))
	}
	first := w.start(t, cfg, nil, ch)
	for _, id := range ids {
		w.accept(t, id, nil)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		for _, id := range ids {
			if m := w.message(t, id); m.State != message.StateFailed {
				return false, fmt.Sprintf("message %s is %s", id, m.State)
			}
		}
		last, err := w.ledger.LastPosition(context.Background())
		st := first.Stats()
		return err == nil && st.Checkpoint >= last && st.Timers == n, fmt.Sprintf("runner %+v, ledger at %d", st, last)
	})
	first.stop(t)
	for _, id := range ids {
		if m := w.message(t, id); m.State != message.StateFailed || m.Attempt != 1 {
			t.Fatalf("message %s is %s at attempt %d when the first runner stopped; the retries came too soon for this test", id, m.State, m.Attempt)
		}
	}

	cfg.Owner = "second"
	w.start(t, cfg, nil, ch)
	w.waitSettled(t, 5*time.Second, ids...)
	want := map[string][]int{}
	for _, id := range ids {
		want[id] = []int{1, 2}
		if got, want := types(w.history(t, id)), []string{"accepted", "sending", "failed", "sending", "sent"}; !slices.Equal(got, want) {
			t.Errorf("message %s: history %v, want %v", id, got, want)
		}
	}
	checkCallsOnce(t, ch.Calls(), want)
	w.noErrors(t)
}

// TestTakeoverAfterLeaseExpiry: partitions whose holder died without
// releasing them are taken over once its leases run out, and their
// messages delivered.
func TestTakeoverAfterLeaseExpiry(t *testing.T) {
	const parts, ttl = 8, 300 * time.Millisecond
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	leases := sagas.NewMemoryLeases(nil)
	expiry := time.Now().Add(ttl) // the dead runner's leases last at least until then
	for p := range parts {
		if ok, err := leases.Acquire(context.Background(), p, "dead", ttl); !ok || err != nil {
			t.Fatalf("acquire %d: %v %v", p, ok, err)
		}
	}
	w.accept(t, "m-1", nil)
	ch := newChannel("alpha", nil)
	r := w.start(t, sagas.Config{Owner: "alive", Partitions: parts, LeaseTTL: ttl}, leases, ch)
	w.waitSettled(t, 5*time.Second, "m-1")
	if s := of[message.Sending](w.history(t, "m-1"))[0]; s.At.Before(expiry) {
		t.Errorf("attempt started at %s, while another runner held its partition (until %s)", s.At, expiry)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return r.Stats().Partitions == parts, fmt.Sprintf("runner %+v", r.Stats())
	})
	checkCallsOnce(t, ch.Calls(), map[string][]int{"m-1": {1}})
	w.noErrors(t)
}

// flaky answers a pseudo-random 30 % of the calls with a transient failure,
// the same for the same message and attempt.
func flaky(p channels.Push) outcome {
	if policy.Draw(p.MessageID, p.Attempt) < 0.3 {
		return transient(0)
	}
	return accepted
}

// TestRunnersShareTheWork: four runners sharing one lease table, one store
// and one ledger, under a steady load and a flaky channel. The partitions
// are split among them; every message settles; no attempt goes out twice;
// no attempt is left to time out (no runner died).
func TestRunnersShareTheWork(t *testing.T) {
	runnersShareTheWork(t, sagas.NewMemoryLeases(nil))
}

// TestRunnersShareTheWorkOnPostgres is the same with the lease table that
// runners on several nodes share: PostgreSQL (PUSHLEDGER_POSTGRES_URL).
func TestRunnersShareTheWorkOnPostgres(t *testing.T) {
	runnersShareTheWork(t, pgLeases(t))
}

func runnersShareTheWork(t *testing.T, leases sagas.Leases) {
	const runners, n, parts = 4, 200, 64
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", flaky)
	rs := make([]*runner, runners)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%03d", i)
	}
	// A steady load: 4 messages every 10 ms. The runners join one after
	// the other while it goes on, so the partitions move among them under
	// load.
	tick := time.NewTicker(10 * time.Millisecond)
	for i, id := range ids {
		if i%(n/runners) == 0 {
			k := i / (n / runners)
			rs[k] = w.start(t, sagas.Config{Owner: fmt.Sprint("runner-", k), Partitions: parts, LeaseTTL: 300 * time.Millisecond}, leases, ch)
		}
		if i%4 == 0 {
			<-tick.C
		}
		w.accept(t, id, nil)
	}
	tick.Stop()
	w.waitSettled(t, 15*time.Second, ids...)
	eventually(t, 5*time.Second, func() (bool, string) {
		sum, held := 0, make([]int, runners)
		for i, r := range rs {
			held[i] = r.Stats().Partitions
			sum += held[i]
		}
		return sum == parts && !slices.Contains(held, 0), fmt.Sprintf("partitions held %v", held)
	})
	checkSettledOnce(t, w, ch, ids, fastPolicy().MaxAttempts)
	var sends int64
	for _, r := range rs {
		sends += r.Stats().Sends
	}
	if calls := len(ch.Calls()); sends != int64(calls) {
		t.Errorf("runners count %d sends, the channel saw %d", sends, calls)
	}
	w.noErrors(t)
}

// TestBrokenLeasesLedgerIsTheLock: two runners with separate lease tables
// each hold every partition; they decide about every message at once, and
// the ledger still lets only one of them start (and send) each attempt.
func TestBrokenLeasesLedgerIsTheLock(t *testing.T) {
	const n = 100
	w := newWorld(t, worldOptions{dir: t.TempDir(), channels: map[string]int{"alpha": 0}})
	ch := newChannel("alpha", flaky)
	rs := []*runner{
		w.start(t, sagas.Config{Owner: "a"}, sagas.NewMemoryLeases(nil), ch),
		w.start(t, sagas.Config{Owner: "b"}, sagas.NewMemoryLeases(nil), ch),
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%03d", i)
		w.accept(t, ids[i], nil)
	}
	w.waitSettled(t, 15*time.Second, ids...)
	for _, r := range rs {
		if p := r.Stats().Partitions; p != 64 {
			t.Errorf("a runner holds %d partitions, want all 64", p)
		}
	}
	checkSettledOnce(t, w, ch, ids, fastPolicy().MaxAttempts)
	w.noErrors(t) // a decision that meets the other runner's is decided again, not an error
}

// TestLedgerIsTheLockForIdenticalDecisions: two runners that decide from
// the same revision can make byte-identical decisions: the same command at
// the same clock reading (a coarse clock, a frozen test clock). The second
// append must still meet the expected-revision check (commands.ErrStale),
// or both runners believe they started attempt 1 and both send it.
//
// It fails today: commands.MessageAt derives its event ids from the stream,
// the revision and the decision's bytes (commands.encode), so the ledger
// takes the second append for an idempotent retry of the first and answers
// it with the first one's result. MessageAt never retries an append itself
// (it reports ErrStale instead), so it can give its events fresh ids, as
// AppendAccept does for the same reason.
func TestLedgerIsTheLockForIdenticalDecisions(t *testing.T) {
	frozen := time.Now()
	w := newWorld(t, worldOptions{channels: map[string]int{"alpha": 0}, now: func() time.Time { return frozen }})
	m := w.accept(t, "m-1", nil)
	ctx := context.Background()
	if _, _, err := w.cmd.MessageAt(ctx, "m-1", &m, 0, message.StartAttempt{Channel: "alpha"}); err != nil {
		t.Fatalf("first runner: %v", err)
	}
	_, res, err := w.cmd.MessageAt(ctx, "m-1", &m, 0, message.StartAttempt{Channel: "alpha"})
	if !errors.Is(err, commands.ErrStale) {
		t.Errorf("second runner, deciding the same from the same revision: err %v, answered with %d events at revision %d (the first runner's append); want ErrStale: both runners would send attempt 1",
			err, len(res.Events), res.Revision)
	}
}

// TestMemoryLeases: a lease is exclusive while live, renewable by its
// owner, free once released or run out; Owners counts the live owners.
func TestMemoryLeases(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := sagas.NewMemoryLeases(clock)
	acquire := func(part int, owner string) bool {
		ok, err := l.Acquire(ctx, part, owner, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	owners := func() int {
		n, err := l.Owners(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if !acquire(1, "a") || acquire(1, "b") || !acquire(1, "a") {
		t.Fatal("a lease is not exclusive or not renewable")
	}
	if !acquire(2, "b") || owners() != 2 {
		t.Fatalf("owners %d, want 2", owners())
	}
	if err := l.Release(ctx, 1, "b"); err != nil || acquire(1, "b") {
		t.Fatal("a release by another owner freed the lease")
	}
	if err := l.Release(ctx, 1, "a"); err != nil || !acquire(1, "b") {
		t.Fatal("a released lease is not free")
	}
	advance(5 * time.Second)
	if !acquire(2, "b") { // renewed until +15 s
		t.Fatal("renewal refused")
	}
	advance(6 * time.Second) // b's lease on 1 ran out; its lease on 2 is live
	if !acquire(1, "a") || acquire(2, "a") {
		t.Fatal("a run-out lease is not free, or a live one is")
	}
	advance(11 * time.Second)
	if owners() != 0 {
		t.Fatalf("owners %d after every lease ran out, want 0", owners())
	}
}

// pgLeases returns a PostgreSQL lease table in a schema of its own.
func pgLeases(t *testing.T) sagas.Leases {
	t.Helper()
	l, err := pgleases.New(context.Background(), servicetest.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}
