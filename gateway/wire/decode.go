package wire

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// Decoder decodes frames from a byte stream the caller buffers (a gnet
// connection's inbound buffer, a Reader's buffer). It keeps no bytes of
// the stream between calls; what it keeps is the maximum frame size and
// one reusable value of each frame type, so that decoding a PUSH, PING,
// PONG, ACK or OPENED allocates nothing once warm.
//
// The zero Decoder is ready to use with DefaultMaxFrameSize. A Decoder is
// not safe for concurrent use; one per event loop or per connection.
type Decoder struct {
	max uint32 // 0: DefaultMaxFrameSize

	connect    Connect
	connack    Connack
	ping       Ping
	pong       Pong
	push       Push
	ack        Ack
	opened     Opened
	disconnect Disconnect
	ids        []MessageID // backs ack.IDs and opened.IDs
}

// MaxFrameSize returns the largest frame size Parse accepts.
func (d *Decoder) MaxFrameSize() uint32 {
	if d.max == 0 {
		return DefaultMaxFrameSize
	}
	return d.max
}

// SetMaxFrameSize sets the largest frame size Parse accepts, which must be
// in MinMaxFrameSize..MaxMaxFrameSize: a client sets the value its CONNACK
// announced, a server the value it announces.
func (d *Decoder) SetMaxFrameSize(n uint32) error {
	if n < MinMaxFrameSize || n > MaxMaxFrameSize {
		return fmt.Errorf("wire: max frame size %d not in %d..%d", n, MinMaxFrameSize, MaxMaxFrameSize)
	}
	d.max = n
	return nil
}

// Parse decodes the frame at the start of buf. It returns the frame and
// n, the number of bytes it occupies (PrefixSize + its length field); the
// caller consumes buf[:n] and calls Parse again on the rest. Otherwise it
// returns n = 0 and
//
//   - ErrIncomplete (bare) while buf holds only the beginning of a frame
//     that may still be well-formed: call again once more bytes arrived;
//   - an error wrapping ErrFrameTooLarge as soon as buf holds the 4 bytes
//     of a length prefix above MaxFrameSize, without waiting for the body,
//     so the caller never buffers an oversized frame;
//   - an error wrapping ErrUnsupportedVersion or ErrUnknownType as soon as
//     the version or type byte is there;
//   - an error wrapping ErrMalformed once the whole frame is there and a
//     field breaks the rules.
//
// Every error but ErrIncomplete is final: send a DISCONNECT with
// CodeFor(err) and close. The outcome depends only on the bytes given, so
// delivering a stream in any chunks yields the same frames and errors.
// Parse never reads beyond buf[:n] (the frame's declared length). It
// allocates only a CONNECT's or DISCONNECT's strings and a larger ids
// slice than d had, never more bytes than the frame holds (lengths and
// counts are checked against the frame first), plus the error.
//
// Buffer lifetime: the returned frame is d's own value of its type,
// overwritten by the next Parse of that type on d. Its byte slices
// (Connect.Credential, Push.Payload) alias buf and stay valid only while
// buf's bytes do: with gnet, until Discard or the return from OnTraffic;
// with a Reader, until its next ReadFrame. Ack.IDs and Opened.IDs are d's
// and are overwritten by the next ACK or OPENED. Strings and MessageIDs
// are copies. Clone a frame to keep it longer.
func (d *Decoder) Parse(buf []byte) (f Frame, n int, err error) {
	return parse(buf, d.MaxFrameSize(), d)
}

// Parse is Decoder.Parse with DefaultMaxFrameSize and a newly allocated
// frame: the frame is the caller's, but its byte slices
// (Connect.Credential, Push.Payload) still alias buf.
func Parse(buf []byte) (f Frame, n int, err error) {
	return parse(buf, DefaultMaxFrameSize, nil)
}

// frameSize checks the header bytes present in buf, in wire order, and
// returns the frame's size once every header check passed and the whole
// frame is in buf. Each check runs as soon as its byte is there.
func frameSize(buf []byte, max uint32) (int, error) {
	if len(buf) < PrefixSize {
		return 0, ErrIncomplete
	}
	size := binary.BigEndian.Uint32(buf)
	if size > max {
		return 0, &FrameError{Err: ErrFrameTooLarge, Field: "length", Offset: 0, Detail: fmt.Sprintf("%d exceeds the maximum %d", size, max)}
	}
	if size < HeaderSize {
		return 0, malformed(0, "length", 0, "%d is less than the %d header bytes", size, HeaderSize)
	}
	if len(buf) < 5 {
		return 0, ErrIncomplete
	}
	if buf[4] != Version {
		return 0, &FrameError{Err: ErrUnsupportedVersion, Field: "version", Offset: 4, Detail: fmt.Sprintf("%d, this implementation speaks %d", buf[4], Version)}
	}
	if len(buf) < 6 {
		return 0, ErrIncomplete
	}
	if t := Type(buf[5]); !t.Known() {
		return 0, &FrameError{Err: ErrUnknownType, Field: "type", Offset: 5, Detail: t.String()}
	}
	if uint64(len(buf)) < PrefixSize+uint64(size) {
		return 0, ErrIncomplete
	}
	return int(size), nil
}

func parse(buf []byte, max uint32, d *Decoder) (Frame, int, error) {
	size, err := frameSize(buf, max)
	if err != nil {
		return nil, 0, err
	}
	n := PrefixSize + size
	c := cursor{frame: buf[:n:n], off: PrefixSize + HeaderSize, t: Type(buf[5])}
	flags := buf[6]
	var f Frame
	switch c.t {
	case TypeConnect:
		var v *Connect
		if d != nil {
			v = &d.connect
		} else {
			v = new(Connect)
		}
		c.noFlags(flags)
		*v = Connect{
			AppKey:     c.str("app_key", 1, MaxAppKeyLen),
			DeviceID:   c.str("device_id", 1, MaxDeviceIDLen),
			Credential: c.bytes("credential", 1, MaxCredentialLen),
			SDKVersion: c.str("sdk_version", 1, MaxSDKVersionLen),
			LastAcked:  c.id("last_acked"),
		}
		f = v
	case TypeConnack:
		var v *Connack
		if d != nil {
			v = &d.connack
		} else {
			v = new(Connack)
		}
		c.noFlags(flags)
		*v = Connack{Heartbeat: c.heartbeat()}
		v.ServerTime = time.UnixMilli(int64(c.u64("server_time_ms"))).UTC()
		off := c.off
		if v.MaxFrameSize = c.u32("max_frame_size"); c.err == nil && (v.MaxFrameSize < MinMaxFrameSize || v.MaxFrameSize > MaxMaxFrameSize) {
			c.fail("max_frame_size", off, "%d not in %d..%d", v.MaxFrameSize, MinMaxFrameSize, MaxMaxFrameSize)
		}
		f = v
	case TypePing:
		var v *Ping
		if d != nil {
			v = &d.ping
		} else {
			v = new(Ping)
		}
		c.noFlags(flags)
		f = v
	case TypePong:
		var v *Pong
		if d != nil {
			v = &d.pong
		} else {
			v = new(Pong)
		}
		*v = Pong{}
		switch flags {
		case 0:
		case pongFlagHeartbeat:
			v.Update = c.heartbeat()
		default:
			c.fail("flags", 6, "undefined bits 0x%02x", flags&^pongFlagHeartbeat)
		}
		f = v
	case TypePush:
		var v *Push
		if d != nil {
			v = &d.push
		} else {
			v = new(Push)
		}
		if PushFlags(flags)&^pushFlagsKnown != 0 {
			c.fail("flags", 6, "undefined bits 0x%02x", flags&^byte(pushFlagsKnown))
		}
		*v = Push{ID: c.id("message_id"), Flags: PushFlags(flags)}
		if c.err == nil && c.off < n {
			v.Payload = c.frame[c.off:]
			c.off = n
		}
		f = v
	case TypeAck:
		var v *Ack
		if d != nil {
			v = &d.ack
		} else {
			v = new(Ack)
		}
		c.noFlags(flags)
		v.IDs = c.ids(d)
		f = v
	case TypeOpened:
		var v *Opened
		if d != nil {
			v = &d.opened
		} else {
			v = new(Opened)
		}
		c.noFlags(flags)
		v.IDs = c.ids(d)
		f = v
	case TypeDisconnect:
		var v *Disconnect
		if d != nil {
			v = &d.disconnect
		} else {
			v = new(Disconnect)
		}
		c.noFlags(flags)
		off := c.off
		if v.Code = Code(c.u16("code")); c.err == nil && !v.Code.Valid() {
			c.fail("code", off, "%d not in 3000..3999", uint16(v.Code))
		}
		v.RetryAfter = time.Duration(c.u32("retry_after_ms")) * time.Millisecond
		v.Reason = c.str("reason", 0, MaxReasonLen)
		f = v
	}
	if c.err == nil && c.off != n {
		c.fail("body", c.off, "%d trailing bytes", n-c.off)
	}
	if c.err != nil {
		return nil, 0, c.err
	}
	return f, n, nil
}

// cursor reads the fields of one whole frame. The first failure sticks:
// later reads return zero values and the error reports the first field
// that broke the rules.
type cursor struct {
	frame []byte // the whole frame, length prefix included, cap == len
	off   int    // next byte to read
	t     Type
	err   error
}

func (c *cursor) fail(field string, off int, format string, args ...any) {
	if c.err == nil {
		c.err = malformed(c.t, field, off, format, args...)
	}
}

func (c *cursor) noFlags(flags byte) {
	if flags != 0 {
		c.fail("flags", 6, "undefined bits 0x%02x", flags)
	}
}

func (c *cursor) take(field string, n int) []byte {
	if c.err != nil {
		return nil
	}
	if left := len(c.frame) - c.off; left < n {
		c.fail(field, c.off, "needs %d bytes, the frame has %d left", n, left)
		return nil
	}
	b := c.frame[c.off : c.off+n]
	c.off += n
	return b
}

func (c *cursor) u16(field string) uint16 {
	if b := c.take(field, 2); c.err == nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (c *cursor) u32(field string) uint32 {
	if b := c.take(field, 4); c.err == nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (c *cursor) u64(field string) uint64 {
	if b := c.take(field, 8); c.err == nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (c *cursor) id(field string) (id MessageID) {
	if b := c.take(field, 16); c.err == nil {
		copy(id[:], b)
	}
	return id
}

// varlen reads a length: a minimal unsigned LEB128 varint of 1 or 2
// bytes, in minLen..maxLen.
func (c *cursor) varlen(field string, minLen, maxLen int) int {
	if c.err != nil {
		return 0
	}
	off := c.off
	b := c.take(field, 1)
	if c.err != nil {
		return 0
	}
	n := int(b[0])
	if n >= 0x80 {
		if c.off == len(c.frame) {
			c.fail(field, off, "the frame ends inside the length varint")
			return 0
		}
		b = c.take(field, 1)
		switch {
		case b[0] >= 0x80:
			c.fail(field, off, "length varint longer than 2 bytes")
			return 0
		case b[0] == 0:
			c.fail(field, off, "length varint not minimal")
			return 0
		}
		n = n&0x7f | int(b[0])<<7
	}
	if n < minLen || n > maxLen {
		c.fail(field, off, "length %d not in %d..%d", n, minLen, maxLen)
		return 0
	}
	return n
}

// bytes reads a varint-length-prefixed byte string, aliasing the frame.
func (c *cursor) bytes(field string, minLen, maxLen int) []byte {
	n := c.varlen(field, minLen, maxLen)
	b := c.take(field, n)
	if c.err != nil || n == 0 {
		return nil
	}
	return b
}

// str reads a varint-length-prefixed UTF-8 string.
func (c *cursor) str(field string, minLen, maxLen int) string {
	off := c.off
	b := c.bytes(field, minLen, maxLen)
	if c.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		c.fail(field, off, "not valid UTF-8")
		return ""
	}
	return string(b)
}

// heartbeat reads heartbeat_interval_ms and idle_timeout_ms.
func (c *cursor) heartbeat() Heartbeat {
	off := c.off
	iv := c.u32("heartbeat_interval_ms")
	idle := c.u32("idle_timeout_ms")
	if c.err != nil {
		return Heartbeat{}
	}
	if iv == 0 {
		c.fail("heartbeat_interval_ms", off, "0")
	} else if idle <= iv {
		c.fail("idle_timeout_ms", off+4, "%d is not more than the heartbeat interval %d", idle, iv)
	}
	return Heartbeat{Interval: time.Duration(iv) * time.Millisecond, IdleTimeout: time.Duration(idle) * time.Millisecond}
}

// ids reads the count and ids of ACK and OPENED into d's scratch slice
// (or a new one without d). It checks the count against the frame before
// allocating, so the slice is never larger than the frame.
func (c *cursor) ids(d *Decoder) []MessageID {
	off := c.off
	count := int(c.u16("count"))
	if c.err != nil {
		return nil
	}
	if count == 0 {
		c.fail("count", off, "0")
		return nil
	}
	if left := len(c.frame) - c.off; left != 16*count {
		c.fail("message_ids", c.off, "count %d needs %d bytes, the frame has %d", count, 16*count, left)
		return nil
	}
	var ids []MessageID
	if d == nil {
		ids = make([]MessageID, count)
	} else {
		if cap(d.ids) < count {
			d.ids = make([]MessageID, count)
		}
		ids = d.ids[:count]
	}
	for i := range ids {
		copy(ids[i][:], c.frame[c.off:c.off+16])
		c.off += 16
	}
	return ids
}
