package projections_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

type devKey struct{ app, id string }
type tokKey struct{ channel, token string }

// registryModel is what the registry must answer, derived from the ledger
// by folding every device stream with the domain model.
type registryModel struct {
	devices map[devKey]*device.Device
	// Every alias, tag and token any event names.
	aliases, tags map[string]bool
	tokens        map[tokKey]bool
	// tokenSet is the position at which each device last registered a
	// token (by registration or profile update).
	tokenSet map[tokKey]map[devKey]uint64
}

func buildModel(t *testing.T, e *env) registryModel {
	t.Helper()
	evs, err := e.led.ReadAll(context.Background(), 0, ledger.Forwards, 0, projections.Devices{}.Filter())
	if err != nil {
		t.Fatal(err)
	}
	m := registryModel{devices: map[devKey]*device.Device{}, aliases: map[string]bool{}, tags: map[string]bool{},
		tokens: map[tokKey]bool{}, tokenSet: map[tokKey]map[devKey]uint64{}}
	for _, re := range evs {
		appID, id, _ := strings.Cut(strings.TrimPrefix(re.Stream, device.StreamPrefix), "-")
		k := devKey{appID, id}
		ev, err := device.Decode(re.Type, re.Data)
		if err != nil {
			t.Fatal(err)
		}
		d := m.devices[k]
		if d == nil {
			d = &device.Device{}
			m.devices[k] = d
		}
		if err := d.Evolve(ev); err != nil {
			t.Fatal(err)
		}
		var prof *device.Profile
		switch ev := ev.(type) {
		case device.Registered:
			prof = &ev.Profile
		case device.Updated:
			prof = &ev.Profile
		case device.AliasBound:
			m.aliases[ev.Alias] = true
		case device.TagsAdded:
			for _, tag := range ev.Tags {
				m.tags[tag] = true
			}
		}
		if prof != nil {
			for ch, tok := range prof.Tokens {
				tk := tokKey{ch, tok}
				m.tokens[tk] = true
				if m.tokenSet[tk] == nil {
					m.tokenSet[tk] = map[devKey]uint64{}
				}
				m.tokenSet[tk][k] = re.Position
			}
		}
	}
	return m
}

func collect(t *testing.T, scan func(fn func(id string) bool) error) []string {
	t.Helper()
	var ids []string
	if err := scan(func(id string) bool { ids = append(ids, id); return true }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// checkRegistry compares every answer of the registry with the model:
// device views, alias, tag and token indexes, active counts.
func checkRegistry(t *testing.T, e *env, reg projections.Registry) {
	t.Helper()
	m := buildModel(t, e)
	active := map[string]uint64{}
	apps := map[string]bool{}
	for k, d := range m.devices {
		apps[k.app] = true
		v, err := reg.Device(k.app, k.id)
		if err != nil {
			t.Fatalf("Device(%s, %s): %v", k.app, k.id, err)
		}
		if v.AppID != k.app || v.DeviceID != k.id || v.Active != d.Active || v.Alias != d.Alias ||
			!slices.Equal(v.Tags, d.TagList()) || !maps.Equal(v.Profile.Tokens, d.Profile.Tokens) ||
			v.Profile.Platform != d.Profile.Platform || !v.UpdatedAt.Equal(d.UpdatedAt) || !v.RegisteredAt.Equal(d.RegisteredAt) ||
			v.Revision != uint64(d.Version-1) {
			t.Fatalf("Device(%s, %s) = %+v\nthe ledger says %+v", k.app, k.id, v, d)
		}
		if d.Active {
			active[k.app]++
		}
	}
	for appID := range apps {
		if n, err := reg.ActiveCount(appID); err != nil || n != active[appID] {
			t.Fatalf("ActiveCount(%s) = %d, %v; want %d", appID, n, err, active[appID])
		}
		index := func(name string, universe map[string]bool, has func(d *device.Device, v string) bool,
			scan func(appID, v string, fn func(string) bool) error) {
			for v := range universe {
				var want []string
				for k, d := range m.devices {
					if k.app == appID && d.Active && has(d, v) {
						want = append(want, k.id)
					}
				}
				slices.Sort(want)
				got := collect(t, func(fn func(string) bool) error { return scan(appID, v, fn) })
				if !slices.Equal(got, want) {
					t.Fatalf("%s(%s, %s) = %v, want %v", name, appID, v, got, want)
				}
			}
		}
		index("ByAlias", m.aliases, func(d *device.Device, a string) bool { return d.Alias == a }, reg.ByAlias)
		index("ByTag", m.tags, func(d *device.Device, tag string) bool { _, ok := d.Tags[tag]; return ok }, reg.ByTag)
		checkActive(t, m, reg, appID)
	}
	for tk := range m.tokens {
		// The active device that registered the token last holds it.
		var want devKey
		var at uint64
		for k, p := range m.tokenSet[tk] {
			if d := m.devices[k]; d.Active && d.Profile.Tokens[tk.channel] == tk.token && p > at {
				want, at = k, p
			}
		}
		gotApp, gotID, err := reg.ByToken(tk.channel, tk.token)
		if at == 0 {
			if !errors.Is(err, projections.ErrNotFound) {
				t.Fatalf("ByToken(%s, %s) = %s/%s, %v; want ErrNotFound", tk.channel, tk.token, gotApp, gotID, err)
			}
			continue
		}
		if err != nil || (devKey{gotApp, gotID}) != want {
			t.Fatalf("ByToken(%s, %s) = %s/%s, %v; want %v", tk.channel, tk.token, gotApp, gotID, err, want)
		}
	}
}

// checkActive checks Registry.Active (what broadcasts go to) against the
// model: every active device of appID, with its alias and tags.
func checkActive(t *testing.T, m registryModel, reg projections.Registry, appID string) {
	t.Helper()
	var want, got []string
	for k, d := range m.devices {
		if k.app == appID && d.Active {
			want = append(want, fmt.Sprintf("%s|%s|%v", k.id, d.Alias, d.TagList()))
		}
	}
	if err := reg.Active(appID, func(b projections.DeviceBrief) bool {
		if !b.Active {
			t.Errorf("Active(%s) gave %s, not active", appID, b.DeviceID)
		}
		got = append(got, fmt.Sprintf("%s|%s|%v", b.DeviceID, b.Alias, b.Tags))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Active(%s) = %v\nwant %v", appID, got, want)
	}
}

// TestDeviceBriefsBuiltForOldStores: a store whose registry was written
// without the brief index (an earlier release) answers Active from the
// device views until EnsureDeviceBriefs has built the index, and the same
// from the index after.
func TestDeviceBriefsBuiltForOldStores(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, projections.Devices{}, e.kv)
	reg := projections.Registry{Store: e.kv}
	e.device(t, "app1", "d1", register("app1", "d1", nil))
	e.device(t, "app1", "d2", register("app1", "d2", nil))
	e.device(t, "app1", "d3", register("app1", "d3", nil))
	e.device(t, "app2", "d1", register("app2", "d1", nil))
	e.device(t, "app1", "d1", device.BindAlias{Alias: "alice"})
	e.device(t, "app1", "d2", device.AddTags{Tags: []string{"vip", "beta"}})
	e.device(t, "app1", "d3", device.Logout{})
	catchUp(t, r)
	// What an earlier release left: no index, no mark.
	if err := e.kv.DeletePrefix([]byte("dv\x00b\x00")); err != nil {
		t.Fatal(err)
	}
	if err := e.kv.DeletePrefix([]byte("meta\x00")); err != nil {
		t.Fatal(err)
	}
	m := buildModel(t, e)
	for _, appID := range []string{"app1", "app2"} {
		checkActive(t, m, reg, appID) // from the views
	}
	if err := projections.EnsureDeviceBriefs(e.kv); err != nil {
		t.Fatal(err)
	}
	if n := len(dump(t, e.kv, []byte("dv\x00b\x00"))); n != 3 {
		t.Fatalf("%d briefs built, want 3 (the active devices)", n)
	}
	for _, appID := range []string{"app1", "app2"} {
		checkActive(t, m, reg, appID) // from the index
	}
	// The index follows later changes.
	e.device(t, "app1", "d2", device.RemoveTags{Tags: []string{"beta"}})
	e.device(t, "app1", "d1", device.Logout{})
	catchUp(t, r)
	checkActive(t, buildModel(t, e), reg, "app1")
}

// TestDeviceRegistry walks devices through their lifecycle and checks
// every index of the registry after each step.
func TestDeviceRegistry(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, projections.Devices{}, e.kv)
	reg := projections.Registry{Store: e.kv}
	if err := projections.EnsureDeviceBriefs(e.kv); err != nil { // Active reads the brief index
		t.Fatal(err)
	}
	step := func(name string, f func()) {
		t.Helper()
		f()
		catchUp(t, r)
		checkRegistry(t, e, reg)
		if t.Failed() {
			t.Fatalf("after step %q", name)
		}
	}
	ids := func(scan func(string, string, func(string) bool) error, appID, v string) []string {
		t.Helper()
		return collect(t, func(fn func(string) bool) error { return scan(appID, v, fn) })
	}
	count := func(appID string) uint64 {
		t.Helper()
		n, err := reg.ActiveCount(appID)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	token := func(ch, tok string) string {
		t.Helper()
		a, id, err := reg.ByToken(ch, tok)
		if errors.Is(err, projections.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return a + "/" + id
	}

	if _, err := reg.Device("app1", "d1"); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("Device before registration: %v", err)
	}
	if n := count("app1"); n != 0 {
		t.Fatalf("ActiveCount of an empty registry = %d", n)
	}

	step("register", func() {
		e.device(t, "app1", "d1", register("app1", "d1", map[string]string{"apns": "t1", "fcm": "f1"}))
		e.device(t, "app1", "d2", register("app1", "d2", map[string]string{"apns": "t2"}))
		e.device(t, "app1", "d3", register("app1", "d3", nil))
		e.device(t, "app2", "d1", register("app2", "d1", map[string]string{"apns": "x1"}))
	})
	if count("app1") != 3 || count("app2") != 1 || token("apns", "t1") != "app1/d1" || token("fcm", "f1") != "app1/d1" || token("apns", "x1") != "app2/d1" {
		t.Fatal("after registration: wrong counts or tokens")
	}

	step("bind aliases", func() {
		e.device(t, "app1", "d1", device.BindAlias{Alias: "alice"})
		e.device(t, "app1", "d2", device.BindAlias{Alias: "alice"})
		e.device(t, "app1", "d3", device.BindAlias{Alias: "bob"})
		e.device(t, "app2", "d1", device.BindAlias{Alias: "alice"})
		e.device(t, "app1", "d3", device.BindAlias{Alias: "alicea"})
	})
	if got := ids(reg.ByAlias, "app1", "alice"); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Fatalf("ByAlias alice = %v", got)
	}
	if got := ids(reg.ByAlias, "app1", "bob"); len(got) != 0 {
		t.Fatalf("ByAlias bob after rebinding = %v", got)
	}

	step("rebind and unbind", func() {
		e.device(t, "app1", "d2", device.BindAlias{Alias: "carol"})
		e.device(t, "app1", "d1", device.UnbindAlias{})
	})
	if got := ids(reg.ByAlias, "app1", "alice"); len(got) != 0 {
		t.Fatalf("ByAlias alice after unbinding = %v", got)
	}
	if got := ids(reg.ByAlias, "app2", "alice"); !slices.Equal(got, []string{"d1"}) {
		t.Fatalf("app2's alias moved with app1's: %v", got)
	}

	step("tags", func() {
		e.device(t, "app1", "d1", device.AddTags{Tags: []string{"vip", "beta"}})
		e.device(t, "app1", "d2", device.AddTags{Tags: []string{"vip"}})
		e.device(t, "app1", "d3", device.AddTags{Tags: []string{"beta", "vipx"}})
		e.device(t, "app1", "d1", device.RemoveTags{Tags: []string{"beta"}})
	})
	if got := ids(reg.ByTag, "app1", "vip"); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Fatalf("ByTag vip = %v", got)
	}
	if got := ids(reg.ByTag, "app1", "beta"); !slices.Equal(got, []string{"d3"}) {
		t.Fatalf("ByTag beta = %v", got)
	}

	step("new token", func() {
		e.device(t, "app1", "d1", register("app1", "d1", map[string]string{"apns": "t1b", "fcm": "f1"}))
	})
	if token("apns", "t1") != "" || token("apns", "t1b") != "app1/d1" || token("fcm", "f1") != "app1/d1" {
		t.Fatal("profile update did not move the token index")
	}

	step("invalidate token", func() {
		e.device(t, "app1", "d2", device.InvalidateToken{Channel: "apns", Token: "t2", Reason: "Unregistered"})
	})
	if v, _ := reg.Device("app1", "d2"); token("apns", "t2") != "" || !v.Active || len(v.Profile.Tokens) != 0 || count("app1") != 3 {
		t.Fatalf("after invalidation: %+v", v)
	}

	step("logout", func() {
		e.device(t, "app1", "d3", device.Logout{})
		e.device(t, "app1", "d1", device.Logout{})
	})
	v, err := reg.Device("app1", "d3")
	if err != nil || v.Active || v.Alias != "" || !slices.Equal(v.Tags, []string{"beta", "vipx"}) {
		t.Fatalf("logged-out device view %+v, %v", v, err)
	}
	if count("app1") != 1 || len(ids(reg.ByTag, "app1", "beta")) != 0 || len(ids(reg.ByAlias, "app1", "alicea")) != 0 ||
		!slices.Equal(ids(reg.ByTag, "app1", "vip"), []string{"d2"}) || token("apns", "t1b") != "" || token("fcm", "f1") != "" {
		t.Fatal("logged-out devices are still indexed")
	}
	var active []projections.DeviceBrief
	if err := reg.Active("app1", func(v projections.DeviceBrief) bool { active = append(active, v); return true }); err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].DeviceID != "d2" || active[0].Alias != "carol" || !slices.Equal(active[0].Tags, []string{"vip"}) || !active[0].Active {
		t.Fatalf("Active = %+v, want only d2 (carol, vip)", active)
	}

	step("invalidate a logged-out device's token", func() {
		e.device(t, "app1", "d1", device.InvalidateToken{Channel: "fcm", Token: "f1"})
	})
	if count("app1") != 1 {
		t.Fatalf("ActiveCount %d", count("app1"))
	}

	step("register again", func() {
		e.device(t, "app1", "d3", register("app1", "d3", map[string]string{"apns": "t3"}))
	})
	if count("app1") != 2 || !slices.Equal(ids(reg.ByTag, "app1", "beta"), []string{"d3"}) || token("apns", "t3") != "app1/d3" {
		t.Fatal("re-registration did not restore the device's entries")
	}
	if v, _ := reg.Device("app1", "d3"); v.Alias != "" || !v.Active {
		t.Fatalf("re-registered device %+v", v)
	}

	step("logout everything", func() {
		e.device(t, "app1", "d2", device.Logout{})
		e.device(t, "app1", "d3", device.Logout{})
		e.device(t, "app2", "d1", device.Logout{})
	})
	if count("app1") != 0 || count("app2") != 0 {
		t.Fatal("counts not back to 0")
	}
}

// TestTokenMovesBetweenDevices: a vendor token registered by a second
// device belongs to it; the first device giving the token up (logout,
// update, invalidation) must not take it from the second.
func TestTokenMovesBetweenDevices(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, projections.Devices{}, e.kv)
	reg := projections.Registry{Store: e.kv}
	owner := func(t *testing.T) string {
		t.Helper()
		catchUp(t, r)
		checkRegistry(t, e, reg)
		a, id, err := reg.ByToken("apns", "shared")
		if errors.Is(err, projections.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return a + "/" + id
	}
	for _, c := range []struct {
		name    string
		release device.Command
	}{
		{"logout", device.Logout{}},
		{"update", register("app1", "old", map[string]string{"apns": "other"})},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.device(t, "app1", "old", register("app1", "old", map[string]string{"apns": "shared"}))
			if got := owner(t); got != "app1/old" {
				t.Fatalf("owner %q", got)
			}
			e.device(t, "app1", "new", register("app1", "new", map[string]string{"apns": "shared"}))
			if got := owner(t); got != "app1/new" {
				t.Fatalf("owner after the second registration %q", got)
			}
			e.device(t, "app1", "old", c.release)
			if got := owner(t); got != "app1/new" {
				t.Fatalf("owner after the first device let go: %q", got)
			}
			e.device(t, "app1", "new", device.InvalidateToken{Channel: "apns", Token: "shared"})
			if got := owner(t); got != "" {
				t.Fatalf("owner after invalidation: %q", got)
			}
			// Reset for the next case.
			e.device(t, "app1", "new", device.Logout{})
			if d, _, _ := e.h.LoadDevice(context.Background(), "app1", "old"); d.Active {
				e.device(t, "app1", "old", device.Logout{})
			}
		})
	}
}

// blacklist folds an app with the given blacklist through the commands.
func blacklist(t *testing.T, e *env, appID string, entries map[string][]string) *app.App {
	t.Helper()
	ctx := context.Background()
	if _, _, err := e.h.App(ctx, appID, app.Create{AppID: appID, Name: appID, AppKey: "key-" + appID, SecretCiphertext: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	for kind, values := range entries {
		if _, _, err := e.h.App(ctx, appID, app.AddToBlacklist{Kind: kind, Values: values}); err != nil {
			t.Fatal(err)
		}
	}
	a, ok, err := e.h.LoadApp(ctx, appID)
	if err != nil || !ok {
		t.Fatalf("LoadApp: %v %v", ok, err)
	}
	return &a
}

func TestResolve(t *testing.T) {
	e := newEnv(t)
	dev := func(id, alias string, tags ...string) {
		e.device(t, "app1", id, register("app1", id, map[string]string{"fcm": "f-" + id}))
		if alias != "" {
			e.device(t, "app1", id, device.BindAlias{Alias: alias})
		}
		if len(tags) > 0 {
			e.device(t, "app1", id, device.AddTags{Tags: tags})
		}
	}
	dev("d1", "alice", "vip", "beta", "ios")
	dev("d2", "alice", "vip")
	dev("d3", "bob", "beta")
	dev("d4", "carol", "vip", "beta")
	dev("d5", "", "android")
	dev("d6", "dave")
	e.device(t, "app1", "d4", device.Logout{})
	// Another app with the same alias and tags.
	e.device(t, "app2", "d1", register("app2", "d1", nil))
	e.device(t, "app2", "d7", register("app2", "d7", nil))
	e.device(t, "app2", "d7", device.BindAlias{Alias: "alice"})
	e.device(t, "app2", "d7", device.AddTags{Tags: []string{"vip", "beta"}})
	catchUp(t, e.runner(t, projections.Devices{}, e.kv))
	reg := projections.Registry{Store: e.kv}

	blDevice := blacklist(t, e, "bldevice", map[string][]string{app.KindDevice: {"d1"}})
	blUser := blacklist(t, e, "bluser", map[string][]string{app.KindUser: {"alice"}})
	blGroup := blacklist(t, e, "blgroup", map[string][]string{app.KindGroup: {"beta"}})
	blVip := blacklist(t, e, "blvip", map[string][]string{app.KindGroup: {"vip"}, app.KindDevice: {"d404"}})
	blNone := blacklist(t, e, "blnone", nil)

	tags := func(all, any, none []string) message.Audience {
		return message.Audience{Tags: &message.TagExpr{AllOf: all, AnyOf: any, NoneOf: none}}
	}
	ids := func(v ...string) message.Audience { return message.Audience{DeviceIDs: v} }
	aliases := func(v ...string) message.Audience { return message.Audience{Aliases: v} }
	s := func(v ...string) []string { return v }
	cases := []struct {
		name string
		aud  message.Audience
		bl   projections.Blacklist
		want []string
	}{
		{"ids", ids("d1", "d3", "d404", "d4", "d1"), nil, s("d1", "d3")},
		{"ids unknown only", ids("d404"), nil, nil},
		{"ids logged out only", ids("d4"), nil, nil},
		{"ids of another app", ids("d7"), nil, nil},
		{"alias", aliases("alice"), nil, s("d1", "d2")},
		{"aliases", aliases("alice", "bob", "alice"), nil, s("d1", "d2", "d3")},
		{"alias of a logged-out device", aliases("carol"), nil, nil},
		{"alias prefix", aliases("ali"), nil, nil},
		{"all_of one", tags(s("vip"), nil, nil), nil, s("d1", "d2")},
		{"all_of two", tags(s("vip", "beta"), nil, nil), nil, s("d1")},
		{"all_of two, other order", tags(s("beta", "vip"), nil, nil), nil, s("d1")},
		{"all_of unknown", tags(s("vip", "nope"), nil, nil), nil, nil},
		{"any_of", tags(nil, s("beta", "android"), nil), nil, s("d1", "d3", "d5")},
		{"any_of unknown", tags(nil, s("nope"), nil), nil, nil},
		{"all_of none_of", tags(s("vip"), nil, s("beta")), nil, s("d2")},
		{"any_of none_of", tags(nil, s("vip", "beta"), s("ios")), nil, s("d2", "d3")},
		{"all_of any_of", tags(s("vip"), s("ios", "android"), nil), nil, s("d1")},
		{"all_of any_of none_of", tags(s("vip"), s("ios", "beta"), s("android")), nil, s("d1")},
		{"contradiction", tags(s("vip"), nil, s("vip")), nil, nil},
		{"tag prefix", tags(s("vi"), nil, nil), nil, nil},
		{"empty blacklist", aliases("alice"), blNone, s("d1", "d2")},
		{"blacklisted device by id", ids("d1", "d2"), blDevice, s("d2")},
		{"blacklisted device by tag", tags(s("vip"), nil, nil), blDevice, s("d2")},
		{"blacklisted device by alias", aliases("alice"), blDevice, s("d2")},
		{"blacklisted user by alias", aliases("alice", "bob"), blUser, s("d3")},
		{"blacklisted user by id", ids("d1", "d2", "d6", "d5"), blUser, s("d5", "d6")},
		{"blacklisted user by tag", tags(nil, s("vip", "beta"), nil), blUser, s("d3")},
		{"blacklisted group by tag", tags(nil, s("vip", "android"), nil), blGroup, s("d2", "d5")},
		{"blacklisted group by id", ids("d1", "d3", "d5"), blGroup, s("d5")},
		{"blacklisted group by alias", aliases("alice", "bob", "dave"), blGroup, s("d2", "d6")},
		{"blacklisted group is the audience", tags(s("vip"), nil, nil), blVip, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, n, err := reg.Resolve("app1", c.aud, c.bl)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) || n != len(c.want) {
				t.Fatalf("Resolve = %v (n %d), want %v", got, n, c.want)
			}
		})
	}
	// Broadcasts are counted, not listed: the app's active devices, less
	// the active ones the blacklist excludes (each once; logged-out and
	// unknown ones are not counted).
	for _, c := range []struct {
		name string
		bl   projections.Blacklist
		want int
	}{{"none", nil, 5}, {"empty", blNone, 5}, {"d1", blDevice, 4}, {"alice", blUser, 3}, {"beta", blGroup, 3}, {"vip and d404", blVip, 3}} {
		got, n, err := reg.Resolve("app1", message.Audience{Broadcast: true}, c.bl)
		if err != nil || got != nil || n != c.want {
			t.Fatalf("broadcast, blacklist %s = %v, %d, %v; want nil, %d", c.name, got, n, err, c.want)
		}
	}
	if got, n, err := reg.Resolve("app404", message.Audience{Broadcast: true}, nil); err != nil || got != nil || n != 0 {
		t.Fatalf("broadcast to an app without devices = %v, %d, %v", got, n, err)
	}
	// Ids are listed in audience order, each once.
	if got, _, _ := reg.Resolve("app1", ids("d3", "d1", "d3"), nil); !slices.Equal(got, []string{"d3", "d1"}) {
		t.Fatalf("Resolve order = %v", got)
	}
}
