package policy_test

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/policy"
)

func TestRetryBase(t *testing.T) {
	p := policy.DefaultRetryPolicy() // 1 s doubling, max 5 min
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{-3, time.Second}, {0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{9, 256 * time.Second}, {10, 5 * time.Minute}, {1000, 5 * time.Minute}, {math.MaxInt, 5 * time.Minute},
	} {
		if got := p.Base(tc.n); got != tc.want {
			t.Errorf("Base(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
	// Unvalidated policies clamp instead of misbehaving.
	for _, tc := range []struct {
		name string
		p    policy.RetryPolicy
		n    int
		want time.Duration
	}{
		{"zero", policy.RetryPolicy{}, 5, 0},
		{"multiplier below 1", policy.RetryPolicy{Initial: time.Second, Max: time.Minute, Multiplier: 0.5}, 5, time.Second},
		{"NaN multiplier", policy.RetryPolicy{Initial: time.Second, Max: time.Minute, Multiplier: math.NaN()}, 5, time.Second},
		{"max below initial", policy.RetryPolicy{Initial: time.Minute, Max: time.Second, Multiplier: 2}, 3, time.Minute},
		{"no max, huge", policy.RetryPolicy{Initial: time.Hour, Multiplier: 10}, 80, time.Hour},
		{"huge max", policy.RetryPolicy{Initial: time.Hour, Max: math.MaxInt64, Multiplier: 10}, 80, math.MaxInt64},
		{"negative initial", policy.RetryPolicy{Initial: -time.Second, Max: time.Second, Multiplier: 2}, 1, 0},
	} {
		if got := tc.p.Base(tc.n); got != tc.want {
			t.Errorf("%s: Base(%d) = %s, want %s", tc.name, tc.n, got, tc.want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	p := policy.RetryPolicy{MaxAttempts: 5, Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.5,
		MinRetryAfter: 3 * time.Second, MinThrottled: 90 * time.Second}
	for _, tc := range []struct {
		name   string
		n      int
		f      policy.Failure
		jitter float64
		want   time.Duration
	}{
		{"low end", 1, policy.Failure{}, 0, 5 * time.Second},
		{"middle", 1, policy.Failure{}, 0.5, 10 * time.Second},
		{"high end", 1, policy.Failure{}, 1, 15 * time.Second},
		{"clamped low", 1, policy.Failure{}, -7, 5 * time.Second},
		{"clamped high", 1, policy.Failure{}, 7, 15 * time.Second},
		{"NaN is the middle", 1, policy.Failure{}, math.NaN(), 10 * time.Second},
		{"second attempt", 2, policy.Failure{}, 0.5, 20 * time.Second},
		{"capped then jittered", 9, policy.Failure{}, 1, 90 * time.Second},
		{"retry-after lifts", 1, policy.Failure{RetryAfter: 42 * time.Second}, 0.5, 42 * time.Second},
		{"retry-after below backoff", 1, policy.Failure{RetryAfter: time.Second}, 0.5, 10 * time.Second},
		{"retry-after beyond max", 9, policy.Failure{RetryAfter: time.Hour}, 1, time.Hour},
		{"throttled minimum", 1, policy.Failure{Status: 429}, 0.5, 90 * time.Second},
		{"throttled, longer retry-after", 1, policy.Failure{Status: 429, RetryAfter: 2 * time.Minute}, 0.5, 2 * time.Minute},
		{"503 is not throttling", 1, policy.Failure{Status: 503}, 0.5, 10 * time.Second},
	} {
		if got := p.Delay(tc.n, tc.f, tc.jitter); got != tc.want {
			t.Errorf("%s: Delay = %s, want %s", tc.name, got, tc.want)
		}
	}
	q := p
	q.Initial, q.Max = time.Second, time.Second
	if got := q.Delay(1, policy.Failure{}, 0); got != 3*time.Second {
		t.Errorf("MinRetryAfter floor: got %s, want 3s", got)
	}
}

func TestRetryNext(t *testing.T) {
	p := policy.DefaultRetryPolicy() // 3 attempts
	for _, tc := range []struct {
		name  string
		n     int
		class policy.Class
		ok    bool
	}{
		{"transient, first", 1, policy.Transient, true},
		{"transient, second", 2, policy.Transient, true},
		{"transient, last", 3, policy.Transient, false},
		{"transient, beyond", 4, policy.Transient, false},
		{"permanent", 1, policy.Permanent, false},
		{"token invalid", 1, policy.TokenInvalid, false},
	} {
		d, ok := p.Next(tc.n, policy.Failure{Class: tc.class}, 0.5)
		if ok != tc.ok || (ok && d != p.Base(tc.n)) || (!ok && d != 0) {
			t.Errorf("%s: Next = %s, %v; want ok %v", tc.name, d, ok, tc.ok)
		}
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[policy.Class]string{policy.Transient: "transient", policy.Permanent: "permanent", policy.TokenInvalid: "token_invalid", 9: "class(9)"} {
		if c.String() != want {
			t.Errorf("%d: %q, want %q", int(c), c.String(), want)
		}
	}
}

func drawRetryPolicy(t *rapid.T) policy.RetryPolicy {
	initial := time.Duration(rapid.Int64Range(1, int64(time.Hour)).Draw(t, "initial"))
	return policy.RetryPolicy{
		MaxAttempts:   rapid.IntRange(1, policy.MaxAttemptsLimit).Draw(t, "max_attempts"),
		Initial:       initial,
		Max:           initial + time.Duration(rapid.Int64Range(0, int64(24*time.Hour)).Draw(t, "max-initial")),
		Multiplier:    rapid.Float64Range(1, 10).Draw(t, "multiplier"),
		Jitter:        rapid.Float64Range(0, 1).Draw(t, "jitter"),
		MinRetryAfter: time.Duration(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "min_retry_after")),
		MinThrottled:  time.Duration(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "min_throttled")),
	}
}

// Backoff before jitter is non-decreasing in the attempt and within
// [Initial, Max]; after jitter it is within [Initial·(1-J), Max·(1+J)] unless
// a floor lifts it, and never below a floor.
func TestPropertyBackoff(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawRetryPolicy(t)
		if err := p.Validate(); err != nil {
			t.Fatalf("drawn policy invalid: %v", err)
		}
		n := rapid.IntRange(1, 200).Draw(t, "n")
		b, b1 := p.Base(n), p.Base(n+1)
		if b1 < b {
			t.Fatalf("Base(%d) = %s > Base(%d) = %s", n, b, n+1, b1)
		}
		if b < p.Initial || b > p.Max {
			t.Fatalf("Base(%d) = %s outside [%s, %s]", n, b, p.Initial, p.Max)
		}
		f := policy.Failure{
			RetryAfter: time.Duration(rapid.Int64Range(0, int64(48*time.Hour)).Draw(t, "retry_after")),
			Status:     rapid.SampledFrom([]int{0, 429, 503}).Draw(t, "status"),
		}
		if rapid.Bool().Draw(t, "no retry-after") {
			f.RetryAfter = 0
		}
		u := rapid.Float64Range(0, 1).Draw(t, "u")
		d := p.Delay(n, f, u)
		floor := max(f.RetryAfter, p.MinRetryAfter)
		if f.Throttled() {
			floor = max(floor, p.MinThrottled)
		}
		if d < floor {
			t.Fatalf("Delay %s below floor %s", d, floor)
		}
		lo := time.Duration(float64(p.Initial)*(1-p.Jitter)) - 1
		hi := time.Duration(float64(p.Max)*(1+p.Jitter)) + 1
		if d > floor && (d < lo || d > hi) {
			t.Fatalf("Delay %s outside [%s, %s]", d, lo, hi)
		}
		// Jitter stays within ±J of the base (to the nanosecond).
		if d > floor {
			jlo := time.Duration(float64(b)*(1-p.Jitter)) - 1
			jhi := time.Duration(float64(b)*(1+p.Jitter)) + 1
			if d < jlo || d > jhi {
				t.Fatalf("Delay %s outside base %s ± %v", d, b, p.Jitter)
			}
		}
		if got, ok := p.Next(n, f, u); ok != (n < p.MaxAttempts) || (ok && got != d) {
			t.Fatalf("Next(%d) = %s, %v with MaxAttempts %d", n, got, ok, p.MaxAttempts)
		}
	})
}
