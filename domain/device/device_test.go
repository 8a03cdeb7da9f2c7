package device_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/device"
)

var t0 = time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func profile() device.Profile {
	return device.Profile{Platform: device.PlatformAndroid, Brand: "Xiaomi", Model: "13", OSVersion: "14",
		Tokens: map[string]string{"xiaomi": "tok-x", "fcm": "tok-f"}}
}

func register() device.Register {
	return device.Register{AppID: "a1", DeviceID: "d1", Profile: profile()}
}

func registeredEv() device.Registered {
	return device.Registered{AppID: "a1", DeviceID: "d1", Profile: profile(), At: t0}
}

var (
	aliasBound = device.AliasBound{Alias: "u1", At: at(time.Minute)}
	tagsAdded  = device.TagsAdded{Tags: []string{"a", "b"}, At: at(time.Minute)}
	loggedOut  = device.LoggedOut{At: at(2 * time.Minute)}
)

func history(state string) []device.Event {
	switch state {
	case "new":
		return nil
	case "active":
		return []device.Event{registeredEv()}
	case "aliased":
		return []device.Event{registeredEv(), aliasBound}
	case "tagged":
		return []device.Event{registeredEv(), tagsAdded}
	case "logged-out":
		return []device.Event{registeredEv(), aliasBound, tagsAdded, loggedOut}
	}
	panic("unknown state " + state)
}

func with[T any](v T, f func(*T)) T {
	f(&v)
	return v
}

type decideCase struct {
	name  string
	given []device.Event
	when  device.Command
	then  []device.Event // nil: no events
	err   error
}

var now = at(time.Hour)

func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := device.Replay(tc.given)
			if err != nil {
				t.Fatalf("given: %v", err)
			}
			before := cloneDevice(d)
			got, err := device.Decide(&d, tc.when, now)
			if !reflect.DeepEqual(d, before) {
				t.Fatalf("Decide changed the state")
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got != nil {
					t.Fatalf("got %v, %v; want error %v", got, err, tc.err)
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
				if err := d.Evolve(e); err != nil {
					t.Fatalf("Evolve of decided %T: %v", e, err)
				}
			}
		})
	}
}

func cloneDevice(d device.Device) device.Device {
	c := d
	c.Profile.Tokens = maps.Clone(d.Profile.Tokens)
	c.Tags = maps.Clone(d.Tags)
	return c
}

func TestDecideRegister(t *testing.T) {
	updated := func(p device.Profile) []device.Event { return []device.Event{device.Updated{Profile: p, At: now}} }
	cases := []decideCase{
		{name: "new", when: register(), then: []device.Event{with(registeredEv(), func(e *device.Registered) { e.At = now })}},
		{name: "new: no tokens", when: with(register(), func(c *device.Register) {
			c.Profile = device.Profile{Platform: device.PlatformWeb, Tokens: map[string]string{}}
		}),
			then: []device.Event{device.Registered{AppID: "a1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformWeb}, At: now}}},
		{name: "new: longest id", when: with(register(), func(c *device.Register) { c.DeviceID = strings.Repeat("A", device.MaxIDLen) }),
			then: []device.Event{with(registeredEv(), func(e *device.Registered) { e.DeviceID, e.At = strings.Repeat("A", device.MaxIDLen), now })}},
		{name: "active: same profile is a no-op", given: history("active"), when: register()},
		{name: "active: same profile, tokens in another map is a no-op", given: history("active"),
			when: with(register(), func(c *device.Register) { c.Profile.Tokens = maps.Clone(c.Profile.Tokens) })},
		{name: "active: new token", given: history("active"),
			when: with(register(), func(c *device.Register) { c.Profile.Tokens = map[string]string{"fcm": "tok-f2"} }),
			then: updated(with(profile(), func(p *device.Profile) { p.Tokens = map[string]string{"fcm": "tok-f2"} }))},
		{name: "active: os upgrade", given: history("active"),
			when: with(register(), func(c *device.Register) { c.Profile.OSVersion = "15" }),
			then: updated(with(profile(), func(p *device.Profile) { p.OSVersion = "15" }))},
		{name: "active: tokens dropped", given: history("active"),
			when: with(register(), func(c *device.Register) { c.Profile.Tokens = map[string]string{} }),
			then: updated(with(profile(), func(p *device.Profile) { p.Tokens = nil }))},
		{name: "active: invalid", given: history("active"), when: with(register(), func(c *device.Register) { c.Profile.Platform = "" }), err: device.ErrInvalid},
		{name: "logged out: registers again", given: history("logged-out"), when: register(),
			then: []device.Event{with(registeredEv(), func(e *device.Registered) { e.At = now })}},
	}
	for name, f := range map[string]func(*device.Register){
		"no app id":              func(c *device.Register) { c.AppID = "" },
		"no device id":           func(c *device.Register) { c.DeviceID = "" },
		"device id with a space": func(c *device.Register) { c.DeviceID = "d 1" },
		"device id with a slash": func(c *device.Register) { c.DeviceID = "d/1" },
		"device id too long":     func(c *device.Register) { c.DeviceID = strings.Repeat("a", device.MaxIDLen+1) },
		"no platform":            func(c *device.Register) { c.Profile.Platform = "" },
		"unknown platform":       func(c *device.Register) { c.Profile.Platform = "symbian" },
		"token without channel":  func(c *device.Register) { c.Profile.Tokens = map[string]string{"": "t"} },
		"empty token":            func(c *device.Register) { c.Profile.Tokens = map[string]string{"fcm": ""} },
		"brand not UTF-8":        func(c *device.Register) { c.Profile.Brand = "\xff" },
		"token not UTF-8":        func(c *device.Register) { c.Profile.Tokens = map[string]string{"fcm": "t\xff"} },
		"token too long":         func(c *device.Register) { c.Profile.Tokens = map[string]string{"fcm": strings.Repeat("t", 4097)} },
	} {
		cases = append(cases, decideCase{name: "new: " + name, when: with(register(), f), err: device.ErrInvalid})
	}
	runDecide(t, cases)
}

// The event does not share the command's token map.
func TestRegisterCopiesTokens(t *testing.T) {
	c := register()
	evs, err := device.Decide(&device.Device{}, c, now)
	if err != nil {
		t.Fatal(err)
	}
	c.Profile.Tokens["fcm"] = "changed"
	if got := evs[0].(device.Registered).Profile.Tokens["fcm"]; got != "tok-f" {
		t.Fatalf("event token = %q", got)
	}
}

func TestDecideAlias(t *testing.T) {
	long := strings.Repeat("u", device.MaxIDLen)
	runDecide(t, []decideCase{
		{name: "bind: new", when: device.BindAlias{Alias: "u1"}, err: device.ErrNotFound},
		{name: "bind: active", given: history("active"), when: device.BindAlias{Alias: "u1"}, then: []device.Event{device.AliasBound{Alias: "u1", At: now}}},
		{name: "bind: longest", given: history("active"), when: device.BindAlias{Alias: long}, then: []device.Event{device.AliasBound{Alias: long, At: now}}},
		{name: "bind: empty", given: history("active"), when: device.BindAlias{}, err: device.ErrInvalid},
		{name: "bind: not UTF-8", given: history("active"), when: device.BindAlias{Alias: "u\xff"}, err: device.ErrInvalid},
		{name: "bind: too long", given: history("active"), when: device.BindAlias{Alias: long + "u"}, err: device.ErrInvalid},
		{name: "bind: same alias is a no-op", given: history("aliased"), when: device.BindAlias{Alias: "u1"}},
		{name: "bind: other alias", given: history("aliased"), when: device.BindAlias{Alias: "u2"}, then: []device.Event{device.AliasBound{Alias: "u2", At: now}}},
		{name: "bind: logged out", given: history("logged-out"), when: device.BindAlias{Alias: "u1"}, err: device.ErrNotFound},
		{name: "unbind: new", when: device.UnbindAlias{}, err: device.ErrNotFound},
		{name: "unbind: no alias is a no-op", given: history("active"), when: device.UnbindAlias{}},
		{name: "unbind: aliased", given: history("aliased"), when: device.UnbindAlias{}, then: []device.Event{device.AliasUnbound{Alias: "u1", At: now}}},
		{name: "unbind: logged out", given: history("logged-out"), when: device.UnbindAlias{}, err: device.ErrNotFound},
	})
}

func manyTags(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strings.Repeat("x", i/10) + string(rune('0'+i%10))
	}
	return out
}

func TestDecideTags(t *testing.T) {
	full := []device.Event{registeredEv(), device.TagsAdded{Tags: manyTags("t", device.MaxTags), At: t0}}
	runDecide(t, []decideCase{
		{name: "add: new", when: device.AddTags{Tags: []string{"a"}}, err: device.ErrNotFound},
		{name: "add: sorted and deduplicated", given: history("active"), when: device.AddTags{Tags: []string{"b", "a", "b"}},
			then: []device.Event{device.TagsAdded{Tags: []string{"a", "b"}, At: now}}},
		{name: "add: only the new ones", given: history("tagged"), when: device.AddTags{Tags: []string{"c", "a"}},
			then: []device.Event{device.TagsAdded{Tags: []string{"c"}, At: now}}},
		{name: "add: all present is a no-op", given: history("tagged"), when: device.AddTags{Tags: []string{"b", "a"}}},
		{name: "add: none", given: history("active"), when: device.AddTags{}, err: device.ErrInvalid},
		{name: "add: empty tag", given: history("active"), when: device.AddTags{Tags: []string{"a", ""}}, err: device.ErrInvalid},
		{name: "add: tag not UTF-8", given: history("active"), when: device.AddTags{Tags: []string{"\xfe"}}, err: device.ErrInvalid},
		{name: "add: tag too long", given: history("active"), when: device.AddTags{Tags: []string{strings.Repeat("t", device.MaxTagLen+1)}}, err: device.ErrInvalid},
		{name: "add: longest tag", given: history("active"), when: device.AddTags{Tags: []string{strings.Repeat("t", device.MaxTagLen)}},
			then: []device.Event{device.TagsAdded{Tags: []string{strings.Repeat("t", device.MaxTagLen)}, At: now}}},
		{name: "add: too many in one command", given: history("active"), when: device.AddTags{Tags: manyTags("t", device.MaxTagsCmd+1)}, err: device.ErrInvalid},
		{name: "add: one too many on the device", given: full, when: device.AddTags{Tags: []string{"one-more"}}, err: device.ErrInvalid},
		{name: "add: present ones on a full device are a no-op", given: full, when: device.AddTags{Tags: manyTags("t", 3)}},
		{name: "add: logged out", given: history("logged-out"), when: device.AddTags{Tags: []string{"c"}}, err: device.ErrNotFound},
		{name: "remove: new", when: device.RemoveTags{Tags: []string{"a"}}, err: device.ErrNotFound},
		{name: "remove: present ones", given: history("tagged"), when: device.RemoveTags{Tags: []string{"z", "b", "a", "b"}},
			then: []device.Event{device.TagsRemoved{Tags: []string{"a", "b"}, At: now}}},
		{name: "remove: absent is a no-op", given: history("tagged"), when: device.RemoveTags{Tags: []string{"z"}}},
		{name: "remove: none", given: history("tagged"), when: device.RemoveTags{Tags: []string{}}, err: device.ErrInvalid},
		{name: "remove: empty tag", given: history("tagged"), when: device.RemoveTags{Tags: []string{""}}, err: device.ErrInvalid},
		{name: "remove: logged out", given: history("logged-out"), when: device.RemoveTags{Tags: []string{"a"}}, err: device.ErrNotFound},
	})
}

func TestDecideLogoutAndTokens(t *testing.T) {
	inv := device.InvalidateToken{Channel: "fcm", Token: "tok-f", Reason: "unregistered"}
	invalidated := []device.Event{device.TokenInvalidated{Channel: "fcm", Token: "tok-f", Reason: "unregistered", At: now}}
	runDecide(t, []decideCase{
		{name: "logout: new", when: device.Logout{}, err: device.ErrNotFound},
		{name: "logout: active", given: history("aliased"), when: device.Logout{}, then: []device.Event{device.LoggedOut{At: now}}},
		{name: "logout: again", given: history("logged-out"), when: device.Logout{}, err: device.ErrNotFound},
		{name: "invalidate: new", when: inv, err: device.ErrNotFound},
		{name: "invalidate: current token", given: history("active"), when: inv, then: invalidated},
		{name: "invalidate: replaced token is a no-op", given: history("active"), when: device.InvalidateToken{Channel: "fcm", Token: "old"}},
		{name: "invalidate: unknown channel is a no-op", given: history("active"), when: device.InvalidateToken{Channel: "apns", Token: "tok-f"}},
		{name: "invalidate: no channel", given: history("active"), when: device.InvalidateToken{Token: "tok-f"}, err: device.ErrInvalid},
		{name: "invalidate: no token", given: history("active"), when: device.InvalidateToken{Channel: "fcm"}, err: device.ErrInvalid},
		{name: "invalidate: twice", given: append(history("active"), invalidated...), when: inv},
		{name: "invalidate: logged out", given: history("logged-out"), when: inv, then: invalidated},
		{name: "invalidate: logged out, replaced token", given: history("logged-out"), when: device.InvalidateToken{Channel: "fcm", Token: "old"}},
	})
}

func TestEvolve(t *testing.T) {
	d, err := device.Replay(append(history("logged-out"), device.TokenInvalidated{Channel: "fcm", Token: "tok-f", At: at(3 * time.Minute)}, registeredEv()))
	if err != nil {
		t.Fatal(err)
	}
	// Registering again keeps tags, not the alias; the version goes on.
	if !d.Active || !d.Registered || d.Alias != "" || !reflect.DeepEqual(d.TagList(), []string{"a", "b"}) || d.Version != 6 {
		t.Fatalf("device %+v", d)
	}
	if !reflect.DeepEqual(d.Profile, profile()) {
		t.Fatalf("profile %+v", d.Profile)
	}
	d, _ = device.Replay(history("logged-out"))
	if d.Active || !d.Registered || d.Alias != "" || !d.UpdatedAt.Equal(loggedOut.At) {
		t.Fatalf("logged out device %+v", d)
	}
	d, _ = device.Replay(append(history("tagged"), device.TagsRemoved{Tags: []string{"a"}, At: now}))
	if !reflect.DeepEqual(d.TagList(), []string{"b"}) || !d.UpdatedAt.Equal(now) {
		t.Fatalf("tags %v", d.TagList())
	}
}

func TestEvolveRejects(t *testing.T) {
	for _, tc := range []struct {
		given string
		e     device.Event
	}{
		{"new", device.Updated{Profile: profile()}},
		{"new", aliasBound},
		{"new", device.AliasUnbound{Alias: "u1"}},
		{"new", tagsAdded},
		{"new", device.TagsRemoved{Tags: []string{"a"}}},
		{"new", loggedOut},
		{"new", device.TokenInvalidated{Channel: "fcm", Token: "tok-f"}},
		{"active", registeredEv()},
		{"logged-out", aliasBound},
		{"logged-out", tagsAdded},
		{"logged-out", loggedOut},
		{"logged-out", device.Updated{Profile: profile()}},
	} {
		t.Run(tc.given+"+"+tc.e.EventType(), func(t *testing.T) {
			d, _ := device.Replay(history(tc.given))
			before := cloneDevice(d)
			err := d.Evolve(tc.e)
			if !errors.Is(err, device.ErrInvalidTransition) {
				t.Fatalf("err = %v", err)
			}
			var te *device.TransitionError
			if !errors.As(err, &te) {
				t.Fatalf("err %T is not a *TransitionError", err)
			}
			want := device.TransitionError{Event: tc.e.EventType(), State: map[string]device.State{
				"new": device.StateNotRegistered, "active": device.StateActive, "logged-out": device.StateLoggedOut,
			}[tc.given]}
			if *te != want {
				t.Fatalf("TransitionError %+v, want %+v", te, want)
			}
			if !strings.HasPrefix(err.Error(), "device: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("message %q", err)
			}
			if !reflect.DeepEqual(d, before) {
				t.Fatal("a refused event changed the state")
			}
		})
	}
}

// A copy of a device is not changed by evolving the original.
func TestEvolveDoesNotShareMaps(t *testing.T) {
	d, _ := device.Replay(history("tagged"))
	copied := cloneDevice(d)
	shallow := d
	for _, e := range []device.Event{device.TagsAdded{Tags: []string{"c"}, At: now}, device.TagsRemoved{Tags: []string{"a"}, At: now},
		device.TokenInvalidated{Channel: "fcm", Token: "tok-f", At: now}} {
		if err := d.Evolve(e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(shallow, copied) {
		t.Fatalf("copy changed: tags %v", shallow.TagList())
	}
}

func sampleEvents() []device.Event {
	return []device.Event{
		registeredEv(),
		device.Registered{AppID: "a1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformIOS}, At: t0},
		device.Updated{Profile: with(profile(), func(p *device.Profile) { p.Platform = device.PlatformHarmony }), At: at(time.Nanosecond)},
		aliasBound, device.AliasUnbound{Alias: "u1", At: now},
		tagsAdded, device.TagsRemoved{Tags: []string{"a"}, At: now},
		loggedOut,
		device.TokenInvalidated{Channel: "fcm", Token: "tok-f", Reason: "unregistered", At: now},
		device.TokenInvalidated{Channel: "fcm", Token: "tok-f", At: now},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range sampleEvents() {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := device.Decode(e.EventType(), b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, e)
		}
		seen[e.EventType()] = true
	}
	for _, typ := range device.EventTypes() {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
	if _, err := device.Decode("device.unknown.v1", []byte(`{}`)); err == nil {
		t.Error("unknown type decoded")
	}
	for _, typ := range device.EventTypes() {
		if _, err := device.Decode(typ, []byte(`{"at":1}`)); err == nil {
			t.Errorf("%s: bad time decoded", typ)
		}
	}
}

func TestNames(t *testing.T) {
	if got := device.Stream("a1", "d1"); got != "device-a1-d1" {
		t.Fatalf("Stream = %q", got)
	}
	for id, ok := range map[string]bool{"": false, "a.b_c:d-E9": true, "ä": false, strings.Repeat("a", 129): false} {
		if device.ValidID(id) != ok {
			t.Errorf("ValidID(%q) = %v", id, !ok)
		}
	}
}
