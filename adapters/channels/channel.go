// Package channel is the port through which pushledger hands a message to a
// delivery channel: a customer webhook today; pushledger's own gateway, APNs,
// FCM, Huawei, Xiaomi and others later. It holds the Channel interface, its
// vocabulary (Push, Target, Result), the error classes callers branch on
// (SendError, Class, ErrExpired) and nothing else.
//
// Every adapter must pass the conformance suite in channel/channeltest.
package channels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pushledger/pushledger/domain/policy"
	"log/slog"
	"strings"
	"time"
)

// Channel delivers pushes to one kind of destination.
//
// Concurrency: implementations are safe for concurrent use; Send may be called
// from many goroutines at once.
//
// Ownership: Send does not modify the Push nor anything it refers to (Targets,
// Audience, Data, Settings, Secret), and does not retain any of it after it
// returns.
//
// Idempotency: delivery is at least once. After a crash the caller may call
// Send again with the same MessageID and the same Attempt, and a retry has the
// same MessageID with a higher Attempt. Send must not treat a repeat as an
// error. Channels pass MessageID to the provider wherever the provider
// deduplicates (as a collapse or idempotency key) or forwards it to the
// receiver; receivers deduplicate by it.
//
// Timeouts and cancellation: the context's deadline is the send timeout; a
// channel may apply a shorter timeout of its own but never a longer one. When
// the context is done Send returns promptly with a Transient *SendError that
// wraps ctx.Err() (errors.Is(err, context.DeadlineExceeded) or
// context.Canceled holds). The push may or may not have reached the provider.
//
// Expiry: a Push whose ExpiresAt is not zero and not after the channel's clock
// is never sent: Send returns an error matching ErrExpired and the provider
// sees nothing. Expiry is checked before each send; a request already in
// flight when ExpiresAt passes is not abandoned.
//
// Errors: every non-nil error from Send is, or wraps, a *SendError, or matches
// ErrExpired. Use Classify to decide what to do.
type Channel interface {
	// Name is the channel's stable identifier, used in events and settings:
	// "webhook", "gateway", "apns", "fcm", ... It never changes for a value.
	Name() string
	// Send delivers p. On success the provider has accepted the push; it has
	// not necessarily reached the device.
	Send(ctx context.Context, p Push) (Result, error)
}

// Push is one delivery attempt of one message through one channel.
type Push struct {
	// MessageID identifies the message. It is the same for every attempt and
	// every channel; receivers deduplicate by it.
	MessageID string
	// AppID is the application the message belongs to.
	AppID string
	// Attempt counts the attempts of this message on this channel, from 1.
	Attempt int
	// Targets are the devices resolved for this channel. It may be empty for
	// app-level channels (a webhook for a broadcast, for example).
	Targets []Target
	// Audience is the message's audience spec as submitted. It is
	// informational; channels deliver to Targets.
	Audience json.RawMessage
	// Title and Body are the notification's text.
	Title, Body string
	// Data is the application's JSON payload. It may be nil.
	Data json.RawMessage
	// Priority is "normal" or "high".
	Priority string
	// CollapseID groups messages of which the device shows only the latest.
	// Empty means none.
	CollapseID string
	// ExpiresAt is when the message stops being worth delivering; the zero
	// time means never. Channels do not send a push at or after ExpiresAt
	// (see ErrExpired) and pass it on to providers that support expiry.
	ExpiresAt time.Time
	// Settings are this app's settings for this channel, for example the
	// webhook's "url". Values may be confidential; never log them.
	Settings map[string]string
	// Secret is the app's secret, for channels that sign what they send (the
	// webhook). Never log it, never send it.
	Secret []byte
}

// Priorities.
const (
	PriorityNormal = "normal"
	PriorityHigh   = "high"
)

// Expired reports whether p must not be sent at time now: ExpiresAt is set
// and is not after now.
func (p Push) Expired(now time.Time) bool {
	return !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt)
}

// LogValue lets log/slog log a Push without its secret, its settings' values,
// its text or its data.
func (p Push) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("message_id", p.MessageID),
		slog.String("app_id", p.AppID),
		slog.Int("attempt", p.Attempt),
		slog.Int("targets", len(p.Targets)),
		slog.String("priority", p.Priority),
	}
	if !p.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", p.ExpiresAt))
	}
	return slog.GroupValue(attrs...)
}

// String describes p for humans without its secret, settings, text or data,
// so that printing a Push with fmt cannot leak them.
func (p Push) String() string {
	return fmt.Sprintf("push %s app %s attempt %d (%d targets)", p.MessageID, p.AppID, p.Attempt, len(p.Targets))
}

// Target is one device to deliver to.
type Target struct {
	// DeviceID is pushledger's identifier of the device.
	DeviceID string
	// Token is the provider's address of the device (APNs device token, FCM
	// registration token, gateway connection key, ...). It is confidential.
	Token string
	// Platform is the device's platform ("ios", "android", ...).
	Platform string
}

// Result describes an accepted push.
type Result struct {
	// ProviderMessageID is the provider's identifier of the delivery (APNs
	// apns-id, FCM message name, the webhook receiver's X-Request-Id), or
	// empty when the provider gives none.
	ProviderMessageID string
	// Accepted is the number of targets the provider accepted: len(Targets)
	// when it accepted all of them, or 1 for a push without targets.
	Accepted int
}

// ErrExpired: the push was not sent because its ExpiresAt had passed. It is
// final (Classify says Permanent); retrying cannot succeed.
var ErrExpired = errors.New("channel: push expired before it was sent")

// Class says what the caller should do about a failed send. It is the
// domain's failure class, so that the delivery policies decide on exactly
// what a channel reports.
type Class = policy.Class

// The classes (see policy.Class for their meaning to the sagas).
const (
	// Transient: the send may succeed if retried later (after RetryAfter
	// when set). The provider may or may not have received the push. It is
	// the zero value, so an unclassified failure is retried.
	Transient = policy.Transient
	// Permanent: retrying the same push cannot succeed (rejected by the
	// provider, misconfigured channel, expired). Give up on this channel.
	Permanent = policy.Permanent
	// TokenInvalid: the provider says the target's token is invalid or no
	// longer registered. Give up, and stop sending to that device on this
	// channel.
	TokenInvalid = policy.TokenInvalid
)

// Reasons shared by channels. Channels add their own ("http_503",
// "config_missing_url", "apns_BadDeviceToken", ...); a reason is short,
// lowercase where the provider allows, and machine-readable.
const (
	// ReasonTimeout: the send timed out (the context's deadline or the
	// channel's own timeout). Transient.
	ReasonTimeout = "timeout"
	// ReasonCanceled: the caller's context was canceled. Transient.
	ReasonCanceled = "canceled"
	// ReasonTransport: the provider could not be reached or the connection
	// failed (refused, reset, DNS, TLS). Transient.
	ReasonTransport = "transport"
	// ReasonExpired: the push was past ExpiresAt; it wraps ErrExpired.
	// Permanent.
	ReasonExpired = "expired"
)

// SendError is a failed send, classified. Channels return it (or wrap it),
// keeping the provider's or transport's error in Err.
type SendError struct {
	Class Class
	// Status is the provider's protocol status (an HTTP status, for example),
	// or 0 when there was no response.
	Status int
	// Reason is short and machine-readable: "http_503", "timeout", ...
	Reason string
	// RetryAfter is how long the provider asked the caller to wait before
	// retrying, or 0 when it did not say.
	RetryAfter time.Duration
	// Err is the cause. It may be nil.
	Err error
}

func (e *SendError) Error() string {
	var b strings.Builder
	b.WriteString("channel: ")
	b.WriteString(e.Class.String())
	if e.Reason != "" {
		b.WriteString(" ")
		b.WriteString(e.Reason)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d)", e.Status)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *SendError) Unwrap() error { return e.Err }

// CheckExpiry returns nil when p may be sent at time now, and otherwise the
// error a channel returns for it without sending: a Permanent *SendError with
// ReasonExpired that wraps ErrExpired.
func CheckExpiry(p Push, now time.Time) error {
	if !p.Expired(now) {
		return nil
	}
	return &SendError{
		Class:  Permanent,
		Reason: ReasonExpired,
		Err:    fmt.Errorf("%w (expired at %s)", ErrExpired, p.ExpiresAt.UTC().Format(time.RFC3339)),
	}
}

// Classify returns err's class and, when err is or wraps one, its *SendError.
// A *SendError of an unknown class, and an error that is neither a *SendError
// nor ErrExpired, are Transient: unknown failures are retried. An error
// matching ErrExpired without a *SendError is Permanent. Classify(nil) is
// (Transient, nil); only call it for failures.
func Classify(err error) (Class, *SendError) {
	var se *SendError
	if errors.As(err, &se) {
		switch se.Class {
		case Transient, Permanent, TokenInvalid:
			return se.Class, se
		}
		return Transient, se
	}
	if errors.Is(err, ErrExpired) {
		return Permanent, nil
	}
	return Transient, nil
}
