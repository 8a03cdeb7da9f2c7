package webhook

import (
	"math"
	"testing"
	"time"
)

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", 0}, // out of int64 range: malformed
		{"9223372036854775807", time.Duration(math.MaxInt64)},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second}, // IMF-fixdate
		{"Sunday, 01-Mar-26 12:01:00 GMT", time.Minute},     // RFC 850
		{"Sun Mar  1 12:02:00 2026", 2 * time.Minute},       // asctime
		{"Sun, 01 Mar 2026 12:00:00 GMT", 0},                // now
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},                // past
	}
	for _, tc := range tests {
		if got := retryAfter(tc.value, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.value, got, tc.want)
		}
	}
}
