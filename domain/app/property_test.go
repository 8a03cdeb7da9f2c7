package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/app"
)

func drawSettings(t *rapid.T) map[string]string {
	switch rapid.IntRange(0, 3).Draw(t, "settings") {
	case 0:
		return nil
	case 1:
		return map[string]string{}
	case 2:
		return map[string]string{"k": rapid.SampledFrom([]string{"v", "\xff"}).Draw(t, "v")}
	default:
		return map[string]string{"k": "w", "team": "T"}
	}
}

func drawValues(t *rapid.T) []string {
	if rapid.IntRange(0, 19).Draw(t, "too many?") == 0 {
		out := make([]string, 1001)
		for i := range out {
			out[i] = fmt.Sprint(i)
		}
		return out
	}
	if rapid.IntRange(0, 9).Draw(t, "nil?") == 0 {
		return nil
	}
	pool := []string{"u1", "u2", "d1", "", "\xff", "\xfe", strings.Repeat("v", 129)}
	return rapid.SliceOfN(rapid.SampledFrom(pool), 0, 4).Draw(t, "values")
}

func drawCommand(t *rapid.T) app.Command {
	kind := func() string {
		return rapid.SampledFrom([]string{app.KindUser, app.KindDevice, app.KindGroup, "", "tenant"}).Draw(t, "kind")
	}
	channel := func() string {
		return rapid.SampledFrom([]string{"apns", "fcm", "gateway", "", "\xfe", strings.Repeat("c", 65)}).Draw(t, "channel")
	}
	switch rapid.IntRange(0, 8).Draw(t, "command") {
	case 0, 1:
		return app.Create{
			AppID:            rapid.SampledFrom([]string{"a1", "a1", ""}).Draw(t, "id"),
			Name:             rapid.SampledFrom([]string{"Shop", " Shop ", "", "Sh\xffop", "  ", strings.Repeat("n", 201)}).Draw(t, "name"),
			AppKey:           rapid.SampledFrom([]string{"k1", "k1", ""}).Draw(t, "key"),
			SecretCiphertext: rapid.SampledFrom([][]byte{{1, 2, 3}, {0xff}, nil, {}}).Draw(t, "secret"),
		}
	case 2, 3:
		return app.ConfigureChannel{Channel: channel(), Config: app.ChannelConfig{
			Enabled: rapid.Bool().Draw(t, "enabled"), Priority: rapid.IntRange(-1, 2).Draw(t, "priority"), Settings: drawSettings(t),
		}}
	case 4:
		return app.RemoveChannel{Channel: channel()}
	case 5, 6:
		return app.AddToBlacklist{Kind: kind(), Values: drawValues(t)}
	default:
		return app.RemoveFromBlacklist{Kind: kind(), Values: drawValues(t)}
	}
}

var zones = []*time.Location{time.UTC, time.FixedZone("E", 5*3600+1800), time.FixedZone("W", -8*3600)}

func TestPropertyReplayEqualsIncremental(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var a app.App
		var log []app.Event
		now := t0
		for range rapid.IntRange(1, 40).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(48*time.Hour)).Draw(t, "step"))).In(rapid.SampledFrom(zones).Draw(t, "zone"))
			cmd := drawCommand(t)
			before := cloneApp(a)
			evs, err := app.Decide(&a, cmd, now)
			if !reflect.DeepEqual(a, before) {
				t.Fatalf("Decide(%#v) changed the state", cmd)
			}
			if err != nil {
				if evs != nil {
					t.Fatalf("events and error %v", err)
				}
				if !errors.Is(err, app.ErrInvalid) && !errors.Is(err, app.ErrNotFound) && !errors.Is(err, app.ErrInvalidTransition) {
					t.Fatalf("Decide(%#v): %v wraps no sentinel", cmd, err)
				}
				continue
			}
			for _, e := range evs {
				checkRoundTrip(t, e)
				shallow, deep := a, cloneApp(a)
				if err := a.Evolve(e); err != nil {
					t.Fatalf("Evolve rejects decided %#v: %v", e, err)
				}
				if !reflect.DeepEqual(shallow, deep) {
					t.Fatalf("Evolve(%s) changed a copy of the state", e.EventType())
				}
				log = append(log, e)
			}
			if a.Version != len(log) {
				t.Fatalf("version %d, %d events", a.Version, len(log))
			}
			// Repeating a command that succeeded changes nothing; creating
			// again is refused.
			again, err := app.Decide(&a, cmd, now.Add(time.Second))
			if _, create := cmd.(app.Create); create {
				if !errors.Is(err, app.ErrInvalidTransition) {
					t.Fatalf("second create: %v, %v", again, err)
				}
			} else if err != nil || len(again) != 0 {
				t.Fatalf("repeated %#v: %v, %v", cmd, again, err)
			}
		}
		replayed, err := app.Replay(log)
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
		if !reflect.DeepEqual(replayed, a) {
			t.Fatalf("replay differs:\n got %#v\nwant %#v", replayed, a)
		}
		decoded := make([]app.Event, len(log))
		for i, e := range log {
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if decoded[i], err = app.Decode(e.EventType(), b); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
		}
		if replayed, err = app.Replay(decoded); err != nil || !reflect.DeepEqual(replayed, a) {
			t.Fatalf("replay of decoded events (%v):\n got %#v\nwant %#v", err, replayed, a)
		}
	})
}

func checkRoundTrip(t *rapid.T, e app.Event) {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal %#v: %v", e, err)
	}
	got, err := app.Decode(e.EventType(), b)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("JSON round trip of %s (%v):\n got %#v\nwant %#v", e.EventType(), err, got, e)
	}
}

// FuzzDecode: Decode never panics; what it accepts encodes and decodes
// again to the same JSON.
func FuzzDecode(f *testing.F) {
	types := append(app.EventTypes(), "app.unknown.v1")
	index := map[string]uint8{}
	for i, typ := range types {
		index[typ] = uint8(i)
	}
	for _, e := range sampleEvents() {
		b, _ := json.Marshal(e)
		f.Add(index[e.EventType()], b)
	}
	f.Add(uint8(0), []byte(`{"secret_ciphertext":"AQID","at":"2030-01-01T00:00:00.5-07:00"}`))
	f.Add(uint8(1), []byte(`{"config":{"settings":{"a":null}}}`))
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		typ := types[int(sel)%len(types)]
		e, err := app.Decode(typ, data)
		if err != nil {
			if e != nil {
				t.Fatalf("event %#v with error %v", e, err)
			}
			return
		}
		if e.EventType() != typ {
			t.Fatalf("Decode(%s) = %s", typ, e.EventType())
		}
		b, err := json.Marshal(e)
		if err != nil {
			return // a time JSON reads but cannot write; Decide never makes one
		}
		e2, err := app.Decode(typ, b)
		if err != nil {
			t.Fatalf("decode of encoded %s: %v", b, err)
		}
		if b2, err := json.Marshal(e2); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %s vs %s (%v)", b, b2, err)
		}
	})
}
