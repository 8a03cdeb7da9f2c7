package wire_test

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pushledger/pushledger/gateway/wire"
)

func mustID(s string) wire.MessageID {
	id, err := wire.ParseMessageID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// Example frames of every type: the known-answer vectors of the spec, and
// seeds of the fuzz target.
var (
	exConnect = &wire.Connect{
		AppKey:     "pk_luh4aloxahyjzvhipj67uofa",
		DeviceID:   "phone-1",
		Credential: []byte("dk1.x7Hq2Lx9PbT4"),
		SDKVersion: "android/1.0.0",
		LastAcked:  mustID("0190f3a4-7c1e-7b3a-9f2d-3c4b5a6d7e8f"),
	}
	exConnack = &wire.Connack{
		Heartbeat:    wire.Heartbeat{Interval: 240 * time.Second, IdleTimeout: 540 * time.Second},
		ServerTime:   time.Date(2026, 11, 24, 2, 40, 44, 966_000_000, time.UTC),
		MaxFrameSize: 65536,
	}
	exPing = &wire.Ping{}
	exPong = &wire.Pong{Update: wire.Heartbeat{Interval: 300 * time.Second, IdleTimeout: 660 * time.Second}}
	exPush = &wire.Push{
		ID:      mustID("0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e"),
		Flags:   wire.PushHighPriority,
		Payload: []byte(`{"notification":{"title":"Your order shipped","body":"It arrives tomorrow."}}`),
	}
	exAck = &wire.Ack{IDs: []wire.MessageID{
		mustID("0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e"),
		mustID("0190f3a5-2f11-7e02-a1b3-c4d5e6f70812"),
	}}
	exOpened     = &wire.Opened{IDs: []wire.MessageID{mustID("0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e")}}
	exDisconnect = &wire.Disconnect{Code: wire.CodeServerShutdown, RetryAfter: 2500 * time.Millisecond, Reason: "draining"}
)

// examples holds more than one frame per type, edge cases included.
func examples() []wire.Frame {
	maxStr := func(n int) string { return string(bytes.Repeat([]byte("é"), n/2)) } // 2-byte runes
	ids := func(n int) []wire.MessageID {
		out := make([]wire.MessageID, n)
		for i := range out {
			out[i][0], out[i][15] = byte(i>>8), byte(i)
		}
		return out
	}
	return []wire.Frame{
		exConnect, exConnack, exPing, exPong, exPush, exAck, exOpened, exDisconnect,
		&wire.Connect{AppKey: "a", DeviceID: "d", Credential: []byte{0}, SDKVersion: "v"},
		&wire.Connect{AppKey: maxStr(wire.MaxAppKeyLen), DeviceID: maxStr(wire.MaxDeviceIDLen),
			Credential: bytes.Repeat([]byte{0xff}, wire.MaxCredentialLen), SDKVersion: maxStr(wire.MaxSDKVersionLen),
			LastAcked: wire.MessageID{15: 1}},
		&wire.Connack{Heartbeat: wire.Heartbeat{Interval: time.Millisecond, IdleTimeout: 2 * time.Millisecond},
			ServerTime: time.UnixMilli(-1).UTC(), MaxFrameSize: wire.MinMaxFrameSize},
		&wire.Connack{Heartbeat: wire.Heartbeat{Interval: (wire.MaxMillis - 1) * time.Millisecond, IdleTimeout: wire.MaxMillis * time.Millisecond},
			ServerTime: time.UnixMilli(1 << 62).UTC(), MaxFrameSize: wire.MaxMaxFrameSize},
		&wire.Pong{},
		&wire.Push{},
		&wire.Push{ID: wire.MessageID{0: 0xff}, Flags: wire.PushRedelivery | wire.PushHighPriority, Payload: []byte{0}},
		&wire.Push{Flags: wire.PushRedelivery, Payload: bytes.Repeat([]byte("x"), int(wire.DefaultMaxFrameSize)-wire.HeaderSize-16)},
		&wire.Ack{IDs: ids(1)},
		&wire.Ack{IDs: ids((int(wire.DefaultMaxFrameSize) - wire.HeaderSize - 2) / 16)},
		&wire.Opened{IDs: ids(300)},
		&wire.Disconnect{Code: wire.CodeNormal},
		&wire.Disconnect{Code: 3999, RetryAfter: wire.MaxMillis * time.Millisecond, Reason: maxStr(wire.MaxReasonLen)},
		&wire.Disconnect{Code: wire.CodeSuperseded, Reason: "replaced by a newer connection"},
	}
}

func mustAppend(t testing.TB, dst []byte, f wire.Frame) []byte {
	t.Helper()
	out, err := wire.AppendFrame(dst, f)
	if err != nil {
		t.Fatalf("AppendFrame(%s): %v", describe(f), err)
	}
	return out
}

// equal compares frames field by field (times with Equal, empty and nil
// byte slices alike).
func equal(a, b wire.Frame) bool {
	switch a := a.(type) {
	case *wire.Connack:
		b, ok := b.(*wire.Connack)
		return ok && a.Heartbeat == b.Heartbeat && a.ServerTime.Equal(b.ServerTime) && a.MaxFrameSize == b.MaxFrameSize
	case *wire.Connect:
		b, ok := b.(*wire.Connect)
		return ok && a.AppKey == b.AppKey && a.DeviceID == b.DeviceID && bytes.Equal(a.Credential, b.Credential) &&
			a.SDKVersion == b.SDKVersion && a.LastAcked == b.LastAcked
	case *wire.Push:
		b, ok := b.(*wire.Push)
		return ok && a.ID == b.ID && a.Flags == b.Flags && bytes.Equal(a.Payload, b.Payload)
	case *wire.Ack:
		b, ok := b.(*wire.Ack)
		return ok && slices.Equal(a.IDs, b.IDs)
	case *wire.Opened:
		b, ok := b.(*wire.Opened)
		return ok && slices.Equal(a.IDs, b.IDs)
	}
	return reflect.DeepEqual(a, b)
}

// describe is a short form of f for failure messages.
func describe(f wire.Frame) string {
	if f == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("%+v", f)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return f.Type().String() + s
}
