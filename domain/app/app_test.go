package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/app"
)

var (
	t0  = time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
)

func create() app.Create {
	return app.Create{AppID: "a1", Name: "Shop", AppKey: "key-1", SecretCiphertext: []byte{1, 2, 3}}
}

func createdEv() app.Created {
	return app.Created{AppID: "a1", Name: "Shop", AppKey: "key-1", SecretCiphertext: []byte{1, 2, 3}, At: t0}
}

var (
	apnsCfg     = app.ChannelConfig{Enabled: true, Priority: 1, Settings: map[string]string{"team_id": "T1"}}
	apnsEv      = app.ChannelConfigured{Channel: "apns", Config: apnsCfg, At: t0.Add(time.Minute)}
	blacklisted = app.BlacklistAdded{Kind: app.KindUser, Values: []string{"u1", "u2"}, At: t0.Add(time.Minute)}
)

func history(state string) []app.Event {
	switch state {
	case "new":
		return nil
	case "created":
		return []app.Event{createdEv()}
	case "configured":
		return []app.Event{createdEv(), apnsEv}
	case "blacklisted":
		return []app.Event{createdEv(), blacklisted}
	}
	panic("unknown state " + state)
}

func with[T any](v T, f func(*T)) T {
	f(&v)
	return v
}

type decideCase struct {
	name  string
	given []app.Event
	when  app.Command
	then  []app.Event // nil: no events
	err   error
	// transition is the *app.TransitionError wanted when err is
	// app.ErrInvalidTransition.
	transition *app.TransitionError
}

func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := app.Replay(tc.given)
			if err != nil {
				t.Fatalf("given: %v", err)
			}
			before := cloneApp(a)
			got, err := app.Decide(&a, tc.when, now)
			if !reflect.DeepEqual(a, before) {
				t.Fatal("Decide changed the state")
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got != nil {
					t.Fatalf("got %v, %v; want error %v", got, err, tc.err)
				}
				if errors.Is(tc.err, app.ErrInvalidTransition) {
					var te *app.TransitionError
					if !errors.As(err, &te) {
						t.Fatalf("err %T is not a *TransitionError", err)
					}
					if tc.transition == nil || *te != *tc.transition {
						t.Fatalf("TransitionError %+v, want %+v", te, tc.transition)
					}
					if !strings.HasPrefix(err.Error(), "app: ") {
						t.Fatalf("message %q", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if (len(got) != 0 || len(tc.then) != 0) && !reflect.DeepEqual(got, tc.then) {
				t.Fatalf("events:\n got %#v\nwant %#v", got, tc.then)
			}
			for _, e := range got {
				if err := a.Evolve(e); err != nil {
					t.Fatalf("Evolve of decided %T: %v", e, err)
				}
			}
		})
	}
}

func cloneApp(a app.App) app.App {
	c := a
	c.SecretCiphertext = bytes.Clone(a.SecretCiphertext)
	if a.Channels != nil {
		c.Channels = make(map[string]app.ChannelConfig, len(a.Channels))
		for n, cfg := range a.Channels {
			cfg.Settings = maps.Clone(cfg.Settings)
			c.Channels[n] = cfg
		}
	}
	if a.Blacklist != nil {
		c.Blacklist = make(map[string]map[string]struct{}, len(a.Blacklist))
		for k, set := range a.Blacklist {
			c.Blacklist[k] = maps.Clone(set)
		}
	}
	return c
}

func TestDecideCreate(t *testing.T) {
	cases := []decideCase{
		{name: "new", when: create(), then: []app.Event{with(createdEv(), func(e *app.Created) { e.At = now })}},
		{name: "new: name is trimmed", when: with(create(), func(c *app.Create) { c.Name = "  Shop\t" }),
			then: []app.Event{with(createdEv(), func(e *app.Created) { e.At = now })}},
		{name: "new: longest name", when: with(create(), func(c *app.Create) { c.Name = strings.Repeat("n", 200) }),
			then: []app.Event{with(createdEv(), func(e *app.Created) { e.Name, e.At = strings.Repeat("n", 200), now })}},
		{name: "created: again", given: history("created"), when: create(), err: app.ErrInvalidTransition,
			transition: &app.TransitionError{Event: "create", Exists: true, AppID: "a1"}},
		{name: "created: again, invalid", given: history("created"), when: app.Create{}, err: app.ErrInvalidTransition,
			transition: &app.TransitionError{Event: "create", Exists: true, AppID: "a1"}},
	}
	for name, f := range map[string]func(*app.Create){
		"no id":          func(c *app.Create) { c.AppID = "" },
		"no key":         func(c *app.Create) { c.AppKey = "" },
		"no secret":      func(c *app.Create) { c.SecretCiphertext = nil },
		"empty secret":   func(c *app.Create) { c.SecretCiphertext = []byte{} },
		"no name":        func(c *app.Create) { c.Name = "" },
		"blank name":     func(c *app.Create) { c.Name = " \t " },
		"name not UTF-8": func(c *app.Create) { c.Name = "Sh\xffop" },
		"name too long":  func(c *app.Create) { c.Name = strings.Repeat("n", 201) },
	} {
		cases = append(cases, decideCase{name: "new: " + name, when: with(create(), f), err: app.ErrInvalid})
	}
	runDecide(t, cases)
}

func TestDecideChannels(t *testing.T) {
	configured := func(ch string, cfg app.ChannelConfig) []app.Event {
		return []app.Event{app.ChannelConfigured{Channel: ch, Config: cfg, At: now}}
	}
	long := strings.Repeat("c", 64)
	runDecide(t, []decideCase{
		{name: "configure: new", when: app.ConfigureChannel{Channel: "apns", Config: apnsCfg}, err: app.ErrNotFound},
		{name: "configure: created", given: history("created"), when: app.ConfigureChannel{Channel: "apns", Config: apnsCfg}, then: configured("apns", apnsCfg)},
		{name: "configure: no settings", given: history("created"), when: app.ConfigureChannel{Channel: "fcm", Config: app.ChannelConfig{Settings: map[string]string{}}},
			then: configured("fcm", app.ChannelConfig{})},
		{name: "configure: longest name", given: history("created"), when: app.ConfigureChannel{Channel: long}, then: configured(long, app.ChannelConfig{})},
		{name: "configure: setting not UTF-8", given: history("created"), when: app.ConfigureChannel{Channel: "fcm", Config: app.ChannelConfig{Settings: map[string]string{"k": "\xff"}}}, err: app.ErrInvalid},
		{name: "configure: no name", given: history("created"), when: app.ConfigureChannel{Config: apnsCfg}, err: app.ErrInvalid},
		{name: "configure: name too long", given: history("created"), when: app.ConfigureChannel{Channel: long + "c"}, err: app.ErrInvalid},
		{name: "configure: same is a no-op", given: history("configured"), when: app.ConfigureChannel{Channel: "apns", Config: apnsCfg}},
		{name: "configure: same in another map is a no-op", given: history("configured"),
			when: app.ConfigureChannel{Channel: "apns", Config: with(apnsCfg, func(c *app.ChannelConfig) { c.Settings = maps.Clone(c.Settings) })}},
		{name: "configure: disable", given: history("configured"), when: app.ConfigureChannel{Channel: "apns", Config: with(apnsCfg, func(c *app.ChannelConfig) { c.Enabled = false })},
			then: configured("apns", with(apnsCfg, func(c *app.ChannelConfig) { c.Enabled = false }))},
		{name: "configure: priority", given: history("configured"), when: app.ConfigureChannel{Channel: "apns", Config: with(apnsCfg, func(c *app.ChannelConfig) { c.Priority = 0 })},
			then: configured("apns", with(apnsCfg, func(c *app.ChannelConfig) { c.Priority = 0 }))},
		{name: "configure: settings", given: history("configured"), when: app.ConfigureChannel{Channel: "apns", Config: app.ChannelConfig{Enabled: true, Priority: 1}},
			then: configured("apns", app.ChannelConfig{Enabled: true, Priority: 1})},
		{name: "remove: new", when: app.RemoveChannel{Channel: "apns"}, err: app.ErrNotFound},
		{name: "remove: absent is a no-op", given: history("configured"), when: app.RemoveChannel{Channel: "fcm"}},
		{name: "remove: empty name is a no-op", given: history("configured"), when: app.RemoveChannel{}},
		{name: "remove: present", given: history("configured"), when: app.RemoveChannel{Channel: "apns"},
			then: []app.Event{app.ChannelRemoved{Channel: "apns", At: now}}},
		{name: "remove: removed is a no-op", given: append(history("configured"), app.ChannelRemoved{Channel: "apns", At: now}), when: app.RemoveChannel{Channel: "apns"}},
	})
}

// The event does not share the command's settings.
func TestConfigureCopiesSettings(t *testing.T) {
	a, _ := app.Replay(history("created"))
	c := app.ConfigureChannel{Channel: "apns", Config: app.ChannelConfig{Settings: map[string]string{"k": "v"}}}
	evs, err := app.Decide(&a, c, now)
	if err != nil {
		t.Fatal(err)
	}
	c.Config.Settings["k"] = "changed"
	if got := evs[0].(app.ChannelConfigured).Config.Settings["k"]; got != "v" {
		t.Fatalf("event setting = %q", got)
	}
}

func TestDecideBlacklist(t *testing.T) {
	values := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = strings.Repeat("v", 1+i/26) + string(rune('a'+i%26))
		}
		return out
	}
	long := strings.Repeat("v", 128)
	cases := []decideCase{
		{name: "add: new", when: app.AddToBlacklist{Kind: app.KindUser, Values: []string{"u1"}}, err: app.ErrNotFound},
		{name: "add: sorted and deduplicated", given: history("created"), when: app.AddToBlacklist{Kind: app.KindDevice, Values: []string{"d2", "d1", "d2"}},
			then: []app.Event{app.BlacklistAdded{Kind: app.KindDevice, Values: []string{"d1", "d2"}, At: now}}},
		{name: "add: only new ones", given: history("blacklisted"), when: app.AddToBlacklist{Kind: app.KindUser, Values: []string{"u3", "u1"}},
			then: []app.Event{app.BlacklistAdded{Kind: app.KindUser, Values: []string{"u3"}, At: now}}},
		{name: "add: present is a no-op", given: history("blacklisted"), when: app.AddToBlacklist{Kind: app.KindUser, Values: []string{"u2", "u1"}}},
		{name: "add: same value, other kind", given: history("blacklisted"), when: app.AddToBlacklist{Kind: app.KindGroup, Values: []string{"u1"}},
			then: []app.Event{app.BlacklistAdded{Kind: app.KindGroup, Values: []string{"u1"}, At: now}}},
		{name: "add: longest value, most values", given: history("created"), when: app.AddToBlacklist{Kind: app.KindUser, Values: append(values(999), long)},
			then: []app.Event{app.BlacklistAdded{Kind: app.KindUser, Values: slices.Sorted(slices.Values(append(values(999), long))), At: now}}},
		{name: "remove: new", when: app.RemoveFromBlacklist{Kind: app.KindUser, Values: []string{"u1"}}, err: app.ErrNotFound},
		{name: "remove: present ones", given: history("blacklisted"), when: app.RemoveFromBlacklist{Kind: app.KindUser, Values: []string{"u9", "u2", "u2"}},
			then: []app.Event{app.BlacklistRemoved{Kind: app.KindUser, Values: []string{"u2"}, At: now}}},
		{name: "remove: absent is a no-op", given: history("blacklisted"), when: app.RemoveFromBlacklist{Kind: app.KindUser, Values: []string{"u9"}}},
		{name: "remove: other kind is a no-op", given: history("blacklisted"), when: app.RemoveFromBlacklist{Kind: app.KindDevice, Values: []string{"u1"}}},
	}
	for _, cmd := range []func(string, []string) app.Command{
		func(k string, v []string) app.Command { return app.AddToBlacklist{Kind: k, Values: v} },
		func(k string, v []string) app.Command { return app.RemoveFromBlacklist{Kind: k, Values: v} },
	} {
		for name, c := range map[string]app.Command{
			"no kind":         cmd("", []string{"u1"}),
			"unknown kind":    cmd("tenant", []string{"u1"}),
			"no values":       cmd(app.KindUser, nil),
			"empty values":    cmd(app.KindUser, []string{}),
			"too many":        cmd(app.KindUser, values(1001)),
			"empty value":     cmd(app.KindUser, []string{"u1", ""}),
			"value not UTF-8": cmd(app.KindUser, []string{"u\xff"}),
			"value too long":  cmd(app.KindUser, []string{long + "v"}),
		} {
			cases = append(cases, decideCase{name: "invalid: " + name, given: history("blacklisted"), when: c, err: app.ErrInvalid})
		}
	}
	runDecide(t, cases)
}

func TestEvolve(t *testing.T) {
	a, err := app.Replay([]app.Event{
		createdEv(), apnsEv,
		app.ChannelConfigured{Channel: "fcm", Config: app.ChannelConfig{Enabled: true, Priority: 1}},
		app.ChannelConfigured{Channel: "gateway", Config: app.ChannelConfig{Enabled: true, Priority: 0}},
		app.ChannelConfigured{Channel: "hms", Config: app.ChannelConfig{Enabled: false, Priority: -1}},
		app.ChannelConfigured{Channel: "xiaomi", Config: app.ChannelConfig{Enabled: true, Priority: 2}},
		app.ChannelRemoved{Channel: "xiaomi"},
		blacklisted,
		app.BlacklistRemoved{Kind: app.KindUser, Values: []string{"u1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.ChannelOrder(), []string{"gateway", "apns", "fcm"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ChannelOrder = %v, want %v", got, want)
	}
	if a.Blacklisted(app.KindUser, "u1") || !a.Blacklisted(app.KindUser, "u2") || a.Blacklisted(app.KindDevice, "u2") {
		t.Fatalf("blacklist %v", a.Blacklist)
	}
	if a.ID != "a1" || a.Name != "Shop" || a.Key != "key-1" || !a.CreatedAt.Equal(t0) || a.Version != 9 {
		t.Fatalf("app %+v", a)
	}
	// Removing from a kind that has no entries changes nothing but the version.
	before := cloneApp(a)
	if err := a.Evolve(app.BlacklistRemoved{Kind: app.KindGroup, Values: []string{"g"}}); err != nil {
		t.Fatal(err)
	}
	before.Version++
	if !reflect.DeepEqual(a, before) {
		t.Fatalf("app %+v", a)
	}
}

func TestEvolveRejects(t *testing.T) {
	for _, tc := range []struct {
		given string
		e     app.Event
	}{
		{"new", apnsEv},
		{"new", app.ChannelRemoved{Channel: "apns"}},
		{"new", blacklisted},
		{"new", app.BlacklistRemoved{Kind: app.KindUser, Values: []string{"u1"}}},
		{"created", createdEv()},
		{"configured", createdEv()},
	} {
		t.Run(tc.given+"+"+tc.e.EventType(), func(t *testing.T) {
			a, _ := app.Replay(history(tc.given))
			before := cloneApp(a)
			err := a.Evolve(tc.e)
			if !errors.Is(err, app.ErrInvalidTransition) {
				t.Fatalf("err = %v", err)
			}
			var te *app.TransitionError
			if !errors.As(err, &te) {
				t.Fatalf("err %T is not a *TransitionError", err)
			}
			want := app.TransitionError{Event: tc.e.EventType(), Exists: before.ID != "", AppID: before.ID}
			if tc.given != "new" && (!want.Exists || want.AppID != "a1") {
				t.Fatalf("given %s: app %q", tc.given, before.ID)
			}
			if *te != want {
				t.Fatalf("TransitionError %+v, want %+v", te, want)
			}
			if !strings.HasPrefix(err.Error(), "app: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("message %q", err)
			}
			if !reflect.DeepEqual(a, before) {
				t.Fatal("a refused event changed the state")
			}
		})
	}
}

// A copy of an app is not changed by evolving the original.
func TestEvolveDoesNotShareMaps(t *testing.T) {
	a, _ := app.Replay(append(history("configured"), blacklisted))
	copied := cloneApp(a)
	shallow := a
	for _, e := range []app.Event{
		app.ChannelConfigured{Channel: "apns", Config: app.ChannelConfig{Settings: map[string]string{"x": "y"}}},
		app.ChannelRemoved{Channel: "apns"},
		app.BlacklistAdded{Kind: app.KindUser, Values: []string{"u3"}},
		app.BlacklistAdded{Kind: app.KindGroup, Values: []string{"g"}},
		app.BlacklistRemoved{Kind: app.KindUser, Values: []string{"u1"}},
	} {
		if err := a.Evolve(e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(shallow, copied) {
		t.Fatalf("copy changed: %+v", shallow)
	}
}

func sampleEvents() []app.Event {
	return []app.Event{
		createdEv(),
		apnsEv,
		app.ChannelConfigured{Channel: "fcm", Config: app.ChannelConfig{}, At: now},
		app.ChannelRemoved{Channel: "apns", At: now},
		blacklisted,
		app.BlacklistRemoved{Kind: app.KindGroup, Values: []string{"vip"}, At: now.Add(time.Nanosecond)},
		app.PolicySet{Policy: json.RawMessage(`{"max_attempts":3}`), At: now},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range sampleEvents() {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := app.Decode(e.EventType(), b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, e)
		}
		seen[e.EventType()] = true
	}
	for _, typ := range app.EventTypes() {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
	if _, err := app.Decode("app.unknown.v1", []byte(`{}`)); err == nil {
		t.Error("unknown type decoded")
	}
	if _, err := app.Decode(app.TypeCreated, []byte(`{"secret_ciphertext":"not base64!"}`)); err == nil {
		t.Error("bad base64 decoded")
	}
	if got := app.Stream("a1"); got != "app-a1" {
		t.Errorf("Stream = %q", got)
	}
}
