package wire

import "fmt"

// Code is a DISCONNECT reason code. Codes live in two ranges, fixed for
// every protocol version:
//
//   - 3000..3499: the client may reconnect, with backoff and not before the
//     frame's RetryAfter (Reconnect reports true);
//   - 3500..3999: the client must not reconnect until the app intervenes
//     (new credential, user action, SDK upgrade, app restart).
//
// A receiver treats an unlisted code by its range; a code outside
// 3000..3999 makes a DISCONNECT frame malformed.
type Code uint16

// May reconnect (3000..3499).
const (
	// CodeNormal: an orderly close with nothing wrong, such as a client
	// going to the background or a server closing an unused connection.
	CodeNormal Code = 3000
	// CodeServerShutdown: the server is shutting down or draining;
	// reconnect (to any node) after RetryAfter.
	CodeServerShutdown Code = 3001
	// CodeIdleTimeout: no frame arrived within the idle timeout.
	CodeIdleTimeout Code = 3002
	// CodeConnectTimeout: no CONNECT arrived within the connect timeout.
	CodeConnectTimeout Code = 3003
	// CodeSlowConsumer: the server's outbound queue for this connection
	// filled up (the client does not read fast enough).
	CodeSlowConsumer Code = 3004
	// CodeRateLimited: the device connects or sends too often; wait at
	// least RetryAfter.
	CodeRateLimited Code = 3005
	// CodeInternalError: a transient failure on the sender's side, such as
	// an unavailable store or a bug in encoding.
	CodeInternalError Code = 3006
)

// Must not reconnect (3500..3999).
const (
	// CodeProtocolError: a frame not allowed in the connection's state or
	// direction, or of an unknown type.
	CodeProtocolError Code = 3500
	// CodeMalformedFrame: a frame whose fields break the encoding rules.
	CodeMalformedFrame Code = 3501
	// CodeFrameTooLarge: a frame larger than the receiver's maximum.
	CodeFrameTooLarge Code = 3502
	// CodeUnsupportedVersion: the server does not speak the CONNECT's
	// protocol version; the SDK must be upgraded.
	CodeUnsupportedVersion Code = 3503
	// CodeAuthenticationFailed: unknown app key, or a device id and
	// credential that do not match.
	CodeAuthenticationFailed Code = 3504
	// CodeCredentialRevoked: the credential was valid but is revoked (the
	// device logged out or its registration was invalidated).
	CodeCredentialRevoked Code = 3505
	// CodeAppDisabled: the app is disabled or deleted.
	CodeAppDisabled Code = 3506
	// CodeSuperseded: a newer connection of the same device (on any
	// gateway node) replaced this one. Reconnecting would in turn replace
	// that newer connection.
	CodeSuperseded Code = 3507
	// CodeDeviceBlocked: the app blacklisted this device.
	CodeDeviceBlocked Code = 3508
)

// Valid reports whether c is in 3000..3999.
func (c Code) Valid() bool { return c >= 3000 && c <= 3999 }

// Reconnect reports whether a client receiving c may reconnect on its own
// (with backoff): true for 3000..3499, false otherwise.
func (c Code) Reconnect() bool { return c >= 3000 && c <= 3499 }

func (c Code) String() string {
	switch c {
	case CodeNormal:
		return "normal"
	case CodeServerShutdown:
		return "server shutdown"
	case CodeIdleTimeout:
		return "idle timeout"
	case CodeConnectTimeout:
		return "connect timeout"
	case CodeSlowConsumer:
		return "slow consumer"
	case CodeRateLimited:
		return "rate limited"
	case CodeInternalError:
		return "internal error"
	case CodeProtocolError:
		return "protocol error"
	case CodeMalformedFrame:
		return "malformed frame"
	case CodeFrameTooLarge:
		return "frame too large"
	case CodeUnsupportedVersion:
		return "unsupported version"
	case CodeAuthenticationFailed:
		return "authentication failed"
	case CodeCredentialRevoked:
		return "credential revoked"
	case CodeAppDisabled:
		return "app disabled"
	case CodeSuperseded:
		return "superseded"
	case CodeDeviceBlocked:
		return "device blocked"
	}
	switch {
	case c.Reconnect():
		return fmt.Sprintf("code %d (may reconnect)", uint16(c))
	case c.Valid():
		return fmt.Sprintf("code %d (must not reconnect)", uint16(c))
	}
	return fmt.Sprintf("invalid code %d", uint16(c))
}
