package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/client"
	"github.com/pushledger/pushledger/gateway/noiseconn"
	"github.com/pushledger/pushledger/gateway/wire"
)

const (
	testApp     = "pk_testapp"
	waitTimeout = 10 * time.Second
)

var quiet = slog.New(slog.DiscardHandler)

func credentials(t testing.TB) *gateway.Credentials {
	t.Helper()
	c, err := gateway.NewCredentials([]gateway.CredentialKey{{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serverEvents records the gateway's handler events.
type serverEvents struct {
	mu       sync.Mutex
	connects []wire.MessageID // last_acked of each CONNECT
	acks     []wire.MessageID
	opened   []wire.MessageID
}

func (e *serverEvents) OnConnect(_ gateway.Conn, last wire.MessageID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.connects = append(e.connects, last)
}

func (e *serverEvents) OnAck(_ gateway.Conn, ids []wire.MessageID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.acks = append(e.acks, ids...)
}

func (e *serverEvents) OnOpened(_ gateway.Conn, ids []wire.MessageID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opened = append(e.opened, ids...)
}

func (e *serverEvents) OnDisconnect(gateway.Conn, gateway.Disconnect) {}

func (e *serverEvents) count(list *[]wire.MessageID, id wire.MessageID) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, x := range *list {
		if x == id {
			n++
		}
	}
	return n
}

func (e *serverEvents) connectCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.connects)
}

type server struct {
	*gateway.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, cfg gateway.Config, auth gateway.Authenticator, h gateway.Handler) *server {
	t.Helper()
	cfg.Addr = "tcp://127.0.0.1:0"
	cfg.Tick = 10 * time.Millisecond
	cfg.CloseTimeout = 300 * time.Millisecond
	cfg.DrainTimeout = 2 * time.Second
	cfg.EventLoops = 2
	cfg.Logger = quiet
	srv, err := gateway.New(cfg, auth, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		t.Fatal(err)
	}
	s.addr = srv.Addr().String()
	t.Cleanup(func() {
		cancel()
		if err := <-s.done; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	return s
}

// pushes records what the app got.
type pushes struct {
	mu   sync.Mutex
	got  []client.Push
	fail map[wire.MessageID]bool // OnPush fails for these
}

func (p *pushes) OnPush(_ context.Context, m client.Push) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail[m.ID] {
		return errors.New("disk full")
	}
	m.Payload = slices.Clone(m.Payload)
	p.got = append(p.got, m)
	return nil
}

func (p *pushes) count(id wire.MessageID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.got {
		if m.ID == id {
			n++
		}
	}
	return n
}

type runningClient struct {
	*client.Client
	done chan error
}

// runClient starts a client; the test's cleanup closes it.
func runClient(t testing.TB, cfg client.Config, h client.Handler) *runningClient {
	t.Helper()
	c, err := client.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	rc := &runningClient{Client: c, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(context.Background()) }()
	t.Cleanup(func() { _ = c.Close() })
	return rc
}

func clientConfig(t testing.TB, addr, device string, creds *gateway.Credentials, dir string) client.Config {
	return client.Config{
		Addr: addr, AppKey: testApp, DeviceID: device, Credential: creds.Issue(testApp, device),
		StoreDir: dir, BackoffBase: 5 * time.Millisecond, BackoffCap: 50 * time.Millisecond,
		ConnackTimeout: 2 * time.Second, Logger: quiet,
	}
}

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

func msgID(n byte) wire.MessageID {
	return wire.MessageID{0x01, 0x90, 0xf3, 0xa4, 0x7c, 0x1e, 0x7b, 0x3a, 0x9f, 0x2d, 0, 0, 0, 0, 0, n}
}

// pushUntilOnline pushes once the device is online (the client connects
// in the background).
func pushWhenOnline(t testing.TB, srv *server, device string, id wire.MessageID, payload []byte) {
	t.Helper()
	eventually(t, device+" online", func() bool { return srv.Online(testApp, device) })
	if online, err := srv.Push(testApp, device, id, 0, payload); !online || err != nil {
		t.Fatalf("Push: %v %v", online, err)
	}
}

func TestPushAckAndOpened(t *testing.T) {
	ev := &serverEvents{}
	creds := credentials(t)
	srv := startServer(t, gateway.Config{}, creds, ev)
	app := &pushes{}
	c := runClient(t, clientConfig(t, srv.addr, "phone-1", creds, t.TempDir()), app)

	pushWhenOnline(t, srv, "phone-1", msgID(1), []byte(`{"data":1}`))
	eventually(t, "ACK at the server", func() bool { return ev.count(&ev.acks, msgID(1)) == 1 })
	if app.count(msgID(1)) != 1 || string(app.got[0].Payload) != `{"data":1}` {
		t.Fatalf("app got %+v", app.got)
	}
	if c.LastAcked() != msgID(1) {
		t.Errorf("last acked %v", c.LastAcked())
	}
	if err := c.Opened(msgID(1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "OPENED at the server", func() bool { return ev.count(&ev.opened, msgID(1)) == 1 })

	// A failing OnPush leaves the message unacknowledged.
	app.mu.Lock()
	app.fail = map[wire.MessageID]bool{msgID(2): true}
	app.mu.Unlock()
	for _, id := range []wire.MessageID{msgID(2), msgID(3)} {
		if _, err := srv.Push(testApp, "phone-1", id, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the next message acknowledged", func() bool { return ev.count(&ev.acks, msgID(3)) == 1 })
	if ev.count(&ev.acks, msgID(2)) != 0 || app.count(msgID(2)) != 0 {
		t.Error("a message whose OnPush failed was acknowledged")
	}

	// Close says goodbye with 3000.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-c.done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	eventually(t, "DISCONNECT 3000 at the server", func() bool { return srv.Stats().DisconnectsReceived[wire.CodeNormal] == 1 })
}

// TestDedupAcrossRestart: a message pushed again after the client
// restarted (same store) is acknowledged again but reaches the app once;
// the restarted client reports it as last_acked.
func TestDedupAcrossRestart(t *testing.T) {
	ev := &serverEvents{}
	creds := credentials(t)
	srv := startServer(t, gateway.Config{}, creds, ev)
	dir := t.TempDir()
	app := &pushes{}
	id := msgID(42)

	first := runClient(t, clientConfig(t, srv.addr, "phone-1", creds, dir), app)
	pushWhenOnline(t, srv, "phone-1", id, []byte("x"))
	eventually(t, "first ACK", func() bool { return ev.count(&ev.acks, id) == 1 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	eventually(t, "offline", func() bool { return !srv.Online(testApp, "phone-1") })

	second := runClient(t, clientConfig(t, srv.addr, "phone-1", creds, dir), app)
	eventually(t, "second connect", func() bool { return ev.connectCount() == 2 })
	ev.mu.Lock()
	last := ev.connects[1]
	ev.mu.Unlock()
	if last != id {
		t.Errorf("CONNECT last_acked %v, want %v", last, id)
	}
	pushWhenOnline(t, srv, "phone-1", id, []byte("x")) // a redelivery
	eventually(t, "second ACK", func() bool { return ev.count(&ev.acks, id) == 2 })
	if n := app.count(id); n != 1 {
		t.Errorf("app got the message %d times", n)
	}
	_ = second
}

// denyFirst answers the first n CONNECTs with a may-reconnect code.
type denyFirst struct {
	n     int32
	calls atomic.Int32
	err   error
}

func (d *denyFirst) Authenticate(string, string, []byte, time.Time) error {
	if d.calls.Add(1) <= d.n {
		return d.err
	}
	return nil
}

func TestReconnectsOnMayReconnectCodes(t *testing.T) {
	ev := &serverEvents{}
	auth := &denyFirst{n: 2, err: &gateway.AuthError{Code: wire.CodeRateLimited, Reason: "slow down", RetryAfter: 30 * time.Millisecond}}
	srv := startServer(t, gateway.Config{}, auth, ev)
	var mu sync.Mutex
	var ends []error
	var delays []time.Duration
	cfg := clientConfig(t, srv.addr, "phone-1", credentials(t), t.TempDir())
	cfg.OnDisconnected = func(err error, in time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		ends, delays = append(ends, err), append(delays, in)
	}
	runClient(t, cfg, &pushes{})
	eventually(t, "connected on the third attempt", func() bool { return ev.connectCount() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(ends) != 2 {
		t.Fatalf("ends %v", ends)
	}
	for i, err := range ends {
		var de *client.DisconnectError
		if !errors.As(err, &de) || de.Code != wire.CodeRateLimited {
			t.Errorf("end %d: %v", i, err)
		}
		if delays[i] < 30*time.Millisecond {
			t.Errorf("retry %d after %v, below retry_after_ms", i, delays[i])
		}
	}
}

func TestStopsOnMustNotReconnectCode(t *testing.T) {
	creds := credentials(t)
	srv := startServer(t, gateway.Config{}, creds, nil)
	cfg := clientConfig(t, srv.addr, "phone-1", creds, t.TempDir())
	cfg.Credential = creds.Issue(testApp, "phone-2") // another device's
	var retries []time.Duration
	cfg.OnDisconnected = func(_ error, in time.Duration) { retries = append(retries, in) }
	c := runClient(t, cfg, &pushes{})
	var err error
	select {
	case err = <-c.done:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	var de *client.DisconnectError
	if !errors.As(err, &de) || de.Code != wire.CodeAuthenticationFailed {
		t.Fatalf("Run: %v", err)
	}
	if st := srv.Stats(); st.Accepted != 1 {
		t.Errorf("%d connections: the client retried", st.Accepted)
	}
	if len(retries) != 1 || retries[0] != -1 {
		t.Errorf("OnDisconnected retries %v, want [-1]", retries)
	}
}

func TestServerShutdownReconnectCode(t *testing.T) {
	creds := credentials(t)
	srv := startServer(t, gateway.Config{ShutdownRetrySpread: time.Second}, creds, nil)
	ends := make(chan error, 10)
	delays := make(chan time.Duration, 10)
	cfg := clientConfig(t, srv.addr, "phone-1", creds, t.TempDir())
	cfg.OnDisconnected = func(err error, in time.Duration) {
		select {
		case ends <- err:
			delays <- in
		default: // later attempts, after the server is gone
		}
	}
	runClient(t, cfg, &pushes{})
	eventually(t, "online", func() bool { return srv.Online(testApp, "phone-1") })
	srv.cancel()
	err := <-ends
	var de *client.DisconnectError
	if !errors.As(err, &de) || de.Code != wire.CodeServerShutdown {
		t.Fatalf("end: %v", err)
	}
	if d := <-delays; d < de.RetryAfter || d < 0 {
		t.Errorf("reconnects after %v, before retry_after %v", d, de.RetryAfter)
	}
}

func TestHeartbeatFromServer(t *testing.T) {
	creds := credentials(t)
	hb := wire.Heartbeat{Interval: 20 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	srv := startServer(t, gateway.Config{Heartbeat: hb}, creds, nil)
	connects := make(chan client.Connected, 10)
	cfg := clientConfig(t, srv.addr, "phone-1", creds, t.TempDir())
	cfg.OnConnected = func(c client.Connected) {
		select {
		case connects <- c:
		default:
		}
	}
	c := runClient(t, cfg, &pushes{})
	if got := <-connects; got.Heartbeat != hb {
		t.Fatalf("CONNACK heartbeat %+v", got.Heartbeat)
	}
	next := wire.Heartbeat{Interval: 40 * time.Millisecond, IdleTimeout: 400 * time.Millisecond}
	if err := srv.SetHeartbeat(next); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new heartbeat at the client", func() bool { return c.Heartbeat() == next })
	// The client's PINGs keep the connection through several idle
	// timeouts: the server never closes it as idle.
	start := time.Now()
	eventually(t, "three idle timeouts", func() bool { return time.Since(start) > 3*next.IdleTimeout })
	if st := srv.Stats(); st.DisconnectsSent[wire.CodeIdleTimeout] != 0 || st.Accepted != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestPongTimeout: a server that stops answering PINGs is presumed dead.
func TestPongTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default:
				c.Close()
			}
		}
	}()
	ends := make(chan error, 4)
	cfg := clientConfig(t, ln.Addr().String(), "phone-1", credentials(t), t.TempDir())
	cfg.OnDisconnected = func(err error, _ time.Duration) {
		select {
		case ends <- err:
		default:
		}
	}
	runClient(t, cfg, &pushes{})

	conn := <-accepted
	defer conn.Close()
	r := wire.NewReader(conn)
	if f, err := r.ReadFrame(); err != nil || f.Type() != wire.TypeConnect {
		t.Fatalf("first frame %v %v", f, err)
	}
	b, _ := wire.AppendFrame(nil, &wire.Connack{Heartbeat: wire.Heartbeat{Interval: 20 * time.Millisecond, IdleTimeout: 60 * time.Millisecond}, ServerTime: time.Now(), MaxFrameSize: wire.DefaultMaxFrameSize})
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	if f, err := r.ReadFrame(); err != nil || f.Type() != wire.TypePing {
		t.Fatalf("want PING, got %v %v", f, err)
	}
	// No PONG: the client gives up within the PONG timeout (40 ms) and
	// reconnects.
	if err := <-ends; !errors.Is(err, client.ErrPongTimeout) {
		t.Fatalf("end: %v", err)
	}
}

func TestNoiseTransport(t *testing.T) {
	priv, pub, err := noiseconn.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := &serverEvents{}
	creds := credentials(t)
	srv := startServer(t, gateway.Config{NoiseKey: priv}, creds, ev)

	cfg := clientConfig(t, srv.addr, "phone-1", creds, t.TempDir())
	cfg.ServerKey = pub
	app := &pushes{}
	runClient(t, cfg, app)
	big := make([]byte, 60_000) // a frame spanning two Noise messages
	for i := range big {
		big[i] = byte(i)
	}
	pushWhenOnline(t, srv, "phone-1", msgID(1), big)
	eventually(t, "ACK over Noise", func() bool { return ev.count(&ev.acks, msgID(1)) == 1 })
	app.mu.Lock()
	if got := app.got[0].Payload; string(got) != string(big) {
		t.Error("payload corrupted")
	}
	app.mu.Unlock()

	// A client pinning another key never gets in; plain TCP neither.
	_, otherPub, _ := noiseconn.GenerateKey(nil)
	for _, key := range [][]byte{otherPub, nil} {
		cfg := clientConfig(t, srv.addr, "phone-2", creds, t.TempDir())
		cfg.ServerKey = key
		var fails atomic.Int32
		cfg.OnDisconnected = func(error, time.Duration) { fails.Add(1) }
		c := runClient(t, cfg, &pushes{})
		eventually(t, "failed attempts", func() bool { return fails.Load() >= 3 })
		if srv.Online(testApp, "phone-2") {
			t.Errorf("key %x: connected", key)
		}
		_ = c.Close()
	}
}
