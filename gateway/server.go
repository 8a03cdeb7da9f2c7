// Package gateway is pushledger's device gateway: a long-connection server
// on gnet event loops (no goroutine per connection) speaking the binary
// protocol of docs/gateway-protocol.md (codec: gateway/wire).
//
// The embedding platform supplies an Authenticator (Credentials by
// default: HMAC credentials checked without any database read) and a
// Handler (connect, ack, opened and disconnect events), delivers messages
// with Server.Push from any goroutine, and reads counters with
// Server.Stats. Server.SetHeartbeat changes heartbeat and idle timeout of
// every connection at run time.
//
// Inside, each event loop owns its connections' state and a timing wheel
// (idle, connect and close timeouts, swept every Config.Tick); the online
// devices are in a sharded map; Push encodes into the connection's bounded
// queue and wakes its loop, which writes. The device SDK is
// gateway/client.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Errors of Push and Run.
var (
	// ErrSlowConsumer: the device's connection has more pending output
	// than Config.OutboundCap; it is being disconnected with 3004 and the
	// message was not queued.
	ErrSlowConsumer = errors.New("gateway: slow consumer: outbound cap exceeded")
	// ErrPayloadTooLarge: the PUSH would exceed Config.MaxFrameSize.
	ErrPayloadTooLarge = errors.New("gateway: payload exceeds the maximum frame size")
	// ErrNotRunning: the server is not running (not started, or stopped).
	ErrNotRunning = errors.New("gateway: server not running")
)

// Server is the device gateway. Create it with New, run it with Run.
type Server struct {
	cfg   Config
	auth  Authenticator
	h     Handler
	log   *slog.Logger
	reg   *registry
	stats counters
	start time.Time
	tick  time.Duration

	hb     atomic.Pointer[heartbeatConfig]
	nextID atomic.Uint64

	noise   *noiseServer // nil: plain TCP
	outPool sync.Pool    // *[]byte queue buffers of sessions

	loopsMu sync.RWMutex
	loops   map[gnet.EventLoop]*loop

	eng      gnet.Engine
	addr     net.Addr
	booted   chan struct{}
	running  atomic.Bool
	draining atomic.Bool
	drained  chan struct{} // closed when draining and no connection is left
	drainMu  sync.Once
	runOnce  atomic.Bool
}

type heartbeatConfig struct {
	hb      wire.Heartbeat
	version uint64
}

// New returns a Server; auth nil selects no authenticator and is an
// error, h nil selects NopHandler.
func New(cfg Config, auth Authenticator, h Handler) (*Server, error) {
	cfg = cfg.withDefaults()
	err := cfg.validate()
	if auth == nil {
		err = errors.Join(err, errors.New("gateway: nil Authenticator"))
	}
	if err != nil {
		return nil, err
	}
	if h == nil {
		h = NopHandler{}
	}
	s := &Server{
		cfg:     cfg,
		auth:    auth,
		h:       h,
		log:     cfg.Logger,
		reg:     newRegistry(),
		start:   time.Now(),
		tick:    cfg.Tick,
		loops:   make(map[gnet.EventLoop]*loop),
		booted:  make(chan struct{}),
		drained: make(chan struct{}),
	}
	s.hb.Store(&heartbeatConfig{hb: cfg.Heartbeat, version: 1})
	if cfg.NoiseKey != nil {
		if s.noise, err = newNoiseServer(cfg.NoiseKey); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run serves until ctx ends, then drains: it sends DISCONNECT 3001 (server
// shutdown, with retry_after_ms spread over Config.ShutdownRetrySpread) to
// every connection, waits for them to close (at most
// Config.DrainTimeout), stops the event loops and returns nil. It returns
// early with an error if the listener cannot be set up. Run may be called
// once.
func (s *Server) Run(ctx context.Context) error {
	if !s.runOnce.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	done := make(chan error, 1)
	go func() {
		done <- gnet.Run(&events{s: s}, s.cfg.Addr,
			gnet.WithNumEventLoop(s.cfg.EventLoops),
			gnet.WithMulticore(s.cfg.EventLoops == 0),
			gnet.WithTicker(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithReuseAddr(true), // a restart binds while old connections linger in TIME_WAIT
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case err := <-done:
		s.running.Store(false)
		if err == nil {
			err = errors.New("gateway: engine stopped")
		}
		return fmt.Errorf("gateway: %w", err)
	case <-s.booted:
	}
	select {
	case err := <-done:
		s.running.Store(false)
		if err == nil {
			return errors.New("gateway: engine stopped")
		}
		return fmt.Errorf("gateway: engine stopped: %w", err)
	case <-ctx.Done():
	}
	s.drain()
	s.running.Store(false)
	stopCtx, cancel := context.WithCancel(context.Background())
	cancel() // Engine.Stop polls every 500 ms; Run's return is the signal.
	_ = s.eng.Stop(stopCtx)
	<-done
	return nil
}

// drain disconnects every connection with 3001 and waits for them to
// close, at most DrainTimeout.
func (s *Server) drain() {
	s.draining.Store(true)
	s.checkDrained()
	for _, l := range s.loopList() {
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			l.drain()
			return nil
		}))
	}
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-s.drained:
	case <-t.C:
		s.log.Warn("gateway: drain timeout; stopping with connections open", "connections", s.stats.connections.Load())
	}
}

func (s *Server) checkDrained() {
	if s.draining.Load() && s.stats.connections.Load() == 0 {
		s.drainMu.Do(func() { close(s.drained) })
	}
}

// Ready is closed once the listener is bound and Addr is known.
func (s *Server) Ready() <-chan struct{} { return s.booted }

// Addr is the bound listen address (with the port chosen for port 0);
// nil before Ready.
func (s *Server) Addr() net.Addr {
	select {
	case <-s.booted:
		return s.addr
	default:
		return nil
	}
}

// Heartbeat returns the heartbeat values announced to new connections.
func (s *Server) Heartbeat() wire.Heartbeat { return s.hb.Load().hb }

// SetHeartbeat changes heartbeat interval and idle timeout without a
// restart: new connections get them in CONNACK, and each existing
// connection in the PONG that answers its next PING (so within one old
// heartbeat interval). Until a device's first PING under the new values,
// the server keeps the larger of its old and new idle timeouts.
func (s *Server) SetHeartbeat(h wire.Heartbeat) error {
	if err := checkHeartbeat(h); err != nil {
		return err
	}
	h.Interval = h.Interval.Truncate(time.Millisecond)
	h.IdleTimeout = h.IdleTimeout.Truncate(time.Millisecond)
	for {
		cur := s.hb.Load()
		if s.hb.CompareAndSwap(cur, &heartbeatConfig{hb: h, version: cur.version + 1}) {
			return nil
		}
	}
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Online reports whether the device has an authenticated connection here.
func (s *Server) Online(appKey, deviceID string) bool {
	return s.reg.get(deviceKey{appKey, deviceID}) != nil
}

// Push sends a PUSH to the device's current connection. It may be called
// from any goroutine; it encodes the frame into the connection's queue
// (payload is copied: the caller may reuse it at once) and wakes the
// connection's event loop, which writes it. Pushes to one device are
// written in the order Push was called.
//
// It returns online false, nil error when the device has no connection on
// this server; online true and nil when the PUSH is queued (not yet
// delivered: delivery is the device's ACK, reported to Handler.OnAck);
// ErrSlowConsumer when the connection's pending output would exceed
// Config.OutboundCap (the connection is being closed with 3004);
// ErrPayloadTooLarge when the frame would exceed Config.MaxFrameSize.
func (s *Server) Push(appKey, deviceID string, id wire.MessageID, flags wire.PushFlags, payload []byte) (online bool, err error) {
	if len(payload) > int(s.cfg.MaxFrameSize)-wire.HeaderSize-len(id) {
		return false, ErrPayloadTooLarge
	}
	if !s.running.Load() {
		return false, ErrNotRunning
	}
	ss := s.reg.get(deviceKey{appKey, deviceID})
	if ss == nil {
		return false, nil
	}
	return ss.enqueuePush(id, flags, payload)
}

// Disconnect closes the device's connection on this server, if it has one,
// with a DISCONNECT of code (say wire.CodeCredentialRevoked when the device
// logged out, wire.CodeDeviceBlocked when the app blacklisted it). It may
// be called from any goroutine and reports whether the device was
// connected.
func (s *Server) Disconnect(appKey, deviceID string, code wire.Code) bool {
	if !code.Valid() {
		code = wire.CodeNormal
	}
	ss := s.reg.get(deviceKey{appKey, deviceID})
	if ss == nil {
		return false
	}
	ss.kickFromAnywhere(code)
	return true
}

// ticks converts a duration to whole ticks, rounding up.
func (s *Server) ticks(d time.Duration) int64 {
	return int64((d + s.tick - 1) / s.tick)
}

// now is the current tick.
func (s *Server) now() int64 { return int64(time.Since(s.start) / s.tick) }

func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopsMu.RLock()
	l := s.loops[el]
	s.loopsMu.RUnlock()
	if l != nil {
		return l
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l = s.loops[el]; l == nil {
		l = &loop{s: s, el: el, wheel: newWheel(s.cfg.WheelSlots, s.now())}
		s.loops[el] = l
	}
	return l
}

func (s *Server) loopList() []*loop {
	s.loopsMu.RLock()
	defer s.loopsMu.RUnlock()
	ls := make([]*loop, 0, len(s.loops))
	for _, l := range s.loops {
		ls = append(ls, l)
	}
	return ls
}

// shutdownRetry is a retry_after for a 3001, uniform in [0, spread).
func (s *Server) shutdownRetry() time.Duration {
	if s.cfg.ShutdownRetrySpread <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(s.cfg.ShutdownRetrySpread))).Truncate(time.Millisecond)
}

// events is the gnet.EventHandler of a Server (kept off Server's API).
type events struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (e *events) OnBoot(eng gnet.Engine) gnet.Action {
	s := e.s
	s.eng = eng
	addr, err := boundAddr(eng)
	if err != nil {
		s.log.Error("gateway: cannot read the listen address", "err", err)
		return gnet.Shutdown
	}
	s.addr = addr
	s.running.Store(true)
	close(s.booted)
	return gnet.None
}

// boundAddr reads the listener's address (port 0 resolved) from a
// duplicate of its descriptor.
func boundAddr(eng gnet.Engine) (net.Addr, error) {
	fd, err := eng.Dup()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}, nil
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}, nil
	}
	return nil, fmt.Errorf("unexpected socket address %T", sa)
}

// OnTick runs on gnet's ticker goroutine: it asks every event loop to
// sweep its wheel (at most one sweep queued per loop).
func (e *events) OnTick() (time.Duration, gnet.Action) {
	for _, l := range e.s.loopList() {
		if l.sweepQueued.CompareAndSwap(false, true) {
			if err := l.el.Execute(context.Background(), l); err != nil {
				l.sweepQueued.Store(false)
			}
		}
	}
	return e.s.tick, gnet.None
}

func (e *events) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := e.s
	l := s.loopOf(c.EventLoop())
	now := s.now()
	ss := &session{s: s, l: l, gc: c, slot: -1, opened: now, lastSeen: now}
	ss.conn.ID = s.nextID.Add(1)
	ss.state = stateConnect
	if s.noise != nil {
		ss.state = stateHandshake
	}
	if s.cfg.ProxyProtocol {
		ss.state = stateProxy
	}
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ss.conn.Remote = ra.AddrPort()
	}
	c.SetContext(ss)
	s.stats.connections.Add(1)
	s.stats.accepted.Add(1)
	if s.draining.Load() {
		// Turned away at once; a device that can read the protocol
		// already (no PROXY header or handshake first) learns why.
		ss.state = stateClosing
		if s.noise != nil || s.cfg.ProxyProtocol {
			return nil, gnet.Close
		}
		out, err := wire.AppendFrame(nil, &wire.Disconnect{Code: wire.CodeServerShutdown, RetryAfter: s.shutdownRetry(), Reason: "server shutting down"})
		if err != nil {
			return nil, gnet.Close
		}
		ss.sentCode = wire.CodeServerShutdown
		s.stats.countSent(ss.sentCode)
		return out, gnet.Close
	}
	l.wheel.add(ss, now+s.ticks(s.cfg.ConnectTimeout))
	return nil, gnet.None
}

func (e *events) OnClose(c gnet.Conn, _ error) gnet.Action {
	ss, ok := c.Context().(*session)
	if !ok {
		return gnet.None
	}
	ss.closed()
	return gnet.None
}

func (e *events) OnTraffic(c gnet.Conn) gnet.Action {
	ss, ok := c.Context().(*session)
	if !ok {
		return gnet.Close
	}
	return ss.traffic()
}

// loop is the state of one gnet event loop: its timing wheel and scratch
// buffers. Only its event loop touches it, except sweepQueued.
type loop struct {
	s           *Server
	el          gnet.EventLoop
	wheel       wheel
	dec         wire.Decoder
	scratch     []byte // encoding of frames the loop writes itself
	cipher      []byte // Noise messages of a write
	sweepQueued atomic.Bool
}

// Run sweeps the wheel; it is the gnet.Runnable OnTick queues.
func (l *loop) Run(context.Context) error {
	l.sweepQueued.Store(false)
	now := l.s.now()
	l.wheel.advance(now, func(ss *session) { ss.timer(now) })
	return nil
}

// drain sends 3001 to every connection of the loop.
func (l *loop) drain() {
	var all []*session
	l.wheel.each(func(ss *session) { all = append(all, ss) })
	for _, ss := range all {
		ss.disconnect(wire.CodeServerShutdown, l.s.shutdownRetry(), "server shutting down")
	}
}

// gnetLogger adapts slog to gnet's logger.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.l.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Infof(format string, args ...any) {
	g.l.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Warnf(format string, args ...any) {
	g.l.Warn("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Errorf(format string, args ...any) {
	g.l.Error("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Fatalf(format string, args ...any) {
	g.l.Error("gnet: fatal: " + fmt.Sprintf(format, args...))
}
