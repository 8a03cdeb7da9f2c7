package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/gateway/wire"
)

func TestRoundTripEveryType(t *testing.T) {
	seen := map[wire.Type]bool{}
	var d wire.Decoder
	for _, f := range examples() {
		seen[f.Type()] = true
		enc := mustAppend(t, []byte("prefix"), f)[len("prefix"):]
		if got := int(binary.BigEndian.Uint32(enc)); got != len(enc)-wire.PrefixSize {
			t.Fatalf("%s: length field %d, frame has %d bytes after it", describe(f), got, len(enc)-wire.PrefixSize)
		}
		if enc[4] != wire.Version || wire.Type(enc[5]) != f.Type() {
			t.Fatalf("%s: header % x", describe(f), enc[:7])
		}
		for name, parse := range map[string]func([]byte) (wire.Frame, int, error){"Parse": wire.Parse, "Decoder.Parse": d.Parse} {
			got, n, err := parse(enc)
			if err != nil || n != len(enc) || !equal(got, f) {
				t.Fatalf("%s(%s) = %s, %d, %v; want the frame, %d", name, describe(f), describe(got), n, err, len(enc))
			}
			if again := mustAppend(t, nil, got); !bytes.Equal(again, enc) {
				t.Fatalf("%s: re-encoding the decoded frame differs", describe(f))
			}
		}
	}
	for typ := wire.TypeConnect; typ.Known(); typ++ {
		if !seen[typ] {
			t.Errorf("no example of %v", typ)
		}
	}
}

func TestStreamOfFrames(t *testing.T) {
	var stream []byte
	frames := examples()
	for _, f := range frames {
		stream = mustAppend(t, stream, f)
	}
	var d wire.Decoder
	buf := stream
	for i, want := range frames {
		got, n, err := d.Parse(buf)
		if err != nil || !equal(got, want) {
			t.Fatalf("frame %d: %s, %v; want %s", i, describe(got), err, describe(want))
		}
		buf = buf[n:]
	}
	if _, n, err := d.Parse(buf); n != 0 || err != wire.ErrIncomplete || len(buf) != 0 {
		t.Fatalf("after the last frame: n=%d err=%v left=%d", n, err, len(buf))
	}
}

func TestParseIncompleteEveryPrefix(t *testing.T) {
	for _, f := range examples()[:8] {
		enc := mustAppend(t, nil, f)
		for i := range len(enc) {
			got, n, err := wire.Parse(enc[:i])
			if err != wire.ErrIncomplete || n != 0 || got != nil {
				t.Fatalf("%s: Parse of %d of %d bytes = %v, %d, %v; want ErrIncomplete", f.Type(), i, len(enc), got, n, err)
			}
		}
	}
}

// Parse reads nothing beyond the declared length: the frame followed by
// anything parses alike, and so does the frame alone with no spare
// capacity.
func TestParseStopsAtDeclaredLength(t *testing.T) {
	for _, f := range examples() {
		enc := mustAppend(t, nil, f)
		exact := enc[:len(enc):len(enc)]
		for _, buf := range [][]byte{exact, append(bytes.Clone(enc), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), append(bytes.Clone(enc), enc...)} {
			got, n, err := wire.Parse(buf)
			if err != nil || n != len(enc) || !equal(got, f) {
				t.Fatalf("%s: %s, %d, %v", describe(f), describe(got), n, err)
			}
		}
	}
}

func frame(length uint32, version, typ, flags byte, body ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	return append(append(b, version, typ, flags), body...)
}

// hdr builds a frame with a correct length.
func hdr(typ wire.Type, flags byte, body ...byte) []byte {
	return frame(uint32(wire.HeaderSize+len(body)), wire.Version, byte(typ), flags, body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func str(s string) []byte { return append([]byte{byte(len(s))}, s...) }

func TestParseErrors(t *testing.T) {
	id := make([]byte, 16)
	connectBody := func(appKey, deviceID, cred, sdk []byte) []byte { return cat(appKey, deviceID, cred, sdk, id) }
	okStr := str("x")
	cases := []struct {
		name  string
		in    []byte
		want  error
		code  wire.Code
		field string
	}{
		{"length above max", frame(wire.DefaultMaxFrameSize+1, 1, 1, 0), wire.ErrFrameTooLarge, wire.CodeFrameTooLarge, "length"},
		{"length 0xffffffff, prefix only", []byte{0xff, 0xff, 0xff, 0xff}, wire.ErrFrameTooLarge, wire.CodeFrameTooLarge, "length"},
		{"HTTP request", []byte("GET / HTTP/1.1\r\n"), wire.ErrFrameTooLarge, wire.CodeFrameTooLarge, "length"},
		{"TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, wire.ErrFrameTooLarge, wire.CodeFrameTooLarge, "length"},
		{"length below header", frame(2, 1, 1, 0), wire.ErrMalformed, wire.CodeMalformedFrame, "length"},
		{"length 0", frame(0, 1, 1, 0), wire.ErrMalformed, wire.CodeMalformedFrame, "length"},
		{"version 0", frame(3, 0, 3, 0), wire.ErrUnsupportedVersion, wire.CodeUnsupportedVersion, "version"},
		{"version 2, body missing", frame(100, 2, 1, 0)[:5], wire.ErrUnsupportedVersion, wire.CodeUnsupportedVersion, "version"},
		{"type 0", frame(3, 1, 0, 0), wire.ErrUnknownType, wire.CodeProtocolError, "type"},
		{"type 9, body missing", frame(100, 1, 9, 0)[:6], wire.ErrUnknownType, wire.CodeProtocolError, "type"},
		{"type 0xff", frame(3, 1, 0xff, 0), wire.ErrUnknownType, wire.CodeProtocolError, "type"},
		{"PING flags", hdr(wire.TypePing, 1), wire.ErrMalformed, wire.CodeMalformedFrame, "flags"},
		{"PING body", hdr(wire.TypePing, 0, 0), wire.ErrMalformed, wire.CodeMalformedFrame, "body"},
		{"PONG undefined flag", hdr(wire.TypePong, 2), wire.ErrMalformed, wire.CodeMalformedFrame, "flags"},
		{"PONG body without flag", hdr(wire.TypePong, 0, cat(u32(1), u32(2))...), wire.ErrMalformed, wire.CodeMalformedFrame, "body"},
		{"PONG flag without body", hdr(wire.TypePong, 1), wire.ErrMalformed, wire.CodeMalformedFrame, "heartbeat_interval_ms"},
		{"PONG interval 0", hdr(wire.TypePong, 1, cat(u32(0), u32(2))...), wire.ErrMalformed, wire.CodeMalformedFrame, "heartbeat_interval_ms"},
		{"PONG idle = interval", hdr(wire.TypePong, 1, cat(u32(5), u32(5))...), wire.ErrMalformed, wire.CodeMalformedFrame, "idle_timeout_ms"},
		{"PUSH undefined flag", hdr(wire.TypePush, 4, id...), wire.ErrMalformed, wire.CodeMalformedFrame, "flags"},
		{"PUSH short id", hdr(wire.TypePush, 0, id[:15]...), wire.ErrMalformed, wire.CodeMalformedFrame, "message_id"},
		{"ACK count 0", hdr(wire.TypeAck, 0, u16(0)...), wire.ErrMalformed, wire.CodeMalformedFrame, "count"},
		{"ACK count too high", hdr(wire.TypeAck, 0, cat(u16(2), id)...), wire.ErrMalformed, wire.CodeMalformedFrame, "message_ids"},
		{"ACK count 65535, one id", hdr(wire.TypeAck, 0, cat(u16(65535), id)...), wire.ErrMalformed, wire.CodeMalformedFrame, "message_ids"},
		{"ACK trailing byte", hdr(wire.TypeAck, 0, cat(u16(1), id, []byte{0})...), wire.ErrMalformed, wire.CodeMalformedFrame, "message_ids"},
		{"ACK no count", hdr(wire.TypeAck, 0, 1), wire.ErrMalformed, wire.CodeMalformedFrame, "count"},
		{"OPENED flags", hdr(wire.TypeOpened, 0x80, cat(u16(1), id)...), wire.ErrMalformed, wire.CodeMalformedFrame, "flags"},
		{"CONNECT empty app key", hdr(wire.TypeConnect, 0, connectBody(str(""), okStr, okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT app key too long", hdr(wire.TypeConnect, 0, connectBody(append([]byte{0x81, 0x01}, strings.Repeat("k", 129)...), okStr, okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT non-minimal varint", hdr(wire.TypeConnect, 0, connectBody([]byte{0x81, 0x00, 'k'}, okStr, okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT 3-byte varint", hdr(wire.TypeConnect, 0, connectBody([]byte{0x81, 0x80, 0x01}, okStr, okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT varint cut", hdr(wire.TypeConnect, 0, 0x81), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT string beyond frame", hdr(wire.TypeConnect, 0, 5, 'a'), wire.ErrMalformed, wire.CodeMalformedFrame, "app_key"},
		{"CONNECT invalid UTF-8", hdr(wire.TypeConnect, 0, connectBody(okStr, str("\xff"), okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "device_id"},
		{"CONNECT empty credential", hdr(wire.TypeConnect, 0, connectBody(okStr, okStr, str(""), okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "credential"},
		{"CONNECT SDK version too long", hdr(wire.TypeConnect, 0, connectBody(okStr, okStr, okStr, str(strings.Repeat("v", 65)))...), wire.ErrMalformed, wire.CodeMalformedFrame, "sdk_version"},
		{"CONNECT short last_acked", hdr(wire.TypeConnect, 0, cat(okStr, okStr, okStr, okStr, id[:8])...), wire.ErrMalformed, wire.CodeMalformedFrame, "last_acked"},
		{"CONNECT trailing", hdr(wire.TypeConnect, 0, cat(connectBody(okStr, okStr, okStr, okStr), []byte{0})...), wire.ErrMalformed, wire.CodeMalformedFrame, "body"},
		{"CONNECT flags", hdr(wire.TypeConnect, 1, connectBody(okStr, okStr, okStr, okStr)...), wire.ErrMalformed, wire.CodeMalformedFrame, "flags"},
		{"CONNACK max frame size small", hdr(wire.TypeConnack, 0, cat(u32(1), u32(2), make([]byte, 8), u32(8191))...), wire.ErrMalformed, wire.CodeMalformedFrame, "max_frame_size"},
		{"CONNACK max frame size large", hdr(wire.TypeConnack, 0, cat(u32(1), u32(2), make([]byte, 8), u32(16<<20+1))...), wire.ErrMalformed, wire.CodeMalformedFrame, "max_frame_size"},
		{"CONNACK short", hdr(wire.TypeConnack, 0, cat(u32(1), u32(2), make([]byte, 8))...), wire.ErrMalformed, wire.CodeMalformedFrame, "max_frame_size"},
		{"CONNACK idle < interval", hdr(wire.TypeConnack, 0, cat(u32(10), u32(9), make([]byte, 8), u32(65536))...), wire.ErrMalformed, wire.CodeMalformedFrame, "idle_timeout_ms"},
		{"DISCONNECT code 2999", hdr(wire.TypeDisconnect, 0, cat(u16(2999), u32(0), str(""))...), wire.ErrMalformed, wire.CodeMalformedFrame, "code"},
		{"DISCONNECT code 4000", hdr(wire.TypeDisconnect, 0, cat(u16(4000), u32(0), str(""))...), wire.ErrMalformed, wire.CodeMalformedFrame, "code"},
		{"DISCONNECT no reason", hdr(wire.TypeDisconnect, 0, cat(u16(3000), u32(0))...), wire.ErrMalformed, wire.CodeMalformedFrame, "reason"},
		{"DISCONNECT reason too long", hdr(wire.TypeDisconnect, 0, cat(u16(3000), u32(0), []byte{0x81, 0x02}, make([]byte, 257))...), wire.ErrMalformed, wire.CodeMalformedFrame, "reason"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d wire.Decoder
			f, n, err := d.Parse(tc.in)
			if !errors.Is(err, tc.want) || n != 0 || f != nil {
				t.Fatalf("Parse = %s, %d, %v; want %v", describe(f), n, err, tc.want)
			}
			var fe *wire.FrameError
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Offset < 0 || fe.Offset > max(len(tc.in), 7) {
				t.Fatalf("error %v: want a *FrameError on field %q with an offset inside the frame", err, tc.field)
			}
			if got := wire.CodeFor(err); got != tc.code || got.Reconnect() {
				t.Fatalf("CodeFor(%v) = %v; want %v", err, got, tc.code)
			}
			// The same bytes delivered one at a time fail the same way.
			for i := range len(tc.in) {
				if _, _, e := d.Parse(tc.in[:i]); e != wire.ErrIncomplete && !errors.Is(e, tc.want) {
					t.Fatalf("prefix of %d bytes: %v", i, e)
				}
			}
		})
	}
}

func TestAppendFrameInvalid(t *testing.T) {
	long := strings.Repeat("x", 129)
	hb := wire.Heartbeat{Interval: time.Second, IdleTimeout: 2 * time.Second}
	cases := []struct {
		name  string
		f     wire.Frame
		want  error
		field string
	}{
		{"nil", nil, wire.ErrInvalidFrame, ""},
		{"nil push", (*wire.Push)(nil), wire.ErrInvalidFrame, ""},
		{"empty app key", &wire.Connect{DeviceID: "d", Credential: []byte{1}, SDKVersion: "v"}, wire.ErrInvalidFrame, "app_key"},
		{"long device id", &wire.Connect{AppKey: "a", DeviceID: long, Credential: []byte{1}, SDKVersion: "v"}, wire.ErrInvalidFrame, "device_id"},
		{"bad UTF-8", &wire.Connect{AppKey: "a\xc0", DeviceID: "d", Credential: []byte{1}, SDKVersion: "v"}, wire.ErrInvalidFrame, "app_key"},
		{"no credential", &wire.Connect{AppKey: "a", DeviceID: "d", SDKVersion: "v"}, wire.ErrInvalidFrame, "credential"},
		{"long credential", &wire.Connect{AppKey: "a", DeviceID: "d", Credential: make([]byte, 4097), SDKVersion: "v"}, wire.ErrInvalidFrame, "credential"},
		{"no SDK version", &wire.Connect{AppKey: "a", DeviceID: "d", Credential: []byte{1}}, wire.ErrInvalidFrame, "sdk_version"},
		{"zero heartbeat", &wire.Connack{MaxFrameSize: 65536}, wire.ErrInvalidFrame, "heartbeat_interval_ms"},
		{"sub-ms heartbeat", &wire.Connack{Heartbeat: wire.Heartbeat{Interval: time.Microsecond, IdleTimeout: time.Second}, MaxFrameSize: 65536}, wire.ErrInvalidFrame, "heartbeat_interval_ms"},
		{"idle = interval", &wire.Connack{Heartbeat: wire.Heartbeat{Interval: time.Second, IdleTimeout: time.Second + time.Microsecond}, MaxFrameSize: 65536}, wire.ErrInvalidFrame, "idle_timeout_ms"},
		{"idle too long", &wire.Pong{Update: wire.Heartbeat{Interval: time.Second, IdleTimeout: 50 * 24 * time.Hour}}, wire.ErrInvalidFrame, "idle_timeout_ms"},
		{"max frame size", &wire.Connack{Heartbeat: hb, MaxFrameSize: 1024}, wire.ErrInvalidFrame, "max_frame_size"},
		{"server time", &wire.Connack{Heartbeat: hb, ServerTime: time.Unix(1<<62, 0), MaxFrameSize: 65536}, wire.ErrInvalidFrame, "server_time"},
		{"push flags", &wire.Push{Flags: 0x80}, wire.ErrInvalidFrame, "flags"},
		{"push payload", &wire.Push{Payload: make([]byte, wire.MaxMaxFrameSize)}, wire.ErrFrameTooLarge, "payload"},
		{"ack empty", &wire.Ack{}, wire.ErrInvalidFrame, "count"},
		{"opened too many", &wire.Opened{IDs: make([]wire.MessageID, 65536)}, wire.ErrInvalidFrame, "count"},
		{"code", &wire.Disconnect{Code: 1000}, wire.ErrInvalidFrame, "code"},
		{"retry after", &wire.Disconnect{Code: 3000, RetryAfter: -time.Second}, wire.ErrInvalidFrame, "retry_after_ms"},
		{"reason", &wire.Disconnect{Code: 3000, Reason: strings.Repeat("r", 257)}, wire.ErrInvalidFrame, "reason"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := wire.AppendFrame(dst, tc.f)
			var fe *wire.FrameError
			if !errors.Is(err, tc.want) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("AppendFrame = %v; want %v on field %q", err, tc.want, tc.field)
			}
			if string(out) != "keep" {
				t.Fatalf("dst changed to %q", out)
			}
		})
	}
}

func TestAppendFrameTruncatesToMilliseconds(t *testing.T) {
	f := &wire.Connack{
		Heartbeat:    wire.Heartbeat{Interval: time.Second + 999*time.Microsecond, IdleTimeout: 3*time.Second + 1},
		ServerTime:   time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("X", 3600)),
		MaxFrameSize: 65536,
	}
	got, _, err := wire.Parse(mustAppend(t, nil, f))
	if err != nil {
		t.Fatal(err)
	}
	want := &wire.Connack{
		Heartbeat:    wire.Heartbeat{Interval: time.Second, IdleTimeout: 3 * time.Second},
		ServerTime:   time.Date(2026, 1, 2, 2, 4, 5, 678_000_000, time.UTC),
		MaxFrameSize: 65536,
	}
	if !equal(got, want) || got.(*wire.Connack).ServerTime.Location() != time.UTC {
		t.Fatalf("got %+v; want %+v", got, want)
	}
}

func TestCodeFor(t *testing.T) {
	cases := []struct {
		err  error
		want wire.Code
	}{
		{nil, wire.CodeNormal},
		{wire.ErrIncomplete, wire.CodeMalformedFrame},
		{fmt.Errorf("conn 7: %w", wire.ErrFrameTooLarge), wire.CodeFrameTooLarge},
		{&wire.FrameError{Err: wire.ErrUnsupportedVersion}, wire.CodeUnsupportedVersion},
		{&wire.FrameError{Err: wire.ErrUnknownType}, wire.CodeProtocolError},
		{&wire.FrameError{Err: wire.ErrMalformed}, wire.CodeMalformedFrame},
		{&wire.FrameError{Err: wire.ErrInvalidFrame}, wire.CodeInternalError},
		{errors.New("other"), wire.CodeInternalError},
		{fmt.Errorf("auth: %w", codedErr(wire.CodeCredentialRevoked)), wire.CodeCredentialRevoked},
	}
	for _, tc := range cases {
		if got := wire.CodeFor(tc.err); got != tc.want {
			t.Errorf("CodeFor(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}

type codedErr wire.Code

func (e codedErr) Error() string             { return wire.Code(e).String() }
func (e codedErr) DisconnectCode() wire.Code { return wire.Code(e) }

func TestCodes(t *testing.T) {
	reconnect := []wire.Code{wire.CodeNormal, wire.CodeServerShutdown, wire.CodeIdleTimeout, wire.CodeConnectTimeout,
		wire.CodeSlowConsumer, wire.CodeRateLimited, wire.CodeInternalError, 3499}
	stay := []wire.Code{wire.CodeProtocolError, wire.CodeMalformedFrame, wire.CodeFrameTooLarge, wire.CodeUnsupportedVersion,
		wire.CodeAuthenticationFailed, wire.CodeCredentialRevoked, wire.CodeAppDisabled, wire.CodeSuperseded, wire.CodeDeviceBlocked, 3999}
	names := map[string]bool{}
	for _, c := range append(append([]wire.Code{}, reconnect...), stay...) {
		if !c.Valid() {
			t.Errorf("%d not valid", c)
		}
		if names[c.String()] {
			t.Errorf("duplicate name %q", c.String())
		}
		names[c.String()] = true
	}
	for _, c := range reconnect {
		if !c.Reconnect() {
			t.Errorf("%v (%d): Reconnect false", c, c)
		}
	}
	for _, c := range stay {
		if c.Reconnect() {
			t.Errorf("%v (%d): Reconnect true", c, c)
		}
	}
	for _, c := range []wire.Code{0, 1000, 2999, 4000, 65535} {
		if c.Valid() || c.Reconnect() || !strings.HasPrefix(c.String(), "invalid") {
			t.Errorf("%d: Valid %v Reconnect %v %q", c, c.Valid(), c.Reconnect(), c)
		}
	}
	if s := wire.Code(3123).String(); s != "code 3123 (may reconnect)" {
		t.Errorf("3123: %q", s)
	}
	if s := wire.Code(3777).String(); s != "code 3777 (must not reconnect)" {
		t.Errorf("3777: %q", s)
	}
}

func TestMessageID(t *testing.T) {
	const s = "0190f3a4-7c1e-7b3a-9f2d-3c4b5a6d7e8f"
	id, err := wire.ParseMessageID(strings.ToUpper(s))
	if err != nil || id.String() != s || id[0] != 0x01 || id[15] != 0x8f || id.IsZero() {
		t.Fatalf("%v %v % x", id, err, id[:])
	}
	if !(wire.MessageID{}).IsZero() || (wire.MessageID{}).String() != "00000000-0000-0000-0000-000000000000" {
		t.Fatal("zero id")
	}
	for _, bad := range []string{"", s[:35], s + "0", "{" + s[1:], strings.Replace(s, "-", "0", 1), strings.Replace(s, "f", "g", 1), strings.Replace(s, "7", "-", 1)} {
		if _, err := wire.ParseMessageID(bad); err == nil {
			t.Errorf("ParseMessageID(%q) succeeded", bad)
		}
	}
}

func TestTypeString(t *testing.T) {
	if wire.TypeOpened.String() != "OPENED" || wire.Type(0x2a).String() != "Type(0x2a)" || wire.Type(0).Known() || wire.Type(9).Known() {
		t.Fatal("Type")
	}
}

// Decoder.Parse reuses its frames (documented); Clone detaches them, and
// Parse's byte slices alias the input.
func TestBufferLifetime(t *testing.T) {
	var d wire.Decoder
	a := mustAppend(t, nil, exPush)
	f1, _, _ := d.Parse(a)
	p1 := f1.(*wire.Push)
	kept := wire.Clone(f1)
	p1.Payload[0] = 'X' // aliases a
	if a[wire.PrefixSize+wire.HeaderSize+16] != 'X' {
		t.Fatal("Push.Payload does not alias the input")
	}
	if kept.(*wire.Push).Payload[0] != '{' {
		t.Fatal("Clone shares the payload")
	}
	other := &wire.Push{ID: wire.MessageID{1}, Payload: []byte("second")}
	f2, _, _ := d.Parse(mustAppend(t, nil, other))
	if f2 != f1 || !equal(f1, other) {
		t.Fatal("Decoder does not reuse its PUSH value")
	}
	g1, _, _ := wire.Parse(a)
	g2, _, _ := wire.Parse(a)
	if g1 == g2 {
		t.Fatal("package Parse reuses frames")
	}
	acks, _, _ := d.Parse(mustAppend(t, nil, exAck))
	keptAck := wire.Clone(acks)
	d.Parse(mustAppend(t, nil, &wire.Opened{IDs: []wire.MessageID{{9}, {9}}}))
	if acks.(*wire.Ack).IDs[0] != (wire.MessageID{9}) || !equal(keptAck, exAck) {
		t.Fatal("ids scratch not shared / Clone not deep")
	}
	for _, f := range examples() {
		if c := wire.Clone(f); !equal(c, f) || c == f && f.Type() != wire.TypePing { // zero-size values share an address
			t.Fatalf("Clone(%s)", describe(f))
		}
	}
	if wire.Clone(nil) != nil {
		t.Fatal("Clone(nil)")
	}
}

func TestDecoderMaxFrameSize(t *testing.T) {
	var d wire.Decoder
	if d.MaxFrameSize() != wire.DefaultMaxFrameSize {
		t.Fatal(d.MaxFrameSize())
	}
	for _, bad := range []uint32{0, wire.MinMaxFrameSize - 1, wire.MaxMaxFrameSize + 1} {
		if d.SetMaxFrameSize(bad) == nil {
			t.Errorf("SetMaxFrameSize(%d) accepted", bad)
		}
	}
	big := mustAppend(t, nil, &wire.Push{Payload: make([]byte, 100_000)})
	if _, _, err := d.Parse(big[:4]); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("default max: %v", err)
	}
	if err := d.SetMaxFrameSize(wire.MaxMaxFrameSize); err != nil {
		t.Fatal(err)
	}
	if _, n, err := d.Parse(big); err != nil || n != len(big) {
		t.Fatalf("raised max: %d %v", n, err)
	}
	if err := d.SetMaxFrameSize(wire.MinMaxFrameSize); err != nil {
		t.Fatal(err)
	}
	limit := mustAppend(t, nil, &wire.Push{Payload: make([]byte, int(wire.MinMaxFrameSize)-wire.HeaderSize-16)})
	if _, _, err := d.Parse(limit); err != nil {
		t.Fatalf("frame of exactly the max: %v", err)
	}
	over := mustAppend(t, nil, &wire.Push{Payload: make([]byte, int(wire.MinMaxFrameSize)-wire.HeaderSize-15)})
	if _, _, err := d.Parse(over[:4]); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("one byte over: %v", err)
	}
}

// Every CONNECT, CONNACK, PING, PONG and DISCONNECT fits in
// MinMaxFrameSize (the spec says so).
func TestControlFramesFitMinimum(t *testing.T) {
	largestConnect := 0
	for _, f := range examples() {
		n := len(mustAppend(t, nil, f)) - wire.PrefixSize
		switch f.Type() {
		case wire.TypeConnect:
			largestConnect = max(largestConnect, n)
		case wire.TypePush, wire.TypeAck, wire.TypeOpened:
			continue
		}
		if n > int(wire.MinMaxFrameSize) {
			t.Errorf("%s: %d bytes", f.Type(), n)
		}
	}
	if largestConnect != 4442 {
		t.Errorf("largest CONNECT is %d bytes; the spec says 4442", largestConnect)
	}
}

func TestZeroAllocs(t *testing.T) {
	var d wire.Decoder
	buf := make([]byte, 0, 1024)
	for _, f := range []wire.Frame{exPush, exAck, exOpened, exPing, exPong} {
		enc := mustAppend(t, nil, f)
		d.Parse(enc) // warm the ids scratch
		if a := testing.AllocsPerRun(100, func() { _, _, _ = d.Parse(enc) }); a != 0 {
			t.Errorf("Decoder.Parse(%v): %v allocs", f.Type(), a)
		}
		if a := testing.AllocsPerRun(100, func() { buf, _ = wire.AppendFrame(buf[:0], f) }); a != 0 {
			t.Errorf("AppendFrame(%v): %v allocs", f.Type(), a)
		}
	}
	// A frame built at the call site stays on the stack.
	id := exPush.ID
	payload := exPush.Payload
	if a := testing.AllocsPerRun(100, func() {
		buf, _ = wire.AppendFrame(buf[:0], &wire.Push{ID: id, Payload: payload})
	}); a != 0 {
		t.Errorf("AppendFrame(&Push{...}): %v allocs", a)
	}
}

// allocated returns the bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	// One P while measuring (as testing.AllocsPerRun does): the counters
	// are the process's, and another goroutine allocating meanwhile would
	// be counted as Parse's.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Parse allocates at most the size of the frame it decodes (plus a small
// constant for an error), whatever the length prefix or counts claim.
func TestParseAllocationBound(t *testing.T) {
	const slack = 512 // a *FrameError and its message
	var inputs [][]byte
	for _, f := range examples() {
		enc := mustAppend(t, nil, f)
		inputs = append(inputs, enc, enc[:len(enc)/2], enc[:min(len(enc), 6)])
	}
	inputs = append(inputs,
		[]byte{0xff, 0xff, 0xff, 0xff},
		frame(wire.DefaultMaxFrameSize, 1, byte(wire.TypeAck), 0, 0xff, 0xff),        // count 65535, body missing
		hdr(wire.TypeAck, 0, cat(u16(65535), make([]byte, 16))...),                   // count 65535, one id
		hdr(wire.TypeConnect, 0, 0xff, 0x7f),                                         // string length 16383
		frame(wire.DefaultMaxFrameSize, 1, byte(wire.TypeConnect), 0, 0x80, 0x20, 1), // credential claims 4096
	)
	for i, in := range inputs {
		var got uint64
		for range 5 { // the minimum of a few runs shrugs off runtime noise
			a := allocated(func() { _, _, _ = wire.Parse(in) })
			if got == 0 || a < got {
				got = a
			}
		}
		size := uint64(0)
		if len(in) >= 4 {
			size = uint64(min(binary.BigEndian.Uint32(in), uint32(len(in))))
		}
		if got > size+slack {
			t.Errorf("input %d (%d bytes, type %v): Parse allocated %d bytes", i, len(in), wire.Type(in[min(5, len(in)-1)]), got)
		}
	}
}
