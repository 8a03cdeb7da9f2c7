package settings_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/settings"
)

func TestDecideRecordsChangesOnly(t *testing.T) {
	now := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	var s settings.Settings
	// The first setting is recorded even when it is the built-in default.
	evs, err := settings.Decide(&s, settings.SetDeliveryPolicy{Source: "start"}, now)
	if err != nil || len(evs) != 1 || evs[0].(settings.DeliveryPolicySet).Policy != nil {
		t.Fatalf("first: %v %v", evs, err)
	}
	if err := s.Evolve(evs[0]); err != nil {
		t.Fatal(err)
	}
	if evs, err := settings.Decide(&s, settings.SetDeliveryPolicy{Policy: json.RawMessage("null"), Source: "reload"}, now); err != nil || len(evs) != 0 {
		t.Fatalf("same policy again: %v %v", evs, err)
	}
	evs, err = settings.Decide(&s, settings.SetDeliveryPolicy{Policy: json.RawMessage(`{ "max_attempts": 4 }`), Source: "reload"}, now)
	if err != nil || len(evs) != 1 || string(evs[0].(settings.DeliveryPolicySet).Policy) != `{"max_attempts":4}` {
		t.Fatalf("change: %v %v", evs, err)
	}
	if err := s.Evolve(evs[0]); err != nil {
		t.Fatal(err)
	}
	if evs, _ := settings.Decide(&s, settings.SetDeliveryPolicy{Policy: json.RawMessage(`{"max_attempts":4}`)}, now); len(evs) != 0 {
		t.Fatalf("equal after compaction: %v", evs)
	}
	for _, bad := range []string{`[1]`, `{"a":`, "\"x\""} {
		if _, err := settings.Decide(&s, settings.SetDeliveryPolicy{Policy: json.RawMessage(bad)}, now); !errors.Is(err, settings.ErrInvalid) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	e := settings.DeliveryPolicySet{Policy: json.RawMessage(`{"max_attempts":4}`), Source: "config file", At: time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := settings.Decode(e.EventType(), b)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip: %#v %v", got, err)
	}
	if _, err := settings.Decode("settings.unknown.v1", b); err == nil {
		t.Error("unknown type decoded")
	}
}
