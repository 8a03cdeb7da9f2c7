package channels_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
)

func TestClassify(t *testing.T) {
	transient := &channels.SendError{Class: channels.Transient, Reason: "http_503"}
	permanent := &channels.SendError{Class: channels.Permanent, Reason: "http_400"}
	invalid := &channels.SendError{Class: channels.TokenInvalid, Reason: "unregistered"}
	unknown := &channels.SendError{Class: channels.Class(42), Reason: "odd"}
	tests := []struct {
		name  string
		err   error
		class channels.Class
		se    *channels.SendError
	}{
		{"transient", transient, channels.Transient, transient},
		{"permanent", permanent, channels.Permanent, permanent},
		{"token invalid wrapped", fmt.Errorf("sending: %w", invalid), channels.TokenInvalid, invalid},
		{"unknown class", unknown, channels.Transient, unknown},
		{"plain error", errors.New("boom"), channels.Transient, nil},
		{"context", context.DeadlineExceeded, channels.Transient, nil},
		{"bare expired", fmt.Errorf("x: %w", channels.ErrExpired), channels.Permanent, nil},
		{"nil", nil, channels.Transient, nil},
	}
	for _, tc := range tests {
		class, se := channels.Classify(tc.err)
		if class != tc.class || se != tc.se {
			t.Errorf("%s: Classify = %v, %v; want %v, %v", tc.name, class, se, tc.class, tc.se)
		}
	}
}

func TestSendError(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	err := &channels.SendError{Class: channels.Transient, Status: 503, Reason: "http_503", RetryAfter: 2 * time.Second, Err: cause}
	if got, want := err.Error(), "channel: transient http_503 (status 503), retry after 2s: unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, cause) {
		t.Error("SendError does not unwrap to its cause")
	}
	if got := (&channels.SendError{Class: channels.TokenInvalid}).Error(); got != "channel: token_invalid" {
		t.Errorf("Error() = %q", got)
	}
}

func TestCheckExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expiresAt time.Time
		expired   bool
	}{
		{time.Time{}, false},
		{now.Add(time.Nanosecond), false},
		{now, true},
		{now.Add(-time.Hour), true},
	} {
		p := channels.Push{ExpiresAt: tc.expiresAt}
		err := channels.CheckExpiry(p, now)
		if tc.expired != (err != nil) || p.Expired(now) != tc.expired {
			t.Errorf("expires at %v, now %v: CheckExpiry = %v, Expired = %v", tc.expiresAt, now, err, p.Expired(now))
		}
		if err == nil {
			continue
		}
		class, se := channels.Classify(err)
		if !errors.Is(err, channels.ErrExpired) || class != channels.Permanent || se == nil || se.Reason != channels.ReasonExpired {
			t.Errorf("CheckExpiry error %v: class %v, SendError %v", err, class, se)
		}
	}
}

func TestPushLoggingHidesSecrets(t *testing.T) {
	p := channels.Push{
		MessageID: "m-1",
		AppID:     "app",
		Attempt:   2,
		Targets:   []channels.Target{{DeviceID: "d", Token: "device-token"}},
		Title:     "private title",
		Settings:  map[string]string{"url": "https://example.com/?key=setting-secret"},
		Secret:    []byte("app-secret"),
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("sending", "push", p)
	fmt.Fprintf(&buf, "%v %+v %s", p, p, p)
	out := buf.String()
	if !strings.Contains(out, "m-1") {
		t.Errorf("log lacks the message id: %s", out)
	}
	for _, secret := range []string{"app-secret", "setting-secret", "device-token", "private title"} {
		if strings.Contains(out, secret) {
			t.Errorf("log reveals %q: %s", secret, out)
		}
	}
}
