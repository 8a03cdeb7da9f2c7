package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform/platformtest"
	"github.com/pushledger/pushledger/domain/settings"
)

// run executes the CLI with args and the given environment.
func run(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func field(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestCLIEndToEnd(t *testing.T) {
	in := platformtest.Start(t, "")
	hits := make(chan struct{}, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- struct{}{}
	}))
	defer hook.Close()
	env := map[string]string{"PUSHLEDGER_URL": in.URL, "PUSHLEDGER_ADMIN_TOKEN": in.P.AdminToken}

	out, err := run(t, env, "app", "create", "--name", "cli", "--webhook-url", hook.URL)
	if err != nil {
		t.Fatalf("app create: %v", err)
	}
	key, secret, appID := field(out, "app_key"), field(out, "app_secret"), field(out, "app_id")
	if !strings.HasPrefix(key, "pk_") || !strings.HasPrefix(secret, "sk_") {
		t.Fatalf("app create printed %q", out)
	}
	env["PUSHLEDGER_APP_KEY"], env["PUSHLEDGER_APP_SECRET"] = key, secret

	if _, err := run(t, env, "device", "register", "--id", "phone-1", "--platform", "ios", "--alias", "bob", "--tag", "vip"); err != nil {
		t.Fatalf("device register: %v", err)
	}
	out, err = run(t, env, "send", "--alias", "bob", "--title", "Hello", "--body", "World")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	id := strings.TrimSpace(out)
	select {
	case <-hits:
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook was not called")
	}
	platformtest.Eventually(t, 10*time.Second, "sent in history", func() bool {
		out, err := run(t, env, "history", id)
		return err == nil && strings.Contains(out, "message.sent.v1")
	})
	out, err = run(t, env, "status", id)
	if err != nil || !strings.Contains(out, `"state": "sent"`) {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// Resend: a new cycle of the sent message; the webhook is called again.
	if out, err := run(t, env, "resend", id, "--reason", "again"); err != nil || !strings.Contains(out, `"state"`) {
		t.Fatalf("resend: %v\n%s", err, out)
	}
	select {
	case <-hits:
	case <-time.After(10 * time.Second):
		t.Fatal("the resend did not call the webhook")
	}
	platformtest.Eventually(t, 10*time.Second, "resend in history", func() bool {
		out, err := run(t, env, "history", id)
		return err == nil && strings.Contains(out, "message.resend_requested.v1") && strings.Count(out, "message.sent.v1") == 2
	})
	// Cancel: a sent message cannot be cancelled (one clear line).
	if _, err := run(t, env, "cancel", id); err == nil || !strings.HasPrefix(oneLine(err), "409 Not allowed in the current state") {
		t.Fatalf("cancel of a sent message: %v", err)
	}

	// The app's delivery policy, from a file; a bad one is one clear line.
	file := t.TempDir() + "/policy.json"
	if err := os.WriteFile(file, []byte(`{"max_attempts": 2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, env, "app", "policy", "set", appID, file); err != nil || !strings.Contains(out, `"max_attempts": 2`) {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
	if err := os.WriteFile(file, []byte(`{"max_attempts": 0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, env, "app", "policy", "set", appID, file); err == nil || !strings.HasPrefix(oneLine(err), "422 Invalid delivery policy") {
		t.Fatalf("invalid policy: %v", err)
	}
	if out, err := run(t, env, "app", "policy", "reset", appID); err != nil || !strings.Contains(out, `"custom": null`) {
		t.Fatalf("policy reset: %v\n%s", err, out)
	}

	// Errors: one line, the problem's title and detail.
	_, err = run(t, env, "send", "--device", "nobody", "--title", "x")
	if err == nil || oneLine(err) != "422 Empty audience: audience resolves to no device" {
		t.Fatalf("empty audience error: %v", err)
	}
	env["PUSHLEDGER_APP_SECRET"] = "sk_wrong"
	_, err = run(t, env, "status", id)
	if err == nil || !strings.HasPrefix(oneLine(err), "401 Bad signature") {
		t.Fatalf("bad secret error: %v", err)
	}
	if s := oneLine(errors.New("first\nsecond")); s != "first (and more)" {
		t.Fatalf("oneLine = %q", s)
	}
}

func TestConfigLayers(t *testing.T) {
	t.Setenv("PUSHLEDGER_HTTP_ADDR", "127.0.0.1:9999")
	t.Setenv("PUSHLEDGER_LOG_LEVEL", "warn")
	cmd := serveCmd()
	newRoot(&bytes.Buffer{}, &bytes.Buffer{}).AddCommand(cmd)
	if err := cmd.ParseFlags([]string{"--http-addr", "127.0.0.1:7777"}); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(cmd.Flags())
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:7777" || c.Log.Level != "warn" || c.DataDir != "data" {
		t.Fatalf("config %+v", c)
	}
	t.Setenv("PUSHLEDGER_LOG_LEVEL", "loud")
	t.Setenv("PUSHLEDGER_LOG_FORMAT", "xml")
	if _, err := loadConfig(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("want both problems reported, got %v", err)
	}

	// A file's keys: a mistyped one is refused, the right ones are read
	// (with durations and a nested policy).
	t.Setenv("PUSHLEDGER_LOG_LEVEL", "warn")
	t.Setenv("PUSHLEDGER_LOG_FORMAT", "json")
	file := t.TempDir() + "/pushledger.yaml"
	t.Setenv("PUSHLEDGER_CONFIG", file)
	if err := os.WriteFile(file, []byte("datadir: /elsewhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "datadir") {
		t.Fatalf("a mistyped key: %v", err)
	}
	yaml := "data_dir: elsewhere\ngateway:\n  heartbeat: 30s\n  idle_timeout: 90s\ndelivery:\n  policy:\n    max_attempts: 2\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = loadConfig(cmd.Flags())
	if err != nil || c.DataDir != "elsewhere" || c.Gateway.Heartbeat != 30*time.Second {
		t.Fatalf("config file: %v %+v", err, c)
	}
	if p, err := c.Delivery.PolicyJSON(); err != nil || string(p) != `{"max_attempts":2}` {
		t.Fatalf("policy from the file: %s %v", p, err)
	}
}

// TestReloadChangesTheDefaultPolicy: a reload (SIGHUP) reads the
// configuration file again; a valid delivery policy applies at once and is
// recorded in the ledger, an invalid one is refused and the running one
// stays.
func TestReloadChangesTheDefaultPolicy(t *testing.T) {
	in := platformtest.Start(t, "")
	file := t.TempDir() + "/pushledger.yaml"
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := serveCmd()
	newRoot(&bytes.Buffer{}, &bytes.Buffer{}).AddCommand(cmd)
	if err := cmd.ParseFlags([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal)
	results := make(chan error)
	go onSignal(ctx, sig, func() error { return reloadConfig(ctx, cmd.Flags(), in.P) }, func(err error) { results <- err })
	reload := func() error {
		sig <- syscall.SIGHUP
		return <-results
	}

	before := in.P.DefaultPolicy().MaxAttempts
	write("delivery:\n  policy:\n    max_attempts: 4\n    channels:\n      webhook:\n        retry: {max_attempts: 5, initial_ns: 1000000000, max_ns: 60000000000, multiplier: 2, jitter: 0.1}\n")
	if err := reload(); err != nil {
		t.Fatalf("valid reload: %v", err)
	}
	if p := in.P.DefaultPolicy(); p.MaxAttempts != 4 || p.Channel("webhook").Retry.MaxAttempts != 5 || before == 4 {
		t.Fatalf("policy after reload: %+v (before: %d attempts)", p, before)
	}
	write("delivery:\n  policy:\n    max_attempts: 0\n")
	if err := reload(); err == nil || !strings.Contains(err.Error(), "max_attempts") {
		t.Fatalf("invalid reload: %v", err)
	}
	// The gateway's heartbeat changes on reload too; a bad one is refused
	// whole (the policy in the same file is not applied either).
	write("delivery:\n  policy:\n    max_attempts: 4\n    channels:\n      webhook:\n        retry: {max_attempts: 5, initial_ns: 1000000000, max_ns: 60000000000, multiplier: 2, jitter: 0.1}\n" + "gateway:\n  heartbeat: 30s\n  idle_timeout: 70s\n")
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	if h := in.P.Gateway.Heartbeat(); h.Interval != 30*time.Second || h.IdleTimeout != 70*time.Second {
		t.Fatalf("heartbeat after reload %+v", h)
	}
	write("gateway:\n  heartbeat: 30s\n  idle_timeout: 10s\ndelivery:\n  policy:\n    max_attempts: 5\n")
	if err := reload(); err == nil || !strings.Contains(err.Error(), "idle_timeout") {
		t.Fatalf("bad heartbeat: %v", err)
	}
	if p := in.P.DefaultPolicy(); p.MaxAttempts == 5 {
		t.Fatal("a refused reload applied its policy")
	}
	if p := in.P.DefaultPolicy(); p.MaxAttempts != 4 {
		t.Fatalf("an invalid reload changed the policy: %d attempts", p.MaxAttempts)
	}
	write("delivery:\n  policy:\n    max_attempts: 4\n    channels:\n      webhook:\n        retry: {max_attempts: 5, initial_ns: 1000000000, max_ns: 60000000000, multiplier: 2, jitter: 0.1}\n")
	if err := reload(); err != nil { // unchanged: nothing recorded
		t.Fatal(err)
	}
	evs, err := in.P.Ledger.ReadStream(ctx, settings.Stream, ledger.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, e := range evs {
		var s settings.DeliveryPolicySet
		if err := json.Unmarshal(e.Data, &s); err != nil {
			t.Fatal(err)
		}
		sources = append(sources, s.Source)
	}
	if strings.Join(sources, ",") != "configuration (start),configuration (reload)" {
		t.Fatalf("recorded changes: %v", sources)
	}
}

func TestDeliveryConfigFromEnvironment(t *testing.T) {
	t.Setenv("PUSHLEDGER_DELIVERY_POLICY", `{"max_attempts": 3}`)
	t.Setenv("PUSHLEDGER_RUNNERS", "4")
	cmd := serveCmd()
	newRoot(&bytes.Buffer{}, &bytes.Buffer{}).AddCommand(cmd)
	c, err := loadConfig(cmd.Flags())
	if err != nil {
		t.Fatal(err)
	}
	pol, err := c.Delivery.PolicyJSON()
	if err != nil || string(pol) != `{"max_attempts": 3}` || c.Delivery.Runners != 4 {
		t.Fatalf("delivery config %+v, policy %s, %v", c.Delivery, pol, err)
	}
	t.Setenv("PUSHLEDGER_DELIVERY_POLICY", `{"max_attempts":`)
	if _, err := loadConfig(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "delivery.policy") {
		t.Fatalf("bad policy JSON: %v", err)
	}
	t.Setenv("PUSHLEDGER_DELIVERY_POLICY", "")
	t.Setenv("PUSHLEDGER_RUNNERS", "0")
	if _, err := loadConfig(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "delivery.runners") {
		t.Fatalf("0 runners: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestDeviceRun: "pushledger device run" registers simulated devices, gets
// their credentials, connects them to the gateway and prints what they
// receive; their acknowledgements make the message delivered.
func TestDeviceRun(t *testing.T) {
	in := platformtest.Start(t, "")
	env := map[string]string{"PUSHLEDGER_URL": in.URL, "PUSHLEDGER_ADMIN_TOKEN": in.P.AdminToken}
	out, err := run(t, env, "app", "create", "--name", "sim", "--gateway")
	if err != nil {
		t.Fatal(err)
	}
	env["PUSHLEDGER_APP_KEY"], env["PUSHLEDGER_APP_SECRET"] = field(out, "app_key"), field(out, "app_secret")
	for k, v := range env {
		t.Setenv(k, v)
	}
	var devOut, devErr syncBuffer
	root := newRoot(&devOut, &devErr)
	root.SetArgs([]string{"device", "run", "--count", "2", "--prefix", "sim-", "--open-rate", "1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() { cancel(); <-done }()
	platformtest.Eventually(t, 10*time.Second, "devices online", func() bool {
		return in.P.Gateway.Online(env["PUSHLEDGER_APP_KEY"], "sim-1") && in.P.Gateway.Online(env["PUSHLEDGER_APP_KEY"], "sim-2")
	})
	out, err = run(t, env, "send", "--device", "sim-2", "--title", "Hello", "--body", "device")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	platformtest.Eventually(t, 10*time.Second, "printed by the device", func() bool {
		return strings.Contains(devOut.String(), "sim-2  "+id+`  "Hello" "device"  (opened)`)
	})
	platformtest.Eventually(t, 10*time.Second, "delivered and opened", func() bool {
		out, err := run(t, env, "history", id)
		return err == nil && strings.Contains(out, "message.delivered.v2") && strings.Contains(out, "message.opened.v1")
	})
	if strings.Contains(devOut.String(), "sim-1  "+id) {
		t.Error("sim-1 got sim-2's push")
	}
	// What happened to the message on each device.
	out, err = run(t, env, "status", id, "--device", "sim-2")
	if err != nil || !strings.Contains(out, `"targeted": true`) || !strings.Contains(out, `"delivered_at"`) || !strings.Contains(out, `"opened_at"`) {
		t.Errorf("status --device sim-2: %v\n%s", err, out)
	}
	out, err = run(t, env, "status", id, "--device", "sim-1")
	if err != nil || !strings.Contains(out, `"targeted": false`) || strings.Contains(out, `"delivered_at"`) {
		t.Errorf("status --device sim-1: %v\n%s", err, out)
	}
	// Logging a device out closes its connection; the simulator reports
	// the refusal.
	if out, err := run(t, env, "device", "logout", "sim-1"); err != nil || !strings.Contains(out, "logged out: sim-1") {
		t.Fatalf("device logout: %v %s", err, out)
	}
	platformtest.Eventually(t, 10*time.Second, "sim-1 disconnected", func() bool {
		return !in.P.Gateway.Online(env["PUSHLEDGER_APP_KEY"], "sim-1") && strings.Contains(devErr.String(), "device sim-1 stopped")
	})
}

// TestCLIRefusesBadInputLocally: errors the CLI can see without a server
// are one clear line, and a replay of a directory with no ledger creates
// nothing.
func TestCLIRefusesBadInputLocally(t *testing.T) {
	dir := t.TempDir() + "/mistyped"
	_, err := run(t, nil, "replay", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "no ledger in data directory") {
		t.Fatalf("replay of a missing directory: %v", err)
	}
	if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("replay created %s: %v", dir, statErr)
	}
	env := map[string]string{"PUSHLEDGER_URL": "http://127.0.0.1:1", "PUSHLEDGER_APP_KEY": "pk_x", "PUSHLEDGER_APP_SECRET": "sk_x"}
	_, err = run(t, env, "send", "--device", "d1", "--data", "{bad")
	if err == nil || oneLine(err) != "--data is not valid JSON" {
		t.Fatalf("send with bad --data: %v", err)
	}
}
