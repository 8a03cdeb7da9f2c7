package policy

import (
	"fmt"
	"math"
	"time"
)

// Class says how a failed send is handled. Its values, names and meaning
// are shared with the channel port: adapters/channels.Class is this type.
type Class int

const (
	// Transient: the send may succeed if retried later, after RetryAfter
	// when the provider gave one. The zero value, so an unclassified failure
	// is retried.
	Transient Class = iota
	// Permanent: retrying on this channel cannot succeed (rejected,
	// misconfigured, expired). The channel is out for the rest of the cycle.
	Permanent
	// TokenInvalid: the provider says the device's token is invalid or no
	// longer registered. The channel is out for the rest of the cycle and
	// the decision names it in InvalidToken, so that the runtime records
	// the invalidation on the device; after that the runtime excludes the
	// channel for the device (it has no token there).
	TokenInvalid
)

// String returns "transient", "permanent" or "token_invalid".
func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	case TokenInvalid:
		return "token_invalid"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// StatusTooManyRequests is the status (HTTP 429) by which a provider says it
// throttles the sender; RetryPolicy.MinThrottled applies to it.
const StatusTooManyRequests = 429

// Failure is one failed attempt as the channel classified it.
type Failure struct {
	// Channel is the channel the attempt went through.
	Channel string
	// Class says what to do about it.
	Class Class
	// Reason is short and machine-readable ("http_503", "timeout",
	// ReasonAckTimeout, ...). It goes into the message's failed event.
	Reason string
	// Status is the provider's protocol status, 0 when there was none.
	Status int
	// RetryAfter is how long the provider asked to wait, 0 when it did not
	// say. A retry on the same channel is never sooner.
	RetryAfter time.Duration
}

// Throttled reports whether the provider throttled the sender
// (StatusTooManyRequests).
func (f Failure) Throttled() bool { return f.Status == StatusTooManyRequests }

// RetryPolicy is a channel's retry schedule. Durations are JSON numbers of
// nanoseconds (time.Duration's encoding), in fields named *_ns. The zero
// value is not valid; start from DefaultRetryPolicy.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts on the channel in one cycle, the first
	// included: after it the message fails over to another channel. 1..100.
	MaxAttempts int `json:"max_attempts"`
	// Initial is the backoff after the first attempt, before jitter. > 0.
	Initial time.Duration `json:"initial_ns"`
	// Max caps the backoff before jitter. >= Initial.
	Max time.Duration `json:"max_ns"`
	// Multiplier grows the backoff from one attempt to the next. 1..10.
	Multiplier float64 `json:"multiplier"`
	// Jitter spreads each backoff uniformly over ±Jitter of it. 0..1.
	Jitter float64 `json:"jitter"`
	// MinRetryAfter is the channel's documented minimum wait before any
	// retry. >= 0.
	MinRetryAfter time.Duration `json:"min_retry_after_ns"`
	// MinThrottled is the channel's documented minimum wait after the
	// provider throttled the sender (status 429); FCM asks for one minute.
	// >= 0.
	MinThrottled time.Duration `json:"min_throttled_ns"`
}

// DefaultRetryPolicy is the policy of a channel nobody configured:
// 3 attempts, backoff 1 s doubling up to 5 min, ±20 % jitter, no minimums
// beyond the provider's Retry-After.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}
}

// Base returns the backoff after attempt n on the channel (n >= 1; smaller n
// count as 1), before jitter and floors: min(Max, Initial·Multiplier^(n-1)).
// It is non-decreasing in n. Out-of-range fields (an unvalidated policy) are
// clamped, never a panic or a negative duration: a Multiplier below 1 or NaN
// counts as 1, a Max below Initial as Initial.
func (p RetryPolicy) Base(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	initial := max(p.Initial, 0)
	ceil := max(p.Max, initial)
	mult := p.Multiplier
	if !(mult >= 1) {
		mult = 1
	}
	b := float64(initial) * math.Pow(mult, float64(n-1))
	if b >= float64(ceil) {
		return ceil
	}
	return duration(b)
}

// Delay returns how long to wait after attempt n on the channel failed with
// f before the next attempt on it: Base(n) scaled by 1 + Jitter·(2u-1) for
// u = jitter (a uniform draw in [0, 1]; outside it is clamped, NaN is 0.5),
// then raised to f.RetryAfter, MinRetryAfter and, when f is Throttled,
// MinThrottled. So it lies in [Initial·(1-Jitter), Max·(1+Jitter)] (to the
// nanosecond) unless a floor lifts it, and is never below a floor.
func (p RetryPolicy) Delay(n int, f Failure, jitter float64) time.Duration {
	j := clamp01(p.Jitter)
	u := jitter
	if math.IsNaN(u) {
		u = 0.5
	}
	u = clamp01(u)
	d := duration(float64(p.Base(n)) * (1 + j*(2*u-1)))
	d = max(d, f.RetryAfter, p.MinRetryAfter)
	if f.Throttled() {
		d = max(d, p.MinThrottled)
	}
	return d
}

// Next says whether attempt n on the channel, which failed with f, is
// retried on the same channel and after how long: only a Transient failure
// is, and only while n < MaxAttempts. The delay is Delay(n, f, jitter).
func (p RetryPolicy) Next(n int, f Failure, jitter float64) (time.Duration, bool) {
	if f.Class != Transient || n >= p.MaxAttempts {
		return 0, false
	}
	return p.Delay(n, f, jitter), true
}

func (p RetryPolicy) problems(path string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: join(path, field), Problem: fmt.Sprintf(format, args...)})
	}
	if p.MaxAttempts < 1 || p.MaxAttempts > MaxAttemptsLimit {
		bad("max_attempts", "%d not in [1, %d]", p.MaxAttempts, MaxAttemptsLimit)
	}
	if p.Initial <= 0 || p.Initial > MaxDelay {
		bad("initial_ns", "%s not in (0, %s]", p.Initial, MaxDelay)
	}
	if p.Max < p.Initial || p.Max > MaxDelay {
		bad("max_ns", "%s not in [initial, %s]", p.Max, MaxDelay)
	}
	if !(p.Multiplier >= 1 && p.Multiplier <= 10) {
		bad("multiplier", "%v not in [1, 10]", p.Multiplier)
	}
	if !(p.Jitter >= 0 && p.Jitter <= 1) {
		bad("jitter", "%v not in [0, 1]", p.Jitter)
	}
	if p.MinRetryAfter < 0 || p.MinRetryAfter > MaxDelay {
		bad("min_retry_after_ns", "%s not in [0, %s]", p.MinRetryAfter, MaxDelay)
	}
	if p.MinThrottled < 0 || p.MinThrottled > MaxDelay {
		bad("min_throttled_ns", "%s not in [0, %s]", p.MinThrottled, MaxDelay)
	}
	return errs
}

// Validate reports every problem of p at once (errors.Join of
// *ConfigError), or nil.
func (p RetryPolicy) Validate() error { return joinProblems(p.problems("")) }

// duration converts f nanoseconds to a Duration, clamped to
// [0, math.MaxInt64] (a float beyond int64 does not convert portably).
func duration(f float64) time.Duration {
	switch {
	case !(f > 0):
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	}
	return time.Duration(f)
}

func clamp01(f float64) float64 {
	switch {
	case !(f > 0):
		return 0
	case f > 1:
		return 1
	}
	return f
}
