package policy_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/policy"
)

func TestResolverFollowsTheAppAndTheDefault(t *testing.T) {
	base := policy.DefaultConfig()
	var invalid []string
	r := policy.NewResolver(func() policy.Config { return base }, func(id string, _ error) { invalid = append(invalid, id) })
	a := &app.App{ID: "a1", Version: 1}
	if got := r.For(a); got.MaxAttempts != base.MaxAttempts {
		t.Fatalf("no own policy: %d attempts", got.MaxAttempts)
	}
	a.Policy, a.Version = json.RawMessage(`{"max_attempts":4}`), 2
	if got := r.For(a); got.MaxAttempts != 4 || got.AttemptTimeout != base.AttemptTimeout {
		t.Fatalf("own policy: %+v", got)
	}
	// A reloaded default reaches apps with their own policy at once.
	base = base.Clone()
	base.AttemptTimeout = 5 * time.Second
	if got := r.For(a); got.MaxAttempts != 4 || got.AttemptTimeout != 5*time.Second {
		t.Fatalf("after the default changed: %+v", got)
	}
	// A policy that does not validate gives the default, reported once.
	a.Policy, a.Version = json.RawMessage(`{"max_attempts":0}`), 3
	for range 3 {
		if got := r.For(a); got.MaxAttempts != base.MaxAttempts {
			t.Fatalf("invalid own policy: %d attempts", got.MaxAttempts)
		}
	}
	if len(invalid) != 1 || invalid[0] != "a1" {
		t.Fatalf("invalid reported %v, want once for a1", invalid)
	}
}
