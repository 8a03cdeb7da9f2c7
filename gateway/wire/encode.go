package wire

import (
	"encoding/binary"
	"time"
	"unicode/utf8"
)

// Flag bits other than PUSH's.
const pongFlagHeartbeat = 0x01 // PONG body holds heartbeat values

// AppendFrame appends the encoding of f to dst and returns the extended
// slice. It allocates only when dst lacks the capacity, so a caller that
// reuses its buffer (dst[:0]) encodes without allocating.
//
// It checks every field against the limits of docs/gateway-protocol.md
// and the frame against MaxMaxFrameSize; on failure it returns dst
// unchanged and an error wrapping ErrInvalidFrame or ErrFrameTooLarge.
// It does not know the limit announced on a connection: a sender checks
// len(frame)-PrefixSize against it when frames may come near
// MinMaxFrameSize (only PUSH, ACK and OPENED can). Durations and times
// are truncated to whole milliseconds. f is not retained.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, Version, 0, 0)
	var (
		t     Type
		flags byte
		err   error
	)
	switch f := f.(type) {
	case *Connect:
		t = TypeConnect
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		dst, err = appendConnect(dst, f)
	case *Connack:
		t = TypeConnack
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		dst, err = appendConnack(dst, f)
	case *Ping:
		t = TypePing
	case *Pong:
		t = TypePong
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		if !f.Update.IsZero() {
			flags = pongFlagHeartbeat
			dst, err = appendHeartbeat(dst, t, f.Update)
		}
	case *Push:
		t = TypePush
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		flags = byte(f.Flags)
		dst, err = appendPush(dst, f)
	case *Ack:
		t = TypeAck
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		dst, err = appendIDs(dst, t, f.IDs)
	case *Opened:
		t = TypeOpened
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		dst, err = appendIDs(dst, t, f.IDs)
	case *Disconnect:
		t = TypeDisconnect
		if f == nil {
			return dst[:start], invalid(t, "", "nil frame")
		}
		dst, err = appendDisconnect(dst, f)
	default:
		return dst[:start], invalid(0, "", "nil frame")
	}
	if err != nil {
		return dst[:start], err
	}
	size := len(dst) - start - PrefixSize
	if size > int(MaxMaxFrameSize) {
		return dst[:start], &FrameError{Err: ErrFrameTooLarge, Type: t, Field: "length", Offset: -1, Detail: "exceeds the protocol maximum"}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size))
	dst[start+5] = byte(t)
	dst[start+6] = flags
	return dst, nil
}

func appendConnect(dst []byte, f *Connect) ([]byte, error) {
	if err := checkString(TypeConnect, "app_key", f.AppKey, 1, MaxAppKeyLen); err != nil {
		return dst, err
	}
	if err := checkString(TypeConnect, "device_id", f.DeviceID, 1, MaxDeviceIDLen); err != nil {
		return dst, err
	}
	if n := len(f.Credential); n < 1 || n > MaxCredentialLen {
		return dst, invalid(TypeConnect, "credential", "length %d not in 1..%d", n, MaxCredentialLen)
	}
	if err := checkString(TypeConnect, "sdk_version", f.SDKVersion, 1, MaxSDKVersionLen); err != nil {
		return dst, err
	}
	dst = appendVarlen(dst, len(f.AppKey))
	dst = append(dst, f.AppKey...)
	dst = appendVarlen(dst, len(f.DeviceID))
	dst = append(dst, f.DeviceID...)
	dst = appendVarlen(dst, len(f.Credential))
	dst = append(dst, f.Credential...)
	dst = appendVarlen(dst, len(f.SDKVersion))
	dst = append(dst, f.SDKVersion...)
	return append(dst, f.LastAcked[:]...), nil
}

func appendConnack(dst []byte, f *Connack) ([]byte, error) {
	dst, err := appendHeartbeat(dst, TypeConnack, f.Heartbeat)
	if err != nil {
		return dst, err
	}
	ms := f.ServerTime.UnixMilli()
	if back := time.UnixMilli(ms); back.Unix() != f.ServerTime.Unix() || back.Nanosecond()/1e6 != f.ServerTime.Nanosecond()/1e6 {
		return dst, invalid(TypeConnack, "server_time", "%v is not representable in int64 milliseconds", f.ServerTime)
	}
	if f.MaxFrameSize < MinMaxFrameSize || f.MaxFrameSize > MaxMaxFrameSize {
		return dst, invalid(TypeConnack, "max_frame_size", "%d not in %d..%d", f.MaxFrameSize, MinMaxFrameSize, MaxMaxFrameSize)
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(ms))
	return binary.BigEndian.AppendUint32(dst, f.MaxFrameSize), nil
}

func appendHeartbeat(dst []byte, t Type, h Heartbeat) ([]byte, error) {
	iv, idle := h.Interval/time.Millisecond, h.IdleTimeout/time.Millisecond
	if iv < 1 || iv > MaxMillis {
		return dst, invalid(t, "heartbeat_interval_ms", "%v not in 1ms..%dms", h.Interval, MaxMillis)
	}
	if idle <= iv || idle > MaxMillis {
		return dst, invalid(t, "idle_timeout_ms", "%v not in (heartbeat interval %v, %dms]", h.IdleTimeout, h.Interval, MaxMillis)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(iv))
	return binary.BigEndian.AppendUint32(dst, uint32(idle)), nil
}

func appendPush(dst []byte, f *Push) ([]byte, error) {
	if f.Flags&^pushFlagsKnown != 0 {
		return dst, invalid(TypePush, "flags", "undefined bits 0x%02x", byte(f.Flags&^pushFlagsKnown))
	}
	if len(f.Payload) > int(MaxMaxFrameSize)-HeaderSize-len(f.ID) {
		return dst, &FrameError{Err: ErrFrameTooLarge, Type: TypePush, Field: "payload", Offset: -1, Detail: "exceeds the protocol maximum"}
	}
	dst = append(dst, f.ID[:]...)
	return append(dst, f.Payload...), nil
}

func appendIDs(dst []byte, t Type, ids []MessageID) ([]byte, error) {
	if len(ids) < 1 || len(ids) > MaxIDs {
		return dst, invalid(t, "count", "%d ids, not in 1..%d", len(ids), MaxIDs)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(ids)))
	for i := range ids {
		dst = append(dst, ids[i][:]...)
	}
	return dst, nil
}

func appendDisconnect(dst []byte, f *Disconnect) ([]byte, error) {
	if !f.Code.Valid() {
		return dst, invalid(TypeDisconnect, "code", "%d not in 3000..3999", uint16(f.Code))
	}
	ms := f.RetryAfter / time.Millisecond
	if f.RetryAfter < 0 || ms > MaxMillis {
		return dst, invalid(TypeDisconnect, "retry_after_ms", "%v not in 0..%dms", f.RetryAfter, MaxMillis)
	}
	if err := checkString(TypeDisconnect, "reason", f.Reason, 0, MaxReasonLen); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(f.Code))
	dst = binary.BigEndian.AppendUint32(dst, uint32(ms))
	dst = appendVarlen(dst, len(f.Reason))
	return append(dst, f.Reason...), nil
}

func checkString(t Type, field, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		return invalid(t, field, "length %d not in %d..%d", len(s), minLen, maxLen)
	}
	if !utf8.ValidString(s) {
		return invalid(t, field, "not valid UTF-8")
	}
	return nil
}

// appendVarlen appends n (< 1<<14, which every field limit is) as a
// minimal unsigned LEB128 varint of 1 or 2 bytes.
func appendVarlen(dst []byte, n int) []byte {
	if n < 0x80 {
		return append(dst, byte(n))
	}
	return append(dst, byte(n)|0x80, byte(n>>7))
}
