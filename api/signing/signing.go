// Package signing implements pushledger's REST request authentication: an
// HMAC-SHA256 signature over a canonical description of the request, a
// timestamp window and single-use nonces.
//
// The scheme, exactly (docs/auth.md is the client-facing description):
//
//	X-App-Key:   the application's public key
//	X-Timestamp: unix seconds, decimal, no sign, no leading zeros
//	X-Nonce:     16-64 characters of [A-Za-z0-9_-]
//	X-Signature: lowercase hex HMAC-SHA256(secret, StringToSign)
//
//	StringToSign = METHOD + "\n" + PATH + "\n" + CANONICAL_QUERY + "\n" +
//	               TIMESTAMP + "\n" + NONCE + "\n" + hex(SHA-256(body))
//
// A server ([Verifier]) rejects timestamps more than the window (default
// 300 s) away from its clock and accepts a nonce once per app key while its
// timestamp is inside the window.
//
// Errors are reported with the sentinels below (ErrMissingHeaders ...
// ErrBodyTooLarge), possibly carried by a typed error with more detail; the
// API maps each sentinel to its own problem+json type. Secrets never appear
// in errors, in [Credentials]' string forms, or in logs.
package signing

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Header names of the scheme, in canonical MIME form.
const (
	HeaderAppKey    = "X-App-Key"
	HeaderTimestamp = "X-Timestamp"
	HeaderNonce     = "X-Nonce"
	HeaderSignature = "X-Signature"
)

// Limits of the scheme.
const (
	MinNonceLen  = 16
	MaxNonceLen  = 64
	MaxAppKeyLen = 256

	// DefaultWindow is the default maximum distance between X-Timestamp and
	// the server clock.
	DefaultWindow = 300 * time.Second
	// DefaultMaxBody is the default request body limit of a [Verifier].
	DefaultMaxBody int64 = 1 << 20
)

// Sentinel errors. Each maps to one problem type
// (https://pushledger.dev/problems/<slug>, slug in brackets).
var (
	// ErrMissingHeaders: at least one of the four headers is absent or
	// empty [missing-credentials]. Carried by *MissingHeadersError.
	ErrMissingHeaders = errors.New("signing: missing authentication headers")
	// ErrMalformedHeader: a header is present but badly formed (timestamp,
	// nonce, signature, app key format, repeated header), or the query string
	// cannot be canonicalised [malformed-credentials]. Carried by
	// *MalformedError.
	ErrMalformedHeader = errors.New("signing: malformed authentication header")
	// ErrUnknownApp: Apps.Lookup does not know the app key [unknown-app].
	ErrUnknownApp = errors.New("signing: unknown app key")
	// ErrStaleTimestamp: X-Timestamp is outside the window around the server
	// clock [stale-timestamp]. Carried by *StaleTimestampError.
	ErrStaleTimestamp = errors.New("signing: timestamp outside the allowed window")
	// ErrReplayedNonce: the nonce was already used by this app key within the
	// window [replayed-nonce].
	ErrReplayedNonce = errors.New("signing: nonce already used")
	// ErrBadSignature: X-Signature does not match the request, or is 64 hex
	// digits not all lowercase [bad-signature]. Carried by *SignatureError.
	ErrBadSignature = errors.New("signing: signature mismatch")
	// ErrBodyTooLarge: the request body exceeds the verifier's limit
	// [payload-too-large]. Carried by *BodyTooLargeError.
	ErrBodyTooLarge = errors.New("signing: request body too large")
)

// MissingHeadersError lists the absent headers. It unwraps to
// ErrMissingHeaders.
type MissingHeadersError struct {
	Headers []string // canonical names, in scheme order
}

func (e *MissingHeadersError) Error() string {
	return "signing: missing authentication headers: " + strings.Join(e.Headers, ", ")
}

func (e *MissingHeadersError) Unwrap() error { return ErrMissingHeaders }

// MalformedError reports which part of the request is badly formed. It
// unwraps to ErrMalformedHeader and, when set, to Err. It never contains a
// header value (only, for the query, the offending escape).
type MalformedError struct {
	Field  string // a header name, or "query"
	Reason string
	Err    error // optional cause
}

func (e *MalformedError) Error() string {
	s := "signing: malformed " + e.Field + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *MalformedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMalformedHeader}
	}
	return []error{ErrMalformedHeader, e.Err}
}

// StaleTimestampError carries the client and server times so the API can
// tell the client how far its clock is off. It unwraps to ErrStaleTimestamp.
type StaleTimestampError struct {
	Timestamp int64 // X-Timestamp, unix seconds
	Now       int64 // server clock, unix seconds
	Window    time.Duration
}

func (e *StaleTimestampError) Error() string {
	return fmt.Sprintf("signing: timestamp %d is more than %s from server time %d",
		e.Timestamp, e.Window, e.Now)
}

func (e *StaleTimestampError) Unwrap() error { return ErrStaleTimestamp }

// SignatureError unwraps to ErrBadSignature. StringToSign is what the server
// signed; it contains no secret and may be returned to the client to debug
// its canonicalisation (Error() does not include it).
type SignatureError struct {
	StringToSign string
}

func (e *SignatureError) Error() string { return ErrBadSignature.Error() }

func (e *SignatureError) Unwrap() error { return ErrBadSignature }

// BodyTooLargeError unwraps to ErrBodyTooLarge.
type BodyTooLargeError struct {
	Limit int64 // bytes
}

func (e *BodyTooLargeError) Error() string {
	return fmt.Sprintf("signing: request body exceeds %d bytes", e.Limit)
}

func (e *BodyTooLargeError) Unwrap() error { return ErrBodyTooLarge }

// Credentials are an app's signing credentials.
//
// Its String, GoString and LogValue methods redact Secret, so printing or
// logging a Credentials never reveals it.
type Credentials struct {
	AppID  string
	Secret []byte
}

// String redacts the secret for %v and %s.
func (c Credentials) String() string {
	return "Credentials{AppID: " + strconv.Quote(c.AppID) + ", Secret: REDACTED}"
}

// GoString redacts the secret for %#v.
func (c Credentials) GoString() string { return "signing." + c.String() }

// LogValue redacts the secret for log/slog.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("app_id", c.AppID), slog.String("secret", "REDACTED"))
}

// Apps resolves app keys. It is declared here, where it is used.
type Apps interface {
	// Lookup returns the credentials for appKey, or an error wrapping
	// ErrUnknownApp when there is no such key. Any other error is treated
	// as an internal failure and returned by Verify wrapped. It is called
	// concurrently.
	Lookup(ctx context.Context, appKey string) (Credentials, error)
}

// CanonicalQuery returns the canonical form of a raw (still escaped) query
// string:
//
//   - split on '&', skipping empty parts; each part is split at the first
//     '=' into key and value (no '=' means an empty value);
//   - key and value are decoded with form rules ('+' is a space, %XX is a
//     byte); an invalid %-escape is an error;
//   - key and value are re-encoded as bytes, keeping only the RFC 3986
//     unreserved set A-Z a-z 0-9 - . _ ~ and writing every other byte as %XX
//     with upper-case hex (so a space is %20, never '+');
//   - pairs are sorted by encoded key, then encoded value (byte order) and
//     joined as k=v with '&'.
//
// The empty query yields "". The error wraps ErrMalformedHeader (as a
// *MalformedError with Field "query").
func CanonicalQuery(rawQuery string) (string, error) {
	if rawQuery == "" {
		return "", nil
	}
	type pair struct{ k, v string }
	pairs := make([]pair, 0, strings.Count(rawQuery, "&")+1)
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		ek, err := reencode(k)
		if err != nil {
			return "", err
		}
		ev, err := reencode(v)
		if err != nil {
			return "", err
		}
		pairs = append(pairs, pair{ek, ev})
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	b.Grow(len(rawQuery) + len(rawQuery)/2)
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String(), nil
}

const upperHex = "0123456789ABCDEF"

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// reencode form-decodes s and encodes the bytes with the unreserved set, in
// one pass. Strings that are already canonical are returned without
// allocating.
func reencode(s string) (string, error) {
	canonical := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			continue
		}
		if c == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			// Canonical escapes are upper-case and of bytes outside the
			// unreserved set.
			if ok1 && ok2 && !isUnreserved(hi<<4|lo) && !isLowerHex(s[i+1]) && !isLowerHex(s[i+2]) {
				i += 2
				continue
			}
		}
		canonical = false
		break
	}
	if canonical {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(s) {
				return "", &MalformedError{Field: "query", Reason: "invalid %-escape " + strconv.Quote(s[i:])}
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", &MalformedError{Field: "query", Reason: "invalid %-escape " + strconv.Quote(s[i:i+3])}
			}
			c = hi<<4 | lo
			i += 2
		}
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
		}
	}
	return b.String(), nil
}

func isLowerHex(c byte) bool { return 'a' <= c && c <= 'f' }

// StringToSign returns the string whose HMAC is the signature:
//
//	upper(method) \n escapedPath \n CanonicalQuery(rawQuery) \n timestamp \n nonce \n bodySHA256Hex
//
// escapedPath is the path as sent (URL.EscapedPath()); rawQuery is the query
// as sent (URL.RawQuery), without '?'; timestamp is written in decimal. The
// error is CanonicalQuery's.
func StringToSign(method, escapedPath, rawQuery string, timestamp int64, nonce string, bodySHA256Hex string) (string, error) {
	cq, err := CanonicalQuery(rawQuery)
	if err != nil {
		return "", err
	}
	b := appendStringToSignHead(nil, method, escapedPath, cq, timestamp, nonce)
	return string(append(b, bodySHA256Hex...)), nil
}

// appendStringToSignHead appends every line of the string to sign but the
// body hash (it ends with "\n"); the canonical query is already computed.
func appendStringToSignHead(dst []byte, method, escapedPath, canonicalQuery string, timestamp int64, nonce string) []byte {
	for i := 0; i < len(method); i++ {
		if c := method[i]; 'a' <= c && c <= 'z' || c >= 0x80 {
			method = strings.ToUpper(method)
			break
		}
	}
	dst = append(dst, method...)
	dst = append(dst, '\n')
	dst = append(dst, escapedPath...)
	dst = append(dst, '\n')
	dst = append(dst, canonicalQuery...)
	dst = append(dst, '\n')
	dst = strconv.AppendInt(dst, timestamp, 10)
	dst = append(dst, '\n')
	dst = append(dst, nonce...)
	return append(dst, '\n')
}

// appendStringToSign appends the complete string to sign for body.
func appendStringToSign(dst []byte, method, escapedPath, canonicalQuery string, timestamp int64, nonce string, body []byte) []byte {
	dst = appendStringToSignHead(dst, method, escapedPath, canonicalQuery, timestamp, nonce)
	sum := sha256.Sum256(body)
	return hex.AppendEncode(dst, sum[:])
}

// mac returns HMAC-SHA256(secret, msg) appended to dst.
func mac(dst, secret, msg []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(msg)
	return h.Sum(dst)
}

// BodySHA256Hex returns the lowercase hex SHA-256 of body (of "" when body
// is empty).
func BodySHA256Hex(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Sign returns the X-Signature value (lowercase hex HMAC-SHA256 keyed by
// secret) for a request. escapedPath and rawQuery are the path and query as
// they will be sent. If rawQuery cannot be canonicalised (an invalid
// %-escape) no signature can be valid, and Sign returns ""; use
// CanonicalQuery first to get the reason.
func Sign(secret []byte, method, escapedPath, rawQuery string, timestamp int64, nonce string, body []byte) string {
	cq, err := CanonicalQuery(rawQuery)
	if err != nil {
		return ""
	}
	var buf [256]byte
	msg := appendStringToSign(buf[:0], method, escapedPath, cq, timestamp, nonce, body)
	var sum [sha256.Size]byte
	return hex.EncodeToString(mac(sum[:0], secret, msg))
}

// SignRequest sets the four authentication headers on r for a request sent
// at now with the given nonce (see NewNonce) and body. body must be exactly
// the bytes that will be sent as r's body; SignRequest does not touch
// r.Body. It signs r.Method, r.URL.EscapedPath() and r.URL.RawQuery, which
// is what net/http sends. The error (an invalid %-escape in the query)
// leaves r unchanged.
func SignRequest(r *http.Request, appKey string, secret []byte, now time.Time, nonce string, body []byte) error {
	if _, err := CanonicalQuery(r.URL.RawQuery); err != nil {
		return err
	}
	ts := now.Unix()
	r.Header.Set(HeaderAppKey, appKey)
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	r.Header.Set(HeaderNonce, nonce)
	r.Header.Set(HeaderSignature, Sign(secret, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, ts, nonce, body))
	return nil
}

// NewNonce returns 22 characters of base64url (128 bits from crypto/rand),
// a valid X-Nonce.
func NewNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand.Read panics on failure)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Config configures a Verifier.
type Config struct {
	// Apps resolves X-App-Key. Required.
	Apps Apps
	// Nonces remembers used nonces. Required; NewMemoryNonces is correct
	// for a single API instance, several instances need a shared store.
	// It should use the same clock as Now.
	Nonces NonceStore
	// Window is the largest accepted distance between X-Timestamp and Now,
	// in either direction (inclusive). Default (zero) DefaultWindow, 300 s.
	Window time.Duration
	// MaxBody is the largest accepted body in bytes. Default (zero)
	// DefaultMaxBody, 1 MiB. See also Verifier.MiddlewareMaxBody.
	MaxBody int64
	// Now is the server clock. Default time.Now.
	Now func() time.Time
}

// Verifier authenticates signed requests. It is safe for concurrent use.
type Verifier struct {
	apps    Apps
	nonces  NonceStore
	window  time.Duration
	maxBody int64
	now     func() time.Time
}

// NewVerifier validates cfg, applies defaults and returns a Verifier. All
// configuration problems are reported together.
func NewVerifier(cfg Config) (*Verifier, error) {
	var errs []error
	if cfg.Apps == nil {
		errs = append(errs, errors.New("signing: Config.Apps is required"))
	}
	if cfg.Nonces == nil {
		errs = append(errs, errors.New("signing: Config.Nonces is required"))
	}
	if cfg.Window < 0 {
		errs = append(errs, fmt.Errorf("signing: Config.Window %s is negative", cfg.Window))
	} else if cfg.Window != 0 && cfg.Window < time.Second {
		errs = append(errs, fmt.Errorf("signing: Config.Window %s is below the timestamp resolution of 1s", cfg.Window))
	}
	if cfg.MaxBody < 0 {
		errs = append(errs, fmt.Errorf("signing: Config.MaxBody %d is negative", cfg.MaxBody))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	v := &Verifier{apps: cfg.Apps, nonces: cfg.Nonces, window: cfg.Window, maxBody: cfg.MaxBody, now: cfg.Now}
	if v.window == 0 {
		v.window = DefaultWindow
	}
	if v.maxBody == 0 {
		v.maxBody = DefaultMaxBody
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify authenticates r whose complete body is body (r.Body is not read).
// Checks run in this order, so cheaper and unauthenticated failures never
// reach the app store or burn a nonce:
//
//  1. body size (ErrBodyTooLarge);
//  2. headers present (ErrMissingHeaders) and well-formed, query
//     canonicalisable (ErrMalformedHeader);
//  3. timestamp within the window (ErrStaleTimestamp);
//  4. app lookup (ErrUnknownApp, or a wrapped internal error);
//  5. signature, compared in constant time (ErrBadSignature); it must be
//     lowercase hex, as Sign writes it: an upper-case X-Signature is
//     ErrBadSignature even when it spells the right bytes;
//  6. nonce not used before by this app key (ErrReplayedNonce, or a wrapped
//     store error).
//
// On success it returns the app's credentials.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, body []byte) (Credentials, error) {
	return v.verify(ctx, r, body, v.maxBody)
}

func (v *Verifier) verify(ctx context.Context, r *http.Request, body []byte, maxBody int64) (Credentials, error) {
	// 1. Body size.
	if int64(len(body)) > maxBody {
		return Credentials{}, &BodyTooLargeError{Limit: maxBody}
	}

	// 2. Presence, then format.
	var vals [4]string
	names := [4]string{HeaderAppKey, HeaderTimestamp, HeaderNonce, HeaderSignature}
	var missing []string
	for i, name := range names {
		hv := r.Header[name]
		switch {
		case len(hv) == 0 || hv[0] == "":
			missing = append(missing, name)
		case len(hv) > 1:
			return Credentials{}, &MalformedError{Field: name, Reason: "header must appear once"}
		default:
			vals[i] = hv[0]
		}
	}
	if missing != nil {
		return Credentials{}, &MissingHeadersError{Headers: missing}
	}
	appKey, tsStr, nonce, sigHex := vals[0], vals[1], vals[2], vals[3]
	if err := checkAppKey(appKey); err != nil {
		return Credentials{}, err
	}
	ts, err := parseTimestamp(tsStr)
	if err != nil {
		return Credentials{}, err
	}
	if err := checkNonce(nonce); err != nil {
		return Credentials{}, err
	}
	sig, ok := parseSignature(sigHex)
	if !ok {
		return Credentials{}, &MalformedError{Field: HeaderSignature, Reason: "must be 64 lowercase hex digits"}
	}
	cq, err := CanonicalQuery(r.URL.RawQuery)
	if err != nil {
		return Credentials{}, err
	}

	// 3. Timestamp window (inclusive).
	now := v.now()
	sent := time.Unix(ts, 0)
	if d := now.Sub(sent); d > v.window || d < -v.window {
		return Credentials{}, &StaleTimestampError{Timestamp: ts, Now: now.Unix(), Window: v.window}
	}

	// 4. App.
	creds, err := v.apps.Lookup(ctx, appKey)
	if err != nil {
		return Credentials{}, fmt.Errorf("signing: look up app key: %w", err)
	}
	if len(creds.Secret) == 0 {
		// An empty HMAC key would let anyone sign; treat it as a store bug.
		return Credentials{}, errors.New("signing: app store returned an empty secret")
	}

	// 5. Signature, compared in constant time. The scheme's encoding is
	// lowercase hex: a signature with an upper-case digit is not the
	// signature of any request, even when the bytes it spells match.
	var buf [256]byte
	msg := appendStringToSign(buf[:0], r.Method, r.URL.EscapedPath(), cq, ts, nonce, body)
	var sum [sha256.Size]byte
	if !hmac.Equal(mac(sum[:0], creds.Secret, msg), sig[:]) || strings.ContainsAny(sigHex, "ABCDEF") {
		return Credentials{}, &SignatureError{StringToSign: string(msg)}
	}

	// 6. Nonce, remembered until the timestamp leaves the window.
	fresh, err := v.nonces.Use(ctx, appKey, nonce, sent.Add(v.window))
	if err != nil {
		return Credentials{}, fmt.Errorf("signing: record nonce: %w", err)
	}
	if !fresh {
		return Credentials{}, ErrReplayedNonce
	}
	return creds, nil
}

func checkAppKey(s string) error {
	if len(s) > MaxAppKeyLen {
		return &MalformedError{Field: HeaderAppKey, Reason: "must be at most " + strconv.Itoa(MaxAppKeyLen) + " bytes"}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return &MalformedError{Field: HeaderAppKey, Reason: "must be visible ASCII"}
		}
	}
	return nil
}

// parseTimestamp accepts only the form strconv.FormatInt produces for a
// non-negative value, so the signed text and the parsed number agree.
func parseTimestamp(s string) (int64, error) {
	ok := len(s) <= 18 && !(len(s) > 1 && s[0] == '0')
	var n int64
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = '0' <= c && c <= '9'
		n = n*10 + int64(c-'0')
	}
	if !ok {
		return 0, &MalformedError{Field: HeaderTimestamp, Reason: "must be unix seconds in decimal, without sign or leading zeros"}
	}
	return n, nil
}

// parseSignature decodes 64 hex digits (either case: an upper-case
// signature is refused at the signature step, as one that does not match).
func parseSignature(s string) (sig [sha256.Size]byte, ok bool) {
	if len(s) != 2*sha256.Size {
		return sig, false
	}
	for i := range sig {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return sig, false
		}
		sig[i] = hi<<4 | lo
	}
	return sig, true
}

func checkNonce(s string) error {
	ok := len(s) >= MinNonceLen && len(s) <= MaxNonceLen
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return &MalformedError{Field: HeaderNonce, Reason: "must be 16-64 characters of [A-Za-z0-9_-]"}
	}
	return nil
}
