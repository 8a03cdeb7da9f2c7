package schema_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/settings"
	"github.com/pushledger/pushledger/schema"
)

const idPrefix = "https://pushledger.dev/schema/events/"

type event interface{ EventType() string }

// decoders map every persisted event type to its package's Decode.
func decoders() map[string]func([]byte) (event, error) {
	out := map[string]func([]byte) (event, error){}
	for _, typ := range message.EventTypes() {
		out[typ] = func(b []byte) (event, error) { return message.Decode(typ, b) }
	}
	for _, typ := range device.EventTypes() {
		out[typ] = func(b []byte) (event, error) { return device.Decode(typ, b) }
	}
	for _, typ := range app.EventTypes() {
		out[typ] = func(b []byte) (event, error) { return app.Decode(typ, b) }
	}
	for _, typ := range settings.EventTypes() {
		out[typ] = func(b []byte) (event, error) { return settings.Decode(typ, b) }
	}
	return out
}

// rawSchemas reads every events/*.json as a generic JSON document.
func rawSchemas(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := fs.Glob(schema.EventSchemas, "events/*.json")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, f := range files {
		b, err := fs.ReadFile(schema.EventSchemas, f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(path.Base(f), ".json")] = doc
	}
	return out
}

// compile compiles every schema, asserting formats and content encodings.
func compile(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	files, _ := fs.Glob(schema.EventSchemas, "events/*.json")
	for _, f := range files {
		b, _ := fs.ReadFile(schema.EventSchemas, f)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := c.AddResource(idPrefix+path.Base(f), doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, f := range files {
		typ := strings.TrimSuffix(path.Base(f), ".json")
		sch, err := c.Compile(idPrefix + path.Base(f))
		if err != nil {
			t.Fatalf("compile %s: %v", f, err)
		}
		out[typ] = sch
	}
	return out
}

// Every event type has a schema, every schema names an event type, and each
// is a documented draft 2020-12 schema with its $id.
func TestEverySchemaNamesAnEventType(t *testing.T) {
	docs := rawSchemas(t)
	known := decoders()
	for typ := range known {
		if _, ok := docs[typ]; !ok {
			t.Errorf("event type %s has no schema file events/%s.json", typ, typ)
		}
	}
	for typ, doc := range docs {
		if _, ok := known[typ]; !ok {
			t.Errorf("schema events/%s.json names no known event type", typ)
			continue
		}
		if got := doc["$id"]; got != idPrefix+typ+".json" {
			t.Errorf("%s: $id %v", typ, got)
		}
		if got := doc["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %v", typ, got)
		}
		if d, _ := doc["description"].(string); len(d) < 20 {
			t.Errorf("%s: no description", typ)
		}
		if doc["title"] != typ {
			t.Errorf("%s: title %v", typ, doc["title"])
		}
	}
	compile(t)
}

// Each schema has the shape of its Go struct: the json field names as
// properties, the fields without omitempty as required, no other
// properties, date-time for times, base64 for bytes.
func TestSchemasMatchStructs(t *testing.T) {
	docs := rawSchemas(t)
	for typ, decode := range decoders() {
		doc, ok := docs[typ]
		if !ok {
			continue // reported by TestEverySchemaNamesAnEventType
		}
		e, err := decode([]byte(`{}`))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		checkShape(t, typ, reflect.TypeOf(e), doc, doc)
	}
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

func checkShape(t *testing.T, where string, typ reflect.Type, sch, root map[string]any) {
	t.Helper()
	if ref, ok := sch["$ref"].(string); ok {
		defs, _ := root["$defs"].(map[string]any)
		def, ok := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
		if !ok {
			t.Errorf("%s: unresolved $ref %s", where, ref)
			return
		}
		sch = def
	}
	if _, ok := sch["description"]; !ok && where != "" && !strings.HasSuffix(where, "[]") && !strings.HasSuffix(where, "{}") {
		t.Errorf("%s: no description", where)
	}
	want := func(key string, v any) {
		if sch[key] != v {
			t.Errorf("%s (%s): %s is %v, want %v", where, typ, key, sch[key], v)
		}
	}
	switch {
	case typ == timeType:
		want("type", "string")
		want("format", "date-time")
		return
	case typ == rawType:
		if _, ok := sch["type"]; ok {
			t.Errorf("%s: raw JSON must not be typed", where)
		}
		return
	}
	switch typ.Kind() {
	case reflect.Pointer:
		checkShape(t, where, typ.Elem(), sch, root)
	case reflect.Struct:
		want("type", "object")
		want("additionalProperties", false)
		props, _ := sch["properties"].(map[string]any)
		var required []string
		names := map[string]bool{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s.%s: no json name", where, f.Name)
				continue
			}
			names[name] = true
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
			p, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s: no property %s", where, name)
				continue
			}
			checkShape(t, where+"."+name, f.Type, p, root)
		}
		for name := range props {
			if !names[name] {
				t.Errorf("%s: property %s is no field of %s", where, name, typ)
			}
		}
		var got []string
		if r, ok := sch["required"].([]any); ok {
			for _, v := range r {
				got = append(got, v.(string))
			}
		}
		slices.Sort(got)
		slices.Sort(required)
		if !slices.Equal(got, required) {
			t.Errorf("%s: required %v, want %v", where, got, required)
		}
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			want("type", "string")
			want("contentEncoding", "base64")
			return
		}
		want("type", "array")
		items, _ := sch["items"].(map[string]any)
		checkShape(t, where+"[]", typ.Elem(), items, root)
	case reflect.Map:
		want("type", "object")
		items, _ := sch["additionalProperties"].(map[string]any)
		checkShape(t, where+"{}", typ.Elem(), items, root)
	case reflect.String:
		if enum, ok := sch["enum"].([]any); ok {
			for _, v := range enum {
				if _, ok := v.(string); !ok {
					t.Errorf("%s: enum value %v is no string", where, v)
				}
			}
			return
		}
		want("type", "string")
	case reflect.Int, reflect.Int64:
		want("type", "integer")
	case reflect.Bool:
		if sch["const"] == true {
			return // present only when true (omitempty)
		}
		want("type", "boolean")
	default:
		t.Errorf("%s: unexpected Go kind %s", where, typ.Kind())
	}
}

var (
	t0  = time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	t1  = t0.Add(90*time.Minute + 123456789)
	day = 24 * time.Hour
)

// fullSamples have every field set; requiredSamples only the required ones
// (and what the domain needs: one audience, a profile's platform).
func fullSamples() []event {
	sendAt := t0.Add(time.Hour)
	return []event{
		message.Accepted{MessageID: "m1", AppID: "a1",
			Audience: message.Audience{Tags: &message.TagExpr{AllOf: []string{"a"}, AnyOf: []string{"b", "c"}, NoneOf: []string{"d"}}},
			Targets:  []string{"d1", "d2"}, TargetCount: 2, Notification: &message.Notification{Title: "Hi", Body: "there"},
			Data: json.RawMessage(`{"deep_link":"app://x","n":[1,2]}`), Priority: message.PriorityHigh, CollapseID: "c1",
			TTLSeconds: 3600, ExpiresAt: sendAt.Add(time.Hour), SendAt: &sendAt, IdempotencyKey: "idem-1", At: t0},
		message.Scheduled{SendAt: sendAt, At: t0},
		message.Sending{Attempt: 1, Channel: "apns", At: t1},
		message.Sent{Attempt: 1, Channel: "apns", ProviderID: "p-1", Accepted: 2, At: t1},
		message.Delivered{DeviceID: "d1", Channel: "apns", At: t1},
		message.DeliveredBatch{DeviceIDs: []string{"d1", "d2"}, Channel: "gateway", At: t1},
		message.Opened{DeviceID: "d1", Channel: "apns", At: t1},
		message.Failed{Attempt: 2, Channel: "fcm", Reason: "unavailable", Status: 503, Class: message.ClassTransient, Retryable: true, Final: true,
			Alert: "attempts_exhausted", At: t1},
		message.Failed{Attempt: 2, Channel: "fcm", Reason: "unavailable", Status: 503, Class: message.ClassTransient, Retryable: true,
			RetryAt: &sendAt, At: t1},
		message.Expired{At: t1},
		message.Cancelled{Reason: "typo", At: t1},
		message.ResendRequested{Reason: "operator", At: t1},

		device.Registered{AppID: "a1", DeviceID: "d1:x_y.z-0", Profile: device.Profile{Platform: device.PlatformAndroid, Brand: "Xiaomi", Model: "13",
			OSVersion: "14", Tokens: map[string]string{"xiaomi": "tok-x", "fcm": "tok-f"}}, At: t0},
		device.Updated{Profile: device.Profile{Platform: device.PlatformIOS, Brand: "Apple", Model: "15", OSVersion: "18", Tokens: map[string]string{"apns": "t"}}, At: t1},
		device.AliasBound{Alias: "user-1", At: t1},
		device.AliasUnbound{Alias: "user-1", At: t1},
		device.TagsAdded{Tags: []string{"a", "vip"}, At: t1},
		device.TagsRemoved{Tags: []string{"a"}, At: t1},
		device.LoggedOut{At: t1},
		device.TokenInvalidated{Channel: "fcm", Token: "tok-f", Reason: "unregistered", At: t1},

		app.Created{AppID: "a1", Name: "Shop", AppKey: "key-1", SecretCiphertext: []byte{0, 1, 2, 0xfe, 0xff}, At: t0},
		app.ChannelConfigured{Channel: "apns", Config: app.ChannelConfig{Enabled: true, Priority: -1, Settings: map[string]string{"team_id": "T1"}}, At: t1},
		app.ChannelRemoved{Channel: "apns", At: t1},
		app.BlacklistAdded{Kind: app.KindUser, Values: []string{"u1", "u2"}, At: t1},
		app.BlacklistRemoved{Kind: app.KindGroup, Values: []string{"vip"}, At: t1},
		app.PolicySet{Policy: []byte(`{"max_attempts":3}`), At: t1},
		settings.DeliveryPolicySet{Policy: []byte(`{"max_attempts":4}`), Source: "config file (reload)", At: t1},
	}
}

func requiredSamples() []event {
	return []event{
		message.Accepted{MessageID: "m1", AppID: "a1", Audience: message.Audience{Broadcast: true}, Priority: message.PriorityNormal,
			TTLSeconds: 0, ExpiresAt: t0.Add(time.Second), At: t0},
		message.Accepted{MessageID: "m1", AppID: "a1", Audience: message.Audience{DeviceIDs: []string{"d1"}}, Priority: message.PriorityNormal,
			TTLSeconds: 86400, ExpiresAt: t0.Add(day), At: t0},
		message.Accepted{MessageID: "m1", AppID: "a1", Audience: message.Audience{Aliases: []string{"u1"}}, Priority: message.PriorityNormal,
			TTLSeconds: 86400, ExpiresAt: t0.Add(day), At: t0},
		message.Accepted{MessageID: "m1", AppID: "a1", Audience: message.Audience{Tags: &message.TagExpr{AnyOf: []string{"x"}}}, Priority: message.PriorityNormal,
			TTLSeconds: 86400, ExpiresAt: t0.Add(day), At: t0},
		message.Sent{Attempt: 1, At: t1},
		message.Delivered{DeviceID: "d1", At: t1},
		message.Opened{DeviceID: "d1", At: t1},
		message.Failed{Attempt: 1, Reason: "x", At: t1},
		message.Failed{Reason: "no_channel", Final: true, At: t1},
		message.Cancelled{At: t1},
		message.ResendRequested{At: t1},

		device.Registered{AppID: "a1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformWeb}, At: t0},
		device.Updated{Profile: device.Profile{Platform: device.PlatformHarmony}, At: t1},
		device.TokenInvalidated{Channel: "fcm", Token: "t", At: t1},

		app.ChannelConfigured{Channel: "fcm", At: t1},
	}
}

// decidedSamples are what Decide makes in a few ordinary lives.
func decidedSamples(t *testing.T) []event {
	t.Helper()
	var out []event
	var m message.Message
	sendAt := t0.Add(time.Hour)
	for i, c := range []message.Command{
		message.Accept{MessageID: "m1", AppID: "a1", Audience: message.Audience{DeviceIDs: []string{"d1", "d2"}}, Targets: []string{"d1", "d2"},
			TargetCount: 2, Data: json.RawMessage(` {"k": "<v>"} `), SendAt: &sendAt, TTL: 90 * time.Minute},
		message.StartAttempt{Channel: "gateway"},
		message.RecordFailure{Attempt: 1, Channel: "gateway", Reason: "timeout"},
		message.StartAttempt{Channel: "apns"},
		message.RecordSent{Attempt: 2, Channel: "apns", ProviderID: "p"},
		message.RecordDelivered{DeviceID: "d1", Channel: "apns"},
		message.RecordDeliveries{DeviceIDs: []string{"d2", "d1"}, Channel: "gateway"},
		message.RecordOpened{DeviceID: "d2", Channel: "apns"},
	} {
		now := sendAt.Add(time.Duration(i) * time.Minute)
		if i == 0 {
			now = t0 // accepted an hour ahead: scheduled
		}
		evs, err := message.Decide(&m, c, now)
		if err != nil {
			t.Fatalf("%#v: %v", c, err)
		}
		for _, e := range evs {
			if err := m.Evolve(e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	// A failure classified by the policy, its give-up, a resend and the
	// final failure of the new cycle.
	m = message.Message{}
	retryAt := t0.Add(5 * time.Minute).In(time.FixedZone("X", 3600))
	for i, c := range []message.Command{
		message.Accept{MessageID: "m2", AppID: "a1", Audience: message.Audience{Broadcast: true}, Notification: &message.Notification{Title: "t", Body: "b"}},
		message.StartAttempt{Channel: "fcm"},
		message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "http_503", Status: 503, Class: message.ClassTransient, Retryable: true, RetryAt: &retryAt},
		message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "retry_after_expiry", Final: true},
		message.Resend{Reason: "operator"},
		message.Resend{},
		message.StartAttempt{Channel: "apns"},
		message.RecordFailure{Attempt: 2, Channel: "apns", Reason: "apns_BadDeviceToken", Status: 400, Class: message.ClassTokenInvalid, Final: true, Alert: "no_channel"},
	} {
		evs, err := message.Decide(&m, c, t0.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatalf("%#v: %v", c, err)
		}
		for _, e := range evs {
			if err := m.Evolve(e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	// The give-up of a message no channel was ever tried for.
	m = message.Message{}
	for _, c := range []message.Command{
		message.Accept{MessageID: "m3", AppID: "a1", Audience: message.Audience{Broadcast: true}, Data: json.RawMessage(`{}`)},
		message.RecordFailure{Reason: "no_channel", Final: true, Alert: "no_channel"},
	} {
		evs, err := message.Decide(&m, c, t0)
		if err != nil {
			t.Fatalf("%#v: %v", c, err)
		}
		for _, e := range evs {
			if err := m.Evolve(e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	var d device.Device
	for _, c := range []device.Command{
		device.Register{AppID: "a1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformAndroid, Tokens: map[string]string{}}},
		device.Register{AppID: "a1", DeviceID: "d1", Profile: device.Profile{Platform: device.PlatformAndroid, Tokens: map[string]string{"fcm": "t"}}},
		device.BindAlias{Alias: "u1"}, device.AddTags{Tags: []string{"b", "a", "b"}}, device.RemoveTags{Tags: []string{"a"}},
		device.InvalidateToken{Channel: "fcm", Token: "t"}, device.UnbindAlias{}, device.Logout{},
	} {
		evs, err := device.Decide(&d, c, t1)
		if err != nil {
			t.Fatalf("%#v: %v", c, err)
		}
		for _, e := range evs {
			if err := d.Evolve(e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	var a app.App
	for _, c := range []app.Command{
		app.Create{AppID: "a1", Name: " Shop ", AppKey: "k", SecretCiphertext: []byte("sealed")},
		app.ConfigureChannel{Channel: "apns", Config: app.ChannelConfig{Enabled: true, Settings: map[string]string{}}},
		app.RemoveChannel{Channel: "apns"},
		app.AddToBlacklist{Kind: app.KindDevice, Values: []string{"d2", "d1", "d2"}},
		app.RemoveFromBlacklist{Kind: app.KindDevice, Values: []string{"d1"}},
	} {
		evs, err := app.Decide(&a, c, t1)
		if err != nil {
			t.Fatalf("%#v: %v", c, err)
		}
		for _, e := range evs {
			if err := a.Evolve(e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	return out
}

func instance(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestSamplesValidate(t *testing.T) {
	schemas := compile(t)
	full := map[string]bool{}
	for _, e := range fullSamples() {
		full[e.EventType()] = true
	}
	for typ := range decoders() {
		if !full[typ] {
			t.Errorf("no full sample of %s", typ)
		}
	}
	samples := map[string][]event{"full": fullSamples(), "required": requiredSamples(), "decided": decidedSamples(t)}
	for _, kind := range slices.Sorted(maps.Keys(samples)) {
		for i, e := range samples[kind] {
			sch := schemas[e.EventType()]
			if sch == nil {
				t.Errorf("no schema for %s", e.EventType())
				continue
			}
			if err := sch.Validate(instance(t, e)); err != nil {
				b, _ := json.Marshal(e)
				t.Errorf("%s sample %d (%s) %s:\n%v", kind, i, e.EventType(), b, err)
			}
		}
	}
}

// The schemas are closed and their required fields are required.
func TestSchemasRefuse(t *testing.T) {
	schemas := compile(t)
	docs := rawSchemas(t)
	for _, e := range fullSamples() {
		typ := e.EventType()
		sch := schemas[typ]
		if sch == nil {
			continue
		}
		obj := instance(t, e).(map[string]any)
		obj["unexpected"] = true
		if sch.Validate(obj) == nil {
			t.Errorf("%s accepts an unknown property", typ)
		}
		delete(obj, "unexpected")
		required, _ := docs[typ]["required"].([]any)
		for _, r := range required {
			o := maps.Clone(obj)
			delete(o, r.(string))
			if sch.Validate(o) == nil {
				t.Errorf("%s accepts a missing %s", typ, r)
			}
		}
	}
	for _, tc := range []struct {
		name, typ, json string
	}{
		{"attempt 0", message.TypeSending, `{"attempt":0,"channel":"apns","at":"2030-01-02T12:00:00Z"}`},
		{"no channel", message.TypeSending, `{"attempt":1,"channel":"","at":"2030-01-02T12:00:00Z"}`},
		{"not a time", message.TypeExpired, `{"at":"yesterday"}`},
		{"a null time", message.TypeExpired, `{"at":null}`},
		{"bad priority", message.TypeAccepted, `{"message_id":"m","app_id":"a","audience":{"broadcast":true},"target_count":0,"priority":"urgent","ttl_seconds":1,"expires_at":"2030-01-02T12:00:00Z","at":"2030-01-02T12:00:00Z"}`},
		{"two audiences", message.TypeAccepted, `{"message_id":"m","app_id":"a","audience":{"broadcast":true,"aliases":["u"]},"target_count":0,"priority":"normal","ttl_seconds":1,"expires_at":"2030-01-02T12:00:00Z","at":"2030-01-02T12:00:00Z"}`},
		{"no audience", message.TypeAccepted, `{"message_id":"m","app_id":"a","audience":{},"target_count":0,"priority":"normal","ttl_seconds":1,"expires_at":"2030-01-02T12:00:00Z","at":"2030-01-02T12:00:00Z"}`},
		{"tags with only none_of", message.TypeAccepted, `{"message_id":"m","app_id":"a","audience":{"tags":{"none_of":["x"]}},"target_count":0,"priority":"normal","ttl_seconds":1,"expires_at":"2030-01-02T12:00:00Z","at":"2030-01-02T12:00:00Z"}`},
		{"status 0", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","status":0,"retryable":false,"final":false,"at":"2030-01-02T12:00:00Z"}`},
		{"unknown class", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","class":"flaky","retryable":false,"final":false,"at":"2030-01-02T12:00:00Z"}`},
		{"transient, not retryable", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","class":"transient","retryable":false,"final":false,"at":"2030-01-02T12:00:00Z"}`},
		{"token invalid, retryable", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","class":"token_invalid","retryable":true,"final":false,"at":"2030-01-02T12:00:00Z"}`},
		{"final with a retry", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","retryable":true,"final":true,"retry_at":"2030-01-02T12:00:00Z","at":"2030-01-02T12:00:00Z"}`},
		{"alert, not final", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","retryable":true,"final":false,"alert":"a","at":"2030-01-02T12:00:00Z"}`},
		{"empty alert", message.TypeFailed, `{"attempt":1,"channel":"c","reason":"r","retryable":false,"final":true,"alert":"","at":"2030-01-02T12:00:00Z"}`},
		{"negative attempt", message.TypeFailed, `{"attempt":-1,"channel":"c","reason":"r","retryable":false,"final":true,"at":"2030-01-02T12:00:00Z"}`},
		{"empty resend reason", message.TypeResendRequested, `{"reason":"","at":"2030-01-02T12:00:00Z"}`},
		{"bad device id", device.TypeRegistered, `{"app_id":"a","device_id":"d 1","profile":{"platform":"ios"},"at":"2030-01-02T12:00:00Z"}`},
		{"bad platform", device.TypeUpdated, `{"profile":{"platform":"symbian"},"at":"2030-01-02T12:00:00Z"}`},
		{"duplicate tags", device.TypeTagsAdded, `{"tags":["a","a"],"at":"2030-01-02T12:00:00Z"}`},
		{"no tags", device.TypeTagsRemoved, `{"tags":[],"at":"2030-01-02T12:00:00Z"}`},
		{"bad base64", app.TypeCreated, `{"app_id":"a","name":"n","app_key":"k","secret_ciphertext":"not base64!","at":"2030-01-02T12:00:00Z"}`},
		{"bad kind", app.TypeBlacklistAdded, `{"kind":"tenant","values":["x"],"at":"2030-01-02T12:00:00Z"}`},
	} {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if schemas[tc.typ].Validate(inst) == nil {
			t.Errorf("%s: %s accepted %s", tc.name, tc.typ, tc.json)
		}
	}
}
