package device_test

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

	"github.com/pushledger/pushledger/domain/device"
)

func drawTokens(t *rapid.T) map[string]string {
	switch rapid.IntRange(0, 7).Draw(t, "tokens") {
	case 0:
		return nil
	case 1:
		return map[string]string{}
	case 2:
		return map[string]string{"fcm": "t1"}
	case 3:
		return map[string]string{"fcm": rapid.SampledFrom([]string{"t2", "t\xff"}).Draw(t, "t2")}
	case 4:
		return map[string]string{"fcm": "t1", "apns": "a1"}
	case 5:
		return map[string]string{"": "t1"} // invalid
	case 6:
		return map[string]string{"fcm": ""} // invalid
	default:
		return map[string]string{"fcm": strings.Repeat("t", 4097)} // invalid
	}
}

func drawTags(t *rapid.T) []string {
	if rapid.IntRange(0, 9).Draw(t, "bulk?") == 0 {
		n := rapid.IntRange(90, device.MaxTagsCmd+1).Draw(t, "bulk")
		off := rapid.IntRange(0, 50).Draw(t, "offset")
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("t%d", off+i)
		}
		return out
	}
	pool := []string{"a", "b", "c", "", "\xff", "\xfe", strings.Repeat("l", device.MaxTagLen+1)}
	if rapid.Bool().Draw(t, "nil?") {
		return nil
	}
	return rapid.SliceOfN(rapid.SampledFrom(pool), 0, 4).Draw(t, "tags")
}

func drawCommand(t *rapid.T) device.Command {
	switch rapid.IntRange(0, 9).Draw(t, "command") {
	case 0, 1:
		return device.Register{
			AppID:    rapid.SampledFrom([]string{"a1", "a1", ""}).Draw(t, "app"),
			DeviceID: rapid.SampledFrom([]string{"d1", "d1", "", "d 1", strings.Repeat("d", device.MaxIDLen+1)}).Draw(t, "device"),
			Profile: device.Profile{
				Platform:  rapid.SampledFrom([]string{device.PlatformAndroid, device.PlatformIOS, device.PlatformHarmony, device.PlatformWeb, "", "symbian"}).Draw(t, "platform"),
				Brand:     rapid.SampledFrom([]string{"", "X", "\xff"}).Draw(t, "brand"),
				Model:     rapid.SampledFrom([]string{"", "M"}).Draw(t, "model"),
				OSVersion: rapid.SampledFrom([]string{"", "14", "15"}).Draw(t, "os"),
				Tokens:    drawTokens(t),
			},
		}
	case 2:
		return device.BindAlias{Alias: rapid.SampledFrom([]string{"u1", "u2", "", "u\xff", strings.Repeat("u", device.MaxIDLen+1)}).Draw(t, "alias")}
	case 3:
		return device.UnbindAlias{}
	case 4, 5:
		return device.AddTags{Tags: drawTags(t)}
	case 6:
		return device.RemoveTags{Tags: drawTags(t)}
	case 7:
		return device.Logout{}
	default:
		return device.InvalidateToken{
			Channel: rapid.SampledFrom([]string{"fcm", "apns", "", "hms"}).Draw(t, "channel"),
			Token:   rapid.SampledFrom([]string{"t1", "t2", "a1", ""}).Draw(t, "token"),
			Reason:  rapid.SampledFrom([]string{"", "unregistered"}).Draw(t, "reason"),
		}
	}
}

var zones = []*time.Location{time.UTC, time.FixedZone("E", 5*3600+1800), time.FixedZone("W", -8*3600)}

func TestPropertyReplayEqualsIncremental(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var d device.Device
		var log []device.Event
		now := t0
		for range rapid.IntRange(1, 40).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(48*time.Hour)).Draw(t, "step"))).In(rapid.SampledFrom(zones).Draw(t, "zone"))
			cmd := drawCommand(t)
			before := cloneDevice(d)
			evs, err := device.Decide(&d, cmd, now)
			if !reflect.DeepEqual(d, before) {
				t.Fatalf("Decide(%#v) changed the state", cmd)
			}
			if err != nil {
				if evs != nil {
					t.Fatalf("events and error %v", err)
				}
				if !errors.Is(err, device.ErrInvalid) && !errors.Is(err, device.ErrNotFound) && !errors.Is(err, device.ErrInvalidTransition) {
					t.Fatalf("Decide(%#v): %v wraps no sentinel", cmd, err)
				}
				continue
			}
			for _, e := range evs {
				checkRoundTrip(t, e)
				// Evolving must not reach into a copy of the state.
				shallow, deep := d, cloneDevice(d)
				if err := d.Evolve(e); err != nil {
					t.Fatalf("Evolve rejects decided %#v: %v", e, err)
				}
				if !reflect.DeepEqual(shallow, deep) {
					t.Fatalf("Evolve(%s) changed a copy of the state", e.EventType())
				}
				log = append(log, e)
			}
			if d.Version != len(log) || (d.Active && !d.Registered) || (!d.Active && d.Alias != "") || len(d.Tags) > device.MaxTags {
				t.Fatalf("state %+v after %d events", d, len(log))
			}
			// Repeating a command that succeeded changes nothing (a
			// second logout finds no registered device).
			again, err := device.Decide(&d, cmd, now.Add(time.Second))
			if _, logout := cmd.(device.Logout); logout {
				if !errors.Is(err, device.ErrNotFound) {
					t.Fatalf("second logout: %v, %v", again, err)
				}
			} else if err != nil || len(again) != 0 {
				t.Fatalf("repeated %#v: %v, %v", cmd, again, err)
			}
		}
		replayed, err := device.Replay(log)
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
		if !reflect.DeepEqual(replayed, d) {
			t.Fatalf("replay differs:\n got %#v\nwant %#v", replayed, d)
		}
		decoded := make([]device.Event, len(log))
		for i, e := range log {
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if decoded[i], err = device.Decode(e.EventType(), b); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
		}
		if replayed, err = device.Replay(decoded); err != nil || !reflect.DeepEqual(replayed, d) {
			t.Fatalf("replay of decoded events (%v):\n got %#v\nwant %#v", err, replayed, d)
		}
	})
}

func checkRoundTrip(t *rapid.T, e device.Event) {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal %#v: %v", e, err)
	}
	got, err := device.Decode(e.EventType(), b)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("JSON round trip of %s (%v):\n got %#v\nwant %#v", e.EventType(), err, got, e)
	}
}

// FuzzDecode: Decode never panics; what it accepts encodes and decodes
// again to the same JSON.
func FuzzDecode(f *testing.F) {
	types := append(device.EventTypes(), "device.unknown.v1")
	index := map[string]uint8{}
	for i, typ := range types {
		index[typ] = uint8(i)
	}
	for _, e := range sampleEvents() {
		b, _ := json.Marshal(e)
		f.Add(index[e.EventType()], b)
	}
	f.Add(uint8(0), []byte(`{"profile":{"tokens":{"a":1}}}`))
	f.Add(uint8(4), []byte(`{"tags":null}`))
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		typ := types[int(sel)%len(types)]
		e, err := device.Decode(typ, data)
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
		e2, err := device.Decode(typ, b)
		if err != nil {
			t.Fatalf("decode of encoded %s: %v", b, err)
		}
		if b2, err := json.Marshal(e2); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %s vs %s (%v)", b, b2, err)
		}
	})
}
