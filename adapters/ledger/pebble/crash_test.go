package pebbleledger

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// ack is an acknowledged append: its events are ids, at revisions
// firstRev.. of stream; pos is the position of the last one.
type ack struct {
	stream   string
	firstRev uint64
	pos      uint64
	ids      []string
}

func (a ack) String() string {
	return fmt.Sprintf("ACK %s %d %d %s\n", a.stream, a.firstRev, a.pos, strings.Join(a.ids, ","))
}

func parseAck(line string) (ack, error) {
	f := strings.Fields(line)
	if len(f) != 5 || f[0] != "ACK" {
		return ack{}, fmt.Errorf("bad ack line %q", line)
	}
	rev, err1 := strconv.ParseUint(f[2], 10, 64)
	pos, err2 := strconv.ParseUint(f[3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return ack{}, fmt.Errorf("bad ack line %q: %w", line, err)
	}
	return ack{stream: f[1], firstRev: rev, pos: pos, ids: strings.Split(f[4], ",")}, nil
}

// load appends to the store from several goroutines until ctx ends, on
// streams of its own, with a mix of expected states and append sizes, and
// reports every acknowledged append to onAck (called concurrently). It
// returns the first unexpected error.
func load(ctx context.Context, s ledger.Store, goroutines int, seed uint64, onAck func(ack)) error {
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			// Each goroutine owns its streams, so it knows their heads.
			heads := make(map[string]int64)
			for k := range 4 {
				st := fmt.Sprintf("crash-%d-%d", g, k)
				heads[st] = -1
				evs, err := s.ReadStream(ctx, st, ledger.Backwards, ledger.End, 1)
				switch {
				case ctx.Err() != nil:
					return
				case errors.Is(err, ledger.ErrStreamNotFound):
				case err != nil:
					errc <- err
					return
				default:
					heads[st] = int64(evs[0].Revision)
				}
			}
			for ctx.Err() == nil {
				st := fmt.Sprintf("crash-%d-%d", g, rng.IntN(4))
				n := 1
				if rng.IntN(4) == 0 {
					n = 1 + rng.IntN(5)
				}
				evs := make([]ledger.EventData, n)
				for i := range evs {
					evs[i] = ledger.EventData{ID: ledger.NewID(), Type: "crash.test", Data: fmt.Appendf(nil, `{"g":%d,"i":%d}`, g, i)}
				}
				var exp ledger.StreamState = ledger.Any{}
				if rng.IntN(2) == 0 {
					if h := heads[st]; h < 0 {
						exp = ledger.NoStream{}
					} else {
						exp = ledger.Revision(h)
					}
				}
				res, err := s.Append(ctx, st, exp, evs...)
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, ledger.ErrClosed) {
						return
					}
					errc <- fmt.Errorf("append to %s at %v: %w", st, exp, err)
					return
				}
				first := res.NextExpectedRevision + 1 - uint64(n)
				if int64(first) != heads[st]+1 {
					errc <- fmt.Errorf("append to %s went to revision %d, head was %d", st, first, heads[st])
					return
				}
				heads[st] = int64(res.NextExpectedRevision)
				onAck(ack{stream: st, firstRev: first, pos: res.Position, ids: dataIDs(evs)})
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func dataIDs(evs []ledger.EventData) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// verify checks that every acknowledged append is in the store, that $all
// is contiguous and in order, that every stream's revisions have no gap,
// and that retries of acknowledged appends are recognised.
func verify(t *testing.T, s *Store, acks []ack, rng *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	for _, a := range acks {
		evs, err := s.ReadStream(ctx, a.stream, ledger.Forwards, a.firstRev, len(a.ids))
		if err != nil {
			t.Fatalf("acknowledged append %v: %v", a, err)
		}
		if len(evs) != len(a.ids) {
			t.Fatalf("acknowledged append %v: %d of %d events survived", a, len(evs), len(a.ids))
		}
		for i, e := range evs {
			if e.ID != a.ids[i] || e.Revision != a.firstRev+uint64(i) {
				t.Fatalf("acknowledged append %v: revision %d holds %s", a, e.Revision, e.ID)
			}
		}
		if last := evs[len(evs)-1].Position; last != a.pos {
			t.Fatalf("acknowledged append %v: last event at position %d", a, last)
		}
	}
	all, err := s.ReadAll(ctx, 0, ledger.Forwards, 0, ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	next := make(map[string]uint64)
	for i, e := range all {
		if e.Position != uint64(i+1) {
			t.Fatalf("$all[%d] at position %d", i, e.Position)
		}
		if e.Revision != next[e.Stream] {
			t.Fatalf("%s: revision %d follows %d in $all", e.Stream, e.Revision, next[e.Stream])
		}
		next[e.Stream]++
	}
	if p, _ := s.LastPosition(ctx); p != uint64(len(all)) {
		t.Fatalf("LastPosition %d, $all holds %d", p, len(all))
	}
	for st, n := range next {
		evs, err := s.ReadStream(ctx, st, ledger.Forwards, 0, 0)
		if err != nil || uint64(len(evs)) != n {
			t.Fatalf("%s: %d events, %v; $all holds %d", st, len(evs), err, n)
		}
	}
	// Retries of acknowledged appends return the original results.
	for range min(len(acks), 5) {
		a := acks[rng.IntN(len(acks))]
		evs := make([]ledger.EventData, len(a.ids))
		for i, id := range a.ids {
			evs[i] = ledger.EventData{ID: id, Type: "crash.test"}
		}
		res, err := s.Append(ctx, a.stream, ledger.Any{}, evs...)
		if err != nil || res.Position != a.pos || res.NextExpectedRevision != a.firstRev+uint64(len(a.ids))-1 {
			t.Fatalf("retry of %v = %+v, %v", a, res, err)
		}
	}
	t.Logf("verified %d acknowledged appends, %d events in %d streams", len(acks), len(all), len(next))
}

const crashChildEnv = "PEBBLELEDGER_CRASH_CHILD_DIR"

// TestCrashChild is the child process of TestCrashKill9: it appends under
// load and prints each acknowledged append until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("child process of TestCrashKill9")
	}
	s, err := Open(Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	err = load(context.Background(), s, 6, uint64(time.Now().UnixNano()), func(a ack) {
		line := a.String()
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.WriteString(line); err != nil {
			os.Exit(3)
		}
	})
	fmt.Fprintln(os.Stderr, "load:", err)
	os.Exit(4)
}

// TestCrashKill9 runs the test binary as a child that appends under load,
// kills it with SIGKILL after a random number of acknowledged appends, and
// checks that the reopened store holds every acknowledged append. The
// rounds share one directory, so later rounds recover a store that crashed
// before.
func TestCrashKill9(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	rounds := 5
	if testing.Short() {
		rounds = 2
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	var acks []ack
	for round := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 20 + rng.IntN(500)
		n := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a, err := parseAck(sc.Text())
			if err != nil {
				// A line cut by the kill is not an acknowledgement we saw.
				continue
			}
			acks = append(acks, a)
			if n++; n == killAt {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = cmd.Wait()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL || n < killAt {
			t.Fatalf("round %d: child ended with %v after %d acks (kill at %d); stderr:\n%s", round, err, n, killAt, stderr.String())
		}
		t.Logf("round %d: killed after %d acks (%d seen)", round, killAt, n)

		s, err := Open(Config{Dir: dir, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		verify(t, s, acks, rng)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashPowerLoss runs the store on a crashable in-memory file system
// and takes crash images of it (vfs.MemFS.CrashClone: what the disk would
// hold after a power loss, all synced data plus a random part of the
// unsynced) while appenders run. Each image, opened as a store, holds
// every append acknowledged before the image was taken.
func TestCrashPowerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, unsynced := range []int{0, 50, 100} {
		t.Run(fmt.Sprintf("unsynced%d", unsynced), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, err := Open(Config{Dir: "db", FS: fs, Logger: quietLogger(), MaxBatchEvents: 64})
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu      sync.Mutex
				acks    []ack
				waiters []chan struct{}
				targets []int
			)
			// reached returns a channel closed once n appends are acknowledged.
			reached := func(n int) chan struct{} {
				mu.Lock()
				defer mu.Unlock()
				ch := make(chan struct{})
				if len(acks) >= n {
					close(ch)
					return ch
				}
				waiters, targets = append(waiters, ch), append(targets, n)
				return ch
			}
			ctx, cancel := context.WithCancel(context.Background())
			loadErr := make(chan error, 1)
			loadSeed := rng.Uint64()
			go func() {
				loadErr <- load(ctx, s, 4, loadSeed, func(a ack) {
					mu.Lock()
					defer mu.Unlock()
					acks = append(acks, a)
					for i, ch := range waiters {
						if ch != nil && len(acks) >= targets[i] {
							close(ch)
							waiters[i] = nil
						}
					}
				})
			}()
			type image struct {
				fs   *vfs.MemFS
				acks []ack
			}
			var images []image
			at := 0
			for range 3 {
				at += 50 + rng.IntN(300)
				select {
				case <-reached(at):
				case err := <-loadErr:
					t.Fatalf("load stopped: %v", err)
				}
				// Everything acknowledged so far was synced before the clone.
				mu.Lock()
				acked := slices.Clone(acks)
				mu.Unlock()
				images = append(images, image{
					fs:   fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced, RNG: rand.New(rand.NewPCG(rng.Uint64(), 2))}),
					acks: acked,
				})
			}
			cancel()
			if err := <-loadErr; err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i, img := range images {
				s, err := Open(Config{Dir: "db", FS: img.fs, Logger: quietLogger()})
				if err != nil {
					t.Fatalf("image %d: open: %v", i, err)
				}
				verify(t, s, img.acks, rng)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
