package policy_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/domain/policy"
)

func TestDefaultConfigValid(t *testing.T) {
	c := policy.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{policy.ChannelGateway, policy.ChannelAPNs, policy.ChannelFCM, policy.ChannelWebhook, "xiaomi"} {
		if err := c.Channel(name).Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := policy.DefaultRetryPolicy().Validate(); err != nil {
		t.Error(err)
	}
	if err := policy.DefaultFailoverPolicy().Validate(); err != nil {
		t.Error(err)
	}
	if c.Channel("xiaomi") != c.Default {
		t.Error("an unconfigured channel does not get the default policy")
	}
	if !c.Channel(policy.ChannelAPNs).HoldInBackground || c.Channel(policy.ChannelGateway).HoldInBackground {
		t.Error("only APNs holds in the background by default")
	}
	if !c.Channel(policy.ChannelGateway).AppDedup || c.Channel(policy.ChannelGateway).AckWindow != 30*time.Second {
		t.Error("gateway: app dedup and a 30 s ack window by default")
	}
	if c.Channel(policy.ChannelFCM).Retry.MinThrottled != time.Minute {
		t.Error("fcm: 1 min after a 429 by default")
	}
}

func TestConfigJSONRoundTrip(t *testing.T) {
	c := policy.DefaultConfig()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back policy.Config
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip:\n%+v\n%+v", c, back)
	}
	for _, field := range []string{`"max_attempts":6`, `"attempt_timeout_ns":60000000000`, `"ack_window_ns":30000000000`, `"hold_in_background":true`, `"half_life_ns"`} {
		if !strings.Contains(string(data), field) {
			t.Errorf("JSON lacks %s: %s", field, data)
		}
	}
}

func TestConfigPartialJSONKeepsDefaults(t *testing.T) {
	c := policy.DefaultConfig()
	if err := json.Unmarshal([]byte(`{"max_attempts":9,"failover":{"priority_spread":1}}`), &c); err != nil {
		t.Fatal(err)
	}
	want := policy.DefaultConfig()
	want.MaxAttempts, want.Failover.PrioritySpread = 9, 1
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := policy.DefaultConfig()
	c.MaxAttempts = 0
	c.MaxResends = -1
	c.AttemptTimeout = 0
	c.Default.Retry.Jitter = 1.5
	c.Default.AckWindow = -time.Second
	apns := c.Channels[policy.ChannelAPNs]
	apns.Retry.Max = apns.Retry.Initial - 1
	apns.Retry.Multiplier = math.NaN()
	c.Channels[policy.ChannelAPNs] = apns
	c.Channels[""] = policy.ChannelPolicy{Retry: policy.DefaultRetryPolicy()}
	c.Failover.Prior = 0
	c.Failover.HalfLife = 0
	err := c.Validate()
	if !errors.Is(err, policy.ErrInvalidConfig) {
		t.Fatalf("not ErrInvalidConfig: %v", err)
	}
	var ce *policy.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("no *ConfigError in %v", err)
	}
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		paths = append(paths, e.(*policy.ConfigError).Path)
	}
	want := []string{
		"max_attempts", "max_resends", "attempt_timeout_ns",
		"default.retry.jitter", "default.ack_window_ns",
		`channels[""]`,
		"channels[apns].retry.max_ns", "channels[apns].retry.multiplier",
		"failover.prior", "failover.half_life_ns",
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("problems at\n%q\nwant\n%q\n%v", paths, want, err)
	}
}

func TestSubPolicyValidate(t *testing.T) {
	if err := (policy.RetryPolicy{}).Validate(); err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 3 {
		t.Errorf("zero RetryPolicy: %v", err) // max_attempts, initial_ns, multiplier
	}
	if err := (policy.FailoverPolicy{}).Validate(); err == nil || !strings.Contains(err.Error(), "prior") || !strings.Contains(err.Error(), "half_life_ns") {
		t.Errorf("zero FailoverPolicy: %v", err)
	}
	if err := (policy.ChannelPolicy{Retry: policy.DefaultRetryPolicy(), AckWindow: policy.MaxDelay + 1}).Validate(); err == nil {
		t.Error("ack window beyond the limit accepted")
	}
	if err := (policy.Config{}).Validate(); err == nil {
		t.Error("zero Config accepted")
	}
}

func TestConfigClone(t *testing.T) {
	c := policy.DefaultConfig()
	d := c.Clone()
	d.Channels[policy.ChannelAPNs] = policy.ChannelPolicy{}
	if c.Channel(policy.ChannelAPNs).Retry.MaxAttempts == 0 {
		t.Fatal("Clone shares the channel map")
	}
}

// A drawn config validates exactly when each field is in range; JSON
// round-trips it.
func TestPropertyConfigValidate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := policy.DefaultConfig()
		bad := 0
		if rapid.Bool().Draw(t, "bad max_attempts") {
			c.MaxAttempts = rapid.SampledFrom([]int{0, -1, 101}).Draw(t, "max_attempts")
			bad++
		}
		if rapid.Bool().Draw(t, "bad jitter") {
			c.Default.Retry.Jitter = rapid.SampledFrom([]float64{-0.1, 1.01, math.NaN(), math.Inf(1)}).Draw(t, "jitter")
			bad++
		}
		if rapid.Bool().Draw(t, "bad gateway ack") {
			gw := c.Channels[policy.ChannelGateway]
			gw.AckWindow = -1
			c.Channels[policy.ChannelGateway] = gw
			bad++
		}
		if rapid.Bool().Draw(t, "bad floor") {
			c.Failover.Floor = 2
			bad++
		}
		err := c.Validate()
		n := 0
		if err != nil {
			n = len(err.(interface{ Unwrap() []error }).Unwrap())
		}
		if n != bad {
			t.Fatalf("%d problems reported, %d made: %v", n, bad, err)
		}
		if bad == 0 {
			data, _ := json.Marshal(c)
			var back policy.Config
			if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, c) {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}
