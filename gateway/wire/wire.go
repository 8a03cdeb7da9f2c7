// Package wire is the codec of the gateway protocol spoken between devices
// and pushledger's long-connection gateway: frame types, AppendFrame to
// encode, Decoder.Parse and Reader to decode. The byte-exact specification,
// with the state machine and the rules a client must follow, is
// docs/gateway-protocol.md; this package implements its framing and field
// encodings and nothing else (no networking, no timers, no state machine).
//
// Every frame on the wire is
//
//	length  uint32, big-endian: number of bytes that follow (3 + body)
//	version byte   (Version)
//	type    byte   (Type)
//	flags   byte   (meaning per type; undefined bits are 0)
//	body    length-3 bytes
//
// The codec is strict: a decoded frame re-encodes to exactly the bytes it
// was decoded from, and anything else (an undefined flag bit, a non-minimal
// varint, invalid UTF-8, trailing bytes, an out-of-range value) is rejected
// with an error that CodeFor maps to a DISCONNECT code.
package wire

import (
	"encoding/hex"
	"fmt"
	"time"
)

// Version is the protocol version this package speaks, the version byte of
// every frame it encodes and the only one it decodes.
const Version byte = 1

// Sizes and limits of the framing (docs/gateway-protocol.md, "Framing").
// A frame's size is the value of its length field: the bytes after the
// 4-byte prefix, header included. A frame occupies size+4 bytes on the wire.
const (
	// PrefixSize is the size of the length prefix.
	PrefixSize = 4
	// HeaderSize is the size of version, type and flags, counted in the
	// frame size.
	HeaderSize = 3
	// DefaultMaxFrameSize is the limit before CONNACK announces one, and
	// the usual announced value.
	DefaultMaxFrameSize uint32 = 64 << 10
	// MinMaxFrameSize and MaxMaxFrameSize bound the limit CONNACK may
	// announce. Every CONNECT, CONNACK, PING, PONG and DISCONNECT fits in
	// MinMaxFrameSize.
	MinMaxFrameSize uint32 = 8 << 10
	MaxMaxFrameSize uint32 = 16 << 20
)

// Field limits, in bytes.
const (
	MaxAppKeyLen     = 128
	MaxDeviceIDLen   = 128
	MaxCredentialLen = 4096
	MaxSDKVersionLen = 64
	MaxReasonLen     = 256
	// MaxIDs is the most message ids one ACK or OPENED carries (its count
	// is a uint16); the frame size limit may allow fewer.
	MaxIDs = 65535
	// MaxMillis is the largest duration or retry delay in milliseconds a
	// uint32 field holds (about 49.7 days).
	MaxMillis = 1<<32 - 1
)

// Type is a frame type, the second header byte.
type Type byte

// Frame types. The direction is a rule of the protocol, not of the codec:
// Parse decodes any type, the gateway and the SDK reject frames that may
// not arrive in their state (docs/gateway-protocol.md, "State machine").
const (
	TypeConnect    Type = 0x01 // client -> server, first frame
	TypeConnack    Type = 0x02 // server -> client, answers CONNECT
	TypePing       Type = 0x03 // either way
	TypePong       Type = 0x04 // either way, answers PING
	TypePush       Type = 0x05 // server -> client
	TypeAck        Type = 0x06 // client -> server
	TypeOpened     Type = 0x07 // client -> server
	TypeDisconnect Type = 0x08 // either way, last frame
)

// Known reports whether t is a frame type of this version.
func (t Type) Known() bool { return t >= TypeConnect && t <= TypeDisconnect }

func (t Type) String() string {
	switch t {
	case TypeConnect:
		return "CONNECT"
	case TypeConnack:
		return "CONNACK"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypePush:
		return "PUSH"
	case TypeAck:
		return "ACK"
	case TypeOpened:
		return "OPENED"
	case TypeDisconnect:
		return "DISCONNECT"
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

// MessageID is a message id: a UUID (RFC 9562) in its 16 bytes, in the
// order of its canonical text form. The zero value is the nil UUID, which
// stands for "no message" (Connect.LastAcked).
type MessageID [16]byte

// IsZero reports whether id is the nil UUID.
func (id MessageID) IsZero() bool { return id == MessageID{} }

// String returns the canonical lower-case form
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, the form the REST API and the
// ledger use.
func (id MessageID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// ParseMessageID parses the canonical 36-character form (either case).
func ParseMessageID(s string) (MessageID, error) {
	var id MessageID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("wire: message id %q is not a canonical UUID", s)
	}
	j := 0
	for i := 0; i < 36; {
		if s[i] == '-' {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return MessageID{}, fmt.Errorf("wire: message id %q is not a canonical UUID", s)
		}
		id[j] = hi<<4 | lo
		j++
		i += 2
	}
	return id, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Frame is one of *Connect, *Connack, *Ping, *Pong, *Push, *Ack, *Opened,
// *Disconnect. The set is closed; switch on the concrete type.
type Frame interface {
	// Type is the frame's type byte.
	Type() Type
	frame()
}

// Connect is the client's first frame: who it is and where it left off.
type Connect struct {
	// AppKey identifies the app (the key the platform issued for it),
	// 1..MaxAppKeyLen bytes of UTF-8.
	AppKey string
	// DeviceID is the app's id for this device, 1..MaxDeviceIDLen bytes of
	// UTF-8 (the gateway further requires [A-Za-z0-9._:-]).
	DeviceID string
	// Credential proves the device may connect as DeviceID: opaque,
	// 1..MaxCredentialLen bytes. Decoded, it aliases the parsed buffer.
	Credential []byte
	// SDKVersion names the client library, such as "android/2.3.1",
	// 1..MaxSDKVersionLen bytes of UTF-8.
	SDKVersion string
	// LastAcked is the last message id the client acknowledged, on this or
	// an earlier connection; zero when it never acknowledged one. The
	// server counts it as delivered, in case that ACK was lost.
	LastAcked MessageID
}

// Heartbeat holds the timing of a connection. Both are whole
// milliseconds on the wire (finer parts are truncated when encoding).
type Heartbeat struct {
	// Interval is how often the client sends PING: 1 ms..MaxMillis ms.
	Interval time.Duration
	// IdleTimeout is how long the server waits for any frame from the
	// client before it disconnects with CodeIdleTimeout: more than
	// Interval, at most MaxMillis ms.
	IdleTimeout time.Duration
}

// IsZero reports whether h is the zero value (in a Pong: no update).
func (h Heartbeat) IsZero() bool { return h == Heartbeat{} }

// Connack accepts a CONNECT: from now on PUSH, PING, ACK and OPENED flow.
type Connack struct {
	Heartbeat Heartbeat
	// ServerTime is the server's clock when it sent the frame, in whole
	// milliseconds since the Unix epoch; decoded in UTC.
	ServerTime time.Time
	// MaxFrameSize is the largest frame size either side may send from now
	// on, MinMaxFrameSize..MaxMaxFrameSize.
	MaxFrameSize uint32
}

// Ping asks the peer for a Pong. It has no fields.
type Ping struct{}

// Pong answers a Ping. A server's Pong may carry new heartbeat values.
type Pong struct {
	// Update, when not zero, replaces the connection's heartbeat values
	// from this frame on. Only a server sends one.
	Update Heartbeat
}

// PushFlags are the flags of a PUSH frame.
type PushFlags byte

const (
	// PushRedelivery marks a message the server sent before without
	// receiving its ACK; the client may have it already.
	PushRedelivery PushFlags = 0x01
	// PushHighPriority marks a message sent with priority "high".
	PushHighPriority PushFlags = 0x02

	pushFlagsKnown = PushRedelivery | PushHighPriority
)

// Push delivers one message to the device.
type Push struct {
	ID    MessageID
	Flags PushFlags
	// Payload is the message as JSON (docs/gateway-protocol.md, "PUSH
	// payload"); the codec treats it as opaque bytes. Decoded, it aliases
	// the parsed buffer; nil when empty.
	Payload []byte
}

// Ack reports messages the client has received and stored.
type Ack struct {
	// IDs holds 1..MaxIDs ids. Decoded by a Decoder, the slice is the
	// decoder's and is overwritten by its next Parse.
	IDs []MessageID
}

// Opened reports messages the user opened on the device.
type Opened struct {
	// IDs holds 1..MaxIDs ids, as in Ack.
	IDs []MessageID
}

// Disconnect is the last frame a peer sends before it closes the
// connection.
type Disconnect struct {
	// Code says why; Code.Reconnect says whether the client may reconnect.
	Code Code
	// RetryAfter, when not zero, is the least time the client waits before
	// reconnecting (for reconnectable codes), in whole milliseconds up to
	// MaxMillis.
	RetryAfter time.Duration
	// Reason is a human-readable detail for logs, 0..MaxReasonLen bytes of
	// UTF-8; never parse it.
	Reason string
}

func (*Connect) Type() Type    { return TypeConnect }
func (*Connack) Type() Type    { return TypeConnack }
func (*Ping) Type() Type       { return TypePing }
func (*Pong) Type() Type       { return TypePong }
func (*Push) Type() Type       { return TypePush }
func (*Ack) Type() Type        { return TypeAck }
func (*Opened) Type() Type     { return TypeOpened }
func (*Disconnect) Type() Type { return TypeDisconnect }

func (*Connect) frame()    {}
func (*Connack) frame()    {}
func (*Ping) frame()       {}
func (*Pong) frame()       {}
func (*Push) frame()       {}
func (*Ack) frame()        {}
func (*Opened) frame()     {}
func (*Disconnect) frame() {}

// Clone returns a deep copy of f that shares no memory with f, and so
// none with the buffer f was parsed from or the Decoder that returned it.
// It returns nil for a nil f.
func Clone(f Frame) Frame {
	switch f := f.(type) {
	case *Connect:
		c := *f
		c.Credential = cloneBytes(f.Credential)
		return &c
	case *Connack:
		c := *f
		return &c
	case *Ping:
		return &Ping{}
	case *Pong:
		c := *f
		return &c
	case *Push:
		c := *f
		c.Payload = cloneBytes(f.Payload)
		return &c
	case *Ack:
		return &Ack{IDs: cloneIDs(f.IDs)}
	case *Opened:
		return &Opened{IDs: cloneIDs(f.IDs)}
	case *Disconnect:
		c := *f
		return &c
	}
	return nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func cloneIDs(ids []MessageID) []MessageID {
	if ids == nil {
		return nil
	}
	return append([]MessageID{}, ids...)
}
