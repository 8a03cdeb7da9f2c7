package policy_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/policy"
)

func stat(name string, prio int, rate, samples float64) policy.ChannelStat {
	return policy.ChannelStat{Name: name, Enabled: true, Priority: prio, SuccessRate: rate, Samples: samples}
}

func TestChooseTable(t *testing.T) {
	f := policy.DefaultFailoverPolicy() // min samples 20, prior 0.5, floor 0.05
	disabled := stat("gateway", 0, 1, 100)
	disabled.Enabled = false
	for _, tc := range []struct {
		name    string
		f       policy.FailoverPolicy
		chans   []policy.ChannelStat
		exclude map[string]bool
		pick    float64
		want    string
	}{
		{"none", f, nil, nil, 0, ""},
		{"priority first, whatever the rates", f, []policy.ChannelStat{stat("fcm", 1, 1, 100), stat("gateway", 0, 0.01, 100)}, nil, 0.99, "gateway"},
		{"excluded falls back", f, []policy.ChannelStat{stat("fcm", 1, 1, 100), stat("gateway", 0, 1, 100)}, map[string]bool{"gateway": true}, 0, "fcm"},
		{"disabled falls back", f, []policy.ChannelStat{stat("fcm", 1, 0.1, 100), disabled}, nil, 0, "fcm"},
		{"all excluded", f, []policy.ChannelStat{stat("fcm", 1, 1, 100)}, map[string]bool{"fcm": true}, 0, ""},
		{"unnamed never", f, []policy.ChannelStat{stat("", 0, 1, 100)}, nil, 0, ""},
		{"weighted: low pick", f, []policy.ChannelStat{stat("b", 0, 0.5, 100), stat("a", 0, 0.5, 100)}, nil, 0.49, "a"},
		{"weighted: high pick", f, []policy.ChannelStat{stat("b", 0, 0.5, 100), stat("a", 0, 0.5, 100)}, nil, 0.51, "b"},
		{"weighted: pick 1 clamps", f, []policy.ChannelStat{stat("b", 0, 0.5, 100), stat("a", 0, 0.5, 100)}, nil, 1, "b"},
		{"weighted: NaN pick is 0", f, []policy.ChannelStat{stat("b", 0, 0.5, 100), stat("a", 0, 0.5, 100)}, nil, math.NaN(), "a"},
		{"rates weigh: a 0.9, b 0.1", f, []policy.ChannelStat{stat("a", 0, 0.9, 100), stat("b", 0, 0.1, 100)}, nil, 0.89, "a"},
		{"rates weigh: a 0.9, b 0.1 (2)", f, []policy.ChannelStat{stat("a", 0, 0.9, 100), stat("b", 0, 0.1, 100)}, nil, 0.91, "b"},
		{"duplicate name: first counts", f, []policy.ChannelStat{stat("a", 5, 1, 100), stat("b", 1, 1, 100), stat("a", 0, 1, 100)}, nil, 0, "b"},
		{"spread widens the group", policy.FailoverPolicy{PrioritySpread: 1, MinSamples: 20, Prior: 0.5, Floor: 0.05, HalfLife: time.Minute},
			[]policy.ChannelStat{stat("a", 0, 0.1, 100), stat("b", 1, 0.9, 100), stat("c", 2, 1, 100)}, nil, 0.5, "b"},
		{"extreme priorities do not overflow", policy.FailoverPolicy{PrioritySpread: math.MaxInt, Prior: 0.5},
			[]policy.ChannelStat{stat("a", 1, 1, 100), stat("b", math.MaxInt, 1, 100)}, nil, 0.9, "b"},
		{"extreme priorities: beyond the spread", policy.FailoverPolicy{PrioritySpread: math.MaxInt, Prior: 0.5},
			[]policy.ChannelStat{stat("a", math.MinInt, 1, 100), stat("b", math.MaxInt, 1, 100)}, nil, 0.9, "a"},
	} {
		got, ok := tc.f.Choose(tc.chans, tc.exclude, tc.pick)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: Choose = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

func TestCandidatesWeights(t *testing.T) {
	f := policy.DefaultFailoverPolicy()
	for _, tc := range []struct {
		name  string
		f     policy.FailoverPolicy
		chans []policy.ChannelStat
		want  []policy.Candidate
	}{
		{"rates, floor, neutral mean for the unsampled", f,
			[]policy.ChannelStat{stat("a", 0, 0.9, 100), stat("b", 0, 0.01, 100), stat("new", 0, 0, 3), stat("c", 0, 0.5, 20), stat("low", 1, 1, 100)},
			[]policy.Candidate{{"a", 0, 0.9}, {"b", 0, 0.05}, {"c", 0, 0.5}, {"new", 0, (0.9 + 0.01 + 0.5) / 3}}},
		{"prior when nobody has history", f,
			[]policy.ChannelStat{stat("a", 0, 1, 1), stat("b", 0, 0, 0)},
			[]policy.Candidate{{"a", 0, 0.5}, {"b", 0, 0.5}}},
		{"NaN rate is unknown; out-of-range rates clamp", f,
			[]policy.ChannelStat{stat("a", 0, math.NaN(), 100), stat("b", 0, 7, 100), stat("c", 0, -1, 100)},
			[]policy.Candidate{{"a", 0, 0.5}, {"b", 0, 1}, {"c", 0, 0.05}}},
		{"all zero without floor: equal", policy.FailoverPolicy{Prior: 0.5},
			[]policy.ChannelStat{stat("a", 0, 0, 100), stat("b", 0, 0, 100)},
			[]policy.Candidate{{"a", 0, 1}, {"b", 0, 1}}},
	} {
		got := tc.f.Candidates(tc.chans, nil)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i].Name != tc.want[i].Name || got[i].Priority != tc.want[i].Priority || math.Abs(got[i].Weight-tc.want[i].Weight) > 1e-12 {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

func TestStatsFromApp(t *testing.T) {
	f := policy.DefaultFailoverPolicy()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var r policy.RollingRate
	for i := range 30 {
		r = r.Observe(i%3 != 0, now, f.HalfLife)
	}
	got := f.Stats(map[string]app.ChannelConfig{
		"fcm":     {Enabled: true, Priority: 1},
		"apns":    {Enabled: true, Priority: 1},
		"gateway": {Enabled: true, Priority: 0},
		"webhook": {Enabled: false, Priority: 0},
	}, map[string]policy.RollingRate{"fcm": r}, now)
	names := []string{}
	for _, s := range got {
		names = append(names, s.Name)
	}
	a := app.App{Channels: map[string]app.ChannelConfig{"fcm": {Enabled: true, Priority: 1}, "apns": {Enabled: true, Priority: 1}, "gateway": {Enabled: true}}}
	if !slices.Equal(names, []string{"gateway", "webhook", "apns", "fcm"}) || !slices.Equal(slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "webhook" }), a.ChannelOrder()) {
		t.Fatalf("order %v", names)
	}
	fcm := got[3]
	if fcm.Samples != 30 || math.Abs(fcm.SuccessRate-2.0/3) > 1e-12 || !fcm.Enabled || got[1].Enabled || got[2].Samples != 0 {
		t.Fatalf("stats %+v", got)
	}
}

func drawStats(t *rapid.T) []policy.ChannelStat {
	names := []string{"gateway", "apns", "fcm", "huawei", "xiaomi", "webhook", ""}
	n := rapid.IntRange(0, 8).Draw(t, "channels")
	out := make([]policy.ChannelStat, n)
	for i := range out {
		out[i] = policy.ChannelStat{
			Name:        rapid.SampledFrom(names).Draw(t, "name"),
			Enabled:     rapid.IntRange(0, 3).Draw(t, "enabled") > 0,
			Priority:    rapid.IntRange(-2, 3).Draw(t, "priority"),
			SuccessRate: rapid.SampledFrom([]float64{0, 0.01, 0.3, 0.5, 0.99, 1, math.NaN(), -0.5, 2}).Draw(t, "rate"),
			Samples:     rapid.SampledFrom([]float64{0, 5, 19.9, 20, 1000}).Draw(t, "samples"),
		}
	}
	return out
}

// Choose never returns an excluded, disabled or unnamed channel; it returns
// one whenever one is available, from the best available priority group;
// the order of its input does not matter.
func TestPropertyChoose(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := policy.DefaultFailoverPolicy()
		f.PrioritySpread = rapid.IntRange(0, 2).Draw(t, "spread")
		f.Floor = rapid.SampledFrom([]float64{0, 0.05, 1}).Draw(t, "floor")
		chans := drawStats(t)
		exclude := map[string]bool{}
		for _, n := range rapid.SliceOf(rapid.SampledFrom([]string{"gateway", "apns", "fcm", "webhook"})).Draw(t, "exclude") {
			exclude[n] = true
		}
		pick := rapid.Float64Range(0, 1).Draw(t, "pick")
		name, ok := f.Choose(chans, exclude, pick)

		// The first entry of a name counts.
		seen := map[string]bool{}
		var avail []policy.ChannelStat
		for _, s := range chans {
			if !seen[s.Name] {
				seen[s.Name] = true
				if s.Name != "" && s.Enabled && !exclude[s.Name] {
					avail = append(avail, s)
				}
			}
		}
		if ok != (len(avail) > 0) {
			t.Fatalf("ok %v with %d available", ok, len(avail))
		}
		if !ok {
			return
		}
		best := avail[0].Priority
		for _, s := range avail {
			best = min(best, s.Priority)
		}
		i := slices.IndexFunc(avail, func(s policy.ChannelStat) bool { return s.Name == name })
		if i < 0 {
			t.Fatalf("chose %q, not available", name)
		}
		if avail[i].Priority > best+f.PrioritySpread {
			t.Fatalf("chose %q at priority %d; best available %d, spread %d", name, avail[i].Priority, best, f.PrioritySpread)
		}
		shuffled := slices.Clone(chans)
		rapid.Permutation(shuffled).Draw(t, "shuffle")
		// A permutation may change which duplicate counts: only compare
		// inputs without duplicate names.
		if len(seen) == len(chans) {
			if again, _ := f.Choose(shuffled, exclude, pick); again != name {
				t.Fatalf("order matters: %q then %q", name, again)
			}
		}
	})
}

// Over many picks, each channel of the group is chosen about as often as
// its weight says. A statistical check with a fixed seed and a tolerance far
// above the sampling error (about 0.001 here).
func TestChooseFrequenciesFollowSuccessRates(t *testing.T) {
	f := policy.DefaultFailoverPolicy()
	chans := []policy.ChannelStat{
		stat("a", 0, 0.9, 500),
		stat("b", 0, 0.6, 500),
		stat("c", 0, 0.3, 500),
		stat("new", 0, 0, 2),      // neutral: the mean of a, b, c, dead = 0.45
		stat("dead", 0, 0, 500),   // the floor: 0.05
		stat("backup", 1, 1, 500), // never: a lower priority
	}
	want := map[string]float64{"a": 0.9 / 2.3, "b": 0.6 / 2.3, "c": 0.3 / 2.3, "new": 0.45 / 2.3, "dead": 0.05 / 2.3}
	const n = 200_000
	for _, src := range []struct {
		name string
		pick func(i int) float64
	}{
		{"math/rand PCG(1, 2)", func() func(int) float64 {
			r := rand.New(rand.NewPCG(1, 2))
			return func(int) float64 { return r.Float64() }
		}()},
		{"Draw over message ids", func(i int) float64 { return policy.Draw(fmt.Sprintf("msg-%d", i), 1, 0, 1) }},
	} {
		count := map[string]int{}
		for i := range n {
			name, _ := f.Choose(chans, nil, src.pick(i))
			count[name]++
		}
		if count["backup"] != 0 {
			t.Errorf("%s: a lower priority was chosen %d times", src.name, count["backup"])
		}
		for name, p := range want {
			got := float64(count[name]) / n
			if math.Abs(got-p) > 0.01 {
				t.Errorf("%s: %s chosen %.4f of the time, want %.4f ± 0.01", src.name, name, got, p)
			}
		}
	}
}

func TestDrawUniform(t *testing.T) {
	const n, buckets = 100_000, 10
	var hist [buckets]int
	for i := range n {
		u := policy.Draw("m", i)
		if u < 0 || u >= 1 {
			t.Fatalf("Draw = %v", u)
		}
		hist[int(u*buckets)]++
	}
	for b, c := range hist {
		if math.Abs(float64(c)/n-1.0/buckets) > 0.01 {
			t.Errorf("bucket %d holds %d of %d", b, c, n)
		}
	}
	if policy.Draw("m", 1, 2) != policy.Draw("m", 1, 2) || policy.Draw("m", 1, 2) == policy.Draw("m", 2, 1) || policy.Draw("m1", 1) == policy.Draw("m2", 1) {
		t.Error("Draw is not a deterministic function of all its inputs")
	}
}

func TestRollingRate(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	hl := 10 * time.Minute
	var r policy.RollingRate
	if rate, n := r.Rate(t0, hl); rate != 0 || n != 0 {
		t.Fatalf("empty: %v, %v", rate, n)
	}
	r = r.Observe(true, t0, hl)
	r = r.Observe(true, t0, hl)
	r = r.Observe(false, t0, hl)
	if rate, n := r.Rate(t0, hl); math.Abs(rate-2.0/3) > 1e-12 || n != 3 {
		t.Fatalf("at t0: %v, %v", rate, n)
	}
	if rate, n := r.Rate(t0.Add(hl), hl); math.Abs(rate-2.0/3) > 1e-12 || math.Abs(n-1.5) > 1e-12 {
		t.Fatalf("one half-life on: %v, %v", rate, n)
	}
	// New outcomes outweigh old ones.
	r = r.Observe(false, t0.Add(3*hl), hl)
	r = r.Observe(false, t0.Add(3*hl), hl)
	if rate, _ := r.Rate(t0.Add(3*hl), hl); math.Abs(rate-(2.0/8)/(3.0/8+2)) > 1e-12 {
		t.Fatalf("after decay: %v", rate)
	}
	// An earlier time than the latest does not decay anything.
	if rate, n := r.Rate(t0, hl); n != 3.0/8+2 || math.Abs(rate-(2.0/8)/(3.0/8+2)) > 1e-12 {
		t.Fatalf("asked in the past: %v, %v", rate, n)
	}
	// No decay with a half-life of 0.
	var flat policy.RollingRate
	flat = flat.Observe(true, t0, 0).Observe(false, t0.Add(24*time.Hour), 0)
	if rate, n := flat.Rate(t0.Add(48*time.Hour), 0); rate != 0.5 || n != 2 {
		t.Fatalf("no decay: %v, %v", rate, n)
	}
}

// The order in which outcomes are observed does not matter; the rate is
// in [0, 1]; samples never grow without observations.
func TestPropertyRollingRateOrderFree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		hl := rapid.SampledFrom([]time.Duration{0, time.Minute, time.Hour}).Draw(t, "half-life")
		type obs struct {
			ok bool
			at time.Time
		}
		n := rapid.IntRange(0, 30).Draw(t, "n")
		list := make([]obs, n)
		for i := range list {
			list[i] = obs{rapid.Bool().Draw(t, "ok"), t0.Add(time.Duration(rapid.IntRange(0, 7200).Draw(t, "s")) * time.Second)}
		}
		var a, b policy.RollingRate
		for _, o := range list {
			a = a.Observe(o.ok, o.at, hl)
		}
		shuffled := slices.Clone(list)
		rapid.Permutation(shuffled).Draw(t, "shuffle")
		for _, o := range shuffled {
			b = b.Observe(o.ok, o.at, hl)
		}
		now := t0.Add(3 * time.Hour)
		ra, na := a.Rate(now, hl)
		rb, nb := b.Rate(now, hl)
		if math.Abs(ra-rb) > 1e-9 || math.Abs(na-nb) > 1e-9*max(1, na) {
			t.Fatalf("order matters: %v/%v vs %v/%v", ra, na, rb, nb)
		}
		if ra < 0 || ra > 1 || na > float64(n)+1e-9 {
			t.Fatalf("rate %v, samples %v of %d", ra, na, n)
		}
		if later, nl := a.Rate(now.Add(time.Hour), hl); nl > na+1e-9 || (hl > 0 && n > 0 && nl >= na) || math.Abs(later-ra) > 1e-9 {
			t.Fatalf("decay: %v/%v then %v/%v", ra, na, later, nl)
		}
	})
}
