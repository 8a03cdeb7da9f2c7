package projections_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

// runApps runs an app directory until the end of the test.
func runApps(t *testing.T, e *env) *projections.Apps {
	t.Helper()
	d := projections.NewApps(e.led)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = d.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("Apps.Run: %v", err)
		}
	})
	return d
}

func (e *env) app(t *testing.T, id string, cmd app.Command) uint64 {
	t.Helper()
	_, res, err := e.h.App(context.Background(), id, cmd)
	if err != nil {
		t.Fatalf("app %s %T: %v", id, cmd, err)
	}
	return res.Position
}

func channel(name string, enabled bool, prio int) app.ConfigureChannel {
	return app.ConfigureChannel{Channel: name, Config: app.ChannelConfig{Enabled: enabled, Priority: prio, Settings: map[string]string{"k": name}}}
}

func TestAppsDirectory(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Events before the directory starts, and other streams in between.
	e.app(t, "a1", app.Create{AppID: "a1", Name: "Shop", AppKey: "key-1", SecretCiphertext: []byte("sealed-1")})
	e.device(t, "a1", "d1", register("a1", "d1", nil))
	e.app(t, "a1", channel("fcm", true, 2))
	e.accept(t, "a1", "m1")
	pos := e.app(t, "a1", channel("apns", true, 1))

	d := runApps(t, e)
	if err := d.WaitFor(ctx, pos); err != nil {
		t.Fatal(err)
	}
	a, ok := d.ByKey("key-1")
	if !ok || a.ID != "a1" || a.Name != "Shop" || string(a.SecretCiphertext) != "sealed-1" {
		t.Fatalf("ByKey = %+v, %v", a, ok)
	}
	if b, ok := d.ByID("a1"); !ok || b != a {
		t.Fatalf("ByID = %+v, %v", b, ok)
	}
	if got := a.ChannelOrder(); !slices.Equal(got, []string{"apns", "fcm"}) {
		t.Fatalf("ChannelOrder = %v", got)
	}
	if _, ok := d.ByKey("nope"); ok {
		t.Fatal("ByKey found an unknown key")
	}
	if _, ok := d.ByID("nope"); ok {
		t.Fatal("ByID found an unknown app")
	}

	// Live changes: ties broken by name, disabled channels left out,
	// removed channels gone.
	snapshot := a
	e.app(t, "a1", channel("hms", true, 1))
	e.app(t, "a1", channel("xiaomi", false, 0))
	e.app(t, "a1", channel("webhook", true, 0))
	e.app(t, "a1", channel("fcm", true, 1))
	e.app(t, "a1", app.RemoveChannel{Channel: "webhook"})
	e.app(t, "a2", app.Create{AppID: "a2", Name: "Other", AppKey: "key-2", SecretCiphertext: []byte("sealed-2")})
	e.app(t, "a2", channel("webhook", true, 5))
	pos = e.app(t, "a1", app.AddToBlacklist{Kind: app.KindUser, Values: []string{"mallory"}})
	if err := d.WaitFor(ctx, pos); err != nil {
		t.Fatal(err)
	}
	a, _ = d.ByKey("key-1")
	if got := a.ChannelOrder(); !slices.Equal(got, []string{"apns", "fcm", "hms"}) {
		t.Fatalf("ChannelOrder = %v", got)
	}
	if !a.Blacklisted(app.KindUser, "mallory") || a.Blacklisted(app.KindUser, "alice") {
		t.Fatal("blacklist not folded")
	}
	if got := a.Channels["hms"].Settings["k"]; got != "hms" {
		t.Fatalf("hms settings %v", a.Channels["hms"].Settings)
	}
	// What a reader held is not changed under it.
	if got := snapshot.ChannelOrder(); !slices.Equal(got, []string{"apns", "fcm"}) || snapshot.Blacklisted(app.KindUser, "mallory") {
		t.Fatalf("an earlier snapshot changed: %v", got)
	}
	if b, ok := d.ByKey("key-2"); !ok || b.ID != "a2" || !slices.Equal(b.ChannelOrder(), []string{"webhook"}) {
		t.Fatalf("a2 = %+v, %v", b, ok)
	}
	if n := len(d.List()); n != 2 {
		t.Fatalf("List has %d apps", n)
	}
	// The directory is what the commands fold.
	loaded, _, err := e.h.LoadApp(context.Background(), "a1")
	if err != nil || loaded.Version != a.Version || !slices.Equal(loaded.ChannelOrder(), a.ChannelOrder()) {
		t.Fatalf("LoadApp %+v, directory %+v, %v", loaded, a, err)
	}

	// The directory is a blacklist for Resolve.
	e.device(t, "a1", "d1", device.BindAlias{Alias: "mallory"})
	e.device(t, "a1", "d2", register("a1", "d2", nil))
	catchUp(t, e.runner(t, projections.Devices{}, e.kv))
	ids, n, err := projections.Registry{Store: e.kv}.Resolve("a1", message.Audience{DeviceIDs: []string{"d1", "d2"}}, a)
	if err != nil || n != 1 || !slices.Equal(ids, []string{"d2"}) {
		t.Fatalf("Resolve with the directory's blacklist = %v, %d, %v", ids, n, err)
	}

	// A reached position returns at once; an unreached one waits for ctx.
	if err := d.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.WaitFor(cctx, e.last(t)+100); err == nil {
		t.Fatal("WaitFor an unreached position returned nil")
	}
}
