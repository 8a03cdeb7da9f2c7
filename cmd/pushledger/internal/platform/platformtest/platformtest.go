// Package platformtest boots the real embedded platform in-process on a
// free port for component tests.
package platformtest

import (
	"context"
	"github.com/pushledger/pushledger/domain/policy"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
)

// Instance is a running platform.
type Instance struct {
	P     *platform.Platform
	URL   string
	Dir   string
	Admin *client.Client

	cancel context.CancelFunc
	done   chan error
}

// Start opens a platform on dir (t.TempDir() when empty) and serves it on a
// free loopback port. It is stopped at the end of the test.
func Start(t testing.TB, dir string) *Instance {
	t.Helper()
	return StartWith(t, platform.Config{DataDir: dir})
}

// FastPolicy is the default delivery policy with every retry backoff
// shortened to 20 ms doubling up to 200 ms, so that tests see retries and
// failovers at once.
func FastPolicy() policy.Config {
	c := policy.DefaultConfig()
	fast := func(p policy.ChannelPolicy) policy.ChannelPolicy {
		p.Retry.Initial, p.Retry.Max, p.Retry.MinThrottled = 20*time.Millisecond, 200*time.Millisecond, 0
		return p
	}
	c.Default = fast(c.Default)
	for name, p := range c.Channels {
		c.Channels[name] = fast(p)
	}
	return c
}

// StartWith is Start with a configuration (DataDir t.TempDir() when empty,
// logs discarded when no Logger, webhook timeout 5 s when unset).
func StartWith(t testing.TB, cfg platform.Config) *Instance {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.WebhookTimeout == 0 {
		cfg.WebhookTimeout = 5 * time.Second
	}
	if cfg.Policy == nil {
		cfg.Policy = FastPolicy
	}
	if cfg.GatewayAddr == "" {
		cfg.GatewayAddr = "tcp://127.0.0.1:0"
	}
	dir := cfg.DataDir
	p, err := platform.Open(cfg)
	if err != nil {
		t.Fatalf("open platform: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{P: p, URL: "http://" + ln.Addr().String(), Dir: dir, cancel: cancel, done: make(chan error, 1)}
	in.Admin = &client.Client{BaseURL: in.URL, AdminToken: p.AdminToken, HTTP: &http.Client{Timeout: 30 * time.Second}}
	go func() { in.done <- p.Run(ctx, ln) }()
	// Ready when the health endpoint answers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(in.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("platform did not become ready: %v", err)
		}
		select {
		case err := <-in.done:
			t.Fatalf("platform stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Cleanup(func() { in.Stop(t) })
	return in
}

// Stop stops the platform and closes its stores (idempotent).
func (in *Instance) Stop(t testing.TB) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	if err := <-in.done; err != nil {
		t.Errorf("platform run: %v", err)
	}
	if err := in.P.Close(); err != nil {
		t.Errorf("platform close: %v", err)
	}
}

// NewApp creates an app and returns a client signed with its credentials.
func (in *Instance) NewApp(t testing.TB, name, webhookURL string) (*client.Client, api.CreatedApp) {
	t.Helper()
	var out api.CreatedApp
	if err := in.Admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps", nil, api.CreateAppRequest{Name: name, WebhookURL: webhookURL}, &out); err != nil {
		t.Fatalf("create app: %v", err)
	}
	return &client.Client{BaseURL: in.URL, AppKey: out.AppKey, AppSecret: out.AppSecret, HTTP: in.Admin.HTTP}, out
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}
