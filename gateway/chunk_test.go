package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/panjf2000/gnet/v2"

	"github.com/pushledger/pushledger/gateway/noiseconn"
	"github.com/pushledger/pushledger/gateway/wire"
)

// fakeConn is a gnet.Conn fed by the test: inbound bytes accumulate as in
// gnet (what OnTraffic leaves unread stays for the next call), and every
// Peek returns a fresh copy that is scribbled over on Discard, so code
// that keeps a peeked slice too long reads garbage.
type fakeConn struct {
	gnet.Conn // unused methods panic
	loop      *fakeLoop
	in        []byte
	peeked    [][]byte
	out       bytes.Buffer
	ctx       any
	closed    bool
}

func (c *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 {
		n = len(c.in)
	}
	if n > len(c.in) {
		return nil, errors.New("short buffer")
	}
	b := bytes.Clone(c.in[:n])
	c.peeked = append(c.peeked, b)
	return b, nil
}

func (c *fakeConn) Discard(n int) (int, error) {
	for _, b := range c.peeked {
		for i := range b {
			b[i] = 0xa5
		}
	}
	c.peeked = nil
	if n <= 0 || n > len(c.in) {
		n = len(c.in)
	}
	c.in = c.in[n:]
	return n, nil
}

func (c *fakeConn) InboundBuffered() int        { return len(c.in) }
func (c *fakeConn) OutboundBuffered() int       { return 0 }
func (c *fakeConn) Write(b []byte) (int, error) { return c.out.Write(b) }
func (c *fakeConn) Fd() int                     { return -1 }
func (c *fakeConn) Context() any                { return c.ctx }
func (c *fakeConn) SetContext(v any)            { c.ctx = v }
func (c *fakeConn) EventLoop() gnet.EventLoop   { return c.loop }
func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}

// fakeLoop runs queued Runnables when the test says so and closes
// connections at once, as gnet does on its loop.
type fakeLoop struct {
	gnet.EventLoop
	ev    *events
	queue []gnet.Runnable
}

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.queue = append(l.queue, r)
	return nil
}

func (l *fakeLoop) Close(c gnet.Conn) error {
	fc := c.(*fakeConn)
	if !fc.closed {
		fc.closed = true
		l.ev.OnClose(c, nil)
	}
	return nil
}

// eventLog is a Handler recording events as text.
type eventLog struct{ events []string }

func (l *eventLog) OnConnect(c Conn, last wire.MessageID) {
	l.events = append(l.events, fmt.Sprintf("connect %s/%s %s %s", c.AppKey, c.DeviceID, c.SDKVersion, last))
}
func (l *eventLog) OnAck(_ Conn, ids []wire.MessageID) {
	l.events = append(l.events, fmt.Sprintf("ack %d %v %v", len(ids), ids[0], ids[len(ids)-1]))
}
func (l *eventLog) OnOpened(_ Conn, ids []wire.MessageID) {
	l.events = append(l.events, fmt.Sprintf("opened %d %v %v", len(ids), ids[0], ids[len(ids)-1]))
}
func (l *eventLog) OnDisconnect(_ Conn, d Disconnect) {
	l.events = append(l.events, fmt.Sprintf("disconnect %d %v", d.Code, d.ByDevice))
}

var fakeKey = []byte("0123456789abcdef0123456789abcdef")

// outcome is what a server did with one connection's input.
type outcome struct {
	events []string
	out    []wire.Frame // CONNACK's server time zeroed
	outErr error        // decoding the output
	closed bool
	state  connState
}

func (o outcome) String() string {
	s := fmt.Sprintf("events %q, state %d, closed %v, output error %v, output:", o.events, o.state, o.closed, o.outErr)
	for _, f := range o.out {
		s += fmt.Sprintf(" %s%+v", f.Type(), f)
	}
	return s
}

// feed opens one connection on a fresh server and delivers the chunks,
// one OnTraffic each (as gnet does for each read).
func feed(t testing.TB, chunks [][]byte) outcome {
	t.Helper()
	_, ev, fl, c, log := fakeServer(t, nil)
	for _, ch := range chunks {
		deliver(ev, fl, c, ch)
	}
	return result(c, log, &c.out)
}

func fakeServer(t testing.TB, noiseKey []byte) (*Server, *events, *fakeLoop, *fakeConn, *eventLog) {
	t.Helper()
	creds, err := NewCredentials([]CredentialKey{{ID: "k1", Secret: fakeKey}})
	if err != nil {
		t.Fatal(err)
	}
	log := &eventLog{}
	cfg := Config{Tick: time.Millisecond, Logger: slog.New(slog.DiscardHandler), MaxFrameSize: 16 << 10, NoiseKey: noiseKey}
	s, err := New(cfg, creds, log)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{s: s}
	fl := &fakeLoop{ev: ev}
	c := &fakeConn{loop: fl}
	ev.OnOpen(c)
	return s, ev, fl, c, log
}

func deliver(ev *events, fl *fakeLoop, c *fakeConn, chunk []byte) {
	if c.closed {
		return
	}
	c.in = append(c.in, chunk...)
	if ev.OnTraffic(c) == gnet.Close {
		fl.Close(c)
	}
}

// result decodes the frames the server wrote (plaintext in out).
func result(c *fakeConn, log *eventLog, out io.Reader) outcome {
	o := outcome{events: log.events, closed: c.closed, state: c.ctx.(*session).state}
	r := wire.NewReader(out)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				o.outErr = err
			}
			break
		}
		f = wire.Clone(f)
		if ack, ok := f.(*wire.Connack); ok {
			ack.ServerTime = time.Time{}
		}
		o.out = append(o.out, f)
	}
	return o
}

// deviceStream is a whole session of a device, every inbound frame type.
func deviceStream(t testing.TB) []byte {
	t.Helper()
	creds, err := NewCredentials([]CredentialKey{{ID: "k1", Secret: fakeKey}})
	if err != nil {
		t.Fatal(err)
	}
	id1 := wire.MessageID{1, 2, 3}
	id2 := wire.MessageID{4, 5, 6}
	var b []byte
	for _, f := range []wire.Frame{
		&wire.Connect{AppKey: "pk_app", DeviceID: "phone-1", Credential: creds.Issue("pk_app", "phone-1"), SDKVersion: "go/1", LastAcked: id1},
		&wire.Ping{},
		&wire.Ack{IDs: []wire.MessageID{id1, id2}},
		&wire.Opened{IDs: []wire.MessageID{id2}},
		&wire.Ping{},
		&wire.Ack{IDs: make([]wire.MessageID, 600)}, // 9 605 bytes: spans reads
		&wire.Disconnect{Code: wire.CodeNormal, Reason: "bye"},
	} {
		if b, err = wire.AppendFrame(b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestChunkedDelivery splits a device's stream at every byte boundary
// (two reads), and also delivers it a byte at a time: the server must see
// the same frames and answer the same.
func TestChunkedDelivery(t *testing.T) {
	stream := deviceStream(t)
	want := feed(t, [][]byte{stream})
	if len(want.events) != 5 || len(want.out) != 3 || !want.closed || want.outErr != nil {
		t.Fatalf("whole stream: %v", want)
	}
	if _, ok := want.out[0].(*wire.Connack); !ok {
		t.Fatalf("first answer %#v", want.out[0])
	}
	for k := 1; k < len(stream); k++ {
		got := feed(t, [][]byte{stream[:k], stream[k:]})
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("split at %d:\n got %v\nwant %v", k, got, want)
		}
	}
	bytewise := make([][]byte, len(stream))
	for i := range stream {
		bytewise[i] = stream[i : i+1]
	}
	if got := feed(t, bytewise); !reflect.DeepEqual(got, want) {
		t.Fatalf("byte by byte:\n got %v\nwant %v", got, want)
	}
}

// feedNoise is feed over the Noise transport: the device's stream is its
// handshake message, then stream encrypted in messages of at most
// msgSize plaintext bytes; cuts are the offsets at which that whole
// input is split into reads. The server's output is decrypted.
func feedNoise(t testing.TB, stream []byte, msgSize int, cuts []int) outcome {
	t.Helper()
	priv, pub, err := noiseconn.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, ev, fl, c, log := fakeServer(t, priv)
	hs, err := noiseconn.NewInitiator(pub)
	if err != nil {
		t.Fatal(err)
	}
	input, _, _, err := hs.WriteMessage([]byte{0, noiseconn.HandshakeSize}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg1 := len(input)
	// The ciphertext's length does not depend on the keys: reserve it,
	// fill it once the server's handshake answer is out.
	for p := stream; len(p) > 0; p = p[min(len(p), msgSize):] {
		input = append(input, make([]byte, 2+min(len(p), msgSize)+noiseconn.TagSize)...)
	}
	var rx *noise.CipherState
	prev := 0
	for _, cut := range append(cuts, len(input)) {
		if cut > msg1 && rx == nil {
			// A device sends nothing after its handshake message before
			// the answer (its keys depend on it).
			if prev < msg1 {
				deliver(ev, fl, c, input[prev:msg1])
				prev = msg1
			}
			if c.out.Len() < 2+noiseconn.HandshakeSize {
				t.Fatalf("no handshake answer after %d bytes", prev)
			}
			var tx *noise.CipherState
			_, tx, rx, err = hs.ReadMessage(nil, c.out.Next(2 + noiseconn.HandshakeSize)[2:])
			if err != nil {
				t.Fatal(err)
			}
			enc := input[:msg1] // appends overwrite the reserved bytes in place
			for p := stream; len(p) > 0; p = p[min(len(p), msgSize):] {
				if enc, err = noiseconn.AppendMessages(enc, tx, p[:min(len(p), msgSize)]); err != nil {
					t.Fatal(err)
				}
			}
		}
		deliver(ev, fl, c, input[prev:cut])
		prev = cut
	}
	var plain bytes.Buffer
	for c.out.Len() >= 2 {
		n := int(binary.BigEndian.Uint16(c.out.Next(2)))
		pt, err := rx.Decrypt(nil, nil, c.out.Next(n))
		if err != nil {
			t.Fatal(err)
		}
		plain.Write(pt)
	}
	return result(c, log, &plain)
}

// TestChunkedDeliveryNoise: over Noise, a stream whose frames straddle
// transport messages, split anywhere, is handled exactly as on plain TCP.
func TestChunkedDeliveryNoise(t *testing.T) {
	stream := deviceStream(t)
	want := feed(t, [][]byte{stream})
	total := 2 + noiseconn.HandshakeSize + len(stream) + (len(stream)/1000+1)*(2+noiseconn.TagSize)
	for k := 1; k < total; k++ {
		if k > 200 && k%37 != 0 {
			continue // every boundary of the handshake and first frames, a sample after
		}
		if got := feedNoise(t, stream, 1000, []int{k}); !reflect.DeepEqual(got, want) {
			t.Fatalf("split at %d:\n got %v\nwant %v", k, got, want)
		}
	}
	cuts := make([]int, 0, total)
	for k := 1; k < total; k++ {
		cuts = append(cuts, k)
	}
	if got := feedNoise(t, stream, 1000, cuts); !reflect.DeepEqual(got, want) {
		t.Fatalf("byte by byte:\n got %v\nwant %v", got, want)
	}
	if got := feedNoise(t, stream, noiseconn.MaxPlaintext, nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("one message:\n got %v\nwant %v", got, want)
	}
}

// FuzzServerInput feeds arbitrary bytes, after a valid CONNECT or not, in
// arbitrary chunks (each byte of cuts is a chunk of that many bytes + 1),
// to a connection. The server must not panic; it must handle the stream
// the same however it is cut; its output must be valid frames, starting
// with CONNACK or DISCONNECT, with nothing after a DISCONNECT; and after
// it sent a DISCONNECT it must be closing.
func FuzzServerInput(f *testing.F) {
	stream := deviceStream(f)
	connectLen := 0
	if _, n, err := wire.Parse(stream); err == nil {
		connectLen = n
	}
	f.Add(false, stream, []byte{0})
	f.Add(true, stream[connectLen:], []byte{3, 7})
	f.Add(true, []byte{0, 0, 0, 3, 1, 3, 0, 0, 0, 0, 3, 1, 4, 0}, []byte{1})
	f.Add(false, []byte("GET / HTTP/1.1\r\n"), []byte{2})
	f.Add(true, []byte{0xff, 0xff, 0xff, 0xff}, []byte{0})
	f.Fuzz(func(t *testing.T, withConnect bool, data, cuts []byte) {
		if len(data) > 4<<10 {
			// A few frames are enough: the fake connection copies its
			// whole input on every Peek, so byte-by-byte delivery of a
			// large input is quadratic and would stall the fuzzer.
			return
		}
		if withConnect {
			data = append(bytes.Clone(stream[:connectLen]), data...)
		}
		whole := feed(t, [][]byte{data})
		var chunks [][]byte
		for i, rest := 0, data; len(rest) > 0; i++ {
			n := 1
			if len(cuts) > 0 {
				n = int(cuts[i%len(cuts)]) + 1
			}
			n = min(n, len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		cut := feed(t, chunks)
		if !reflect.DeepEqual(whole, cut) {
			t.Fatalf("whole and chunked differ:\n whole %v\n   cut %v", whole, cut)
		}
		if whole.outErr != nil {
			t.Fatalf("server output does not decode: %v", whole.outErr)
		}
		for i, fr := range whole.out {
			switch fr.(type) {
			case *wire.Connack:
				if i != 0 {
					t.Fatalf("CONNACK at %d", i)
				}
			case *wire.Disconnect:
				if i != len(whole.out)-1 {
					t.Fatalf("frames after DISCONNECT: %v", whole.out)
				}
				if whole.state < stateClosing {
					t.Fatalf("DISCONNECT sent, state %d", whole.state)
				}
			case *wire.Pong:
			default:
				t.Fatalf("server sent %#v", fr)
			}
			if i == 0 {
				if _, ok := fr.(*wire.Disconnect); !ok {
					if _, ok := fr.(*wire.Connack); !ok {
						t.Fatalf("first frame %#v", fr)
					}
				}
			}
		}
		connects := 0
		for _, e := range whole.events {
			if len(e) >= 7 && e[:7] == "connect" {
				connects++
			}
		}
		if connects > 1 || (connects == 1 && slices.IndexFunc(whole.out, func(f wire.Frame) bool { _, ok := f.(*wire.Connack); return ok }) != 0) {
			t.Fatalf("events %v for output %v", whole.events, whole.out)
		}
	})
}
