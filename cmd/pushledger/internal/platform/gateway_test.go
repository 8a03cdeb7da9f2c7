package platform_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gatewaych "github.com/pushledger/pushledger/adapters/channels/gateway"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform/platformtest"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	gwclient "github.com/pushledger/pushledger/gateway/client"
	"github.com/pushledger/pushledger/gateway/wire"
)

// device is a simulated device on the Go SDK, recording what its app got.
type device struct {
	mu     sync.Mutex
	got    map[string]gatewaych.Payload
	order  []string
	cancel context.CancelFunc
	done   chan struct{}
	sdk    *gwclient.Client
}

func (d *device) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.got[id]
	return ok
}

// connect registers nothing: it fetches the device's credential from the
// API (as the app's backend would) and runs the SDK until the test ends
// or stop is called.
func connect(t *testing.T, c *client.Client, id, storeDir string) *device {
	t.Helper()
	acc, err := c.GatewayAccess(context.Background(), id)
	if err != nil {
		t.Fatalf("credential: %v", err)
	}
	d := &device{got: map[string]gatewaych.Payload{}, done: make(chan struct{})}
	d.sdk, err = gwclient.New(gwclient.Config{Addr: acc.Addr, AppKey: c.AppKey, DeviceID: id, Credential: acc.Credential,
		ServerKey: acc.ServerKey, StoreDir: storeDir, BackoffBase: 20 * time.Millisecond, BackoffCap: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		gwclient.HandlerFunc(func(_ context.Context, p gwclient.Push) error {
			var pl gatewaych.Payload
			if err := json.Unmarshal(p.Payload, &pl); err != nil {
				t.Errorf("payload %q: %v", p.Payload, err)
			}
			d.mu.Lock()
			d.got[p.ID.String()] = pl
			d.order = append(d.order, p.ID.String())
			d.mu.Unlock()
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { defer close(d.done); _ = d.sdk.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *device) stop() {
	d.cancel()
	<-d.done
	_ = d.sdk.Close()
}

// gatewayApp creates an app whose only channel is the gateway.
func gatewayApp(t *testing.T, in *platformtest.Instance) *client.Client {
	t.Helper()
	c, created := in.NewApp(t, "gw", "")
	admin := &client.Client{BaseURL: in.URL, AdminToken: in.P.AdminToken, HTTP: http.DefaultClient}
	if err := admin.Do(context.Background(), http.MethodPut, "/admin/v1/apps/"+created.AppID+"/channels/gateway", nil,
		map[string]any{"enabled": true, "priority": 0}, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGatewayEndToEnd: REST submit → the device's SDK gets the push → its
// ACK is recorded as delivered in the message's history; a device that is
// offline gets its pushes, oldest first, when it connects; an open is
// recorded.
func TestGatewayEndToEnd(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	register(t, c, "phone-1", "alice")
	register(t, c, "phone-2", "bob")

	online := connect(t, c, "phone-1", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "phone-1 online", func() bool { return in.P.Gateway.Online(c.AppKey, "phone-1") })

	id := send(t, c, api.MessageRequest{Audience: message.Audience{Aliases: []string{"alice"}},
		Notification: &message.Notification{Title: "Hi", Body: "there"}, Data: json.RawMessage(`{"order":42}`)})
	platformtest.Eventually(t, 10*time.Second, "delivered", func() bool { return status(t, c, id).State == message.StateDelivered })
	if !online.has(id) {
		t.Fatal("delivered, but the device's app did not get it")
	}
	online.mu.Lock()
	pl := online.got[id]
	online.mu.Unlock()
	if pl.Notification == nil || pl.Notification.Title != "Hi" || string(pl.Data) != `{"order":42}` || pl.ExpiresAt == nil {
		t.Errorf("payload %+v", pl)
	}
	got := strings.Join(types(history(t, c, id)), " ")
	if !strings.Contains(got, message.TypeDeliveredBatch) || !strings.HasPrefix(got, message.TypeAccepted+" "+message.TypeSending) {
		t.Errorf("history %s", got)
	}
	for _, e := range history(t, c, id) {
		if e.Type == message.TypeDeliveredBatch && !strings.Contains(string(e.Data), `"device_ids":["phone-1"]`) {
			t.Errorf("delivered event %s", e.Data)
		}
	}

	// The gateway's counters are exported.
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pushledger_gateway_connections{state="online"} 1`, "pushledger_gateway_pushes_total 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The user opens it.
	wid, err := wire.ParseMessageID(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := online.sdk.Opened(wid); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, 10*time.Second, "opened", func() bool { return status(t, c, id).State == message.StateOpened })

	// phone-2 is offline: its two pushes wait, then arrive in order.
	first := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phone-2"}}, Notification: &message.Notification{Title: "1"}})
	second := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phone-2"}}, Notification: &message.Notification{Title: "2"}})
	platformtest.Eventually(t, 10*time.Second, "sent to the outbox", func() bool {
		return status(t, c, first).State == message.StateSent && status(t, c, second).State == message.StateSent
	})
	late := connect(t, c, "phone-2", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "delivered after connect", func() bool {
		return status(t, c, first).State == message.StateDelivered && status(t, c, second).State == message.StateDelivered
	})
	late.mu.Lock()
	order := strings.Join(late.order, ",")
	late.mu.Unlock()
	if order != first+","+second {
		t.Errorf("offline device got %s, want %s then %s", order, first, second)
	}
}

// TestGatewayKillMidPush: the device's connection dies after its app got a
// push but before the ACK left; on reconnect the server sends the push
// again (from the outbox) and the SDK acknowledges it without surfacing it
// a second time: delivered exactly once to the app layer, and recorded as
// delivered.
func TestGatewayKillMidPush(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	register(t, c, "phone-1", "")
	acc, err := c.GatewayAccess(context.Background(), "phone-1")
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	var mu sync.Mutex
	var surfaced []string
	var conn net.Conn
	kill := true
	run := func() (stop func()) {
		sdk, err := gwclient.New(gwclient.Config{Addr: acc.Addr, AppKey: c.AppKey, DeviceID: "phone-1", Credential: acc.Credential,
			ServerKey: acc.ServerKey, StoreDir: store, BackoffBase: 20 * time.Millisecond, BackoffCap: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				mu.Lock()
				conn = nc
				mu.Unlock()
				return nc, err
			}},
			gwclient.HandlerFunc(func(_ context.Context, p gwclient.Push) error {
				mu.Lock()
				defer mu.Unlock()
				surfaced = append(surfaced, p.ID.String())
				if kill {
					kill = false
					conn.Close() // the device dies before its ACK leaves
				}
				return nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = sdk.Run(ctx) }()
		return func() { cancel(); <-done; _ = sdk.Close() }
	}
	stop := run()
	defer func() { stop() }()
	platformtest.Eventually(t, 10*time.Second, "online", func() bool { return in.P.Gateway.Online(c.AppKey, "phone-1") })
	id := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phone-1"}}, Notification: &message.Notification{Title: "once"}})
	platformtest.Eventually(t, 10*time.Second, "surfaced", func() bool { mu.Lock(); defer mu.Unlock(); return len(surfaced) == 1 })
	// The SDK reconnects by itself (its connection was cut); the server
	// pushes the message again and the ACK goes through this time.
	platformtest.Eventually(t, 10*time.Second, "delivered", func() bool { return status(t, c, id).State == message.StateDelivered })
	// And a fresh process on the same store does not surface it either.
	stop()
	stop = run()
	platformtest.Eventually(t, 10*time.Second, "online again", func() bool { return in.P.Gateway.Online(c.AppKey, "phone-1") })
	mu.Lock()
	defer mu.Unlock()
	if len(surfaced) != 1 || surfaced[0] != id {
		t.Fatalf("the app layer got %v, want %s once", surfaced, id)
	}
}

// TestGatewayBroadcast: a broadcast reaches every online device at once and
// an offline one when it connects; the acknowledgements are recorded in
// batches (message.delivered.v2), and the ledger answers which device got
// the message when.
func TestGatewayBroadcast(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	const n = 20
	var devs []*device
	for i := range n + 1 {
		register(t, c, fmt.Sprintf("d%02d", i), "")
	}
	for i := range n {
		devs = append(devs, connect(t, c, fmt.Sprintf("d%02d", i), t.TempDir()))
	}
	platformtest.Eventually(t, 10*time.Second, "all online", func() bool { return in.P.Gateway.Stats().Connections == n })
	id := send(t, c, api.MessageRequest{Audience: message.Audience{Broadcast: true}, Notification: &message.Notification{Title: "all"}})
	platformtest.Eventually(t, 10*time.Second, "every online device acknowledged", func() bool {
		return status(t, c, id).Channels["gateway"] != nil && status(t, c, id).Channels["gateway"].Delivered == n
	})
	for i, d := range devs {
		if !d.has(id) {
			t.Errorf("device %d did not get the broadcast", i)
		}
	}
	late := connect(t, c, fmt.Sprintf("d%02d", n), t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "the late device acknowledged", func() bool {
		return status(t, c, id).Channels["gateway"].Delivered == n+1
	})
	if !late.has(id) {
		t.Fatal("the late device's app did not get the broadcast")
	}
	batches, devices := 0, map[string]bool{}
	for _, e := range history(t, c, id) {
		if e.Type == message.TypeDeliveredBatch {
			batches++
			var b message.DeliveredBatch
			if err := json.Unmarshal(e.Data, &b); err != nil {
				t.Fatal(err)
			}
			for _, d := range b.DeviceIDs {
				if devices[d] {
					t.Errorf("device %s recorded twice", d)
				}
				devices[d] = true
			}
		}
	}
	if len(devices) != n+1 || batches > n {
		t.Errorf("%d devices in %d delivered events", len(devices), batches)
	}
	t.Logf("%d acknowledgements recorded in %d events", len(devices), batches)
}

// TestGatewayBroadcastSkipsBlacklisted: a broadcast does not reach a device
// the app blacklisted (by id, user or group), online or connecting later.
func TestGatewayBroadcastSkipsBlacklisted(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	register(t, c, "ok-1", "")
	register(t, c, "stolen", "")
	register(t, c, "mallory-phone", "mallory")
	register(t, c, "late-stolen", "")
	var appID string
	var apps struct {
		Apps []api.AppView `json:"apps"`
	}
	admin := &client.Client{BaseURL: in.URL, AdminToken: in.P.AdminToken, HTTP: http.DefaultClient}
	if err := admin.Do(context.Background(), http.MethodGet, "/admin/v1/apps", nil, nil, &apps); err != nil {
		t.Fatal(err)
	}
	for _, a := range apps.Apps {
		if a.AppKey == c.AppKey {
			appID = a.AppID
		}
	}
	for _, bl := range []map[string]any{{"kind": "device", "add": []string{"stolen", "late-stolen"}}, {"kind": "user", "add": []string{"mallory"}}} {
		if err := admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps/"+appID+"/blacklist", nil, bl, nil); err != nil {
			t.Fatal(err)
		}
	}
	ok, stolen, mallory := connect(t, c, "ok-1", t.TempDir()), connect(t, c, "stolen", t.TempDir()), connect(t, c, "mallory-phone", t.TempDir())
	// The blacklisted devices are disconnected with 3508 as they connect.
	platformtest.Eventually(t, 10*time.Second, "ok-1 online, the others refused", func() bool {
		return in.P.Gateway.Online(c.AppKey, "ok-1") && in.P.Gateway.Stats().DisconnectsSent[wire.CodeDeviceBlocked] == 2
	})
	id := send(t, c, api.MessageRequest{Audience: message.Audience{Broadcast: true}, Notification: &message.Notification{Title: "all"}})
	platformtest.Eventually(t, 10*time.Second, "delivered to ok-1", func() bool { return status(t, c, id).State == message.StateDelivered })
	late := connect(t, c, "late-stolen", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "late device refused", func() bool {
		return in.P.Gateway.Stats().DisconnectsSent[wire.CodeDeviceBlocked] == 3
	})
	// Another push to ok-1 after the late device's connect work: once it
	// arrives, the late device's outbox flush has run too.
	after := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"ok-1"}}, Notification: &message.Notification{Title: "after"}})
	platformtest.Eventually(t, 10*time.Second, "the later push", func() bool { return ok.has(after) })
	if !ok.has(id) || stolen.has(id) || mallory.has(id) || late.has(id) {
		t.Fatalf("broadcast reached: ok-1 %v, stolen %v, mallory %v, late-stolen %v", ok.has(id), stolen.has(id), mallory.has(id), late.has(id))
	}
}

// TestGatewayAcksOnlyFromTargets: an ACK or OPENED names a message id, and
// only a device the message was sent to, of the message's app, gets it
// recorded. Another device of the app, and a device of another app, that
// report an open of the message (an open implies delivery) change nothing.
func TestGatewayAcksOnlyFromTargets(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	other := gatewayApp(t, in)
	register(t, c, "target", "")
	register(t, c, "bystander", "")
	register(t, other, "stranger", "")
	target := connect(t, c, "target", t.TempDir())
	bystander := connect(t, c, "bystander", t.TempDir())
	stranger := connect(t, other, "stranger", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "devices online", func() bool {
		return in.P.Gateway.Online(c.AppKey, "target") && in.P.Gateway.Online(c.AppKey, "bystander") && in.P.Gateway.Online(other.AppKey, "stranger")
	})

	id := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"target"}}, Notification: &message.Notification{Title: "for target"}})
	platformtest.Eventually(t, 10*time.Second, "delivered to the target", func() bool { return target.has(id) && status(t, c, id).State == message.StateDelivered })
	wid, err := wire.ParseMessageID(id)
	if err != nil {
		t.Fatal(err)
	}
	// Each forger reports the open, then gets a push of its own and opens
	// it: its frames are handled in order, so once its own open is in the
	// ledger, the forged one was dealt with.
	for _, f := range []struct {
		d   *device
		c   *client.Client
		dev string
	}{{bystander, c, "bystander"}, {stranger, other, "stranger"}} {
		if err := f.d.sdk.Opened(wid); err != nil {
			t.Fatal(err)
		}
		own := send(t, f.c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{f.dev}}, Notification: &message.Notification{Title: "own"}})
		platformtest.Eventually(t, 10*time.Second, f.dev+" got its own push", func() bool { return f.d.has(own) })
		owid, _ := wire.ParseMessageID(own)
		if err := f.d.sdk.Opened(owid); err != nil {
			t.Fatal(err)
		}
		platformtest.Eventually(t, 10*time.Second, f.dev+"'s own open", func() bool { return status(t, f.c, own).State == message.StateOpened })
	}
	for _, e := range history(t, c, id) {
		if strings.Contains(string(e.Data), "bystander") || strings.Contains(string(e.Data), "stranger") {
			t.Errorf("a forged acknowledgement was recorded: %s %s", e.Type, e.Data)
		}
	}
	if s := status(t, c, id); s.State != message.StateDelivered {
		t.Errorf("state %s after forged opens, want delivered", s.State)
	}
}

// TestGatewayLateDeliveryAfterFinalFailure: a device offline past every
// attempt's ack window makes the message fail finally, but its push waits
// in the outbox until the TTL; when the device connects and acknowledges,
// the ledger records the delivery after the failure.
func TestGatewayLateDeliveryAfterFinalFailure(t *testing.T) {
	pol := platformtest.FastPolicy()
	pol.MaxAttempts = 1
	gw := pol.Channels["gateway"]
	gw.AckWindow = 100 * time.Millisecond
	gw.StoreAndForward = false // give up when the ack window ends
	pol.Channels["gateway"] = gw
	in := platformtest.StartWith(t, platform.Config{Policy: func() policy.Config { return pol }})
	c := gatewayApp(t, in)
	register(t, c, "sleeper", "")
	id := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"sleeper"}}, Notification: &message.Notification{Title: "later"}, TTL: 3600})
	platformtest.Eventually(t, 10*time.Second, "final failure", func() bool {
		s := status(t, c, id)
		return s.State == message.StateFailed && s.FinalFailure
	})
	d := connect(t, c, "sleeper", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "late delivery", func() bool { return d.has(id) && status(t, c, id).State == message.StateDelivered })
	got := strings.Join(types(history(t, c, id)), " ")
	if !strings.Contains(got, message.TypeFailed+" "+message.TypeDeliveredBatch) {
		t.Errorf("history %s: want the delivery after the failure", got)
	}
	if s := status(t, c, id); s.FinalFailure || s.Counts[message.StateDelivered] != 1 {
		t.Errorf("status after the late delivery: %+v", s)
	}
}

// credentialThenLogout registers device, fetches its credential, then
// logs it out, and returns the credential.
func credentialThenLogout(t *testing.T, c *client.Client, device string) client.GatewayAccess {
	t.Helper()
	register(t, c, device, "")
	acc, err := c.GatewayAccess(context.Background(), device)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(context.Background(), http.MethodPost, "/v1/devices/"+device+"/logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	return acc
}

// refusal runs the SDK of device with credential acc until the server
// refuses it for good, and returns the code of the refusal.
func refusal(t *testing.T, c *client.Client, device string, acc client.GatewayAccess) wire.Code {
	t.Helper()
	sdk, err := gwclient.New(gwclient.Config{Addr: acc.Addr, AppKey: c.AppKey, DeviceID: device, Credential: acc.Credential,
		ServerKey: acc.ServerKey, StoreDir: t.TempDir(), BackoffBase: 20 * time.Millisecond, BackoffCap: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		gwclient.HandlerFunc(func(context.Context, gwclient.Push) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var de *gwclient.DisconnectError
	if err := sdk.Run(ctx); !errors.As(err, &de) {
		t.Fatalf("%s: Run returned %v, want a refusal", device, err)
	}
	return de.Code
}

// TestGatewayRefusesRevokedDevices: a credential stays valid by itself,
// but a device that logged out since it was issued is disconnected with
// 3505 when it connects, and one the app blacklisted with 3508; the SDK
// stops reconnecting.
func TestGatewayRefusesRevokedDevices(t *testing.T) {
	in := platformtest.Start(t, "")
	c := gatewayApp(t, in)
	acc := credentialThenLogout(t, c, "gone")
	if code := refusal(t, c, "gone", acc); code != wire.CodeCredentialRevoked {
		t.Errorf("logged-out device refused with %d, want 3505", code)
	}

	// Connected devices lose their connection when they log out, or when
	// the app blacklists them by id.
	register(t, c, "leaving", "")
	register(t, c, "stolen", "")
	connect(t, c, "leaving", t.TempDir())
	connect(t, c, "stolen", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "online", func() bool {
		return in.P.Gateway.Online(c.AppKey, "leaving") && in.P.Gateway.Online(c.AppKey, "stolen")
	})
	sent := func(code wire.Code) uint64 { return in.P.Gateway.Stats().DisconnectsSent[code] }
	revoked := sent(wire.CodeCredentialRevoked)
	if err := c.Do(context.Background(), http.MethodPost, "/v1/devices/leaving/logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, 10*time.Second, "3505 to the device that logged out", func() bool {
		return sent(wire.CodeCredentialRevoked) == revoked+1 && !in.P.Gateway.Online(c.AppKey, "leaving")
	})
	appID := appIDOf(t, in, c)
	if err := in.Admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps/"+appID+"/blacklist", nil,
		map[string]any{"kind": "device", "add": []string{"stolen"}}, nil); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, 10*time.Second, "3508 to the blacklisted device", func() bool {
		return sent(wire.CodeDeviceBlocked) == 1 && !in.P.Gateway.Online(c.AppKey, "stolen")
	})
	// By user (alias) and by group (tag): every device of theirs.
	register(t, c, "mallory-phone", "mallory")
	register(t, c, "shared-tablet", "")
	if err := c.Do(context.Background(), http.MethodPost, "/v1/devices/shared-tablet/tags", nil, map[string]any{"add": []string{"lost"}}, nil); err != nil {
		t.Fatal(err)
	}
	connect(t, c, "mallory-phone", t.TempDir())
	connect(t, c, "shared-tablet", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "online", func() bool {
		return in.P.Gateway.Online(c.AppKey, "mallory-phone") && in.P.Gateway.Online(c.AppKey, "shared-tablet")
	})
	for _, bl := range []map[string]any{{"kind": "user", "add": []string{"mallory"}}, {"kind": "group", "add": []string{"lost"}}} {
		if err := in.Admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps/"+appID+"/blacklist", nil, bl, nil); err != nil {
			t.Fatal(err)
		}
	}
	platformtest.Eventually(t, 10*time.Second, "3508 to the user's and the group's devices", func() bool {
		return sent(wire.CodeDeviceBlocked) == 3 && !in.P.Gateway.Online(c.AppKey, "mallory-phone") && !in.P.Gateway.Online(c.AppKey, "shared-tablet")
	})
}

// appIDOf finds the id of c's app.
func appIDOf(t *testing.T, in *platformtest.Instance, c *client.Client) string {
	t.Helper()
	var apps struct {
		Apps []api.AppView `json:"apps"`
	}
	if err := in.Admin.Do(context.Background(), http.MethodGet, "/admin/v1/apps", nil, nil, &apps); err != nil {
		t.Fatal(err)
	}
	for _, a := range apps.Apps {
		if a.AppKey == c.AppKey {
			return a.AppID
		}
	}
	t.Fatalf("no app with key %s", c.AppKey)
	return ""
}

// TestGatewayOfflineDeviceWaitsUntilExpiry: with the default policy the
// gateway is store-and-forward: when a push to an offline device is not
// acknowledged and nothing else can be tried, the message neither fails
// nor alerts; it waits for the device until it expires.
func TestGatewayOfflineDeviceWaitsUntilExpiry(t *testing.T) {
	pol := platformtest.FastPolicy()
	pol.MaxAttempts = 1
	gw := pol.Channels["gateway"]
	gw.AckWindow = 100 * time.Millisecond
	pol.Channels["gateway"] = gw
	if !gw.StoreAndForward {
		t.Fatal("the default gateway policy is not store-and-forward")
	}
	in := platformtest.StartWith(t, platform.Config{Policy: func() policy.Config { return pol }})
	c := gatewayApp(t, in)
	register(t, c, "away", "")
	waiting := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"away"}}, Notification: &message.Notification{Title: "waits"}, TTL: 3600})
	brief := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"away"}}, Notification: &message.Notification{Title: "brief"}, TTL: 1})
	// The brief one expires; by then the other's ack window ended long ago.
	platformtest.Eventually(t, 10*time.Second, "the brief push expired", func() bool { return status(t, c, brief).State == message.StateExpired })
	for _, id := range []string{waiting, brief} {
		for _, e := range history(t, c, id) {
			if e.Type == message.TypeFailed {
				t.Errorf("%s: %s %s, want no failure", id, e.Type, e.Data)
			}
		}
	}
	if s := status(t, c, waiting); s.State != message.StateSent {
		t.Fatalf("the waiting push is %s, want sent", s.State)
	}
	d := connect(t, c, "away", t.TempDir())
	platformtest.Eventually(t, 10*time.Second, "delivered on connect", func() bool {
		return d.has(waiting) && status(t, c, waiting).State == message.StateDelivered
	})
	if d.has(brief) {
		t.Error("the expired push reached the device")
	}
}

// TestGatewayRefusesCredentialsFromBeforeARegistration: a device that
// logged out and registered again cannot connect with a credential issued
// before (a copy of the old one), only with one issued since.
func TestGatewayRefusesCredentialsFromBeforeARegistration(t *testing.T) {
	var ahead atomic.Int64 // the platform's clock, ahead of the wall clock
	in := platformtest.StartWith(t, platform.Config{Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	c := gatewayApp(t, in)
	old := credentialThenLogout(t, c, "phoenix")
	ahead.Store(int64(2 * time.Second)) // the next registration is in a later second
	register(t, c, "phoenix", "")
	if code := refusal(t, c, "phoenix", old); code != wire.CodeCredentialRevoked {
		t.Fatalf("credential from before the registration refused with %d, want 3505", code)
	}
	d := connect(t, c, "phoenix", t.TempDir()) // a new credential
	id := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phoenix"}}, Notification: &message.Notification{Title: "back"}})
	platformtest.Eventually(t, 10*time.Second, "delivered with the new credential", func() bool { return d.has(id) })
}
