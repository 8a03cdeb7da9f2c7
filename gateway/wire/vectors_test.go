package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pushledger/pushledger/gateway/wire"
)

// specPath is the protocol specification whose examples this test keeps
// true.
const specPath = "../../docs/gateway-protocol.md"

// seg is a run of bytes of a vector and its annotation.
type seg struct {
	b    []byte
	note string
}

// vector is a known-answer example: a frame, and its encoding built by
// hand, field by field, independently of the codec.
type vector struct {
	name  string
	frame wire.Frame
	segs  []seg
}

func field(b []byte, format string, args ...any) seg { return seg{b, fmt.Sprintf(format, args...)} }

// build prefixes the body segments with the header.
func build(name string, f wire.Frame, flags byte, flagsNote string, body ...seg) vector {
	size := wire.HeaderSize
	for _, s := range body {
		size += len(s.b)
	}
	head := []seg{
		field(binary.BigEndian.AppendUint32(nil, uint32(size)), "length = %d", size),
		field([]byte{wire.Version}, "version = %d", wire.Version),
		field([]byte{byte(f.Type())}, "type = %s", f.Type()),
		field([]byte{flags}, "flags = %s", flagsNote),
	}
	return vector{name: name, frame: f, segs: append(head, body...)}
}

func strSegs(name, s string) []seg {
	return []seg{field([]byte{byte(len(s))}, "%s length = %d", name, len(s)), field([]byte(s), "%s = %q", name, s)}
}

func idSeg(name string, id wire.MessageID) seg { return field(id[:], "%s = %s", name, id) }

func vectors() []vector {
	c := exConnect
	connect := build("connect", c, 0, "0", append(append(append(append(
		strSegs("app_key", c.AppKey),
		strSegs("device_id", c.DeviceID)...),
		field([]byte{byte(len(c.Credential))}, "credential length = %d", len(c.Credential)),
		field(c.Credential, "credential (opaque bytes)")),
		strSegs("sdk_version", c.SDKVersion)...),
		idSeg("last_acked", c.LastAcked))...)

	ca := exConnack
	connack := build("connack", ca, 0, "0",
		field(u32(uint32(ca.Heartbeat.Interval.Milliseconds())), "heartbeat_interval_ms = %d (%v)", ca.Heartbeat.Interval.Milliseconds(), ca.Heartbeat.Interval),
		field(u32(uint32(ca.Heartbeat.IdleTimeout.Milliseconds())), "idle_timeout_ms = %d (%v)", ca.Heartbeat.IdleTimeout.Milliseconds(), ca.Heartbeat.IdleTimeout),
		field(binary.BigEndian.AppendUint64(nil, uint64(ca.ServerTime.UnixMilli())), "server_time_ms = %d (%s)", ca.ServerTime.UnixMilli(), ca.ServerTime.Format("2006-01-02T15:04:05.000Z07:00")),
		field(u32(ca.MaxFrameSize), "max_frame_size = %d", ca.MaxFrameSize))

	ping := build("ping", exPing, 0, "0")

	po := exPong
	pong := build("pong", po, 0x01, "0x01 HEARTBEAT (body holds new values)",
		field(u32(uint32(po.Update.Interval.Milliseconds())), "heartbeat_interval_ms = %d (%v)", po.Update.Interval.Milliseconds(), po.Update.Interval),
		field(u32(uint32(po.Update.IdleTimeout.Milliseconds())), "idle_timeout_ms = %d (%v)", po.Update.IdleTimeout.Milliseconds(), po.Update.IdleTimeout))

	p := exPush
	push := build("push", p, byte(p.Flags), "0x02 HIGH_PRIORITY",
		idSeg("message_id", p.ID),
		field(p.Payload, "payload (%d bytes of JSON): %s", len(p.Payload), p.Payload))

	ackSegs := []seg{field(u16(uint16(len(exAck.IDs))), "count = %d", len(exAck.IDs))}
	for i, id := range exAck.IDs {
		ackSegs = append(ackSegs, idSeg(fmt.Sprintf("message_id[%d]", i), id))
	}
	ack := build("ack", exAck, 0, "0", ackSegs...)

	opened := build("opened", exOpened, 0, "0",
		field(u16(1), "count = 1"), idSeg("message_id[0]", exOpened.IDs[0]))

	di := exDisconnect
	disconnect := build("disconnect", di, 0, "0", append([]seg{
		field(u16(uint16(di.Code)), "code = %d (%s: may reconnect)", di.Code, di.Code),
		field(u32(uint32(di.RetryAfter.Milliseconds())), "retry_after_ms = %d (%v)", di.RetryAfter.Milliseconds(), di.RetryAfter)},
		strSegs("reason", di.Reason)...)...)

	return []vector{connect, connack, ping, pong, push, ack, opened, disconnect}
}

// render formats v as the spec shows it: 16 bytes a line, each field
// annotated after '#'.
func render(v vector) string {
	var sb strings.Builder
	const col = 16*3 + 1
	for _, s := range v.segs {
		for i := 0; i < len(s.b); i += 16 {
			chunk := s.b[i:min(i+16, len(s.b))]
			line := fmt.Sprintf("% x", chunk)
			if i == 0 {
				line += strings.Repeat(" ", col-len(line)) + "# " + s.note
			}
			sb.WriteString(strings.TrimRight(line, " ") + "\n")
		}
	}
	return sb.String()
}

func (v vector) bytes() []byte {
	var b []byte
	for _, s := range v.segs {
		b = append(b, s.b...)
	}
	return b
}

// specVectors returns the fenced blocks that follow a line
// "<!-- vector: NAME -->" in the spec.
func specVectors(t *testing.T) map[string]string {
	t.Helper()
	file, err := os.Open(specPath)
	if err != nil {
		t.Fatalf("the spec: %v", err)
	}
	defer file.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(file)
	var name string
	var block *strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case block != nil && strings.HasPrefix(line, "```"):
			out[name] = block.String()
			name, block = "", nil
		case block != nil:
			block.WriteString(line + "\n")
		case strings.HasPrefix(line, "<!-- vector: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- vector: "), " -->")
		case name != "" && strings.HasPrefix(line, "```"):
			block = &strings.Builder{}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The examples in the spec are what the codec produces and decodes.
func TestSpecVectors(t *testing.T) {
	inSpec := specVectors(t)
	for _, v := range vectors() {
		want := v.bytes()
		enc := mustAppend(t, nil, v.frame)
		if !bytes.Equal(enc, want) {
			t.Errorf("%s: codec\n% x\nhand-built\n% x", v.name, enc, want)
			continue
		}
		got, n, err := wire.Parse(want)
		if err != nil || n != len(want) || !equal(got, v.frame) {
			t.Errorf("%s: Parse = %s, %d, %v", v.name, describe(got), n, err)
		}
		text := render(v)
		block, ok := inSpec[v.name]
		delete(inSpec, v.name)
		if block != text {
			t.Errorf("%s: the spec's example (after <!-- vector: %s -->) should read\n```text\n%s```", v.name, v.name, text)
		}
		// What a client's test would do: strip the comments, parse the hex.
		var hexBytes []byte
		for _, line := range strings.Split(block, "\n") {
			line, _, _ = strings.Cut(line, "#")
			for _, h := range strings.Fields(line) {
				var b byte
				if _, err := fmt.Sscanf(h, "%02x", &b); err != nil {
					t.Fatalf("%s: %q is not a hex byte", v.name, h)
				}
				hexBytes = append(hexBytes, b)
			}
		}
		if ok && !bytes.Equal(hexBytes, want) {
			t.Errorf("%s: the spec's hex is not the frame", v.name)
		}
	}
	for name := range inSpec {
		t.Errorf("the spec has a vector %q this test does not know", name)
	}
}
