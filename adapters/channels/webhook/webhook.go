// Package webhook is the channel that POSTs each push, as signed JSON, to a
// URL the app configured (the "url" setting). What a receiver gets, and how it
// verifies it, is documented in docs/webhook.md.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
)

// Name is the channel's name in events and settings.
const Name = "webhook"

// SettingURL is the name of the app setting holding the receiver's URL.
const SettingURL = "url"

// Request headers.
const (
	HeaderMessageID = "X-Pushledger-Message-Id"
	HeaderAttempt   = "X-Pushledger-Attempt"
	HeaderTimestamp = "X-Pushledger-Timestamp"
	HeaderSignature = "X-Pushledger-Signature"
	// HeaderRequestID is the response header whose value becomes
	// channels.Result.ProviderMessageID.
	HeaderRequestID = "X-Request-Id"
)

// Reasons of the webhook's own SendErrors, besides the shared ones in package
// channel and "http_<status>".
const (
	// ReasonMissingURL: the "url" setting is missing or is not an absolute
	// http or https URL. Permanent.
	ReasonMissingURL = "config_missing_url"
	// ReasonMissingSecret: the app has no secret to sign with. Permanent.
	ReasonMissingSecret = "config_missing_secret"
	// ReasonInvalidData: the push's Data is not valid JSON. Permanent.
	ReasonInvalidData = "invalid_data"
)

const (
	// maxDrain bounds how much of a response body is read, so that the
	// connection can be reused without trusting the receiver.
	maxDrain = 64 << 10
	// maxErrorBody bounds how much of a failed response's body is kept in
	// the error.
	maxErrorBody = 256
)

// Config configures a Webhook.
type Config struct {
	// Client sends the requests. Default: a client of its own, with a
	// transport like http.DefaultTransport's (proxy from the environment,
	// 30s dial and 10s TLS handshake timeouts, keep-alives) that keeps up to
	// 16 idle connections per host, and that does not follow redirects (a
	// 3xx is a permanent failure: fix the URL). A client given here is used
	// as is, redirect policy included.
	Client *http.Client
	// Timeout bounds one Send: connecting, sending, and receiving the
	// response. Default 10s. A sooner deadline of the caller's context wins.
	Timeout time.Duration
	// UserAgent is the User-Agent header. Default "pushledger-webhook/1".
	UserAgent string
	// Now is the clock for the timestamp header, expiry and Retry-After
	// dates. Default time.Now.
	Now func() time.Time
}

// Webhook is the webhook channel. It is safe for concurrent use.
type Webhook struct {
	client    *http.Client
	timeout   time.Duration
	userAgent string
	now       func() time.Time
}

var _ channels.Channel = (*Webhook)(nil)

// New returns a Webhook. It reports every invalid field of cfg at once.
func New(cfg Config) (*Webhook, error) {
	var errs []error
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("webhook: Timeout %v is negative", cfg.Timeout))
	}
	if !validHeaderValue(cfg.UserAgent) {
		errs = append(errs, fmt.Errorf("webhook: UserAgent %q is not a valid header value", cfg.UserAgent))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	w := &Webhook{
		client:    cfg.Client,
		timeout:   cfg.Timeout,
		userAgent: cfg.UserAgent,
		now:       cfg.Now,
	}
	if w.client == nil {
		w.client = defaultClient()
	}
	if w.timeout == 0 {
		w.timeout = 10 * time.Second
	}
	if w.userAgent == "" {
		w.userAgent = "pushledger-webhook/1"
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// validHeaderValue reports whether s has no control characters other than tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// Name returns "webhook".
func (w *Webhook) Name() string { return Name }

// Payload is the JSON body of a webhook request. Receivers written in Go may
// decode into it. Fields are always present; see docs/webhook.md.
type Payload struct {
	MessageID string `json:"message_id"`
	AppID     string `json:"app_id"`
	Attempt   int    `json:"attempt"`
	Title     string `json:"title"`
	Body      string `json:"body"`
	// Data is the app's JSON payload, or null.
	Data     json.RawMessage `json:"data"`
	Priority string          `json:"priority"`
	// CollapseID is "" when there is none.
	CollapseID string `json:"collapse_id"`
	// ExpiresAt is null when the message never expires.
	ExpiresAt *time.Time      `json:"expires_at"`
	Targets   []PayloadTarget `json:"targets"`
}

// PayloadTarget is a device in Payload. Device tokens are never sent.
type PayloadTarget struct {
	DeviceID string `json:"device_id"`
	Platform string `json:"platform"`
}

func payload(p channels.Push) ([]byte, error) {
	pl := Payload{
		MessageID:  p.MessageID,
		AppID:      p.AppID,
		Attempt:    p.Attempt,
		Title:      p.Title,
		Body:       p.Body,
		Data:       p.Data,
		Priority:   p.Priority,
		CollapseID: p.CollapseID,
		Targets:    make([]PayloadTarget, len(p.Targets)),
	}
	if pl.Priority == "" {
		pl.Priority = channels.PriorityNormal
	}
	if !p.ExpiresAt.IsZero() {
		at := p.ExpiresAt.UTC()
		pl.ExpiresAt = &at
	}
	for i, t := range p.Targets {
		pl.Targets[i] = PayloadTarget{DeviceID: t.DeviceID, Platform: t.Platform}
	}
	return json.Marshal(pl)
}

// Send POSTs p to p.Settings["url"]. See docs/webhook.md for the request and
// for how responses are classified.
func (w *Webhook) Send(ctx context.Context, p channels.Push) (channels.Result, error) {
	now := w.now()
	if err := channels.CheckExpiry(p, now); err != nil {
		return channels.Result{}, err
	}
	target, err := receiverURL(p.Settings[SettingURL])
	if err != nil {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: ReasonMissingURL, Err: err}
	}
	if len(p.Secret) == 0 {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: ReasonMissingSecret,
			Err: errors.New("webhook: the app has no secret to sign with")}
	}
	body, err := payload(p)
	if err != nil {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: ReasonInvalidData,
			Err: fmt.Errorf("webhook: encoding the payload: %w", err)}
	}
	if err := ctx.Err(); err != nil {
		return channels.Result{}, contextError(err)
	}

	ts := strconv.FormatInt(now.Unix(), 10)
	sendCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(sendCtx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it quotes the URL
		}
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: ReasonMissingURL,
			Err: fmt.Errorf("webhook: building the request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.userAgent)
	req.Header.Set(HeaderMessageID, p.MessageID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(p.Attempt))
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(p.Secret, ts, body))

	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// The query may hold credentials; the error will be logged.
			ue.URL = redactURL(req.URL)
		}
		return channels.Result{}, transportError(ctx, err)
	}
	defer func() {
		// Bounded drain so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()

	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return channels.Result{
			ProviderMessageID: resp.Header.Get(HeaderRequestID),
			Accepted:          max(len(p.Targets), 1),
		}, nil
	}
	se := &channels.SendError{
		Class:  channels.Permanent,
		Status: code,
		Reason: "http_" + strconv.Itoa(code),
		Err:    statusError(resp),
	}
	if retryable(code) {
		se.Class = channels.Transient
		se.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), w.now())
	}
	return channels.Result{}, se
}

// retryable reports whether a response status is worth retrying: 408 Request
// Timeout, 425 Too Early, 429 Too Many Requests and every 5xx (and above).
// Everything else that is not 2xx — 3xx, 410 Gone, other 4xx — is permanent.
func retryable(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return code >= 500
}

func receiverURL(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("webhook: the %q setting is missing", SettingURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Not the *url.Error itself: it quotes the URL, which may hold
		// credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("webhook: the %q setting is not a valid URL: %w", SettingURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("webhook: the %q setting %q is not an absolute http or https URL", SettingURL, redactURL(u))
	}
	return raw, nil
}

// redactURL drops the userinfo and query, which may hold credentials.
func redactURL(u *url.URL) string {
	r := *u
	r.User = nil
	r.RawQuery = ""
	r.ForceQuery = false
	return r.String()
}

func statusError(resp *http.Response) error {
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if s := strings.TrimSpace(string(snippet)); s != "" {
		return fmt.Errorf("webhook: receiver answered %s: %q", resp.Status, s)
	}
	return fmt.Errorf("webhook: receiver answered %s", resp.Status)
}

// contextError classifies the caller's context being done.
func contextError(err error) error {
	reason := channels.ReasonCanceled
	if errors.Is(err, context.DeadlineExceeded) {
		reason = channels.ReasonTimeout
	}
	return &channels.SendError{Class: channels.Transient, Reason: reason, Err: err}
}

// transportError classifies a failure of client.Do, keeping it as the cause.
// ctx is the caller's context, not the one with the webhook's own timeout.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		reason := channels.ReasonCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = channels.ReasonTimeout
		}
		// Both the transport's error and ctx.Err() are causes, so that
		// errors.Is(err, context.Canceled) holds whatever the transport
		// wrapped.
		return &channels.SendError{Class: channels.Transient, Reason: reason, Err: errors.Join(ctx.Err(), err)}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &channels.SendError{Class: channels.Transient, Reason: channels.ReasonTimeout, Err: err}
	}
	return &channels.SendError{Class: channels.Transient, Reason: channels.ReasonTransport, Err: err}
}

// retryAfter parses a Retry-After header value, either delay-seconds or an
// HTTP-date (RFC 9110, section 10.2.3), relative to now. It returns 0 for an
// empty or malformed value or a date that is not in the future.
func retryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		const maxSecs = int64(math.MaxInt64 / int64(time.Second))
		switch {
		case secs < 0:
			return 0
		case secs > maxSecs:
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(value); err == nil {
		if d := at.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// signatureVersion prefixes the hex HMAC in the signature header.
const signatureVersion = "v1="

// Sign returns the signature header value for a request body sent at
// timestamp (unix seconds, as in the timestamp header): "v1=" followed by the
// lowercase hex HMAC-SHA256, keyed by secret, of timestamp + "." + body.
func Sign(secret []byte, timestamp string, body []byte) string {
	return signatureVersion + hex.EncodeToString(mac(secret, timestamp, body))
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature reports whether header, the value of the
// X-Pushledger-Signature header, holds a valid signature of body sent at
// timestamp, the value of the X-Pushledger-Timestamp header, under secret.
// body must be the request body exactly as received, before any decoding.
// header may list several comma-separated signatures (for secret rotation);
// one valid "v1=" signature suffices. The comparison takes constant time. An
// empty secret verifies nothing.
//
// VerifySignature does not judge the timestamp: to refuse replays, receivers
// also check that it is recent (within five minutes, say) and deduplicate
// by message id.
func VerifySignature(secret []byte, timestamp string, body []byte, header string) bool {
	if len(secret) == 0 {
		return false
	}
	want := mac(secret, timestamp, body)
	got := make([]byte, sha256.Size)
	ok := false
	for part := range strings.SplitSeq(header, ",") {
		h, found := strings.CutPrefix(strings.TrimSpace(part), signatureVersion)
		if !found || len(h) != hex.EncodedLen(sha256.Size) {
			continue
		}
		if _, err := hex.Decode(got, []byte(h)); err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			ok = true
		}
	}
	return ok
}
