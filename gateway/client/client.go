// Package client is the Go device SDK of pushledger's gateway: it keeps a
// device connected (reconnecting with full-jitter exponential backoff,
// honouring DISCONNECT codes), sends heartbeats as the server tells it,
// hands each message to the app once (deduplicating by message id in a
// small on-disk store that survives restarts), acknowledges after the app
// took the message, and reports opens. The protocol is
// docs/gateway-protocol.md. It also serves as the gateway's load
// generator.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushledger/pushledger/gateway/noiseconn"
	"github.com/pushledger/pushledger/gateway/wire"
)

// Defaults of Config.
const (
	DefaultSDKVersion     = "go/1"
	DefaultDedupSize      = 4096
	DefaultBackoffBase    = time.Second
	DefaultBackoffCap     = 5 * time.Minute
	DefaultStableAfter    = time.Minute
	DefaultConnackTimeout = 10 * time.Second
	maxPongTimeout        = 30 * time.Second
)

// Config configures a Client; zero fields take their defaults.
type Config struct {
	// Addr is the gateway's host:port. Required.
	Addr string
	// AppKey, DeviceID and Credential identify the device (CONNECT).
	// Required. Credential is issued by the app's backend.
	AppKey, DeviceID string
	Credential       []byte
	// SDKVersion is sent in CONNECT; default "go/1".
	SDKVersion string
	// StoreDir holds the dedup ring, the last acknowledged id and the
	// pending opens; one directory per installation. Required.
	StoreDir string
	// DedupSize is how many message ids the store remembers (the protocol
	// asks for at least 1 000); default 4096. Changing it keeps the
	// newest ids.
	DedupSize int
	// BackoffBase and BackoffCap shape the reconnect delay: uniform in
	// [0, min(cap, base × 2^attempt)), and never below a DISCONNECT's
	// retry_after_ms. Defaults 1 s and 5 min.
	BackoffBase, BackoffCap time.Duration
	// StableAfter: a connection that stayed open this long resets the
	// backoff; default 1 min.
	StableAfter time.Duration
	// ConnackTimeout bounds dialing, the Noise handshake and waiting for
	// CONNACK; default 10 s.
	ConnackTimeout time.Duration
	// ServerKey, when set, is the gateway's pinned Noise public key (32
	// bytes): the connection is encrypted (Noise_NK) and a server without
	// the matching private key is refused.
	ServerKey []byte
	// Dial opens the TCP connection; default net.Dialer.DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnConnected, if set, is called after each CONNACK, on Run's
	// goroutine: it must not block.
	OnConnected func(Connected)
	// OnDisconnected, if set, is called when a connection ends, with the
	// reason (a *DisconnectError for a DISCONNECT received) and the delay
	// before the next attempt (-1 when the client stops). It runs on
	// Run's goroutine and must not block.
	OnDisconnected func(err error, retryIn time.Duration)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Connected describes an accepted connection.
type Connected struct {
	Heartbeat    wire.Heartbeat
	ServerTime   time.Time
	MaxFrameSize uint32
}

// Push is a message handed to the app.
type Push struct {
	ID    wire.MessageID
	Flags wire.PushFlags
	// Payload is the message's JSON; valid only during OnPush.
	Payload []byte
}

// Handler receives messages.
type Handler interface {
	// OnPush gets each message once (per StoreDir, among the last
	// DedupSize ids). Returning nil acknowledges it: the client records
	// the id (fsynced) and sends ACK. Should the process die after OnPush
	// returned and before the record is on disk, OnPush gets the message
	// again after the restart: exactly once needs a handler that stores
	// what it got under the message id (p.ID), or that is idempotent. An error leaves it unacknowledged, so the
	// server delivers it again on a later connection. Calls are
	// sequential, on the connection's reading goroutine: a slow OnPush
	// delays the connection's other input. ctx ends when the connection
	// does.
	OnPush(ctx context.Context, p Push) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, p Push) error

func (f HandlerFunc) OnPush(ctx context.Context, p Push) error { return f(ctx, p) }

// DisconnectError is a DISCONNECT received from the server. Run returns
// one whose Code forbids reconnecting (3500..3999); the app must act
// (new credential, SDK upgrade, ...) before running the client again.
type DisconnectError struct {
	Code       wire.Code
	RetryAfter time.Duration
	Reason     string
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("client: server disconnected: %d %s: %s", uint16(e.Code), e.Code, e.Reason)
}

// DisconnectCode returns the code (see wire.CodeFor).
func (e *DisconnectError) DisconnectCode() wire.Code { return e.Code }

// Errors for connections that end without a DISCONNECT.
var (
	// ErrPongTimeout: no frame arrived within the PONG timeout after a
	// PING; the connection was presumed dead.
	ErrPongTimeout = errors.New("client: no answer to PING")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client: closed")
	// errProtocol: the server broke the protocol; the client sent
	// DISCONNECT and reconnects at the slowest backoff step.
	errProtocol = errors.New("client: server protocol violation")
)

// Client keeps one device connected. Create it with New, run it with Run,
// stop it with Close.
type Client struct {
	cfg   Config
	h     Handler
	log   *slog.Logger
	store *store

	hb atomic.Pointer[wire.Heartbeat] // current heartbeat values

	mu      sync.Mutex
	conn    net.Conn // current connection, nil between connections
	maxIDs  int      // ids per ACK/OPENED frame on conn
	cancel  context.CancelFunc
	running chan struct{} // closed when Run returns; nil when not running
	closed  bool

	wmu  sync.Mutex // serializes writes to conn
	wbuf []byte
}

// New opens the store and returns a Client.
func New(cfg Config, h Handler) (*Client, error) {
	if cfg.SDKVersion == "" {
		cfg.SDKVersion = DefaultSDKVersion
	}
	if cfg.DedupSize == 0 {
		cfg.DedupSize = DefaultDedupSize
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffCap == 0 {
		cfg.BackoffCap = DefaultBackoffCap
	}
	if cfg.StableAfter == 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.ConnackTimeout == 0 {
		cfg.ConnackTimeout = DefaultConnackTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("client: config: "+format, args...)) }
	if cfg.Addr == "" {
		bad("Addr is required")
	}
	if cfg.AppKey == "" || cfg.DeviceID == "" || len(cfg.Credential) == 0 {
		bad("AppKey, DeviceID and Credential are required")
	}
	if cfg.StoreDir == "" {
		bad("StoreDir is required")
	}
	if cfg.DedupSize < 1 {
		bad("DedupSize %d < 1", cfg.DedupSize)
	}
	if cfg.BackoffBase < 0 || cfg.BackoffCap < cfg.BackoffBase {
		bad("want 0 <= BackoffBase (%v) <= BackoffCap (%v)", cfg.BackoffBase, cfg.BackoffCap)
	}
	if cfg.ServerKey != nil && len(cfg.ServerKey) != noiseconn.KeySize {
		bad("ServerKey has %d bytes, want %d", len(cfg.ServerKey), noiseconn.KeySize)
	}
	if h == nil {
		bad("nil Handler")
	}
	// Check the CONNECT encodes (field lengths, UTF-8).
	if _, err := wire.AppendFrame(nil, &wire.Connect{AppKey: cfg.AppKey, DeviceID: cfg.DeviceID, Credential: cfg.Credential, SDKVersion: cfg.SDKVersion}); err != nil && cfg.AppKey != "" && cfg.DeviceID != "" && len(cfg.Credential) != 0 {
		bad("%v", err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	st, err := openStore(cfg.StoreDir, cfg.DedupSize)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, h: h, log: cfg.Logger, store: st}, nil
}

// Heartbeat returns the heartbeat values in force: from the last CONNACK,
// updated by PONGs; zero before the first CONNACK.
func (c *Client) Heartbeat() wire.Heartbeat {
	if hb := c.hb.Load(); hb != nil {
		return *hb
	}
	return wire.Heartbeat{}
}

// LastAcked returns the id of the last message acknowledged (sent in the
// next CONNECT).
func (c *Client) LastAcked() wire.MessageID { return c.store.lastAcked() }

// Run connects and keeps the device connected until ctx ends or Close is
// called (then it returns nil), or the server sends a DISCONNECT whose
// code forbids reconnecting (then it returns that *DisconnectError). After
// other DISCONNECTs and connection failures it waits the backoff delay and
// connects again. Run may be called again after it returned, but not
// concurrently.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.running != nil {
		c.mu.Unlock()
		return errors.New("client: Run is already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.cancel, c.running = cancel, done
	c.mu.Unlock()
	defer func() {
		cancel()
		c.mu.Lock()
		c.cancel, c.running = nil, nil
		c.mu.Unlock()
		close(done)
	}()

	attempt := 0
	for {
		start := time.Now()
		opened, err := c.connection(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var de *DisconnectError
		if errors.As(err, &de) && !de.Code.Reconnect() {
			c.notify(err, -1)
			return err
		}
		if opened && time.Since(start) >= c.cfg.StableAfter {
			attempt = 0
		}
		delay := c.backoff(attempt)
		if errors.Is(err, errProtocol) {
			delay = c.cfg.BackoffCap
		}
		if de != nil {
			delay = max(delay, de.RetryAfter)
		}
		attempt++
		c.notify(err, delay)
		c.log.Debug("client: reconnecting", "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) notify(err error, retryIn time.Duration) {
	if c.cfg.OnDisconnected != nil {
		c.cfg.OnDisconnected(err, retryIn)
	}
}

// backoff is the full-jitter delay of an attempt: uniform in
// [0, min(cap, base × 2^attempt)).
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.cfg.BackoffCap
	if attempt < 62 {
		if d := c.cfg.BackoffBase << attempt; d > 0 && d < ceil && d>>attempt == c.cfg.BackoffBase {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// Close sends DISCONNECT 3000 (normal) on the current connection, stops
// Run and waits for it, then closes the store.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn, cancel, running := c.conn, c.cancel, c.running
	c.mu.Unlock()
	if conn != nil {
		// The deadline also ends a write blocked on a server that does not
		// read, which would hold the write lock.
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeFrame(conn, &wire.Disconnect{Code: wire.CodeNormal, Reason: "client closed"})
	}
	if cancel != nil {
		cancel()
	}
	if running != nil {
		<-running
	}
	return c.store.close()
}

// Opened reports that the user opened these messages. The ids are stored
// durably and sent in OPENED on the current connection, or on the next
// one.
func (c *Client) Opened(ids ...wire.MessageID) error {
	if len(ids) == 0 {
		return nil
	}
	if err := c.store.addOpened(ids); err != nil {
		return err
	}
	c.mu.Lock()
	conn, maxIDs := c.conn, c.maxIDs
	c.mu.Unlock()
	if conn != nil {
		return c.flushOpened(conn, maxIDs)
	}
	return nil
}

func (c *Client) flushOpened(conn net.Conn, maxIDs int) error {
	return c.store.sendOpened(func(ids []wire.MessageID) error {
		for len(ids) > 0 {
			n := min(len(ids), maxIDs)
			if err := c.writeFrame(conn, &wire.Opened{IDs: ids[:n]}); err != nil {
				return err
			}
			ids = ids[n:]
		}
		return nil
	})
}

func (c *Client) writeFrame(conn net.Conn, f wire.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := wire.AppendFrame(c.wbuf[:0], f)
	if err != nil {
		return err
	}
	c.wbuf = b
	_, err = conn.Write(b)
	return err
}

// connection runs one connection to its end and returns why it ended;
// opened reports whether CONNACK arrived.
func (c *Client) connection(ctx context.Context) (opened bool, err error) {
	dctx, cancelDial := context.WithTimeout(ctx, c.cfg.ConnackTimeout)
	defer cancelDial()
	conn, err := c.cfg.Dial(dctx, "tcp", c.cfg.Addr)
	if err != nil {
		return false, err
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	raw := conn
	defer func() {
		cancel()
		raw.Close()
		wg.Wait()
	}()
	// Closing the socket is what unblocks the reads below.
	wg.Go(func() {
		<-cctx.Done()
		raw.Close()
	})
	deadline := time.Now().Add(c.cfg.ConnackTimeout)
	_ = conn.SetDeadline(deadline)
	if c.cfg.ServerKey != nil {
		nc, err := noiseconn.Client(conn, c.cfg.ServerKey)
		if err != nil {
			return false, err
		}
		conn = nc
	}
	err = c.writeFrame(conn, &wire.Connect{
		AppKey: c.cfg.AppKey, DeviceID: c.cfg.DeviceID, Credential: c.cfg.Credential,
		SDKVersion: c.cfg.SDKVersion, LastAcked: c.store.lastAcked(),
	})
	if err != nil {
		return false, err
	}
	r := wire.NewReader(conn)
	f, err := r.ReadFrame()
	if err != nil {
		return false, c.readFailed(conn, err)
	}
	var ack *wire.Connack
	switch f := f.(type) {
	case *wire.Connack:
		ack = f
	case *wire.Disconnect:
		return false, &DisconnectError{Code: f.Code, RetryAfter: f.RetryAfter, Reason: f.Reason}
	default:
		return false, c.violation(conn, wire.CodeProtocolError, f.Type().String()+" before CONNACK")
	}
	_ = conn.SetDeadline(time.Time{})
	_ = r.SetMaxFrameSize(ack.MaxFrameSize)
	hb := ack.Heartbeat
	c.hb.Store(&hb)
	maxIDs := min(wire.MaxIDs, (int(ack.MaxFrameSize)-wire.HeaderSize-2)/16)

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return true, ErrClosed
	}
	c.conn, c.maxIDs = conn, maxIDs
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	if c.cfg.OnConnected != nil {
		c.cfg.OnConnected(Connected{Heartbeat: hb, ServerTime: ack.ServerTime, MaxFrameSize: ack.MaxFrameSize})
	}
	if err := c.flushOpened(conn, maxIDs); err != nil {
		return true, err
	}

	var lastRecv atomic.Int64
	lastRecv.Store(time.Now().UnixNano())
	hbChanged := make(chan struct{}, 1)
	pongTimeout := make(chan struct{})
	wg.Go(func() { c.heartbeat(cctx, conn, &lastRecv, hbChanged, pongTimeout) })

	for {
		f, err := r.ReadFrame()
		if err != nil {
			select {
			case <-pongTimeout:
				return true, ErrPongTimeout
			default:
			}
			return true, c.readFailed(conn, err)
		}
		lastRecv.Store(time.Now().UnixNano())
		switch f := f.(type) {
		case *wire.Push:
			if err := c.push(cctx, conn, f); err != nil {
				return true, err
			}
		case *wire.Ping:
			if err := c.writeFrame(conn, &wire.Pong{}); err != nil {
				return true, err
			}
		case *wire.Pong:
			if !f.Update.IsZero() {
				u := f.Update
				c.hb.Store(&u)
				select {
				case hbChanged <- struct{}{}:
				default:
				}
			}
		case *wire.Disconnect:
			return true, &DisconnectError{Code: f.Code, RetryAfter: f.RetryAfter, Reason: f.Reason}
		default:
			return true, c.violation(conn, wire.CodeProtocolError, f.Type().String()+" from the server")
		}
	}
}

// readFailed turns a read error into the connection's end: a decoding
// error is the server's protocol violation (answered with DISCONNECT).
func (c *Client) readFailed(conn net.Conn, err error) error {
	var fe *wire.FrameError
	if errors.As(err, &fe) {
		return c.violation(conn, wire.CodeFor(err), err.Error())
	}
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF // closed without DISCONNECT: like 3006
	}
	return err
}

func (c *Client) violation(conn net.Conn, code wire.Code, reason string) error {
	if len(reason) > wire.MaxReasonLen {
		reason = reason[:wire.MaxReasonLen]
	}
	_ = c.writeFrame(conn, &wire.Disconnect{Code: code, Reason: reason})
	return fmt.Errorf("%w: %s", errProtocol, reason)
}

// push hands a PUSH to the app unless it was handled before, and
// acknowledges it.
func (c *Client) push(ctx context.Context, conn net.Conn, p *wire.Push) error {
	if !c.store.seenID(p.ID) {
		if err := c.h.OnPush(ctx, Push{ID: p.ID, Flags: p.Flags, Payload: p.Payload}); err != nil {
			c.log.Warn("client: OnPush failed; the message stays unacknowledged", "id", p.ID, "err", err)
			return nil
		}
		if err := c.store.add(p.ID); err != nil {
			// The app has the message: acknowledge it anyway, or the
			// server would send it again and again.
			c.log.Error("client: recording a handled message", "id", p.ID, "err", err)
		}
	}
	return c.writeFrame(conn, &wire.Ack{IDs: []wire.MessageID{p.ID}})
}

// heartbeat sends a PING every heartbeat interval (re-reading the values
// a PONG may change) and closes the connection when nothing arrives
// within the PONG timeout, min(idle - interval, 30 s), after a PING.
func (c *Client) heartbeat(ctx context.Context, conn net.Conn, lastRecv *atomic.Int64, changed <-chan struct{}, dead chan<- struct{}) {
	lastPing := time.Now()
	var pingAt, checkAt time.Time
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		hb := c.Heartbeat()
		next := lastPing.Add(hb.Interval)
		wake := next
		if !checkAt.IsZero() && checkAt.Before(wake) {
			wake = checkAt
		}
		t.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return
		case <-changed:
			continue
		case <-t.C:
		}
		now := time.Now()
		if !checkAt.IsZero() && !now.Before(checkAt) {
			if lastRecv.Load() < pingAt.UnixNano() {
				close(dead)
				conn.Close()
				return
			}
			checkAt = time.Time{}
		}
		if !now.Before(next) {
			if err := c.writeFrame(conn, &wire.Ping{}); err != nil {
				return
			}
			lastPing = now
			if checkAt.IsZero() { // else the earlier PING is still unanswered
				pingAt = now
				checkAt = now.Add(min(hb.IdleTimeout-hb.Interval, maxPongTimeout))
			}
		}
	}
}
