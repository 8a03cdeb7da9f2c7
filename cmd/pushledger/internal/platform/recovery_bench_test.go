package platform_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/domain/message"
)

var (
	recoveryEvents = flag.Int("recovery.events", 1_000_000, "BenchmarkRecovery: ledger events to hold")
	recoveryTimers = flag.Int("recovery.timers", 100_000, "BenchmarkRecovery: open timers (scheduled messages) among them")
	recoveryDir    = flag.String("recovery.dir", "", "BenchmarkRecovery: data directory to build once and reuse (default: a temporary one)")
)

var (
	recoveryTemp    sync.Once
	recoveryTempDir string
)

// BenchmarkRecovery measures how long a restarted platform takes to serve
// again with a large ledger: -recovery.events events of which
// -recovery.timers are open messages waiting on a durable timer (scheduled
// far ahead), the rest settled (messages of an app without channels,
// accepted then failed). One iteration is one restart: Open, Run, until
// /healthz answers, every read model and runner has caught up with the
// ledger, and the runners hold every timer.
//
//	go test ./cmd/pushledger/internal/platform/ -run '^$' -bench Recovery -benchtime 3x -recovery.dir /tmp/recovery
func BenchmarkRecovery(b *testing.B) {
	dir := *recoveryDir
	if dir == "" {
		// One directory for every call of the benchmark (b.N grows), removed
		// by TestMain.
		recoveryTemp.Do(func() {
			var err error
			if recoveryTempDir, err = os.MkdirTemp("", "pushledger-recovery-"); err != nil {
				b.Fatal(err)
			}
			cleanups = append(cleanups, func() { os.RemoveAll(recoveryTempDir) })
		})
		dir = recoveryTempDir
	}
	timers := *recoveryTimers
	if _, err := os.Stat(filepath.Join(dir, "recovery.ready")); err != nil {
		buildRecoveryData(b, dir, *recoveryEvents, timers)
	}
	b.ResetTimer()
	var ready, open, serving time.Duration
	for range b.N {
		t0 := time.Now()
		p, err := platform.Open(platform.Config{GatewayAddr: "off", DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		open += time.Since(t0)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, ln) }()
		hc := &http.Client{Timeout: 5 * time.Second}
		waitHealthy(b, hc, "http://"+ln.Addr().String())
		serving += time.Since(t0)
		// The runners follow message events: their checkpoint reaches the
		// last of those (the ledger's last event may be another kind).
		evs, err := p.Ledger.ReadAll(ctx, ledger.End, ledger.Backwards, 1, ledger.Filter{StreamPrefixes: []string{message.StreamPrefix}})
		if err != nil || len(evs) == 0 {
			b.Fatal(err)
		}
		lastMsg := evs[0].Position
		last, err := p.Ledger.LastPosition(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for {
			held, cp := 0, uint64(0)
			for _, r := range p.Runners {
				s := r.Stats()
				held += s.Timers
				cp = s.Checkpoint
			}
			if held >= timers && cp >= lastMsg && p.Messages.Position() >= lastMsg && p.Messages.Position() <= last {
				break
			}
			time.Sleep(time.Millisecond)
		}
		ready += time.Since(t0)
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		p.Close()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(open.Seconds()/n, "open-s")
	b.ReportMetric(serving.Seconds()/n, "serving-s")
	b.ReportMetric(ready.Seconds()/n, "timers-ready-s")
	b.ReportMetric(0, "ns/op")
}

// buildRecoveryData fills dir through the real platform: events ledger
// events, timers of them open.
func buildRecoveryData(b *testing.B, dir string, events, timers int) {
	b.Helper()
	start := time.Now()
	srv := startBench(b, platform.Config{GatewayAddr: "off", DataDir: dir}, &http.Client{Timeout: time.Minute})
	p, ctx := srv.P, context.Background()
	_, sched := srv.App(b, api.CreateAppRequest{Name: "scheduled", WebhookURL: "http://127.0.0.1:9/unused"})
	_, none := srv.App(b, api.CreateAppRequest{Name: "nochannel"})
	// Scheduled messages: 2 events each (accepted, scheduled), one timer.
	// Settled ones: 2 events each (accepted, failed no_channel).
	settled := max(0, (events-2*timers)/2)
	later := time.Now().Add(7 * 24 * time.Hour)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= timers+settled {
					return
				}
				cmd := message.Accept{MessageID: uuid.Must(uuid.NewV7()).String(), Audience: message.Audience{DeviceIDs: []string{"d"}},
					Targets: []string{"d"}, TargetCount: 1, Data: json.RawMessage(`{"n":1}`)}
				if i < timers {
					cmd.AppID, cmd.SendAt = sched.AppID, &later
				} else {
					cmd.AppID = none.AppID
				}
				if _, _, err := p.Commands.AcceptMessage(ctx, cmd); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Wait for the runners and read models to settle everything.
	for {
		last, _ := p.Ledger.LastPosition(ctx)
		cp := uint64(0)
		held := 0
		for _, r := range p.Runners {
			s := r.Stats()
			cp, held = s.Checkpoint, held+s.Timers
		}
		if cp >= last && held >= timers && p.Messages.Position() >= last {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	last, _ := p.Ledger.LastPosition(ctx)
	srv.Stop()
	if err := os.WriteFile(filepath.Join(dir, "recovery.ready"), []byte(fmt.Sprintln(last)), 0o600); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d ledger events (%d open timers) in %s", last, timers, time.Since(start).Round(time.Second))
}
