package wire_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/pushledger/pushledger/gateway/wire"
)

var genID = rapid.Custom(func(t *rapid.T) wire.MessageID {
	var id wire.MessageID
	if rapid.Bool().Draw(t, "zero") {
		return id
	}
	copy(id[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "id"))
	return id
})

func genStr(minLen, maxLen int) *rapid.Generator[string] {
	return rapid.StringN(minLen, maxLen, maxLen)
}

func genBytes(minLen, maxLen int) *rapid.Generator[[]byte] {
	return rapid.Map(rapid.SliceOfN(rapid.Byte(), minLen, maxLen), func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	})
}

var genHeartbeat = rapid.Custom(func(t *rapid.T) wire.Heartbeat {
	iv := rapid.Uint32Range(1, wire.MaxMillis-1).Draw(t, "interval_ms")
	idle := rapid.Uint32Range(iv+1, wire.MaxMillis).Draw(t, "idle_ms")
	return wire.Heartbeat{Interval: time.Duration(iv) * time.Millisecond, IdleTimeout: time.Duration(idle) * time.Millisecond}
})

func genIDs(t *rapid.T) []wire.MessageID {
	return rapid.SliceOfN(genID, 1, 300).Draw(t, "ids")
}

// genFrame draws a valid frame of any type.
var genFrame = rapid.OneOf(
	rapid.Custom(func(t *rapid.T) wire.Frame {
		return &wire.Connect{
			AppKey:     genStr(1, wire.MaxAppKeyLen).Draw(t, "app_key"),
			DeviceID:   genStr(1, wire.MaxDeviceIDLen).Draw(t, "device_id"),
			Credential: genBytes(1, wire.MaxCredentialLen).Draw(t, "credential"),
			SDKVersion: genStr(1, wire.MaxSDKVersionLen).Draw(t, "sdk_version"),
			LastAcked:  genID.Draw(t, "last_acked"),
		}
	}),
	rapid.Custom(func(t *rapid.T) wire.Frame {
		return &wire.Connack{
			Heartbeat:    genHeartbeat.Draw(t, "heartbeat"),
			ServerTime:   time.UnixMilli(rapid.Int64().Draw(t, "server_time_ms")).UTC(),
			MaxFrameSize: rapid.Uint32Range(wire.MinMaxFrameSize, wire.MaxMaxFrameSize).Draw(t, "max_frame_size"),
		}
	}),
	rapid.Just[wire.Frame](&wire.Ping{}),
	rapid.Custom(func(t *rapid.T) wire.Frame {
		if rapid.Bool().Draw(t, "update") {
			return &wire.Pong{Update: genHeartbeat.Draw(t, "heartbeat")}
		}
		return &wire.Pong{}
	}),
	rapid.Custom(func(t *rapid.T) wire.Frame {
		return &wire.Push{
			ID:      genID.Draw(t, "id"),
			Flags:   wire.PushFlags(rapid.ByteRange(0, 3).Draw(t, "flags")),
			Payload: genBytes(0, 2000).Draw(t, "payload"),
		}
	}),
	rapid.Custom(func(t *rapid.T) wire.Frame { return &wire.Ack{IDs: genIDs(t)} }),
	rapid.Custom(func(t *rapid.T) wire.Frame { return &wire.Opened{IDs: genIDs(t)} }),
	rapid.Custom(func(t *rapid.T) wire.Frame {
		return &wire.Disconnect{
			Code:       wire.Code(rapid.Uint16Range(3000, 3999).Draw(t, "code")),
			RetryAfter: time.Duration(rapid.Uint32().Draw(t, "retry_after_ms")) * time.Millisecond,
			Reason:     genStr(0, wire.MaxReasonLen).Draw(t, "reason"),
		}
	}),
)

// Every valid frame survives encoding and decoding, and its encoding is
// the only one (decoding then encoding gives the same bytes).
func TestRapidRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFrame.Draw(t, "frame")
		enc, err := wire.AppendFrame(nil, f)
		if err != nil {
			t.Fatalf("AppendFrame(%s): %v", describe(f), err)
		}
		var d wire.Decoder
		got, n, err := d.Parse(enc)
		if err != nil || n != len(enc) || !equal(got, f) {
			t.Fatalf("Parse = %s, %d, %v; want %s", describe(got), n, err, describe(f))
		}
		if again, _ := wire.AppendFrame(nil, got); !bytes.Equal(again, enc) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// A stream of frames delivered in arbitrary chunks, to a Decoder as an
// event loop would and through a Reader, yields the frames in order.
func TestRapidChunkedStream(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		frames := rapid.SliceOfN(genFrame, 0, 8).Draw(t, "frames")
		var stream []byte
		for _, f := range frames {
			stream, _ = wire.AppendFrame(stream, f)
		}
		sizes := rapid.SliceOfN(rapid.IntRange(1, 300), 1, 20).Draw(t, "chunks")
		next := cycle(sizes)

		var d wire.Decoder
		got, rest, err := decodeChunked(&d, stream, next)
		if err != wire.ErrIncomplete || rest != 0 || len(got) != len(frames) {
			t.Fatalf("Decoder: %d frames, %d bytes left, %v; want %d frames", len(got), rest, err, len(frames))
		}
		for i := range frames {
			if !equal(got[i], frames[i]) {
				t.Fatalf("Decoder: frame %d = %s; want %s", i, describe(got[i]), describe(frames[i]))
			}
		}

		r := wire.NewReader(&chunkReader{data: stream, next: cycle(sizes)})
		for i := range frames {
			f, err := r.ReadFrame()
			if err != nil || !equal(f, frames[i]) {
				t.Fatalf("Reader: frame %d = %s, %v; want %s", i, describe(f), err, describe(frames[i]))
			}
		}
		if f, err := r.ReadFrame(); err != io.EOF {
			t.Fatalf("Reader after the last frame: %s, %v", describe(f), err)
		}
	})
}

// Damaging one byte of a valid frame either fails to decode or decodes to
// a frame whose encoding is exactly the damaged bytes.
func TestRapidDamagedFrame(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFrame.Draw(t, "frame")
		enc, _ := wire.AppendFrame(nil, f)
		i := rapid.IntRange(0, len(enc)-1).Draw(t, "index")
		enc[i] ^= rapid.ByteRange(1, 255).Draw(t, "xor")
		got, n, err := wire.Parse(enc)
		if err != nil {
			if n != 0 || got != nil {
				t.Fatalf("error %v with n=%d frame=%v", err, n, got)
			}
			return
		}
		if again, _ := wire.AppendFrame(nil, got); !bytes.Equal(again, enc[:n]) {
			t.Fatalf("%s decoded from non-canonical bytes", describe(got))
		}
	})
}

// cycle returns a function that returns sizes in turn, forever.
func cycle(sizes []int) func() int {
	i := 0
	return func() int {
		s := sizes[i%len(sizes)]
		i++
		return s
	}
}

// decodeAll parses data in one piece: the frames (cloned), the bytes left
// and the error that stopped it (ErrIncomplete when data ran out).
func decodeAll(d *wire.Decoder, data []byte) ([]wire.Frame, int, error) {
	var frames []wire.Frame
	for {
		f, n, err := d.Parse(data)
		if err != nil {
			return frames, len(data), err
		}
		frames = append(frames, wire.Clone(f))
		data = data[n:]
	}
}

// decodeChunked delivers data in chunks of next() bytes into a growing
// buffer, as a gnet event loop sees it, and parses every frame as soon as
// it is complete. Its results are decodeAll's.
func decodeChunked(d *wire.Decoder, data []byte, next func() int) ([]wire.Frame, int, error) {
	var frames []wire.Frame
	var buf []byte
	for {
		k := min(next(), len(data))
		buf = append(buf, data[:k]...)
		data = data[k:]
		for {
			f, n, err := d.Parse(buf)
			if err == wire.ErrIncomplete {
				break
			}
			if err != nil {
				return frames, len(buf) + len(data), err
			}
			frames = append(frames, wire.Clone(f))
			buf = buf[n:]
		}
		if len(data) == 0 {
			return frames, len(buf), wire.ErrIncomplete
		}
	}
}

// chunkReader returns data in reads of next() bytes.
type chunkReader struct {
	data []byte
	next func() int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(r.next(), len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	var fa, fb *wire.FrameError
	if errors.As(a, &fa) != errors.As(b, &fb) {
		return false
	}
	return a.Error() == b.Error() && wire.CodeFor(a) == wire.CodeFor(b)
}
