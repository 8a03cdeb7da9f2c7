// Package platform wires pushledger's embedded profile: the Pebble ledger,
// the Pebble read-model store, the projections, the dispatcher with its
// channels, and the REST API — the one place where implementations meet.
package platform

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	gatewaych "github.com/pushledger/pushledger/adapters/channels/gateway"
	"github.com/pushledger/pushledger/adapters/channels/webhook"
	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	"github.com/pushledger/pushledger/adapters/ledger"
	pebbleledger "github.com/pushledger/pushledger/adapters/ledger/pebble"
	"github.com/pushledger/pushledger/adapters/secretbox"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/domain/settings"
	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
	"github.com/pushledger/pushledger/projections"
	"github.com/pushledger/pushledger/sagas"
)

// Config of the embedded platform.
type Config struct {
	// DataDir holds the ledger (ledger/), the read models (state/) and, when
	// they are not configured, the generated admin token and secret key.
	// Default "./data".
	DataDir string
	// AdminToken guards the admin API. Default: read from (or generated
	// into) DataDir/admin.token.
	AdminToken string
	// SecretKey seals app secrets: 64 hex digits or base64 of 32 bytes.
	// Default: read from (or generated into) DataDir/secret.key.
	SecretKey string
	// WebhookTimeout bounds one webhook call. Default 10 s.
	WebhookTimeout time.Duration
	// NoDispatcher runs the API and read models without the dispatcher
	// (role "api" only), e.g. to measure accepts alone or to split roles
	// across processes. Default false: every role.
	NoDispatcher bool
	// GatewayAddr is the device gateway's listen address in gnet form
	// ("tcp://127.0.0.1:7100"; port 0 picks one, Platform.Gateway.Addr
	// tells which), or "off". Default "tcp://127.0.0.1:7100".
	GatewayAddr string
	// GatewayHeartbeat is announced to devices: how often they PING, and
	// how long the gateway waits for a frame. Default 240 s / 540 s.
	// SetGatewayHeartbeat changes it at run time.
	GatewayHeartbeat wire.Heartbeat
	// GatewayPlain turns the gateway's Noise encryption off (plain TCP,
	// e.g. behind a TLS-terminating load balancer with PROXY protocol).
	GatewayPlain bool
	// GatewayProxyProtocol expects a PROXY protocol v2 header on every
	// gateway connection.
	GatewayProxyProtocol bool
	// GatewayCredentialTTL is how long a device credential issued now is
	// valid (0: it does not expire). A device with an expired credential
	// is refused with 3504 and needs a new one from the app's backend.
	GatewayCredentialTTL time.Duration
	// SendTimeout bounds one channel send by the delivery runners; it must
	// stay below the delivery policy's attempt timeout. Default 15 s.
	SendTimeout time.Duration
	// Runners is the number of delivery saga runners (goroutines sharing the
	// message partitions by lease). Default 1.
	Runners int
	// DeliveryPolicy is the platform's default delivery policy as
	// configured: a JSON object read onto Policy's, or empty. Apps' own
	// policies are read onto the result. It is recorded in the ledger
	// (settings.delivery_policy_set.v1) when it changes; SetDeliveryPolicy
	// changes it at run time.
	DeliveryPolicy json.RawMessage
	// Policy returns the built-in base of the default delivery policy.
	// Default policy.DefaultConfig (tests shorten its backoffs).
	Policy func() policy.Config
	// Now is the clock of commands, signatures and nonces. Default time.Now.
	Now func() time.Time
	// Logger, default slog.Default().
	Logger *slog.Logger
}

// Platform is a running embedded pushledger.
type Platform struct {
	cfg      Config
	log      *slog.Logger
	Ledger   *pebbleledger.Store
	State    *pebblekv.Store
	Commands *commands.Handler
	Apps     *projections.Apps
	Devices  *projections.Runner
	Messages *projections.Runner
	Runners  []*sagas.Runner
	// Gateway is the device gateway (nil when off); GatewayChannel
	// delivers through it; Credentials issues device credentials.
	Gateway        *gateway.Server
	GatewayChannel *gatewaych.Channel
	Credentials    *gateway.Credentials
	noisePub       []byte
	policy         atomic.Pointer[policy.Config]
	API            *api.Server
	AdminToken     string
}

// Open opens the stores and builds every part; Run starts them.
func Open(cfg Config) (*Platform, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = 10 * time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	var err error
	if cfg.AdminToken, err = fileSecret(cfg.AdminToken, filepath.Join(cfg.DataDir, "admin.token"), cfg.Logger); err != nil {
		return nil, err
	}
	if cfg.SecretKey, err = fileSecret(cfg.SecretKey, filepath.Join(cfg.DataDir, "secret.key"), cfg.Logger); err != nil {
		return nil, err
	}
	key, err := secretbox.ParseKey(cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	box, err := secretbox.New(key)
	if err != nil {
		return nil, err
	}
	p := &Platform{cfg: cfg, log: cfg.Logger, AdminToken: cfg.AdminToken}
	if p.Ledger, err = pebbleledger.Open(pebbleledger.Config{Dir: filepath.Join(cfg.DataDir, "ledger"), Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if p.State, err = pebblekv.Open(pebblekv.Config{Dir: filepath.Join(cfg.DataDir, "state")}); err != nil {
		return nil, errors.Join(err, p.Ledger.Close())
	}
	fail := func(err error) (*Platform, error) { return nil, errors.Join(err, p.Close()) }
	if p.Commands, err = commands.New(p.Ledger, commands.Config{Logger: cfg.Logger, Now: cfg.Now}); err != nil {
		return fail(err)
	}
	if err := projections.EnsureDeviceBriefs(p.State); err != nil {
		return fail(err)
	}
	p.Apps = projections.NewApps(p.Ledger)
	if p.Devices, err = projections.NewRunner(projections.Devices{}, p.State, p.Ledger, cfg.Logger); err != nil {
		return fail(err)
	}
	if p.Messages, err = projections.NewRunner(projections.Messages{}, p.State, p.Ledger, cfg.Logger); err != nil {
		return fail(err)
	}
	wh, err := webhook.New(webhook.Config{Timeout: cfg.WebhookTimeout})
	if err != nil {
		return fail(err)
	}
	if err := p.SetDeliveryPolicy(context.Background(), cfg.DeliveryPolicy, "configuration (start)"); err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	alerts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushledger_delivery_alerts_total", Help: "Messages that failed finally with an alert, by reason.",
	}, []string{"reason"})
	reg.MustRegister(alerts)
	chans := []channels.Channel{wh}
	if cfg.GatewayAddr == "" {
		cfg.GatewayAddr = "tcp://127.0.0.1:7100"
	}
	if cfg.GatewayAddr != "off" {
		if err := p.openGateway(cfg); err != nil {
			return fail(err)
		}
		chans = append(chans, p.GatewayChannel)
	}
	leases := sagas.NewMemoryLeases(cfg.Now)
	for i := range max(cfg.Runners, 1) {
		r, err := sagas.NewRunner(sagas.Config{
			Owner: fmt.Sprintf("runner-%d", i), Policy: p.DefaultPolicy, Now: cfg.Now, Logger: cfg.Logger, SendTimeout: cfg.SendTimeout,
			Presence: p.presence,
			OnAlert: func(a sagas.Alert) {
				alerts.WithLabelValues(a.Reason).Inc()
				cfg.Logger.Warn("delivery alert", "message", a.MessageID, "app", a.AppID, "attempt", a.Attempt, "reason", a.Reason)
			},
		}, p.Ledger, p.Commands, p.Apps, box, p.State, leases, chans...)
		if err != nil {
			return fail(err)
		}
		p.Runners = append(p.Runners, r)
	}
	// Nonces are kept beside the ledger: the fsync of a request's append
	// makes its nonce durable too, with no sync of its own.
	if err := moveNonces(p.State, p.Ledger.Side(), filepath.Join(cfg.DataDir, "nonces")); err != nil {
		return fail(err)
	}
	nonces, err := pebblekv.NewNonces(p.Ledger.Side(), cfg.Now)
	if err != nil {
		return fail(err)
	}
	p.registerPositions(reg)
	if p.Gateway != nil {
		reg.MustRegister(gatewayCollector{p.Gateway})
	}
	if p.API, err = api.New(api.Config{AdminToken: cfg.AdminToken, Logger: cfg.Logger, Now: cfg.Now, Policy: p.DefaultPolicy, Registerer: reg}, api.Deps{
		Commands: p.Commands, Ledger: p.Ledger, Apps: p.Apps, Store: p.State, Devices: p.Devices, Box: box,
		Nonces: nonces, Gateway: p.gatewayIssuer(),
	}); err != nil {
		return fail(err)
	}
	return p, nil
}

// openGateway builds the device gateway, its credentials (the key is
// generated into DataDir/gateway.key unless present) and its channel.
func (p *Platform) openGateway(cfg Config) error {
	credHex, err := fileSecret("", filepath.Join(cfg.DataDir, "gateway.key"), cfg.Logger)
	if err != nil {
		return err
	}
	credKey, err := hex.DecodeString(credHex)
	if err != nil {
		return fmt.Errorf("gateway.key: %w", err)
	}
	// Issued on the platform's clock, which also times registrations: a
	// credential issued before the device's latest registration is refused.
	credOpts := []gateway.CredentialsOption{gateway.WithClock(cfg.Now)}
	if cfg.GatewayCredentialTTL > 0 {
		credOpts = append(credOpts, gateway.WithTTL(cfg.GatewayCredentialTTL))
	}
	if p.Credentials, err = gateway.NewCredentials([]gateway.CredentialKey{{ID: "k1", Secret: credKey}}, credOpts...); err != nil {
		return err
	}
	gcfg := gateway.Config{Addr: cfg.GatewayAddr, ProxyProtocol: cfg.GatewayProxyProtocol, Heartbeat: cfg.GatewayHeartbeat, Logger: cfg.Logger}
	if !cfg.GatewayPlain {
		noiseHex, err := fileSecret("", filepath.Join(cfg.DataDir, "gateway-noise.key"), cfg.Logger)
		if err != nil {
			return err
		}
		if gcfg.NoiseKey, err = hex.DecodeString(noiseHex); err != nil {
			return fmt.Errorf("gateway-noise.key: %w", err)
		}
		if p.noisePub, err = gateway.NoisePublicKey(gcfg.NoiseKey); err != nil {
			return err
		}
	}
	if p.GatewayChannel, err = gatewaych.New(gatewaych.Config{
		Outbox: gatewaych.NewOutbox(p.State), Apps: p.Apps, Devices: projections.Registry{Store: p.State},
		Recorder: p.Commands, Now: cfg.Now, Logger: cfg.Logger,
	}); err != nil {
		return err
	}
	if p.Gateway, err = gateway.New(gcfg, deviceAuth{creds: p.Credentials, apps: p.Apps}, p.GatewayChannel); err != nil {
		return err
	}
	p.GatewayChannel.SetServer(p.Gateway)
	return nil
}

// deviceAuth accepts a device whose credential verifies and whose app
// exists: no I/O, as the gateway's event loops require.
type deviceAuth struct {
	creds *gateway.Credentials
	apps  *projections.Apps
}

// IssuedAt implements gateway.IssueTimes.
func (d deviceAuth) IssuedAt(credential []byte) (int64, bool) { return d.creds.IssuedAt(credential) }

func (d deviceAuth) Authenticate(appKey, deviceID string, credential []byte, now time.Time) error {
	if err := d.creds.Verify(appKey, deviceID, credential, now); err != nil {
		return err
	}
	if _, ok := d.apps.ByKey(appKey); !ok {
		return gateway.ErrAuthFailed
	}
	return nil
}

// Revoke implements api.Gateway: the device's live connection, if any,
// gets DISCONNECT 3505 (logged out) or 3508 (blacklisted).
func (p *Platform) Revoke(appKey, device string, blocked bool) {
	if p.Gateway == nil {
		return
	}
	code := wire.CodeCredentialRevoked
	if blocked {
		code = wire.CodeDeviceBlocked
	}
	p.Gateway.Disconnect(appKey, device, code)
}

// IssueCredential issues device's credential for the app with key, with
// the gateway's address and the Noise public key to pin (nil on plain
// TCP). It is the API's api.Gateway.
func (p *Platform) IssueCredential(appKey, device string) (credential []byte, addr string, serverKey []byte, err error) {
	if p.Gateway == nil {
		return nil, "", nil, errors.New("the gateway is off")
	}
	if a := p.Gateway.Addr(); a != nil {
		addr = a.String()
	}
	return p.Credentials.Issue(appKey, device), addr, p.noisePub, nil
}

// SetGatewayHeartbeat changes the heartbeat interval and idle timeout
// without a restart (zero: the defaults): new connections get them at
// once, existing ones at their next PING.
func (p *Platform) SetGatewayHeartbeat(h wire.Heartbeat) error {
	if p.Gateway == nil {
		return nil
	}
	if h.IsZero() {
		h = wire.Heartbeat{Interval: gateway.DefaultHeartbeatInterval, IdleTimeout: gateway.DefaultIdleTimeout}
	}
	if h == p.Gateway.Heartbeat() {
		return nil
	}
	if err := p.Gateway.SetHeartbeat(h); err != nil {
		return err
	}
	p.log.Info("gateway heartbeat changed", "interval", h.Interval, "idle_timeout", h.IdleTimeout)
	return nil
}

// gatewayCollector exports the gateway's counters at scrape time.
type gatewayCollector struct{ g *gateway.Server }

var (
	gwConnections = prometheus.NewDesc("pushledger_gateway_connections", "Open device connections (online: authenticated).", []string{"state"}, nil)
	gwAccepted    = prometheus.NewDesc("pushledger_gateway_accepted_total", "TCP connections accepted by the gateway.", nil, nil)
	gwPushes      = prometheus.NewDesc("pushledger_gateway_pushes_total", "PUSH frames written to devices.", nil, nil)
	gwPushBytes   = prometheus.NewDesc("pushledger_gateway_push_bytes_total", "Bytes of the PUSH frames written.", nil, nil)
	gwLost        = prometheus.NewDesc("pushledger_gateway_lost_total", "Connections closed without a DISCONNECT either way.", nil, nil)
	gwDisconnects = prometheus.NewDesc("pushledger_gateway_disconnects_total", "DISCONNECT frames by code, sent by the gateway or by devices.", []string{"code", "by"}, nil)
)

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gwConnections, gwAccepted, gwPushes, gwPushBytes, gwLost, gwDisconnects} {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.Stats()
	ch <- prometheus.MustNewConstMetric(gwConnections, prometheus.GaugeValue, float64(s.Connections), "open")
	ch <- prometheus.MustNewConstMetric(gwConnections, prometheus.GaugeValue, float64(s.Online), "online")
	ch <- prometheus.MustNewConstMetric(gwAccepted, prometheus.CounterValue, float64(s.Accepted))
	ch <- prometheus.MustNewConstMetric(gwPushes, prometheus.CounterValue, float64(s.Pushes))
	ch <- prometheus.MustNewConstMetric(gwPushBytes, prometheus.CounterValue, float64(s.PushBytes))
	ch <- prometheus.MustNewConstMetric(gwLost, prometheus.CounterValue, float64(s.Lost))
	for code, n := range s.DisconnectsSent {
		ch <- prometheus.MustNewConstMetric(gwDisconnects, prometheus.CounterValue, float64(n), strconv.Itoa(int(code)), "gateway")
	}
	for code, n := range s.DisconnectsReceived {
		ch <- prometheus.MustNewConstMetric(gwDisconnects, prometheus.CounterValue, float64(n), strconv.Itoa(int(code)), "device")
	}
}

// presence is what the platform knows of a device: whether it is online
// on this node's gateway. (Foreground state is not reported yet.)
func (p *Platform) presence(a *app.App, device string) policy.Presence {
	if p.Gateway == nil {
		return policy.Presence{}
	}
	return policy.Presence{Online: p.Gateway.Online(a.Key, device)}
}

// gatewayIssuer is the API's view of the gateway, or nil when it is off.
func (p *Platform) gatewayIssuer() api.Gateway {
	if p.Gateway == nil {
		return nil
	}
	return p
}

// DefaultPolicy is the platform's default delivery policy in force.
func (p *Platform) DefaultPolicy() policy.Config { return *p.policy.Load() }

// SetDeliveryPolicy makes raw (a JSON object read onto the built-in base,
// or empty for the base itself) the default delivery policy, from the
// next decision on. A policy that does not validate is refused and the
// one in force stays. A change is recorded in the ledger with source.
func (p *Platform) SetDeliveryPolicy(ctx context.Context, raw json.RawMessage, source string) error {
	base := policy.DefaultConfig()
	if p.cfg.Policy != nil {
		base = p.cfg.Policy()
	}
	cfg := base
	if len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
		var err error
		if cfg, err = policy.Parse(raw, base); err != nil {
			return fmt.Errorf("delivery policy: %w", err)
		}
	}
	if _, _, err := p.Commands.Settings(ctx, settings.SetDeliveryPolicy{Policy: raw, Source: source}); err != nil {
		return fmt.Errorf("delivery policy: %w", err)
	}
	p.policy.Store(&cfg)
	return nil
}

// registerPositions exports, at scrape time, the ledger's last position and
// how far each read model has folded it (their difference is the lag).
func (p *Platform) registerPositions(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushledger_ledger_last_position", Help: "Global position of the ledger's last acknowledged event.",
	}, func() float64 {
		pos, err := p.Ledger.LastPosition(context.Background())
		if err != nil {
			return -1
		}
		return float64(pos)
	}))
	for name, r := range map[string]*projections.Runner{"device-registry": p.Devices, "message-status": p.Messages} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushledger_projection_position", Help: "Global position a read model has folded the ledger up to.",
			ConstLabels: prometheus.Labels{"projection": name},
		}, func() float64 { return float64(r.Position()) }))
	}
	sum := func(f func(sagas.Stats) float64) func() float64 {
		return func() float64 {
			t := 0.0
			for _, r := range p.Runners {
				t += f(r.Stats())
			}
			return t
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushledger_saga_timers", Help: "Durable delivery timers held in memory by this node's runners."},
			sum(func(s sagas.Stats) float64 { return float64(s.Timers) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushledger_saga_decisions_total", Help: "Delivery decisions made."},
			sum(func(s sagas.Stats) float64 { return float64(s.Decisions) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushledger_saga_timers_fired_total", Help: "Delivery timers fired."},
			sum(func(s sagas.Stats) float64 { return float64(s.Fired) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushledger_saga_sends_total", Help: "Channel sends started."},
			sum(func(s sagas.Stats) float64 { return float64(s.Sends) })),
	)
}

// fileSecret returns v, or the content of path, or a new random value
// written to path (mode 0600).
func fileSecret(v, path string, log *slog.Logger) (string, error) {
	if v != "" {
		return v, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	v = hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
		return "", err
	}
	log.Warn("generated a secret; configure it explicitly in production", "file", filepath.Base(path))
	return v, nil
}

// Run catches the read models up, serves HTTP on ln and runs every part
// until ctx ends or one fails. It returns after all have stopped.
func (p *Platform) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := p.catchUp(ctx, nil); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("app directory", p.Apps.Run)
	start("device registry", p.Devices.Run)
	start("message status", p.Messages.Run)
	// Auth needs the app directory: wait until it has read every app.
	last, err := p.Ledger.LastPosition(ctx)
	if err != nil {
		return err
	}
	if err := p.waitApps(ctx, last); err != nil {
		return err
	}
	if p.Gateway != nil {
		start("gateway", p.Gateway.Run)
		start("gateway channel", p.GatewayChannel.Run)
		select { // pushes need the engine running
		case <-p.Gateway.Ready():
		case <-ctx.Done():
		}
	}
	if !p.cfg.NoDispatcher {
		for i, r := range p.Runners {
			start(fmt.Sprintf("delivery runner %d", i), r.Run)
		}
	}
	// Timeouts bound what a slow or idle client can hold: a 1,000-message
	// batch is read well within ReadTimeout on any working link.
	srv := &http.Server{Handler: p.API.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
	start("http", func(ctx context.Context) error {
		errs := make(chan error, 1)
		go func() { errs <- srv.Serve(ln) }()
		select {
		case err := <-errs:
			return err
		case <-ctx.Done():
		}
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		err := srv.Shutdown(sctx)
		<-errs
		return err
	})
	p.log.Info("pushledger serving", "addr", ln.Addr().String(), "data_dir", p.cfg.DataDir)
	<-ctx.Done()
	wg.Wait()
	close(errc)
	return <-errc
}

// waitApps waits for the app directory to reach pos, unless the ledger
// holds no app event at or before it (then it is current already).
func (p *Platform) waitApps(ctx context.Context, pos uint64) error {
	evs, err := p.Ledger.ReadAll(ctx, pos+1, ledger.Backwards, 1, ledger.Filter{StreamPrefixes: []string{"app-"}})
	if err != nil || len(evs) == 0 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return p.Apps.WaitFor(wctx, evs[0].Position)
}

func (p *Platform) catchUp(ctx context.Context, progress func(name string, pos, last uint64)) error {
	for _, x := range []struct {
		name string
		r    *projections.Runner
	}{{"device registry", p.Devices}, {"message status", p.Messages}} {
		name, r := x.name, x.r
		var pf func(pos, last uint64)
		if progress != nil {
			pf = func(pos, last uint64) { progress(name, pos, last) }
		}
		if err := r.CatchUp(ctx, pf); err != nil {
			return err
		}
	}
	return nil
}

// Replay rebuilds every stored read model from position 0.
func (p *Platform) Replay(ctx context.Context, progress func(name string, pos, last uint64)) error {
	for _, r := range []*projections.Runner{p.Devices, p.Messages} {
		if err := r.Reset(); err != nil {
			return err
		}
	}
	return p.catchUp(ctx, progress)
}

// moveNonces moves the nonce records of earlier releases, kept in the
// read-model store and then in a store of their own in dir (removed once
// moved), to where they are kept now.
func moveNonces(state *pebblekv.Store, to pebblekv.NonceLog, dir string) error {
	if err := pebblekv.MoveNonces(state, to); err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	old, err := pebblekv.Open(pebblekv.Config{Dir: dir, CacheBytes: 8 << 20})
	if err != nil {
		return err
	}
	if err := errors.Join(pebblekv.MoveNonces(old, to), old.Close()); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Close closes the stores.
func (p *Platform) Close() error {
	var errs []error
	if p.State != nil {
		errs = append(errs, p.State.Close())
	}
	if p.Ledger != nil {
		errs = append(errs, p.Ledger.Close())
	}
	return errors.Join(errs...)
}
