package gateway_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
)

func TestConnectValidCredential(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	cfg := testConfig()
	srv := startServer(t, cfg, creds, rec)

	c := dialRaw(t, srv.addr)
	last := msgID(7)
	before := time.Now().Add(-time.Second)
	c.send(&wire.Connect{AppKey: testApp, DeviceID: "phone-1", Credential: creds.Issue(testApp, "phone-1"), SDKVersion: "test/1", LastAcked: last})
	ack, ok := c.read().(*wire.Connack)
	if !ok {
		t.Fatal("no CONNACK")
	}
	if ack.Heartbeat != cfg.Heartbeat || ack.MaxFrameSize != wire.DefaultMaxFrameSize {
		t.Errorf("CONNACK %+v, want heartbeat %+v and 64 KiB", ack, cfg.Heartbeat)
	}
	if ack.ServerTime.Before(before) || ack.ServerTime.After(time.Now().Add(time.Second)) {
		t.Errorf("server time %v is not now", ack.ServerTime)
	}
	eventually(t, "OnConnect", func() bool { return rec.connectCount() == 1 })
	ev := rec.lastConnect()
	if ev.conn.AppKey != testApp || ev.conn.DeviceID != "phone-1" || ev.conn.SDKVersion != "test/1" || ev.lastAcked != last {
		t.Errorf("OnConnect %+v", ev)
	}
	if !ev.conn.Remote.Addr().IsLoopback() {
		t.Errorf("remote %v", ev.conn.Remote)
	}
	if !srv.Online(testApp, "phone-1") || srv.Stats().Online != 1 {
		t.Errorf("device not online: %+v", srv.Stats())
	}

	// PING is answered with PONG; DISCONNECT from the device closes.
	c.send(&wire.Ping{})
	if p, ok := c.read().(*wire.Pong); !ok || !p.Update.IsZero() {
		t.Fatalf("want plain PONG, got %#v", p)
	}
	c.send(&wire.Disconnect{Code: wire.CodeNormal})
	eventually(t, "device offline", func() bool { return !srv.Online(testApp, "phone-1") })
	eventually(t, "OnDisconnect", func() bool { _, ok := rec.disconnectOf(ev.conn.ID); return ok })
	if d, _ := rec.disconnectOf(ev.conn.ID); d != (gateway.Disconnect{Code: wire.CodeNormal, ByDevice: true}) {
		t.Errorf("OnDisconnect %+v", d)
	}
	eventually(t, "stats", func() bool {
		st := srv.Stats()
		return st.DisconnectsReceived[wire.CodeNormal] == 1 && st.Connections == 0 && st.Online == 0
	})
}

// denyAuth rejects every device with a chosen error.
type denyAuth struct{ err error }

func (a denyAuth) Authenticate(string, string, []byte, time.Time) error { return a.err }

func TestConnectRejected(t *testing.T) {
	creds := testCredentials(t)
	other, err := gateway.NewCredentials([]gateway.CredentialKey{{ID: "k1", Secret: bytes.Repeat([]byte("x"), 32)}})
	if err != nil {
		t.Fatal(err)
	}
	expired := testCredentials(t, gateway.WithTTL(time.Hour), gateway.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }))
	future := testCredentials(t, gateway.WithClock(func() time.Time { return time.Now().Add(time.Hour) }))
	good := creds.Issue(testApp, "phone-1")
	tampered := bytes.Clone(good)
	tampered[len(tampered)-10] ^= 1 // a base64url character of the MAC

	tests := []struct {
		name   string
		auth   gateway.Authenticator
		device string
		cred   []byte
		code   wire.Code
	}{
		{"other device's credential", creds, "phone-2", good, wire.CodeAuthenticationFailed},
		{"other key", creds, "phone-1", other.Issue(testApp, "phone-1"), wire.CodeAuthenticationFailed},
		{"tampered", creds, "phone-1", tampered, wire.CodeAuthenticationFailed},
		{"garbage", creds, "phone-1", []byte("not a credential"), wire.CodeAuthenticationFailed},
		{"expired", creds, "phone-1", expired.Issue(testApp, "phone-1"), wire.CodeAuthenticationFailed},
		{"issued in the future", creds, "phone-1", future.Issue(testApp, "phone-1"), wire.CodeAuthenticationFailed},
		{"device id charset", creds, "phone 1", good, wire.CodeMalformedFrame},
		{"platform authenticator: blocked", denyAuth{&gateway.AuthError{Code: wire.CodeDeviceBlocked, Reason: "blocked"}}, "phone-1", good, wire.CodeDeviceBlocked},
		{"platform authenticator: store down", denyAuth{errors.New("store down")}, "phone-1", good, wire.CodeInternalError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			srv := startServer(t, testConfig(), tt.auth, rec)
			c := dialRaw(t, srv.addr)
			c.send(connectFrame(tt.device, tt.cred))
			c.expectDisconnect(tt.code)
			if st := srv.Stats(); st.DisconnectsSent[tt.code] != 1 || st.Online != 0 {
				t.Errorf("stats %+v", st)
			}
			if rec.connectCount() != 0 {
				t.Error("OnConnect for a rejected device")
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	creds := testCredentials(t)
	srv := startServer(t, testConfig(), creds, nil)
	tests := []struct {
		name    string
		connect bool
		send    []byte
		code    wire.Code
	}{
		{"PING before CONNACK", false, mustFrame(t, &wire.Ping{}), wire.CodeProtocolError},
		{"second CONNECT", true, mustFrame(t, connectFrame("phone-1", creds.Issue(testApp, "phone-1"))), wire.CodeProtocolError},
		{"PUSH from a device", true, mustFrame(t, &wire.Push{ID: msgID(1)}), wire.CodeProtocolError},
		{"PONG answering no PING", true, mustFrame(t, &wire.Pong{}), wire.CodeProtocolError},
		{"unknown type", true, []byte{0, 0, 0, 3, 1, 0x42, 0}, wire.CodeProtocolError},
		{"wrong version", false, []byte{0, 0, 0, 3, 2, 1, 0}, wire.CodeUnsupportedVersion},
		{"malformed ACK", true, []byte{0, 0, 0, 5, 1, 6, 0, 0, 0}, wire.CodeMalformedFrame},
		{"HTTP", false, []byte("GET / HTTP/1.1\r\n\r\n"), wire.CodeFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv.addr)
			if tt.connect {
				c.connect(creds, "phone-1")
			}
			c.sendBytes(tt.send)
			c.expectDisconnect(tt.code)
		})
	}
}

func mustFrame(t testing.TB, f wire.Frame) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFrameTooLarge(t *testing.T) {
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.MaxFrameSize = 16 << 10
	srv := startServer(t, cfg, creds, nil)

	t.Run("before CONNACK: 64 KiB", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		// A CONNECT prefix of 64 KiB + 1: rejected after 4 bytes, before
		// the body (which is never sent).
		c.sendBytes(binary.BigEndian.AppendUint32(nil, uint32(wire.DefaultMaxFrameSize)+1))
		c.expectDisconnect(wire.CodeFrameTooLarge)
	})
	t.Run("after CONNACK: the announced maximum", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		if ack := c.connect(creds, "phone-1"); ack.MaxFrameSize != cfg.MaxFrameSize {
			t.Fatalf("announced %d", ack.MaxFrameSize)
		}
		ids := make([]wire.MessageID, 1100) // 17 605 bytes > 16 KiB
		c.sendBytes(mustFrame(t, &wire.Ack{IDs: ids}))
		c.expectDisconnect(wire.CodeFrameTooLarge)
	})
	t.Run("push above the maximum is refused", func(t *testing.T) {
		_, err := srv.Push(testApp, "phone-1", msgID(1), 0, make([]byte, 16<<10))
		if !errors.Is(err, gateway.ErrPayloadTooLarge) {
			t.Fatalf("Push: %v", err)
		}
	})
}

func TestPushAndAckRaw(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	srv := startServer(t, testConfig(), creds, rec)
	if online, err := srv.Push(testApp, "phone-1", msgID(1), 0, nil); online || err != nil {
		t.Fatalf("Push to an offline device: %v %v", online, err)
	}
	c := dialRaw(t, srv.addr)
	c.connect(creds, "phone-1")
	payload := []byte(`{"notification":{"title":"hi"}}`)
	for i := range byte(3) {
		if online, err := srv.Push(testApp, "phone-1", msgID(i), wire.PushHighPriority, payload); !online || err != nil {
			t.Fatalf("Push: %v %v", online, err)
		}
	}
	for i := range byte(3) {
		p, ok := c.read().(*wire.Push)
		if !ok || p.ID != msgID(i) || p.Flags != wire.PushHighPriority || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("PUSH %d: %#v", i, p)
		}
	}
	c.send(&wire.Ack{IDs: []wire.MessageID{msgID(0), msgID(1), msgID(2)}}, &wire.Opened{IDs: []wire.MessageID{msgID(1)}})
	eventually(t, "acks", func() bool { return rec.ackCount(msgID(2)) == 1 && rec.openedCount(msgID(1)) == 1 })
	if st := srv.Stats(); st.Pushes != 3 {
		t.Errorf("stats: %+v", st)
	}
}

func TestTakeover(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	srv := startServer(t, testConfig(), creds, rec)

	old := dialRaw(t, srv.addr)
	old.connect(creds, "phone-1")
	eventually(t, "first OnConnect", func() bool { return rec.connectCount() == 1 })
	oldID := rec.lastConnect().conn.ID

	// Two event loops, round robin: the newer connection is on the other
	// loop, so the takeover crosses loops.
	newer := dialRaw(t, srv.addr)
	newer.connect(creds, "phone-1")
	old.expectDisconnect(wire.CodeSuperseded)

	eventually(t, "OnDisconnect of the old connection", func() bool { _, ok := rec.disconnectOf(oldID); return ok })
	if d, _ := rec.disconnectOf(oldID); d.Code != wire.CodeSuperseded || d.ByDevice {
		t.Errorf("old connection: %+v", d)
	}
	if online, err := srv.Push(testApp, "phone-1", msgID(9), 0, nil); !online || err != nil {
		t.Fatalf("Push: %v %v", online, err)
	}
	if p, ok := newer.read().(*wire.Push); !ok || p.ID != msgID(9) {
		t.Fatalf("new connection got %#v", p)
	}
	if st := srv.Stats(); st.Online != 1 || st.DisconnectsSent[wire.CodeSuperseded] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestDisconnectByTheServer: Disconnect closes a device's connection with
// the code given (a logout, a blacklisting), from any goroutine; a device
// with no connection is reported as such.
func TestDisconnectByTheServer(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	srv := startServer(t, testConfig(), creds, rec)
	if srv.Disconnect(testApp, "phone-1", wire.CodeCredentialRevoked) {
		t.Fatal("Disconnect of a device with no connection reported one")
	}
	c := dialRaw(t, srv.addr)
	c.connect(creds, "phone-1")
	eventually(t, "OnConnect", func() bool { return rec.connectCount() == 1 })
	if !srv.Disconnect(testApp, "phone-1", wire.CodeCredentialRevoked) {
		t.Fatal("Disconnect did not find the connection")
	}
	d := c.expectDisconnect(wire.CodeCredentialRevoked)
	if !strings.Contains(d.Reason, "revoked") {
		t.Errorf("reason %q", d.Reason)
	}
	eventually(t, "offline", func() bool { return !srv.Online(testApp, "phone-1") })
}

func TestIdleAndConnectTimeouts(t *testing.T) {
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.Heartbeat = wire.Heartbeat{Interval: 40 * time.Millisecond, IdleTimeout: 120 * time.Millisecond}
	cfg.ConnectTimeout = 100 * time.Millisecond
	srv := startServer(t, cfg, creds, nil)

	t.Run("idle", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		// The server counts from the CONNECT it received: start before it
		// is sent (after would be up to a round trip late).
		start := time.Now()
		c.connect(creds, "phone-1")
		c.expectDisconnect(wire.CodeIdleTimeout)
		if d := time.Since(start); d < cfg.Heartbeat.IdleTimeout {
			t.Errorf("closed after %v, before the idle timeout", d)
		}
	})
	t.Run("pinging keeps the connection", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		c.connect(creds, "phone-2")
		// Ten PINGs, each answered, a third of the idle timeout apart
		// (a margin for a loaded machine): over three idle timeouts.
		cadence := time.NewTicker(cfg.Heartbeat.IdleTimeout / 3)
		defer cadence.Stop()
		for range 10 {
			<-cadence.C
			c.send(&wire.Ping{})
			if _, ok := c.read().(*wire.Pong); !ok {
				t.Fatal("no PONG")
			}
		}
	})
	t.Run("connect", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		c.expectDisconnect(wire.CodeConnectTimeout)
	})
	t.Run("connect: a partial CONNECT does not count", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		b := mustFrame(t, connectFrame("phone-3", creds.Issue(testApp, "phone-3")))
		c.sendBytes(b[:10])
		c.expectDisconnect(wire.CodeConnectTimeout)
	})
}

func TestHeartbeatChangeAtRunTime(t *testing.T) {
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.Heartbeat = wire.Heartbeat{Interval: time.Second, IdleTimeout: 3 * time.Second}
	srv := startServer(t, cfg, creds, nil)

	c := dialRaw(t, srv.addr)
	c.connect(creds, "phone-1")
	next := wire.Heartbeat{Interval: 50 * time.Millisecond, IdleTimeout: 150 * time.Millisecond}
	if err := srv.SetHeartbeat(wire.Heartbeat{Interval: time.Second}); err == nil {
		t.Error("SetHeartbeat accepted an idle timeout below the interval")
	}
	if err := srv.SetHeartbeat(next); err != nil {
		t.Fatal(err)
	}
	// New connections get the new values in CONNACK...
	if ack := dialRaw(t, srv.addr).connect(creds, "phone-2"); ack.Heartbeat != next {
		t.Errorf("CONNACK %+v, want %+v", ack.Heartbeat, next)
	}
	// ...the existing one in the PONG answering its next PING, once.
	c.send(&wire.Ping{})
	if p, ok := c.read().(*wire.Pong); !ok || p.Update != next {
		t.Fatalf("PONG %#v, want update %+v", p, next)
	}
	c.send(&wire.Ping{})
	if p, ok := c.read().(*wire.Pong); !ok || !p.Update.IsZero() {
		t.Fatalf("second PONG %#v, want no update", p)
	}
	// That second PING was sent under the new values: the new idle
	// timeout now applies.
	start := time.Now()
	c.expectDisconnect(wire.CodeIdleTimeout)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle close after %v: the old idle timeout (3s) still applied", d)
	}
}

func TestSlowConsumer(t *testing.T) {
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.OutboundCap = 256 << 10
	srv := startServer(t, cfg, creds, nil)

	c := dialRaw(t, srv.addr)
	if err := c.Conn.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	c.connect(creds, "phone-1")
	// The device stops reading; the server pushes 32 KiB payloads until
	// the connection is dropped. Kernel buffers absorb a few MiB first.
	payload := make([]byte, 32<<10)
	var pushed int
	var lastErr error
	for pushed = 0; pushed < 10_000; pushed++ {
		online, err := srv.Push(testApp, "phone-1", msgID(byte(pushed)), 0, payload)
		if err != nil || !online {
			lastErr = err
			break
		}
		if pushed%8 == 7 {
			// Let the loop write before queueing more, as a steady
			// producer would; otherwise the queue alone hits the cap.
			eventually(t, "queue flushed", func() bool {
				st := srv.Stats()
				return st.Pushes >= uint64(pushed+1) || st.DisconnectsSent[wire.CodeSlowConsumer] > 0
			})
		}
	}
	if pushed == 10_000 {
		t.Fatal("never disconnected")
	}
	t.Logf("disconnected after %d pushes (%d MiB); last Push error: %v", pushed, pushed*len(payload)>>20, lastErr)
	eventually(t, "slow consumer disconnect", func() bool { return srv.Stats().DisconnectsSent[wire.CodeSlowConsumer] == 1 })
	st := srv.Stats()
	if st.OutboundHighWater > int64(2*cfg.OutboundCap) {
		t.Errorf("outbound high water %d exceeds 2 x cap %d", st.OutboundHighWater, cfg.OutboundCap)
	}
	if st.OutboundHighWater <= int64(cfg.OutboundCap)/2 {
		t.Errorf("outbound high water %d: the cap was never approached", st.OutboundHighWater)
	}
	if online, _ := srv.Push(testApp, "phone-1", msgID(0), 0, payload); online {
		t.Error("device still online")
	}
	// The device finally reads: the pushes that made it, then 3004.
	c.expectDisconnect(wire.CodeSlowConsumer)
}

func TestShutdownDrain(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	cfg := testConfig()
	srv := startServer(t, cfg, creds, rec)
	conns := make([]*rawConn, 4)
	for i := range conns {
		conns[i] = dialRaw(t, srv.addr)
		conns[i].connect(creds, "phone-"+string(rune('a'+i)))
	}
	srv.cancel()
	for _, c := range conns {
		d := c.expectDisconnect(wire.CodeServerShutdown)
		if d.RetryAfter >= cfg.ShutdownRetrySpread {
			t.Errorf("retry after %v, want below %v", d.RetryAfter, cfg.ShutdownRetrySpread)
		}
	}
	select {
	case err := <-srv.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		srv.done <- nil // for the cleanup's stop
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after the drain")
	}
	if st := srv.Stats(); st.DisconnectsSent[wire.CodeServerShutdown] != 4 || st.Connections != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, err := srv.Push(testApp, "phone-a", msgID(1), 0, nil); !errors.Is(err, gateway.ErrNotRunning) {
		t.Errorf("Push after stop: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := gateway.New(gateway.Config{
		Addr:         "udp://x",
		MaxFrameSize: 10,
		Tick:         time.Microsecond,
		WheelSlots:   3,
		NoiseKey:     []byte{1},
	}, nil, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Addr", "MaxFrameSize", "Tick", "WheelSlots", "NoiseKey", "Authenticator"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestProxyProtocol(t *testing.T) {
	rec := &recorder{}
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.ProxyProtocol = true
	cfg.ConnectTimeout = 200 * time.Millisecond
	srv := startServer(t, cfg, creds, rec)

	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51234}
	dst := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 7100}
	hdr, err := proxyproto.HeaderProxyFromAddrs(2, src, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("header, then the protocol", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		// The header and CONNECT split mid-header, as a balancer may.
		c.sendBytes(hdr[:10])
		c.sendBytes(append(hdr[10:], mustFrame(t, connectFrame("phone-1", creds.Issue(testApp, "phone-1")))...))
		if _, ok := c.read().(*wire.Connack); !ok {
			t.Fatal("no CONNACK")
		}
		eventually(t, "OnConnect", func() bool { return rec.connectCount() == 1 })
		if got := rec.lastConnect().conn.Remote; got.String() != "203.0.113.7:51234" {
			t.Errorf("remote %v, want the PROXY source", got)
		}
	})
	t.Run("no header: closed", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		c.send(connectFrame("phone-2", creds.Issue(testApp, "phone-2")))
		if f, err := c.readErr(); err == nil {
			t.Fatalf("got %#v, want the connection closed", f)
		}
	})
	t.Run("no data: closed at the connect timeout", func(t *testing.T) {
		c := dialRaw(t, srv.addr)
		if f, err := c.readErr(); err == nil {
			t.Fatalf("got %#v, want the connection closed", f)
		}
	})
}

// TestPingFloodWithoutReading: a device that sends PINGs but never reads
// the PONGs is cut off at the outbound cap, not buffered without bound.
func TestPingFloodWithoutReading(t *testing.T) {
	creds := testCredentials(t)
	cfg := testConfig()
	cfg.MaxFrameSize = wire.MinMaxFrameSize
	cfg.OutboundCap = 64 << 10
	srv := startServer(t, cfg, creds, nil)
	c := dialRaw(t, srv.addr)
	// A small receive buffer, so the PONGs back up sooner; not below a
	// loopback segment (64 KiB): with 4 KiB the kernel's TCP stalled the
	// connection in both directions now and then, and the server never
	// read the PINGs that would have taken it over the cap.
	if err := c.Conn.(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	c.connect(creds, "phone-1")
	pings := bytes.Repeat(mustFrame(t, &wire.Ping{}), 64<<10/7)
	rest := pings
	deadline := time.Now().Add(60 * time.Second)
	for sent := 0; srv.Stats().DisconnectsSent[wire.CodeSlowConsumer] == 0; {
		if sent > 256<<20 || time.Now().After(deadline) {
			t.Fatalf("%d MiB of PINGs and no disconnect", sent>>20)
		}
		// A write that stalls for a while (a loaded machine, TCP's
		// windows) is tried again; one the server refused ends the loop.
		// (The rest of a partly written chunk goes first: frames stay whole.)
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Write(rest)
		sent += n
		if rest = rest[n:]; len(rest) == 0 {
			rest = pings
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			continue
		}
		if err != nil {
			break // the server closed
		}
	}
	eventually(t, "slow consumer disconnect", func() bool { return srv.Stats().DisconnectsSent[wire.CodeSlowConsumer] == 1 })
}

// TestRestartOnTheSamePort: a server stopped while devices were connected
// leaves its side of their connections in TIME_WAIT (it closes first when
// it drains); a new server binds the same port at once.
func TestRestartOnTheSamePort(t *testing.T) {
	creds := testCredentials(t)
	first := startServer(t, testConfig(), creds, nil)
	dev := dialRaw(t, first.addr)
	dev.connect(creds, "phone-1")
	eventually(t, "online", func() bool { return first.Stats().Online == 1 })
	first.stop(t) // drains: DISCONNECT 3001, then the server closes
	cfg := testConfig()
	cfg.Addr = "tcp://" + first.addr
	second := startServer(t, cfg, creds, nil)
	if second.addr != first.addr {
		t.Fatalf("second server on %s, want %s", second.addr, first.addr)
	}
}
