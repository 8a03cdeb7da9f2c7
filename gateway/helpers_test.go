package gateway_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
)

const (
	testApp     = "pk_testapp"
	waitTimeout = 10 * time.Second
)

// testCredentialKeys are the keys of testCredentials (also used by
// BenchmarkIdleMemory's device processes).
func testCredentialKeys() []gateway.CredentialKey {
	return []gateway.CredentialKey{{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}}
}

func testCredentials(t testing.TB, opts ...gateway.CredentialsOption) *gateway.Credentials {
	t.Helper()
	c, err := gateway.NewCredentials(testCredentialKeys(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testConfig is a Config with fast timers for tests.
func testConfig() gateway.Config {
	return gateway.Config{
		Addr:                "tcp://127.0.0.1:0",
		Heartbeat:           wire.Heartbeat{Interval: 5 * time.Second, IdleTimeout: 15 * time.Second},
		Tick:                10 * time.Millisecond,
		CloseTimeout:        500 * time.Millisecond,
		DrainTimeout:        3 * time.Second,
		ShutdownRetrySpread: 2 * time.Second,
		EventLoops:          2,
		Logger:              slog.New(slog.DiscardHandler),
	}
}

type testServer struct {
	*gateway.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a server on a free port until the test ends.
func startServer(t testing.TB, cfg gateway.Config, auth gateway.Authenticator, h gateway.Handler) *testServer {
	t.Helper()
	if auth == nil {
		auth = testCredentials(t)
	}
	srv, err := gateway.New(cfg, auth, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-ts.done:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("server not ready")
	}
	ts.addr = srv.Addr().String()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop drains the server and waits for Run to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok { // a second stop finds it closed
			close(ts.done)
		}
	case <-time.After(waitTimeout):
		t.Error("Run did not return")
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// recorder is a Handler that records every event.
type recorder struct {
	mu          sync.Mutex
	connects    []connectEvent
	acks        []idsEvent
	opened      []idsEvent
	disconnects []disconnectEvent
}

type connectEvent struct {
	conn      gateway.Conn
	lastAcked wire.MessageID
}

type idsEvent struct {
	conn gateway.Conn
	ids  []wire.MessageID
}

type disconnectEvent struct {
	conn gateway.Conn
	d    gateway.Disconnect
}

func (r *recorder) OnConnect(c gateway.Conn, lastAcked wire.MessageID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connects = append(r.connects, connectEvent{c, lastAcked})
}

func (r *recorder) OnAck(c gateway.Conn, ids []wire.MessageID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks = append(r.acks, idsEvent{c, slices.Clone(ids)})
}

func (r *recorder) OnOpened(c gateway.Conn, ids []wire.MessageID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, idsEvent{c, slices.Clone(ids)})
}

func (r *recorder) OnDisconnect(c gateway.Conn, d gateway.Disconnect) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disconnects = append(r.disconnects, disconnectEvent{c, d})
}

func (r *recorder) connectCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.connects)
}

func (r *recorder) lastConnect() connectEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connects[len(r.connects)-1]
}

// ackCount counts the acknowledgements of id.
func (r *recorder) ackCount(id wire.MessageID) int { return r.count(&r.acks, id) }

// openedCount counts the opens of id.
func (r *recorder) openedCount(id wire.MessageID) int { return r.count(&r.opened, id) }

// count counts id in the events of evs (r.acks or r.opened).
func (r *recorder) count(evs *[]idsEvent, id wire.MessageID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range *evs {
		for _, x := range e.ids {
			if x == id {
				n++
			}
		}
	}
	return n
}

// disconnectOf returns the disconnect recorded for connection id.
func (r *recorder) disconnectOf(id uint64) (gateway.Disconnect, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.disconnects {
		if e.conn.ID == id {
			return e.d, true
		}
	}
	return gateway.Disconnect{}, false
}

// rawConn is a device speaking the protocol by hand.
type rawConn struct {
	t testing.TB
	net.Conn
	r *wire.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, r: wire.NewReader(c)}
}

func (c *rawConn) send(frames ...wire.Frame) {
	c.t.Helper()
	var b []byte
	for _, f := range frames {
		var err error
		if b, err = wire.AppendFrame(b, f); err != nil {
			c.t.Fatal(err)
		}
	}
	c.sendBytes(b)
}

func (c *rawConn) sendBytes(b []byte) {
	c.t.Helper()
	if _, err := c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next frame (a copy), failing the test on error.
func (c *rawConn) read() wire.Frame {
	c.t.Helper()
	f, err := c.readErr()
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

func (c *rawConn) readErr() (wire.Frame, error) {
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := c.r.ReadFrame()
	if err != nil {
		return nil, err
	}
	return wire.Clone(f), nil
}

func connectFrame(device string, cred []byte) *wire.Connect {
	return &wire.Connect{AppKey: testApp, DeviceID: device, Credential: cred, SDKVersion: "test/1"}
}

// connect sends CONNECT with a valid credential and returns the CONNACK.
func (c *rawConn) connect(creds *gateway.Credentials, device string) *wire.Connack {
	c.t.Helper()
	c.send(connectFrame(device, creds.Issue(testApp, device)))
	f := c.read()
	ack, ok := f.(*wire.Connack)
	if !ok {
		c.t.Fatalf("got %#v, want CONNACK", f)
	}
	return ack
}

// expectDisconnect reads frames until a DISCONNECT (skipping PUSH and
// PONG), checks its code, checks that the server closes, and closes as a
// device does.
func (c *rawConn) expectDisconnect(code wire.Code) *wire.Disconnect {
	c.t.Helper()
	for {
		f := c.read()
		switch f := f.(type) {
		case *wire.Push, *wire.Pong:
			continue
		case *wire.Disconnect:
			if f.Code != code {
				c.t.Fatalf("DISCONNECT %d (%s: %q), want %d (%s)", f.Code, f.Code, f.Reason, code, code)
			}
			if _, err := c.readErr(); !errors.Is(err, io.EOF) {
				c.t.Fatalf("after DISCONNECT: %v, want EOF", err)
			}
			c.Close()
			return f
		default:
			c.t.Fatalf("got %#v, want DISCONNECT %d", f, code)
		}
	}
}

func msgID(n byte) wire.MessageID {
	return wire.MessageID{0x01, 0x90, 0xf3, 0xa4, 0x7c, 0x1e, 0x7b, 0x3a, 0x9f, 0x2d, 0, 0, 0, 0, 0, n}
}
