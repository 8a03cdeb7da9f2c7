package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Authenticator decides whether a device may connect: the server calls it
// once per CONNECT, with the frame's app key, device id and credential.
//
// Contract:
//   - It runs on an event loop, which serves thousands of other
//     connections meanwhile: it must not block and must do no I/O (no
//     database or network read). Credentials implements it with one HMAC.
//   - nil accepts the device. An error rejects it: the server answers
//     DISCONNECT with wire.CodeFor(err) and closes, so return an error with
//     a DisconnectCode() wire.Code method (*AuthError, ErrAuthFailed,
//     ErrCredentialExpired) to choose the code; any other error is sent
//     as 3006 internal error (may reconnect).
//   - credential aliases the connection's input buffer and is valid only
//     during the call.
//   - It may be called from several event loops at once.
type Authenticator interface {
	Authenticate(appKey, deviceID string, credential []byte, now time.Time) error
}

// IssueTimes is an Authenticator that can also tell when a credential it
// accepted was issued. The server then records it in Conn.IssuedAt, so
// that the Handler can refuse a credential issued before something that
// revokes it (the device logged out and registered again since).
type IssueTimes interface {
	// IssuedAt returns the credential's issue time in unix seconds, and
	// false when it cannot tell. Same contract as Authenticate.
	IssuedAt(credential []byte) (int64, bool)
}

// AuthError rejects a CONNECT with a chosen DISCONNECT code and reason,
// such as wire.CodeCredentialRevoked, wire.CodeAppDisabled or
// wire.CodeDeviceBlocked from an Authenticator the platform plugs in.
type AuthError struct {
	Code   wire.Code
	Reason string // sent to the device (at most wire.MaxReasonLen bytes)
	// RetryAfter is sent as retry_after_ms, for codes that allow
	// reconnecting (wire.CodeRateLimited: "not before").
	RetryAfter time.Duration
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("gateway: %s: %s", e.Code, e.Reason)
}

// DisconnectCode is the code the server sends (see wire.CodeFor).
func (e *AuthError) DisconnectCode() wire.Code { return e.Code }

// Sentinel errors of Credentials.Verify. Both are sent to the device as
// 3504 authentication failed: the SDK stops and the app must fetch a new
// credential from its backend.
var (
	ErrAuthFailed        error = &AuthError{Code: wire.CodeAuthenticationFailed, Reason: "invalid credential"}
	ErrCredentialExpired error = &AuthError{Code: wire.CodeAuthenticationFailed, Reason: "credential expired"}
)

// CredentialKey is one server key of Credentials.
type CredentialKey struct {
	// ID names the key inside credentials, so keys can rotate: 1..16
	// characters of [A-Za-z0-9_-].
	ID string
	// Secret is the HMAC-SHA256 key, at least 32 bytes of randomness.
	Secret []byte
}

// Credentials issues and verifies device credentials that the gateway
// checks without any database read: an HMAC-SHA256, under a server key,
// over the app key, the device id, the issue time and the expiry. The
// format is specified in docs/gateway-protocol.md ("Device credentials"):
//
//	v1.<key id>.<issued, unix seconds>.<expires, unix seconds or 0>.<mac, base64url>
//
// Keys rotate by id: Issue signs with the first key, Verify accepts any.
// A Credentials is immutable and safe for concurrent use; it is the
// gateway's default Authenticator.
//
// A credential cannot be revoked before it expires (nothing is stored);
// a platform that needs revocation wraps Credentials in an Authenticator
// that also checks a revocation list held in memory.
type Credentials struct {
	keys []CredentialKey
	ttl  time.Duration
	skew time.Duration
	now  func() time.Time
}

// CredentialsOption configures NewCredentials.
type CredentialsOption func(*Credentials)

// WithTTL makes Issue set an expiry ttl after the issue time; the default
// 0 issues credentials that never expire.
func WithTTL(ttl time.Duration) CredentialsOption { return func(c *Credentials) { c.ttl = ttl } }

// WithClockSkew sets how far in the future an issue time may lie (a clock
// difference between the issuing backend and the gateway); default 5 min.
func WithClockSkew(d time.Duration) CredentialsOption { return func(c *Credentials) { c.skew = d } }

// WithClock replaces time.Now for Issue (tests).
func WithClock(now func() time.Time) CredentialsOption { return func(c *Credentials) { c.now = now } }

const credentialPrefix = "v1"

// NewCredentials returns Credentials with the given keys, the first one
// used to issue. It reports every problem with the keys at once.
func NewCredentials(keys []CredentialKey, opts ...CredentialsOption) (*Credentials, error) {
	c := &Credentials{skew: 5 * time.Minute, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	var errs []error
	if len(keys) == 0 {
		errs = append(errs, errors.New("gateway: credentials: no key"))
	}
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		if !validKeyID(k.ID) {
			errs = append(errs, fmt.Errorf("gateway: credentials: key %d: id %q is not 1..16 characters of [A-Za-z0-9_-]", i, k.ID))
		}
		if seen[k.ID] {
			errs = append(errs, fmt.Errorf("gateway: credentials: key %d: duplicate id %q", i, k.ID))
		}
		seen[k.ID] = true
		if len(k.Secret) < 32 {
			errs = append(errs, fmt.Errorf("gateway: credentials: key %q: secret has %d bytes, want at least 32", k.ID, len(k.Secret)))
		}
		c.keys = append(c.keys, CredentialKey{ID: k.ID, Secret: append([]byte(nil), k.Secret...)})
	}
	if c.ttl < 0 {
		errs = append(errs, fmt.Errorf("gateway: credentials: negative ttl %v", c.ttl))
	}
	if c.skew < 0 {
		errs = append(errs, fmt.Errorf("gateway: credentials: negative clock skew %v", c.skew))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func validKeyID(id string) bool {
	if len(id) < 1 || len(id) > 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

// Issue returns a credential for (appKey, deviceID), issued now and
// expiring after the configured TTL (never, by default). The app's
// backend hands it to the device, which sends it in CONNECT.
func (c *Credentials) Issue(appKey, deviceID string) []byte {
	now := c.now()
	var exp int64
	if c.ttl > 0 {
		exp = now.Add(c.ttl).Unix()
	}
	return c.issue(c.keys[0], appKey, deviceID, now.Unix(), exp)
}

func (c *Credentials) issue(k CredentialKey, appKey, deviceID string, iat, exp int64) []byte {
	b := make([]byte, 0, 96)
	b = append(b, credentialPrefix...)
	b = append(b, '.')
	b = append(b, k.ID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, iat, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, exp, 10)
	b = append(b, '.')
	mac := credentialMAC(k.Secret, k.ID, appKey, deviceID, iat, exp)
	return base64.RawURLEncoding.AppendEncode(b, mac[:])
}

// credentialMAC is HMAC-SHA256(secret, "pushledger/gateway/credential/v1"
// || len-prefixed key id, app key, device id || iat || exp), each length
// a u16 and each time an i64, big-endian: an injective encoding, so no
// two inputs share a MAC input.
func credentialMAC(secret []byte, keyID, appKey, deviceID string, iat, exp int64) [sha256.Size]byte {
	m := hmac.New(sha256.New, secret)
	var buf [512]byte
	b := append(buf[:0], "pushledger/gateway/credential/v1"...)
	for _, s := range [...]string{keyID, appKey, deviceID} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(iat))
	b = binary.BigEndian.AppendUint64(b, uint64(exp))
	m.Write(b)
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	return sum
}

// Verify checks that credential was issued by one of c's keys for
// (appKey, deviceID), is not issued in the future (beyond the clock skew)
// and has not expired at now. It returns nil, ErrAuthFailed or
// ErrCredentialExpired; the MAC is compared in constant time.
func (c *Credentials) Verify(appKey, deviceID string, credential []byte, now time.Time) error {
	parts := strings.SplitN(string(credential), ".", 6)
	if len(parts) != 5 || parts[0] != credentialPrefix {
		return ErrAuthFailed
	}
	var key *CredentialKey
	for i := range c.keys {
		if c.keys[i].ID == parts[1] {
			key = &c.keys[i]
			break
		}
	}
	iat, ok1 := parseSeconds(parts[2])
	exp, ok2 := parseSeconds(parts[3])
	got, err := base64.RawURLEncoding.Strict().DecodeString(parts[4])
	if key == nil || !ok1 || !ok2 || err != nil {
		return ErrAuthFailed
	}
	want := credentialMAC(key.Secret, key.ID, appKey, deviceID, iat, exp)
	if !hmac.Equal(got, want[:]) {
		return ErrAuthFailed
	}
	if iat > now.Add(c.skew).Unix() {
		return ErrAuthFailed
	}
	if exp != 0 && now.Unix() >= exp {
		return ErrCredentialExpired
	}
	return nil
}

// parseSeconds parses canonical decimal seconds: digits only, no sign, no
// leading zero (but "0"), so each time has one spelling.
func parseSeconds(s string) (int64, bool) {
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// Authenticate implements Authenticator with Verify.
func (c *Credentials) Authenticate(appKey, deviceID string, credential []byte, now time.Time) error {
	return c.Verify(appKey, deviceID, credential, now)
}

// IssuedAt implements IssueTimes: the iat of a credential of c's form
// (it does not verify it; Authenticate does).
func (c *Credentials) IssuedAt(credential []byte) (int64, bool) {
	parts := strings.SplitN(string(credential), ".", 6)
	if len(parts) != 5 || parts[0] != credentialPrefix {
		return 0, false
	}
	return parseSeconds(parts[2])
}

var (
	_ Authenticator = (*Credentials)(nil)
	_ IssueTimes    = (*Credentials)(nil)
)
