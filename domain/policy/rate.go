package policy

import (
	"math"
	"time"
)

// RollingRate is a channel's success rate with exponentially decaying
// memory: an outcome observed at time t weighs 2^(-(T-t)/halfLife) at a
// later time T. The runtime keeps one per app and channel, observing a
// success when a device acknowledges a push the channel carried (or, for a
// channel that gets no acknowledgements, when it accepts one) and a failure
// when an attempt on it fails or its acknowledgement times out.
//
// It is a value: Observe returns the updated rate. Observations may arrive
// in any order (nodes' events interleave): the result does not depend on it,
// up to float rounding. A halfLife <= 0 means no decay. The zero value has
// no history. It marshals to JSON as it is, so it can be checkpointed.
type RollingRate struct {
	// Successes and Failures are the decayed weights of the outcomes, as
	// of At.
	Successes float64 `json:"successes"`
	Failures  float64 `json:"failures"`
	// At is the time of the latest observation.
	At time.Time `json:"at"`
}

// Observe returns r with one more outcome, observed at time at.
func (r RollingRate) Observe(success bool, at time.Time, halfLife time.Duration) RollingRate {
	w := 1.0
	switch {
	case r.At.IsZero():
		r.At = at
	case at.After(r.At):
		r = r.decayed(at, halfLife)
	default:
		w = decay(r.At.Sub(at), halfLife) // an older outcome, as it weighs at r.At
	}
	if success {
		r.Successes += w
	} else {
		r.Failures += w
	}
	return r
}

// Rate returns the success rate at time now, 0..1, and the decayed number of
// outcomes it rests on. With no history both are 0.
func (r RollingRate) Rate(now time.Time, halfLife time.Duration) (rate, samples float64) {
	if now.After(r.At) && !r.At.IsZero() {
		r = r.decayed(now, halfLife)
	}
	samples = r.Successes + r.Failures
	if !(samples > 0) {
		return 0, 0
	}
	return clamp01(r.Successes / samples), samples
}

func (r RollingRate) decayed(to time.Time, halfLife time.Duration) RollingRate {
	f := decay(to.Sub(r.At), halfLife)
	return RollingRate{Successes: r.Successes * f, Failures: r.Failures * f, At: to}
}

// decay is the weight, after d, of an outcome of weight 1.
func decay(d, halfLife time.Duration) float64 {
	if halfLife <= 0 || d <= 0 {
		return 1
	}
	return math.Exp2(-float64(d) / float64(halfLife))
}
