package policy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/pushledger/pushledger/domain/app"
)

// ChannelStat is what the failover policy knows of one of an app's channels.
type ChannelStat struct {
	// Name is the channel's name.
	Name string
	// Enabled is the app's switch for the channel; a disabled channel is
	// never chosen.
	Enabled bool
	// Priority orders channels as app.ChannelConfig does: lower first.
	Priority int
	// SuccessRate is the channel's rolling success rate, 0..1 (see
	// RollingRate); values outside are clamped and NaN counts as unknown.
	SuccessRate float64
	// Samples is how much history SuccessRate rests on (RollingRate's
	// decayed count of outcomes).
	Samples float64
}

// FailoverPolicy chooses the channel of an attempt. Durations are JSON
// numbers of nanoseconds. The zero value is not valid; start from
// DefaultFailoverPolicy.
type FailoverPolicy struct {
	// PrioritySpread widens the group chosen from: channels whose priority
	// is at most the best available priority plus PrioritySpread. 0 (the
	// default) chooses among the best priority only; a larger spread lets
	// success rates outweigh the configured order. >= 0.
	PrioritySpread int `json:"priority_spread"`
	// MinSamples is how much history a channel needs before its success
	// rate counts. A channel with less gets a neutral rate: the mean rate
	// of the group's channels that have enough, or Prior when none has.
	// >= 0; default 20.
	MinSamples float64 `json:"min_samples"`
	// Prior is the neutral rate when no channel of the group has enough
	// history. (0, 1]; default 0.5.
	Prior float64 `json:"prior"`
	// Floor is the least weight of a channel in the group, so that a
	// channel whose rate fell to nothing is still tried now and then and
	// its rate can recover. [0, 1]; default 0.05.
	Floor float64 `json:"floor"`
	// HalfLife is the RollingRate half-life: how fast old outcomes stop
	// counting. (0, 28d]; default 15 min.
	HalfLife time.Duration `json:"half_life_ns"`
}

// DefaultFailoverPolicy: best priority only, 20 samples before a rate
// counts, neutral prior 0.5, floor 0.05, half-life 15 min.
func DefaultFailoverPolicy() FailoverPolicy {
	return FailoverPolicy{MinSamples: 20, Prior: 0.5, Floor: 0.05, HalfLife: 15 * time.Minute}
}

// Candidate is a channel of the group a choice is made from, with its
// weight.
type Candidate struct {
	Name     string
	Priority int
	Weight   float64
}

// Candidates returns the group Choose chooses from, ordered by priority then
// name, with each member's weight: the channels that are enabled, named,
// not in exclude, and within PrioritySpread of the best priority among
// those. A channel's weight is its success rate (clamped to [0, 1]; the
// neutral rate when it has fewer than MinSamples samples or its rate is NaN),
// raised to Floor. When every weight is 0 they are all 1. When a name
// appears twice the first entry counts. The result is nil when no channel
// is available.
func (f FailoverPolicy) Candidates(chans []ChannelStat, exclude map[string]bool) []Candidate {
	seen := map[string]bool{}
	var avail []ChannelStat
	for _, s := range chans {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		if s.Name != "" && s.Enabled && !exclude[s.Name] {
			avail = append(avail, s)
		}
	}
	if len(avail) == 0 {
		return nil
	}
	best := avail[0].Priority
	for _, s := range avail {
		best = min(best, s.Priority)
	}
	spread := max(f.PrioritySpread, 0)
	known := func(s ChannelStat) bool { return s.Samples >= f.MinSamples && !math.IsNaN(s.SuccessRate) }
	var group []ChannelStat
	sum, n := 0.0, 0
	for _, s := range avail {
		// p - best as unsigned is exact for every pair of ints (p >= best).
		if uint(s.Priority)-uint(best) <= uint(spread) {
			group = append(group, s)
			if known(s) {
				sum, n = sum+clamp01(s.SuccessRate), n+1
			}
		}
	}
	neutral := clamp01(f.Prior)
	if n > 0 {
		neutral = sum / float64(n)
	}
	slices.SortFunc(group, func(a, b ChannelStat) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
	})
	out := make([]Candidate, len(group))
	total := 0.0
	for i, s := range group {
		w := neutral
		if known(s) {
			w = clamp01(s.SuccessRate)
		}
		w = max(w, clamp01(f.Floor))
		out[i] = Candidate{Name: s.Name, Priority: s.Priority, Weight: w}
		total += w
	}
	if total == 0 {
		for i := range out {
			out[i].Weight = 1
		}
	}
	return out
}

// Choose returns the channel for an attempt: a member of Candidates(chans,
// exclude), chosen with probability proportional to its weight when pick is
// a uniform draw in [0, 1) (outside it is clamped; NaN is 0). The same
// arguments give the same channel, whatever the order of chans. ok is false
// when no channel is available.
func (f FailoverPolicy) Choose(chans []ChannelStat, exclude map[string]bool, pick float64) (name string, ok bool) {
	group := f.Candidates(chans, exclude)
	if len(group) == 0 {
		return "", false
	}
	total := 0.0
	for _, c := range group {
		total += c.Weight
	}
	if !(pick > 0) {
		pick = 0
	}
	target := min(pick, 1) * total
	cum := 0.0
	for _, c := range group {
		cum += c.Weight
		if target < cum {
			return c.Name, true
		}
	}
	return group[len(group)-1].Name, true
}

// Stats returns the ChannelStat of each of an app's channels (enabled or
// not), ordered as app.App.ChannelOrder orders them, with the success rate
// and samples of its RollingRate in rates at time now (a channel without one
// has no samples).
func (f FailoverPolicy) Stats(channels map[string]app.ChannelConfig, rates map[string]RollingRate, now time.Time) []ChannelStat {
	out := make([]ChannelStat, 0, len(channels))
	for name, cfg := range channels {
		rate, samples := rates[name].Rate(now, f.HalfLife)
		out = append(out, ChannelStat{Name: name, Enabled: cfg.Enabled, Priority: cfg.Priority, SuccessRate: rate, Samples: samples})
	}
	slices.SortFunc(out, func(a, b ChannelStat) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func (f FailoverPolicy) problems(path string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: join(path, field), Problem: fmt.Sprintf(format, args...)})
	}
	if f.PrioritySpread < 0 {
		bad("priority_spread", "%d is negative", f.PrioritySpread)
	}
	if !(f.MinSamples >= 0 && f.MinSamples <= 1e6) {
		bad("min_samples", "%v not in [0, 1e6]", f.MinSamples)
	}
	if !(f.Prior > 0 && f.Prior <= 1) {
		bad("prior", "%v not in (0, 1]", f.Prior)
	}
	if !(f.Floor >= 0 && f.Floor <= 1) {
		bad("floor", "%v not in [0, 1]", f.Floor)
	}
	if f.HalfLife <= 0 || f.HalfLife > MaxDelay {
		bad("half_life_ns", "%s not in (0, %s]", f.HalfLife, MaxDelay)
	}
	return errs
}

// Validate reports every problem of f at once, or nil.
func (f FailoverPolicy) Validate() error { return joinProblems(f.problems("")) }
